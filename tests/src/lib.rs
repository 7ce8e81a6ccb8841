//! Helpers for the end-to-end tests: find the running harness (started by
//! `tests/cluster/up`), connect to it, and wait for the cluster to converge.
//!
//! A test that cannot reach the harness panics with the command that starts
//! it; nothing here ever skips a test.

// These helpers fail the test that calls them loudly when a peer cannot be
// reached or the world is not as expected: panics are the tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gitops::cluster::{Cluster, KubeOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};
use kube::runtime::watcher;
use kube::{Api, Client};

/// The running local control plane, as `tests/cluster/up` described it.
#[derive(Debug, Clone)]
pub struct Harness {
    /// Its state directory.
    pub dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The admin context's name.
    pub context: String,
    /// `host:port` of the OCI registry.
    pub registry: String,
    /// `host:port` of the registry that demands credentials.
    pub auth_registry: String,
    /// `USER:PASSWORD` for [`Harness::auth_registry`].
    pub auth_creds: String,
    /// The `flux` CLI of the pinned release.
    pub flux: PathBuf,
    /// Admin kubeconfig of the second API server (`up --second-cluster`).
    pub second_kubeconfig: Option<PathBuf>,
    /// URL of the Helm repository serving the pinned vcluster chart.
    pub charts: String,
    /// Base URL of the Git server (`http://127.0.0.1:PORT`), from
    /// harness.env's `GITOPS_HARNESS_GIT` (or the environment's, for a
    /// harness started before it had one); see [`Harness::git_url`].
    pub git: Option<String>,
    /// The one real Node (a kubelet with containerd; `tests/cluster/node.sh`),
    /// from harness.env's `GITOPS_HARNESS_REAL_NODE`; see [`Harness::real_node`].
    pub real_node: Option<String>,
}

/// The label and taint key of the harness's Nodes: `real` on the one real
/// Node (tainted `NoSchedule`), `kwok` on kwok's. A pod lands on the real
/// Node only when it asks ([`on_real_node`]); everything else stays on kwok.
pub const NODE_KEY: &str = "gitops.harness/node";

/// Lines to append to a `kustomization.yaml` (which has no `images:` or
/// `patches:` of its own) that move its Deployments to the harness's real
/// Node and take each image named in `images` (`(name, harness image)`,
/// e.g. `("ghcr.io/example/hello-web", "hello-web")`) from the harness
/// registry, keeping its tag: what `examples/demo` does to examples/hello.
pub fn real_node_kustomize(harness: &Harness, images: &[(&str, &str)]) -> String {
    let mut out = String::from("images:\n");
    for (name, ours) in images {
        out.push_str(&format!(
            "  - name: {name}\n    newName: {}/{ours}\n",
            harness.registry
        ));
    }
    out.push_str(&format!(
        "patches:\n  - target: {{kind: Deployment}}\n    patch: |-\n      - {{op: add, path: /spec/template/spec/nodeSelector, value: {{{NODE_KEY}: real}}}}\n      - {{op: add, path: /spec/template/spec/tolerations, value: [{{key: {NODE_KEY}, value: real, effect: NoSchedule}}]}}\n"
    ));
    out
}

