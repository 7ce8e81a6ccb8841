//! The sandbox boundary against the real API server and the real Flux
//! controllers, on a control plane that aggregates Flux's kinds into the
//! built-in `admin` role as `flux install` does: whatever a payload holds,
//! it acts with its sandbox ServiceAccount's rights inside the sandbox, or
//! it is refused; nothing it asks for appears outside.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops::flux::{Kustomization, KustomizationSpec, OCIRepository, SourceReference};
use gitops::labels;
use gitops::sandbox;
use gitops_e2e::{
    Footprint, Harness, configmap, eventually, kustomization_verdict, output, plugin,
    push_oci_source, sandbox_cli, unique, write_tree,
};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use kube::api::{DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

const TIMEOUT: Duration = Duration::from_secs(90);
/// A ClusterRoleBinding granting `subject_ns`'s default ServiceAccount
/// cluster-admin: what an escaping payload would create.
fn escape_binding(name: &str, subject_ns: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
         subjects:\n- kind: ServiceAccount\n  name: default\n  namespace: {subject_ns}\n"
    )
}

fn kustomization(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n\
         spec:\n  interval: 1m\n  prune: true\n{spec}"
    )
}

async fn cluster_role_binding(client: &Client, name: &str) -> Option<ClusterRoleBinding> {
    Api::<ClusterRoleBinding>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
}
/// The control plane gives Flux's kinds to `admin`, `edit` and `view`
/// exactly as `flux install` does: the sandbox's ServiceAccount (bound to
/// `admin`) may create Kustomizations, so the boundary cannot rest on RBAC.
#[tokio::test]
async fn the_control_plane_aggregates_flux_kinds_into_admin_edit_and_view() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for (role, verb) in [("admin", "create"), ("edit", "create"), ("view", "list")] {
        eventually(
            &format!("{role} to grant {verb} on Flux's kinds"),
            TIMEOUT,
            || async {
                let r = roles.get(role).await.map_err(|e| e.to_string())?;
                let grants = r.rules.unwrap_or_default().iter().any(|rule| {
                    rule.api_groups
                        .iter()
                        .flatten()
                        .any(|g| g == "kustomize.toolkit.fluxcd.io")
                        && rule.verbs.iter().any(|v| v == verb)
                });
                grants.then_some(()).ok_or("not yet aggregated".to_string())
            },
        )
        .await;
    }
}

