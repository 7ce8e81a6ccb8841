//! The logs of a session's pods, followed as they come (through the API
//! server's `pods/log`), new pods of later rollouts and new runs of
//! restarted containers included; and the Flux warning events of its
//! objects, as they happen, a burst shown at once.
//!
//! A pod is the session's when Flux applied it for the session, or when
//! the chain of its controllers (Pod → ReplicaSet → Deployment, Pod → Job →
//! CronJob, …) leads to an object Flux applied for it: pods take their
//! labels from their workload's template, not Flux's labels, and a shared
//! sandbox holds other sessions' pods.
//!
//! A container's log is followed run by run: each run (told apart by its
//! container ID, else its start time, else its restart count) is read once,
//! a new run (a restart, CrashLoopBackOff) is opened when it appears, and
//! an open that fails is retried with backoff while the run is current.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::workloads::{ContainerStatus, Pod};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, LogParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One line a container printed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub pod: String,
    pub container: String,
    pub line: String,
}

/// The label selector of the objects a session's Kustomization applied.
pub fn applied_selector(session: &str, flux_namespace: &str) -> String {
    format!(
        "kustomize.toolkit.fluxcd.io/name={session},kustomize.toolkit.fluxcd.io/namespace={flux_namespace}"
    )
}

/// Whether an object's labels say Flux applied it for `session`: its
/// Kustomization's labels, or its HelmRelease's (both are named after the
/// session, in `flux_namespace`). Flux sets them on what it applies,
/// overwriting any the payload wrote.
pub fn applied_by_session(
    labels: &BTreeMap<String, String>,
    session: &str,
    flux_namespace: &str,
) -> bool {
    ["kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"]
        .iter()
        .any(|group| {
            labels.get(&format!("{group}/name")).map(String::as_str) == Some(session)
                && labels
                    .get(&format!("{group}/namespace"))
                    .map(String::as_str)
                    == Some(flux_namespace)
        })
}

/// The controller among an object's owners (the ReplicaSet of a pod, the
/// Deployment of a ReplicaSet, …).
pub fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// How many controllers up a pod's owner chain is followed.
const OWNER_DEPTH: usize = 6;

/// Decides, and remembers by UID, whether pods are the session's.
struct Owners {
    client: Client,
    namespace: String,
    session: String,
    flux_namespace: String,
    /// UID → whether the object is (or leads to) one Flux applied for the session.
    verdicts: HashMap<String, bool>,
    /// The API resources of the owners' kinds.
    resources: HashMap<(String, String), Option<ApiResource>>,
}

impl Owners {
    /// Whether `pod` is the session's; an error when an owner could not be read
    /// (asked again later).
    async fn is_ours(&mut self, pod: &Pod) -> Result<bool, kube::Error> {
        let Some(uid) = pod.uid() else {
            return Ok(false);
        };
        if let Some(v) = self.verdicts.get(&uid) {
            return Ok(*v);
        }
        // A pod of a workload carries the workload's template labels, which
        // anyone may write: only a bare pod is judged by its own labels.
        let mut path = vec![uid];
        let mut next = controller_of(pod.metadata.owner_references.as_ref()).cloned();
        let verdict = if next.is_none() {
            applied_by_session(pod.labels(), &self.session, &self.flux_namespace)
        } else {
            {
                let mut verdict = false;
                for _ in 0..OWNER_DEPTH {
                    let Some(owner) = next.take() else { break };
                    if let Some(v) = self.verdicts.get(&owner.uid) {
                        verdict = *v;
                        break;
                    }
                    path.push(owner.uid.clone());
                    let Some(object) = self.get(&owner).await? else {
                        break;
                    };
                    if object.uid().as_deref() != Some(owner.uid.as_str()) {
                        break;
                    }
                    if applied_by_session(object.labels(), &self.session, &self.flux_namespace) {
                        verdict = true;
                        break;
                    }
                    next = controller_of(object.metadata.owner_references.as_ref()).cloned();
                }
                verdict
            }
        };
        for uid in path {
            self.verdicts.insert(uid, verdict);
        }
        Ok(verdict)
    }

