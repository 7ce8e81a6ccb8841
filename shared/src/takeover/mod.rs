//! From GitOps mode to Run mode and back: a session that runs a working
//! copy *in place of* the app Flux deploys from Git.
//!
//! - [`find`]: which Flux Kustomization deploys a directory of a Git work
//!   tree (its `sourceRef` is a `GitRepository` whose URL is one of the work
//!   tree's remotes, [`remote`], and its `spec.path` is the directory).
//! - [`claim`]: the takeover of the original and its hand-back. The
//!   original is suspended and marked with the session that holds it
//!   ([`keys::TAKEN_OVER_BY`]) and with Flux's own
//!   `kustomize.toolkit.fluxcd.io/reconcile: disabled`, so that a parent
//!   Kustomization applying it from Git leaves it alone for the whole
//!   session (a plain suspend is undone by a parent whose manifest says
//!   `suspend: false`, and by any parent reconcile when written by a field
//!   manager whose name starts with `kubectl`, which kustomize-controller
//!   takes for a hand edit: [`claim::FIELD_MANAGER`] does not). Only these
//!   fields are written, with the
//!   resourceVersion read as the precondition, and only an original marked
//!   with the session's own name is ever handed back.
//! - [`handback`]: the return to GitOps mode at stop: the original resumed
//!   and reconciled from Git (the GitRepository fetched again, so a commit
//!   pushed during the session comes in) and awaited until Flux reports the
//!   Git revision applied; what the session added that Git does not have
//!   is then removed.
//!
//! The session's own Kustomization takes the original's settings
//! ([`replacement_spec`]) and applies the same objects: Flux updates them in
//! place (server-side apply, same field manager), so a Deployment keeps its
//! UID through the takeover and the hand-back.

pub mod claim;
pub mod find;
pub mod handback;
pub mod remote;

use crate::flux::{HelmReleaseSpec, KustomizationSpec, SourceReference};

pub use claim::{Holder, TakenOver};
pub use find::App;

/// What deploys an app: the Flux object a session takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Manifests, applied by a Kustomization.
    Kustomization,
    /// A chart, released by a HelmRelease.
    HelmRelease,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Kustomization => "Kustomization",
            AppKind::HelmRelease => "HelmRelease",
        }
    }

    /// Its API resource (`kustomize.toolkit.fluxcd.io/v1`, `helm.toolkit.fluxcd.io/v2`).
    pub fn resource(self) -> kube::api::ApiResource {
        match self {
            AppKind::Kustomization => {
                kube::api::ApiResource::erase::<crate::flux::Kustomization>(&())
            }
            AppKind::HelmRelease => crate::flux::helm_release_resource(),
        }
    }

    /// Both kinds, in the order they are looked at.
    pub const ALL: [AppKind; 2] = [AppKind::Kustomization, AppKind::HelmRelease];
}

/// Annotations the suite puts on an original it took over.
pub mod keys {
    /// `<lease namespace>/<session>`: the session that holds the original.
    pub const TAKEN_OVER_BY: &str = "gitops.kubectl.dev/taken-over-by";
    /// `user@host` of that session.
    pub const TAKEN_OVER_OWNER: &str = "gitops.kubectl.dev/taken-over-owner";
    /// When (RFC 3339).
    pub const TAKEN_OVER_AT: &str = "gitops.kubectl.dev/taken-over-at";
    /// `"true"` when the suite added Flux's [`RECONCILE`] annotation (and so
    /// removes it at the hand-back).
    pub const ADDED_RECONCILE: &str = "gitops.kubectl.dev/taken-over-reconcile";
    /// Flux's annotation: kustomize-controller neither applies (from a
    /// parent Kustomization) nor prunes an in-cluster object carrying it
    /// with the value `disabled`.
    pub const RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";
}

