//! The sandbox boundary: what keeps a payload inside its namespace sandbox
//! although Flux itself runs with cluster-wide rights.
//!
//! A namespace sandbox's payload is applied by Flux impersonating the
//! sandbox's ServiceAccount, which is bound to the built-in `admin` role in
//! that namespace. A default `flux install` aggregates Flux's own kinds into
//! `admin` (the `flux-edit-*` ClusterRole), so without more the payload
//! could create a Kustomization or HelmRelease of its own, which Flux would
//! apply as its controller (cluster-admin) unless told otherwise. RBAC cannot
//! take a permission away from `admin`, so the boundary is a
//! ValidatingAdmissionPolicy, bound to every sandbox namespace, that judges
//! what any ServiceAccount of that namespace (the payload, whatever Flux
//! object or Helm chart template it comes through) asks for:
//! - Flux sources, notifications and image automation objects: refused
//!   (a source could fetch from anywhere with source-controller's network
//!   position and rights).
//! - Kustomizations and HelmReleases: only when they act as the sandbox's
//!   ServiceAccount, apply into the sandbox's own namespace and take their
//!   source from it (no `kubeConfig`, no other namespace anywhere).
//!
//! The same rules are checked locally ([`check`]) so a session refuses such
//! a payload before anything is pushed, naming the file; the policy is what
//! holds when the local check is bypassed (an overlay's generated objects,
//! an old client, a hand-pushed artifact).
//!
//! Whether the policy is in force is observed, not assumed: [`probe`]
//! asks the API server to dry-run-create a probe object in the sandbox
//! namespace, which only an active, bound policy refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::flux::{OCIRepository, OCIRepositorySpec};
use crate::labels;

/// The policy's and its binding's name.
pub const NAME: &str = "gitops-sandbox-boundary";
/// Annotation: the revision of the rules an installed policy carries.
pub const REVISION_ANNOTATION: &str = "gitops.kubectl.dev/boundary-revision";
/// The revision of the rules below; raise it whenever they change.
pub const REVISION: u32 = 1;
/// Label marking a dry-run probe object: the policy always refuses it.
pub const PROBE_LABEL: &str = "gitops.kubectl.dev/boundary-probe";
/// The message the policy answers a probe with.
const PROBE_MESSAGE: &str = "the kubectl-gitops sandbox boundary is in force";

/// Every API group Flux serves (those `flux install` aggregates into `admin`).
pub const FLUX_GROUPS: [&str; 6] = [
    "notification.toolkit.fluxcd.io",
    "source.toolkit.fluxcd.io",
    "source.extensions.fluxcd.io",
    "helm.toolkit.fluxcd.io",
    "image.toolkit.fluxcd.io",
    "kustomize.toolkit.fluxcd.io",
];

/// Why the boundary could not be put or found in place.
#[derive(Debug, thiserror::Error)]
pub enum BoundaryError {
    #[error(
        "this cluster does not serve ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, \
         Kubernetes 1.30 or later), which keeps a sandbox's payload from escaping through Flux"
    )]
    Unsupported,
    #[error(
        "{kind} {NAME} exists but was not created by kubectl-gitops (it is managed by \
         {manager}); refusing to change or rely on it: remove or rename it, or ask whoever \
         manages it"
    )]
    NotOurs { kind: &'static str, manager: String },
    #[error(
        "the sandbox boundary (ValidatingAdmissionPolicy {NAME}) is not in force in namespace \
         {namespace}{}",
        why.as_ref().map(|w| format!(": {w}")).unwrap_or_default()
    )]
    NotInForce {
        namespace: String,
        why: Option<String>,
    },
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl BoundaryError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            BoundaryError::NotOurs { .. } | BoundaryError::Kube(_) => "",
            BoundaryError::Unsupported | BoundaryError::NotInForce { .. } => {
                "a cluster administrator installs it once with `kubectl gitops-sandbox policy \
                 --install` (or commits the output of `kubectl gitops-sandbox policy` to the \
                 cluster's GitOps repository); or pass --unconfined to `kubectl gitops-sandbox \
                 create` for a sandbox that is NOT a security boundary (its payload can do \
                 whatever Flux can)"
            }
        }
    }
}

fn policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        ),
        "validatingadmissionpolicies",
    )
}

fn binding_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
        ),
        "validatingadmissionpolicybindings",
    )
}

