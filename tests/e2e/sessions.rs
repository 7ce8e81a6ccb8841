//! `kubectl gitops-sessions` against real sessions on the harness.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use gitops::session::readers::view;
use gitops_e2e::{
    Harness, RunningSession, configmap, create_namespace, delete_namespace, eventually, output,
    plugin, run, unique, write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

const WAIT: Duration = Duration::from_secs(60);

fn sessions(harness: &Harness, args: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(args),
    )
}

fn sessions_json(harness: &Harness, args: &[&str]) -> Vec<serde_json::Value> {
    let out = sessions(harness, &[args, &["-o", "json"]].concat());
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {list:?}"))
}

#[tokio::test]
async fn sessions_in_both_modes_are_listed_with_their_status() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-sessions");
    create_namespace(&client, &ns).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tree(a.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    write_tree(b.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    let (sbx, cluster) = (unique("ls-sbx"), unique("ls-cluster"));
    let mut s1 = RunningSession::start(&harness, a.path(), &["--name", &sbx]);
    let mut s2 = RunningSession::start(
        &harness,
        b.path(),
        &[
            "--name",
            &cluster,
            "--no-session",
            "-n",
            &ns,
            "--target-namespace",
            &ns,
        ],
    );
    s1.next_sync().unwrap();
    s2.next_sync().unwrap();

    // A session says synced first and then writes the sync's note (revision,
    // last_sync) to its Lease: wait for both notes on the API server. The
    // status is Flux's Ready condition, and kustomize-controller may run one
    // more reconcile of the same revision when the source's artifact event
    // reaches it after the requested reconcile (Ready goes Unknown/Progressing
    // for a moment): wait for it to settle at Ready too.
    let list = eventually("both sessions' sync notes", Duration::from_secs(30), || {
        let list = sessions_json(&harness, &["-A"]);
        let noted = |name: &str| {
            list.iter().any(|s| {
                s["name"] == name
                    && s.get("last_sync").is_some()
                    && s["revision"].as_str().is_some_and(|r| !r.is_empty())
                    && s["status"]["state"] == "Ready"
            })
        };
        let done = noted(&sbx) && noted(&cluster);
        async move {
            if done {
                Ok(list)
            } else {
                Err(format!("{list:#?}"))
            }
        }
    })
    .await;
    let one = find(&list, &sbx);
    assert_eq!(
        (
            one["mode"].as_str(),
            one["namespace"].as_str(),
            one["sandbox"].as_str()
        ),
        (Some("sandboxed"), Some(sbx.as_str()), Some(sbx.as_str()))
    );
    assert_eq!(one["status"]["state"], "Ready");
    assert_eq!(one["heartbeat"], "live");
    assert_eq!(one["pid"], s1.child.id().to_string());
    assert!(
        one["revision"]
            .as_str()
            .unwrap()
            .starts_with("latest@sha256:")
    );
    assert_eq!(
        one["source"],
        std::fs::canonicalize(a.path())
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(
        one["inventory"],
        serde_json::json!([format!("ConfigMap/{sbx}/app")])
    );
    let two = find(&list, &cluster);
    assert_eq!(
        (two["mode"].as_str(), two["namespace"].as_str()),
        (Some("cluster"), Some(ns.as_str()))
    );
    assert!(two.get("sandbox").is_none());
    assert_eq!(two["status"]["state"], "Ready");

    // The JSON has exactly the snapshot's fields: none missing, none extra.
    // Only those omitted when empty may be absent, and only where they are
    // empty: no port-forwards here, and no sandbox in cluster mode.
    let snapshot: serde_json::Value = serde_json::from_str(include_str!(
        "../../shared/src/session/readers/view/snapshot.json"
    ))
    .unwrap();
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let all: BTreeSet<String> = snapshot.as_array().unwrap().iter().flat_map(keys).collect();
    let without = |absent: &[&str]| {
        all.iter()
            .filter(|k| !absent.contains(&k.as_str()))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(one), without(&["port_forwards"]), "{one:#}");
    assert_eq!(keys(two), without(&["port_forwards", "sandbox"]), "{two:#}");
    for v in [one, two] {
        let status = keys(&v["status"]);
        assert!(
            status.contains("state")
                && status.is_subset(&BTreeSet::from(
                    ["state", "reason", "message"].map(String::from)
                )),
            "{v:#}"
        );
    }

    // The table: aligned columns with the headers users expect; -n narrows; name output.
    let table = sessions(&harness, &["-A"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    // The columns, in order, are the library's (their words are pinned by
    // the table snapshots of kubectl-gitops_sessions).
    let columns = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let header = table.stdout.lines().next().unwrap();
    assert_eq!(columns(header), view::HEADERS, "{header}");
    assert!(
        !table.stdout.contains('\x1b'),
        "no colour when not a terminal"
    );
    let wide = sessions(&harness, &["-A", "-o", "wide"]);
    assert_eq!(wide.code, Some(0), "{wide:?}");
    let header = wide.stdout.lines().next().unwrap();
    assert_eq!(
        columns(header),
        [view::HEADERS.as_slice(), view::WIDE.as_slice()].concat(),
        "{header}"
    );
    let in_ns = sessions(&harness, &["-n", &ns, "-o", "name", "--no-headers"]);
    assert_eq!(in_ns.code, Some(0), "{in_ns:?}");
    assert_eq!(in_ns.stdout, format!("session/{cluster}\n"));

    let described = sessions(&harness, &["describe", &sbx]);
    assert_eq!(described.code, Some(0), "{described:?}");
    assert!(
        described.stdout.contains(&format!("ConfigMap/{sbx}/app")),
        "{described:?}"
    );
    assert!(
        described.stdout.contains("Kustomization")
            && described.stdout.contains("ReconciliationSucceeded"),
        "{described:?}"
    );

    // A live session is not deleted without --force.
    let refused = sessions(&harness, &["delete", &sbx]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("is running") && refused.stderr.contains("--force"),
        "{refused:?}"
    );

    s1.signal("INT");
    s2.signal("INT");
    assert_eq!(s1.wait_exit(WAIT), Some(0));
    assert_eq!(s2.wait_exit(WAIT), Some(0));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_failing_payload_shows_failed_with_the_reason() {
    let harness = Harness::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("bad.yaml", &configmap("Not_Valid", &[]))]);
    let name = unique("ls-failed");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap_err();
    let list = sessions_json(&harness, &["-A"]);
    let failed = find(&list, &name);
    assert_eq!(failed["status"]["state"], "Failed", "{failed}");
    assert!(
        !failed["status"]["reason"].as_str().unwrap().is_empty(),
        "{failed}"
    );
    assert!(
        failed["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Not_Valid"),
        "{failed}"
    );
    let table = sessions(&harness, &["-A"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap()
        .to_string();
    assert!(line.contains("Failed ("), "{line}");
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
}

#[tokio::test]
async fn prune_removes_a_killed_session_and_nothing_else() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tree(a.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    write_tree(b.path(), &[("app.yaml", &configmap("app", &[("k", "v")]))]);
    let (killed, alive) = (unique("ls-killed"), unique("ls-alive"));
    let mut k = RunningSession::start(
        &harness,
        a.path(),
        &["--name", &killed, "--lease-duration", "3s"],
    );
    let mut l = RunningSession::start(&harness, b.path(), &["--name", &alive]);
    k.next_sync().unwrap();
    l.next_sync().unwrap();
    // Something the suite did not create, next to the killed session's objects.
    let bystander = ConfigMap {
        metadata: ObjectMeta {
            name: Some("by-hand".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &killed)
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();
    k.signal("KILL");
    assert_eq!(k.wait_exit(WAIT), None, "killed by a signal");

    eventually("the killed session to turn stale", WAIT, || async {
        let list = sessions_json(&harness, &["-A"]);
        match find(&list, &killed)["heartbeat"].as_str() {
            Some("stale") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        find(&sessions_json(&harness, &["-A"]), &alive)["heartbeat"],
        "live"
    );

    // Scoped to the killed session's namespace, so parallel tests are untouched.
    let pruned = sessions(&harness, &["prune", "-n", &killed]);
    assert_eq!(pruned.code, Some(0), "{pruned:?}");
    assert!(
        pruned.stdout.contains(&format!("session {killed} deleted")),
        "{pruned:?}"
    );
    let list = sessions_json(&harness, &["-A"]);
    assert!(list.iter().all(|s| s["name"] != killed.as_str()));
    assert_eq!(find(&list, &alive)["heartbeat"], "live");
    // Its ephemeral sandbox goes too (and with it the namespace and everything in it).
    gitops_e2e::wait_namespace_gone(&client, &killed).await;
    l.signal("INT");
    assert_eq!(l.wait_exit(WAIT), Some(0));
}

#[tokio::test]
async fn status_tells_run_gitops_and_snowflake_apart() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    // GitOps: a Flux Kustomization (not a session) applying into its namespace.
    let gitops_ns = unique("e2e-gitops");
    create_namespace(&client, &gitops_ns).await;
    let src = tempfile::tempdir().unwrap();
    write_tree(
        src.path(),
        &[("app.yaml", &configmap("managed", &[("k", "v")]))],
    );
    let url = format!("oci://{}/e2e/{gitops_ns}", harness.registry);
    run(harness.flux().args([
        "push",
        "artifact",
        &format!("{url}:latest"),
        &format!("--path={}", src.path().display()),
        "--source=file:///e2e",
        "--revision=main@sha1:1111111111111111111111111111111111111111",
    ]));
    harness.kubectl_apply(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: apps, namespace: {gitops_ns}}}\n\
         spec: {{url: \"{url}\", ref: {{tag: latest}}, interval: 10m}}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: apps, namespace: {gitops_ns}}}\n\
         spec: {{sourceRef: {{kind: OCIRepository, name: apps}}, path: ./, prune: true, interval: 10m, targetNamespace: {gitops_ns}}}\n"
    ));
    // Snowflake: a ConfigMap applied by hand.
    let snow_ns = unique("e2e-snow");
    create_namespace(&client, &snow_ns).await;
    let by_hand = ConfigMap {
        metadata: ObjectMeta {
            name: Some("by-hand".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &snow_ns)
        .create(&PostParams::default(), &by_hand)
        .await
        .unwrap();
    // A Secret and a ServiceAccount by hand are snowflakes too; the token
    // Secret minted for that account is not (the scan reads metadata only,
    // and leaves tokens out with a field selector the API server applies).
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: by-hand, namespace: {snow_ns}}}\nstringData: {{k: v}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: robot, namespace: {snow_ns}}}\n"
    ));
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\n\
         metadata: {{name: robot-token, namespace: {snow_ns}, annotations: {{kubernetes.io/service-account.name: robot}}}}\n"
    ));
    // Run: a live session.
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("k", "v")]))],
    );
    let name = unique("st-live");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();

    let status = eventually("the GitOps namespace to be applied", WAIT, || async {
        let out = sessions(&harness, &["status", "-o", "json"]);
        if out.code != Some(0) {
            return Err(format!("{out:?}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
        if v["gitops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["namespace"] == gitops_ns.as_str())
        {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let gitops = status["gitops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["namespace"] == gitops_ns.as_str())
        .unwrap();
    assert_eq!(
        gitops["managed_by"],
        serde_json::json!([format!("Kustomization/{gitops_ns}/apps")])
    );
    assert!(
        status["run"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["session"] == name.as_str()),
        "{status}"
    );
    let snow = status["snowflake"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["namespace"] == snow_ns.as_str())
        .expect("snowflake namespace");
    assert_eq!(
        snow["objects"],
        serde_json::json!([
            "ConfigMap/by-hand",
            "Secret/by-hand",
            "ServiceAccount/robot"
        ])
    );
    // The token is there on the API server, and of the type left out.
    let token: k8s_openapi::api::core::v1::Secret = Api::namespaced(client.clone(), &snow_ns)
        .get("robot-token")
        .await
        .unwrap();
    assert_eq!(
        token.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    // Neither the Flux-applied object nor the session's objects are snowflakes.
    for ns in [&gitops_ns, &name] {
        assert!(
            status["snowflake"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["namespace"] != ns.as_str()),
            "{ns}: {status}"
        );
    }
    let text = sessions(&harness, &["status"]);
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(text.stdout.starts_with("Cluster mode: Run"), "{text:?}");
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    delete_namespace(&client, &snow_ns).await;
    let _ = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&harness.kubeconfig)
        .args(["-n", &gitops_ns, "delete", "kustomization/apps", "--wait"])
        .output();
    delete_namespace(&client, &gitops_ns).await;
}

/// `kubectl gitops-sessions -A | head -c1`: a reader that goes away ends the
/// listing quietly with status 0, like any Unix tool: no panic, no message,
/// no death by SIGPIPE.
#[tokio::test]
async fn a_closed_stdout_ends_the_listing_quietly() {
    let harness = Harness::get();
    let mut child = plugin("kubectl-gitops_sessions")
        .args(harness.kube_args())
        .args(["-A", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the listing is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}

/// Requests the API server's audit log holds about `resource` in namespace
/// `ns`, by verb (`list`, `watch`, ...): the harness logs each request once,
/// as it is received (its backup file after a rotation included).
fn audited(
    harness: &Harness,
    ns: &str,
    resource: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let logs = harness.dir.join("logs");
    let files = std::fs::read_dir(&logs).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the harness keeps an audit log there",
            logs.display()
        )
    });
    let mut found = false;
    for file in files {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("kube-apiserver-audit") && name.ends_with(".log")) {
            continue;
        }
        found = true;
        let text = std::fs::read(&path).unwrap();
        for line in text.split(|b| *b == b'\n') {
            // Cheap test first: the log is large, our namespace is new.
            if !line.windows(ns.len()).any(|w| w == ns.as_bytes()) {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if entry["objectRef"]["namespace"] == ns && entry["objectRef"]["resource"] == resource {
                let verb = entry["verb"].as_str().unwrap_or_default().to_string();
                *counts.entry(verb).or_insert(0) += 1;
            }
        }
    }
    assert!(found, "no kube-apiserver-audit*.log in {}", logs.display());
    counts
}

/// `-w` lists once and then watches, as `kubectl get -w` does: the API
/// server's audit log shows one LIST of Leases however long it runs (it
/// used to list every second), and a new session still shows within 2 s.
#[tokio::test]
async fn watching_lists_once_then_follows_a_watch() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use std::io::BufRead;

    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-watch");
    create_namespace(&client, &ns).await;
    /// The watcher, stopped however the test ends.
    struct Watcher(std::process::Child);
    impl Drop for Watcher {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut watcher = Watcher(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["-n", &ns, "-o", "name", "-w"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut watcher.0;
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let watching = eventually("the watcher's first LIST and WATCH of Leases", WAIT, || {
        let counts = audited(&harness, &ns, "leases");
        async move {
            if counts.contains_key("list") && counts.contains_key("watch") {
                Ok(counts)
            } else {
                Err(format!("{counts:?}"))
            }
        }
    })
    .await;
    assert_eq!(watching.get("list"), Some(&1), "{watching:?}");
    // Six seconds: the old loop would have listed six more times.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = audited(&harness, &ns, "leases");
    assert_eq!(
        later.get("list"),
        Some(&1),
        "LISTs grew with time: {later:?}"
    );
    for kind in ["kustomizations", "ocirepositories"] {
        let counts = audited(&harness, &ns, kind);
        assert_eq!(counts.get("list"), Some(&1), "{kind}: {counts:?}");
    }

    // A new session (its Lease, as a session writes it) shows within 2 s.
    let name = unique("watched");
    let mut labels = gitops::labels::managed("session");
    labels.insert(gitops::labels::SESSION.into(), name.clone());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("e2e@watch".into()),
            lease_duration_seconds: Some(30),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let created = std::time::Instant::now();
    let want = format!("session/{name}");
    loop {
        let left = Duration::from_secs(2).saturating_sub(created.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) if line == want => break,
            Ok(_) => {}
            Err(_) => panic!("{want} not shown within 2 s of its Lease's creation"),
        }
    }
    let shown_after = created.elapsed();
    leases.delete(&name, &Default::default()).await.unwrap();
    let deleted = std::time::Instant::now();
    let gone = format!("{name} deleted");
    loop {
        let left = Duration::from_secs(2).saturating_sub(deleted.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) if line == gone => break,
            Ok(_) => {}
            Err(_) => panic!("{gone:?} not shown within 2 s of the Lease's deletion"),
        }
    }
    let last = audited(&harness, &ns, "leases");
    assert_eq!(last.get("list"), Some(&1), "{last:?}");
    assert_eq!(child.try_wait().unwrap(), None, "the watcher stopped");
    drop(watcher);
    eprintln!("shown {shown_after:?} after creation; audit: {last:?}");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn port_forwards_are_recorded_in_the_lease_and_listed() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("cm.yaml", &configmap("a", &[("k", "v")]))]);
    let name = unique("run-pf");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = format!("resource=svc/web,port={port}:80");
    let mut session = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &name, "--port-forward", &spec],
    );
    session.next_sync().unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let lease = leases.get(&name).await.unwrap();
    assert_eq!(
        lease
            .metadata
            .annotations
            .unwrap_or_default()
            .get("gitops.kubectl.dev/port-forwards")
            .map(String::as_str),
        Some(spec.as_str())
    );
    let listed = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["-A", "-o", "json"]),
    );
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let all: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap();
    assert_eq!(me["port_forwards"], serde_json::json!([spec]));
    session.signal("INT");
    assert_eq!(session.wait_exit(Duration::from_secs(120)), Some(0));
}
