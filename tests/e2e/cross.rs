//! The other platforms, proven as far as this Linux machine can:
//! - the Windows binaries (`x86_64-pc-windows-gnu`) under Wine: `--help`,
//!   `build` gives the Linux digest byte for byte, a `--once` session against
//!   the harness that cleans up, `gitops-sessions -A` through
//!   `%USERPROFILE%\.kube\config`, Docker credentials from
//!   `%USERPROFILE%\.docker\config.json` through a helper `.exe`; a live
//!   session that syncs each save (Windows' directory change notifications,
//!   as Wine delivers them) and cleans up on Ctrl+C; process liveness
//!   without `/proc` (a live session is not taken over, a killed one is);
//! - the darwin binaries (arm64 and x86_64) inspected, never run (no macOS
//!   here): architecture, minimum macOS, a valid ad-hoc code signature (arm64),
//!   libSystem and the stub SDK's frameworks only, every undefined symbol
//!   bound to the framework that exports it;
//! - the Windows and darwin archives of `krew/dist` installed by the real Krew.
//!
//! `tests/cross/setup` (run by `make test`) installs Wine, LLVM and Zig and
//! builds what these tests use into `target/cross`; without it they fail and
//! say so. The Wine shim `bcryptprimitives.dll` is test infrastructure only.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gitops::labels;
use gitops::session::record::lease_is_live;
use gitops_e2e::{
    Harness, RunningSession, configmap, eventually, git, output, run, unique, write_tree,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::ListParams;
use kube::{Api, Client};

const PLUGINS: [&str; 3] = ["run", "sandbox", "sessions"];
const SETUP: &str = "run tests/cross/setup first (`make test` does)";
const WINE: &str = "/usr/lib/wine/wine64";
const WINDOWS: &str = "x86_64-pc-windows-gnu";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where `tests/cross/setup` puts what it builds.
fn cross_dir() -> PathBuf {
    root().join("target/cross")
}

/// A Unix path as Windows programs under Wine see it (drive Z: is `/`).
fn win(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// Wine, its prefix and the Windows binaries, as `tests/cross/setup` left them.
struct Wine {
    prefix: PathBuf,
    bin: PathBuf,
}

impl Wine {
    fn get() -> Wine {
        assert!(
            Path::new(WINE).is_file(),
            "Wine is not installed ({WINE} is missing): {SETUP}"
        );
        let dir = cross_dir();
        let wine = Wine {
            prefix: dir.join("wine/prefix"),
            bin: dir.join(WINDOWS).join("debug"),
        };
        assert!(
            wine.prefix.join("system.reg").is_file(),
            "no Wine prefix in {}: {SETUP}",
            wine.prefix.display()
        );
        for name in PLUGINS
            .iter()
            .map(|p| format!("kubectl-gitops_{p}.exe"))
            .chain(["bcryptprimitives.dll".to_string()])
        {
            assert!(
                wine.bin.join(&name).is_file(),
                "{} is not built: {SETUP}",
                wine.bin.join(&name).display()
            );
        }
        wine
    }

    /// Runs a Windows program under Wine with a clean environment for it:
    /// no KUBECONFIG or DOCKER_CONFIG, so the Windows defaults apply.
    fn exe(&self, path: &Path) -> Command {
        let mut cmd = Command::new(WINE);
        cmd.arg(path)
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .env_remove("DOCKER_CONFIG")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// One of the plugins, built for Windows.
    fn plugin(&self, name: &str) -> Command {
        self.exe(&self.bin.join(format!("{name}.exe")))
    }

    /// `%USERPROFILE%` of the prefix's user, as a Unix path.
    fn user_profile(&self) -> PathBuf {
        let users = self.prefix.join("drive_c/users");
        std::fs::read_dir(&users)
            .unwrap_or_else(|e| panic!("{}: {e}: {SETUP}", users.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n != "Public") && p.is_dir())
            .unwrap_or_else(|| panic!("no user profile in {}: {SETUP}", users.display()))
    }
}

/// The suite's ConfigMap fixture with `eol` line endings (CRLF: as Windows
/// editors save).
fn cm(name: &str, eol: &str) -> String {
    configmap(name, &[("value", "1")]).replace('\n', eol)
}

#[test]
fn windows_binaries_run_under_wine() {
    let wine = Wine::get();
    for p in PLUGINS {
        let out = output(wine.plugin(&format!("kubectl-gitops_{p}")).arg("--help"));
        assert_eq!(out.code, Some(0), "kubectl-gitops_{p}.exe --help: {out:?}");
        assert!(
            out.stdout.contains(&format!("Usage: kubectl gitops-{p}")),
            "{out:?}"
        );
    }
    // kubectl's completion protocol: candidates, then a directive.
    let out = output(
        wine.plugin("kubectl-gitops_run")
            .args(["__complete", "bui"]),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("build\t"), "{out:?}");
    assert!(out.stdout.trim_end().ends_with(":0"), "{out:?}");
}

/// A tree with what differs between Windows and Linux: an executable script
/// (tracked by Git as 100755), a script executable on disk but tracked as
/// 100644, CRLF files, non-ASCII names, nested directories, a path longer
/// than Windows' old 260-character limit, a .sourceignore.
fn fixture(repo: &Path) -> PathBuf {
    let deep = format!("{}/{}", "l".repeat(120), "m".repeat(120));
    write_tree(
        repo,
        &[
            ("deploy/app.yaml", &cm("app", "\n")),
            ("deploy/crlf.yaml", &cm("crlf", "\r\n")),
            ("deploy/nested/deeper/cm.yaml", &cm("deep", "\n")),
            ("deploy/scripts/run.sh", "#!/bin/sh\r\necho run\r\n"),
            ("deploy/scripts/plain.sh", "#!/bin/sh\necho plain\n"),
            ("deploy/ünïcødé/日本語.yaml", &cm("unicode", "\r\n")),
            (&format!("deploy/{deep}/long.yaml"), &cm("long", "\n")),
            ("deploy/.sourceignore", "*.tmp\r\n"),
            ("deploy/scratch.tmp", "ignored"),
        ],
    );
    git(repo, &["init", "-q"]);
    git(repo, &["config", "core.autocrlf", "false"]);
    git(repo, &["add", "."]);
    git(
        repo,
        &["update-index", "--chmod=+x", "deploy/scripts/run.sh"],
    );
    git(repo, &["commit", "-q", "-m", "fixture"]);
    // On disk, the other way round: Git's view wins on every OS.
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &str, mode| {
        std::fs::set_permissions(repo.join(path), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set("deploy/scripts/run.sh", 0o644);
    set("deploy/scripts/plain.sh", 0o755);
    repo.join("deploy")
}

#[test]
fn a_tree_gives_the_same_digest_on_windows_and_linux() {
    let wine = Wine::get();
    let repo = tempfile::tempdir().unwrap();
    let dir = fixture(repo.path());
    let out = tempfile::tempdir().unwrap();
    let (linux_tgz, windows_tgz) = (out.path().join("linux.tgz"), out.path().join("win.tgz"));

    let linux = output(
        gitops_e2e::plugin("kubectl-gitops_run")
            .arg("build")
            .arg(&dir)
            .arg("-o")
            .arg(&linux_tgz),
    );
    assert_eq!(linux.code, Some(0), "{linux:?}");
    let windows = output(
        wine.plugin("kubectl-gitops_run")
            .arg("build")
            .arg(win(&dir))
            .arg("-o")
            .arg(win(&windows_tgz)),
    );
    assert_eq!(windows.code, Some(0), "{windows:?}");
    let digest = linux.stdout.trim();
    assert!(digest.starts_with("sha256:"), "{linux:?}");
    assert_eq!(windows.stdout.trim(), digest, "Windows: {windows:?}");
    assert_eq!(
        std::fs::read(&linux_tgz).unwrap(),
        std::fs::read(&windows_tgz).unwrap(),
        "the archives differ"
    );

    // What the archive holds: `/`-separated names, Git's modes, CRLF kept.
    let listing = run(Command::new("tar").arg("tvzf").arg(&windows_tgz));
    let mode_of = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in the archive:\n{listing}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(mode_of(" scripts/run.sh"), "-rwxr-xr-x");
    assert_eq!(mode_of(" scripts/plain.sh"), "-rw-r--r--");
    assert_eq!(mode_of(" ünïcødé/日本語.yaml"), "-rw-r--r--");
    assert!(listing.contains("/mmmm"), "{listing}");
    assert!(!listing.contains("scratch.tmp"), "{listing}");
    assert!(!listing.contains('\\'), "{listing}");
    let crlf = run(Command::new("tar")
        .arg("xzOf")
        .arg(&windows_tgz)
        .arg("crlf.yaml"));
    assert_eq!(crlf, cm("crlf", "\r\n"));
}

/// Nothing labelled with the session is left.
async fn assert_nothing_left(client: &Client, session: &str) {
    let by_session = ListParams::default().labels(&format!("{}={session}", labels::SESSION));
    eventually(
        "the session's objects to be gone",
        Duration::from_secs(90),
        || async {
            let e = |e: kube::Error| e.to_string();
            let left = Api::<Namespace>::all(client.clone())
                .list(&by_session)
                .await
                .map_err(e)?
                .items
                .len()
                + Api::<Lease>::all(client.clone())
                    .list(&by_session)
                    .await
                    .map_err(e)?
                    .items
                    .len()
                + Api::<ConfigMap>::all(client.clone())
                    .list(
                        &ListParams::default()
                            .labels(&format!("kustomize.toolkit.fluxcd.io/name={session}")),
                    )
                    .await
                    .map_err(e)?
                    .items
                    .len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} objects left"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_windows_session_syncs_against_the_harness_is_listed_and_cleans_up() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let wine = Wine::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("crlf.yaml", &cm("crlf", "\r\n")),
            ("ünï/lf.yaml", &cm("lf", "\n")),
        ],
    );
    let kube = [
        "--kubeconfig".to_string(),
        win(&harness.kubeconfig),
        "--context".to_string(),
        harness.context.clone(),
    ];

    // --once: synced and Ready, then everything removed.
    let name = unique("win-once");
    let once = output(
        wine.plugin("kubectl-gitops_run")
            .args(&kube)
            .args(["--once", "--name", &name])
            .arg(win(dir.path())),
    );
    assert_eq!(once.code, Some(0), "{once:?}");
    assert!(
        once.stderr
            .contains(&format!("ConfigMap/{name}/crlf created"))
            && once
                .stderr
                .contains(&format!("ConfigMap/{name}/lf created")),
        "{once:?}"
    );
    assert_nothing_left(&client, &name).await;

    // --once --keep, then listed by gitops-sessions.exe -A with the kubeconfig
    // in %USERPROFILE%\.kube\config (no flag, no KUBECONFIG), and deleted.
    let name = unique("win-kept");
    let kept = output(
        wine.plugin("kubectl-gitops_run")
            .args(&kube)
            .args(["--once", "--keep", "--name", &name])
            .arg(win(dir.path())),
    );
    assert_eq!(kept.code, Some(0), "{kept:?}");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    assert!(api.get_opt("crlf").await.unwrap().is_some(), "{kept:?}");

    let kube_dir = wine.user_profile().join(".kube");
    std::fs::create_dir_all(&kube_dir).unwrap();
    // The harness's kubeconfig names its context as the current one.
    std::fs::copy(&harness.kubeconfig, kube_dir.join("config")).unwrap();
    let list = output(wine.plugin("kubectl-gitops_sessions").arg("-A"));
    assert_eq!(list.code, Some(0), "{list:?}");
    assert!(list.stdout.starts_with("NAME"), "{list:?}");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{name} "))),
        "{name} not listed: {list:?}"
    );
    let json = output(
        wine.plugin("kubectl-gitops_sessions")
            .args(["-A", "-o", "json"]),
    );
    assert_eq!(json.code, Some(0), "{json:?}");
    let sessions: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str()),
        "{json:?}"
    );

    let deleted = output(
        wine.plugin("kubectl-gitops_sessions")
            .args(["delete", &name]),
    );
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert_nothing_left(&client, &name).await;
}

/// The value of a ConfigMap, if it exists.
async fn value(client: &Client, ns: &str, name: &str) -> Result<Option<String>, String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())
        .map(|cm| cm.and_then(|cm| cm.data?.get("value").cloned()))
}

