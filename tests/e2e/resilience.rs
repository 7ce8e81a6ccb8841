//! A live session when the world moves under it: its Lease deleted or
//! taken over, the process suspended past its lease (and pruned meanwhile),
//! prunes racing each other and a starting session, its directory deleted
//! or moved away, a filesystem that does not deliver file events. Every
//! claim is checked on the real API server.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitops::session::{keys, lease_is_live};
use gitops_e2e::{
    Footprint, Harness, RunningSession, configmap, eventually, output, plugin, run, unique,
    write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(90);

async fn value(client: &Client, ns: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.get_opt("app")
        .await
        .unwrap()
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

fn said(s: &RunningSession, needle: &str) -> bool {
    s.seen
        .iter()
        .any(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
}

/// Waits for a warning or message containing `needle` (or finds it among
/// those already seen).
fn expect_said(s: &mut RunningSession, needle: &str, within: Duration) -> String {
    if let Some(m) = s
        .seen
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains(needle))
    {
        return m.to_string();
    }
    let e = s.wait_for(&format!("{needle:?} said"), within, |e| {
        e["message"].as_str().is_some_and(|m| m.contains(needle))
    });
    e["message"].as_str().unwrap_or_default().to_string()
}

/// A session on a one-ConfigMap directory (value "1") with a 3 s lease,
/// after its first sync.
fn started(harness: &Harness, prefix: &str) -> (tempfile::TempDir, String, RunningSession) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique(prefix);
    let mut s = RunningSession::start(
        harness,
        dir.path(),
        &["--name", &name, "--lease-duration", "3s"],
    );
    s.next_sync().unwrap();
    (dir, name, s)
}

/// Ctrl+C, exit 0, and everything the session made gone.
async fn stop_clean(client: &Client, name: &str, mut s: RunningSession) {
    let footprint = Footprint::capture(client, name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    footprint.assert_gone(client).await;
}

fn sessions(harness: &Harness, args: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(args),
    )
}

#[tokio::test]
async fn a_lease_taken_over_stops_the_session_without_touching_its_objects() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (dir, name, mut s) = started(&harness, "run-takeover");
    let footprint = Footprint::capture(&client, &name).await;

    // Someone else's command takes the session (what a second `gitops-run`
    // does once it judges the Lease stale).
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let patch = serde_json::json!({
        "metadata": {"annotations": {keys::PID: "1"}},
        "spec": {"holderIdentity": "bob@other-laptop"},
    });
    leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let taken = Instant::now();
    let msg = expect_said(
        &mut s,
        "taken over by bob@other-laptop",
        Duration::from_secs(15),
    );
    assert!(msg.contains("nothing was removed"), "{msg}");
    assert_eq!(
        s.wait_exit(WAIT),
        Some(1),
        "a session taken away ends in error"
    );
    assert!(
        taken.elapsed() < Duration::from_secs(10),
        "{:?}",
        taken.elapsed()
    );

    // It did not fight: the new holder's Lease and every object are as they were.
    let lease = leases.get(&name).await.unwrap();
    assert_eq!(gitops::session::record::holder(&lease), "bob@other-laptop");
    assert_eq!(value(&client, &name).await.as_deref(), Some("1"));
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        value(&client, &name).await.as_deref(),
        Some("1"),
        "no more syncs"
    );

    // The new holder's business; here, the forced delete removes it all.
    let out = sessions(&harness, &["delete", &name, "-n", &name, "--force"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn a_deleted_lease_stops_the_session_and_it_removes_what_is_left() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (_dir, name, mut s) = started(&harness, "run-leasegone");
    let footprint = Footprint::capture(&client, &name).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    leases.delete(&name, &Default::default()).await.unwrap();
    let msg = expect_said(
        &mut s,
        "Lease was deleted by someone else",
        Duration::from_secs(15),
    );
    assert!(msg.contains("removing what is left"), "{msg}");
    assert_eq!(s.wait_exit(WAIT), Some(1));
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn a_suspended_session_resumes_holds_its_lease_again_and_syncs_what_changed() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (dir, name, mut s) = started(&harness, "run-suspend");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);

    // A laptop lid closed for longer than the lease; a save made meanwhile.
    s.signal("STOP");
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    eventually("the Lease to turn stale", WAIT, || async {
        let lease = leases.get(&name).await.map_err(|e| e.to_string())?;
        if lease_is_live(&lease, chrono::Utc::now()) {
            Err("still live".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.signal("CONT");

    s.next_sync().unwrap();
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));
    expect_said(&mut s, "holds its Lease again", Duration::from_secs(10));
    let lease = leases.get(&name).await.unwrap();
    assert!(
        lease_is_live(&lease, chrono::Utc::now()),
        "{:?}",
        lease.spec
    );
    assert_eq!(
        gitops::session::record::Record::of(&lease).pid,
        s.child.id().to_string()
    );

    stop_clean(&client, &name, s).await;
}

#[tokio::test]
async fn a_session_pruned_while_suspended_says_so_and_exits_cleanly() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let (_dir, name, mut s) = started(&harness, "run-pruned");
    let footprint = Footprint::capture(&client, &name).await;
    s.signal("STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = sessions(&harness, &["prune", "-n", &name]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&name), "{out:?}");
    footprint.assert_gone(&client).await;

    s.signal("CONT");
    let msg = expect_said(&mut s, "removed", Duration::from_secs(15));
    assert!(msg.contains("nothing of it is left"), "{msg}");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn concurrent_prunes_and_a_prune_racing_a_restart_delete_nothing_live() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );

    // Two crashed sessions, two prunes at once: each removed exactly once,
    // neither prune fails.
    let mut stale = Vec::new();
    for _ in 0..2 {
        let name = unique("run-stale");
        let mut s = RunningSession::start(
            &harness,
            dir.path(),
            &["--name", &name, "--lease-duration", "3s"],
        );
        s.next_sync().unwrap();
        stale.push((name.clone(), Footprint::capture(&client, &name).await));
        s.signal("KILL");
        s.wait_exit(WAIT);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let prune = |ns: &str| {
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["prune", "-n", ns])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs: Vec<_> = stale
        .iter()
        .flat_map(|(n, _)| [prune(n), prune(n)])
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    for (_, fp) in &stale {
        fp.assert_gone(&client).await;
    }

    // A crashed session restarted while a prune runs: whatever the order,
    // the new run ends up live with its objects.
    let name = unique("run-race");
    let mut first = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &name, "--lease-duration", "3s"],
    );
    first.next_sync().unwrap();
    first.signal("KILL");
    first.wait_exit(WAIT);
    tokio::time::sleep(Duration::from_secs(4)).await;
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "2")]))],
    );
    let pruning = prune(&name);
    let mut second = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &name, "--lease-duration", "3s"],
    );
    let pruned = pruning.wait_with_output().unwrap();
    assert!(pruned.status.success(), "{pruned:?}");
    second.next_sync().unwrap();
    // Give a late prune every chance to do damage, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let lease = leases.get(&name).await.unwrap();
    assert!(lease_is_live(&lease, chrono::Utc::now()));
    assert_eq!(
        gitops::session::record::Record::of(&lease).pid,
        second.child.id().to_string()
    );
    // A prune now leaves the live session alone.
    let out = sessions(&harness, &["prune", "-n", &name]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));

    let footprint = Footprint::capture(&client, &name).await;
    second.signal("INT");
    assert_eq!(second.wait_exit(WAIT), Some(0));
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn a_directory_moved_away_keeps_what_was_applied_and_its_return_syncs() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("deploy");
    write_tree(&dir, &[("app.yaml", &configmap("app", &[("value", "1")]))]);
    let name = unique("run-moved");
    let mut s = RunningSession::start(&harness, &dir, &["--name", &name, "--root-dir", "."]);
    s.next_sync().unwrap();

    let away = parent.path().join("elsewhere");
    std::fs::rename(&dir, &away).unwrap();
    expect_said(&mut s, "deleted or moved away", Duration::from_secs(10));
    // Nothing synced meanwhile: what was applied stays.
    let quiet = s.events_within(Duration::from_secs(2));
    assert!(
        quiet
            .iter()
            .all(|e| e["event"] != "synced" && e["event"] != "failed"),
        "{quiet:#?}"
    );
    assert_eq!(value(&client, &name).await.as_deref(), Some("1"));

    std::fs::write(away.join("app.yaml"), configmap("app", &[("value", "2")])).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    expect_said(&mut s, "is back", Duration::from_secs(10));
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));

    // Deleted outright, then made again.
    std::fs::remove_dir_all(&dir).unwrap();
    s.wait_for("the deletion said", Duration::from_secs(10), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("deleted or moved away"))
    });
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));
    write_tree(&dir, &[("app.yaml", &configmap("app", &[("value", "3")]))]);
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name).await.as_deref(), Some("3"));

    stop_clean(&client, &name, s).await;
}

