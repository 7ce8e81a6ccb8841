//! One sync of a manifests directory: validate, build, push, then point
//! Flux at it and wait for exactly that revision to be applied and healthy.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::Api;

use super::push::{Build, Payload};
use super::verdict::{self, Step};
use super::{
    EngineError, Event, Kind, Mode, Phase, Session, Stage, SyncOutcome, changes, packaging,
    validate,
};
use crate::flux::{
    self, Decryption, Kustomization, KustomizationSpec, LocalObjectReference, OCIRepository,
    OCIRepositoryRef, OCIRepositorySpec, SourceReference,
};
use crate::kubeapi;
use crate::registry::ArtifactRef;

/// How long source-controller gets to fetch a pushed revision.
const FETCH_LIMIT: Duration = Duration::from_secs(60);
/// How long after a reconcile request an OCIRepository nobody has touched
/// is said to be stalled (source-controller starts on a request within
/// milliseconds when it runs; a busy one within a few seconds).
const SOURCE_STALL: Duration = Duration::from_secs(8);

/// The warning for an OCIRepository that nothing has touched since `asked`
/// (its `resourceVersion` is still the one the request left and the
/// request is not handled), or `None` when source-controller has started.
fn untouched_source(
    asked: &flux::ReconcileRequest,
    resource_version: Option<&str>,
    last_handled: Option<&str>,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let untouched = asked.resource_version.is_some()
        && resource_version == asked.resource_version.as_deref()
        && last_handled != Some(asked.at.as_str());
    untouched.then(|| {
        format!(
            "source-controller has not started on OCIRepository {namespace}/{name} {}s after the \
             reconcile request: it is not running or not reconciling this namespace (Flux \
             installs it as Deployment source-controller in flux-system: `kubectl -n \
             flux-system get deploy source-controller`); still waiting, up to {}s",
            SOURCE_STALL.as_secs(),
            FETCH_LIMIT.as_secs()
        )
    })
}

/// How long after source-controller fetched a revision a Kustomization
/// that kustomize-controller has not started on is said to be stalled.
const APPLY_STALL: Duration = Duration::from_secs(8);

/// The warning for a Kustomization that kustomize-controller has not
/// started on `revision` (it sets `lastAttemptedRevision` and a condition
/// naming the revision as it starts), or `None` when it has.
fn unstarted_kustomization(
    status: Option<&flux::KustomizationStatus>,
    revision: &str,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let started = status.is_some_and(|s| {
        s.last_attempted_revision.as_deref() == Some(revision)
            || s.conditions.iter().any(|c| c.message.contains(revision))
    });
    (!started).then(|| {
        format!(
            "kustomize-controller has not started on Kustomization {namespace}/{name} {}s after \
             source-controller fetched {revision}: it is not running, or still busy with this \
             Kustomization's previous revision (Flux installs it as Deployment \
             kustomize-controller in flux-system: `kubectl -n flux-system get deploy \
             kustomize-controller`); still waiting",
            APPLY_STALL.as_secs()
        )
    })
}

/// Warns once, [`APPLY_STALL`] from now, if kustomize-controller has not
/// started on `revision`; never resolves (the apply wait decides the end).
async fn warn_if_kustomization_unstarted(
    kss: Api<Kustomization>,
    name: String,
    namespace: String,
    revision: String,
    report: super::Reporter,
) -> std::convert::Infallible {
    tokio::time::sleep(APPLY_STALL).await;
    if let Ok(Some(ks)) = kss.get_opt(&name).await
        && let Some(message) =
            unstarted_kustomization(ks.status.as_ref(), &revision, &namespace, &name)
    {
        report(&Event::Warning { message });
    }
    std::future::pending().await
}

/// The warning for a HelmRelease that helm-controller has not started on
/// chart `version` (it records the version in `lastAttemptedRevision` or a
/// condition as it starts), or `None` when it has.
pub(super) fn unstarted_release(
    status: Option<&flux::HelmReleaseStatus>,
    version: &str,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let started = status.is_some_and(|s| {
        s.last_attempted_revision
            .as_deref()
            .is_some_and(|r| r.starts_with(version))
            || s.conditions.iter().any(|c| c.message.contains(version))
    });
    (!started).then(|| {
        format!(
            "helm-controller has not started on HelmRelease {namespace}/{name} {}s after \
             source-controller fetched chart {version}: it is not running, or still busy with \
             this release's previous version (Flux installs it as Deployment helm-controller in \
             flux-system: `kubectl -n flux-system get deploy helm-controller`); still waiting",
            APPLY_STALL.as_secs()
        )
    })
}