/// The inner loop on Windows: the `.exe` watches DIR through Windows'
/// directory change notifications (`ReadDirectoryChangesW`, which Wine
/// serves from inotify), so a save and a new subdirectory each land on the
/// API server; Ctrl+C (SIGINT, which Wine turns into the console's
/// CTRL_C_EVENT) removes everything the session created and exits 0.
#[tokio::test]
async fn a_windows_session_syncs_each_save_and_cleans_up_on_ctrl_c() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let wine = Wine::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app/live.yaml", &cm("live", "\r\n"))]);
    let name = unique("win-live");
    let mut s = RunningSession::spawn(
        wine.plugin("kubectl-gitops_run")
            .args(["--kubeconfig", &win(&harness.kubeconfig)])
            .args(["--context", &harness.context])
            .args(["-o", "json", "--name", &name])
            .arg(win(dir.path())),
    );
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "live").await, Ok(Some("1".into())));

    // A save of a watched file.
    std::fs::write(
        dir.path().join("app/live.yaml"),
        cm("live", "\r\n").replace("\"1\"", "\"2\""),
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "live").await, Ok(Some("2".into())));

    // A directory made after the session started is watched too.
    write_tree(dir.path(), &[("app/new/later.yaml", &cm("later", "\n"))]);
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "later").await, Ok(Some("1".into())));
    std::fs::write(
        dir.path().join("app/new/later.yaml"),
        cm("later", "\n").replace("\"1\"", "\"3\""),
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &name, "later").await, Ok(Some("3".into())));

    s.signal("INT");
    assert_eq!(
        s.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{:?}",
        s.seen
    );
    assert!(
        s.seen.iter().any(|e| e["event"] == "cleaned"),
        "{:?}",
        s.seen
    );
    assert_nothing_left(&client, &name).await;
}

