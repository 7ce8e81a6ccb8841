//! `kubectl gitops-run [DIR]` end to end: a session syncs a directory's
//! edits, prunes and deletions (manifests, SOPS-encrypted ones, a cluster
//! mode), rides out bad YAML and a registry outage, and cleans up after
//! itself, or leaves a Lease that goes stale when killed. Real sessions
//! against the real API server, Flux and registry.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use gitops::session::lease_is_live;
use gitops_e2e::{
    Footprint, Harness, OwnRegistry, RunningSession, configmap, configmap_in, create_namespace,
    delete_namespace, eventually, output, plugin, unique, write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(60);

async fn value(client: &Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

/// A payload of the kinds a real application has, beside its ConfigMaps: a
/// ServiceAccount, a Secret, a Service (the cluster derives its
/// EndpointSlice) and a Deployment of one replica (the cluster derives its
/// ReplicaSet and Pod; the harness's kwok nodes run it).
fn app_objects() -> Vec<(&'static str, String)> {
    vec![
        (
            "sa.yaml",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n".into(),
        ),
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData:\n  token: t\n"
                .into(),
        ),
        (
            "svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"
                .into(),
        ),
        (
            "deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      serviceAccountName: web\n      containers:\n      - name: web\n        image: registry.example/web:1\n"
                .into(),
        ),
    ]
}

fn write_app(dir: &Path) {
    let files = app_objects();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    write_tree(dir, &files);
}

/// The footprint holds the payload of [`app_objects`] in `ns` and what the
/// cluster derived from it, so checking it is gone means something.
fn assert_captured_app(fp: &Footprint, ns: &str) {
    for kind in ["ServiceAccount", "Secret", "Service", "Deployment"] {
        assert!(
            fp.has(kind, Some(ns), "web"),
            "{kind}/{ns}/web not in {fp:#?}"
        );
    }
    for derived in ["ReplicaSet", "Pod", "EndpointSlice"] {
        assert!(
            fp.kinds().contains(derived),
            "no {derived} derived from the payload in {fp:#?}"
        );
    }
}

/// Nothing the session made, applied or caused is left.
async fn assert_nothing_left(client: &Client, footprint: &Footprint) {
    footprint.assert_gone(client).await;
}

#[tokio::test]
async fn sandboxed_session_syncs_edits_prunes_deletes_survives_bad_yaml_and_cleans_up() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("a.yaml", &configmap("a", &[("value", "1")])),
            ("b.yaml", &configmap("b", &[("value", "1")])),
        ],
    );
    write_app(dir.path());
    let name = unique("run-sbx");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    let started = s.wait_for("the session to start", WAIT, |e| e["event"] == "started");
    assert_eq!(started["mode"], "sandboxed");
    s.next_sync().unwrap();
    // The sandbox namespace is named after the session.
    assert_eq!(value(&client, &name, "a").await.as_deref(), Some("1"));

    // Edit a file: the object is updated.
    std::fs::write(dir.path().join("a.yaml"), configmap("a", &[("value", "2")])).unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "a").await.as_deref(), Some("2"));
    let synced = s.seen.last().unwrap().clone();
    let changes = synced["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["object"] == format!("ConfigMap/{name}/a") && c["action"] == "configured"),
        "{synced}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["object"] == format!("ConfigMap/{name}/b") && c["action"] == "unchanged"),
        "{synced}"
    );

    // The same object edited again: Flux's change-set event is then folded
    // by the event recorder into the previous one (count 2, the earlier
    // revision's annotations). Still this save's change, as the API server's
    // events hold it.
    std::fs::write(dir.path().join("a.yaml"), configmap("a", &[("value", "3")])).unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "a").await.as_deref(), Some("3"));
    let synced = s.seen.last().unwrap().clone();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &name);
    let folded = events
        .list(&kube::api::ListParams::default().fields(&format!(
            "involvedObject.kind=Kustomization,involvedObject.name={name}"
        )))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.message.as_deref() == Some(&format!("ConfigMap/{name}/a configured")));
    assert!(
        folded.as_ref().is_some_and(|e| e.count.unwrap_or(1) >= 2),
        "the recorder folds identical change sets: {folded:?}"
    );
    assert!(
        synced["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["object"] == format!("ConfigMap/{name}/a") && c["action"] == "configured"),
        "{synced}"
    );

    // Delete a file: the object is pruned.
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "b").await, None);

    // Invalid YAML: the error names the file and line, nothing is pushed, the last revision stays.
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [a\n",
    )
    .unwrap();
    let err = s.next_sync().unwrap_err();
    assert!(err.contains("a.yaml:4"), "{err}");
    assert!(err.contains("nothing was pushed"), "{err}");
    assert_eq!(value(&client, &name, "a").await.as_deref(), Some("3"));

    // Ctrl+C: everything the session created is removed.
    let footprint = Footprint::capture(&client, &name).await;
    assert_captured_app(&footprint, &name);
    for (kind, object) in [
        ("Namespace", None),
        ("Lease", Some(&name)),
        ("Kustomization", Some(&name)),
        ("OCIRepository", Some(&name)),
    ] {
        assert!(
            footprint.has(kind, object.map(String::as_str), &name),
            "{kind} {name} not in {footprint:#?}"
        );
    }
    assert!(
        footprint.has("ConfigMap", Some(&name), "a"),
        "{footprint:#?}"
    );
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    let cleaned = s
        .seen
        .iter()
        .find(|e| e["event"] == "cleaned")
        .expect("a cleaned event");
    assert!(
        cleaned["removed"].to_string().contains("pruned by Flux"),
        "{cleaned}"
    );
    assert_nothing_left(&client, &footprint).await;
}

