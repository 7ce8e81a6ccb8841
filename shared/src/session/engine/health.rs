//! What the workloads of a sync are doing while Flux health-checks them:
//! rollout progress per workload, and — as soon as it is visible — why a
//! rollout cannot succeed (a pod in CrashLoopBackOff, an image that cannot
//! be pulled, no node that fits, a quota that refuses the pods), in words
//! taken from the pods, the workloads' conditions and their events. A pod
//! that runs but never becomes ready (a failing readiness probe) may still
//! become ready: it is named once the Deployment's progress deadline passes
//! or Flux's health check times out ([`explain_unready`]).
//!
//! The rules are pure functions of the objects (tested on fixtures); the
//! watch feeds them from the API server.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::Event;
use crate::pod::Readiness;
use crate::selector::Selector;
use crate::workloads::{DaemonSet, Deployment, Pod, ReplicaSet, StatefulSet};

/// A workload's rollout, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// `Kind/namespace/name`.
    pub object: String,
    pub desired: i32,
    pub ready: i32,
    /// The controller has seen the latest spec and every replica is updated and ready.
    pub done: bool,
    /// A reason from the workload itself (e.g. a quota refusing its pods).
    pub problem: Option<String>,
    /// The pods it selects (its `spec.selector`).
    pub selector: Selector,
    /// The label (key, value) of its current pods (the newest ReplicaSet's
    /// `pod-template-hash`, a StatefulSet's update revision): only those
    /// count, not the old ones a rollout is replacing.
    pub current: Option<(String, String)>,
    /// Its uid (ReplicaSets point at it).
    pub uid: String,
    /// The labels of its pod template: a pod of an older template that
    /// differs in them is not one of its current pods.
    pub template_labels: BTreeMap<String, String>,
    /// A Deployment's current revision (`deployment.kubernetes.io/revision`).
    pub revision: Option<String>,
    /// Its controller has seen its latest spec (before that, its status and
    /// pods still describe the previous one).
    pub observed: bool,
}

fn id(kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{kind}/{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A Deployment's rollout (kstatus rules: observed generation, then
/// updated, ready and available replicas).
pub fn deployment(d: &Deployment) -> Rollout {
    let spec = d.spec.as_ref();
    let st = d.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let conditions = st.conditions.unwrap_or_default();
    let problem = conditions
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("ReplicaFailure", "True") => Some(c.message.clone().unwrap_or_default()),
            ("Progressing", "False") => Some(format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
            _ => None,
        });
    Rollout {
        object: id("Deployment", &d.metadata),
        desired,
        ready,
        done: observed
            && updated >= desired
            && available >= desired
            && ready >= desired
            && total <= desired,
        problem,
        selector: Selector::of(spec.map(|s| &s.selector)),
        current: None,
        uid: d.metadata.uid.clone().unwrap_or_default(),
        revision: d.annotations().get(REVISION).cloned(),
        template_labels: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        observed,
    }
}

const REVISION: &str = "deployment.kubernetes.io/revision";

/// The `pod-template-hash` of the ReplicaSet of a Deployment's current
/// revision among `rss` (`None` until that ReplicaSet is seen).
pub fn current_hash(deployment_uid: &str, revision: &str, rss: &[ReplicaSet]) -> Option<String> {
    rss.iter()
        .find(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == deployment_uid)
                && rs.annotations().get(REVISION).map(String::as_str) == Some(revision)
        })
        .and_then(|rs| rs.labels().get("pod-template-hash").cloned())
}

/// A StatefulSet's rollout.
pub fn statefulset(s: &StatefulSet) -> Rollout {
    let spec = s.spec.as_ref();
    let st = s.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let observed = st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let revision_done = st.update_revision.is_none() || st.update_revision == st.current_revision;
    Rollout {
        object: id("StatefulSet", &s.metadata),
        desired,
        ready,
        done: observed && ready >= desired && (updated >= desired || revision_done),
        problem: None,
        selector: Selector::of(spec.map(|s| &s.selector)),
        revision: None,
        template_labels: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        current: st
            .update_revision
            .clone()
            .map(|r| ("controller-revision-hash".to_string(), r)),
        uid: s.metadata.uid.clone().unwrap_or_default(),
        observed,
    }
}

