//! What `kubectl gitops-sessions` and the web page do to sessions: find one,
//! describe it, delete it (a live one only when forced), prune stale ones.
//! One implementation for both; API errors are returned, never turned into
//! "not found" or an empty list.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::view::{self, Filter, SessionView, ago};
use crate::flux::{self, Condition, Kustomization, OCIRepository};
use crate::session::cleanup;
use crate::session::record;
use crate::session::record::liveness::{self, Glance, Verdict};
use crate::session::{ReaderError, validate_name};

/// The one session named `name` (in `namespace`, or anywhere).
pub async fn find(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
) -> Result<SessionView, ReaderError> {
    validate_name(name)?;
    let filter = Filter {
        namespace: namespace.map(str::to_string),
        name: Some(name.to_string()),
        ..Default::default()
    };
    let mut found = view::list(client, &filter).await?;
    match found.len() {
        0 => Err(ReaderError::NotFound(name.to_string())),
        1 => Ok(found.remove(0)),
        _ => Err(ReaderError::Ambiguous(
            name.to_string(),
            found
                .iter()
                .map(|s| s.namespace.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The sandbox that goes with a session when it is deleted: the one it made.
pub fn own_sandbox(s: &SessionView) -> Option<&str> {
    s.ephemeral_sandbox
        .then_some(s.sandbox.as_deref())
        .flatten()
}

/// Removes a session's objects in the safe order. A live session (its
/// command still runs and renews the heartbeat) is refused unless `force`;
/// liveness is judged by [`liveness`] (a Lease that looks old is observed
/// for one lease period), never by this machine's clock alone.
/// The session's Lease is claimed first (see [`crate::session::record::lease`]): its command,
/// if it still runs, stops syncing; without `force` the claim holds only if
/// the Lease is still the one judged not live, so a session that came back
/// to life meanwhile is left alone ([`ReaderError::CameBack`]).
pub async fn delete(
    client: &Client,
    s: &SessionView,
    force: bool,
    timeout: Duration,
) -> Result<Vec<String>, ReaderError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let Some(current) = leases.get_opt(&s.name).await? else {
        return remove(client, &s.namespace, &s.name, None, None, timeout).await;
    };
    if force {
        return remove(client, &s.namespace, &s.name, Some(&current), None, timeout).await;
    }
    let me = crate::process::owner();
    // A removal of ours that did not finish: ours to go on with.
    let judged = if crate::session::record::lease::removed_by(&current) == Some(me.as_str()) {
        liveness::Judged {
            lease: current,
            verdict: Verdict::Stale,
        }
    } else {
        match liveness::judge(client, vec![current], &me).await.pop() {
            Some(j) => j,
            None => return Err(ReaderError::CameBack(s.name.clone())),
        }
    };
    match judged.verdict {
        Verdict::Live => {
            let r = record::Record::of(&judged.lease);
            let holder = record::holder(&judged.lease);
            Err(ReaderError::Live {
                name: s.name.clone(),
                pid: r.pid,
                host: holder
                    .rsplit_once('@')
                    .map_or(s.host.clone(), |(_, h)| h.to_string()),
            })
        }
        Verdict::Gone => Err(ReaderError::CameBack(s.name.clone())),
        Verdict::Stale => {
            let rv = judged.lease.resource_version();
            remove(
                client,
                &s.namespace,
                &s.name,
                Some(&judged.lease),
                rv.as_deref(),
                timeout,
            )
            .await
        }
    }
}

/// Claims the Lease (if any; with `precondition`, only if it is still that
/// resourceVersion), then cleans up. The ephemeral sandbox named in the
/// Lease goes only if its record names this Lease and its owner.
async fn remove(
    client: &Client,
    namespace: &str,
    name: &str,
    lease: Option<&Lease>,
    precondition: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, ReaderError> {
    let Some(lease) = lease else {
        return Ok(cleanup(client, namespace, name, None, "", timeout).await?);
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let me = crate::process::owner();
    if !crate::session::record::lease::claim(&leases, name, &me, precondition).await? {
        return Err(ReaderError::CameBack(name.to_string()));
    }
    let r = record::Record::of(lease);
    let sandbox = r
        .ephemeral_sandbox
        .then_some(r.sandbox.as_deref())
        .flatten();
    Ok(cleanup(client, namespace, name, sandbox, &r.owner, timeout).await?)
}

/// One pruned session and what went with it.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub name: String,
    pub namespace: String,
    pub removed: Vec<String>,
}

/// How long a Lease has been past its expiry at `now` (zero when it is not).
pub fn expired_for(lease: &Lease, now: DateTime<Utc>) -> Duration {
    let Some(renewed) = record::renewed_at(lease) else {
        return Duration::MAX;
    };
    chrono::Duration::from_std(record::lease_duration(lease))
        .ok()
        .and_then(|d| (now - (renewed + d)).to_std().ok())
        .unwrap_or(Duration::ZERO)
}

/// Whether `prune` considers a Lease at all (pure): held (a session kept
/// with `--keep` is not pruned), not fresh at `now`, and past its expiry by
/// at least `stale_after` (or its holder's process, on this machine, is gone).
pub fn prune_candidate(
    lease: &Lease,
    now: DateTime<Utc>,
    gone: bool,
    stale_after: Duration,
) -> bool {
    match liveness::glance(lease, now, gone) {
        Glance::Released | Glance::Fresh => false,
        Glance::HolderGone => stale_after.is_zero() || expired_for(lease, now) >= stale_after,
        Glance::Suspect => expired_for(lease, now) >= stale_after,
    }
}

/// Deletes every session whose heartbeat has been stale for at least
/// `stale_after` beyond the lease duration recorded in its own Lease (by the
/// API server's clock), and that [`liveness::judge`] finds stale: all the
/// candidates are observed together, one lease period at most. Each claim is
/// conditional on the Lease judged, so a session that came back to life
/// meanwhile is left alone.
pub async fn prune(
    client: &Client,
    namespace: Option<&str>,
    stale_after: Duration,
    timeout: Duration,
) -> Result<Vec<Pruned>, ReaderError> {
    let leases: Api<Lease> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = leases
        .list(&ListParams::default().labels(&crate::labels::component_selector("session")))
        .await?;
    let me = crate::process::owner();
    let now = liveness::server_now(client).await.unwrap_or_else(Utc::now);
    let candidates: Vec<Lease> = list
        .items
        .into_iter()
        .filter(|l| validate_name(&l.name_any()).is_ok())
        .filter(|l| prune_candidate(l, now, record::holder_process_gone(l, &me), stale_after))
        .collect();
    let mut pruned = Vec::new();
    for judged in liveness::judge(client, candidates, &me).await {
        if judged.verdict != Verdict::Stale {
            continue;
        }
        let lease = judged.lease;
        let (ns, name) = (lease.namespace().unwrap_or_default(), lease.name_any());
        let rv = lease.resource_version();
        // Another prune got there first, or the session came back to life.
        let removed = match remove(client, &ns, &name, Some(&lease), rv.as_deref(), timeout).await {
            Ok(removed) => removed,
            Err(ReaderError::CameBack(_)) => continue,
            Err(e) => return Err(e),
        };
        pruned.push(Pruned {
            name,
            namespace: ns,
            removed,
        });
    }
    pruned.extend(hand_back_stranded(client, namespace, timeout).await?);
    Ok(pruned)
}

/// Apps still taken over by a session whose Lease is gone (deleted by
/// hand, or its namespace emptied): handed back, with whatever of that
/// session is left.
async fn hand_back_stranded(
    client: &Client,
    namespace: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Pruned>, ReaderError> {
    let held = crate::takeover::claim::all(client, namespace)
        .await
        .map_err(crate::session::engine::EngineError::from)?;
    let mut pruned = Vec::new();
    for t in held {
        let (ns, name) = t.lease();
        if validate_name(name).is_err() || ns.is_empty() {
            continue;
        }
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
        if leases.get_opt(name).await?.is_some() {
            continue;
        }
        let removed = cleanup(client, ns, name, None, "", timeout).await?;
        pruned.push(Pruned {
            name: name.to_string(),
            namespace: ns.to_string(),
            removed,
        });
    }
    Ok(pruned)
}

/// Where a session's workloads run in this cluster and whether every pod
/// there is the session's (a namespace sandbox); `None` when they run in
/// another cluster (kubeconfig and vcluster sandboxes).
pub async fn workloads(
    client: &Client,
    s: &SessionView,
) -> Result<Option<(String, bool)>, ReaderError> {
    let sandboxed = s.mode == crate::session::Mode::Sandboxed.as_str();
    if let Some(ks) = Api::<Kustomization>::namespaced(client.clone(), &s.namespace)
        .get_opt(&s.name)
        .await?
    {
        if ks.spec.kube_config.is_some() {
            return Ok(None);
        }
        let ns = ks
            .spec
            .target_namespace
            .clone()
            .unwrap_or_else(|| s.namespace.clone());
        return Ok(Some((ns, sandboxed)));
    }
    Ok(Some((s.namespace.clone(), sandboxed)))
}

/// A Kubernetes event about a session's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub at: Option<DateTime<Utc>>,
    pub kind: String,
    pub reason: String,
    pub message: String,
}

/// Everything `describe` and the session page show.
#[derive(Debug, Clone)]
pub struct Description {
    pub session: SessionView,
    /// `(kind, condition)` of its Kustomization or HelmRelease, then its OCIRepository.
    pub conditions: Vec<(&'static str, Condition)>,
    /// Newest last.
    pub events: Vec<EventLine>,
}

/// Reads a session's Flux conditions and recent events.
pub async fn describe(client: &Client, s: &SessionView) -> Result<Description, ReaderError> {
    let ns = &s.namespace;
    let ks = Api::<Kustomization>::namespaced(client.clone(), ns)
        .get_opt(&s.name)
        .await?;
    let repo = Api::<OCIRepository>::namespaced(client.clone(), ns)
        .get_opt(&s.name)
        .await?;
    let hr = if flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await? {
        Api::<flux::HelmRelease>::namespaced(client.clone(), ns)
            .get_opt(&s.name)
            .await?
    } else {
        None
    };
    let mut conditions: Vec<(&'static str, Condition)> = Vec::new();
    conditions.extend(
        ks.and_then(|k| k.status)
            .map(|st| st.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| ("Kustomization", c)),
    );
    conditions.extend(
        hr.and_then(|h| h.status)
            .map(|st| st.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| ("HelmRelease", c)),
    );
    conditions.extend(
        repo.and_then(|r| r.status)
            .map(|st| st.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| ("OCIRepository", c)),
    );
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<EventLine> = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={}", s.name)))
        .await?
        .items
        .into_iter()
        .map(|e| EventLine {
            at: e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            kind: e.involved_object.kind.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect();
    list.sort_by_key(|e| e.at);
    Ok(Description {
        session: s.clone(),
        conditions,
        events: list,
    })
}

impl Description {
    /// The revisions source-controller stored for it, newest first.
    pub fn revisions(&self) -> Vec<String> {
        self.events
            .iter()
            .rev()
            .filter(|e| e.reason == "NewArtifact")
            .map(|e| {
                e.message
                    .split('\'')
                    .nth(1)
                    .unwrap_or(&e.message)
                    .to_string()
            })
            .collect()
    }

    /// The text `kubectl gitops-sessions describe` prints.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        use std::fmt::Write as _;
        let s = &self.session;
        let mut out = String::new();
        let mut field = |k: &str, v: &str| {
            let _ = writeln!(
                out,
                "{:<16}{}",
                format!("{k}:"),
                if v.is_empty() { "-" } else { v }
            );
        };
        field("Name", &s.name);
        field("Namespace", &s.namespace);
        field("Mode", &s.mode);
        field("Sandbox", s.sandbox.as_deref().unwrap_or("-"));
        field("Source", &s.source);
        field("Status", &s.status.summary());
        if !s.status.message.is_empty() {
            field("Message", &s.status.message);
        }
        field("Revision", &s.revision);
        field("Artifact", &s.artifact);
        field("Last sync", &format!("{} ago", ago(s.last_sync, now)));
        field(
            "Heartbeat",
            &format!(
                "{} (last {} ago, lease {})",
                s.heartbeat.as_str(),
                ago(s.heartbeat_at, now),
                crate::duration::human(s.lease_duration)
            ),
        );
        field("User", &format!("{}@{}", s.user, s.host));
        field("PID", &s.pid);
        field("Registry", &s.registry);
        field("Port-forwards", &s.port_forwards.join(" "));
        field("Started", &format!("{} ago", ago(s.started, now)));
        field("Version", &s.version);
        out.push_str("Inventory:\n");
        if s.inventory.is_empty() {
            out.push_str("  (nothing applied)\n");
        }
        for o in &s.inventory {
            let _ = writeln!(out, "  {o}");
        }
        out.push_str("Conditions:\n");
        if self.conditions.is_empty() {
            out.push_str("  (none)\n");
        }
        for (kind, c) in &self.conditions {
            let _ = writeln!(
                out,
                "  {kind:<14} {:<12} {:<6} {:<24} {}",
                c.type_,
                c.status,
                c.reason,
                c.message.replace('\n', " ")
            );
        }
        out.push_str("Events:\n");
        let recent: Vec<&EventLine> = self.events.iter().rev().take(10).collect();
        if recent.is_empty() {
            out.push_str("  (none)\n");
        }
        for e in recent.into_iter().rev() {
            let _ = writeln!(
                out,
                "  {:<6} {:<14} {:<24} {}",
                ago(e.at, now),
                e.kind,
                e.reason,
                e.message.replace('\n', "; ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
