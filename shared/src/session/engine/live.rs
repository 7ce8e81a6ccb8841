//! The live session: sync on start, then on every save, until stopped; then
//! clean up (or keep). The rules of the loop live in [`sync_loop`], apart
//! from the cluster, so they are tested with a paused clock:
//! - one sync at a time; saves during a sync queue exactly one more;
//! - a save while a sync waits for Flux supersedes that wait: the newer
//!   save is synced at once (Flux applies the newest revision anyway);
//! - a failed push (registry unreachable) is retried with backoff, 2 s
//!   doubling to 30 s, even without a save; any other outcome resets it;
//! - a stop (Ctrl+C, SIGTERM, console close) at any point, also before the
//!   first sync finished, ends the loop; [`run`] then removes what exists.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::watch::DirWatcher;
use super::{EngineError, Event, Session, SyncOutcome};
use crate::portforward::{self, ForwardSpec};
use crate::session::record::lease::Lost;

/// Something that syncs (a [`Session`]; a fake in tests).
pub trait Syncer {
    fn sync(&mut self) -> impl Future<Output = SyncOutcome>;
    /// Set while a sync waits for Flux: a save then supersedes it.
    fn waiting_flag(&self) -> Arc<AtomicBool>;
    /// Armed between a sync that ended `Ready` and the next one: resolves
    /// once what that sync applied fails for certain after all (a container
    /// that crashed after it first counted as ready), having reported and
    /// recorded it. Never resolves while all is well.
    fn watch_after(&mut self) -> impl Future<Output = ()> {
        std::future::pending()
    }
}

impl Syncer for Session {
    fn sync(&mut self) -> impl Future<Output = SyncOutcome> {
        Session::sync(self)
    }
    fn waiting_flag(&self) -> Arc<AtomicBool> {
        Session::waiting_flag(self)
    }
    fn watch_after(&mut self) -> impl Future<Output = ()> {
        Session::watch_after_sync(self)
    }
}

/// A source of "the directory changed" (a [`DirWatcher`]; a channel in tests).
pub trait Changes {
    /// The next change; `None` once the source is gone.
    fn changed(&mut self) -> impl Future<Output = Option<Result<(), String>>>;
    /// Drops changes already queued; whether there were any.
    fn drain(&mut self) -> bool;
}

impl Changes for DirWatcher {
    async fn changed(&mut self) -> Option<Result<(), String>> {
        DirWatcher::changed(self).await.map(|r| r.map(|_| ()))
    }
    fn drain(&mut self) -> bool {
        DirWatcher::drain(self)
    }
}

/// First wait before retrying a failed push, and the longest.
pub const BACKOFF_START: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopEnd {
    /// `once`: the outcome of the one sync.
    Once(SyncOutcome),
    /// The stop future resolved.
    Stopped,
    /// The change source closed.
    WatcherGone,
}

/// Runs syncs by the rules above until `stop` resolves, or after one sync
/// with `once`. `started` is called once, after the first sync.
pub async fn sync_loop<S: Syncer, C: Changes>(
    syncer: &mut S,
    changes: &mut C,
    mut stop: Pin<&mut impl Future<Output = ()>>,
    once: bool,
    report: &dyn Fn(&Event),
    mut started: impl FnMut(),
) -> LoopEnd {
    let waiting = syncer.waiting_flag();
    let mut backoff = BACKOFF_START;
    let mut closed = false;
    let mut first = true;
    loop {
        // One sync, re-run while saves arrive during it.
        let outcome = loop {
            changes.drain();
            let mut queued = false;
            let finished = {
                let sync = syncer.sync();
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut stop => return LoopEnd::Stopped,
                        o = &mut sync => break Some(o),
                        c = changes.changed(), if !closed => match c {
                            Some(Ok(())) if waiting.load(Ordering::SeqCst) => break None,
                            Some(Ok(())) => queued = true,
                            Some(Err(e)) => report(&Event::Warning {
                                message: format!("file watcher: {e}"),
                            }),
                            None => closed = true,
                        },
                    }
                }
            };
            let Some(outcome) = finished else {
                waiting.store(false, Ordering::SeqCst);
                report(&Event::Superseded);
                continue;
            };
            if once {
                return LoopEnd::Once(outcome);
            }
            if !outcome.needs_retry() {
                backoff = BACKOFF_START;
            }
            if queued || changes.drain() {
                continue;
            }
            break outcome;
        };
        if first {
            first = false;
            started();
        }
        if closed {
            return LoopEnd::WatcherGone;
        }
        // Wait for a save, a retry, or the stop; after a healthy sync, keep
        // an eye on what it applied meanwhile.
        let retry = outcome.needs_retry();
        let mut watching = matches!(outcome, SyncOutcome::Ready { .. });
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        let after = syncer.watch_after();
        tokio::pin!(after);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return LoopEnd::Stopped,
                c = changes.changed() => match c {
                    Some(Ok(())) => break,
                    Some(Err(e)) => report(&Event::Warning {
                        message: format!("file watcher: {e}"),
                    }),
                    None => return LoopEnd::WatcherGone,
                },
                _ = &mut sleep, if retry => {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    break;
                }
                () = &mut after, if watching => watching = false,
            }
        }
    }
}

