//! The engine: a live session syncing one directory to the cluster through
//! Flux on every save, and removing everything it created when it stops.
//!
//! The flow of one save: [`live`] sees the change and calls
//! [`Session::sync`] ([`sync`], or [`chart`] for a Helm chart directory):
//! validate locally, build the artifact, push it, and only then, the first
//! time, make the sandbox, Lease and Flux objects ([`Session`] touches the
//! cluster only with something to apply); request a reconcile and wait for
//! Flux to report exactly the pushed revision. [`cleanup`] removes it all
//! in the safe order.

pub mod changes;
mod chart;
pub mod cleanup;
mod error;
pub mod events;
pub mod health;
pub mod live;
pub mod packaging;
pub mod preflight;
mod push;
mod sync;
pub mod validate;
pub mod verdict;
pub mod watch;

#[cfg(test)]
mod lease_takeover_tests;
#[cfg(test)]
mod materialize_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta};
use kube::{Client, ResourceExt};

use crate::artifact::WalkOptions;
use crate::kubeapi;
use crate::labels;
use crate::registry::{self, RegistryOptions};
use crate::sandbox::{self, CreateOptions, SandboxError, Target};

pub use changes::{Action, Change};
pub use error::EngineError;
pub use events::{Event, Mode, Phase, Reporter, SyncOutcome};
pub use preflight::RegistryChoice;

use crate::session::record::writer::{self, Ended, Writer};
use crate::session::record::{self, lease, liveness, ownership};

/// Everything a session needs to start. `Debug` never shows the age key.
#[derive(Clone)]
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
    /// `--port-forward` specs, recorded in the Lease for `gitops-sessions`.
    pub port_forwards: Vec<String>,
    /// Helm charts: `--values` files (later files win).
    pub values: Vec<PathBuf>,
    /// Helm charts: `--release-namespace` (cluster mode).
    pub release_namespace: Option<String>,
    pub owner: String,
    /// `--take-over`: the Flux Kustomization this session runs in place of
    /// (cluster mode, in its namespace, with its settings; see
    /// [`crate::takeover`]).
    pub take_over: Option<crate::takeover::App>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field by name, so that a new one is a compile error here
        // until someone decides whether it is secret.
        let SessionConfig {
            name,
            root,
            path,
            mode,
            sandbox,
            namespace,
            target_namespace,
            registry,
            registry_options,
            walk,
            decryption_key,
            timeout,
            lease_duration,
            port_forwards,
            values,
            release_namespace,
            owner,
            take_over,
        } = self;
        f.debug_struct("SessionConfig")
            .field("name", name)
            .field("root", root)
            .field("path", path)
            .field("mode", mode)
            .field("sandbox", sandbox)
            .field("namespace", namespace)
            .field("target_namespace", target_namespace)
            .field("registry", registry)
            // Credentials' own Debug redacts the password.
            .field("registry_options", registry_options)
            .field("walk", walk)
            .field(
                "decryption_key",
                &decryption_key.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", timeout)
            .field("lease_duration", lease_duration)
            .field("port_forwards", port_forwards)
            .field("values", values)
            .field("release_namespace", release_namespace)
            .field("owner", owner)
            .field("take_over", &take_over.as_ref().map(|a| a.id()))
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_shows_neither_the_age_key_nor_the_registry_password() {
        let key = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let cfg = SessionConfig {
            name: "run-app-123abc".into(),
            root: PathBuf::from("/src/app"),
            path: "./deploy".into(),
            mode: Mode::Sandboxed,
            sandbox: None,
            namespace: "default".into(),
            target_namespace: None,
            registry: RegistryChoice {
                push: "localhost:5000".into(),
                pull: "registry:5000".into(),
                origin: "--registry",
                insecure: false,
            },
            registry_options: RegistryOptions {
                creds: Some("ann:hunter2-registry-password".parse().unwrap()),
                insecure: false,
            },
            walk: WalkOptions::default(),
            decryption_key: Some(format!("# created: today\n{key}\n").into_bytes()),
            timeout: Duration::from_secs(60),
            lease_duration: Duration::from_secs(30),
            port_forwards: vec!["resource=svc/web,port=8080:80".into()],
            values: Vec::new(),
            release_namespace: None,
            owner: "ann@laptop".into(),
            take_over: None,
        };
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains("AGE-SECRET-KEY"), "{text}");
            assert!(!text.contains("QQQQQQQQ"), "{text}");
            // Nor as the bytes' numbers.
            assert!(!text.contains("65, 71, 69"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(
                text.contains("decryption_key: Some(") && text.contains("<redacted>"),
                "{text}"
            );
            assert!(
                text.contains("run-app-123abc") && text.contains("ann"),
                "{text}"
            );
        }
    }
}