/// The reproduction: `deploy/kustomization.yaml` lists `esc.yaml`,
/// a Kustomization on the session's own OCIRepository whose path holds a
/// ClusterRoleBinding. The session refuses it before pushing, naming the
/// file, and the binding never appears.
#[tokio::test]
async fn a_nested_kustomization_in_a_session_is_refused_before_anything_is_pushed() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let session = unique("esc");
    let crb = unique("esc-crb");
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            (
                "deploy/kustomization.yaml",
                "resources:\n- esc.yaml\n- cm.yaml\n",
            ),
            (
                "deploy/esc.yaml",
                &kustomization(
                    "esc",
                    &format!(
                        "  path: ./escape\n  sourceRef:\n    kind: OCIRepository\n    name: {session}\n"
                    ),
                ),
            ),
            ("deploy/cm.yaml", &configmap("app", &[("k", "v")])),
            ("escape/crb.yaml", &escape_binding(&crb, &session)),
        ],
    );
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["deploy", "--once", "--root-dir", ".", "--name", &session])
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("deploy/esc.yaml") && out.stderr.contains("Kustomization/esc"),
        "names the file and object: {out:?}"
    );
    assert!(
        out.stderr.contains("without spec.serviceAccountName")
            && out.stderr.contains("nothing was pushed"),
        "{out:?}"
    );
    assert!(cluster_role_binding(&client, &crb).await.is_none());
    // Nothing of the session is left, and nothing was applied.
    Footprint::expected(&session, &session, true)
        .assert_gone(&client)
        .await;
    let all: Api<Kustomization> = Api::all(client.clone());
    assert!(
        all.list(&ListParams::default().fields("metadata.name=esc"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// The guarantee itself, with the local check bypassed (an artifact pushed
/// by hand, as an old client or a generated overlay would): each hostile
/// Flux object is refused by the API server, the Kustomization that
/// carried it fails naming the policy, and nothing it asked for exists. A
/// confined nested Kustomization works, with the sandbox's rights only.
#[tokio::test]
async fn hostile_flux_objects_in_a_payload_are_refused_by_the_api_server() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let sbx = unique("sbx-esc");
    let created = sandbox_cli(&harness, &["create", &sbx]);
    assert_eq!(created.code, Some(0), "{created:?}");

    // A more privileged ServiceAccount in the sandbox (as a careless
    // platform team might leave one): the payload may not act as it.
    let powerful = "powerful";
    Api::<ServiceAccount>::namespaced(client.clone(), &sbx)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(powerful.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let powerful_binding = unique("powerful");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(powerful_binding.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: powerful.into(),
                    namespace: Some(sbx.clone()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();

    let crb = unique("esc-crb");
    let src = "src";
    let sa = sandbox::SERVICE_ACCOUNT;
    let confined = format!("  serviceAccountName: {sa}\n  targetNamespace: {sbx}\n");
    let on_src = format!("  sourceRef:\n    kind: OCIRepository\n    name: {src}\n");
    // Each case: its directory's one hostile document.
    let cases: Vec<(&str, String)> = vec![
        (
            "no-sa",
            kustomization("n-no-sa", &format!("  path: ./escape\n{on_src}")),
        ),
        (
            "powerful-sa",
            kustomization(
                "n-powerful",
                &format!("  path: ./escape\n  serviceAccountName: {powerful}\n{on_src}"),
            ),
        ),
        (
            "kubeconfig",
            kustomization(
                "n-kubeconfig",
                &format!("  path: ./escape\n{confined}{on_src}  kubeConfig:\n    secretRef:\n      name: stolen\n"),
            ),
        ),
        (
            "cross-source",
            kustomization(
                "n-cross-source",
                &format!("  path: ./escape\n{confined}  sourceRef:\n    kind: OCIRepository\n    name: {src}\n    namespace: flux-system\n"),
            ),
        ),
        (
            "cross-target",
            kustomization(
                "n-cross-target",
                &format!("  path: ./escape\n  serviceAccountName: {sa}\n  targetNamespace: default\n{on_src}"),
            ),
        ),
        (
            "git-source",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: n-git\nspec:\n  interval: 1m\n  url: http://127.0.0.1:1/internal.git\n  ref:\n    branch: main\n".to_string(),
        ),
        (
            "oci-source",
            format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: n-oci\nspec:\n  interval: 1m\n  url: oci://{}/e2e/anything\n", harness.registry),
        ),
        (
            "helm-source",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: n-helm\nspec:\n  interval: 1m\n  url: http://169.254.169.254/\n".to_string(),
        ),
        (
            "release-no-sa",
            format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: n-release\nspec:\n  interval: 1m\n  chartRef:\n    kind: OCIRepository\n    name: {src}\n"),
        ),
        (
            "release-storage",
            format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: n-release-storage\nspec:\n  interval: 1m\n  serviceAccountName: {sa}\n  storageNamespace: default\n  chartRef:\n    kind: OCIRepository\n    name: {src}\n"),
        ),
    ];
    let mut files: Vec<(String, String)> = cases
        .iter()
        .map(|(dir, doc)| (format!("{dir}/obj.yaml"), doc.clone()))
        .collect();
    files.push(("escape/crb.yaml".into(), escape_binding(&crb, &sbx)));
    // Confined: acts as the sandbox's ServiceAccount, in the sandbox.
    files.push((
        "confined/obj.yaml".into(),
        kustomization(
            "n-confined",
            &format!("  path: ./payload\n{confined}{on_src}"),
        ),
    ));
    files.push((
        "payload/cm.yaml".into(),
        configmap("nested-ok", &[("k", "v")]),
    ));
    // Confined, but asking for a cluster-wide object: the sandbox's rights say no.
    files.push((
        "confined-crb/obj.yaml".into(),
        kustomization(
            "n-confined-crb",
            &format!("  path: ./escape\n{confined}{on_src}"),
        ),
    ));
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_tree(dir.path(), &refs);
    push_oci_source(&harness, &client, &sbx, src, &sbx, dir.path()).await;
    let target = sandbox::Target::namespace_sandbox(&sbx);
    let tops: Vec<String> = cases
        .iter()
        .map(|(d, _)| d.to_string())
        .chain(["confined".to_string(), "confined-crb".to_string()])
        .collect();
    for top in &tops {
        let mut spec = KustomizationSpec {
            source_ref: SourceReference {
                kind: "OCIRepository".into(),
                name: src.into(),
                namespace: None,
            },
            path: Some(format!("./{top}")),
            prune: true,
            interval: "10m".into(),
            retry_interval: Some("5s".into()),
            ..Default::default()
        };
        target.configure(&mut spec);
        let mut ks = Kustomization::new(&format!("top-{top}"), spec);
        ks.metadata.labels = Some(labels::managed("session"));
        Api::<Kustomization>::namespaced(client.clone(), &sbx)
            .create(&PostParams::default(), &ks)
            .await
            .unwrap();
    }

    for (case, _) in &cases {
        let why = kustomization_verdict(&client, &sbx, &format!("top-{case}"), TIMEOUT)
            .await
            .expect_err(case);
        assert!(
            why.contains(sandbox::boundary::NAME),
            "{case}: refused by the boundary policy: {why}"
        );
    }
    // The confined nested Kustomization applied its ConfigMap in the sandbox.
    kustomization_verdict(&client, &sbx, "top-confined", TIMEOUT)
        .await
        .unwrap();
    kustomization_verdict(&client, &sbx, "n-confined", TIMEOUT)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &sbx);
    assert!(cms.get_opt("nested-ok").await.unwrap().is_some());
    // The confined one asking for a ClusterRoleBinding was created (it is
    // confined) but fails with the sandbox's rights.
    kustomization_verdict(&client, &sbx, "top-confined-crb", TIMEOUT)
        .await
        .unwrap();
    let why = kustomization_verdict(&client, &sbx, "n-confined-crb", TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        why.contains("cluster-scoped objects are not allowed in a sandbox"),
        "{why}"
    );

    // Nothing a hostile case asked for exists anywhere.
    assert!(cluster_role_binding(&client, &crb).await.is_none());
    for (kind_api, name) in [
        (gitops::flux::helm_release_resource(), "n-release"),
        (gitops::flux::helm_release_resource(), "n-release-storage"),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind_api);
        assert!(
            api.list(&ListParams::default().fields(&format!("metadata.name={name}")))
                .await
                .unwrap()
                .items
                .is_empty(),
            "{name}"
        );
    }
    let ks: Api<Kustomization> = Api::all(client.clone());
    let nested: Vec<String> = ks
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|k| k.name_any())
        .filter(|n| {
            n.starts_with("n-") && n.as_str() != "n-confined" && n.as_str() != "n-confined-crb"
        })
        .collect();
    assert!(nested.is_empty(), "{nested:?}");
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), &sbx);
    assert_eq!(
        repos
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.name_any())
            .collect::<Vec<_>>(),
        vec![src.to_string()]
    );

    Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&powerful_binding, &Default::default())
        .await
        .unwrap();
    let deleted = sandbox_cli(&harness, &["delete", &sbx, "--wait"]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
}

