//! `kubectl gitops-sessions ui` in headless Chromium (Debian's package, driven
//! by tests/ui/drive.mjs and tests/ui/pages.mjs):
//! - two live sessions listed, one turning stale without a reload, sign-in
//!   enforced, a stale session deleted through the page (screenshot at
//!   target/ui-e2e.png);
//! - the page opened through the real opener (`$BROWSER`, headless Chromium)
//!   while every process's command line is read: no secret in any of them,
//!   nor in the browser's URL and history; spent one-time codes, a foreign
//!   `Host` (DNS rebinding) and a foreign `Origin` refused; the cookie
//!   carries the page's live updates;
//! - the logs tab with animation frames that never fire (a background tab)
//!   and a flood of lines: shown anyway, bounded, the dropped count said;
//! - a session with real workloads on the harness's kwok nodes, looked at
//!   desktop-wide (light) and narrow (dark): the list and the sandboxes page
//!   (quota use, expiry), the session page during a rollout that does not
//!   become ready and with a crash-looping pod (the objects tree, the sync
//!   history drawn per phase, Flux conditions, events), its streamed logs
//!   (filtered by container and text), and the list with 200 more sessions
//!   (load, filter, a change pushed through the watch). Screenshots are kept
//!   in target/ui-e2e/.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gitops_e2e::{
    Harness, RunningSession, configmap, output, plugin, serve_page as serve,
    start_page as start_ui, unique, wait_namespace_gone, write_tree,
};

