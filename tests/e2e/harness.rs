//! The harness itself: real Flux syncs what the real `flux` CLI pushed to the
//! real registry into the real API server.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops::flux::{
    Kustomization, KustomizationSpec, OCIRepository, OCIRepositoryRef, OCIRepositorySpec,
    SourceReference, request_reconcile,
};
use gitops_e2e::{Harness, configmap, create_namespace, delete_namespace, eventually, run, unique};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(60);

fn write_configmap(dir: &std::path::Path, greeting: &str) {
    std::fs::write(
        dir.join("configmap.yaml"),
        configmap("demo", &[("greeting", greeting)]),
    )
    .unwrap();
}

#[tokio::test]
async fn flux_syncs_what_the_flux_cli_pushed() {
    let harness = Harness::get();
    let cluster = harness.cluster().await;
    let client = cluster.client.clone();
    let ns = unique("e2e-harness");
    create_namespace(&client, &ns).await;

    let dir = tempfile::tempdir().unwrap();
    write_configmap(dir.path(), "hello");
    let url = format!("oci://{}/e2e/{ns}", harness.registry);
    let push = |revision: &str| {
        run(harness.flux().args([
            "push",
            "artifact",
            &format!("{url}:latest"),
            &format!("--path={}", dir.path().display()),
            "--source=file:///e2e",
            &format!("--revision=main@sha1:{revision}"),
        ]))
    };
    push("1111111111111111111111111111111111111111");

    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), &ns);
    let repo = OCIRepository::new(
        "demo",
        OCIRepositorySpec {
            url: url.clone(),
            reference: Some(OCIRepositoryRef {
                tag: Some("latest".into()),
                ..Default::default()
            }),
            interval: "10m".into(),
            ..Default::default()
        },
    );
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let kustomizations: Api<Kustomization> = Api::namespaced(client.clone(), &ns);
    let ks = Kustomization::new(
        "demo",
        KustomizationSpec {
            source_ref: SourceReference {
                kind: "OCIRepository".into(),
                name: "demo".into(),
                namespace: None,
            },
            path: Some("./".into()),
            prune: true,
            interval: "10m".into(),
            target_namespace: Some(ns.clone()),
            ..Default::default()
        },
    );
    kustomizations
        .create(&PostParams::default(), &ks)
        .await
        .unwrap();

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let greeting = || async {
        let cm = configmaps
            .get_opt("demo")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            cm.and_then(|c| c.data)
                .and_then(|d| d.get("greeting").cloned()),
        )
    };
    eventually("the ConfigMap from the first push", TIMEOUT, || async {
        match greeting().await? {
            Some(g) if g == "hello" => Ok(()),
            other => Err(format!("greeting {other:?}")),
        }
    })
    .await;

    // A second push changes the object once Flux fetches the new artifact.
    write_configmap(dir.path(), "bonjour");
    push("2222222222222222222222222222222222222222");
    request_reconcile(&repos, "demo").await.unwrap();
    eventually("the ConfigMap from the second push", TIMEOUT, || async {
        match greeting().await? {
            Some(g) if g == "bonjour" => Ok(()),
            other => Err(format!("greeting {other:?}")),
        }
    })
    .await;

    // The revision Flux reports is the one the CLI pushed.
    let status = repos.get("demo").await.unwrap().status.unwrap();
    let artifact = status.artifact.unwrap();
    assert!(
        artifact.revision.starts_with("latest@sha256:"),
        "{}",
        artifact.revision
    );
    assert_eq!(
        artifact.metadata.unwrap()["org.opencontainers.image.revision"],
        "main@sha1:2222222222222222222222222222222222222222"
    );

    // Deleting the Kustomization prunes what it applied.
    kustomizations
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the prune of the ConfigMap", TIMEOUT, || async {
        match configmaps
            .get_opt("demo")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still present".to_string()),
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}
