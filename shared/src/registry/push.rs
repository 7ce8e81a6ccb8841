//! The push chain, as methods of the [`Registry`] client: [`Registry::push`]
//! builds a directory and pushes it, [`Registry::push_built`] pushes a layer
//! already built, [`Registry::push_chart`] a packaged Helm chart, and
//! [`Registry::upload`] sends any one-layer artifact.
//!
//! Only the blobs the registry lacks are sent, and the tag is written last
//! (the manifest PUT), so a failed push never leaves a tag pointing at a
//! partial artifact.

use std::path::Path;

use serde::Serialize;

use super::{Registry, RegistryError};
use crate::artifact::{
    self, ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE, Blob, CONFIG_BLOB,
    CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, REPRODUCIBLE_CREATED, WalkOptions,
};
use crate::helm::PackagedChart;

/// Options of a push (how to talk to the registry is the client's).
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub walk: WalkOptions,
    /// Pin `created` to the epoch so the manifest digest depends only on content.
    pub reproducible: bool,
    /// Override the `source` annotation.
    pub source: Option<String>,
    /// Override the `revision` annotation.
    pub revision: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// `oci://HOST/REPOSITORY:TAG`.
    pub reference: String,
    pub tag: String,
    /// The manifest digest, `sha256:…`.
    pub digest: String,
    /// `oci://HOST/REPOSITORY@sha256:…`.
    pub digest_url: String,
    /// The revision Flux reports for it: `<tag>@sha256:<manifest digest>`.
    pub flux_revision: String,
    pub layer: BlobInfo,
    pub source: String,
    pub revision: String,
    pub created: String,
    /// Blobs uploaded by this push (the others were already there).
    pub uploaded: Vec<String>,
    pub entries: usize,
}

/// A blob's digest and size, for output.
#[derive(Debug, Clone, Serialize)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
}

/// A built one-layer artifact, ready to upload.
pub struct Upload<'a> {
    pub file: &'a std::fs::File,
    pub layer: &'a Blob,
    pub layer_media_type: &'a str,
    pub config: &'a [u8],
    pub config_media_type: &'a str,
    pub annotations: &'a [(&'a str, &'a str)],
}

/// A new blob up to this size is sent by a session's client without asking
/// first whether the registry has it: sending it again costs less than the
/// round trip of asking (the registry keeps one copy of a digest).
const SEND_WITHOUT_ASKING: u64 = 256 * 1024;

impl Registry {
    /// Builds `dir` and pushes it.
    pub async fn push(&self, dir: &Path, options: &PushOptions) -> Result<Pushed, RegistryError> {
        let (file, built) = artifact::build(dir, &options.walk).await?;
        self.push_built(dir, &file, &built, options).await
    }

    /// Pushes a layer [`artifact::build`] made from `dir` (which provides
    /// the provenance).
    pub async fn push_built(
        &self,
        dir: &Path,
        file: &std::fs::File,
        built: &artifact::Built,
        options: &PushOptions,
    ) -> Result<Pushed, RegistryError> {
        let (source, revision) = match (&options.source, &options.revision) {
            (Some(s), Some(r)) => (s.clone(), r.clone()),
            (s, r) => {
                let (ds, dr) = artifact::provenance(dir, &built.layer.digest);
                (s.clone().unwrap_or(ds), r.clone().unwrap_or(dr))
            }
        };
        let created = if options.reproducible {
            REPRODUCIBLE_CREATED.to_string()
        } else {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        };
        let annotations = [
            (ANNOTATION_CREATED, created.as_str()),
            (ANNOTATION_REVISION, revision.as_str()),
            (ANNOTATION_SOURCE, source.as_str()),
        ];
        let (digest, uploaded) = self
            .upload(&Upload {
                file,
                layer: &built.layer,
                layer_media_type: CONTENT_MEDIA_TYPE,
                config: CONFIG_BLOB,
                config_media_type: CONFIG_MEDIA_TYPE,
                annotations: &annotations,
            })
            .await?;

        let reference = &self.reference;
        let tag = reference.tag_or_latest().to_string();
        Ok(Pushed {
            reference: format!("{}:{tag}", reference.repository_url()),
            digest_url: format!("{}@{digest}", reference.repository_url()),
            flux_revision: format!("{tag}@{digest}"),
            tag,
            digest,
            layer: BlobInfo {
                digest: built.layer.digest.clone(),
                size: built.layer.size,
            },
            source,
            revision,
            created,
            uploaded,
            entries: built.entries,
        })
    }