#[tokio::test]
async fn the_sessions_page_updates_live_and_deletes_a_stale_session() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = output(&mut Command::new(root.join("ui/setup")));
    assert_eq!(setup.code, Some(0), "tests/ui/setup: {setup:?}");

    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tree(a.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    write_tree(b.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    let (live, doomed) = (unique("ui-live"), unique("ui-doomed"));
    let mut s1 = RunningSession::start(&harness, a.path(), &["--name", &live]);
    let mut s2 = RunningSession::start(
        &harness,
        b.path(),
        &["--name", &doomed, "--lease-duration", "3s"],
    );
    s1.next_sync().unwrap();
    s2.next_sync().unwrap();

    let (mut ui, _, url, drain) = serve(&harness);

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
            result["without_cookie"].as_u64(),
            result["wrong_code"].as_u64()
        ),
        (Some(401), Some(401))
    );
    assert_eq!(
        result["live_heartbeats"],
        serde_json::json!(["live", "live"])
    );
    for col in ["Name", "Namespace", "Mode", "Status", "Heartbeat", "User"] {
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

const WAIT: Duration = Duration::from_secs(120);

fn workload(name: &str, replicas: u32, fail: Option<&str>) -> String {
    let label = fail
        .map(|f| format!("        gitops.harness/fail: {f}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n{label}    spec:\n      containers:\n      - name: {name}\n        image: example/{name}:1\n        resources:\n          requests:\n            cpu: 100m\n"
    )
}

/// The app: Deployments web (2 replicas) and api (1), a Service, a ConfigMap.
fn app(dir: &Path, web_fail: Option<&str>, api_fail: Option<&str>) {
    write_tree(
        dir,
        &[
            ("deploy/web.yaml", &workload("web", 2, web_fail)),
            ("deploy/api.yaml", &workload("api", 1, api_fail)),
            (
                "deploy/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n",
            ),
            ("deploy/config.yaml", &configmap("app", &[("k", "v")])),
            (
                "deploy/kustomization.yaml",
                "resources:\n- web.yaml\n- api.yaml\n- service.yaml\n- config.yaml\n",
            ),
        ],
    );
}

/// A container log line as the kubelet (here kwok) stores it.
fn cri(n: u32, text: &str) -> String {
    format!(
        "2026-01-02T03:04:{:02}.000000000Z stdout F {text}\n",
        n % 60
    )
}

/// Runs tests/ui/pages.mjs in `mode`; what it saw.
fn pages(url: &str, mode: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.arg(root.join("ui/pages.mjs"))
        .current_dir(root.join("ui"))
        .env("UI_URL", url)
        .env("MODE", mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output(&mut cmd);
    let result: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("pages.mjs {mode} printed {out:?}: {e}"));
    assert!(result.get("error").is_none(), "{mode}: {result:#}");
    assert_eq!(out.code, Some(0), "{out:?}");
    for w in ["desktop", "narrow"] {
        if let Some(r) = result.get(w) {
            assert_eq!(
                r["script_errors"],
                serde_json::json!([]),
                "{mode} {w}: {r:#}"
            );
        }
    }
    result
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn object<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == id)
        .unwrap_or_else(|| panic!("no {id} in {r:#}"))
}

#[tokio::test]
async fn the_session_page_shows_rollouts_failing_pods_and_logs_at_two_widths() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = output(&mut Command::new(root.join("ui/setup")));
    assert_eq!(setup.code, Some(0), "tests/ui/setup: {setup:?}");
    let shots = root.parent().unwrap().join("target/ui-e2e");
    std::fs::create_dir_all(&shots).unwrap();

    // A sandbox with a quota and an expiry.
    let sbx = unique("ui-sbx");
    let created = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &sbx, "--quota", "cpu=4,pods=20", "--ttl", "2h"]),
    );
    assert_eq!(created.code, Some(0), "{created:?}");

    // kwok plays the kubelet: each container's log is one of these files.
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    for (c, lines) in [
        (
            "web",
            [
                "web: listening on :8080",
                "web: GET /healthz 200",
                "web: ready to serve",
            ],
        ),
        (
            "api",
            [
                "api: connected to db",
                "api: ready to serve requests",
                "api: GET /v1/items 200",
            ],
        ),
    ] {
        let file = logs.path().join(format!("{c}.log"));
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| cri(i as u32, l))
            .collect();
        std::fs::write(&file, text).unwrap();
        harness.kubectl_apply(&format!(
            "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: {sbx}-{c}\nspec:\n  selector:\n    matchNamespaces: [{sbx}]\n  logs:\n  - containers: [{c}]\n    logsFile: {}\n    follow: true\n",
            file.display()
        ));
    }

    app(dir.path(), None, None);
    let name = unique("ui-app");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["deploy", "--name", &name, "--sandbox", &sbx],
    );
    s.next_sync().unwrap();

    let (mut ui, _, url, drain) = serve(&harness);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir
        .path()
        .join("signed-in.json")
        .display()
        .to_string();
    let env = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("UI_STATE", state.clone()),
            ("SESSION", name.clone()),
            ("NAMESPACE", sbx.clone()),
            ("SANDBOX", sbx.clone()),
            ("SHOTS", shots.display().to_string()),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let run = |mode: &str, extra: &[(&'static str, String)]| {
        let e = env(extra);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pages(&url, mode, &e)
    };

    // The list and the sandboxes page.
    let list = run("list", &[]);
    for w in ["desktop", "narrow"] {
        let r = &list[w];
        assert_eq!(r["status"], "Ready", "{w}: {r:#}");
        assert_eq!(r["heartbeat"], "live", "{w}: {r:#}");
        assert_eq!(r["status_badge"], "✓ Ready", "{w}: {r:#}");
        assert_eq!(r["heartbeat_text"], "live", "{w}: {r:#}");
        let mode = r["mode"].as_str().unwrap();
        assert!(mode.starts_with("Cluster mode Run"), "{w}: {mode}");
        assert!(mode.contains("live session"), "{w}: {mode}");
        assert!(
            r["counts"].as_str().unwrap().contains("Ready"),
            "{w}: {r:#}"
        );
        assert!(
            r["age_before"].as_str().unwrap().ends_with(" ago"),
            "{w}: {r:#}"
        );
        assert_ne!(
            r["age_before"], r["age_after"],
            "relative times tick: {w}: {r:#}"
        );
        assert!(
            r["live_status"].as_str().unwrap().starts_with("live"),
            "{w}: {r:#}"
        );
        assert_eq!(r["unlabelled"], serde_json::json!([]), "{w}: {r:#}");
        assert_eq!(r["fits"], true, "{w}: the page scrolls sideways: {r:#}");
        assert_eq!(r["slash_focuses_search"], "filter-text", "{w}: {r:#}");
        assert_eq!(r["filtered_visible"], 1, "{w}: {r:#}");
        let quota = strs(&r["sandbox_quota"]);
        assert!(
            quota
                .iter()
                .any(|q| q.starts_with("cpu") && q.ends_with(" / 4")),
            "{w}: {quota:?}"
        );
        // Three pods of 100m each, counted by the API server's quota controller.
        assert!(quota.iter().any(|q| q == "pods 3 / 20"), "{w}: {quota:?}");
        let expires = r["sandbox_expires"].as_str().unwrap();
        assert!(
            expires.starts_with("in 1h 5") || expires.starts_with("in 2h"),
            "{w}: {expires}"
        );
        assert_eq!(r["sandbox_sessions"], "1", "{w}: {r:#}");
        assert_eq!(r["sandbox_fits"], true, "{w}: {r:#}");
    }
    let headers = strs(&list["desktop"]["headers"]);
    for col in [
        "Name",
        "Namespace",
        "Mode",
        "Source",
        "Revision",
        "Status",
        "Last sync",
        "Heartbeat",
        "User",
        "Age",
    ] {
        assert!(headers.iter().any(|h| h == col), "{headers:?}");
    }

    // A rollout that does not become ready: web's new pods never pass their readiness probe.
    app(dir.path(), Some("unready"), None);
    s.wait_for("web's rollout to start", WAIT, |e| {
        e["event"] == "rollout"
            && e["object"] == format!("Deployment/{sbx}/web")
            && e["done"] == false
    });
    let rollout = run("rollout", &[]);
    for w in ["desktop", "narrow"] {
        let r = &rollout[w]["session"];
        let head = r["head"].as_str().unwrap();
        assert!(
            head.contains("Reconciling") && head.contains("live"),
            "{w}: {head}"
        );
        assert_eq!(
            r["kinds"],
            serde_json::json!(["Deployment", "Service", "ConfigMap"]),
            "{w}: {r:#}"
        );
        let web = object(r, "Deployment/web");
        assert_eq!(web["tone"], "progress", "{w}: {web:#}");
        let line = web["text"].as_str().unwrap();
        assert!(line.contains("/2 ready · rolling out"), "{w}: {line}");
        let reason = web["reason"].as_str().unwrap();
        let lower = reason.to_lowercase();
        assert!(
            lower.contains("not ready") || lower.contains("containersnotready"),
            "{w}: {reason}"
        );
        assert!(
            web["pods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["tone"] == "progress"),
            "an unready pod under web: {w}: {web:#}"
        );
        let api = object(r, "Deployment/api");
        assert_eq!(api["tone"], "ok", "{w}: {api:#}");
        assert!(
            api["text"].as_str().unwrap().contains("1/1 ready"),
            "{w}: {api:#}"
        );
        let cm = object(r, "ConfigMap/app");
        assert!(
            cm["text"].as_str().unwrap().contains("applied"),
            "{w}: {cm:#}"
        );
        // The first sync's phases, drawn: five bars, each phase timed.
        let history = strs(&r["history"]);
        assert!(
            history.iter().any(|h| h.contains("Ready")),
            "{w}: {history:?}"
        );
        assert!(r["history_bars"].as_u64().unwrap() >= 5, "{w}: {r:#}");
        let label = r["history_labels"][0].as_str().unwrap();
        for phase in [
            "Validate: ",
            "Build: ",
            "Push: ",
            "Fetch (Flux): ",
            "Apply + health: ",
        ] {
            assert!(label.contains(phase), "{w}: {label}");
        }
        assert!(
            strs(&r["conditions"])
                .iter()
                .any(|c| c.starts_with("Kustomization | Ready | ")),
            "{w}: {r:#}"
        );
        assert!(!strs(&r["events"]).is_empty(), "{w}: {r:#}");
        assert_eq!(r["unlabelled"], serde_json::json!([]), "{w}: {r:#}");
        assert_eq!(r["fits"], true, "{w}: {r:#}");

        let l = &rollout[w]["logs"];
        assert_eq!(l["logs_tab_selected"], "true", "{w}: {l:#}");
        assert_eq!(l["logs_panel_visible"], true, "{w}: {l:#}");
        let lines = strs(&l["lines"]);
        assert!(
            lines
                .iter()
                .any(|x| x.contains("/web") && x.ends_with("web: listening on :8080")),
            "{w}: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|x| x.contains("/api") && x.ends_with("api: connected to db")),
            "{w}: {lines:?}"
        );
        let mut containers = strs(&l["containers"]);
        containers.sort();
        assert_eq!(containers, ["api", "web"], "{w}: {l:#}");
        assert!(strs(&l["pods"]).len() >= 3, "{w}: {l:#}");
        let api_only = strs(&l["api_only"]);
        assert!(
            !api_only.is_empty() && api_only.iter().all(|x| x.contains("/api ")),
            "{w}: {api_only:?}"
        );
        let filtered = strs(&l["filtered"]);
        assert!(
            !filtered.is_empty() && filtered.iter().all(|x| x.contains("ready to serve")),
            "{w}: {filtered:?}"
        );
        assert!(
            l["status"]
                .as_str()
                .unwrap()
                .contains(&format!("namespace {sbx}")),
            "{w}: {l:#}"
        );
        assert_eq!(l["follow_checked"], true, "{w}: {l:#}");
        assert_eq!(l["unlabelled"], serde_json::json!([]), "{w}: {l:#}");
    }

    // A crash-looping pod: api's new pod crashes, the sync fails at apply.
    app(dir.path(), None, Some("crashloop"));
    let failed = s.wait_for("the crash loop to fail the sync", WAIT, |e| {
        e["event"] == "failed"
    });
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("CrashLoopBackOff"),
        "{failed}"
    );
    let failing = run("failing", &[]);
    for w in ["desktop", "narrow"] {
        let r = &failing[w]["session"];
        let head = r["head"].as_str().unwrap();
        assert!(head.contains("Last sync failed at apply"), "{w}: {head}");
        let api = object(r, "Deployment/api");
        assert_eq!(api["tone"], "bad", "{w}: {api:#}");
        assert!(
            api["reason"].as_str().unwrap().contains("CrashLoopBackOff"),
            "{w}: {api:#}"
        );
        let crashing = api["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tone"] == "bad")
            .unwrap_or_else(|| panic!("a failing pod under api: {w}: {api:#}"));
        let text = crashing["text"].as_str().unwrap();
        assert!(
            text.contains("CrashLoopBackOff") && text.contains("restart"),
            "{w}: {text}"
        );
        // The history: the failed sync first, failed at apply, after the Ready one.
        let history = strs(&r["history"]);
        assert!(history[0].contains("Failed at apply"), "{w}: {history:?}");
        assert!(
            history.iter().any(|h| h.contains("Ready")),
            "{w}: {history:?}"
        );
        assert!(
            r["history_labels"][0]
                .as_str()
                .unwrap()
                .contains("(failed)"),
            "{w}: {r:#}"
        );
        assert!(
            strs(&r["events"]).iter().any(|e| e.contains("Warning")),
            "{w}: {r:#}"
        );
        assert_eq!(r["fits"], true, "{w}: {r:#}");
    }

    // 200 more sessions (their Leases, as the bench makes them): still quick.
    let bench = unique("ui-many");
    gitops_e2e::create_namespace(&client, &bench).await;
    let leases: String = (0..200)
        .map(|i| format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: bench-{i:03}\n  namespace: {bench}\n  labels: {{app.kubernetes.io/managed-by: kubectl-gitops, gitops.kubectl.dev/component: session, gitops.kubectl.dev/session: bench-{i:03}}}\n  annotations: {{gitops.kubectl.dev/mode: sandboxed, gitops.kubectl.dev/dir: /src/bench-{i:03}, gitops.kubectl.dev/pid: \"1\"}}\nspec: {{holderIdentity: bench@host, leaseDurationSeconds: 30}}\n---\n"
        ))
        .collect();
    harness.kubectl_apply(&leases);
    let kubeconfig = harness
        .kube_args()
        .windows(2)
        .find(|w| w[0] == "--kubeconfig")
        .map(|w| w[1].clone())
        .expect("the harness's --kubeconfig");
    let scale = run(
        "scale",
        &[("BENCH_NS", bench.clone()), ("KUBECONFIG", kubeconfig)],
    );
    let r = &scale["desktop"];
    assert!(r["rows"].as_u64().unwrap() >= 201, "{r:#}");
    assert!(r["load_ms"].as_u64().unwrap() < 5000, "{r:#}");
    assert!(r["filter_ms"].as_f64().unwrap() < 100.0, "{r:#}");
    assert_eq!(r["filtered_visible"], 10, "bench-010..019: {r:#}");
    assert_eq!(r["shown_count"], "10", "{r:#}");
    assert!(r["update_ms"].as_u64().unwrap() < 5000, "{r:#}");
    // No long task (over 50 ms, as browsers count them) beyond 200 ms after the load.
    assert!(r["longest_task_ms"].as_f64().unwrap() < 200.0, "{r:#}");
    gitops_e2e::delete_namespace(&client, &bench).await;

    let _ = ui.kill();
    let _ = ui.wait();
    let _ = drain.join();
    for shot in [
        "list-desktop",
        "list-narrow",
        "sandboxes-desktop",
        "sandboxes-narrow",
        "session-rollout-desktop",
        "session-rollout-narrow",
        "logs-desktop",
        "logs-narrow",
        "session-failing-desktop",
        "session-failing-narrow",
    ] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}");
    }
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    let deleted = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["delete", &sbx]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    wait_namespace_gone(&client, &sbx).await;
}