    /// The owner object, `None` when it is gone or not a namespaced kind.
    async fn get(&mut self, owner: &OwnerReference) -> Result<Option<DynamicObject>, kube::Error> {
        let key = (owner.api_version.clone(), owner.kind.clone());
        let resource = match self.resources.get(&key) {
            Some(r) => r.clone(),
            None => {
                let (group, version) = match owner.api_version.split_once('/') {
                    Some((g, v)) => (g, v),
                    None => ("", owner.api_version.as_str()),
                };
                let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
                let r = match kube::discovery::pinned_kind(&self.client, &gvk).await {
                    Ok((r, caps)) => {
                        (caps.scope == kube::discovery::Scope::Namespaced).then_some(r)
                    }
                    // A kind the API server does not serve: not a workload of ours.
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(kube::Error::Discovery(_)) => None,
                    Err(e) => return Err(e),
                };
                self.resources.insert(key, r.clone());
                r
            }
        };
        let Some(resource) = resource else {
            return Ok(None);
        };
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.namespace, &resource)
            .get_opt(&owner.name)
            .await
    }
}

/// The run of a container that `pods/log` serves now: `id` tells runs of
/// one container apart, `live` while it runs (its log is followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub live: bool,
}

/// Which run of the container `pods/log` (without `previous`) serves, as
/// the kubelet picks it: the running one, else the terminated one, else,
/// waiting to restart (CrashLoopBackOff), the last one that ended. `None`
/// before the first run starts.
pub fn current_run(c: &ContainerStatus) -> Option<Run> {
    let state = c.state.as_ref()?;
    let id = |container_id: Option<&String>, started: Option<String>| match container_id
        .filter(|i| !i.is_empty())
    {
        Some(i) => i.clone(),
        None => match started {
            Some(t) => format!("started {t}"),
            None => format!("restart {}", c.restart_count),
        },
    };
    let started = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string())
    };
    if let Some(r) = &state.running {
        return Some(Run {
            id: id(c.container_id.as_ref(), started(r.started_at.as_ref())),
            live: true,
        });
    }
    if let Some(t) = &state.terminated {
        return Some(Run {
            id: id(
                t.container_id.as_ref().or(c.container_id.as_ref()),
                started(t.started_at.as_ref()),
            ),
            live: false,
        });
    }
    let last = c.last_state.as_ref()?.terminated.as_ref()?;
    state.waiting.as_ref()?;
    Some(Run {
        id: id(
            last.container_id.as_ref(),
            started(last.started_at.as_ref()),
        ),
        live: false,
    })
}

/// What to do about a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read run `run` of `container` (following it while it runs).
    Open {
        container: String,
        run: String,
        follow: bool,
    },
    /// Stop reading run `run` of `container` (a newer run started, or the
    /// pod is gone) once what it still sends has drained.
    Close { container: String, run: String },
}

/// The runs of every container seen, to open each run once and only once.
#[derive(Debug, Default)]
pub struct Runs {
    /// (pod UID, container) → the run its stream reads.
    current: BTreeMap<(String, String), String>,
    /// Every run opened: (pod UID, container, run).
    opened: BTreeSet<(String, String, String)>,
}

impl Runs {
    /// What to do after a pod's containers changed to `statuses`.
    pub fn update(&mut self, pod_uid: &str, statuses: &[ContainerStatus]) -> Vec<Action> {
        let mut actions = Vec::new();
        for c in statuses {
            let Some(run) = current_run(c) else { continue };
            let key = (pod_uid.to_string(), c.name.clone());
            if !self
                .opened
                .insert((key.0.clone(), key.1.clone(), run.id.clone()))
            {
                continue;
            }
            if let Some(old) = self.current.insert(key, run.id.clone()) {
                actions.push(Action::Close {
                    container: c.name.clone(),
                    run: old,
                });
            }
            actions.push(Action::Open {
                container: c.name.clone(),
                run: run.id,
                follow: run.live,
            });
        }
        actions
    }