    /// Pushes a chart [`crate::helm::package`] wrote into `file`, with Helm's
    /// media types; returns the manifest digest.
    pub async fn push_chart(
        &self,
        file: &std::fs::File,
        chart: &PackagedChart,
    ) -> Result<String, RegistryError> {
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let annotations = [
            (ANNOTATION_CREATED, created.as_str()),
            ("org.opencontainers.image.title", chart.meta.name.as_str()),
            ("org.opencontainers.image.version", chart.version.as_str()),
        ];
        let upload = Upload {
            file,
            layer: &chart.layer,
            layer_media_type: crate::helm::CONTENT_MEDIA_TYPE,
            config: &chart.config,
            config_media_type: crate::helm::CONFIG_MEDIA_TYPE,
            annotations: &annotations,
        };
        self.upload(&upload).await.map(|(digest, _)| digest)
    }

    /// Uploads the blobs the registry lacks, then the manifest (which moves
    /// the tag). Returns the manifest digest and the blobs uploaded.
    pub async fn upload(
        &self,
        artifact: &Upload<'_>,
    ) -> Result<(String, Vec<String>), RegistryError> {
        if self.reference.digest.is_some() {
            return Err(RegistryError::BadReference {
                input: self.reference.to_string(),
                reason: "push to a tag, not a digest",
            });
        }
        let config = Blob {
            digest: artifact::sha256_digest(artifact.config),
            size: artifact.config.len() as u64,
        };
        let manifest = artifact::oci_manifest(
            artifact.config_media_type,
            &config,
            artifact.layer_media_type,
            artifact.layer,
            artifact.annotations,
        );
        let digest = artifact::sha256_digest(&manifest);
        self.login_to_push().await?;
        match self.upload_blobs(artifact, &config, &manifest).await {
            // A kept token that expired: log in again, once.
            Err(RegistryError::Unauthorized { .. }) if self.session => {
                self.login_to_push_again().await?;
                self.upload_blobs(artifact, &config, &manifest).await
            }
            other => other,
        }
        .map(|uploaded| (digest, uploaded))
    }

    async fn upload_blobs(
        &self,
        artifact: &Upload<'_>,
        config: &Blob,
        manifest: &[u8],
    ) -> Result<Vec<String>, RegistryError> {
        let trusted = self.knows(&config.digest) || self.knows(&artifact.layer.digest);
        match self
            .upload_blobs_once(artifact, config, manifest, self.session)
            .await
        {
            // A blob it had seen may be gone since (the registry collected it,
            // or the repository was deleted): forget, ask, and try once more.
            Err(e) if trusted && !matches!(e, RegistryError::Unauthorized { .. }) => {
                tracing::debug!(error = %e, "push with remembered blobs failed; asking the registry");
                self.forget_blobs();
                self.upload_blobs_once(artifact, config, manifest, false)
                    .await
            }
            other => other,
        }
    }

    async fn upload_blobs_once(
        &self,
        artifact: &Upload<'_>,
        config: &Blob,
        manifest: &[u8],
        send_small_unasked: bool,
    ) -> Result<Vec<String>, RegistryError> {
        // The two blobs at once.
        let layer = self.ensure_blob(artifact.layer, send_small_unasked, || {
            self.push_file(artifact.file, artifact.layer)
        });
        let config_blob = self.ensure_blob(config, send_small_unasked, || {
            self.push_bytes(artifact.config, &config.digest)
        });
        let (layer, config_blob) = futures::try_join!(layer, config_blob)?;
        let uploaded = [layer, config_blob].into_iter().flatten().collect();
        // The tag moves only now, when every blob it needs is in place.
        self.push_manifest(manifest).await?;
        Ok(uploaded)
    }