/// Process liveness on Windows, where there is no `/proc` and no `kill(pid,
/// 0)` (`OpenProcess` + `GetExitCodeProcess`): while a session runs, a
/// second `.exe` with its `--name` is refused and names the first one's pid;
/// once the first was killed hard (no cleanup ran, its Lease still live),
/// the next one sees its process gone and takes the session over at once.
#[tokio::test]
async fn a_windows_session_killed_hard_is_taken_over_and_a_live_one_is_not() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let wine = Wine::get();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app.yaml", &cm("pid", "\r\n"))]);
    let name = unique("win-pid");
    let run = |extra: &[&str]| {
        let mut cmd = wine.plugin("kubectl-gitops_run");
        cmd.args(["--kubeconfig", &win(&harness.kubeconfig)])
            .args(["--context", &harness.context])
            .args(["--name", &name])
            .args(extra)
            .arg(win(dir.path()));
        cmd
    };
    let mut first = RunningSession::spawn(&mut run(&["-o", "json"]));
    first.next_sync().unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let lease = leases.get(&name).await.unwrap();
    assert!(
        lease_is_live(&lease, chrono::Utc::now()),
        "{:?}",
        lease.spec
    );
    // The pid the Windows process recorded (Wine's, not the Unix one).
    let pid = gitops::session::record::Record::of(&lease).pid;
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "{pid:?}");

    // Alive: refused, naming it.
    let refused = output(&mut run(&["--once"]));
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("is already running") && refused.stderr.contains(&pid),
        "{refused:?}"
    );
    assert_eq!(value(&client, &name, "pid").await, Ok(Some("1".into())));

    // Killed hard: its Lease stays live for a while, but the process is gone.
    first.signal("KILL");
    assert_eq!(
        first.wait_exit(Duration::from_secs(60)),
        None,
        "killed by a signal"
    );
    let lease = leases.get(&name).await.unwrap();
    assert!(
        lease_is_live(&lease, chrono::Utc::now()),
        "the Lease must still be live for this to test liveness: {:?}",
        lease.spec
    );
    std::fs::write(
        dir.path().join("app.yaml"),
        cm("pid", "\r\n").replace("\"1\"", "\"2\""),
    )
    .unwrap();
    let mut second = RunningSession::spawn(&mut run(&["-o", "json"]));
    second.next_sync().unwrap();
    assert_eq!(value(&client, &name, "pid").await, Ok(Some("2".into())));
    let lease = leases.get(&name).await.unwrap();
    assert_ne!(gitops::session::record::Record::of(&lease).pid, pid);
    second.signal("INT");
    assert_eq!(
        second.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{:?}",
        second.seen
    );
    assert_nothing_left(&client, &name).await;
}