/// The sandbox a session makes for itself, and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnSandbox {
    /// Not ours to make: cluster mode or `--sandbox NAME`.
    None,
    /// To be made at the first sync (after the old one, if terminating, is gone).
    ToCreate,
    /// Made (or left by an earlier run of this session and reused): ours to delete.
    Made,
}

/// What a session syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Manifests (kustomize), applied by a Kustomization.
    Manifests,
    /// A Helm chart, released by a HelmRelease.
    Chart,
}

/// Where a session stands in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing made yet: the first sync makes it all once it pushed
    /// something (again after a cleanup).
    Prepared,
    /// Its sandbox (when its own), Lease and Secrets exist and its
    /// heartbeat runs; `flux_objects`: its OCIRepository and applier
    /// (Kustomization or HelmRelease) were applied too.
    Materialized { flux_objects: bool },
}

/// What the session last pushed (the layer's key), and whether Flux gave
/// its verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pushed {
    /// Nothing yet.
    Nothing,
    /// Pushed; no verdict yet (a failed fetch or a superseded wait leave
    /// it so): the same content is synced again.
    Unsettled(String),
    /// Flux gave its verdict (Ready, or a failed apply or rollout) and
    /// nothing was pushed since: the same content again is "unchanged",
    /// not another push.
    Settled(String),
}

impl Pushed {
    /// Whether `key` is what was pushed and settled.
    fn settled_as(&self, key: &str) -> bool {
        matches!(self, Pushed::Settled(k) if k == key)
    }

    /// Flux gave its verdict on what was pushed.
    fn settle(&mut self) {
        if let Pushed::Unsettled(k) = self {
            *self = Pushed::Settled(std::mem::take(k));
        }
    }
}

/// A running session.
pub struct Session {
    client: Client,
    cfg: SessionConfig,
    kind: Kind,
    /// Where its Flux objects and Lease live.
    namespace: String,
    target: Target,
    /// The sandbox it applies into (sandboxed mode).
    sandbox_name: Option<String>,
    own_sandbox: OwnSandbox,
    stage: Stage,
    pushed: Pushed,
    /// The registry client of the session's pushes (made at the first).
    registry: crate::registry::KeptRegistry,
    /// The revision last synced Ready (what stays applied after a failure).
    last_good: Option<String>,
    /// Set while the sync waits for Flux: a newer save may supersede it.
    waiting: Arc<AtomicBool>,
    /// The last reconcile request made of the session's OCIRepository.
    source_request: Option<crate::flux::ReconcileRequest>,
    /// Its Lease: written at the first sync, renewed, and each sync
    /// recorded in it.
    lease: Writer,
    report: Reporter,
    started: DateTime<Utc>,
    /// What was said once: namespace rewrites pointed out, what the last
    /// sync packaged (said again when it changes).
    said: Said,
    /// The last sync found no change-set event: Flux's event recorder is
    /// likely dropping them (see [`changes::CHANGE_SET_WAIT`]), so the next
    /// sync takes what is at hand rather than wait for one.
    change_sets_missing: bool,
}

/// What a session said once (not again until it changes).
#[derive(Debug, Default)]
struct Said {
    /// Namespace rewrites already pointed out (said once per session).
    relocations: BTreeSet<String>,
    /// What the last sync packaged (said when it changes).
    packaging: Option<packaging::Packaging>,
}

fn session_labels(name: &str, sandbox: Option<&str>) -> BTreeMap<String, String> {
    let mut l = labels::managed("session");
    l.insert(labels::SESSION.into(), name.into());
    if let Some(s) = sandbox {
        l.insert(labels::SANDBOX.into(), s.into());
    }
    l
}

