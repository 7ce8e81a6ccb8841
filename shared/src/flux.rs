//! The Flux objects the suite drives: `OCIRepository`
//! (`source.toolkit.fluxcd.io/v1`) and `Kustomization`
//! (`kustomize.toolkit.fluxcd.io/v1`), typed with only the fields we use, and
//! the checks that Flux is installed.

use std::collections::BTreeMap;

use kube::{Client, CustomResource};
use serde::{Deserialize, Serialize};

/// The annotation that asks a Flux controller to reconcile now.
pub const RECONCILE_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
/// The API group of Flux sources.
pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
/// The API group of Flux HelmReleases.
pub const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
/// The API group of Flux Kustomizations.
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";

/// A Flux condition (`metav1.Condition`, with the fields we read).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalObjectReference {
    pub name: String,
}

/// A reference to a key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKeyReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `OCIRepository.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    plural = "ocirepositories",
    namespaced,
    status = "OCIRepositoryStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// `oci://host/repository`, without a tag.
    pub url: String,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<OCIRepositoryRef>,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_selector: Option<LayerSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// `OCIRepository.spec.ref`: digest wins over semver over tag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `OCIRepository.spec.layerSelector`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerSelector {
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// `OCIRepository.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub artifact: Option<Artifact>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub last_handled_reconcile_at: Option<String>,
}

/// The artifact a source produced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub revision: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `Kustomization.spec`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    plural = "kustomizations",
    namespaced,
    status = "KustomizationStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    pub source_ref: SourceReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub prune: bool,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Every other field, kept as read (`postBuild`, `patches`, `images`,
    /// `components`, `namePrefix`, `healthChecks`, `commonMetadata`, …):
    /// a Kustomization read and written back loses nothing.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `Kustomization.spec.sourceRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `Kustomization.spec.kubeConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigReference {
    pub secret_ref: SecretKeyReference,
}

/// `Kustomization.spec.decryption`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// `Kustomization.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub last_applied_revision: Option<String>,
    #[serde(default)]
    pub last_attempted_revision: Option<String>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub last_handled_reconcile_at: Option<String>,
    #[serde(default)]
    pub inventory: Option<Inventory>,
}

/// What a Kustomization applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    #[serde(default)]
    pub entries: Vec<InventoryEntry>,
}

/// One applied object: `id` is `<namespace>_<name>_<group>_<kind>`, `v` its version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct InventoryEntry {
    pub id: String,
    #[serde(default)]
    pub v: String,
}

/// An inventory entry's `<namespace>_<name>_<group>_<kind>` as the suite
/// names objects in output: `Kind/namespace/name` (`Kind/name` when
/// cluster-scoped).
pub fn display_id(id: &str) -> String {
    let parts: Vec<&str> = id.split('_').collect();
    if parts.len() < 4 {
        return id.to_string();
    }
    let kind = parts[parts.len() - 1];
    let ns = parts[0];
    let name = parts[1..parts.len() - 2].join("_");
    if ns.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{ns}/{name}")
    }
}

/// What a Kustomization last applied, each object named as in output
/// ([`display_id`]); empty before its first apply.
pub fn applied_objects(ks: &Kustomization) -> Vec<String> {
    ks.status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .map(|i| i.entries.iter().map(|e| display_id(&e.id)).collect())
        .unwrap_or_default()
}

/// `GitRepository.spec`, with the fields the suite reads.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    plural = "gitrepositories",
    namespaced,
    status = "GitRepositoryStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    pub url: String,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRepositoryRef>,
}

/// `GitRepository.spec.ref`: what is checked out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GitRepositoryRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl GitRepositoryRef {
    /// How the ref reads in output: the branch, tag, semver range, name or
    /// commit (Flux's default is the `master` branch).
    pub fn display(&self) -> String {
        [
            &self.branch,
            &self.tag,
            &self.semver,
            &self.name,
            &self.commit,
        ]
        .into_iter()
        .find_map(|r| r.clone())
        .unwrap_or_else(|| "master".into())
    }
}

/// `GitRepository.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub artifact: Option<Artifact>,
    #[serde(default)]
    pub last_handled_reconcile_at: Option<String>,
}

/// A reconcile request, as [`request_reconcile`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRequest {
    /// The annotation's value, which the controller echoes in
    /// `status.lastHandledReconcileAt` once handled.
    pub at: String,
    /// The object's `resourceVersion` right after the request: while it is
    /// unchanged, no controller has touched the object since.
    pub resource_version: Option<String>,
}

/// Asks the controller to reconcile `name` now, the way `flux reconcile`
/// does: a new value of [`RECONCILE_REQUESTED_AT`].
pub async fn request_reconcile<K>(
    api: &kube::Api<K>,
    name: &str,
) -> Result<ReconcileRequest, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: &now}}});
    let patched = api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(ReconcileRequest {
        at: now,
        resource_version: patched.meta().resource_version.clone(),
    })
}