/// How a live session is run.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Sync once and stop (cleaning up unless `keep`).
    pub once: bool,
    /// Leave the session's objects in place on exit.
    pub keep: bool,
    /// How long cleanup may take (Flux pruning included).
    pub cleanup_timeout: Duration,
    /// `--export-gitops FILE`, named in the hand-over hint.
    pub export_file: Option<PathBuf>,
    /// Stream the logs of the session's pods.
    pub logs: bool,
}

/// How a live session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEnd {
    /// `--once`: the sync ended Ready (or unchanged).
    Ready,
    /// `--once`: the sync failed.
    Failed,
    /// Stopped, cleaned up (or kept).
    Stopped,
    /// A second stop during cleanup: these are left in the cluster.
    Interrupted(Vec<String>),
    /// The cleanup could not finish in time (the API server unreachable):
    /// these may be left in the cluster.
    CleanupFailed(Vec<String>),
    /// The session stopped syncing: it no longer holds its Lease.
    Lost(Lost),
}

impl LiveEnd {
    /// The process exit code: 0, 1 for a failed `--once`, a cleanup that
    /// could not finish or a session taken by someone else, 130 when
    /// interrupted. A session removed by `gitops-sessions prune` or
    /// `delete` ends with 0: what it made is gone, as after Ctrl+C.
    pub fn exit_code(&self) -> u8 {
        match self {
            LiveEnd::Ready | LiveEnd::Stopped | LiveEnd::Lost(Lost::Removed { .. }) => 0,
            LiveEnd::Failed | LiveEnd::CleanupFailed(_) | LiveEnd::Lost(_) => 1,
            LiveEnd::Interrupted(_) => 130,
        }
    }
}

/// Aborts background tasks (port-forwards, log and event followers) when
/// the session ends.
#[derive(Default)]
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// The `--port-forward` listeners, bound before the session starts so a
/// busy port is refused before anything else happens.
pub struct Forwards(Vec<(tokio::net::TcpListener, ForwardSpec)>);

impl Forwards {
    /// Binds every spec's local port on 127.0.0.1.
    pub async fn bind(specs: &[ForwardSpec]) -> Result<Forwards, EngineError> {
        let mut listeners = Vec::new();
        for spec in specs {
            let listener = portforward::listen(spec)
                .await
                .map_err(|e| EngineError::Flag(e.to_string()))?;
            listeners.push((listener, spec.clone()));
        }
        Ok(Forwards(listeners))
    }
}

