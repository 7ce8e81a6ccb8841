//! From GitOps mode to Run mode and back, through the real source-,
//! kustomize- and helm-controllers and the harness's Git server: a session
//! found the Kustomization that deploys its directory from Git, took it
//! over (the original suspended and marked, its settings kept, the app's
//! objects updated in place), and handed it back on stop (the original
//! resumed and Ready at Git's revision, what the session added removed,
//! what it changed reverted, by UID and field). Also the hard kill, a
//! second session, a parent Kustomization's next reconcile, and a commit
//! pushed during the session.

// Panics are the tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops::flux::Kustomization;
use gitops_e2e::{
    GitOpsRepo, Harness, RunningSession, eventually, output, plugin, request_reconcile, unique,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt};

const WAIT: Duration = Duration::from_secs(120);
const TAKEN_OVER_BY: &str = "gitops.kubectl.dev/taken-over-by";
const RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";

/// Another session asked to take over the same app, once: it must fail.
fn refused_second_session(
    harness: &Harness,
    repo: &GitOpsRepo,
    prefix: &str,
) -> gitops_e2e::Output {
    let second = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args([
                "apps/podinfo",
                "--take-over",
                "--once",
                "--name",
                &unique(prefix),
            ])
            .current_dir(repo.workdir()),
    );
    assert_ne!(second.code, Some(0), "{second:?}");
    second
}

async fn original(client: &Client, repo: &GitOpsRepo) -> Kustomization {
    let api: Api<Kustomization> = Api::namespaced(client.clone(), &repo.flux_namespace);
    api.get("podinfo").await.unwrap()
}

async fn configmap(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.unwrap()
}

async fn message(client: &Client, ns: &str) -> Option<String> {
    configmap(client, ns, "podinfo-config")
        .await
        .and_then(|c| c.data?.get("PODINFO_UI_MESSAGE").cloned())
}

async fn deployment(client: &Client, ns: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.get("podinfo").await.unwrap()
}

/// The original, as the API server holds it, is suspended and held by
/// `session` (in the flux namespace), Flux's reconcile annotation set.
async fn assert_held(client: &Client, repo: &GitOpsRepo, session: &str) {
    let ks = original(client, repo).await;
    assert_eq!(ks.spec.suspend, Some(true), "{:?}", ks.metadata);
    let a = ks.annotations();
    assert_eq!(
        a.get(TAKEN_OVER_BY).map(String::as_str),
        Some(format!("{}/{session}", repo.flux_namespace).as_str())
    );
    assert_eq!(a.get(RECONCILE).map(String::as_str), Some("disabled"));
}

/// Back in GitOps mode: resumed, unmarked, Ready at `revision`.
async fn assert_back(client: &Client, repo: &GitOpsRepo, revision: &str) {
    let ks = original(client, repo).await;
    assert_ne!(ks.spec.suspend, Some(true), "{:?}", ks.metadata);
    for key in [TAKEN_OVER_BY, RECONCILE] {
        assert!(
            !ks.annotations().contains_key(key),
            "{key}: {:?}",
            ks.metadata
        );
    }
    let status = ks.status.unwrap();
    assert_eq!(status.last_applied_revision.as_deref(), Some(revision));
    let ready = gitops::flux::condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
}

fn take_over(harness: &Harness, repo: &GitOpsRepo, name: &str, extra: &[&str]) -> RunningSession {
    let mut args = vec!["apps/podinfo", "--take-over", "--name", name];
    args.extend_from_slice(extra);
    RunningSession::start(harness, repo.workdir(), &args)
}

