//! The writer's side of the Lease contract: a running session's own Lease,
//! written once (conditional on the stale one seen at start), renewed at a
//! third of its duration while it is still the session's, and patched with
//! each sync's outcome and timed phases (`sync-history`, kept here as a
//! [`Timeline`] while the sync runs). [`Writer`] is what a session holds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::problems::{self, Problem};
use super::{
    HISTORY_LEN, HISTORY_MESSAGE_LEN, LastSync, PhaseTime, Record, SyncEntry, keys, lease,
};
use crate::kubeapi::FIELD_MANAGER;

/// How long a session's own sandbox outlives the session's last heartbeat
/// before `gitops-sandbox gc` may take it.
pub const EPHEMERAL_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a running session pushes its own sandbox's expiry forward.
pub const EXTEND_EVERY: Duration = Duration::from_secs(5 * 60);

/// Says a warning to the user (the session's reporter).
pub type Say = Arc<dyn Fn(String) + Send + Sync>;

/// How a sync ended, for its history entry.
#[derive(Debug, Clone, Copy)]
pub enum Ended<'a> {
    /// Nothing was pushed: no entry.
    Unchanged,
    Ready {
        revision: &'a str,
    },
    Failed {
        phase: &'static str,
        message: &'a str,
    },
}

/// The phases of one sync as they happen (named as in `sync-history`).
#[derive(Debug, Default)]
pub struct Timeline {
    started: Option<(Instant, DateTime<Utc>)>,
    current: Option<(&'static str, Instant)>,
    phases: Vec<PhaseTime>,
    revision: Option<String>,
}

impl Timeline {
    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Phase `phase` starts `now`.
    pub fn start(&mut self, phase: &'static str, now: Instant) {
        if self.started.is_none() {
            self.started = Some((now, Utc::now()));
        }
        self.current = Some((phase, now));
    }

    /// The current phase ended (`phase` when it is the one under way).
    pub fn end(&mut self, phase: &'static str, now: Instant) {
        let Some((current, at)) = self.current.take() else {
            return;
        };
        if current != phase {
            return;
        }
        let origin = self.started.map_or(at, |(t, _)| t);
        self.phases.push(PhaseTime {
            phase: phase.to_string(),
            start_ms: Self::ms(at.saturating_duration_since(origin)),
            ms: Self::ms(now.saturating_duration_since(at)),
        });
    }

