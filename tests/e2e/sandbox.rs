//! Sandboxes against the real API server and real Flux: what they confine,
//! how they are deleted, and that nothing else is touched.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops::flux::{Kustomization, KustomizationSpec, SourceReference};
use gitops::labels;
use gitops::sandbox::{self, Target};
use gitops_e2e::{
    Footprint, Harness, configmap, configmap_in, eventually, kustomization_verdict, output, plugin,
    push_oci_source, sandbox_cli, unique, write_tree,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

const TIMEOUT: Duration = Duration::from_secs(90);
/// `kubectl-gitops_run` with the harness's connection flags.
fn run_cli(harness: &Harness, dir: &std::path::Path, args: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(args)
            .current_dir(dir),
    )
}

/// Where ConfigMaps named `name` exist, in every namespace.
async fn configmaps_named(client: &Client, name: &str) -> Vec<String> {
    let all: Api<ConfigMap> = Api::all(client.clone());
    all.list(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.namespace().unwrap_or_default())
        .collect()
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
    let ns = &target.namespace;
    push_oci_source(harness, client, ns, name, name, dir.path()).await;
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
async fn target_of(client: &Client, name: &str) -> Target {
    sandbox::get(client, name)
        .await
        .unwrap()
        .expect("sandbox exists")
        .target
}

#[tokio::test]
async fn namespace_sandbox_applies_a_namespaced_payload_as_its_service_account() {
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
        &[("cm.yaml", &configmap("good", &[("k", "v")]))],
    )
    .await;
    kustomization_verdict(&client, &name, "good", TIMEOUT)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    assert!(cms.get_opt("good").await.unwrap().is_some());

    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert!(
        deleted.stdout.contains("deleted kustomization/good"),
        "{deleted:?}"
    );
}

/// A session in a namespace sandbox whose only object names another
/// namespace: Flux's `targetNamespace` puts it in the sandbox, and nothing
/// appears in the namespace it named, nor anywhere else.
#[tokio::test]
async fn a_session_cannot_put_an_object_into_another_namespace() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sandbox = unique("sbx-xns");
    let created = sandbox_cli(&harness, &["create", &sandbox]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let dir = tempfile::tempdir().unwrap();
    let cm = unique("elsewhere");
    write_tree(
        dir.path(),
        &[("cm.yaml", &configmap_in("default", &cm, &[("k", "v")]))],
    );
    let session = unique("run-xns");

    let out = run_cli(
        &harness,
        dir.path(),
        &[
            "--once",
            "--keep",
            "--sandbox",
            &sandbox,
            "--name",
            &session,
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    // What the session reports is where the object really is.
    assert!(
        out.stderr
            .contains(&format!("ConfigMap/{sandbox}/{cm} created")),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains(&format!("ConfigMap/default/{cm}")),
        "{out:?}"
    );
    // And it says so before the sync: the file named a namespace the sandbox replaces.
    assert!(
        out.stderr.contains(&format!(
            "cm.yaml: ConfigMap/{cm} names namespace \"default\", but the sandbox applies everything into \"{sandbox}\""
        )),
        "{out:?}"
    );
    assert_eq!(
        configmaps_named(&client, &cm).await,
        vec![sandbox.clone()],
        "in the sandbox, and in no other namespace"
    );
    let footprint = Footprint::capture(&client, &session).await;
    assert!(
        footprint.has("ConfigMap", Some(&sandbox), &cm),
        "{footprint:#?}"
    );
    assert!(
        !footprint.has("ConfigMap", Some("default"), &cm),
        "{footprint:#?}"
    );

    // Deleting the kept session removes it; the sandbox (not ephemeral) stays.
    let deleted = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["delete", &session, "-n", &sandbox]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    footprint.assert_gone(&client).await;
    assert!(configmaps_named(&client, &cm).await.is_empty());
    assert!(sandbox::get(&client, &sandbox).await.unwrap().is_some());
    let removed = sandbox_cli(&harness, &["delete", &sandbox, "--wait"]);
    assert_eq!(removed.code, Some(0), "{removed:?}");
}

/// A session in a namespace sandbox whose only object is cluster-scoped:
/// `--once` fails (exit 1) in plain words naming the object and its file,
/// and the object is never created.
#[tokio::test]
async fn a_cluster_scoped_object_in_a_sandbox_is_refused_and_not_created() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sandbox = unique("sbx-cr");
    let created = sandbox_cli(&harness, &["create", &sandbox]);
    assert_eq!(created.code, Some(0), "{created:?}");
    let dir = tempfile::tempdir().unwrap();
    let role = unique("sneaky");
    write_tree(
        dir.path(),
        &[(
            "role.yaml",
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\nrules: []\n"
            ),
        )],
    );
    let session = unique("run-cr");

    let out = run_cli(
        &harness,
        dir.path(),
        &["--once", "--sandbox", &sandbox, "--name", &session],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("cluster-scoped objects are not allowed in a sandbox"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&role) && out.stderr.contains("(role.yaml)"),
        "{out:?}"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&role).await.unwrap().is_none(), "not created");
    // The failed session cleaned up after itself; the sandbox stays.
    Footprint::expected(&session, &sandbox, false)
        .with_payload(dir.path(), &sandbox, Some(&sandbox))
        .assert_gone(&client)
        .await;
    assert!(sandbox::get(&client, &sandbox).await.unwrap().is_some());
    let removed = sandbox_cli(&harness, &["delete", &sandbox, "--wait"]);
    assert_eq!(removed.code, Some(0), "{removed:?}");
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
        &[("cm.yaml", &configmap_in("default", &cm, &[("k", "v")]))],
    )
    .await;
    kustomization_verdict(&client, &name, "remote", TIMEOUT)
        .await
        .unwrap();
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

    // Until the short TTL has passed, as the sandbox records it.
    let json = eventually(&format!("the TTL of {short} to pass"), TIMEOUT, || async {
        let listed = sandbox_cli(&harness, &["list", "-A", "-o", "json"]);
        if listed.code != Some(0) {
            return Err(format!("{listed:?}"));
        }
        let json: serde_json::Value =
            serde_json::from_str(&listed.stdout).map_err(|e| format!("{e}: {listed:?}"))?;
        let expires = json
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == short.as_str()))
            .and_then(|s| s["expires"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(|| format!("no expiry for {short} in {json}"))?;
        if expires <= chrono::Utc::now() {
            Ok(json)
        } else {
            Err(format!("{short} expires at {expires}"))
        }
    })
    .await;
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