/// `HelmRelease` (`helm.toolkit.fluxcd.io/v2`), used untyped.
pub fn helm_release_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(HELM_GROUP, "v2", "HelmRelease"),
        "helmreleases",
    )
}

/// `HelmRepository` (`source.toolkit.fluxcd.io/v1`), used untyped.
pub fn helm_repository_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(SOURCE_GROUP, "v1", "HelmRepository"),
        "helmrepositories",
    )
}

/// Whether the cluster serves `kind` in `group_version`.
pub async fn serves(client: &Client, group_version: &str, kind: &str) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.kind == kind)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why a Kustomization is not Ready, in plain words, or `None` if it is
/// Ready (or has not reported yet). The controller's message is kept; known
/// causes get an explanation first.
pub fn failure(status: &KustomizationStatus) -> Option<String> {
    let ready = condition(&status.conditions, "Ready")?;
    if ready.status != "False" {
        return None;
    }
    let message = ready.message.trim();
    if message.contains("forbidden") && message.contains("cannot") {
        return Some(forbidden(message));
    }
    let explanation = match ready.reason.as_str() {
        "BuildFailed" => Some("the manifests could not be built (kustomize build failed)"),
        "HealthCheckFailed" => Some("applied, but the workloads did not become healthy in time"),
        "ArtifactFailed" => Some("Flux could not fetch the artifact"),
        "ReconciliationFailed" if message.contains("dry-run failed") => {
            Some("the API server rejected an object (validation failed)")
        }
        _ => None,
    };
    Some(match explanation {
        Some(e) => format!("{e}: {message}"),
        None => format!("{}: {message}", ready.reason),
    })
}

/// A refusal by RBAC, once: which object, why it is refused in a sandbox,
/// and the API server's reason (who cannot do what). From e.g.
/// `ClusterRole/x dry-run failed (Forbidden): clusterroles.rbac.authorization.k8s.io "x"
/// is forbidden: User "system:serviceaccount:sbx:gitops-sandbox" cannot patch …
/// at the cluster scope`.
fn forbidden(message: &str) -> String {
    let object = message
        .split_whitespace()
        .find(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(|w| w.trim_end_matches([':', ',']).to_string())
        .unwrap_or_default();
    let scope = if message.contains("at the cluster scope") {
        "cluster-scoped objects are not allowed in a sandbox"
    } else {
        "the sandbox may only change objects in its own namespace"
    };
    let reason = message
        .split_once("is forbidden: ")
        .map_or(message, |(_, r)| r)
        .lines()
        .next()
        .unwrap_or_default()
        .trim();
    format!("not allowed: {object} ({scope}): {reason}")
}

/// `HelmRelease.spec` (`helm.toolkit.fluxcd.io/v2`), the fields sessions use.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    plural = "helmreleases",
    namespaced,
    status = "HelmReleaseStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<SourceReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Every other field, kept as read (`chart`, `valuesFrom`,
    /// `postRenderers`, `driftDetection`, …).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `HelmRelease.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub last_attempted_revision: Option<String>,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub history: Vec<serde_json::Value>,
}

/// Why a HelmRelease is not Ready, in plain words (`None` when Ready or pending).
pub fn helm_failure(status: &HelmReleaseStatus) -> Option<String> {
    let ready = condition(&status.conditions, "Ready")?;
    if ready.status != "False" {
        return None;
    }
    let message = ready.message.trim();
    let explanation = match ready.reason.as_str() {
        "InstallFailed" => "the chart could not be installed",
        "UpgradeFailed" => "the upgrade failed; the previous release stays",
        "RollbackSucceeded" => "the upgrade failed and was rolled back",
        "ArtifactFailed" => "Flux could not load the chart",
        "TestFailed" => "the chart's tests failed",
        _ => ready.reason.as_str(),
    };
    let explanation = if message.contains("parse error") || message.contains("template:") {
        "a template does not render"
    } else {
        explanation
    };
    Some(format!("{explanation}: {message}"))
}

/// Flux is missing or incomplete.
#[derive(Debug, thiserror::Error)]
pub enum FluxError {
    #[error(
        "the cluster does not serve {kind} ({group}/v1): Flux's {controller} is not installed. \
         Install it with `flux install --components=source-controller,kustomize-controller` \
         (Flux 2.7 or newer) and try again"
    )]
    NotInstalled {
        kind: &'static str,
        group: &'static str,
        controller: &'static str,
    },
    #[error("cannot reach the Kubernetes API server at {server}: {source}")]
    Unreachable {
        server: String,
        #[source]
        source: kube::Error,
    },
}

