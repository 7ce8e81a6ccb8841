//! OCI registries: artifact references, credentials, and the push, pull and
//! diff of Flux artifacts.
//!
//! A push uploads only the blobs the registry lacks, and writes the tag last
//! (the manifest PUT), so a failed push never leaves a tag pointing at a
//! partial artifact. Transient failures are retried with backoff; the rest
//! are reported in words a user can act on. Credentials are never printed.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Serialize;

use crate::artifact::{
    self, ArtifactError, Blob, CONFIG_MEDIA_TYPE, CONTENT_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    TreeDiff, WalkOptions,
};
use crate::git::GitInfo;

/// Manifest annotation: where the content came from.
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
/// Manifest annotation: which revision of it.
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// Manifest annotation: when the artifact was made.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// `created` with `--reproducible`: the epoch, as Flux pins it.
pub const REPRODUCIBLE_CREATED: &str = "1970-01-01T00:00:00Z";

/// What went wrong talking to a registry, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "invalid artifact reference {input:?}: {reason} (expected oci://HOST/REPOSITORY[:TAG])"
    )]
    BadReference { input: String, reason: &'static str },
    #[error("--creds must be USER:PASSWORD (or log in with `docker login HOST`)")]
    BadCreds,
    #[error("cannot reach the registry {registry}: {detail}; is it running at that address?{hint}")]
    Unreachable {
        registry: String,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "the registry {registry} requires credentials (401 Unauthorized); log in with \
         `docker login {registry}` or pass --creds USER:PASSWORD"
    )]
    CredentialsRequired { registry: String },
    #[error(
        "the registry {registry} refused the credentials given (401 Unauthorized); check them, \
         or log in again with `docker login {registry}`"
    )]
    Unauthorized { registry: String },
    #[error(
        "the registry {registry} denied access to {repository} (403 Forbidden); the account \
         may lack push rights to that repository"
    )]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("the registry {registry} is out of storage space; free space on it and push again")]
    StorageFull { registry: String },
    #[error(
        "the registry {registry} failed ({code}): {message}; it may be overloaded or misconfigured, try again later"
    )]
    Server {
        registry: String,
        code: u16,
        message: String,
    },
    #[error("{reference} was not found in the registry")]
    NotFound { reference: String },
    #[error("{reference} is not a Flux artifact: {reason}")]
    NotFlux { reference: String, reason: String },
    #[error("registry {registry}: {message}")]
    Other { registry: String, message: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("temporary file: {0}")]
    Temp(#[source] std::io::Error),
    #[error(
        "{reference}: its layer is too large to download ({what} than {limit}, a guard against \
         a broken or hostile registry); is it the artifact you meant?"
    )]
    BlobTooLarge {
        reference: String,
        what: String,
        limit: String,
    },
}

/// `oci://HOST/REPOSITORY[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl FromStr for ArtifactRef {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RegistryError::BadReference {
            input: input.to_string(),
            reason,
        };
        let rest = input
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it must start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest must be sha256:<64 hex digits>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad("the digest must be sha256:<64 hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("a repository path is missing after the host"))?;
        if registry.is_empty() {
            return Err(bad("the registry host is empty"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                    && part.as_bytes()[0].is_ascii_alphanumeric()
            });
        if !repo_ok {
            return Err(bad(
                "the repository must be lowercase letters, digits, '.', '_', '-' and '/', each \
                 part starting with a letter or digit",
            ));
        }
        if let Some(tag) = &tag {
            let tag_ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && tag.as_bytes()[0] != b'.'
                && tag.as_bytes()[0] != b'-';
            if !tag_ok {
                return Err(bad(
                    "the tag must be letters, digits, '.', '_' or '-' (at most 128)",
                ));
            }
        }
        Ok(ArtifactRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ArtifactRef {
    /// `oci://HOST/REPOSITORY`, as `OCIRepository.spec.url` wants it.
    pub fn repository_url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    /// The tag, `latest` when none was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    fn oci(&self) -> Reference {
        match &self.digest {
            Some(d) => {
                Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone())
            }
            None => Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                self.tag_or_latest().to_string(),
            ),
        }
    }
}

/// The host part of `host[:port]` (brackets removed from IPv6 literals).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// Whether a registry address is on this machine, where plain HTTP is safe
/// without `--insecure-registry`: `localhost`, 127.0.0.0/8 and `::1`, the
/// hosts Docker itself talks plain HTTP to. Not `*.localhost`: such a name
/// is resolved like any other (`/etc/hosts`, a DNS search domain) and may
/// lead off the machine, so it takes TLS or the flag, as with Docker.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Registry credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.username)
    }
}

impl FromStr for Credentials {
    type Err = RegistryError;

