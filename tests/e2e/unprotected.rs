//! A cluster where the sandbox boundary is not in force for some sandboxes
//! (its binding edited by the test to skip the test's own namespaces; in its
//! own test binary, so no other test sees the edit): `kubectl gitops-sandbox create` refuses and leaves nothing,
//! `--unconfined` creates a sandbox that says it is none, and a session into
//! a sandbox the boundary no longer protects is refused.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gitops::sandbox;
use gitops_e2e::{Harness, configmap, output, plugin, sandbox_cli, unique, write_tree};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
/// Where the boundary is not in force (here: the binding made to skip this
/// test's own namespaces), `create` refuses and leaves nothing;
/// `--unconfined` creates a sandbox that says it is none; a session into an
/// unprotected sandbox is refused; `policy --install` brings an older
/// binding of ours back to exactly the suite's.
#[tokio::test]
async fn without_the_boundary_create_refuses_unless_unconfined() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    // The policy is printed for a platform team without any cluster.
    let printed = output(plugin("kubectl-gitops_sandbox").args(["policy"]));
    assert_eq!(printed.code, Some(0), "{printed:?}");
    assert!(
        printed
            .stdout
            .contains("kind: ValidatingAdmissionPolicyBinding")
    );

    let installed = sandbox_cli(&harness, &["policy", "--install"]);
    assert_eq!(installed.code, Some(0), "{installed:?}");
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicyBinding",
            ),
            "validatingadmissionpolicybindings",
        ),
    );
    // The sandbox this test makes while the boundary is in force.
    let sbx = unique("sbx-nob");
    let created = sandbox_cli(&harness, &["create", &sbx]);
    assert_eq!(created.code, Some(0), "{created:?}");
    // Take the boundary away from this test's own namespaces only (never
    // from anyone else's: a sandbox left unprotected for a moment is one
    // whose payload Flux retries, and escapes), and mark the binding as an
    // older revision of ours.
    let refused_name = unique("sbx-refused");
    let loose = unique("sbx-loose");
    let exclude = serde_json::json!({
        "metadata": {"annotations": {sandbox::boundary::REVISION_ANNOTATION: "0"}},
        "spec": {"matchResources": {"namespaceSelector": {"matchExpressions": [{
            "key": gitops::labels::SANDBOX,
            "operator": "NotIn",
            "values": [&sbx, &refused_name, &loose],
        }]}}},
    });
    bindings
        .patch(
            sandbox::boundary::NAME,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&exclude),
        )
        .await
        .unwrap();
    // The API server takes the edit up within a second or so.
    gitops_e2e::eventually(
        "the boundary to be lifted from the test's sandbox",
        std::time::Duration::from_secs(30),
        || async {
            match sandbox::boundary::probe(&client, &sbx, std::time::Duration::ZERO).await {
                Err(sandbox::boundary::BoundaryError::NotInForce { .. }) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let user = unique("dev");
    let role = format!("{user}-role");
    // Everything but admission policies: a ClusterRole with every group but
    // admissionregistration.k8s.io.
    let groups = [
        "",
        "apps",
        "batch",
        "rbac.authorization.k8s.io",
        "coordination.k8s.io",
        "networking.k8s.io",
        "policy",
        "apiextensions.k8s.io",
        "events.k8s.io",
        "source.toolkit.fluxcd.io",
        "kustomize.toolkit.fluxcd.io",
        "helm.toolkit.fluxcd.io",
        "authorization.k8s.io",
    ];
    harness.kubectl_apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\nrules:\n\
         - apiGroups: {groups:?}\n  resources: [\"*\"]\n  verbs: [\"*\"]\n\
         - apiGroups: [\"admissionregistration.k8s.io\"]\n  resources: [\"*\"]\n  verbs: [get, list, watch]\n\
         - nonResourceURLs: [\"*\"]\n  verbs: [\"*\"]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {role}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\n\
         subjects:\n- kind: User\n  name: {user}\n  apiGroup: rbac.authorization.k8s.io\n"
    ));
    let as_user = |args: &[&str]| {
        output(
            plugin("kubectl-gitops_sandbox")
                .args(harness.kube_args())
                .args(["--as", &user])
                .args(args),
        )
    };
    let refused = as_user(&["create", &refused_name]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("not in force") && refused.stderr.contains("policy --install"),
        "{refused:?}"
    );
    gitops_e2e::wait_namespace_gone(&client, &refused_name).await;

    // --unconfined: created, and says it is no boundary, in the list too.
    let created = as_user(&["create", &loose, "--unconfined"]);
    assert_eq!(created.code, Some(0), "{created:?}");
    assert!(
        created.stderr.contains("NOT a security boundary"),
        "{created:?}"
    );
    let listed = as_user(&["list", "-A"]);
    assert!(
        listed.stdout.contains("namespace (unconfined)"),
        "{listed:?}"
    );

    // The sandbox made while the policy was in force is no longer
    // protected: a session into it is refused before anything is applied.
    let run_dir = tempfile::tempdir().unwrap();
    write_tree(
        run_dir.path(),
        &[("cm.yaml", &configmap("c", &[("k", "v")]))],
    );
    let session = unique("run-nob");
    let run = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--sandbox", &sbx, "--name", &session])
            .current_dir(run_dir.path()),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not in force"), "{run:?}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &sbx);
    assert!(cms.get_opt("c").await.unwrap().is_none());

    // An administrator's `policy --install` replaces an older revision of
    // ours whole: the binding is exactly the suite's again.
    let installed = sandbox_cli(&harness, &["policy", "--install"]);
    assert_eq!(installed.code, Some(0), "{installed:?}");
    let binding = bindings.get(sandbox::boundary::NAME).await.unwrap();
    let selector = "/spec/matchResources/namespaceSelector";
    assert_eq!(
        binding.data.pointer(selector),
        sandbox::boundary::binding().pointer(selector)
    );
    assert_eq!(
        binding
            .annotations()
            .get(sandbox::boundary::REVISION_ANNOTATION),
        Some(&sandbox::boundary::REVISION.to_string())
    );
    let probe = sandbox::boundary::probe(&client, &sbx, std::time::Duration::from_secs(10)).await;
    assert!(probe.is_ok(), "{probe:?}");
    for name in [&sbx, &loose] {
        let d = sandbox_cli(&harness, &["delete", name, "--wait"]);
        assert_eq!(d.code, Some(0), "{d:?}");
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let rbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let _ = roles.delete(&role, &Default::default()).await;
    let _ = rbs.delete(&role, &Default::default()).await;
}
