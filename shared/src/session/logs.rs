//! The logs of a session's pods, followed as they come (through the API
//! server's `pods/log`), new pods of later rollouts included; and the Flux
//! warning events of its objects, as they happen.

use std::collections::{BTreeMap, BTreeSet};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

/// One line a container printed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub pod: String,
    pub container: String,
    pub line: String,
}

/// The label selector of the objects a session's Kustomization applied.
pub fn applied_selector(session: &str, flux_namespace: &str) -> String {
    format!(
        "kustomize.toolkit.fluxcd.io/name={session},kustomize.toolkit.fluxcd.io/namespace={flux_namespace}"
    )
}

fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    !selector.is_empty() && {
        let labels = pod.labels();
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

type Selectors = std::sync::Arc<std::sync::Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

/// Keeps `selectors` current with the pod selectors of the session's
/// workloads of one kind.
async fn track<K>(
    client: &Client,
    namespace: &str,
    cfg: &watcher::Config,
    selectors: &Selectors,
    selector: impl Fn(&K) -> Option<BTreeMap<String, String>>,
) where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let kind = K::kind(&()).to_string();
    let mut stream = watcher(Api::<K>::namespaced(client.clone(), namespace), cfg.clone())
        .default_backoff()
        .touched_objects()
        .boxed();
    while let Some(o) = stream.next().await {
        if let Ok(o) = o
            && let Ok(mut m) = selectors.lock()
        {
            m.insert(
                format!("{kind}/{}", o.name_any()),
                selector(&o).unwrap_or_default(),
            );
        }
    }
}

/// Follows the logs of every pod of the session's workloads in `namespace`
/// (workloads labelled by Flux for `session`; `all_pods` takes every pod
/// of the namespace, as in a sandbox), sending each line to `out` until the
/// receiver is dropped.
pub async fn follow(
    client: Client,
    namespace: String,
    session: String,
    flux_namespace: String,
    all_pods: bool,
    out: mpsc::UnboundedSender<LogLine>,
) {
    let cfg = watcher::Config::default().labels(&applied_selector(&session, &flux_namespace));
    // The pod selectors of the session's workloads, kept current.
    let selectors: Selectors = Default::default();
    let trackers = futures::future::join4(
        track::<Deployment>(&client, &namespace, &cfg, &selectors, |d| {
            d.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
        }),
        track::<StatefulSet>(&client, &namespace, &cfg, &selectors, |d| {
            d.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
        }),
        track::<DaemonSet>(&client, &namespace, &cfg, &selectors, |d| {
            d.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
        }),
        track::<Job>(&client, &namespace, &cfg, &selectors, |j| {
            j.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.match_labels.clone())
        }),
    );
    tokio::pin!(trackers);

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut pods = watcher(pods_api.clone(), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .boxed();
    let mut following: BTreeSet<(String, String, String)> = BTreeSet::new();
    loop {
        let pod = tokio::select! {
            _ = &mut trackers => return,
            p = pods.next() => match p {
                Some(Ok(p)) => p,
                Some(Err(_)) => continue,
                None => return,
            },
            _ = out.closed() => return,
        };
        let ours = all_pods
            || selectors
                .lock()
                .map(|m| m.values().any(|s| matches(s, &pod)))
                .unwrap_or(false);
        if !ours {
            continue;
        }
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        for c in pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
        {
            let started = c
                .state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
            if !started || !following.insert((uid.clone(), name.clone(), c.name.clone())) {
                continue;
            }
            let (api, out, pod_name, container) =
                (pods_api.clone(), out.clone(), name.clone(), c.name.clone());
            tokio::spawn(async move {
                let params = LogParams {
                    follow: true,
                    container: Some(container.clone()),
                    ..Default::default()
                };
                let Ok(stream) = api.log_stream(&pod_name, &params).await else {
                    return;
                };
                let mut lines = stream.lines();
                loop {
                    // A follow stream may stay silent for ever: end with the reader.
                    let line = tokio::select! {
                        l = lines.try_next() => match l {
                            Ok(Some(line)) => line,
                            _ => return,
                        },
                        _ = out.closed() => return,
                    };
                    let sent = out.send(LogLine {
                        pod: pod_name.clone(),
                        container: container.clone(),
                        line,
                    });
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// Reports the Warning events of the session's Flux objects (its
/// Kustomization/HelmRelease and OCIRepository, named after it) that happen
/// from now on, as `Kind/name: reason: message`.
pub async fn flux_warnings(
    client: Client,
    namespace: String,
    session: String,
    out: mpsc::UnboundedSender<String>,
) {
    let events: Api<KubeEvent> = Api::namespaced(client, &namespace);
    let cfg =
        watcher::Config::default().fields(&format!("involvedObject.name={session},type=Warning"));
    let since = chrono::Utc::now().timestamp();
    let mut seen = BTreeSet::new();
    let mut stream = watcher(events, cfg)
        .default_backoff()
        .touched_objects()
        .boxed();
    while let Some(e) = stream.next().await {
        let Ok(e) = e else { continue };
        let at = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
            .unwrap_or(0);
        let key = (e.uid().unwrap_or_default(), e.count.unwrap_or(0));
        if at < since || !seen.insert(key) {
            continue;
        }
        let text = format!(
            "{}/{}: {}: {}",
            e.involved_object.kind.unwrap_or_default(),
            e.involved_object.name.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.message.unwrap_or_default().trim()
        );
        if out.send(text).is_err() {
            return;
        }
    }
}
