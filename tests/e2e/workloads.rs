//! Workloads on the harness's Nodes, all through the real API server: the
//! real kube-scheduler places pods, the real controller-manager rolls
//! Deployments out and fills EndpointSlices. On the kwok Nodes kwok plays
//! the kubelet (pod status, logs from a file, port-forward to a local
//! server, the failure labels of tests/cluster/kwok-stages.yaml); on the
//! real Node a kubelet with containerd runs the containers.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gitops_e2e::{Harness, create_namespace, delete_namespace, eventually, unique};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(60);
const FAIL_LABEL: &str = "gitops.harness/fail";

/// The Nodes kwok manages; panics unless there is at least one and all are
/// Ready and untainted (what `tests/cluster/up` waits for).
async fn kwok_nodes(client: &Client) -> BTreeSet<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let mut names = BTreeSet::new();
    for node in list.items {
        if node
            .annotations()
            .get("kwok.x-k8s.io/node")
            .map(String::as_str)
            != Some("fake")
        {
            continue;
        }
        let name = node.name_any();
        assert!(
            condition(
                node.status.as_ref().and_then(|s| s.conditions.as_ref()),
                "Ready"
            ),
            "kwok node {name} is not Ready: restart the harness (tests/cluster/down && tests/cluster/up)"
        );
        assert!(
            node.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(|t| t.is_empty()),
            "kwok node {name} is tainted: {:?}",
            node.spec.and_then(|s| s.taints)
        );
        names.insert(name);
    }
    assert!(
        !names.is_empty(),
        "the harness has no kwok nodes (annotation kwok.x-k8s.io/node=fake): restart it with tests/cluster/up"
    );
    names
}

/// True when a condition list has `type_` with status "True".
fn condition<C: ConditionLike>(conditions: Option<&Vec<C>>, type_: &str) -> bool {
    conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_() == type_ && c.status() == "True")
    })
}

trait ConditionLike {
    fn type_(&self) -> &str;
    fn status(&self) -> &str;
}
impl ConditionLike for k8s_openapi::api::core::v1::NodeCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}
impl ConditionLike for k8s_openapi::api::core::v1::PodCondition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
}

fn pod_ready(pod: &Pod) -> bool {
    condition(
        pod.status.as_ref().and_then(|s| s.conditions.as_ref()),
        "Ready",
    )
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn container_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
}

/// A Deployment condition's (status, reason).
fn deployment_condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn deployment_yaml(ns: &str, name: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}{extra}
    spec:
      containers:
      - name: main
        image: registry.example/{name}:1
        ports:
        - containerPort: 8080
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
"#
    )
}

fn pod_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}{labels}
spec:
  containers:
  - name: main
    image: registry.example/{name}:1
    ports:
    - containerPort: 8080
"#
    )
}

/// Waits until a Deployment has `replicas` ready, updated, available
/// replicas of its current generation and reports Available.
async fn wait_available(api: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(
        &format!("Deployment {name} with {replicas} available replicas"),
        TIMEOUT,
        || async {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            let status = d.status.clone().unwrap_or_default();
            let current = status.observed_generation >= d.metadata.generation;
            let available = deployment_condition(&d, "Available").map(|c| c.0);
            if current
                && status.replicas == Some(replicas)
                && status.ready_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.available_replicas == Some(replicas)
                && available.as_deref() == Some("True")
            {
                Ok(d)
            } else {
                Err(format!("status {status:?}"))
            }
        },
    )
    .await
}