/// A DaemonSet's rollout.
pub fn daemonset(d: &DaemonSet) -> Rollout {
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let desired = st.desired_number_scheduled;
    let ready = st.number_ready;
    Rollout {
        object: id("DaemonSet", &d.metadata),
        desired,
        ready,
        done: observed && st.updated_number_scheduled.unwrap_or(0) >= desired && ready >= desired,
        problem: None,
        selector: Selector::of(d.spec.as_ref().map(|s| &s.selector)),
        current: None,
        uid: d.metadata.uid.clone().unwrap_or_default(),
        revision: None,
        template_labels: d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        observed,
    }
}

/// Why a pod cannot become ready, when that is already certain: it will
/// not fix itself without a change (a crash loop, an image that cannot be
/// pulled, a bad container config, no node that fits).
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let name = pod.name_any();
    let restarts = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_none_or(|p| p != "Never");
    for c in status.container_statuses.iter().flatten() {
        // Exited with an error after a restart already: the kubelet is in
        // its back-off before the next run. A kubelet reports that as
        // `waiting: CrashLoopBackOff` only when it syncs the pod during the
        // back-off (a 1.36 kubelet does so at its periodic resync, every
        // minute by default); until then the state stays `terminated`.
        if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref())
            && restarts
            && t.exit_code != 0
            && c.restart_count >= 1
        {
            return Some(format!(
                "pod {name} container {}: CrashLoopBackOff (exit {}), restarted {} time(s)",
                c.name, t.exit_code, c.restart_count
            ));
        }
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "CrashLoopBackOff" => {
                let exit = c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| format!(" (exit {})", t.exit_code))
                    .unwrap_or_default();
                return Some(format!(
                    "pod {name} container {}: CrashLoopBackOff{exit}, restarted {} time(s)",
                    c.name, c.restart_count
                ));
            }
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(format!(
                    "pod {name} container {} cannot pull its image {:?}: {reason}{}",
                    c.name,
                    c.image,
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(" ({message})")
                    }
                ));
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some(format!(
                    "pod {name} container {}: {reason}: {message}",
                    c.name
                ));
            }
            _ => {}
        }
    }
    for cond in status.conditions.iter().flatten() {
        if cond.type_ == "PodScheduled"
            && cond.status == "False"
            && cond.reason.as_deref() == Some("Unschedulable")
        {
            return Some(format!(
                "pod {name} cannot be scheduled: {}",
                cond.message.clone().unwrap_or_default()
            ));
        }
    }
    None
}

/// Why a pod that runs is not ready, when its containers all run but some
/// are not ready (`ContainersNotReady`): a failing readiness probe.
/// `probe_failures`: the latest `Unhealthy` event message of each pod.
pub fn unready_problem(pod: &Pod, probe_failures: &BTreeMap<String, String>) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")?;
    if ready.status != "False" {
        return None;
    }
    let containers: Vec<_> = status.container_statuses.iter().flatten().collect();
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let running = containers
        .iter()
        .filter(|c| !c.ready)
        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if unready.is_empty() || !running {
        return None;
    }
    let name = pod.name_any();
    let probed = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .any(|c| unready.contains(&c.name.as_str()) && c.readiness_probe.is_some())
    });
    let why = match probe_failures.get(&name) {
        Some(m) => {
            let m = m.trim();
            let m = m
                .strip_prefix("Readiness probe failed:")
                .unwrap_or(m)
                .trim();
            format!("readiness probe failing: {m}")
        }
        None if probed => "readiness probe failing".to_string(),
        None => format!("container {} not ready", unready.join(", ")),
    };
    Some(format!("pod {name} is running but not ready ({why})"))
}

/// The workloads that have not rolled out and whose pods run but are not
/// ready, in words (`Deployment/ns/web: pod web-abc is running but not
/// ready (readiness probe failing: …)`).
pub fn unready_verdict(
    rollouts: &[Rollout],
    pods: &[Pod],
    probe_failures: &BTreeMap<String, String>,
) -> Option<String> {
    for r in rollouts.iter().filter(|r| !r.done) {
        let mut problems: Vec<String> = pods
            .iter()
            .filter(|p| selects(r, p))
            .filter_map(|p| unready_problem(p, probe_failures))
            .collect();
        problems.sort();
        if let Some(first) = problems.first() {
            return Some(format!("{}: {first}", r.object));
        }
    }
    None
}