/// Errors of a takeover and its hand-back.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(
        "{app} is already taken over by session {holder} of {owner} ({state}); \
         one session at a time runs in place of an app"
    )]
    Held {
        app: String,
        holder: String,
        owner: String,
        /// Live, or stale with what hands it back.
        state: String,
    },
    #[error(
        "{app} is suspended outside kubectl-gitops (`flux suspend`, or `suspend: true` in Git): \
         a session takes over only what Flux is running; resume it first \
         (`flux resume kustomization {name} -n {namespace}`) or ask who suspended it"
    )]
    SuspendedElsewhere {
        app: String,
        namespace: String,
        name: String,
    },
    #[error("{0} does not exist (any more)")]
    NotFound(String),
    #[error(
        "no Flux Kustomization deploys {dir} from this repository (its remotes: {remotes}); \
         run without --take-over to try it in a sandbox, or name the Kustomization: \
         --take-over NAMESPACE/NAME"
    )]
    NoMatch { dir: String, remotes: String },
    #[error(
        "{dir} is deployed by several Flux Kustomizations ({apps}); name the one to take over: \
         --take-over NAMESPACE/NAME"
    )]
    Ambiguous { dir: String, apps: String },
    #[error(
        "--take-over {0}: expected NAMESPACE/NAME (a Kustomization) or helmrelease/NAMESPACE/NAME"
    )]
    BadName(String),
    #[error(
        "{app} was handed back but is not back in GitOps mode after {secs}s: {why}. \
         Flux keeps reconciling it; see `{check}`"
    )]
    NotBack {
        app: String,
        secs: u64,
        why: String,
        /// The `flux get …` command that shows it.
        check: String,
    },
    #[error("{app}'s spec cannot be read: {message}")]
    Spec { app: String, message: String },
    #[error("{0} kept changing while the suite tried to write it; try again")]
    KeptChanging(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The spec of the session's Kustomization that runs in place of
/// `original`: the original's settings (`targetNamespace`,
/// `serviceAccountName`, `postBuild` with `substituteFrom`, `decryption`,
/// `patches`, `images`, `components`, `namePrefix`/`nameSuffix`,
/// `commonMetadata`, `healthChecks`, `wait`, `timeout`, `force`,
/// `kubeConfig`, `dependsOn`, …), its source and path replaced by the
/// session's artifact. It prunes what it applied while it runs; its
/// deletion at the hand-back is left to the session (see
/// [`handback::release_replacement`]), so the original's own
/// `deletionPolicy` is not copied.
/// The session's HelmRelease in place of `original` (named `name` in its
/// namespace): the original's settings (`values`, `valuesFrom`,
/// `targetNamespace`, `storageNamespace`, `serviceAccountName`, `install`,
/// `upgrade`, `postRenderers`, `driftDetection`, `kubeConfig`, …) and its
/// Helm release (`releaseName` as helm-controller names it), the chart
/// taken from the session's artifact. `values`: the developer's
/// `--values` files, merged over the original's values.
pub fn replacement_release(
    original: &HelmReleaseSpec,
    name: &str,
    source: &str,
    values: Option<serde_json::Value>,
) -> HelmReleaseSpec {
    let mut spec = original.clone();
    spec.other.remove("chart");
    spec.chart_ref = Some(SourceReference {
        kind: "OCIRepository".into(),
        name: source.into(),
        namespace: None,
    });
    spec.release_name = Some(release_name(original, name));
    spec.suspend = None;
    spec.interval = "10m".into();
    if let Some(extra) = values.filter(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
        let mut merged = spec.values.take().unwrap_or_else(|| serde_json::json!({}));
        crate::helm::merge_values(&mut merged, extra);
        spec.values = Some(merged);
    }
    spec
}

/// The Helm release a HelmRelease `name` manages: its `releaseName`, else
/// `<targetNamespace>-<name>` when it has a target namespace, else `name`
/// (helm-controller's rule; names over 53 characters are shortened by it,
/// which this does not follow).
pub fn release_name(spec: &HelmReleaseSpec, name: &str) -> String {
    if let Some(r) = spec.release_name.as_ref().filter(|r| !r.is_empty()) {
        return r.clone();
    }
    match spec.target_namespace.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => format!("{t}-{name}"),
        None => name.to_string(),
    }
}

