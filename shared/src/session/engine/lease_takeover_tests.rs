//! A restarted session and the Lease its last run left, over the fake API
//! server: a stale Lease is taken over with the resourceVersion it was
//! judged at as the precondition of the write; a live one is refused
//! ([`EngineError::AlreadyRunning`]), also when it came to life between
//! the judgement and the write.

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::*;
use crate::fakeapi::FakeApi;
use crate::session::testkit::{self, HOLDER};

const NS: &str = "team";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/team/leases/run-a";
const ME: &str = "bob@desk";

fn config() -> SessionConfig {
    testkit::config(NS, ME, Mode::Cluster, None)
}

fn lease_writes(api: &FakeApi) -> Vec<crate::fakeapi::Request> {
    api.requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.starts_with(LEASE.trim_end_matches("/run-a")))
        .collect()
}

#[tokio::test]
async fn a_stale_lease_is_taken_over_with_the_resource_version_judged() {
    let api = FakeApi::start().await;
    let stale = api.put(testkit::stale_lease(NS, "run-a"));
    let seen = stale.metadata.resource_version.clone().unwrap();
    let mut session = Session::start(api.client.clone(), config(), testkit::quiet())
        .await
        .unwrap();
    // Nothing written before the first sync.
    assert!(lease_writes(&api).is_empty());
    assert_eq!(session.lease.seen(), Some(seen.as_str()));
    session.materialize().await.unwrap();
    let writes = lease_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].line(), format!("PUT {LEASE} 200"));
    let body = writes[0].body.as_ref().unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], seen.as_str(), "{body}");
    let lease = api.get::<Lease>(NS, "run-a").unwrap();
    assert_eq!(record::holder(&lease), ME);
    drop(session);
}

#[tokio::test]
async fn a_live_lease_is_refused() {
    let api = FakeApi::start().await;
    api.put(testkit::live_lease(NS, "run-a"));
    let e = Session::start(api.client.clone(), config(), testkit::quiet())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, EngineError::AlreadyRunning { holder, pid, .. } if holder == HOLDER && pid == "4242"),
        "{e}"
    );
    assert!(lease_writes(&api).is_empty());
}

#[tokio::test]
async fn a_lease_renewed_after_it_was_judged_is_not_overwritten() {
    let api = FakeApi::start().await;
    api.put(testkit::stale_lease(NS, "run-a"));
    let mut session = Session::start(api.client.clone(), config(), testkit::quiet())
        .await
        .unwrap();
    // The last run comes back between the judgement and the first sync.
    api.modify(NS, "run-a", |l| {
        if let Some(s) = l.spec.as_mut() {
            s.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            s.lease_duration_seconds = Some(30);
        }
    });
    let e = session.materialize().await.err().unwrap();
    assert!(
        matches!(&e, EngineError::AlreadyRunning { holder, .. } if holder == HOLDER),
        "{e}"
    );
    let writes: Vec<String> = lease_writes(&api).iter().map(|r| r.line()).collect();
    assert_eq!(writes, [format!("PUT {LEASE} 409")]);
    let lease = api.get::<Lease>(NS, "run-a").unwrap();
    assert_eq!(record::holder(&lease), HOLDER);
    assert!(
        record::renewed_at(&lease).is_some_and(|t| Utc::now() - t < chrono::Duration::seconds(5))
    );
}