/// A session's Lease as `kubectl gitops-run` writes it (enough for the
/// page to list the session and show its page).
fn session_lease(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app.kubernetes.io/managed-by: kubectl-gitops, gitops.kubectl.dev/component: session, gitops.kubectl.dev/session: {name}}}\n  annotations: {{gitops.kubectl.dev/mode: sandboxed, gitops.kubectl.dev/dir: /src/{name}, gitops.kubectl.dev/pid: \"1\"}}\nspec: {{holderIdentity: ui@host, leaseDurationSeconds: 30}}\n"
    )
}

/// Reads every process's command line (`/proc/*/cmdline`) over and over
/// until `stop`; the distinct ones seen, and how many sweeps were made.
fn watch_command_lines(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(std::collections::BTreeSet<String>, usize)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut sweeps = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(raw) = std::fs::read(e.path().join("cmdline"))
                    && !raw.is_empty()
                {
                    seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                }
            }
            sweeps += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (seen, sweeps)
    })
}

/// One raw HTTP/1.1 request to 127.0.0.1:`port`; the status and body.
fn raw_http(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn kubeconfig(harness: &Harness) -> String {
    harness
        .kube_args()
        .windows(2)
        .find(|w| w[0] == "--kubeconfig")
        .map(|w| w[1].clone())
        .expect("the harness's --kubeconfig")
}

/// Ends the page's server (and the browser its opener started, by the
/// process id the wrapper wrote) and deletes the test's namespace when a
/// test ends, passed or not.
struct Stop {
    ui: std::process::Child,
    browser_pid: Option<std::path::PathBuf>,
    /// `(kubeconfig, namespace)`.
    namespace: (String, String),
}

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.ui.kill();
        let _ = self.ui.wait();
        if let Some(pid) = self
            .browser_pid
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let (kubeconfig, ns) = &self.namespace;
        let _ = Command::new("kubectl")
            .args(["--kubeconfig", kubeconfig, "delete", "namespace", ns])
            .args(["--wait=false", "--ignore-not-found"])
            .stdout(Stdio::null())
            .status();
    }
}