    /// What to do once the pod is gone: close its streams, and forget its
    /// runs (a pod's UID is never reused).
    pub fn gone(&mut self, pod_uid: &str) -> Vec<Action> {
        self.opened.retain(|(uid, _, _)| uid != pod_uid);
        let keys: Vec<(String, String)> = self
            .current
            .keys()
            .filter(|(uid, _)| uid == pod_uid)
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                self.current.remove(&k).map(|run| Action::Close {
                    container: k.1,
                    run,
                })
            })
            .collect()
    }
}

/// The wait before a failed open is tried again: doubling from 1 s to 30 s.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30))
}

/// How long a closed stream may still deliver what it has (the last lines
/// of a run that ended as the next one started).
const DRAIN: Duration = Duration::from_secs(2);

/// Reads one run of a container's log into `out` (lines name the pod
/// `shown`): retried with backoff
/// while the open fails, until `closed` says the run is no longer current;
/// then drained for [`DRAIN`] at most.
async fn read_run(
    api: Api<k8s_openapi::api::core::v1::Pod>,
    pod: String,
    shown: String,
    container: String,
    follow: bool,
    mut closed: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<LogLine>,
) {
    let params = LogParams {
        follow,
        container: Some(container.clone()),
        ..Default::default()
    };
    let mut attempt = 0;
    let stream = loop {
        match api.log_stream(&pod, &params).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!("the log of {pod}/{container} cannot be read yet: {e}");
                let wait = tokio::time::sleep(retry_delay(attempt));
                attempt += 1;
                tokio::select! {
                    _ = wait => {}
                    _ = closed.wait_for(|c| *c) => return,
                    _ = out.closed() => return,
                }
            }
        }
    };
    let mut stream = std::pin::pin!(stream);
    let mut buf = Vec::new();
    let mut until: Option<Instant> = None;
    loop {
        let drained = async move {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending().await,
            }
        };
        // A follow stream may stay silent for ever: end with the reader.
        // Bytes, not `lines()`: a line that is not UTF-8 is shown (lossily)
        // rather than ending the stream. A line cut short by another branch
        // stays in `buf` and is completed by the next read.
        let line = tokio::select! {
            n = stream.read_until(b'\n', &mut buf) => match n {
                Ok(0) | Err(_) if buf.is_empty() => return,
                _ => {
                    let end = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    let end = end.strip_suffix(b"\r").unwrap_or(end);
                    let line = String::from_utf8_lossy(end).into_owned();
                    buf.clear();
                    line
                }
            },
            _ = closed.wait_for(|c| *c), if until.is_none() => {
                until = Some(Instant::now() + DRAIN);
                continue;
            }
            _ = drained => return,
            _ = out.closed() => return,
        };
        let sent = out.send(LogLine {
            pod: shown.clone(),
            container: container.clone(),
            line,
        });
        if sent.is_err() {
            return;
        }
    }
}

/// Follows the logs of every pod of the session's workloads in `namespace`
/// (those Flux applied for `session` from `flux_namespace`, and the pods
/// their controllers made), every run of every container, sending each
/// line to `out` until the receiver is dropped.
///
/// `_all_pods` is no longer used: a sandbox may be shared by several
/// sessions, so pods are always matched through their owners.
pub async fn follow(
    client: Client,
    namespace: String,
    session: String,
    flux_namespace: String,
    _all_pods: bool,
    out: mpsc::UnboundedSender<LogLine>,
) {
    let judge = Judge::Owners(Owners {
        client: client.clone(),
        namespace: namespace.clone(),
        session,
        flux_namespace,
        verdicts: HashMap::new(),
        resources: HashMap::new(),
    });
    follow_pods(client, &namespace, watcher::Config::default(), judge, out).await
}

