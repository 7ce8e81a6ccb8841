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

/// Deletes a test namespace (the controller-manager finishes the job).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}