/// Runs tests/ui/secure.mjs in `mode`; what it saw.
fn secure(mode: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("node");
    cmd.arg(root.join("ui/secure.mjs"))
        .current_dir(root.join("ui"))
        .env("MODE", mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output(&mut cmd);
    let result: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("secure.mjs {mode} printed {out:?}: {e}"));
    assert!(result.get("error").is_none(), "{mode}: {result:#}");
    assert_eq!(out.code, Some(0), "{out:?}");
    result
}

#[tokio::test]
async fn the_page_opens_with_no_secret_in_any_command_line_url_or_history() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = output(&mut Command::new(root.join("ui/setup")));
    assert_eq!(setup.code, Some(0), "tests/ui/setup: {setup:?}");
    let ns = unique("ui-sec");
    gitops_e2e::create_namespace(&client, &ns).await;
    harness.kubectl_apply(&session_lease(&ns, "before"));

    let capture = tempfile::tempdir().unwrap();
    let cdp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cdp_port = cdp.local_addr().unwrap().port();
    drop(cdp);

    // Every process's command line, read while the page opens and is used.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanner = watch_command_lines(stop.clone());
    let mut cmd = plugin("kubectl-gitops_sessions");
    cmd.args(harness.kube_args())
        .arg("ui")
        .env("BROWSER", root.join("ui/browser"))
        .env("UI_CAPTURE", capture.path())
        .env("UI_CDP_PORT", cdp_port.to_string());
    let (ui, page, login, _drain) = start_ui(cmd);
    let stop_ui = Stop {
        ui,
        browser_pid: Some(capture.path().join("pid")),
        namespace: (kubeconfig(&harness), ns.clone()),
    };
    let port: u16 = page
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {page}"));

    let launcher_copy = capture.path().join("launcher.html");
    let added = unique("ui-pushed");
    let lease = session_lease(&ns, &added);
    let env = [
        ("UI_PAGE", page.as_str()),
        ("UI_LOGIN", login.as_str()),
        ("CDP_PORT", &cdp_port.to_string()),
        ("LAUNCHER_COPY", &launcher_copy.display().to_string()),
        ("LEASE_YAML", lease.as_str()),
        ("NEW_SESSION", added.as_str()),
        ("KUBECONFIG", &kubeconfig(&harness)),
    ]
    .map(|(k, v)| (k, v.to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = secure("open", &env);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (lines, sweeps) = scanner.join().unwrap();

    // What was opened: a file path; the file and its code are gone now.
    let opened = std::fs::read_to_string(capture.path().join("opened")).unwrap();
    let opened = opened.trim();
    let launcher = std::fs::read_to_string(&launcher_copy).unwrap();
    let launcher_code = launcher
        .split("name=\"code\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no code in the launcher: {launcher}"))
        .to_string();
    assert!(
        !Path::new(opened).exists(),
        "the launcher {opened} outlived its use"
    );
    let printed_code = login.split("code=").nth(1).unwrap().to_string();
    let cookie = r["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("kubectl-gitops-ui-{port}"))
        .unwrap_or_else(|| panic!("no cookie for the page: {r:#}"))
        .clone();
    let secret = cookie["value"].as_str().unwrap().to_string();
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(r["document_cookie"], "", "scripts cannot read it: {r:#}");

    // The scan ran while the browser was started on the launcher ...
    assert!(
        lines
            .iter()
            .any(|l| l.contains("chromium") && l.contains(opened)),
        "the scan ({sweeps} sweeps) never saw the browser start on {opened}"
    );
    // ... and no command line ever held a secret.
    for (what, s) in [
        ("the cookie's secret", &secret),
        ("the launcher's code", &launcher_code),
        ("the printed code", &printed_code),
    ] {
        assert!(s.len() >= 32, "{what}: {s}");
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(s.as_str())).collect();
        assert!(leaks.is_empty(), "{what} in a command line: {leaks:?}");
    }

    // The browser shows the page; no secret in its URL or its tab's history.
    assert_eq!(r["url"], page, "{r:#}");
    assert_eq!(r["printed_url"], page, "{r:#}");
    for key in ["history", "printed_history", "links"] {
        for u in strs(&r[key]) {
            for s in [&secret, &launcher_code, &printed_code] {
                assert!(!u.contains(s.as_str()), "{key}: {u}");
            }
            assert!(!u.contains("token") && !u.contains("code="), "{key}: {u}");
        }
    }
    assert_eq!(r["pushed_without_reload"], true, "{r:#}");

    // Spent codes are refused.
    assert_eq!(r["printed_again"]["status"], 401, "{r:#}");
    assert_eq!(r["launcher_again"]["status"], 401, "{r:#}");
    assert_eq!(r["launcher_again"]["cookie"], serde_json::Value::Null);

    // With the cookie: served from our own Host and Origin only.
    let get = |host: &str, extra: &str| {
        raw_http(
            port,
            &format!(
                "GET / HTTP/1.1\r\nHost: {host}\r\nCookie: kubectl-gitops-ui-{port}={secret}\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    let (ok, body) = get(&format!("127.0.0.1:{port}"), "");
    assert_eq!(ok, 200, "{body}");
    assert!(body.contains("sessions-body"));
    assert_eq!(get(&format!("localhost:{port}"), "").0, 200);
    let (status, body) = get(&format!("evil.example:{port}"), "");
    assert_eq!(status, 403, "DNS rebinding: {body}");
    assert!(
        body.starts_with("refused: ") && !body.contains('<'),
        "{body}"
    );
    let (status, body) = get(
        &format!("127.0.0.1:{port}"),
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(status, 403, "a foreign Origin: {body}");
    let (status, body) = get(&format!("127.0.0.1:{port}"), "Origin: null\r\n");
    assert_eq!(status, 403, "Origin null outside /login: {body}");
    let (status, body) = raw_http(
        port,
        &format!(
            "POST /sandboxes/{ns}/delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: kubectl-gitops-ui-{port}={secret}\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403, "a foreign page's delete: {body}");
    let (status, _) = raw_http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 401, "without the cookie");
    let (status, _) = raw_http(
        port,
        &format!(
            "GET /login?code={printed_code} HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403, "sign-in through another host name");

    drop(stop_ui);
}

#[tokio::test]
async fn the_logs_tab_stays_bounded_without_animation_frames_and_says_what_was_dropped() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = output(&mut Command::new(root.join("ui/setup")));
    assert_eq!(setup.code, Some(0), "tests/ui/setup: {setup:?}");
    let ns = unique("ui-flood");
    gitops_e2e::create_namespace(&client, &ns).await;
    harness.kubectl_apply(&session_lease(&ns, "flood"));
    let (ui, page, login, _drain) = serve(&harness);
    let stop_ui = Stop {
        ui,
        browser_pid: None,
        namespace: (kubeconfig(&harness), ns.clone()),
    };
    let r = secure(
        "flood",
        &[
            ("UI_PAGE", &page),
            ("UI_LOGIN", &login),
            ("NAMESPACE", &ns),
            ("SESSION", "flood"),
        ],
    );
    drop(stop_ui);
    assert_eq!(r["raf_fires"], false, "{r:#}");
    assert_eq!(r["script_errors"], serde_json::json!([]), "{r:#}");
    // The last line is shown; at most 5,000 are kept.
    let shown = r["shown"].as_u64().unwrap();
    assert!((1000..=5000).contains(&shown), "{r:#}");
    assert_eq!(
        strs(&r["markers"]),
        ["… 1234 lines dropped here: the page could not keep up"],
        "{r:#}"
    );
    let status = r["status"].as_str().unwrap();
    assert!(
        status.contains("20000 lines from 1 pod")
            && status.contains("1234 lines dropped (the page fell behind)"),
        "{status}"
    );
}
