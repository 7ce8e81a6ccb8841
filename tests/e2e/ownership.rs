//! A session touches only what it made (issue 24, items 2–5), proven on the
//! harness's API server and Flux controllers:
//! - look-alike objects (a Flux Kustomization with a real inventory, an
//!   OCIRepository, a Secret, a Lease, a namespace) of the name a session
//!   wants are refused before anything is written, and left exactly as they
//!   were;
//! - a reader whose clock is ten minutes ahead or behind (libfaketime)
//!   neither prunes, deletes nor takes over a live session, and still prunes
//!   a dead one;
//! - `gitops-sandbox gc` spares an expired sandbox a live session uses;
//! - a forged Lease in another namespace cannot make `prune` or `delete`
//!   remove someone else's sandbox.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitops::flux::{Kustomization, OCIRepository, condition};
use gitops_e2e::{
    Harness, Output, RunningSession, configmap, create_namespace, delete_namespace, eventually,
    plugin, run, unique, write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

const WAIT: Duration = Duration::from_secs(60);

/// Runs a command to its end, or kills it after `limit` (`code: None`).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `kubectl gitops-run` in `dir` with `args`, expected to stop by itself.
fn gitops_run(harness: &Harness, dir: &Path, args: &[&str]) -> Output {
    output_within(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(args)
            .current_dir(dir),
        Duration::from_secs(90),
    )
}

fn sessions_cmd(harness: &Harness, args: &[&str]) -> Command {
    let mut cmd = plugin("kubectl-gitops_sessions");
    cmd.args(harness.kube_args()).args(args);
    cmd
}

/// A Kustomization `ks` and its OCIRepository `source` in `ns`, made the way
/// a platform team's Flux makes them (labelled by the Kustomization that
/// applied them, not by the suite), reconciled by Flux from an artifact
/// pushed with the `flux` CLI: its inventory holds the ConfigMap `payload`.
async fn flux_pair(harness: &Harness, client: &Client, ns: &str, source: &str, ks: &str) {
    let tree = tempfile::tempdir().unwrap();
    write_tree(
        tree.path(),
        &[("payload.yaml", &configmap("payload", &[("k", "theirs")]))],
    );
    let reference = format!("oci://{}/e2e/{source}:v1", harness.registry);
    run(harness.flux().args([
        "push",
        "artifact",
        &reference,
        &format!("--path={}", tree.path().display()),
        "--source=file:///platform",
        "--revision=main@sha1:1111111111111111111111111111111111111111",
    ]));
    harness.kubectl_apply(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: {source}\n  namespace: {ns}\n  labels:\n    kustomize.toolkit.fluxcd.io/name: flux-system\n    kustomize.toolkit.fluxcd.io/namespace: {ns}\nspec:\n  url: oci://{reg}/e2e/{source}\n  ref:\n    tag: v1\n  interval: 10m\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {ks}\n  namespace: {ns}\n  labels:\n    kustomize.toolkit.fluxcd.io/name: flux-system\n    kustomize.toolkit.fluxcd.io/namespace: {ns}\nspec:\n  sourceRef:\n    kind: OCIRepository\n    name: {source}\n  path: ./\n  prune: true\n  interval: 10m\n  targetNamespace: {ns}\n",
        reg = harness.registry
    ));
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    eventually(
        "Flux to apply the platform's Kustomization",
        WAIT,
        || async {
            let k = kss.get(ks).await.map_err(|e| e.to_string())?;
            let st = k.status.clone().unwrap_or_default();
            let ready = condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True");
            let inventory = st.inventory.as_ref().is_some_and(|i| !i.entries.is_empty());
            if ready && inventory {
                Ok(())
            } else {
                Err(format!("{:?}", k.status))
            }
        },
    )
    .await;
    // Settled: nothing writes to it any more (Flux's last status update done).
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// What must not change about the platform's objects: resourceVersions,
/// the Kustomization's inventory, the source's artifact, the payload's UID.
#[derive(Debug, PartialEq)]
struct Platform {
    ks_rv: Option<String>,
    inventory: serde_json::Value,
    source_rv: Option<String>,
    artifact: serde_json::Value,
    payload_uid: Option<String>,
}

async fn platform(client: &Client, ns: &str, source: &str, ks: &str) -> Platform {
    let k = Api::<Kustomization>::namespaced(client.clone(), ns)
        .get(ks)
        .await
        .unwrap();
    let s = Api::<OCIRepository>::namespaced(client.clone(), ns)
        .get(source)
        .await
        .unwrap();
    let payload = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("payload")
        .await
        .unwrap();
    Platform {
        ks_rv: k.resource_version(),
        inventory: serde_json::to_value(k.status.and_then(|s| s.inventory)).unwrap(),
        source_rv: s.resource_version(),
        artifact: serde_json::to_value(s.status.and_then(|s| s.artifact)).unwrap(),
        payload_uid: payload.and_then(|p| p.uid()),
    }
}

/// Asserts a refused start: it exited non-zero by itself, naming `what`
/// and who manages it, and wrote no Lease of that name.
async fn assert_refused(
    out: &Output,
    what: &str,
    manager: &str,
    client: &Client,
    ns: &str,
    name: &str,
) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "expected a refusal, got {out:?}"
    );
    assert!(
        out.stderr.contains(&format!("{what} already exists"))
            && out.stderr.contains(manager)
            && out.stderr.contains("nothing was changed"),
        "{out:?}"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap();
    assert!(
        lease
            .as_ref()
            .is_none_or(|l| !gitops::labels::is_managed(l.metadata.labels.as_ref())),
        "a session Lease was written: {lease:?}"
    );
}