/// Waits (at most two minutes) until the Lease of a session that someone
/// is removing is gone, saying so.
async fn await_removal(
    leases: &Api<Lease>,
    existing: &Lease,
    report: &Reporter,
) -> Result<(), EngineError> {
    let name = existing.name_any();
    let by = lease::removed_by(existing).unwrap_or_default();
    report(&Event::Message {
        message: format!("waiting for {by} to finish removing the last run of session {name}"),
    });
    let uid = existing.uid().unwrap_or_default();
    kubeapi::await_object(
        leases,
        &name,
        Duration::from_secs(120),
        format!("{by} to finish removing the last run of session {name}"),
        kube::runtime::wait::conditions::is_deleted(&uid),
    )
    .await?;
    Ok(())
}

/// Refuses to start when an object of a name the session will write exists
/// and is not the session's own (see [`ownership`]).
async fn refuse_foreign(
    client: &Client,
    namespace: &str,
    cfg: &SessionConfig,
    chart: bool,
) -> Result<(), EngineError> {
    let name = &cfg.name;
    let repos: Api<crate::flux::OCIRepository> = Api::namespaced(client.clone(), namespace);
    ownership::check(&repos, "OCIRepository", name, name).await?;
    if chart {
        let releases: Api<crate::flux::HelmRelease> = Api::namespaced(client.clone(), namespace);
        ownership::check(&releases, "HelmRelease", name, name).await?;
    } else {
        let kss: Api<crate::flux::Kustomization> = Api::namespaced(client.clone(), namespace);
        ownership::check(&kss, "Kustomization", name, name).await?;
    }
    if cfg.decryption_key.is_some() {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        ownership::check(&secrets, "Secret", &format!("{name}-sops"), name).await?;
    }
    Ok(())
}

/// The session's own Lease `existing` (left by an earlier run, or another
/// command's): `Ok(resourceVersion)` to take over when nobody renews it,
/// after waiting for a removal under way; refused when it is live (judged
/// by [`liveness`]: never by this machine's clock alone).
async fn take_over(
    leases: &Api<Lease>,
    existing: Lease,
    cfg: &SessionConfig,
    report: &Reporter,
) -> Result<Option<String>, EngineError> {
    let client = leases.clone().into_client();
    let judged = liveness::judge(&client, vec![existing], &cfg.owner)
        .await
        .into_iter()
        .next();
    let Some(liveness::Judged { lease, verdict }) = judged else {
        return Ok(None);
    };
    match verdict {
        liveness::Verdict::Gone => Ok(None),
        // A stale run of this session is being pruned: let it go first. (A
        // claim that went stale is a remover that died: taken over like any
        // stale Lease.)
        liveness::Verdict::Live if lease::removed_by(&lease).is_some() => {
            await_removal(leases, &lease, report).await?;
            Ok(None)
        }
        liveness::Verdict::Live => Err(EngineError::AlreadyRunning {
            name: cfg.name.clone(),
            holder: record::holder(&lease).to_string(),
            pid: record::Record::of(&lease).pid,
        }),
        liveness::Verdict::Stale => Ok(lease.resource_version()),
    }
}

/// Where a session applies, decided at start (nothing written yet).
struct Placement {
    /// Where its Flux objects and Lease live.
    namespace: String,
    target: Target,
    /// The sandbox it applies into (sandboxed mode).
    sandbox_name: Option<String>,
    own_sandbox: OwnSandbox,
}