/// Deployments: which pods count is known once their newest ReplicaSet is
/// (until then, none does).
fn with_current(rollouts: impl Iterator<Item = Rollout>, rss: &[ReplicaSet]) -> Vec<Rollout> {
    rollouts
        .map(|mut r| {
            if r.object.starts_with("Deployment/") {
                r.current = Some((
                    "pod-template-hash".into(),
                    r.revision
                        .as_deref()
                        .and_then(|rev| current_hash(&r.uid, rev, rss))
                        .unwrap_or_default(),
                ));
            }
            r
        })
        .collect()
}

/// Why the session's workloads in `namespace` are not healthy, when their
/// pods run but are not ready (asked when Flux's health check timed out):
/// the readiness probe's failure from the pod's `Unhealthy` events, if any.
pub async fn explain_unready(
    client: Client,
    namespace: &str,
    session: &str,
    flux_namespace: &str,
) -> Option<String> {
    let selector = format!(
        "kustomize.toolkit.fluxcd.io/name={session},kustomize.toolkit.fluxcd.io/namespace={flux_namespace}"
    );
    let labelled = ListParams::default().labels(&selector);
    let all = ListParams::default();
    let (d, st, ds, rs, po, ev) = (
        Api::<Deployment>::namespaced(client.clone(), namespace),
        Api::<StatefulSet>::namespaced(client.clone(), namespace),
        Api::<DaemonSet>::namespaced(client.clone(), namespace),
        Api::<ReplicaSet>::namespaced(client.clone(), namespace),
        Api::<Pod>::namespaced(client.clone(), namespace),
        Api::<KubeEvent>::namespaced(client, namespace),
    );
    let unhealthy = ListParams::default().fields("reason=Unhealthy");
    let (deployments, statefulsets, daemonsets, rss, pods, events) = futures::join!(
        d.list(&labelled),
        st.list(&labelled),
        ds.list(&labelled),
        rs.list(&all),
        po.list(&all),
        ev.list(&unhealthy),
    );
    let mut rollouts: Vec<Rollout> = Vec::new();
    rollouts.extend(deployments.ok()?.items.iter().map(deployment));
    rollouts.extend(statefulsets.ok()?.items.iter().map(statefulset));
    rollouts.extend(daemonsets.ok()?.items.iter().map(daemonset));
    let rollouts = with_current(rollouts.into_iter(), &rss.ok()?.items);
    let pods = pods.ok()?.items;
    let probe_failures = probe_failures(events.map(|e| e.items).unwrap_or_default());
    unready_verdict(&rollouts, &pods, &probe_failures)
}

/// The latest readiness probe failure of each pod, from `Unhealthy` events.
fn probe_failures(mut events: Vec<KubeEvent>) -> BTreeMap<String, String> {
    let when = |e: &KubeEvent| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
    };
    events.sort_by_key(when);
    events
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Pod"))
        .filter_map(|e| {
            let message = e.message?;
            message
                .starts_with("Readiness probe")
                .then(|| (e.involved_object.name.unwrap_or_default(), message))
        })
        .collect()
}

fn selects(r: &Rollout, pod: &Pod) -> bool {
    let labels = pod.labels();
    r.selector.matches(labels)
        && r.current
            .as_ref()
            .is_none_or(|(k, v)| labels.get(k) == Some(v))
        && (r.template_labels.is_empty() || {
            let own = |k: &String| k != "pod-template-hash" && k != "controller-revision-hash";
            labels.iter().filter(|(k, _)| own(k)).count() == r.template_labels.len()
                && r.template_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
        })
}

/// The pods' and workloads' verdict: `Some(message)` when a workload cannot
/// become healthy without a change.
pub fn verdict(rollouts: &[Rollout], pods: &[Pod]) -> Option<String> {
    for r in rollouts {
        if r.done || !r.observed {
            continue;
        }
        if let Some(p) = &r.problem {
            // Past its progress deadline with pods that run but are not
            // ready: the readiness probe is why.
            if p.starts_with("ProgressDeadlineExceeded")
                && let Some(unready) =
                    unready_verdict(std::slice::from_ref(r), pods, &BTreeMap::new())
            {
                return Some(format!("{unready}; {p}"));
            }
            return Some(format!("{}: {p}", r.object));
        }
        let mut problems: Vec<String> = pods
            .iter()
            .filter(|p| selects(r, p))
            .filter_map(pod_problem)
            .collect();
        problems.sort();
        if let Some(first) = problems.first() {
            return Some(format!("{}: {first}", r.object));
        }
    }
    None
}

