//! Watching the session's directory: inotify (through `notify`), debounced,
//! filtered by the artifact's ignore rules and editors' temporary files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{
    DebounceEventResult, RecommendedCache, new_debouncer, new_debouncer_opt,
};
use tokio::sync::mpsc;

use crate::artifact::{IgnoreRules, WalkOptions};

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

/// What a session watches: the directories that feed its artifact.
#[derive(Debug, Clone)]
pub struct WatchTarget {
    /// The packaged root (canonical).
    pub root: PathBuf,
    /// The synced directory (canonical, inside `root`).
    pub dir: PathBuf,
    /// The session's walk options (`only` is worked out here, from `dir`'s
    /// kustomizations, as each sync does).
    pub walk: WalkOptions,
}

/// The rules and directories of one plan of what is packaged (`None`
/// rules: the ignore patterns themselves are bad; the sync says so, and
/// every change counts meanwhile).
fn plan(target: &WatchTarget) -> (Option<IgnoreRules>, Vec<PathBuf>) {
    let only = super::packaging::plan(&target.root, &target.dir)
        .map(|p| p.only)
        .unwrap_or_else(|_| {
            // A kustomization that cannot be read: the sync says why; watch
            // the directory so that its fix is seen.
            let rel = target
                .dir
                .strip_prefix(&target.root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            (!rel.is_empty()).then(|| vec![rel])
        });
    let options = WalkOptions {
        only,
        ..target.walk.clone()
    };
    match IgnoreRules::for_walk(&target.root, &options) {
        Ok(rules) => {
            // The artifact's own walk, directories only (one pass, each
            // ignore file read once).
            let dirs = crate::artifact::dirs(&target.root, &options)
                .unwrap_or_else(|_| vec![target.root.clone(), target.dir.clone()]);
            (Some(rules), dirs)
        }
        Err(_) => (None, vec![target.dir.clone()]),
    }
}

/// What delivers file events: the OS's notifications, or polling once
/// the OS's limit on watches is reached.
enum Backend {
    Native(notify_debouncer_full::Debouncer<notify::RecommendedWatcher, RecommendedCache>),
    Poll(notify_debouncer_full::Debouncer<notify::PollWatcher, RecommendedCache>),
}

impl Backend {
    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            Backend::Native(d) => d.watch(dir, RecursiveMode::NonRecursive),
            Backend::Poll(d) => d.watch(dir, RecursiveMode::NonRecursive),
        }
    }

    fn unwatch(&mut self, dir: &Path) {
        let _ = match self {
            Backend::Native(d) => d.unwatch(dir),
            Backend::Poll(d) => d.unwatch(dir),
        };
    }
}

/// How often the polling fallback looks.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type Raw = std::sync::mpsc::Sender<DebounceEventResult>;

struct Inner {
    rules: Option<IgnoreRules>,
    watched: BTreeSet<PathBuf>,
    backend: Backend,
    /// Test knob: behave as if the OS refused more watches than this.
    limit: Option<usize>,
}

fn native(debounce: Duration, raw: Raw) -> notify::Result<Backend> {
    let d = new_debouncer(
        debounce,
        Some(debounce / 4),
        move |r: DebounceEventResult| {
            let _ = raw.send(r);
        },
    )?;
    Ok(Backend::Native(d))
}

fn polling(debounce: Duration, raw: Raw) -> notify::Result<Backend> {
    let d = new_debouncer_opt::<_, notify::PollWatcher, _>(
        debounce,
        Some(debounce / 4),
        move |r: DebounceEventResult| {
            let _ = raw.send(r);
        },
        RecommendedCache::new(),
        // Contents, not only mtime: it has a resolution of seconds there.
        notify::Config::default()
            .with_poll_interval(POLL_INTERVAL)
            .with_compare_contents(true),
    )?;
    Ok(Backend::Poll(d))
}