    /// `USER:PASSWORD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(RegistryError::BadCreds),
        }
    }
}

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
    client: Client,
    auth: RegistryAuth,
    reference: ArtifactRef,
    /// Logged in for pushing (the client keeps the token): a session's
    /// later pushes reuse it, and the client's kept-alive connections.
    pushing: std::sync::atomic::AtomicBool,
    /// Blobs this client put, or found there: a session's later pushes
    /// neither ask about nor send them again (the config blob, every time).
    present: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A new blob up to this size is sent by a session's client without asking
/// first whether the registry has it: sending it again costs less than the
/// round trip of asking (the registry keeps one copy of a digest).
const SEND_WITHOUT_ASKING: u64 = 256 * 1024;

/// Retry delays for transient failures (connection refused, 5xx, 429).
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(2000),
];

/// The Docker config's credentials for a registry (running its credential
/// helper if it names one), if any. Sessions call this once, not per push.
pub fn docker_config_credentials(registry: &str) -> Option<Credentials> {
    match docker_config_auth(registry) {
        RegistryAuth::Basic(username, password) => Some(Credentials { username, password }),
        _ => None,
    }
}

fn docker_config_auth(registry: &str) -> RegistryAuth {
    // Docker Hub's credentials are stored under its index URL.
    let key = match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    };
    let credential = docker_config_file(|name| std::env::var_os(name), cfg!(windows))
        .and_then(|path| std::fs::File::open(path).ok())
        .map(|file| {
            docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key)
        });
    match credential {
        Some(Ok(docker_credential::DockerCredential::UsernamePassword(u, p))) => {
            RegistryAuth::Basic(u, p)
        }
        Some(Ok(docker_credential::DockerCredential::IdentityToken(_))) => {
            tracing::debug!(
                registry,
                "identity tokens are not supported; pulling anonymously"
            );
            RegistryAuth::Anonymous
        }
        Some(Err(_)) | None => RegistryAuth::Anonymous,
    }
}

/// Where the Docker CLI keeps its config: `$DOCKER_CONFIG/config.json`, else
/// `.docker/config.json` in the home directory, which on Windows is
/// `%USERPROFILE%` (the `docker_credential` crate only knows `$HOME`, which
/// Windows does not set). Credential helpers it names are run as
/// `docker-credential-NAME`, which Windows resolves to `….exe` on `PATH`.
fn docker_config_file(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    windows: bool,
) -> Option<std::path::PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    let home = if windows {
        // Git Bash and Cygwin set HOME; the Docker CLI itself reads USERPROFILE.
        set("USERPROFILE").or_else(|| set("HOME"))
    } else {
        set("HOME")
    }?;
    Some(Path::new(&home).join(".docker").join("config.json"))
}

impl Registry {
    /// A client for the registry of `reference`.
    pub fn new(reference: &ArtifactRef, options: &RegistryOptions) -> Registry {
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
        let auth = match &options.creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => docker_config_auth(&reference.registry),
        };
        Registry {
            client: Client::new(config),
            auth,
            reference: reference.clone(),
            pushing: std::sync::atomic::AtomicBool::new(false),
            present: Default::default(),
        }
    }

    fn knows(&self, digest: &str) -> bool {
        self.present.lock().is_ok_and(|p| p.contains(digest))
    }

    fn remember(&self, digest: &str) {
        if let Ok(mut p) = self.present.lock() {
            p.insert(digest.to_string());
        }
    }

    fn forget_blobs(&self) {
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

    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
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

    async fn blob_exists(&self, digest: &str) -> Result<bool, RegistryError> {
        let r = self.reference.oci();
        self.retry("check blob", || self.client.blob_exists(&r, digest))
            .await
    }

    async fn push_file(&self, file: &std::fs::File, blob: &Blob) -> Result<(), RegistryError> {
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

    async fn push_bytes(&self, data: &[u8], digest: &str) -> Result<(), RegistryError> {
        let r = self.reference.oci();
        let data = data.to_vec();
        self.retry("upload blob", || {
            self.client.push_blob(&r, data.clone(), digest)
        })
        .await
        .map(|_| ())
    }

    async fn push_manifest(&self, manifest: &[u8]) -> Result<(), RegistryError> {
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

    /// Downloads a blob of at most `limit` bytes into an anonymous temporary
    /// file (verified against its digest). More bytes than that stop the
    /// download at once, and are not retried.
    async fn pull_blob(&self, digest: &str, limit: u64) -> Result<std::fs::File, RegistryError> {
        let r = self.reference.oci();
        let file = tempfile::tempfile().map_err(RegistryError::Temp)?;
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pulled = self
            .retry("download layer", || async {
                let f = file.try_clone().map_err(OciDistributionError::IoError)?;
                f.set_len(0).map_err(OciDistributionError::IoError)?;
                let mut out = CappedWriter {
                    inner: tokio::fs::File::from_std(f),
                    left: limit,
                    over: over.clone(),
                };
                tokio::io::AsyncSeekExt::rewind(&mut out.inner)
                    .await
                    .map_err(OciDistributionError::IoError)?;
                match self.client.pull_blob(&r, digest, &mut out).await {
                    // Not an I/O error to retry: the registry sends too much.
                    Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => {
                        return Err(OciDistributionError::GenericError(None));
                    }
                    other => other?,
                }
                tokio::io::AsyncWriteExt::flush(&mut out.inner)
                    .await
                    .map_err(OciDistributionError::IoError)
            })
            .await;
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RegistryError::BlobTooLarge {
                reference: self.reference.to_string(),
                what: "the registry sent more".into(),
                limit: artifact::size_in_words(limit),
            });
        }
        pulled?;
        let mut file = file;
        std::io::Seek::rewind(&mut file).map_err(RegistryError::Temp)?;
        Ok(file)
    }
}

