//! Sessions with real workloads: Deployments scheduled by kube-scheduler
//! onto kwok nodes, rolled out by kube-controller-manager, health-checked by
//! Flux. Asserts on what the API server holds (and what the port-forward
//! answers), and on the session's events for what it reports.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use gitops_e2e::{Harness, RunningSession, configmap, eventually, plugin, unique, write_tree};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(90);

fn deployment(replicas: u32, template_labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n{template_labels}    spec:\n      containers:\n      - name: web\n        image: example/web:1\n        ports:\n        - name: http\n          containerPort: 8080\n        resources:\n          requests:\n            cpu: 100m\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n";
/// A bare Pod beside the Deployment, for `--port-forward resource=pod/solo`.
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\n  labels:\n    app: solo\nspec:\n  containers:\n  - name: solo\n    image: example/solo:1\n    ports:\n    - containerPort: 8080\n    resources:\n      requests:\n        cpu: 50m\n";
const KUSTOMIZATION: &str = "resources:\n- deployment.yaml\n- service.yaml\n";
const KUSTOMIZATION_WITH_POD: &str = "resources:\n- deployment.yaml\n- service.yaml\n- pod.yaml\n";

fn app(dir: &std::path::Path, replicas: u32, template_labels: &str) {
    write_tree(
        dir,
        &[
            (
                "deploy/deployment.yaml",
                &deployment(replicas, template_labels),
            ),
            ("deploy/service.yaml", SERVICE),
            ("deploy/kustomization.yaml", KUSTOMIZATION),
        ],
    );
}

/// `deployment`'s YAML moved to the harness's real Node, running `image`.
fn real_deployment(replicas: u32, template_labels: &str, image: &str) -> String {
    deployment(replicas, template_labels)
        .replace("image: example/web:1", &format!("image: {image}"))
        .replace(
            "    spec:\n      containers:",
            &format!(
                "    spec:\n{}      containers:",
                gitops_e2e::on_real_node(6)
            ),
        )
}

/// `app` on the harness's real Node, running `image`.
fn real_app(dir: &std::path::Path, replicas: u32, template_labels: &str, image: &str) {
    write_tree(
        dir,
        &[
            (
                "deploy/deployment.yaml",
                &real_deployment(replicas, template_labels, image),
            ),
            ("deploy/service.yaml", SERVICE),
            ("deploy/kustomization.yaml", KUSTOMIZATION),
        ],
    );
}

/// The app on the harness's real Node, plus a bare Pod: both run hello-web
/// (tests/peers/hello-web: GET / answers "hello (from POD)") from the
/// harness registry.
fn real_app_with_pod(
    harness: &Harness,
    dir: &std::path::Path,
    replicas: u32,
    template_labels: &str,
) {
    let image = harness.image("hello-web:1.0");
    real_app(dir, replicas, template_labels, &image);
    write_tree(
        dir,
        &[
            (
                "deploy/pod.yaml",
                &POD.replace("image: example/solo:1", &format!("image: {image}"))
                    .replace(
                        "spec:\n  containers:",
                        &format!("spec:\n{}  containers:", gitops_e2e::on_real_node(2)),
                    ),
            ),
            ("deploy/kustomization.yaml", KUSTOMIZATION_WITH_POD),
        ],
    );
}

/// The pod named in hello-web's answer "hello (from POD)\n".
fn answered_by(body: &str) -> String {
    body.strip_prefix("hello (from ")
        .and_then(|b| b.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("not hello-web's answer: {body:?}"))
        .to_string()
}

/// GET / on 127.0.0.1:`port`: the body.
fn get(port: u16) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&response);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|l| l.trim().parse::<usize>().ok());
                    if len.is_some_and(|l| body.len() >= l) {
                        return Ok(body.to_string());
                    }
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "incomplete answer: {}",
        String::from_utf8_lossy(&response)
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An event already seen, or the next one matching `pred`.
fn seen_or_wait(
    s: &mut RunningSession,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    if let Some(e) = s.seen.iter().find(|e| pred(e)) {
        return e.clone();
    }
    s.wait_for(what, WAIT, pred)
}

