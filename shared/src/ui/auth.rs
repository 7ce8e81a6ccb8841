//! Who may use the sessions page, and how a browser gets in.
//!
//! The page acts with the user's kube credentials, so every request must
//! come from the user's own browser, through the page itself:
//! - **A secret in a cookie, never in a URL.** The server's secret lives
//!   only in an `HttpOnly`, `SameSite=Strict` cookie (named after the port,
//!   so two pages do not overwrite each other's), compared in constant time.
//! - **One-time login codes.** A browser gets the cookie by handing in a
//!   code once; the code is then spent. One code goes into a launcher file
//!   (mode 0600 in a fresh 0700 directory) that auto-posts it to `/login`,
//!   so the command that opens the browser sees only a file path; the
//!   file and its code die at first use or after [`LAUNCHER_TTL`]. Another
//!   code is printed on the terminal as `/login?code=…` for copy-paste.
//!   The login answer sets the cookie and moves to `/` with
//!   `location.replace` (a same-origin navigation, so the Strict cookie is
//!   sent, and the login URL leaves the history).
//! - **Only our own Host and Origin.** `Host` must be `127.0.0.1:PORT` or
//!   `localhost:PORT` (a page of another site that re-resolves its name to
//!   127.0.0.1, DNS rebinding, is refused); an `Origin`, when sent, must be
//!   the page's own (`null`, a file's origin, only on `POST /login`).
//!   Refusals are plain-text 403s.
//! - Every answer says `Referrer-Policy: same-origin` (not `no-referrer`:
//!   with it, browsers send `Origin: null` on the page's own form posts),
//!   `Cache-Control: no-store`, and may not be framed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

/// How long the launcher file and its code live when no browser uses them.
pub const LAUNCHER_TTL: Duration = Duration::from_secs(120);

/// `n` random bytes from the operating system's generator, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(crate::artifact::hex(&bytes))
}

/// Whether `a` and `b` are equal, in a time that depends only on their
/// lengths (not on where they first differ).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether a request's `Host` header names this server: `127.0.0.1:PORT`
/// or `localhost:PORT` (no port when it is 80).
pub fn host_allowed(host: Option<&str>, port: u16) -> bool {
    let Some(host) = host else {
        return false;
    };
    let (name, p) = match host.rsplit_once(':') {
        Some((name, p)) => (name, p.parse::<u16>().ok()),
        None => (host, Some(80)),
    };
    p == Some(port) && (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost"))
}

/// Whether a request's `Origin` header (when sent) is the page's own;
/// `null` (a file, a sandboxed frame) only for the login endpoint.
pub fn origin_allowed(origin: Option<&str>, port: u16, login: bool) -> bool {
    match origin {
        None => true,
        Some("null") => login,
        Some(o) => o
            .strip_prefix("http://")
            .is_some_and(|h| !h.contains('/') && host_allowed(Some(h), port)),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A one-time login code not yet spent.
struct Code {
    value: String,
    /// When it dies unused (`None`: when the server stops).
    expires: Option<Instant>,
    /// The launcher file holding it, removed with it.
    launcher: bool,
}

/// The page's gate: the cookie's secret, the codes that can still be
/// exchanged for it, the launcher file.
pub struct Gate {
    port: u16,
    secret: String,
    cookie: String,
    codes: Mutex<Vec<Code>>,
    launcher: Mutex<Option<tempfile::TempDir>>,
}

impl Gate {
    /// A gate for a server on 127.0.0.1:`port`, with a fresh secret.
    pub fn new(port: u16) -> std::io::Result<Gate> {
        Ok(Gate {
            port,
            secret: random_hex(32)?,
            cookie: format!("kubectl-gitops-ui-{port}"),
            codes: Mutex::new(Vec::new()),
            launcher: Mutex::new(None),
        })
    }

    fn codes(&self) -> std::sync::MutexGuard<'_, Vec<Code>> {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new one-time code, valid until used (or `ttl` passes).
    pub fn mint(&self, ttl: Option<Duration>) -> std::io::Result<String> {
        let value = random_hex(16)?;
        self.codes().push(Code {
            value: value.clone(),
            expires: ttl.map(|t| Instant::now() + t),
            launcher: false,
        });
        Ok(value)
    }

    /// The URL that logs a browser in once, for the terminal.
    pub fn login_url(&self, code: &str) -> String {
        format!("http://127.0.0.1:{}/login?code={code}", self.port)
    }

    /// Writes the launcher file (a form that posts a fresh code to
    /// `/login` as it loads) in a fresh private directory; its path. The
    /// file and its code are gone at first use, after [`LAUNCHER_TTL`], or
    /// when the gate is dropped.
    pub fn write_launcher(self: &Arc<Self>) -> std::io::Result<PathBuf> {
        let value = random_hex(16)?;
        let dir = tempfile::Builder::new()
            .prefix("kubectl-gitops-ui-")
            .tempdir()?;
        let path = dir.path().join("open-sessions-page.html");
        let html = launcher_html(self.port, &value);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
            opts.mode(0o600);
        }
        opts.open(&path)?.write_all(html.as_bytes())?;
        self.codes().push(Code {
            value,
            expires: Some(Instant::now() + LAUNCHER_TTL),
            launcher: true,
        });
        *self
            .launcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dir);
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(LAUNCHER_TTL).await;
            if let Some(g) = gate.upgrade() {
                g.forget_launcher();
            }
        });
        Ok(path)
    }

    /// Removes the launcher file and its code.
    fn forget_launcher(&self) {
        self.codes().retain(|c| !c.launcher);
        drop(
            self.launcher
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// Spends `code`: true when it was a live one-time code (it is no more).
    pub fn redeem(&self, code: &str) -> bool {
        let now = Instant::now();
        let mut launcher = false;
        let found = {
            let mut codes = self.codes();
            codes.retain(|c| c.expires.is_none_or(|e| e > now));
            // Every live code is compared, so the time taken says nothing
            // about which one came close.
            let mut hit = None;
            for (i, c) in codes.iter().enumerate() {
                if ct_eq(c.value.as_bytes(), code.as_bytes()) {
                    hit = Some(i);
                }
            }
            if let Some(i) = hit {
                launcher = codes.remove(i).launcher;
            }
            hit.is_some()
        };
        if launcher {
            self.forget_launcher();
        }
        found
    }

    /// Whether the request carries the gate's cookie.
    pub fn authorised(&self, headers: &HeaderMap) -> bool {
        cookie(headers, &self.cookie).is_some_and(|v| ct_eq(v.as_bytes(), self.secret.as_bytes()))
    }

    /// The `Set-Cookie` value that lets this browser in.
    fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie, self.secret
        )
    }
}

