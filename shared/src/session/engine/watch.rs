//! Watching the session's directory: the OS's notifications (through
//! `notify`: inotify, FSEvents, ReadDirectoryChangesW), filtered by the
//! artifact's ignore rules and editors' temporary files, and coalesced.
//!
//! Coalescing starts at the first event: a batch ends once the directory has
//! been quiet for a short window (an editor's save is several events within
//! a millisecond or two: rename to a backup, create, write, close), or at a
//! cap while writes keep coming. A trailing debounce would add its whole
//! window to every save's latency; this adds only the quiet window.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
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
    // Ignored whatever it is (`result` in .sourceignore): decided without
    // looking through it (a link to the Nix store, or one that dangles).
    if rules.ignores(rel, false) && rules.ignores(rel, true) {
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
    let (only, keep) = super::packaging::plan(&target.root, &target.dir)
        .map(|p| (p.only, p.keep))
        .unwrap_or_else(|_| {
            // A kustomization that cannot be read: the sync says why; watch
            // the directory so that its fix is seen.
            let rel = target
                .dir
                .strip_prefix(&target.root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            ((!rel.is_empty()).then(|| vec![rel]), Vec::new())
        });
    let options = WalkOptions {
        only,
        keep,
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

/// Filesystems whose changes made elsewhere (another machine, the VM's
/// host, a FUSE daemon's backend) never reach the kernel's notifications:
/// network and host-shared filesystems, and FUSE.
const UNNOTIFIED_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "virtiofs",
    "vboxsf",
    "vmhgfs",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "drvfs",
    "fuse",
    "fuseblk",
];

/// The type of the filesystem that `dir` (canonical) is on, from a
/// `/proc/self/mountinfo` text: the longest mount point that contains it.
pub fn fs_type(mountinfo: &str, dir: &Path) -> Option<String> {
    let unescape = |s: &str| {
        // Octal escapes of space, tab, newline and backslash.
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('\\') {
            out.push_str(&rest[..i]);
            let code = rest
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            match code {
                Some(c) => {
                    out.push(char::from(c));
                    rest = &rest[i + 4..];
                }
                None => {
                    out.push('\\');
                    rest = &rest[i + 1..];
                }
            }
        }
        out.push_str(rest);
        out
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = unescape(mount.split(' ').nth(4)?);
            let fs = fs.split(' ').next()?.to_string();
            dir.starts_with(&point).then_some((point.len(), fs))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// Why `dir` must be watched by polling (its filesystem does not report
/// every change to the kernel's notifications), or `None`.
pub fn needs_polling(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let fs = fs_type(&info, dir)?;
    let base = fs.split('.').next().unwrap_or(&fs);
    UNNOTIFIED_FS.contains(&base).then(|| {
        format!(
            "{} is on a {fs} filesystem, which does not report changes made through another \
             machine or the host; watching by polling every {}s instead",
            dir.display(),
            POLL_INTERVAL.as_secs()
        )
    })
}

/// How a session's directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// The OS's notifications, unless the filesystem does not deliver them
    /// (then polling, said).
    #[default]
    Auto,
    /// Polling, whatever the filesystem (`--poll`).
    Poll,
}

/// What delivers file events: the OS's notifications, or polling once
/// the OS's limit on watches is reached.
enum Backend {
    Native(notify::RecommendedWatcher),
    Poll(notify::PollWatcher),
}

impl Backend {
    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            Backend::Native(w) => w.watch(dir, RecursiveMode::NonRecursive),
            Backend::Poll(w) => w.watch(dir, RecursiveMode::NonRecursive),
        }
    }

    fn unwatch(&mut self, dir: &Path) {
        let _ = match self {
            Backend::Native(w) => w.unwatch(dir),
            Backend::Poll(w) => w.unwatch(dir),
        };
    }
}

/// How often a deleted or moved-away directory is looked for.
const VANISHED_POLL: Duration = Duration::from_millis(250);

/// How often the polling fallback looks.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long the directory must stay quiet for a batch of events to end.
pub const QUIET: Duration = Duration::from_millis(15);

/// How many quiet windows a batch may last while events keep coming.
const BATCH_CAP: u32 = 10;

type Raw = std::sync::mpsc::Sender<notify::Result<notify::Event>>;

struct Inner {
    rules: Option<IgnoreRules>,
    watched: BTreeSet<PathBuf>,
    backend: Backend,
    /// Test knob: behave as if the OS refused more watches than this.
    limit: Option<usize>,
}

fn native(raw: Raw) -> notify::Result<Backend> {
    let w = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        let _ = raw.send(r);
    })?;
    Ok(Backend::Native(w))
}

