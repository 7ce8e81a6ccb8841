//! GitOps Run sessions: a directory synced to the cluster through Flux on
//! every save, and everything the session created removed when it stops.
//!
//! A session is recorded as a `coordination.k8s.io` Lease that the running
//! command renews; every object it creates carries the suite's labels and
//! the session's name, and cleanup deletes only those.

pub mod changes;
pub mod export;
pub mod preflight;
pub mod status;
pub mod validate;
pub mod view;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use serde::Serialize;
use sha2::Digest as _;

use crate::artifact::{self, WalkOptions};
use crate::flux::{
    self, Decryption, Kustomization, KustomizationSpec, LocalObjectReference, OCIRepository,
    OCIRepositoryRef, OCIRepositorySpec, OCIRepositoryStatus, SourceReference,
};
use crate::labels;
use crate::registry::{self, ArtifactRef, PushOptions, RegistryError, RegistryOptions};
use crate::sandbox::{self, CreateOptions, SandboxError, Target};

pub use changes::{Action, Change};
pub use preflight::RegistryChoice;

/// The field manager of the suite's server-side applies.
pub const FIELD_MANAGER: &str = "kubectl-gitops";
/// Lease annotations, under the suite's prefix.
pub mod keys {
    pub const PID: &str = "gitops.kubectl.dev/pid";
    pub const DIR: &str = "gitops.kubectl.dev/dir";
    pub const REGISTRY: &str = "gitops.kubectl.dev/registry";
    pub const MODE: &str = "gitops.kubectl.dev/mode";
    pub const SANDBOX: &str = "gitops.kubectl.dev/sandbox";
    pub const VERSION: &str = "gitops.kubectl.dev/version";
    pub const STARTED_AT: &str = "gitops.kubectl.dev/started-at";
    pub const LAST_REVISION: &str = "gitops.kubectl.dev/last-revision";
    pub const LAST_SYNC: &str = "gitops.kubectl.dev/last-sync";
    pub const LAST_STATUS: &str = "gitops.kubectl.dev/last-status";
    pub const EPHEMERAL_SANDBOX: &str = "gitops.kubectl.dev/ephemeral-sandbox";
    pub const PORT_FORWARDS: &str = "gitops.kubectl.dev/port-forwards";
}

/// Why a session could not start, sync or stop.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "context {context:?} (API server {server}) does not look like a local cluster; GitOps Run \\
         changes what it syncs on every save, so it only runs on local clusters by default. If \\
         you mean it, pass --allow-k8s-context {context}"
    )]
    NotLocal { context: String, server: String },
    #[error(
        "no registry to push to. Choose one of: --registry oci://HOST[:PORT], the \\
         GITOPS_RUN_REGISTRY environment variable, or a cluster that publishes its local registry \\
         in the ConfigMap kube-public/local-registry-hosting (kind, k3d, minikube and ctlptl do)"
    )]
    NoRegistry,
    #[error("invalid session name {0:?}: use lowercase letters, digits and '-' (at most 63)")]
    InvalidName(String),
    #[error(
        "session {name} is already running ({holder}, pid {pid}); stop it first, or pick another --name"
    )]
    AlreadyRunning {
        name: String,
        holder: String,
        pid: String,
    },
    #[error(
        "a sandbox named {name} already exists, made by {owner}; pick another session name with --name"
    )]
    SandboxTaken { name: String, owner: String },
    #[error("sandbox {0} does not exist; create it with `kubectl gitops-sandbox create {0}`")]
    NoSuchSandbox(String),
    #[error("{what}: {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Flux(#[from] flux::FluxError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Where a session applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Into a sandbox (the default).
    Sandboxed,
    /// Straight into the cluster (`--no-session`).
    Cluster,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sandboxed => "sandboxed",
            Mode::Cluster => "cluster",
        }
    }
}

/// Everything a session needs to start.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub name: String,
    /// What is packaged (canonical): the Git top level of the directory, or `--root-dir`.
    pub root: PathBuf,
    /// The synced directory, relative to `root` (`./` form), the Kustomization's `path`.
    pub path: String,
    pub mode: Mode,
    /// `--sandbox NAME`: an existing sandbox (not deleted at the end).
    pub sandbox: Option<String>,
    /// Cluster mode: where the session's Flux objects live.
    pub namespace: String,
    /// Cluster mode: `--target-namespace`.
    pub target_namespace: Option<String>,
    pub registry: RegistryChoice,
    pub registry_options: RegistryOptions,
    pub walk: WalkOptions,
    /// An age key for SOPS decryption.
    pub decryption_key: Option<Vec<u8>>,
    /// Health-check timeout of the Kustomization.
    pub timeout: Duration,
    /// Lease duration; renewed at a third of it.
    pub lease_duration: Duration,
    /// `--port-forward` specs, recorded for `gitops-sessions`.
    pub port_forwards: Vec<String>,
    /// Helm charts: `--values` files (later files win).
    pub values: Vec<PathBuf>,
    /// Helm charts: `--release-namespace` (cluster mode).
    pub release_namespace: Option<String>,
    pub owner: String,
}

