//! Sessions as `kubectl gitops-sessions` shows them: the Lease (who, where,
//! heartbeat) joined with the session's Flux objects (status, revision).
//! Three list calls with label selectors, whatever the number of sessions.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::flux::{self, Kustomization, OCIRepository};
use crate::labels;
use crate::session::record::{self, Record, lease_is_live};

/// Whether the session's command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Heartbeat {
    /// Renewed within the lease duration.
    Live,
    /// Not renewed in time: the command crashed or was killed.
    Stale,
    /// Stopped with `--keep`: not running, left on purpose.
    Kept,
}

impl Heartbeat {
    pub fn as_str(self) -> &'static str {
        match self {
            Heartbeat::Live => "live",
            Heartbeat::Stale => "stale",
            Heartbeat::Kept => "kept",
        }
    }
}

/// The Flux side of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// `Ready`, `Reconciling`, `Failed` or `Pending` (nothing synced yet).
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl SyncStatus {
    /// `Ready`, `Reconciling` or `Failed (Reason)`.
    pub fn summary(&self) -> String {
        if self.state == "Failed" && !self.reason.is_empty() {
            format!("Failed ({})", self.reason)
        } else {
            self.state.clone()
        }
    }
}

/// One session, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub name: String,
    pub namespace: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    pub ephemeral_sandbox: bool,
    pub source: String,
    pub revision: String,
    pub status: SyncStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<DateTime<Utc>>,
    pub heartbeat: Heartbeat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub user: String,
    pub host: String,
    pub pid: String,
    pub registry: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub artifact: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<String>,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<String>,
    /// The heartbeat's lease duration, as recorded in the Lease.
    #[serde(skip)]
    pub lease_duration: Duration,
}

impl SessionView {
    /// How long the heartbeat has been missing (`None` while live or kept).
    pub fn stale_for(&self, now: DateTime<Utc>) -> Option<Duration> {
        if self.heartbeat != Heartbeat::Stale {
            return None;
        }
        let expired = self.heartbeat_at? + chrono::Duration::from_std(self.lease_duration).ok()?;
        (now - expired).to_std().ok().or(Some(Duration::ZERO))
    }
}

