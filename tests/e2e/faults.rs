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

#[tokio::test]
async fn a_stopped_source_controller_is_named_within_seconds_and_the_session_recovers() {
    let harness = Harness::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app.yaml", &cm("1"))]);
    let name = unique("run-srcdown");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();

    stop(&harness, "source-controller");
    let saved = Instant::now();
    std::fs::write(dir.path().join("app.yaml"), cm("2")).unwrap();
    let warning = s.wait_for(
        "a warning naming source-controller",
        Duration::from_secs(30),
        |e| {
            e["event"] == "failed"
                || (e["event"] == "warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("source-controller has not started")))
        },
    );
    assert_eq!(warning["event"], "warning", "{warning}");
    let said_after = saved.elapsed();
    // Said within seconds of the save, not at the 60 s fetch limit.
    assert!(said_after < Duration::from_secs(20), "{said_after:?}");
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("OCIRepository {name}/{name}"))
            && message.contains("kubectl -n flux-system get deploy source-controller"),
        "{message}"
    );

    // The controller comes back: the same sync completes, nothing to redo.
    restart_missing(&harness);
    s.next_sync().unwrap();
    let client = harness.cluster().await.client;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &name);
    let value = cms.get("app").await.unwrap().data.unwrap()["value"].clone();
    assert_eq!(value, "2");

    // A healthy controller draws no such warning.
    std::fs::write(dir.path().join("app.yaml"), cm("3")).unwrap();
    s.next_sync().unwrap();
    let seen_warnings = s
        .seen
        .iter()
        .filter(|e| {
            e["event"] == "warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("has not started"))
        })
        .count();
    assert_eq!(seen_warnings, 1, "{:#?}", s.seen);

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    footprint.assert_gone(&client).await;
}
