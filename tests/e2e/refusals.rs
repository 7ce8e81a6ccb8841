//! What a session refuses, in plain words and before anything is pushed or
//! created: an empty or invalid directory, an unreachable registry, an
//! overlay reaching outside its root, bad names, durations and kustomizations,
//! the home directory, `/` and an unreadable directory, a context that does
//! not look local, bad or busy port-forwards; and a first sync interrupted
//! by Ctrl+C leaves nothing behind. Proven on the real API server and
//! registry: what the cluster and the registry hold, not what the command
//! printed.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gitops_e2e::{
    Footprint, Harness, NamespaceWatch, RunningSession, configmap, output, plugin, unique,
    write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

/// The tags the registry holds for a session's repository (none: 404).
fn registry_tags(harness: &Harness, session: &str) -> Option<String> {
    let url = format!(
        "http://{}/v2/gitops-run/{session}/tags/list",
        harness.registry
    );
    let out =
        output(std::process::Command::new("curl").args(["-sS", "-w", "\n%{http_code}", &url]));
    let code = out.stdout.lines().last().unwrap_or_default().to_string();
    (code == "200").then_some(out.stdout)
}

fn run_once(harness: &Harness, dir: &std::path::Path, extra: &[&str]) -> gitops_e2e::Output {
    output(
        plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .arg("--once")
            .args(extra)
            .arg(dir),
    )
}

#[tokio::test]
async fn once_on_an_empty_or_invalid_dir_or_a_dead_registry_touches_nothing() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();

    // Empty directory.
    let name = unique("run-empty");
    let namespaces = NamespaceWatch::start(client.clone()).await;
    let out = run_once(&harness, dir.path(), &["--name", &name]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("has no Kubernetes manifests"),
        "{out:?}"
    );

    // Invalid YAML.
    write_tree(dir.path(), &[("bad.yaml", "kind: [unclosed\n")]);
    let out = run_once(&harness, dir.path(), &["--name", &name]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("bad.yaml:"), "{out:?}");

    // A registry nobody listens on.
    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    write_tree(dir.path(), &[("cm.yaml", &configmap("a", &[("k", "v")]))]);
    let out = run_once(
        &harness,
        dir.path(),
        &["--name", &name, "--registry", "oci://127.0.0.1:1"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("push failed"), "{out:?}");

    assert!(
        !namespaces.saw(&name).await,
        "no sandbox namespace may be created"
    );
    assert!(registry_tags(&harness, &name).is_none());
    let leases: Api<Lease> = Api::all(client.clone());
    let mine = leases
        .list(&ListParams::default().labels(&format!("gitops.kubectl.dev/session={name}")))
        .await
        .unwrap();
    assert!(mine.items.is_empty());
}

