//! The takeover's rules over the fake API server: what is written to the
//! original (only its suspend and the takeover's annotations, on the
//! resourceVersion read, again after a conflict), who is refused, what a
//! hand-back touches, and the order of a cleanup that hands an app back.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use super::claim::{self, Holder};
use super::{App, TakeoverError, keys};
use crate::fakeapi::FakeApi;
use crate::flux::{GitRepository, Kustomization};
use crate::session::testkit;

const NS: &str = "flux-system";
const ORIGINAL: &str =
    "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/podinfo";

fn original(annotations: serde_json::Value, suspend: Option<bool>) -> Kustomization {
    serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"namespace": NS, "name": "podinfo", "annotations": annotations},
        "spec": {"interval": "10m", "path": "./apps/podinfo", "prune": true, "suspend": suspend,
                 "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
    }))
    .unwrap()
}

fn app(ks: &Kustomization) -> App {
    App {
        kind: super::AppKind::Kustomization,
        namespace: NS.into(),
        name: "podinfo".into(),
        source: "GitRepository flux-system/flux-system@main".into(),
        path: "apps/podinfo".into(),
        spec: serde_json::to_value(&ks.spec).unwrap(),
        inventory: Vec::new(),
    }
}

fn holder(session: &str) -> Holder {
    Holder {
        namespace: NS.into(),
        session: session.into(),
        owner: "ann@laptop".into(),
    }
}

fn patches(api: &FakeApi) -> Vec<serde_json::Value> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == ORIGINAL)
        .filter_map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_takeover_writes_only_its_fields_on_the_version_read_and_again_after_a_conflict() {
    let api = FakeApi::start().await;
    let ks = api.put(original(json!({"team": "a"}), None));
    // Flux updates the object between the read and the write: a conflict,
    // then a second read and write.
    api.before(Method::PATCH, ORIGINAL, |h| {
        h.update::<Kustomization>(NS, "podinfo", |k| {
            k.metadata.labels = Some([("touched".to_string(), "by flux".to_string())].into());
        });
    });
    let written = claim::take(&api.client, &app(&ks), &holder("run-a"))
        .await
        .unwrap();
    assert_eq!(written.data["spec"]["suspend"], true);
    let a = written.metadata.annotations.unwrap();
    assert_eq!(a[keys::TAKEN_OVER_BY], "flux-system/run-a");
    assert_eq!(a[keys::TAKEN_OVER_OWNER], "ann@laptop");
    assert_eq!(a[keys::RECONCILE], "disabled");
    assert_eq!(a["team"], "a");
    // What changed meanwhile is kept.
    assert_eq!(written.metadata.labels.unwrap()["touched"], "by flux");
    let sent = patches(&api);
    assert_eq!(sent.len(), 2, "{sent:#?}");
    for p in &sent {
        // Only the takeover's fields, on a resourceVersion.
        assert!(p["metadata"]["resourceVersion"].is_string(), "{p}");
        let fields: Vec<&String> = p["spec"].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["suspend"]);
        assert_eq!(p.as_object().unwrap().len(), 2, "{p}");
    }
    let statuses: Vec<u16> = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [409, 200]);
    // Taken again by the same session (a restarted run): nothing written.
    claim::take(&api.client, &app(&ks), &holder("run-a"))
        .await
        .unwrap();
    assert_eq!(patches(&api).len(), 2);
}