pub fn replacement_spec(
    original: &KustomizationSpec,
    source: &str,
    path: &str,
) -> KustomizationSpec {
    let mut spec = original.clone();
    spec.source_ref = SourceReference {
        kind: "OCIRepository".into(),
        name: source.into(),
        namespace: None,
    };
    spec.path = Some(path.into());
    spec.prune = true;
    spec.suspend = None;
    spec.interval = "10m".into();
    spec.retry_interval = Some("30s".into());
    spec.other.remove("deletionPolicy");
    spec
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn the_replacement_release_keeps_the_originals_release_and_values() {
        let original: HelmReleaseSpec = serde_json::from_value(serde_json::json!({
            "interval": "1h", "suspend": false, "targetNamespace": "web",
            "chart": {"spec": {"chart": "./charts/hello", "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}},
            "values": {"greeting": "from Git", "nested": {"a": 1, "b": 2}},
            "valuesFrom": [{"kind": "Secret", "name": "hello-values"}],
            "serviceAccountName": "deployer", "storageNamespace": "web",
            "install": {"crds": "CreateReplace"}, "upgrade": {"remediation": {"retries": 3}},
            "driftDetection": {"mode": "enabled"},
        }))
        .unwrap();
        let extra = serde_json::json!({"nested": {"b": 20}});
        let spec = replacement_release(&original, "hello", "run-hello-1a2b3c", Some(extra));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "interval": "10m", "targetNamespace": "web",
                "chartRef": {"kind": "OCIRepository", "name": "run-hello-1a2b3c"},
                "releaseName": "web-hello",
                "values": {"greeting": "from Git", "nested": {"a": 1, "b": 20}},
                "valuesFrom": [{"kind": "Secret", "name": "hello-values"}],
                "serviceAccountName": "deployer", "storageNamespace": "web",
                "install": {"crds": "CreateReplace"}, "upgrade": {"remediation": {"retries": 3}},
                "driftDetection": {"mode": "enabled"},
            })
        );
        let named = HelmReleaseSpec {
            release_name: Some("custom".into()),
            ..original.clone()
        };
        assert_eq!(release_name(&named, "hello"), "custom");
        let plain = HelmReleaseSpec {
            target_namespace: None,
            ..original
        };
        assert_eq!(release_name(&plain, "hello"), "hello");
    }

    #[test]
    fn the_replacement_keeps_every_setting_but_the_source() {
        let settings = serde_json::json!({
            "targetNamespace": "podinfo", "serviceAccountName": "deployer",
            "postBuild": {"substitute": {"env": "dev"}, "substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]},
            "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}},
            "patches": [{"patch": "- op: add", "target": {"kind": "Deployment"}}],
            "images": [{"name": "podinfo", "newTag": "6.5.0"}],
            "components": ["../../components/monitoring"],
            "namePrefix": "dev-", "nameSuffix": "-a",
            "commonMetadata": {"labels": {"team": "a"}},
            "healthChecks": [{"kind": "Deployment", "name": "podinfo", "namespace": "podinfo"}],
            "wait": false, "timeout": "3m", "force": true,
            "kubeConfig": {"secretRef": {"name": "remote", "key": "value"}},
        });
        let mut input = settings.clone();
        input.as_object_mut().unwrap().extend(
            serde_json::json!({
                "interval": "1m", "path": "./apps/podinfo", "prune": true, "suspend": false,
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                "deletionPolicy": "Delete",
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        let original: KustomizationSpec = serde_json::from_value(input).unwrap();
        let spec = replacement_spec(&original, "run-podinfo-1a2b3c", "./apps/podinfo");
        let json = serde_json::to_value(&spec).unwrap();
        // Every setting, the source and scheduling the session's.
        let mut want = settings;
        want.as_object_mut().unwrap().extend(
            serde_json::json!({
                "interval": "10m", "retryInterval": "30s", "path": "./apps/podinfo", "prune": true,
                "sourceRef": {"kind": "OCIRepository", "name": "run-podinfo-1a2b3c"},
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(json, want);
    }
}