/// The pods with `app=<app>` that are not being deleted.
async fn app_pods(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until a bare pod is Running and Ready; returns how long it took
/// from the call.
async fn wait_pod_ready(api: &Api<Pod>, name: &str) -> Duration {
    let start = Instant::now();
    eventually(
        &format!("pod {name} Running and Ready"),
        TIMEOUT,
        || async {
            let pod = api.get(name).await.map_err(|e| e.to_string())?;
            if phase(&pod) == "Running" && pod_ready(&pod) {
                Ok(())
            } else {
                Err(format!("status {:?}", pod.status))
            }
        },
    )
    .await;
    start.elapsed()
}

#[tokio::test]
async fn deployment_is_scheduled_rolls_out_scales_and_is_deleted() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let nodes = kwok_nodes(&client).await;
    let ns = unique("e2e-workloads");
    create_namespace(&client, &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let started = Instant::now();
    harness.kubectl_apply(&deployment_yaml(&ns, "web", 2, ""));
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n"
    ));
    wait_available(&deployments, "web", 2).await;
    eprintln!(
        "Deployment web (2 replicas) Available {:?} after kubectl apply",
        started.elapsed()
    );

    // Placed by the real scheduler onto kwok's nodes; kwok made them run.
    let running = app_pods(&pods, "web").await;
    assert_eq!(running.len(), 2, "pods of web: {running:#?}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    let mut pod_ips = BTreeSet::new();
    for pod in &running {
        let name = pod.name_any();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_ref().is_some_and(|n| nodes.contains(n)),
            "pod {name} on {node:?}, not a kwok node ({nodes:?})"
        );
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        assert!(
            condition(conditions, "PodScheduled"),
            "{name}: {conditions:?}"
        );
        assert!(
            pod_ready(pod) && phase(pod) == "Running",
            "{name}: {:?}",
            pod.status
        );
        let cs = container_status(pod).expect("container status");
        assert!(
            cs.ready && cs.state.as_ref().is_some_and(|s| s.running.is_some()),
            "{cs:?}"
        );
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP");
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip} outside kwok's --cidr"
        );
        pod_ips.insert(ip);
        assert!(
            events
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(name.as_str())
                    && e.reason.as_deref() == Some("Scheduled")
                    && e.reporting_component.as_deref() == Some("default-scheduler")),
            "no Scheduled event from default-scheduler for {name}: {events:#?}"
        );
    }

    // The Service's EndpointSlice (controller-manager) lists both pods, ready.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the EndpointSlice of Service web to list both pods",
        TIMEOUT,
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .map_err(|e| e.to_string())?;
            let ready: BTreeSet<String> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            if ready == pod_ips {
                Ok(())
            } else {
                Err(format!("ready addresses {ready:?}, pods {pod_ips:?}"))
            }
        },
    )
    .await;

    // Scaling rolls out a third replica.
    let started = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_available(&deployments, "web", 3).await;
    eprintln!("scaled to 3 replicas in {:?}", started.elapsed());
    let running = app_pods(&pods, "web").await;
    assert_eq!(running.len(), 3);
    assert!(
        running
            .iter()
            .all(|p| pod_ready(p) && phase(p) == "Running")
    );

    // Deleting the Deployment removes its ReplicaSets and, through kwok's
    // deletion stage, its pods.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the ReplicaSets and pods of web to be gone",
        TIMEOUT,
        || async {
            let rs = replicasets
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let left = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            if rs.items.is_empty() && left.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} ReplicaSets, pods {:?}",
                    rs.items.len(),
                    left.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// A log line in the CRI format the kubelet (and kwok) read.
fn cri_line(stream: &str, n: u32, text: &str) -> String {
    format!("2026-01-02T03:04:05.{n:09}Z {stream} F {text}\n")
}

