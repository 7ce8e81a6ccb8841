//! The original's side of a takeover: suspending and marking it for a
//! session, refusing when another session holds it, and handing it back.
//!
//! Only the takeover's own fields are written (`spec.suspend` and the
//! annotations of [`super::keys`]), as a JSON merge patch whose
//! precondition is the resourceVersion just read: a change made meanwhile
//! (by Flux, a parent Kustomization, a colleague) is read again and judged
//! again, never overwritten. A hand-back touches an original only while it
//! names the session handing it back.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{App, AppKind, TakeoverError, keys};
use crate::flux::{RECONCILE_REQUESTED_AT, ReconcileRequest};
use crate::session::record::{self, liveness};

/// How often a write is tried again when the original changed between the
/// read and the write (Flux updates its status all the time).
const ATTEMPTS: usize = 8;

/// The session that takes over: its Lease's namespace and name, and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub namespace: String,
    pub session: String,
    pub owner: String,
}

impl Holder {
    /// `<lease namespace>/<session>`, as written in [`keys::TAKEN_OVER_BY`].
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.session)
    }
}

/// An original held by a session, as its annotations say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub kind: AppKind,
    pub namespace: String,
    pub name: String,
    /// `<lease namespace>/<session>`.
    pub holder: String,
    pub owner: String,
    pub at: String,
}

impl TakenOver {
    /// What holds the `kind` object of `meta`, if anything (pure).
    pub fn of(kind: AppKind, meta: &ObjectMeta) -> Option<TakenOver> {
        let a = meta.annotations.as_ref()?;
        let holder = a.get(keys::TAKEN_OVER_BY)?.clone();
        Some(TakenOver {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            holder,
            owner: a.get(keys::TAKEN_OVER_OWNER).cloned().unwrap_or_default(),
            at: a.get(keys::TAKEN_OVER_AT).cloned().unwrap_or_default(),
        })
    }

    /// The holder's Lease: (namespace, name).
    pub fn lease(&self) -> (&str, &str) {
        self.holder.split_once('/').unwrap_or(("", &self.holder))
    }

    /// `Kustomization flux-system/podinfo`.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

fn api(client: &Client, kind: AppKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.resource())
}

fn suspended(o: &DynamicObject) -> bool {
    o.data["spec"]["suspend"].as_bool() == Some(true)
}

