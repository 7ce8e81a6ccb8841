use std::time::Duration;

use super::*;
use crate::session::readers::view::SyncStatus;
use crate::session::record::PhaseTime;

fn session(name: &str, state: &str, heartbeat: Heartbeat) -> SessionView {
    SessionView {
        name: name.into(),
        namespace: format!("ns-{name}"),
        mode: "sandboxed".into(),
        sandbox: Some(format!("ns-{name}")),
        ephemeral_sandbox: true,
        source: format!("/home/ann/src/{name}/deploy"),
        revision: "latest@sha256:0123456789abcdef0123456789abcdef".into(),
        status: SyncStatus {
            state: state.into(),
            reason: if state == "Failed" {
                "HealthCheckFailed".into()
            } else {
                String::new()
            },
            message: "msg".into(),
        },
        last_sync: crate::duration::parse_time(Some("2026-11-23T10:05:00Z")),
        heartbeat,
        heartbeat_at: crate::duration::parse_time(Some("2026-11-23T10:05:50Z")),
        user: "ann".into(),
        host: "laptop".into(),
        pid: "4242".into(),
        registry: "localhost:5001".into(),
        artifact: String::new(),
        port_forwards: vec![],
        version: "0.1.0".into(),
        started: crate::duration::parse_time(Some("2026-11-23T10:00:00Z")),
        inventory: vec![],
        lease_duration: Duration::from_secs(30),
    }
}

#[test]
fn rows_escape_what_the_cluster_says_and_carry_text_badges() {
    let mut s = session("web", "Failed", Heartbeat::Stale);
    s.source = "/tmp/<script>alert(1)</script>".into();
    let row = session_row(&s);
    assert!(!row.contains("<script>"), "{row}");
    assert!(row.contains("&lt;script&gt;"));
    assert!(row.contains("data-name=\"web\""));
    assert!(row.contains("data-heartbeat=\"stale\""));
    assert!(row.contains("href=\"/session/ns-web/web\""));
    // Status: a symbol and words, not colour alone.
    assert!(row.contains("class=\"badge bad\""));
    assert!(
        row.contains(
            "✕</span> Failed</span><br><span class=\"muted small\">HealthCheckFailed</span>"
        ),
        "{row}"
    );
    assert!(row.contains("class=\"hb stale\""));
    assert!(row.contains(">stale</span>"));
    // Times are machine-readable, for the page to tick.
    assert!(row.contains("<time datetime=\"2026-11-23T10:05:00Z\" data-rel>"));
    // A live heartbeat's renewals do not change the row.
    let a = session_row(&session("web", "Ready", Heartbeat::Live));
    let mut later = session("web", "Ready", Heartbeat::Live);
    later.heartbeat_at = crate::duration::parse_time(Some("2026-11-23T10:06:10Z"));
    assert_eq!(a, session_row(&later));
    for label in COLUMNS {
        assert!(row.contains(&format!("data-label=\"{label}\"")), "{label}");
    }
}

/// How long this takes is measured by `make bench` (shared/benches/budgets.rs).
#[test]
fn two_hundred_sessions_render_one_row_each_and_their_counts() {
    let sessions: Vec<SessionView> = (0..200)
        .map(|i| {
            let state = ["Ready", "Reconciling", "Failed"][i % 3];
            session(&format!("s{i:03}"), state, Heartbeat::Live)
        })
        .collect();
    let html = session_rows(&sessions);
    let counts = session_counts(&sessions);
    assert_eq!(html.matches("<tr data-key=").count(), 200);
    assert!(counts.contains("<span class=\"n\">200</span> <span class=\"l\">Sessions</span>"));
    assert!(counts.contains("<span class=\"n\">67</span> <span class=\"l\">Ready</span>"));
}

fn entry(status: &str, failed: Option<&str>, ms: &[(&str, u64)]) -> SyncEntry {
    let mut start = 0;
    SyncEntry {
        at: crate::duration::parse_time(Some("2026-11-23T10:05:00Z")).unwrap(),
        revision: "latest@sha256:abcdef".into(),
        status: status.into(),
        failed_phase: failed.map(str::to_string),
        message: if failed.is_some() {
            "Deployment/x/web: pod web-1 container web: CrashLoopBackOff".into()
        } else {
            String::new()
        },
        phases: ms
            .iter()
            .map(|(p, ms)| {
                let t = PhaseTime {
                    phase: p.to_string(),
                    start_ms: start,
                    ms: *ms,
                };
                start += ms + 5;
                t
            })
            .collect(),
    }
}