#[tokio::test]
async fn pod_logs_come_from_the_file_a_logs_object_names() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    kwok_nodes(&client).await;
    let ns = unique("e2e-logs");
    create_namespace(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    harness.kubectl_apply(&pod_yaml(&ns, "app", ""));
    let took = wait_pod_ready(&pods, "app").await;
    eprintln!("bare pod Running and Ready {took:?} after kubectl apply");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.log");
    std::fs::write(
        &file,
        cri_line("stdout", 1, "first line")
            + &cri_line("stdout", 2, "second line")
            + &cri_line("stderr", 3, "third line"),
    )
    .unwrap();
    harness.kubectl_apply(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata:
  name: app
  namespace: {ns}
spec:
  logs:
  - containers: [main]
    logsFile: {}
    follow: true
"#,
        file.display()
    ));

    // pods/log of the API server, proxied to kwok's server.
    let params = LogParams {
        container: Some("main".into()),
        ..Default::default()
    };
    let logs = eventually("pods/log to return the file's lines", TIMEOUT, || async {
        match pods.logs("app", &params).await {
            Ok(text) if !text.is_empty() => Ok(text),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(logs, "first line\nsecond line\nthird line\n");
    let tail = pods
        .logs(
            "app",
            &LogParams {
                container: Some("main".into()),
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "2026-01-02T03:04:05.000000003Z third line\n");

    // `kubectl logs -f` follows the file: a line appended shows up.
    let mut child = Command::new("kubectl")
        .args(harness.kube_args())
        .args(["logs", "-f", "-n", &ns, "pod/app", "-c", "main"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is installed");
    let lines = read_lines(&mut child);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut appended = false;
    while !seen.iter().any(|l: &String| l == "fourth line") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("kubectl logs -f did not show the appended line; saw {seen:?}");
            }
        }
        if !appended && seen.len() == 3 {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap();
            f.write_all(cri_line("stdout", 4, "fourth line").as_bytes())
                .unwrap();
            appended = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        ["first line", "second line", "third line", "fourth line"]
    );
    delete_namespace(&client, &ns).await;
}

/// The lines a child prints on stdout, as they come.
fn read_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A local HTTP server answering every request with `hello-from-local`
/// (at most 32 connections, then it stops); returns its port.
fn local_http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(32) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = "hello-from-local";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn port_forward_reaches_the_local_server_a_portforward_object_names() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    kwok_nodes(&client).await;
    let ns = unique("e2e-portforward");
    create_namespace(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let local = local_http_server();

    harness.kubectl_apply(&pod_yaml(&ns, "web", ""));
    wait_pod_ready(&pods, "web").await;
    harness.kubectl_apply(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: PortForward
metadata:
  name: web
  namespace: {ns}
spec:
  forwards:
  - ports: [8080]
    target:
      address: 127.0.0.1
      port: {local}
"#
    ));

    // pods/portforward of the API server (kube's client), to kwok, to the
    // local server.
    let answer = eventually("a port-forward to web:8080 to answer", TIMEOUT, || async {
        let mut forwarder = pods
            .portforward("web", &[8080])
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = forwarder.take_stream(8080).ok_or("no stream for 8080")?;
        stream.write_all(REQUEST).await.map_err(|e| e.to_string())?;
        // Read until the body is there: over a WebSocket the API server does
        // not pass on the end of one forwarded connection, so no EOF comes.
        let mut answer = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while !answer.contains("hello-from-local") {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        drop(stream);
        let result = match read {
            Ok(Ok(())) if answer.contains("hello-from-local") => Ok(answer),
            other => {
                // What kwok said, if anything (no forward for the port yet).
                let said = match forwarder.take_error(8080) {
                    Some(e) => tokio::time::timeout(Duration::from_secs(1), e)
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                Err(format!(
                    "read {other:?}, answer {answer:?}, error stream {said:?}"
                ))
            }
        };
        forwarder.abort();
        result
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // `kubectl port-forward`, as a person runs it.
    let mut child = Command::new("kubectl")
        .args(harness.kube_args())
        .args(["port-forward", "-n", &ns, "pod/web", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is installed");
    let lines = read_lines(&mut child);
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("kubectl port-forward printed nothing")
        });
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port: u16 = first
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl port-forward output: {first}"));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(REQUEST).unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    let read = loop {
        match conn.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => break Err(e),
        }
        if answer.contains("hello-from-local") {
            break Ok(());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    read.unwrap_or_else(|e| panic!("reading through kubectl port-forward: {e}; got {answer:?}"));
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello-from-local"),
        "{answer}"
    );
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn failure_labels_keep_pods_and_deployments_unavailable() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    kwok_nodes(&client).await;
    let ns = unique("e2e-failures");
    create_namespace(&client, &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let crash = deployment_yaml(
        &ns,
        "crash",
        1,
        &format!("\n        {FAIL_LABEL}: crashloop"),
    )
    .replace(
        "  replicas: 1\n",
        "  replicas: 1\n  progressDeadlineSeconds: 5\n",
    );
    harness.kubectl_apply(&crash);
    harness.kubectl_apply(&deployment_yaml(
        &ns,
        "unready",
        1,
        &format!("\n        {FAIL_LABEL}: unready"),
    ));
    harness.kubectl_apply(&pod_yaml(
        &ns,
        "pull",
        &format!("\n    {FAIL_LABEL}: imagepull"),
    ));

    // crashloop: Running, never Ready, waiting in CrashLoopBackOff after a
    // failed run, and the restart count grows.
    let restarts = |min: i32| {
        let pods = pods.clone();
        async move {
            eventually(
                &format!("the crash pod in CrashLoopBackOff with >= {min} restarts"),
                TIMEOUT,
                || async {
                    let list = app_pods(&pods, "crash").await;
                    let [pod] = list.as_slice() else {
                        return Err(format!("{} pods", list.len()));
                    };
                    let cs = container_status(pod).cloned().unwrap_or_default();
                    let waiting = cs
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.clone());
                    let exit = cs
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| t.exit_code);
                    if phase(pod) == "Running"
                        && !pod_ready(pod)
                        && !cs.ready
                        && waiting.as_deref() == Some("CrashLoopBackOff")
                        && exit == Some(1)
                        && cs.restart_count >= min
                    {
                        Ok(pod.name_any())
                    } else {
                        Err(format!("status {:?}", pod.status))
                    }
                },
            )
            .await
        }
    };
    let crash_pod = restarts(1).await;
    let d = deployments.get("crash").await.unwrap();
    assert_eq!(
        deployment_condition(&d, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into())),
        "{:?}",
        d.status
    );
    let status = d.status.unwrap();
    assert_eq!(status.available_replicas.unwrap_or(0), 0);
    assert_eq!(status.unavailable_replicas, Some(1));
    // The rollout fails as `kubectl rollout status` reports it.
    eventually(
        "crash's rollout to exceed its progress deadline",
        TIMEOUT,
        || async {
            let d = deployments.get("crash").await.map_err(|e| e.to_string())?;
            match deployment_condition(&d, "Progressing") {
                Some((s, r)) if s == "False" && r == "ProgressDeadlineExceeded" => Ok(()),
                other => Err(format!("Progressing {other:?}")),
            }
        },
    )
    .await;
    restarts(2).await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events.iter().any(
            |e| e.involved_object.name.as_deref() == Some(crash_pod.as_str())
                && e.reason.as_deref() == Some("BackOff")
                && e.type_.as_deref() == Some("Warning")
        ),
        "no BackOff event for {crash_pod}: {events:#?}"
    );

    // unready: Running, containers running, never Ready.
    eventually("the unready pod to run unready", TIMEOUT, || async {
        let list = app_pods(&pods, "unready").await;
        let [pod] = list.as_slice() else {
            return Err(format!("{} pods", list.len()));
        };
        let cs = container_status(pod).cloned().unwrap_or_default();
        let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
        if phase(pod) == "Running" && running && !cs.ready && !pod_ready(pod) {
            Ok(())
        } else {
            Err(format!("status {:?}", pod.status))
        }
    })
    .await;
    let d = deployments.get("unready").await.unwrap();
    assert_eq!(
        deployment_condition(&d, "Available")
            .map(|c| c.0)
            .as_deref(),
        Some("False"),
        "{:?}",
        d.status
    );

    // imagepull: Pending, waiting in ImagePullBackOff.
    eventually("the pull pod in ImagePullBackOff", TIMEOUT, || async {
        let pod = pods.get("pull").await.map_err(|e| e.to_string())?;
        let waiting = container_status(&pod)
            .and_then(|cs| cs.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        if phase(&pod) == "Pending" && waiting.as_deref() == Some("ImagePullBackOff") {
            Ok(())
        } else {
            Err(format!("status {:?}", pod.status))
        }
    })
    .await;

    // They stay that way: kwok never makes them Ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|p| !pod_ready(p)), "{all:#?}");

    // Failing pods are deleted like any other.
    deployments
        .delete("crash", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the crash pod to be gone", TIMEOUT, || async {
        match pods.get_opt(&crash_pod).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there: {:?}", p.metadata.deletion_timestamp)),
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}

/// The digest the harness registry holds for `repo:tag` (what the real
/// Node must have pulled), from the registry itself.
fn registry_digest(harness: &Harness, repo: &str, tag: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-fsSI",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            harness.registry
        ))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "the harness registry has no {repo}:{tag} (tests/cluster/up pushes it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest:")
                .map(|d| d.trim().to_string())
        })
        .expect("the registry names the manifest's digest")
}