fn metadata() -> Value {
    let labels: BTreeMap<String, String> = labels::managed("sandbox-boundary");
    json!({
        "name": NAME,
        "labels": labels,
        "annotations": {
            REVISION_ANNOTATION: REVISION.to_string(),
            labels::CREATED_BY: format!("kubectl-gitops {}", crate::VERSION),
        },
    })
}

/// A CEL rule with its message.
fn rule(expression: &str, message: &str) -> Value {
    json!({"expression": expression, "message": message})
}

/// The ValidatingAdmissionPolicy (as JSON, `kubectl apply`-able).
pub fn policy() -> Value {
    let sa = super::SERVICE_ACCOUNT;
    let applier = "request.kind.kind in ['Kustomization', 'HelmRelease'] && \
                   request.kind.group in ['kustomize.toolkit.fluxcd.io', 'helm.toolkit.fluxcd.io']";
    let is_k = "request.kind.kind == 'Kustomization'";
    let is_hr = "request.kind.kind == 'HelmRelease'";
    let same_ns = |field: &str, guard: &str| {
        format!(
            "!({guard}) || !has(object.spec.{field}) || object.spec.{field} == request.namespace"
        )
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": FLUX_GROUPS,
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["*"],
                }],
            },
            // The payload: whatever a ServiceAccount of the sandbox's own
            // namespace asks for (Flux impersonates one to apply it). And
            // probes, which prove the policy is in force.
            "matchConditions": [{
                "name": "payload-or-probe",
                "expression": format!(
                    "request.userInfo.username.startsWith('system:serviceaccount:' + request.namespace + ':') || \
                     (has(object.metadata.labels) && '{PROBE_LABEL}' in object.metadata.labels)"
                ),
            }],
            "validations": [
                rule(
                    &format!("!(has(object.metadata.labels) && '{PROBE_LABEL}' in object.metadata.labels)"),
                    PROBE_MESSAGE,
                ),
                rule(
                    applier,
                    "a sandbox's payload may not create or change Flux sources or other Flux \
                     objects; only Kustomizations and HelmReleases confined to the sandbox",
                ),
                rule(
                    &format!(
                        "!({applier}) || (has(object.spec.serviceAccountName) && \
                         object.spec.serviceAccountName == '{sa}')"
                    ),
                    &format!(
                        "a Kustomization or HelmRelease in a sandbox must set \
                         spec.serviceAccountName: {sa} (without it Flux applies as its own \
                         cluster-wide account)"
                    ),
                ),
                rule(
                    &format!("!({applier}) || !has(object.spec.kubeConfig)"),
                    "a Kustomization or HelmRelease in a sandbox may not set spec.kubeConfig \
                     (it would apply into another cluster with other credentials)",
                ),
                rule(
                    &same_ns("targetNamespace", applier),
                    "spec.targetNamespace must be the sandbox's own namespace",
                ),
                rule(
                    &format!(
                        "!({is_k}) || !has(object.spec.sourceRef) || \
                         !has(object.spec.sourceRef.namespace) || \
                         object.spec.sourceRef.namespace == request.namespace"
                    ),
                    "spec.sourceRef.namespace must be the sandbox's own namespace",
                ),
                rule(
                    &same_ns("storageNamespace", is_hr),
                    "spec.storageNamespace must be the sandbox's own namespace",
                ),
                rule(
                    &format!(
                        "!({is_hr}) || !has(object.spec.chart) || !has(object.spec.chart.spec) || \
                         !has(object.spec.chart.spec.sourceRef) || \
                         !has(object.spec.chart.spec.sourceRef.namespace) || \
                         object.spec.chart.spec.sourceRef.namespace == request.namespace"
                    ),
                    "spec.chart.spec.sourceRef.namespace must be the sandbox's own namespace",
                ),
                rule(
                    &format!(
                        "!({is_hr}) || !has(object.spec.chartRef) || \
                         !has(object.spec.chartRef.namespace) || \
                         object.spec.chartRef.namespace == request.namespace"
                    ),
                    "spec.chartRef.namespace must be the sandbox's own namespace",
                ),
            ],
        },
    })
}

/// The binding: the policy, denying, in every sandbox namespace.
pub fn binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(),
        "spec": {
            "policyName": NAME,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {
                        labels::MANAGED_BY: labels::MANAGER,
                        labels::COMPONENT: "sandbox",
                    },
                },
            },
        },
    })
}

