//! Watching the session's directory: inotify (through `notify`), debounced,
//! filtered by the artifact's ignore rules and editors' temporary files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use crate::artifact::IgnoreRules;

/// Whether a file name is an editor's temporary or backup file.
pub fn is_editor_temp(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with(".tmp")
        || name.ends_with(".kate-swp")
        || name.ends_with(".crswap")
        || name.ends_with("___jb_tmp___")
        || name.ends_with("___jb_old___")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name.starts_with(".goutputstream-")
        || name.starts_with(".~lock.")
        || name == "4913"
}

/// Whether a change to `path` should trigger a sync.
pub fn relevant(root: &Path, rules: &IgnoreRules, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    if rel.as_os_str().is_empty() {
        return false;
    }
    if rel
        .components()
        .any(|c| c.as_os_str().to_str().is_none_or(is_editor_temp))
    {
        return false;
    }
    !rules.ignores(rel, path.is_dir())
}

/// Changes under a directory, debounced and filtered.
pub struct DirWatcher {
    _debouncer: Box<dyn std::any::Any + Send>,
    rx: mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
}

impl DirWatcher {
    /// Watches `root` recursively. `root` must be canonical.
    pub fn new(
        root: &Path,
        rules: IgnoreRules,
        debounce: Duration,
    ) -> Result<DirWatcher, notify::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let root_buf = root.to_path_buf();
        let mut debouncer = new_debouncer(
            debounce,
            Some(debounce / 4),
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let paths: Vec<PathBuf> = events
                        .iter()
                        .filter(|e| !e.kind.is_access() && !e.kind.is_other())
                        .flat_map(|e| e.paths.iter())
                        .filter(|p| relevant(&root_buf, &rules, p))
                        .cloned()
                        .collect();
                    if !paths.is_empty() {
                        let _ = tx.send(Ok(paths));
                    }
                }
                Err(errors) => {
                    let text = errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let _ = tx.send(Err(text));
                }
            },
        )?;
        debouncer.watch(root, RecursiveMode::Recursive)?;
        Ok(DirWatcher {
            _debouncer: Box::new(debouncer),
            rx,
        })
    }

    /// The next batch of relevant changed paths (or a watcher error).
    pub async fn changed(&mut self) -> Option<Result<Vec<PathBuf>, String>> {
        self.rx.recv().await
    }

    /// Drops changes already queued (e.g. those a sync has just packaged).
    pub fn drain(&mut self) -> bool {
        let mut any = false;
        while let Ok(Ok(_)) = self.rx.try_recv() {
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::canonical_root;

    #[test]
    fn editor_temp_files_are_recognised() {
        for t in [
            ".app.yaml.swp",
            "app.yaml~",
            ".#app.yaml",
            "#app.yaml#",
            "4913",
            "app.yaml___jb_tmp___",
            ".goutputstream-AB12",
        ] {
            assert!(is_editor_temp(t), "{t}");
        }
        for f in ["app.yaml", "kustomization.yml", "swap.yaml", "README.md"] {
            assert!(!is_editor_temp(f), "{f}");
        }
    }

    #[test]
    fn relevance_follows_the_ignore_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".sourceignore"), "drafts/\n").unwrap();
        let root = canonical_root(dir.path()).unwrap();
        let rules = IgnoreRules::new(&root, &["*.md".into()]).unwrap();
        assert!(relevant(&root, &rules, &root.join("app.yaml")));
        assert!(!relevant(&root, &rules, &root.join("README.md")));
        assert!(!relevant(&root, &rules, &root.join(".git/index")));
        assert!(!relevant(&root, &rules, &root.join("drafts/x.yaml")));
        assert!(!relevant(&root, &rules, &root.join(".app.yaml.swp")));
        assert!(!relevant(&root, &rules, Path::new("/elsewhere/app.yaml")));
    }

    #[tokio::test]
    async fn saves_are_seen_and_ignored_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        let rules = IgnoreRules::new(&root, &[]).unwrap();
        let mut watcher = DirWatcher::new(&root, rules, Duration::from_millis(50)).unwrap();
        std::fs::write(root.join(".app.yaml.swp"), "x").unwrap();
        std::fs::write(root.join("logo.png"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(root.join("app.yaml"), "kind: ConfigMap\n").unwrap();
        let paths = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("a change within 5s")
            .unwrap()
            .unwrap();
        assert!(paths.iter().all(|p| p.ends_with("app.yaml")), "{paths:?}");
    }
}