/// Follows the logs of the session's pods in a vcluster sandbox: the pods
/// vcluster `vcluster` runs in the host namespace `namespace` for the
/// workloads the session's Kustomization (`session` in `namespace`)
/// applied into the virtual cluster (see [`synced`]). Lines name the
/// virtual pod.
pub async fn follow_synced(
    client: Client,
    namespace: String,
    vcluster: String,
    session: String,
    out: mpsc::UnboundedSender<LogLine>,
) {
    let config = watcher::Config::default().labels(&synced::selector(&vcluster));
    let judge = Judge::Synced {
        vcluster,
        kustomizations: Api::namespaced(client.clone(), &namespace),
        session,
        applied: BTreeSet::new(),
        read: None,
    };
    follow_pods(client, &namespace, config, judge, out).await
}

/// How often a vcluster sandbox's session inventory is read again at most.
const INVENTORY_FRESH: Duration = Duration::from_secs(2);

/// Decides whose pods are the session's.
enum Judge {
    /// Pods of this cluster, through the chain of their owners.
    Owners(Owners),
    /// Pods a vcluster synced, through the session's inventory.
    Synced {
        vcluster: String,
        kustomizations: Api<crate::flux::Kustomization>,
        session: String,
        applied: BTreeSet<synced::Applied>,
        read: Option<Instant>,
    },
}

impl Judge {
    /// `Some(verdict)`, or `None` when it cannot be told yet (asked again
    /// on the next tick): an owner could not be read, or a synced pod is
    /// not (yet) in what Flux recorded as applied.
    async fn is_ours(&mut self, pod: &Pod) -> Option<bool> {
        match self {
            Judge::Owners(owners) => match owners.is_ours(pod).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::debug!("cannot tell whose pod {} is: {e}", pod.name_any());
                    None
                }
            },
            Judge::Synced {
                vcluster,
                kustomizations,
                session,
                applied,
                read,
            } => {
                let Some(synced) = synced::synced_pod(pod, vcluster) else {
                    return Some(false);
                };
                if synced::is_sessions(&synced, applied) {
                    return Some(true);
                }
                // Flux records what it applied once it is done: read it
                // again, at most every INVENTORY_FRESH.
                if read.is_none_or(|t| t.elapsed() >= INVENTORY_FRESH) {
                    *read = Some(Instant::now());
                    match kustomizations.get_opt(session).await {
                        Ok(ks) => {
                            let ids: Vec<String> = ks
                                .and_then(|k| k.status)
                                .and_then(|s| s.inventory)
                                .map(|i| i.entries.into_iter().map(|e| e.id).collect())
                                .unwrap_or_default();
                            *applied = synced::applied(&ids);
                        }
                        Err(e) => tracing::debug!("cannot read kustomization {session}: {e}"),
                    }
                }
                synced::is_sessions(&synced, applied).then_some(true)
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        if let Judge::Owners(owners) = self {
            owners.verdicts.remove(uid);
        }
    }

    /// The name lines carry: the virtual pod's for a synced pod.
    fn shown(&self, pod: &Pod) -> String {
        match self {
            Judge::Synced { vcluster, .. } => synced::synced_pod(pod, vcluster)
                .map(|s| s.name)
                .unwrap_or_else(|| pod.name_any()),
            Judge::Owners(_) => pod.name_any(),
        }
    }
}