/// The field manager of the takeover's writes on the original. Not a name
/// starting with `kubectl`: kustomize-controller strips the fields of such
/// managers (it takes them for hand edits) at a parent's next reconcile.
pub const FIELD_MANAGER: &str = "gitops-run-takeover";

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Says whether the session holding an original runs: `live`, or stale
/// (or gone) with the command that hands the original back.
pub async fn holder_state(client: &Client, holder: &str) -> String {
    let Some((ns, name)) = holder.split_once('/') else {
        return "unknown".into();
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let me = crate::process::owner();
    match leases.get_opt(name).await {
        Ok(Some(lease)) => match liveness::judge(client, vec![lease], &me).await.pop() {
            Some(j) if j.verdict == liveness::Verdict::Live => "live".into(),
            Some(j) if record::holder(&j.lease).is_empty() => format!(
                "stopped with --keep: `kubectl gitops-sessions delete {name} -n {ns}` hands it back"
            ),
            _ => format!("stale: `kubectl gitops-sessions delete {name} -n {ns}` hands it back"),
        },
        Ok(None) => "its session is gone: `kubectl gitops-sessions prune` hands it back".into(),
        Err(_) => "its session's Lease cannot be read".into(),
    }
}

/// Whether `holder` may take over `ks` (pure, on the original as read):
/// `Ok(true)` when it already holds it (a restarted run of the session).
fn judge(kind: AppKind, o: &DynamicObject, holder: &Holder) -> Result<bool, Refusal> {
    if let Some(t) = TakenOver::of(kind, &o.metadata) {
        return if t.holder == holder.id() {
            Ok(true)
        } else {
            Err(Refusal::Held(Box::new(t)))
        };
    }
    if suspended(o) {
        return Err(Refusal::Suspended);
    }
    Ok(false)
}

/// Why a takeover is refused, before the holder's liveness is read.
enum Refusal {
    Held(Box<TakenOver>),
    Suspended,
}

async fn refusal(client: &Client, app: &App, r: Refusal) -> TakeoverError {
    match r {
        Refusal::Held(t) => TakeoverError::Held {
            app: app.id(),
            state: holder_state(client, &t.holder).await,
            holder: t.holder,
            owner: t.owner,
        },
        Refusal::Suspended => TakeoverError::SuspendedElsewhere {
            app: app.id(),
            namespace: app.namespace.clone(),
            name: app.name.clone(),
        },
    }
}

/// Checks, without writing, that `holder` may take over `app` (refused
/// as [`take`] would refuse).
pub async fn available(client: &Client, app: &App, holder: &Holder) -> Result<(), TakeoverError> {
    let ks = api(client, app.kind, &app.namespace)
        .get_opt(&app.name)
        .await?
        .ok_or_else(|| TakeoverError::NotFound(app.id()))?;
    match judge(app.kind, &ks, holder) {
        Ok(_) => Ok(()),
        Err(r) => Err(refusal(client, app, r).await),
    }
}

/// Suspends `app` and marks it as held by `holder`, unless it is already
/// (a restarted run of the same session). Refused when another session
/// holds it ([`TakeoverError::Held`], saying whether that one is live) or
/// when it is suspended outside the suite. Returns the original as written.
pub async fn take(
    client: &Client,
    app: &App,
    holder: &Holder,
) -> Result<DynamicObject, TakeoverError> {
    let api = api(client, app.kind, &app.namespace);
    let id = app.id();
    for _ in 0..ATTEMPTS {
        let ks = api
            .get_opt(&app.name)
            .await?
            .ok_or_else(|| TakeoverError::NotFound(id.clone()))?;
        match judge(app.kind, &ks, holder) {
            Ok(true) => return Ok(ks),
            Ok(false) => {}
            Err(r) => return Err(refusal(client, app, r).await),
        }
        let add_reconcile = !ks.annotations().contains_key(keys::RECONCILE);
        let mut annotations = json!({
            keys::TAKEN_OVER_BY: holder.id(),
            keys::TAKEN_OVER_OWNER: holder.owner,
            keys::TAKEN_OVER_AT: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if add_reconcile {
            annotations[keys::RECONCILE] = json!("disabled");
            annotations[keys::ADDED_RECONCILE] = json!("true");
        }
        let patch = json!({
            "metadata": {"resourceVersion": ks.resource_version(), "annotations": annotations},
            "spec": {"suspend": true},
        });
        match api.patch(&app.name, &params(), &Patch::Merge(&patch)).await {
            Ok(written) => return Ok(written),
            Err(e) if crate::kubeapi::is_status(&e, &[409]) => continue,
            Err(e) if crate::kubeapi::is_not_found(&e) => return Err(TakeoverError::NotFound(id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(TakeoverError::KeptChanging(id))
}

/// Resumes `namespace/name` and asks Flux to reconcile it now, if (and
/// only if) it is still held by `holder` (`<lease namespace>/<session>`):
/// the takeover's annotations and `spec.suspend` are removed. `None` when
/// it is not (any more) held by `holder`: nothing is written.
pub async fn hand_back(
    client: &Client,
    kind: AppKind,
    namespace: &str,
    name: &str,
    holder: &str,
) -> Result<Option<ReconcileRequest>, TakeoverError> {
    let api = api(client, kind, namespace);
    for _ in 0..ATTEMPTS {
        let Some(ks) = api.get_opt(name).await? else {
            return Ok(None);
        };
        if TakenOver::of(kind, &ks.metadata).is_none_or(|t| t.holder != holder) {
            return Ok(None);
        }
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut annotations = json!({
            keys::TAKEN_OVER_BY: null,
            keys::TAKEN_OVER_OWNER: null,
            keys::TAKEN_OVER_AT: null,
            keys::ADDED_RECONCILE: null,
            RECONCILE_REQUESTED_AT: now,
        });
        if ks
            .annotations()
            .get(keys::ADDED_RECONCILE)
            .map(String::as_str)
            == Some("true")
        {
            annotations[keys::RECONCILE] = json!(null);
        }
        let patch = json!({
            "metadata": {"resourceVersion": ks.resource_version(), "annotations": annotations},
            "spec": {"suspend": null},
        });
        match api.patch(name, &params(), &Patch::Merge(&patch)).await {
            Ok(written) => {
                return Ok(Some(ReconcileRequest {
                    at: now,
                    resource_version: written.resource_version(),
                }));
            }
            Err(e) if crate::kubeapi::is_status(&e, &[409]) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) if crate::kubeapi::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(TakeoverError::KeptChanging(format!(
        "Kustomization {namespace}/{name}"
    )))
}

/// The originals `holder` holds in `namespace` (a session takes over only
/// in its own namespace).
pub async fn held_by(
    client: &Client,
    namespace: &str,
    holder: &str,
) -> Result<Vec<TakenOver>, TakeoverError> {
    Ok(all(client, Some(namespace))
        .await?
        .into_iter()
        .filter(|t| t.holder == holder)
        .collect())
}

/// Every original held by a session, in `namespace` or across the cluster
/// (kinds the cluster does not serve, or the user may not list, have none).
pub async fn all(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<TakenOver>, TakeoverError> {
    let mut held = Vec::new();
    for kind in AppKind::ALL {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource()),
            None => Api::all_with(client.clone(), &kind.resource()),
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) if crate::kubeapi::is_status(&e, &[403, 404]) => continue,
            Err(e) => return Err(e.into()),
        };
        held.extend(list.iter().filter_map(|o| TakenOver::of(kind, &o.metadata)));
    }
    Ok(held)
}