#[tokio::test]
async fn a_look_alike_kustomization_is_refused_and_its_inventory_survives() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-own");
    create_namespace(&client, &ns).await;
    let (source, ks) = (unique("platform-src"), "apps");
    flux_pair(&harness, &client, &ns, &source, ks).await;
    let before = platform(&client, &ns, &source, ks).await;
    assert!(before.payload_uid.is_some());

    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("mine", &[("k", "1")]))],
    );
    let out = gitops_run(
        &harness,
        dir.path(),
        &["--no-session", "--name", ks, "-n", &ns, "-o", "json"],
    );
    assert_refused(
        &out,
        &format!("Kustomization {ns}/{ks}"),
        &format!("Flux (applied by Kustomization {ns}/flux-system)"),
        &client,
        &ns,
        ks,
    )
    .await;
    // Nothing of the session's was written, and the platform's objects are
    // as they were: same resourceVersions, inventory, artifact, payload.
    assert!(
        Api::<OCIRepository>::namespaced(client.clone(), &ns)
            .get_opt(ks)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("mine")
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(platform(&client, &ns, &source, ks).await, before);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn look_alike_sources_secrets_leases_and_namespaces_are_refused_untouched() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let ns = unique("e2e-own");
    create_namespace(&client, &ns).await;
    let (source, ks) = (unique("platform-src"), unique("platform"));
    flux_pair(&harness, &client, &ns, &source, &ks).await;
    let before = platform(&client, &ns, &source, &ks).await;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("mine", &[("k", "1")]))],
    );

    // The platform's OCIRepository, by name.
    let out = gitops_run(
        &harness,
        dir.path(),
        &["--no-session", "--name", &source, "-n", &ns],
    );
    assert_refused(
        &out,
        &format!("OCIRepository {ns}/{source}"),
        "Flux (applied by Kustomization",
        &client,
        &ns,
        &source,
    )
    .await;

    // Another tool's Secret of the name of the session's SOPS key.
    let secret_name = unique("sealed");
    harness.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret_name}-sops\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/managed-by: sealed-secrets\nstringData:\n  identity.agekey: theirs\n"
    ));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret_rv = secrets
        .get(&format!("{secret_name}-sops"))
        .await
        .unwrap()
        .resource_version();
    let key = dir.path().join("key.txt");
    std::fs::write(
        &key,
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n",
    )
    .unwrap();
    let out = gitops_run(
        &harness,
        dir.path(),
        &[
            "--no-session",
            "--name",
            &secret_name,
            "-n",
            &ns,
            "--decryption-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_refused(
        &out,
        &format!("Secret {ns}/{secret_name}-sops"),
        "sealed-secrets (app.kubernetes.io/managed-by label)",
        &client,
        &ns,
        &secret_name,
    )
    .await;
    let secret = secrets.get(&format!("{secret_name}-sops")).await.unwrap();
    assert_eq!(secret.resource_version(), secret_rv);

    // A leader-election Lease of the session's name, long expired.
    let lease_name = unique("elected");
    harness.kubectl_apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {lease_name}\n  namespace: {ns}\nspec:\n  holderIdentity: controller-0_abc\n  leaseDurationSeconds: 15\n  renewTime: \"2020-01-01T00:00:00.000000Z\"\n"
    ));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease_before = leases.get(&lease_name).await.unwrap();
    let out = gitops_run(
        &harness,
        dir.path(),
        &["--no-session", "--name", &lease_name, "-n", &ns],
    );
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("Lease {ns}/{lease_name} already exists"))
            && out.stderr.contains("field manager kubectl"),
        "{out:?}"
    );
    let lease_after = leases.get(&lease_name).await.unwrap();
    assert_eq!(
        lease_after.resource_version(),
        lease_before.resource_version()
    );
    assert_eq!(
        lease_after.spec.unwrap().holder_identity.as_deref(),
        Some("controller-0_abc")
    );

    // A namespace of the session's name (sandboxed mode) that is not a sandbox.
    let taken = unique("team");
    create_namespace(&client, &taken).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_before = namespaces.get(&taken).await.unwrap();
    let out = gitops_run(&harness, dir.path(), &["--name", &taken]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("Namespace {taken} already exists")),
        "{out:?}"
    );
    let ns_after = namespaces.get(&taken).await.unwrap();
    assert_eq!(ns_after.resource_version(), ns_before.resource_version());

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(platform(&client, &ns, &source, &ks).await, before);
    delete_namespace(&client, &taken).await;
    delete_namespace(&client, &ns).await;
}