/// `kubectl gitops-run -o json | jq …` and jq exits: the session's next
/// event finds the pipe closed. It ends as on Ctrl+C and cleans up, rather
/// than dying on SIGPIPE (leaving its objects behind) or syncing unseen.
#[tokio::test]
async fn a_session_whose_output_reader_goes_away_ends_and_cleans_up() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("a.yaml", &configmap("a", &[("value", "1")]))],
    );
    let name = unique("run-pipe");
    let mut cmd = plugin("kubectl-gitops_run");
    cmd.args(harness.kube_args())
        .args(["-o", "json", "--name", &name])
        .current_dir(dir.path());
    // Read up to the last line of the first sync ("watching … for changes",
    // after `synced`): the session writes nothing more until the save.
    let mut s = RunningSession::spawn_reading_until(&mut cmd, |e| {
        e["event"] == "message"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("watching "))
    });
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "a").await.as_deref(), Some("1"));
    let footprint = Footprint::capture(&client, &name).await;
    assert!(
        footprint.has("ConfigMap", Some(&name), "a"),
        "{footprint:#?}"
    );

    // A save makes the session write an event into the closed pipe.
    std::fs::write(dir.path().join("a.yaml"), configmap("a", &[("value", "2")])).unwrap();
    assert_eq!(s.wait_exit(WAIT), Some(0));
    assert_nothing_left(&client, &footprint).await;
}