/// The whole round trip: found, taken over with the original's settings,
/// edited live (a change, an object added), held across the parent's
/// reconcile, refused to a second session, handed back on Ctrl+C.
#[tokio::test]
async fn a_session_takes_over_the_app_from_git_and_hands_it_back() {
    let harness = &Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(harness, &client, "e2e-takeover").await;
    let app_ns = repo.podinfo_namespace.clone();
    // The hard case for a parent: Git's manifest of the app's Kustomization
    // says `suspend: false` outright, so a parent applying it would resume
    // a plain suspend (Flux's reconcile: disabled annotation keeps it out).
    let apps = repo.workdir().join("clusters/local/apps.yaml");
    let text = std::fs::read_to_string(&apps).unwrap();
    std::fs::write(
        &apps,
        text.replacen(
            "  path: ./apps/podinfo\n",
            "  path: ./apps/podinfo\n  suspend: false\n",
            1,
        ),
    )
    .unwrap();
    repo.commit_and_push("podinfo: suspend: false, said outright");
    repo.wait_applied(&client).await;
    assert_eq!(original(&client, &repo).await.spec.suspend, Some(false));
    let git_revision = repo.head_revision();
    let deploy_uid = deployment(&client, &app_ns).await.uid().unwrap();
    let config_uid = configmap(&client, &app_ns, "podinfo-config")
        .await
        .unwrap()
        .uid()
        .unwrap();
    // The remote spelled as developers clone it: ssh-style origin.
    repo.spell_origin(&format!("git@127.0.0.1:{}.git", repo.name));

    // Without --take-over: only said, nothing taken over.
    let beside = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["apps/podinfo", "--once", "--name", &unique("run-beside")])
            .current_dir(repo.workdir()),
    );
    assert!(
        beside.stderr.contains(&format!(
            "apps/podinfo is deployed by Kustomization {ns}/podinfo from GitRepository {ns}/flux-system@main",
            ns = repo.flux_namespace
        )) && beside.stderr.contains("--take-over"),
        "{beside:?}"
    );
    assert_ne!(original(&client, &repo).await.spec.suspend, Some(true));

    let name = unique("run-podinfo");
    let mut s = take_over(harness, &repo, &name, &[]);
    s.next_sync().expect("the first sync");
    assert_held(&client, &repo, &name).await;
    // The session's own Kustomization took the original's settings.
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &repo.flux_namespace);
    let ours = kss.get(&name).await.unwrap();
    assert_eq!(ours.spec.target_namespace.as_deref(), Some(app_ns.as_str()));
    assert_eq!(ours.spec.wait, Some(true));
    assert_eq!(ours.spec.timeout.as_deref(), Some("2m0s"));
    assert_eq!(ours.spec.source_ref.kind, "OCIRepository");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &repo.flux_namespace);
    let lease = leases.get(&name).await.unwrap();
    assert_eq!(
        lease.annotations()["gitops.kubectl.dev/takes-over"],
        format!("{}/podinfo", repo.flux_namespace)
    );

    // Live edits: a changed value, more replicas, an object Git lacks.
    let dir = repo.app_dir("podinfo");
    let cm = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    std::fs::write(
        dir.join("configmap.yaml"),
        cm.replace("hello from Git", "hello from my laptop"),
    )
    .unwrap();
    let d = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    std::fs::write(
        dir.join("deployment.yaml"),
        d.replace("replicas: 2", "replicas: 3"),
    )
    .unwrap();
    std::fs::write(
        dir.join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  only: here\n",
    )
    .unwrap();
    let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        k.replace("  - service.yaml", "  - service.yaml\n  - extra.yaml"),
    )
    .unwrap();
    eventually("the edits applied", WAIT, || async {
        let m = message(&client, &app_ns).await;
        let extra = configmap(&client, &app_ns, "extra").await.is_some();
        let replicas = deployment(&client, &app_ns).await.spec.unwrap().replicas;
        (m.as_deref() == Some("hello from my laptop") && extra && replicas == Some(3))
            .then_some(())
            .ok_or(format!("{m:?} extra={extra} replicas={replicas:?}"))
    })
    .await;
    // The same objects, updated in place.
    assert_eq!(
        deployment(&client, &app_ns).await.uid().unwrap(),
        deploy_uid
    );
    assert_eq!(
        configmap(&client, &app_ns, "podinfo-config")
            .await
            .unwrap()
            .uid()
            .unwrap(),
        config_uid
    );

    // The parent's next reconcile (it applies the app's Kustomization from
    // Git, where it says `suspend: false`) leaves the takeover in place.
    let asked = request_reconcile(
        &client,
        "Kustomization",
        &repo.flux_namespace,
        "flux-system",
    )
    .await;
    eventually("the parent reconciled", WAIT, || async {
        let parent = kss.get("flux-system").await.unwrap();
        let s = parent.status.unwrap_or_default();
        let ready = gitops::flux::condition(&s.conditions, "Ready").map(|c| c.status.clone());
        (s.last_handled_reconcile_at.as_deref() == Some(asked.as_str())
            && ready.as_deref() == Some("True"))
        .then_some(())
        .ok_or(format!("{:?} {ready:?}", s.last_handled_reconcile_at))
    })
    .await;
    assert_held(&client, &repo, &name).await;
    assert_eq!(
        message(&client, &app_ns).await.as_deref(),
        Some("hello from my laptop")
    );

    // A second session cannot take it over: refused, naming the holder.
    let second = refused_second_session(harness, &repo, "run-second");
    assert!(
        second.stderr.contains(&format!(
            "already taken over by session {}/{name}",
            repo.flux_namespace
        )) && second.stderr.contains("live"),
        "{second:?}"
    );
    assert_held(&client, &repo, &name).await;

    // Stop: back in GitOps mode at Git's commit, said, with the uncommitted
    // edits pointed out.
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    let said: Vec<String> = s
        .seen
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    let short = &repo.head_sha()[..7];
    assert!(
        said.iter().any(|m| m
            == &format!(
                "back in GitOps mode: Kustomization {}/podinfo at main@{short}",
                repo.flux_namespace
            )),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|m| m.contains("uncommitted changes") && m.contains("not in Git")),
        "{said:#?}"
    );
    assert_back(&client, &repo, &git_revision).await;
    // What Git has, by UID and field; what it lacks, gone.
    assert_eq!(
        message(&client, &app_ns).await.as_deref(),
        Some("hello from Git")
    );
    let d = deployment(&client, &app_ns).await;
    assert_eq!(d.uid().unwrap(), deploy_uid);
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    assert_eq!(
        configmap(&client, &app_ns, "podinfo-config")
            .await
            .unwrap()
            .uid()
            .unwrap(),
        config_uid
    );
    assert!(configmap(&client, &app_ns, "extra").await.is_none());
    // The session's own objects are gone; the original applies the app again.
    assert!(kss.get_opt(&name).await.unwrap().is_none());
    assert!(leases.get_opt(&name).await.unwrap().is_none());
    let labels = deployment(&client, &app_ns).await.labels().clone();
    assert_eq!(
        labels
            .get("kustomize.toolkit.fluxcd.io/name")
            .map(String::as_str),
        Some("podinfo")
    );
    repo.cleanup(&client).await;
}