fn polling(raw: Raw) -> notify::Result<Backend> {
    let w = notify::PollWatcher::new(
        move |r: notify::Result<notify::Event>| {
            let _ = raw.send(r);
        },
        // Contents, not only mtime: it has a resolution of seconds there.
        notify::Config::default()
            .with_poll_interval(POLL_INTERVAL)
            .with_compare_contents(true),
    )?;
    Ok(Backend::Poll(w))
}

/// Whether an event says a writer is done with a file: closed after
/// writing, or renamed into place (an atomic save). Linux reports both;
/// FSEvents and ReadDirectoryChangesW report no closes, so there every
/// batch waits its whole quiet window.
fn finishes_a_write(event: &notify::Result<notify::Event>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    matches!(
        event.as_ref().map(|e| e.kind),
        Ok(EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)))
    )
}

/// How long a batch waits for more after `event`: `quiet`, or a fifth of
/// it once the event finishes a write (see [`next_batch`]).
fn window_after(event: &notify::Result<notify::Event>, quiet: Duration) -> Duration {
    if finishes_a_write(event) {
        quiet / 5
    } else {
        quiet
    }
}

/// The events that arrive from the first one until `quiet` passes without
/// another (or `quiet * BATCH_CAP` since the first); `None` once the
/// senders are gone and nothing is left. After an event that finishes a
/// write the window is a fifth as long: what comes with a save (the next
/// files of a "save all" or a checkout) follows within a millisecond or
/// two, and the save is not kept waiting for nothing.
fn next_batch(
    raw: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    quiet: Duration,
) -> Option<Vec<notify::Result<notify::Event>>> {
    use std::sync::mpsc::RecvTimeoutError;
    let first = raw.recv().ok()?;
    let cap = Instant::now() + quiet * BATCH_CAP;
    let mut window = window_after(&first, quiet);
    let mut batch = vec![first];
    loop {
        let wait = window.min(cap.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return Some(batch);
        }
        match raw.recv_timeout(wait) {
            Ok(r) => {
                window = window_after(&r, quiet);
                batch.push(r);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return Some(batch);
            }
        }
    }
}

/// The synced directory was deleted or moved away: nothing to sync (an
/// empty artifact would prune everything). Says so, waits for it to come
/// back, watches it afresh and asks for a sync of it. `false`: the session
/// stopped meanwhile (or the watcher's state is gone).
fn await_return(
    target: &WatchTarget,
    tx: &mpsc::UnboundedSender<Result<Vec<PathBuf>, String>>,
    raw_rx: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    raw_tx: &Raw,
    manager: &Mutex<Inner>,
    say: &dyn Fn(Result<Vec<PathBuf>, String>),
) -> bool {
    say(Err(format!(
        "{} was deleted or moved away; what was last synced stays applied. \
         Waiting for it to come back (Ctrl+C to stop and clean up)",
        target.dir.display()
    )));
    while !target.dir.is_dir() {
        if tx.is_closed() {
            return false;
        }
        std::thread::sleep(VANISHED_POLL);
    }
    // Events of its return are for the old watches: drop them.
    while raw_rx.try_recv().is_ok() {}
    let Ok(mut i) = manager.lock() else {
        return false;
    };
    let (rules, dirs) = plan(target);
    i.rules = rules;
    for old in std::mem::take(&mut i.watched) {
        i.backend.unwatch(&old);
    }
    i.set(dirs, raw_tx, say);
    drop(i);
    say(Err(format!("{} is back; syncing it", target.dir.display())));
    tx.send(Ok(vec![target.dir.clone()])).is_ok()
}

