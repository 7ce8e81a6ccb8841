//! The cleanup's order and reach, over the fake API server: the applier
//! first and its deletion awaited (Flux prunes what it applied while it
//! goes), then the source, the Secrets, the sandbox the session made and
//! the Lease; nothing that is not labelled as the session's.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};

use super::cleanup;
use crate::fakeapi::FakeApi;
use crate::flux::{Kustomization, OCIRepository};
use crate::session::testkit::{self, HOLDER, deletes};

const KS: &str = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/run-a/kustomizations/run-a";

#[tokio::test]
async fn the_applier_goes_first_and_is_awaited_then_source_secrets_sandbox_lease() {
    let api = FakeApi::start().await;
    // A sandboxed session: its objects live in the sandbox it made.
    api.put(testkit::own_sandbox("run-a", "run-a", "run-a", HOLDER));
    api.put(testkit::kustomization("run-a", "run-a"));
    api.put(testkit::source("run-a", "run-a"));
    api.put(testkit::secret("run-a", "run-a"));
    api.put(testkit::stale_lease("run-a", "run-a"));

    // kustomize-controller: prunes for a while after the delete, then
    // removes its finalizer. Nothing else may be deleted meanwhile.
    let controller =
        testkit::kustomize_controller(&api, "run-a", "run-a", Duration::from_millis(400));
    let removed = cleanup(
        &api.client,
        "run-a",
        "run-a",
        Some("run-a"),
        HOLDER,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let during = controller.await.unwrap();
    assert_eq!(during, [format!("DELETE {KS} 200")], "while Flux pruned");
    // Awaited with a watch on it (no polling).
    let requests = api.requests();
    let deleted = requests.iter().position(|r| r.method == "DELETE").unwrap();
    assert!(
        requests[deleted..]
            .iter()
            .any(|r| r.is_watch() && r.path.ends_with("/kustomizations")),
        "{requests:?}"
    );
    assert_eq!(
        deletes(&api.requests()),
        [
            format!("DELETE {KS} 200"),
            "DELETE /apis/source.toolkit.fluxcd.io/v1/namespaces/run-a/ocirepositories/run-a 200"
                .into(),
            "DELETE /api/v1/namespaces/run-a/secrets/run-a-sops 200".into(),
            "DELETE /api/v1/namespaces/run-a 200".into(),
            "DELETE /apis/coordination.k8s.io/v1/namespaces/run-a/leases/run-a 200".into(),
        ]
    );
    // Deleted in the background: the API server's garbage collector takes
    // what they own.
    let policies: Vec<Option<String>> = api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| {
            let body = r.body.as_ref()?;
            body["propagationPolicy"].as_str().map(String::from)
        })
        .collect();
    assert!(
        policies.iter().all(|p| p.as_deref() == Some("Background")),
        "{policies:?}"
    );
    assert_eq!(
        removed,
        [
            "kustomization/run-a",
            "ocirepository/run-a",
            "secret/run-a-sops",
            "sandbox/run-a (namespace run-a)",
            "lease/run-a",
        ]
    );
    assert!(api.get::<Lease>("run-a", "run-a").is_none());
}

#[tokio::test]
async fn only_the_sessions_labelled_objects_are_touched() {
    let api = FakeApi::start().await;
    let ns = "team";
    // Of the session's names, only the Secret is its own: the
    // Kustomization and the Lease are someone else's, the OCIRepository
    // another session's, and the sandbox was made by someone else.
    let mut ks = testkit::kustomization(ns, "run-b");
    ks.metadata.labels = None;
    ks.metadata.finalizers = None;
    api.put(ks);
    let mut repo = testkit::source(ns, "run-b");
    repo.metadata = testkit::meta(ns, "run-b", "run-c");
    api.put(repo);
    api.put(testkit::secret(ns, "run-b"));
    let mut unlabelled = testkit::secret(ns, "run-b");
    unlabelled.metadata.name = Some("keep".into());
    unlabelled.metadata.labels = None;
    api.put(unlabelled);
    api.put(testkit::secret(ns, "run-c"));
    api.put(testkit::own_sandbox("run-b", ns, "run-b", "bob@desk"));
    let mut lease = testkit::stale_lease(ns, "run-b");
    lease.metadata.labels = None;
    api.put(lease);

    let removed = cleanup(
        &api.client,
        ns,
        "run-b",
        Some("run-b"),
        HOLDER,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(removed, ["secret/run-b-sops"]);
    assert_eq!(
        deletes(&api.requests()),
        ["DELETE /api/v1/namespaces/team/secrets/run-b-sops 200"]
    );
    assert!(api.get::<Kustomization>(ns, "run-b").is_some());
    assert!(api.get::<OCIRepository>(ns, "run-b").is_some());
    assert!(api.get::<Secret>(ns, "keep").is_some());
    assert!(api.get::<Secret>(ns, "run-c-sops").is_some());
    assert!(api.get::<Namespace>("", "run-b").is_some());
    assert!(api.get::<Lease>(ns, "run-b").is_some());
}