/// Where the session applies: cluster mode, an existing sandbox (checked:
/// it exists, and is still a boundary unless made `--unconfined`), or its
/// own sandbox, made at the first sync (refused when a namespace of its
/// name is not a sandbox, or is someone else's).
async fn place(
    client: &Client,
    cfg: &SessionConfig,
    report: &Reporter,
) -> Result<Placement, EngineError> {
    // In place of a Flux Kustomization or HelmRelease: in its namespace,
    // applying as it does (its spec is copied whole; see `ensure_objects`).
    if let (Mode::Cluster, Some(app)) = (cfg.mode, &cfg.take_over) {
        return Ok(Placement {
            namespace: app.namespace.clone(),
            target: Target {
                namespace: app.namespace.clone(),
                service_account: app.spec_str("serviceAccountName"),
                kubeconfig_secret: None,
                target_namespace: app.spec_str("targetNamespace"),
                vcluster: None,
            },
            sandbox_name: None,
            own_sandbox: OwnSandbox::None,
        });
    }
    let (namespace, target, sandbox_name, own_sandbox) = match (cfg.mode, &cfg.sandbox) {
        // In place of a Flux Kustomization: in its namespace, applying as
        // it does (its spec is copied whole; see `ensure_objects`).
        (Mode::Cluster, _) => {
            let target = Target {
                namespace: cfg.namespace.clone(),
                service_account: None,
                kubeconfig_secret: None,
                target_namespace: cfg.target_namespace.clone(),
                vcluster: None,
            };
            (cfg.namespace.clone(), target, None, OwnSandbox::None)
        }
        (Mode::Sandboxed, Some(existing)) => {
            let sb = sandbox::get(client, existing)
                .await?
                .ok_or_else(|| EngineError::NoSuchSandbox(existing.clone()))?;
            if sb.isolation == sandbox::Isolation::Namespace {
                if sb.unconfined {
                    report(&Event::Warning {
                        message: format!(
                            "sandbox {existing} was created --unconfined: it is NOT a \
                             security boundary; its payload can do whatever Flux can"
                        ),
                    });
                } else {
                    // A sandbox made before the boundary existed, or
                    // whose policy was removed since: refuse rather than
                    // run a payload that could leave it.
                    sandbox::boundary::probe(client, &sb.namespace, Duration::from_secs(3))
                        .await
                        .map_err(SandboxError::from)?;
                }
            }
            (
                sb.namespace.clone(),
                sb.target,
                Some(existing.clone()),
                OwnSandbox::None,
            )
        }
        (Mode::Sandboxed, None) => {
            let name = cfg.name.clone();
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let maker = ownership::SandboxMaker {
                namespace: &name,
                session: &name,
                owner: &cfg.owner,
            };
            match namespaces.get_opt(&name).await? {
                Some(ns) if !sandbox::is_sandbox(&ns) => {
                    let mut f = ownership::foreign("Namespace", &ns.metadata, &name)
                        .unwrap_or_else(|| ownership::Foreign {
                            kind: "Namespace".into(),
                            namespace: String::new(),
                            name: name.clone(),
                            manager: ownership::manager_of(&ns.metadata),
                        });
                    f.namespace = String::new();
                    return Err(EngineError::Foreign(f));
                }
                // Someone else's sandbox, or one not made for this session.
                Some(ns)
                    if ns.metadata.deletion_timestamp.is_none()
                        && !ownership::sandbox_made_by(&ns.metadata, &maker) =>
                {
                    let owner = ns.annotations().get(labels::OWNER).cloned();
                    return Err(EngineError::SandboxTaken {
                        name: name.clone(),
                        owner: match owner {
                            Some(o) if o == cfg.owner => format!(
                                "you ({o}) but not for this session (run in it with \
                                 --sandbox {name})"
                            ),
                            Some(o) => o,
                            None => "someone else".into(),
                        },
                    });
                }
                // Absent, or the last run's sandbox still being deleted:
                // made (after it is gone) at the first sync.
                _ => {}
            }
            (
                name.clone(),
                Target::namespace_sandbox(&name),
                Some(name),
                OwnSandbox::ToCreate,
            )
        }
    };
    Ok(Placement {
        namespace,
        target,
        sandbox_name,
        own_sandbox,
    })
}

/// The session's own Lease left by an earlier run, to take over at the
/// first sync: its resourceVersion, `None` when there is none (refused
/// when it is not the session's, or live).
async fn stale_lease(
    client: &Client,
    namespace: &str,
    cfg: &SessionConfig,
    report: &Reporter,
) -> Result<Option<String>, EngineError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    match leases.get_opt(&cfg.name).await? {
        Some(existing) => {
            if let Some(f) = ownership::foreign("Lease", &existing.metadata, &cfg.name) {
                return Err(EngineError::Foreign(f));
            }
            take_over(&leases, existing, cfg, report).await
        }
        None => Ok(None),
    }
}