/// Checks that the `OCIRepository` and `Kustomization` v1 APIs are served.
pub async fn check_installed(client: &Client, server: &str) -> Result<(), FluxError> {
    let wanted = [
        (SOURCE_GROUP, "OCIRepository", "source-controller"),
        (KUSTOMIZE_GROUP, "Kustomization", "kustomize-controller"),
    ];
    for (group, kind, controller) in wanted {
        let missing = FluxError::NotInstalled {
            kind,
            group,
            controller,
        };
        match serves(client, &format!("{group}/v1"), kind).await {
            Ok(true) => {}
            Ok(false) => return Err(missing),
            Err(source) => {
                return Err(FluxError::Unreachable {
                    server: server.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    fn status(reason: &str, message: &str) -> KustomizationStatus {
        KustomizationStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn failures_are_explained_in_plain_words() {
        let forbidden = status(
            "ReconciliationFailed",
            "ClusterRole/sneaky dry-run failed: clusterroles.rbac.authorization.k8s.io \"sneaky\" is forbidden: User \"system:serviceaccount:dev:gitops-sandbox\" cannot patch resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope",
        );
        let text = failure(&forbidden).unwrap();
        assert!(text.starts_with("not allowed:"), "{text}");
        assert!(
            text.contains("cluster-scoped objects are not allowed in a sandbox"),
            "{text}"
        );
        assert_eq!(
            text,
            "not allowed: ClusterRole/sneaky (cluster-scoped objects are not allowed in a sandbox): \
             User \"system:serviceaccount:dev:gitops-sandbox\" cannot patch resource \"clusterroles\" \
             in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        // The refusal is said once.
        assert_eq!(text.matches("cannot patch").count(), 1, "{text}");

        let build = status("BuildFailed", "kustomization.yaml: accumulating resources");
        assert!(
            failure(&build)
                .unwrap()
                .starts_with("the manifests could not be built")
        );
        let other = status("Progressing", "waiting");
        assert_eq!(failure(&other).unwrap(), "Progressing: waiting");
        let mut ok = status("ReconciliationSucceeded", "Applied");
        ok.conditions[0].status = "True".into();
        assert_eq!(failure(&ok), None);
    }

    #[test]
    fn resources_have_flux_api_coordinates() {
        assert_eq!(
            OCIRepository::api_version(&()),
            "source.toolkit.fluxcd.io/v1"
        );
        assert_eq!(OCIRepository::plural(&()), "ocirepositories");
        assert_eq!(
            Kustomization::api_version(&()),
            "kustomize.toolkit.fluxcd.io/v1"
        );
    }

    #[test]
    fn specs_serialise_to_flux_field_names_without_nulls() {
        let spec = OCIRepositorySpec {
            url: "oci://127.0.0.1:5000/app".into(),
            reference: Some(OCIRepositoryRef {
                tag: Some("latest".into()),
                ..Default::default()
            }),
            interval: "10m".into(),
            layer_selector: Some(LayerSelector {
                media_type: "application/vnd.cncf.flux.content.v1.tar+gzip".into(),
                operation: Some("extract".into()),
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "url": "oci://127.0.0.1:5000/app",
                "ref": {"tag": "latest"},
                "interval": "10m",
                "layerSelector": {
                    "mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                    "operation": "extract"
                }
            })
        );
        let ks = KustomizationSpec {
            source_ref: SourceReference {
                kind: "OCIRepository".into(),
                name: "app".into(),
                namespace: None,
            },
            prune: true,
            interval: "10m".into(),
            target_namespace: Some("sbx".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&ks).unwrap();
        assert_eq!(json["sourceRef"]["kind"], "OCIRepository");
        assert_eq!(json["targetNamespace"], "sbx");
        assert!(json.get("wait").is_none());
    }

    #[test]
    fn status_reads_conditions_and_inventory() {
        let status: KustomizationStatus = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "BuildFailed",
                            "message": "kustomize build failed", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "lastAttemptedRevision": "latest@sha256:abc",
            "inventory": {"entries": [{"id": "ns_cm_ _ConfigMap", "v": "v1"}]}
        }))
        .unwrap();
        let ready = condition(&status.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, "BuildFailed");
        assert_eq!(status.inventory.unwrap().entries.len(), 1);
    }

    #[test]
    fn ids_display_as_kind_namespace_name() {
        assert_eq!(display_id("dev_app__ConfigMap"), "ConfigMap/dev/app");
        assert_eq!(
            display_id("_admin_rbac.authorization.k8s.io_ClusterRole"),
            "ClusterRole/admin"
        );
        assert_eq!(display_id("dev_web_apps_Deployment"), "Deployment/dev/web");
    }
}
