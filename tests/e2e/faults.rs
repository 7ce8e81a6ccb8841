//! Flux's own controllers failing under a live session: the session names
//! the controller that is not doing its part, within seconds, and the sync
//! completes by itself once the controller is back. Its own test binary:
//! it stops a controller that every other test needs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_e2e::{Footprint, Harness, RunningSession, run, unique, write_tree};

fn cm(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  value: \"{value}\"\n"
    )
}

/// Stops a component the harness started (SIGTERM, as a Deployment's pod
/// is stopped) and waits until its process is gone.
fn stop(harness: &Harness, component: &str) {
    let pid = std::fs::read_to_string(harness.dir.join(format!("pids/{component}.pid")))
        .unwrap_or_else(|e| panic!("{component} is not running under the harness: {e}"));
    let pid = pid.trim();
    run(Command::new("kill").args(["-TERM", pid]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "{component} ({pid}) did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts again what the harness lacks (`tests/cluster/up` restarts only
/// the components that are not running).
fn restart_missing(harness: &Harness) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    run(Command::new(root.join("tests/cluster/up")).env("GITOPS_HARNESS_DIR", &harness.dir));
}

/// Waits for the session's warning that `controller` has not started on
/// its object, and checks it came within seconds of the save and says what
/// to look at.
fn expect_not_started(s: &mut RunningSession, saved: Instant, controller: &str, object: &str) {
    let needle = format!("{controller} has not started on {object}");
    let warning = s.wait_for(
        &format!("a warning naming {controller}"),
        Duration::from_secs(30),
        |e| {
            e["event"] == "failed"
                || (e["event"] == "warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("has not started on")))
        },
    );
    assert_eq!(warning["event"], "warning", "{warning}");
    let said_after = saved.elapsed();
    // Said within seconds of the save, not at the end of the wait.
    assert!(said_after < Duration::from_secs(20), "{said_after:?}");
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&needle)
            && message.contains(&format!("kubectl -n flux-system get deploy {controller}")),
        "{message}"
    );
}

#[tokio::test]
async fn stopped_flux_controllers_are_named_within_seconds_and_the_session_recovers() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app.yaml", &cm("1"))]);
    let name = unique("run-fluxdown");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &name);

    // Each controller in turn: stopped, named, back; the same sync then
    // completes by itself, nothing to redo.
    for (value, controller, kind) in [
        ("2", "source-controller", "OCIRepository"),
        ("3", "kustomize-controller", "Kustomization"),
    ] {
        stop(&harness, controller);
        let saved = Instant::now();
        std::fs::write(dir.path().join("app.yaml"), cm(value)).unwrap();
        expect_not_started(&mut s, saved, controller, &format!("{kind} {name}/{name}"));
        restart_missing(&harness);
        s.next_sync().unwrap();
        let got = cms.get("app").await.unwrap().data.unwrap()["value"].clone();
        assert_eq!(got, value, "after {controller} came back");
    }

    // Healthy controllers draw no such warning.
    std::fs::write(dir.path().join("app.yaml"), cm("4")).unwrap();
    s.next_sync().unwrap();
    let warnings = s
        .seen
        .iter()
        .filter(|e| {
            e["event"] == "warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("has not started on"))
        })
        .count();
    assert_eq!(warnings, 2, "{:#?}", s.seen);

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    footprint.assert_gone(&client).await;
}