#[tokio::test]
async fn cluster_mode_applies_into_the_namespace_and_once_reports_the_result() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-cluster-mode");
    create_namespace(&client, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    write_app(dir.path());
    let name = unique("run-cluster");
    let once = |extra: &[&str]| {
        output(
            plugin("kubectl-gitops_run")
                .args(harness.kube_args())
                .args([
                    "-n",
                    &ns,
                    "--no-session",
                    "--target-namespace",
                    &ns,
                    "--once",
                    "--name",
                    &name,
                ])
                .args(extra)
                .current_dir(dir.path()),
        )
    };
    let kept = once(&["--keep"]);
    assert_eq!(kept.code, Some(0), "{kept:?}");
    assert!(
        kept.stderr.contains(&format!("ConfigMap/{ns}/app created")),
        "{kept:?}"
    );
    assert_eq!(value(&client, &ns, "app").await.as_deref(), Some("1"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get(&name).await.unwrap();
    assert!(
        !lease_is_live(&lease, chrono::Utc::now()),
        "a kept session is not running"
    );
    assert_eq!(
        lease.metadata.annotations.as_ref().unwrap()["gitops.kubectl.dev/mode"],
        "cluster"
    );
    let footprint = Footprint::capture(&client, &name).await;
    assert_captured_app(&footprint, &ns);
    assert!(
        footprint.has("ConfigMap", Some(&ns), "app"),
        "{footprint:#?}"
    );
    assert!(
        !footprint.has("Namespace", None, &ns),
        "the test's namespace is not the session's: {footprint:#?}"
    );

    // An object the API server rejects: --once exits 1 with the controller's words.
    std::fs::write(
        dir.path().join("bad.yaml"),
        configmap("Not_A_Valid_Name", &[]),
    )
    .unwrap();
    let failed = once(&[]);
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(failed.stderr.contains("Not_A_Valid_Name"), "{failed:?}");
    assert!(
        failed.stderr.contains("(bad.yaml)"),
        "the file is named: {failed:?}"
    );
    // The failed run took the kept session over and cleaned it all up, the
    // objects the first run applied included.
    assert_nothing_left(&client, &footprint).await;
    assert!(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .unwrap()
            .is_some(),
        "the namespace the session applied into stays"
    );
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_cluster_role_in_a_sandboxed_session_is_refused_in_plain_words() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let role = unique("greedy");
    write_tree(
        dir.path(),
        &[
            ("cm.yaml", &configmap("ok", &[("value", "1")])),
            (
                "role.yaml",
                &format!(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {role}\nrules: []\n"
                ),
            ),
        ],
    );
    let name = unique("run-refused");
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--name", &name])
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("not allowed")
            && out
                .stderr
                .contains("cluster-scoped objects are not allowed in a sandbox"),
        "{out:?}"
    );
    assert!(out.stderr.contains("(role.yaml)"), "{out:?}");
    let expected =
        Footprint::expected(&name, &name, true).with_payload(dir.path(), &name, Some(&name));
    assert!(expected.has("ClusterRole", None, &role), "{expected:#?}");
    assert_nothing_left(&client, &expected).await;
}

#[tokio::test]
async fn a_session_recovers_when_its_registry_comes_back() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let storage = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut registry = OwnRegistry::start(storage.path(), port);
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-registry");
    let reg = format!("oci://127.0.0.1:{port}");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name, "--registry", &reg]);
    s.next_sync().unwrap();

    registry.stop();
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    let err = s.next_sync().unwrap_err();
    assert!(err.contains("cannot reach the registry"), "{err}");
    assert_eq!(
        value(&client, &name, "app").await.as_deref(),
        Some("1"),
        "the last good revision stays"
    );

    // Back up: the session retries on its own, without another change.
    registry.restart();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "app").await.as_deref(), Some("2"));
    let footprint = Footprint::capture(&client, &name).await;
    assert!(
        footprint.has("ConfigMap", Some(&name), "app"),
        "{footprint:#?}"
    );
    s.signal("TERM");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    assert_nothing_left(&client, &footprint).await;
}