/// Waits for a synced event and returns the rollout events seen since the last call.
fn synced(s: &mut RunningSession) -> Vec<serde_json::Value> {
    let from = s.seen.len();
    let r = s.next_sync();
    assert!(
        r.is_ok(),
        "sync failed: {r:?}; events:\n{}",
        s.seen
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.seen[from..]
        .iter()
        .filter(|e| e["event"] == "rollout")
        .cloned()
        .collect()
}

async fn nothing_derived_left(client: &Client, ns: &str) {
    eventually("pods and ReplicaSets to be gone", WAIT, || async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let e = |e: kube::Error| e.to_string();
        let left = pods
            .list(&ListParams::default())
            .await
            .map_err(e)?
            .items
            .len()
            + rss
                .list(&ListParams::default())
                .await
                .map_err(e)?
                .items
                .len()
            + deps
                .list(&ListParams::default())
                .await
                .map_err(e)?
                .items
                .len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        }
    })
    .await;
}

/// On the harness's real Node: the pods run hello-web, so each
/// port-forward reaches the HTTP server inside a container (which names its
/// pod), and the log lines are what the process printed.
#[tokio::test]
async fn a_deployment_rolls_out_scales_is_forwarded_to_and_logs_then_leaves_nothing() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    real_app_with_pod(&harness, dir.path(), 1, "");
    let ns = unique("run-web");
    // One forward of each form: a Service port, a Deployment's and a Pod's container port.
    let (local, local_deploy, local_pod) = (free_port(), free_port(), free_port());
    let forward = format!("resource=svc/web,port={local}:80");
    let forward_deploy = format!("resource=deploy/web,port={local_deploy}:8080");
    let forward_pod = format!("resource=pod/solo,port={local_pod}:8080");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &[
            "deploy",
            "--name",
            &ns,
            "--port-forward",
            &forward,
            "--port-forward",
            &forward_deploy,
            "--port-forward",
            &forward_pod,
            "--logs",
        ],
    );
    let rollouts = synced(&mut s);
    assert!(
        rollouts
            .iter()
            .any(|e| e["object"] == format!("Deployment/{ns}/web") && e["done"] == true),
        "{rollouts:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));

    // Each port-forward answers through the API server, the kubelet and
    // containerd, from the server in the container: it names its pod.
    let web_pods = |labels: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            Api::<Pod>::namespaced(client, &ns)
                .list(&ListParams::default().labels(labels))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<String>>()
        }
    };
    let first_web = web_pods("app=web").await;
    for (port, what, from) in [
        (local, "svc/web", first_web.clone()),
        (local_deploy, "deploy/web", first_web.clone()),
        (local_pod, "pod/solo", vec!["solo".to_string()]),
    ] {
        let body = eventually(
            &format!("the port-forward to {what} to answer"),
            WAIT,
            || async { get(port) },
        )
        .await;
        assert!(
            from.contains(&answered_by(&body)),
            "{what}: {body:?} not from {from:?}"
        );
    }
    // The pod's log line, through pods/log: what hello-web printed.
    seen_or_wait(&mut s, "a log line", |e| {
        e["event"] == "log" && e["line"] == "hello-web: listening on :8080"
    });
    // `gitops-sessions logs NAME` follows the same pods, from another terminal.
    let mut logs = plugin("kubectl-gitops_sessions")
        .args(harness.kube_args())
        .args(["logs", &ns])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let log_out = logs.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log_out)
            .lines()
            .map_while(Result::ok)
        {
            if log_tx.send(line).is_err() {
                break;
            }
        }
    });
    let logged = |rx: &std::sync::mpsc::Receiver<String>, want: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if want(&l) {
                return l;
            }
            lines.push(l);
        }
        panic!("gitops-sessions logs printed no such line; it printed {lines:?}");
    };
    // (The bare pod solo runs hello-web too: its line is not the one.)
    logged(&log_rx, &|l| {
        l.starts_with("[web-") && l.ends_with("] hello-web: listening on :8080")
    });

    // Scale: a rollout the session follows.
    let first_pods: Vec<String> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    real_app_with_pod(&harness, dir.path(), 3, "");
    let rollouts = synced(&mut s);
    assert!(
        rollouts
            .iter()
            .any(|e| e["desired"] == 3 && e["done"] == true),
        "{rollouts:?}"
    );
    assert_eq!(
        deployments
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .ready_replicas,
        Some(3)
    );
    // A change of the pod template replaces the pods: logs and the forward follow.
    real_app_with_pod(&harness, dir.path(), 1, "        version: \"2\"\n");
    synced(&mut s);
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("version=2"))
        .await
        .unwrap()
        .items;
    let new_pod = pods[0].metadata.name.clone().unwrap();
    assert!(!first_pods.contains(&new_pod));
    seen_or_wait(&mut s, "a log line of the new pod", |e| {
        e["event"] == "log" && e["pod"] == new_pod.as_str()
    });
    // The forwards follow to the new pod: the server that answers is its.
    for (port, what) in [(local, "svc/web"), (local_deploy, "deploy/web")] {
        eventually(
            &format!("the port-forward to {what} to answer from {new_pod} after the rollout"),
            WAIT,
            || async {
                let body = get(port)?;
                if answered_by(&body) == new_pod {
                    Ok(())
                } else {
                    Err(format!("answered {body:?}"))
                }
            },
        )
        .await;
    }
    // The other terminal's `gitops-sessions logs` follows the new pod too.
    let line = logged(&log_rx, &|l| l.starts_with(&format!("[{new_pod}/web] ")));
    assert!(line.ends_with("hello-web: listening on :8080"), "{line}");
    let _ = logs.kill();
    let _ = logs.wait();

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the sandbox to go", WAIT, || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// Waits for the next failed sync and checks it came within `within` of
/// `since`, says each of `says` and names `file`; returns the event.
fn failure(
    s: &mut RunningSession,
    what: &str,
    since: Instant,
    within: Duration,
    says: &[&str],
    file: &str,
) -> serde_json::Value {
    let failed = s.wait_for(what, WAIT, |e| e["event"] == "failed");
    assert!(
        since.elapsed() < within,
        "{what} took {:?}; events:\n{}",
        since.elapsed(),
        s.seen
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let message = failed["message"].as_str().unwrap_or_default();
    for needle in says {
        assert!(message.contains(needle), "{needle:?} not in {failed}");
    }
    assert_eq!(failed["file"], file, "{failed}");
    failed
}

/// A real container that exits 3 on the harness's real Node: the kubelet
/// puts it in CrashLoopBackOff, and the sync fails with that reason and the
/// real exit code well before Flux's health-check timeout; the fix recovers.
#[tokio::test]
async fn a_crashing_pod_fails_the_sync_in_seconds_and_a_fix_recovers() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let web = harness.image("hello-web:1.0");
    real_app(dir.path(), 1, "", &web);
    let ns = unique("run-crash");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    synced(&mut s);

    // The new pods crash: busybox exits 3 a second after it starts (before
    // its readiness probe could pass: a container without one would count
    // as ready while it runs, and the rollout would be done).
    let t = Instant::now();
    let crashing = real_deployment(1, "", &harness.image("busybox:harness")).replace(
        "        ports:\n",
        "        command: [sh, -c, 'echo starting; sleep 1; exit 3']\n        readinessProbe:\n          httpGet:\n            path: /healthz\n            port: 8080\n          periodSeconds: 1\n        ports:\n",
    );
    write_tree(dir.path(), &[("deploy/deployment.yaml", &crashing)]);
    // DIR is not in a Git work tree: the packaged root is DIR itself.
    failure(
        &mut s,
        "the failure",
        t,
        Duration::from_secs(30),
        &["CrashLoopBackOff (exit 3)", &format!("Deployment/{ns}/web")],
        "deployment.yaml",
    );
    // The kubelet's account on the API server: runs that exited 3, restarted.
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter().any(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(harness.real_node())
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        // In its back-off (as reported, or not yet: the last
                        // run's end), after runs that exited 3.
                        let state = c.state.clone().unwrap_or_default();
                        let backing_off = state.waiting.and_then(|w| w.reason).as_deref()
                            == Some("CrashLoopBackOff")
                            && c.last_state
                                .as_ref()
                                .and_then(|s| s.terminated.as_ref())
                                .map(|t| t.exit_code)
                                == Some(3);
                        let between_runs = state.terminated.map(|t| t.exit_code) == Some(3)
                            && c.restart_count >= 1;
                        backing_off || between_runs
                    })
        }),
        "no crashing pod on the real Node: {pods:?}"
    );

    // Still watching: the fix (back to the first revision's content) rolls out.
    real_app(dir.path(), 1, "", &web);
    let from = s.seen.len();
    s.wait_for("the fix to sync", WAIT, |e| e["event"] == "synced");
    assert!(
        !s.seen[from..].iter().any(|e| e["event"] == "failed"),
        "{:?}",
        &s.seen[from..]
    );
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

