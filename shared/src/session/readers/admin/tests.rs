//! `prune` and `delete` over the fake API server: the claim that lets only
//! one remover go on, and that leaves alone a session that came back.

use std::time::Duration;

use axum::http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::*;
use crate::fakeapi::{FakeApi, Request};
use crate::session::record::lease::removed_by;
use crate::session::testkit::{self, HOLDER};

const NS: &str = "team";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/run-a";
const KS: &str = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/team/kustomizations/run-a";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A session `run-a` in `team`: its Lease, Kustomization and source.
async fn session(lease: Lease) -> FakeApi {
    let api = FakeApi::start().await;
    let mut ks = testkit::kustomization(NS, "run-a");
    ks.metadata.finalizers = None;
    api.put(ks);
    api.put(testkit::source(NS, "run-a"));
    api.put(lease);
    api
}

fn lines(api: &FakeApi, method: &str, path: &str) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .map(Request::line)
        .collect()
}

fn renew(api: &crate::fakeapi::Handle) {
    api.modify(NS, "run-a", |l| {
        if let Some(s) = l.spec.as_mut() {
            s.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        }
    });
}

#[tokio::test]
async fn of_two_concurrent_prunes_of_a_stale_session_one_removes_it() {
    let api = session(testkit::stale_lease(NS, "run-a")).await;
    let (a, b) = tokio::join!(
        prune(&api.client, Some(NS), Duration::ZERO, TIMEOUT),
        prune(&api.client, Some(NS), Duration::ZERO, TIMEOUT),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let pruned: Vec<&str> = a.iter().chain(&b).map(|p| p.name.as_str()).collect();
    assert_eq!(pruned, ["run-a"], "{a:?} {b:?}");
    // Both claimed with the resourceVersion they judged: one claim held,
    // the other was refused (or found the Lease gone), and that prune left
    // the session alone.
    let claims = lines(&api, "PATCH", LEASE);
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert!(claims.contains(&format!("PATCH {LEASE} 200")), "{claims:?}");
    assert!(
        claims.contains(&format!("PATCH {LEASE} 409"))
            || claims.contains(&format!("PATCH {LEASE} 404")),
        "{claims:?}"
    );
    for claim in api.requests().iter().filter(|r| r.method == "PATCH") {
        assert_eq!(claim.content_type, "application/merge-patch+json");
        let body = claim.body.as_ref().unwrap();
        assert!(body["metadata"]["resourceVersion"].is_string(), "{body}");
    }
    assert_eq!(lines(&api, "DELETE", KS), [format!("DELETE {KS} 200")]);
    assert_eq!(
        lines(&api, "DELETE", LEASE),
        [format!("DELETE {LEASE} 200")]
    );
}

#[tokio::test]
async fn a_session_that_renews_between_judge_and_claim_is_left_alone() {
    let api = session(testkit::stale_lease(NS, "run-a")).await;
    // Judged stale; the session renews just before the claim arrives.
    api.before(Method::PATCH, LEASE, renew);
    let pruned = prune(&api.client, Some(NS), Duration::ZERO, TIMEOUT)
        .await
        .unwrap();
    assert!(pruned.is_empty(), "{pruned:?}");
    assert_eq!(lines(&api, "PATCH", LEASE), [format!("PATCH {LEASE} 409")]);
    assert!(
        !api.requests().iter().any(|r| r.method == "DELETE"),
        "{:?}",
        api.requests()
    );
    let lease = api.get::<Lease>(NS, "run-a").unwrap();
    assert_eq!(record::holder(&lease), HOLDER);

    // `delete` without --force, likewise: the session came back.
    api.put(testkit::stale_lease(NS, "run-a"));
    api.before(Method::PATCH, LEASE, renew);
    let s = find(&api.client, Some(NS), "run-a").await.unwrap();
    let e = delete(&api.client, &s, false, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(e, ReaderError::CameBack(ref n) if n == "run-a"),
        "{e}"
    );
    assert!(!api.requests().iter().any(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn a_live_session_is_deleted_only_with_force() {
    let api = session(testkit::live_lease(NS, "run-a")).await;
    let s = find(&api.client, Some(NS), "run-a").await.unwrap();
    let e = delete(&api.client, &s, false, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(e, ReaderError::Live { ref name, ref pid, .. } if name == "run-a" && pid == "4242"),
        "{e}"
    );
    let writes = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(Request::line)
            .collect::<Vec<_>>()
    };
    assert!(writes(&api).is_empty(), "{:?}", writes(&api));
    assert_eq!(
        record::holder(&api.get::<Lease>(NS, "run-a").unwrap()),
        HOLDER
    );

    // Forced: claimed first (unconditionally: it is live), then removed.
    let removed = delete(&api.client, &s, true, TIMEOUT).await.unwrap();
    assert_eq!(
        removed,
        ["kustomization/run-a", "ocirepository/run-a", "lease/run-a"]
    );
    let w = writes(&api);
    assert_eq!(
        w.first().map(String::as_str),
        Some(&*format!("PATCH {LEASE} 200")),
        "{w:?}"
    );
    let claim = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    let body = claim.body.unwrap();
    assert!(body["metadata"]["resourceVersion"].is_null(), "{body}");
    let holder = body["spec"]["holderIdentity"].as_str().unwrap().to_string();
    let mut claimed = testkit::live_lease(NS, "run-a");
    claimed.spec.as_mut().unwrap().holder_identity = Some(holder);
    assert_eq!(removed_by(&claimed), Some(crate::process::owner().as_str()));
    assert!(api.get::<Lease>(NS, "run-a").is_none());
}