/// The natural end: edit live, commit, push, stop. The hand-back brings in
/// the pushed commit, and says nothing is missing from Git.
#[tokio::test]
async fn a_commit_pushed_during_the_session_is_what_gitops_resumes_with() {
    let harness = &Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(harness, &client, "e2e-takeover-push").await;
    let app_ns = repo.podinfo_namespace.clone();
    let deploy_uid = deployment(&client, &app_ns).await.uid().unwrap();
    let name = unique("run-push");
    let mut s = take_over(harness, &repo, &name, &[]);
    s.next_sync().expect("the first sync");
    let dir = repo.app_dir("podinfo");
    let cm = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    std::fs::write(
        dir.join("configmap.yaml"),
        cm.replace("hello from Git", "committed and pushed"),
    )
    .unwrap();
    s.next_sync().expect("the edit synced");
    assert_eq!(
        message(&client, &app_ns).await.as_deref(),
        Some("committed and pushed")
    );
    let pushed = repo.commit_and_push("podinfo: a new message");
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    assert_back(&client, &repo, &format!("main@sha1:{pushed}")).await;
    assert_eq!(
        message(&client, &app_ns).await.as_deref(),
        Some("committed and pushed")
    );
    assert_eq!(
        deployment(&client, &app_ns).await.uid().unwrap(),
        deploy_uid
    );
    let warned: Vec<&serde_json::Value> = s
        .seen
        .iter()
        .filter(|e| {
            e["event"] == "warning" && e["message"].as_str().unwrap_or("").contains("not in Git")
        })
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
    repo.cleanup(&client).await;
}

