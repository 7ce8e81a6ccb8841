//! `kubectl gitops-sessions ui` in headless Chromium (Debian's package, driven
//! by tests/ui/drive.mjs): two live sessions listed, one turning stale without
//! a reload, the token enforced, a stale session deleted through the page.
//! The screenshot is left at target/ui-e2e.png.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gitops_e2e::{
    Harness, RunningSession, output, plugin, unique, wait_namespace_gone, write_tree,
};

fn cm() -> String {
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  k: v\n".to_string()
}

#[tokio::test]
async fn the_sessions_page_updates_live_and_deletes_a_stale_session() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = output(&mut Command::new(root.join("ui/setup")));
    assert_eq!(setup.code, Some(0), "tests/ui/setup: {setup:?}");

    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tree(a.path(), &[("app.yaml", &cm())]);
    write_tree(b.path(), &[("app.yaml", &cm())]);
    let (live, doomed) = (unique("ui-live"), unique("ui-doomed"));
    let mut s1 = RunningSession::start(&harness, a.path(), &["--name", &live]);
    let mut s2 = RunningSession::start(
        &harness,
        b.path(),
        &["--name", &doomed, "--lease-duration", "3s"],
    );
    s1.next_sync().unwrap();
    s2.next_sync().unwrap();

    let mut ui = plugin("kubectl-gitops_sessions")
        .args(harness.kube_args())
        .args(["ui", "--no-open"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep reading the server's stdout for the whole test: closing the pipe
    // would end it, quietly, at its next line, as for any Unix tool.
    let mut stdout = std::io::BufReader::new(ui.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("the URL")
        .to_string();

    let screenshot = root.parent().unwrap().join("target/ui-e2e.png");
    let driven = output(
        Command::new("node")
            .arg(root.join("ui/drive.mjs"))
            .current_dir(root.join("ui"))
            .env("UI_URL", &url)
            .env("LIVE", &live)
            .env("DOOMED", &doomed)
            .env("DOOMED_PID", s2.child.id().to_string())
            .env("DOOMED_NS", &doomed)
            .env("SCREENSHOT", &screenshot),
    );
    let _ = ui.kill();
    let _ = ui.wait();
    let _ = drain.join();
    let result: serde_json::Value = serde_json::from_str(driven.stdout.trim())
        .unwrap_or_else(|e| panic!("drive.mjs printed {driven:?}: {e}"));
    assert!(result.get("error").is_none(), "{result:#}");
    assert_eq!(driven.code, Some(0), "{driven:?}");
    assert_eq!(
        (
            result["without_token"].as_u64(),
            result["wrong_token"].as_u64()
        ),
        (Some(401), Some(401))
    );
    assert_eq!(
        result["live_heartbeats"],
        serde_json::json!(["live", "live"])
    );
    for col in ["NAME", "NAMESPACE", "MODE", "STATUS", "HEARTBEAT", "USER"] {
        assert!(
            result["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h == col),
            "{result:#}"
        );
    }
    assert_eq!(result["filtered_visible"], 1);
    assert_eq!(result["stale_without_reload"], true);
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains(&format!("session {doomed} deleted")),
        "{result:#}"
    );
    assert!(screenshot.is_file());
    // The stale session's objects are gone from the cluster.
    wait_namespace_gone(&client, &doomed).await;
    assert_eq!(
        s2.wait_exit(Duration::from_secs(10)),
        None,
        "the page's script killed it with SIGKILL"
    );
    s1.signal("INT");
    assert_eq!(s1.wait_exit(Duration::from_secs(90)), Some(0));
}