/// An `AsyncWrite` that fails once more than `left` bytes are written to it,
/// and says so through `over`.
struct CappedWriter<W> {
    inner: W,
    left: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CappedWriter<W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() as u64 > this.left {
            this.over.store(true, std::sync::atomic::Ordering::Relaxed);
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than allowed",
            )));
        }
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.left -= *n as u64;
        }
        poll
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

fn classify(reference: &ArtifactRef, err: OciDistributionError) -> RegistryError {
    let registry = reference.registry.clone();
    let hint = if is_loopback(&registry) {
        ""
    } else {
        " (if it serves plain HTTP, pass --insecure-registry)"
    };
    match err {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            RegistryError::Unreachable {
                registry,
                detail: root_cause(&r),
                hint,
            }
        }
        OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401) => RegistryError::Unauthorized { registry },
            Some(403) => RegistryError::Forbidden {
                registry,
                repository: reference.repository.clone(),
            },
            Some(404) => RegistryError::NotFound {
                reference: reference.to_string(),
            },
            Some(code) if code >= 500 => RegistryError::Server {
                registry,
                code,
                message: root_cause(&r),
            },
            _ => RegistryError::Unreachable {
                registry,
                detail: root_cause(&r),
                hint,
            },
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            RegistryError::Unauthorized { registry }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            reference: reference.to_string(),
        },
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 => RegistryError::Unauthorized { registry },
            403 => RegistryError::Forbidden {
                registry,
                repository: reference.repository.clone(),
            },
            404 => RegistryError::NotFound {
                reference: reference.to_string(),
            },
            _ => server_error(registry, code, message),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let message = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                RegistryError::Unauthorized { registry }
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                RegistryError::Forbidden {
                    registry,
                    repository: reference.repository.clone(),
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound {
                    reference: reference.to_string(),
                }
            } else {
                server_error(registry, 0, message)
            }
        }
        other => RegistryError::Other {
            registry,
            message: other.to_string(),
        },
    }
}

fn server_error(registry: String, code: u16, message: String) -> RegistryError {
    let lower = message.to_lowercase().replace(' ', "");
    // In words, or as the Go errno the filesystem driver of the CNCF
    // distribution registry reports ("Err":28 is ENOSPC, 122 EDQUOT).
    if lower.contains("nospaceleft")
        || lower.contains("diskfull")
        || lower.contains("quota")
        || lower.contains("\"err\":28}")
        || lower.contains("\"err\":122}")
    {
        return RegistryError::StorageFull { registry };
    }
    let message = registry_errors(&message).unwrap_or(message);
    if code >= 500 {
        RegistryError::Server {
            registry,
            code,
            message,
        }
    } else {
        RegistryError::Other { registry, message }
    }
}

/// The `code: message` pairs of an OCI distribution error body
/// (`{"errors":[{"code","message","detail"}]}`), without the detail.
fn registry_errors(body: &str) -> Option<String> {
    let start = body.find('{')?;
    let v: serde_json::Value = serde_json::from_str(body[start..].trim()).ok()?;
    let list: Vec<String> = v["errors"]
        .as_array()?
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["code"].as_str().unwrap_or("UNKNOWN"),
                e["message"].as_str().unwrap_or("no message")
            )
        })
        .collect();
    (!list.is_empty()).then(|| list.join("; "))
}

/// The innermost cause of an error, which is where the useful words are.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Options of a push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub walk: WalkOptions,
    pub registry: RegistryOptions,
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