#[test]
fn the_sync_history_draws_each_phase_to_scale_and_marks_the_failure() {
    let history = vec![
        entry(
            "Ready",
            None,
            &[
                ("validate", 10),
                ("build", 40),
                ("push", 100),
                ("fetch", 300),
                ("apply", 4000),
            ],
        ),
        entry(
            "Failed",
            Some("apply"),
            &[
                ("validate", 10),
                ("build", 40),
                ("push", 100),
                ("fetch", 200),
                ("apply", 9000),
            ],
        ),
    ];
    let html = sync_history(&history, None);
    assert_eq!(html.matches("<svg class=\"bars\"").count(), 2);
    assert_eq!(html.matches("<rect ").count(), 10);
    // Newest first: the failed one leads, its apply phase marked failed.
    let first = html.find("Failed at apply").unwrap();
    let second = html.find("✓</span> Ready").unwrap();
    assert!(first < second);
    assert!(html.contains("class=\"ph-apply ph-failed\""));
    assert!(html.contains("slowest: apply 9.0 s"));
    assert!(html.contains("slowest: apply 4.0 s"));
    // Readable without the picture: an aria-label and a table.
    assert!(
        html.contains("aria-label=\"total 9.4 s: Validate: 10 ms, Build: 40 ms"),
        "{html}"
    );
    assert!(html.contains("<th scope=\"col\">Apply + health</th>"));
    assert!(html.contains("CrashLoopBackOff"));
    // The slowest phase of the longest sync spans most of the bar.
    assert!(html.contains("width=\"960.5\""), "{html}");
    assert!(sync_history(&[], None).contains("No sync history recorded yet"));
}

fn deployment(name: &str, replicas: i32, ready: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "app", "generation": 1, "uid": format!("uid-{name}")},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": "x"}]}}},
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                   "readyReplicas": ready, "availableReplicas": ready}
    }))
    .unwrap()
}

fn pod(name: &str, app: &str, status: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "app", "labels": {"app": app}},
        "spec": {"containers": [{"name": app, "image": "x"}]},
        "status": status
    }))
    .unwrap()
}

fn workloads() -> Workloads {
    let ready = serde_json::json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
    let unready = serde_json::json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [web]"}],
        "containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}]});
    let crashing = serde_json::json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{"name": "worker", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "lastState": {"terminated": {"exitCode": 1}},
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}}]});
    Workloads {
        deployments: vec![
            deployment("web", 2, 1),
            deployment("worker", 1, 0),
            deployment("api", 1, 1),
        ],
        pods: vec![
            pod("web-a", "web", ready.clone()),
            pod("web-b", "web", unready),
            pod("worker-a", "worker", crashing),
            pod("api-a", "api", ready),
        ],
        ..Default::default()
    }
}

#[test]
fn the_objects_tree_groups_by_kind_with_health_and_reasons() {
    let inventory = vec![
        "ConfigMap/app/settings".to_string(),
        "Deployment/app/web".into(),
        "Service/app/web".into(),
        "Namespace/app".into(),
    ];
    let w = workloads();
    let tree = object_tree(&inventory, Some(&w));
    let kinds: Vec<&str> = tree.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "ConfigMap", "Namespace"]);
    let deps = &tree[0].1;
    let by = |n: &str| deps.iter().find(|d| d.name == n).unwrap();
    // A rollout in progress: ready/desired and why not ready.
    let web = by("web");
    assert_eq!(web.tone, Tone::Progress);
    assert_eq!(web.health, "1/2 ready · rolling out");
    assert_eq!(
        web.reason.as_deref(),
        Some("pod web-b: ContainersNotReady: containers with unready status: [web]")
    );
    assert_eq!(web.pods.len(), 2);
    // A failing pod: the workload is failing, with the pod's reason.
    let worker = by("worker");
    assert_eq!(worker.tone, Tone::Bad);
    assert!(
        worker
            .reason
            .as_deref()
            .unwrap()
            .contains("CrashLoopBackOff (exit 1), restarted 4 time(s)"),
        "{worker:?}"
    );
    assert_eq!(worker.pods[0].restarts, 4);
    assert_eq!(worker.pods[0].state, "CrashLoopBackOff");
    assert_eq!(by("api").tone, Tone::Ok);
    assert_eq!(by("api").health, "1/1 ready");
    assert_eq!(tree[2].1[0].health, "applied");

    let html = objects(&tree, false);
    assert!(html.contains("data-object=\"Deployment/worker\" data-tone=\"bad\""));
    assert!(html.contains("1 restart") || html.contains("4 restarts"));
    assert!(html.contains("<details open class=\"kind\" data-kind=\"Deployment\">"));
    assert!(objects(&[], true).contains("another cluster"));
}

