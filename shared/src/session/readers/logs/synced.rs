//! Whose pods are the session's in a vcluster sandbox. Flux applies the
//! session's workloads into the virtual cluster; vcluster runs their pods
//! in the sandbox's host namespace, as copies it made (label
//! `vcluster.loft.sh/managed-by: <vcluster>`) that name the virtual pod
//! and its owners in annotations. A copy is the session's when its virtual
//! pod, or the chain its owners start (ReplicaSet → Deployment, Job →
//! CronJob), is in the session Kustomization's inventory: the objects Flux
//! applied for it. The logs are then read from the host (`pods/log`),
//! where the pods run, with no route into the virtual cluster needed.

use std::collections::BTreeSet;

use crate::workloads::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

/// The label vcluster puts on what it synced to the host: its name.
pub const MANAGED_BY: &str = "vcluster.loft.sh/managed-by";
const NAMESPACE: &str = "vcluster.loft.sh/namespace";
const NAME: &str = "vcluster.loft.sh/name";
const OWNERS: &str = "vcluster.loft.sh/owner-references";

/// The label selector of the pods vcluster `vcluster` synced to the host.
pub fn selector(vcluster: &str) -> String {
    format!("{MANAGED_BY}={vcluster}")
}

/// A host pod as vcluster describes its virtual pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncedPod {
    /// The virtual pod's namespace and name.
    pub namespace: String,
    pub name: String,
    /// Its owners in the virtual cluster.
    pub owners: Vec<OwnerReference>,
}

/// What vcluster recorded on a host pod it synced; `None` for any other pod.
pub fn synced_pod(pod: &Pod, vcluster: &str) -> Option<SyncedPod> {
    if pod.labels().get(MANAGED_BY).map(String::as_str) != Some(vcluster) {
        return None;
    }
    let a = pod.annotations();
    Some(SyncedPod {
        namespace: a.get(NAMESPACE).filter(|n| !n.is_empty())?.clone(),
        name: a.get(NAME).filter(|n| !n.is_empty())?.clone(),
        owners: a
            .get(OWNERS)
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
    })
}

/// An object Flux applied, from an inventory id
/// `<namespace>_<name>_<group>_<kind>` (the core group is empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Applied {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub kind: String,
}

/// The objects of a Kustomization's inventory ids (malformed ids skipped).
pub fn applied(ids: &[String]) -> BTreeSet<Applied> {
    ids.iter()
        .filter_map(|id| {
            let parts: Vec<&str> = id.split('_').collect();
            if parts.len() < 4 {
                return None;
            }
            Some(Applied {
                namespace: parts[0].to_string(),
                name: parts[1..parts.len() - 2].join("_"),
                group: parts[parts.len() - 2].to_string(),
                kind: parts[parts.len() - 1].to_string(),
            })
        })
        .collect()
}

/// The name a controller gives what it makes: `<owner>-<suffix>` (a
/// Deployment's ReplicaSets, a CronJob's Jobs) made by `owner`.
fn made_by(name: &str, owner: &str) -> bool {
    name.strip_prefix(owner)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| {
            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Whether the synced pod is one of the session's workloads: the virtual
/// pod itself, or its controller, or the controller's maker, is in the
/// inventory.
pub fn is_sessions(pod: &SyncedPod, applied: &BTreeSet<Applied>) -> bool {
    let has = |group: &str, kind: &str, name: &str| {
        applied.iter().any(|a| {
            a.namespace == pod.namespace && a.group == group && a.kind == kind && a.name == name
        })
    };
    let controller = pod
        .owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(pod.owners.first());
    let Some(owner) = controller else {
        return has("", "Pod", &pod.name);
    };
    let group = owner.api_version.split_once('/').map_or("", |(g, _)| g);
    if has(group, &owner.kind, &owner.name) {
        return true;
    }
    // What made the controller: a Deployment its ReplicaSets, a CronJob its Jobs.
    let maker = match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => ("apps", "Deployment"),
        ("batch", "Job") => ("batch", "CronJob"),
        _ => return false,
    };
    applied.iter().any(|a| {
        a.namespace == pod.namespace
            && (a.group.as_str(), a.kind.as_str()) == maker
            && made_by(&owner.name, &a.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn host_pod(vcluster: &str, annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-7d4b9-xk2lp-x-default-x-dev".into());
        pod.metadata.labels = Some(BTreeMap::from([(MANAGED_BY.into(), vcluster.into())]));
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    fn owned_by(api_version: &str, kind: &str, name: &str) -> SyncedPod {
        SyncedPod {
            namespace: "default".into(),
            name: format!("{name}-abcde"),
            owners: vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_synced_pod_is_read_from_vclusters_annotations() {
        let owners = r#"[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d4b9","uid":"u","controller":true}]"#;
        let pod = host_pod(
            "dev",
            &[
                (NAMESPACE, "default"),
                (NAME, "web-7d4b9-xk2lp"),
                (OWNERS, owners),
            ],
        );
        let synced = synced_pod(&pod, "dev").unwrap();
        assert_eq!(synced.namespace, "default");
        assert_eq!(synced.name, "web-7d4b9-xk2lp");
        assert_eq!(synced.owners[0].name, "web-7d4b9");
        assert_eq!(synced_pod(&pod, "other"), None, "another vcluster's pod");
        assert_eq!(
            synced_pod(&host_pod("dev", &[(NAME, "x")]), "dev"),
            None,
            "no virtual namespace: not a synced pod"
        );
    }

    #[test]
    fn pods_of_applied_workloads_are_the_sessions() {
        let applied = applied(&[
            "default_web_apps_Deployment".to_string(),
            "default_db_apps_StatefulSet".to_string(),
            "jobs_nightly_batch_CronJob".to_string(),
            "default_lone__Pod".to_string(),
            "default_web__Service".to_string(),
            "_web_rbac.authorization.k8s.io_ClusterRole".to_string(),
            "bad".to_string(),
        ]);
        assert_eq!(applied.len(), 6);
        assert!(is_sessions(
            &owned_by("apps/v1", "ReplicaSet", "web-7d4b9c"),
            &applied
        ));
        assert!(is_sessions(
            &owned_by("apps/v1", "StatefulSet", "db"),
            &applied
        ));
        let mut job = owned_by("batch/v1", "Job", "nightly-29384756");
        job.namespace = "jobs".into();
        assert!(is_sessions(&job, &applied));
        // Not the session's: another Deployment's ReplicaSet (even one whose
        // name starts like it), the same name in another namespace.
        assert!(!is_sessions(
            &owned_by("apps/v1", "ReplicaSet", "webapp-7d4b9c"),
            &applied
        ));
        assert!(!is_sessions(
            &owned_by("apps/v1", "ReplicaSet", "web-7d4b9c-x-y"),
            &applied
        ));
        let mut elsewhere = owned_by("apps/v1", "ReplicaSet", "web-7d4b9c");
        elsewhere.namespace = "other".into();
        assert!(!is_sessions(&elsewhere, &applied));
        // A bare pod: by its own name.
        let bare = |name: &str| SyncedPod {
            namespace: "default".into(),
            name: name.into(),
            owners: vec![],
        };
        assert!(is_sessions(&bare("lone"), &applied));
        assert!(!is_sessions(&bare("stray"), &applied));
    }
}