#[test]
fn windows_reads_docker_credentials_from_userprofile_through_an_exe_helper() {
    let harness = Harness::get();
    let wine = Wine::get();
    let helpers = cross_dir().join("wine/helpers");
    assert!(
        helpers.join("docker-credential-gitops-test.exe").is_file(),
        "the test credential helper is not built: {SETUP}"
    );
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app.yaml", &cm("app", "\r\n"))]);
    let (user, secret) = harness.auth_creds.split_once(':').unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let push = |config: Option<&str>| {
        let docker = wine.user_profile().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        match config {
            Some(c) => std::fs::write(docker.join("config.json"), c).unwrap(),
            None => {
                let _ = std::fs::remove_file(docker.join("config.json"));
            }
        }
        output(
            wine.plugin("kubectl-gitops_run")
                .arg("push")
                .arg(win(dir.path()))
                .arg(format!(
                    "oci://{}/{}:v1",
                    harness.auth_registry,
                    unique("cross/creds")
                ))
                .env("WINEPATH", win(&helpers))
                .env("GITOPS_TEST_HELPER_USER", user)
                .env("GITOPS_TEST_HELPER_SECRET", secret)
                .env("GITOPS_TEST_HELPER_LOG", win(log.path())),
        )
    };
    // No Docker config: the registry's refusal, in plain words.
    let refused = push(None);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("requires credentials"),
        "{refused:?}"
    );
    // The config names a helper: docker-credential-gitops-test.exe runs.
    let config = format!(
        r#"{{"credHelpers": {{"{}": "gitops-test"}}}}"#,
        harness.auth_registry
    );
    let pushed = push(Some(&config));
    assert_eq!(pushed.code, Some(0), "{pushed:?}");
    let asked = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        asked.contains(&harness.auth_registry),
        "helper log: {asked:?}"
    );
    let _ = std::fs::remove_file(wine.user_profile().join(".docker/config.json"));
}