/// The problems the session's Lease records for its last sync (what
/// `gitops-sessions` and the editor read).
async fn recorded_problems(client: &Client, session: &str) -> Vec<serde_json::Value> {
    gitops_e2e::session_lease(client, session)
        .await
        .and_then(|l| l.metadata.annotations)
        .and_then(|a| a.get("gitops.kubectl.dev/problems").cloned())
        .map(|v| serde_json::from_str(&v).unwrap())
        .unwrap_or_default()
}

/// A container without a readiness probe counts as ready while it runs, so
/// one that crashes seconds after it starts passes the sync's health check.
/// The session keeps watching what it applied: the real crash loop that
/// follows is reported and recorded as the sync's failure, and the fix
/// clears it.
#[tokio::test]
async fn a_container_that_crashes_after_the_sync_ended_healthy_is_reported() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let late = real_deployment(1, "", &harness.image("busybox:harness")).replace(
        "        ports:\n",
        "        command: [sh, -c, 'echo up; sleep 4; echo giving up; exit 4']\n        ports:\n",
    );
    write_tree(
        dir.path(),
        &[
            ("deploy/deployment.yaml", &late),
            ("deploy/service.yaml", SERVICE),
            ("deploy/kustomization.yaml", KUSTOMIZATION),
        ],
    );
    let ns = unique("run-late");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    synced(&mut s);
    let t = Instant::now();
    let failed = s.wait_for("the crash after the sync", WAIT, |e| e["event"] == "failed");
    let message = failed["message"].as_str().unwrap_or_default();
    for needle in [
        "healthy at first, then failed",
        &format!("Deployment/{ns}/web"),
        "exit 4",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {failed}");
    }
    // The kubelet's account: the container ran, exited 4 and was restarted.
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter().any(|p| p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.restart_count >= 1
                && [c.last_state.as_ref(), c.state.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|st| st.terminated.as_ref().map(|t| t.exit_code) == Some(4)))),
        "no container that exited 4 and restarted: {pods:?}"
    );
    // Recorded on the API server for the readers (status, the editor).
    let problems = recorded_problems(&client, &ns).await;
    assert!(
        problems
            .iter()
            .any(|p| p["object"].as_str() == Some(&format!("Deployment/{ns}/web"))),
        "the Lease records {problems:?} ({:?} after the sync)",
        t.elapsed()
    );

    // The fix (a server that stays up) syncs and clears the record.
    real_app(dir.path(), 1, "", &harness.image("hello-web:1.0"));
    synced(&mut s);
    eventually("the record cleared", WAIT, || async {
        let p = recorded_problems(&client, &ns).await;
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

#[tokio::test]
async fn a_save_during_a_stuck_health_check_supersedes_it() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    // Pods that run but never become ready: no certain failure, Flux waits.
    app(dir.path(), 1, "        gitops.harness/fail: unready\n");
    let ns = unique("run-stuck");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    s.wait_for("the health check to start", WAIT, |e| {
        e["event"] == "rollout" && e["ready"] == 0
    });
    let t = Instant::now();
    app(dir.path(), 1, "");
    s.wait_for("the wait to be superseded", WAIT, |e| {
        e["event"] == "superseded"
    });
    synced(&mut s);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

#[tokio::test]
async fn the_sandbox_quota_refusal_is_reported_in_plain_words() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sbx = unique("sbx-quota");
    let created = gitops_e2e::output(
        gitops_e2e::plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &sbx, "--quota", "cpu=500m,pods=5"]),
    );
    assert_eq!(created.code, Some(0), "{created:?}");
    let dir = tempfile::tempdir().unwrap();
    // 8 replicas × 100m > 500m.
    app(dir.path(), 8, "");
    let name = unique("run-quota");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["deploy", "--name", &name, "--sandbox", &sbx],
    );
    let failed = s.wait_for("the quota refusal", WAIT, |e| e["event"] == "failed");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("exceeded quota"), "{failed}");
    let d: Deployment = Api::namespaced(client.clone(), &sbx)
        .get("web")
        .await
        .unwrap();
    assert!(d.status.unwrap().ready_replicas.unwrap_or(0) < 8);
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &sbx).await;
    let deleted = gitops_e2e::output(
        gitops_e2e::plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["delete", &sbx]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
}

