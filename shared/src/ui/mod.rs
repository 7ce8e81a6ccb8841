//! `kubectl gitops-sessions ui`: a local web page of sessions and sandboxes.
//!
//! Served on 127.0.0.1 only, behind a random token in the URL; it uses the
//! user's own kube credentials, so it shows nothing `kubectl get` would not.
//! Server-rendered HTML with one small embedded script; the sessions table
//! is pushed to the page (Server-Sent Events) whenever the sessions' Leases
//! or Flux objects change, and on a short tick so heartbeats turn stale.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use serde::Deserialize;
use tokio::sync::watch;

use crate::flux::Kustomization;
use crate::labels;
use crate::sandbox;
use crate::session::SessionError;
use crate::session::admin;
use crate::session::view::{self, Filter, HEADERS, Heartbeat, SessionView, ago, row};

const APP_JS: &str = include_str!("app.js");

/// A random token (hex) from the operating system's generator.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(crate::artifact::hex(&bytes))
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

struct App {
    client: Client,
    token: String,
    rows: watch::Receiver<String>,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn authorised(app: &App, q: &TokenQuery) -> bool {
    q.token.as_deref() == Some(app.token.as_str())
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: open the URL that `kubectl gitops-sessions ui` printed\n",
    )
        .into_response()
}

fn status_class(s: &SessionView) -> &'static str {
    match s.status.state.as_str() {
        "Ready" => "ok",
        "Failed" => "bad",
        _ => "warn",
    }
}