/// What the watch of a sync's workloads concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A workload cannot become healthy without a change: why.
    Failed(String),
    /// Every object of the revision is healthy by kstatus's rules (the
    /// workloads rolled out, the bare pods Ready), seen as it happened.
    Healthy,
}

/// Kinds that kstatus counts as healthy once applied (no status to wait
/// for), by `group/Kind`. A Service counts only if not a LoadBalancer (the
/// caller checks).
const CURRENT_WHEN_APPLIED: &[&str] = &[
    "/ConfigMap",
    "/Secret",
    "/ServiceAccount",
    "/Service",
    "/LimitRange",
    "/ResourceQuota",
    "rbac.authorization.k8s.io/Role",
    "rbac.authorization.k8s.io/RoleBinding",
    "rbac.authorization.k8s.io/ClusterRole",
    "rbac.authorization.k8s.io/ClusterRoleBinding",
    "networking.k8s.io/NetworkPolicy",
    "scheduling.k8s.io/PriorityClass",
];

/// Kinds whose health this watch judges itself.
const JUDGED: &[&str] = &[
    "apps/Deployment",
    "apps/StatefulSet",
    "apps/DaemonSet",
    "/Pod",
];

/// The workloads (`Kind/namespace/name`) whose health decides a revision,
/// when this watch can judge all of it: every inventory entry (Flux's
/// `namespace_name_group_Kind`) is of a kind that is healthy once applied,
/// or a workload in `namespace`. `None`: Flux's own health check decides.
pub fn judgeable(
    entries: &[String],
    namespace: &str,
) -> Option<std::collections::BTreeSet<String>> {
    let mut workloads = std::collections::BTreeSet::new();
    for id in entries {
        let parts: Vec<&str> = id.split('_').collect();
        let [ns, name, group, kind] = parts[..] else {
            return None;
        };
        let gk = format!("{group}/{kind}");
        if JUDGED.contains(&gk.as_str()) {
            if ns != namespace {
                return None;
            }
            workloads.insert(format!("{kind}/{ns}/{name}"));
        } else if !CURRENT_WHEN_APPLIED.contains(&gk.as_str()) {
            return None;
        }
    }
    Some(workloads)
}

/// Whether every workload the manifests define (`Kind/name` keys of the
/// files, before kustomize's name prefixes or suffixes) has one in
/// `workloads` (`Kind/namespace/name`) whose name contains it.
pub fn covers(workloads: &std::collections::BTreeSet<String>, local: &[String]) -> bool {
    local.iter().all(|key| {
        let Some((kind, name)) = key.split_once('/') else {
            return true;
        };
        if !JUDGED.iter().any(|gk| gk.ends_with(&format!("/{kind}"))) {
            return true;
        }
        workloads.iter().any(|w| {
            w.split_once('/').is_some_and(|(k, rest)| {
                k == kind && rest.split_once('/').is_some_and(|(_, n)| n.contains(name))
            })
        })
    })
}