fn status_of(conditions: Option<&[flux::Condition]>) -> SyncStatus {
    let pending = SyncStatus {
        state: "Pending".into(),
        reason: String::new(),
        message: String::new(),
    };
    let Some(conditions) = conditions else {
        return pending;
    };
    // Like the flux CLI: Ready decides; a failure being retried is still a failure.
    match flux::condition(conditions, "Ready") {
        Some(c) if c.status == "True" => SyncStatus {
            state: "Ready".into(),
            reason: String::new(),
            message: c.message.clone(),
        },
        Some(c) if c.status == "False" && c.reason != "Progressing" => SyncStatus {
            state: "Failed".into(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        Some(c) => SyncStatus {
            state: "Reconciling".into(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        None => pending,
    }
}

/// Joins Leases with their Kustomizations and OCIRepositories (pure).
pub fn build_views(
    leases: &[Lease],
    kustomizations: &[Kustomization],
    repositories: &[OCIRepository],
    releases: &[flux::HelmRelease],
    now: DateTime<Utc>,
) -> Vec<SessionView> {
    let key = |ns: Option<String>, name: String| (ns.unwrap_or_default(), name);
    let hrs: BTreeMap<_, _> = releases
        .iter()
        .map(|h| (key(h.namespace(), h.name_any()), h))
        .collect();
    let ks: BTreeMap<_, _> = kustomizations
        .iter()
        .map(|k| (key(k.namespace(), k.name_any()), k))
        .collect();
    let repos: BTreeMap<_, _> = repositories
        .iter()
        .map(|r| (key(r.namespace(), r.name_any()), r))
        .collect();
    let mut views: Vec<SessionView> = leases
        .iter()
        .map(|lease| {
            let r = Record::of(lease);
            let k = key(lease.namespace(), lease.name_any());
            let holder = record::holder(lease).to_string();
            let who = if holder.is_empty() { &r.owner } else { &holder };
            let (user, host) = who
                .split_once('@')
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .unwrap_or((who.clone(), String::new()));
            let heartbeat = if holder.is_empty() {
                Heartbeat::Kept
            } else if lease_is_live(lease, now) {
                Heartbeat::Live
            } else {
                Heartbeat::Stale
            };
            let ks = ks.get(&k).copied();
            let hr = hrs.get(&k).copied();
            let repo = repos.get(&k).copied();
            let conditions = ks
                .and_then(|k| k.status.as_ref())
                .map(|s| s.conditions.as_slice())
                .or_else(|| {
                    hr.and_then(|h| h.status.as_ref())
                        .map(|s| s.conditions.as_slice())
                });
            let revision = ks
                .and_then(|k| k.status.as_ref())
                .and_then(|s| s.last_applied_revision.clone())
                .or_else(|| r.last.as_ref().map(|l| l.revision.clone()))
                .unwrap_or_default();
            SessionView {
                name: lease.name_any(),
                namespace: k.0.clone(),
                mode: r.mode,
                sandbox: r.sandbox,
                ephemeral_sandbox: r.ephemeral_sandbox,
                source: r.dir,
                revision,
                status: status_of(conditions),
                last_sync: r.last.and_then(|l| l.at),
                heartbeat,
                heartbeat_at: record::renewed_at(lease),
                user,
                host,
                pid: r.pid,
                registry: r.registry,
                artifact: repo
                    .and_then(|r| r.status.as_ref())
                    .and_then(|s| s.artifact.as_ref())
                    .map(|a| a.revision.clone())
                    .unwrap_or_default(),
                port_forwards: r.port_forwards,
                version: r.version,
                started: r.started_at,
                inventory: ks.map(crate::flux::applied_objects).unwrap_or_default(),
                lease_duration: record::lease_duration(lease),
            }
        })
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}

/// `12s`, `5m`, … since `t` (`-` when unknown).
pub fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| crate::duration::human((now - t).to_std().unwrap_or_default()))
        .unwrap_or_else(|| "-".into())
}

/// `sha256:0123456789ab` from `tag@sha256:…`.
pub fn short_revision(r: &str) -> String {
    match r.split_once('@') {
        Some((_, d)) => d.chars().take(19).collect(),
        None if r.is_empty() => "-".into(),
        None => r.chars().take(19).collect(),
    }
}

/// One row of the sessions table (the CLI's and the web page's).
pub fn row(s: &SessionView, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    let mut row = vec![
        s.name.clone(),
        s.namespace.clone(),
        dash(&s.mode),
        s.sandbox.clone().unwrap_or_else(|| "-".into()),
        dash(&s.source),
        short_revision(&s.revision),
        s.status.summary(),
        ago(s.last_sync, now),
        s.heartbeat.as_str().into(),
        dash(&s.user),
        ago(s.started, now),
    ];
    if wide {
        row.extend([
            dash(&s.registry),
            dash(&s.artifact),
            dash(&s.host),
            dash(&s.pid),
            if s.port_forwards.is_empty() {
                "-".into()
            } else {
                s.port_forwards.join(" ")
            },
        ]);
    }
    row
}

/// The sessions table's columns.
pub const HEADERS: [&str; 11] = [
    "NAME",
    "NAMESPACE",
    "MODE",
    "SANDBOX",
    "SOURCE",
    "REVISION",
    "STATUS",
    "LAST SYNC",
    "HEARTBEAT",
    "USER",
    "AGE",
];
/// The extra columns of `-o wide`.
pub const WIDE: [&str; 5] = ["REGISTRY", "ARTIFACT", "HOST", "PID", "PORT-FORWARDS"];

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// An extra label selector.
    pub selector: Option<String>,
    /// Only sessions whose holder/owner is this `user@host`.
    pub owner: Option<String>,
    /// Only this session name.
    pub name: Option<String>,
}

/// The label selector of the sessions `filter` asks for (`None`: a name
/// that no session can have).
fn selector_of(filter: &Filter) -> Option<String> {
    let mut selector = labels::component_selector("session");
    if let Some(name) = &filter.name {
        if crate::session::validate_name(name).is_err() {
            return None;
        }
        selector.push_str(&format!(",{}={name}", labels::SESSION));
    }
    if let Some(extra) = filter.selector.as_deref().filter(|s| !s.is_empty()) {
        selector.push(',');
        selector.push_str(extra);
    }
    Some(selector)
}

/// Lists sessions: three list calls, joined.
pub async fn list(client: &Client, filter: &Filter) -> Result<Vec<SessionView>, kube::Error> {
    let Some(selector) = selector_of(filter) else {
        return Ok(Vec::new());
    };
    let params = ListParams::default().labels(&selector);
    let (leases, kss, repos): (Api<Lease>, Api<Kustomization>, Api<OCIRepository>) =
        match &filter.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let (leases, kss, repos) =
        tokio::try_join!(leases.list(&params), kss.list(&params), repos.list(&params))?;
    // Chart sessions have a HelmRelease instead of a Kustomization.
    let releases = if leases.items.is_empty()
        || !flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?
    {
        Vec::new()
    } else {
        let api: Api<flux::HelmRelease> = match &filter.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        api.list(&params).await?.items
    };
    let mut views = build_views(
        &leases.items,
        &kss.items,
        &repos.items,
        &releases,
        Utc::now(),
    );
    if let Some(owner) = &filter.owner {
        views.retain(|v| format!("{}@{}", v.user, v.host) == *owner);
    }
    Ok(views)
}

/// How often [`watch`] looks at what its watches hold (changes are batched
/// within it; heartbeats turn stale with time alone, no event says so).
pub const WATCH_TICK: Duration = Duration::from_millis(250);

/// An `Api` in the filter's namespace, or across all.
fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch feeding a store: yields `Ok(true)` once its first list is in.
fn watch_into<K>(
    api: Api<K>,
    selector: &str,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> futures::stream::BoxStream<'static, Result<bool, kube::runtime::watcher::Error>>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .reflect(writer)
        .map(|r| r.map(|e| matches!(e, watcher::Event::InitDone)))
        .boxed()
}

/// Follows sessions as `kubectl get -w` does: one list of each kind (Leases,
/// Kustomizations, OCIRepositories, HelmReleases where served) with the
/// sessions' label selector, then a watch on each, listing again only when
/// the API server says the watch's place is gone (410). `on_views` gets the
/// sessions as soon as every first list is in, then every [`WATCH_TICK`],
/// built from what the watches hold (no request to the API server); what
/// changed is the caller's to find.
/// Returns when `on_views` says `false`, or with the error of a watch that
/// fails before its first list (no rights to list, say); later failures are
/// retried with backoff, as kube's watcher does.
pub async fn watch(
    client: &Client,
    filter: &Filter,
    mut on_views: impl FnMut(Vec<SessionView>) -> bool,
) -> Result<(), WatchError> {
    use futures::StreamExt as _;
    use kube::runtime::reflector;
    let Some(selector) = selector_of(filter) else {
        // No session can have that name: nothing to show, ever.
        on_views(Vec::new());
        std::future::pending::<()>().await;
        return Ok(());
    };
    let ns = filter.namespace.as_deref();
    let helm = flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?;
    let (leases, w) = reflector::store::<Lease>();
    let mut streams = vec![watch_into(api_in::<Lease>(client, ns), &selector, w)];
    let (kss, w) = reflector::store::<Kustomization>();
    streams.push(watch_into(
        api_in::<Kustomization>(client, ns),
        &selector,
        w,
    ));
    let (repos, w) = reflector::store::<OCIRepository>();
    streams.push(watch_into(
        api_in::<OCIRepository>(client, ns),
        &selector,
        w,
    ));
    let hrs = helm.then(|| {
        let (r, w) = reflector::store::<flux::HelmRelease>();
        streams.push(watch_into(
            api_in::<flux::HelmRelease>(client, ns),
            &selector,
            w,
        ));
        r
    });
    let expected = streams.len();
    let mut changes = futures::stream::select_all(streams);
    let mut listed = 0;
    let mut ticker = tokio::time::interval(WATCH_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(true)) => {
                    listed += 1;
                    if listed == expected {
                        // The first full picture at once, not at the next tick.
                        ticker.reset_immediately();
                    }
                }
                Some(Ok(false)) => {}
                Some(Err(e)) if listed < expected => return Err(WatchError::Watch(e)),
                Some(Err(e)) => tracing::warn!("watching sessions: {e} (retrying)"),
                None => return Ok(()),
            },
            _ = ticker.tick() => {
                if listed < expected {
                    continue;
                }
                let mut views = build_views(
                    &items(&leases),
                    &items(&kss),
                    &items(&repos),
                    &hrs.as_ref().map(items).unwrap_or_default(),
                    Utc::now(),
                );
                if let Some(owner) = &filter.owner {
                    views.retain(|v| format!("{}@{}", v.user, v.host) == *owner);
                }
                if !on_views(views) {
                    return Ok(());
                }
            }
        }
    }
}

/// What a store holds now.
fn items<K>(store: &kube::runtime::reflector::Store<K>) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// Why [`watch`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("cannot watch sessions: {0}")]
    Watch(kube::runtime::watcher::Error),
}

#[cfg(test)]
mod tests;