/// The `source` and `revision` annotations for `dir`.
pub fn provenance(dir: &Path, layer_digest: &str) -> (String, String) {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let short = layer_digest
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or("");
    match GitInfo::for_dir(&abs) {
        Some(git) => {
            let source = git
                .remote
                .clone()
                .unwrap_or_else(|| format!("file://{}", git.toplevel.display()));
            let name = git.branch.clone().unwrap_or_else(|| "HEAD".into());
            let revision = match (&git.commit, git.dirty) {
                (Some(commit), false) => format!("{name}@sha1:{commit}"),
                // Never looks clean: the content digest says what it really is.
                (Some(commit), true) => format!("{name}@sha1:{commit}-dirty.{short}"),
                (None, _) => format!(
                    "{name}@sha256:{}",
                    layer_digest.trim_start_matches("sha256:")
                ),
            };
            (source, revision)
        }
        None => (
            format!("file://{}", abs.display()),
            format!(
                "local@sha256:{}",
                layer_digest.trim_start_matches("sha256:")
            ),
        ),
    }
}

/// The manifest of a Flux artifact, serialised deterministically.
pub fn manifest_json(config: &Blob, layer: &Blob, annotations: &[(&str, &str)]) -> Vec<u8> {
    oci_manifest(
        CONFIG_MEDIA_TYPE,
        config,
        CONTENT_MEDIA_TYPE,
        layer,
        annotations,
    )
}

/// A one-layer OCI image manifest, serialised deterministically (sorted keys).
pub fn oci_manifest(
    config_media_type: &str,
    config: &Blob,
    layer_media_type: &str,
    layer: &Blob,
    annotations: &[(&str, &str)],
) -> Vec<u8> {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": config_media_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layer_media_type, "digest": layer.digest, "size": layer.size}],
        "annotations": annotations,
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
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

/// Uploads the blobs the registry lacks, then the manifest (which moves the
/// tag). Returns the manifest digest and the blobs uploaded.
pub async fn upload(
    reference: &ArtifactRef,
    options: &RegistryOptions,
    artifact: &Upload<'_>,
) -> Result<(String, Vec<String>), RegistryError> {
    upload_with(None, reference, options, artifact).await
}

/// As [`upload`], through `kept` when given (a session's client, reused
/// across pushes: its connections and token).
pub async fn upload_with(
    kept: Option<&Registry>,
    reference: &ArtifactRef,
    options: &RegistryOptions,
    artifact: &Upload<'_>,
) -> Result<(String, Vec<String>), RegistryError> {
    if reference.digest.is_some() {
        return Err(RegistryError::BadReference {
            input: reference.to_string(),
            reason: "push to a tag, not a digest",
        });
    }
    let config = Blob {
        digest: artifact::sha256_digest(artifact.config),
        size: artifact.config.len() as u64,
    };
    let manifest = oci_manifest(
        artifact.config_media_type,
        &config,
        artifact.layer_media_type,
        artifact.layer,
        artifact.annotations,
    );
    let digest = artifact::sha256_digest(&manifest);
    let registry = match kept {
        Some(r) => r,
        None => &Registry::new(reference, options),
    };
    use std::sync::atomic::Ordering;
    if !registry.pushing.load(Ordering::SeqCst) {
        registry.login(RegistryOperation::Push).await?;
        registry.pushing.store(true, Ordering::SeqCst);
    }
    let reused = kept.is_some();
    match upload_blobs(registry, artifact, &config, &manifest, reused).await {
        // A kept token that expired: log in again, once.
        Err(RegistryError::Unauthorized { .. }) if kept.is_some() => {
            registry.pushing.store(false, Ordering::SeqCst);
            registry.login(RegistryOperation::Push).await?;
            registry.pushing.store(true, Ordering::SeqCst);
            upload_blobs(registry, artifact, &config, &manifest, reused).await
        }
        other => other,
    }
    .map(|uploaded| (digest, uploaded))
}

async fn upload_blobs(
    registry: &Registry,
    artifact: &Upload<'_>,
    config: &Blob,
    manifest: &[u8],
    kept: bool,
) -> Result<Vec<String>, RegistryError> {
    let trusted = registry.knows(&config.digest) || registry.knows(&artifact.layer.digest);
    match upload_blobs_once(registry, artifact, config, manifest, kept).await {
        // A blob it had seen may be gone since (the registry collected it,
        // or the repository was deleted): forget, ask, and try once more.
        Err(e) if trusted && !matches!(e, RegistryError::Unauthorized { .. }) => {
            tracing::debug!(error = %e, "push with remembered blobs failed; asking the registry");
            registry.forget_blobs();
            upload_blobs_once(registry, artifact, config, manifest, false).await
        }
        other => other,
    }
}

async fn upload_blobs_once(
    registry: &Registry,
    artifact: &Upload<'_>,
    config: &Blob,
    manifest: &[u8],
    kept: bool,
) -> Result<Vec<String>, RegistryError> {
    // The two blobs at once.
    let layer = ensure_blob(registry, artifact.layer, kept, || {
        registry.push_file(artifact.file, artifact.layer)
    });
    let config_blob = ensure_blob(registry, config, kept, || {
        registry.push_bytes(artifact.config, &config.digest)
    });
    let (layer, config_blob) = futures::try_join!(layer, config_blob)?;
    let uploaded = [layer, config_blob].into_iter().flatten().collect();
    // The tag moves only now, when every blob it needs is in place.
    registry.push_manifest(manifest).await?;
    Ok(uploaded)
}

/// Makes sure the registry has `blob`, sending it with `put` when needed;
/// returns its digest when it was sent. A blob this client put or saw before
/// is neither asked about nor sent; any other is asked about first (a blob
/// already there is not sent again), except a small new one from a session,
/// which is sent at once.
async fn ensure_blob<F, Fut>(
    registry: &Registry,
    blob: &Blob,
    kept: bool,
    put: F,
) -> Result<Option<String>, RegistryError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), RegistryError>>,
{
    let known = registry.knows(&blob.digest);
    let send_unasked = kept && blob.size <= SEND_WITHOUT_ASKING;
    if known || (!send_unasked && registry.blob_exists(&blob.digest).await?) {
        registry.remember(&blob.digest);
        return Ok(None);
    }
    put().await?;
    registry.remember(&blob.digest);
    Ok(Some(blob.digest.clone()))
}

