//! The registry's HTTP transport: one kept-alive HTTP/1.1 client on the
//! same stack as the Kubernetes client (hyper, rustls with the platform's
//! verifier), with the proxies the environment names (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), connect and read timeouts, and
//! redirects followed for downloads.
//!
//! What can go wrong is a [`Failure`]; `error` turns it into words.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue, LOCATION, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body: bytes, or a file streamed from disk.
pub(super) type Body = BoxBody<Bytes, std::io::Error>;
type Connector = hyper_timeout::TimeoutConnector<hyper_rustls::HttpsConnector<Dial>>;

/// Redirects followed by a download (as browsers and the Docker CLI do).
const MAX_REDIRECTS: usize = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for the next bytes of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong on the wire.
#[derive(Debug)]
pub(super) enum Failure {
    /// No answer: refused, unresolvable, TLS refused, timed out.
    Unreachable(String),
    /// The registry answered with an error status (and maybe an OCI error body).
    Status { code: u16, body: String },
    /// A local file or a body stream failed mid-way.
    Io(std::io::Error),
    /// The registry broke the protocol (a missing header, a wrong digest, a
    /// bad token answer), or sent more than allowed.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(detail) => write!(f, "{detail}"),
            Failure::Status { code, body } if body.is_empty() => write!(f, "status {code}"),
            Failure::Status { code, body } => write!(f, "status {code}: {body}"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Protocol(what) => write!(f, "{what}"),
        }
    }
}

/// The kept-alive client, and the proxy rules it was made with.
#[derive(Clone)]
pub(super) struct Transport {
    client: Client<Connector, Body>,
    proxies: Arc<Matcher>,
}

impl Transport {
    /// A transport through the proxies the environment names.
    pub(super) fn new() -> Transport {
        Transport::with_proxies(Matcher::from_env())
    }