pub use crate::session::record::writer::{EPHEMERAL_TTL, EXTEND_EVERY};

impl Session {
    /// Prepares the session without changing the cluster: checks the name,
    /// where it will apply and that it is not already running. The sandbox,
    /// Lease and Flux objects are made by the first sync, once there is an
    /// artifact to point at.
    pub async fn start(
        client: Client,
        mut cfg: SessionConfig,
        report: Reporter,
    ) -> Result<Session, EngineError> {
        record::validate_name(&cfg.name)?;
        crate::duration::check_range(
            "lease-duration",
            cfg.lease_duration,
            record::MIN_LEASE,
            record::MAX_LEASE,
        )
        .map_err(|e| EngineError::Flag(e.to_string()))?;
        // Read the Docker config (and run its helper) once, not on every push.
        if cfg.registry_options.creds.is_none() {
            let host = registry::registry_address(&cfg.registry.push);
            cfg.registry_options.creds = registry::docker_config_credentials(host);
        }
        let Placement {
            namespace,
            target,
            sandbox_name,
            own_sandbox,
        } = place(&client, &cfg, &report).await?;
        let rel = cfg.path.trim_start_matches("./");
        let chart = crate::helm::is_chart(&if rel.is_empty() {
            cfg.root.clone()
        } else {
            cfg.root.join(rel)
        });
        // Nothing of the names the session wants may be someone else's: all
        // checked before anything is written.
        refuse_foreign(&client, &namespace, &cfg, chart).await?;
        if let Some(app) = &cfg.take_over {
            let wanted = if chart {
                crate::takeover::AppKind::HelmRelease
            } else {
                crate::takeover::AppKind::Kustomization
            };
            if app.kind != wanted {
                return Err(EngineError::Flag(format!(
                    "--take-over: {} holds {}, but {} deploys {}",
                    cfg.path,
                    if chart { "a Helm chart" } else { "manifests" },
                    app.id(),
                    if chart { "manifests" } else { "a chart" },
                )));
            }
            let holder = crate::takeover::Holder {
                namespace: namespace.clone(),
                session: cfg.name.clone(),
                owner: cfg.owner.clone(),
            };
            crate::takeover::claim::available(&client, app, &holder).await?;
        }
        let lease_seen = stale_lease(&client, &namespace, &cfg, &report).await?;
        let lease = Writer::new(
            client.clone(),
            &namespace,
            &cfg.name,
            &cfg.owner,
            cfg.lease_duration,
            lease_seen,
        );
        let session = Session {
            registry: Default::default(),
            kind: if chart { Kind::Chart } else { Kind::Manifests },
            said: Said::default(),
            change_sets_missing: false,
            client,
            namespace,
            target,
            sandbox_name,
            own_sandbox,
            stage: Stage::Prepared,
            pushed: Pushed::Nothing,
            last_good: None,
            waiting: Arc::new(AtomicBool::new(false)),
            source_request: None,
            lease,
            report,
            started: Utc::now(),
            cfg,
        };
        (session.report)(&Event::Started {
            session: session.cfg.name.clone(),
            namespace: session.namespace.clone(),
            mode: session.cfg.mode,
            sandbox: session.sandbox_name.clone(),
            registry: format!(
                "{} ({})",
                session.cfg.registry.push, session.cfg.registry.origin
            ),
            root: session.cfg.root.display().to_string(),
            path: session.cfg.path.clone(),
        });
        Ok(session)
    }

    /// Makes what the session needs in the cluster before its first apply:
    /// its sandbox (ephemeral), its Lease and heartbeat, the SOPS Secret.
    /// What it makes is recorded first, so a stop at any point (Ctrl+C)
    /// removes it.
    async fn materialize(&mut self) -> Result<(), EngineError> {
        if self.stage != Stage::Prepared {
            return Ok(());
        }
        // Made at the first sync; again if a removal of the last run of this
        // session was under way (its sandbox then goes first).
        let make_sandbox = self.own_sandbox != OwnSandbox::None;
        let mut attempts = 0;
        loop {
            if make_sandbox {
                self.make_own_sandbox().await?;
            }
            if self.write_lease(&mut attempts).await? {
                break;
            }
        }
        self.apply_sops_secret().await?;
        self.take_over_original().await?;
        let report = self.report.clone();
        let say: writer::Say = Arc::new(move |message| report(&Event::Warning { message }));
        let own_sandbox = (self.own_sandbox == OwnSandbox::Made).then(|| self.cfg.name.clone());
        self.lease.start_renewing(say, own_sandbox);
        self.stage = Stage::Materialized {
            flux_objects: false,
        };
        Ok(())
    }

