//! The page's HTML, from plain data: pure functions, unit-tested, shared by
//! the first render of a page and the sections pushed to it (Server-Sent
//! Events) as the watches report changes. Everything from the cluster goes
//! through [`esc`]. Times are `<time datetime>` elements the page's script
//! turns into ticking relative times, so a section's HTML changes only when
//! what it shows changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::workloads::{DaemonSet, Deployment, Pod, StatefulSet};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event as KubeEvent, ResourceQuota};
use kube::ResourceExt;

use super::esc;
use crate::flux::Condition;
use crate::pod::Readiness;
use crate::sandbox::Sandbox;
use crate::session::engine::health::{self, Rollout};
use crate::session::readers::status::ClusterMode;
use crate::session::readers::view::{Heartbeat, SessionView, short_revision};
use crate::session::record::SyncEntry;

/// The phases of a sync, in order, with their display names.
pub const PHASES: [(&str, &str); 5] = [
    ("validate", "Validate"),
    ("build", "Build"),
    ("push", "Push"),
    ("fetch", "Fetch (Flux)"),
    ("apply", "Apply + health"),
];

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A time the page shows relative ("12s ago", "in 3h"), ticking; `-` when unknown.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!(
            "<time datetime=\"{}\" data-rel>{}</time>",
            rfc3339(t),
            t.format("%H:%M:%S UTC")
        ),
        None => "<span class=\"muted\">–</span>".into(),
    }
}

/// `12 ms`, `1.4 s`, `2m 05s`.
pub fn fmt_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A stable short hash (FNV-1a) of a row's HTML: the page replaces only rows whose hash changed.
pub fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The three looks of a status: fine, under way, failing (plus neutral).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Progress,
    Bad,
    Neutral,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "ok",
            Tone::Progress => "progress",
            Tone::Bad => "bad",
            Tone::Neutral => "neutral",
        }
    }
    /// A symbol beside the text, so colour is never the only cue.
    fn icon(self) -> &'static str {
        match self {
            Tone::Ok => "✓",
            Tone::Progress => "↻",
            Tone::Bad => "✕",
            Tone::Neutral => "•",
        }
    }
}

/// A coloured badge with a symbol and text.
pub fn badge(tone: Tone, text: &str, title: &str) -> String {
    let title = if title.is_empty() {
        String::new()
    } else {
        format!(" title=\"{}\"", esc(title))
    };
    format!(
        "<span class=\"badge {}\"{title}><span aria-hidden=\"true\">{}</span> {}</span>",
        tone.class(),
        tone.icon(),
        esc(text)
    )
}

/// The tone of a session's Flux status.
pub fn status_tone(state: &str) -> Tone {
    match state {
        "Ready" => Tone::Ok,
        "Failed" => Tone::Bad,
        "Reconciling" => Tone::Progress,
        _ => Tone::Neutral,
    }
}

/// A session's status badge.
pub fn status_badge(s: &SessionView) -> String {
    badge(
        status_tone(&s.status.state),
        &s.status.summary(),
        &s.status.message,
    )
}

/// The heartbeat: a live (pulsing) or stale dot, its word, and when it was
/// last renewed (always with `renewed`, else only once no longer live: a
/// renewal then changes nothing on the page).
pub fn heartbeat(s: &SessionView, renewed: bool) -> String {
    let (word, title) = match s.heartbeat {
        Heartbeat::Live => (
            "live",
            "the session's command is running and renews its Lease",
        ),
        Heartbeat::Stale => (
            "stale",
            "not renewed in time: the command crashed or was killed",
        ),
        Heartbeat::Kept => ("kept", "stopped with --keep: left on purpose"),
    };
    format!(
        "<span class=\"hb {word}\" title=\"{title}\"><span class=\"dot\" aria-hidden=\"true\"></span>{word}</span>{}",
        if renewed || s.heartbeat != Heartbeat::Live {
            format!(
                " <span class=\"muted small\">renewed {}</span>",
                time(s.heartbeat_at)
            )
        } else {
            String::new()
        }
    )
}