/// Pod-spec fields placing a pod on the harness's real Node (a nodeSelector
/// and a toleration of its taint), each line indented by `indent` spaces:
/// the indentation of the pod spec's `containers:` key (6 in a Deployment's
/// template written as the tests write them, 2 in a Pod).
pub fn on_real_node(indent: usize) -> String {
    let i = " ".repeat(indent);
    format!(
        "{i}nodeSelector:\n{i}  {NODE_KEY}: real\n{i}tolerations:\n{i}- key: {NODE_KEY}\n{i}  value: real\n{i}  effect: NoSchedule\n"
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

const NOT_RUNNING: &str = "the local control plane is not running: start it with \
    `tests/cluster/up` (or run everything with `make test`)";

impl Harness {
    /// Reads the harness description; panics (never skips) if it is absent.
    pub fn get() -> Harness {
        let dir = std::env::var_os("GITOPS_HARNESS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/harness"));
        let env_file = dir.join("harness.env");
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{NOT_RUNNING} ({}: {e})", env_file.display()));
        let vars: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let var = |k: &str| {
            vars.get(k)
                .map(|v| v.to_string())
                .unwrap_or_else(|| panic!("{} lacks {k}; restart the harness", env_file.display()))
        };
        Harness {
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            context: var("GITOPS_HARNESS_CONTEXT"),
            registry: var("GITOPS_HARNESS_REGISTRY"),
            auth_registry: var("GITOPS_HARNESS_AUTH_REGISTRY"),
            auth_creds: var("GITOPS_HARNESS_AUTH_CREDS"),
            flux: PathBuf::from(var("GITOPS_HARNESS_FLUX")),
            second_kubeconfig: vars
                .get("GITOPS_HARNESS_SECOND_KUBECONFIG")
                .map(PathBuf::from),
            charts: var("GITOPS_HARNESS_CHARTS"),
            git: vars
                .get("GITOPS_HARNESS_GIT")
                .map(|v| v.to_string())
                .or_else(|| std::env::var("GITOPS_HARNESS_GIT").ok()),
            real_node: vars.get("GITOPS_HARNESS_REAL_NODE").map(|v| v.to_string()),
            dir,
        }
    }

    /// The connection options that select the harness.
    pub fn kube_options(&self) -> KubeOptions {
        KubeOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            context: Some(self.context.clone()),
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    /// A client for the harness; panics if the API server does not answer.
    pub async fn cluster(&self) -> Cluster {
        gitops::install_crypto_provider();
        let cluster = self
            .kube_options()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{NOT_RUNNING}: {e}"));
        if let Err(e) = cluster.client.apiserver_version().await {
            panic!(
                "{NOT_RUNNING}: the API server at {} does not answer: {e}",
                cluster.server
            );
        }
        cluster
    }

    /// A client for the second API server; panics if it was not started.
    pub async fn second_cluster(&self) -> Cluster {
        let kubeconfig = self.second_kubeconfig.clone().unwrap_or_else(|| {
            panic!("the second API server is not running: start the harness with `tests/cluster/up --second-cluster` (make test does)")
        });
        let cluster = KubeOptions {
            kubeconfig: Some(kubeconfig),
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        }
        .connect()
        .await
        .unwrap_or_else(|e| panic!("second API server: {e}"));
        if let Err(e) = cluster.client.apiserver_version().await {
            panic!(
                "the second API server at {} does not answer: {e}",
                cluster.server
            );
        }
        cluster
    }

    /// The kubectl flags selecting the harness, as command-line arguments.
    pub fn kube_args(&self) -> Vec<String> {
        vec![
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--context".into(),
            self.context.clone(),
        ]
    }

    /// `kubectl apply -f -` of `yaml` against the harness.
    pub fn kubectl_apply(&self, yaml: &str) {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kubectl is installed");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write to kubectl");
        assert!(
            child.wait().expect("kubectl").success(),
            "kubectl apply failed:\n{yaml}"
        );
    }

    /// Base URL of the harness's Git server; panics if this harness has none.
    pub fn git_url(&self) -> &str {
        self.git.as_deref().unwrap_or_else(|| {
            panic!(
                "{} lacks GITOPS_HARNESS_GIT: this harness was started before it had a Git server; \
                 restart it (tests/cluster/down, then tests/cluster/up)",
                self.dir.join("harness.env").display()
            )
        })
    }

    /// The directory the Git server serves: one bare repository `NAME.git`
    /// per repository, at `<git_url>/NAME.git`.
    pub fn git_root(&self) -> PathBuf {
        self.dir.join("git")
    }

    /// The name of the harness's real Node; panics if this harness has none.
    pub fn real_node(&self) -> &str {
        self.real_node.as_deref().unwrap_or_else(|| {
            panic!(
                "{} lacks GITOPS_HARNESS_REAL_NODE: this harness was started before it had a real Node; \
                 restart it (tests/cluster/down, then tests/cluster/up)",
                self.dir.join("harness.env").display()
            )
        })
    }

    /// An image of the harness registry, `name:tag` (tests/cluster/images
    /// pushes `pause:harness`, `busybox:harness`, `hello-web:1.0`): the
    /// reference the real Node pulls.
    pub fn image(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.registry)
    }

    /// The `flux` CLI, pointed at the harness.
    pub fn flux(&self) -> Command {
        let mut cmd = Command::new(&self.flux);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }
}