/// Debian's libfaketime (package `faketime`, installed by `tests/cluster/up`).
fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed: apt-get install -y faketime (tests/cluster/up does)")
    })
}

/// `cmd` with libfaketime preloaded and the clock moved by `offset`
/// (`+600s`, `-600s`): the same process (its pid is the session's), only
/// its wall clock moved; the monotonic clock is left alone so tokio's
/// timers work.
fn faked(mut cmd: Command, offset: &str) -> Command {
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1");
    cmd
}

/// faketime is there and does move the clock for a child.
fn check_faketime() {
    let out = output_within(
        &mut faked(
            {
                let mut c = Command::new("date");
                c.arg("+%s");
                c
            },
            "+600s",
        ),
        Duration::from_secs(10),
    );
    let faked: i64 = out.stdout.trim().parse().unwrap_or_else(|_| {
        panic!("faketime is not installed (apt-get install -y faketime): {out:?}")
    });
    let now = chrono::Utc::now().timestamp();
    assert!(
        (faked - now - 600).abs() < 5,
        "faketime did not move the clock: {out:?}"
    );
}

/// A sandboxed session with a short lease, after its first sync.
fn live_session(harness: &Harness, prefix: &str) -> (tempfile::TempDir, String, RunningSession) {
    session_as(harness, prefix, |c| c)
}

/// [`live_session`], its command changed by `wrap` (run as another user,
/// under a skewed clock).
fn session_as(
    harness: &Harness,
    prefix: &str,
    wrap: impl FnOnce(Command) -> Command,
) -> (tempfile::TempDir, String, RunningSession) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("k", "1")]))],
    );
    let name = unique(prefix);
    let mut cmd = plugin("kubectl-gitops_run");
    cmd.args(harness.kube_args())
        .args(["-o", "json", "--name", &name, "--lease-duration", "6s"])
        .current_dir(dir.path());
    let mut s = RunningSession::spawn(&mut wrap(cmd));
    s.next_sync().unwrap();
    (dir, name, s)
}