/// The paths of a batch of events that matter to the session: changes (not
/// reads) under the root, kept by the packaging rules when there are any.
fn changed_paths(
    events: &[notify::Event],
    root: &Path,
    rules: Option<&IgnoreRules>,
) -> BTreeSet<PathBuf> {
    events
        .iter()
        .filter(|e| !e.kind.is_access() && !e.kind.is_other())
        .flat_map(|e| e.paths.iter())
        .filter(|p| match rules {
            Some(rules) => relevant(root, rules, p),
            None => p.starts_with(root),
        })
        .cloned()
        .collect()
}

/// Whether an event changes what decides what is packaged and watched: a
/// directory made, removed or renamed (or a watched one), or a
/// kustomization file touched.
fn replans(e: &notify::Event, watched: &BTreeSet<PathBuf>) -> bool {
    use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind};
    let dir_event = matches!(
        e.kind,
        EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder)
    ) || ((e.kind.is_create()
        || e.kind.is_remove()
        || matches!(e.kind, EventKind::Modify(ModifyKind::Name(_))))
        && e.paths.iter().any(|p| p.is_dir() || watched.contains(p)));
    dir_event
        || e.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| crate::kustomize::FILE_NAMES.contains(&n))
        })
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
    fn set(&mut self, dirs: Vec<PathBuf>, raw: &Raw, say: &dyn Fn(Result<Vec<PathBuf>, String>)) {
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
                    if self.fall_back(raw, say) {
                        self.set(want.into_iter().collect(), raw, say);
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
    fn fall_back(&mut self, raw: &Raw, say: &dyn Fn(Result<Vec<PathBuf>, String>)) -> bool {
        if matches!(self.backend, Backend::Poll(_)) {
            return false;
        }
        let Ok(backend) = polling(raw.clone()) else {
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
/// coalesced (see the module's notes) and filtered by its rules. A change to a kustomization file
/// (or a new directory) re-plans what is watched.
pub struct DirWatcher {
    rx: mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
    inner: Arc<Mutex<Inner>>,
    /// Warnings met while draining changes, said at the next `changed`.
    pending: std::collections::VecDeque<String>,
}

impl DirWatcher {
    /// Starts watching what `target`'s syncs package.
    pub fn new(target: WatchTarget, quiet: Duration) -> Result<DirWatcher, notify::Error> {
        Self::start(target, quiet, Backing::Auto, None)
    }

    /// As [`DirWatcher::new`], acting as if the OS allowed only `limit`
    /// watches (tests of the polling fallback).
    pub fn with_limit(
        target: WatchTarget,
        quiet: Duration,
        limit: Option<usize>,
    ) -> Result<DirWatcher, notify::Error> {
        Self::start(target, quiet, Backing::Auto, limit)
    }

    /// Starts watching what `target`'s syncs package, by the OS's
    /// notifications or by polling (`backing`, and the filesystem's type).
    pub fn start(
        target: WatchTarget,
        quiet: Duration,
        backing: Backing,
        limit: Option<usize>,
    ) -> Result<DirWatcher, notify::Error> {
        let started = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let (raw_tx, raw_rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
        let (rules, dirs) = plan(&target);
        let say = {
            let tx = tx.clone();
            move |m: Result<Vec<PathBuf>, String>| {
                let _ = tx.send(m);
            }
        };
        let poll = match backing {
            Backing::Poll => Some(format!(
                "watching {} by polling every {}s (--poll)",
                target.dir.display(),
                POLL_INTERVAL.as_secs()
            )),
            Backing::Auto => needs_polling(&target.dir),
        };
        let backend = match &poll {
            Some(why) => {
                say(Err(why.clone()));
                polling(raw_tx.clone())?
            }
            None => native(raw_tx.clone())?,
        };
        let inner = Arc::new(Mutex::new(Inner {
            rules,
            watched: BTreeSet::new(),
            backend,
            limit,
        }));
        if let Ok(mut i) = inner.lock() {
            i.set(dirs, &raw_tx, &say);
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
            while let Some(batch) = next_batch(&raw_rx, quiet) {
                let mut events = Vec::new();
                let mut errors = Vec::new();
                for r in batch {
                    match r {
                        Ok(e) => events.push(e),
                        Err(e) => errors.push(e),
                    }
                }
                if errors
                    .iter()
                    .any(|e| matches!(e.kind, notify::ErrorKind::MaxFilesWatch))
                    && let Ok(mut i) = manager.lock()
                {
                    let (_, dirs) = plan(&target);
                    if i.fall_back(&raw_tx, &say) {
                        i.set(dirs, &raw_tx, &say);
                    }
                    continue;
                }
                if !errors.is_empty() {
                    let text = errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    say(Err(text));
                }
                // The directory itself was deleted or moved away: nothing
                // to sync (an empty artifact would prune everything); wait
                // for it to come back.
                if !target.dir.is_dir() {
                    if !await_return(&target, &tx, &raw_rx, &raw_tx, &manager, &say) {
                        return;
                    }
                    continue;
                }
                let Ok(mut i) = manager.lock() else {
                    return;
                };
                let mut paths = changed_paths(&events, &target.root, i.rules.as_ref());
                // The OS dropped events (its queue overflowed): anything may
                // have changed.
                let rescan = events.iter().any(|e| e.need_rescan());
                if rescan {
                    paths.insert(target.dir.clone());
                }
                // What decides what is packaged changed: plan again.
                let replan = rescan || events.iter().any(|e| replans(e, &i.watched));
                if replan {
                    let (rules, dirs) = plan(&target);
                    i.rules = rules;
                    i.set(dirs, &raw_tx, &say);
                }
                drop(i);
                if !paths.is_empty() && tx.send(Ok(paths.into_iter().collect())).is_err() {
                    return;
                }
            }
        });
        Ok(DirWatcher {
            rx,
            inner,
            pending: Default::default(),
        })
    }

    /// How many directories are watched, and whether by polling.
    pub fn watching(&self) -> (usize, bool) {
        self.inner.lock().map_or((0, false), |i| {
            (i.watched.len(), matches!(i.backend, Backend::Poll(_)))
        })
    }

    /// The next batch of relevant changed paths (or a watcher error).
    pub async fn changed(&mut self) -> Option<Result<Vec<PathBuf>, String>> {
        if let Some(w) = self.pending.pop_front() {
            return Some(Err(w));
        }
        self.rx.recv().await
    }

    /// Drops changes already queued (e.g. those a sync has just packaged);
    /// warnings among them are kept for [`DirWatcher::changed`].
    pub fn drain(&mut self) -> bool {
        let mut any = false;
        while let Ok(r) = self.rx.try_recv() {
            match r {
                Ok(_) => any = true,
                Err(w) => self.pending.push_back(w),
            }
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
    fn what_replans_and_which_paths_count() {
        use notify::event::{
            AccessKind, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        };
        let root = Path::new("/repo");
        let ev = |kind, p: &str| notify::Event::new(kind).add_path(root.join(p));
        let watched: BTreeSet<PathBuf> = [root.join("deploy/old")].into_iter().collect();
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        // A directory made, or a watched one removed; a kustomization file touched.
        assert!(replans(
            &ev(EventKind::Create(CreateKind::Folder), "deploy/new"),
            &watched
        ));
        assert!(replans(
            &ev(EventKind::Remove(RemoveKind::Any), "deploy/old"),
            &watched
        ));
        assert!(replans(&ev(data, "deploy/kustomization.yaml"), &watched));
        // A manifest saved: a sync, not a new plan.
        assert!(!replans(&ev(data, "deploy/app.yaml"), &watched));
        assert!(!replans(
            &ev(EventKind::Remove(RemoveKind::File), "deploy/app.yaml"),
            &watched
        ));

        let events = [
            ev(data, "deploy/app.yaml"),
            ev(EventKind::Access(AccessKind::Read), "deploy/read.yaml"),
            notify::Event::new(data).add_path(PathBuf::from("/elsewhere/x.yaml")),
        ];
        let paths: Vec<PathBuf> = changed_paths(&events, root, None).into_iter().collect();
        assert_eq!(paths, vec![root.join("deploy/app.yaml")]);
    }

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

    fn event(path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(notify::EventKind::Any).add_path(PathBuf::from(path)))
    }

    // How long these waits take is measured by `make bench` (shared/benches/budgets.rs).

    #[test]
    fn a_save_is_one_batch_that_ends_one_quiet_window_after_its_last_event() {
        let (tx, rx) = std::sync::mpsc::channel();
        let quiet = Duration::from_millis(40);
        // An editor's save: a few events a millisecond apart.
        for p in ["a~", "a", "a", "a"] {
            tx.send(event(p)).unwrap();
        }
        // The batch ends while its sender lives: by its quiet window, which
        // none of these events shortens.
        let batch = next_batch(&rx, quiet).unwrap();
        assert_eq!(batch.len(), 4);
        assert!(batch.iter().all(|e| window_after(e, quiet) == quiet));
        drop(tx);
        assert!(next_batch(&rx, quiet).is_none());
    }

    #[test]
    fn a_closed_write_ends_the_batch_after_a_short_window_and_what_follows_joins_it() {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let closed = |p: &str| {
            Ok(
                notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                    .add_path(PathBuf::from(p)),
            )
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let quiet = Duration::from_millis(200);
        // A save: modified, then closed.
        tx.send(event("a")).unwrap();
        tx.send(closed("a")).unwrap();
        let batch = next_batch(&rx, quiet).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(window_after(&batch[0], quiet), quiet);
        assert_eq!(window_after(&batch[1], quiet), quiet / 5);
        let renamed = Ok(
            notify::Event::new(EventKind::Modify(notify::event::ModifyKind::Name(
                notify::event::RenameMode::To,
            )))
            .add_path(PathBuf::from("a")),
        );
        assert_eq!(window_after(&renamed, quiet), quiet / 5);
        // A second file right after the first one's close joins the batch.
        let writer = std::thread::spawn(move || {
            tx.send(closed("a")).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            tx.send(event("b")).unwrap();
            tx.send(closed("b")).unwrap();
        });
        let batch = next_batch(&rx, quiet).unwrap();
        writer.join().unwrap();
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn writes_that_keep_coming_are_cut_at_the_cap_and_nothing_is_lost() {
        let (tx, rx) = std::sync::mpsc::channel();
        let quiet = Duration::from_millis(20);
        let writer = std::thread::spawn(move || {
            for _ in 0..40 {
                tx.send(event("big")).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let first = next_batch(&rx, quiet).unwrap();
        assert!(first.len() < 40, "cut at the cap");
        writer.join().unwrap();
        let mut total = first.len();
        while let Some(b) = next_batch(&rx, quiet) {
            total += b.len();
        }
        assert_eq!(total, 40);
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

    /// On Linux the OS reports a save's close, so its batch waits a fifth
    /// of the window (`make bench` shows the wait).
    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_a_saved_files_close_is_reported_and_shortens_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut backend = native(tx).unwrap();
        backend.watch(&root).unwrap();
        std::fs::write(root.join("app.yaml"), "kind: ConfigMap\n").unwrap();
        let quiet = Duration::from_millis(500);
        let closed = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
            .any(|e| window_after(&e, quiet) == quiet / 5);
        assert!(closed, "the save's close was not reported");
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

    #[test]
    fn the_filesystem_of_a_directory_is_its_longest_mount_point() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    27 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
                    40 27 0:50 / /home/ann/My\\040Share rw - cifs //nas/share rw\n\
                    41 27 0:51 / /mnt/c rw - 9p drvfs rw\n\
                    42 27 0:52 / /home/ann/remote rw - fuse.sshfs ann@box: rw\n";
        let fs = |d: &str| fs_type(info, Path::new(d));
        assert_eq!(fs("/home/ann/app/deploy").as_deref(), Some("ext4"));
        assert_eq!(fs("/home/ann/My Share/app").as_deref(), Some("cifs"));
        assert_eq!(fs("/mnt/c/Users/ann/app").as_deref(), Some("9p"));
        assert_eq!(fs("/home/ann/remote/app").as_deref(), Some("fuse.sshfs"));
        // A prefix of a name is not its mount point.
        assert_eq!(fs("/mnt/cdrom").as_deref(), Some("ext4"));
    }

    #[test]
    fn a_local_directory_is_watched_by_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        // The machine's temporary directory is local (ext4, tmpfs, overlay).
        assert_eq!(needs_polling(&root), None);
    }

    #[tokio::test]
    async fn poll_is_said_and_sees_saves() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        std::fs::write(root.join("a.yaml"), "kind: ConfigMap\n").unwrap();
        let mut w = DirWatcher::start(
            target(&root, ""),
            Duration::from_millis(50),
            Backing::Poll,
            None,
        )
        .unwrap();
        let said = next(&mut w, 5).await.expect("a message").unwrap_err();
        assert!(
            said.contains("polling") && said.contains("--poll"),
            "{said}"
        );
        assert!(w.watching().1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(root.join("a.yaml"), "kind: ConfigMap\nmetadata: {}\n").unwrap();
        let paths = loop {
            let batch = next(&mut w, 5).await.expect("a change").unwrap();
            if !batch.is_empty() {
                break batch;
            }
        };
        assert!(paths.iter().any(|p| p.ends_with("a.yaml")), "{paths:?}");
    }

    #[tokio::test]
    async fn a_deleted_directory_is_said_not_synced_and_its_return_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical_root(dir.path()).unwrap();
        std::fs::create_dir(root.join("deploy")).unwrap();
        std::fs::write(root.join("deploy/a.yaml"), "kind: ConfigMap\n").unwrap();
        let mut w = DirWatcher::new(target(&root, "deploy"), Duration::from_millis(50)).unwrap();
        std::fs::rename(root.join("deploy"), root.join("moved")).unwrap();
        // Only words until it is back: never a change to sync.
        let said = loop {
            match next(&mut w, 5).await.expect("a message") {
                Ok(paths) => assert!(
                    paths.is_empty() || root.join("deploy").is_dir(),
                    "{paths:?}"
                ),
                Err(m) => break m,
            }
        };
        assert!(said.contains("deleted or moved away"), "{said}");
        assert!(next(&mut w, 1).await.is_none(), "nothing while it is away");
        std::fs::rename(root.join("moved"), root.join("deploy")).unwrap();
        let back = next(&mut w, 5).await.expect("its return").unwrap_err();
        assert!(back.contains("is back"), "{back}");
        let paths = next(&mut w, 5).await.expect("a sync").unwrap();
        assert_eq!(paths, vec![root.join("deploy")]);
        // Watched again: a save in it is seen.
        std::fs::write(
            root.join("deploy/a.yaml"),
            "kind: ConfigMap\nmetadata: {}\n",
        )
        .unwrap();
        let paths = next(&mut w, 5).await.expect("a save").unwrap();
        assert!(paths.iter().any(|p| p.ends_with("a.yaml")), "{paths:?}");
    }

    #[tokio::test]
    async fn a_synced_root_moved_away_is_noticed_too() {
        let parent = tempfile::tempdir().unwrap();
        let root = canonical_root(parent.path()).unwrap().join("app");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.yaml"), "kind: ConfigMap\n").unwrap();
        // Only the root itself is watched: its parent is not.
        let mut w = DirWatcher::new(target(&root, ""), Duration::from_millis(50)).unwrap();
        std::fs::rename(&root, root.with_file_name("gone")).unwrap();
        let said = loop {
            match next(&mut w, 5).await.expect("a message") {
                Ok(_) => continue,
                Err(m) => break m,
            }
        };
        assert!(said.contains("deleted or moved away"), "{said}");
    }
}
