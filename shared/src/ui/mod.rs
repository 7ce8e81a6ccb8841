//! `kubectl gitops-sessions ui`: a local web page of sessions and sandboxes.
//!
//! Served on 127.0.0.1 only, to the user's own browser ([`auth`]: a secret
//! in an HttpOnly cookie got with a one-time code, never in a URL; our own
//! Host and Origin only); it uses the user's own kube credentials, so it
//! shows nothing `kubectl get` would not.
//! Server-rendered HTML ([`render`]), one hand-written stylesheet and one
//! small embedded script: no front-end build. Everything shown comes from
//! watches (kube reflectors), never from polling lists: the sessions and
//! sandboxes tables and the cluster mode from one set of cluster-wide
//! watches ([`hub`]), a session's page from watches of its own objects
//! opened for as long as the page is open; each change re-renders the
//! sections it touches, which are pushed to the page (Server-Sent Events).
//! Heartbeats turn stale without any change to watch: the state is
//! re-rendered on a one-second tick from what the watches hold.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::workloads::{DaemonSet, Deployment, Pod, StatefulSet};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Namespace, ResourceQuota};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::flux::{self, HelmRelease, Kustomization, OCIRepository};
use crate::labels;
use crate::sandbox;
use crate::session::readers::admin;
use crate::session::readers::logs;
use crate::session::readers::status;
use crate::session::readers::view::{self, Heartbeat};
use crate::session::record::Record;
use crate::session::{ReaderError, RecordError};

pub mod auth;
pub mod bounded;
pub mod open;
#[cfg(test)]
mod query_props;
pub mod render;

const APP_JS: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Rendered sections of the pages, by element id.
pub(crate) type Sections = BTreeMap<String, String>;

struct App {
    client: Client,
    /// The hub's sections: sessions table, counters, cluster mode, sandboxes.
    sections: watch::Receiver<Sections>,
    /// Whether the API server serves HelmReleases (looked up once).
    helm: bool,
}

/// Which tab of the navigation is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Sessions,
    Sandboxes,
    None,
}

fn page(app: &App, title: &str, tab: Tab, body: &str) -> Html<String> {
    let mode = app
        .sections
        .borrow()
        .get("cluster-mode")
        .cloned()
        .unwrap_or_default();
    Html(page_html(title, tab, &mode, body))
}

/// A whole page: header (navigation, cluster mode, connection), the body, the script.
pub(crate) fn page_html(title: &str, tab: Tab, mode: &str, body: &str) -> String {
    let current = |t: Tab| {
        if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        }
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{t} · kubectl-gitops</title><style>{STYLE}</style></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/\"><span class=\"logo\" aria-hidden=\"true\">◆</span> kubectl-gitops</a>\
         <nav aria-label=\"Sections\"><a href=\"/\"{}>Sessions</a><a href=\"/sandboxes\"{}>Sandboxes</a></nav>\
         <div id=\"cluster-mode\" class=\"mode\" aria-live=\"polite\">{mode}</div>\
         <span id=\"live-status\" class=\"conn\">connecting…</span></header>\
         <main id=\"main\" tabindex=\"-1\"><h1>{t}</h1>{body}</main><script>{APP_JS}</script></body></html>",
        current(Tab::Sessions),
        current(Tab::Sandboxes),
        t = esc(title),
    )
}

#[derive(Deserialize)]
struct IndexQuery {
    msg: Option<String>,
}

fn message(msg: Option<String>) -> String {
    msg.map(|m| format!("<p class=\"msg banner\" role=\"status\">{}</p>", esc(&m)))
        .unwrap_or_default()
}

async fn index(State(app): State<Arc<App>>, Query(q): Query<IndexQuery>) -> Response {
    let (rows, counts, takeovers) = {
        let s = app.sections.borrow();
        (
            s.get("sessions-body").cloned().unwrap_or_default(),
            s.get("session-counts").cloned().unwrap_or_default(),
            s.get("takeovers").cloned().unwrap_or_default(),
        )
    };
    let body = index_body(&message(q.msg), &counts, &rows, &takeovers);
    page(&app, "Sessions", Tab::Sessions, &body).into_response()
}

