//! The harness's Git server (Git's own git-http-backend) as Flux's source:
//! the fleet `tests/cluster/up` bootstraps, a commit pushed to a test's own
//! repository ([`GitOpsRepo`]) reaching the cluster, and what a parent
//! Kustomization does on its next reconcile to a child Kustomization that
//! someone else suspended: the facts the take-over of an app Flux deploys
//! from Git is designed on.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use gitops_e2e::{GitOpsRepo, Harness, eventually, flux_resource, request_reconcile, run};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(90);

/// The sha of `main` on the server, as `git ls-remote` reads it.
fn ls_remote_main(url: &str) -> String {
    let out = run(Command::new("git").args(["ls-remote", url, "refs/heads/main"]));
    let sha = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sha.len(), 40, "git ls-remote {url}: {out:?}");
    sha
}

fn ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn deployment_ready(client: &Client, ns: &str, name: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Deployment {ns}/{name} with {replicas} ready replicas"),
        WAIT,
        || async {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas);
            let got = d.status.as_ref().and_then(|s| s.ready_replicas);
            if want == Some(replicas) && got == Some(replicas) {
                Ok(d)
            } else {
                Err(format!("spec.replicas {want:?}, ready {got:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_harness_fleet_is_applied_from_the_git_server() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let url = format!("{}/fleet.git", harness.git_url().trim_end_matches('/'));
    let sources: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "flux-system",
        &flux_resource("GitRepository"),
    );
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "flux-system",
        &flux_resource("Kustomization"),
    );

    // As `flux bootstrap git` leaves a cluster: GitRepository flux-system on
    // the fleet's URL, the parent Kustomization flux-system and the apps'
    // Kustomizations it applies, all at the commit main holds on the server.
    let source = sources.get("flux-system").await.unwrap();
    assert_eq!(source.data["spec"]["url"], url.as_str());
    assert_eq!(source.data["spec"]["ref"]["branch"], "main");
    eventually(
        "the fleet's Kustomizations Ready at the server's main",
        WAIT,
        || async {
            let revision = format!("main@sha1:{}", ls_remote_main(&url));
            for name in ["flux-system", "podinfo", "hello-chart"] {
                let ks = kustomizations.get(name).await.map_err(|e| e.to_string())?;
                let applied = ks.data["status"]["lastAppliedRevision"].clone();
                if applied != revision.as_str() || !ready(&ks) {
                    return Err(format!("{name}: applied {applied}, want {revision}"));
                }
            }
            Ok(())
        },
    )
    .await;
    let parent = kustomizations.get("flux-system").await.unwrap();
    assert_eq!(parent.data["spec"]["path"], "./clusters/local");
    assert_eq!(parent.data["spec"]["prune"], true);

    // The apps: podinfo's Deployment rolled out on the kwok nodes, the chart
    // from Git released by helm-controller with the HelmRelease's values.
    deployment_ready(&client, "podinfo", "podinfo", 2).await;
    let message = Api::<ConfigMap>::namespaced(client.clone(), "podinfo")
        .get("podinfo-config")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .remove("PODINFO_UI_MESSAGE");
    assert_eq!(message.as_deref(), Some("hello from Git"));
    let release = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "hello-chart",
        &flux_resource("HelmRelease"),
    )
    .get("hello")
    .await
    .unwrap();
    assert!(ready(&release), "{:?}", release.data["status"]);
    deployment_ready(&client, "hello-chart", "hello", 1).await;
    let hello = Api::<Deployment>::namespaced(client.clone(), "hello-chart")
        .get("hello")
        .await
        .unwrap();
    let env = serde_json::to_value(&hello.spec.unwrap().template.spec.unwrap().containers[0].env)
        .unwrap();
    assert_eq!(
        env,
        serde_json::json!([{"name": "GREETING", "value": "hello from Git"}])
    );
}

