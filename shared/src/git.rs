//! What Git says about a directory: its work tree, remote, branch, commit
//! and whether it is dirty. Read with the `git` command; a directory outside
//! any work tree (or a machine without Git) simply has no Git information.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Git facts about a directory inside a work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    /// The work tree's top level.
    pub toplevel: PathBuf,
    /// The directory's path relative to the top level (`""` at the top).
    pub prefix: String,
    /// `origin`'s URL (or the first remote's), credentials removed.
    pub remote: Option<String>,
    /// The checked-out branch; `None` on a detached HEAD.
    pub branch: Option<String>,
    /// The HEAD commit; `None` before the first commit.
    pub commit: Option<String>,
    /// Uncommitted changes (or untracked files) under the directory.
    pub dirty: bool,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl GitInfo {
    /// Git facts for `dir`, or `None` if it is not in a work tree.
    pub fn for_dir(dir: &Path) -> Option<GitInfo> {
        let toplevel = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
        // Empty at the top level; a failure here (never seen once the top
        // level was found) is "no Git facts", not a wrong path.
        let prefix = git(dir, &["rev-parse", "--show-prefix"])?
            .trim_end_matches('/')
            .to_string();
        let remote = git(dir, &["remote", "get-url", "origin"])
            .or_else(|| {
                let first = git(dir, &["remote"])?.lines().next()?.to_string();
                git(dir, &["remote", "get-url", &first])
            })
            .filter(|r| !r.is_empty())
            .map(|r| strip_credentials(&r));
        let branch = git(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"]);
        let commit = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"]);
        let dirty = git(dir, &["status", "--porcelain", "--", "."]).is_none_or(|s| !s.is_empty());
        Some(GitInfo {
            toplevel,
            prefix,
            remote,
            branch,
            commit,
            dirty,
        })
    }
}

/// The URLs of every remote of the work tree holding `dir` (credentials
/// removed), `origin` first; empty outside a work tree.
pub fn remotes(dir: &Path) -> Vec<String> {
    let Some(listed) = git(dir, &["config", "--get-regexp", r"^remote\..*\.url$"]) else {
        return Vec::new();
    };
    let mut urls: Vec<(bool, String)> = listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(key, url)| (key != "remote.origin.url", strip_credentials(url.trim())))
        .collect();
    urls.sort_by_key(|(not_origin, _)| *not_origin);
    urls.into_iter().map(|(_, u)| u).collect()
}

/// How the work tree's `dir` compares with `commit` (a full or abbreviated
/// hash): `None` when Git cannot tell (no work tree, or the commit was
/// never fetched here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// Uncommitted changes (or untracked files) under `dir`.
    pub uncommitted: bool,
    /// Commits under `dir` that `commit` does not hold (made, not pushed).
    pub unpushed: bool,
}

/// How `dir` differs from `commit`: see [`Divergence`].
pub fn divergence(dir: &Path, commit: &str) -> Option<Divergence> {
    let known = git(dir, &["cat-file", "-e", &format!("{commit}^{{commit}}")]).is_some();
    if !known {
        return None;
    }
    let uncommitted = git(dir, &["status", "--porcelain", "--", "."]).is_none_or(|s| !s.is_empty());
    // Commits of HEAD's that touch `dir` and that `commit` does not hold.
    let unpushed = git(
        dir,
        &["rev-list", "--count", &format!("{commit}..HEAD"), "--", "."],
    )
    .is_none_or(|n| n != "0");
    Some(Divergence {
        uncommitted,
        unpushed,
    })
}