/// Flux's warnings about the session's objects are shown as they happen,
/// between syncs too: an admission policy of the cluster (not the session's)
/// starts refusing the session's ConfigMaps, and a reconcile requested the
/// way `flux reconcile kustomization` does it fails on the real API server.
#[tokio::test]
async fn flux_warnings_about_the_sessions_objects_are_shown_as_they_happen() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("cm.yaml", &configmap("frozen", &[("a", "1")]))],
    );
    let ns = unique("run-warn");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &ns]);
    s.next_sync().unwrap();

    harness.kubectl_apply(&format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {ns}\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [\"\"]\n      apiVersions: [v1]\n      operations: [CREATE, UPDATE]\n      resources: [configmaps]\n  validations:\n  - expression: \"false\"\n    message: configmaps are frozen here (test policy)\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {ns}\nspec:\n  policyName: {ns}\n  validationActions: [Deny]\n  matchResources:\n    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {ns}\n"
    ));
    let kubectl = |args: &[&str]| {
        gitops_e2e::output(
            std::process::Command::new("kubectl")
                .args(["--kubeconfig", harness.kubeconfig.to_str().unwrap()])
                .args(args),
        )
    };
    // The policy is in force once the API server refuses a ConfigMap there.
    eventually("the admission policy to be in force", WAIT, || async {
        let out = kubectl(&[
            "create",
            "configmap",
            "probe",
            "-n",
            &ns,
            "--dry-run=server",
        ]);
        if out.code != Some(0) && out.stderr.contains("frozen") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    })
    .await;
    let requested = kubectl(&[
        "annotate",
        "--overwrite",
        "-n",
        &ns,
        &format!("kustomization/{ns}"),
        &format!(
            "reconcile.fluxcd.io/requestedAt={}",
            chrono::Utc::now().to_rfc3339()
        ),
    ]);
    assert_eq!(requested.code, Some(0), "{requested:?}");
    let warning = s.wait_for("Flux's warning", WAIT, |e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("Kustomization/{ns}: ")))
    });
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("frozen here"), "{message}");
    // What was shown is what the API server holds: kustomize-controller's Warning event.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let held = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Kustomization,involvedObject.name={ns},type=Warning"
        )))
        .await
        .unwrap()
        .items;
    assert!(
        held.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("frozen here")
                && message.contains(m.lines().next().unwrap_or(m).trim()))),
        "{held:?}"
    );
    // The session keeps running and syncs again once the policy is gone.
    let _ = kubectl(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &ns,
        "--ignore-not-found",
    ]);
    assert!(s.child.try_wait().unwrap().is_none(), "the session exited");
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    gitops_e2e::wait_namespace_gone(&client, &ns).await;
}

