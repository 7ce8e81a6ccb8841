//! Handing a directory over to GitOps mode: the Flux objects that sync it
//! from its Git remote, to commit next to the cluster's other Flux config.

use std::path::Path;

use crate::git::GitInfo;

/// Why the export is not possible.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} is not in a Git work tree; commit it to a repository Flux can read first")]
    NotGit(String),
    #[error("the Git work tree of {0} has no remote; push it somewhere Flux can read first")]
    NoRemote(String),
}

/// `GitRepository` + `Kustomization` manifests for `dir` (synced by `name`).
pub fn gitops_manifests(dir: &Path, name: &str, namespace: &str) -> Result<String, ExportError> {
    let git =
        GitInfo::for_dir(dir).ok_or_else(|| ExportError::NotGit(dir.display().to_string()))?;
    let remote = git
        .remote
        .clone()
        .ok_or_else(|| ExportError::NoRemote(dir.display().to_string()))?;
    let branch = git.branch.clone().unwrap_or_else(|| "main".into());
    let path = if git.prefix.is_empty() {
        "./".to_string()
    } else {
        format!("./{}", git.prefix)
    };
    let dirty = if git.dirty {
        "# The work tree has uncommitted changes: commit and push them before applying this.\n"
    } else {
        ""
    };
    Ok(format!(
        "{dirty}# Flux objects that sync {path} of {remote} ({branch}) in GitOps mode.\n\
         ---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\n\
         kind: GitRepository\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  interval: 1m\n  url: {remote}\n  ref:\n    branch: {branch}\n\
         ---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\n\
         kind: Kustomization\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  interval: 10m\n  sourceRef:\n    kind: GitRepository\n    name: {name}\n  path: {path}\n  prune: true\n  wait: true\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn exports_point_at_the_remote_branch_and_path() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            assert!(
                Command::new("git")
                    .arg("-C")
                    .arg(repo.path())
                    .args(args)
                    .env("GIT_AUTHOR_NAME", "t")
                    .env("GIT_AUTHOR_EMAIL", "t@e")
                    .env("GIT_COMMITTER_NAME", "t")
                    .env("GIT_COMMITTER_EMAIL", "t@e")
                    .status()
                    .unwrap()
                    .success()
            );
        };
        git(&["init", "-q", "-b", "dev"]);
        std::fs::create_dir(repo.path().join("apps")).unwrap();
        std::fs::write(repo.path().join("apps/cm.yaml"), "x: 1\n").unwrap();
        assert!(matches!(
            gitops_manifests(&repo.path().join("apps"), "app", "flux-system"),
            Err(ExportError::NoRemote(_))
        ));
        git(&["remote", "add", "origin", "https://example.com/org/app.git"]);
        git(&["add", "."]);
        git(&["commit", "-qm", "x"]);
        let text = gitops_manifests(&repo.path().join("apps"), "app", "flux-system").unwrap();
        assert!(
            text.contains("url: https://example.com/org/app.git"),
            "{text}"
        );
        assert!(
            text.contains("branch: dev") && text.contains("path: ./apps"),
            "{text}"
        );
        assert!(!text.contains("uncommitted"));
        for doc in text.split("---").skip(1) {
            let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            assert!(v["kind"].is_string());
        }
        assert!(matches!(
            gitops_manifests(Path::new("/"), "app", "x"),
            Err(ExportError::NotGit(_))
        ));
    }
}