#[tokio::test]
async fn a_killed_session_breaks_nothing_and_its_lease_goes_stale() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-killed");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &name, "--lease-duration", "3s"],
    );
    s.next_sync().unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    assert!(lease_is_live(
        &leases.get(&name).await.unwrap(),
        chrono::Utc::now()
    ));
    let footprint = Footprint::capture(&client, &name).await;
    assert!(
        footprint.has("ConfigMap", Some(&name), "app"),
        "{footprint:#?}"
    );
    s.signal("KILL");
    assert_eq!(s.wait_exit(WAIT), None, "killed by a signal");

    // Nothing renews the Lease any more: it turns stale once its 3 s pass.
    eventually("the killed session's Lease to turn stale", WAIT, || async {
        let lease = leases.get(&name).await.map_err(|e| e.to_string())?;
        if lease_is_live(&lease, chrono::Utc::now()) {
            Err(format!("still live: {:?}", lease.spec))
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(
        value(&client, &name, "app").await.as_deref(),
        Some("1"),
        "what was applied stays"
    );

    // The shared cleanup (what `gitops-sessions prune` runs) removes it all.
    gitops::session::cleanup(
        &client,
        &name,
        &name,
        Some(&name),
        &gitops::labels::owner(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_nothing_left(&client, &footprint).await;
}

#[tokio::test]
async fn sops_encrypted_manifests_are_decrypted_with_the_given_age_key() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sops");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures.join("secret.sops.yaml"),
        dir.path().join("secret.yaml"),
    )
    .unwrap();
    let name = unique("run-sops");
    let out = output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["--once", "--keep", "--name", &name, "--decryption-key-file"])
            .arg(fixtures.join("test.agekey"))
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &name);
    let secret = secrets.get("sops-demo").await.unwrap();
    let password = secret.data.unwrap()["password"].0.clone();
    assert_eq!(password, b"decrypted-by-flux");
    let footprint = Footprint::capture(&client, &name).await;
    assert!(
        footprint.has("Secret", Some(&name), "sops-demo"),
        "{footprint:#?}"
    );
    assert!(
        footprint.has("Secret", Some(&name), &format!("{name}-sops")),
        "the age key's Secret: {footprint:#?}"
    );
    gitops::session::cleanup(
        &client,
        &name,
        &name,
        Some(&name),
        &gitops::labels::owner(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_nothing_left(&client, &footprint).await;
}

#[tokio::test]
async fn a_session_started_again_at_once_waits_for_its_last_sandbox_to_go() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-again");
    for _ in 0..2 {
        let out = output(
            plugin("kubectl-gitops_run")
                .args(harness.kube_args())
                .args(["--once", "--name", &name])
                .current_dir(dir.path()),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let expected =
        Footprint::expected(&name, &name, true).with_payload(dir.path(), &name, Some(&name));
    assert_nothing_left(&client, &expected).await;
}

/// kustomize-controller's event recorder lets through 25 events per
/// Kustomization and then one every 5 minutes, so after a dozen saves Flux
/// records no change set. A saved object is then never reported
/// `unchanged`: `configured` while Flux records the change set, `applied`
/// when it records none (as the API server's events show).
#[tokio::test]
async fn a_saved_object_is_never_reported_unchanged_when_flux_stops_recording_change_sets() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("a.yaml", &configmap("a", &[("value", "0")])),
            ("b.yaml", &configmap("b", &[("value", "0")])),
        ],
    );
    let name = unique("run-many-saves");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &name);
    let mut applied = 0;
    for i in 1..=16 {
        std::fs::write(
            dir.path().join("a.yaml"),
            configmap("a", &[("value", &i.to_string())]),
        )
        .unwrap();
        s.next_sync().unwrap();
        assert_eq!(value(&client, &name, "a").await, Some(i.to_string()));
        let synced = s.seen.last().unwrap().clone();
        let action = |object: &str| {
            synced["changes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["object"] == format!("ConfigMap/{name}/{object}"))
                .map(|c| c["action"].as_str().unwrap_or_default().to_string())
        };
        let (a, b) = (action("a"), action("b"));
        match a.as_deref() {
            Some("configured") => assert_eq!(b.as_deref(), Some("unchanged"), "{synced}"),
            Some("applied") => {
                assert_eq!(b.as_deref(), Some("applied"), "{synced}");
                applied += 1;
            }
            other => {
                let held: Vec<_> = events
                    .list(&kube::api::ListParams::default().fields(&format!(
                        "involvedObject.kind=Kustomization,involvedObject.name={name}"
                    )))
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .map(|e| (e.count, e.last_timestamp, e.metadata.annotations, e.message))
                    .collect();
                panic!("save {i}: a reported {other:?}: {synced}\nevents: {held:#?}")
            }
        }
    }
    // By then Flux's recorder dropped change sets: the API server holds fewer
    // change-set recordings than saves, and the session said so.
    let recorded: i32 = events
        .list(&kube::api::ListParams::default().fields(&format!(
            "involvedObject.kind=Kustomization,involvedObject.name={name}"
        )))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("ConfigMap/") && m.contains(" configured"))
        })
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert!(
        recorded < 16,
        "Flux recorded {recorded} change sets for 16 saves"
    );
    assert!(
        applied >= 16 - recorded as usize,
        "{applied} saves shown as applied, {recorded} recorded"
    );
    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    assert_nothing_left(&client, &footprint).await;
}