/// The frameworks the stub SDK provides, and the rule (Apple's public
/// headers) saying which one exports a symbol.
fn framework_of(symbol: &str) -> Option<&'static str> {
    if symbol.starts_with("_CF")
        || symbol.starts_with("_kCF")
        || symbol == "___CFConstantStringClassReference"
    {
        Some("CoreFoundation")
    } else if ["_Sec", "_kSec", "_SSL", "_CMS", "_Authorization"]
        .iter()
        .any(|p| symbol.starts_with(p))
    {
        // Security/*.h: Sec…, SecureTransport.h, CMSDecoder.h, Authorization.h.
        Some("Security")
    } else if symbol.starts_with("_FSEvent") || symbol.starts_with("_kFSEvent") {
        Some("CoreServices")
    } else {
        None
    }
}

const FRAMEWORKS: [&str; 3] = ["CoreFoundation", "CoreServices", "Security"];

/// The symbols a framework's stub exports, checking its install name.
fn stub_symbols(framework: &str) -> BTreeSet<String> {
    let path = root().join(format!(
        "krew/macos-sdk/System/Library/Frameworks/{framework}.framework/{framework}.tbd"
    ));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains(&format!(
            "install-name:    '/System/Library/Frameworks/{framework}.framework/Versions/A/{framework}'"
        )),
        "{}: wrong install name",
        path.display()
    );
    assert!(text.contains("tbd-version:     4"), "{}", path.display());
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- _").map(|s| format!("_{s}")))
        .collect()
}

