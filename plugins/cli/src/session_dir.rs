//! What `kubectl gitops-run [DIR] [--root-dir ROOT]` packages and syncs: the
//! directory, the root packaged (so overlays can reach `../base`), and the
//! path of the directory inside the artifact that the Kustomization applies.

use std::path::{Path, PathBuf};

use gitops::artifact::{self, ArtifactError};
use gitops::git::GitInfo;

/// A session's directory, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDir {
    /// DIR, canonical: what is watched, and what the session is named after.
    pub dir: PathBuf,
    /// What is packaged, canonical: `--root-dir`, else the Git top level of
    /// DIR, else DIR.
    pub root: PathBuf,
    /// DIR inside the artifact, as Flux's `spec.path` (`./`, `./deploy/dev`).
    pub path: String,
}

/// DIR refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionDirError {
    /// Missing, not a directory, `/` or the home directory.
    #[error(transparent)]
    Dir(#[from] ArtifactError),
    #[error("{} is not inside --root-dir {}", dir.display(), root.display())]
    OutsideRoot { dir: PathBuf, root: PathBuf },
}

impl SessionDir {
    /// Resolves DIR (default: the current directory) and `--root-dir`.
    pub fn resolve(dir: Option<&Path>, root_dir: Option<&Path>) -> Result<Self, SessionDirError> {
        let dir = artifact::canonical_root(dir.unwrap_or(Path::new(".")))?;
        artifact::refuse_too_broad(&dir)?;
        let root = match root_dir {
            Some(r) => artifact::canonical_root(r)?,
            None => GitInfo::for_dir(&dir)
                .map(|g| g.toplevel)
                .and_then(|t| std::fs::canonicalize(t).ok())
                .unwrap_or_else(|| dir.clone()),
        };
        let Ok(rel) = dir.strip_prefix(&root) else {
            return Err(SessionDirError::OutsideRoot { dir, root });
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let path = if rel.is_empty() {
            "./".to_string()
        } else {
            format!("./{}", rel.trim_end_matches('/'))
        };
        Ok(SessionDir { dir, root, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(root.join("deploy/dev")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        (tmp, root)
    }

    #[test]
    fn the_path_is_dir_inside_the_root() {
        let (_tmp, root) = tree();
        let dev = root.join("deploy/dev");
        let got = SessionDir::resolve(Some(&dev), Some(&root)).unwrap();
        assert_eq!(got.dir, dev);
        assert_eq!(got.root, root);
        assert_eq!(got.path, "./deploy/dev");

        // The root itself, reached through `..`: the artifact's top.
        let same = SessionDir::resolve(Some(&root.join("deploy/..")), Some(&root)).unwrap();
        assert_eq!((same.dir, same.path.as_str()), (root.clone(), "./"));
    }

    #[test]
    fn a_dir_outside_the_root_or_missing_is_refused() {
        let (_tmp, root) = tree();
        let e =
            SessionDir::resolve(Some(&root.join("other")), Some(&root.join("deploy"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is not inside --root-dir {}",
                root.join("other").display(),
                root.join("deploy").display()
            )
        );
        let e = SessionDir::resolve(Some(&root.join("absent")), None).unwrap_err();
        assert!(
            matches!(e, SessionDirError::Dir(ArtifactError::NoSuchDir(_))),
            "{e}"
        );
    }

    #[test]
    fn without_root_dir_the_root_is_the_git_top_level_else_dir() {
        let (_tmp, root) = tree();
        let dev = root.join("deploy/dev");
        let plain = SessionDir::resolve(Some(&dev), None).unwrap();
        assert_eq!((plain.root, plain.path.as_str()), (dev.clone(), "./"));

        let git = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(git.success());
        let in_git = SessionDir::resolve(Some(&dev), None).unwrap();
        assert_eq!((in_git.root, in_git.path.as_str()), (root, "./deploy/dev"));
    }
}