/// The cluster's mode at the top of every page.
/// The apps a session runs in place of (Run mode per app, `--take-over`):
/// each with its session, who runs it and whether it is live; a stale one
/// says what hands it back. Empty when none is taken over.
pub fn takeovers(apps: &[crate::session::readers::status::AppEntry]) -> String {
    let rows: String = apps
        .iter()
        .filter_map(|a| {
            let by = a.taken_over_by.as_deref()?;
            let (ns, name) = by.split_once('/').unwrap_or(("", by));
            let live = a.live == Some(true);
            let state = if live {
                "<span class=\"hb live\"><span class=\"dot\" aria-hidden=\"true\"></span>live</span>".to_string()
            } else {
                format!(
                    "<span class=\"hb stale\"><span class=\"dot\" aria-hidden=\"true\"></span>stale</span> \
                     <span class=\"muted\">suspended in Flux until <code>kubectl gitops-sessions delete {} -n {}</code> hands it back</span>",
                    esc(name),
                    esc(ns)
                )
            };
            Some(format!(
                "<li data-app=\"{app}\" data-live=\"{live}\"><strong>{app}</strong> runs session \
                 <a href=\"/session/{ns_e}/{name_e}\">{name_e}</a> of {owner} instead of Git: {state}</li>",
                app = esc(&a.app),
                ns_e = esc(ns),
                name_e = esc(name),
                owner = esc(a.owner.as_deref().unwrap_or("someone")),
            ))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<section class=\"takeovers\" aria-label=\"Apps taken over from GitOps\"><h2 class=\"small\">Taken over from GitOps</h2><ul>{rows}</ul></section>"
    )
}

pub fn cluster_mode(mode: ClusterMode, live: usize, gitops_namespaces: usize) -> String {
    let (class, detail, title) = match mode {
        ClusterMode::Run => (
            "run",
            format!("{live} live session{}", if live == 1 { "" } else { "s" }),
            "Run: a GitOps Run session is syncing a local directory",
        ),
        ClusterMode::GitOps => (
            "gitops",
            format!(
                "Flux applies into {gitops_namespaces} namespace{}",
                if gitops_namespaces == 1 { "" } else { "s" }
            ),
            "GitOps: Flux applies from Git/OCI sources and no session runs",
        ),
        ClusterMode::Snowflake => (
            "snowflake",
            "nothing applied by Flux".to_string(),
            "Snowflake: no live session and nothing applied by Flux: objects are applied by hand",
        ),
    };
    format!(
        "<span class=\"mode-badge {class}\" title=\"{title}\">Cluster mode <strong>{}</strong></span> <span class=\"mode-detail\">{}</span>",
        mode.as_str(),
        esc(&detail)
    )
}

/// The columns of the sessions table (the CLI's, in words).
pub const COLUMNS: [&str; 10] = [
    "Name",
    "Namespace",
    "Mode",
    "Source",
    "Revision",
    "Status",
    "Last sync",
    "Heartbeat",
    "User",
    "Age",
];

fn dash(v: &str) -> String {
    if v.is_empty() {
        "<span class=\"muted\">–</span>".into()
    } else {
        esc(v)
    }
}

/// One row of the sessions table.
pub fn session_row(s: &SessionView) -> String {
    let href = format!("/session/{}/{}", esc(&s.namespace), esc(&s.name));
    let cells = [
        format!("<a class=\"name\" href=\"{href}\">{}</a>", esc(&s.name)),
        esc(&s.namespace),
        format!(
            "{}{}",
            dash(&s.mode),
            s.sandbox
                .as_deref()
                .filter(|b| *b != s.namespace)
                .map(|b| format!("<br><span class=\"muted small\">sandbox {}</span>", esc(b)))
                .unwrap_or_default()
        ),
        format!(
            "<span class=\"path\" title=\"{0}\">{0}</span>",
            esc(&s.source)
        ),
        format!(
            "<code title=\"{}\">{}</code>",
            esc(&s.revision),
            esc(&short_revision(&s.revision))
        ),
        format!(
            "{}{}",
            badge(
                status_tone(&s.status.state),
                &s.status.state,
                &s.status.message
            ),
            if s.status.reason.is_empty() || s.status.state != "Failed" {
                String::new()
            } else {
                format!(
                    "<br><span class=\"muted small\">{}</span>",
                    esc(&s.status.reason)
                )
            }
        ),
        time(s.last_sync),
        heartbeat(s, false),
        dash(&if s.host.is_empty() {
            s.user.clone()
        } else {
            format!("{}@{}", s.user, s.host)
        }),
        time(s.started),
    ];
    let mut inner = String::new();
    for (label, cell) in COLUMNS.iter().zip(cells) {
        let _ = write!(inner, "<td data-label=\"{label}\">{cell}</td>");
    }
    format!(
        "<tr data-key=\"{ns}/{n}\" data-v=\"{v}\" data-name=\"{n}\" data-namespace=\"{ns}\" data-status=\"{st}\" data-heartbeat=\"{hb}\">{inner}</tr>",
        v = fnv(&inner),
        n = esc(&s.name),
        ns = esc(&s.namespace),
        st = esc(&s.status.state),
        hb = s.heartbeat.as_str(),
    )
}

/// The sessions table's body.
pub fn session_rows(sessions: &[SessionView]) -> String {
    if sessions.is_empty() {
        return format!(
            "<tr class=\"empty\"><td colspan=\"{}\">No sessions. Start one with <code>kubectl gitops-run DIR</code>.</td></tr>",
            COLUMNS.len()
        );
    }
    let mut out = String::with_capacity(sessions.len() * 1200);
    for s in sessions {
        out.push_str(&session_row(s));
    }
    out
}

/// The counters above the table.
pub fn session_counts(sessions: &[SessionView]) -> String {
    let count = |f: &dyn Fn(&SessionView) -> bool| sessions.iter().filter(|s| f(s)).count();
    let tiles = [
        ("total", "Sessions", sessions.len()),
        ("ok", "Ready", count(&|s| s.status.state == "Ready")),
        (
            "progress",
            "Reconciling",
            count(&|s| s.status.state == "Reconciling" || s.status.state == "Pending"),
        ),
        ("bad", "Failed", count(&|s| s.status.state == "Failed")),
        ("live", "Live", count(&|s| s.heartbeat == Heartbeat::Live)),
        (
            "stale",
            "Stale",
            count(&|s| s.heartbeat == Heartbeat::Stale),
        ),
    ];
    tiles
        .iter()
        .map(|(class, label, n)| {
            format!("<div class=\"tile {class}\"><span class=\"n\">{n}</span> <span class=\"l\">{label}</span></div>")
        })
        .collect()
}

/// The head of a session's page: status and heartbeat, and the last
/// sync's failure as the session saw it (Flux may still be reconciling:
/// its health check runs until its timeout).
pub fn session_head(s: Option<&SessionView>, last: Option<&SyncEntry>) -> String {
    let failed_sync = last
        .filter(|e| e.status != "Ready")
        .map(|e| {
            format!(
                "<p class=\"banner bad\" role=\"alert\"><strong>Last sync failed{}</strong> {} {}</p>",
                e.failed_phase
                    .as_deref()
                    .map(|p| format!(" at {}", esc(p)))
                    .unwrap_or_default(),
                time(Some(e.at)),
                esc(&e.message)
            )
        })
        .unwrap_or_default();
    match s {
        None => "<p class=\"banner bad\" role=\"alert\">This session no longer exists (its Lease is gone): it was stopped or deleted.</p>".into(),
        Some(s) => format!(
            "<div class=\"head-badges\">{} {}</div><p class=\"muted path\" title=\"{src}\">{src}</p>{failed_sync}{}",
            status_badge(s),
            heartbeat(s, true),
            if s.status.state == "Failed" && !s.status.message.is_empty() {
                format!(
                    "<p class=\"banner bad\" role=\"alert\"><strong>{}</strong> {}</p>",
                    esc(&s.status.summary()),
                    esc(&s.status.message)
                )
            } else {
                String::new()
            },
            src = esc(&s.source),
        ),
    }
}

/// The facts of a session, as a definition list.
pub fn session_summary(s: &SessionView) -> String {
    let user = if s.host.is_empty() {
        s.user.clone()
    } else {
        format!("{}@{}", s.user, s.host)
    };
    let fields: [(&str, String); 10] = [
        ("Namespace", esc(&s.namespace)),
        (
            "Mode",
            format!(
                "{}{}",
                dash(&s.mode),
                s.sandbox
                    .as_deref()
                    .map(|b| format!(" · sandbox <code>{}</code>", esc(b)))
                    .unwrap_or_default()
            ),
        ),
        (
            "Revision",
            format!(
                "<code title=\"{}\">{}</code>",
                esc(&s.revision),
                esc(&short_revision(&s.revision))
            ),
        ),
        ("Last sync", time(s.last_sync)),
        ("Started", time(s.started)),
        (
            "User",
            format!(
                "{} <span class=\"muted\">pid {}</span>",
                dash(&user),
                dash(&s.pid)
            ),
        ),
        ("Registry", dash(&s.registry)),
        (
            "Artifact",
            format!("<code>{}</code>", dash(&short_revision(&s.artifact))),
        ),
        (
            "Port-forwards",
            if s.port_forwards.is_empty() {
                dash("")
            } else {
                s.port_forwards
                    .iter()
                    .map(|p| format!("<code>{}</code>", esc(p)))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        ("Version", dash(&s.version)),
    ];
    let mut out = String::from("<dl class=\"facts\">");
    for (k, v) in fields {
        let _ = write!(out, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    }
    out.push_str("</dl>");
    out
}

/// The sync history: one SVG bar per sync, its phases side by side on a
/// common scale (newest first), so a slow phase stands out; the same
/// numbers as a table for screen readers and copying.
pub fn sync_history(history: &[SyncEntry], last_sync: Option<DateTime<Utc>>) -> String {
    if history.is_empty() {
        return format!(
            "<p class=\"muted\">No sync history recorded yet{}. Sessions record each sync's phases in their Lease from this version on.</p>",
            if last_sync.is_some() {
                format!(" (last sync {})", time(last_sync))
            } else {
                String::new()
            }
        );
    }
    let scale = history
        .iter()
        .map(SyncEntry::total_ms)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::from("<ul class=\"legend\" aria-hidden=\"true\">");
    for (key, label) in PHASES {
        let _ = write!(out, "<li><span class=\"sw ph-{key}\"></span>{label}</li>");
    }
    out.push_str(
        "<li><span class=\"sw ph-failed\"></span>Failed phase</li></ul><ol class=\"syncs\">",
    );
    for (i, e) in history.iter().rev().enumerate() {
        let total = e.total_ms();
        let slowest = e.phases.iter().max_by_key(|p| p.ms);
        let mut bars = String::new();
        let mut words = Vec::new();
        for p in &e.phases {
            let failed = e.failed_phase.as_deref() == Some(p.phase.as_str());
            let x = p.start_ms as f64 * 1000.0 / scale as f64;
            // At least a sliver, so a fast phase is still seen.
            let w = (p.ms as f64 * 1000.0 / scale as f64).max(3.0);
            let label = PHASES
                .iter()
                .find(|(k, _)| *k == p.phase)
                .map_or(p.phase.as_str(), |(_, l)| l);
            let text = format!(
                "{label}: {}{}",
                fmt_ms(p.ms),
                if failed { " (failed)" } else { "" }
            );
            let _ = write!(
                bars,
                "<rect class=\"ph-{}{}\" x=\"{x:.1}\" y=\"2\" width=\"{w:.1}\" height=\"20\" rx=\"2\"><title>{}</title></rect>",
                esc(&p.phase),
                if failed { " ph-failed" } else { "" },
                esc(&text)
            );
            words.push(text);
        }
        let tone = if e.status == "Ready" {
            Tone::Ok
        } else {
            Tone::Bad
        };
        let status = match &e.failed_phase {
            Some(p) if e.status != "Ready" => format!("Failed at {p}"),
            _ => e.status.clone(),
        };
        let _ = write!(
            out,
            "<li class=\"sync{}\"><div class=\"sync-meta\">{} {} <code title=\"{}\">{}</code></div>\
             <svg class=\"bars\" viewBox=\"0 0 1000 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">{bars}</svg>\
             <div class=\"sync-total\"><strong>{}</strong>{}</div>{}</li>",
            if i == 0 { " latest" } else { "" },
            badge(tone, &status, &e.message),
            time(Some(e.at)),
            esc(&e.revision),
            esc(&short_revision(&e.revision)),
            esc(&format!("total {}: {}", fmt_ms(total), words.join(", "))),
            fmt_ms(total),
            slowest
                .filter(|p| e.phases.len() > 1 && p.ms > 0)
                .map(|p| format!(" · slowest: {} {}", esc(&p.phase), fmt_ms(p.ms)))
                .unwrap_or_default(),
            if e.message.is_empty() {
                String::new()
            } else {
                format!("<p class=\"sync-msg\">{}</p>", esc(&e.message))
            }
        );
    }
    out.push_str("</ol><details class=\"as-table\"><summary>The same as a table</summary><table><caption class=\"visually-hidden\">Sync phases in milliseconds</caption><thead><tr><th scope=\"col\">Started</th><th scope=\"col\">Status</th>");
    for (_, label) in PHASES {
        let _ = write!(out, "<th scope=\"col\">{label}</th>");
    }
    out.push_str("<th scope=\"col\">Total</th></tr></thead><tbody>");
    for e in history.iter().rev() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            time(Some(e.at)),
            esc(&e.status)
        );
        for (key, _) in PHASES {
            let cell = e
                .phases
                .iter()
                .find(|p| p.phase == key)
                .map(|p| fmt_ms(p.ms))
                .unwrap_or_else(|| "–".into());
            let _ = write!(out, "<td>{cell}</td>");
        }
        let _ = write!(out, "<td>{}</td></tr>", fmt_ms(e.total_ms()));
    }
    out.push_str("</tbody></table></details>");
    out
}

/// A pod, as the objects tree shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// `Ready`, `Completed`, `Terminating`, a waiting container's reason
    /// (`CrashLoopBackOff`), or the phase.
    pub state: String,
    /// It got where it should: ready, or ran to completion
    /// ([`Readiness::settled`]).
    pub ready: bool,
    pub restarts: i32,
    /// Why it is not ready (a certain failure first, else what keeps it).
    pub reason: Option<String>,
    /// The failure is certain (crash loop, image pull, unschedulable…).
    pub failing: bool,
}

/// Why a pod is not ready, in the words its status gives.
pub fn pod_not_ready(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            let message = w.message.clone().unwrap_or_default();
            return Some(format!(
                "container {}: {reason}{}",
                c.name,
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ));
        }
    }
    for type_ in ["PodScheduled", "Ready"] {
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status != "True")
        {
            return Some(format!(
                "{}{}",
                c.reason.clone().unwrap_or_else(|| format!("not {type_}")),
                c.message
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    (status.phase.as_deref() != Some("Running")).then(|| {
        format!(
            "phase {}",
            status.phase.clone().unwrap_or_else(|| "Pending".into())
        )
    })
}

/// What the tree shows of a pod.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let status = pod.status.as_ref();
    let readiness = Readiness::of(pod);
    // Green when it got where it should (ready, or ran to completion), as
    // the sync's health judges it; a pod being deleted is on its way out.
    let ready = readiness.settled();
    let problem = health::pod_problem(pod);
    let failing = problem.is_some();
    PodInfo {
        name: pod.name_any(),
        state: match readiness {
            Readiness::Terminating => "Terminating".into(),
            Readiness::Ready => "Ready".into(),
            Readiness::Completed => "Completed".into(),
            Readiness::NotReady => status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| {
                    c.iter().find_map(|c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.clone())
                    })
                })
                .or_else(|| status.and_then(|s| s.phase.clone()))
                .unwrap_or_else(|| "Pending".into()),
        },
        ready,
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0),
        reason: if ready {
            None
        } else {
            problem.or_else(|| pod_not_ready(pod))
        },
        failing,
    }
}