/// A FUSE mount (Debian's bindfs) of a directory: changes made to the
/// directory underneath, as by another machine or a VM's host, never reach
/// inotify through the mount.
struct Bindfs {
    mount: std::path::PathBuf,
}

impl Bindfs {
    fn mount(source: &Path, mount: &Path) -> Bindfs {
        if Command::new("bindfs").arg("--version").output().is_err() {
            // Installed on first use, as the harness installs its packages.
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "bindfs"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let installed = install()
                || (Command::new("apt-get")
                    .args(["update", "-q"])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    && install());
            assert!(
                installed,
                "bindfs (Debian's package) is needed: sudo apt-get install bindfs"
            );
        }
        std::fs::create_dir_all(mount).unwrap();
        run(Command::new("bindfs").arg(source).arg(mount));
        Bindfs {
            mount: mount.to_path_buf(),
        }
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(&self.mount)
            .status();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[tokio::test]
async fn a_directory_on_a_fuse_filesystem_is_polled_and_changes_underneath_sync() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write_tree(
        &source,
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let fuse = Bindfs::mount(&source, &base.path().join("mnt"));
    let name = unique("run-fuse");
    let mut s = RunningSession::start(&harness, &fuse.mount, &["--name", &name]);
    let msg = expect_said(&mut s, "polling", Duration::from_secs(30));
    assert!(msg.contains("fuse"), "{msg}");
    s.next_sync().unwrap();

    // Edited underneath the mount: no inotify event reaches the mount.
    std::fs::write(source.join("app.yaml"), configmap("app", &[("value", "2")])).unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    footprint.assert_gone(&client).await;
    assert!(!said(&s, "cannot"), "{:#?}", s.seen);
}