/// Removes `user:password@` from a URL so it never reaches annotations or logs.
pub fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((_, host)) = authority.rsplit_once('@') {
            let user_only = !authority[..authority.len() - host.len() - 1].contains(':');
            // ssh://git@host is a user name, not a secret; keep it.
            if scheme.starts_with("ssh") && user_only {
                return url.to_string();
            }
            return if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            };
        }
    }
    url.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_from_remote_urls() {
        assert_eq!(
            strip_credentials("https://bob:ghp_secret@github.com/org/repo.git"),
            "https://github.com/org/repo.git"
        );
        assert_eq!(
            strip_credentials("https://token@example.com/repo"),
            "https://example.com/repo"
        );
        assert_eq!(
            strip_credentials("ssh://git@github.com/org/repo"),
            "ssh://git@github.com/org/repo"
        );
        assert_eq!(
            strip_credentials("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
        assert_eq!(
            strip_credentials("https://github.com/o/r"),
            "https://github.com/o/r"
        );
    }

    /// Runs git in `dir` with a fixed identity; fails the test if git fails.
    /// Shared by the crate's tests that build repositories.
    pub(crate) fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn remotes_list_origin_first_without_credentials() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        run(root, &["init", "-q", "-b", "main"]);
        run(
            root,
            &["remote", "add", "backup", "git@example.com:org/app.git"],
        );
        run(
            root,
            &[
                "remote",
                "add",
                "origin",
                "https://bob:tok@example.com/org/app.git",
            ],
        );
        assert_eq!(
            remotes(root),
            [
                "https://example.com/org/app.git",
                "git@example.com:org/app.git"
            ]
        );
        assert!(remotes(&std::env::temp_dir().join("no-such-work-tree-here")).is_empty());
    }

    #[test]
    fn divergence_tells_uncommitted_from_unpushed_under_the_directory() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        let app = root.join("apps/web");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        run(root, &["init", "-q", "-b", "main"]);
        std::fs::write(app.join("a.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join("other/b.yaml"), "b: 1\n").unwrap();
        run(root, &["add", "-A"]);
        run(root, &["commit", "-q", "-m", "one"]);
        let flux = GitInfo::for_dir(root).unwrap().commit.unwrap();
        let clean = Divergence {
            uncommitted: false,
            unpushed: false,
        };
        assert_eq!(divergence(&app, &flux), Some(clean));
        // A commit elsewhere in the repository: not this directory's.
        std::fs::write(root.join("other/b.yaml"), "b: 2\n").unwrap();
        run(root, &["commit", "-q", "-am", "elsewhere"]);
        assert_eq!(divergence(&app, &flux), Some(clean));
        // Edited, not committed.
        std::fs::write(app.join("a.yaml"), "a: 2\n").unwrap();
        assert_eq!(
            divergence(&app, &flux),
            Some(Divergence {
                uncommitted: true,
                unpushed: false
            })
        );
        // Committed, not in Flux's commit.
        run(root, &["commit", "-q", "-am", "two"]);
        assert_eq!(
            divergence(&app, &flux),
            Some(Divergence {
                uncommitted: false,
                unpushed: true
            })
        );
        // A commit this clone never fetched: unknown.
        assert_eq!(
            divergence(&app, "0123456789abcdef0123456789abcdef01234567"),
            None
        );
    }

    #[test]
    fn reads_branch_commit_remote_and_dirtiness() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        run(root, &["init", "-q", "-b", "main"]);
        run(
            root,
            &[
                "remote",
                "add",
                "origin",
                "https://user:pw@example.com/app.git",
            ],
        );
        std::fs::create_dir(root.join("deploy")).unwrap();
        std::fs::write(root.join("deploy/app.yaml"), "a").unwrap();
        run(root, &["add", "."]);
        run(root, &["commit", "-q", "-m", "one"]);
        let info = GitInfo::for_dir(&root.join("deploy")).unwrap();
        assert_eq!(info.prefix, "deploy");
        assert_eq!(info.branch.as_deref(), Some("main"));
        assert_eq!(info.remote.as_deref(), Some("https://example.com/app.git"));
        assert_eq!(info.commit.as_ref().map(|c| c.len()), Some(40));
        assert!(!info.dirty);
        std::fs::write(root.join("deploy/app.yaml"), "b").unwrap();
        assert!(GitInfo::for_dir(&root.join("deploy")).unwrap().dirty);
        assert!(GitInfo::for_dir(Path::new("/")).is_none());
    }
}