/// The launcher: posts `code` to the page's `/login` as soon as it loads.
fn launcher_html(port: u16, code: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>Opening the sessions page…</title></head>\
         <body><form method=\"post\" action=\"http://127.0.0.1:{port}/login\">\
         <input type=\"hidden\" name=\"code\" value=\"{code}\">\
         <p>Opening the kubectl-gitops sessions page… <button type=\"submit\">Open it</button></p></form>\
         <script>document.forms[0].submit()</script></body></html>"
    )
}

fn refused(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// Checks Host, Origin and (except on `/login`) the cookie of every
/// request; adds the headers every answer carries.
pub async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let login = req.uri().path() == "/login";
    let mut resp = if !host_allowed(text(header::HOST), gate.port) {
        refused(
            StatusCode::FORBIDDEN,
            &format!(
                "refused: this page answers only to 127.0.0.1:{p} or localhost:{p} (the request named another host)",
                p = gate.port
            ),
        )
    } else if !origin_allowed(
        text(header::ORIGIN),
        gate.port,
        login && req.method() == Method::POST,
    ) {
        refused(
            StatusCode::FORBIDDEN,
            "refused: the request came from another site's page",
        )
    } else if !login && !gate.authorised(headers) {
        refused(
            StatusCode::UNAUTHORIZED,
            "not signed in: open the one-time URL that `kubectl gitops-sessions ui` printed \
             (or run it again for a new one)",
        )
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: Option<String>,
}

fn login(gate: &Gate, code: Option<&str>) -> Response {
    if !code.is_some_and(|c| gate.redeem(c)) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this one-time login code is unknown, expired or already used: \
             run `kubectl gitops-sessions ui` again for a new one",
        );
    }
    let mut resp = Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed in</title></head>\
         <body><p>Signed in. <a href=\"/\">Open the sessions page</a>.</p>\
         <script>location.replace(\"/\")</script></body></html>",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&gate.set_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /login?code=…`: the URL printed on the terminal.
pub async fn login_get(State(gate): State<Arc<Gate>>, Query(q): Query<CodeForm>) -> Response {
    login(&gate, q.code.as_deref())
}

/// `POST /login` (form field `code`): the launcher file.
pub async fn login_post(State(gate): State<Arc<Gate>>, Form(f): Form<CodeForm>) -> Response {
    login(&gate, f.code.as_deref())
}

/// The launcher file's directory, for tests.
#[cfg(test)]
fn launcher_dir(gate: &Gate) -> Option<PathBuf> {
    gate.launcher
        .lock()
        .ok()?
        .as_ref()
        .map(|d| d.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"0123abcd", b"0123abcd"));
        assert!(!ct_eq(b"0123abcd", b"0123abce"));
        assert!(!ct_eq(b"0123abcd", b"x123abcd"));
        assert!(!ct_eq(b"0123abcd", b"0123abc"));
        assert!(!ct_eq(b"", b"a"));
    }

    /// The comparison looks at every byte: a first-byte mismatch takes as
    /// long as a last-byte one (medians of many runs, within a wide margin).
    #[test]
    fn constant_time_equality_reads_every_byte() {
        let a = vec![b'a'; 1 << 16];
        let mut first = a.clone();
        first[0] = b'b';
        let mut last = a.clone();
        last[(1 << 16) - 1] = b'b';
        let time = |b: &[u8]| {
            let mut runs: Vec<Duration> = (0..41)
                .map(|_| {
                    let t = Instant::now();
                    assert!(!ct_eq(&a, std::hint::black_box(b)));
                    t.elapsed()
                })
                .collect();
            runs.sort();
            runs[20]
        };
        let (f, l) = (time(&first), time(&last));
        // An early-exit comparison is thousands of times faster on `first`.
        assert!(f * 4 > l, "first byte differs: {f:?}, last: {l:?}");
    }

    #[test]
    fn only_our_own_host_is_served() {
        assert!(host_allowed(Some("127.0.0.1:8123"), 8123));
        assert!(host_allowed(Some("localhost:8123"), 8123));
        assert!(host_allowed(Some("LocalHost:8123"), 8123));
        assert!(host_allowed(Some("127.0.0.1"), 80));
        for bad in [
            None,
            Some("evil.example:8123"),
            Some("127.0.0.1:8124"),
            Some("127.0.0.1"),
            Some("127.0.0.2:8123"),
            Some("localhost.evil.example:8123"),
            Some("evil.example:8123@127.0.0.1:8123"),
            Some("[::1]:8123"),
            Some("127.0.0.1:8123:8123"),
            Some(""),
        ] {
            assert!(!host_allowed(bad, 8123), "{bad:?}");
        }
    }

    #[test]
    fn only_our_own_origin_is_served_and_null_only_on_login() {
        assert!(origin_allowed(None, 8123, false));
        assert!(origin_allowed(Some("http://127.0.0.1:8123"), 8123, false));
        assert!(origin_allowed(Some("http://localhost:8123"), 8123, false));
        assert!(origin_allowed(Some("null"), 8123, true));
        assert!(!origin_allowed(Some("null"), 8123, false));
        for bad in [
            "http://evil.example:8123",
            "http://evil.example",
            "https://127.0.0.1:8123",
            "http://127.0.0.1:8124",
            "http://127.0.0.1:8123/x",
            "file://",
            "",
        ] {
            assert!(!origin_allowed(Some(bad), 8123, false), "{bad}");
            assert!(!origin_allowed(Some(bad), 8123, true), "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "d"), None);
    }

    #[tokio::test]
    async fn codes_work_once_and_the_launcher_dies_with_its_code() {
        let gate = Arc::new(Gate::new(8123).unwrap());
        let code = gate.mint(None).unwrap();
        assert!(!gate.redeem("nope"));
        assert!(gate.redeem(&code));
        assert!(!gate.redeem(&code), "a spent code");
        let expired = gate.mint(Some(Duration::ZERO)).unwrap();
        assert!(!gate.redeem(&expired));

        let path = gate.write_launcher().unwrap();
        let dir = launcher_dir(&gate).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        assert!(html.contains("action=\"http://127.0.0.1:8123/login\""));
        let code = html
            .split("name=\"code\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        assert_eq!(code.len(), 32);
        assert!(gate.redeem(&code));
        assert!(!path.exists() && !dir.exists(), "removed at first use");
        assert!(!gate.redeem(&code));
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let gate = Gate::new(8123).unwrap();
        let set = gate.set_cookie();
        assert!(set.starts_with("kubectl-gitops-ui-8123="));
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(set.split(';').next().unwrap()).unwrap(),
        );
        assert!(gate.authorised(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("kubectl-gitops-ui-8123=00"),
        );
        assert!(!gate.authorised(&h));
        assert!(!gate.authorised(&HeaderMap::new()));
    }
}