/// Warns once, [`APPLY_STALL`] from now, if helm-controller has not
/// started on chart `version`; never resolves (the release wait decides).
pub(super) async fn warn_if_release_unstarted(
    releases: Api<flux::HelmRelease>,
    name: String,
    namespace: String,
    version: String,
    report: super::Reporter,
) -> std::convert::Infallible {
    tokio::time::sleep(APPLY_STALL).await;
    if let Ok(Some(hr)) = releases.get_opt(&name).await
        && let Some(message) = unstarted_release(hr.status.as_ref(), &version, &namespace, &name)
    {
        report(&Event::Warning { message });
    }
    std::future::pending().await
}

impl Session {
    pub(super) fn phase(&self, phase: Phase) -> Instant {
        (self.report)(&Event::PhaseStarted { phase });
        let now = Instant::now();
        self.lease.phase_starts(phase.name(), now);
        now
    }

    pub(super) fn done(&self, phase: Phase, start: Instant, detail: Option<String>) {
        self.lease.phase_ends(phase.name(), Instant::now());
        (self.report)(&Event::PhaseDone {
            phase,
            elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail,
        });
    }

    /// Reports a failed sync. `applied`: the failed revision reached the
    /// cluster (applied but not healthy), so the last good one no longer
    /// stands.
    pub(super) fn fail(
        &mut self,
        phase: Phase,
        message: String,
        file: Option<String>,
        applied: bool,
    ) -> SyncOutcome {
        self.waiting.store(false, Ordering::SeqCst);
        self.lease.phase_ends(phase.name(), Instant::now());
        if !self.lease.has_pending() {
            self.lease
                .failed_with(crate::session::record::problems::from_failure(
                    phase.name(),
                    &message,
                    file.as_deref(),
                ));
        }
        if applied {
            self.last_good = None;
        }
        (self.report)(&Event::Failed {
            phase,
            message: message.clone(),
            file,
            last_good: self.last_good.clone(),
        });
        SyncOutcome::Failed { phase, message }
    }

    pub(super) fn reference(&self, host: &str) -> Result<ArtifactRef, EngineError> {
        Ok(format!("oci://{host}/gitops-run/{}:latest", self.cfg.name).parse::<ArtifactRef>()?)
    }

    /// The session's OCIRepository (`layer`: which layer Flux takes, for charts).
    pub(super) fn oci_repository(
        &self,
        layer: Option<flux::LayerSelector>,
    ) -> Result<OCIRepository, EngineError> {
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
    pub(super) async fn apply_pair<K>(
        &mut self,
        repo: &OCIRepository,
        applier: &K,
    ) -> Result<(), EngineError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = &self.cfg.name;
        // Only the session's own objects are written (see [`crate::session::record::ownership`]).
        crate::session::record::ownership::apply(
            &Api::namespaced(self.client.clone(), &self.namespace),
            "OCIRepository",
            name,
            repo,
            name,
        )
        .await?;
        crate::session::record::ownership::apply(
            &Api::namespaced(self.client.clone(), &self.namespace),
            K::kind(&K::DynamicType::default()).as_ref(),
            name,
            applier,
            name,
        )
        .await?;
        self.stage = Stage::Materialized { flux_objects: true };
        Ok(())
    }

    /// The "fetched by Flux" phase: `Some(outcome)` when Flux failed to fetch.
    pub(super) async fn fetch_phase(
        &mut self,
        revision: &str,
        what: &str,
    ) -> Result<Option<SyncOutcome>, EngineError> {
        let t = self.phase(Phase::Fetch);
        let repos: Api<OCIRepository> = Api::namespaced(self.client.clone(), &self.namespace);
        let want = revision.to_string();
        let wait = kubeapi::await_object(
            &repos,
            &self.cfg.name,
            FETCH_LIMIT,
            format!("source-controller to fetch {revision}"),
            move |o: Option<&OCIRepository>| verdict::source(o, &want).is_done(),
        );
        // Meanwhile, a word when source-controller has not started on it.
        let fetched = {
            tokio::pin!(wait);
            let stall = tokio::time::sleep(SOURCE_STALL);
            tokio::pin!(stall);
            let mut checked = false;
            loop {
                tokio::select! {
                    r = &mut wait => break r?,
                    () = &mut stall, if !checked => {
                        checked = true;
                        self.warn_if_source_untouched(&repos).await;
                    }
                }
            }
        };
        let message = match verdict::source(fetched.as_ref(), revision) {
            Step::Ready => None,
            Step::Failed { message, .. } => Some(message),
            // (The wait ends only on a verdict: not seen.)
            Step::Wait | Step::Applied => Some(
                fetched
                    .and_then(|o| o.status)
                    .and_then(|s| {
                        flux::condition(&s.conditions, "Ready").map(|c| c.message.clone())
                    })
                    .unwrap_or_default(),
            ),
        };
        if let Some(message) = message {
            let text = format!("Flux could not fetch the {what}: {message}");
            return Ok(Some(self.fail(Phase::Fetch, text, None, false)));
        }
        self.done(Phase::Fetch, t, None);
        Ok(None)
    }