/// The config blob: source-controller does not read it; an empty JSON object.
pub const CONFIG_BLOB: &[u8] = b"{}";

/// Builds `dir` and pushes it to `reference`.
pub async fn push(
    dir: &Path,
    reference: &ArtifactRef,
    options: &PushOptions,
) -> Result<Pushed, RegistryError> {
    let (file, built) = build(dir, &options.walk).await?;
    push_built(dir, &file, &built, reference, options).await
}

/// Packages `dir` into a temporary file, off the async runtime's threads.
pub async fn build(
    dir: &Path,
    walk: &WalkOptions,
) -> Result<(std::fs::File, artifact::Built), RegistryError> {
    let dir = dir.to_path_buf();
    let walk = walk.clone();
    Ok(
        tokio::task::spawn_blocking(move || artifact::build_to_temp(&dir, &walk))
            .await
            .map_err(|e| RegistryError::Temp(std::io::Error::other(e)))??,
    )
}

/// Pushes a layer [`build`] made from `dir` (which provides the provenance).
pub async fn push_built(
    dir: &Path,
    file: &std::fs::File,
    built: &artifact::Built,
    reference: &ArtifactRef,
    options: &PushOptions,
) -> Result<Pushed, RegistryError> {
    push_built_with(None, dir, file, built, reference, options).await
}