/// A vcluster sandbox from the pinned vcluster chart (served by the harness
/// as a Helm repository; `--vcluster-chart-repo` is how a mirror is used),
/// installed by the real helm-controller: its StatefulSet is scheduled onto
/// the kwok nodes and becomes Ready, with the storage a cluster would give it
/// (a PersistentVolume the test makes, bound to the chart's claim). No
/// container runs here, so the virtual cluster itself never starts: the test
/// plays vcluster's part by writing the `vc-NAME` Secret, pointing at the
/// harness's second API server, and a session applies into that "virtual
/// cluster" through it. Delete removes it all.
#[tokio::test]
async fn vcluster_sandbox_rolls_out_its_statefulset_and_sessions_apply_through_it() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let second = harness.second_cluster().await.client;
    let name = unique("sbx-vc");
    // The claim the chart's volumeClaimTemplates make (data-NAME-0), pre-bound to a PV.
    let pv = format!("{name}-data");
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {pv}\nspec:\n  capacity:\n    storage: 1Gi\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  claimRef:\n    namespace: {name}\n    name: data-{name}-0\n  hostPath:\n    path: /tmp/{pv}\n"
    ));
    let values = tempfile::tempdir().unwrap();
    let values_file = values.path().join("vcluster.yaml");
    std::fs::write(
        &values_file,
        "controlPlane:\n  statefulSet:\n    persistence:\n      volumeClaim:\n        size: 1Gi\n        storageClass: \"\"\n",
    )
    .unwrap();
    let create = plugin("kubectl-gitops_sandbox")
        .args(harness.kube_args())
        .args(["create", &name, "--isolation", "vcluster", "--wait"])
        .args(["--timeout", "3m", "--vcluster-version", "0.21.0"])
        .args(["--vcluster-chart-repo", &harness.charts])
        .arg("--vcluster-values")
        .arg(&values_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The chart's StatefulSet, rolled out by kube-controller-manager onto kwok nodes.
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &name);
    eventually(
        "the vcluster StatefulSet to be Ready",
        Duration::from_secs(180),
        || async {
            match statefulsets.get_opt(&name).await {
                Ok(Some(s)) => {
                    let st = s.status.unwrap_or_default();
                    if st.ready_replicas == Some(1) && st.available_replicas == Some(1) {
                        Ok(())
                    } else {
                        Err(format!("{st:?}"))
                    }
                }
                Ok(None) => Err("no StatefulSet yet".into()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &name)
        .get(&format!("data-{name}-0"))
        .await
        .unwrap();
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Bound"),
        "the --vcluster-values size (1Gi) reached the chart and its claim is bound"
    );
    let releases: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &name,
        &gitops::flux::helm_release_resource(),
    );
    let release = releases.get(&name).await.unwrap();
    assert_eq!(
        release.data["spec"]["values"]["exportKubeConfig"]["server"],
        format!("https://{name}.{name}:443")
    );
    let helm_ready = eventually(
        "the HelmRelease to be Ready",
        Duration::from_secs(90),
        || async {
            let r = releases.get(&name).await.map_err(|e| e.to_string())?;
            let conditions = r.data["status"]["conditions"].clone();
            let ready = conditions
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                Ok(r.data["status"]["lastAttemptedRevision"].clone())
            } else {
                Err(conditions.to_string())
            }
        },
    )
    .await;
    assert_eq!(helm_ready, "0.21.0");

    // vcluster's part: its kubeconfig Secret (here: the second API server).
    let kubeconfig = std::fs::read(harness.second_kubeconfig.as_ref().unwrap()).unwrap();
    Api::<Secret>::namespaced(client.clone(), &name)
        .create(
            &Default::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("vc-{name}")),
                    ..Default::default()
                },
                data: Some(std::collections::BTreeMap::from([(
                    "config".to_string(),
                    k8s_openapi::ByteString(kubeconfig),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let created = create.wait_with_output().unwrap();
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        String::from_utf8_lossy(&created.stdout).contains("isolation vcluster"),
        "{created:?}"
    );
    let target = target_of(&client, &name).await;
    assert_eq!(
        target.kubeconfig_secret,
        Some((format!("vc-{name}"), "config".to_string()))
    );

    // A session in it applies into the "virtual cluster".
    let dir = tempfile::tempdir().unwrap();
    let cm = unique("in-vc");
    write_tree(
        dir.path(),
        &[("cm.yaml", &configmap_in("default", &cm, &[("k", "v")]))],
    );
    let out = run_cli(
        &harness,
        dir.path(),
        &["--once", "--keep", "--sandbox", &name],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let in_vc: Api<ConfigMap> = Api::namespaced(second.clone(), "default");
    assert!(in_vc.get_opt(&cm).await.unwrap().is_some(), "{out:?}");
    assert!(
        configmaps_named(&client, &cm).await.is_empty(),
        "nothing in the host cluster"
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
    assert!(
        in_vc.get_opt(&cm).await.unwrap().is_none(),
        "the kept session's objects went with the sandbox (Flux's GC, before the kubeconfig Secret)"
    );
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let _ = pvs.delete(&pv, &Default::default()).await;
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
    assert_eq!(kc.code, Some(1), "{kc:?}");
    assert!(
        kc.stderr.contains("--target-kubeconfig is required"),
        "{kc:?}"
    );
}

#[tokio::test]
async fn a_session_in_a_named_sandbox_needs_only_rights_in_that_sandbox() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sbx = unique("sbx-rbac");
    let created = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &sbx]),
    );
    assert_eq!(created.code, Some(0), "{created:?}");
    // A developer who may read namespaces one by one (no list) and work in
    // this sandbox only: no cluster-wide Lease rights.
    let dev = unique("dev");
    harness.kubectl_apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {dev}}}
