//! An API server restart in the middle of a session: the session resumes.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gitops_e2e::{Harness, RunningSession, configmap, run, unique, write_tree};

#[tokio::test]
async fn a_session_resumes_after_the_api_server_restarts() {
    let harness = Harness::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-restart");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();

    // Crash the API server the harness started, then let `up` start it again.
    let pid = std::fs::read_to_string(harness.dir.join("pids/kube-apiserver.pid")).unwrap();
    run(Command::new("kill").args(["-KILL", pid.trim()]));
    let proc = format!("/proc/{}", pid.trim());
    for _ in 0..100 {
        if !Path::new(&proc).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    run(Command::new(root.join("tests/cluster/up")).env("GITOPS_HARNESS_DIR", &harness.dir));

    // The next save syncs as if nothing happened.
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    s.next_sync().unwrap();
    let client = harness.cluster().await.client;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, &name);
    let value = cms.get("app").await.unwrap().data.unwrap()["value"].clone();
    assert_eq!(value, "2");
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    assert!(s.seen.iter().any(|e| e["event"] == "cleaned"));
}