/// A Nix `result` link (which `.sourceignore` excludes) and an Emacs lock
/// file (`.#app.yaml`, no rule needed), both dangling, sit beside the
/// manifests: every save still syncs. They used to be followed before the
/// ignore rules were asked, and every save failed on them.
#[tokio::test]
async fn ignored_dangling_links_never_break_a_sync() {
    use gitops::flux::{Kustomization, OCIRepository};
    use std::os::unix::fs::symlink;

    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("app.yaml", &configmap("app", &[("value", "1")])),
            (".sourceignore", "result\n"),
        ],
    );
    symlink(
        "/nix/store/00000000000000000000000000000000-app",
        dir.path().join("result"),
    )
    .unwrap();
    let name = unique("run-links");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "app").await.as_deref(), Some("1"));

    // The buffer is modified: Emacs makes its lock, a link to nowhere, and
    // keeps it until the save.
    symlink("ann@laptop.4242:1700000000", dir.path().join(".#app.yaml")).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    let revision = s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "app").await.as_deref(), Some("2"));
    // Flux applied that revision, and its inventory is the one ConfigMap.
    let ks = eventually("Flux to record the revision", WAIT, || {
        let (client, name, revision) = (client.clone(), name.clone(), revision.clone());
        async move {
            let ks = Api::<Kustomization>::namespaced(client, &name)
                .get(&name)
                .await
                .map_err(|e| e.to_string())?;
            let applied = ks
                .status
                .as_ref()
                .and_then(|s| s.last_applied_revision.clone());
            if applied.as_deref() == Some(revision.as_str()) {
                Ok(ks)
            } else {
                Err(format!("{applied:?}, want {revision}"))
            }
        }
    })
    .await;
    let inventory: Vec<String> = ks
        .status
        .and_then(|s| s.inventory)
        .map(|i| i.entries.into_iter().map(|e| e.id).collect())
        .unwrap_or_default();
    assert_eq!(inventory, [format!("{name}_app__ConfigMap")]);

    // What the registry holds: the manifests and .sourceignore, no link.
    let repo = Api::<OCIRepository>::namespaced(client.clone(), &name)
        .get(&name)
        .await
        .unwrap();
    let digest = revision.rsplit('@').next().unwrap();
    let reference = format!("{}@{digest}", repo.spec.url);
    let pulled = tempfile::tempdir().unwrap();
    gitops_e2e::run(
        harness
            .flux()
            .args(["pull", "artifact", &reference, "--output"])
            .arg(pulled.path()),
    );
    let mut files: Vec<String> = std::fs::read_dir(pulled.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [".sourceignore", "app.yaml"]);
    assert_eq!(
        std::fs::read_to_string(pulled.path().join("app.yaml")).unwrap(),
        configmap("app", &[("value", "2")])
    );

    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
}

/// Cluster mode without `--target-namespace`: manifests that name no
/// namespace land in `-n`'s namespace, as `kubectl apply` would put them
/// (Flux alone fails with "namespace not specified"); a tree where some
/// name one and others do not is refused before anything is pushed.
#[tokio::test]
async fn cluster_mode_puts_objects_without_a_namespace_where_kubectl_would() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-default-ns");
    create_namespace(&client, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-default-ns");
    let once = || {
        output(
            plugin("kubectl-gitops_run")
                .args(harness.kube_args())
                .args([
                    "-n",
                    &ns,
                    "--no-session",
                    "--once",
                    "--keep",
                    "--name",
                    &name,
                ])
                .current_dir(dir.path()),
        )
    };
    let synced = once();
    assert_eq!(synced.code, Some(0), "{synced:?}");
    assert!(
        synced
            .stderr
            .contains(&format!("they go to namespace {ns}")),
        "{synced:?}"
    );
    // What the API server holds: the ConfigMap in -n's namespace.
    assert_eq!(value(&client, &ns, "app").await.as_deref(), Some("1"));
    let deleted = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["delete", &name, "-n", &ns]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");

    // Mixed: refused, nothing pushed or created.
    let other = unique("e2e-elsewhere");
    write_tree(
        dir.path(),
        &[
            ("app.yaml", &configmap("app", &[("value", "2")])),
            ("other.yaml", &configmap_in(&other, "other", &[("v", "1")])),
        ],
    );
    let refused = once();
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("app.yaml: ConfigMap/app")
            && refused.stderr.contains("--target-namespace"),
        "{refused:?}"
    );
    let kss: Api<gitops::flux::Kustomization> = Api::namespaced(client.clone(), &ns);
    assert!(kss.get_opt(&name).await.unwrap().is_none());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    assert!(leases.get_opt(&name).await.unwrap().is_none());
    delete_namespace(&client, &ns).await;
}