/// The loop of [`follow`] and [`follow_synced`]: pods in `namespace`
/// watched with `config`, judged by `judge`, every run of their containers
/// read.
async fn follow_pods(
    client: Client,
    namespace: &str,
    config: watcher::Config,
    mut judge: Judge,
    out: mpsc::UnboundedSender<LogLine>,
) {
    // The log subresource's client: kube offers it on k8s-openapi's Pod.
    let logs_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods = crate::kubeapi::watch::<Pod>(client, Some(namespace), config)
        .default_backoff()
        .boxed();
    let mut runs = Runs::default();
    // (pod UID, container, run) → the sender that closes its stream.
    let mut streams: HashMap<(String, String, String), watch::Sender<bool>> = HashMap::new();
    // Pods that could not be judged yet, asked again on the tick.
    let mut unresolved: BTreeMap<String, Pod> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed: Vec<Pod> = tokio::select! {
            e = pods.next() => match e {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => vec![p],
                Some(Ok(watcher::Event::Delete(p))) => {
                    let uid = p.uid().unwrap_or_default();
                    unresolved.remove(&uid);
                    judge.forget(&uid);
                    for a in runs.gone(&uid) {
                        if let Action::Close { container, run } = a
                            && let Some(tx) = streams.remove(&(uid.clone(), container, run))
                        {
                            let _ = tx.send(true);
                        }
                    }
                    continue;
                }
                Some(_) => continue,
                None => return,
            },
            _ = tick.tick() => std::mem::take(&mut unresolved).into_values().collect(),
            _ = out.closed() => return,
        };
        for pod in changed {
            let uid = pod.uid().unwrap_or_default();
            match judge.is_ours(&pod).await {
                Some(true) => {}
                Some(false) => continue,
                None => {
                    unresolved.insert(uid, pod);
                    continue;
                }
            }
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for action in runs.update(&uid, &statuses) {
                match action {
                    Action::Close { container, run } => {
                        if let Some(tx) = streams.remove(&(uid.clone(), container, run)) {
                            let _ = tx.send(true);
                        }
                    }
                    Action::Open {
                        container,
                        run,
                        follow,
                    } => {
                        let (tx, rx) = watch::channel(false);
                        streams.insert((uid.clone(), container.clone(), run), tx);
                        tokio::spawn(read_run(
                            logs_api.clone(),
                            pod.name_any(),
                            judge.shown(&pod),
                            container,
                            follow,
                            rx,
                            out.clone(),
                        ));
                    }
                }
            }
        }
    }
}

/// A Warning event about one of the session's Flux objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluxWarning {
    /// `Kind/name`.
    pub object: String,
    pub reason: String,
    pub message: String,
}

/// A warning to show, standing for `folded` more like it (same object and
/// reason) that were not shown one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub warning: FluxWarning,
    pub folded: u32,
}

impl Folded {
    /// `Kind/name: reason: message`, and how many were folded into it.
    pub fn text(&self) -> String {
        let w = &self.warning;
        let mut text = format!("{}: {}: {}", w.object, w.reason, w.message);
        if self.folded > 0 {
            text.push_str(&format!(
                " ({} more like it folded into this one)",
                self.folded
            ));
        }
        text
    }
}

/// Folds warnings: a burst shows one line per object and reason, and an
/// object and reason shown in the last `every` is held back, counted, and
/// shown once that period is over.
#[derive(Debug)]
pub struct WarningFolder {
    every: Duration,
    shown: HashMap<(String, String), Instant>,
    held: BTreeMap<(String, String), Folded>,
}