/// The session says "synced" as soon as the revision's workloads are
/// healthy, judged from the objects as they change (not at Flux's next
/// health poll): a Deployment added by a save is rolled out by then, on the
/// API server.
#[tokio::test]
async fn a_deployment_added_by_a_save_is_rolled_out_when_synced_is_said() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    app(dir.path(), 1, "");
    let ns = unique("run-add");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    synced(&mut s);
    let api = deployment(2, "")
        .replace("name: web", "name: api")
        .replace("app: web", "app: api");
    write_tree(
        dir.path(),
        &[
            ("deploy/api.yaml", &api),
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n- service.yaml\n- api.yaml\n",
            ),
        ],
    );
    let rollouts = synced(&mut s);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments.get("api").await.unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.observed_generation, d.metadata.generation);
    assert_eq!(
        (
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(2), Some(2), Some(2)),
        "{rollouts:?}"
    );
    assert!(
        rollouts
            .iter()
            .any(|e| e["object"] == format!("Deployment/{ns}/api") && e["done"] == true),
        "{rollouts:?}"
    );
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

/// A Deployment whose pods run but never become ready (a real readiness
/// probe, run by the kubelet on the harness's real Node against hello-web's
/// /status/503) is not a certain failure, so Flux's health check decides;
/// when it times out (`--timeout`), the failure names the pod and the
/// kubelet's probe failure, with the file, instead of Flux's "timeout
/// waiting for".
#[tokio::test]
async fn a_pod_that_never_becomes_ready_is_named_when_the_health_check_times_out() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let web = harness.image("hello-web:1.0");
    real_app(dir.path(), 1, "", &web);
    let ns = unique("run-unready");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["deploy", "--name", &ns, "--timeout", "30s"],
    );
    synced(&mut s);
    let t = Instant::now();
    let probed = real_deployment(1, "        probe: failing\n", &web).replace(
        "        ports:\n",
        "        readinessProbe:\n          httpGet:\n            path: /status/503\n            port: 8080\n          periodSeconds: 1\n        ports:\n",
    );
    write_tree(dir.path(), &[("deploy/deployment.yaml", &probed)]);
    let failed = s.wait_for("the failure", WAIT, |e| e["event"] == "failed");
    // Flux's 30 s health check (its least), its reconcile and ours.
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "took {:?}",
        t.elapsed()
    );
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("Deployment/{ns}/web: pod web-")),
        "{failed}"
    );
    assert!(
        message.contains(
            "is running but not ready (readiness probe failing: HTTP probe failed with statuscode: 503)"
        ),
        "{failed}"
    );
    assert!(
        message.contains("within Flux's health check timeout (30s)"),
        "{failed}"
    );
    assert_eq!(failed["file"], "deployment.yaml", "{failed}");
    // What the API server holds: the pod runs on the real Node, not ready,
    // and the kubelet reported the probe's failures.
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("probe=failing"))
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter().any(|p| {
            let st = p.status.clone().unwrap_or_default();
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(harness.real_node())
                && st.phase.as_deref() == Some("Running")
                && st
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False")
        }),
        "{pods:?}"
    );
    let events: Vec<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unhealthy")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
                && e.message.as_deref().is_some_and(|m| m
                    .contains("Readiness probe failed: HTTP probe failed with statuscode: 503"))),
        "no Unhealthy event from the kubelet: {events:?}"
    );
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