/// Derives a session name from a directory: `run-<dir>-<hash>`, unique per
/// user and directory, stable across restarts.
pub fn derive_name(dir: &Path, owner: &str) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = base.trim_matches('-');
    let base: String = base
        .chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string();
    let base = if base.is_empty() {
        "dir".to_string()
    } else {
        base
    };
    let hash = sha2::Sha256::digest(format!("{owner}:{}", dir.display()).as_bytes());
    format!("run-{base}-{}", &artifact::hex(&hash)[..6])
}

/// Checks a session name (it names a namespace in sandboxed mode).
pub fn validate_name(name: &str) -> Result<(), SessionError> {
    sandbox::validate_name(name).map_err(|_| SessionError::InvalidName(name.to_string()))
}

/// A phase of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Validate,
    Build,
    Push,
    Fetch,
    Apply,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Build => "build",
            Phase::Push => "push",
            Phase::Fetch => "fetched by Flux",
            Phase::Apply => "applied and healthy",
        }
    }
}

/// What a session reports, as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        session: String,
        namespace: String,
        mode: Mode,
        sandbox: Option<String>,
        registry: String,
        root: String,
        path: String,
    },
    PhaseStarted {
        phase: Phase,
    },
    PhaseDone {
        phase: Phase,
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Synced {
        revision: String,
        changes: Vec<Change>,
        elapsed_ms: u64,
    },
    Unchanged {
        digest: String,
    },
    Failed {
        phase: Phase,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
    Warning {
        message: String,
    },
    Cleaned {
        removed: Vec<String>,
    },
}

/// Receives a session's events.
pub type Reporter = Arc<dyn Fn(&Event) + Send + Sync>;

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Ready { revision: String },
    Unchanged,
    Failed { phase: Phase, message: String },
}

/// A running session.
pub struct Session {
    client: Client,
    cfg: SessionConfig,
    /// Where its Flux objects and Lease live.
    namespace: String,
    target: Target,
    /// The sandbox this session created (and deletes).
    ephemeral_sandbox: Option<String>,
    objects_ready: bool,
    last_layer: Option<String>,
    last_ok: bool,
    renewer: Option<tokio::task::JoinHandle<()>>,
    report: Reporter,
    started: String,
    /// The directory is a Helm chart: a HelmRelease instead of a Kustomization.
    chart: bool,
}