fn limit_message() -> String {
    let now = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|v| format!(" ({})", v.trim()))
        .unwrap_or_default();
    format!(
        "the system's limit on watched directories{now} is reached (fs.inotify.max_user_watches); \
         watching by polling every {}s instead, so saves are still seen. Raise it with: sudo sysctl \
         fs.inotify.max_user_watches=524288",
        POLL_INTERVAL.as_secs()
    )
}

impl Inner {
    /// Watches `dirs` (and no others). On the OS's limit, switches to
    /// polling and says so.
    fn set(
        &mut self,
        dirs: Vec<PathBuf>,
        debounce: Duration,
        raw: &Raw,
        say: &dyn Fn(Result<Vec<PathBuf>, String>),
    ) {
        let want: BTreeSet<PathBuf> = dirs.into_iter().collect();
        for gone in self.watched.difference(&want).cloned().collect::<Vec<_>>() {
            self.backend.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in &want {
            if self.watched.contains(dir) {
                continue;
            }
            let refused = self.limit.is_some_and(|l| self.watched.len() >= l);
            let result = if refused {
                Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
            } else {
                self.backend.watch(dir)
            };
            match result {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e)
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                        && matches!(self.backend, Backend::Native(_)) =>
                {
                    if self.fall_back(debounce, raw, say) {
                        self.set(want.into_iter().collect(), debounce, raw, say);
                    }
                    return;
                }
                // Gone meanwhile, or unreadable: the sync reports what matters.
                Err(e) => tracing::debug!("cannot watch {}: {e}", dir.display()),
            }
        }
    }

    /// Replaces the OS's notifications with polling; the caller then
    /// watches its directories again.
    fn fall_back(
        &mut self,
        debounce: Duration,
        raw: &Raw,
        say: &dyn Fn(Result<Vec<PathBuf>, String>),
    ) -> bool {
        if matches!(self.backend, Backend::Poll(_)) {
            return false;
        }
        let Ok(backend) = polling(debounce, raw.clone()) else {
            say(Err(
                "cannot poll for changes either; saves are not seen".into()
            ));
            return false;
        };
        say(Err(limit_message()));
        // The caller watches its directories again, through polling.
        self.watched.clear();
        self.backend = backend;
        self.limit = None;
        // Saves between the last event and the switch: sync once to be sure.
        say(Ok(Vec::new()));
        true
    }
}

/// Changes under the directories that feed the session's artifact,
/// debounced and filtered by its rules. A change to a kustomization file
/// (or a new directory) re-plans what is watched.
pub struct DirWatcher {
    rx: mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
    inner: Arc<Mutex<Inner>>,
}

impl DirWatcher {
    /// Starts watching what `target`'s syncs package.
    pub fn new(target: WatchTarget, debounce: Duration) -> Result<DirWatcher, notify::Error> {
        Self::with_limit(target, debounce, None)
    }