rules:
- {{apiGroups: [""], resources: [namespaces], verbs: [get]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {dev}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {dev}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {dev}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {dev}, namespace: {sbx}}}
rules:
- {{apiGroups: [""], resources: [secrets, events], verbs: ["*"]}}
- {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: ["*"]}}
- {{apiGroups: [source.toolkit.fluxcd.io], resources: [ocirepositories], verbs: ["*"]}}
- {{apiGroups: [kustomize.toolkit.fluxcd.io], resources: [kustomizations], verbs: ["*"]}}
- {{apiGroups: [helm.toolkit.fluxcd.io], resources: [helmreleases], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {dev}, namespace: {sbx}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {dev}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {dev}}}]
"#
    ));
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("cm.yaml", &configmap("restricted", &[("k", "v")]))],
    );
    let name = unique("run-rbac");
    let registry = format!("oci://{}", harness.registry);
    let out = run_cli(
        &harness,
        dir.path(),
        &[
            "--once",
            "--name",
            &name,
            "--sandbox",
            &sbx,
            "--registry",
            &registry,
            "--as",
            &dev,
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &sbx);
    // --once cleaned up: Flux pruned what it applied.
    assert!(cms.get_opt("restricted").await.unwrap().is_none());
    let deleted = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["delete", &sbx]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
}
