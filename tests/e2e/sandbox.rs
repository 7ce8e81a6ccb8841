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

/// How long a vcluster takes to start here: its images pulled on the real
/// Node, its control plane (kine, kube-apiserver, kube-controller-manager)
/// and syncer started on a shared 2-core machine.
const VCLUSTER_START: &str = "10m";
const VCLUSTER_WAIT: Duration = Duration::from_secs(300);

/// A client of the virtual cluster, with the kubeconfig vcluster exported
/// (its CA, its client certificate), reaching its API server at the pod
/// (this machine routes the real Node's pod network) under the TLS name the
/// kubeconfig's server has (`NAME.NAMESPACE`).
async fn virtual_client(kubeconfig: &[u8], pod_ip: &str, tls_name: &str) -> Client {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(std::str::from_utf8(kubeconfig).unwrap()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.cluster_url = format!("https://{pod_ip}:8443").parse().unwrap();
    config.tls_server_name = Some(tls_name.to_string());
    Client::try_from(config).unwrap()
}

/// A vcluster sandbox that really starts: the pinned vcluster chart (served
/// by the harness as a Helm repository), installed by the real
/// helm-controller with images built here from vcluster's module and the
/// pinned Kubernetes (tests/cluster/vcluster, pushed to the harness
/// registry), runs its virtual control plane on the real Node; vcluster
/// itself writes `vc-NAME`, pointing at `https://NAME.NAME:443`. A session
/// applies a Deployment into the virtual cluster through Flux (its
/// Kustomization on the host, with that Secret); vcluster runs its pod on
/// the real Node, where it really runs; `--logs` shows what the container
/// printed. Stopping the session removes the Deployment from the virtual
/// cluster and the pod vcluster ran for it from the host; deleting the
/// sandbox uninstalls the release and removes the namespace.
#[tokio::test]
async fn vcluster_sandbox_starts_and_a_sessions_pod_runs_on_the_real_node() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Secret};
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let node = harness.real_node().to_string();
    let name = unique("sbx-vc");
    let kube_version = client.apiserver_version().await.unwrap().git_version;
    let values = tempfile::tempdir().unwrap();
    let values_file = values.path().join("vcluster.yaml");
    let component = |c: &str| format!("    {c}:\n      image:\n        tag: {kube_version}\n");
    std::fs::write(
        &values_file,
        format!(
            "controlPlane:\n  advanced:\n    defaultImageRegistry: {registry}\n  statefulSet:\n    image:\n      repository: loft-sh/vcluster-oss\n    persistence:\n      volumeClaim:\n        enabled: false\n    scheduling:\n{placement}  distro:\n    k8s:\n{api}{cm}{sched}",
            registry = harness.registry,
            placement = gitops_e2e::on_real_node(6),
            api = component("apiServer").replace("    ", "      "),
            cm = component("controllerManager").replace("    ", "      "),
            sched = component("scheduler").replace("    ", "      "),
        ),
    )
    .unwrap();
    let created = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &name, "--isolation", "vcluster", "--wait"])
            .args(["--timeout", VCLUSTER_START, "--vcluster-version", "0.21.0"])
            .args(["--vcluster-chart-repo", &harness.charts])
            .arg("--vcluster-values")
            .arg(&values_file),
    );
    assert_eq!(created.code, Some(0), "{created:?}");
    assert!(created.stdout.contains("isolation vcluster"), "{created:?}");

    // The host: the release installed, vcluster's pod running on the real Node.
    let releases: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &name,
        &gitops::flux::helm_release_resource(),
    );
    let release = releases.get(&name).await.unwrap();
    assert_eq!(release.data["status"]["lastAttemptedRevision"], "0.21.0");
    assert!(
        release.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "{:?}",
        release.data["status"]
    );
    // Without persistence (the values above) the chart runs vcluster as a
    // Deployment of one pod.
    let control_plane = Api::<Deployment>::namespaced(client.clone(), &name)
        .get(&name)
        .await
        .unwrap();
    assert_eq!(control_plane.status.and_then(|s| s.ready_replicas), Some(1));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
    let vc_pods = pods
        .list(&ListParams::default().labels(&format!("app=vcluster,release={name}")))
        .await
        .unwrap();
    assert_eq!(vc_pods.items.len(), 1, "{:?}", vc_pods.items);
    let vc_pod = vc_pods.items[0].clone();
    assert_eq!(
        vc_pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str()),
        "the virtual control plane runs on the real Node"
    );
    let syncer = vc_pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(
        syncer,
        format!("{}/loft-sh/vcluster-oss:0.21.0", harness.registry),
        "the image built here"
    );
    let pod_ip = vc_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("the vcluster pod has an IP");

    // vcluster's own kubeconfig Secret (this test writes none).
    let secret = Api::<Secret>::namespaced(client.clone(), &name)
        .get(&format!("vc-{name}"))
        .await
        .unwrap();
    let kubeconfig = secret.data.as_ref().unwrap()["config"].0.clone();
    let parsed =
        kube::config::Kubeconfig::from_yaml(std::str::from_utf8(&kubeconfig).unwrap()).unwrap();
    assert_eq!(
        parsed.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .as_deref(),
        Some(format!("https://{name}.{name}:443").as_str()),
        "exportKubeConfig.server: the in-cluster address Flux uses"
    );
    let target = target_of(&client, &name).await;
    assert_eq!(
        target.kubeconfig_secret,
        Some((format!("vc-{name}"), "config".to_string()))
    );
    let vclient = virtual_client(&kubeconfig, &pod_ip, &format!("{name}.{name}")).await;
    let vversion = vclient.apiserver_version().await.unwrap();
    assert_eq!(
        vversion.git_version, kube_version,
        "the virtual API server answers"
    );

    // A session applies a Deployment into the virtual cluster through Flux.
    let marker = unique("hello-from-vcluster");
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\n  namespace: default\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: hello}}\n  template:\n    metadata:\n      labels: {{app: hello}}\n    spec:\n{placement}      containers:\n      - name: hello\n        image: {image}\n        command: [sh, -c, 'echo {marker}; exec sleep 3600']\n",
        placement = gitops_e2e::on_real_node(6),
        image = harness.image("busybox:harness"),
    );
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("deploy/hello.yaml", &deployment)]);
    let session = unique("run-vc");
    let mut s = gitops_e2e::RunningSession::start(
        &harness,
        dir.path(),
        &["deploy", "--name", &session, "--sandbox", &name, "--logs"],
    );
    s.wait_for("the first sync", VCLUSTER_WAIT, |e| {
        e["event"] == "synced" || e["event"] == "failed"
    });
    assert!(
        s.seen.iter().any(|e| e["event"] == "synced"),
        "{:?}",
        s.seen
    );
    // The virtual cluster holds it, applied by Flux for the session.
    let vdeploy = Api::<Deployment>::namespaced(vclient.clone(), "default")
        .get("hello")
        .await
        .unwrap();
    assert_eq!(
        vdeploy.labels().get("kustomize.toolkit.fluxcd.io/name"),
        Some(&session)
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &name)
            .get_opt("hello")
            .await
            .unwrap()
            .is_none(),
        "no Deployment in the host cluster: it is the virtual cluster's"
    );
    let vpods: Api<Pod> = Api::namespaced(vclient.clone(), "default");
    let vpod = eventually("the virtual pod of hello", VCLUSTER_WAIT, || async {
        let list = vpods
            .list(&ListParams::default().labels("app=hello"))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .next()
            .ok_or_else(|| "no pod yet".to_string())
    })
    .await;
    let vpod_name = vpod.name_any();
    // vcluster runs it on the host, on the real Node, where it runs and is ready.
    let synced = eventually("vcluster's host pod to run", VCLUSTER_WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("vcluster.loft.sh/managed-by={name}")))
            .await
            .map_err(|e| e.to_string())?;
        let pod = list
            .items
            .into_iter()
            .find(|p| p.annotations().get("vcluster.loft.sh/name") == Some(&vpod_name))
            .ok_or_else(|| format!("no host pod for {vpod_name} yet"))?;
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .container_statuses
            .iter()
            .flatten()
            .any(|c| c.ready && c.state.as_ref().is_some_and(|st| st.running.is_some()));
        if ready {
            Ok(pod)
        } else {
            Err(format!("{:?}", status))
        }
    })
    .await;
    assert_eq!(
        synced.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str())
    );
    assert_eq!(
        synced
            .annotations()
            .get("vcluster.loft.sh/namespace")
            .map(String::as_str),
        Some("default")
    );
    // What the container printed, from the kubelet through the host's API server.
    let host_log = pods
        .logs(&synced.name_any(), &Default::default())
        .await
        .unwrap();
    assert!(host_log.contains(&marker), "{host_log:?}");
    // --logs shows it, under the virtual pod's name (maybe before the sync's end).
    let is_marker = |e: &serde_json::Value| e["event"] == "log" && e["line"] == marker.as_str();
    let line = match s.seen.iter().find(|e| is_marker(e)) {
        Some(e) => e.clone(),
        None => s.wait_for("the pod's log line", VCLUSTER_WAIT, is_marker),
    };
    assert_eq!(line["pod"], vpod_name.as_str(), "{line}");

    // The stop removes the session: its Deployment from the virtual
    // cluster, the pod vcluster ran for it from the host, its Flux objects.
    s.signal("INT");
    assert_eq!(
        s.wait_exit(Duration::from_secs(300)),
        Some(0),
        "{:?}",
        s.seen
    );
    assert!(
        Api::<Deployment>::namespaced(vclient.clone(), "default")
            .get_opt("hello")
            .await
            .unwrap()
            .is_none(),
        "pruned from the virtual cluster"
    );
    let synced_name = synced.name_any();
    eventually("the host pod vcluster ran to go", VCLUSTER_WAIT, || async {
        match pods.get_opt(&synced_name).await {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(format!("{:?}", p.metadata.deletion_timestamp)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(
        Api::<Kustomization>::namespaced(client.clone(), &name)
            .get_opt(&session)
            .await
            .unwrap()
            .is_none()
    );

    // A kept session's objects in the virtual cluster: the sandbox's delete
    // has Flux garbage-collect them while the virtual cluster still runs,
    // then uninstalls the release, then removes the namespace.
    let kept = tempfile::tempdir().unwrap();
    let cm = unique("kept-in-vc");
    write_tree(
        kept.path(),
        &[("cm.yaml", &configmap_in("default", &cm, &[("k", "v")]))],
    );
    let out = run_cli(
        &harness,
        kept.path(),
        &["--once", "--keep", "--sandbox", &name],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let in_vc: Api<ConfigMap> = Api::namespaced(vclient.clone(), "default");
    assert!(in_vc.get_opt(&cm).await.unwrap().is_some(), "{out:?}");
    assert!(
        configmaps_named(&client, &cm).await.is_empty(),
        "nothing on the host"
    );
    let deleted = sandbox_cli(&harness, &["delete", &name, "--wait", "--timeout", "5m"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    let at = |what: &str| {
        deleted
            .stdout
            .find(what)
            .unwrap_or_else(|| panic!("{what} not in {deleted:?}"))
    };
    assert!(
        at("deleted kustomization/") < at(&format!("deleted helmrelease/{name}")),
        "the session's Kustomization is gone before vcluster is uninstalled: {deleted:?}"
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