/// As [`push_built`], through `kept` when given (see [`upload_with`]).
pub async fn push_built_with(
    kept: Option<&Registry>,
    dir: &Path,
    file: &std::fs::File,
    built: &artifact::Built,
    reference: &ArtifactRef,
    options: &PushOptions,
) -> Result<Pushed, RegistryError> {
    let (source, revision) = match (&options.source, &options.revision) {
        (Some(s), Some(r)) => (s.clone(), r.clone()),
        (s, r) => {
            let (ds, dr) = provenance(dir, &built.layer.digest);
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
    let (digest, uploaded) = upload_with(
        kept,
        reference,
        &options.registry,
        &Upload {
            file,
            layer: &built.layer,
            layer_media_type: CONTENT_MEDIA_TYPE,
            config: CONFIG_BLOB,
            config_media_type: CONFIG_MEDIA_TYPE,
            annotations: &annotations,
        },
    )
    .await?;

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

/// The digest and declared size of a Flux artifact's content layer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerDescriptor {
    digest: String,
    size: Option<u64>,
}

/// The content layer of a Flux artifact's manifest.
fn flux_layer(reference: &ArtifactRef, manifest: &[u8]) -> Result<LayerDescriptor, RegistryError> {
    let not_flux = |reason: &str| RegistryError::NotFlux {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| not_flux(&format!("its manifest is not JSON ({e})")))?;
    let layers = value["layers"]
        .as_array()
        .ok_or_else(|| not_flux("its manifest has no layers"))?;
    let digest_of = |l: &serde_json::Value| {
        l["digest"].as_str().map(|d| LayerDescriptor {
            digest: d.to_string(),
            size: l["size"].as_u64(),
        })
    };
    layers
        .iter()
        .find(|l| l["mediaType"] == CONTENT_MEDIA_TYPE)
        .and_then(digest_of)
        .or_else(|| (layers.len() == 1).then(|| digest_of(&layers[0])).flatten())
        .ok_or_else(|| not_flux(&format!("no layer of type {CONTENT_MEDIA_TYPE}")))
}

/// How many bytes of `layer` to download at most: its declared size,
/// refused before the download when over `cap`.
fn download_limit(
    reference: &ArtifactRef,
    layer: &LayerDescriptor,
    cap: u64,
) -> Result<u64, RegistryError> {
    match layer.size {
        Some(size) if size > cap => Err(RegistryError::BlobTooLarge {
            reference: reference.to_string(),
            what: format!("its manifest says {size} bytes, more"),
            limit: artifact::size_in_words(cap),
        }),
        Some(size) => Ok(size),
        None => Ok(cap),
    }
}

/// Compares `dir` with the artifact at `reference`, by file content.
pub async fn diff(
    dir: &Path,
    reference: &ArtifactRef,
    walk: &WalkOptions,
    options: &RegistryOptions,
) -> Result<TreeDiff, RegistryError> {
    let local = {
        let dir = dir.to_path_buf();
        let walk = walk.clone();
        tokio::task::spawn_blocking(move || artifact::content_of_dir(&dir, &walk))
    };
    let registry = Registry::new(reference, options);
    registry.login(RegistryOperation::Pull).await?;
    let (manifest, _) = registry.pull_manifest().await?;
    let layer = flux_layer(reference, &manifest)?;
    let limits = artifact::LAYER_LIMITS;
    let limit = download_limit(reference, &layer, limits.compressed)?;
    let file = registry.pull_blob(&layer.digest, limit).await?;
    let remote = tokio::task::spawn_blocking(move || {
        artifact::content_of_layer_within(std::io::BufReader::new(file), &limits)
    })
    .await
    .map_err(|e| RegistryError::Temp(std::io::Error::other(e)))??;
    let local = local
        .await
        .map_err(|e| RegistryError::Temp(std::io::Error::other(e)))??;
    Ok(TreeDiff::between(&local, &remote))
}

#[cfg(test)]
mod props {
    //! Artifact references and registry hosts come from flags, the
    //! environment and ConfigMaps: any text.
    use super::*;
    use proptest::prelude::*;

    fn reference() -> impl Strategy<Value = ArtifactRef> {
        (
            "[a-z0-9.-]{1,20}(:[0-9]{1,5})?|\\[[0-9a-f:]{2,20}\\]:[0-9]{1,5}",
            "[a-z0-9][a-z0-9._-]{0,9}(/[a-z0-9][a-z0-9._-]{0,9}){0,3}",
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"),
            proptest::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(registry, repository, tag, digest)| ArtifactRef {
                registry,
                repository,
                tag,
                digest: digest.map(|d| format!("sha256:{d}")),
            })
    }

    proptest! {
        #![proptest_config(crate::proptests::config(512))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in any::<String>()) {
            let _ = s.parse::<ArtifactRef>();
            let _ = format!("oci://{s}").parse::<ArtifactRef>();
            let _ = is_loopback(&s);
            let _ = host_of(&s);
        }

        #[test]
        fn reference_like_text_parses_or_is_refused(s in "oci://[a-z0-9:\\[\\].@/_-]{0,30}(:[a-zA-Z0-9._-]{0,10})?(@sha256:[0-9a-fA-F]{0,66})?") {
            if let Ok(r) = s.parse::<ArtifactRef>() {
                // What parses prints back to itself.
                prop_assert_eq!(r.to_string(), s.clone());
                let _ = r.oci();
                let _ = is_loopback(&r.registry);
            }
        }

        #[test]
        fn a_printed_reference_reads_back(r in reference()) {
            let text = r.to_string();
            let back: ArtifactRef = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, r);
        }

        #[test]
        fn only_loopback_hosts_are_loopback(a in 0u8.., b in 0u8.., c in 0u8.., d in 0u8.., port in proptest::option::of(any::<u16>()), name in "[a-z0-9-]{1,12}") {
            let with_port = |h: String| match port { Some(p) => format!("{h}:{p}"), None => h };
            prop_assert_eq!(is_loopback(&with_port(format!("{a}.{b}.{c}.{d}"))), a == 127);
            let (sub, parent) = (format!("{name}.localhost"), format!("localhost.{name}"));
            prop_assert!(!is_loopback(&with_port(sub)));
            prop_assert!(!is_loopback(&with_port(parent)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r: ArtifactRef = "oci://127.0.0.1:5000/team/app:v1".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.repository_url(), "oci://127.0.0.1:5000/team/app");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/team/app:v1");

        let r: ArtifactRef = "oci://localhost:5000/app".parse().unwrap();
        assert_eq!(r.tag_or_latest(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ArtifactRef = format!("oci://ghcr.io/o/app@{d}").parse().unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn docker_config_is_found_where_the_docker_cli_keeps_it_on_each_os() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let file = |home: &str| Path::new(home).join(".docker").join("config.json");
        let unix = env(&[("HOME", "/home/ann"), ("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(docker_config_file(unix, false), Some(file("/home/ann")));
        let windows = env(&[("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(
            docker_config_file(windows, true),
            Some(file("C:\\Users\\ann"))
        );
        // Git Bash sets HOME too: USERPROFILE still wins, as for the Docker CLI.
        let git_bash = env(&[("HOME", "/c/Users/ann"), ("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(
            docker_config_file(git_bash, true),
            Some(file("C:\\Users\\ann"))
        );
        let only_home = env(&[("HOME", "D:\\ann"), ("USERPROFILE", "")]);
        assert_eq!(docker_config_file(only_home, true), Some(file("D:\\ann")));
        let docker_config = env(&[("DOCKER_CONFIG", "/etc/ci"), ("HOME", "/home/ann")]);
        for windows in [false, true] {
            assert_eq!(
                docker_config_file(docker_config, windows),
                Some(Path::new("/etc/ci").join("config.json"))
            );
        }
        assert_eq!(docker_config_file(env(&[]), false), None);
    }

    #[test]
    fn rejects_bad_references_with_the_reason() {
        for (input, reason) in [
            ("127.0.0.1:5000/app", "oci://"),
            ("oci://127.0.0.1:5000", "repository path is missing"),
            ("oci://host/App", "lowercase"),
            ("oci://host/app:", "tag"),
            ("oci://host/app:-x", "tag"),
            ("oci://host/app@sha256:abc", "64 hex"),
            ("oci:///app", "host is empty"),
        ] {
            let e = input.parse::<ArtifactRef>().unwrap_err().to_string();
            assert!(
                e.contains(reason) && e.contains("expected oci://HOST/REPOSITORY[:TAG]"),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn loopback_detection() {
        for r in [
            "localhost:5000",
            "LOCALHOST",
            "127.0.0.1:36010",
            "127.8.9.10",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.5:5000",
            "registry.example.com:443",
            // Docker talks TLS to these; so do we, without --insecure-registry.
            "kind-registry.localhost",
            "kind-registry.localhost:5000",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "[::ffff:10.0.0.1]:5000",
            "0.0.0.0:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn credentials_parse_and_never_print_the_secret() {
        let c: Credentials = "bob:s3cr3t".parse().unwrap();
        assert_eq!(c.username, "bob");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!("bob".parse::<Credentials>().is_err());
        assert!(":x".parse::<Credentials>().is_err());
        let e = "bob".parse::<Credentials>().unwrap_err().to_string();
        assert!(!e.contains("bob"));
    }

    #[test]
    fn manifest_is_flux_shaped_and_deterministic() {
        let config = Blob {
            digest: artifact::sha256_digest(CONFIG_BLOB),
            size: 2,
        };
        let layer = Blob {
            digest: format!("sha256:{}", "b".repeat(64)),
            size: 10,
        };
        let ann = [
            (ANNOTATION_CREATED, REPRODUCIBLE_CREATED),
            (ANNOTATION_SOURCE, "file:///x"),
        ];
        let one = manifest_json(&config, &layer, &ann);
        assert_eq!(one, manifest_json(&config, &layer, &ann));
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(v["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(v["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["mediaType"], CONTENT_MEDIA_TYPE);
        assert_eq!(v["annotations"][ANNOTATION_SOURCE], "file:///x");
        let r: ArtifactRef = "oci://h/x".parse().unwrap();
        assert_eq!(
            flux_layer(&r, &one).unwrap(),
            LayerDescriptor {
                digest: layer.digest.clone(),
                size: Some(10)
            }
        );
        assert!(
            flux_layer(&r, b"{\"layers\": []}")
                .unwrap_err()
                .to_string()
                .contains("not a Flux artifact")
        );
    }

    #[test]
    fn provenance_outside_git_is_a_file_url_and_content_revision() {
        let dir = tempfile::tempdir().unwrap();
        let (source, revision) = provenance(dir.path(), &format!("sha256:{}", "c".repeat(64)));
        assert!(source.starts_with("file:///"), "{source}");
        assert_eq!(revision, format!("local@sha256:{}", "c".repeat(64)));
    }
}

/// A scripted registry (a small fake, for unit tests only): answers each
/// request from a rule and records what it was asked.
#[cfg(test)]
mod fake {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub type Rule = Box<dyn Fn(&str, &str, usize) -> (u16, String) + Send + Sync>;

    pub struct FakeRegistry {
        pub addr: String,
        pub log: Arc<Mutex<Vec<String>>>,
    }

    pub async fn start(rule: Rule) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rule = Arc::new(rule);
        let (log2, addr2) = (log.clone(), addr.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (log, rule, addr) = (log2.clone(), rule.clone(), addr2.clone());
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match sock.read(&mut byte).await {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        let head = String::from_utf8_lossy(&head).to_string();
                        let mut lines = head.lines();
                        let first = lines.next().unwrap_or_default().to_string();
                        let mut parts = first.split(' ');
                        let method = parts.next().unwrap_or_default().to_string();
                        let path = parts.next().unwrap_or_default().to_string();
                        let len: usize = lines
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if sock.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(format!("{method} {path}"));
                            log.iter()
                                .filter(|l| **l == format!("{method} {path}"))
                                .count()
                        };
                        let (status, body) = rule(&method, &path, n);
                        let mut extra = String::new();
                        if method == "POST" && status == 202 {
                            extra = format!("Location: http://{addr}/v2/upload/1\r\n");
                        }
                        if method == "PUT" && status == 201 {
                            extra = format!("Location: http://{addr}{path}\r\n");
                        }
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeRegistry { addr, log }
    }
}

#[cfg(test)]
mod push_tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
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

    /// A registry serving one artifact whose manifest declares `declared`
    /// bytes for a layer of `layer` bytes.
    fn serving(declared: u64, layer: usize) -> fake::Rule {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
            "layers": [{"mediaType": CONTENT_MEDIA_TYPE, "digest": format!("sha256:{}", "d".repeat(64)), "size": declared}],
        })
        .to_string();
        Box::new(move |method, path, _| match (method, path) {
            ("GET", "/v2/") => (200, "{}".into()),
            ("GET", p) if p.contains("/manifests/") => (200, manifest.clone()),
            ("GET", p) if p.contains("/blobs/") => (200, "x".repeat(layer)),
            _ => (404, String::new()),
        })
    }

    #[tokio::test]
    async fn diff_refuses_a_layer_declared_too_large_before_downloading_it() {
        let reg = fake::start(serving(300 * 1024 * 1024, 10)).await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = diff(
            tree().path(),
            &r,
            &WalkOptions::default(),
            &RegistryOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("too large to download")
                && err.contains("314572800 bytes")
                && err.contains("256 MiB"),
            "{err}"
        );
        let log = reg.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.contains("/blobs/")), "{log:?}");
    }

    #[tokio::test]
    async fn diff_stops_a_download_past_the_declared_size_without_retrying() {
        let reg = fake::start(serving(1024, 64 * 1024)).await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = diff(
            tree().path(),
            &r,
            &WalkOptions::default(),
            &RegistryOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("too large to download") && err.contains("sent more than 1 KiB"),
            "{err}"
        );
        let log = reg.log.lock().unwrap().clone();
        assert_eq!(
            log.iter().filter(|l| l.contains("/blobs/")).count(),
            1,
            "{log:?}"
        );
    }

    #[test]
    fn the_distribution_registrys_errno_for_a_full_disk_is_storage_full() {
        // What Debian's docker-registry answers when its disk is full.
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"filesystem","Enclosed":{"Op":"write","Path":"/var/lib/docker-registry/docker/registry/v2/repositories/app/_uploads/x/startedat","Err":28}}}]}"#;
        let err = server_error("r".into(), 500, body.into());
        assert!(matches!(err, RegistryError::StorageFull { .. }), "{err}");
        // Other server errors: the registry's own words, not its JSON.
        let other =
            r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Err":5}}]}"#;
        let err = server_error("r".into(), 500, other.into()).to_string();
        assert!(
            err.contains("UNKNOWN: unknown error") && !err.contains("detail"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_upload_never_moves_the_tag() {
        let reg = fake::start(registry(|_| {
            Some((500, r#"{"errors":[{"code":"UNKNOWN","message":"write /var/lib/registry: no space left on device"}]}"#.into()))
        }))
        .await;
        let r: ArtifactRef = format!("oci://{}/app:v1", reg.addr).parse().unwrap();
        let err = push(tree().path(), &r, &options()).await.unwrap_err();
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
        let pushed = push(tree().path(), &r, &options()).await.unwrap();
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
        let err = push(tree().path(), &r, &options())
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
        let kept = Registry::new(&r, &opts.registry);
        let dir = tree();
        let (file, built) = build(dir.path(), &opts.walk).await.unwrap();
        let first = push_built_with(Some(&kept), dir.path(), &file, &built, &r, &opts)
            .await
            .unwrap();
        std::fs::write(dir.path().join("app.yaml"), "kind: Secret\n").unwrap();
        let (file, built) = build(dir.path(), &opts.walk).await.unwrap();
        let second = push_built_with(Some(&kept), dir.path(), &file, &built, &r, &opts)
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
        let pushed = push(tree().path(), &r, &options()).await.unwrap();
        assert!(pushed.uploaded.is_empty());
        let log = reg.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.starts_with("POST")), "{log:?}");
    }
}