/// More than the kwok nodes have (8 CPUs each, tests/cluster/up).
const BIG: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: big\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: big\n  template:\n    metadata:\n      labels:\n        app: big\n    spec:\n      containers:\n      - name: big\n        image: example/big:1\n        resources:\n          requests:\n            cpu: \"64\"\n";

/// An image that cannot be pulled (a real pull: the real Node's containerd
/// asks the harness registry for an image it does not hold) and a pod no
/// node fits (the real kube-scheduler refuses it; on the kwok Nodes): each
/// fails its sync within seconds of the save, in plain words, naming the
/// file.
#[tokio::test]
async fn image_pull_and_unschedulable_are_reported_with_the_file() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let web = harness.image("hello-web:1.0");
    real_app(dir.path(), 1, "", &web);
    let ns = unique("run-pull");
    let mut s = RunningSession::start(&harness, dir.path(), &["deploy", "--name", &ns]);
    synced(&mut s);

    let t = Instant::now();
    let missing = harness.image("gitops-e2e-never-pushed:1");
    real_app(dir.path(), 1, "", &missing);
    failure(
        &mut s,
        "the image pull failure",
        t,
        Duration::from_secs(15),
        &[
            &format!("Deployment/{ns}/web: pod web-"),
            &format!("container web cannot pull its image \"{missing}\": "),
            "not found",
        ],
        "deployment.yaml",
    );
    // The kubelet's account on the API server: the pull failed.
    let pulling: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(gitops_e2e::pull_failed(&pulling, &missing), "{pulling:?}");

    // The image fixed, and a Deployment no node can hold.
    let t = Instant::now();
    real_app(dir.path(), 1, "", &web);
    write_tree(
        dir.path(),
        &[
            ("deploy/big.yaml", BIG),
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n- service.yaml\n- big.yaml\n",
            ),
        ],
    );
    failure(
        &mut s,
        "the scheduling failure",
        t,
        Duration::from_secs(15),
        &[
            &format!("Deployment/{ns}/big: pod big-"),
            "cannot be scheduled: 0/",
            "Insufficient cpu",
        ],
        "big.yaml",
    );
    let pending: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app=big"))
        .await
        .unwrap()
        .items;
    assert!(
        pending
            .iter()
            .all(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_none())),
        "{pending:?}"
    );
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    nothing_derived_left(&client, &ns).await;
}

