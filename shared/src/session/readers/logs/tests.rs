//! The decisions of logs.rs as pure functions: which run of a container
//! the log serves, when a stream is opened and closed, whose pods are the
//! session's, and how Flux warnings are folded.

use super::*;
use crate::workloads::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn time(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())
}

fn running(id: Option<&str>, restarts: i32, started: i64) -> ContainerStatus {
    ContainerStatus {
        name: "web".into(),
        container_id: id.map(String::from),
        restart_count: restarts,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(started)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated_state(id: Option<&str>, started: i64) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: id.map(String::from),
            exit_code: 1,
            started_at: Some(time(started)),
            finished_at: Some(time(started + 1)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated(id: Option<&str>, restarts: i32, started: i64) -> ContainerStatus {
    ContainerStatus {
        name: "web".into(),
        container_id: id.map(String::from),
        restart_count: restarts,
        state: Some(terminated_state(id, started)),
        ..Default::default()
    }
}

/// Waiting to restart (CrashLoopBackOff) after the run that started at `started`.
fn backing_off(last_id: Option<&str>, restarts: i32, started: i64) -> ContainerStatus {
    ContainerStatus {
        name: "web".into(),
        container_id: last_id.map(String::from),
        restart_count: restarts,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: None,
            }),
            ..Default::default()
        }),
        last_state: Some(terminated_state(last_id, started)),
        ..Default::default()
    }
}

