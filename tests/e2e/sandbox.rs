//! Sandboxes against the real API server and real Flux: what they confine,
//! how they are deleted, and that nothing else is touched.

use std::time::Duration;

use gitops::flux::{
    Kustomization, KustomizationSpec, OCIRepository, OCIRepositoryRef, OCIRepositorySpec,
    SourceReference, condition, failure,
};
use gitops::labels;
use gitops::registry::{self, ArtifactRef, PushOptions};
use gitops::sandbox::{self, Target};
use gitops_e2e::{Harness, eventually, output, plugin, unique, write_tree};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

const TIMEOUT: Duration = Duration::from_secs(90);

fn sandbox_cli(harness: &Harness, args: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(args),
    )
}

fn configmap(name: &str, namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{ns}data:\n  k: v\n")
}

/// Pushes `files` and points an OCIRepository + Kustomization in the
/// sandbox at it, the way a session does.
async fn apply_in(
    harness: &Harness,
    client: &Client,
    target: &Target,
    name: &str,
    files: &[(&str, &str)],
) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), files);
    let reference: ArtifactRef = format!("oci://{}/e2e/{name}:latest", harness.registry)
        .parse()
        .unwrap();
    registry::push(dir.path(), &reference, &PushOptions::default())
        .await
        .unwrap();
    let ns = &target.namespace;
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), ns);
    let mut repo = OCIRepository::new(
        name,
        OCIRepositorySpec {
            url: reference.repository_url(),
            reference: Some(OCIRepositoryRef {
                tag: Some("latest".into()),
                ..Default::default()
            }),
            interval: "10m".into(),
            ..Default::default()
        },
    );
    repo.metadata.labels = Some(labels::managed("session"));
    repos.create(&PostParams::default(), &repo).await.unwrap();
    let mut spec = KustomizationSpec {
        source_ref: SourceReference {
            kind: "OCIRepository".into(),
            name: name.into(),
            namespace: None,
        },
        path: Some("./".into()),
        prune: true,
        interval: "10m".into(),
        retry_interval: Some("2s".into()),
        ..Default::default()
    };
    target.configure(&mut spec);
    let mut ks = Kustomization::new(name, spec);
    ks.metadata.labels = Some(labels::managed("session"));
    Api::<Kustomization>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ks)
        .await
        .unwrap();
}