    /// The history entry of the finished sync (`None` when unchanged or
    /// never started); the timeline starts afresh.
    pub fn entry(&mut self, ended: Ended<'_>) -> Option<SyncEntry> {
        let t = std::mem::take(self);
        let (_, at) = t.started?;
        let (status, failed_phase, message) = match ended {
            Ended::Unchanged => return None,
            Ended::Ready { .. } => ("Ready", None, String::new()),
            Ended::Failed { phase, message } => (
                "Failed",
                Some(phase.to_string()),
                message.chars().take(HISTORY_MESSAGE_LEN).collect(),
            ),
        };
        let revision = match ended {
            Ended::Ready { revision } => revision.to_string(),
            _ => t.revision.unwrap_or_default(),
        };
        Some(SyncEntry {
            at,
            revision,
            status: status.to_string(),
            failed_phase,
            message,
            phases: t.phases,
        })
    }
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A session's own Lease, as its running command writes it.
pub struct Writer {
    client: Client,
    namespace: String,
    name: String,
    owner: String,
    duration: Duration,
    /// The resourceVersion of the (stale) Lease seen, `None` when there
    /// was none: the first write is conditional on it.
    seen: Option<String>,
    lost: Arc<tokio::sync::watch::Sender<Option<lease::Lost>>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    timeline: Mutex<Timeline>,
    /// The last syncs (oldest first), as written into the Lease.
    history: Vec<SyncEntry>,
    /// The outcome of the sync under way, written with its history entry
    /// (one request per sync).
    note: Option<LastSync>,
    /// The last sync's causes of failure, as written into the Lease.
    problems: Vec<Problem>,
    /// The causes of the sync under way's failure, when the session knows
    /// them better than its message says (YAML errors with their place).
    pending: Option<Vec<Problem>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// The writer of Lease `namespace/name`, held by `owner` for `duration`
    /// at a time; `seen`: the resourceVersion of a stale Lease to replace.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        owner: &str,
        duration: Duration,
        seen: Option<String>,
    ) -> Writer {
        Writer {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
            owner: owner.to_string(),
            duration,
            seen,
            lost: Arc::new(tokio::sync::watch::channel(None).0),
            renewer: None,
            timeline: Mutex::default(),
            history: Vec::new(),
            note: None,
            problems: Vec::new(),
            pending: None,
        }
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The resourceVersion of the stale Lease the next write replaces.
    #[cfg(test)]
    pub fn seen(&self) -> Option<&str> {
        self.seen.as_deref()
    }

    /// A stale Lease to replace at the next [`Writer::write`] (`None`: create it).
    pub fn replace_next(&mut self, seen: Option<String>) {
        self.seen = seen;
    }

    /// The last syncs, oldest first.
    pub fn history(&self) -> &[SyncEntry] {
        &self.history
    }

    /// The last sync's causes of failure.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The causes of the sync under way's failure, written by
    /// [`Writer::record_sync`] in place of those read from its message.
    pub fn failed_with(&mut self, problems: Vec<Problem>) {
        self.pending = Some(problems);
    }

    /// Whether [`Writer::failed_with`] was said for the sync under way.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Writes the Lease with `meta` (labels; annotations are `record`'s):
    /// replaces the stale one seen (only if it has not changed since), or
    /// creates it. `Ok(Some(current))` when that condition failed: someone
    /// else wrote or removed it meanwhile.
    pub async fn write(
        &mut self,
        mut meta: ObjectMeta,
        record: &Record,
    ) -> Result<Option<Option<Lease>>, kube::Error> {
        meta.annotations = Some(record.to_annotations());
        meta.resource_version = self.seen.clone();
        let now = now_micro();
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let lease = Lease {
            metadata: meta,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.owner.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        let leases = self.leases();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let written = match &self.seen {
            Some(_) => leases.replace(&self.name, &params, &lease).await,
            None => leases.create(&params, &lease).await,
        };
        match written {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                Ok(Some(leases.get_opt(&self.name).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The signal that the session no longer holds its Lease.
    pub fn lost(&self) -> tokio::sync::watch::Receiver<Option<lease::Lost>> {
        self.lost.subscribe()
    }

    /// Renews the heartbeat at a third of the lease, while the Lease is
    /// still the session's own; says when the API server is unreachable and
    /// when it is back, and when a suspension longer than the lease ended.
    /// `own_sandbox`: the session's own sandbox, whose expiry moves with
    /// the heartbeat.
    pub fn start_renewing(&mut self, say: Say, own_sandbox: Option<String>) {
        let leases = self.leases();
        let name = self.name.clone();
        let owner = self.owner.clone();
        let pid = std::process::id().to_string();
        let duration = self.duration;
        let every = (duration / 3).max(Duration::from_secs(1));
        let lost = self.lost.clone();
        let lease_ns = self.namespace.clone();
        let client = self.client.clone();
        let renewer =
            tokio::spawn(async move {
                let mut failing = false;
                let mut renewed = Utc::now();
                let mut extended = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    let gap = lease::gap(renewed, Utc::now(), duration);
                    match lease::renew(&leases, &name, &owner, &pid).await {
                        lease::Renewed::Held => {
                            renewed = Utc::now();
                            if let Some(sandbox) = &own_sandbox
                                && extended.elapsed() >= EXTEND_EVERY
                            {
                                extended = tokio::time::Instant::now();
                                lease::extend_sandbox(
                                    &client,
                                    sandbox,
                                    &lease_ns,
                                    &name,
                                    EPHEMERAL_TTL,
                                )
                                .await;
                            }
                            if let Some(gap) = gap {
                                say(format!(
                                    "resumed after {} without a heartbeat (longer than the \
                                 session's lease, {}); nobody took the session meanwhile, \
                                 so it holds its Lease again",
                                    crate::duration::human(gap),
                                    crate::duration::human(duration)
                                ));
                            } else if failing {
                                say("reconnected to the API server; the session's heartbeat is back"
                                .into());
                            }
                            failing = false;
                        }
                        lease::Renewed::Lost(why) => {
                            lost.send_replace(Some(why));
                            return;
                        }
                        lease::Renewed::Unknown(e) if !failing => {
                            failing = true;
                            say(format!(
                                "cannot renew the session's heartbeat ({e}); retrying"
                            ));
                        }
                        lease::Renewed::Unknown(_) => {}
                    }
                }
            });
        self.renewer = Some(renewer);
    }

    /// Stops the heartbeat.
    pub fn stop_renewing(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }

    /// A sync starts: its timeline starts afresh.
    pub fn sync_starts(&self) {
        if let Ok(mut t) = self.timeline.lock() {
            *t = Timeline::default();
        }
    }

    /// Phase `phase` of the sync under way starts `now`.
    pub fn phase_starts(&self, phase: &'static str, now: Instant) {
        if let Ok(mut t) = self.timeline.lock() {
            t.start(phase, now);
        }
    }

    /// Phase `phase` of the sync under way ended `now`.
    pub fn phase_ends(&self, phase: &'static str, now: Instant) {
        if let Ok(mut t) = self.timeline.lock() {
            t.end(phase, now);
        }
    }

    /// The revision the sync under way pushed.
    pub fn pushed(&self, revision: &str) {
        if let Ok(mut t) = self.timeline.lock() {
            t.revision = Some(revision.to_string());
        }
    }

    /// Notes a sync's outcome (`Ready`, `Failed`), written by
    /// [`Writer::record_sync`] once the sync is over.
    pub fn note(&mut self, revision: &str, status: &str) {
        self.note = Some(LastSync {
            revision: revision.to_string(),
            at: Some(Utc::now()),
            status: status.to_string(),
        });
    }

    /// Keeps a finished sync's phases in the Lease's `sync-history`, with
    /// its outcome ([`Writer::note`]) in the same request (best effort;
    /// before the Lease is `written`, only in memory: the Lease is written
    /// with it).
    pub async fn record_sync(&mut self, ended: Ended<'_>, written: bool) {
        let entry = match self.timeline.lock() {
            Ok(mut t) => t.entry(ended),
            Err(_) => None,
        };
        let note = self.note.take();
        let pending = self.pending.take();
        let problems = match ended {
            Ended::Ready { .. } => Vec::new(),
            Ended::Failed { phase, message } => {
                pending.unwrap_or_else(|| problems::from_failure(phase, message, None))
            }
            // Unchanged content passed the local checks again; what the
            // cluster said of it still holds.
            Ended::Unchanged => self
                .problems
                .iter()
                .filter(|p| !p.before_push())
                .cloned()
                .collect(),
        };
        let problems_changed = problems != self.problems;
        self.problems = problems;
        if let Some(entry) = entry {
            self.history.push(entry);
            let excess = self.history.len().saturating_sub(HISTORY_LEN);
            self.history.drain(..excess);
        } else if note.is_none() && !problems_changed {
            return;
        }
        if !written {
            return;
        }
        let mut annotations = note.map(|n| n.to_annotations()).unwrap_or_default();
        annotations.insert(
            keys::SYNC_HISTORY.to_string(),
            super::history_to_annotation(&self.history),
        );
        if problems_changed {
            annotations.insert(
                keys::PROBLEMS.to_string(),
                problems::to_annotation(&self.problems),
            );
        }
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        self.patch(&patch, "record the sync in").await;
    }

    /// Releases the Lease (no holder): the session shows as not running
    /// (`--keep`).
    pub async fn release(&mut self) {
        self.stop_renewing();
        let patch = serde_json::json!({"spec": {"holderIdentity": null}});
        self.patch(&patch, "release").await;
    }

    /// Merge-patches the Lease (best effort: logged on failure).
    pub async fn patch(&self, patch: &serde_json::Value, what: &str) {
        if let Err(e) = self
            .leases()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!("cannot {what} the lease: {e}");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakeapi::FakeApi;
    use crate::session::testkit;

    fn written(api: &FakeApi) -> Option<String> {
        api.get::<Lease>("dev", "run-a")
            .and_then(|l| l.metadata.annotations)
            .and_then(|a| a.get(keys::PROBLEMS).cloned())
    }

    fn patches(api: &FakeApi) -> usize {
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count()
    }

    #[tokio::test]
    async fn problems_are_written_with_their_sync_kept_while_unchanged_and_cleared() {
        let api = FakeApi::start().await;
        api.put(testkit::live_lease("dev", "run-a"));
        let mut w = Writer::new(
            api.client.clone(),
            "dev",
            "run-a",
            testkit::HOLDER,
            Duration::from_secs(30),
            None,
        );
        // A YAML error, at the place the session found it.
        w.phase_starts("validate", Instant::now());
        w.failed_with(vec![problems::yaml_error("a.yaml", 3, 1, "bad")]);
        w.record_sync(
            Ended::Failed {
                phase: "validate",
                message: "invalid YAML",
            },
            true,
        )
        .await;
        let p = problems::from_annotation(written(&api).as_deref());
        assert_eq!((p.len(), p[0].line), (1, Some(3)), "{p:?}");
        // The content back to what Flux settled on: the local check passed.
        w.record_sync(Ended::Unchanged, true).await;
        assert_eq!(written(&api).as_deref(), Some("[]"));

        // Flux's rejection, read from the message: kept while the content
        // is unchanged (nothing written), cleared by a good sync.
        w.phase_starts("apply", Instant::now());
        w.record_sync(
            Ended::Failed {
                phase: "apply",
                message: "Deployment/dev/web dry-run failed (Invalid): spec.replicas: Invalid value: -1",
            },
            true,
        )
        .await;
        let p = problems::from_annotation(written(&api).as_deref());
        assert_eq!(p[0].object.as_deref(), Some("Deployment/dev/web"));
        assert_eq!(p[0].field.as_deref(), Some("spec.replicas"));
        let before = patches(&api);
        w.record_sync(Ended::Unchanged, true).await;
        assert_eq!(patches(&api), before, "nothing to write");
        assert_eq!(w.problems().len(), 1);
        w.phase_starts("validate", Instant::now());
        w.record_sync(
            Ended::Ready {
                revision: "latest@sha256:00",
            },
            true,
        )
        .await;
        assert_eq!(written(&api).as_deref(), Some("[]"));
        assert!(w.problems().is_empty());
    }
}