/// Both objects as one YAML stream, for `kubectl apply -f -` or a GitOps
/// repository.
pub fn manifest_yaml() -> String {
    let docs = [policy(), binding()];
    docs.iter()
        // Our own objects, plain maps and strings: they serialise without fail.
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Why a Flux object in a sandbox payload would leave the sandbox, or
/// `None` when it stays inside. The same rules as the policy, in Rust: the
/// local check before a push (the policy is the one that holds).
pub fn check(doc: &Value, namespace: &str) -> Option<String> {
    let api_version = doc.get("apiVersion")?.as_str()?;
    let group = api_version.split_once('/').map(|(g, _)| g)?;
    if !FLUX_GROUPS.contains(&group) {
        return None;
    }
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let s = |path: &[&str]| {
        path.iter()
            .try_fold(&spec, |v, k| v.get(k))
            .map(|v| v.as_str().unwrap_or("").to_string())
    };
    let applier = matches!(
        (group, kind),
        ("kustomize.toolkit.fluxcd.io", "Kustomization")
            | ("helm.toolkit.fluxcd.io", "HelmRelease")
    );
    if !applier {
        return Some(format!(
            "a {kind} ({group}): a sandbox's payload may not create Flux sources or other Flux \
             objects (a source fetches with source-controller's rights from anywhere); only \
             Kustomizations and HelmReleases confined to the sandbox are allowed"
        ));
    }
    let sa = super::SERVICE_ACCOUNT;
    match s(&["serviceAccountName"]) {
        Some(name) if name == sa => {}
        Some(name) => {
            return Some(format!(
                "a {kind} acting as ServiceAccount {name:?}: in a sandbox it must act as {sa}"
            ));
        }
        None => {
            return Some(format!(
                "a {kind} without spec.serviceAccountName: Flux would apply it with its own \
                 cluster-wide account; set serviceAccountName: {sa}"
            ));
        }
    }
    if spec.get("kubeConfig").is_some() {
        return Some(format!(
            "a {kind} with spec.kubeConfig: it would apply into another cluster"
        ));
    }
    let mut fields: Vec<&[&str]> = vec![&["targetNamespace"]];
    if kind == "Kustomization" {
        fields.push(&["sourceRef", "namespace"]);
    } else {
        fields.extend([
            &["storageNamespace"][..],
            &["chart", "spec", "sourceRef", "namespace"],
            &["chartRef", "namespace"],
        ]);
    }
    fields.into_iter().find_map(|path| {
        s(path).filter(|ns| ns != namespace).map(|ns| {
            format!(
                "a {kind} whose spec.{} is {ns:?}: in a sandbox it must be {namespace:?}",
                path.join(".")
            )
        })
    })
}

/// Puts the policy and its binding in place (creates them, or updates ours
/// when they carry older rules). Refuses objects of those names that the
/// suite did not create. A user who may not write them gets `Ok(false)`:
/// whether someone else installed them is for [`probe`] to find out.
pub async fn ensure(client: &Client) -> Result<bool, BoundaryError> {
    if !crate::flux::serves(
        client,
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
    )
    .await?
    {
        return Err(BoundaryError::Unsupported);
    }
    let mut wrote = true;
    for (kind, resource, wanted) in [
        ("ValidatingAdmissionPolicy", policy_resource(), policy()),
        (
            "ValidatingAdmissionPolicyBinding",
            binding_resource(),
            binding(),
        ),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let existing = match api.get_opt(NAME).await {
            Ok(o) => o,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                wrote = false;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let obj: DynamicObject =
            serde_json::from_value(wanted.clone()).map_err(kube::Error::SerdeError)?;
        let result = match existing {
            None => api.create(&PostParams::default(), &obj).await.map(|_| ()),
            Some(found) => {
                if !labels::is_managed(found.metadata.labels.as_ref()) {
                    return Err(BoundaryError::NotOurs {
                        kind,
                        manager: labels::manager_of(&found.metadata),
                    });
                }
                let revision = found
                    .annotations()
                    .get(REVISION_ANNOTATION)
                    .and_then(|r| r.parse::<u32>().ok())
                    .unwrap_or(0);
                if revision >= REVISION {
                    // As new as ours, or newer (a newer client installed it).
                    continue;
                }
                // Replaced whole, at the version read: an older revision
                // of ours becomes exactly this one, whatever was added to it.
                let mut obj = obj;
                obj.metadata.resource_version = found.metadata.resource_version.clone();
                api.replace(NAME, &PostParams::default(), &obj)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 403 => wrote = false,
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(wrote)
}

/// Whether the boundary is in force in `namespace`: a dry-run create of a
/// probe object there, which only an active, bound policy refuses. The API
/// server picks a new policy up within a second or two, so this waits up to
/// `wait` for it.
pub async fn probe(client: &Client, namespace: &str, wait: Duration) -> Result<(), BoundaryError> {
    let api: Api<OCIRepository> = Api::namespaced(client.clone(), namespace);
    let mut obj = OCIRepository::new(
        "gitops-boundary-probe",
        OCIRepositorySpec {
            url: "oci://probe.invalid/probe".into(),
            interval: "1h".into(),
            ..Default::default()
        },
    );
    obj.metadata.labels = Some(BTreeMap::from([(
        PROBE_LABEL.to_string(),
        "true".to_string(),
    )]));
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        let why = match api
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &obj,
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains(PROBE_MESSAGE) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 403 => Some(format!(
                "you may not create Flux objects in it to check ({})",
                s.message
            )),
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BoundaryError::NotInForce {
                namespace: namespace.to_string(),
                why,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn confined_appliers_pass_and_everything_else_is_named() {
        let ok = doc(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n\
                      metadata: {name: a}\nspec: {serviceAccountName: gitops-sandbox, \
                      sourceRef: {kind: OCIRepository, name: x}, targetNamespace: sbx}\n",
        );
        assert_eq!(check(&ok, "sbx"), None);
        let cases = [
            (
                "kind: Kustomization\nspec: {sourceRef: {kind: OCIRepository, name: x}}",
                "without spec.serviceAccountName",
            ),
            (
                "kind: Kustomization\nspec: {serviceAccountName: default}",
                "\"default\"",
            ),
            (
                "kind: Kustomization\nspec: {serviceAccountName: gitops-sandbox, kubeConfig: {secretRef: {name: k}}}",
                "kubeConfig",
            ),
            (
                "kind: Kustomization\nspec: {serviceAccountName: gitops-sandbox, targetNamespace: kube-system}",
                "targetNamespace",
            ),
            (
                "kind: Kustomization\nspec: {serviceAccountName: gitops-sandbox, sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}}",
                "sourceRef.namespace",
            ),
        ];
        for (body, expect) in cases {
            let d = doc(&format!(
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\n{body}\n"
            ));
            let why = check(&d, "sbx").unwrap_or_default();
            assert!(why.contains(expect), "{body}: {why}");
        }
        let hr = |spec: &str| {
            doc(&format!(
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nspec: {spec}\n"
            ))
        };
        assert!(check(&hr("{serviceAccountName: gitops-sandbox, chart: {spec: {chart: c, sourceRef: {kind: HelmRepository, name: r, namespace: flux-system}}}}"), "sbx").is_some());
        assert!(
            check(
                &hr("{serviceAccountName: gitops-sandbox, storageNamespace: default}"),
                "sbx"
            )
            .is_some()
        );
        assert!(check(&hr("{serviceAccountName: gitops-sandbox, chartRef: {kind: OCIRepository, name: c, namespace: other}}"), "sbx").is_some());
        assert!(check(&hr("{}"), "sbx").is_some());
        assert_eq!(
            check(
                &hr(
                    "{serviceAccountName: gitops-sandbox, chartRef: {kind: OCIRepository, name: c}}"
                ),
                "sbx"
            ),
            None
        );
        for source in [
            "source.toolkit.fluxcd.io/v1\nkind: GitRepository",
            "source.toolkit.fluxcd.io/v1\nkind: OCIRepository",
            "source.toolkit.fluxcd.io/v1\nkind: HelmRepository",
            "notification.toolkit.fluxcd.io/v1\nkind: Receiver",
        ] {
            assert!(
                check(&doc(&format!("apiVersion: {source}\nspec: {{}}\n")), "sbx").is_some(),
                "{source}"
            );
        }
        // Not Flux: left to RBAC.
        assert_eq!(
            check(&doc("apiVersion: v1\nkind: ConfigMap\n"), "sbx"),
            None
        );
        assert_eq!(
            check(
                &doc("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"),
                "sbx"
            ),
            None
        );
    }

    #[test]
    fn the_policy_binds_to_sandboxes_and_prints_as_yaml() {
        let b = binding();
        assert_eq!(
            b["spec"]["matchResources"]["namespaceSelector"]["matchLabels"][labels::COMPONENT],
            "sandbox"
        );
        let yaml = manifest_yaml();
        assert!(yaml.contains("kind: ValidatingAdmissionPolicy\n"), "{yaml}");
        assert!(
            yaml.contains("kind: ValidatingAdmissionPolicyBinding\n"),
            "{yaml}"
        );
        let docs = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&yaml).unwrap();
        assert_eq!(docs, vec![policy(), binding()]);
    }
}
