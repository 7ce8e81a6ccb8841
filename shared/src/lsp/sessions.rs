//! The language server's side of the cluster: sessions followed through
//! their Leases (one watch, every change forwarded at once: a session
//! started in a terminal shows up as its Lease is written), the live state
//! of a document's object for a hover, and the commands (sync now: Flux
//! asked to reconcile the session's source and applier, as `flux reconcile`
//! does; stop: the session's command interrupted as by Ctrl+C, so it cleans
//! up).

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::flux::{self, Kustomization, OCIRepository};
use crate::labels;
use crate::session::record::{self, Record};

/// A session as its Lease says.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub namespace: String,
    pub name: String,
    /// `user@host` while its command runs (empty once it stopped with `--keep`).
    pub holder: String,
    pub record: Record,
}

impl Known {
    pub fn of(lease: &Lease) -> Known {
        Known {
            namespace: lease.namespace().unwrap_or_default(),
            name: lease.name_any(),
            holder: record::holder(lease).to_string(),
            record: Record::of(lease),
        }
    }

    /// Whether its command is (meant to be) running: held, not being removed.
    pub fn running(&self) -> bool {
        !self.holder.is_empty() && !self.holder.starts_with("removing:")
    }
}

/// What the watch of Leases says.
#[derive(Debug, Clone)]
pub enum Update {
    /// Every session (at the start, and after a watch had to list again).
    All(Vec<Known>),
    Changed(Box<Known>),
    Gone {
        namespace: String,
        name: String,
    },
}

/// Follows the sessions' Leases (every namespace, or the context's when
/// the user may not list them all) and sends each change to `tx` as it
/// comes; returns when `tx` is closed.
pub async fn watch(client: Client, tx: UnboundedSender<Update>) {
    let selector = labels::component_selector("session");
    let all: Api<Lease> = Api::all(client.clone());
    let namespace = match all
        .list(&ListParams::default().labels(&selector).limit(1))
        .await
    {
        Err(e) if crate::kubeapi::is_status(&e, &[403]) => {
            Some(client.default_namespace().to_string())
        }
        _ => None,
    };
    let config = watcher::Config::default().labels(&selector);
    let mut stream = crate::kubeapi::watch::<Lease>(client, namespace.as_deref(), config)
        .default_backoff()
        .boxed();
    let mut listed = Vec::new();
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                listed.clear();
                None
            }
            Ok(watcher::Event::InitApply(l)) => {
                listed.push(Known::of(&l));
                None
            }
            Ok(watcher::Event::InitDone) => Some(Update::All(std::mem::take(&mut listed))),
            Ok(watcher::Event::Apply(l)) => Some(Update::Changed(Box::new(Known::of(&l)))),
            Ok(watcher::Event::Delete(l)) => Some(Update::Gone {
                namespace: l.namespace().unwrap_or_default(),
                name: l.name_any(),
            }),
            Err(e) => {
                tracing::debug!("watching sessions: {e}");
                None
            }
        };
        if let Some(u) = update
            && tx.send(u).is_err()
        {
            return;
        }
    }
}

/// What the cluster holds of a document's object, for a hover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// `Kind/namespace/name` as applied.
    pub object: Option<String>,
    /// Lines of state (`ready: 2/3 replicas`, a condition).
    pub state: Vec<String>,
    /// The applier's last applied revision and its Ready condition.
    pub applied: Option<String>,
    pub applier: Option<String>,
}

