//! What a session packages and watches: the synced directory's tree, plus
//! whatever its kustomization files reference outside it (resources, bases,
//! components, patches, generator files; followed transitively), all under
//! the packaged root. The rest of the root (sources, build output,
//! `node_modules`) stays out of the artifact and out of the watcher. A Helm
//! chart directory is packaged whole, by itself.
//!
//! References that cannot be followed are said before anything is pushed:
//! a path outside the root or one that does not exist is an error; a remote
//! base is a warning (kustomize-controller fetches those itself, unless it
//! runs with `--no-remote-bases`).

use std::path::{Path, PathBuf};

use super::validate::ValidateError;
use crate::kustomize;

/// The packaged paths of one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packaging {
    /// For [`crate::artifact::WalkOptions::only`]: `None` when the directory
    /// is the root (everything under it is the directory's tree).
    pub only: Option<Vec<String>>,
    /// The directory, relative to the root (`""` for the root).
    pub dir: String,
    /// What it references outside its tree, relative to the root, sorted;
    /// directories end with `/`.
    pub outside: Vec<String>,
    /// Remote references: (kustomization file relative to the root, as written).
    pub remote: Vec<(String, String)>,
    /// The kustomization files that decide what is packaged.
    pub kustomizations: Vec<PathBuf>,
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// What a sync of `dir` (inside `root`, both canonical) packages.
pub fn plan(root: &Path, dir: &Path) -> Result<Packaging, ValidateError> {
    let root_n = kustomize::normalize(root);
    let dir_rel = rel(&root_n, &kustomize::normalize(dir));
    let mut out = Packaging {
        dir: dir_rel.clone(),
        ..Default::default()
    };
    let inside_dir =
        |p: &str| dir_rel.is_empty() || p == dir_rel || p.starts_with(&format!("{dir_rel}/"));
    if !crate::helm::is_chart(dir) && kustomize::file_in(dir).is_some() {
        let scan = kustomize::scan(dir)?;
        out.kustomizations = scan.files.clone();
        for r in &scan.local {
            if !r.path.starts_with(&root_n) {
                return Err(ValidateError::OutsideRoot {
                    from: rel(&root_n, &r.from),
                    written: r.written.clone(),
                    suggestion: kustomize::common_ancestor(&root_n, &r.path),
                    path: r.path.clone(),
                    root: root.to_path_buf(),
                });
            }
            if std::fs::symlink_metadata(&r.path).is_err() {
                return Err(ValidateError::MissingReference {
                    from: rel(&root_n, &r.from),
                    written: r.written.clone(),
                });
            }
            let p = rel(&root_n, &r.path);
            if !inside_dir(&p) {
                out.outside
                    .push(if r.path.is_dir() { format!("{p}/") } else { p });
            }
        }
        out.remote = scan
            .remote
            .iter()
            .map(|(from, written)| (rel(&root_n, from), written.clone()))
            .collect();
    }
    out.outside.sort();
    out.outside.dedup();
    // A path inside another listed one adds nothing.
    let all = out.outside.clone();
    out.outside.retain(|p| {
        !all.iter()
            .any(|o| o != p && o.ends_with('/') && p.starts_with(o.as_str()))
    });
    if !dir_rel.is_empty() {
        let mut only = vec![dir_rel];
        only.extend(
            out.outside
                .iter()
                .map(|p| p.trim_end_matches('/').to_string()),
        );
        out.only = Some(only);
    }
    Ok(out)
}

impl Packaging {
    /// In words, for the first sync: `packaged deploy/ and base/ (12
    /// files), 1 path outside deploy/`.
    pub fn describe(&self, files: usize) -> String {
        let show = |p: &str| {
            if p.is_empty() {
                "./".to_string()
            } else {
                format!("{p}/")
            }
        };
        let dir = show(&self.dir);
        let mut parts = vec![dir.clone()];
        parts.extend(self.outside.iter().cloned());
        let list = match parts.len() {
            1 => parts[0].clone(),
            n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
        };
        let files = if files == 1 {
            "1 file".to_string()
        } else {
            format!("{files} files")
        };
        if self.outside.is_empty() {
            format!("packaged {list} ({files})")
        } else {
            let n = self.outside.len();
            format!(
                "packaged {list} ({files}), {n} path{} outside {dir}",
                if n == 1 { "" } else { "s" }
            )
        }
    }