/// The sessions list: counters, filters, the table.
pub(crate) fn index_body(msg: &str, counts: &str, rows: &str, takeovers: &str) -> String {
    let headers: String = render::COLUMNS
        .iter()
        .map(|h| format!("<th scope=\"col\">{h}</th>"))
        .collect();
    format!(
        "{msg}<div id=\"session-counts\" class=\"tiles\" aria-label=\"Session counts\">{counts}</div>\
         <div id=\"takeovers\">{takeovers}</div>\
         <form class=\"filters\" role=\"search\" aria-label=\"Filter sessions\" onsubmit=\"return false\">\
         <label>Namespace <select id=\"filter-namespace\"><option value=\"\">all namespaces</option></select></label>\
         <label>Status <select id=\"filter-status\"><option value=\"\">any</option><option>Ready</option>\
         <option>Reconciling</option><option>Failed</option><option>Pending</option></select></label>\
         <label>Heartbeat <select id=\"filter-heartbeat\"><option value=\"\">any</option><option>live</option><option>stale</option><option>kept</option></select></label>\
         <label class=\"grow\">Search <input id=\"filter-text\" type=\"search\" placeholder=\"name, source, user… (press /)\" autocomplete=\"off\"></label></form>\
         <p class=\"muted small\"><span id=\"shown-count\">0</span> shown</p>\
         <div class=\"table-wrap\"><table class=\"sessions cards\"><caption class=\"visually-hidden\">GitOps Run sessions</caption><thead><tr>{headers}</tr></thead>\
         <tbody id=\"sessions-body\">{rows}</tbody></table></div>",
    )
}

/// The SSE frame of one section.
fn section_event(id: &str, html: &str) -> SseEvent {
    let data = serde_json::json!({ "id": id, "html": html }).to_string();
    SseEvent::default().event("section").data(data)
}

/// The hub's sections as they change (each client gets those that differ
/// from what it has).
async fn events(State(app): State<Arc<App>>) -> Response {
    let rx = app.sections.clone();
    let stream = futures::stream::unfold(
        (rx, Sections::new(), true),
        |(mut rx, mut sent, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let now = rx.borrow_and_update().clone();
            let frames: Vec<Result<SseEvent, Infallible>> = now
                .iter()
                .filter(|(id, html)| sent.get(*id) != Some(*html))
                .map(|(id, html)| Ok(section_event(id, html)))
                .collect();
            sent = now;
            Some((futures::stream::iter(frames), (rx, sent, false)))
        },
    )
    .flatten();
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A page saying what went wrong talking to the API server (or that the
/// session does not exist), with the right status code.
fn error_page(app: &App, e: &ReaderError) -> Response {
    let status = match e {
        ReaderError::NotFound(_) => StatusCode::NOT_FOUND,
        ReaderError::Record(RecordError::InvalidName(_)) => StatusCode::BAD_REQUEST,
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
            app,
            title,
            Tab::None,
            &format!(
                "<p class=\"banner bad\" role=\"alert\">{}</p>",
                esc(&crate::output::error_chain(e))
            ),
        ),
    )
        .into_response()
}

async fn session_page(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let s = match admin::find(&app.client, Some(&ns), &name).await {
        Ok(s) => s,
        Err(e) => return error_page(&app, &e),
    };
    let body = session_body(&s, &Sections::new());
    page(&app, &name, Tab::None, &body).into_response()
}

/// A session's page: head, tabs (overview sections, logs); `sections`
/// fills sections already rendered (the rest say Loading… until pushed).
pub(crate) fn session_body(s: &view::SessionView, sections: &Sections) -> String {
    let section = |id: &str, title: &str, extra: &str| {
        let content = sections
            .get(id)
            .map_or("<p class=\"muted\">Loading…</p>", String::as_str);
        format!(
            "<section class=\"card\" aria-labelledby=\"h-{id}\"><h2 id=\"h-{id}\">{title}</h2>{extra}<div id=\"{id}\" aria-live=\"off\">{content}</div></section>"
        )
    };
    let body = format!(
        "<div id=\"session-head\" class=\"session-head\">{head}</div>\
         <div class=\"tabs\" role=\"tablist\" aria-label=\"Session views\">\
         <button role=\"tab\" id=\"tab-overview\" aria-controls=\"panel-overview\" aria-selected=\"true\">Overview</button>\
         <button role=\"tab\" id=\"tab-logs\" aria-controls=\"panel-logs\" aria-selected=\"false\" tabindex=\"-1\">Logs</button></div>\
         <div id=\"panel-overview\" role=\"tabpanel\" aria-labelledby=\"tab-overview\" tabindex=\"0\">\
         <div class=\"grid\">{summary}{history}</div><div class=\"grid wide-left\">{objects}{events}</div>{conditions}\
         <div id=\"watch-errors\"></div><div id=\"actions\" class=\"actions\">{actions}</div></div>\
         <div id=\"panel-logs\" role=\"tabpanel\" aria-labelledby=\"tab-logs\" tabindex=\"0\" hidden>\
         <section class=\"card logs\" aria-labelledby=\"h-logs\"><h2 id=\"h-logs\">Pod logs</h2>\
         <form class=\"filters\" onsubmit=\"return false\" aria-label=\"Filter logs\">\
         <label>Pod <select id=\"log-pod\"><option value=\"\">all pods</option></select></label>\
         <label>Container <select id=\"log-container\"><option value=\"\">all containers</option></select></label>\
         <label class=\"grow\">Filter <input id=\"log-filter\" type=\"search\" placeholder=\"text in the line\" autocomplete=\"off\"></label>\
         <label class=\"check\"><input id=\"log-follow\" type=\"checkbox\" checked> Follow</label>\
         <label class=\"check\"><input id=\"log-wrap\" type=\"checkbox\"> Wrap</label>\
         <button type=\"button\" id=\"log-clear\">Clear</button></form>\
         <p id=\"log-status\" class=\"muted small\" role=\"status\">not connected</p>\
         <div id=\"log-lines\" class=\"log\" role=\"log\" aria-label=\"Log lines\" tabindex=\"0\"></div></section></div>",
        head = render::session_head(Some(s), None),
        summary = section("summary", "Session", ""),
        history = section("history", "Sync history", ""),
        objects = section("objects", "Applied objects", ""),
        conditions = section("conditions", "Flux conditions", ""),
        events = section("events", "Recent events", ""),
        actions = render::session_actions(Some(s)),
    );
    format!(
        "<div id=\"session-page\" data-namespace=\"{}\" data-name=\"{}\">{body}</div>",
        esc(&s.namespace),
        esc(&s.name)
    )
}

type Change = (&'static str, Result<bool, String>);

/// A watch feeding a reflector store; yields (name, Ok(initial list done)) or the error.
fn watch_into<K>(
    name: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> BoxStream<'static, Change>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .map(move |r| {
            (
                name,
                r.map(|e| matches!(e, watcher::Event::InitDone))
                    .map_err(|e| e.to_string()),
            )
        })
        .boxed()
}