/// The object the session applied for a manifest `kind/name` (the
/// Kustomization's inventory; kustomize may have prefixed the name), and
/// its state.
pub async fn live(client: &Client, session: &Known, kind: &str, name: &str) -> Live {
    let mut out = Live::default();
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &session.namespace);
    let Ok(Some(ks)) = kss.get_opt(&session.name).await else {
        return out;
    };
    if let Some(status) = &ks.status {
        out.applied = status.last_applied_revision.clone();
        out.applier = flux::condition(&status.conditions, "Ready")
            .map(|c| format!("{} ({}): {}", c.status, c.reason, c.message.trim()));
        let entries = status
            .inventory
            .as_ref()
            .map(|i| i.entries.clone())
            .unwrap_or_default();
        let parsed: Vec<(String, String, String, String)> = entries
            .iter()
            .filter_map(|e| {
                let parts: Vec<&str> = e.id.split('_').collect();
                let [ns, n, group, k] = parts[..] else {
                    return None;
                };
                (k == kind).then(|| {
                    (
                        ns.to_string(),
                        n.to_string(),
                        group.to_string(),
                        e.v.clone(),
                    )
                })
            })
            .collect();
        // The manifest's own name first, else one kustomize prefixed or suffixed.
        let found = parsed
            .iter()
            .find(|(_, n, _, _)| n == name)
            .or_else(|| {
                parsed
                    .iter()
                    .find(|(_, n, _, _)| n.ends_with(name) || n.starts_with(name))
            })
            .cloned();
        if let Some((ns, n, group, version)) = found {
            out.object = Some(if ns.is_empty() {
                format!("{kind}/{n}")
            } else {
                format!("{kind}/{ns}/{n}")
            });
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, kind));
            let api: Api<DynamicObject> = if ns.is_empty() {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), &ns, &resource)
            };
            if let Ok(Some(obj)) = api.get_opt(&n).await {
                out.state = state_of(&obj.data);
            }
        }
    }
    out
}

/// An object's state in a few lines: replicas for workloads, else its
/// `Ready` condition.
pub fn state_of(data: &Value) -> Vec<String> {
    let status = &data["status"];
    let mut out = Vec::new();
    if let Some(desired) = data["spec"]["replicas"].as_i64() {
        let n = |k: &str| status[k].as_i64().unwrap_or(0);
        out.push(format!(
            "ready {}/{desired} replicas (updated {}, available {})",
            n("readyReplicas"),
            n("updatedReplicas"),
            n("availableReplicas")
        ));
    } else if let Some(desired) = status["desiredNumberScheduled"].as_i64() {
        out.push(format!(
            "ready {}/{desired} pods",
            status["numberReady"].as_i64().unwrap_or(0)
        ));
    }
    for c in status["conditions"].as_array().into_iter().flatten() {
        let t = c["type"].as_str().unwrap_or_default();
        if matches!(t, "Ready" | "Available" | "Progressing") && c["status"] != "True"
            || t == "Ready"
        {
            out.push(format!(
                "{t}: {}{}",
                c["status"].as_str().unwrap_or_default(),
                c["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// Asks Flux to reconcile the session now: its source fetched again and
/// its Kustomization (or HelmRelease) applied again.
pub async fn sync_now(client: &Client, session: &Known) -> Result<(), kube::Error> {
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), &session.namespace);
    flux::request_reconcile(&repos, &session.name).await?;
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &session.namespace);
    match flux::request_reconcile(&kss, &session.name).await {
        Err(e) if crate::kubeapi::is_not_found(&e) => {
            let hrs: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &session.namespace,
                &flux::helm_release_resource(),
            );
            flux::request_reconcile(&hrs, &session.name)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// Why a session cannot be stopped from here.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(
        "session {name} runs as {holder}, not as {me}: stop it where it runs, or with `kubectl gitops-sessions delete {name} --force`"
    )]
    Elsewhere {
        name: String,
        holder: String,
        me: String,
    },
    #[error(
        "session {name}'s command (pid {pid}) cannot be signalled; stop it in its terminal, or with `kubectl gitops-sessions delete {name} --force`"
    )]
    NoSignal { name: String, pid: String },
    #[error("session {0} is not running")]
    NotRunning(String),
}

/// Stops a session whose command runs on this machine as this user, as
/// Ctrl+C does (it removes what it created).
pub fn stop(session: &Known) -> Result<(), StopError> {
    if !session.running() {
        return Err(StopError::NotRunning(session.name.clone()));
    }
    let me = crate::process::owner();
    if session.holder != me {
        return Err(StopError::Elsewhere {
            name: session.name.clone(),
            holder: session.holder.clone(),
            me,
        });
    }
    match session.record.pid.parse::<u32>() {
        Ok(pid) if crate::process::interrupt(pid) => Ok(()),
        _ => Err(StopError::NoSignal {
            name: session.name.clone(),
            pid: session.record.pid.clone(),
        }),
    }
}
