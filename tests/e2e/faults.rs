//! Flux's own controllers failing under a live session: the session names
//! the controller that is not doing its part, within seconds, and the sync
//! completes by itself once the controller is back. Its own test binary:
//! it stops a controller that every other test needs.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitops_e2e::{
    Footprint, Harness, OwnRegistry, RunningSession, configmap, free_port, output, plugin, run,
    unique, write_tree,
};

/// Stops a component the harness started (SIGTERM, as a Deployment's pod
/// is stopped; the API server, whose graceful stop waits for its
/// clients, as by a crash) and waits until its process is gone.
fn stop(harness: &Harness, component: &str) {
    let pid = std::fs::read_to_string(harness.dir.join(format!("pids/{component}.pid")))
        .unwrap_or_else(|e| panic!("{component} is not running under the harness: {e}"));
    let pid = pid.trim();
    let signal = if component == "kube-apiserver" {
        "-KILL"
    } else {
        "-TERM"
    };
    run(Command::new("kill").args([signal, pid]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "{component} ({pid}) did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts again what the harness lacks (`tests/cluster/up` restarts only
/// the components that are not running).
fn restart_missing(harness: &Harness) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    run(Command::new(root.join("tests/cluster/up")).env("GITOPS_HARNESS_DIR", &harness.dir));
}

/// Waits for the session's warning that `controller` has not started on
/// its object, and checks it came within seconds of the save and says what
/// to look at.
fn expect_not_started(s: &mut RunningSession, saved: Instant, controller: &str, object: &str) {
    let needle = format!("{controller} has not started on {object}");
    let warning = s.wait_for(
        &format!("a warning naming {controller}"),
        Duration::from_secs(30),
        |e| {
            e["event"] == "failed"
                || (e["event"] == "warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("has not started on")))
        },
    );
    assert_eq!(warning["event"], "warning", "{warning}");
    let said_after = saved.elapsed();
    // Said within seconds of the save, not at the end of the wait.
    assert!(said_after < Duration::from_secs(20), "{said_after:?}");
    let message = warning["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&needle)
            && message.contains(&format!("kubectl -n flux-system get deploy {controller}")),
        "{message}"
    );
}

/// The tests that stop shared components run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn stopped_flux_controllers_are_named_within_seconds_and_the_session_recovers() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-fluxdown");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();
    // What is seen from here on is counted below: the first sync may itself
    // be named slow when a test before this one restarted the API server
    // and kustomize-controller is still re-establishing its watches.
    let first_sync = s.seen.len();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &name);

    // Each controller in turn: stopped, named, back; the same sync then
    // completes by itself, nothing to redo.
    for (value, controller, kind) in [
        ("2", "source-controller", "OCIRepository"),
        ("3", "kustomize-controller", "Kustomization"),
    ] {
        stop(&harness, controller);
        let saved = Instant::now();
        std::fs::write(
            dir.path().join("app.yaml"),
            configmap("app", &[("value", value)]),
        )
        .unwrap();
        expect_not_started(&mut s, saved, controller, &format!("{kind} {name}/{name}"));
        restart_missing(&harness);
        s.next_sync().unwrap();
        let got = cms.get("app").await.unwrap().data.unwrap()["value"].clone();
        assert_eq!(got, value, "after {controller} came back");
    }

    // Healthy controllers draw no such warning.
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "4")]),
    )
    .unwrap();
    s.next_sync().unwrap();
    let warnings = s.seen[first_sync..]
        .iter()
        .filter(|e| {
            e["event"] == "warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("has not started on"))
        })
        .count();
    assert_eq!(warnings, 2, "{:#?}", s.seen);

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn a_stopped_helm_controller_is_named_within_seconds_and_the_chart_session_recovers() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let chart = |greeting: &str| {
        write_tree(
            dir.path(),
            &[
                (
                    "Chart.yaml",
                    "apiVersion: v2\nname: hello\nversion: 0.1.0\n",
                ),
                ("values.yaml", &format!("greeting: {greeting}\n")),
                (
                    "templates/cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
                ),
            ],
        )
    };
    chart("hi");
    let name = unique("run-helmdown");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    s.next_sync().unwrap();

    stop(&harness, "helm-controller");
    let saved = Instant::now();
    chart("hello");
    expect_not_started(
        &mut s,
        saved,
        "helm-controller",
        &format!("HelmRelease {name}/{name}"),
    );
    restart_missing(&harness);
    s.next_sync().unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &name);
    let got = cms.get(&format!("{name}-cm")).await.unwrap().data.unwrap()["greeting"].clone();
    assert_eq!(got, "hello");

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    footprint.assert_gone(&client).await;
}

