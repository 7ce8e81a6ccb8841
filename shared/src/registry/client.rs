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

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Uri};

use super::credentials::registry_auth;
use super::error::{classify, is_transient};
use super::http::{self as wire, Body, Failure, Transport};
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

/// What a login asks the registry's token service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

/// A client bound to one registry, authenticated for the operations done.
pub struct Registry {
    http: Transport,
    /// `http://HOST` or `https://HOST`: where the API is.
    base: String,
    creds: Option<Credentials>,
    /// What each request carries after the login: `Basic …` or a token's
    /// `Bearer …` (sensitive: never logged).
    authorization: std::sync::Mutex<Option<HeaderValue>>,
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
/// The most a manifest, a token answer or an error body may be (the OCI
/// distribution spec suggests registries accept manifests up to 4 MiB).
const SMALL_BODY: usize = 4 << 20;

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
        let plain_http = options.insecure || is_loopback(&reference.registry);
        let scheme = if plain_http { "http" } else { "https" };
        Registry {
            http: Transport::new(),
            base: format!("{scheme}://{}", reference.api_host()),
            creds: registry_auth(options.creds.as_ref(), &reference.registry),
            authorization: Default::default(),
            reference: reference.clone(),
            session,
            pushing: AtomicBool::new(false),
            present: Default::default(),
        }
    }

    /// The same client, through the proxies `proxies` names instead.
    #[cfg(test)]
    pub(super) fn through(
        mut self,
        proxies: hyper_util::client::proxy::matcher::Matcher,
    ) -> Registry {
        self.http = Transport::with_proxies(proxies);
        self
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

    fn classify(&self, failure: Failure) -> RegistryError {
        match classify(&self.reference, failure) {
            RegistryError::Unauthorized { registry } if self.creds.is_none() => {
                RegistryError::CredentialsRequired { registry }
            }
            other => other,
        }
    }

    /// Runs `op`, retrying transient failures with backoff.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
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

    /// `BASE/v2/REPOSITORY/SUFFIX`.
    fn uri(&self, suffix: &str) -> Result<Uri, Failure> {
        let text = format!("{}/v2/{}/{suffix}", self.base, self.reference.repository);
        text.parse()
            .map_err(|_| Failure::Protocol(format!("not a valid URL: {text}")))
    }

    /// The headers of a request to the registry: its login, and `extra`.
    fn headers(&self, extra: &[(HeaderName, HeaderValue)]) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = extra.to_vec();
        if let Some(auth) = self.authorization.lock().ok().and_then(|a| a.clone()) {
            headers.push((AUTHORIZATION, auth));
        }
        headers
    }

    /// Authenticates for `access`: asks `/v2/` how, then keeps what each
    /// request will carry (the credentials for Basic, a token fetched from
    /// the registry's token service for Bearer).
    pub async fn login(&self, access: Access) -> Result<(), RegistryError> {
        self.retry("authenticate", || self.authenticate(access))
            .await
    }

    async fn authenticate(&self, access: Access) -> Result<(), Failure> {
        let probe: Uri = format!("{}/v2/", self.base).parse().map_err(|_| {
            Failure::Protocol(format!("not a valid registry address: {}", self.base))
        })?;
        let response = self
            .http
            .send(Method::GET, &probe, &[], wire::empty())
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return Err(wire::status_failure(response).await);
        }
        let challenge = response
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|c| c.to_str().ok())
            .map(Challenge::parse);
        let authorization = match challenge {
            Some(Challenge::Bearer { realm, service }) => {
                Some(self.token(&realm, service.as_deref(), access).await?)
            }
            // Basic, or a challenge we cannot read: send the credentials.
            _ => self.creds.as_ref().map(Credentials::basic),
        };
        let Some(authorization) = authorization else {
            return Err(Failure::Status {
                code: 401,
                body: String::new(),
            });
        };
        if let Ok(mut kept) = self.authorization.lock() {
            *kept = Some(authorization);
        }
        Ok(())
    }

    /// A token from the registry's token service (the Docker/OCI token
    /// protocol), as an `Authorization` value.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        access: Access,
    ) -> Result<HeaderValue, Failure> {
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        let scope = format!("repository:{}:{actions}", self.reference.repository);
        let mut query = format!("scope={}", encode(&scope));
        if let Some(service) = service {
            query = format!("service={}&{query}", encode(service));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let uri: Uri = format!("{realm}{separator}{query}").parse().map_err(|_| {
            Failure::Protocol(format!("the registry names a bad token service {realm:?}"))
        })?;
        let headers: Vec<_> = self
            .creds
            .iter()
            .map(|c| (AUTHORIZATION, c.basic()))
            .collect();
        let response = self.http.fetch(Method::GET, &uri, &headers).await?;
        if !response.status().is_success() {
            return Err(wire::status_failure(response).await);
        }
        let body = wire::read_body(response, SMALL_BODY).await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            Failure::Protocol(format!("the token service's answer is not JSON: {e}"))
        })?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Protocol("the token service sent no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Failure::Protocol("the token service sent an unusable token".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Logs in for pushing unless this client already did (it keeps the token).
    pub(super) async fn login_to_push(&self) -> Result<(), RegistryError> {
        if !self.pushing.load(Ordering::SeqCst) {
            self.login(Access::Push).await?;
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
        self.retry("check blob", || async {
            let uri = self.uri(&format!("blobs/{digest}"))?;
            let response = self
                .http
                .fetch(Method::HEAD, &uri, &self.headers(&[]))
                .await?;
            match response.status().as_u16() {
                200..=299 => Ok(true),
                404 => Ok(false),
                _ => Err(wire::status_failure(response).await),
            }
        })
        .await
    }

    /// Uploads one blob: a POST opens the upload, one PUT sends it all
    /// (monolithic: no chunks, no buffering) and names its digest.
    async fn put_blob(&self, digest: &str, size: u64, body: Body) -> Result<(), Failure> {
        let start = self.uri("blobs/uploads/")?;
        let response = self
            .http
            .send(
                Method::POST,
                &start,
                &self.headers(&[(CONTENT_LENGTH, HeaderValue::from(0))]),
                wire::empty(),
            )
            .await?;
        if response.status() != http::StatusCode::ACCEPTED {
            return Err(wire::status_failure(response).await);
        }
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                Failure::Protocol("the registry opened an upload without a Location".into())
            })?;
        let location = wire::resolve(&start, location)?;
        let separator = if location.query().is_some() { '&' } else { '?' };
        let put: Uri = format!("{location}{separator}digest={}", encode(digest))
            .parse()
            .map_err(|_| {
                Failure::Protocol(format!("the registry sent an unusable location {location}"))
            })?;
        let headers = self.headers(&[
            (CONTENT_LENGTH, HeaderValue::from(size)),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ]);
        let response = self.http.send(Method::PUT, &put, &headers, body).await?;
        if !response.status().is_success() {
            return Err(wire::status_failure(response).await);
        }
        Ok(())
    }

    pub(super) async fn push_file(
        &self,
        file: &std::fs::File,
        blob: &Blob,
    ) -> Result<(), RegistryError> {
        self.retry("upload layer", || async {
            let mut f = file.try_clone().map_err(Failure::Io)?;
            std::io::Seek::rewind(&mut f).map_err(Failure::Io)?;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 1 << 20);
            let frames = futures::TryStreamExt::map_ok(stream, http_body::Frame::data);
            let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames));
            self.put_blob(&blob.digest, blob.size, body).await
        })
        .await
    }

    pub(super) async fn push_bytes(&self, data: &[u8], digest: &str) -> Result<(), RegistryError> {
        let data = Bytes::copy_from_slice(data);
        self.retry("upload blob", || {
            self.put_blob(digest, data.len() as u64, wire::bytes(data.clone()))
        })
        .await
    }

    pub(super) async fn push_manifest(&self, manifest: &[u8]) -> Result<(), RegistryError> {
        let body = Bytes::copy_from_slice(manifest);
        self.retry("write manifest", || async {
            let uri = self.uri(&format!("manifests/{}", self.reference.tag_or_latest()))?;
            let headers = self.headers(&[
                (CONTENT_TYPE, HeaderValue::from_static(MANIFEST_MEDIA_TYPE)),
                (CONTENT_LENGTH, HeaderValue::from(body.len())),
            ]);
            let response = self
                .http
                .send(Method::PUT, &uri, &headers, wire::bytes(body.clone()))
                .await?;
            if !response.status().is_success() {
                return Err(wire::status_failure(response).await);
            }
            Ok(())
        })
        .await
    }

    /// The raw manifest and its digest.
    pub async fn pull_manifest(&self) -> Result<(Vec<u8>, String), RegistryError> {
        self.retry("read manifest", || async {
            let uri = self.uri(&format!("manifests/{}", self.reference.manifest_name()))?;
            let headers = self.headers(&[(ACCEPT, HeaderValue::from_static(MANIFEST_MEDIA_TYPE))]);
            let response = self.http.fetch(Method::GET, &uri, &headers).await?;
            if !response.status().is_success() {
                return Err(wire::status_failure(response).await);
            }
            let body = wire::read_body(response, SMALL_BODY).await?;
            let digest = crate::artifact::sha256_digest(&body);
            if let Some(expected) = &self.reference.digest
                && *expected != digest
            {
                return Err(Failure::Protocol(format!(
                    "the manifest's digest is {digest}, not the {expected} asked for"
                )));
            }
            Ok((body.to_vec(), digest))
        })
        .await
    }

    /// Streams a blob into `out`, and checks it against its digest.
    pub(super) async fn get_blob<W>(&self, digest: &str, out: &mut W) -> Result<(), Failure>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use http_body_util::BodyExt;
        use sha2::Digest;
        let uri = self.uri(&format!("blobs/{digest}"))?;
        let response = self
            .http
            .fetch(Method::GET, &uri, &self.headers(&[]))
            .await?;
        if !response.status().is_success() {
            return Err(wire::status_failure(response).await);
        }
        let mut body = response.into_body();
        let mut hash = sha2::Sha256::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Unreachable(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                hash.update(&data);
                tokio::io::AsyncWriteExt::write_all(out, &data)
                    .await
                    .map_err(Failure::Io)?;
            }
        }
        let got = format!("sha256:{}", crate::artifact::hex(&hash.finalize()));
        if got != digest {
            return Err(Failure::Protocol(format!(
                "the registry sent a blob whose digest is {got}, not {digest}"
            )));
        }
        Ok(())
    }
}