/// `kill -9`: the original stays suspended and marked; status says so, a
/// second session is refused, and `gitops-sessions delete` hands it back.
#[tokio::test]
async fn a_killed_session_leaves_the_app_marked_and_delete_hands_it_back() {
    let harness = &Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(harness, &client, "e2e-takeover-kill").await;
    let app_ns = repo.podinfo_namespace.clone();
    let git_revision = repo.head_revision();
    let name = unique("run-killed");
    // A short heartbeat: judged stale within seconds once killed.
    let mut s = take_over(harness, &repo, &name, &["--lease-duration", "3s"]);
    s.next_sync().expect("the first sync");
    let dir = repo.app_dir("podinfo");
    let cm = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    std::fs::write(
        dir.join("configmap.yaml"),
        cm.replace("hello from Git", "stranded"),
    )
    .unwrap();
    s.next_sync().expect("the edit synced");
    s.signal("KILL");
    s.wait_exit(WAIT);
    // Left as it was: suspended, marked, the session's content applied.
    assert_held(&client, &repo, &name).await;
    assert_eq!(message(&client, &app_ns).await.as_deref(), Some("stranded"));

    // The status names it, its holder and that the holder is not live.
    let holder = format!("{}/{name}", repo.flux_namespace);
    let status = eventually("status says the holder is not live", WAIT, || async {
        let st = output(
            plugin("kubectl-gitops_sessions")
                .args(harness.kube_args())
                .args(["status"]),
        );
        let line = st
            .stdout
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("Kustomization/{}/podinfo ", repo.flux_namespace))
            })
            .map(str::to_string)
            .unwrap_or_default();
        (line.contains("Run") && line.contains(&holder) && line.contains("NOT live"))
            .then_some(line.clone())
            .ok_or(format!("{st:?}"))
    })
    .await;
    assert!(status.contains("hands it back"), "{status}");
    // The sessions page lists it as well, signed in as a browser would be.
    let (mut ui, page, login, _drain) = gitops_e2e::serve_page(harness);
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap().to_string();
    let curl = |url: &str| {
        output(std::process::Command::new("curl").args(["-s", "-b", &jar, "-c", &jar, url])).stdout
    };
    curl(&login);
    let app = format!("Kustomization/{}/podinfo", repo.flux_namespace);
    eventually("the page lists the takeover", WAIT, || async {
        let html = curl(&page);
        (html.contains(&format!("data-app=\"{app}\" data-live=\"false\""))
            && html.contains(&format!(
                "gitops-sessions delete {name} -n {}",
                repo.flux_namespace
            )))
        .then_some(())
        .ok_or_else(|| html.chars().take(400).collect::<String>())
    })
    .await;
    let _ = ui.kill();
    let _ = ui.wait();

    // Another session: refused, naming the holder and what hands it back.
    let second = refused_second_session(harness, &repo, "run-other");
    assert!(
        second.stderr.contains(&holder) && second.stderr.contains("stale"),
        "{second:?}"
    );

    let deleted = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["delete", &name, "-n", &repo.flux_namespace]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert!(
        deleted.stdout.contains("back in GitOps mode")
            || deleted.stderr.contains("back in GitOps mode"),
        "{deleted:?}"
    );
    assert_back(&client, &repo, &git_revision).await;
    assert_eq!(
        message(&client, &app_ns).await.as_deref(),
        Some("hello from Git")
    );
    repo.cleanup(&client).await;
}

async fn hello(client: &Client, ns: &str) -> (String, i32, String) {
    let d = deployment_named(client, ns, "hello").await;
    let spec = d.spec.clone().unwrap();
    let greeting = spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "GREETING")
        .and_then(|e| e.value)
        .unwrap_or_default();
    (d.uid().unwrap(), spec.replicas.unwrap_or(1), greeting)
}