/// `prune`, `delete` (no --force) and a takeover with `--name`, each run
/// under `wrap`: none may take the live session `name` (pid `pid`).
async fn assert_not_taken(
    harness: &Harness,
    client: &Client,
    dir: &Path,
    name: &str,
    pid: &str,
    label: &str,
    wrap: &dyn Fn(Command) -> Command,
) {
    let ks_uid = Api::<Kustomization>::namespaced(client.clone(), name)
        .get(name)
        .await
        .unwrap()
        .uid();
    let out = output_within(
        &mut wrap(sessions_cmd(harness, &["prune", "-n", name])),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{label}: {out:?}");
    let out = output_within(
        &mut wrap(sessions_cmd(harness, &["delete", name, "-n", name])),
        Duration::from_secs(60),
    );
    assert!(out.code.is_some_and(|c| c != 0), "{label}: {out:?}");
    assert!(out.stderr.contains("is running"), "{label}: {out:?}");
    let mut takeover = plugin("kubectl-gitops_run");
    takeover
        .args(harness.kube_args())
        .args(["--name", name, "--lease-duration", "6s"])
        .current_dir(dir);
    let out = output_within(&mut wrap(takeover), Duration::from_secs(60));
    assert!(out.code.is_some_and(|c| c != 0), "{label}: {out:?}");
    assert!(out.stderr.contains("already running"), "{label}: {out:?}");
    // On the API server: the Lease is still the session's own, its objects the same.
    let lease = lease_of(client, name).await.expect("the live Lease");
    assert_eq!(
        gitops::session::record::Record::of(&lease).pid,
        pid,
        "{label}"
    );
    assert!(
        !gitops::session::record::holder(&lease).starts_with("removing:"),
        "{label}: {lease:?}"
    );
    let ks = Api::<Kustomization>::namespaced(client.clone(), name)
        .get(name)
        .await
        .unwrap();
    assert_eq!(ks.uid(), ks_uid, "{label}");
    assert!(ks.metadata.deletion_timestamp.is_none(), "{label}");
}

/// The session's next sync, its value applied on the API server.
async fn assert_syncs(
    client: &Client,
    dir: &Path,
    name: &str,
    s: &mut RunningSession,
    value: &str,
) {
    write_tree(dir, &[("app.yaml", &configmap("app", &[("k", value)]))]);
    s.next_sync().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), name);
    eventually("the live session's new value applied", WAIT, || async {
        let v = cms.get("app").await.map_err(|e| e.to_string())?;
        match v.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) {
            Some(got) if got == value => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn lease_of(client: &Client, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), name)
        .get_opt(name)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reader_clock_ten_minutes_off_never_takes_a_live_session_and_still_prunes_a_dead_one() {
    check_faketime();
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    // Readers ten minutes ahead and behind a live session.
    let (dir, name, mut s) = live_session(&harness, "run-skew");
    let pid = s.child.id().to_string();
    for offset in ["+600s", "-600s"] {
        let wrap = |c: Command| faked(c, offset);
        assert_not_taken(&harness, &client, dir.path(), &name, &pid, offset, &wrap).await;
    }
    assert_syncs(&client, dir.path(), &name, &mut s, "2").await;

    // A session whose own clock is ten minutes behind: its renewTime looks
    // ten minutes old to everyone, yet it renews, so nobody takes it.
    let (wdir, wname, mut w) = session_as(&harness, "run-wskew", |c| faked(c, "-600s"));
    let wpid = w.child.id().to_string();
    let lease = lease_of(&client, &wname).await.unwrap();
    assert!(
        !gitops::session::record::lease_is_live(&lease, chrono::Utc::now()),
        "the skewed writer's Lease should look expired: {:?}",
        lease.spec
    );
    let plain = |c: Command| c;
    assert_not_taken(
        &harness,
        &client,
        wdir.path(),
        &wname,
        &wpid,
        "writer -600s",
        &plain,
    )
    .await;
    assert_syncs(&client, wdir.path(), &wname, &mut w, "2").await;

    // A dead one (a colleague's, so its pid is not checked on this machine):
    // killed, its Lease left behind; pruned by a reader ten minutes behind
    // (to that clock its Lease looks fresh) after one unchanged lease period.
    let (_dead_dir, dead, mut d) = session_as(&harness, "run-dead", |mut c| {
        c.env("USER", "colleague");
        c
    });
    d.signal("KILL");
    d.wait_exit(WAIT);
    // (The API server's clock, read from its Date header, has one-second
    // steps: a margin of two.)
    eventually("the dead session's lease to run out", WAIT, || async {
        let lease = lease_of(&client, &dead).await.ok_or("no Lease")?;
        let now = chrono::Utc::now() - chrono::Duration::seconds(2);
        if gitops::session::record::lease_is_live(&lease, now) {
            Err(format!("{:?}", lease.spec))
        } else {
            Ok(())
        }
    })
    .await;
    let started = Instant::now();
    let out = output_within(
        &mut faked(sessions_cmd(&harness, &["prune", "-n", &dead]), "-600s"),
        Duration::from_secs(90),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&dead), "{out:?}");
    // Judged by watching it for one lease period (6 s), not by a clock.
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        lease_of(&client, &dead)
            .await
            .is_none_or(|l| l.metadata.deletion_timestamp.is_some())
    );
    let gone = Api::<Namespace>::all(client.clone())
        .get_opt(&dead)
        .await
        .unwrap();
    assert!(
        gone.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the dead session's sandbox is still there"
    );

    for mut live in [s, w] {
        live.signal("INT");
        assert_eq!(live.wait_exit(WAIT), Some(0));
    }
}