/// Waits for the Kustomization's verdict: Ok(()) when Ready, Err(plain words) when failed.
async fn verdict(client: &Client, ns: &str, name: &str) -> Result<(), String> {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Kustomization {ns}/{name} to finish"),
        TIMEOUT,
        || async {
            let ks = api.get(name).await.map_err(|e| e.to_string())?;
            let status = ks.status.unwrap_or_default();
            match condition(&status.conditions, "Ready") {
                Some(c) if c.status == "True" => Ok(Ok(())),
                Some(c) if c.status == "False" && status.last_attempted_revision.is_some() => {
                    Ok(Err(failure(&status).unwrap_or_default()))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn target_of(client: &Client, name: &str) -> Target {
    sandbox::get(client, name)
        .await
        .unwrap()
        .expect("sandbox exists")
        .target
}

#[tokio::test]
async fn namespace_sandbox_confines_the_payload() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let name = unique("sbx-ns");
    let created = sandbox_cli(&harness, &["create", &name]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let target = target_of(&client, &name).await;

    // A namespaced payload applies, as the sandbox's ServiceAccount.
    apply_in(
        &harness,
        &client,
        &target,
        "good",
        &[("cm.yaml", &configmap("good", None))],
    )
    .await;
    verdict(&client, &name, "good").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    assert!(cms.get_opt("good").await.unwrap().is_some());

    // A payload reaching for the cluster or another namespace is refused, in plain words.
    let role = unique("sneaky");
    let outside = unique("outside");
    let cluster_role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\nrules: []\n"
    );
    apply_in(
        &harness,
        &client,
        &target,
        "bad",
        &[
            ("cm.yaml", &configmap(&outside, Some("default"))),
            ("role.yaml", &cluster_role),
        ],
    )
    .await;
    let err = verdict(&client, &name, "bad").await.unwrap_err();
    assert!(
        err.contains("not allowed") && err.contains("cluster-scoped objects are not allowed"),
        "{err}"
    );
    assert!(err.contains(&role), "{err}");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&role).await.unwrap().is_none());
    let default_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(default_cms.get_opt(&outside).await.unwrap().is_none());

    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert!(
        deleted.stdout.contains("deleted kustomization/good"),
        "{deleted:?}"
    );
}

#[tokio::test]
async fn kubeconfig_sandbox_applies_into_the_other_cluster_and_cleans_it() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let second = harness.second_cluster().await.client;
    let name = unique("sbx-kc");
    let kubeconfig = harness.second_kubeconfig.clone().unwrap();
    let created = sandbox_cli(
        &harness,
        &[
            "create",
            &name,
            "--isolation",
            "kubeconfig",
            "--target-kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert_eq!(created.code, Some(0), "{created:?}");
    let target = target_of(&client, &name).await;
    assert_eq!(
        target.kubeconfig_secret.as_ref().map(|s| s.0.as_str()),
        Some(sandbox::KUBECONFIG_SECRET)
    );

    let cm = unique("remote");
    apply_in(
        &harness,
        &client,
        &target,
        "remote",
        &[("cm.yaml", &configmap(&cm, Some("default")))],
    )
    .await;
    verdict(&client, &name, "remote").await.unwrap();
    let remote: Api<ConfigMap> = Api::namespaced(second.clone(), "default");
    let local: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(
        remote.get_opt(&cm).await.unwrap().is_some(),
        "in the second API server"
    );
    assert!(
        local.get_opt(&cm).await.unwrap().is_none(),
        "not in the first"
    );

    // Delete: the Kustomization goes first, while its kubeconfig still works,
    // so Flux prunes the remote object.
    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert!(
        remote.get_opt(&cm).await.unwrap().is_none(),
        "pruned from the second API server"
    );
}

#[tokio::test]
async fn delete_leaves_nothing_labelled_and_spares_what_the_suite_did_not_create() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let name = unique("sbx-del");
    assert_eq!(
        sandbox_cli(&harness, &["create", &name, "--quota", "pods=3"]).code,
        Some(0)
    );

    // Objects the suite did not create: one beside the sandbox, one in another namespace.
    let bystander = unique("bystander");
    let cm = |n: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(n.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let default_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    default_cms
        .create(&PostParams::default(), &cm(&bystander))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let other_ns = unique("not-a-sandbox");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(other_ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let refused = sandbox_cli(&harness, &["delete", &other_ns]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("is not a sandbox"), "{refused:?}");

    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    let selector = ListParams::default().labels(&format!("{}={name}", labels::SANDBOX));
    assert!(namespaces.list(&selector).await.unwrap().items.is_empty());
    assert!(namespaces.get_opt(&name).await.unwrap().is_none());
    assert!(default_cms.get_opt(&bystander).await.unwrap().is_some());
    assert!(namespaces.get_opt(&other_ns).await.unwrap().is_some());

    // Deleting again is a no-op that says so.
    let again = sandbox_cli(&harness, &["delete", &name]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(
        again.stderr.contains("not found; nothing to delete"),
        "{again:?}"
    );
    let _ = namespaces.delete(&other_ns, &Default::default()).await;
    let _ = default_cms.delete(&bystander, &Default::default()).await;
}

#[tokio::test]
async fn gc_deletes_exactly_the_expired_sandboxes() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (short, long, forever) = (
        unique("sbx-ttl-short"),
        unique("sbx-ttl-long"),
        unique("sbx-ttl-none"),
    );
    assert_eq!(
        sandbox_cli(&harness, &["create", &short, "--ttl", "1s"]).code,
        Some(0)
    );
    assert_eq!(
        sandbox_cli(&harness, &["create", &long, "--ttl", "1h"]).code,
        Some(0)
    );
    assert_eq!(sandbox_cli(&harness, &["create", &forever]).code, Some(0));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let listed = sandbox_cli(&harness, &["list", "-A", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let find = |n: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
    };
    assert!(find(&long).unwrap()["expires"].is_string());
    assert!(find(&forever).unwrap()["expires"].is_null());

    let gc = sandbox_cli(&harness, &["gc"]);
    assert_eq!(gc.code, Some(0), "{gc:?}");
    assert!(
        gc.stdout.contains(&format!("sandbox {short} expired")),
        "{gc:?}"
    );
    assert!(
        !gc.stdout.contains(&long) && !gc.stdout.contains(&forever),
        "{gc:?}"
    );
    let gone = sandbox::get(&client, &short).await.unwrap();
    assert!(gone.as_ref().is_none_or(|s| s.terminating), "{gone:?}");
    assert!(sandbox::get(&client, &long).await.unwrap().is_some());
    for n in [&long, &forever] {
        assert_eq!(sandbox_cli(&harness, &["delete", n]).code, Some(0));
    }
}

#[tokio::test]
async fn vcluster_sandbox_objects_are_created_through_flux_and_deleted() {
    // Nothing runs pods here, so the chart never becomes ready: this checks the
    // objects Flux is given, and that delete takes them away again.
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let name = unique("sbx-vc");
    let out = sandbox_cli(&harness, &["create", &name, "--isolation", "vcluster"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let releases: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &name,
        &gitops::flux::helm_release_resource(),
    );
    let release = releases.get(&name).await.unwrap();
    assert_eq!(release.data["spec"]["chart"]["spec"]["chart"], "vcluster");
    assert_eq!(
        release.data["spec"]["values"]["exportKubeConfig"]["server"],
        format!("https://{name}.{name}:443")
    );
    let target = target_of(&client, &name).await;
    assert_eq!(
        target.kubeconfig_secret,
        Some((format!("vc-{name}"), "config".to_string()))
    );
    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert!(
        deleted
            .stdout
            .contains(&format!("deleted helmrelease/{name}")),
        "{deleted:?}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn bad_names_and_quotas_are_clear_errors() {
    let harness = Harness::get();
    let bad = sandbox_cli(&harness, &["create", "Not_Valid"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("DNS-1123"), "{bad:?}");
    let quota = sandbox_cli(&harness, &["create", "ok-name", "--quota", "gpu=1"]);
    assert_eq!(quota.code, Some(1));
    assert!(quota.stderr.contains("invalid --quota"), "{quota:?}");
    let kc = sandbox_cli(
        &harness,
        &["create", "ok-name", "--isolation", "kubeconfig"],
    );
    assert!(
        kc.stderr.contains("--target-kubeconfig is required"),
        "{kc:?}"
    );
}