/// A plugin binary built by `cargo build --workspace --bins`, beside the
/// test executable's target directory.
pub fn plugin(name: &str) -> Command {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (`make test` and `make e2e` do)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env_remove("RUST_BACKTRACE").env("NO_COLOR", "1");
    cmd
}

/// What a finished command printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes files (path, content) under `dir`, creating directories.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("create dir");
        std::fs::write(p, content).expect("write file");
    }
}

/// A ConfigMap manifest named `name` holding `data`, the fixture most
/// tests write into a session's directory. Each value is a double-quoted
/// YAML string (`"1"` stays a string); empty `data` writes no `data` field.
pub fn configmap(name: &str, data: &[(&str, &str)]) -> String {
    configmap_manifest(name, None, data)
}

/// As [`configmap`], with `metadata.namespace` set to `namespace`.
pub fn configmap_in(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    configmap_manifest(name, Some(namespace), data)
}

fn configmap_manifest(name: &str, namespace: Option<&str>, data: &[(&str, &str)]) -> String {
    let mut yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    if let Some(ns) = namespace {
        yaml.push_str(&format!("  namespace: {ns}\n"));
    }
    if !data.is_empty() {
        yaml.push_str("data:\n");
        for (key, value) in data {
            // A JSON string is a YAML double-quoted scalar.
            let quoted = serde_json::to_string(value).expect("a string serialises");
            yaml.push_str(&format!("  {key}: {quoted}\n"));
        }
    }
    yaml
}

/// Runs a command; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `git -C dir args…` with a fixed author; panics if it fails.
pub fn git(dir: &Path, args: &[&str]) {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com"));
}