fn tool(name: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(name)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} ({e}): {SETUP} (it installs Debian's llvm)"));
    assert!(
        out.status.success(),
        "{name} {args:?} {}: {out:?}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn be32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
}

/// Checks the embedded ad-hoc signature: a CodeDirectory whose SHA-256 page
/// hashes match the file, as macOS verifies it before running arm64 code.
fn check_code_signature(path: &Path, dataoff: usize, datasize: usize) {
    let file = std::fs::read(path).unwrap();
    let blob = &file[dataoff..dataoff + datasize];
    assert_eq!(
        be32(blob, 0),
        0xfade_0cc0,
        "{}: no embedded signature",
        path.display()
    );
    let count = be32(blob, 8);
    let cd_offset = (0..count)
        .map(|i| (be32(blob, 12 + 8 * i), be32(blob, 16 + 8 * i)))
        .find(|(kind, _)| *kind == 0)
        .map(|(_, offset)| offset)
        .unwrap_or_else(|| panic!("{}: no CodeDirectory", path.display()));
    let cd = &blob[cd_offset..];
    assert_eq!(
        be32(cd, 0),
        0xfade_0c02,
        "{}: bad CodeDirectory",
        path.display()
    );
    let flags = be32(cd, 12);
    assert!(
        flags & 0x2 != 0,
        "{}: not an ad-hoc signature",
        path.display()
    );
    let (hash_offset, code_slots, code_limit) = (be32(cd, 16), be32(cd, 28), be32(cd, 32));
    let (hash_size, hash_type, page_shift) = (cd[36] as usize, cd[37], cd[39]);
    assert_eq!(
        (hash_size, hash_type),
        (32, 2),
        "{}: not SHA-256",
        path.display()
    );
    let page = 1usize << page_shift;
    assert_eq!(code_slots, code_limit.div_ceil(page));
    for slot in 0..code_slots {
        let data = &file[slot * page..((slot + 1) * page).min(code_limit)];
        let expected = &cd[hash_offset + slot * hash_size..][..hash_size];
        assert_eq!(
            gitops::artifact::sha256_digest(data),
            format!("sha256:{}", gitops::artifact::hex(expected)),
            "{}: page {slot} does not match its signature",
            path.display()
        );
    }
}

#[test]
fn darwin_binaries_link_libsystem_and_the_stub_frameworks_only_and_are_signed() {
    let profile = std::env::var("GITOPS_CROSS_PROFILE").unwrap_or_else(|_| "debug".into());
    let stubs: Vec<(&str, BTreeSet<String>)> =
        FRAMEWORKS.iter().map(|f| (*f, stub_symbols(f))).collect();
    // macOS runs no unsigned arm64 code; x86_64 code may be unsigned (the
    // linker signs arm64 output only), and is checked when signed.
    for (target, arch, min_os, signed) in [
        ("aarch64-apple-darwin", "ARM64", "11.0", true),
        ("x86_64-apple-darwin", "X86_64", "10.12", false),
    ] {
        for p in PLUGINS {
            let bin = cross_dir()
                .join(target)
                .join(&profile)
                .join(format!("kubectl-gitops_{p}"));
            assert!(bin.is_file(), "{} is not built: {SETUP}", bin.display());
            let what = bin.display().to_string();

            let header = tool("llvm-objdump", &["--macho", "--private-header"], &bin);
            assert!(
                header.lines().any(|l| l.contains("MH_MAGIC_64") && l.split_whitespace().nth(1) == Some(arch)),
                "{what}: not {arch}:\n{header}"
            );
            let commands = tool("llvm-objdump", &["--macho", "--private-headers"], &bin);
            let blocks: Vec<&str> = commands.split("Load command").skip(1).collect();
            let field = |block: &str, key: &str| {
                block.lines().find_map(|l| {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(key)).then(|| words.next().unwrap_or("").to_string())
                })
            };
            let version = blocks
                .iter()
                .find_map(|b| {
                    if b.contains("cmd LC_BUILD_VERSION") {
                        field(b, "minos")
                    } else if b.contains("cmd LC_VERSION_MIN_MACOSX") {
                        field(b, "version")
                    } else {
                        None
                    }
                })
                .unwrap_or_else(|| panic!("{what}: no minimum macOS version"));
            assert_eq!(version, min_os, "{what}: minimum macOS");

            match blocks.iter().find(|b| b.contains("cmd LC_CODE_SIGNATURE")) {
                Some(signature) => {
                    let number = |key| field(signature, key).and_then(|v| v.parse().ok()).unwrap();
                    check_code_signature(&bin, number("dataoff"), number("datasize"));
                }
                None => assert!(!signed, "{what}: no LC_CODE_SIGNATURE"),
            }

            let dylibs: BTreeSet<String> = blocks
                .iter()
                .filter(|b| b.contains("cmd LC_LOAD_DYLIB") || b.contains("cmd LC_LOAD_WEAK_DYLIB"))
                .filter_map(|b| field(b, "name"))
                .collect();
            let mut allowed: BTreeSet<String> = FRAMEWORKS
                .iter()
                .map(|f| format!("/System/Library/Frameworks/{f}.framework/Versions/A/{f}"))
                .collect();
            allowed.insert("/usr/lib/libSystem.B.dylib".into());
            assert!(
                dylibs.contains("/usr/lib/libSystem.B.dylib"),
                "{what}: {dylibs:?}"
            );
            assert!(dylibs.is_subset(&allowed), "{what} links {dylibs:?}");

            // Two-level namespace: every undefined symbol names its library.
            let undefined = tool("llvm-nm", &["-m", "-u"], &bin);
            let mut from_frameworks = 0;
            for line in undefined.lines().filter(|l| !l.trim().is_empty()) {
                let (symbol, library) = line
                    .split_once(" (from ")
                    .map(|(s, l)| {
                        (
                            s.split_whitespace().last().unwrap(),
                            l.trim_end_matches(')'),
                        )
                    })
                    .unwrap_or_else(|| panic!("{what}: {line:?} is bound to no library"));
                if library == "libSystem" {
                    assert_eq!(
                        framework_of(symbol),
                        None,
                        "{what}: {symbol} from libSystem"
                    );
                    continue;
                }
                let (framework, exported) = stubs
                    .iter()
                    .find(|(f, _)| *f == library)
                    .unwrap_or_else(|| panic!("{what}: {symbol} from {library}"));
                assert!(
                    exported.contains(symbol),
                    "{what}: {symbol} not in the {framework} stub"
                );
                assert_eq!(
                    framework_of(symbol),
                    Some(*framework),
                    "{what}: {symbol} bound to {framework}, but Apple's headers put it elsewhere"
                );
                from_frameworks += 1;
            }
            assert!(
                from_frameworks > 0,
                "{what}: no framework symbols at all?\n{undefined}"
            );
        }
    }
}