impl WarningFolder {
    pub fn new(every: Duration) -> WarningFolder {
        WarningFolder {
            every,
            shown: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// The lines to show for warnings that arrived together, in the order
    /// their objects and reasons first appear.
    pub fn burst(&mut self, batch: Vec<FluxWarning>, now: Instant) -> Vec<Folded> {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut groups: HashMap<(String, String), Folded> = HashMap::new();
        for w in batch {
            let key = (w.object.clone(), w.reason.clone());
            match groups.get_mut(&key) {
                Some(g) => {
                    g.folded += 1;
                    g.warning = w;
                }
                None => {
                    order.push(key.clone());
                    groups.insert(
                        key,
                        Folded {
                            warning: w,
                            folded: 0,
                        },
                    );
                }
            }
        }
        let mut lines = Vec::new();
        for key in order {
            let Some(mut g) = groups.remove(&key) else {
                continue;
            };
            let recent = self
                .shown
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.every);
            if let Some(held) = self.held.remove(&key) {
                g.folded += held.folded + 1;
            }
            if recent {
                // Shown a moment ago: counted, and shown when the period ends.
                let held = Folded {
                    folded: g.folded,
                    warning: g.warning,
                };
                self.held.insert(key, held);
            } else {
                self.shown.insert(key, now);
                lines.push(g);
            }
        }
        lines
    }

    /// Held warnings whose period is over: the lines to show now.
    pub fn due(&mut self, now: Instant) -> Vec<Folded> {
        let ready: Vec<(String, String)> = self
            .held
            .keys()
            .filter(|k| {
                self.shown
                    .get(*k)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= self.every)
            })
            .cloned()
            .collect();
        ready
            .into_iter()
            .filter_map(|k| {
                let f = self.held.remove(&k)?;
                self.shown.insert(k, now);
                Some(f)
            })
            .collect()
    }

    /// When the next held warning is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held
            .keys()
            .filter_map(|k| self.shown.get(k).map(|t| *t + self.every))
            .min()
    }
}

/// How long a burst of warnings is gathered (and a sync that met the same
/// failure has to report it first): once per burst, never per warning.
pub const WARNING_GATHER: Duration = Duration::from_secs(2);
/// How often one object and reason may be shown; more are folded.
pub const WARNING_EVERY: Duration = Duration::from_secs(30);

/// Shows the warnings `rx` receives as [`WarningFolder`] folds them,
/// leaving out those `known` says a sync already reported; until `rx` ends.
pub async fn fold_warnings(
    mut rx: mpsc::UnboundedReceiver<FluxWarning>,
    known: impl Fn(&FluxWarning) -> bool,
    report: impl Fn(String),
) {
    let mut folder = WarningFolder::new(WARNING_EVERY);
    let show = |lines: Vec<Folded>| {
        for f in lines {
            if !known(&f.warning) {
                report(f.text());
            }
        }
    };
    loop {
        let due = folder.next_due();
        let first = tokio::select! {
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
            _ = async move {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => futures::future::pending().await,
                }
            } => {
                show(folder.due(Instant::now()));
                continue;
            }
        };
        let mut batch = vec![first];
        let until = Instant::now() + WARNING_GATHER;
        while let Ok(Some(w)) = tokio::time::timeout_at(until, rx.recv()).await {
            batch.push(w);
        }
        show(folder.burst(batch, Instant::now()));
    }
}

/// Reports the Warning events of the session's Flux objects (its
/// Kustomization/HelmRelease and OCIRepository, named after it) that happen
/// from now on.
pub async fn flux_warnings(
    client: Client,
    namespace: String,
    session: String,
    out: mpsc::UnboundedSender<FluxWarning>,
) {
    let cfg =
        watcher::Config::default().fields(&format!("involvedObject.name={session},type=Warning"));
    let since = chrono::Utc::now().timestamp();
    let mut seen = BTreeSet::new();
    let mut stream = crate::kubeapi::watch::<KubeEvent>(client, Some(&namespace), cfg)
        .default_backoff()
        .touched_objects()
        .boxed();
    loop {
        let e = tokio::select! {
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
            _ = out.closed() => return,
        };
        let Ok(e) = e else { continue };
        let at = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
            .unwrap_or(0);
        let key = (e.uid().unwrap_or_default(), e.count.unwrap_or(0));
        if at < since || !seen.insert(key) {
            continue;
        }
        let warning = FluxWarning {
            object: format!(
                "{}/{}",
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default()
            ),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default().trim().to_string(),
        };
        if out.send(warning).is_err() {
            return;
        }
    }
}

pub mod synced;

#[cfg(test)]
mod tests;