/// What the README's quick start and `make demo` sync: examples/hello
/// (ConfigMap, Deployment mounting it, Service) rolls out as real
/// containers on the harness's real Node (its image from the harness
/// registry, as examples/demo points it there): the server in the pod
/// answers a port-forward with the greeting of the mounted ConfigMap, a
/// live change of the greeting reaches the container's volume, and the
/// stop leaves nothing.
#[tokio::test]
async fn examples_hello_rolls_out_and_leaves_nothing() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
    for f in std::fs::read_dir(&example).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let kustomization = dir.path().join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).unwrap();
    text.push_str(&gitops_e2e::real_node_kustomize(
        &harness,
        &[("ghcr.io/example/hello-web", "hello-web")],
    ));
    std::fs::write(&kustomization, text).unwrap();
    let ns = unique("run-hello");
    let local = free_port();
    let forward = format!("resource=svc/web,port={local}:80");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &ns, "--port-forward", &forward],
    );
    s.next_sync().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let web = deployments.get("web").await.unwrap();
    let status = web.status.unwrap_or_default();
    let want = web.spec.and_then(|s| s.replicas).unwrap_or(1);
    assert_eq!(status.available_replicas, Some(want), "{status:?}");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), &ns);
    assert!(services.get_opt("web").await.unwrap().is_some());
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(harness.real_node())),
        "{pods:?}"
    );
    // The server in the container serves the mounted ConfigMap's greeting.
    let body = eventually("the port-forward to answer", WAIT, || async { get(local) }).await;
    assert!(
        body.starts_with("hello from kubectl-gitops (from web-"),
        "{body:?}"
    );
    // A live change of the greeting: the kubelet updates the volume.
    let configmap = dir.path().join("configmap.yaml");
    let text = std::fs::read_to_string(&configmap).unwrap();
    std::fs::write(
        &configmap,
        text.replace("hello from kubectl-gitops", "changed live"),
    )
    .unwrap();
    s.next_sync().unwrap();
    eventually("the container to serve the new greeting", WAIT, || async {
        let body = get(local)?;
        if body.starts_with("changed live (from web-") {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
    let footprint = gitops_e2e::Footprint::capture(&client, &ns).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    footprint.assert_gone(&client).await;
}