/// A chart whose templates hold a Flux Kustomization without a
/// ServiceAccount: helm-controller renders it as the sandbox's
/// ServiceAccount, the API server refuses it, the session fails and says
/// why, and nothing escapes.
#[tokio::test]
async fn a_chart_template_cannot_escape_either() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let session = unique("chart-esc");
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("Chart.yaml", "apiVersion: v2\nname: esc\nversion: 0.1.0\n"),
            (
                "templates/esc.yaml",
                &kustomization(
                    "chart-esc",
                    "  path: ./\n  sourceRef:\n    kind: OCIRepository\n    name: {{ .Release.Name }}\n",
                ),
            ),
        ],
    );
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--name", &session, "--timeout", "60s"])
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(sandbox::boundary::NAME), "{out:?}");
    let all: Api<Kustomization> = Api::all(client.clone());
    assert!(
        all.list(&ListParams::default().fields("metadata.name=chart-esc"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    Footprint::expected(&session, &session, true)
        .assert_gone(&client)
        .await;
}

/// A pod that would reach its node (privileged, host path) is refused by
/// the API server's Pod Security admission in a namespace sandbox.
#[tokio::test]
async fn a_privileged_pod_cannot_reach_the_node() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let session = unique("priv");
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root\nspec:\n  containers:\n  - name: c\n    image: example/c:1\n    securityContext:\n      privileged: true\n    volumeMounts:\n    - {name: host, mountPath: /host}\n  volumes:\n  - name: host\n    hostPath: {path: /}\n",
        )],
    );
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--name", &session])
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("PodSecurity"), "{out:?}");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    assert!(
        pods.list(&ListParams::default().fields("metadata.name=root"))
            .await
            .unwrap()
            .items
            .iter()
            .all(|p| p.namespace().as_deref() != Some(session.as_str()))
    );
    Footprint::expected(&session, &session, true)
        .assert_gone(&client)
        .await;
}
