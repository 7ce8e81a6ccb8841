//! What a sync changed, per object: created and deleted from the
//! Kustomization's inventory before and after, configured from the
//! controller's change-set event for the revision, the rest unchanged.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::flux::{self, InventoryEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    /// Applied again; whether it changed is unknown (no change-set event:
    /// see [`CHANGE_SET_WAIT`]).
    Applied,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Applied => "applied",
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
    let before: BTreeSet<String> = before.iter().map(|e| flux::display_id(&e.id)).collect();
    let after: BTreeSet<String> = after.iter().map(|e| flux::display_id(&e.id)).collect();
    let reported = parse_change_set(events);
    let before: BTreeSet<&str> = before.iter().map(String::as_str).collect();
    let after: BTreeSet<&str> = after.iter().map(String::as_str).collect();
    // No change set: the controller's event recorder did not record one.
    let known = !reported.is_empty();
    assemble(&before, &after, |o| {
        if reported.contains(&(o.to_string(), Action::Configured)) {
            Action::Configured
        } else if known {
            Action::Unchanged
        } else {
            Action::Applied
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

/// How long a sync waits, once Flux has applied its revision, for the
/// controller's change-set event to arrive on the feed. kustomize-controller
/// records it right after the apply, before its health check; its event
/// recorder sends it asynchronously, so it can trail the status by a few
/// milliseconds. It may never come: a revision that changed no object has
/// none, and the recorder drops events beyond 25 per Kustomization (then
/// lets one through every 5 minutes), so a long session's saves mostly have
/// none. Then the objects kept are reported as `applied`, and the next sync
/// does not wait (it takes a change set only if it is already there).
pub const CHANGE_SET_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Default)]
struct FeedState {
    /// Events listed when the watch started.
    initial: Vec<KubeEvent>,
    /// Events created or updated since: this sync's.
    fresh: Vec<KubeEvent>,
    /// The initial list is done and the watch runs.
    synced: bool,
    /// The version of each event seen (by uid): a list made again after
    /// the watch broke brings back events already seen, not fresh ones.
    versions: std::collections::HashMap<String, String>,
}

impl FeedState {
    fn seen(&mut self, ev: KubeEvent) {
        let uid = ev.metadata.uid.clone().unwrap_or_default();
        let version = ev.metadata.resource_version.clone().unwrap_or_default();
        if self.versions.get(&uid) == Some(&version) {
            return;
        }
        self.versions.insert(uid, version);
        if self.synced {
            self.fresh.push(ev);
        } else {
            self.initial.push(ev);
        }
    }
}

/// A Kustomization's events as they are made, watched from before a sync
/// asks Flux to reconcile: its change-set event is at hand when the
/// controller says it is checking health, without a list then.
///
/// What the watch delivers after its initial list was made or updated
/// during this sync. That matters: the Kubernetes event recorder folds an
/// event identical to an earlier one (the same objects configured again)
/// into it, raising its count but keeping the first one's annotations, so
/// the revision it is tagged with is an earlier one.
pub struct EventsFeed {
    state: std::sync::Arc<std::sync::Mutex<FeedState>>,
    arrived: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    namespace: String,
    kustomization: String,
}

impl EventsFeed {
    pub fn start(client: &Client, namespace: &str, kustomization: &str) -> EventsFeed {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let state = std::sync::Arc::new(std::sync::Mutex::new(FeedState::default()));
        let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
        let (watch_client, watch_namespace) = (client.clone(), namespace.to_string());
        let config = watcher::Config::default().fields(&format!(
            "involvedObject.kind=Kustomization,involvedObject.name={kustomization}"
        ));
        let (st, notify) = (state.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(crate::kubeapi::watch::<KubeEvent>(
                watch_client,
                Some(&watch_namespace),
                config
            ));
            while let Some(e) = stream.next().await {
                let Ok(mut s) = st.lock() else { return };
                match e {
                    Ok(watcher::Event::Apply(ev) | watcher::Event::InitApply(ev)) => s.seen(ev),
                    Ok(watcher::Event::InitDone) => s.synced = true,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!("events watch: {e}");
                        continue;
                    }
                }
                drop(s);
                notify.notify_waiters();
            }
        });
        EventsFeed {
            state,
            arrived,
            task,
            client: client.clone(),
            namespace: namespace.to_string(),
            kustomization: kustomization.to_string(),
        }
    }

    /// `Some(messages)` once the watch runs (possibly none yet).
    fn matching(&self, revision: &str) -> Option<Vec<String>> {
        let s = self.state.lock().ok()?;
        s.synced.then(|| from_feed(&s.initial, &s.fresh, revision))
    }

    /// The change-set messages for `revision`: from the watch, waiting at
    /// most `wait` for them to arrive (none: the revision changed nothing);
    /// from a list when the watch is not running.
    pub async fn applied(
        &self,
        revision: &str,
        since: chrono::DateTime<chrono::Utc>,
        wait: std::time::Duration,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check, so an event in between is not missed.
            arrived.as_mut().enable();
            if let Some(found) = self.matching(revision)
                && !found.is_empty()
            {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break;
            }
        }
        if let Some(found) = self.matching(revision) {
            return found;
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

/// The revision a Flux event is tagged with, if any.
fn tag(e: &KubeEvent) -> Option<&str> {
    e.annotations()
        .iter()
        .find(|(k, _)| k.ends_with("/revision"))
        .map(|(_, v)| v.as_str())
}

/// Change-set messages for `revision` from a feed: any made or updated
/// since it started (an update keeps an earlier revision's tag), and
/// those listed at its start that are tagged with `revision`.
fn from_feed(initial: &[KubeEvent], fresh: &[KubeEvent], revision: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let listed = initial.iter().filter(|e| tag(e) == Some(revision));
    for e in listed.chain(fresh) {
        if e.reason.as_deref() == Some("Progressing")
            && let Some(m) = &e.message
            && !parse_change_set(std::slice::from_ref(m)).is_empty()
            && !out.contains(m)
        {
            out.push(m.clone());
        }
    }
    out
}

/// The change-set messages among `events` for `revision`: tagged with it,
/// or last recorded since `since` (untagged, or folded into an event of an
/// earlier revision; event times have whole seconds).
fn for_revision(
    events: Vec<KubeEvent>,
    revision: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let since_ms = since.timestamp_millis();
    let since_second = since_ms - since_ms.rem_euclid(1000);
    events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Progressing"))
        .filter(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()));
            match tag(e) {
                Some(t) if t == revision => true,
                // Untagged: made around the sync (1 s of clock skew).
                None => at.is_some_and(|t| t >= since_ms - 1000),
                // Another revision's, recorded again during this sync.
                Some(_) => at.is_some_and(|t| t >= since_second) && e.count.unwrap_or(1) > 1,
            }
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
            // Names and resource versions only: metadata, not whole objects.
            if let Ok(list) = api.list_metadata(&selector).await {
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

    fn event(revision: Option<&str>, message: &str, at: &str, count: i32) -> KubeEvent {
        let mut e = KubeEvent {
            reason: Some("Progressing".into()),
            message: Some(message.into()),
            count: Some(count),
            last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                at.parse().unwrap(),
            )),
            ..Default::default()
        };
        if let Some(r) = revision {
            e.annotations_mut()
                .insert("kustomize.toolkit.fluxcd.io/revision".into(), r.into());
        }
        e
    }

    #[test]
    fn a_relist_of_the_feed_brings_back_no_fresh_events_but_updates_are_fresh() {
        let with = |uid: &str, rv: &str| {
            let mut e = event(
                Some("A"),
                "ConfigMap/dev/a configured",
                "2026-12-04T10:00:00Z",
                1,
            );
            e.metadata.uid = Some(uid.into());
            e.metadata.resource_version = Some(rv.into());
            e
        };
        let mut feed = FeedState::default();
        feed.seen(with("1", "10"));
        feed.synced = true;
        // The watch broke and listed again: the same event, the same version.
        feed.seen(with("1", "10"));
        assert_eq!((feed.initial.len(), feed.fresh.len()), (1, 0));
        // Folded into: a new version of it.
        feed.seen(with("1", "11"));
        feed.seen(with("2", "12"));
        assert_eq!((feed.initial.len(), feed.fresh.len()), (1, 2));
    }

    #[test]
    fn an_event_folded_into_an_earlier_revisions_still_counts_for_this_sync() {
        // The recorder folded "cm configured" of revision B into A's event.
        let folded = event(
            Some("A"),
            "ConfigMap/dev/cm configured",
            "2026-12-04T10:00:05Z",
            2,
        );
        let old = event(
            Some("A"),
            "ConfigMap/dev/old configured",
            "2026-12-04T09:00:00Z",
            1,
        );
        let other = event(None, "Health check passed", "2026-12-04T10:00:05Z", 1);
        // From the feed: what arrived after its start is this sync's.
        assert_eq!(
            from_feed(
                std::slice::from_ref(&old),
                &[folded.clone(), other.clone()],
                "B"
            ),
            vec!["ConfigMap/dev/cm configured"]
        );
        // Listed at the start and tagged with the revision: this sync's too.
        let tagged = event(
            Some("B"),
            "ConfigMap/dev/x created",
            "2026-12-04T10:00:05Z",
            1,
        );
        assert_eq!(
            from_feed(&[old.clone(), tagged.clone()], &[], "B"),
            vec!["ConfigMap/dev/x created"]
        );
        // From a list: recorded again since the sync started (whole seconds).
        let since: chrono::DateTime<chrono::Utc> = "2026-12-04T10:00:04.600Z".parse().unwrap();
        assert_eq!(
            for_revision(vec![folded.clone(), old.clone(), tagged], "B", since),
            vec!["ConfigMap/dev/cm configured", "ConfigMap/dev/x created"]
        );
        // Not recorded again: an earlier sync's.
        let once = event(
            Some("A"),
            "ConfigMap/dev/cm configured",
            "2026-12-04T10:00:05Z",
            1,
        );
        assert!(for_revision(vec![once], "B", since).is_empty());
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
        let show = |events: &[String]| -> Vec<String> {
            changes(&before, &after, events)
                .iter()
                .map(|c| format!("{} {}", c.object, c.action.as_str()))
                .collect()
        };
        assert_eq!(
            show(&events),
            [
                "ConfigMap/dev/new created",
                "ConfigMap/dev/a configured",
                "ConfigMap/dev/b unchanged",
                "ConfigMap/dev/gone deleted"
            ]
        );
        // No change set recorded: the objects kept were applied, no more is known.
        assert_eq!(
            show(&["Health check passed in 20ms".to_string()]),
            [
                "ConfigMap/dev/new created",
                "ConfigMap/dev/a applied",
                "ConfigMap/dev/b applied",
                "ConfigMap/dev/gone deleted"
            ]
        );
    }
}