#[test]
fn quotas_show_use_against_limits() {
    assert_eq!(quantity("250m"), Some(0.25));
    assert_eq!(quantity("4Gi"), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
    assert_eq!(quantity("20"), Some(20.0));
    assert_eq!(quantity("1.5k"), Some(1500.0));
    assert_eq!(quantity("x"), None);
    let q: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "q", "namespace": "sb"},
        "status": {"hard": {"cpu": "2", "pods": "10"}, "used": {"cpu": "1900m", "pods": "3"}}
    }))
    .unwrap();
    let html = quota_use(&[&q]);
    assert!(
        html.contains("<span class=\"q-val\">1900m / 2</span>"),
        "{html}"
    );
    assert!(html.contains("class=\"quota bad\" data-resource=\"cpu\""));
    assert!(html.contains("aria-valuenow=\"95\""));
    assert!(html.contains("class=\"quota ok\" data-resource=\"pods\""));
    assert!(quota_use(&[]).contains("no quota"));
}

#[test]
fn the_cluster_mode_names_itself_in_words() {
    assert!(
        cluster_mode(ClusterMode::Run, 2, 0)
            .contains("<strong>Run</strong></span> <span class=\"mode-detail\">2 live sessions")
    );
    assert!(cluster_mode(ClusterMode::GitOps, 0, 1).contains("Flux applies into 1 namespace<"));
    assert!(cluster_mode(ClusterMode::Snowflake, 0, 0).contains("class=\"mode-badge snowflake\""));
}

#[test]
fn events_are_the_sessions_own_newest_first() {
    let ev = |name: &str, kind: &str, reason: &str, at: &str, warning: bool| -> KubeEvent {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}.{reason}"), "namespace": "app"},
            "involvedObject": {"kind": kind, "name": name},
            "reason": reason, "message": format!("{reason} happened"),
            "type": if warning { "Warning" } else { "Normal" },
            "lastTimestamp": at
        }))
        .unwrap()
    };
    let events = vec![
        ev(
            "run-x",
            "Kustomization",
            "ReconciliationSucceeded",
            "2026-11-23T10:00:00Z",
            false,
        ),
        ev(
            "worker-7d9-abcde",
            "Pod",
            "BackOff",
            "2026-11-23T10:02:00Z",
            true,
        ),
        ev("unrelated", "Pod", "Pulled", "2026-11-23T10:03:00Z", false),
        ev(
            "workers",
            "Deployment",
            "ScalingReplicaSet",
            "2026-11-23T10:01:00Z",
            false,
        ),
    ];
    let objects = BTreeSet::from(["worker".to_string()]);
    let rows = event_rows(&events, "run-x", &objects, 10);
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["BackOff", "ReconciliationSucceeded"]);
    assert!(rows[0].warning);
    let html = super::events(&rows);
    assert!(html.contains("✕</span> Warning"));
    assert!(html.contains("Pod/worker-7d9-abcde"));
}

