//! What a sync changed, per object: created and deleted from the
//! Kustomization's inventory before and after, configured from the
//! controller's change-set event for the revision, the rest unchanged.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::flux::InventoryEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
        }
    }
}

/// One object's fate in a sync.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// `Kind/namespace/name` (or `Kind/name` when cluster-scoped).
    pub object: String,
    pub action: Action,
}

/// `<namespace>_<name>_<group>_<kind>` → `Kind/namespace/name`.
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

/// Objects the controller reported as `configured`/`created` for this sync,
/// from its `Progressing` events (`Kind/ns/name configured`, one per line).
pub fn parse_change_set(messages: &[String]) -> BTreeSet<(String, Action)> {
    let mut set = BTreeSet::new();
    for message in messages {
        for line in message.lines() {
            let mut words = line.split_whitespace();
            let (Some(object), Some(verb)) = (words.next(), words.next()) else {
                continue;
            };
            let action = match verb {
                "configured" => Action::Configured,
                "created" => Action::Created,
                "deleted" => Action::Deleted,
                _ => continue,
            };
            set.insert((object.to_string(), action));
        }
    }
    set
}

/// Per-object changes between two inventories.
pub fn changes(
    before: &[InventoryEntry],
    after: &[InventoryEntry],
    events: &[String],
) -> Vec<Change> {
    let before: BTreeSet<String> = before.iter().map(|e| display_id(&e.id)).collect();
    let after: BTreeSet<String> = after.iter().map(|e| display_id(&e.id)).collect();
    let reported = parse_change_set(events);
    let before: BTreeSet<&str> = before.iter().map(String::as_str).collect();
    let after: BTreeSet<&str> = after.iter().map(String::as_str).collect();
    assemble(&before, &after, |o| {
        if reported.contains(&(o.to_string(), Action::Configured)) {
            Action::Configured
        } else {
            Action::Unchanged
        }
    })
}

/// Created (in `after` only), deleted (in `before` only), and for objects in
/// both what `kept` says; sorted by action, then object.
fn assemble<'a>(
    before: &BTreeSet<&'a str>,
    after: &BTreeSet<&'a str>,
    kept: impl Fn(&str) -> Action,
) -> Vec<Change> {
    let mut out: Vec<Change> = after
        .iter()
        .map(|o| Change {
            object: o.to_string(),
            action: if before.contains(o) {
                kept(o)
            } else {
                Action::Created
            },
        })
        .chain(before.difference(after).map(|o| Change {
            object: o.to_string(),
            action: Action::Deleted,
        }))
        .collect();
    out.sort_by(|a, b| {
        a.action
            .cmp(&b.action)
            .then_with(|| a.object.cmp(&b.object))
    });
    out
}

/// The change-set messages kustomize-controller recorded for `revision`.
pub async fn applied_events(
    client: &Client,
    namespace: &str,
    kustomization: &str,
    revision: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = events.list(&events_of(kustomization)).await else {
        return Vec::new();
    };
    for_revision(list.items, revision, since)
}

fn events_of(kustomization: &str) -> ListParams {
    ListParams::default().fields(&format!(
        "involvedObject.kind=Kustomization,involvedObject.name={kustomization}"
    ))
}

/// A Kustomization's events as they are made, watched from before a sync
/// asks Flux to reconcile: its change-set event is at hand when the
/// controller says it is checking health, without a list then.
pub struct EventsFeed {
    seen: std::sync::Arc<std::sync::Mutex<Vec<KubeEvent>>>,
    synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    namespace: String,
    kustomization: String,
}