/// An applied object in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNode {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub tone: Tone,
    /// `2/3 ready`, `applied`, …
    pub health: String,
    /// Why it is not healthy.
    pub reason: Option<String>,
    pub pods: Vec<PodInfo>,
}

/// What the cluster holds of a session's workloads, from the watches.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    pub deployments: Vec<Deployment>,
    pub statefulsets: Vec<StatefulSet>,
    pub daemonsets: Vec<DaemonSet>,
    pub pods: Vec<Pod>,
}

fn workload_node(r: &Rollout, pods: &[Pod]) -> ObjectNode {
    let mut parts = r.object.splitn(3, '/');
    let (kind, namespace, name) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut mine: Vec<PodInfo> = pods
        .iter()
        .filter(|p| r.selector.matches(p.labels()))
        .map(pod_info)
        .collect();
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    let failing = r.problem.clone().or_else(|| {
        mine.iter()
            .find(|p| p.failing)
            .and_then(|p| p.reason.clone())
    });
    let ratio = format!("{}/{} ready", r.ready, r.desired);
    let (tone, reason) = if r.done {
        (Tone::Ok, None)
    } else if let Some(f) = failing {
        (Tone::Bad, Some(f))
    } else if !r.observed {
        (
            Tone::Progress,
            Some("the controller has not seen the latest spec yet".into()),
        )
    } else {
        let why = mine
            .iter()
            .find_map(|p| p.reason.as_ref().map(|r| format!("pod {}: {r}", p.name)))
            .unwrap_or_else(|| "rolling out".into());
        (Tone::Progress, Some(why))
    };
    ObjectNode {
        kind,
        namespace,
        name,
        tone,
        health: if r.done {
            ratio
        } else {
            format!("{ratio} · rolling out")
        },
        reason,
        pods: mine,
    }
}

