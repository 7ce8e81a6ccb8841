//! Fixtures for the session tests over [`crate::fakeapi`] (test builds
//! only): a session's Lease and its objects, labelled as the session makes
//! them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;

use crate::flux::{Kustomization, KustomizationSpec, OCIRepository, OCIRepositorySpec};
use crate::labels;
use crate::session::record::{self, ownership};

/// Someone else's session (never this process's `user@host`, so its
/// holder's process is never "gone" by this machine's process table).
pub const HOLDER: &str = "ann@laptop";

/// The metadata of a session's object: the suite's labels and the session's.
pub fn meta(namespace: &str, name: &str, session: &str) -> ObjectMeta {
    let mut l = labels::managed("session");
    l.insert(labels::SESSION.into(), session.into());
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(l),
        ..Default::default()
    }
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A session's Lease held by `holder`, renewed at `renewed`, for `seconds`.
pub fn lease(
    namespace: &str,
    name: &str,
    holder: &str,
    renewed: DateTime<Utc>,
    seconds: i32,
) -> Lease {
    let record = record::Record {
        pid: "4242".into(),
        mode: "cluster".into(),
        owner: holder.into(),
        ..Default::default()
    };
    let mut metadata = meta(namespace, name, name);
    metadata.annotations = Some(record.to_annotations());
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(micro(renewed)),
            acquire_time: Some(micro(renewed)),
            ..Default::default()
        }),
    }
}

/// A Lease nobody has renewed for ten minutes (a one-second lease: judged
/// stale after one second of watching).
pub fn stale_lease(namespace: &str, name: &str) -> Lease {
    lease(
        namespace,
        name,
        HOLDER,
        Utc::now() - chrono::Duration::minutes(10),
        1,
    )
}

/// A Lease renewed just now (a thirty-second lease: live at a glance).
pub fn live_lease(namespace: &str, name: &str) -> Lease {
    lease(namespace, name, HOLDER, Utc::now(), 30)
}

/// A session's Kustomization, with kustomize-controller's finalizer.
pub fn kustomization(namespace: &str, session: &str) -> Kustomization {
    let mut ks = Kustomization::new(session, KustomizationSpec::default());
    ks.metadata = meta(namespace, session, session);
    ks.metadata.finalizers = Some(vec!["finalizers.fluxcd.io".into()]);
    ks
}

/// A session's OCIRepository.
pub fn source(namespace: &str, session: &str) -> OCIRepository {
    let mut repo = OCIRepository::new(session, OCIRepositorySpec::default());
    repo.metadata = meta(namespace, session, session);
    repo
}

/// A Secret of the session's (`{session}-sops`).
pub fn secret(namespace: &str, session: &str) -> Secret {
    Secret {
        metadata: meta(namespace, &format!("{session}-sops"), session),
        data: Some(BTreeMap::new()),
        ..Default::default()
    }
}

/// The ephemeral sandbox namespace a session (Lease `lease_ns`/`session`,
/// run by `owner`) made for itself.
pub fn own_sandbox(name: &str, lease_ns: &str, session: &str, owner: &str) -> Namespace {
    let mut l = labels::managed("sandbox");
    l.extend(ownership::sandbox_record(&ownership::SandboxMaker {
        namespace: lease_ns,
        session,
        owner,
    }));
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            annotations: Some(BTreeMap::from([(labels::OWNER.into(), owner.into())])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A session's configuration for the tests over the fake API server: named
/// `run-a`, its Flux objects in `namespace`, a root that is not a chart,
/// credentials given (no Docker config is read).
pub fn config(
    namespace: &str,
    owner: &str,
    mode: crate::session::Mode,
    key: Option<&str>,
) -> crate::session::SessionConfig {
    use crate::session::{RegistryChoice, SessionConfig};
    SessionConfig {
        name: "run-a".into(),
        // Not a chart (no Chart.yaml there).
        root: std::env::temp_dir().join("gitops-session-test-no-such-dir"),
        path: "./".into(),
        mode,
        sandbox: None,
        namespace: namespace.into(),
        target_namespace: None,
        registry: RegistryChoice {
            push: "localhost:5000".into(),
            pull: "localhost:5000".into(),
            origin: "--registry",
            insecure: true,
        },
        registry_options: crate::registry::RegistryOptions {
            creds: Some("ann:secret".parse().unwrap()),
            insecure: true,
        },
        walk: crate::artifact::WalkOptions::default(),
        decryption_key: key.map(|k| k.as_bytes().to_vec()),
        timeout: std::time::Duration::from_secs(60),
        lease_duration: std::time::Duration::from_secs(30),
        port_forwards: Vec::new(),
        values: Vec::new(),
        release_namespace: None,
        owner: owner.into(),
        take_over: None,
    }
}

/// A reporter that says nothing.
pub fn quiet() -> crate::session::Reporter {
    std::sync::Arc::new(|_: &crate::session::Event| {})
}

/// kustomize-controller as the fake plays it: once the Kustomization
/// `namespace/name` is asked to be deleted, it works (prunes) for `work`,
/// then removes its finalizer. Returns the DELETE requests answered
/// meanwhile (`METHOD path status`).
pub fn kustomize_controller(
    api: &crate::fakeapi::FakeApi,
    namespace: &str,
    name: &str,
    work: std::time::Duration,
) -> tokio::task::JoinHandle<Vec<String>> {
    let h = (**api).clone();
    let (namespace, name) = (namespace.to_string(), name.to_string());
    let path = format!(
        "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{namespace}/kustomizations/{name}"
    );
    tokio::spawn(async move {
        while !h
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path == path)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(work).await;
        let during = deletes(&h.requests());
        h.update::<Kustomization>(&namespace, &name, |ks| ks.metadata.finalizers = None);
        during
    })
}

/// The DELETE requests among `requests`, as `METHOD path status`.
pub fn deletes(requests: &[crate::fakeapi::Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(crate::fakeapi::Request::line)
        .collect()
}