    /// As [`DirWatcher::new`], acting as if the OS allowed only `limit`
    /// watches (tests of the polling fallback).
    pub fn with_limit(
        target: WatchTarget,
        debounce: Duration,
        limit: Option<usize>,
    ) -> Result<DirWatcher, notify::Error> {
        let started = std::time::Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let (raw_tx, raw_rx) = std::sync::mpsc::channel::<DebounceEventResult>();
        let (rules, dirs) = plan(&target);
        let inner = Arc::new(Mutex::new(Inner {
            rules,
            watched: BTreeSet::new(),
            backend: native(debounce, raw_tx.clone())?,
            limit,
        }));
        let say = {
            let tx = tx.clone();
            move |m: Result<Vec<PathBuf>, String>| {
                let _ = tx.send(m);
            }
        };
        if let Ok(mut i) = inner.lock() {
            i.set(dirs, debounce, &raw_tx, &say);
            tracing::debug!(
                "watching {} directories ({}) in {:?}",
                i.watched.len(),
                if matches!(i.backend, Backend::Poll(_)) {
                    "polling"
                } else {
                    "native"
                },
                started.elapsed()
            );
        }
        let manager = inner.clone();
        std::thread::spawn(move || {
            while let Ok(result) = raw_rx.recv() {
                let events = match result {
                    Ok(events) => events,
                    Err(errors) => {
                        let limit = errors
                            .iter()
                            .any(|e| matches!(e.kind, notify::ErrorKind::MaxFilesWatch));
                        if limit && let Ok(mut i) = manager.lock() {
                            let (_, dirs) = plan(&target);
                            if i.fall_back(debounce, &raw_tx, &say) {
                                i.set(dirs, debounce, &raw_tx, &say);
                            }
                            continue;
                        }
                        let text = errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ");
                        say(Err(text));
                        continue;
                    }
                };
                let Ok(mut i) = manager.lock() else {
                    return;
                };
                let paths: Vec<PathBuf> = events
                    .iter()
                    .filter(|e| !e.kind.is_access() && !e.kind.is_other())
                    .flat_map(|e| e.paths.iter())
                    .filter(|p| match &i.rules {
                        Some(rules) => relevant(&target.root, rules, p),
                        None => p.starts_with(&target.root),
                    })
                    .cloned()
                    .collect();
                // What decides what is packaged changed: plan again.
                let replan = events.iter().any(|e| {
                    use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};
                    let dir_event = matches!(
                        e.kind,
                        EventKind::Create(CreateKind::Folder)
                            | EventKind::Remove(RemoveKind::Folder)
                    ) || ((e.kind.is_create()
                        || e.kind.is_remove()
                        || matches!(e.kind, EventKind::Modify(ModifyKind::Name(_))))
                        && e.paths.iter().any(|p| p.is_dir() || i.watched.contains(p)));
                    dir_event
                        || e.paths.iter().any(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| crate::kustomize::FILE_NAMES.contains(&n))
                        })
                });
                if replan {
                    let (rules, dirs) = plan(&target);
                    i.rules = rules;
                    i.set(dirs, debounce, &raw_tx, &say);
                }
                drop(i);
                if !paths.is_empty() && tx.send(Ok(paths)).is_err() {
                    return;
                }
            }
        });
        Ok(DirWatcher { rx, inner })
    }

    /// How many directories are watched, and whether by polling.
    pub fn watching(&self) -> (usize, bool) {
        self.inner.lock().map_or((0, false), |i| {
            (i.watched.len(), matches!(i.backend, Backend::Poll(_)))
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
    use crate::git::tests::run as git;

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

    fn target(root: &Path, dir: &str) -> WatchTarget {
        WatchTarget {
            root: root.to_path_buf(),
            dir: root.join(dir),
            walk: WalkOptions {
                git_ignore: true,
                ..Default::default()
            },
        }
    }

    /// The next batch of changed paths within `secs`, if any.
    async fn next(w: &mut DirWatcher, secs: u64) -> Option<Result<Vec<PathBuf>, String>> {
        tokio::time::timeout(Duration::from_secs(secs), w.changed())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn saves_are_seen_and_ignored_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        let mut watcher = DirWatcher::new(target(&root, ""), Duration::from_millis(50)).unwrap();
        std::fs::write(root.join(".app.yaml.swp"), "x").unwrap();
        std::fs::write(root.join("logo.png"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(root.join("app.yaml"), "kind: ConfigMap\n").unwrap();
        let paths = next(&mut watcher, 5)
            .await
            .expect("a change within 5s")
            .unwrap();
        assert!(paths.iter().all(|p| p.ends_with("app.yaml")), "{paths:?}");
    }

    /// An application repository: sources, Git-ignored build output with
    /// many directories, and an overlay in deploy/ on a base in base/.
    fn app_repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        git(&root, &["init", "-q"]);
        let w = |p: &str, s: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(".gitignore", "target/\nnode_modules/\n");
        w("src/main.rs", "fn main() {}\n");
        w("deploy/kustomization.yaml", "resources:\n- ../base\n");
        w("base/kustomization.yaml", "resources:\n- cm.yaml\n");
        w("base/cm.yaml", "kind: ConfigMap\nmetadata: {name: a}\n");
        w("other/kustomization.yaml", "resources:\n- cm.yaml\n");
        w("other/cm.yaml", "kind: ConfigMap\nmetadata: {name: b}\n");
        for i in 0..200 {
            std::fs::create_dir_all(root.join(format!("target/debug/deps/d{i}"))).unwrap();
            std::fs::create_dir_all(root.join(format!("node_modules/p{i}/lib"))).unwrap();
        }
        (dir, root)
    }

    #[tokio::test]
    async fn only_what_the_sync_packages_is_watched_and_a_new_reference_is_picked_up() {
        let (_t, root) = app_repo();
        let mut w = DirWatcher::new(target(&root, "deploy"), Duration::from_millis(50)).unwrap();
        // The root (on the way to both), deploy/ and base/: not target/, node_modules/, src/, other/.
        assert_eq!(w.watching(), (3, false));
        std::fs::write(root.join("target/debug/deps/d1/x.o"), "x").unwrap();
        std::fs::write(root.join("node_modules/p1/lib/i.js"), "x").unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() { }\n").unwrap();
        std::fs::write(root.join("other/cm.yaml"), "kind: ConfigMap\n").unwrap();
        assert!(
            next(&mut w, 1).await.is_none(),
            "unpackaged edits are not changes"
        );
        std::fs::write(
            root.join("base/cm.yaml"),
            "kind: ConfigMap\nmetadata: {name: a2}\n",
        )
        .unwrap();
        let paths = next(&mut w, 5).await.expect("a change").unwrap();
        assert!(
            paths.iter().all(|p| p.ends_with("base/cm.yaml")),
            "{paths:?}"
        );

        // Referencing other/ starts watching it.
        std::fs::write(
            root.join("deploy/kustomization.yaml"),
            "resources:\n- ../base\n- ../other\n",
        )
        .unwrap();
        next(&mut w, 5)
            .await
            .expect("the kustomization change")
            .unwrap();
        assert_eq!(w.watching(), (4, false));
        std::fs::write(
            root.join("other/cm.yaml"),
            "kind: ConfigMap\nmetadata: {name: c}\n",
        )
        .unwrap();
        let paths = next(&mut w, 5).await.expect("a change in other/").unwrap();
        assert!(
            paths.iter().any(|p| p.ends_with("other/cm.yaml")),
            "{paths:?}"
        );
    }

    #[tokio::test]
    async fn a_new_directory_is_watched_and_its_files_count() {
        let (_t, root) = app_repo();
        let mut w = DirWatcher::new(target(&root, "base"), Duration::from_millis(50)).unwrap();
        assert_eq!(w.watching(), (2, false));
        std::fs::create_dir_all(root.join("base/more/deeper")).unwrap();
        next(&mut w, 5).await.expect("the new directory").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.drain();
        assert_eq!(w.watching(), (4, false));
        std::fs::write(root.join("base/more/deeper/cm.yaml"), "kind: ConfigMap\n").unwrap();
        let paths = next(&mut w, 5).await.expect("a change below it").unwrap();
        assert!(
            paths.iter().any(|p| p.ends_with("deeper/cm.yaml")),
            "{paths:?}"
        );
    }

    #[tokio::test]
    async fn at_the_systems_watch_limit_it_says_so_and_polls() {
        let (_t, root) = app_repo();
        let mut w =
            DirWatcher::with_limit(target(&root, "deploy"), Duration::from_millis(50), Some(1))
                .unwrap();
        let said = next(&mut w, 5).await.expect("a message").unwrap_err();
        assert!(
            said.contains("fs.inotify.max_user_watches") && said.contains("polling"),
            "{said}"
        );
        assert_eq!(w.watching(), (3, true));
        // Polling still sees saves (within its interval).
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.drain();
        std::fs::write(
            root.join("base/cm.yaml"),
            "kind: ConfigMap\nmetadata: {name: p}\n",
        )
        .unwrap();
        let paths = loop {
            let batch = next(&mut w, 5)
                .await
                .expect("a change seen by polling")
                .unwrap();
            if !batch.is_empty() {
                break batch;
            }
        };
        assert!(
            paths.iter().any(|p| p.ends_with("base/cm.yaml")),
            "{paths:?}"
        );
    }
}