/// A name unique to this test run: `<prefix>-<pid><counter>`, DNS-1123 safe.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}{:x}{}",
        std::process::id(),
        nanos % 4096,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some`, or panics after `timeout` saying
/// what was awaited and what was last seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("(not checked yet)");
    while start.elapsed() < timeout {
        match check().await {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
}

/// A namespace for one test, created now.
pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("e2e".to_string(), "true".to_string())])),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
}

/// Waits until a namespace is gone (the controller-manager deletes its content first).
pub async fn wait_namespace_gone(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    eventually(
        &format!("namespace {name} to be gone"),
        Duration::from_secs(90),
        || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        },
    )
    .await;
}

/// Deletes a test namespace (the controller-manager finishes the job).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// A registry of our own (the real docker-registry), to stop and restart.
pub struct OwnRegistry {
    child: std::process::Child,
    pub port: u16,
    config: std::path::PathBuf,
}

impl OwnRegistry {
    /// Starts one storing under `dir/data`, on `port`.
    pub fn start(dir: &Path, port: u16) -> OwnRegistry {
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Self::spawn(&config);
        let r = OwnRegistry {
            child,
            port,
            config,
        };
        r.wait_ready();
        r
    }

    fn spawn(config: &Path) -> std::process::Child {
        std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's package) must be installed: tests/cluster/up installs it")
    }

    fn wait_ready(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("docker-registry did not start on port {}", self.port);
    }

    /// Stops it (SIGKILL).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again with the same storage.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config);
        self.wait_ready();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// A `kubectl gitops-run` session running as a child process with `-o json`,
/// its events read as they come.
pub struct RunningSession {
    pub child: std::process::Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Every event seen so far.
    pub seen: Vec<serde_json::Value>,
}

impl RunningSession {
    /// Starts `kubectl-gitops_run` with `args` (plus `-o json`) in `dir`.
    pub fn start(harness: &Harness, dir: &Path, args: &[&str]) -> RunningSession {
        let mut cmd = plugin("kubectl-gitops_run");
        cmd.args(harness.kube_args())
            .args(["-o", "json"])
            .args(args)
            .current_dir(dir);
        RunningSession::spawn(&mut cmd)
    }

    /// Starts a session from a prepared command (which must pass `-o json`),
    /// e.g. the Windows binary under Wine.
    pub fn spawn(cmd: &mut Command) -> RunningSession {
        RunningSession::spawn_reading_until(cmd, |_| false)
    }

    /// Like [`RunningSession::spawn`], but stops reading the session's
    /// stdout, closing the pipe, right after the first event for which
    /// `last` holds: the session's next write finds its reader gone.
    pub fn spawn_reading_until(
        cmd: &mut Command,
        last: fn(&serde_json::Value) -> bool,
    ) -> RunningSession {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start kubectl-gitops_run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let stop = last(&v);
                    if tx.send(v).is_err() || stop {
                        break;
                    }
                }
            }
        });
        RunningSession {
            child,
            events: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the next event matching `pred`; panics (with what was seen) on timeout.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(e) => panic!(
                    "{} after {:?} waiting for {what} (the session: {}); events so far:\n{}",
                    if e == std::sync::mpsc::RecvTimeoutError::Timeout {
                        "timed out"
                    } else {
                        "output ended"
                    },
                    timeout.saturating_sub(left),
                    match self.child.try_wait() {
                        Ok(Some(status)) => format!("exited, {status}"),
                        Ok(None) => "still running".to_string(),
                        Err(e) => format!("unknown: {e}"),
                    },
                    self.seen
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// The events that arrive within `window` (none is not an error).
    pub fn events_within(&mut self, window: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(e) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(e.clone());
            got.push(e);
        }
        got
    }

    /// Waits for the next sync to finish: `Ok(revision)` or `Err(message)`.
    pub fn next_sync(&mut self) -> Result<String, String> {
        let e = self.wait_for("a sync to finish", Duration::from_secs(90), |e| {
            e["event"] == "synced" || e["event"] == "failed"
        });
        if e["event"] == "synced" {
            Ok(e["revision"].as_str().unwrap_or_default().to_string())
        } else {
            Err(format!("{}", e))
        }
    }

    /// Sends a signal (`INT`, `TERM`, `KILL`) to the session.
    pub fn signal(&self, name: &str) {
        run(Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string()));
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(e) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(e);
                }
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the session did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RunningSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One object on the API server: its type, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// `group/version`, or `version` for the core group.
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects (also ignored for them when set).
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectId {
        ObjectId {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    fn of(ar: &ApiResource, o: &DynamicObject) -> ObjectId {
        ObjectId {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: o.metadata.namespace.clone(),
            name: o.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{} ({})", self.kind, self.name, self.api_version),
            None => write!(f, "{}/{} ({})", self.kind, self.name, self.api_version),
        }
    }
}

/// Every resource the API server serves that can be listed and read, at its
/// preferred version.
struct Resources(Vec<(ApiResource, ApiCapabilities)>);

impl Resources {
    async fn discover(client: &Client) -> Result<Resources, String> {
        let discovery = match Discovery::new(client.clone()).run_aggregated().await {
            Ok(d) => d,
            Err(_) => Discovery::new(client.clone())
                .run()
                .await
                .map_err(|e| format!("API discovery: {e}"))?,
        };
        let mut all = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::GET) {
                    all.push((ar, caps));
                }
            }
        }
        Ok(Resources(all))
    }

    fn find(&self, group: &str, kind: &str) -> Option<&(ApiResource, ApiCapabilities)> {
        self.0
            .iter()
            .find(|(ar, _)| ar.group == group && ar.kind == kind)
    }

    /// The objects of every kind, in every namespace, that match `selector`.
    async fn list_everywhere(
        &self,
        client: &Client,
        selector: &str,
    ) -> Result<Vec<(ObjectId, DynamicObject)>, String> {
        let lp = ListParams::default().labels(selector);
        let mut found = Vec::new();
        for (ar, _) in &self.0 {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
            let list = api
                .list(&lp)
                .await
                .map_err(|e| format!("list {} -l {selector}: {e}", ar.plural))?;
            found.extend(list.items.into_iter().map(|o| (ObjectId::of(ar, &o), o)));
        }
        Ok(found)
    }

    /// Every object of every namespaced kind in `namespace`.
    async fn list_namespace(
        &self,
        client: &Client,
        namespace: &str,
    ) -> Result<Vec<(ObjectId, DynamicObject)>, String> {
        let mut found = Vec::new();
        for (ar, caps) in &self.0 {
            if caps.scope != Scope::Namespaced {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list {} -n {namespace}: {e}", ar.plural))?;
            found.extend(list.items.into_iter().map(|o| (ObjectId::of(ar, &o), o)));
        }
        Ok(found)
    }

    /// Reads one object; `None` when it does not exist.
    async fn get(&self, client: &Client, id: &ObjectId) -> Result<Option<DynamicObject>, String> {
        let (ar, caps) = self
            .find(id.group(), &id.kind)
            .ok_or_else(|| format!("{id}: the API server does not serve this kind"))?;
        let api: Api<DynamicObject> = match (&caps.scope, &id.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
            (Scope::Namespaced, None) => return Err(format!("{id}: namespaced, but no namespace")),
            (Scope::Cluster, _) => Api::all_with(client.clone(), ar),
        };
        api.get_opt(&id.name)
            .await
            .map_err(|e| format!("get {id}: {e}"))
    }
}

/// What a session put on the API server: the objects it made (Lease,
/// sandbox, Flux objects, Secrets), every object its Kustomization or
/// HelmRelease applied, and what the cluster derived from those (objects they
/// own, such as a Deployment's ReplicaSets and Pods, a Service's
/// EndpointSlices and Endpoints).
///
/// Capture it while the session is in place ([`Footprint::capture`]), or
/// expect it from the payload ([`Footprint::expected`]) for a session that
/// cleans up before the test can look; then [`Footprint::assert_gone`] checks
/// every one of those objects by name, and sweeps every kind the API server
/// serves for anything still carrying the session's labels.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub session: String,
    pub objects: BTreeSet<ObjectId>,
    /// Label selectors that nothing may match afterwards, in any namespace.
    selectors: BTreeSet<String>,
}

fn kustomize_selector(name: &str, namespace: &str) -> String {
    format!(
        "kustomize.toolkit.fluxcd.io/name={name},kustomize.toolkit.fluxcd.io/namespace={namespace}"
    )
}

fn helm_selector(name: &str, namespace: &str) -> String {
    format!("helm.toolkit.fluxcd.io/name={name},helm.toolkit.fluxcd.io/namespace={namespace}")
}

/// An entry of a Flux inventory: `<namespace>_<name>_<group>_<kind>` and a version.
fn inventory_id(id: &str, version: &str) -> Option<ObjectId> {
    let mut parts = id.splitn(4, '_');
    let (ns, name, group, kind) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let group = group.trim();
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(ObjectId::new(
        &api_version,
        kind,
        (!ns.is_empty()).then_some(ns),
        name,
    ))
}

impl Footprint {
    fn empty(session: &str) -> Footprint {
        Footprint {
            session: session.to_string(),
            objects: BTreeSet::new(),
            selectors: BTreeSet::from([format!("{}={session}", gitops::labels::SESSION)]),
        }
    }

    /// Reads the session's footprint from the API server, now. Panics if it
    /// finds no Lease and no Kustomization or HelmRelease for the session (a
    /// capture that found nothing would make [`Footprint::assert_gone`] pass
    /// whatever happens).
    pub async fn capture(client: &Client, session: &str) -> Footprint {
        Self::try_capture(client, session)
            .await
            .unwrap_or_else(|e| panic!("cannot read what session {session} made: {e}"))
    }

    async fn try_capture(client: &Client, session: &str) -> Result<Footprint, String> {
        let res = Resources::discover(client).await?;
        let mut fp = Footprint::empty(session);
        let mut uids = BTreeSet::new();
        let add =
            |fp: &mut Footprint, uids: &mut BTreeSet<String>, id: ObjectId, o: &DynamicObject| {
                if let Some(uid) = &o.metadata.uid {
                    uids.insert(uid.clone());
                }
                fp.objects.insert(id);
            };

        // What the session made: everything labelled with its name.
        let mine = res
            .list_everywhere(client, &format!("{}={session}", gitops::labels::SESSION))
            .await?;
        for (id, o) in &mine {
            add(&mut fp, &mut uids, id.clone(), o);
        }
        if !mine.iter().any(|(id, _)| id.kind == "Lease") {
            return Err(format!("no Lease labelled with the session among {mine:?}"));
        }

        // What its appliers applied: their inventories, and their labels.
        for (id, o) in &mine {
            let ns = id.namespace.clone().unwrap_or_default();
            match (id.group(), id.kind.as_str()) {
                ("kustomize.toolkit.fluxcd.io", "Kustomization") => {
                    fp.selectors.insert(kustomize_selector(&id.name, &ns));
                    let entries = o.data["status"]["inventory"]["entries"].as_array();
                    for e in entries.into_iter().flatten() {
                        let entry = inventory_id(
                            e["id"].as_str().unwrap_or_default(),
                            e["v"].as_str().unwrap_or_default(),
                        )
                        .ok_or_else(|| format!("unreadable inventory entry {e}"))?;
                        fp.objects.insert(entry);
                    }
                }
                ("helm.toolkit.fluxcd.io", "HelmRelease") => {
                    fp.selectors.insert(helm_selector(&id.name, &ns));
                    // Helm's release records (Secrets owner=helm,name=<release>).
                    let storage = o.data["status"]["storageNamespace"]
                        .as_str()
                        .unwrap_or(&ns)
                        .to_string();
                    for h in o.data["status"]["history"].as_array().into_iter().flatten() {
                        if let Some(release) = h["name"].as_str() {
                            fp.selectors.insert(format!("owner=helm,name={release}"));
                            let secrets =
                                ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
                            let api: Api<DynamicObject> =
                                Api::namespaced_with(client.clone(), &storage, &secrets);
                            let list = api
                                .list(
                                    &ListParams::default()
                                        .labels(&format!("owner=helm,name={release}")),
                                )
                                .await
                                .map_err(|e| e.to_string())?;
                            for s in &list.items {
                                add(&mut fp, &mut uids, ObjectId::of(&secrets, s), s);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !fp
            .objects
            .iter()
            .any(|id| id.kind == "Kustomization" || id.kind == "HelmRelease")
        {
            return Err(format!(
                "no Kustomization or HelmRelease for the session: {:?}",
                fp.objects
            ));
        }
        let selectors: Vec<String> = fp.selectors.iter().cloned().collect();
        for sel in &selectors {
            for (id, o) in res.list_everywhere(client, sel).await? {
                add(&mut fp, &mut uids, id, &o);
            }
        }
        // Read back what the inventories name (for their uids).
        for id in fp.objects.clone() {
            if let Some(o) = res.get(client, &id).await? {
                add(&mut fp, &mut uids, id, &o);
            }
        }

        // What the cluster derived from them: owned objects (to a fixed
        // point: Deployment -> ReplicaSet -> Pod), and Services' Endpoints.
        let namespaces: BTreeSet<String> = fp
            .objects
            .iter()
            .filter_map(|id| id.namespace.clone())
            .collect();
        let mut everything = Vec::new();
        for ns in &namespaces {
            everything.extend(res.list_namespace(client, ns).await?);
        }
        loop {
            let before = fp.objects.len();
            for (id, o) in &everything {
                let owned = o
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| uids.contains(&r.uid));
                if owned && !fp.objects.contains(id) {
                    add(&mut fp, &mut uids, id.clone(), o);
                }
            }
            if fp.objects.len() == before {
                break;
            }
        }
        let services: Vec<ObjectId> = fp
            .objects
            .iter()
            .filter(|id| id.kind == "Service" && id.group().is_empty())
            .cloned()
            .collect();
        for svc in services {
            let endpoints = ObjectId::new("v1", "Endpoints", svc.namespace.as_deref(), &svc.name);
            if everything.iter().any(|(id, _)| *id == endpoints) {
                fp.objects.insert(endpoints);
            }
        }
        Ok(fp)
    }

    /// What a session is expected to make and apply, for one that cleans up
    /// before it can be read: its Lease, OCIRepository and Kustomization
    /// (named after it, in `namespace`), its ephemeral sandbox namespace when
    /// `ephemeral_sandbox`. Add the payload with [`Footprint::with_payload`].
    pub fn expected(session: &str, namespace: &str, ephemeral_sandbox: bool) -> Footprint {
        let mut fp = Footprint::empty(session);
        fp.selectors.insert(kustomize_selector(session, namespace));
        for (api_version, kind) in [
            ("coordination.k8s.io/v1", "Lease"),
            ("source.toolkit.fluxcd.io/v1", "OCIRepository"),
            ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ] {
            fp.objects
                .insert(ObjectId::new(api_version, kind, Some(namespace), session));
        }
        if ephemeral_sandbox {
            fp.objects
                .insert(ObjectId::new("v1", "Namespace", None, session));
        }
        fp
    }

    /// Adds every object of the YAML files under `dir`, in `namespace`
    /// unless a document names its own (and then in `target_namespace` when
    /// set, as Flux's `targetNamespace` does).
    pub fn with_payload(
        mut self,
        dir: &Path,
        namespace: &str,
        target_namespace: Option<&str>,
    ) -> Footprint {
        #[derive(serde::Deserialize)]
        struct Meta {
            name: String,
            namespace: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Doc {
            api_version: String,
            kind: String,
            metadata: Meta,
        }
        let mut files = vec![dir.to_path_buf()];
        while let Some(p) = files.pop() {
            if p.is_dir() {
                for e in std::fs::read_dir(&p).expect("read payload dir") {
                    files.push(e.expect("dir entry").path());
                }
                continue;
            }
            if !matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                continue;
            }
            let bytes = std::fs::read(&p).expect("read payload file");
            let Ok(docs) = serde_saphyr::from_slice_multiple::<Doc>(&bytes) else {
                continue;
            };
            for d in docs {
                let ns = target_namespace
                    .map(str::to_string)
                    .or(d.metadata.namespace)
                    .unwrap_or_else(|| namespace.to_string());
                self.objects.insert(ObjectId::new(
                    &d.api_version,
                    &d.kind,
                    Some(&ns),
                    &d.metadata.name,
                ));
            }
        }
        self
    }

    /// Whether the footprint holds an object of `kind` named `name` (in `namespace`, if given).
    pub fn has(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.objects.iter().any(|id| {
            id.kind == kind
                && id.name == name
                && (namespace.is_none() || id.namespace.as_deref() == namespace)
        })
    }

    /// The kinds in the footprint.
    pub fn kinds(&self) -> BTreeSet<&str> {
        self.objects.iter().map(|id| id.kind.as_str()).collect()
    }

    /// Waits until every object of the footprint is gone (not merely being
    /// deleted), then checks that no object of any kind, in any namespace,
    /// still carries the session's label or its appliers' labels.
    pub async fn assert_gone(&self, client: &Client) {
        let res = Resources::discover(client)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let wait = Duration::from_secs(90);
        eventually(
            &format!(
                "everything session {} made or applied to be gone",
                self.session
            ),
            wait,
            || async {
                let mut left = Vec::new();
                for id in &self.objects {
                    if let Some(o) = res.get(client, id).await? {
                        let deleting = if o.metadata.deletion_timestamp.is_some() {
                            " (being deleted)"
                        } else {
                            ""
                        };
                        left.push(format!("{id}{deleting}"));
                    }
                }
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} left: {}", left.len(), left.join(", ")))
                }
            },
        )
        .await;
        eventually(
            &format!("no object labelled for session {}", self.session),
            wait,
            || async {
                let mut left = Vec::new();
                for sel in &self.selectors {
                    for (id, _) in res.list_everywhere(client, sel).await? {
                        left.push(format!("{id} [{sel}]"));
                    }
                }
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join(", "))
                }
            },
        )
        .await;
    }
}

/// Every namespace the API server reports while it lives: proof that a
/// command never created one, even for a moment.
pub struct NamespaceWatch {
    client: kube::Client,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl NamespaceWatch {
    /// Watches every namespace; returns once the watch is established (its
    /// initial list done), so nothing created afterwards can be missed.
    pub async fn start(client: kube::Client) -> NamespaceWatch {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let api: Api<Namespace> = Api::all(client.clone());
        let out = seen.clone();
        let (ready, established) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                        out.lock()
                            .unwrap()
                            .insert(ns.metadata.name.unwrap_or_default());
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("the namespace watch is established within 30 s")
            .expect("the namespace watch runs");
        NamespaceWatch { client, seen }
    }

    /// Whether a namespace named `name` has been seen by now. A watch
    /// delivers events in order, so once a namespace created now is seen,
    /// every earlier event has been too: no guess at how long events take.
    pub async fn saw(&self, name: &str) -> bool {
        let marker = unique("barrier");
        create_namespace(&self.client, &marker).await;
        eventually(
            "the namespace watch to catch up",
            Duration::from_secs(30),
            || async {
                if self.seen.lock().unwrap().contains(&marker) {
                    Ok(())
                } else {
                    Err(format!("{marker} not seen yet"))
                }
            },
        )
        .await;
        delete_namespace(&self.client, &marker).await;
        self.seen.lock().unwrap().contains(name)
    }
}

/// Whether one of `pods` has a container of `image` waiting because the
/// kubelet could not pull it (`ErrImagePull` or `ImagePullBackOff`).
pub fn pull_failed(pods: &[k8s_openapi::api::core::v1::Pod], image: &str) -> bool {
    pods.iter()
        .flat_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default()
        })
        .any(|c| {
            c.image == image
                && c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
}

/// A session's Lease as the API server holds it (found by its label, in
/// whichever namespace it lives).
pub async fn session_lease(
    client: &Client,
    session: &str,
) -> Option<k8s_openapi::api::coordination::v1::Lease> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::all(client.clone())
        .list(&ListParams::default().labels(&format!("gitops.kubectl.dev/session={session}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|l| l.metadata.name.as_deref() == Some(session))
}

/// `kubectl-gitops_sandbox` with the harness's connection flags.
pub fn sandbox_cli(harness: &Harness, args: &[&str]) -> Output {
    output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(args),
    )
}

/// Waits for a Kustomization's verdict: Ok(()) when Ready, Err(Flux's
/// failure, in the suite's words) when it failed.
pub async fn kustomization_verdict(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    use gitops::flux::{Kustomization, condition, failure};
    let api: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Kustomization {ns}/{name} to finish"),
        timeout,
        || async {
            let ks = api.get(name).await.map_err(|e| e.to_string())?;
            let status = ks.status.unwrap_or_default();
            match condition(&status.conditions, "Ready") {
                Some(c) if c.status == "True" => Ok(Ok(())),
                Some(c) if c.status == "False" && status.last_attempted_revision.is_some() => {
                    Ok(Err(failure(&status).unwrap_or_else(|| c.message.clone())))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Pushes `dir` to the harness registry as `e2e/REPO:latest` and creates an
/// OCIRepository `name` in `ns` on that tag, labelled as a session's (what a
/// session does, without its checks).
pub async fn push_oci_source(
    harness: &Harness,
    client: &Client,
    ns: &str,
    name: &str,
    repo: &str,
    dir: &Path,
) {
    use gitops::flux::{OCIRepository, OCIRepositoryRef, OCIRepositorySpec};
    use gitops::registry::{ArtifactRef, PushOptions, Registry, RegistryOptions};
    let reference: ArtifactRef = format!("oci://{}/e2e/{repo}:latest", harness.registry)
        .parse()
        .expect("a valid reference");
    Registry::new(&reference, &RegistryOptions::default())
        .push(dir, &PushOptions::default())
        .await
        .expect("push to the harness registry");
    let mut source = OCIRepository::new(
        name,
        OCIRepositorySpec {
            url: reference.repository_url(),
            reference: Some(OCIRepositoryRef {
                tag: Some("latest".into()),
                ..Default::default()
            }),
            interval: "10m".into(),
            ..Default::default()
        },
    );
    source.metadata.labels = Some(gitops::labels::managed("session"));
    Api::<OCIRepository>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &source)
        .await
        .expect("create the OCIRepository");
}

mod gitops_repo;
pub use gitops_repo::{GitOpsRepo, flux_resource, kustomization_resource, request_reconcile};

/// Starts `kubectl gitops-sessions ui --no-open`; see [`start_page`].
pub fn serve_page(
    harness: &Harness,
) -> (
    std::process::Child,
    String,
    String,
    std::thread::JoinHandle<()>,
) {
    let mut cmd = plugin("kubectl-gitops_sessions");
    cmd.args(harness.kube_args()).args(["ui", "--no-open"]);
    start_page(cmd)
}

/// Starts the page's server; the page's URL and the one-time sign-in URL
/// it printed, and the thread that keeps reading its output (closing the
/// pipe would end it).
pub fn start_page(
    mut cmd: Command,
) -> (
    std::process::Child,
    String,
    String,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let mut ui = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(ui.stdout.take().unwrap());
    let url = |line: &str, start: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with(start))
            .map(str::to_string)
    };
    let (mut page, mut login, mut printed) = (None, None, String::new());
    while login.is_none() {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("the page's server ended: {printed}");
        }
        page = page.or_else(|| url(&line, "http://127.0.0.1:").filter(|u| u.ends_with('/')));
        login = url(&line, "http://127.0.0.1:").filter(|u| u.contains("/login?code="));
        printed.push_str(&line);
    }
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let page = page.unwrap_or_else(|| panic!("no page URL in {printed:?}"));
    (ui, page, login.unwrap_or_default(), drain)
}