fn session_labels(name: &str, sandbox: Option<&str>) -> BTreeMap<String, String> {
    let mut l = labels::managed("session");
    l.insert(labels::SESSION.into(), name.into());
    if let Some(s) = sandbox {
        l.insert(labels::SANDBOX.into(), s.into());
    }
    l
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Whether a Lease is held and was renewed within its duration.
pub fn lease_is_live(lease: &Lease, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let renewed_ms = renewed.0.as_millisecond();
    renewed_ms + seconds * 1000 > now.timestamp_millis()
}

impl Session {
    /// Prepares the session: sandbox, Lease, decryption Secret. Flux objects
    /// are created by the first sync, once there is an artifact to point at.
    pub async fn start(
        client: Client,
        mut cfg: SessionConfig,
        report: Reporter,
    ) -> Result<Session, SessionError> {
        validate_name(&cfg.name)?;
        // Read the Docker config (and run its helper) once, not on every push.
        if cfg.registry_options.creds.is_none() {
            let host = cfg
                .registry
                .push
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            cfg.registry_options.creds = registry::docker_config_credentials(&host);
        }
        let (namespace, target, ephemeral_sandbox, sandbox_name) = match (cfg.mode, &cfg.sandbox) {
            (Mode::Cluster, _) => {
                let target = Target {
                    namespace: cfg.namespace.clone(),
                    service_account: None,
                    kubeconfig_secret: None,
                    target_namespace: cfg.target_namespace.clone(),
                };
                (cfg.namespace.clone(), target, None, None)
            }
            (Mode::Sandboxed, Some(existing)) => {
                let sb = sandbox::get(&client, existing)
                    .await?
                    .ok_or_else(|| SessionError::NoSuchSandbox(existing.clone()))?;
                (
                    sb.namespace.clone(),
                    sb.target,
                    None,
                    Some(existing.clone()),
                )
            }
            (Mode::Sandboxed, None) => {
                let sb = match sandbox::get(&client, &cfg.name).await? {
                    // A sandbox left by an earlier run of this same session: reuse it.
                    Some(sb)
                        if sb.owner.as_deref() == Some(cfg.owner.as_str()) && !sb.terminating =>
                    {
                        sb
                    }
                    Some(sb) if !sb.terminating => {
                        return Err(SessionError::SandboxTaken {
                            name: cfg.name.clone(),
                            owner: sb.owner.unwrap_or_else(|| "someone else".into()),
                        });
                    }
                    found => {
                        if found.is_some() {
                            // The last run's sandbox is still being deleted: let it go first.
                            let deadline = Instant::now() + Duration::from_secs(120);
                            while sandbox::get(&client, &cfg.name).await?.is_some() {
                                if Instant::now() > deadline {
                                    return Err(SessionError::Timeout(
                                        Duration::from_secs(120),
                                        format!("the previous sandbox {} to be deleted", cfg.name),
                                    ));
                                }
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                        }
                        let options = CreateOptions {
                            owner: cfg.owner.clone(),
                            // A safety net: `gitops-sandbox gc` removes it if cleanup never runs.
                            ttl: Some(Duration::from_secs(24 * 3600)),
                            labels: BTreeMap::from([(
                                labels::SESSION.to_string(),
                                cfg.name.clone(),
                            )]),
                            ..Default::default()
                        };
                        sandbox::create(&client, &cfg.name, &options).await?
                    }
                };
                (
                    sb.namespace.clone(),
                    sb.target,
                    Some(cfg.name.clone()),
                    Some(cfg.name.clone()),
                )
            }
        };
        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        if let Some(existing) = leases.get_opt(&cfg.name).await?
            && lease_is_live(&existing, chrono::Utc::now())
            && !holder_process_gone(&existing, &cfg.owner)
        {
            let a = existing.annotations();
            return Err(SessionError::AlreadyRunning {
                name: cfg.name.clone(),
                holder: existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default(),
                pid: a.get(keys::PID).cloned().unwrap_or_default(),
            });
        }
        let started = now_rfc3339();
        let rel = cfg.path.trim_start_matches("./");
        let chart = crate::helm::is_chart(&if rel.is_empty() {
            cfg.root.clone()
        } else {
            cfg.root.join(rel)
        });
        let mut session = Session {
            chart,
            client,
            namespace,
            target,
            ephemeral_sandbox,
            objects_ready: false,
            last_layer: None,
            last_ok: false,
            renewer: None,
            report,
            started,
            cfg,
        };
        session.write_lease(sandbox_name.as_deref()).await?;
        if let Some(key) = &session.cfg.decryption_key {
            let secret = Secret {
                metadata: session.meta(&format!("{}-sops", session.cfg.name)),
                data: Some(BTreeMap::from([(
                    "identity.agekey".to_string(),
                    k8s_openapi::ByteString(key.clone()),
                )])),
                ..Default::default()
            };
            let secrets: Api<Secret> = Api::namespaced(session.client.clone(), &session.namespace);
            apply(&secrets, &format!("{}-sops", session.cfg.name), &secret).await?;
        }
        session.renewer = Some(session.spawn_renewer());
        (session.report)(&Event::Started {
            session: session.cfg.name.clone(),
            namespace: session.namespace.clone(),
            mode: session.cfg.mode,
            sandbox: sandbox_name,
            registry: format!(
                "{} ({})",
                session.cfg.registry.push, session.cfg.registry.origin
            ),
            root: session.cfg.root.display().to_string(),
            path: session.cfg.path.clone(),
        });
        Ok(session)
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Where its objects live.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The synced directory.
    pub fn dir(&self) -> PathBuf {
        let rel = self.cfg.path.trim_start_matches("./");
        if rel.is_empty() {
            self.cfg.root.clone()
        } else {
            self.cfg.root.join(rel)
        }
    }

    /// Where and as whom it applies.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn sandbox_label(&self) -> Option<String> {
        match self.cfg.mode {
            Mode::Sandboxed => Some(
                self.cfg
                    .sandbox
                    .clone()
                    .unwrap_or_else(|| self.cfg.name.clone()),
            ),
            Mode::Cluster => None,
        }
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(session_labels(
                &self.cfg.name,
                self.sandbox_label().as_deref(),
            )),
            annotations: Some(BTreeMap::from([(
                labels::OWNER.to_string(),
                self.cfg.owner.clone(),
            )])),
            ..Default::default()
        }
    }

    async fn write_lease(&self, sandbox_name: Option<&str>) -> Result<(), kube::Error> {
        let mut meta = self.meta(&self.cfg.name);
        let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend([
            (keys::PID.to_string(), std::process::id().to_string()),
            (keys::DIR.to_string(), self.dir().display().to_string()),
            (keys::REGISTRY.to_string(), self.cfg.registry.push.clone()),
            (keys::MODE.to_string(), self.cfg.mode.as_str().to_string()),
            (
                keys::SANDBOX.to_string(),
                sandbox_name.unwrap_or("").to_string(),
            ),
            (keys::VERSION.to_string(), crate::VERSION.to_string()),
            (keys::STARTED_AT.to_string(), self.started.clone()),
            (
                keys::EPHEMERAL_SANDBOX.to_string(),
                self.ephemeral_sandbox.is_some().to_string(),
            ),
        ]);
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: meta,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.owner.clone()),
                lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        apply(&leases, &self.cfg.name, &lease).await.map(|_| ())
    }

    fn spawn_renewer(&self) -> tokio::task::JoinHandle<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = self.cfg.name.clone();
        let every = self.cfg.lease_duration / 3;
        let report = self.report.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                let patch = serde_json::json!({"spec": {"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
                match leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) if failing => {
                        failing = false;
                        report(&Event::Warning {
                            message:
                                "reconnected to the API server; the session's heartbeat is back"
                                    .into(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        report(&Event::Warning {
                            message: format!(
                                "cannot renew the session's heartbeat ({e}); retrying"
                            ),
                        });
                    }
                    Err(_) => {}
                }
            }
        })
    }

    async fn note(&self, revision: &str, status: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {
            keys::LAST_REVISION: revision,
            keys::LAST_SYNC: now_rfc3339(),
            keys::LAST_STATUS: status,
        }}});
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Err(e) = leases
            .patch(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!("cannot record the sync in the lease: {e}");
        }
    }

    fn reference(&self, host: &str) -> Result<ArtifactRef, SessionError> {
        Ok(format!("oci://{host}/gitops-run/{}:latest", self.cfg.name).parse::<ArtifactRef>()?)
    }

    /// The session's OCIRepository (`layer`: which layer Flux takes, for charts).
    fn oci_repository(
        &self,
        layer: Option<flux::LayerSelector>,
    ) -> Result<OCIRepository, SessionError> {
        let pull = self.reference(&self.cfg.registry.pull)?;
        Ok(OCIRepository {
            metadata: self.meta(&self.cfg.name),
            spec: OCIRepositorySpec {
                url: pull.repository_url(),
                reference: Some(OCIRepositoryRef {
                    tag: Some("latest".into()),
                    ..Default::default()
                }),
                interval: "10m".into(),
                timeout: Some("30s".into()),
                insecure: self.cfg.registry.insecure.then_some(true),
                layer_selector: layer,
                ..Default::default()
            },
            status: None,
        })
    }

    /// Server-side applies the session's source and applier (Kustomization or HelmRelease).
    async fn apply_pair<K>(&mut self, repo: &OCIRepository, applier: &K) -> Result<(), SessionError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = &self.cfg.name;
        apply(
            &Api::namespaced(self.client.clone(), &self.namespace),
            name,
            repo,
        )
        .await?;
        apply(
            &Api::namespaced(self.client.clone(), &self.namespace),
            name,
            applier,
        )
        .await?;
        self.objects_ready = true;
        Ok(())
    }

    /// The "fetched by Flux" phase: `Some(outcome)` when Flux failed to fetch.
    async fn fetch_phase(
        &mut self,
        revision: &str,
        what: &str,
    ) -> Result<Option<SyncOutcome>, SessionError> {
        let t = self.phase(Phase::Fetch);
        let status = self.await_fetch(revision).await?.unwrap_or_default();
        if status
            .artifact
            .as_ref()
            .is_none_or(|a| a.revision != revision)
        {
            let message = flux::condition(&status.conditions, "Ready")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let text = format!("Flux could not fetch the {what}: {message}");
            return Ok(Some(self.fail(Phase::Fetch, text, None)));
        }
        self.done(Phase::Fetch, t, None);
        Ok(None)
    }

    /// Waits until source-controller has fetched exactly `revision`.
    async fn await_fetch(
        &mut self,
        revision: &str,
    ) -> Result<Option<OCIRepositoryStatus>, SessionError> {
        let repos: Api<OCIRepository> = Api::namespaced(self.client.clone(), &self.namespace);
        let want = revision.to_string();
        let limit = Duration::from_secs(60);
        let fetched = await_until(
            &repos,
            &self.cfg.name,
            limit,
            format!("source-controller to fetch {revision}"),
            move |o: Option<&OCIRepository>| {
                o.and_then(|o| o.status.as_ref()).is_some_and(|s| {
                    s.artifact.as_ref().is_some_and(|a| a.revision == want)
                        || flux::condition(&s.conditions, "Ready").is_some_and(|c| {
                            c.status == "False"
                                && c.reason != "Progressing"
                                && c.message.contains(&want)
                        })
                })
            },
        )
        .await?;
        Ok(fetched.and_then(|o| o.status))
    }

    async fn ensure_objects(&mut self) -> Result<(), SessionError> {
        let name = self.cfg.name.clone();
        let repo = self.oci_repository(None)?;
        let mut spec = KustomizationSpec {
            source_ref: SourceReference {
                kind: "OCIRepository".into(),
                name: name.clone(),
                namespace: None,
            },
            path: Some(self.cfg.path.clone()),
            prune: true,
            wait: Some(true),
            timeout: Some(format!("{}s", self.cfg.timeout.as_secs().max(1))),
            interval: "10m".into(),
            retry_interval: Some("30s".into()),
            ..Default::default()
        };
        self.target.configure(&mut spec);
        if self.cfg.decryption_key.is_some() {
            spec.decryption = Some(Decryption {
                provider: "sops".into(),
                secret_ref: Some(LocalObjectReference {
                    name: format!("{name}-sops"),
                }),
            });
        }
        let ks = Kustomization {
            metadata: self.meta(&name),
            spec,
            status: None,
        };
        self.apply_pair(&repo, &ks).await
    }

    fn phase(&self, phase: Phase) -> Instant {
        (self.report)(&Event::PhaseStarted { phase });
        Instant::now()
    }

    fn done(&self, phase: Phase, start: Instant, detail: Option<String>) {
        (self.report)(&Event::PhaseDone {
            phase,
            elapsed_ms: start.elapsed().as_millis() as u64,
            detail,
        });
    }

    fn fail(&mut self, phase: Phase, message: String, file: Option<String>) -> SyncOutcome {
        // Before the push, nothing changed in the cluster: the last good
        // revision is still what is applied.
        if !matches!(phase, Phase::Validate | Phase::Build) {
            self.last_ok = false;
        }
        (self.report)(&Event::Failed {
            phase,
            message: message.clone(),
            file,
        });
        SyncOutcome::Failed { phase, message }
    }

    /// Syncs the directory once: validate, build (not pushed when unchanged),
    /// push, and wait for Flux to apply exactly what was pushed.
    pub async fn sync(&mut self) -> SyncOutcome {
        if self.chart {
            return self.sync_chart().await;
        }
        let started = Instant::now();
        let t = self.phase(Phase::Validate);
        let index = {
            let (root, walk) = (self.cfg.root.clone(), self.cfg.walk.clone());
            match tokio::task::spawn_blocking(move || validate::validate(&root, &walk)).await {
                Ok(Ok(index)) => index,
                Ok(Err(errors)) => {
                    let file = errors.first().map(|e| e.file.clone());
                    let message = errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n");
                    return self.fail(
                        Phase::Validate,
                        format!("invalid YAML, nothing was pushed:\n{message}"),
                        file,
                    );
                }
                Err(e) => return self.fail(Phase::Validate, e.to_string(), None),
            }
        };
        self.done(Phase::Validate, t, None);

        let t = self.phase(Phase::Build);
        let (file, built) = match registry::build(&self.cfg.root, &self.cfg.walk).await {
            Ok(b) => b,
            Err(e) => return self.fail(Phase::Build, crate::output::error_chain(&e), None),
        };
        if self.last_ok && self.last_layer.as_deref() == Some(built.layer.digest.as_str()) {
            (self.report)(&Event::Unchanged {
                digest: built.layer.digest,
            });
            return SyncOutcome::Unchanged;
        }
        self.done(
            Phase::Build,
            t,
            Some(format!(
                "{} entries, {} bytes",
                built.entries, built.layer.size
            )),
        );

        let t = self.phase(Phase::Push);
        let reference = match self.reference(&self.cfg.registry.push) {
            Ok(r) => r,
            Err(e) => return self.fail(Phase::Push, e.to_string(), None),
        };
        let options = PushOptions {
            walk: self.cfg.walk.clone(),
            registry: self.cfg.registry_options.clone(),
            ..Default::default()
        };
        let pushed =
            match registry::push_built(&self.cfg.root, &file, &built, &reference, &options).await {
                Ok(p) => p,
                Err(e) => return self.fail(Phase::Push, crate::output::error_chain(&e), None),
            };
        self.last_layer = Some(built.layer.digest.clone());
        self.done(Phase::Push, t, Some(pushed.digest_url.clone()));

        match self
            .wait_for_flux(&pushed.flux_revision, &index, started)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => self.fail(Phase::Apply, crate::output::error_chain(&e), None),
        }
    }

    async fn wait_for_flux(
        &mut self,
        revision: &str,
        index: &validate::ObjectIndex,
        started: Instant,
    ) -> Result<SyncOutcome, SessionError> {
        let name = self.cfg.name.clone();
        let repos: Api<OCIRepository> = Api::namespaced(self.client.clone(), &self.namespace);
        let kss: Api<Kustomization> = Api::namespaced(self.client.clone(), &self.namespace);
        let before = match kss.get_opt(&name).await? {
            Some(ks) => ks
                .status
                .and_then(|s| s.inventory)
                .map(|i| i.entries)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if !self.objects_ready || repos.get_opt(&name).await?.is_none() {
            self.ensure_objects().await?;
        }
        let sync_started = chrono::Utc::now();
        flux::request_reconcile(&repos, &name).await?;

        if let Some(failed) = self.fetch_phase(revision, "artifact").await? {
            return Ok(failed);
        }

        let t = self.phase(Phase::Apply);
        let want = revision.to_string();
        let limit = self.cfg.timeout + Duration::from_secs(30);
        let applied = await_until(
            &kss,
            &name,
            limit,
            format!("kustomize-controller to apply {revision}"),
            move |o: Option<&Kustomization>| {
                o.and_then(|o| o.status.as_ref()).is_some_and(|s| {
                    s.last_attempted_revision.as_deref() == Some(want.as_str())
                        && flux::condition(&s.conditions, "Ready")
                            .is_some_and(|c| c.status != "Unknown")
                })
            },
        )
        .await?;
        let status = applied.and_then(|o| o.status).unwrap_or_default();
        if let Some(message) = flux::failure(&status) {
            let file = validate::file_for(index, &message);
            self.note(revision, "Failed").await;
            return Ok(self.fail(Phase::Apply, message, file));
        }
        self.done(Phase::Apply, t, None);
        let after = status.inventory.map(|i| i.entries).unwrap_or_default();
        let events =
            changes::applied_events(&self.client, &self.namespace, &name, revision, sync_started)
                .await;
        let changes = changes::changes(&before, &after, &events);
        self.last_ok = true;
        self.note(revision, "Ready").await;
        (self.report)(&Event::Synced {
            revision: revision.to_string(),
            changes,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(SyncOutcome::Ready {
            revision: revision.to_string(),
        })
    }

    /// The merged `--values` files (later files win), as HelmRelease values.
    fn values(&self) -> Result<serde_json::Value, String> {
        let mut merged = serde_json::Value::Object(Default::default());
        for file in &self.cfg.values {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--values {}: {e}", file.display()))?;
            let value: serde_json::Value = serde_saphyr::from_str(&text)
                .map_err(|e| format!("--values {}: not valid YAML: {e}", file.display()))?;
            merge(&mut merged, value);
        }
        Ok(merged)
    }

    async fn ensure_release(&mut self) -> Result<(), SessionError> {
        let name = self.cfg.name.clone();
        let repo = self.oci_repository(Some(flux::LayerSelector {
            media_type: crate::helm::CONTENT_MEDIA_TYPE.into(),
            operation: Some("copy".into()),
        }))?;
        let values = self
            .values()
            .map_err(|e| SessionError::Timeout(Duration::ZERO, e))?;
        let target_namespace = self
            .target
            .target_namespace
            .clone()
            .or_else(|| self.cfg.release_namespace.clone());
        let hr = flux::HelmRelease {
            metadata: self.meta(&name),
            spec: flux::HelmReleaseSpec {
                interval: "10m".into(),
                chart_ref: Some(SourceReference {
                    kind: "OCIRepository".into(),
                    name: name.clone(),
                    namespace: None,
                }),
                release_name: Some(name.clone()),
                storage_namespace: target_namespace.clone(),
                target_namespace,
                service_account_name: self.target.service_account.clone(),
                kube_config: self.target.kubeconfig_secret.as_ref().map(|(n, k)| {
                    flux::KubeConfigReference {
                        secret_ref: flux::SecretKeyReference {
                            name: n.clone(),
                            key: Some(k.clone()),
                        },
                    }
                }),
                timeout: Some(format!("{}s", self.cfg.timeout.as_secs().max(1))),
                values: Some(values),
                // A failed upgrade leaves the previous release in place; no retries,
                // the next save is the retry.
                install: Some(serde_json::json!({"remediation": {"retries": 0}})),
                upgrade: Some(serde_json::json!({"remediation": {"retries": 0}})),
            },
            status: None,
        };
        self.apply_pair(&repo, &hr).await
    }

    async fn sync_chart(&mut self) -> SyncOutcome {
        let started = Instant::now();
        let dir = self.dir();
        let t = self.phase(Phase::Validate);
        if let Err(e) = crate::helm::read_chart(&dir) {
            return self.fail(
                Phase::Validate,
                format!("{e}; nothing was pushed"),
                Some("Chart.yaml".into()),
            );
        }
        if let Err(e) = self.values() {
            return self.fail(Phase::Validate, e, None);
        }
        self.done(Phase::Validate, t, None);

        let t = self.phase(Phase::Build);
        let packaged = {
            let (dir, walk) = (dir.clone(), self.cfg.walk.clone());
            tokio::task::spawn_blocking(move || {
                let file = tempfile::tempfile().map_err(|e| e.to_string())?;
                let (file, chart) =
                    crate::helm::package(&dir, &walk, std::io::BufWriter::new(file))
                        .map_err(|e| crate::output::error_chain(&e))?;
                let mut file = file.into_inner().map_err(|e| e.to_string())?;
                std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
                Ok::<_, String>((file, chart))
            })
            .await
        };
        let (file, chart) = match packaged {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return self.fail(Phase::Build, e, None),
            Err(e) => return self.fail(Phase::Build, e.to_string(), None),
        };
        let values_key =
            serde_json::to_string(&self.values().unwrap_or_default()).unwrap_or_default();
        let key = format!("{}:{values_key}", chart.layer.digest);
        if self.last_ok && self.last_layer.as_deref() == Some(key.as_str()) {
            (self.report)(&Event::Unchanged {
                digest: chart.layer.digest,
            });
            return SyncOutcome::Unchanged;
        }
        self.done(
            Phase::Build,
            t,
            Some(format!("chart {} {}", chart.meta.name, chart.version)),
        );

        let t = self.phase(Phase::Push);
        let reference = match self.reference(&self.cfg.registry.push) {
            Ok(r) => r,
            Err(e) => return self.fail(Phase::Push, e.to_string(), None),
        };
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let annotations = [
            (registry::ANNOTATION_CREATED, created.as_str()),
            ("org.opencontainers.image.title", chart.meta.name.as_str()),
            ("org.opencontainers.image.version", chart.version.as_str()),
        ];
        let upload = registry::Upload {
            file: &file,
            layer: &chart.layer,
            layer_media_type: crate::helm::CONTENT_MEDIA_TYPE,
            config: &chart.config,
            config_media_type: crate::helm::CONFIG_MEDIA_TYPE,
            annotations: &annotations,
        };
        let digest = match registry::upload(&reference, &self.cfg.registry_options, &upload).await {
            Ok((digest, _)) => digest,
            Err(e) => return self.fail(Phase::Push, crate::output::error_chain(&e), None),
        };
        self.last_layer = Some(key);
        self.done(
            Phase::Push,
            t,
            Some(format!("{}@{digest}", reference.repository_url())),
        );
        let revision = format!("latest@{digest}");
        match self
            .wait_for_release(&revision, &chart.version, started)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => self.fail(Phase::Apply, crate::output::error_chain(&e), None),
        }
    }

    async fn wait_for_release(
        &mut self,
        revision: &str,
        version: &str,
        started: Instant,
    ) -> Result<SyncOutcome, SessionError> {
        let name = self.cfg.name.clone();
        let repos: Api<OCIRepository> = Api::namespaced(self.client.clone(), &self.namespace);
        let releases: Api<flux::HelmRelease> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let release_ns = self
            .target
            .target_namespace
            .clone()
            .or_else(|| self.cfg.release_namespace.clone())
            .unwrap_or_else(|| self.namespace.clone());
        let before = changes::helm_objects(&self.client, &release_ns, &name).await;
        // Values may have changed too: apply the HelmRelease every sync.
        self.ensure_release().await?;
        flux::request_reconcile(&repos, &name).await?;

        if let Some(failed) = self.fetch_phase(revision, "chart").await? {
            return Ok(failed);
        }

        let t = self.phase(Phase::Apply);
        flux::request_reconcile(&releases, &name).await?;
        let want = version.to_string();
        let limit = self.cfg.timeout + Duration::from_secs(30);
        let done = await_until(
            &releases,
            &name,
            limit,
            format!("helm-controller to release chart {version}"),
            move |o: Option<&flux::HelmRelease>| {
                o.and_then(|o| o.status.as_ref()).is_some_and(|s| {
                    s.last_attempted_revision
                        .as_deref()
                        .is_some_and(|r| r.starts_with(want.as_str()))
                        && flux::condition(&s.conditions, "Ready")
                            .is_some_and(|c| c.status != "Unknown")
                })
            },
        )
        .await?;
        let status = done.and_then(|o| o.status).unwrap_or_default();
        if let Some(message) = flux::helm_failure(&status) {
            self.note(revision, "Failed").await;
            return Ok(self.fail(Phase::Apply, message, None));
        }
        self.done(Phase::Apply, t, Some(format!("chart {version}")));
        let after = changes::helm_objects(&self.client, &release_ns, &name).await;
        self.last_ok = true;
        self.note(revision, "Ready").await;
        (self.report)(&Event::Synced {
            revision: format!("{revision} (chart {version})"),
            changes: changes::compare_versions(&before, &after),
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(SyncOutcome::Ready {
            revision: revision.to_string(),
        })
    }

    /// Stops the heartbeat and removes what the session created.
    pub async fn cleanup(mut self, timeout: Duration) -> Result<Vec<String>, SessionError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let removed = cleanup(
            &self.client,
            &self.namespace,
            &self.cfg.name,
            self.ephemeral_sandbox.as_deref(),
            timeout,
        )
        .await?;
        (self.report)(&Event::Cleaned {
            removed: removed.clone(),
        });
        Ok(removed)
    }

    /// Stops the heartbeat and leaves everything in place (`--keep`). The
    /// Lease is released (no holder), so the session shows as not running.
    pub async fn detach(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let patch = serde_json::json!({"spec": {"holderIdentity": null}});
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Err(e) = leases
            .patch(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!("cannot release the lease: {e}");
        }
    }

    /// What is left in the cluster if the session stops without cleanup.
    pub fn leftovers(&self) -> Vec<String> {
        let n = &self.cfg.name;
        let mut left = vec![
            format!(
                "{}/{n}",
                if self.chart {
                    "helmrelease"
                } else {
                    "kustomization"
                }
            ),
            format!("ocirepository/{n}"),
            format!("lease/{n}"),
        ];
        if let Some(s) = &self.ephemeral_sandbox {
            left.push(format!("sandbox/{s}"));
        }
        left.into_iter()
            .map(|o| format!("{}/{o}", self.namespace))
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// A Lease held by this user on this machine whose process has exited is
/// not running, whatever its renew time says (a crash, a `kill -9`).
fn holder_process_gone(lease: &Lease, owner: &str) -> bool {
    let same_holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(owner);
    let pid = lease
        .annotations()
        .get(keys::PID)
        .and_then(|p| p.parse::<u32>().ok());
    same_holder && pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

fn owned_by(meta: &ObjectMeta, session: &str) -> bool {
    labels::is_managed(meta.labels.as_ref())
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SESSION))
            .is_some_and(|s| s == session)
}

/// Removes a session's objects in the safe order: the Kustomization first,
/// with Flux's pruning awaited; then the source, Secrets, the ephemeral
/// sandbox and the Lease. Only objects labelled with the session are touched.
pub async fn cleanup(
    client: &Client,
    namespace: &str,
    session: &str,
    ephemeral_sandbox: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, SessionError> {
    let mut removed = Vec::new();
    // A chart session: uninstalling the release (deleting the HelmRelease,
    // awaited) comes first.
    let releases: Api<flux::HelmRelease> = Api::namespaced(client.clone(), namespace);
    if flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?
        && let Some(hr) = releases.get_opt(session).await?
        && owned_by(&hr.metadata, session)
    {
        let what = format!(
            "helm-controller to uninstall HelmRelease {namespace}/{session} (is it running?)"
        );
        delete_and_await(
            &releases,
            session,
            &hr.uid().unwrap_or_default(),
            timeout,
            what,
        )
        .await?;
        removed.push(format!("helmrelease/{session} (release uninstalled)"));
    }
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), namespace);
    if let Some(ks) = kss.get_opt(session).await?
        && owned_by(&ks.metadata, session)
    {
        let pruned: Vec<String> = ks
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(|i| {
                i.entries
                    .iter()
                    .map(|e| changes::display_id(&e.id))
                    .collect()
            })
            .unwrap_or_default();
        let what = format!(
            "kustomize-controller to prune what Kustomization {namespace}/{session} applied (is it running?)"
        );
        delete_and_await(&kss, session, &ks.uid().unwrap_or_default(), timeout, what).await?;
        removed.extend(pruned.into_iter().map(|p| format!("{p} (pruned by Flux)")));
        removed.push(format!("kustomization/{session}"));
    }
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), namespace);
    if let Some(repo) = repos.get_opt(session).await?
        && owned_by(&repo.metadata, session)
    {
        ignore_missing(repos.delete(session, &DeleteParams::background()).await)?;
        removed.push(format!("ocirepository/{session}"));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = kube::api::ListParams::default().labels(&format!(
        "{},{}={session}",
        labels::managed_selector(),
        labels::SESSION
    ));
    for secret in secrets.list(&selector).await? {
        ignore_missing(
            secrets
                .delete(&secret.name_any(), &DeleteParams::background())
                .await,
        )?;
        removed.push(format!("secret/{}", secret.name_any()));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    if let Some(lease) = leases.get_opt(session).await?
        && owned_by(&lease.metadata, session)
    {
        ignore_missing(leases.delete(session, &DeleteParams::background()).await)?;
        removed.push(format!("lease/{session}"));
    }
    let sandbox_delete = sandbox::DeleteOptions {
        wait: false,
        timeout,
    };
    if let Some(sb) = ephemeral_sandbox
        && let sandbox::Deleted::Removed(_) = sandbox::delete(client, sb, &sandbox_delete).await?
    {
        removed.push(format!("sandbox/{sb} (namespace {sb})"));
    }
    Ok(removed)
}

/// Waits (at most `limit`) until `cond` holds for object `name`; on timeout
/// the error says what was awaited.
async fn await_until<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    what: String,
    cond: impl kube::runtime::wait::Condition<K>,
) -> Result<Option<K>, SessionError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::time::timeout(limit, await_condition(api.clone(), name, cond))
        .await
        .map_err(|_| SessionError::Timeout(limit, what))?
        .map_err(|e| SessionError::Timeout(limit, e.to_string()))
}