#[tokio::test]
async fn an_overlay_reaching_outside_the_root_is_refused_before_the_push() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let top = tempfile::tempdir().unwrap();
    write_tree(
        top.path(),
        &[
            ("base/kustomization.yaml", "resources:\n- cm.yaml\n"),
            ("base/cm.yaml", &configmap("from-base", &[("k", "v")])),
            (
                "app/overlay/kustomization.yaml",
                "resources:\n- ../../base\n",
            ),
        ],
    );
    let name = unique("run-outside");
    let namespaces = NamespaceWatch::start(client.clone()).await;
    let root = top.path().join("app");
    let out = run_once(
        &harness,
        &top.path().join("app/overlay"),
        &["--name", &name, "--root-dir", root.to_str().unwrap()],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("overlay/kustomization.yaml references ../../base"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("--root-dir {}", top.path().display())),
        "{out:?}"
    );
    assert!(registry_tags(&harness, &name).is_none(), "nothing pushed");
    assert!(!namespaces.saw(&name).await, "no sandbox namespace");

    // With the root it suggests, the same overlay syncs.
    let out = run_once(
        &harness,
        &top.path().join("app/overlay"),
        &[
            "--name",
            &name,
            "--root-dir",
            top.path().to_str().unwrap(),
            "--no-session",
            "--target-namespace",
            "default",
            "-n",
            "default",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[tokio::test]
async fn ctrl_c_during_the_first_sync_leaves_nothing_behind() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("cm.yaml", &configmap("a", &[("k", "v")]))]);
    let name = unique("run-intr");
    let mut session = RunningSession::start(&harness, dir.path(), &["--name", &name]);
    // Interrupt as soon as the session starts making its objects.
    session.wait_for("the push", Duration::from_secs(60), |e| {
        e["event"] == "phase_done" && e["phase"] == "push"
    });
    session.signal("INT");
    assert_eq!(session.wait_exit(Duration::from_secs(120)), Some(0));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    gitops_e2e::eventually(
        "the session's sandbox to be gone",
        Duration::from_secs(60),
        || async {
            match namespaces.get_opt(&name).await {
                Ok(None) => Ok(()),
                Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_some() => {
                    Err("still terminating".to_string())
                }
                Ok(Some(_)) => Err("the sandbox namespace is still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    let leases: Api<Lease> = Api::all(client.clone());
    let left = leases
        .list(&ListParams::default().labels(&format!("gitops.kubectl.dev/session={name}")))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "lease left: {:?}", left.items);
}

#[test]
fn bad_names_and_out_of_range_durations_are_refused_with_clear_errors() {
    let harness = Harness::get();
    let out = output(
        plugin("kubectl-gitops_sessions")
            .args(harness.kube_args())
            .args(["describe", "a,b=c"]),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("invalid session name"), "{out:?}");

    let huge = output(
        plugin("kubectl-gitops_sandbox")
            .args(harness.kube_args())
            .args(["create", &unique("sbx-ttl"), "--ttl", "100000000000d"]),
    );
    assert!(matches!(huge.code, Some(1) | Some(2)), "{huge:?}");
    assert!(huge.stderr.contains("--ttl"), "{huge:?}");
    assert!(!huge.stderr.contains("panicked"), "{huge:?}");

    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("cm.yaml", &configmap("a", &[("k", "v")]))]);
    let out = run_once(&harness, dir.path(), &["--lease-duration", "0s"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("--lease-duration"), "{out:?}");
}

/// Runs `cmd` as the unprivileged user `nobody` (setpriv, util-linux).
fn as_nobody(cmd: &mut std::process::Command) -> std::process::Command {
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env("HOME", "/tmp");
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

#[tokio::test]
async fn bad_input_is_refused_in_plain_words_before_anything_is_pushed_or_created() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let namespaces = NamespaceWatch::start(client.clone()).await;
    let mut names = Vec::new();
    let refuse = |files: &[(&str, &str)], extra: &[&str], expect: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), files);
        let name = unique("run-bad");
        let mut args = vec!["--name", name.as_str()];
        args.extend_from_slice(extra);
        let out = run_once(&harness, dir.path(), &args);
        assert_eq!(out.code, Some(1), "{out:?}");
        for e in expect {
            assert!(out.stderr.contains(e), "{e:?} not said: {out:?}");
        }
        name
    };

    // A file name with a newline in it: named, escaped.
    names.push(refuse(
        &[
            ("cm.yaml", &configmap("a", &[("k", "v")])),
            ("evil\nname.yaml", &configmap("b", &[("k", "v")])),
        ],
        &[],
        &["control character", "evil\\nname.yaml"],
    ));

    // A kustomization that is not YAML, and one naming a missing resource.
    names.push(refuse(
        &[
            ("kustomization.yaml", "resources: [cm.yaml\n"),
            ("cm.yaml", &configmap("a", &[("k", "v")])),
        ],
        &[],
        &["kustomization.yaml"],
    ));
    names.push(refuse(
        &[
            ("kustomization.yaml", "resources:\n- cm.yaml\n- gone.yaml\n"),
            ("cm.yaml", &configmap("a", &[("k", "v")])),
        ],
        &[],
        &["gone.yaml", "does not exist"],
    ));

    // A SOPS-encrypted manifest and no key.
    let sops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sops/secret.sops.yaml"),
    )
    .unwrap();
    names.push(refuse(
        &[
            ("secret.sops.yaml", &sops),
            ("cm.yaml", &configmap("a", &[("k", "v")])),
        ],
        &[],
        &[
            "secret.sops.yaml",
            "age recipient age1",
            "--decryption-key-file",
        ],
    ));

    // A chart: --values that is not YAML, and dependencies not in charts/.
    let chart = "apiVersion: v2\nname: app\nversion: 0.1.0\n";
    let deps = "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: redis\n  version: 17.x\n  repository: https://charts.example.com\n";
    let template = configmap("app", &[]);
    let template = ("templates/cm.yaml", template.as_str());
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), "replicas: [1\n").unwrap();
    let values_arg = values.path().display().to_string();
    names.push(refuse(
        &[("Chart.yaml", chart), template],
        &["--values", &values_arg],
        &["--values", &values_arg],
    ));
    names.push(refuse(
        &[("Chart.yaml", deps), template],
        &[],
        &["redis 17.x", "charts/", "helm dependency build"],
    ));

    // Nothing reached the cluster or the registry.
    for name in &names {
        assert!(
            !namespaces.saw(name).await,
            "{name}: a namespace was created"
        );
        assert!(registry_tags(&harness, name).is_none(), "{name}: pushed");
    }
}