async fn set_expiry(client: &Client, sandbox: &str, at: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {gitops::labels::EXPIRES_AT: at}}});
    Api::<Namespace>::all(client.clone())
        .patch(sandbox, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn gc_spares_an_expired_sandbox_while_a_live_session_uses_it() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (_dir, name, mut s) = live_session(&harness, "run-gc");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let uid = namespaces.get(&name).await.unwrap().uid();
    set_expiry(&client, &name, "2020-01-01T00:00:00Z").await;
    let gc = |h: &Harness| {
        output_within(
            plugin("kubectl-gitops_sandbox")
                .args(h.kube_args())
                .arg("gc"),
            Duration::from_secs(120),
        )
    };
    let out = gc(&harness);
    assert_eq!(out.code, Some(0), "{out:?}");
    let ns = namespaces.get(&name).await.unwrap();
    assert_eq!(ns.uid(), uid);
    assert!(ns.metadata.deletion_timestamp.is_none(), "{out:?}");
    // Still syncing into it.
    assert!(lease_of(&client, &name).await.is_some());

    // Without a live session (killed: its Lease left behind), it is collected.
    s.signal("KILL");
    s.wait_exit(WAIT);
    set_expiry(&client, &name, "2020-01-01T00:00:00Z").await;
    let out = gc(&harness);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&name), "{out:?}");
    let ns = namespaces.get_opt(&name).await.unwrap();
    assert!(
        ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_forged_lease_elsewhere_cannot_remove_another_users_sandbox() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    // The victim: a live session in its own sandbox.
    let (_dir, victim, mut s) = live_session(&harness, "run-victim");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let uid = namespaces.get(&victim).await.unwrap().uid();
    let owner =
        gitops::session::record::Record::of(&lease_of(&client, &victim).await.unwrap()).owner;

    // The attacker's namespace and a forged, stale Lease naming the victim's sandbox.
    let mallory = unique("mallory");
    create_namespace(&client, &mallory).await;
    let forge = || {
        harness.kubectl_apply(&format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {victim}\n  namespace: {mallory}\n  labels:\n    app.kubernetes.io/managed-by: kubectl-gitops\n    gitops.kubectl.dev/component: session\n    gitops.kubectl.dev/session: {victim}\n    gitops.kubectl.dev/sandbox: {victim}\n  annotations:\n    gitops.kubectl.dev/sandbox: {victim}\n    gitops.kubectl.dev/ephemeral-sandbox: \"true\"\n    gitops.kubectl.dev/mode: sandboxed\n    gitops.kubectl.dev/owner: \"{owner}\"\n    gitops.kubectl.dev/pid: \"1\"\nspec:\n  holderIdentity: mallory@elsewhere\n  leaseDurationSeconds: 3\n  renewTime: \"2020-01-01T00:00:00.000000Z\"\n"
        ));
    };
    forge();
    let out = output_within(
        &mut sessions_cmd(&harness, &["prune", "-n", &mallory]),
        Duration::from_secs(90),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let ns = namespaces.get(&victim).await.unwrap();
    assert_eq!(ns.uid(), uid);
    assert!(ns.metadata.deletion_timestamp.is_none(), "{out:?}");

    forge();
    let out = output_within(
        &mut sessions_cmd(&harness, &["delete", &victim, "-n", &mallory]),
        Duration::from_secs(90),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let ns = namespaces.get(&victim).await.unwrap();
    assert_eq!(ns.uid(), uid);
    assert!(ns.metadata.deletion_timestamp.is_none(), "{out:?}");

    // The victim still holds its Lease and syncs; its own cleanup removes
    // its sandbox (the record matches its own Lease).
    assert!(lease_of(&client, &victim).await.is_some());
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    let ns = namespaces.get_opt(&victim).await.unwrap();
    assert!(ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()));
    delete_namespace(&client, &mallory).await;
}