#[test]
fn krew_installs_the_windows_and_darwin_archives() {
    let harness = Harness::get();
    let wine = Wine::get();
    let krew_bin = std::fs::read_to_string(harness.dir.join("harness.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("GITOPS_HARNESS_KREW=").map(str::to_string))
        .expect("the harness builds Krew; restart it with tests/cluster/up");
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    let version = "v0.0.0-cross";
    // The archives and manifests `make dist` makes, from the debug builds.
    run(Command::new(root().join("krew/dist"))
        .args([
            "--targets",
            "x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin",
            "--profile",
            "debug",
            "--version",
            version,
            "--out",
        ])
        .arg(&dist)
        .arg("--manifests")
        .arg(&dist)
        .env("CARGO_TARGET_DIR", cross_dir())
        .current_dir(root()));

    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&krew_bin, bin.join("kubectl-krew")).unwrap();
    for (os, arch, ext, exe) in [
        ("windows", "amd64", "zip", ".exe"),
        ("darwin", "arm64", "tar.gz", ""),
        ("darwin", "amd64", "tar.gz", ""),
    ] {
        let krew_root = work.path().join(format!("krew-{os}-{arch}"));
        let index = krew_root.join("index/default");
        std::fs::create_dir_all(index.join("plugins")).unwrap();
        run(Command::new("git").args(["init", "-q"]).arg(&index));
        let kubectl = |args: &[&str]| {
            let mut c = Command::new("kubectl");
            c.args(args)
                .env("KREW_ROOT", &krew_root)
                .env("KREW_OS", os)
                .env("KREW_ARCH", arch)
                .env("KREW_NO_UPGRADE_CHECK", "1")
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        bin.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                )
                .env("KUBECONFIG", &harness.kubeconfig);
            c
        };
        for p in PLUGINS {
            let manifest = dist.join(format!("gitops-{p}.yaml"));
            let text = std::fs::read_to_string(&manifest).unwrap();
            let archive = dist.join(format!("kubectl-gitops_{p}-{os}-{arch}.{ext}"));
            let sha = run(Command::new("sha256sum").arg(&archive));
            assert!(
                text.contains(&format!("sha256: {}", &sha[..64])),
                "{} lacks the sha256 of {}",
                manifest.display(),
                archive.display()
            );
            let out = output(&mut kubectl(&[
                "krew",
                "install",
                &format!("--manifest={}", manifest.display()),
                &format!("--archive={}", archive.display()),
            ]));
            assert_eq!(
                out.code,
                Some(0),
                "krew install gitops-{p} for {os}/{arch}: {out:?}"
            );
            let store = krew_root.join(format!("store/gitops-{p}/{version}"));
            let link = krew_root.join(format!("bin/kubectl-gitops_{p}{exe}"));
            assert_eq!(
                std::fs::canonicalize(&link).unwrap(),
                std::fs::canonicalize(store.join(format!("kubectl-gitops_{p}{exe}"))).unwrap(),
                "{}",
                link.display()
            );
            let helper = format!(
                "kubectl_complete-gitops_{p}{}",
                if os == "windows" { ".cmd" } else { "" }
            );
            for file in [helper.as_str(), "LICENSE"] {
                assert!(
                    store.join(file).is_file(),
                    "{os}/{arch}: {file} not installed"
                );
            }
        }
        if os == "windows" {
            // The installed plugin runs, and kubectl's completion helper (a
            // .cmd, found through PATHEXT) answers through it, under Wine's
            // cmd. The shim DLL goes next to it for Wine only.
            let store = krew_root.join(format!("store/gitops-run/{version}"));
            for dir in [&store, &krew_root.join("bin")] {
                std::fs::copy(
                    wine.bin.join("bcryptprimitives.dll"),
                    dir.join("bcryptprimitives.dll"),
                )
                .unwrap();
            }
            let help = output(
                wine.exe(&krew_root.join("bin/kubectl-gitops_run.exe"))
                    .arg("--help"),
            );
            assert_eq!(help.code, Some(0), "{help:?}");
            let completion = output(wine.exe(Path::new("cmd.exe")).args([
                "/c",
                &win(&store.join("kubectl_complete-gitops_run.cmd")),
                "bui",
            ]));
            assert_eq!(completion.code, Some(0), "{completion:?}");
            assert!(completion.stdout.starts_with("build\t"), "{completion:?}");
        }
        for p in PLUGINS {
            let out = output(&mut kubectl(&["krew", "uninstall", &format!("gitops-{p}")]));
            assert_eq!(out.code, Some(0), "krew uninstall gitops-{p}: {out:?}");
        }
    }
}