/// Deletes an object and waits until it is gone (its finalizers done).
async fn delete_and_await<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    timeout: Duration,
    what: String,
) -> Result<(), SessionError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    api.delete(name, &DeleteParams::background()).await?;
    let gone = kube::runtime::wait::conditions::is_deleted(uid);
    await_until(api, name, timeout, what, gone)
        .await
        .map(|_| ())
}

/// Deep-merges `overlay` into `base` (maps merge, everything else replaces).
fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_dns_labels_unique_per_user_and_dir() {
        let a = derive_name(Path::new("/home/ann/src/My_App"), "ann@laptop");
        assert!(a.starts_with("run-my-app-"), "{a}");
        assert!(validate_name(&a).is_ok());
        assert_eq!(
            a,
            derive_name(Path::new("/home/ann/src/My_App"), "ann@laptop")
        );
        assert_ne!(
            a,
            derive_name(Path::new("/home/ann/src/My_App"), "bob@laptop")
        );
        assert_ne!(
            a,
            derive_name(Path::new("/home/ann/other/My_App"), "ann@laptop")
        );
        let long = derive_name(Path::new(&format!("/x/{}", "a".repeat(100))), "u@h");
        assert!(long.len() <= 63 && validate_name(&long).is_ok(), "{long}");
        assert!(validate_name(&derive_name(Path::new("/"), "u@h")).is_ok());
    }

    #[test]
    fn leases_go_stale_after_their_duration() {
        let now = chrono::Utc::now();
        let at = |secs_ago: i64| {
            let ts = k8s_openapi::jiff::Timestamp::from_millisecond(
                now.timestamp_millis() - secs_ago * 1000,
            )
            .unwrap();
            Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some("u@h".into()),
                    lease_duration_seconds: Some(30),
                    renew_time: Some(MicroTime(ts)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        assert!(lease_is_live(&at(5), now));
        assert!(!lease_is_live(&at(31), now));
        assert!(!lease_is_live(&Lease::default(), now));
    }
}