#[tokio::test]
async fn a_pushed_commit_reaches_the_cluster_on_a_reconcile_request() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(&harness, &client, "gs").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &repo.podinfo_namespace);
    let message = || async {
        configmaps
            .get("podinfo-config")
            .await
            .map_err(|e| e.to_string())
            .map(|c| c.data.unwrap_or_default().remove("PODINFO_UI_MESSAGE"))
    };
    assert_eq!(message().await.unwrap().as_deref(), Some("hello from Git"));
    deployment_ready(&client, &repo.podinfo_namespace, "podinfo", 2).await;
    // The fixture's claims, checked against the server: the pushed commit
    // is what main holds there.
    assert_eq!(ls_remote_main(&repo.url), repo.head_sha());

    let file = repo.app_dir("podinfo").join("configmap.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("hello from Git", "edited in Git")).unwrap();
    let sha = repo.commit_and_push("podinfo: a new message");
    assert_eq!(ls_remote_main(&repo.url), sha);
    let requested = repo.reconcile_source(&client).await;
    eventually("the ConfigMap to carry Git's new data", WAIT, || async {
        match message().await?.as_deref() {
            Some("edited in Git") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let source = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &repo.flux_namespace,
        &flux_resource("GitRepository"),
    )
    .get("flux-system")
    .await
    .unwrap();
    assert_eq!(
        source.data["status"]["artifact"]["revision"],
        format!("main@sha1:{sha}").as_str()
    );
    assert_eq!(
        source.data["status"]["lastHandledReconcileAt"],
        requested.as_str()
    );
    // Everything the repository deploys moves to the commit: both apps'
    // Kustomizations, and the chart (a new version per commit) released.
    repo.wait_applied(&client).await;
    repo.cleanup(&client).await;
}

/// A JSON merge patch of the child Kustomization `podinfo` by `manager`.
async fn patch_child(client: &Client, repo: &GitOpsRepo, manager: &str, patch: serde_json::Value) {
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &repo.flux_namespace,
        &flux_resource("Kustomization"),
    )
    .patch(
        "podinfo",
        &PatchParams {
            field_manager: Some(manager.to_string()),
            ..Default::default()
        },
        &Patch::Merge(patch),
    )
    .await
    .unwrap_or_else(|e| panic!("patch of the child by {manager}: {e}"));
}

/// The parent Kustomization reconciled once more, at the same commit.
async fn reconcile_parent(client: &Client, repo: &GitOpsRepo) {
    let at = request_reconcile(client, "Kustomization", &repo.flux_namespace, "flux-system").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &repo.flux_namespace,
        &flux_resource("Kustomization"),
    );
    eventually("the parent to reconcile again", WAIT, || async {
        let ks = api.get("flux-system").await.map_err(|e| e.to_string())?;
        if ks.data["status"]["lastHandledReconcileAt"] == at.as_str() && ready(&ks) {
            Ok(())
        } else {
            Err(format!("{}", ks.data["status"]))
        }
    })
    .await;
}

/// Git's manifest of the child `podinfo` with `extra` spec lines, pushed;
/// returns once the parent has applied that commit.
async fn push_child_spec(client: &Client, repo: &GitOpsRepo, original: &str, extra: &str) {
    let file = repo.workdir().join("clusters/local/apps.yaml");
    let anchor = "  path: ./apps/podinfo\n";
    assert!(original.contains(anchor), "{original}");
    std::fs::write(
        &file,
        original.replacen(anchor, &format!("{anchor}{extra}"), 1),
    )
    .unwrap();
    let sha = repo.commit_and_push(&format!("podinfo's Kustomization: {}", extra.trim()));
    repo.reconcile_source(client).await;
    repo.wait_kustomization(client, "flux-system", &format!("main@sha1:{sha}"))
        .await;
}

/// (spec.suspend, spec.retryInterval, field managers) of the child.
async fn child(client: &Client, repo: &GitOpsRepo) -> (Option<bool>, Option<String>, String) {
    let ks = repo.kustomization(client, "podinfo").await;
    let managers: Vec<String> = ks
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            format!(
                "{}/{}",
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default()
            )
        })
        .collect();
    (
        ks.data["spec"]["suspend"].as_bool(),
        ks.data["spec"]["retryInterval"]
            .as_str()
            .map(str::to_string),
        managers.join(", "),
    )
}