#[test]
fn sandboxes_show_expiry_and_quota() {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sb", "labels": {"app.kubernetes.io/managed-by": "kubectl-gitops", "gitops.kubectl.dev/component": "sandbox"},
                     "annotations": {"gitops.kubectl.dev/expires-at": "2030-01-01T00:00:00Z", "gitops.kubectl.dev/owner": "ann@laptop"}},
        "status": {"phase": "Active"}
    }))
    .unwrap();
    let sb = crate::sandbox::from_namespace(&ns, 2).unwrap();
    let q: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "q", "namespace": "sb"},
        "status": {"hard": {"pods": "10"}, "used": {"pods": "3"}}
    }))
    .unwrap();
    let quotas = BTreeMap::from([("sb".to_string(), vec![&q])]);
    let now = crate::duration::parse_time(Some("2029-12-31T23:30:00Z")).unwrap();
    let html = sandbox_rows(std::slice::from_ref(&sb), &quotas, now);
    assert!(html.contains("data-sandbox=\"sb\""));
    assert!(html.contains("3 / 10"));
    assert!(html.contains("⟳") || html.contains("soon"), "{html}");
    assert!(html.contains("<time datetime=\"2030-01-01T00:00:00Z\" data-rel>"));
    assert!(html.contains("ann@laptop"));
    let later = crate::duration::parse_time(Some("2030-01-02T00:00:00Z")).unwrap();
    assert!(sandbox_rows(&[sb], &quotas, later).contains("expired"));
}

/// A whole page: the document, its title, styles and script, and which
/// navigation tab is current.
fn assert_whole_page(page: &str, title: &str, current: Option<&str>) {
    assert!(
        page.starts_with("<!doctype html><html lang=\"en\">"),
        "{page}"
    );
    assert!(page.ends_with("</script></body></html>"), "{page}");
    assert!(page.contains(&format!("<title>{title} · kubectl-gitops</title>")));
    assert!(page.contains(&format!("<h1>{title}</h1>")));
    assert!(!page.contains("<style></style>") && !page.contains("<script></script>"));
    let tabs = ["Sessions", "Sandboxes"];
    for tab in tabs {
        let marked = page.contains(&format!("aria-current=\"page\">{tab}</a>"));
        assert_eq!(marked, current == Some(tab), "{tab} tab: {page}");
    }
}