#[tokio::test]
async fn another_session_or_a_suspend_from_elsewhere_is_refused_without_a_write() {
    let api = FakeApi::start().await;
    // Held by a session whose Lease is gone: said, with what hands it back.
    let held = api.put(original(
        json!({keys::TAKEN_OVER_BY: "flux-system/run-b", keys::TAKEN_OVER_OWNER: "bob@desk"}),
        Some(true),
    ));
    let e = claim::take(&api.client, &app(&held), &holder("run-a"))
        .await
        .unwrap_err();
    match &e {
        TakeoverError::Held {
            holder,
            owner,
            state,
            ..
        } => {
            assert_eq!(
                (holder.as_str(), owner.as_str()),
                ("flux-system/run-b", "bob@desk")
            );
            assert!(state.contains("gitops-sessions prune"), "{state}");
        }
        e => panic!("{e}"),
    }
    // Its holder is live: said so.
    api.put(testkit::live_lease(NS, "run-b"));
    let e = claim::available(&api.client, &app(&held), &holder("run-a"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("run-b of bob@desk (live)"), "{e}");
    // Suspended by someone else (`flux suspend`): refused, saying how to resume.
    api.put(original(json!({}), Some(true)));
    let e = claim::take(&api.client, &app(&held), &holder("run-a"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("flux resume kustomization podinfo -n flux-system"),
        "{e}"
    );
    assert!(patches(&api).is_empty());
}

#[tokio::test]
async fn a_hand_back_touches_only_an_original_its_session_holds() {
    let api = FakeApi::start().await;
    let ks = api.put(original(
        json!({keys::RECONCILE: "disabled", "team": "a"}),
        None,
    ));
    claim::take(&api.client, &app(&ks), &holder("run-a"))
        .await
        .unwrap();
    // Not added by the takeover (it was there): kept at the hand-back.
    assert!(
        !api.get::<Kustomization>(NS, "podinfo")
            .unwrap()
            .metadata
            .annotations
            .unwrap()
            .contains_key(keys::ADDED_RECONCILE)
    );
    // Another session's hand-back: nothing written.
    assert!(
        claim::hand_back(
            &api.client,
            super::AppKind::Kustomization,
            NS,
            "podinfo",
            "flux-system/run-b"
        )
        .await
        .unwrap()
        .is_none()
    );
    assert_eq!(patches(&api).len(), 1);
    let asked = claim::hand_back(
        &api.client,
        super::AppKind::Kustomization,
        NS,
        "podinfo",
        "flux-system/run-a",
    )
    .await
    .unwrap()
    .unwrap();
    let back = api.get::<Kustomization>(NS, "podinfo").unwrap();
    assert_eq!(back.spec.suspend, None);
    let a = back.metadata.annotations.unwrap();
    for k in [
        keys::TAKEN_OVER_BY,
        keys::TAKEN_OVER_OWNER,
        keys::TAKEN_OVER_AT,
    ] {
        assert!(!a.contains_key(k), "{k}");
    }
    assert_eq!(a[keys::RECONCILE], "disabled");
    assert_eq!(a["team"], "a");
    assert_eq!(a[crate::flux::RECONCILE_REQUESTED_AT], asked.at);
    // Handed back already: nothing more.
    assert!(
        claim::hand_back(
            &api.client,
            super::AppKind::Kustomization,
            NS,
            "podinfo",
            "flux-system/run-a"
        )
        .await
        .unwrap()
        .is_none()
    );
}

/// The cleanup of a session that took over: its Kustomization is made to
/// orphan what it applied before it is deleted, the original is resumed
/// only after that deletion finished, and Git is fetched again. (No
/// controller runs here: the wait for GitOps mode ends in its timeout, and
/// the cleanup says so and goes on.)
#[tokio::test]
async fn the_cleanup_orphans_the_replacement_then_resumes_the_original_and_fetches_git() {
    let api = FakeApi::start().await;
    let ks = api.put(original(json!({}), None));
    api.put::<GitRepository>(
        serde_json::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"namespace": NS, "name": "flux-system"},
            "spec": {"url": "http://git.example/fleet.git", "ref": {"branch": "main"}},
        }))
        .unwrap(),
    );
    claim::take(&api.client, &app(&ks), &holder("run-a"))
        .await
        .unwrap();
    api.put(testkit::kustomization(NS, "run-a"));
    api.put(testkit::stale_lease(NS, "run-a"));
    let ours = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/run-a";
    // kustomize-controller removes its finalizer once the deletion is asked.
    let controller = testkit::kustomize_controller(&api, NS, "run-a", Duration::from_millis(200));
    let (removed, back) = crate::session::engine::cleanup::cleanup_and_hand_back(
        &api.client,
        NS,
        "run-a",
        None,
        testkit::HOLDER,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    controller.await.unwrap();
    assert!(back.is_empty());
    assert!(
        removed
            .iter()
            .any(|r| r
                .starts_with("the takeover of Kustomization flux-system/podinfo (resumed, but")),
        "{removed:#?}"
    );
    let lines: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.line())
        .collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line} not in {lines:#?}"))
    };
    let released = at(&format!("PATCH {ours} 200"));
    let deleted = at(&format!("DELETE {ours} 200"));
    let resumed = lines
        .iter()
        .rposition(|l| l == &format!("PATCH {ORIGINAL} 200"))
        .unwrap();
    let fetched = at(
        "PATCH /apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system 200",
    );
    assert!(
        released < deleted && deleted < resumed && resumed < fetched,
        "{lines:#?}"
    );
    let release = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path == ours)
        .and_then(|r| r.body)
        .unwrap();
    assert_eq!(
        release["spec"],
        json!({"prune": false, "deletionPolicy": "Orphan"})
    );
    // The original is resumed and the Lease gone.
    let now = api.get::<Kustomization>(NS, "podinfo").unwrap();
    assert_eq!(now.spec.suspend, None);
    assert!(
        api.get::<k8s_openapi::api::coordination::v1::Lease>(NS, "run-a")
            .is_none()
    );
}