/// A reflector store fed by a watch.
fn store<K>(
    name: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    streams: &mut Vec<BoxStream<'static, Change>>,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    streams.push(watch_into(name, api, cfg, writer));
    reader
}

/// Which watches have listed once, and which fail now.
#[derive(Default)]
struct WatchState {
    names: BTreeSet<&'static str>,
    ready: BTreeSet<&'static str>,
    errors: BTreeMap<&'static str, String>,
}

impl WatchState {
    fn apply(&mut self, (name, r): Change) {
        self.names.insert(name);
        match r {
            Ok(init_done) => {
                self.errors.remove(name);
                if init_done {
                    self.ready.insert(name);
                }
            }
            Err(e) => {
                self.errors.insert(name, e);
            }
        }
    }

    fn all_ready(&self, expected: usize) -> bool {
        self.ready.len() >= expected
    }

    fn alert(&self) -> String {
        self.errors
            .iter()
            .map(|(name, e)| {
                format!(
                    "<p class=\"banner bad\" role=\"alert\">cannot watch {}: {} (retrying)</p>",
                    esc(name),
                    esc(e)
                )
            })
            .collect()
    }
}

fn items<K>(s: &Store<K>) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    s.state().iter().map(|o| (**o).clone()).collect()
}

fn is_session(labels: &BTreeMap<String, String>) -> bool {
    labels::is_managed(Some(labels))
        && labels.get(labels::COMPONENT).map(String::as_str) == Some("session")
}

/// How often the pages' state is looked at again (changes are batched
/// within it; heartbeats turn stale on it).
const TICK: Duration = Duration::from_millis(250);
/// Without a change, the state is re-rendered this often (heartbeats).
const IDLE_RENDER: Duration = Duration::from_secs(1);