async fn deployment_named(client: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.get(name).await.unwrap()
}

/// A chart deployed by a HelmRelease from Git: the session releases the
/// working copy of the chart as the same Helm release, with the original's
/// values, and the stop hands the release back to Flux at Git's chart.
#[tokio::test]
async fn a_session_takes_over_a_helm_release_from_git_and_hands_it_back() {
    let harness = &Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(harness, &client, "e2e-takeover-helm").await;
    let ns = repo.hello_namespace.clone();
    let (uid, replicas, greeting) = hello(&client, &ns).await;
    assert_eq!((replicas, greeting.as_str()), (1, "hello from Git"));
    let hrs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &gitops_e2e::flux_resource("HelmRelease"),
    );
    let name = unique("run-hello");
    let mut s = RunningSession::start(
        harness,
        repo.workdir(),
        &["charts/hello", "--take-over", "--name", &name],
    );
    s.next_sync().expect("the first sync");
    let original = hrs.get("hello").await.unwrap();
    assert_eq!(original.data["spec"]["suspend"], true);
    assert_eq!(
        original.annotations()[TAKEN_OVER_BY],
        format!("{ns}/{name}")
    );
    // The session's HelmRelease: the original's values and release.
    let ours = hrs.get(&name).await.unwrap();
    assert_eq!(ours.data["spec"]["releaseName"], "hello");
    assert_eq!(ours.data["spec"]["values"]["greeting"], "hello from Git");
    // The working copy's chart: more replicas, released in place.
    let values = repo.chart_dir().join("values.yaml");
    std::fs::write(&values, "replicas: 3\ngreeting: hello\n").unwrap();
    s.next_sync().expect("the edit synced");
    let (now_uid, now_replicas, now_greeting) = hello(&client, &ns).await;
    assert_eq!(
        (now_uid.as_str(), now_replicas, now_greeting.as_str()),
        (uid.as_str(), 3, "hello from Git")
    );

    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    let said: Vec<String> = s
        .seen
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        said.iter().any(|m| m.starts_with(&format!(
            "back in GitOps mode: HelmRelease {ns}/hello at main@"
        ))),
        "{said:#?}"
    );
    // Back: resumed, unmarked, Ready; Git's chart released, the same Deployment.
    let back = hrs.get("hello").await.unwrap();
    assert_ne!(back.data["spec"]["suspend"], true);
    assert!(!back.annotations().contains_key(TAKEN_OVER_BY));
    let ready = back.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True", "{ready}");
    let (back_uid, back_replicas, _) = hello(&client, &ns).await;
    assert_eq!((back_uid.as_str(), back_replicas), (uid.as_str(), 1));
    assert!(hrs.get_opt(&name).await.unwrap().is_none());
    repo.cleanup(&client).await;
}

/// A session killed, and its Lease then deleted by hand: nothing names the
/// session any more but the original's mark, and `gitops-sessions prune`
/// hands the app back all the same.
#[tokio::test]
async fn prune_hands_back_an_app_whose_session_left_no_lease() {
    let harness = &Harness::get();
    let client = harness.cluster().await.client;
    let repo = GitOpsRepo::create(harness, &client, "e2e-takeover-prune").await;
    let git_revision = repo.head_revision();
    let name = unique("run-orphan");
    let mut s = take_over(harness, &repo, &name, &["--lease-duration", "3s"]);
    s.next_sync().expect("the first sync");
    s.signal("KILL");
    s.wait_exit(WAIT);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &repo.flux_namespace);
    leases
        .delete(&name, &Default::default())
        .await
        .expect("delete the Lease by hand");
    assert_held(&client, &repo, &name).await;
    let pruned = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["prune", "-n", &repo.flux_namespace]),
    );
    assert_eq!(pruned.code, Some(0), "{pruned:?}");
    assert_back(&client, &repo, &git_revision).await;
    // The session's own objects went with it.
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &repo.flux_namespace);
    assert!(kss.get_opt(&name).await.unwrap().is_none());
    repo.cleanup(&client).await;
}
