//! The end of a sync's build and its push, written once for manifests
//! ([`super::sync`]) and charts ([`super::chart`]): nothing is pushed when
//! Flux already settled on the same content ("unchanged"); otherwise the
//! artifact goes to the session's reference, and what was pushed is
//! unsettled until Flux gives its verdict.

use std::time::Instant;

use super::{Event, Phase, Pushed, Session, SyncOutcome};
use crate::registry::{ArtifactRef, PushOptions};

/// What a sync built, to push.
pub(super) enum Payload<'a> {
    /// A manifests directory's artifact (the walk it was built with).
    Manifests {
        file: &'a std::fs::File,
        built: &'a crate::artifact::Built,
        walk: crate::artifact::WalkOptions,
    },
    /// A Helm chart, as a Helm OCI artifact.
    Chart {
        file: &'a std::fs::File,
        chart: &'a crate::helm::PackagedChart,
    },
}

/// What was built, as the build phase ends.
pub(super) struct Build<'a> {
    /// When the build phase started.
    pub started: Instant,
    /// The content's key: the same key again, once settled, is "unchanged".
    pub key: String,
    /// The layer's digest, said when unchanged.
    pub digest: &'a str,
    /// What the build phase says it made.
    pub detail: String,
    pub payload: Payload<'a>,
}

impl Session {
    /// Ends the build phase and pushes (see the module doc): `Ok(revision)`
    /// as Flux will report it, `Err(outcome)` when the sync ends here
    /// (unchanged, or the push failed).
    pub(super) async fn push_step(&mut self, build: Build<'_>) -> Result<String, SyncOutcome> {
        if self.pushed.settled_as(&build.key) {
            (self.report)(&Event::Unchanged {
                digest: build.digest.to_string(),
            });
            return Err(SyncOutcome::Unchanged);
        }
        self.done(Phase::Build, build.started, Some(build.detail));

        let t = self.phase(Phase::Push);
        let reference = match self.reference(&self.cfg.registry.push) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(Phase::Push, e.to_string(), None, false)),
        };
        let (detail, revision) = match self.push_payload(&reference, build.payload).await {
            Ok(p) => p,
            Err(e) => return Err(self.fail(Phase::Push, e, None, false)),
        };
        // What the tag points at is not confirmed applied until Flux says so.
        self.pushed = Pushed::Unsettled(build.key);
        self.done(Phase::Push, t, Some(detail));
        self.lease.pushed(&revision);
        Ok(revision)
    }

    /// Pushes `payload` to `reference` through the session's registry
    /// client: `(where it went, the revision Flux reports)`, or why not in
    /// words.
    async fn push_payload(
        &mut self,
        reference: &ArtifactRef,
        payload: Payload<'_>,
    ) -> Result<(String, String), String> {
        let client = self.registry.client(reference, &self.cfg.registry_options);
        match payload {
            Payload::Manifests { file, built, walk } => {
                let options = PushOptions {
                    walk,
                    ..Default::default()
                };
                let pushed = client
                    .push_built(&self.cfg.root, file, built, &options)
                    .await
                    .map_err(|e| crate::output::error_chain(&e))?;
                Ok((pushed.digest_url, pushed.flux_revision))
            }
            Payload::Chart { file, chart } => {
                let digest = client
                    .push_chart(file, chart)
                    .await
                    .map_err(|e| crate::output::error_chain(&e))?;
                Ok((
                    format!("{}@{digest}", reference.repository_url()),
                    format!("latest@{digest}"),
                ))
            }
        }
    }
}