/// Renders every page from fixtures and checks each is whole and shows
/// what it was given; writes them to `$UI_PREVIEW_DIR` when set, to look
/// at the design without a cluster (`UI_PREVIEW_DIR=/tmp/p cargo test -p
/// kubectl-gitops --lib preview`).
#[test]
fn preview_pages_are_whole_and_show_their_fixtures() {
    use crate::ui::{Tab, index_body, page_html, sandboxes_body, session_body};
    let scratch = tempfile::tempdir().unwrap();
    let dir = std::env::var("UI_PREVIEW_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let now = Utc::now();
    let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
    let mut sessions: Vec<SessionView> = [
        ("checkout", "Ready", Heartbeat::Live),
        ("payments-api", "Reconciling", Heartbeat::Live),
        ("search", "Failed", Heartbeat::Live),
        ("old-experiment", "Ready", Heartbeat::Stale),
        ("docs-site", "Ready", Heartbeat::Kept),
        ("inventory", "Pending", Heartbeat::Live),
    ]
    .iter()
    .enumerate()
    .map(|(i, (n, st, hb))| {
        let mut s = session(n, st, *hb);
        s.last_sync = ago(20 + 40 * i as i64);
        s.started = ago(600 + 900 * i as i64);
        s.heartbeat_at = ago(if *hb == Heartbeat::Live { 3 } else { 400 });
        s
    })
    .collect();
    sessions[2].status.message = "Deployment/search/worker: pod worker-7d9 container worker: CrashLoopBackOff (exit 1), restarted 4 time(s)".into();
    let mode = cluster_mode(ClusterMode::Run, 4, 2);
    let index = page_html(
        "Sessions",
        Tab::Sessions,
        &mode,
        &index_body("", &session_counts(&sessions), &session_rows(&sessions), ""),
    );
    assert_whole_page(&index, "Sessions", Some("Sessions"));
    assert_eq!(index.matches("<tr data-key=").count(), sessions.len());
    for s in &sessions {
        assert!(
            index.contains(&format!("data-name=\"{}\"", s.name)),
            "{}",
            s.name
        );
    }
    assert!(index.contains("<span class=\"n\">6</span> <span class=\"l\">Sessions</span>"));
    assert!(
        index.contains("<strong>Run</strong>"),
        "the cluster mode: {index}"
    );
    std::fs::write(dir.join("index.html"), index).unwrap();

    let mut s = sessions[2].clone();
    s.inventory = vec![
        "Namespace/search".into(),
        "ConfigMap/search/settings".into(),
        "Deployment/search/web".into(),
        "Deployment/search/worker".into(),
        "Service/search/web".into(),
    ];
    let mut w = workloads();
    for d in &mut w.deployments {
        d.metadata.namespace = Some("search".into());
    }
    let tree = object_tree(&s.inventory, Some(&w));
    let mut history = vec![
        entry(
            "Ready",
            None,
            &[
                ("validate", 12),
                ("build", 48),
                ("push", 130),
                ("fetch", 420),
                ("apply", 2600),
            ],
        ),
        entry("Failed", Some("validate"), &[("validate", 9)]),
        entry(
            "Ready",
            None,
            &[
                ("validate", 10),
                ("build", 41),
                ("push", 95),
                ("fetch", 380),
                ("apply", 1900),
            ],
        ),
        entry(
            "Failed",
            Some("apply"),
            &[
                ("validate", 11),
                ("build", 44),
                ("push", 120),
                ("fetch", 300),
                ("apply", 9400),
            ],
        ),
    ];
    for (i, h) in history.iter_mut().enumerate() {
        h.at = now - chrono::Duration::seconds(300 - 60 * i as i64);
    }
    history[1].message = "deploy/web.yaml:7: mapping values are not allowed in this context".into();
    let conds = vec![
        (
            "Kustomization",
            Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "HealthCheckFailed".into(),
                message:
                    "health check failed after 9.4s: Deployment/search/worker: CrashLoopBackOff"
                        .into(),
                observed_generation: None,
                last_transition_time: Some(crate::ui::render::rfc3339(
                    now - chrono::Duration::seconds(40),
                )),
            },
        ),
        (
            "OCIRepository",
            Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Succeeded".into(),
                message: "stored artifact for digest 'latest@sha256:abcdef'".into(),
                observed_generation: None,
                last_transition_time: None,
            },
        ),
    ];
    let ev =
        |name: &str, kind: &str, reason: &str, msg: &str, secs: i64, warning: bool| -> KubeEvent {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}.{reason}"), "namespace": "search"},
                "involvedObject": {"kind": kind, "name": name},
                "reason": reason, "message": msg, "count": if warning { 5 } else { 1 },
                "type": if warning { "Warning" } else { "Normal" },
                "lastTimestamp": crate::ui::render::rfc3339(now - chrono::Duration::seconds(secs))
            }))
            .unwrap()
        };
    let events_list = vec![
        ev(
            "worker-a",
            "Pod",
            "BackOff",
            "Back-off restarting failed container worker",
            12,
            true,
        ),
        ev(
            &s.name,
            "Kustomization",
            "HealthCheckFailed",
            "health check failed after 9.4s",
            40,
            true,
        ),
        ev(
            "web-b",
            "Pod",
            "Unhealthy",
            "Readiness probe failed: HTTP 503",
            50,
            true,
        ),
        ev(
            &s.name,
            "OCIRepository",
            "NewArtifact",
            "stored artifact with revision 'latest@sha256:abcdef'",
            70,
            false,
        ),
    ];
    let names: BTreeSet<String> = ["worker".to_string(), "web".into()].into();
    let sections: crate::ui::Sections = [
        ("summary", session_summary(&s)),
        ("history", sync_history(&history, s.last_sync)),
        ("objects", objects(&tree, false)),
        ("conditions", conditions(&conds)),
        (
            "events",
            events(&event_rows(&events_list, &s.name, &names, 20)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let page = page_html(&s.name, Tab::None, &mode, &session_body(&s, &sections));
    assert_whole_page(&page, "search", None);
    assert!(page.contains("data-namespace=\"ns-search\" data-name=\"search\""));
    // Every section holds what it was given; none is left loading.
    for (id, content) in &sections {
        assert!(!content.is_empty(), "{id}");
        assert!(
            page.contains(&format!(
                "<div id=\"{id}\" aria-live=\"off\">{content}</div>"
            )),
            "{id}: {page}"
        );
    }
    assert!(!page.contains("Loading…"));
    for reason in ["BackOff", "HealthCheckFailed", "Unhealthy", "NewArtifact"] {
        assert!(sections["events"].contains(reason), "{reason}");
    }
    assert!(sections["history"].contains("mapping values are not allowed"));
    std::fs::write(dir.join("session.html"), page).unwrap();

    let nsj = |name: &str, expires: &str| -> k8s_openapi::api::core::v1::Namespace {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubectl-gitops", "gitops.kubectl.dev/component": "sandbox"},
                         "annotations": {"gitops.kubectl.dev/expires-at": expires, "gitops.kubectl.dev/owner": "ann@laptop"},
                         "creationTimestamp": rfc3339(now - chrono::Duration::hours(3))},
            "status": {"phase": "Active"}
        }))
        .unwrap()
    };
    let sbs: Vec<Sandbox> = [
        nsj("team-a", &rfc3339(now + chrono::Duration::hours(5))),
        nsj("review-42", &rfc3339(now + chrono::Duration::minutes(20))),
    ]
    .iter()
    .filter_map(|n| crate::sandbox::from_namespace(n, 2))
    .collect();
    let q: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "q", "namespace": "team-a"},
        "status": {"hard": {"cpu": "2", "memory": "4Gi", "pods": "20"}, "used": {"cpu": "1500m", "memory": "3900Mi", "pods": "4"}}
    }))
    .unwrap();
    let quotas = BTreeMap::from([("team-a".to_string(), vec![&q])]);
    let page = page_html(
        "Sandboxes",
        Tab::Sandboxes,
        &mode,
        &sandboxes_body("", &sandbox_rows(&sbs, &quotas, now)),
    );
    assert_whole_page(&page, "Sandboxes", Some("Sandboxes"));
    for name in ["team-a", "review-42"] {
        assert!(page.contains(&format!("data-sandbox=\"{name}\"")), "{name}");
    }
    assert!(
        page.contains("4 / 20"),
        "team-a's pods against its quota: {page}"
    );
    std::fs::write(dir.join("sandboxes.html"), page).unwrap();
}