    pub(super) fn with_proxies(proxies: Matcher) -> Transport {
        crate::install_crypto_provider();
        let proxies = Arc::new(proxies);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let dial = Dial {
            tcp,
            proxies: proxies.clone(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config());
        let mut connector = hyper_timeout::TimeoutConnector::new(
            https.https_or_http().enable_http1().wrap_connector(dial),
        );
        connector.set_read_timeout(Some(READ_TIMEOUT));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Transport { client, proxies }
    }

    /// Sends one request and returns the response, whatever its status.
    pub(super) async fn send(
        &self,
        method: Method,
        uri: &Uri,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Body,
    ) -> Result<http::Response<Incoming>, Failure> {
        let mut request = Request::builder().method(method).uri(uri.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // A plain-HTTP registry behind a proxy: the proxy's credentials go
        // with each request (an HTTPS one gets them in its CONNECT).
        if uri.scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(auth) = self
                .proxies
                .intercept(uri)
                .and_then(|i| i.basic_auth().cloned())
        {
            request = request.header(PROXY_AUTHORIZATION, auth);
        }
        if let Ok(agent) = HeaderValue::from_str(&crate::cluster::user_agent()) {
            request = request.header(http::header::USER_AGENT, agent);
        }
        let request = request
            .body(body)
            .map_err(|e| Failure::Protocol(format!("bad request {uri}: {e}")))?;
        self.client
            .request(request)
            .await
            .map_err(|e| unreachable(&e))
    }

    /// A GET or HEAD that follows redirects. Credentials go only to the
    /// registry itself: a redirect to another host (a blob store) is
    /// followed without them.
    pub(super) async fn fetch(
        &self,
        method: Method,
        uri: &Uri,
        headers: &[(http::HeaderName, HeaderValue)],
    ) -> Result<http::Response<Incoming>, Failure> {
        let mut uri = uri.clone();
        let origin = uri.authority().cloned();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = uri.authority() == origin.as_ref();
            let sent: Vec<_> = headers
                .iter()
                .filter(|(name, _)| same_host || name != AUTHORIZATION)
                .cloned()
                .collect();
            let response = self.send(method.clone(), &uri, &sent, empty()).await?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Failure::Protocol("a redirect without a Location".into()))?;
            uri = resolve(&uri, location)?;
        }
        Err(Failure::Protocol(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// An empty body.
pub(super) fn empty() -> Body {
    bytes(Bytes::new())
}

/// A body of `data`.
pub(super) fn bytes(data: Bytes) -> Body {
    Full::new(data).map_err(|never| match never {}).boxed()
}

/// The whole body of a small response (an error, a token, a manifest),
/// refused past `limit` bytes.
pub(super) async fn read_body(
    response: http::Response<Incoming>,
    limit: usize,
) -> Result<Bytes, Failure> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreachable(&e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(Failure::Protocol(format!(
                    "the registry's answer is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

/// The response as a [`Failure::Status`] (with the start of its body).
pub(super) async fn status_failure(response: http::Response<Incoming>) -> Failure {
    let code = response.status().as_u16();
    let body = read_body(response, 64 * 1024).await.unwrap_or_default();
    Failure::Status {
        code,
        body: String::from_utf8_lossy(&body).trim().to_string(),
    }
}

/// `location` (absolute, or relative to `base` as registries send upload
/// locations) as a URI.
pub(super) fn resolve(base: &Uri, location: &str) -> Result<Uri, Failure> {
    let bad = || {
        Failure::Protocol(format!(
            "the registry sent an unusable location {location:?}"
        ))
    };
    if location.contains("://") {
        return location.parse().map_err(|_| bad());
    }
    if !location.starts_with('/') {
        return Err(bad());
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{location}")
        .parse()
        .map_err(|_| bad())
}

fn unreachable(e: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    Failure::Unreachable(cur.to_string())
}

/// rustls with the platform's verifier (the system's trust store, as the
/// Docker CLI and kubectl use); the webpki roots only where it has none.
fn tls_config() -> rustls::ClientConfig {
    use rustls_platform_verifier::ConfigVerifierExt;
    rustls::ClientConfig::with_platform_verifier().unwrap_or_else(|e| {
        tracing::debug!("platform certificate verifier unavailable ({e}); using no roots");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    })
}

/// Opens the TCP connection for a request: straight to the registry, or
/// through the proxy the environment names for it (a CONNECT tunnel for
/// HTTPS; for plain HTTP the request itself goes to the proxy).
#[derive(Clone)]
struct Dial {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl tower::Service<Uri> for Dial {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let proxy = self.proxies.intercept(&dst);
        Box::pin(async move {
            match proxy {
                None => Ok(Conn {
                    io: tcp.call(dst).await?,
                    proxied: false,
                }),
                Some(proxy) if dst.scheme() == Some(&http::uri::Scheme::HTTPS) => {
                    let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(
                        proxy.uri().clone(),
                        tcp,
                    );
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    Ok(Conn {
                        io: tunnel.call(dst).await?,
                        proxied: false,
                    })
                }
                Some(proxy) => Ok(Conn {
                    io: tcp.call(proxy.uri().clone()).await?,
                    proxied: true,
                }),
            }
        })
    }
}

/// A connection, which says whether it goes through a proxy in the clear
/// (then requests are sent in absolute form).
struct Conn {
    io: TokioIo<tokio::net::TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_resolve_against_the_registry() {
        let base: Uri = "https://r.example:5000/v2/app/blobs/uploads/"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "/v2/app/blobs/uploads/u1?_state=x")
                .unwrap()
                .to_string(),
            "https://r.example:5000/v2/app/blobs/uploads/u1?_state=x"
        );
        assert_eq!(
            resolve(&base, "https://store.example/b?sig=1")
                .unwrap()
                .to_string(),
            "https://store.example/b?sig=1"
        );
        assert!(resolve(&base, "uploads/u1").is_err());
    }
}
