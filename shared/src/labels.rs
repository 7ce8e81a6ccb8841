//! The suite's labels and annotations, defined once.
//!
//! Only objects carrying [`MANAGED_BY`] = [`MANAGER`] are ever modified or
//! deleted by the suite.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

/// The prefix of every label and annotation key the suite owns.
pub const PREFIX: &str = "gitops.kubectl.dev";

/// The standard Kubernetes label naming the tool that manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Our value for [`MANAGED_BY`].
pub const MANAGER: &str = "kubectl-gitops";

/// Label: the session that created an object.
pub const SESSION: &str = "gitops.kubectl.dev/session";
/// Label: the sandbox an object belongs to.
pub const SANDBOX: &str = "gitops.kubectl.dev/sandbox";
/// Label on a session's ephemeral sandbox: the namespace of the Lease of
/// the session that made it (with [`SESSION`], the Lease's name, and the
/// [`OWNER`] annotation, the record that lets cleanup remove only a sandbox
/// the session being cleaned up made).
pub const SESSION_NAMESPACE: &str = "gitops.kubectl.dev/session-namespace";
/// Label: what part of the suite an object is (`session`, `sandbox`, ...).
pub const COMPONENT: &str = "gitops.kubectl.dev/component";

/// Label: a sandbox's isolation (`namespace`, `vcluster`, `kubeconfig`).
pub const ISOLATION: &str = "gitops.kubectl.dev/isolation";

/// Annotation: who created an object (`user@host`).
pub const OWNER: &str = "gitops.kubectl.dev/owner";
/// Annotation: when an object may be garbage-collected (RFC 3339).
pub const EXPIRES_AT: &str = "gitops.kubectl.dev/expires-at";
/// Annotation: the suite version that created an object.
pub const CREATED_BY: &str = "gitops.kubectl.dev/created-by";

/// Who is running this command: `user@host` (see [`crate::process::owner`]).
pub fn owner() -> String {
    crate::process::owner()
}

/// The label selector matching everything the suite created.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// The label selector matching the suite's objects of one component.
pub fn component_selector(component: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{COMPONENT}={component}")
}

/// The labels every object created by the suite carries.
pub fn managed(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (COMPONENT.to_string(), component.to_string()),
    ])
}

/// Whether an object's labels say the suite created it.
pub fn is_managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == MANAGER)
}

/// The labels Flux's kustomize-controller puts on what it applies.
pub const KS_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const KS_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// The label Flux's helm-controller puts on what it installs.
pub const HR_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const HR_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";

/// Who manages an object, from its labels (Flux's, then
/// `app.kubernetes.io/managed-by`), else its field managers.
pub fn manager_of(meta: &ObjectMeta) -> String {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty())
    };
    for (name, namespace, kind) in [
        (KS_NAME, KS_NAMESPACE, "Kustomization"),
        (HR_NAME, HR_NAMESPACE, "HelmRelease"),
    ] {
        if let Some(n) = label(name) {
            let ns = label(namespace).map_or(String::new(), |ns| format!("{ns}/"));
            return format!("Flux (applied by {kind} {ns}{n})");
        }
    }
    if let Some(m) = label(MANAGED_BY) {
        if m == MANAGER {
            return match label(SESSION) {
                Some(s) => format!("kubectl-gitops session {s}"),
                None => match label(COMPONENT) {
                    Some(c) => format!("kubectl-gitops (a {c}, not a session's)"),
                    None => "kubectl-gitops (not a session's)".into(),
                },
            };
        }
        return format!("{m} ({} label)", MANAGED_BY);
    }
    let mut managers: Vec<&str> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|m| m.manager.as_deref())
        .filter(|m| *m != crate::kubeapi::FIELD_MANAGER)
        .collect();
    managers.dedup();
    if managers.is_empty() {
        "someone else (no label or field manager says who)".into()
    } else {
        format!("field manager {}", managers.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_prefix() {
        for key in [
            SESSION,
            SESSION_NAMESPACE,
            SANDBOX,
            COMPONENT,
            ISOLATION,
            OWNER,
            EXPIRES_AT,
            CREATED_BY,
        ] {
            assert!(key.starts_with(PREFIX), "{key}");
        }
    }

    #[test]
    fn managed_labels_are_recognised() {
        let labels = managed("session");
        assert!(is_managed(Some(&labels)));
        assert!(!is_managed(None));
        let foreign = BTreeMap::from([(MANAGED_BY.to_string(), "helm".to_string())]);
        assert!(!is_managed(Some(&foreign)));
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=kubectl-gitops"
        );
    }
}