#[test]
fn the_head_says_the_last_sync_failed_while_flux_still_reconciles() {
    let s = session("web", "Reconciling", Heartbeat::Live);
    let failed = entry("Failed", Some("apply"), &[("apply", 10)]);
    let head = session_head(Some(&s), Some(&failed));
    assert!(head.contains("↻</span> Reconciling"), "{head}");
    assert!(head.contains("Last sync failed at apply"), "{head}");
    assert!(head.contains("CrashLoopBackOff"));
    let ok = entry("Ready", None, &[("apply", 10)]);
    assert!(!session_head(Some(&s), Some(&ok)).contains("Last sync failed"));
    assert!(session_head(None, None).contains("no longer exists"));
}

/// Bare pods in the tree, read by [`crate::pod::Readiness`] as the sync's
/// health reads them: one that ran to completion is done (green), one
/// being deleted is on its way out (not green, whatever its conditions).
#[test]
fn bare_pods_show_as_the_health_check_judges_them() {
    let completed = serde_json::json!({"phase": "Succeeded",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]});
    let ready = serde_json::json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]});
    let mut leaving = pod("leaving", "leaving", ready.clone());
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
    let w = Workloads {
        pods: vec![
            pod("once", "once", completed),
            pod("serving", "serving", ready),
            leaving,
        ],
        ..Default::default()
    };
    let inventory = ["Pod/app/once", "Pod/app/serving", "Pod/app/leaving"].map(String::from);
    let tree = object_tree(&inventory, Some(&w));
    let pods = &tree.iter().find(|(k, _)| k == "Pod").unwrap().1;
    let shown = |n: &str| {
        let p = pods.iter().find(|p| p.name == n).unwrap();
        (p.tone, p.health.as_str(), p.reason.clone())
    };
    assert_eq!(shown("once"), (Tone::Ok, "completed", None));
    assert_eq!(shown("serving"), (Tone::Ok, "ready", None));
    assert_eq!(shown("leaving"), (Tone::Progress, "not ready", None));
    let states: Vec<(String, bool)> = w
        .pods
        .iter()
        .map(|p| {
            let i = pod_info(p);
            (i.state, i.ready)
        })
        .collect();
    assert_eq!(
        states,
        [
            ("Completed".to_string(), true),
            ("Ready".to_string(), true),
            ("Terminating".to_string(), false)
        ]
    );
}