/// The cluster-wide watches behind the sessions and sandboxes tables and
/// the cluster mode: sessions' Leases and OCIRepositories, every
/// Kustomization and HelmRelease (sessions', and Flux's own for the mode),
/// sandbox namespaces and their ResourceQuotas.
async fn hub(client: Client, helm: bool, tx: watch::Sender<Sections>) {
    let sessions = watcher::Config::default().labels(&labels::component_selector("session"));
    let sandboxes = watcher::Config::default().labels(&labels::component_selector("sandbox"));
    let mut streams = Vec::new();
    let leases = store(
        "Leases",
        Api::<Lease>::all(client.clone()),
        sessions.clone(),
        &mut streams,
    );
    let repos = store(
        "OCIRepositories",
        Api::<OCIRepository>::all(client.clone()),
        sessions,
        &mut streams,
    );
    let kss = store(
        "Kustomizations",
        Api::<Kustomization>::all(client.clone()),
        watcher::Config::default(),
        &mut streams,
    );
    let hrs = helm.then(|| {
        store(
            "HelmReleases",
            Api::<HelmRelease>::all(client.clone()),
            watcher::Config::default(),
            &mut streams,
        )
    });
    let namespaces = store(
        "sandbox Namespaces",
        Api::<Namespace>::all(client.clone()),
        sandboxes.clone(),
        &mut streams,
    );
    let quotas = store(
        "sandbox ResourceQuotas",
        Api::<ResourceQuota>::all(client.clone()),
        sandboxes,
        &mut streams,
    );
    let expected = streams.len();
    let mut changes = futures::stream::select_all(streams);
    let mut state = WatchState::default();
    let mut ticker = tokio::time::interval(TICK);
    let started = tokio::time::Instant::now();
    let mut dirty = true;
    let mut last_render = started;
    loop {
        tokio::select! {
            c = changes.next() => match c {
                Some(c) => { state.apply(c); dirty = true; }
                None => return,
            },
            _ = ticker.tick() => {
                let waited = started.elapsed() > Duration::from_secs(10);
                if !(state.all_ready(expected) || waited) {
                    continue;
                }
                if !dirty && last_render.elapsed() < IDLE_RENDER {
                    continue;
                }
                dirty = false;
                last_render = tokio::time::Instant::now();
                let sections = hub_sections(
                    &items(&leases),
                    &items(&kss),
                    &items(&repos),
                    &hrs.as_ref().map(items).unwrap_or_default(),
                    &items(&namespaces),
                    &items(&quotas),
                    &state,
                );
                tx.send_if_modified(|old| {
                    let changed = *old != sections;
                    if changed {
                        *old = sections;
                    }
                    changed
                });
            }
        }
    }
}

