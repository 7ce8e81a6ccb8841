//! The registry client: one [`Registry`] bound to a repository, with its
//! connections, its login (token) and the blobs it has seen, and the retry
//! of transient failures. What it does with them lives beside it: the push
//! chain in `push`, the download and diff in `pull`.
//!
//! A session keeps one client for all its pushes, manifests and charts
//! alike ([`KeptRegistry`]); a command makes one for its one push or diff.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use super::credentials::registry_auth;
use super::error::{classify, is_transient};
use super::{ArtifactRef, Credentials, RegistryError, is_loopback};
use crate::artifact::{Blob, MANIFEST_MEDIA_TYPE};

/// How to talk to a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--creds`; otherwise the Docker config and its credential helpers.
    pub creds: Option<Credentials>,
    /// `--insecure-registry`: plain HTTP to a registry that is not on loopback.
    pub insecure: bool,
}

/// A client bound to one registry, authenticated for the operations done.
pub struct Registry {
    pub(super) client: Client,
    pub(super) auth: RegistryAuth,
    pub(super) reference: ArtifactRef,
    /// Kept across a session's pushes ([`Registry::for_session`]): small new
    /// blobs are sent without asking first, and an expired token is renewed
    /// once rather than failing the push.
    pub(super) session: bool,
    /// Logged in for pushing (the client keeps the token): a session's
    /// later pushes reuse it, and the client's kept-alive connections.
    pushing: AtomicBool,
    /// Blobs this client put, or found there: a session's later pushes
    /// neither ask about nor send them again (the config blob, every time).
    present: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Retry delays for transient failures (connection refused, 5xx, 429).
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(2000),
];

impl Registry {
    /// A client for the registry of `reference`, for one push or diff.
    pub fn new(reference: &ArtifactRef, options: &RegistryOptions) -> Registry {
        Registry::with_mode(reference, options, false)
    }

    /// A client for the registry of `reference` that a session keeps for
    /// all its pushes (see [`KeptRegistry`]): one login, kept-alive
    /// connections, and the blobs it sent remembered.
    pub fn for_session(reference: &ArtifactRef, options: &RegistryOptions) -> Registry {
        Registry::with_mode(reference, options, true)
    }

    fn with_mode(reference: &ArtifactRef, options: &RegistryOptions, session: bool) -> Registry {
        // reqwest is built without a default provider; make sure ours is in.
        crate::install_crypto_provider();
        let plain_http = options.insecure || is_loopback(&reference.registry);
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::HttpsExcept(vec![reference.registry.clone()])
            } else {
                ClientProtocol::Https
            },
            // One streamed PUT per blob: no buffering, no chunk round-trips.
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        Registry {
            client: Client::new(config),
            auth: registry_auth(options.creds.as_ref(), &reference.registry),
            reference: reference.clone(),
            session,
            pushing: AtomicBool::new(false),
            present: Default::default(),
        }
    }

    pub(super) fn knows(&self, digest: &str) -> bool {
        self.present.lock().is_ok_and(|p| p.contains(digest))
    }

    pub(super) fn remember(&self, digest: &str) {
        if let Ok(mut p) = self.present.lock() {
            p.insert(digest.to_string());
        }
    }

    pub(super) fn forget_blobs(&self) {
        if let Ok(mut p) = self.present.lock() {
            p.clear();
        }
    }

    /// The repository this client is bound to.
    pub fn reference(&self) -> &ArtifactRef {
        &self.reference
    }

    fn classify(&self, err: OciDistributionError) -> RegistryError {
        match classify(&self.reference, err) {
            RegistryError::Unauthorized { registry } if self.auth == RegistryAuth::Anonymous => {
                RegistryError::CredentialsRequired { registry }
            }
            other => other,
        }
    }

    /// Runs `op`, retrying transient failures with backoff.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < RETRY_DELAYS.len() => {
                    tracing::info!(what, attempt, "transient registry error, retrying: {e}");
                    tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                    attempt += 1;
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    /// Authenticates for `op` (fetches a token where the registry uses them).
    pub async fn login(&self, op: RegistryOperation) -> Result<(), RegistryError> {
        let r = self.reference.oci();
        self.retry("authenticate", || self.client.auth(&r, &self.auth, op))
            .await
            .map(|_| ())
    }

    /// Logs in for pushing unless this client already did (it keeps the token).
    pub(super) async fn login_to_push(&self) -> Result<(), RegistryError> {
        if !self.pushing.load(Ordering::SeqCst) {
            self.login(RegistryOperation::Push).await?;
            self.pushing.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Logs in for pushing again (the kept token expired).
    pub(super) async fn login_to_push_again(&self) -> Result<(), RegistryError> {
        self.pushing.store(false, Ordering::SeqCst);
        self.login_to_push().await
    }

    pub(super) async fn blob_exists(&self, digest: &str) -> Result<bool, RegistryError> {
        let r = self.reference.oci();
        self.retry("check blob", || self.client.blob_exists(&r, digest))
            .await
    }

    pub(super) async fn push_file(
        &self,
        file: &std::fs::File,
        blob: &Blob,
    ) -> Result<(), RegistryError> {
        let r = self.reference.oci();
        self.retry("upload layer", || async {
            let mut f = file.try_clone().map_err(OciDistributionError::IoError)?;
            std::io::Seek::rewind(&mut f).map_err(OciDistributionError::IoError)?;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 1 << 20);
            let stream = futures::TryStreamExt::map_err(stream, OciDistributionError::IoError);
            self.client
                .push_blob_stream(&r, stream, &blob.digest, Some(blob.size))
                .await
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn push_bytes(&self, data: &[u8], digest: &str) -> Result<(), RegistryError> {
        let r = self.reference.oci();
        let data = data.to_vec();
        self.retry("upload blob", || {
            self.client.push_blob(&r, data.clone(), digest)
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn push_manifest(&self, manifest: &[u8]) -> Result<(), RegistryError> {
        let r = self.reference.oci();
        let body = manifest.to_vec();
        let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        self.retry("write manifest", || {
            self.client
                .push_manifest_raw(&r, body.clone(), content_type.clone())
        })
        .await
        .map(|_| ())
    }

    /// The raw manifest and its digest.
    pub async fn pull_manifest(&self) -> Result<(Vec<u8>, String), RegistryError> {
        let r = self.reference.oci();
        let (bytes, digest) = self
            .retry("read manifest", || {
                self.client
                    .pull_manifest_raw(&r, &self.auth, &[MANIFEST_MEDIA_TYPE])
            })
            .await?;
        Ok((bytes.to_vec(), digest))
    }
}

/// A session's registry client, kept across its pushes (manifests and
/// charts alike): one login, kept-alive connections, and the blobs it sent
/// remembered. Made at the first push; made again only when the session
/// pushes to another repository.
#[derive(Default)]
pub struct KeptRegistry(Option<Arc<Registry>>);

impl KeptRegistry {
    /// The kept client for `reference`, made (with `options`) when there is
    /// none yet or it is bound to another repository.
    pub fn client(&mut self, reference: &ArtifactRef, options: &RegistryOptions) -> Arc<Registry> {
        match &self.0 {
            Some(kept) if kept.reference() == reference => kept.clone(),
            _ => {
                let made = Arc::new(Registry::for_session(reference, options));
                self.0 = Some(made.clone());
                made
            }
        }
    }
}