    /// One warning per remote reference.
    pub fn remote_warnings(&self) -> Vec<String> {
        self.remote
            .iter()
            .map(|(from, written)| {
                format!(
                    "{from} references {written}, which is remote: it is not packaged; \
                     kustomize-controller fetches it itself (unless it runs with \
                     --no-remote-bases), so a change there is not synced by this session"
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        crate::testutil::write_tree(t.path(), files);
        t
    }

    #[test]
    fn a_directory_alone_is_packaged_alone() {
        let t = tree(&[("deploy/cm.yaml", "kind: ConfigMap\n"), ("src/main.rs", "")]);
        let root = std::fs::canonicalize(t.path()).unwrap();
        let p = plan(&root, &root.join("deploy")).unwrap();
        assert_eq!(p.only, Some(vec!["deploy".to_string()]));
        assert!(p.outside.is_empty());
        assert_eq!(p.describe(1), "packaged deploy/ (1 file)");
        let whole = plan(&root, &root).unwrap();
        assert_eq!(whole.only, None);
        assert_eq!(whole.describe(2), "packaged ./ (2 files)");
    }

    #[test]
    fn an_overlay_brings_its_bases_components_and_generator_files() {
        let t = tree(&[
            (
                "deploy/kustomization.yaml",
                "resources:\n- ../base\n- https://example.com/x.yaml\ncomponents:\n- ../components/mon\nconfigMapGenerator:\n- name: c\n  files:\n  - app.conf=../config/app.conf\n",
            ),
            (
                "base/kustomization.yaml",
                "resources:\n- deploy.yaml\n- ../shared/cm.yaml\n",
            ),
            ("base/deploy.yaml", "kind: Deployment\n"),
            ("shared/cm.yaml", "kind: ConfigMap\n"),
            ("components/mon/kustomization.yaml", "kind: Component\n"),
            ("config/app.conf", "x=1\n"),
            ("target/big.bin", "x"),
        ]);
        let root = std::fs::canonicalize(t.path()).unwrap();
        let p = plan(&root, &root.join("deploy")).unwrap();
        assert_eq!(
            p.only,
            Some(
                [
                    "deploy",
                    "base",
                    "components/mon",
                    "config/app.conf",
                    "shared/cm.yaml"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            p.remote,
            vec![(
                "deploy/kustomization.yaml".to_string(),
                "https://example.com/x.yaml".to_string()
            )]
        );
        assert!(p.remote_warnings()[0].contains("is remote: it is not packaged"));
        assert_eq!(p.kustomizations.len(), 3);
        assert_eq!(
            p.describe(7),
            "packaged deploy/, base/, components/mon/, config/app.conf and shared/cm.yaml (7 files), 4 paths outside deploy/"
        );
    }

    #[test]
    fn references_outside_the_root_or_missing_are_refused() {
        let t = tree(&[
            (
                "app/deploy/kustomization.yaml",
                "resources:\n- ../../base\n",
            ),
            ("base/kustomization.yaml", ""),
        ]);
        let root = std::fs::canonicalize(t.path().join("app")).unwrap();
        let e = plan(&root, &root.join("deploy")).unwrap_err();
        assert!(matches!(e, ValidateError::OutsideRoot { .. }), "{e}");
        std::fs::write(
            root.join("deploy/kustomization.yaml"),
            "resources:\n- gone.yaml\n",
        )
        .unwrap();
        let e = plan(&root, &root.join("deploy")).unwrap_err().to_string();
        assert_eq!(
            e,
            "deploy/kustomization.yaml references gone.yaml, which does not exist; nothing was pushed"
        );
    }
}