/// Kinds in the order the tree lists them (workloads first).
const KIND_ORDER: [&str; 6] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "Pod",
    "Service",
];

/// The session's applied objects grouped by kind, each with its health:
/// the Kustomization's inventory (`Kind/ns/name` or `Kind/name`) joined
/// with the workloads Flux labelled for it (present before the inventory
/// is, during a first rollout). `workloads`: `None` when they run in
/// another cluster.
pub fn object_tree(
    inventory: &[String],
    workloads: Option<&Workloads>,
) -> Vec<(String, Vec<ObjectNode>)> {
    let mut nodes: BTreeMap<(String, String, String), ObjectNode> = BTreeMap::new();
    if let Some(w) = workloads {
        let rollouts = w
            .deployments
            .iter()
            .map(health::deployment)
            .chain(w.statefulsets.iter().map(health::statefulset))
            .chain(w.daemonsets.iter().map(health::daemonset));
        for r in rollouts {
            let n = workload_node(&r, &w.pods);
            nodes.insert((n.kind.clone(), n.namespace.clone(), n.name.clone()), n);
        }
    }
    for id in inventory {
        let parts: Vec<&str> = id.split('/').collect();
        let (kind, ns, name) = match parts[..] {
            [k, ns, n] => (k, ns, n),
            [k, n] => (k, "", n),
            _ => ("Object", "", id.as_str()),
        };
        let key = (kind.to_string(), ns.to_string(), name.to_string());
        if nodes.contains_key(&key) {
            continue;
        }
        let pod = (kind == "Pod")
            .then(|| {
                workloads.and_then(|w| {
                    w.pods
                        .iter()
                        .find(|p| p.name_any() == name && p.namespace().as_deref() == Some(ns))
                })
            })
            .flatten();
        let (tone, health, reason, pods) = match (kind, pod) {
            (_, Some(p)) => {
                let info = pod_info(p);
                let tone = if info.ready {
                    Tone::Ok
                } else if info.failing {
                    Tone::Bad
                } else {
                    Tone::Progress
                };
                (
                    tone,
                    match Readiness::of(p) {
                        Readiness::Completed => "completed",
                        r if r.settled() => "ready",
                        _ => "not ready",
                    }
                    .to_string(),
                    info.reason.clone(),
                    Vec::new(),
                )
            }
            ("Deployment" | "StatefulSet" | "DaemonSet", None) if workloads.is_some() => (
                Tone::Progress,
                "not found".to_string(),
                Some("in the inventory but not in the cluster".into()),
                Vec::new(),
            ),
            _ => (Tone::Neutral, "applied".to_string(), None, Vec::new()),
        };
        nodes.insert(
            key,
            ObjectNode {
                kind: kind.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
                tone,
                health,
                reason,
                pods,
            },
        );
    }
    let mut groups: BTreeMap<(usize, String), Vec<ObjectNode>> = BTreeMap::new();
    for ((kind, _, _), node) in nodes {
        let order = KIND_ORDER
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(KIND_ORDER.len());
        groups.entry((order, kind)).or_default().push(node);
    }
    groups.into_iter().map(|((_, k), v)| (k, v)).collect()
}