/// GET / through the API server's pods/portforward (kube's client) to
/// `pod`'s port 8080; the whole answer, once its body holds `want`.
async fn get_through_port_forward(pods: &Api<Pod>, pod: &str, want: &str) -> String {
    eventually(
        &format!("a port-forward to {pod}:8080 to answer"),
        TIMEOUT,
        || async {
            let mut forwarder = pods
                .portforward(pod, &[8080])
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = forwarder.take_stream(8080).ok_or("no stream for 8080")?;
            stream.write_all(REQUEST).await.map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), async {
                let mut buf = [0u8; 1024];
                while !answer.contains(want) {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            drop(stream);
            forwarder.abort();
            match read {
                Ok(Ok(())) if answer.contains(want) => Ok(answer),
                other => Err(format!("read {other:?}, answer {answer:?}")),
            }
        },
    )
    .await
}

/// The real Node (a kubelet with containerd, tests/cluster/node.sh): Ready
/// beside the kwok Nodes, tainted so that only pods placed there on purpose
/// (gitops_e2e::on_real_node) land on it. A pod there runs real containers
/// of images pulled from the harness registry: the image digests are the
/// registry's, the log is what the process printed, a port-forward reaches
/// the HTTP server inside the container (and the server logs the request),
/// and exec runs a command in it.
#[tokio::test]
async fn a_pod_on_the_real_node_runs_real_containers() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let kwok = kwok_nodes(&client).await;
    let real = harness.real_node().to_string();

    // The Node, as the API server holds it.
    let node = Api::<Node>::all(client.clone()).get(&real).await.unwrap();
    let status = node.status.clone().unwrap();
    assert!(
        condition(status.conditions.as_ref(), "Ready"),
        "{real} is not Ready: {:?}",
        status.conditions
    );
    let info = status.node_info.clone().unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{info:?}"
    );
    assert!(info.kubelet_version.starts_with("v1."), "{info:?}");
    let ip = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .unwrap_or_default();
    assert!(
        !ip.is_empty() && !ip.starts_with("127."),
        "the real Node's InternalIP is {ip:?}"
    );
    assert_eq!(
        node.labels().get(gitops_e2e::NODE_KEY).map(String::as_str),
        Some("real")
    );
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == gitops_e2e::NODE_KEY
            && t.value.as_deref() == Some("real")
            && t.effect == "NoSchedule"),
        "{taints:?}"
    );

    let ns = unique("e2e-realnode");
    create_namespace(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Without the placement a pod goes to kwok (the real Node's taint).
    harness.kubectl_apply(&pod_yaml(&ns, "elsewhere", ""));
    wait_pod_ready(&pods, "elsewhere").await;
    let elsewhere = pods.get("elsewhere").await.unwrap();
    let on = elsewhere.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(kwok.contains(&on), "an unplaced pod landed on {on:?}");

    // With it: hello-web and a busybox beside it, on the real Node.
    let web_image = harness.image("hello-web:1.0");
    let box_image = harness.image("busybox:harness");
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n{}  containers:\n  - name: web\n    image: {web_image}\n    ports:\n    - containerPort: 8080\n    readinessProbe:\n      httpGet: {{path: /healthz, port: 8080}}\n      periodSeconds: 1\n  - name: box\n    image: {box_image}\n    command: [sh, -c, 'echo box: up; exec sleep 3600']\n",
        gitops_e2e::on_real_node(2)
    ));
    let took = wait_pod_ready(&pods, "web").await;
    eprintln!("pod on the real Node Running and Ready {took:?} after kubectl apply");
    let pod = pods.get("web").await.unwrap();
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(real.as_str())
    );
    let pod_status = pod.status.clone().unwrap();
    let pod_ip = pod_status.pod_ip.clone().unwrap_or_default();
    assert!(pod_ip.starts_with("10.245.0."), "pod IP {pod_ip}");
    for (c, repo, tag) in [("web", "hello-web", "1.0"), ("box", "busybox", "harness")] {
        let st = pod_status
            .container_statuses
            .iter()
            .flatten()
            .find(|s| s.name == c)
            .unwrap_or_else(|| panic!("no status of container {c}: {pod_status:?}"));
        assert!(
            st.container_id
                .as_deref()
                .is_some_and(|id| id.starts_with("containerd://")),
            "{st:?}"
        );
        let digest = registry_digest(&harness, repo, tag);
        assert!(
            st.image_id.ends_with(&digest),
            "container {c} runs {}, the registry holds {repo}:{tag} at {digest}",
            st.image_id
        );
    }

    // What the processes printed, through pods/log (the kubelet's files).
    let log = |c: &'static str| {
        let pods = pods.clone();
        async move {
            pods.logs(
                "web",
                &LogParams {
                    container: Some(c.into()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())
        }
    };
    assert!(log("box").await.unwrap().contains("box: up"));
    assert!(
        log("web")
            .await
            .unwrap()
            .contains("hello-web: listening on :8080")
    );

    // The server inside the container answers a port-forward (it names its
    // host, the pod) and logs the request it served.
    let answer = get_through_port_forward(&pods, "web", "(from web)").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("hello (from web)\n"), "{answer}");
    eventually(
        "hello-web to log the forwarded request",
        TIMEOUT,
        || async {
            let text = log("web").await?;
            if text.contains("hello-web: GET / from") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;

    // exec, in the busybox container: the same server over the pod's loopback.
    let out = Command::new("kubectl")
        .args(harness.kube_args())
        .args(["exec", "-n", &ns, "web", "-c", "box", "--"])
        .args(["wget", "-qO-", "http://127.0.0.1:8080/"])
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello (from web)\n");
    delete_namespace(&client, &ns).await;
}