/// The table body: one row per session, the CLI's columns.
pub fn render_rows(sessions: &[SessionView], token: &str) -> String {
    let now = Utc::now();
    if sessions.is_empty() {
        return format!(
            "<tr><td colspan=\"{}\">No sessions.</td></tr>",
            HEADERS.len()
        );
    }
    let mut out = String::new();
    for s in sessions {
        let cells = row(s, false, now);
        out.push_str(&format!(
            "<tr data-name=\"{}\" data-namespace=\"{}\" data-status=\"{}\" data-heartbeat=\"{}\">",
            esc(&s.name),
            esc(&s.namespace),
            esc(&s.status.state),
            s.heartbeat.as_str()
        ));
        for (i, cell) in cells.iter().enumerate() {
            let content = match i {
                0 => format!(
                    "<a href=\"/session/{}/{}?token={token}\">{}</a>",
                    esc(&s.namespace),
                    esc(&s.name),
                    esc(cell)
                ),
                6 => format!(
                    "<span class=\"status {}\">{}</span>",
                    status_class(s),
                    esc(cell)
                ),
                8 => format!(
                    "<span class=\"hb {}\">{}</span>",
                    s.heartbeat.as_str(),
                    esc(cell)
                ),
                _ => esc(cell),
            };
            out.push_str(&format!("<td>{content}</td>"));
        }
        out.push_str("</tr>");
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#111}\
nav a{margin-right:1rem}table{border-collapse:collapse;width:100%;margin-top:1rem}\
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;font-size:.9rem}\
caption{text-align:left;font-weight:600}.status.ok{color:#0a6b2d}.status.bad{color:#a40000;font-weight:600}\
.status.warn,.hb.stale{color:#8a5a00;font-weight:600}label{margin-right:1rem}\
button{padding:.3rem .8rem}.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}.msg{background:#eef;padding:.5rem}dt{font-weight:600}dd{margin:0 0 .4rem 0}";

fn page(title: &str, token: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · kubectl-gitops</title>\
         <style>{STYLE}</style></head><body data-token=\"{token}\">\
         <nav aria-label=\"Sections\"><a href=\"/?token={token}\">Sessions</a><a href=\"/sandboxes?token={token}\">Sandboxes</a></nav>\
         <h1>{t}</h1>{body}<script>{APP_JS}</script></body></html>",
        t = esc(title),
    ))
}

#[derive(Deserialize)]
struct IndexQuery {
    token: Option<String>,
    msg: Option<String>,
}

async fn index(State(app): State<Arc<App>>, Query(q): Query<IndexQuery>) -> Response {
    if !authorised(
        &app,
        &TokenQuery {
            token: q.token.clone(),
        },
    ) {
        return unauthorised();
    }
    let rows = app.rows.borrow().clone();
    let msg = q
        .msg
        .map(|m| format!("<p class=\"msg\" role=\"status\">{}</p>", esc(&m)))
        .unwrap_or_default();
    let headers: String = HEADERS
        .iter()
        .map(|h| format!("<th scope=\"col\">{}</th>", esc(h)))
        .collect();
    let body = format!(
        "{msg}<form role=\"search\" onsubmit=\"return false\">\
         <label>Namespace <select id=\"filter-namespace\"><option value=\"\">all namespaces</option></select></label>\
         <label>Status <select id=\"filter-status\"><option value=\"\">any</option><option>Ready</option>\
         <option>Reconciling</option><option>Failed</option><option>Pending</option></select></label>\
         <label>Search <input id=\"filter-text\" type=\"search\" placeholder=\"name, source, user…\"></label></form>\
         <p><span id=\"shown-count\">0</span> shown · <span id=\"live-status\" aria-live=\"polite\">connecting…</span></p>\
         <table><caption>GitOps Run sessions</caption><thead><tr>{headers}</tr></thead>\
         <tbody id=\"sessions-body\">{rows}</tbody></table>"
    );
    page("Sessions", &app.token, &body).into_response()
}

async fn events(State(app): State<Arc<App>>, Query(q): Query<TokenQuery>) -> Response {
    if !authorised(&app, &q) {
        return unauthorised();
    }
    let rx = app.rows.clone();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let html = rx.borrow_and_update().clone();
        Some((
            Ok::<_, Infallible>(SseEvent::default().data(html)),
            (rx, false),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A page saying what went wrong talking to the API server (or that the
/// session does not exist), with the right status code.
fn error_page(token: &str, e: &SessionError) -> Response {
    let status = match e {
        SessionError::NotFound(_) => StatusCode::NOT_FOUND,
        SessionError::InvalidName(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Error"
    };
    (
        status,
        page(
            title,
            token,
            &format!(
                "<p role=\"alert\">{}</p>",
                esc(&crate::output::error_chain(e))
            ),
        ),
    )
        .into_response()
}

async fn session_page(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorised(&app, &q) {
        return unauthorised();
    }
    let s = match admin::find(&app.client, Some(&ns), &name).await {
        Ok(s) => s,
        Err(e) => return error_page(&app.token, &e),
    };
    let d = match admin::describe(&app.client, &s).await {
        Ok(d) => d,
        Err(e) => return error_page(&app.token, &e),
    };
    let now = Utc::now();
    let t = &app.token;
    let field = |k: &str, v: &str| {
        format!(
            "<dt>{}</dt><dd>{}</dd>",
            esc(k),
            esc(if v.is_empty() { "-" } else { v })
        )
    };
    let mut body = String::from("<dl>");
    body += &field("Namespace", &s.namespace);
    body += &field("Mode", &s.mode);
    body += &field("Sandbox", s.sandbox.as_deref().unwrap_or("-"));
    body += &field("Source", &s.source);
    body += &field("Status", &s.status.summary());
    body += &field("Message", &s.status.message);
    body += &field("Revision", &s.revision);
    body += &field(
        "Heartbeat",
        &format!(
            "{} (last {} ago)",
            s.heartbeat.as_str(),
            ago(s.heartbeat_at, now)
        ),
    );
    body += &field("User", &format!("{}@{} (pid {})", s.user, s.host, s.pid));
    body += &field("Port-forwards", &s.port_forwards.join(" "));
    body += &field("Started", &format!("{} ago", ago(s.started, now)));
    body += "</dl>";

    // Revision history: what source-controller stored, newest first.
    body += "<h2>Revision history</h2><ol>";
    for revision in d.revisions() {
        body += &format!("<li>{}</li>", esc(&revision));
    }
    body += "</ol><h2>Applied inventory</h2><table><caption>Objects applied by the session</caption>\
             <thead><tr><th scope=\"col\">Object</th><th scope=\"col\">Status</th></tr></thead><tbody>";
    for o in &s.inventory {
        body += &format!("<tr><td>{}</td><td>applied</td></tr>", esc(o));
    }
    if s.inventory.is_empty() {
        body += "<tr><td colspan=\"2\">Nothing applied.</td></tr>";
    }
    body += "</tbody></table><h2>Flux conditions</h2><table><caption>Conditions of the session's Flux objects</caption>\
             <thead><tr><th scope=\"col\">Object</th><th scope=\"col\">Type</th><th scope=\"col\">Status</th>\
             <th scope=\"col\">Reason</th><th scope=\"col\">Message</th></tr></thead><tbody>";
    for (kind, c) in &d.conditions {
        body += &format!(
            "<tr><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.type_),
            esc(&c.status),
            esc(&c.reason),
            esc(&c.message)
        );
    }
    body += "</tbody></table><h2>Recent events</h2><ul>";
    for e in d.events.iter().rev().take(15) {
        body += &format!(
            "<li>{} {}: {}</li>",
            esc(&e.kind),
            esc(&e.reason),
            esc(&e.message)
        );
    }
    body += "</ul>";
    if s.heartbeat != Heartbeat::Live {
        body += &format!(
            "<form method=\"post\" action=\"/session/{}/{}/delete?token={t}\" \
             onsubmit=\"return confirm('Delete session {} and everything it created?')\">\
             <button type=\"submit\" id=\"delete-session\">Delete this {} session</button></form>",
            esc(&ns),
            esc(&name),
            esc(&name),
            s.heartbeat.as_str()
        );
    } else {
        body += "<p>This session is running; stop it where it runs (Ctrl+C) to remove it.</p>";
    }
    page(&format!("Session {name}"), t, &body).into_response()
}

fn back(token: &str, path: &str, msg: &str) -> Response {
    let msg: String = msg
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Redirect::to(&format!("{path}?token={token}&msg={msg}")).into_response()
}

async fn delete_session(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorised(&app, &q) {
        return unauthorised();
    }
    let s = match admin::find(&app.client, Some(&ns), &name).await {
        Ok(s) => s,
        Err(SessionError::NotFound(_)) => {
            return back(&app.token, "/", &format!("session {name} no longer exists"));
        }
        Err(e) => return error_page(&app.token, &e),
    };
    match admin::delete(&app.client, &s, false, Duration::from_secs(120)).await {
        Ok(removed) => back(
            &app.token,
            "/",
            &format!("session {name} deleted ({} objects removed)", removed.len()),
        ),
        Err(e @ SessionError::Live { .. }) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => back(
            &app.token,
            "/",
            &format!(
                "deleting session {name} failed: {}",
                crate::output::error_chain(&e)
            ),
        ),
    }
}

async fn sandboxes(State(app): State<Arc<App>>, Query(q): Query<IndexQuery>) -> Response {
    if !authorised(
        &app,
        &TokenQuery {
            token: q.token.clone(),
        },
    ) {
        return unauthorised();
    }
    let t = &app.token;
    let now = Utc::now();
    let msg = q
        .msg
        .map(|m| format!("<p class=\"msg\" role=\"status\">{}</p>", esc(&m)))
        .unwrap_or_default();
    let mut body = format!(
        "{msg}<table><caption>Sandboxes</caption><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Isolation</th>\
         <th scope=\"col\">Age</th><th scope=\"col\">Expires</th><th scope=\"col\">Ready</th><th scope=\"col\">Sessions</th>\
         <th scope=\"col\">Owner</th><th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead><tbody>"
    );
    match sandbox::list(&app.client, None).await {
        Ok(list) => {
            for s in list {
                let expires = match s.expires {
                    None => "never".to_string(),
                    Some(e) if e <= now => "expired".to_string(),
                    Some(e) => format!(
                        "in {}",
                        crate::duration::human((e - now).to_std().unwrap_or_default())
                    ),
                };
                body += &format!(
                    "<tr><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
                     <form method=\"post\" action=\"/sandboxes/{n}/delete?token={t}\" \
                     onsubmit=\"return confirm('Delete sandbox {n} and everything in it?')\">\
                     <button type=\"submit\">Delete <span class=\"visually-hidden\">{n}</span></button></form></td></tr>",
                    s.isolation.as_str(),
                    ago(s.created, now),
                    esc(&expires),
                    if s.terminating {
                        "Terminating"
                    } else if s.ready {
                        "True"
                    } else {
                        "False"
                    },
                    s.sessions,
                    esc(s.owner.as_deref().unwrap_or("-")),
                    n = esc(&s.name),
                );
            }
        }
        Err(e) => {
            body += &format!(
                "<tr><td colspan=\"8\">cannot list sandboxes: {}</td></tr>",
                esc(&e.to_string())
            )
        }
    }
    body += "</tbody></table>";
    page("Sandboxes", t, &body).into_response()
}

async fn delete_sandbox(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    if !authorised(&app, &q) {
        return unauthorised();
    }
    let msg = match sandbox::delete(&app.client, &name, &sandbox::DeleteOptions::default()).await {
        Ok(sandbox::Deleted::Removed(_)) => format!("sandbox {name} deleted"),
        Ok(sandbox::Deleted::NotFound) => format!("sandbox {name} no longer exists"),
        Err(e) => format!(
            "deleting sandbox {name} failed: {}",
            crate::output::error_chain(&e)
        ),
    };
    back(&app.token, "/sandboxes", &msg)
}

/// The sessions table body, or a row saying why the sessions cannot be listed.
async fn rows_html(client: &Client, token: &str) -> String {
    match view::list(client, &Filter::default()).await {
        Ok(sessions) => render_rows(&sessions, token),
        Err(e) => format!(
            "<tr><td colspan=\"{}\" role=\"alert\">cannot list sessions: {}</td></tr>",
            HEADERS.len(),
            esc(&e.to_string())
        ),
    }
}

/// Keeps the rendered rows current: on every change of the sessions'
/// Leases, Kustomizations or HelmReleases, and every `tick` (heartbeats
/// turn stale without any change to watch).
async fn refresh(client: Client, token: String, tx: watch::Sender<String>, tick: Duration) {
    let selector = labels::component_selector("session");
    let config = watcher::Config::default().labels(&selector);
    let leases = watcher(Api::<Lease>::all(client.clone()), config.clone())
        .map(|_| ())
        .boxed();
    let kss = watcher(Api::<Kustomization>::all(client.clone()), config.clone())
        .map(|_| ())
        .boxed();
    let mut changes = futures::stream::select(leases, kss);
    let mut ticker = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = changes.next() => {}
            _ = ticker.tick() => {}
        }
        let html = rows_html(&client, &token).await;
        tx.send_if_modified(|old| {
            if *old == html {
                false
            } else {
                *old = html;
                true
            }
        });
    }
}

/// Serves the page on 127.0.0.1:`port` (0: any free port) until the future
/// is dropped. Calls `ready` with the URL (token included) once listening.
pub async fn serve(client: Client, port: u16, ready: impl FnOnce(String)) -> std::io::Result<()> {
    let token = new_token()?;
    let (tx, rx) = watch::channel(String::new());
    let initial = rows_html(&client, &token).await;
    let _ = tx.send(initial);
    tokio::spawn(refresh(
        client.clone(),
        token.clone(),
        tx,
        Duration::from_secs(2),
    ));
    let app = Arc::new(App {
        client,
        token: token.clone(),
        rows: rx,
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/session/{ns}/{name}", get(session_page))
        .route("/session/{ns}/{name}/delete", post(delete_session))
        .route("/sandboxes", get(sandboxes))
        .route("/sandboxes/{name}/delete", post(delete_sandbox))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    ready(format!("http://{addr}/?token={token}"));
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