    /// Makes sure the registry has `blob`, sending it with `put` when needed;
    /// returns its digest when it was sent. A blob this client put or saw
    /// before is neither asked about nor sent; any other is asked about first
    /// (a blob already there is not sent again), except a small new one when
    /// `send_small_unasked` (a session's client), which is sent at once.
    async fn ensure_blob<F, Fut>(
        &self,
        blob: &Blob,
        send_small_unasked: bool,
        put: F,
    ) -> Result<Option<String>, RegistryError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), RegistryError>>,
    {
        let known = self.knows(&blob.digest);
        let send_unasked = send_small_unasked && blob.size <= SEND_WITHOUT_ASKING;
        if known || (!send_unasked && self.blob_exists(&blob.digest).await?) {
            self.remember(&blob.digest);
            return Ok(None);
        }
        put().await?;
        self.remember(&blob.digest);
        Ok(Some(blob.digest.clone()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::registry::{ArtifactRef, KeptRegistry, RegistryOptions, fake};

    pub(crate) fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.yaml"), "kind: ConfigMap\n").unwrap();
        dir
    }

    fn options() -> PushOptions {
        PushOptions {
            source: Some("file:///x".into()),
            revision: Some("r".into()),
            ..Default::default()
        }
    }

    /// Answers the registry protocol, with `fail` deciding the blob upload PUT.
    fn registry(
        fail_upload: impl Fn(usize) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> fake::Rule {
        Box::new(move |method, path, n| match (method, path) {
            ("GET", "/v2/") => (200, "{}".into()),
            ("HEAD", _) => (404, String::new()),
            ("POST", _) => (202, String::new()),
            ("PUT", p) if p.starts_with("/v2/upload") => {
                fail_upload(n).unwrap_or((201, String::new()))
            }
            ("PUT", _) => (201, String::new()),
            _ => (404, String::new()),
        })
    }

    fn manifest_puts(log: &[String]) -> usize {
        log.iter().filter(|l| l.contains("/manifests/")).count()
    }

    #[tokio::test]
    async fn a_failed_upload_never_moves_the_tag() {
        let reg = fake::start(registry(|_| {
            Some((500, r#"{"errors":[{"code":"UNKNOWN","message":"write /var/lib/registry: no space left on device"}]}"#.into()))
        }))
        .await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = Registry::new(&r, &RegistryOptions::default())
            .push(tree().path(), &options())
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::StorageFull { .. }), "{err}");
        assert!(err.to_string().contains("out of storage space"), "{err}");
        let log = reg.log.lock().unwrap().clone();
        assert_eq!(manifest_puts(&log), 0, "{log:?}");
        // It was retried as a server error before giving up.
        assert!(
            log.iter()
                .filter(|l| l.starts_with("PUT /v2/upload"))
                .count()
                > 1,
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn transient_errors_are_retried() {
        let reg = fake::start(registry(|n| (n == 1).then(|| (503, String::new())))).await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let pushed = Registry::new(&r, &RegistryOptions::default())
            .push(tree().path(), &options())
            .await
            .unwrap();
        assert_eq!(pushed.uploaded.len(), 2);
        assert_eq!(manifest_puts(&reg.log.lock().unwrap()), 1);
    }

    #[tokio::test]
    async fn forbidden_names_the_repository() {
        let reg = fake::start(Box::new(|method, _, _| match method {
            "GET" => (200, "{}".into()),
            "HEAD" => (404, String::new()),
            _ => (403, r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#.into()),
        }))
        .await;
        let r: ArtifactRef = format!("oci://{}/team/app:v1", reg.addr).parse().unwrap();
        let err = Registry::new(&r, &RegistryOptions::default())
            .push(tree().path(), &options())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("denied access to team/app") && err.contains("403"),
            "{err}"
        );
        assert_eq!(manifest_puts(&reg.log.lock().unwrap()), 0);
    }

    /// A session's client, pushing `tree` twice through the same client.
    async fn push_twice(reg: &fake::FakeRegistry) -> (Pushed, Pushed) {
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let opts = options();
        let kept = Registry::for_session(&r, &RegistryOptions::default());
        let dir = tree();
        let (file, built) = artifact::build(dir.path(), &opts.walk).await.unwrap();
        let first = kept
            .push_built(dir.path(), &file, &built, &opts)
            .await
            .unwrap();
        std::fs::write(dir.path().join("app.yaml"), "kind: Secret\n").unwrap();
        let (file, built) = artifact::build(dir.path(), &opts.walk).await.unwrap();
        let second = kept
            .push_built(dir.path(), &file, &built, &opts)
            .await
            .unwrap();
        (first, second)
    }

    #[tokio::test]
    async fn a_sessions_client_sends_small_new_blobs_without_asking_and_the_config_once() {
        let reg = fake::start(registry(|_| None)).await;
        let (first, second) = push_twice(&reg).await;
        let log = reg.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.starts_with("HEAD")), "{log:?}");
        // Layer and config the first time; only the new layer the second.
        assert_eq!(first.uploaded.len(), 2, "{log:?}");
        assert_eq!(second.uploaded.len(), 1, "{log:?}");
        assert_eq!(log.iter().filter(|l| l.starts_with("POST")).count(), 3);
        assert_eq!(manifest_puts(&log), 2);
    }

    #[tokio::test]
    async fn a_remembered_blob_the_registry_lost_is_asked_about_and_sent_again() {
        // The second manifest PUT is refused once (the config blob was
        // collected meanwhile): the client asks, sends it, and succeeds.
        let reg = fake::start(Box::new(|method, path, n| match (method, path) {
            ("GET", "/v2/") => (200, "{}".into()),
            ("HEAD", _) => (404, String::new()),
            ("POST", _) => (202, String::new()),
            ("PUT", p) if p.contains("/manifests/") && n == 2 => (
                400,
                r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
                    .into(),
            ),
            ("PUT", _) => (201, String::new()),
            _ => (404, String::new()),
        }))
        .await;
        let (_, second) = push_twice(&reg).await;
        let log = reg.log.lock().unwrap().clone();
        assert_eq!(manifest_puts(&log), 3, "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("HEAD")), "{log:?}");
        assert_eq!(second.uploaded.len(), 2, "{log:?}");
    }

    #[tokio::test]
    async fn blobs_already_present_are_not_uploaded() {
        let reg = fake::start(Box::new(|method, path, _| match (method, path) {
            ("GET", _) => (200, "{}".into()),
            ("HEAD", _) => (200, String::new()),
            ("PUT", p) if p.contains("/manifests/") => (201, String::new()),
            _ => (500, String::new()),
        }))
        .await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let pushed = Registry::new(&r, &RegistryOptions::default())
            .push(tree().path(), &options())
            .await
            .unwrap();
        assert!(pushed.uploaded.is_empty());
        let log = reg.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.starts_with("POST")), "{log:?}");
    }

    /// A registry that hands out tokens (as Docker Hub, GHCR and Harbor do):
    /// `/v2/` answers 401 with a Bearer challenge naming `/token`.
    fn token_registry() -> fake::Rule {
        Box::new(|method, path, _| match (method, path) {
            ("GET", "/v2/") => (401, String::new()),
            ("GET", p) if p.starts_with("/token") => (200, r#"{"token":"t"}"#.into()),
            ("HEAD", _) => (404, String::new()),
            ("POST", _) => (202, String::new()),
            ("PUT", _) => (201, String::new()),
            _ => (404, String::new()),
        })
    }

    /// A chart packaged as a chart sync packages it, with `greeting`.
    fn packaged_chart(dir: &Path, greeting: &str) -> (std::fs::File, PackagedChart) {
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("Chart.yaml"),
            "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("templates/cm.yaml"),
            format!("kind: ConfigMap\ndata: {{g: {greeting}}}\n"),
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        let (file, chart) =
            crate::helm::package(dir, &WalkOptions::default(), std::io::BufWriter::new(file))
                .unwrap();
        let mut file = file.into_inner().unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        (file, chart)
    }

    fn token_requests(reg: &fake::FakeRegistry) -> usize {
        let log = reg.log.lock().unwrap();
        log.iter().filter(|l| l.starts_with("GET /token")).count()
    }

    #[tokio::test]
    async fn a_chart_session_logs_in_once_for_all_its_pushes() {
        let reg = fake::start(token_registry()).await;
        let r: ArtifactRef = format!("oci://{}/gitops-run/demo:latest", reg.addr)
            .parse()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Two saves of a chart session: each sync asks the session for its
        // client, as `sync_chart` does.
        let mut kept = KeptRegistry::default();
        let mut digests = Vec::new();
        for greeting in ["hi", "hello"] {
            let (file, chart) = packaged_chart(dir.path(), greeting);
            let client = kept.client(&r, &RegistryOptions::default());
            digests.push(client.push_chart(&file, &chart).await.unwrap());
        }
        assert_ne!(digests[0], digests[1]);
        let log = reg.log.lock().unwrap().clone();
        assert_eq!(manifest_puts(&log), 2, "{log:?}");
        assert_eq!(token_requests(&reg), 1, "{log:?}");
        assert_eq!(
            log.iter().filter(|l| *l == "GET /v2/").count(),
            1,
            "{log:?}"
        );
        // A client per push (what chart syncs did) logs in at every push, and
        // again to ask about blobs (a pull token).
        let reg = fake::start(token_registry()).await;
        let r: ArtifactRef = format!("oci://{}/gitops-run/demo:latest", reg.addr)
            .parse()
            .unwrap();
        for greeting in ["hi", "hello"] {
            let (file, chart) = packaged_chart(dir.path(), greeting);
            let client = Registry::new(&r, &RegistryOptions::default());
            client.push_chart(&file, &chart).await.unwrap();
        }
        let tokens = token_requests(&reg);
        assert!(tokens >= 2, "{tokens} token requests");
    }

    #[test]
    fn a_session_keeps_its_client_until_it_pushes_elsewhere() {
        let options = RegistryOptions::default();
        let app: ArtifactRef = "oci://localhost:5000/gitops-run/app:latest"
            .parse()
            .unwrap();
        let other: ArtifactRef = "oci://localhost:5001/gitops-run/app:latest"
            .parse()
            .unwrap();
        let mut kept = KeptRegistry::default();
        let first = kept.client(&app, &options);
        assert!(std::sync::Arc::ptr_eq(&first, &kept.client(&app, &options)));
        let moved = kept.client(&other, &options);
        assert!(!std::sync::Arc::ptr_eq(&first, &moved));
        assert_eq!(moved.reference(), &other);
        assert!(std::sync::Arc::ptr_eq(
            &moved,
            &kept.client(&other, &options)
        ));
    }
}