#[tokio::test]
async fn ctrl_c_with_the_api_server_down_retries_then_says_what_is_left_and_how_to_remove_it() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-apidown");
    let mut s = RunningSession::start(
        &harness,
        dir.path(),
        &["--name", &name, "--cleanup-timeout", "8s"],
    );
    s.next_sync().unwrap();
    let footprint = Footprint::capture(&client, &name).await;

    stop(&harness, "kube-apiserver");
    let stopped = Instant::now();
    s.signal("INT");
    let retrying = s.wait_for("the cleanup retrying", Duration::from_secs(30), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot finish the cleanup yet"))
    });
    assert!(
        retrying["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--cleanup-timeout"),
        "{retrying}"
    );
    let code = s.wait_exit(Duration::from_secs(60));
    let took = stopped.elapsed();
    assert_eq!(code, Some(1), "{:#?}", s.seen);
    // Bounded by --cleanup-timeout (8 s), plus the stop itself.
    assert!(took < Duration::from_secs(20), "{took:?}");
    let left = s
        .seen
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("could not finish the cleanup"))
        .unwrap_or_else(|| panic!("no leftover report: {:#?}", s.seen))
        .to_string();
    for what in [
        format!("{name}/kustomization/{name}"),
        format!("{name}/ocirepository/{name}"),
        format!("{name}/lease/{name}"),
        format!("kubectl gitops-sessions delete {name} -n {name}"),
    ] {
        assert!(left.contains(&what), "{what} not in: {left}");
    }

    // Meanwhile, a command says so once, in its own words: no HTTP
    // layer's log line per refused connection.
    let down = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["-A", "--request-timeout", "3s"]),
    );
    assert_ne!(down.code, Some(0), "{down:?}");
    assert!(
        !down.stderr.contains("classification") && !down.stderr.contains("ERROR"),
        "{down:?}"
    );

    // Back up: the command it named removes everything.
    restart_missing(&harness);
    let client = harness.cluster().await.client;
    let out = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["delete", &name, "-n", &name]),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    footprint.assert_gone(&client).await;
}

/// Mounts a tmpfs of `size` on `dir` (the registry's storage): a real
/// "no space left on device" for the real registry.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs for the registry's storage needs root: {out:?}"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_registry_out_of_space_mid_push_tags_nothing_retries_and_recovers() {
    let _serial = SERIAL.lock().await;
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let storage = tempfile::tempdir().unwrap();
    let data = storage.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "6m");
    let port = free_port();
    let _registry = OwnRegistry::start(storage.path(), port);
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-diskfull");
    let reg = format!("oci://127.0.0.1:{port}");
    let mut s = RunningSession::start(&harness, dir.path(), &["--name", &name, "--registry", &reg]);
    let first = s.next_sync().unwrap();

    // The disk fills up; the next save carries 3 MiB that do not fit.
    let filler = data.join("filler");
    run(Command::new("sh").arg("-c").arg(format!(
        "dd if=/dev/zero of={} bs=64k 2>/dev/null; true",
        filler.display()
    )));
    let noise: String = (0..3 * 1024 * 1024 / 64)
        .map(|i| format!("{:063x}\n", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    std::fs::write(dir.path().join("noise.txt"), &noise).unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        configmap("app", &[("value", "2")]),
    )
    .unwrap();
    let err = s.next_sync().unwrap_err();
    assert!(
        err.contains("storage") || err.contains("space"),
        "says the registry is out of space: {err}"
    );
    // No tag points at a partial artifact: the tag is still the first revision's.
    let repos = catalog(port);
    let digest = first.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap();
    assert_eq!(tag_digest(port, &name), digest, "repositories: {repos}");
    assert_eq!(value(&client, &name).await.as_deref(), Some("1"));

    // Space is freed: the session retries by itself and syncs the save.
    std::fs::remove_file(&filler).unwrap();
    let second = s.next_sync().unwrap();
    assert_ne!(second, first);
    assert_eq!(value(&client, &name).await.as_deref(), Some("2"));
    assert_eq!(tag_digest(port, &name), second.rsplit_once('@').unwrap().1);

    let footprint = Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(90)), Some(0));
    footprint.assert_gone(&client).await;
}

async fn value(client: &kube::Client, ns: &str) -> Option<String> {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), ns);
    cms.get_opt("app")
        .await
        .unwrap()
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

/// The registry's list of repositories (for messages).
fn catalog(port: u16) -> String {
    run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/v2/_catalog")]))
}

/// The manifest digest the registry serves for the session's tag, asked
/// of the registry itself.
fn tag_digest(port: u16, name: &str) -> String {
    let catalog =
        run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/v2/_catalog")]));
    let v: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    let repo = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .find(|r| r.contains(name))
        .unwrap_or_else(|| panic!("no repository for {name}: {catalog}"))
        .to_string();
    let headers = run(Command::new("curl").args([
        "-sfI",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://127.0.0.1:{port}/v2/{repo}/manifests/latest"),
    ]));
    headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest:")
                .map(|d| d.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest header: {headers}"))
}
