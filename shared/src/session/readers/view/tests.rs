use super::*;

fn lease(
    ns: &str,
    name: &str,
    holder: Option<&str>,
    renewed: &str,
    extra: serde_json::Value,
) -> Lease {
    let mut annotations = serde_json::json!({
        "gitops.kubectl.dev/pid": "4242",
        "gitops.kubectl.dev/dir": format!("/home/ann/src/{name}"),
        "gitops.kubectl.dev/registry": "localhost:5001",
        "gitops.kubectl.dev/mode": "sandboxed",
        "gitops.kubectl.dev/sandbox": ns,
        "gitops.kubectl.dev/version": "0.1.0",
        "gitops.kubectl.dev/started-at": "2026-11-23T10:00:00.000Z",
        "gitops.kubectl.dev/last-revision": "latest@sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "gitops.kubectl.dev/last-sync": "2026-11-23T10:05:00.000Z",
        "gitops.kubectl.dev/ephemeral-sandbox": "true",
        "gitops.kubectl.dev/port-forwards": "",
        "gitops.kubectl.dev/owner": "ann@laptop"
    });
    if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "renewTime": renewed}
    }))
    .unwrap()
}

fn kustomization(ns: &str, name: &str, ready: &str, reason: &str, message: &str) -> Kustomization {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"sourceRef": {"kind": "OCIRepository", "name": name}, "prune": true, "interval": "10m"},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message, "lastTransitionTime": "2026-11-23T10:05:00Z"}],
            "lastAppliedRevision": "latest@sha256:2222222222222222222222222222222222222222222222222222222222222222",
            "inventory": {"entries": [{"id": format!("{ns}_app__ConfigMap"), "v": "v1"}]}
        }
    }))
    .unwrap()
}

fn fixture() -> Vec<SessionView> {
    let now = DateTime::parse_from_rfc3339("2026-11-23T10:06:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let leases = vec![
        lease(
            "run-web",
            "run-web",
            Some("ann@laptop"),
            "2026-11-23T10:05:50.000000Z",
            serde_json::json!({}),
        ),
        lease(
            "run-api",
            "run-api",
            Some("bob@desk"),
            "2026-11-23T10:01:00.000000Z",
            serde_json::json!({"gitops.kubectl.dev/port-forwards": "resource=svc/api,port=8080"}),
        ),
        lease(
            "team",
            "run-kept",
            None,
            "2026-11-23T10:01:00.000000Z",
            serde_json::json!({"gitops.kubectl.dev/mode": "cluster", "gitops.kubectl.dev/sandbox": ""}),
        ),
    ];
    let kss = vec![
        kustomization(
            "run-web",
            "run-web",
            "True",
            "ReconciliationSucceeded",
            "Applied revision",
        ),
        kustomization(
            "run-api",
            "run-api",
            "False",
            "HealthCheckFailed",
            "timeout waiting for: [Deployment/run-api/api status: 'InProgress']",
        ),
    ];
    let repo: OCIRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "run-web", "namespace": "run-web"},
        "spec": {"url": "oci://localhost:5001/gitops-run/run-web", "interval": "10m"},
        "status": {"artifact": {"revision": "latest@sha256:2222222222222222222222222222222222222222222222222222222222222222"}}
    }))
    .unwrap();
    build_views(&leases, &kss, &[repo], &[], now)
}

#[test]
fn views_join_leases_and_flux_status() {
    let views = fixture();
    let names: Vec<_> = views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["run-api", "run-web", "run-kept"],
        "sorted by namespace, then name"
    );
    let web = &views[1];
    assert_eq!(
        (web.heartbeat, web.status.summary().as_str()),
        (Heartbeat::Live, "Ready")
    );
    assert_eq!((web.user.as_str(), web.host.as_str()), ("ann", "laptop"));
    assert_eq!(web.inventory, ["ConfigMap/run-web/app"]);
    let api = &views[0];
    assert_eq!(api.heartbeat, Heartbeat::Stale);
    assert_eq!(api.status.summary(), "Failed (HealthCheckFailed)");
    assert_eq!(api.port_forwards, ["resource=svc/api,port=8080"]);
    let now = DateTime::parse_from_rfc3339("2026-11-23T10:06:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(api.lease_duration, Duration::from_secs(30));
    assert_eq!(api.stale_for(now), Some(Duration::from_secs(270)));
    // Staleness counts from the end of the session's own lease duration.
    let mut long = api.clone();
    long.lease_duration = Duration::from_secs(120);
    assert_eq!(long.stale_for(now), Some(Duration::from_secs(180)));
    let kept = &views[2];
    assert_eq!(
        (kept.heartbeat, kept.status.state.as_str()),
        (Heartbeat::Kept, "Pending")
    );
    assert_eq!(kept.sandbox, None);
    assert_eq!(kept.user, "ann", "falls back to the owner annotation");
}

/// The JSON of `gitops-sessions -o json` is an interface: it only changes on purpose.
/// Run with UPDATE_SNAPSHOTS=1 to rewrite the snapshot after an intended change.
#[test]
fn json_output_matches_the_snapshot() {
    let json = serde_json::to_string_pretty(&fixture()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/session/readers/view/snapshot.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with UPDATE_SNAPSHOTS=1 once",
            path.display()
        )
    });
    assert_eq!(
        json, expected,
        "the JSON output changed; if on purpose, run with UPDATE_SNAPSHOTS=1"
    );
}