    /// Says so when nothing has touched the OCIRepository since the
    /// session's reconcile request ([`SOURCE_STALL`] ago): source-controller
    /// is not running, or not reconciling it. The wait goes on, so the sync
    /// completes by itself when the controller comes back.
    async fn warn_if_source_untouched(&self, repos: &Api<OCIRepository>) {
        let Some(asked) = self.source_request.as_ref() else {
            return;
        };
        let Ok(Some(repo)) = repos.get_opt(&self.cfg.name).await else {
            return;
        };
        let handled = repo
            .status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref());
        if let Some(message) = untouched_source(
            asked,
            repo.metadata.resource_version.as_deref(),
            handled,
            &self.namespace,
            &self.cfg.name,
        ) {
            (self.report)(&Event::Warning { message });
        }
    }

    pub(super) async fn ensure_objects(&mut self) -> Result<(), EngineError> {
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
        match &self.cfg.take_over {
            // In place of a Flux Kustomization: all its settings.
            Some(app) => {
                let original: KustomizationSpec = app.spec_as()?;
                spec = crate::takeover::replacement_spec(&original, &name, &self.cfg.path);
            }
            None => self.target.configure(&mut spec),
        }
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

    /// Syncs the directory once: validate, build (not pushed when unchanged),
    /// push, and wait for Flux to apply exactly what was pushed. Nothing in
    /// the cluster changes before the artifact is pushed. Dropping the
    /// future (a stop, a newer save) at any point leaves the session in a
    /// state that the next sync or the cleanup completes.
    /// Each sync's phases are timed and kept in the Lease's `sync-history`.
    pub async fn sync(&mut self) -> SyncOutcome {
        self.waiting.store(false, Ordering::SeqCst);
        self.lease.sync_starts();
        let outcome = if self.kind == Kind::Chart {
            self.sync_chart().await
        } else {
            self.sync_manifests().await
        };
        self.record_sync(&outcome).await;
        outcome
    }

    async fn sync_manifests(&mut self) -> SyncOutcome {
        let started = Instant::now();
        let t = self.phase(Phase::Validate);
        let target = self.target.target_namespace.clone();
        // A namespace sandbox (Flux impersonates its ServiceAccount): its
        // payload's Flux objects must stay inside it.
        let confined = self
            .target
            .service_account
            .is_some()
            .then(|| self.target.namespace.clone());
        let (index, relocated, packaging, walk) = {
            let (root, walk, dir) = (self.cfg.root.clone(), self.cfg.walk.clone(), self.dir());
            let decrypts = self.cfg.decryption_key.is_some();
            match tokio::task::spawn_blocking(move || {
                // Only what the sync needs: the directory and what its
                // kustomizations reference (see `packaging`).
                let mut packaging = packaging::plan(&root, &dir)?;
                let walk = crate::artifact::WalkOptions {
                    only: packaging.only.clone(),
                    keep: packaging.keep.clone(),
                    ..walk
                };
                packaging.check_ignored(&root, &walk)?;
                validate::validate_dir(&root, &dir, &walk, decrypts, confined.as_deref()).map(
                    |index| {
                        let relocated = target
                            .map(|t| (validate::relocated(&root, &dir, &t), t))
                            .unwrap_or_default();
                        (index, relocated, packaging, walk)
                    },
                )
            })
            .await
            {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    let file = e.file();
                    if let validate::ValidateError::Yaml(errors) = &e {
                        self.lease.failed_with(
                            errors
                                .iter()
                                .take(crate::session::record::problems::MAX_PROBLEMS)
                                .map(|y| {
                                    crate::session::record::problems::yaml_error(
                                        &y.file, y.line, y.column, &y.message,
                                    )
                                })
                                .collect(),
                        );
                    }
                    return self.fail(Phase::Validate, e.to_string(), file, false);
                }
                Err(e) => return self.fail(Phase::Validate, e.to_string(), None, false),
            }
        };
        self.done(Phase::Validate, t, None);
        self.say_relocations(relocated);

        let t = self.phase(Phase::Build);
        let (file, built) = match crate::artifact::build(&self.cfg.root, &walk).await {
            Ok(b) => b,
            Err(e) => {
                return self.fail(Phase::Build, crate::output::error_chain(&e), None, false);
            }
        };
        if self.said.packaging.as_ref() != Some(&packaging) {
            (self.report)(&Event::Message {
                message: packaging.describe(built.files),
            });
            for message in packaging.remote_warnings() {
                (self.report)(&Event::Warning { message });
            }
            self.said.packaging = Some(packaging);
        }
        let detail = format!("{} entries, {} bytes", built.entries, built.layer.size);
        let revision = match self
            .push_step(Build {
                started: t,
                key: built.layer.digest.clone(),
                digest: &built.layer.digest,
                detail,
                payload: Payload::Manifests {
                    file: &file,
                    built: &built,
                    walk,
                },
            })
            .await
        {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };

        match self.wait_for_flux(&revision, &index, started).await {
            Ok(outcome) => outcome,
            Err(e) => self.fail(Phase::Apply, crate::output::error_chain(&e), None, false),
        }
    }

    /// Points out, once per session, manifests whose namespace Flux's
    /// `targetNamespace` replaces (a sandbox puts everything in its namespace).
    fn say_relocations(&mut self, (found, target): (Vec<validate::Relocated>, String)) {
        let why = if self.cfg.mode == Mode::Sandboxed {
            "the sandbox"
        } else {
            "--target-namespace"
        };
        for r in found {
            let message = r.message(&target, why);
            if self.said.relocations.insert(message.clone()) {
                (self.report)(&Event::Warning { message });
            }
        }
    }

    /// The apply phase of a sync: makes (or re-makes) the session's objects,
    /// asks Flux for the revision, and waits for its verdict and the
    /// workloads' rollouts, in named steps: [`Session::ask_flux`],
    /// [`Session::await_verdict`], then the failure or the report of what
    /// changed ([`Session::report_synced`]).
    async fn wait_for_flux(
        &mut self,
        revision: &str,
        index: &validate::ObjectIndex,
        started: Instant,
    ) -> Result<SyncOutcome, EngineError> {
        let asked = self.ask_flux().await?;
        if let Some(failed) = self.fetch_phase(revision, "artifact").await? {
            return Ok(failed);
        }
        let t = self.phase(Phase::Apply);
        let (applied, early) = match self.await_verdict(revision, index, &asked).await? {
            Verdict::RolloutFailed(outcome) => return Ok(outcome),
            Verdict::Healthy { events, objects } => (None, Some((events, objects))),
            Verdict::Flux(applied) => (applied.map(|b| *b), None),
        };
        self.waiting.store(false, Ordering::SeqCst);
        if early.is_some() {
            tracing::debug!("healthy before Flux's health check reported it");
        } else if let Step::Failed {
            message,
            applied: done,
        } = verdict::kustomization(applied.as_ref(), revision)
        {
            return Ok(self.applied_failure(revision, index, message, done).await);
        }
        self.done(Phase::Apply, t, None);
        let status = applied.and_then(|o| o.status).unwrap_or_default();
        Ok(self
            .report_synced(revision, asked, status, early, started)
            .await)
    }

    /// Makes what the session needs (its objects at the first sync, or again
    /// when deleted by hand), asks Flux to reconcile, and reads what the
    /// Kustomization held before (with the change-set events followed from
    /// here on).
    async fn ask_flux(&mut self) -> Result<Asked, EngineError> {
        self.materialize().await?;
        let name = self.cfg.name.clone();
        let repos: Api<OCIRepository> = Api::namespaced(self.client.clone(), &self.namespace);
        let kss: Api<Kustomization> = Api::namespaced(self.client.clone(), &self.namespace);
        let sync_started = chrono::Utc::now();
        let change_set_wait = if self.change_sets_missing {
            Duration::ZERO
        } else {
            changes::CHANGE_SET_WAIT
        };
        // The reconcile request and the read of what Flux holds now go
        // together (Flux changes its inventory only after its health check).
        // The request is polled first: it is what Flux waits for, so it
        // takes the kept-alive connection rather than waiting for a new one.
        let requested = self.stage == (Stage::Materialized { flux_objects: true });
        let (current, request) = if requested {
            let (r, c) = futures::join!(flux::request_reconcile(&repos, &name), kss.get_opt(&name));
            (c?, Some(r))
        } else {
            (kss.get_opt(&name).await?, None)
        };
        // Flux records the revision's change-set event only once it has
        // fetched and applied it, well after this.
        let feed = std::sync::Arc::new(changes::EventsFeed::start(
            &self.client,
            &self.namespace,
            &name,
        ));
        let mut before = match current {
            Some(ks) => ks
                .status
                .and_then(|s| s.inventory)
                .map(|i| i.entries)
                .unwrap_or_default(),
            None => {
                // Gone (deleted by hand, or first sync): apply it again.
                self.stage = Stage::Materialized {
                    flux_objects: false,
                };
                Vec::new()
            }
        };
        // In place of a Flux Kustomization, its objects exist already: the
        // first sync updates them (what it applied is the "before").
        if before.is_empty()
            && let Some(app) = &self.cfg.take_over
        {
            before = app.inventory.clone();
        }
        self.waiting.store(true, Ordering::SeqCst);
        match request {
            Some(Ok(r)) if self.stage == (Stage::Materialized { flux_objects: true }) => {
                self.source_request = Some(r);
            }
            // Not made yet, or gone: (re)apply, then ask.
            _ => {
                if self.stage != (Stage::Materialized { flux_objects: true }) {
                    self.ensure_objects().await?;
                }
                self.source_request = Some(flux::request_reconcile(&repos, &name).await?);
            }
        }
        Ok(Asked {
            before,
            feed,
            sync_started,
            change_set_wait,
        })
    }

    /// Between a sync that ended healthy and the next: watches what it
    /// applied until a workload fails for certain after all — a container
    /// without a readiness probe counts as ready while it runs, so one that
    /// crashes a moment after it starts passes the sync's health check — and
    /// then reports that as the sync's failure and records it (the terminal,
    /// `gitops-sessions` and the editor show it). Never resolves while all is
    /// well, for a chart or for workloads in another cluster (Flux's
    /// verdict is all this session sees of those).
    pub async fn watch_after_sync(&mut self) {
        let Some((ns, _)) = self.workloads().filter(|_| self.kind != Kind::Chart) else {
            return std::future::pending().await;
        };
        let outcome = super::health::watch(
            self.client.clone(),
            ns,
            self.cfg.name.clone(),
            self.namespace.clone(),
            self.report.clone(),
            None,
            std::collections::BTreeSet::new(),
        )
        .await;
        let super::health::Outcome::Failed(failure) = outcome else {
            return std::future::pending().await;
        };
        let message = verdict::failed_after_sync(&failure);
        let outcome = self.fail(Phase::Apply, message, None, true);
        self.record_sync(&outcome).await;
    }

    /// Waits for Flux's verdict on `revision` and, meanwhile, watches the
    /// workloads' rollouts (this cluster only): progress as it happens, and
    /// a certain failure as soon as it shows. A word is said when
    /// kustomize-controller has not started on it.
    async fn await_verdict(
        &mut self,
        revision: &str,
        index: &validate::ObjectIndex,
        asked: &Asked,
    ) -> Result<Verdict, EngineError> {
        let name = self.cfg.name.clone();
        let kss: Api<Kustomization> = Api::namespaced(self.client.clone(), &self.namespace);
        let want = revision.to_string();
        let limit = self.cfg.timeout + Duration::from_secs(30);
        let applied = kubeapi::await_object(
            &kss,
            &name,
            limit,
            format!("kustomize-controller to apply {revision}"),
            move |o: Option<&Kustomization>| verdict::kustomization(o, &want).is_done(),
        );
        let applied = {
            let stall = warn_if_kustomization_unstarted(
                kss.clone(),
                name.clone(),
                self.namespace.clone(),
                revision.to_string(),
                self.report.clone(),
            );
            async move {
                tokio::select! {
                    r = applied => r,
                    never = stall => match never {},
                }
            }
        };
        // The workloads are judged only once Flux has applied this revision
        // (it health-checks it then): before that, they still show the
        // previous one. Whether the watch judges this revision itself
        // (unset while not known yet).
        let judging = std::sync::Arc::new(std::sync::OnceLock::<verdict::Judge>::new());
        let workloads = match self.workloads() {
            Some((ns, _)) => futures::future::Either::Left(watch_workloads(WorkloadWatch {
                client: self.client.clone(),
                kss: kss.clone(),
                session: name.clone(),
                flux_ns: self.namespace.clone(),
                ns,
                report: self.report.clone(),
                want: revision.to_string(),
                feed: asked.feed.clone(),
                local: index.keys().cloned().collect(),
                limit,
                sync_started: asked.sync_started,
                change_set_wait: asked.change_set_wait,
                judging: judging.clone(),
            })),
            None => futures::future::Either::Right(std::future::pending()),
        };
        tokio::pin!(workloads);
        tokio::select! {
            a = applied => {
                let a = a?;
                // Flux's health check was as quick: give the watch, which
                // judges the same, a moment to say so (and show the rollouts).
                let grace = verdict::grace(
                    &verdict::kustomization(a.as_ref(), revision),
                    judging.get().copied(),
                );
                Ok(match tokio::time::timeout(grace, &mut workloads).await {
                    Ok((super::health::Outcome::Healthy, _, events, objects)) => {
                        Verdict::Healthy { events, objects }
                    }
                    _ => Verdict::Flux(a.map(Box::new)),
                })
            }
            (outcome, _seen, events, objects) = &mut workloads => Ok(match outcome {
                super::health::Outcome::Failed(failure) => {
                    self.pushed.settle();
                    let file = validate::file_for(index, &failure);
                    self.lease.note(revision, "Failed");
                    let message = verdict::rollout_failure(&failure);
                    Verdict::RolloutFailed(self.fail(Phase::Apply, message, file, true))
                }
                // Healthy before Flux's health check says so: Flux's Ready
                // follows at its next poll (a failure then is shown as its
                // warning event).
                super::health::Outcome::Healthy => Verdict::Healthy { events, objects },
            }),
        }
    }

    /// Flux's failure of `revision`: applied but not healthy (the failed
    /// revision is what the cluster has now; pods that run but are not
    /// ready are why, in words), or not applied.
    async fn applied_failure(
        &mut self,
        revision: &str,
        index: &validate::ObjectIndex,
        mut message: String,
        applied: bool,
    ) -> SyncOutcome {
        self.pushed.settle();
        if applied && let Some((ns, _)) = self.workloads() {
            let why = super::health::explain_unready(
                self.client.clone(),
                &ns,
                &self.cfg.name,
                &self.namespace,
            )
            .await;
            if let Some(why) = why {
                message = verdict::unhealthy_in_time(&why, self.cfg.timeout);
            }
        }
        let file = validate::file_for(index, &message);
        self.lease.note(revision, "Failed");
        self.fail(Phase::Apply, message, file, applied)
    }

    /// Tells what `revision` changed (from the inventory before and after,
    /// and Flux's change-set event) and records it.
    async fn report_synced(
        &mut self,
        revision: &str,
        asked: Asked,
        status: flux::KustomizationStatus,
        early: Option<(Vec<String>, Vec<String>)>,
        started: Instant,
    ) -> SyncOutcome {
        let after = match &early {
            // Flux's status gets this revision's inventory after its health check.
            Some((_, objects)) => objects
                .iter()
                .map(|id| flux::InventoryEntry {
                    id: id.clone(),
                    v: String::new(),
                })
                .collect(),
            None => status.inventory.map(|i| i.entries).unwrap_or_default(),
        };
        let events = match early {
            Some((events, _)) => events,
            None => {
                asked
                    .feed
                    .applied(revision, asked.sync_started, asked.change_set_wait)
                    .await
            }
        };
        drop(asked.feed);
        tracing::debug!("change set of {revision}: {events:?}");
        self.change_sets_missing = changes::parse_change_set(&events).is_empty();
        let changes = changes::changes(&asked.before, &after, &events);
        self.pushed.settle();
        self.last_good = Some(revision.to_string());
        (self.report)(&Event::Synced {
            revision: revision.to_string(),
            changes,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        // Bookkeeping after the user is told.
        self.lease.note(revision, "Ready");
        SyncOutcome::Ready {
            revision: revision.to_string(),
        }
    }
}

/// What [`Session::ask_flux`] left for the rest of the apply phase.
struct Asked {
    /// What the Kustomization held before this sync.
    before: Vec<flux::InventoryEntry>,
    /// Flux's events about the session, followed since the request.
    feed: std::sync::Arc<changes::EventsFeed>,
    sync_started: chrono::DateTime<chrono::Utc>,
    change_set_wait: Duration,
}

/// How the wait for Flux ended.
enum Verdict {
    /// Flux's verdict (the Kustomization as last seen).
    Flux(Option<Box<Kustomization>>),
    /// The workloads were healthy first: the change-set events and objects seen.
    Healthy {
        events: Vec<String>,
        objects: Vec<String>,
    },
    /// A rollout failed for certain: the sync's outcome.
    RolloutFailed(SyncOutcome),
}

struct WorkloadWatch {
    client: kube::Client,
    kss: Api<Kustomization>,
    /// The session (its Kustomization's name).
    session: String,
    /// Where its Flux objects live.
    flux_ns: String,
    /// Where its workloads run.
    ns: String,
    report: super::Reporter,
    /// The revision pushed.
    want: String,
    feed: std::sync::Arc<changes::EventsFeed>,
    /// The objects the files define.
    local: Vec<String>,
    limit: Duration,
    sync_started: chrono::DateTime<chrono::Utc>,
    change_set_wait: Duration,
    /// Set once it is known whether this watch judges the revision.
    judging: std::sync::Arc<std::sync::OnceLock<verdict::Judge>>,
}

/// Watches the workloads' rollouts of one revision (this cluster only):
/// progress as it happens, and a certain failure as soon as it shows.
/// Starts once Flux has applied the revision (it health-checks it then):
/// before that, the workloads still show the previous one. Never ends
/// when the Kustomization cannot be watched (Flux's verdict decides).
async fn watch_workloads(
    w: WorkloadWatch,
) -> (
    super::health::Outcome,
    Option<Kustomization>,
    Vec<String>,
    Vec<String>,
) {
    let WorkloadWatch {
        client,
        kss,
        session,
        flux_ns,
        ns,
        report,
        want,
        feed,
        local,
        limit,
        sync_started,
        change_set_wait,
        judging,
    } = w;
    // ("Building manifests for revision X" comes before the apply.)
    let sign = want.clone();
    let applied = kubeapi::await_object(
        &kss,
        &session,
        limit,
        "",
        move |o: Option<&Kustomization>| verdict::kustomization_applied(o, &sign),
    )
    .await;
    let applied = match applied {
        Ok(k) => k,
        Err(_) => return std::future::pending().await,
    };
    tracing::debug!(
        "health watch starts: {:?}",
        applied
            .as_ref()
            .and_then(|k| k.status.as_ref())
            .map(|s| &s.conditions)
    );
    // What this revision created or changed (its change-set
    // event comes before the health check), on top of the
    // inventory Flux holds then (the previous revision's, or
    // this one's), minus what it deleted: the revision's
    // objects. When this watch can judge all of them, it
    // says "healthy" as soon as they are, not at Flux's next
    // health poll (5 s).
    let events = feed.applied(&want, sync_started, change_set_wait).await;
    let set = changes::parse_change_set(&events);
    let changed: std::collections::BTreeSet<String> = set
        .iter()
        .filter(|(_, a)| *a != changes::Action::Deleted)
        .map(|(o, _)| o.clone())
        .collect();
    let deleted: std::collections::BTreeSet<String> = set
        .iter()
        .filter(|(_, a)| *a == changes::Action::Deleted)
        .map(|(o, _)| o.clone())
        .collect();
    let mut objects: Vec<String> = applied
        .as_ref()
        .and_then(|k| k.status.as_ref())
        .and_then(|s| s.inventory.as_ref())
        .map(|i| i.entries.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default();
    objects.retain(|id| !deleted.contains(&crate::flux::display_id(id)));
    objects.extend(changed.iter().map(|o| super::health::inventory_id(o)));
    objects.sort();
    objects.dedup();
    let mut expect = if objects.is_empty() {
        None
    } else {
        super::health::judgeable(&objects, &ns)
    };
    // Every workload the files define is among them.
    if let Some(e) = &expect
        && !super::health::covers(e, &local)
    {
        expect = None;
    }
    if expect.is_some()
        && objects.iter().any(|id| id.ends_with("__Service"))
        && !no_load_balancers(&client, &ns, &session, &flux_ns).await
    {
        expect = None;
    }
    tracing::debug!("the revision's objects: {objects:?}; judged here: {expect:?}");
    let _ = judging.set(if expect.is_some() {
        verdict::Judge::Watch
    } else {
        verdict::Judge::Flux
    });
    let outcome = super::health::watch(client, ns, session, flux_ns, report, expect, changed).await;
    (outcome, applied, events, objects)
}

/// Whether none of the Services the session applied in `namespace` is a
/// LoadBalancer (those are healthy only once they have an address, which
/// Flux's health check waits for).
async fn no_load_balancers(
    client: &kube::Client,
    namespace: &str,
    session: &str,
    flux_ns: &str,
) -> bool {
    use crate::workloads::Service;
    let selector = format!(
        "kustomize.toolkit.fluxcd.io/name={session},kustomize.toolkit.fluxcd.io/namespace={flux_ns}"
    );
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    match api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .all(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer")),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked() -> flux::ReconcileRequest {
        flux::ReconcileRequest {
            at: "2026-12-03T10:00:00.000000001Z".into(),
            resource_version: Some("41".into()),
        }
    }

    #[test]
    fn an_untouched_source_names_source_controller_and_where_it_runs() {
        let w = untouched_source(&asked(), Some("41"), None, "dev", "web").unwrap();
        assert!(w.contains("source-controller has not started on OCIRepository dev/web"));
        assert!(w.contains("kubectl -n flux-system get deploy source-controller"));
        assert!(w.contains("still waiting"));
    }

    #[test]
    fn a_kustomization_not_started_on_the_revision_names_kustomize_controller() {
        let rev = "latest@sha256:abc";
        let w = unstarted_kustomization(None, rev, "dev", "web").unwrap();
        assert!(w.contains("kustomize-controller has not started on Kustomization dev/web"));
        assert!(w.contains("kubectl -n flux-system get deploy kustomize-controller"));
        // Still on the previous revision.
        let old = flux::KustomizationStatus {
            last_attempted_revision: Some("latest@sha256:old".into()),
            ..Default::default()
        };
        assert!(unstarted_kustomization(Some(&old), rev, "d", "w").is_some());
        // Started: the attempted revision, or a condition naming it.
        let attempted = flux::KustomizationStatus {
            last_attempted_revision: Some(rev.into()),
            ..Default::default()
        };
        assert_eq!(
            unstarted_kustomization(Some(&attempted), rev, "d", "w"),
            None
        );
        let building = flux::KustomizationStatus {
            conditions: vec![flux::Condition {
                type_: "Reconciling".into(),
                status: "True".into(),
                message: format!("Building manifests for revision {rev}"),
                ..Default::default()
            }],
            ..old
        };
        assert_eq!(
            unstarted_kustomization(Some(&building), rev, "d", "w"),
            None
        );
    }

    #[test]
    fn a_source_the_controller_touched_or_handled_is_not_stalled() {
        // Status written since the request.
        assert_eq!(untouched_source(&asked(), Some("42"), None, "d", "w"), None);
        // The request handled (and nothing written after, by chance).
        let handled = Some("2026-12-03T10:00:00.000000001Z");
        assert_eq!(
            untouched_source(&asked(), Some("41"), handled, "d", "w"),
            None
        );
        // No version to compare: no guess.
        let blind = flux::ReconcileRequest {
            resource_version: None,
            ..asked()
        };
        assert_eq!(untouched_source(&blind, None, None, "d", "w"), None);
    }

    #[test]
    fn a_release_not_started_on_the_chart_version_names_helm_controller() {
        let w = unstarted_release(None, "0.1.0-dev.gabc", "dev", "web").unwrap();
        assert!(w.contains("helm-controller has not started on HelmRelease dev/web"));
        assert!(w.contains("kubectl -n flux-system get deploy helm-controller"));
        let old = flux::HelmReleaseStatus {
            last_attempted_revision: Some("0.1.0-dev.gold".into()),
            ..Default::default()
        };
        assert!(unstarted_release(Some(&old), "0.1.0-dev.gabc", "d", "w").is_some());
        let attempted = flux::HelmReleaseStatus {
            last_attempted_revision: Some("0.1.0-dev.gabc+sha256.x".into()),
            ..Default::default()
        };
        assert_eq!(
            unstarted_release(Some(&attempted), "0.1.0-dev.gabc", "d", "w"),
            None
        );
    }
}
