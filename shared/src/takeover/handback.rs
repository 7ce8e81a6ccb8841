//! The return to GitOps mode when a session that took over an app stops.
//!
//! In order: [`release_replacement`] makes the session's Kustomization
//! leave what it applied in place when it is deleted (the app's objects
//! stay the same objects); the original is resumed ([`super::claim::hand_back`]);
//! [`await_gitops`] fetches Git again and waits until Flux reports the Git
//! revision applied and Ready; then [`remove_added`] deletes what the
//! session applied that Git does not have. What the session changed in the
//! objects Git does have, Flux reverts: it applies them with the same field
//! manager, so fields the session set and Git does not are removed.

use std::time::Duration;

use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{AppKind, TakeoverError};
use crate::flux::{self, GitRepository, InventoryEntry, Kustomization};
use crate::session::record::ownership;

/// The labels kustomize-controller puts on what a Kustomization applies.
const APPLIED_BY_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
const APPLIED_BY_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Makes the session's replacement leave the app in place when it is
/// deleted, and returns what it applied: its Kustomization `namespace/session`
/// orphans what it applied (`prune: false`, `deletionPolicy: Orphan`; its
/// inventory is returned), its HelmRelease is suspended (helm-controller
/// then leaves the release installed when it goes). Nothing is written on
/// what is not the session's.
pub async fn release_replacement(
    client: &Client,
    namespace: &str,
    session: &str,
) -> Result<Vec<InventoryEntry>, TakeoverError> {
    let params = PatchParams {
        field_manager: Some(crate::kubeapi::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut inventory = Vec::new();
    let api: Api<Kustomization> = Api::namespaced(client.clone(), namespace);
    if let Some(ks) = api.get_opt(session).await?
        && ownership::owned_by(&ks.metadata, session)
    {
        inventory = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| i.entries.clone())
            .unwrap_or_default();
        let patch = json!({"spec": {"prune": false, "deletionPolicy": "Orphan"}});
        api.patch(session, &params, &Patch::Merge(&patch)).await?;
    }
    let hrs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &flux::helm_release_resource());
    if let Ok(Some(hr)) = hrs.get_opt(session).await
        && ownership::owned_by(&hr.metadata, session)
    {
        let patch = json!({"spec": {"suspend": true}});
        hrs.patch(session, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(inventory)
}

/// What [`await_gitops`] saw: the revision Flux applied from Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackInGitOps {
    /// `Kustomization flux-system/podinfo`.
    pub app: String,
    /// Flux's revision, `main@sha1:3f9a1c2…`.
    pub revision: String,
}

impl BackInGitOps {
    /// The commit, when the revision names one (`…@sha1:<hash>`).
    pub fn commit(&self) -> Option<&str> {
        self.revision
            .rsplit_once(':')
            .map(|(_, c)| c)
            .filter(|c| c.len() >= 7 && c.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// `back in GitOps mode: Kustomization flux-system/podinfo at main@3f9a1c2`.
    pub fn describe(&self) -> String {
        let short = match (self.revision.split_once('@'), self.commit()) {
            (Some((reference, _)), Some(c)) => format!("{reference}@{}", &c[..c.len().min(7)]),
            _ => self.revision.clone(),
        };
        format!("back in GitOps mode: {} at {short}", self.app)
    }
}

/// Asks source-controller to fetch the original's GitRepository again (a
/// commit pushed during the session comes in) and waits, at most
/// `timeout`, until the original (resumed with `request`) reports that
/// revision applied and Ready: a Kustomization its `lastAppliedRevision`,
/// a HelmRelease the chart version its HelmChart built from that revision.
pub async fn await_gitops(
    client: &Client,
    kind: AppKind,
    namespace: &str,
    name: &str,
    request: &flux::ReconcileRequest,
    timeout: Duration,
) -> Result<BackInGitOps, TakeoverError> {
    let app = format!("{} {namespace}/{name}", kind.as_str());
    let originals: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kind.resource());
    let first = originals
        .get_opt(name)
        .await?
        .ok_or_else(|| TakeoverError::NotFound(app.clone()))?;
    let source = match kind {
        AppKind::Kustomization => &first.data["spec"]["sourceRef"],
        AppKind::HelmRelease => &first.data["spec"]["chart"]["spec"]["sourceRef"],
    };
    let source_kind = source["kind"].as_str().unwrap_or_default().to_string();
    let source_name = source["name"].as_str().unwrap_or_default().to_string();
    let source_ns = source["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_string();
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &source_ns);
    let fetched = if source_kind == "GitRepository" {
        Some(flux::request_reconcile(&repos, &source_name).await?)
    } else {
        None
    };
    // helm-controller's HelmChart for a HelmRelease: `<namespace>-<name>`
    // in the source's namespace.
    let charts: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &source_ns,
        &kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk(
            flux::SOURCE_GROUP,
            "v1",
            "HelmChart",
        )),
    );
    let chart_name = format!("{namespace}-{name}");
    let started = tokio::time::Instant::now();
    let mut why = "it has not been reconciled yet".to_string();
    while started.elapsed() < timeout {
        let o = originals
            .get_opt(name)
            .await?
            .ok_or_else(|| TakeoverError::NotFound(app.clone()))?;
        // The source's revision, once it handled the fetch request.
        let revision = match &fetched {
            Some(asked) => repos.get_opt(&source_name).await?.and_then(|r| {
                let s = r.status?;
                (s.last_handled_reconcile_at.as_deref() == Some(asked.at.as_str()))
                    .then_some(s.artifact?.revision)
            }),
            None => o.data["status"]["lastAttemptedRevision"]
                .as_str()
                .map(str::to_string),
        };
        let step = match kind {
            AppKind::Kustomization => {
                let ks: Kustomization = serde_json::from_value(
                    serde_json::to_value(&o).unwrap_or_default(),
                )
                .map_err(|e| TakeoverError::Spec {
                    app: app.clone(),
                    message: e.to_string(),
                })?;
                verdict(&ks, &request.at, revision.as_deref())
            }
            AppKind::HelmRelease => {
                // The chart version built from that revision.
                let built = match &revision {
                    Some(r) => charts
                        .get_opt(&chart_name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| {
                            let s = &c.data["status"];
                            (s["observedSourceArtifactRevision"].as_str() == Some(r.as_str())
                                || fetched.is_none())
                            .then(|| s["artifact"]["revision"].as_str().map(str::to_string))
                            .flatten()
                        }),
                    None => None,
                };
                match release_verdict(&o, &request.at, built.as_deref()) {
                    Verdict::Back(_) => Verdict::Back(revision.clone().unwrap_or_default()),
                    w => w,
                }
            }
        };
        match step {
            Verdict::Back(revision) => return Ok(BackInGitOps { app, revision }),
            Verdict::Waiting(w) => why = w,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(TakeoverError::NotBack {
        app,
        secs: timeout.as_secs(),
        why,
        check: format!(
            "flux get {} {name} -n {namespace}",
            kind.as_str().to_ascii_lowercase()
        ),
    })
}

/// Whether a resumed HelmRelease (as JSON, resumed with the request
/// `asked`) released `chart_version`, the version its HelmChart built from
/// Git's revision (`None` while not built yet). Pure.
pub fn release_verdict(hr: &DynamicObject, asked: &str, chart_version: Option<&str>) -> Verdict {
    let Some(version) = chart_version else {
        return Verdict::Waiting("the chart has not been built from Git's revision yet".into());
    };
    let s = &hr.data["status"];
    let handled = s["lastHandledReconcileAt"].as_str() == Some(asked);
    let observed = s["observedGeneration"].as_i64() == hr.metadata.generation;
    if !handled || !observed {
        return Verdict::Waiting("helm-controller has not reconciled it yet".into());
    }
    let ready = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let attempted = s["lastAttemptedRevision"].as_str() == Some(version);
    match ready {
        Some(c) if c["status"] == "True" && attempted => Verdict::Back(version.to_string()),
        Some(c) if c["status"] == "False" && attempted => Verdict::Waiting(format!(
            "{version} failed: {}",
            c["message"].as_str().unwrap_or_default()
        )),
        _ => Verdict::Waiting(format!("releasing {version}")),
    }
}

/// Where a resumed original stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ready at the source's revision, after the hand-back's request.
    Back(String),
    /// Not yet, and why.
    Waiting(String),
}

/// Whether `ks` (resumed with the request `asked`) is back at `revision`,
/// its source's current revision (`None` while the source has not fetched
/// again). Pure.
pub fn verdict(ks: &Kustomization, asked: &str, revision: Option<&str>) -> Verdict {
    let Some(revision) = revision else {
        return Verdict::Waiting("source-controller has not fetched Git again yet".into());
    };
    let Some(status) = ks.status.as_ref() else {
        return Verdict::Waiting("kustomize-controller has not reconciled it yet".into());
    };
    if status.last_handled_reconcile_at.as_deref() != Some(asked)
        || status.observed_generation != ks.metadata.generation
    {
        return Verdict::Waiting("kustomize-controller has not reconciled it yet".into());
    }
    let ready = flux::condition(&status.conditions, "Ready");
    let applied = status.last_applied_revision.as_deref() == Some(revision);
    match ready {
        Some(c) if c.status == "True" && applied => Verdict::Back(revision.to_string()),
        Some(c)
            if c.status == "False"
                && status.last_attempted_revision.as_deref() == Some(revision) =>
        {
            Verdict::Waiting(format!("{revision} failed: {}", c.message))
        }
        _ => Verdict::Waiting(format!("applying {revision}")),
    }
}

/// Deletes what the session's Kustomization `session_ns/session` applied
/// (`ours`, its inventory) that the original no longer holds (`original`,
/// after it reconciled Git): objects Git does not have. Each only while it
/// still carries the session's Kustomization's labels (the original did
/// not apply it since), with its UID as precondition. Returns them as said
/// in output.
pub async fn remove_added(
    client: &Client,
    ours: &[InventoryEntry],
    original: &Kustomization,
    session_ns: &str,
    session: &str,
) -> Result<Vec<String>, TakeoverError> {
    let theirs: std::collections::BTreeSet<&str> = original
        .status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|i| i.entries.iter().map(|e| e.id.as_str()).collect())
        .unwrap_or_default();
    let mut removed = Vec::new();
    for entry in ours.iter().filter(|e| !theirs.contains(e.id.as_str())) {
        let Some((ns, name, group, kind)) = split_id(&entry.id) else {
            continue;
        };
        let gvk = GroupVersionKind::gvk(group, &entry.v, kind);
        let Ok((resource, caps)) = kube::discovery::pinned_kind(client, &gvk).await else {
            continue;
        };
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let Some(obj) = api.get_opt(name).await? else {
            continue;
        };
        let labels = obj.labels();
        let applied_by_session = labels.get(APPLIED_BY_NAME).map(String::as_str) == Some(session)
            && labels.get(APPLIED_BY_NAMESPACE).map(String::as_str) == Some(session_ns);
        if !applied_by_session || obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => removed.push(format!(
                "{} (added by the session; not in Git)",
                flux::display_id(&entry.id)
            )),
            Err(e) if crate::kubeapi::is_status(&e, &[404, 409]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// `<namespace>_<name>_<group>_<kind>` → its parts (names hold no `_`,
/// but a group may be empty).
fn split_id(id: &str) -> Option<(&str, &str, &str, &str)> {
    let (rest, kind) = id.rsplit_once('_')?;
    let (rest, group) = rest.rsplit_once('_')?;
    let (ns, name) = rest.split_once('_')?;
    Some((ns, name, group, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(status: serde_json::Value) -> Kustomization {
        serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"namespace": "flux-system", "name": "podinfo", "generation": 3},
            "spec": {"interval": "1m", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
            "status": status,
        }))
        .unwrap()
    }

    const REV: &str = "main@sha1:3f9a1c2d4e5f60718293a4b5c6d7e8f901234567";

    #[test]
    fn back_only_when_the_request_was_handled_at_the_sources_revision_and_ready() {
        let ready = |rev: &str, handled: &str, generation: i64| {
            ks(json!({
                "observedGeneration": generation, "lastHandledReconcileAt": handled,
                "lastAppliedRevision": rev, "lastAttemptedRevision": rev,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied"}],
            }))
        };
        assert_eq!(
            verdict(&ready(REV, "t1", 3), "t1", Some(REV)),
            Verdict::Back(REV.into())
        );
        // The source has not fetched again yet.
        assert!(matches!(
            verdict(&ready(REV, "t1", 3), "t1", None),
            Verdict::Waiting(_)
        ));
        // An older request, or the resumed spec not yet observed.
        assert!(matches!(
            verdict(&ready(REV, "t0", 3), "t1", Some(REV)),
            Verdict::Waiting(_)
        ));
        assert!(matches!(
            verdict(&ready(REV, "t1", 2), "t1", Some(REV)),
            Verdict::Waiting(_)
        ));
        // Ready at the commit before the one pushed during the session.
        let old = "main@sha1:0000000d4e5f60718293a4b5c6d7e8f901234567";
        assert!(matches!(
            verdict(&ready(old, "t1", 3), "t1", Some(REV)),
            Verdict::Waiting(_)
        ));
        // Git's revision fails: said.
        let failed = ks(json!({
            "observedGeneration": 3, "lastHandledReconcileAt": "t1",
            "lastAppliedRevision": old, "lastAttemptedRevision": REV,
            "conditions": [{"type": "Ready", "status": "False", "reason": "HealthCheckFailed", "message": "timeout waiting for: [Deployment/podinfo/podinfo status: 'InProgress']"}],
        }));
        match verdict(&failed, "t1", Some(REV)) {
            Verdict::Waiting(w) => assert!(
                w.contains("HealthCheck") || w.contains("timeout waiting"),
                "{w}"
            ),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_hand_back_is_said_with_the_short_commit() {
        let back = BackInGitOps {
            app: "Kustomization flux-system/podinfo".into(),
            revision: REV.into(),
        };
        assert_eq!(
            back.describe(),
            "back in GitOps mode: Kustomization flux-system/podinfo at main@3f9a1c2"
        );
        assert_eq!(
            back.commit(),
            Some("3f9a1c2d4e5f60718293a4b5c6d7e8f901234567")
        );
    }

    #[test]
    fn inventory_ids_split_with_an_empty_group_or_namespace() {
        assert_eq!(
            split_id("podinfo_web_apps_Deployment"),
            Some(("podinfo", "web", "apps", "Deployment"))
        );
        assert_eq!(
            split_id("podinfo_web__Service"),
            Some(("podinfo", "web", "", "Service"))
        );
        assert_eq!(
            split_id("_podinfo__Namespace"),
            Some(("", "podinfo", "", "Namespace"))
        );
        assert_eq!(split_id("nonsense"), None);
    }
}