impl EventsFeed {
    pub fn start(client: &Client, namespace: &str, kustomization: &str) -> EventsFeed {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let api: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!(
            "involvedObject.kind=Kustomization,involvedObject.name={kustomization}"
        ));
        let (s, y) = (seen.clone(), synced.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(e) = stream.next().await {
                match e {
                    Ok(watcher::Event::Apply(ev) | watcher::Event::InitApply(ev)) => {
                        if let Ok(mut v) = s.lock() {
                            v.push(ev);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        y.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
        EventsFeed {
            seen,
            synced,
            task,
            client: client.clone(),
            namespace: namespace.to_string(),
            kustomization: kustomization.to_string(),
        }
    }

    fn matching(&self, revision: &str, since: chrono::DateTime<chrono::Utc>) -> Vec<String> {
        let seen = self.seen.lock().map(|v| v.clone()).unwrap_or_default();
        for_revision(seen, revision, since)
    }

    /// The change-set messages for `revision`: from the watch when they are
    /// there, else (not arrived yet, or no change to report) from a list.
    pub async fn applied(
        &self,
        revision: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Vec<String> {
        if self.synced.load(std::sync::atomic::Ordering::SeqCst) {
            let found = self.matching(revision, since);
            if !found.is_empty() {
                return found;
            }
        }
        applied_events(
            &self.client,
            &self.namespace,
            &self.kustomization,
            revision,
            since,
        )
        .await
    }
}

impl Drop for EventsFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The change-set messages among `events` for `revision` (tagged with it,
/// or, untagged, made since `since`).
fn for_revision(
    events: Vec<KubeEvent>,
    revision: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let since_ms = since.timestamp_millis() - 1000;
    events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Progressing"))
        .filter(|e| {
            let tagged = e
                .annotations()
                .iter()
                .find(|(k, _)| k.ends_with("/revision"))
                .map(|(_, v)| v == revision);
            let recent = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
                .is_some_and(|t| t >= since_ms);
            tagged.unwrap_or(recent)
        })
        .filter_map(|e| e.message)
        .collect()
}

/// Objects a Helm release manages (helm-controller labels them), by
/// `Kind/namespace/name`, with their resource versions.
pub async fn helm_objects(
    client: &Client,
    namespace: &str,
    release: &str,
) -> std::collections::BTreeMap<String, String> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
    let selector = ListParams::default().labels(&format!("helm.toolkit.fluxcd.io/name={release}"));
    let mut out = std::collections::BTreeMap::new();
    macro_rules! collect {
        ($($kind:ty),*) => {$(
            let api: Api<$kind> = Api::namespaced(client.clone(), namespace);
            if let Ok(list) = api.list(&selector).await {
                for o in list {
                    let kind = <$kind as kube::Resource>::kind(&());
                    out.insert(format!("{kind}/{namespace}/{}", o.name_any()), o.resource_version().unwrap_or_default());
                }
            }
        )*};
    }
    collect!(
        ConfigMap,
        Secret,
        Service,
        ServiceAccount,
        Deployment,
        StatefulSet,
        DaemonSet,
        Job,
        CronJob
    );
    out
}

/// Changes between two snapshots of objects and their resource versions.
pub fn compare_versions(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<Change> {
    let b: BTreeSet<&str> = before.keys().map(String::as_str).collect();
    let a: BTreeSet<&str> = after.keys().map(String::as_str).collect();
    assemble(&b, &a, |o| {
        if before.get(o) == after.get(o) {
            Action::Unchanged
        } else {
            Action::Configured
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(ids: &[&str]) -> Vec<InventoryEntry> {
        ids.iter()
            .map(|id| InventoryEntry {
                id: id.to_string(),
                v: "v1".into(),
            })
            .collect()
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

    #[test]
    fn changes_combine_inventories_and_the_change_set() {
        let before = inv(&[
            "dev_a__ConfigMap",
            "dev_b__ConfigMap",
            "dev_gone__ConfigMap",
        ]);
        let after = inv(&["dev_a__ConfigMap", "dev_b__ConfigMap", "dev_new__ConfigMap"]);
        let events = vec!["ConfigMap/dev/a configured\nConfigMap/dev/new created".to_string()];
        let got = changes(&before, &after, &events);
        let show: Vec<String> = got
            .iter()
            .map(|c| format!("{} {}", c.object, c.action.as_str()))
            .collect();
        assert_eq!(
            show,
            [
                "ConfigMap/dev/new created",
                "ConfigMap/dev/a configured",
                "ConfigMap/dev/b unchanged",
                "ConfigMap/dev/gone deleted"
            ]
        );
    }
}