/// A `WWW-Authenticate` challenge: where to get a token, or Basic.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

impl Challenge {
    /// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
    fn parse(header: &str) -> Challenge {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Challenge::Basic;
        }
        let mut realm = None;
        let mut service = None;
        let mut rest = params.trim();
        while let Some((key, after)) = rest.split_once('=') {
            let key = key
                .trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase();
            let after = after.trim_start();
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => match quoted.find('"') {
                    Some(end) => (&quoted[..end], &quoted[end + 1..]),
                    None => (quoted, ""),
                },
                None => after.split_once(',').unwrap_or((after, "")),
            };
            match key.as_str() {
                "realm" => realm = Some(value.to_string()),
                "service" => service = Some(value.to_string()),
                _ => {}
            }
            rest = next.trim_start_matches(',').trim();
        }
        match realm {
            Some(realm) => Challenge::Bearer { realm, service },
            None => Challenge::Basic,
        }
    }
}

/// Percent-encodes a query value (all but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_registries_send_them() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"bearer service="s", realm="https://r/t?x=1""#),
            Challenge::Bearer {
                realm: "https://r/t?x=1".into(),
                service: Some("s".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="gitops-harness""#),
            Challenge::Basic
        );
        assert_eq!(Challenge::parse("Bearer"), Challenge::Basic);
        assert_eq!(Challenge::parse(""), Challenge::Basic);
    }

    use crate::registry::fake;
    use hyper_util::client::proxy::matcher::Matcher;

    #[tokio::test]
    async fn a_plain_http_registry_behind_a_proxy_is_reached_through_it() {
        // The fake answers as the proxy: requests come to it in absolute
        // form, for a registry name that resolves nowhere.
        let proxy = fake::start(Box::new(|method, path, _| {
            match (method, path.strip_prefix("http://registry.invalid:5000")) {
                ("GET", Some("/v2/")) => (200, "{}".into()),
                ("HEAD", Some(_)) => (200, String::new()),
                ("PUT", Some(p)) if p.contains("/manifests/") => (201, String::new()),
                _ => (400, String::new()),
            }
        }))
        .await;
        let r: ArtifactRef = "oci://registry.invalid:5000/app:v1".parse().unwrap();
        let options = RegistryOptions {
            insecure: true,
            ..Default::default()
        };
        let proxies = Matcher::builder()
            .http(format!("http://user:secret@{}", proxy.addr))
            .build();
        let registry = Registry::new(&r, &options).through(proxies);
        let dir = crate::registry::push::tests::tree();
        let pushed = registry
            .push(dir.path(), &crate::registry::PushOptions::default())
            .await
            .unwrap();
        assert!(pushed.uploaded.is_empty());
        let log = proxy.log.lock().unwrap().clone();
        assert!(
            log.iter()
                .all(|l| l.contains(" http://registry.invalid:5000/v2/")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("PUT ") && l.ends_with("/manifests/v1")),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn an_https_registry_behind_a_proxy_is_tunnelled_to() {
        // The proxy is asked to CONNECT to the registry; it refuses here,
        // and the error says the registry could not be reached.
        let proxy = fake::start(Box::new(|_, _, _| (403, String::new()))).await;
        let r: ArtifactRef = "oci://registry.example:8443/app:v1".parse().unwrap();
        let proxies = Matcher::builder()
            .https(format!("http://{}", proxy.addr))
            .build();
        let err = Registry::new(&r, &RegistryOptions::default())
            .through(proxies)
            .login(Access::Pull)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
        let log = proxy.log.lock().unwrap().clone();
        assert!(
            log.iter().all(|l| l == "CONNECT registry.example:8443"),
            "{log:?}"
        );
        assert!(!log.is_empty());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("repository:team/app:pull,push"),
            "repository%3Ateam%2Fapp%3Apull%2Cpush"
        );
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
        assert_eq!(encode("a b~"), "a%20b~");
    }
}