/// Starts forwarding (through the API server, to the pod currently behind
/// each spec).
fn start_forwards(
    session: &Session,
    forwards: Forwards,
    background: &mut Background,
) -> Result<(), EngineError> {
    if forwards.0.is_empty() {
        return Ok(());
    }
    if session.target().kubeconfig_secret.is_some() {
        return Err(EngineError::Flag(
            "--port-forward reaches pods of this cluster; it cannot reach into a kubeconfig or \
             vcluster sandbox"
                .into(),
        ));
    }
    let namespace = session
        .target()
        .target_namespace
        .clone()
        .unwrap_or_else(|| session.namespace().to_string());
    for (listener, spec) in forwards.0 {
        session.report(&Event::Message {
            message: format!(
                "forwarding 127.0.0.1:{} to {} port {}",
                spec.local, spec.name, spec.remote
            ),
        });
        let report = session.report.clone();
        background.0.push(tokio::spawn(portforward::serve(
            listener,
            session.client().clone(),
            namespace.clone(),
            spec,
            move |w| report(&Event::Warning { message: w }),
        )));
    }
    Ok(())
}

/// Failures the syncs report (the last minute's), kept so that Flux's
/// warning about the same thing is not printed a second time.
type Failures = Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

/// `inner`, remembering the failures it reports.
fn remembering_failures(inner: super::Reporter) -> (super::Reporter, Failures) {
    let failures: Failures = Arc::default();
    let report: super::Reporter = {
        let failures = failures.clone();
        Arc::new(move |e: &Event| {
            if let Event::Failed { message, .. } = e
                && let Ok(mut f) = failures.lock()
            {
                f.retain(|(t, _)| t.elapsed() < Duration::from_secs(60));
                f.push((std::time::Instant::now(), message.clone()));
            }
            inner(e)
        })
    };
    (report, failures)
}

/// Flux's warnings about the session's objects, as they happen (a burst at
/// once, repeats folded), unless a sync reported the same failure.
fn follow_flux_warnings(
    session: &Session,
    report: &super::Reporter,
    failures: Failures,
    background: &mut Background,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    background
        .0
        .push(tokio::spawn(crate::session::readers::logs::flux_warnings(
            session.client().clone(),
            session.namespace().to_string(),
            session.name().to_string(),
            tx,
        )));
    let report = report.clone();
    background
        .0
        .push(tokio::spawn(crate::session::readers::logs::fold_warnings(
            rx,
            move |w| {
                let core = w.message.as_str();
                failures.lock().is_ok_and(|f| {
                    f.iter().any(|(_, m)| {
                        m.contains(core) || core.contains(m.as_str()) || same_lines(m, core)
                    })
                })
            },
            move |message| report(&Event::Warning { message }),
        )));
}

/// The logs of the session's pods (`--logs`), when it has workloads here:
/// in this cluster, or run here by the vcluster of its sandbox.
fn follow_logs(session: &Session, report: &super::Reporter, background: &mut Background) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let logs = crate::session::readers::logs::follow;
    let synced = crate::session::readers::logs::follow_synced;
    let client = session.client().clone();
    let name = session.name().to_string();
    let flux_namespace = session.namespace().to_string();
    let follow = match (session.workloads(), &session.target().vcluster) {
        (Some((namespace, all_pods)), _) => {
            tokio::spawn(logs(client, namespace, name, flux_namespace, all_pods, tx))
        }
        (None, Some(vcluster)) => {
            tokio::spawn(synced(client, flux_namespace, vcluster.clone(), name, tx))
        }
        (None, None) => return,
    };
    background.0.push(follow);
    let report = report.clone();
    background.0.push(tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            report(&Event::Log {
                pod: l.pod,
                container: l.container,
                line: l.line,
            });
        }
    }));
}