/// What kustomize-controller (v1.9.5, server-side apply) does to a child
/// Kustomization, on its parent's next reconcile, when another field manager
/// suspended the child with a JSON merge patch. The observed answers:
///
/// 1. A manager whose name begins with `kubectl` (`kubectl`, `kubectl-patch`,
///    `kubectl-gitops`, …) loses its fields (its `suspend` and its
///    annotations alike) at the parent's next reconcile, even with nothing
///    new in Git: kustomize-controller removes what `kubectl` edits set (its
///    field-manager clean-up matches by that name prefix). The child is
///    resumed.
/// 2. Any other manager (here `gitops-takeover`) keeps `suspend: true` and
///    its annotations across the parent's reconciles and its applies of a
///    changed child manifest, as long as Git's manifest does not set them.
/// 3. Git's manifest saying `suspend: false` explicitly: the parent's apply
///    takes the field back; the child is resumed.
/// 4. The in-cluster child annotated `kustomize.toolkit.fluxcd.io/reconcile:
///    disabled`: the parent leaves it alone entirely (still in its
///    inventory, parent Ready): it stays suspended although Git says
///    `suspend: false`, and Git's other changes to it are not applied either.
/// 5. Removing that annotation hands the child back: the parent's next
///    reconcile applies Git's manifest again (here `suspend: false`).
/// 6. The annotation protects a `kubectl-*` manager's fields too (the parent
///    skips the object before any clean-up); once the annotation is removed,
///    the parent's next reconcile strips that manager's `suspend` and
///    annotations: resumed even where Git does not mention `suspend`.
#[tokio::test]
async fn a_parent_kustomization_and_a_child_suspended_by_another_manager() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(&harness, &client, "gs").await;
    let original =
        std::fs::read_to_string(repo.workdir().join("clusters/local/apps.yaml")).unwrap();
    // A suspend and a mark of who holds the app, as a take-over would set them.
    let suspend = serde_json::json!({
        "metadata": {"annotations": {"e2e.gitops/held-by": "a-session"}},
        "spec": {"suspend": true}
    });
    let held_by = |ks: &DynamicObject| {
        ks.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("e2e.gitops/held-by").cloned())
    };

    // 1. Suspended by a manager named kubectl-*: resumed by the parent.
    patch_child(&client, &repo, "kubectl-gitops", suspend.clone()).await;
    assert_eq!(child(&client, &repo).await.0, Some(true));
    reconcile_parent(&client, &repo).await;
    let (suspended, _, managers) = child(&client, &repo).await;
    assert_eq!(
        suspended, None,
        "a suspend set by manager kubectl-gitops survived the parent's reconcile ({managers})"
    );
    assert!(!managers.contains("kubectl-gitops"), "{managers}");
    assert_eq!(held_by(&repo.kustomization(&client, "podinfo").await), None);

    // 2. Suspended by another manager: still suspended after the parent's
    //    reconcile, and after it applied a changed child manifest.
    patch_child(&client, &repo, "gitops-takeover", suspend.clone()).await;
    reconcile_parent(&client, &repo).await;
    assert_eq!(child(&client, &repo).await.0, Some(true));
    push_child_spec(&client, &repo, &original, "  retryInterval: 41s\n").await;
    let (suspended, retry, managers) = child(&client, &repo).await;
    assert_eq!(
        retry.as_deref(),
        Some("41s"),
        "the parent applied Git's child"
    );
    assert_eq!(suspended, Some(true), "{managers}");
    assert!(managers.contains("gitops-takeover/Update"), "{managers}");
    assert_eq!(
        held_by(&repo.kustomization(&client, "podinfo").await).as_deref(),
        Some("a-session")
    );

    // 3. Git says suspend: false explicitly: the parent resumes the child.
    push_child_spec(
        &client,
        &repo,
        &original,
        "  retryInterval: 42s\n  suspend: false\n",
    )
    .await;
    let (suspended, retry, managers) = child(&client, &repo).await;
    assert_eq!(retry.as_deref(), Some("42s"));
    assert_eq!(suspended, Some(false), "{managers}");

    // 4. Suspended, and annotated reconcile: disabled in the cluster: the
    //    parent leaves the child as it is, whatever Git says.
    patch_child(
        &client,
        &repo,
        "gitops-takeover",
        serde_json::json!({
            "metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}},
            "spec": {"suspend": true}
        }),
    )
    .await;
    push_child_spec(
        &client,
        &repo,
        &original,
        "  retryInterval: 43s\n  suspend: false\n",
    )
    .await;
    let (suspended, retry, managers) = child(&client, &repo).await;
    assert_eq!(suspended, Some(true), "{managers}");
    assert_eq!(
        retry.as_deref(),
        Some("42s"),
        "the parent left the child's spec as it was"
    );
    let parent = repo.kustomization(&client, "flux-system").await;
    assert!(ready(&parent), "{}", parent.data["status"]);
    let inventory = parent.data["status"]["inventory"].to_string();
    assert!(
        inventory.contains(&format!(
            "{}_podinfo_kustomize.toolkit.fluxcd.io_Kustomization",
            repo.flux_namespace
        )),
        "{inventory}"
    );

    // 5. The hand-back: the annotation removed, the parent applies Git again.
    patch_child(
        &client,
        &repo,
        "gitops-takeover",
        serde_json::json!({
            "metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": null}}
        }),
    )
    .await;
    reconcile_parent(&client, &repo).await;
    let (suspended, retry, managers) = child(&client, &repo).await;
    assert_eq!(retry.as_deref(), Some("43s"));
    assert_eq!(suspended, Some(false), "{managers}");
    let revision = repo.head_revision();
    repo.reconcile_source(&client).await;
    repo.wait_kustomization(&client, "podinfo", &revision).await;

    // 6. reconcile: disabled protects even a kubectl-* manager's fields; once
    //    it is removed, the parent's next reconcile strips them all.
    push_child_spec(&client, &repo, &original, "").await;
    assert_eq!(child(&client, &repo).await.0, None, "Git sets no suspend");
    let mut held = suspend.clone();
    held["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"] = "disabled".into();
    // A new value: a patch that changes nothing records no owner, and
    // gitops-takeover still owns the annotation from step 2.
    held["metadata"]["annotations"]["e2e.gitops/held-by"] = "another-session".into();
    patch_child(&client, &repo, "kubectl-gitops", held).await;
    reconcile_parent(&client, &repo).await;
    let (suspended, _, managers) = child(&client, &repo).await;
    assert_eq!(suspended, Some(true), "{managers}");
    assert_eq!(
        held_by(&repo.kustomization(&client, "podinfo").await).as_deref(),
        Some("another-session")
    );
    patch_child(
        &client,
        &repo,
        "kubectl-gitops",
        serde_json::json!({
            "metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": null}}
        }),
    )
    .await;
    reconcile_parent(&client, &repo).await;
    let (suspended, _, managers) = child(&client, &repo).await;
    assert_eq!(suspended, None, "{managers}");
    assert_eq!(held_by(&repo.kustomization(&client, "podinfo").await), None);
    repo.cleanup(&client).await;
}