fn creating() -> ContainerStatus {
    ContainerStatus {
        name: "web".into(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn opens(actions: &[Action]) -> Vec<(String, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open { run, follow, .. } => Some((run.clone(), *follow)),
            Action::Close { .. } => None,
        })
        .collect()
}

#[test]
fn a_container_not_started_has_no_run() {
    assert_eq!(current_run(&creating()), None);
    assert_eq!(current_run(&ContainerStatus::default()), None);
}

#[test]
fn a_run_keeps_its_key_from_running_to_terminated_to_backing_off() {
    // With container IDs (a real kubelet).
    let r = current_run(&running(Some("containerd://a"), 0, 0)).unwrap();
    assert_eq!(
        r,
        Run {
            id: "containerd://a".into(),
            live: true
        }
    );
    let t = current_run(&terminated(Some("containerd://a"), 0, 0)).unwrap();
    assert_eq!((t.id.as_str(), t.live), ("containerd://a", false));
    // The kubelet counts the restart before the next run starts.
    let w = current_run(&backing_off(Some("containerd://a"), 1, 0)).unwrap();
    assert_eq!((w.id.as_str(), w.live), ("containerd://a", false));
    // Without IDs (kwok): the start time tells runs apart, the restart count does not.
    let ids: BTreeSet<String> = [
        running(None, 0, 0),
        terminated(None, 0, 0),
        backing_off(None, 1, 0),
    ]
    .iter()
    .map(|c| current_run(c).unwrap().id)
    .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let next = current_run(&running(None, 1, 20)).unwrap();
    assert!(!ids.contains(&next.id));
}

#[test]
fn without_id_or_start_time_the_restart_count_is_the_key() {
    let mut c = running(None, 3, 0);
    if let Some(s) = c.state.as_mut().and_then(|s| s.running.as_mut()) {
        s.started_at = None;
    }
    assert_eq!(current_run(&c).unwrap().id, "restart 3");
}

#[test]
fn each_run_of_a_crash_loop_is_opened_once_and_a_new_run_closes_the_old() {
    let mut runs = Runs::default();
    assert_eq!(runs.update("uid", &[creating()]), vec![]);
    let a = runs.update("uid", &[running(Some("c://1"), 0, 0)]);
    assert_eq!(
        a,
        vec![Action::Open {
            container: "web".into(),
            run: "c://1".into(),
            follow: true
        }]
    );
    // The same run seen again, ending, then waiting to restart: nothing to do.
    assert_eq!(runs.update("uid", &[running(Some("c://1"), 0, 0)]), vec![]);
    assert_eq!(
        runs.update("uid", &[terminated(Some("c://1"), 0, 0)]),
        vec![]
    );
    assert_eq!(
        runs.update("uid", &[backing_off(Some("c://1"), 1, 0)]),
        vec![]
    );
    // The restart: the old stream is closed, the new run opened.
    let b = runs.update("uid", &[running(Some("c://2"), 1, 15)]);
    assert_eq!(
        b,
        vec![
            Action::Close {
                container: "web".into(),
                run: "c://1".into()
            },
            Action::Open {
                container: "web".into(),
                run: "c://2".into(),
                follow: true
            }
        ]
    );
    // A run first seen when it has already ended (a short crash between
    // two pod updates) is read, not followed.
    let c = runs.update("uid", &[backing_off(Some("c://3"), 2, 30)]);
    assert_eq!(opens(&c), vec![("c://3".to_string(), false)]);
    // Never a run twice, whatever order the updates come in.
    for s in [
        running(Some("c://1"), 0, 0),
        running(Some("c://2"), 1, 15),
        backing_off(Some("c://3"), 2, 30),
    ] {
        assert_eq!(runs.update("uid", &[s]), vec![]);
    }
}

#[test]
fn kwok_crash_loop_without_ids_opens_one_run_per_restart() {
    // What tests/cluster/kwok-stages.yaml's crashloop stage writes: always
    // waiting, the last run's start time and the restart count moving on.
    let mut runs = Runs::default();
    let mut opened = Vec::new();
    for (restarts, started) in [(1, 0), (1, 0), (2, 10), (2, 10), (3, 20)] {
        opened.extend(opens(
            &runs.update("uid", &[backing_off(None, restarts, started)]),
        ));
    }
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert!(opened.iter().all(|(_, follow)| !follow));
}

#[test]
fn containers_and_pods_are_keyed_apart() {
    let mut runs = Runs::default();
    let mut side = running(Some("c://1"), 0, 0);
    side.name = "side".into();
    let a = runs.update("pod-a", &[running(Some("c://1"), 0, 0), side]);
    assert_eq!(a.len(), 2);
    // Another pod (another UID) with the same container name and run key.
    assert_eq!(
        runs.update("pod-b", &[running(Some("c://1"), 0, 0)]).len(),
        1
    );
    // A pod gone: its streams are closed, the other pod's are not.
    let gone = runs.gone("pod-a");
    assert_eq!(gone.len(), 2);
    assert!(gone.iter().all(|a| matches!(a, Action::Close { .. })));
    assert_eq!(runs.gone("pod-a"), vec![]);
    assert_eq!(runs.gone("pod-b").len(), 1);
}

#[test]
fn failed_opens_are_retried_with_a_growing_capped_delay() {
    let delays: Vec<u64> = (0..8).map(|a| retry_delay(a).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn objects_applied_for_the_session_are_recognised_by_flux_labels() {
    let ks = labels(&[
        ("kustomize.toolkit.fluxcd.io/name", "run-a"),
        ("kustomize.toolkit.fluxcd.io/namespace", "sbx"),
    ]);
    assert!(applied_by_session(&ks, "run-a", "sbx"));
    assert!(!applied_by_session(&ks, "run-b", "sbx"));
    assert!(!applied_by_session(&ks, "run-a", "other"));
    let hr = labels(&[
        ("helm.toolkit.fluxcd.io/name", "run-a"),
        ("helm.toolkit.fluxcd.io/namespace", "sbx"),
    ]);
    assert!(applied_by_session(&hr, "run-a", "sbx"));
    // A name without the namespace, or template labels, are not enough.
    assert!(!applied_by_session(
        &labels(&[("kustomize.toolkit.fluxcd.io/name", "run-a")]),
        "run-a",
        "sbx"
    ));
    assert!(!applied_by_session(
        &labels(&[("app", "web"), ("pod-template-hash", "abc")]),
        "run-a",
        "sbx"
    ));
}

#[test]
fn the_controller_is_the_owner_followed() {
    let owner = |name: &str, controller: Option<bool>| OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        controller,
        ..Default::default()
    };
    assert_eq!(controller_of(None), None);
    let owners = vec![owner("a", None), owner("b", Some(true))];
    assert_eq!(controller_of(Some(&owners)).unwrap().name, "b");
    assert_eq!(controller_of(Some(&vec![owner("a", Some(false))])), None);
}

fn warning(object: &str, reason: &str, message: &str) -> FluxWarning {
    FluxWarning {
        object: object.into(),
        reason: reason.into(),
        message: message.into(),
    }
}

#[test]
fn a_burst_is_shown_at_once_one_line_per_object_and_reason() {
    let t0 = Instant::now();
    let mut f = WarningFolder::new(Duration::from_secs(30));
    let mut batch: Vec<FluxWarning> = (0..50)
        .map(|i| {
            warning(
                "Kustomization/s",
                "ReconciliationFailed",
                &format!("try {i}"),
            )
        })
        .collect();
    batch.insert(
        3,
        warning("OCIRepository/s", "OCIArtifactPullFailed", "401"),
    );
    let lines = f.burst(batch, t0);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0].text(),
        "Kustomization/s: ReconciliationFailed: try 49 (49 more like it folded into this one)"
    );
    assert_eq!(
        lines[1].text(),
        "OCIRepository/s: OCIArtifactPullFailed: 401"
    );
}

