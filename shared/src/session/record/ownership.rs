//! A session writes and deletes only what it created: any object of the
//! name it wants (its OCIRepository, Kustomization or HelmRelease, SOPS
//! Secret, Lease, sandbox namespace) that lacks the suite's labels for this
//! session is refused before anything is written, in words that name the
//! object and who manages it.
//!
//! [`foreign`] is the rule (pure). [`apply`] is the session's only way to
//! write its Flux objects and Secrets: it reads the object first and
//! refuses a foreign one; it creates with a server-side apply that does not
//! force (a same-named object made by someone else meanwhile conflicts
//! instead of being taken over) and updates with one that forces only with
//! the UID of the object it checked as a precondition.

use std::fmt;

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kubeapi::{self, FIELD_MANAGER};
use crate::labels;
pub use crate::labels::manager_of;

/// An object of a name the session wants that the session did not create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// `Kustomization`, `OCIRepository`, `Secret`, `Lease`, `Namespace`…
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    /// Who manages it, as far as its labels and field managers say.
    pub manager: String,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        write!(
            f,
            "{} {at} already exists and was not created by this session (it is managed by {}); \
             nothing was changed. Pick another session name with --name",
            self.kind, self.manager
        )
    }
}

/// The label Flux's kustomize-controller puts on what it applies.
/// Whether an object carries the suite's labels for `session`.
pub fn owned_by(meta: &ObjectMeta, session: &str) -> bool {
    labels::is_managed(meta.labels.as_ref())
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SESSION))
            .is_some_and(|s| s == session)
}

/// `None` when the object is the session's own, else what to tell the user.
pub fn foreign(kind: &str, meta: &ObjectMeta, session: &str) -> Option<Foreign> {
    if owned_by(meta, session) {
        return None;
    }
    Some(Foreign {
        kind: kind.to_string(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        manager: manager_of(meta),
    })
}

/// The session that made an ephemeral sandbox, as recorded on its
/// namespace (and as read from a Lease being cleaned up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxMaker<'a> {
    /// The namespace of the session's Lease.
    pub namespace: &'a str,
    /// The session (its Lease's name).
    pub session: &'a str,
    /// `user@host` who ran it (the Lease's owner).
    pub owner: &'a str,
}

/// The labels that record, on an ephemeral sandbox, the session that made
/// it (the owner goes into the sandbox's owner annotation).
pub fn sandbox_record(maker: &SandboxMaker<'_>) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        (labels::SESSION.to_string(), maker.session.to_string()),
        (
            labels::SESSION_NAMESPACE.to_string(),
            maker.namespace.to_string(),
        ),
    ])
}

/// Whether the sandbox namespace `ns` was made by `maker`: a sandbox of the
/// suite whose record names the same Lease namespace, session and owner. A
/// Lease written elsewhere (or by someone else) naming the sandbox does not
/// match, so its cleanup leaves the sandbox alone.
pub fn sandbox_made_by(ns: &ObjectMeta, maker: &SandboxMaker<'_>) -> bool {
    let label = |k: &str| {
        ns.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let owner = ns
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::OWNER))
        .map(String::as_str);
    labels::is_managed(ns.labels.as_ref())
        && label(labels::COMPONENT) == Some("sandbox")
        && !maker.session.is_empty()
        && !maker.owner.is_empty()
        && label(labels::SESSION) == Some(maker.session)
        && label(labels::SESSION_NAMESPACE) == Some(maker.namespace)
        && owner == Some(maker.owner)
}

/// A write the session refused or could not make.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("{0}")]
    Foreign(Foreign),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Refuses the object `name` if it exists and is not the session's.
pub async fn check<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    session: &str,
) -> Result<Option<K>, OwnershipError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let existing = api.get_opt(name).await?;
    if let Some(f) = existing
        .as_ref()
        .and_then(|o| foreign(kind, o.meta(), session))
    {
        return Err(OwnershipError::Foreign(f));
    }
    Ok(existing)
}

