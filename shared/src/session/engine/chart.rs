//! One sync of a Helm chart directory: the chart packaged as a Helm OCI
//! artifact with a development version, released by a HelmRelease.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube::api::Api;

use super::push::{Build, Payload};
use super::verdict::{self, Step};
use super::{EngineError, Event, Phase, Session, SyncOutcome, changes};
use crate::flux::{self, OCIRepository, SourceReference};
use crate::kubeapi;

/// The merged `--values` files (later files win), as HelmRelease values.
pub fn merged_values(files: &[PathBuf]) -> Result<serde_json::Value, EngineError> {
    let mut merged = serde_json::Value::Object(Default::default());
    for file in files {
        let err = |message: String| EngineError::Values {
            file: file.clone(),
            message,
        };
        let value = crate::helm::read_values(file).map_err(err)?;
        crate::helm::merge_values(&mut merged, value);
    }
    Ok(merged)
}

impl Session {
    /// The merged `--values` files (later files win), as HelmRelease values.
    fn values(&self) -> Result<serde_json::Value, EngineError> {
        merged_values(&self.cfg.values)
    }

    async fn ensure_release(&mut self) -> Result<(), EngineError> {
        let name = self.cfg.name.clone();
        let repo = self.oci_repository(Some(flux::LayerSelector {
            media_type: crate::helm::CONTENT_MEDIA_TYPE.into(),
            operation: Some("copy".into()),
        }))?;
        let values = self.values()?;
        let fields = self.target.flux_fields();
        let target_namespace = fields
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
                service_account_name: fields.service_account_name,
                kube_config: fields.kube_config,
                timeout: Some(format!("{}s", self.cfg.timeout.as_secs().max(1))),
                values: Some(values),
                // A failed upgrade leaves the previous release in place; no retries,
                // the next save is the retry.
                install: Some(serde_json::json!({"remediation": {"retries": 0}})),
                upgrade: Some(serde_json::json!({"remediation": {"retries": 0}})),
                ..Default::default()
            },
            status: None,
        };
        let mut hr = hr;
        // In place of a Flux HelmRelease: its settings and its release.
        if let Some(app) = &self.cfg.take_over {
            let original: flux::HelmReleaseSpec = app.spec_as()?;
            let extra = (!self.cfg.values.is_empty())
                .then(|| self.values())
                .transpose()?;
            hr.spec = crate::takeover::replacement_release(&original, &app.name, &name, extra);
        }
        self.apply_pair(&repo, &hr).await
    }

    pub(super) async fn sync_chart(&mut self) -> SyncOutcome {
        let started = Instant::now();
        let dir = self.dir();
        let t = self.phase(Phase::Validate);
        if let Err(e) = crate::helm::read_chart(&dir) {
            return self.fail(
                Phase::Validate,
                format!("{e}; nothing was pushed"),
                Some("Chart.yaml".into()),
                false,
            );
        }
        if let Err(e) = self.values() {
            return self.fail(Phase::Validate, e.to_string(), None, false);
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
            Ok(Err(e)) => return self.fail(Phase::Build, e, None, false),
            Err(e) => return self.fail(Phase::Build, e.to_string(), None, false),
        };
        let values_key =
            serde_json::to_string(&self.values().unwrap_or_default()).unwrap_or_default();
        let key = format!("{}:{values_key}", chart.layer.digest);
        let detail = format!("chart {} {}", chart.meta.name, chart.version);
        let revision = match self
            .push_step(Build {
                started: t,
                key,
                digest: &chart.layer.digest,
                detail,
                payload: Payload::Chart {
                    file: &file,
                    chart: &chart,
                },
            })
            .await
        {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        match self
            .wait_for_release(&revision, &chart.version, started)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => self.fail(Phase::Apply, crate::output::error_chain(&e), None, false),
        }
    }

    async fn wait_for_release(
        &mut self,
        revision: &str,
        version: &str,
        started: Instant,
    ) -> Result<SyncOutcome, EngineError> {
        self.materialize().await?;
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
        self.source_request = Some(flux::request_reconcile(&repos, &name).await?);

        if let Some(failed) = self.fetch_phase(revision, "chart").await? {
            return Ok(failed);
        }

        let t = self.phase(Phase::Apply);
        self.waiting.store(true, Ordering::SeqCst);
        flux::request_reconcile(&releases, &name).await?;
        let want = version.to_string();
        let limit = self.cfg.timeout + Duration::from_secs(30);
        let stall = super::sync::warn_if_release_unstarted(
            releases.clone(),
            name.clone(),
            self.namespace.clone(),
            version.to_string(),
            self.report.clone(),
        );
        let done = kubeapi::await_object(
            &releases,
            &name,
            limit,
            format!("helm-controller to release chart {version}"),
            move |o: Option<&flux::HelmRelease>| verdict::release(o, &want).is_done(),
        );
        // Meanwhile, a word when helm-controller has not started on it.
        let done = tokio::select! {
            r = done => r?,
            never = stall => match never {},
        };
        self.waiting.store(false, Ordering::SeqCst);
        if let Step::Failed { message, .. } = verdict::release(done.as_ref(), version) {
            self.pushed.settle();
            self.lease.note(revision, "Failed");
            // A failed upgrade leaves the previous release in place.
            return Ok(self.fail(Phase::Apply, message, None, false));
        }
        self.done(Phase::Apply, t, Some(format!("chart {version}")));
        let after = changes::helm_objects(&self.client, &release_ns, &name).await;
        self.pushed.settle();
        self.last_good = Some(format!("{revision} (chart {version})"));
        self.lease.note(revision, "Ready");
        (self.report)(&Event::Synced {
            revision: format!("{revision} (chart {version})"),
            changes: changes::compare_versions(&before, &after),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        Ok(SyncOutcome::Ready {
            revision: revision.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_files_merge_later_wins_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.yaml");
        let b = d.path().join("b.yaml");
        std::fs::write(&a, "image:\n  tag: v1\n  repo: web\nreplicas: 1\n").unwrap();
        std::fs::write(&b, "image:\n  tag: v2\n").unwrap();
        let v = merged_values(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(v["image"]["tag"], "v2");
        assert_eq!(v["image"]["repo"], "web");
        assert_eq!(v["replicas"], 1);
        std::fs::write(&b, "image: [unclosed\n").unwrap();
        let e = merged_values(&[a, b.clone()]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("--values {}: not valid YAML", b.display())),
            "{e}"
        );
    }
}
