//! A cluster where the sandbox boundary is not in force (its policy
//! binding removed by the test, so this file runs alone in its own test
//! binary): `kubectl gitops-sandbox create` refuses and leaves nothing,
//! `--unconfined` creates a sandbox that says it is none, and a session into
//! a sandbox the boundary no longer protects is refused.

use gitops::sandbox;
use gitops_e2e::{Harness, output, plugin, unique, write_tree};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::DynamicObject;

fn sandbox_cli(harness: &Harness, args: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(args),
    )
}

/// Where the boundary is not in force (here: its binding removed for the
/// test), `create` refuses and leaves nothing; `--unconfined` creates a
/// sandbox that says it is none; a session into an unprotected sandbox is
/// refused. The policy is put back (by `policy --install`) at the end.
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
    bindings
        .delete(sandbox::boundary::NAME, &Default::default())
        .await
        .unwrap();
    let sbx = unique("sbx-nob");
    // As cluster admin, `create` simply puts the binding back.
    let created = sandbox_cli(&harness, &["create", &sbx]);
    assert_eq!(created.code, Some(0), "{created:?}");
    assert!(
        bindings
            .get_opt(sandbox::boundary::NAME)
            .await
            .unwrap()
            .is_some()
    );

    // As a user who may create namespaces and work in them but not write
    // admission policies, with the binding gone: refused, nothing left.
    bindings
        .delete(sandbox::boundary::NAME, &Default::default())
        .await
        .unwrap();
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
    let refused_name = unique("sbx-refused");
    let refused = as_user(&["create", &refused_name]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("not in force") && refused.stderr.contains("policy --install"),
        "{refused:?}"
    );
    gitops_e2e::wait_namespace_gone(&client, &refused_name).await;

    // --unconfined: created, and says it is no boundary, in the list too.
    let loose = unique("sbx-loose");
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
        &[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n",
        )],
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

    // Put the boundary back for everyone else, and clean up.
    let installed = sandbox_cli(&harness, &["policy", "--install"]);
    assert_eq!(installed.code, Some(0), "{installed:?}");
    for name in [&sbx, &loose] {
        let d = sandbox_cli(&harness, &["delete", name, "--wait"]);
        assert_eq!(d.code, Some(0), "{d:?}");
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let rbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let _ = roles.delete(&role, &Default::default()).await;
    let _ = rbs.delete(&role, &Default::default()).await;
}