/// Runs a live session to its end: port-forwards, the sync loop on
/// `watcher`'s changes, then cleanup (or `--keep`). `signal` makes a future
/// that resolves on a stop request (the user's, or the output's reader
/// going away); `interrupt` one that resolves on the user's own request
/// only: one during cleanup leaves what remains and says what it is. A
/// closed output must not cut the cleanup it started short.
pub async fn run<F, Fut, G, GFut>(
    mut session: Session,
    mut watcher: DirWatcher,
    opts: LiveOptions,
    forwards: Forwards,
    signal: F,
    interrupt: G,
) -> Result<LiveEnd, EngineError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
    G: FnOnce() -> GFut,
    GFut: Future<Output = ()>,
{
    let mut background = Background::default();
    start_forwards(&session, forwards, &mut background)?;
    let (report, failures) = remembering_failures(session.report.clone());
    session.set_reporter(report.clone());
    follow_flux_warnings(&session, &report, failures, &mut background);
    if opts.logs {
        follow_logs(&session, &report, &mut background);
    }
    let dir = session.dir();
    // The user's stop, or the session losing its Lease (removed by
    // `gitops-sessions`, taken over): either ends the loop.
    let mut lost = session.lost();
    let stop = async move {
        tokio::select! {
            _ = signal() => {}
            _ = lost.wait_for(Option::is_some) => {}
        }
    };
    tokio::pin!(stop);
    let keep = opts.keep;
    let end = sync_loop(
        &mut session,
        &mut watcher,
        stop.as_mut(),
        opts.once,
        &|e: &Event| report(e),
        || {
            report(&Event::Message {
                message: format!(
                    "watching {} for changes (Ctrl+C to stop{})",
                    dir.display(),
                    if keep {
                        ", the session is kept"
                    } else {
                        " and clean up"
                    }
                ),
            })
        },
    )
    .await;
    let lost = session.lost().borrow().clone();
    if let Some(why) = lost {
        return lost_lease(&mut session, why, &opts, &report, interrupt).await;
    }
    let result = match &end {
        LoopEnd::Once(o) if o.is_ready() => LiveEnd::Ready,
        LoopEnd::Once(_) => LiveEnd::Failed,
        LoopEnd::Stopped | LoopEnd::WatcherGone => LiveEnd::Stopped,
    };
    if let LoopEnd::WatcherGone = end {
        report(&Event::Warning {
            message: format!("stopped watching {}", dir.display()),
        });
    }
    if opts.keep {
        session.detach().await;
        report(&Event::Message {
            message: format!(
                "session {} kept: its objects stay in namespace {} (remove them with \
                 `kubectl gitops-sessions delete {}`)",
                session.name(),
                session.namespace(),
                session.name()
            ),
        });
        match session.takes_over() {
            Some(app) => report(&Event::Warning {
                message: format!(
                    "{} stays taken over (suspended in Flux) until `kubectl gitops-sessions \
                     delete {} -n {}` hands it back",
                    app.id(),
                    session.name(),
                    session.namespace()
                ),
            }),
            None => report(&Event::Message {
                message: handover(opts.export_file.as_deref()),
            }),
        }
        return Ok(result);
    }
    report(&Event::Message {
        message: "stopping: removing what the session created (Ctrl+C again to leave it)".into(),
    });
    if let Some(end) = clean_up(&mut session, &opts, &report, interrupt).await? {
        return Ok(end);
    }
    // A session in place of a Flux Kustomization said where GitOps resumed.
    if session.takes_over().is_none() {
        report(&Event::Message {
            message: handover(opts.export_file.as_deref()),
        });
    }
    Ok(result)
}

/// The session no longer holds its Lease: it stops syncing. Removed by
/// `gitops-sessions`: that command removes what the session made. Taken
/// over: the new holder syncs it; its objects are left to it. The Lease
/// deleted by hand: nobody else holds the session, so it cleans up.
async fn lost_lease<G, GFut>(
    session: &mut Session,
    why: Lost,
    opts: &LiveOptions,
    report: &super::Reporter,
    interrupt: G,
) -> Result<LiveEnd, EngineError>
where
    G: FnOnce() -> GFut,
    GFut: Future<Output = ()>,
{
    session.stop_heartbeat();
    match &why {
        Lost::Removed { .. } => report(&Event::Message {
            message: format!(
                "stopped: {why}; that command removes what the session made, so this one leaves it to it"
            ),
        }),
        Lost::TakenOver { .. } => report(&Event::Warning {
            message: format!(
                "stopped syncing: {why}; its objects are left to it (nothing was removed)"
            ),
        }),
        Lost::Deleted => {
            let (client, namespace) = (session.client().clone(), session.namespace().to_string());
            if !super::cleanup::remains(&client, &namespace, session.name()).await? {
                // `gitops-sessions prune` or `delete` ran to its end while
                // this process was suspended (or offline).
                report(&Event::Message {
                    message: "stopped: the session was removed meanwhile (by `kubectl \
                              gitops-sessions prune` or `delete`); nothing of it is left in the \
                              cluster"
                        .into(),
                });
                return Ok(LiveEnd::Lost(Lost::Removed {
                    by: "gitops-sessions".into(),
                }));
            }
            report(&Event::Warning {
                message: format!("stopped syncing: {why}; removing what is left of the session"),
            });
            if let Some(end) = clean_up(session, opts, report, interrupt).await? {
                return Ok(end);
            }
        }
    }
    Ok(LiveEnd::Lost(why))
}