    /// `--take-over`: suspends the original and marks it as this session's
    /// (recorded in the Lease first, so a stop at any point hands it back).
    async fn take_over_original(&mut self) -> Result<(), EngineError> {
        let Some(app) = self.cfg.take_over.clone() else {
            return Ok(());
        };
        let holder = crate::takeover::Holder {
            namespace: self.namespace.clone(),
            session: self.cfg.name.clone(),
            owner: self.cfg.owner.clone(),
        };
        crate::takeover::claim::take(&self.client, &app, &holder).await?;
        (self.report)(&Event::Message {
            message: format!(
                "took over {}: Flux's copy is suspended and this session applies your working \
                 copy in its place, with its settings; GitOps mode resumes when the session stops",
                app.id()
            ),
        });
        Ok(())
    }

    /// Makes the session's own sandbox, after the last run's is gone;
    /// refused when one of its name appeared meanwhile that is not the
    /// session's.
    async fn make_own_sandbox(&mut self) -> Result<(), EngineError> {
        let name = self.cfg.name.clone();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Some(ns) = namespaces.get_opt(&name).await?
            && ns.metadata.deletion_timestamp.is_some()
        {
            // The last run's sandbox is still being deleted: let it go first.
            let uid = ns.uid().unwrap_or_default();
            kubeapi::await_object(
                &namespaces,
                &name,
                Duration::from_secs(120),
                format!("the previous sandbox {name} to be deleted"),
                kube::runtime::wait::conditions::is_deleted(&uid),
            )
            .await?;
        }
        // From here on a stop removes the sandbox, made or half-made.
        self.own_sandbox = OwnSandbox::Made;
        if sandbox::get(&self.client, &name).await?.is_none() {
            let options = CreateOptions {
                owner: self.cfg.owner.clone(),
                // A safety net: `gitops-sandbox gc` removes it if cleanup
                // never runs (the heartbeat extends it while the session runs).
                ttl: Some(EPHEMERAL_TTL),
                // Who made it, so that only this session's cleanup removes it.
                labels: ownership::sandbox_record(&ownership::SandboxMaker {
                    namespace: &self.namespace,
                    session: &name,
                    owner: &self.cfg.owner,
                }),
                ..Default::default()
            };
            match sandbox::create(&self.client, &name, &options).await {
                Ok(_) => {}
                // Made meanwhile: ours only if its record says so.
                Err(sandbox::SandboxError::AlreadyExists(_)) => {
                    let maker = ownership::SandboxMaker {
                        namespace: &self.namespace,
                        session: &name,
                        owner: &self.cfg.owner,
                    };
                    let ns = namespaces.get_opt(&name).await?;
                    if !ns.is_some_and(|ns| ownership::sandbox_made_by(&ns.metadata, &maker)) {
                        self.own_sandbox = OwnSandbox::None;
                        return Err(EngineError::SandboxTaken {
                            name: name.clone(),
                            owner: "someone else, just now".into(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the session's Lease (`attempts` so far): `Ok(true)` once
    /// written, `Ok(false)` to try again: someone wrote or removed it
    /// meanwhile (a stale one is then taken over).
    async fn write_lease(&mut self, attempts: &mut u32) -> Result<bool, EngineError> {
        let meta = self.meta(&self.cfg.name);
        let record = self.record();
        let Some(current) = self.lease.write(meta, &record).await? else {
            return Ok(true);
        };
        *attempts += 1;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        match current {
            None => self.lease.replace_next(None),
            Some(l) => {
                if let Some(f) = ownership::foreign("Lease", &l.metadata, &self.cfg.name) {
                    return Err(EngineError::Foreign(f));
                }
                if *attempts >= 4 {
                    return Err(EngineError::AlreadyRunning {
                        name: self.cfg.name.clone(),
                        holder: record::holder(&l).to_string(),
                        pid: record::Record::of(&l).pid,
                    });
                }
                let seen = take_over(&leases, l, &self.cfg, &self.report).await?;
                self.lease.replace_next(seen);
            }
        }
        Ok(false)
    }

    /// The age key as the Secret Flux decrypts with (`--decryption-key`).
    async fn apply_sops_secret(&self) -> Result<(), EngineError> {
        if let Some(key) = &self.cfg.decryption_key {
            let name = format!("{}-sops", self.cfg.name);
            let secret = Secret {
                metadata: self.meta(&name),
                data: Some(BTreeMap::from([(
                    "identity.agekey".to_string(),
                    k8s_openapi::ByteString(key.clone()),
                )])),
                ..Default::default()
            };
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            ownership::apply(&secrets, "Secret", &name, &secret, &self.cfg.name).await?;
        }
        Ok(())
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Where its objects live.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes client it uses.
    pub fn client(&self) -> &Client {
        &self.client
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

    /// The Flux Kustomization it runs in place of (`--take-over`).
    pub fn takes_over(&self) -> Option<&crate::takeover::App> {
        self.cfg.take_over.as_ref()
    }

    /// Where and as whom it applies.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Where its workloads run in this cluster, and whether every pod there
    /// is the session's (a namespace sandbox); `None` when they run in
    /// another cluster (kubeconfig and vcluster sandboxes).
    pub fn workloads(&self) -> Option<(String, bool)> {
        if self.target.kubeconfig_secret.is_some() {
            return None;
        }
        let ns = self
            .target
            .target_namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        Some((ns, self.cfg.mode == Mode::Sandboxed))
    }

    /// The flag that is set while a sync waits for Flux (a newer save may
    /// supersede that wait).
    pub fn waiting_flag(&self) -> Arc<AtomicBool> {
        self.waiting.clone()
    }

    /// Replaces the session's reporter.
    pub fn set_reporter(&mut self, report: Reporter) {
        self.report = report;
    }

    /// Sends an event to the session's reporter.
    pub fn report(&self, event: &Event) {
        (self.report)(event)
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(session_labels(&self.cfg.name, self.sandbox_name.as_deref())),
            annotations: Some(BTreeMap::from([(
                labels::OWNER.to_string(),
                self.cfg.owner.clone(),
            )])),
            ..Default::default()
        }
    }

    /// The session's record, as written into its Lease.
    fn record(&self) -> record::Record {
        record::Record {
            pid: std::process::id().to_string(),
            dir: self.dir().display().to_string(),
            registry: self.cfg.registry.push.clone(),
            mode: self.cfg.mode.as_str().to_string(),
            sandbox: self.sandbox_name.clone(),
            ephemeral_sandbox: self.own_sandbox == OwnSandbox::Made,
            version: crate::VERSION.to_string(),
            started_at: Some(self.started),
            last: None,
            port_forwards: self.cfg.port_forwards.clone(),
            owner: self.cfg.owner.clone(),
            history: self.lease.history().to_vec(),
            root: self.cfg.root.display().to_string(),
            problems: self.lease.problems().to_vec(),
            takes_over: self
                .cfg
                .take_over
                .as_ref()
                .map(|a| format!("{}/{}", a.namespace, a.name)),
        }
    }

    /// The signal that the session no longer holds its Lease.
    pub fn lost(&self) -> tokio::sync::watch::Receiver<Option<lease::Lost>> {
        self.lease.lost()
    }

    /// Records a finished sync in the Lease (see [`Writer::record_sync`]).
    async fn record_sync(&mut self, outcome: &SyncOutcome) {
        let ended = match outcome {
            SyncOutcome::Unchanged => Ended::Unchanged,
            SyncOutcome::Ready { revision } => Ended::Ready { revision },
            SyncOutcome::Failed { phase, message } => Ended::Failed {
                phase: phase.name(),
                message,
            },
        };
        let written = self.stage != Stage::Prepared;
        self.lease.record_sync(ended, written).await;
    }
}
