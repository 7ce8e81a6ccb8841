//! Helpers for the end-to-end tests: find the running harness (started by
//! `tests/cluster/up`), connect to it, and wait for the cluster to converge.
//!
//! A test that cannot reach the harness panics with the command that starts
//! it; nothing here ever skips a test.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gitops::cluster::{Cluster, KubeFlags};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
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
            dir,
        }
    }

    /// The kubectl flags that select the harness.
    pub fn kube_flags(&self) -> KubeFlags {
        KubeFlags {
            kubeconfig: Some(self.kubeconfig.clone()),
            context: Some(self.context.clone()),
            request_timeout: "30s".into(),
            ..Default::default()
        }
    }

    /// A client for the harness; panics if the API server does not answer.
    pub async fn cluster(&self) -> Cluster {
        gitops::install_crypto_provider();
        let cluster = self
            .kube_flags()
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
        let cluster = KubeFlags {
            kubeconfig: Some(kubeconfig),
            request_timeout: "30s".into(),
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
        use std::io::BufRead;
        let mut child = plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["-o", "json"])
            .args(args)
            .current_dir(dir)
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
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
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
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; events so far:\n{}",
                    self.seen
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
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