/// The objects tree, as nested lists in `<details>` (keyboard-operable).
pub fn objects(tree: &[(String, Vec<ObjectNode>)], elsewhere: bool) -> String {
    let mut out = String::new();
    if elsewhere {
        out.push_str("<p class=\"muted\">This session applies into another cluster (a kubeconfig or vcluster sandbox): workload health and logs are not visible from here.</p>");
    }
    if tree.is_empty() {
        out.push_str("<p class=\"muted\">Nothing applied yet.</p>");
        return out;
    }
    out.push_str("<div class=\"tree\">");
    for (kind, nodes) in tree {
        let worst = nodes
            .iter()
            .map(|n| n.tone)
            .find(|t| *t == Tone::Bad)
            .or_else(|| nodes.iter().map(|n| n.tone).find(|t| *t == Tone::Progress));
        let _ = write!(
            out,
            "<details open class=\"kind\" data-kind=\"{k}\"><summary><span class=\"kind-name\">{k}</span> <span class=\"count\">{}</span>{}</summary><ul>",
            nodes.len(),
            match worst {
                Some(Tone::Bad) => format!(" {}", badge(Tone::Bad, "failing", "")),
                Some(Tone::Progress) => format!(" {}", badge(Tone::Progress, "in progress", "")),
                _ => String::new(),
            },
            k = esc(kind),
        );
        for n in nodes {
            let _ = write!(
                out,
                "<li class=\"obj\" data-object=\"{kind}/{name}\" data-tone=\"{tone}\"><div class=\"obj-line\"><span class=\"obj-name\">{name}</span>{ns} {}</div>{}",
                badge(n.tone, &n.health, ""),
                n.reason
                    .as_ref()
                    .map(|r| format!("<p class=\"reason\">{}</p>", esc(r)))
                    .unwrap_or_default(),
                kind = esc(&n.kind),
                name = esc(&n.name),
                tone = n.tone.class(),
                ns = if n.namespace.is_empty() {
                    String::new()
                } else {
                    format!(" <span class=\"muted small\">{}</span>", esc(&n.namespace))
                },
            );
            if !n.pods.is_empty() {
                out.push_str("<ul class=\"pods\">");
                for p in &n.pods {
                    let tone = if p.ready {
                        Tone::Ok
                    } else if p.failing {
                        Tone::Bad
                    } else {
                        Tone::Progress
                    };
                    let _ = write!(
                        out,
                        "<li class=\"pod\" data-pod=\"{name}\" data-tone=\"{}\"><span class=\"pod-name\">{name}</span> {} {}{}</li>",
                        tone.class(),
                        badge(tone, &p.state, ""),
                        if p.restarts > 0 {
                            format!(
                                "<span class=\"restarts\">{} restart{}</span>",
                                p.restarts,
                                if p.restarts == 1 { "" } else { "s" }
                            )
                        } else {
                            String::new()
                        },
                        p.reason
                            .as_ref()
                            .map(|r| format!("<p class=\"reason\">{}</p>", esc(r)))
                            .unwrap_or_default(),
                        name = esc(&p.name),
                    );
                }
                out.push_str("</ul>");
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></details>");
    }
    out.push_str("</div>");
    out
}

/// The Flux conditions table.
pub fn conditions(conditions: &[(&str, Condition)]) -> String {
    if conditions.is_empty() {
        return "<p class=\"muted\">No conditions yet.</p>".into();
    }
    let mut out = String::from(
        "<div class=\"scroll\"><table class=\"plain cards\"><caption class=\"visually-hidden\">Conditions of the session's Flux objects</caption><thead><tr><th scope=\"col\">Object</th><th scope=\"col\">Type</th><th scope=\"col\">Status</th><th scope=\"col\">Reason</th><th scope=\"col\">Message</th><th scope=\"col\">Since</th></tr></thead><tbody>",
    );
    for (kind, c) in conditions {
        // Stalled/Reconciling are abnormal-true conditions, like kstatus.
        let abnormal = matches!(c.type_.as_str(), "Stalled" | "Reconciling" | "Healthy");
        let tone = match (c.status.as_str(), abnormal, c.type_.as_str()) {
            ("True", _, "Healthy") | ("True", false, _) => Tone::Ok,
            ("True", true, "Stalled") => Tone::Bad,
            ("True", true, _) => Tone::Progress,
            ("False", true, _) => Tone::Neutral,
            ("False", _, _) => {
                if c.reason == "Progressing" {
                    Tone::Progress
                } else {
                    Tone::Bad
                }
            }
            _ => Tone::Progress,
        };
        let since = c
            .last_transition_time
            .as_deref()
            .and_then(|t| crate::duration::parse_time(Some(t)));
        let _ = write!(
            out,
            "<tr><td data-label=\"Object\">{kind}</td><td data-label=\"Type\">{}</td><td data-label=\"Status\">{}</td><td data-label=\"Reason\">{}</td><td data-label=\"Message\" class=\"msg-cell\">{}</td><td data-label=\"Since\">{}</td></tr>",
            esc(&c.type_),
            badge(tone, &c.status, ""),
            esc(&c.reason),
            esc(&c.message),
            time(since)
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// An event as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub at: Option<DateTime<Utc>>,
    pub warning: bool,
    pub object: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// When an event last happened.
pub fn event_time(e: &KubeEvent) -> Option<DateTime<Utc>> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .and_then(|s| DateTime::from_timestamp(s, 0))
}

/// The events about the session: its Flux objects (named after it), the
/// objects it applied, and their pods and ReplicaSets (named after their
/// workload); newest first, at most `limit`.
pub fn event_rows(
    events: &[KubeEvent],
    session: &str,
    objects: &BTreeSet<String>,
    limit: usize,
) -> Vec<EventRow> {
    let related = |name: &str| {
        name == session
            || objects.contains(name)
            || objects.iter().any(|o| {
                name.strip_prefix(o.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
    };
    let mut rows: Vec<EventRow> = events
        .iter()
        .filter(|e| related(e.involved_object.name.as_deref().unwrap_or_default()))
        .map(|e| EventRow {
            at: event_time(e),
            warning: e.type_.as_deref() == Some("Warning"),
            object: format!(
                "{}/{}",
                e.involved_object.kind.clone().unwrap_or_default(),
                e.involved_object.name.clone().unwrap_or_default()
            ),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default().trim().to_string(),
            count: e.count.unwrap_or(1),
        })
        .collect();
    rows.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.object.cmp(&b.object)));
    rows.truncate(limit);
    rows
}

/// The recent events list.
pub fn events(rows: &[EventRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"muted\">No recent events.</p>".into();
    }
    let mut out = String::from("<ol class=\"events\">");
    for e in rows {
        let _ = write!(
            out,
            "<li class=\"{}\"><div class=\"ev-head\">{} <span class=\"ev-reason\">{}</span> <span class=\"muted small\">{}</span> {}{}</div><p class=\"ev-msg\">{}</p></li>",
            if e.warning { "warning" } else { "normal" },
            if e.warning {
                badge(Tone::Bad, "Warning", "")
            } else {
                badge(Tone::Neutral, "Normal", "")
            },
            esc(&e.reason),
            esc(&e.object),
            time(e.at),
            if e.count > 1 {
                format!(" <span class=\"muted small\">×{}</span>", e.count)
            } else {
                String::new()
            },
            esc(&e.message)
        );
    }
    out.push_str("</ol>");
    out
}

/// The delete form (stale or kept sessions only) or why there is none.
pub fn session_actions(s: Option<&SessionView>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    if s.heartbeat == Heartbeat::Live {
        return "<p class=\"muted\">This session is running: stop it where it runs (Ctrl+C) to remove it.</p>".into();
    }
    format!(
        "<form method=\"post\" action=\"/session/{ns}/{n}/delete\" \
         onsubmit=\"return confirm('Delete session {n} and everything it created?')\">\
         <button type=\"submit\" class=\"danger\" id=\"delete-session\">Delete this {} session</button></form>",
        s.heartbeat.as_str(),
        ns = esc(&s.namespace),
        n = esc(&s.name),
    )
}

/// A quantity (`250m`, `4Gi`, `1.5k`, `20`) as a number, to compare use with limits.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let m = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(n * m)
}

/// Quota use of one sandbox: `resource used/hard` with a meter each.
pub fn quota_use(quotas: &[&ResourceQuota]) -> String {
    let mut items = String::new();
    for q in quotas {
        let Some(st) = q.status.as_ref() else {
            continue;
        };
        let used = st.used.clone().unwrap_or_default();
        for (res, hard) in st.hard.iter().flatten() {
            let u = used
                .get(res)
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "0".into());
            let fraction = match (quantity(&u), quantity(&hard.0)) {
                (Some(u), Some(h)) if h > 0.0 => (u / h).clamp(0.0, 1.0),
                _ => 0.0,
            };
            let pct = (fraction * 100.0).round();
            let tone = if fraction >= 0.9 {
                "bad"
            } else if fraction >= 0.7 {
                "progress"
            } else {
                "ok"
            };
            let _ = write!(
                items,
                "<li class=\"quota {tone}\" data-resource=\"{r}\"><span class=\"q-res\">{r}</span> <span class=\"q-val\">{u} / {h}</span>\
                 <span class=\"meter\" role=\"meter\" aria-label=\"{r} used\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"{pct}\" aria-valuetext=\"{u} of {h} ({pct}%)\"><span style=\"width:{pct}%\"></span></span></li>",
                r = esc(res),
                u = esc(&u),
                h = esc(&hard.0),
            );
        }
    }
    if items.is_empty() {
        "<span class=\"muted\">no quota</span>".into()
    } else {
        format!("<ul class=\"quotas\">{items}</ul>")
    }
}

/// The sandboxes table's body.
pub fn sandbox_rows(
    sandboxes: &[Sandbox],
    quotas: &BTreeMap<String, Vec<&ResourceQuota>>,
    now: DateTime<Utc>,
) -> String {
    if sandboxes.is_empty() {
        return "<tr class=\"empty\"><td colspan=\"9\">No sandboxes. Create one with <code>kubectl gitops-sandbox create NAME</code>, or run a session.</td></tr>".into();
    }
    let mut out = String::new();
    for s in sandboxes {
        let expires = match s.expires {
            None => "<span class=\"muted\">never</span>".to_string(),
            Some(e) if e <= now => format!("{} {}", badge(Tone::Bad, "expired", ""), time(Some(e))),
            Some(e) => {
                let soon = e - now < chrono::Duration::hours(1);
                format!(
                    "{}{}",
                    if soon {
                        format!("{} ", badge(Tone::Progress, "soon", ""))
                    } else {
                        String::new()
                    },
                    time(Some(e))
                )
            }
        };
        let ready = if s.terminating {
            badge(Tone::Progress, "Terminating", "")
        } else if s.ready {
            badge(Tone::Ok, "Ready", "")
        } else {
            badge(Tone::Bad, "Not ready", "")
        };
        let q = quotas
            .get(&s.namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let cells = [
            ("Name", format!("<strong>{}</strong>", esc(&s.name))),
            ("Isolation", esc(s.isolation.as_str())),
            ("Status", ready),
            ("Sessions", s.sessions.to_string()),
            ("Quota", quota_use(q)),
            ("Expires", expires),
            ("Age", time(s.created)),
            ("Owner", dash(s.owner.as_deref().unwrap_or_default())),
        ];
        let mut inner = String::new();
        for (label, cell) in cells {
            let _ = write!(inner, "<td data-label=\"{label}\">{cell}</td>");
        }
        let _ = write!(
            inner,
            "<td data-label=\"Actions\"><form method=\"post\" action=\"/sandboxes/{n}/delete\" \
             onsubmit=\"return confirm('Delete sandbox {n} and everything in it?')\">\
             <button type=\"submit\" class=\"danger small\">Delete <span class=\"visually-hidden\">{n}</span></button></form></td>",
            n = esc(&s.name)
        );
        let _ = write!(
            out,
            "<tr data-key=\"{n}\" data-v=\"{}\" data-sandbox=\"{n}\">{inner}</tr>",
            fnv(&inner),
            n = esc(&s.name)
        );
    }
    out
}

#[cfg(test)]
mod tests;
