//! The first sync's materialisation, over the fake API server: starting a
//! session writes nothing; the first sync makes the Lease, then the SOPS
//! Secret, then the Flux objects, in that order, and only once; and a
//! look-alike of a name the session wants (an object it did not make) is
//! refused before anything is written. (An own sandbox, made before the
//! Lease, needs the sandbox boundary's admission policies, which the fake
//! does not serve: the e2e tests cover it.)

use kube::api::ObjectMeta;

use super::*;
use crate::fakeapi::{FakeApi, Request};
use crate::flux::{Kustomization, KustomizationSpec};
use crate::session::testkit;

const NS: &str = "team";
const ME: &str = "bob@desk";

fn config(mode: Mode, key: Option<&str>) -> SessionConfig {
    testkit::config(NS, ME, mode, key)
}

/// The requests that change something (not GET), as `METHOD path status`.
fn writes(api: &FakeApi) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(Request::line)
        .collect()
}

#[tokio::test]
async fn the_first_sync_makes_the_lease_then_the_secret_then_the_flux_objects() {
    let api = FakeApi::start().await;
    let cfg = config(Mode::Cluster, Some("AGE-SECRET-KEY-1TEST"));
    let mut session = Session::start(api.client.clone(), cfg, testkit::quiet())
        .await
        .unwrap();
    // Started: nothing written, nothing to clean up.
    assert_eq!(writes(&api), Vec::<String>::new());
    assert_eq!(session.stage, Stage::Prepared);
    assert!(session.leftovers().is_empty());

    // What the first sync does once it pushed (see `wait_for_flux`).
    session.materialize().await.unwrap();
    assert_eq!(
        session.stage,
        Stage::Materialized {
            flux_objects: false
        }
    );
    session.ensure_objects().await.unwrap();
    assert_eq!(session.stage, Stage::Materialized { flux_objects: true });
    let w = writes(&api);
    let at = |needle: &str| {
        w.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {w:#?}"))
    };
    let lease = at("/apis/coordination.k8s.io/v1/namespaces/team/leases");
    let secret = at("/api/v1/namespaces/team/secrets/run-a-sops");
    let source = at("/ocirepositories/run-a");
    let applier = at("/kustomizations/run-a");
    assert!(
        lease < secret && secret < source && source < applier,
        "{w:#?}"
    );
    assert!(w[lease].starts_with("POST "), "{w:#?}");
    // What the API server holds: the Lease (held by this session) and the
    // objects, all labelled as the session's.
    let held: Lease = api.get(NS, "run-a").unwrap();
    assert_eq!(
        held.spec.unwrap().holder_identity.as_deref(),
        Some(ME),
        "the Lease is held"
    );
    let ks: Kustomization = api.get(NS, "run-a").unwrap();
    assert_eq!(
        ks.metadata.labels.unwrap().get(crate::labels::SESSION),
        Some(&"run-a".to_string())
    );
    // A second sync makes nothing again.
    let before = writes(&api).len();
    session.materialize().await.unwrap();
    assert_eq!(writes(&api).len(), before);
    session.stop_heartbeat();
}

#[tokio::test]
async fn a_look_alike_flux_object_is_refused_at_start_and_nothing_is_written() {
    let api = FakeApi::start().await;
    // A Kustomization of the session's name that someone else made.
    let mut foreign = Kustomization::new("run-a", KustomizationSpec::default());
    foreign.metadata = ObjectMeta {
        name: Some("run-a".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    api.put(foreign);
    let e = match Session::start(
        api.client.clone(),
        config(Mode::Cluster, None),
        testkit::quiet(),
    )
    .await
    {
        Ok(_) => panic!("a look-alike Kustomization was not refused"),
        Err(e) => e,
    };
    assert!(matches!(e, EngineError::Foreign(_)), "{e:?}");
    assert!(e.to_string().contains("Kustomization"), "{e}");
    assert_eq!(writes(&api), Vec::<String>::new());
}

#[tokio::test]
async fn a_namespace_of_the_session_s_name_is_refused_unless_it_is_its_sandbox() {
    let api = FakeApi::start().await;
    // A plain namespace, not a sandbox.
    api.put(k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some("run-a".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let e = match Session::start(
        api.client.clone(),
        config(Mode::Sandboxed, None),
        testkit::quiet(),
    )
    .await
    {
        Ok(_) => panic!("a look-alike namespace was not refused"),
        Err(e) => e,
    };
    assert!(matches!(e, EngineError::Foreign(_)), "{e:?}");
    assert_eq!(writes(&api), Vec::<String>::new());

    // Someone else's sandbox of that name.
    let api = FakeApi::start().await;
    api.put(testkit::own_sandbox(
        "run-a",
        "run-a",
        "run-a",
        "ann@laptop",
    ));
    let e = match Session::start(
        api.client.clone(),
        config(Mode::Sandboxed, None),
        testkit::quiet(),
    )
    .await
    {
        Ok(_) => panic!("someone else's sandbox was not refused"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, EngineError::SandboxTaken { owner, .. } if owner == "ann@laptop"),
        "{e:?}"
    );
    assert_eq!(writes(&api), Vec::<String>::new());
}
