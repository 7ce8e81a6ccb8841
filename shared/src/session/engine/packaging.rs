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
//!
//! A file a kustomization references by name is needed by the render, so
//! Git's ignore rules do not leave it out (a Git-ignored `.env` of a
//! `secretGenerator` is packaged, and the first sync says so), as they do
//! not leave out tracked files. One that `.sourceignore`, `--ignore` or
//! Flux's default exclusions leave out is refused before the push, naming
//! the kustomization, the reference and the rule.

use std::path::{Path, PathBuf};

use super::validate::ValidateError;
use crate::artifact::{IgnoreRules, IgnoredKind, WalkOptions};
use crate::kustomize;

/// A local path a kustomization references, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// The kustomization file that names it, relative to the root.
    pub from: String,
    /// As written.
    pub written: String,
    /// Relative to the root, `/`-separated.
    pub path: String,
    pub is_dir: bool,
}

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
    /// Every local path the kustomizations reference, and the kustomization
    /// files themselves (relative to the root): for
    /// [`WalkOptions::keep`], so Git's ignore rules do not drop them.
    pub keep: Vec<String>,
    /// The local references, in the order found.
    pub referenced: Vec<Referenced>,
    /// References kept although Git ignores them, in words (see
    /// [`Packaging::check_ignored`]).
    pub kept_ignored: Vec<String>,
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
            out.keep.push(p.clone());
            out.referenced.push(Referenced {
                from: rel(&root_n, &r.from),
                written: r.written.clone(),
                path: p.clone(),
                is_dir: r.path.is_dir(),
            });
            if !inside_dir(&p) {
                out.outside
                    .push(if r.path.is_dir() { format!("{p}/") } else { p });
            }
        }
        out.keep.extend(
            scan.files
                .iter()
                .map(|f| rel(&root_n, &kustomize::normalize(f))),
        );
        out.remote = scan
            .remote
            .iter()
            .map(|(from, written)| (rel(&root_n, from), written.clone()))
            .collect();
    }
    out.keep.sort();
    out.keep.dedup();
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
    /// Checks the references against the ignore rules of a walk (whose
    /// `keep` is [`Packaging::keep`]): one that is still left out
    /// (`.sourceignore`, `--ignore`, Flux's default exclusions) is refused;
    /// those that Git's rules alone would have left out are listed in
    /// [`Packaging::kept_ignored`].
    pub fn check_ignored(&mut self, root: &Path, walk: &WalkOptions) -> Result<(), ValidateError> {
        self.kept_ignored.clear();
        if self.referenced.is_empty() {
            return Ok(());
        }
        // Bad patterns: the walk says so.
        let Ok(rules) = IgnoreRules::for_walk(root, walk) else {
            return Ok(());
        };
        let git_only = rules.uses_git().then(|| rules.without_keep());
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.referenced {
            if !seen.insert(r.path.clone()) {
                continue;
            }
            let relative = Path::new(&r.path);
            if let Some(by) = rules.rule_for(relative, r.is_dir) {
                return Err(ValidateError::IgnoredReference {
                    from: r.from.clone(),
                    written: r.written.clone(),
                    advice: match by.by {
                        IgnoredKind::SourceIgnore => "remove that rule".into(),
                        IgnoredKind::Flag => "leave out that --ignore pattern".into(),
                        IgnoredKind::Default | IgnoredKind::Git => {
                            format!("pass --ignore '!{}' to keep it", by.path)
                        }
                    },
                    rule: by.rule,
                    dropped: by.path,
                });
            }
            if let Some(by) = git_only
                .as_ref()
                .and_then(|g| g.rule_for(relative, r.is_dir))
                .filter(|by| by.by == IgnoredKind::Git)
            {
                self.kept_ignored.push(format!(
                    "packaged {}, which Git ignores ({}), because {} references it",
                    r.path, by.rule, r.from
                ));
            }
        }
        Ok(())
    }

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
        let mut out = if self.outside.is_empty() {
            format!("packaged {list} ({files})")
        } else {
            let n = self.outside.len();
            format!(
                "packaged {list} ({files}), {n} path{} outside {dir}",
                if n == 1 { "" } else { "s" }
            )
        };
        for kept in &self.kept_ignored {
            out.push_str("; ");
            out.push_str(kept);
        }
        out
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

    fn git_repo(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let t = tree(files);
        let root = std::fs::canonicalize(t.path()).unwrap();
        crate::git::tests::run(&root, &["init", "-q"]);
        (t, root)
    }

    fn session_walk(p: &Packaging) -> WalkOptions {
        WalkOptions {
            git_ignore: true,
            only: p.only.clone(),
            keep: p.keep.clone(),
            ..Default::default()
        }
    }

    fn files(root: &Path, walk: &WalkOptions) -> Vec<String> {
        crate::artifact::walk(root, walk)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, crate::artifact::EntryKind::File { .. }))
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn a_git_ignored_file_a_kustomization_references_is_packaged_and_said() {
        let (_t, root) = git_repo(&[
            (".gitignore", ".env\n*.local.yaml\n"),
            (
                "deploy/kustomization.yaml",
                "resources:\n- cm.yaml\nsecretGenerator:\n- name: db\n  envs:\n  - .env\n",
            ),
            ("deploy/cm.yaml", "kind: ConfigMap\n"),
            ("deploy/.env", "PASSWORD=s3cret\n"),
            ("deploy/mine.local.yaml", "kind: ConfigMap\n"),
        ]);
        let mut p = plan(&root, &root.join("deploy")).unwrap();
        assert!(p.keep.contains(&"deploy/.env".to_string()), "{:?}", p.keep);
        let walk = session_walk(&p);
        p.check_ignored(&root, &walk).unwrap();
        let got = files(&root, &walk);
        assert!(got.contains(&"deploy/.env".to_string()), "{got:?}");
        // What nothing references stays out, as before.
        assert!(
            !got.contains(&"deploy/mine.local.yaml".to_string()),
            "{got:?}"
        );
        // Without the references kept, Git's rule would have dropped it.
        let dropped = files(
            &root,
            &WalkOptions {
                keep: Vec::new(),
                ..walk
            },
        );
        assert!(!dropped.contains(&"deploy/.env".to_string()), "{dropped:?}");
        assert_eq!(
            p.describe(3),
            "packaged deploy/ (3 files); packaged deploy/.env, which Git ignores (`.env` in \
             .gitignore), because deploy/kustomization.yaml references it"
        );
    }

    #[test]
    fn a_referenced_file_sourceignore_or_the_defaults_leave_out_is_refused() {
        let (_t, root) = git_repo(&[
            (
                "deploy/kustomization.yaml",
                "configMapGenerator:\n- name: c\n  files:\n  - app.conf\n  - logo.png\n",
            ),
            ("deploy/app.conf", "x=1\n"),
            ("deploy/logo.png", "png"),
            ("deploy/.sourceignore", "*.conf\n"),
        ]);
        let mut p = plan(&root, &root.join("deploy")).unwrap();
        let walk = session_walk(&p);
        let e = p.check_ignored(&root, &walk).unwrap_err();
        assert_eq!(e.file().as_deref(), Some("deploy/kustomization.yaml"));
        assert_eq!(
            e.to_string(),
            "deploy/kustomization.yaml references app.conf, which the artifact leaves out \
             (deploy/app.conf: `*.conf` in deploy/.sourceignore); the render needs it: remove \
             that rule; nothing was pushed"
        );
        std::fs::remove_file(root.join("deploy/.sourceignore")).unwrap();
        let e = p.check_ignored(&root, &walk).unwrap_err().to_string();
        assert!(
            e.contains(
                "references logo.png, which the artifact leaves out (deploy/logo.png: `*.png` \
                 (one of Flux's default exclusions)); the render needs it: pass --ignore \
                 '!deploy/logo.png' to keep it"
            ),
            "{e}"
        );
        let walk = WalkOptions {
            ignore: vec!["!deploy/logo.png".into()],
            ..walk
        };
        p.check_ignored(&root, &walk).unwrap();
        assert!(files(&root, &walk).contains(&"deploy/logo.png".to_string()));
    }
}