/// Server-side applies the session's object `name`, only if it is absent
/// or the session's own (see the module's documentation).
pub async fn apply<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    obj: &K,
    session: &str,
) -> Result<K, OwnershipError>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    for _ in 0..3 {
        match check(api, kind, name, session).await? {
            Some(existing) => {
                let mut ours = obj.clone();
                ours.meta_mut().uid = existing.meta().uid.clone();
                match kubeapi::apply(api, name, &ours).await {
                    // Deleted since it was read (the API server answers 409
                    // "uid mismatch"), or deleted and made again (422: the
                    // UID differs): look again.
                    Err(kube::Error::Api(s))
                        if s.code == 409
                            || s.code == 404
                            || (s.code == 422 && s.message.contains("metadata.uid")) =>
                    {
                        continue;
                    }
                    r => return Ok(r?),
                }
            }
            None => {
                let params = PatchParams::apply(FIELD_MANAGER);
                match api.patch(name, &params, &Patch::Apply(obj)).await {
                    // Made by someone else since it was read: look again.
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    r => return Ok(r?),
                }
            }
        }
    }
    // Still changing under us: whoever changes it, it is not for us to fight.
    match check(api, kind, name, session).await? {
        Some(o) => Ok(o),
        None => Err(OwnershipError::Foreign(Foreign {
            kind: kind.to_string(),
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: name.to_string(),
            manager: "someone else (it was made and deleted again while the session wrote it)"
                .into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    fn meta(labels: &[(&str, &str)], managers: &[(&str, Option<&str>)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("apps".into()),
            namespace: Some("flux-system".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            managed_fields: Some(
                managers
                    .iter()
                    .map(|(m, sub)| ManagedFieldsEntry {
                        manager: Some(m.to_string()),
                        subresource: sub.map(str::to_string),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_sessions_own_labels_make_an_object_its_own() {
        let ours = meta(
            &[
                (labels::MANAGED_BY, labels::MANAGER),
                (labels::SESSION, "apps"),
            ],
            &[],
        );
        assert_eq!(foreign("Kustomization", &ours, "apps"), None);
        // The suite's, but another session's.
        let f = foreign("Kustomization", &ours, "web").unwrap();
        assert_eq!(f.manager, "kubectl-gitops session apps");
        // The suite's sandbox objects are not a session's either.
        let sandbox = meta(
            &[
                (labels::MANAGED_BY, labels::MANAGER),
                (labels::COMPONENT, "sandbox"),
            ],
            &[],
        );
        assert!(
            foreign("Namespace", &sandbox, "apps")
                .unwrap()
                .manager
                .contains("a sandbox")
        );
        // A session label alone (without managed-by) is not enough.
        let half = meta(&[(labels::SESSION, "apps")], &[("kubectl", None)]);
        assert!(foreign("Kustomization", &half, "apps").is_some());
    }

    #[test]
    fn a_sandbox_is_removed_only_by_the_session_recorded_on_it() {
        let maker = SandboxMaker {
            namespace: "run-web-1a2b3c",
            session: "run-web-1a2b3c",
            owner: "ann@laptop",
        };
        let mut l = labels::managed("sandbox");
        l.extend(sandbox_record(&maker));
        let ns = ObjectMeta {
            name: Some("run-web-1a2b3c".into()),
            labels: Some(l.clone()),
            annotations: Some(BTreeMap::from([(
                labels::OWNER.to_string(),
                "ann@laptop".to_string(),
            )])),
            ..Default::default()
        };
        assert!(sandbox_made_by(&ns, &maker));
        // A forged Lease of the same name in a namespace the attacker controls.
        let forged = SandboxMaker {
            namespace: "mallory",
            ..maker.clone()
        };
        assert!(!sandbox_made_by(&ns, &forged));
        // Another user's Lease of that name and namespace.
        let other = SandboxMaker {
            owner: "bob@ci",
            ..maker.clone()
        };
        assert!(!sandbox_made_by(&ns, &other));
        // A sandbox without the record (made by `gitops-sandbox create`, or
        // by a version before the record) is never a session's to remove.
        let mut bare = ns.clone();
        bare.labels = Some(labels::managed("sandbox"));
        assert!(!sandbox_made_by(&bare, &maker));
        // Nor is a namespace that is not a sandbox.
        let mut plain = ns.clone();
        plain.labels = Some(sandbox_record(&maker));
        assert!(!sandbox_made_by(&plain, &maker));
        let nobody = SandboxMaker { owner: "", ..maker };
        let mut unowned = ns;
        unowned.annotations = None;
        assert!(!sandbox_made_by(&unowned, &nobody));
    }

    #[test]
    fn the_refusal_names_the_object_and_who_manages_it() {
        let by_flux = meta(
            &[
                (labels::KS_NAME, "flux-system"),
                (labels::KS_NAMESPACE, "flux-system"),
                (labels::MANAGED_BY, "flux"),
            ],
            &[("kustomize-controller", None)],
        );
        let f = foreign("Kustomization", &by_flux, "apps").unwrap();
        assert_eq!(
            f.manager,
            "Flux (applied by Kustomization flux-system/flux-system)"
        );
        let text = f.to_string();
        assert!(
            text.starts_with("Kustomization flux-system/apps already exists")
                && text.contains("nothing was changed")
                && text.contains("--name"),
            "{text}"
        );
        let by_helm = meta(&[(labels::MANAGED_BY, "Helm")], &[]);
        assert_eq!(
            manager_of(&by_helm),
            "Helm (app.kubernetes.io/managed-by label)"
        );
        // No labels: the field managers of the object itself (not of its status).
        let by_hand = meta(
            &[],
            &[
                ("kubectl-client-side-apply", None),
                ("kustomize-controller", Some("status")),
            ],
        );
        assert_eq!(
            manager_of(&by_hand),
            "field manager kubectl-client-side-apply"
        );
        assert!(manager_of(&meta(&[], &[])).starts_with("someone else"));
        let ns = ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        };
        assert!(
            foreign("Namespace", &ns, "team-a")
                .unwrap()
                .to_string()
                .starts_with("Namespace team-a already exists")
        );
    }
}