/// Whether a failed cleanup is worth another try: anything but the API
/// server's refusal of the request itself (a 4xx other than 429).
fn retryable(e: &EngineError) -> bool {
    !matches!(e, EngineError::Kube(kube::Error::Api(s)) if s.code < 500 && s.code != 429)
}

/// Removes what the session made, retrying (for at most the cleanup
/// timeout) while the API server cannot be reached. `Some(end)` when it
/// did not finish: interrupted by the user, or out of time; what is left
/// and the command that removes it later have been said.
async fn clean_up<G, GFut>(
    session: &mut Session,
    opts: &LiveOptions,
    report: &super::Reporter,
    interrupt: G,
) -> Result<Option<LiveEnd>, EngineError>
where
    G: FnOnce() -> GFut,
    GFut: Future<Output = ()>,
{
    let leftovers = session.leftovers();
    let limit = opts.cleanup_timeout;
    let name = session.name().to_string();
    let namespace = session.namespace().to_string();
    let attempts = async {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_secs(1);
        let mut said = false;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = match tokio::time::timeout(left, session.cleanup(left)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(format!(
                        "it did not finish within --cleanup-timeout {}",
                        crate::duration::human(limit)
                    ));
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !retryable(&e) || left <= pause {
                return Err(e.to_string());
            }
            if !said {
                said = true;
                report(&Event::Warning {
                    message: format!(
                        "cannot finish the cleanup yet ({e}); retrying for up to {} \
                         (--cleanup-timeout)",
                        crate::duration::human(left)
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    };
    let said_left = |list: &[String]| {
        if list.is_empty() {
            "nothing".to_string()
        } else {
            list.join(", ")
        }
    };
    tokio::select! {
        r = attempts => match r {
            Ok(()) => Ok(None),
            Err(why) => {
                report(&Event::Message {
                    message: format!(
                        "could not finish the cleanup: {why}. Left in the cluster: {}. Once the \
                         cluster can be reached, remove them with `kubectl gitops-sessions delete \
                         {name} -n {namespace}`",
                        said_left(&leftovers)
                    ),
                });
                Ok(Some(LiveEnd::CleanupFailed(leftovers)))
            }
        },
        _ = interrupt() => {
            report(&Event::Message {
                message: format!(
                    "interrupted; left in the cluster: {}. The session's heartbeat stops now, so \
                     `kubectl gitops-sessions prune` removes it once it is stale.",
                    said_left(&leftovers)
                ),
            });
            Ok(Some(LiveEnd::Interrupted(leftovers)))
        }
    }
}

/// Whether two messages share their first line (Flux repeats a failure's
/// text in its event, sometimes trimmed).
fn same_lines(a: &str, b: &str) -> bool {
    let first = |s: &str| s.lines().next().unwrap_or_default().trim().to_string();
    let (a, b) = (first(a), first(b));
    !a.is_empty() && (a.contains(&b) || b.contains(&a))
}

fn handover(export: Option<&std::path::Path>) -> String {
    match export {
        Some(f) => format!(
            "back in GitOps mode. To hand this directory over to Flux, commit and push it, then apply {}",
            f.display()
        ),
        None => "back in GitOps mode. To hand this directory over to Flux, commit and push it and \
                 create its GitRepository + Kustomization (`--export-gitops FILE` writes them)"
            .to_string(),
    }
}

#[cfg(test)]
mod tests;
