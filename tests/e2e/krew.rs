//! Krew: the three plugins packaged by `krew/dist`, installed offline with the
//! real Krew into a temporary KREW_ROOT, run through the real kubectl, and
//! uninstalled.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use gitops_e2e::{Harness, output, run};

const PLUGINS: [&str; 3] = ["run", "sandbox", "sessions"];

#[test]
fn plugins_install_run_complete_and_uninstall_through_krew() {
    let harness = Harness::get();
    let krew_bin = std::fs::read_to_string(harness.dir.join("harness.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("GITOPS_HARNESS_KREW=").map(str::to_string))
        .expect("the harness builds Krew; restart it with tests/cluster/up");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (dist, krew_root, bin) = (
        work.path().join("dist"),
        work.path().join("krew"),
        work.path().join("bin"),
    );
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&krew_bin, bin.join("kubectl-krew")).unwrap();

    // Archives and manifests of this build, as `make dist` makes them.
    run(Command::new(root.join("krew/dist"))
        .args([
            "--host",
            "--profile",
            "debug",
            "--version",
            "v0.0.0-e2e",
            "--out",
        ])
        .arg(&dist)
        .arg("--manifests")
        .arg(&dist)
        .current_dir(root));

    // This machine cannot reach Krew's index on GitHub: an empty local index
    // stands in for `kubectl krew update` (uninstall wants one to exist).
    let index = krew_root.join("index/default");
    std::fs::create_dir_all(index.join("plugins")).unwrap();
    run(Command::new("git").args(["init", "-q"]).arg(&index));
    let path = format!(
        "{}:{}:{}",
        krew_root.join("bin").display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KREW_ROOT", &krew_root)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("PATH", &path)
            .env("KUBECONFIG", &harness.kubeconfig)
            .env_remove("RUST_BACKTRACE");
        c
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for p in PLUGINS {
        let manifest = dist.join(format!("gitops-{p}.yaml"));
        let archive = dist.join(format!("kubectl-gitops_{p}-linux-{arch}.tar.gz"));
        let out = output(&mut kubectl(&[
            "krew",
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", archive.display()),
        ]));
        assert_eq!(out.code, Some(0), "krew install gitops-{p}: {out:?}");
    }

    let help = output(&mut kubectl(&["gitops-run", "--help"]));
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(
        help.stdout.contains("Sync a directory of manifests"),
        "{help:?}"
    );
    let listed = output(&mut kubectl(&["gitops-sessions", "-A"]));
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let sandboxes = output(&mut kubectl(&["gitops-sandbox", "list", "-A"]));
    assert_eq!(sandboxes.code, Some(0), "{sandboxes:?}");
    let plugins = output(&mut kubectl(&["plugin", "list"]));
    assert_eq!(plugins.code, Some(0), "{plugins:?}");
    for p in PLUGINS {
        assert!(
            plugins.stdout.contains(&format!("kubectl-gitops_{p}")),
            "{plugins:?}"
        );
    }
    // The LICENSE is installed, and kubectl's plugin completion helper works from the store.
    let store = krew_root.join("store/gitops-run/v0.0.0-e2e");
    assert!(store.join("LICENSE").is_file());
    let completed = output(Command::new(store.join("kubectl_complete-gitops_run")).arg("bu"));
    assert_eq!(completed.code, Some(0), "{completed:?}");
    assert!(completed.stdout.starts_with("build\t"), "{completed:?}");

    for p in PLUGINS {
        let out = output(&mut kubectl(&["krew", "uninstall", &format!("gitops-{p}")]));
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let after = output(&mut kubectl(&["plugin", "list"]));
    assert_eq!(after.code, Some(0), "{after:?}");
    assert!(!after.stdout.contains("kubectl-gitops_"), "{after:?}");
}