/// Renders what the hub's watches hold (pure).
#[allow(clippy::too_many_arguments)]
fn hub_sections(
    leases: &[Lease],
    kss: &[Kustomization],
    repos: &[OCIRepository],
    hrs: &[HelmRelease],
    namespaces: &[Namespace],
    quotas: &[ResourceQuota],
    state: &WatchState,
) -> Sections {
    let now = Utc::now();
    let session_kss: Vec<Kustomization> = kss
        .iter()
        .filter(|k| is_session(k.labels()))
        .cloned()
        .collect();
    let (session_hrs, other_hrs): (Vec<HelmRelease>, Vec<HelmRelease>) =
        hrs.iter().cloned().partition(|h| is_session(h.labels()));
    let views = view::build_views(leases, &session_kss, repos, &session_hrs, now);
    let releases: Vec<(String, String, String)> = other_hrs
        .iter()
        .map(|h| {
            let ns = h.namespace().unwrap_or_default();
            let target = h
                .spec
                .target_namespace
                .clone()
                .unwrap_or_else(|| ns.clone());
            (ns, h.name_any(), target)
        })
        .collect();
    let gitops = status::gitops_namespaces(kss, &releases);
    let live = views
        .iter()
        .filter(|v| v.heartbeat == Heartbeat::Live)
        .count();
    let mode = status::mode_of(live, gitops.len());

    let mut sections = Sections::new();
    sections.insert(
        "cluster-mode".into(),
        render::cluster_mode(mode, live, gitops.len()),
    );
    let alert = state.alert();
    let mut rows = render::session_rows(&views);
    if !alert.is_empty() {
        rows = format!(
            "<tr class=\"empty\"><td colspan=\"{}\">{alert}</td></tr>{rows}",
            render::COLUMNS.len()
        );
    }
    sections.insert("sessions-body".into(), rows);
    sections.insert("session-counts".into(), render::session_counts(&views));
    let live_sessions: std::collections::BTreeSet<String> = views
        .iter()
        .filter(|v| v.heartbeat == Heartbeat::Live)
        .map(|v| format!("{}/{}", v.namespace, v.name))
        .collect();
    sections.insert(
        "takeovers".into(),
        render::takeovers(&status::app_modes(
            kss,
            &other_hrs
                .iter()
                .map(|h| (h.metadata.clone(), h.spec.suspend == Some(true)))
                .collect::<Vec<_>>(),
            &live_sessions,
        )),
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in leases {
        if let Some(sb) = l.labels().get(labels::SANDBOX) {
            *counts.entry(sb.clone()).or_insert(0) += 1;
        }
    }
    let mut sbs: Vec<sandbox::Sandbox> = namespaces
        .iter()
        .filter_map(|ns| {
            sandbox::from_namespace(ns, counts.get(&ns.name_any()).copied().unwrap_or(0))
        })
        .collect();
    sbs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut by_ns: BTreeMap<String, Vec<&ResourceQuota>> = BTreeMap::new();
    for q in quotas {
        by_ns
            .entry(q.namespace().unwrap_or_default())
            .or_default()
            .push(q);
    }
    sections.insert(
        "sandboxes-body".into(),
        format!(
            "{}{}",
            if alert.is_empty() {
                String::new()
            } else {
                format!("<tr class=\"empty\"><td colspan=\"9\">{alert}</td></tr>")
            },
            render::sandbox_rows(&sbs, &by_ns, now)
        ),
    );
    sections
}

/// The objects the session page watches; what one render reads.
struct SessionStores {
    leases: Store<Lease>,
    kss: Store<Kustomization>,
    repos: Store<OCIRepository>,
    hrs: Option<Store<HelmRelease>>,
    events: Vec<Store<KubeEvent>>,
    workloads: Option<WorkloadStores>,
}

/// The watched workloads of a session: Deployments, StatefulSets, DaemonSets, Pods.
type WorkloadStores = (
    Store<Deployment>,
    Store<StatefulSet>,
    Store<DaemonSet>,
    Store<Pod>,
);

/// Renders a session's page sections from what its watches hold.
fn session_sections(st: &SessionStores, name: &str, state: &WatchState) -> Sections {
    let now = Utc::now();
    let leases = items(&st.leases);
    let views = view::build_views(
        &leases,
        &items(&st.kss),
        &items(&st.repos),
        &st.hrs.as_ref().map(items).unwrap_or_default(),
        now,
    );
    let s = views.iter().find(|v| v.name == name);
    let history = leases
        .iter()
        .find(|l| l.name_any() == name)
        .map(|l| Record::of(l).history)
        .unwrap_or_default();
    let mut out = Sections::new();
    out.insert(
        "session-head".into(),
        render::session_head(s, history.last()),
    );
    out.insert("actions".into(), render::session_actions(s));
    out.insert("watch-errors".into(), state.alert());
    let Some(s) = s else {
        return out;
    };
    out.insert("summary".into(), render::session_summary(s));
    out.insert(
        "history".into(),
        render::sync_history(&history, s.last_sync),
    );
    let mut conditions: Vec<(&str, flux::Condition)> = Vec::new();
    for k in items(&st.kss) {
        conditions.extend(
            k.status
                .map(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| ("Kustomization", c)),
        );
    }
    for h in st.hrs.as_ref().map(items).unwrap_or_default() {
        conditions.extend(
            h.status
                .map(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| ("HelmRelease", c)),
        );
    }
    for r in items(&st.repos) {
        conditions.extend(
            r.status
                .map(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| ("OCIRepository", c)),
        );
    }
    out.insert("conditions".into(), render::conditions(&conditions));
    let workloads = st
        .workloads
        .as_ref()
        .map(|(d, ss, ds, p)| render::Workloads {
            deployments: items(d),
            statefulsets: items(ss),
            daemonsets: items(ds),
            pods: items(p),
        });
    let tree = render::object_tree(&s.inventory, workloads.as_ref());
    out.insert(
        "objects".into(),
        render::objects(&tree, st.workloads.is_none()),
    );
    let names: BTreeSet<String> = tree
        .iter()
        .flat_map(|(_, nodes)| nodes.iter().map(|n| n.name.clone()))
        .collect();
    let events: Vec<KubeEvent> = st.events.iter().flat_map(items).collect();
    out.insert(
        "events".into(),
        render::events(&render::event_rows(&events, name, &names, 25)),
    );
    out
}

/// Where the session's workloads run: `(namespace, every pod there is the
/// session's)`, `None` in another cluster.
async fn workload_namespace(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<(String, bool)>, ReaderError> {
    let s = admin::find(client, Some(ns), name).await?;
    admin::workloads(client, &s).await
}

/// A session's page sections as its objects change.
async fn session_events(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let workloads = match workload_namespace(&app.client, &ns, &name).await {
        Ok(w) => w,
        Err(e) => return error_page(&app, &e),
    };
    let (tx, rx) = mpsc::channel::<(String, String)>(64);
    tokio::spawn(session_feed(app.clone(), ns, name, workloads, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let (id, html) = rx.recv().await?;
        Some((Ok::<_, Infallible>(section_event(&id, &html)), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Watches one session's objects while its page is open (until `tx` closes).
async fn session_feed(
    app: Arc<App>,
    ns: String,
    name: String,
    workloads: Option<(String, bool)>,
    tx: mpsc::Sender<(String, String)>,
) {
    let client = &app.client;
    let one = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut streams = Vec::new();
    let leases = store(
        "the Lease",
        Api::namespaced(client.clone(), &ns),
        one.clone(),
        &mut streams,
    );
    let kss = store(
        "the Kustomization",
        Api::namespaced(client.clone(), &ns),
        one.clone(),
        &mut streams,
    );
    let repos = store(
        "the OCIRepository",
        Api::namespaced(client.clone(), &ns),
        one.clone(),
        &mut streams,
    );
    let hrs = app.helm.then(|| {
        store(
            "the HelmRelease",
            Api::namespaced(client.clone(), &ns),
            one.clone(),
            &mut streams,
        )
    });
    let mut events = Vec::new();
    let workloads = workloads.map(|(wns, all)| {
        let cfg = if all {
            watcher::Config::default()
        } else {
            watcher::Config::default().labels(&logs::applied_selector(&name, &ns))
        };
        events.push(store(
            "events",
            Api::namespaced(client.clone(), &wns),
            watcher::Config::default(),
            &mut streams,
        ));
        if wns != ns {
            events.push(store(
                "the session's events",
                Api::namespaced(client.clone(), &ns),
                watcher::Config::default().fields(&format!("involvedObject.name={name}")),
                &mut streams,
            ));
        }
        (
            store(
                "Deployments",
                Api::namespaced(client.clone(), &wns),
                cfg.clone(),
                &mut streams,
            ),
            store(
                "StatefulSets",
                Api::namespaced(client.clone(), &wns),
                cfg.clone(),
                &mut streams,
            ),
            store(
                "DaemonSets",
                Api::namespaced(client.clone(), &wns),
                cfg,
                &mut streams,
            ),
            store(
                "Pods",
                Api::namespaced(client.clone(), &wns),
                watcher::Config::default(),
                &mut streams,
            ),
        )
    });
    if workloads.is_none() {
        events.push(store(
            "the session's events",
            Api::namespaced(client.clone(), &ns),
            watcher::Config::default().fields(&format!("involvedObject.name={name}")),
            &mut streams,
        ));
    }
    let st = SessionStores {
        leases,
        kss,
        repos,
        hrs,
        events,
        workloads,
    };
    let expected = streams.len();
    let mut changes = futures::stream::select_all(streams);
    let mut state = WatchState::default();
    let mut mode = app.sections.clone();
    let mut sent = Sections::new();
    let mut ticker = tokio::time::interval(TICK);
    let started = tokio::time::Instant::now();
    let (mut dirty, mut last_render) = (true, started);
    loop {
        tokio::select! {
            c = changes.next() => match c {
                Some(c) => { state.apply(c); dirty = true; }
                None => return,
            },
            r = mode.changed() => {
                if r.is_err() {
                    return;
                }
                let html = mode.borrow_and_update().get("cluster-mode").cloned().unwrap_or_default();
                if tx.send(("cluster-mode".into(), html)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = ticker.tick() => {
                let waited = started.elapsed() > Duration::from_secs(10);
                if !(state.all_ready(expected) || waited)
                    || (!dirty && last_render.elapsed() < IDLE_RENDER)
                {
                    continue;
                }
                dirty = false;
                last_render = tokio::time::Instant::now();
                for (id, html) in session_sections(&st, &name, &state) {
                    if sent.get(&id) == Some(&html) {
                        continue;
                    }
                    if tx.send((id.clone(), html.clone())).await.is_err() {
                        return;
                    }
                    sent.insert(id, html);
                }
            }
        }
    }
}

/// The session's pod logs, streamed (one SSE message per line, JSON
/// `{pod, container, line}`), new pods of later rollouts included.
async fn session_logs(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let info = |text: String| SseEvent::default().event("info").data(text);
    let (first, rx) = match workload_namespace(&app.client, &ns, &name).await {
        Err(e) => (
            info(format!("cannot follow the logs: {}", crate::output::error_chain(&e))),
            None,
        ),
        Ok(None) => (
            info("the session applies into another cluster: its pods' logs are not visible from here".into()),
            None,
        ),
        Ok(Some((wns, all))) => {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(logs::follow(
                app.client.clone(),
                wns.clone(),
                name.clone(),
                ns.clone(),
                all,
                tx,
            ));
            // What waits for a slow page is bounded: beyond it lines are
            // dropped, and the page is told how many.
            let (btx, brx) = mpsc::channel(bounded::LOG_LINES);
            tokio::spawn(bounded::forward(rx, btx));
            (info(format!("following the logs of the session's pods in namespace {wns}")), Some(brx))
        }
    };
    let lines = futures::stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        let event = match rx.recv().await? {
            bounded::Forwarded::Item(line) => {
                SseEvent::default().data(serde_json::to_string(&line).unwrap_or_default())
            }
            bounded::Forwarded::Dropped(n) => {
                SseEvent::default().event("dropped").data(n.to_string())
            }
        };
        Some((event, Some(rx)))
    });
    let stream = futures::stream::once(async move { first })
        .chain(lines)
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn back(path: &str, msg: &str) -> Response {
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
    Redirect::to(&format!("{path}?msg={msg}")).into_response()
}

async fn delete_session(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let s = match admin::find(&app.client, Some(&ns), &name).await {
        Ok(s) => s,
        Err(ReaderError::NotFound(_)) => {
            return back("/", &format!("session {name} no longer exists"));
        }
        Err(e) => return error_page(&app, &e),
    };
    match admin::delete(&app.client, &s, false, Duration::from_secs(120)).await {
        Ok(removed) => back(
            "/",
            &format!("session {name} deleted ({} objects removed)", removed.len()),
        ),
        // Judged live after all (it renewed): said on the sessions page.
        Err(e @ ReaderError::Live { .. }) => back("/", &e.to_string()),
        Err(e) => back(
            "/",
            &format!(
                "deleting session {name} failed: {}",
                crate::output::error_chain(&e)
            ),
        ),
    }
}

async fn sandboxes(State(app): State<Arc<App>>, Query(q): Query<IndexQuery>) -> Response {
    let rows = app
        .sections
        .borrow()
        .get("sandboxes-body")
        .cloned()
        .unwrap_or_default();
    let body = sandboxes_body(&message(q.msg), &rows);
    page(&app, "Sandboxes", Tab::Sandboxes, &body).into_response()
}

/// The sandboxes table.
pub(crate) fn sandboxes_body(msg: &str, rows: &str) -> String {
    let headers: String = [
        "Name",
        "Isolation",
        "Status",
        "Sessions",
        "Quota used / hard",
        "Expires",
        "Age",
        "Owner",
    ]
    .iter()
    .map(|h| format!("<th scope=\"col\">{h}</th>"))
    .collect();
    format!(
        "{msg}<div class=\"table-wrap\"><table class=\"sandboxes cards\"><caption class=\"visually-hidden\">Sandboxes</caption><thead><tr>{headers}\
         <th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead>\
         <tbody id=\"sandboxes-body\">{rows}</tbody></table></div>",
    )
}

async fn delete_sandbox(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let msg = match sandbox::delete(&app.client, &name, &sandbox::DeleteOptions::default()).await {
        Ok(sandbox::Deleted::Removed(_)) => format!("sandbox {name} deleted"),
        Ok(sandbox::Deleted::NotFound) => format!("sandbox {name} no longer exists"),
        Err(e) => format!(
            "deleting sandbox {name} failed: {}",
            crate::output::error_chain(&e)
        ),
    };
    back("/sandboxes", &msg)
}

/// What [`serve`] tells its caller once the page is ready.
pub struct Ready {
    /// The page's address (nothing secret in it).
    pub page: String,
    /// A URL that signs one browser in, once (for the terminal).
    pub login: String,
    /// Whether a browser was started on the page's launcher (`None`: not asked).
    pub opened: Option<std::io::Result<()>>,
}

/// Serves the page on 127.0.0.1:`port` (0: any free port) until the future
/// is dropped. Once listening and the watches have listed once (or 15 s
/// passed), opens it in a browser when `open` (through a launcher file,
/// see [`auth`]) and calls `ready`.
pub async fn serve(
    client: Client,
    port: u16,
    open: bool,
    ready: impl FnOnce(Ready),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let gate = Arc::new(auth::Gate::new(addr.port())?);
    let helm = flux::serves(&client, "helm.toolkit.fluxcd.io/v2", "HelmRelease")
        .await
        .unwrap_or(false);
    let (tx, mut rx) = watch::channel(Sections::new());
    tokio::spawn(hub(client.clone(), helm, tx));
    let _ = tokio::time::timeout(Duration::from_secs(15), rx.changed()).await;
    let app = Arc::new(App {
        client,
        sections: rx,
        helm,
    });
    let login = Router::new()
        .route("/login", get(auth::login_get).post(auth::login_post))
        .with_state(gate.clone());
    let router = Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/session/{ns}/{name}", get(session_page))
        .route("/session/{ns}/{name}/events", get(session_events))
        .route("/session/{ns}/{name}/logs", get(session_logs))
        .route("/session/{ns}/{name}/delete", post(delete_session))
        .route("/sandboxes", get(sandboxes))
        .route("/sandboxes/{name}/delete", post(delete_sandbox))
        .with_state(app)
        .merge(login)
        .layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            auth::guard,
        ));
    let code = gate.mint(None)?;
    let opened = open.then(|| gate.write_launcher().and_then(|path| open::open(&path)));
    ready(Ready {
        page: format!("http://{addr}/"),
        login: gate.login_url(&code),
        opened,
    });
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

    fn lease(i: usize) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("s{i:03}"), "namespace": format!("ns{}", i % 7),
                "labels": {"app.kubernetes.io/managed-by": "kubectl-gitops", "gitops.kubectl.dev/component": "session",
                           "gitops.kubectl.dev/sandbox": format!("ns{}", i % 7)},
                "annotations": {"gitops.kubectl.dev/mode": "sandboxed", "gitops.kubectl.dev/dir": format!("/src/s{i}"),
                                "gitops.kubectl.dev/owner": "ann@laptop"}},
            "spec": {"holderIdentity": "ann@laptop", "leaseDurationSeconds": 30,
                     "renewTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}
        }))
        .unwrap()
    }

    /// What the hub does on every change and every second, with 200
    /// sessions (`make bench` measures how long it takes).
    #[test]
    fn two_hundred_sessions_render_from_the_watches() {
        let leases: Vec<Lease> = (0..200).map(lease).collect();
        let gitops: Kustomization = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "x"}, "prune": true, "interval": "10m", "targetNamespace": "prod"}
        }))
        .unwrap();
        let s = hub_sections(
            &leases,
            std::slice::from_ref(&gitops),
            &[],
            &[],
            &[],
            &[],
            &WatchState::default(),
        );
        assert_eq!(s["sessions-body"].matches("<tr data-key=").count(), 200);
        assert_eq!(
            s["sessions-body"]
                .matches("data-heartbeat=\"live\"")
                .count(),
            200
        );
        assert!(
            s["cluster-mode"].contains("<strong>Run</strong>"),
            "{}",
            s["cluster-mode"]
        );
        assert!(s["cluster-mode"].contains("200 live sessions"));
        assert_eq!(s["takeovers"], "");
        // Without sessions, Flux's own Kustomization makes it GitOps.
        let s = hub_sections(
            &[],
            std::slice::from_ref(&gitops),
            &[],
            &[],
            &[],
            &[],
            &WatchState::default(),
        );
        assert!(s["cluster-mode"].contains("<strong>GitOps</strong>"));
        // An app taken over by a session: named, with its holder; live
        // while the session's Lease is renewed, else what hands it back.
        let mut held = gitops;
        held.metadata.annotations = Some(
            [
                (crate::takeover::keys::TAKEN_OVER_BY, "team/run-7"),
                (crate::takeover::keys::TAKEN_OVER_OWNER, "ann@laptop"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let mut holder = lease(7);
        holder.metadata.namespace = Some("team".into());
        holder.metadata.name = Some("run-7".into());
        let s = hub_sections(
            std::slice::from_ref(&holder),
            std::slice::from_ref(&held),
            &[],
            &[],
            &[],
            &[],
            &WatchState::default(),
        );
        assert!(
            s["takeovers"].contains("<strong>Kustomization/flux-system/apps</strong> runs session")
                && s["takeovers"].contains("of ann@laptop")
                && s["takeovers"].contains("data-live=\"true\""),
            "{}",
            s["takeovers"]
        );
        let s = hub_sections(&[], &[held], &[], &[], &[], &[], &WatchState::default());
        assert!(
            s["takeovers"].contains("kubectl gitops-sessions delete run-7 -n team"),
            "{}",
            s["takeovers"]
        );
        assert!(s["sessions-body"].contains("No sessions."));
        let mut broken = WatchState::default();
        broken.apply(("Leases", Err("forbidden <x>".into())));
        let s = hub_sections(&[], &[], &[], &[], &[], &[], &broken);
        assert!(s["cluster-mode"].contains("Snowflake"));
        assert!(s["sessions-body"].contains("cannot watch Leases: forbidden &lt;x&gt;"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (auth::random_hex(16).unwrap(), auth::random_hex(16).unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