#[test]
fn a_repeated_warning_is_held_counted_and_shown_when_its_period_ends() {
    let t0 = Instant::now();
    let every = Duration::from_secs(30);
    let mut f = WarningFolder::new(every);
    let ks = |m: &str| warning("Kustomization/s", "HealthCheckFailed", m);
    assert_eq!(f.burst(vec![ks("a")], t0).len(), 1);
    // Within the period: held and counted; another reason is shown at once.
    assert_eq!(f.burst(vec![ks("b")], t0 + Duration::from_secs(5)), vec![]);
    assert_eq!(
        f.burst(vec![ks("c"), ks("d")], t0 + Duration::from_secs(6)),
        vec![]
    );
    let other = f.burst(
        vec![warning("Kustomization/s", "BuildFailed", "x")],
        t0 + Duration::from_secs(7),
    );
    assert_eq!(other.len(), 1);
    assert_eq!(f.next_due(), Some(t0 + every));
    assert_eq!(f.due(t0 + Duration::from_secs(29)), vec![]);
    let due = f.due(t0 + every);
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].text(),
        "Kustomization/s: HealthCheckFailed: d (2 more like it folded into this one)"
    );
    assert_eq!(f.next_due(), None);
    // A new period: the next one waits again.
    assert_eq!(
        f.burst(vec![ks("e")], t0 + every + Duration::from_secs(1)),
        vec![]
    );
    assert_eq!(f.next_due(), Some(t0 + every + every));
}

/// 40 warnings at once are all accounted for within the gathering window;
/// one at a time with a pause each, the last would come 80 s later.
#[tokio::test(start_paused = true)]
async fn a_burst_is_reported_within_seconds_not_one_pause_per_warning() {
    let (tx, rx) = mpsc::unbounded_channel();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Duration, String)>::new()));
    let t0 = Instant::now();
    let task = {
        let shown = shown.clone();
        tokio::spawn(fold_warnings(
            rx,
            |w| w.message == "known",
            move |line| shown.lock().unwrap().push((t0.elapsed(), line)),
        ))
    };
    for i in 0..20 {
        tx.send(warning("Kustomization/s", "A", &format!("{i}")))
            .unwrap();
        tx.send(warning(&format!("Deployment/w{i}"), "B", "m"))
            .unwrap();
    }
    tx.send(warning("OCIRepository/s", "C", "known")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let shown = shown.lock().unwrap();
        assert_eq!(shown.len(), 21, "{shown:?}");
        assert!(
            shown.iter().all(|(at, _)| *at <= WARNING_GATHER),
            "{shown:?}"
        );
        assert!(
            shown[0]
                .1
                .ends_with("19 (19 more like it folded into this one)")
        );
    }
    // Another one of the same object and reason: held, then shown when due.
    tx.send(warning("Kustomization/s", "A", "again")).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(shown.lock().unwrap().len(), 21);
    tokio::time::sleep(WARNING_EVERY).await;
    {
        let shown = shown.lock().unwrap();
        assert_eq!(shown.len(), 22, "{shown:?}");
        assert_eq!(shown[21].1, "Kustomization/s: A: again");
    }
    drop(tx);
    task.await.unwrap();
}