/// A change-set line's object (`Kind/namespace/name`, or `Kind/name` when
/// cluster-scoped) as an inventory id (`namespace_name_group_Kind`), the
/// group taken from the kinds this module knows (`?` for others, which
/// [`judgeable`] leaves to Flux).
pub fn inventory_id(object: &str) -> String {
    let parts: Vec<&str> = object.split('/').collect();
    let (kind, ns, name) = match parts[..] {
        [kind, ns, name] => (kind, ns, name),
        [kind, name] => (kind, "", name),
        _ => return format!("?_?_?_{object}"),
    };
    let group = [CURRENT_WHEN_APPLIED, JUDGED]
        .concat()
        .iter()
        .find_map(|gk| {
            gk.split_once('/')
                .filter(|(_, k)| *k == kind)
                .map(|(g, _)| g.to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{ns}_{name}_{group}_{kind}")
}

/// Watches the workloads a session applies (Flux labels them with the
/// Kustomization's name and namespace) and their pods in `namespace`;
/// reports rollout progress as it changes; returns once a workload is
/// certain to fail, with why, or — when `expect` names every workload
/// whose health decides the revision — once all of them are healthy.
/// Otherwise never returns while all is well (the Kustomization's Ready
/// decides success).
pub async fn watch(
    client: Client,
    namespace: String,
    session: String,
    flux_namespace: String,
    report: super::Reporter,
    expect: Option<std::collections::BTreeSet<String>>,
    changed: std::collections::BTreeSet<String>,
) -> Outcome {
    let selector = format!(
        "kustomize.toolkit.fluxcd.io/name={session},kustomize.toolkit.fluxcd.io/namespace={flux_namespace}"
    );
    let cfg = watcher::Config::default().labels(&selector);
    let deployments = watch_kind::<Deployment>(&client, &namespace, cfg.clone())
        .map(|e| e.map(Changed::Deployment));
    let statefulsets = watch_kind::<StatefulSet>(&client, &namespace, cfg.clone())
        .map(|e| e.map(Changed::StatefulSet));
    let daemonsets =
        watch_kind::<DaemonSet>(&client, &namespace, cfg).map(|e| e.map(Changed::DaemonSet));
    let pods = watch_kind::<Pod>(&client, &namespace, watcher::Config::default())
        .map(|e| e.map(Changed::Pod));
    let replicasets = watch_kind::<ReplicaSet>(&client, &namespace, watcher::Config::default())
        .map(|e| e.map(Changed::ReplicaSet));
    let mut all = futures::stream::select_all(vec![
        deployments.boxed(),
        statefulsets.boxed(),
        daemonsets.boxed(),
        pods.boxed(),
        replicasets.boxed(),
    ]);
    let mut rs_map: BTreeMap<String, ReplicaSet> = BTreeMap::new();
    let mut rollouts: BTreeMap<String, Rollout> = BTreeMap::new();
    let mut pod_map: BTreeMap<String, Pod> = BTreeMap::new();
    let mut shown: BTreeMap<String, (i32, i32, bool)> = BTreeMap::new();
    while let Some(item) = all.next().await {
        let Ok(change) = item else {
            continue;
        };
        match change {
            Changed::Deployment(list) => apply(&mut rollouts, list, |d| deployment(&d)),
            Changed::StatefulSet(list) => apply(&mut rollouts, list, |s| statefulset(&s)),
            Changed::DaemonSet(list) => apply(&mut rollouts, list, |d| daemonset(&d)),
            Changed::ReplicaSet(list) => {
                for (deleted, rs) in list {
                    let key = rs.name_any();
                    if deleted {
                        rs_map.remove(&key);
                    } else {
                        rs_map.insert(key, rs);
                    }
                }
            }
            Changed::Pod(list) => {
                for (deleted, pod) in list {
                    let key = pod.name_any();
                    if deleted {
                        pod_map.remove(&key);
                    } else {
                        pod_map.insert(key, pod);
                    }
                }
            }
        }
        for r in rollouts.values() {
            let now = (r.ready, r.desired, r.done);
            // A workload already rolled out and untouched by this sync is
            // not news (one it created or changed is, however quick).
            if r.done && !shown.contains_key(&r.object) && !changed.contains(&r.object) {
                shown.insert(r.object.clone(), now);
                continue;
            }
            if shown.get(&r.object) != Some(&now) {
                shown.insert(r.object.clone(), now);
                report(&Event::Rollout {
                    object: r.object.clone(),
                    ready: r.ready,
                    desired: r.desired,
                    done: r.done,
                });
            }
        }
        let replicasets: Vec<ReplicaSet> = rs_map.values().cloned().collect();
        let rs = with_current(rollouts.values().cloned(), &replicasets);
        let ps: Vec<Pod> = pod_map.values().cloned().collect();
        if let Some(v) = verdict(&rs, &ps) {
            tracing::debug!("verdict from {rs:?}");
            return Outcome::Failed(v);
        }
        if let Some(expect) = &expect
            && all_healthy(expect, &rollouts, &pod_map)
        {
            tracing::debug!("healthy: {expect:?}");
            return Outcome::Healthy;
        }
    }
    std::future::pending().await
}

/// Whether every workload `expect` names (`Kind/namespace/name`) is
/// healthy: a workload rolled out (seen by its controller), a bare Pod
/// ready or run to completion and not being deleted (kstatus' rule, as
/// Flux's health check: [`Readiness::settled`]). `pods` by name.
fn all_healthy(
    expect: &std::collections::BTreeSet<String>,
    rollouts: &BTreeMap<String, Rollout>,
    pods: &BTreeMap<String, Pod>,
) -> bool {
    expect.iter().all(|id| match id.split_once('/') {
        Some(("Pod", rest)) => rest
            .split_once('/')
            .and_then(|(_, name)| pods.get(name))
            .is_some_and(|p| Readiness::of(p).settled()),
        _ => rollouts.get(id).is_some_and(|r| r.done && r.observed),
    })
}

enum Changed {
    Deployment(Vec<(bool, Deployment)>),
    StatefulSet(Vec<(bool, StatefulSet)>),
    DaemonSet(Vec<(bool, DaemonSet)>),
    Pod(Vec<(bool, Pod)>),
    ReplicaSet(Vec<(bool, ReplicaSet)>),
}

/// Watches kind `K` in `namespace`, as `(deleted, object)` batches.
fn watch_kind<K>(
    client: &Client,
    namespace: &str,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<Vec<(bool, K)>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Send + 'static,
{
    crate::kubeapi::watch::<K>(client.clone(), Some(namespace), config)
        .default_backoff()
        .map(|e| e.map(objects))
}

/// A watcher event as `(deleted, object)` pairs (the initial list included).
fn objects<K>(e: watcher::Event<K>) -> Vec<(bool, K)> {
    match e {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![(false, o)],
        watcher::Event::Delete(o) => vec![(true, o)],
        watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
    }
}

fn apply<K: ResourceExt>(
    rollouts: &mut BTreeMap<String, Rollout>,
    list: Vec<(bool, K)>,
    state: impl Fn(K) -> Rollout,
) {
    for (deleted, obj) in list {
        let r = state(obj);
        if deleted {
            rollouts.remove(&r.object);
        } else {
            rollouts.insert(r.object.clone(), r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_judged_here_only_when_every_kind_is_known() {
        let inv = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let judged = judgeable(
            &inv(&[
                "dev_web_apps_Deployment",
                "dev_web__Service",
                "dev_cfg__ConfigMap",
                "dev_solo__Pod",
                "dev_r_rbac.authorization.k8s.io_Role",
            ]),
            "dev",
        )
        .unwrap();
        assert_eq!(
            judged,
            ["Deployment/dev/web", "Pod/dev/solo"]
                .map(String::from)
                .into()
        );
        // A Job, a custom resource, a workload in another namespace: Flux decides.
        assert_eq!(judgeable(&inv(&["dev_j_batch_Job"]), "dev"), None);
        assert_eq!(judgeable(&inv(&["dev_x_example.com_Widget"]), "dev"), None);
        assert_eq!(judgeable(&inv(&["prod_web_apps_Deployment"]), "dev"), None);
        assert_eq!(judgeable(&inv(&["garbage"]), "dev"), None);

        assert_eq!(
            inventory_id("Deployment/dev/web"),
            "dev_web_apps_Deployment"
        );
        assert_eq!(inventory_id("ConfigMap/dev/c"), "dev_c__ConfigMap");
        assert_eq!(
            inventory_id("ClusterRole/view-x"),
            "_view-x_rbac.authorization.k8s.io_ClusterRole"
        );
        assert_eq!(judgeable(&[inventory_id("Widget/dev/w")], "dev"), None);

        // The files' workloads must all be in the inventory (prefixes allowed).
        let w: std::collections::BTreeSet<String> =
            ["Deployment/dev/team-web"].map(String::from).into();
        assert!(covers(&w, &["Deployment/web".into(), "ConfigMap/x".into()]));
        assert!(!covers(&w, &["Deployment/api".into()]));
        assert!(!covers(&w, &["StatefulSet/web".into()]));
    }

    fn deploy(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    /// A bare Pod of the revision is healthy by kstatus' rule (as Flux's
    /// health check): ready or run to completion, and not being deleted.
    #[test]
    fn bare_pods_are_healthy_when_ready_or_completed_and_not_leaving() {
        let bare = |name: &str, phase: &str, ready: &str, deleting: bool| {
            let mut p = pod(serde_json::json!({
                "metadata": {"name": name, "namespace": "sbx"},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
            }));
            if deleting {
                p.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                    ));
            }
            (name.to_string(), p)
        };
        let pods: BTreeMap<String, Pod> = [
            bare("ready", "Running", "True", false),
            bare("once", "Succeeded", "False", false),
            bare("starting", "Running", "False", false),
            bare("leaving", "Running", "True", true),
        ]
        .into();
        let rows = [
            ("ready", true),
            ("once", true),
            ("starting", false),
            ("leaving", false),
            ("absent", false),
        ];
        for (name, healthy) in rows {
            let expect = [format!("Pod/sbx/{name}")].into();
            assert_eq!(
                all_healthy(&expect, &BTreeMap::new(), &pods),
                healthy,
                "{name}"
            );
        }
    }

    /// A workload selecting its pods with `matchExpressions` only: its
    /// pods are its own (they were matched by `matchLabels` alone, so none).
    #[test]
    fn pods_selected_by_match_expressions_count() {
        let d = deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 1},
            "spec": {"replicas": 1, "template": {},
                "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
            "status": {"observedGeneration": 1, "replicas": 1}
        }));
        let crashing = pod(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "sbx", "labels": {"app": "web"}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "web", "image": "x", "imageID": "",
                "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
        }));
        let other = pod(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "sbx", "labels": {"app": "api"}},
            "status": {"phase": "Running", "containerStatuses": [{"name": "api", "image": "x", "imageID": "",
                "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
        }));
        let v = verdict(&[deployment(&d)], &[other, crashing]).unwrap();
        assert!(v.starts_with("Deployment/sbx/web: pod web-1"), "{v}");
    }

    #[test]
    fn deployment_progress_and_completion() {
        let d = deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}
        }));
        let r = deployment(&d);
        assert_eq!(
            (r.object.as_str(), r.ready, r.desired, r.done),
            ("Deployment/sbx/web", 1, 3, false)
        );
        let done = deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
        }));
        assert!(deployment(&done).done);
        // Not yet observed: not done, whatever the counts say.
        let stale = deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 3},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
        }));
        assert!(!deployment(&stale).done);
    }

    #[test]
    fn certain_failures_are_named_in_plain_words() {
        let d = deployment(&deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1}
        })));
        let crash = pod(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "sbx", "labels": {"app": "web"}},
            "status": {"containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1}}
            }]}
        }));
        assert_eq!(
            verdict(std::slice::from_ref(&d), &[crash]).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc container app: CrashLoopBackOff (exit 1), restarted 3 time(s)"
            )
        );
        // Between two runs, before the kubelet reported its back-off: the
        // state is the last run's end (what a 1.36 kubelet reports for up
        // to a minute). The first exit is no loop yet (restarted at once),
        // nor is an exit of a pod that is never restarted.
        let exited = |restarts: i32, policy: &str| {
            pod(serde_json::json!({
                "metadata": {"name": "web-abc", "namespace": "sbx", "labels": {"app": "web"}},
                "spec": {"restartPolicy": policy, "containers": [{"name": "app"}]},
                "status": {"containerStatuses": [{
                    "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": restarts,
                    "state": {"terminated": {"exitCode": 3, "reason": "Error"}}
                }]}
            }))
        };
        assert_eq!(
            verdict(std::slice::from_ref(&d), &[exited(2, "Always")]).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc container app: CrashLoopBackOff (exit 3), restarted 2 time(s)"
            )
        );
        assert_eq!(
            verdict(std::slice::from_ref(&d), &[exited(0, "Always")]),
            None
        );
        assert_eq!(
            verdict(std::slice::from_ref(&d), &[exited(2, "Never")]),
            None
        );
        let pull = pod(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "sbx", "labels": {"app": "web"}},
            "status": {"containerStatuses": [{
                "name": "app", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
            }]}
        }));
        let v = verdict(std::slice::from_ref(&d), &[pull]).unwrap();
        assert!(
            v.ends_with(
                "container app cannot pull its image \"nope:1\": ImagePullBackOff (not found)"
            ),
            "{v}"
        );
        let pending = pod(serde_json::json!({
            "metadata": {"name": "web-y", "namespace": "sbx", "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient cpu."}]}
        }));
        let v = verdict(std::slice::from_ref(&d), &[pending]).unwrap();
        assert!(
            v.ends_with("cannot be scheduled: 0/2 nodes are available: 2 Insufficient cpu."),
            "{v}"
        );
        // A pod of something else does not count.
        let other = pod(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "sbx", "labels": {"app": "db"}},
            "status": {"containerStatuses": [{
                "name": "db", "image": "db", "imageID": "", "ready": false, "restartCount": 9,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
            }]}
        }));
        assert_eq!(verdict(std::slice::from_ref(&d), &[other]), None);
        // An old ReplicaSet's crashing pod, while a fix rolls out: not the verdict.
        let mut fixing = d.clone();
        fixing.current = Some(("pod-template-hash".into(), "new".into()));
        let old = pod(serde_json::json!({
            "metadata": {"name": "web-old", "namespace": "sbx", "labels": {"app": "web", "pod-template-hash": "old"}},
            "status": {"containerStatuses": [{
                "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
            }]}
        }));
        assert_eq!(verdict(std::slice::from_ref(&fixing), &[old]), None);
        let rss: Vec<ReplicaSet> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "web-old", "labels": {"pod-template-hash": "old"},
              "annotations": {"deployment.kubernetes.io/revision": "1"},
              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"}]}},
            {"metadata": {"name": "web-new", "labels": {"pod-template-hash": "new"},
              "annotations": {"deployment.kubernetes.io/revision": "2"},
              "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1"}]}}
        ]))
        .unwrap();
        assert_eq!(current_hash("u1", "2", &rss).as_deref(), Some("new"));
        assert_eq!(current_hash("u1", "1", &rss).as_deref(), Some("old"));
        assert_eq!(current_hash("u1", "3", &rss), None);
        assert_eq!(current_hash("u2", "2", &rss), None);
        // A quota refusing the pods shows on the Deployment.
        let quota = deployment(&deploy(serde_json::json!({
            "metadata": {"name": "big", "namespace": "sbx", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "big"}}, "template": {}},
            "status": {"observedGeneration": 1, "conditions": [{"type": "ReplicaFailure", "status": "True",
                "reason": "FailedCreate", "message": "pods \"big-1\" is forbidden: exceeded quota: gitops-sandbox, requested: cpu=8, used: cpu=0, limited: cpu=2"}]}
        })));
        let v = verdict(&[quota], &[]).unwrap();
        assert!(
            v.starts_with("Deployment/sbx/big: pods \"big-1\" is forbidden: exceeded quota"),
            "{v}"
        );
    }

    #[test]
    fn pods_that_run_but_are_never_ready_are_named_with_the_probe() {
        let d = deployment(&deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
        })));
        let unready = |probe: bool| {
            pod(serde_json::json!({
                "metadata": {"name": "web-abc", "namespace": "sbx", "labels": {"app": "web"}},
                "spec": {"containers": [if probe {
                    serde_json::json!({"name": "app", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}})
                } else {
                    serde_json::json!({"name": "app"})
                }]},
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": [{
                        "name": "app", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"running": {}}
                    }]
                }
            }))
        };
        // Not a certain failure: it may become ready yet.
        assert_eq!(verdict(std::slice::from_ref(&d), &[unready(true)]), None);
        let none = BTreeMap::new();
        assert_eq!(
            unready_verdict(std::slice::from_ref(&d), &[unready(true)], &none).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc is running but not ready (readiness probe failing)"
            )
        );
        assert_eq!(
            unready_verdict(std::slice::from_ref(&d), &[unready(false)], &none).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc is running but not ready (container app not ready)"
            )
        );
        let events: Vec<KubeEvent> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web-abc"},
             "reason": "Unhealthy", "lastTimestamp": "2025-01-01T00:00:01Z",
             "message": "Readiness probe failed: HTTP probe failed with statuscode: 500"},
            {"metadata": {"name": "e0"}, "involvedObject": {"kind": "Pod", "name": "web-abc"},
             "reason": "Unhealthy", "lastTimestamp": "2025-01-01T00:00:00Z",
             "message": "Readiness probe failed: connection refused"},
            {"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "web-abc"},
             "reason": "Unhealthy", "lastTimestamp": "2025-01-01T00:00:02Z",
             "message": "Liveness probe failed: timeout"}
        ]))
        .unwrap();
        let failures = probe_failures(events);
        assert_eq!(
            unready_verdict(std::slice::from_ref(&d), &[unready(true)], &failures).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc is running but not ready (readiness probe failing: HTTP probe failed with statuscode: 500)"
            )
        );
        // Rolled out, or a pod still starting: nothing to say.
        let mut done = d.clone();
        done.done = true;
        assert_eq!(unready_verdict(&[done], &[unready(true)], &none), None);
        let waiting = pod(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "sbx", "labels": {"app": "web"}},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "image": "web:1", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        }));
        assert_eq!(
            unready_verdict(std::slice::from_ref(&d), &[waiting], &none),
            None
        );
        // Past the progress deadline, the Deployment's own reason says why.
        let late = deployment(&deploy(serde_json::json!({
            "metadata": {"name": "web", "namespace": "sbx", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}
        })));
        assert_eq!(
            verdict(&[late], &[unready(true)]).as_deref(),
            Some(
                "Deployment/sbx/web: pod web-abc is running but not ready (readiness probe failing); ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing."
            )
        );
    }
}