#[tokio::test]
async fn a_home_directory_an_unreadable_directory_and_the_root_are_refused() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let namespaces = NamespaceWatch::start(client.clone()).await;

    // `/` and the home directory: refused before walking them.
    let home = tempfile::tempdir().unwrap();
    write_tree(home.path(), &[("cm.yaml", &configmap("a", &[("k", "v")]))]);
    for (dir, what) in [
        (std::path::PathBuf::from("/"), "the root of the filesystem"),
        (home.path().to_path_buf(), "your home directory"),
    ] {
        let started = std::time::Instant::now();
        let mut session = plugin("kubectl-gitops_run");
        session
            .args(harness.kube_args())
            .arg("--once")
            .arg(&dir)
            .env("HOME", home.path());
        let mut build = plugin("kubectl-gitops_run");
        build
            .args(["build", "-o", "/dev/null"])
            .arg(&dir)
            .env("HOME", home.path());
        for cmd in [&mut session, &mut build] {
            let out = output(cmd);
            assert_eq!(out.code, Some(1), "{out:?}");
            assert!(out.stderr.contains(what), "{out:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "walked {dir:?}?"
        );
    }

    // A directory the user cannot read (as a user other than root).
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("app");
    write_tree(
        &dir,
        &[
            ("cm.yaml", &configmap("a", &[("k", "v")])),
            ("secret/cm.yaml", &configmap("b", &[("k", "v")])),
        ],
    );
    let chmod = |p: &std::path::Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(base.path(), 0o755);
    chmod(&dir, 0o755);
    chmod(&dir.join("cm.yaml"), 0o644);
    chmod(&dir.join("secret"), 0o700);
    let kubeconfig = base.path().join("kubeconfig");
    std::fs::copy(&harness.kubeconfig, &kubeconfig).unwrap();
    chmod(&kubeconfig, 0o644);
    let name = unique("run-unreadable");
    let out = output(&mut as_nobody(
        plugin("kubectl-gitops_run")
            .args(["--kubeconfig", &kubeconfig.display().to_string()])
            .args(["--context", &harness.context, "--once", "--name", &name])
            .arg(&dir),
    ));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("secret") && out.stderr.to_lowercase().contains("permission denied"),
        "{out:?}"
    );
    assert!(!namespaces.saw(&name).await);
    assert!(registry_tags(&harness, &name).is_none());
}

#[tokio::test]
async fn refuses_a_context_that_does_not_look_local() {
    let harness = Harness::get();
    // The harness's kubeconfig with the server renamed to a non-loopback host.
    let text = std::fs::read_to_string(&harness.kubeconfig).unwrap();
    let remote = text
        .replace("https://127.0.0.1:", "https://prod.example.com:")
        .replace(&harness.context, "prod");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), remote).unwrap();
    let out = output(
        plugin("kubectl-gitops_run")
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .args(["--once"])
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("does not look like a local cluster")
            && out.stderr.contains("--allow-k8s-context prod"),
        "{out:?}"
    );
}

#[tokio::test]
async fn port_forward_specs_and_busy_ports_are_refused_before_anything_starts() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[("app.yaml", &configmap("app", &[("value", "1")]))],
    );
    let name = unique("run-pf");
    let namespaces = NamespaceWatch::start(client.clone()).await;
    let run = |spec: &str| {
        output(
            plugin("kubectl-gitops_run")
                .args(harness.kube_args())
                .args(["--once", "--name", &name, "--port-forward", spec])
                .current_dir(dir.path()),
        )
    };
    let bad = run("svc/web:8080");
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.contains("resource=svc/NAME,port=LOCAL[:REMOTE]"),
        "{bad:?}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let taken = run(&format!("resource=svc/web,port={port}:80"));
    assert_eq!(taken.code, Some(1), "{taken:?}");
    assert!(
        taken
            .stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{taken:?}"
    );
    // Nothing was started: no sandbox namespace ever existed, nothing
    // labelled with the session exists.
    assert!(!namespaces.saw(&name).await, "no sandbox was created");
    Footprint::expected(&name, &name, true)
        .with_payload(dir.path(), &name, Some(&name))
        .assert_gone(&client)
        .await;
    // And the port is refused before the session announces itself.
    assert!(
        !taken.stderr.contains("session "),
        "nothing may be announced before the ports are checked: {taken:?}"
    );
}
