//! What a session packages and watches in an application repository, as
//! developers have them: source code and assets, Git-ignored build output
//! (hundreds of MB in `target/`, a deep `node_modules/`), and manifests in
//! `deploy/` on a `base/`. The
//! session packages `deploy/` and what it references, nothing else, and only
//! those directories' changes sync. Asserts on what the registry holds (pulled
//! with the `flux` CLI) and what the API server holds, and compares what Flux
//! renders from the narrowed artifact with what it renders from the whole
//! tree pushed by `flux push artifact`.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gitops::flux::{Kustomization, OCIRepository};
use gitops_e2e::{Harness, RunningSession, configmap, eventually, git, run, unique, write_tree};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(90);

/// A repository with 256 MiB of Git-ignored build output, a 3,000-directory
/// `node_modules/`, 20 MiB of source assets, and deploy/ (an overlay) on base/.
fn app_repository(root: &Path) {
    write_tree(
        root,
        &[
            (".gitignore", "/target/\nnode_modules/\n*.log\n"),
            ("src/main.rs", "fn main() {}\n"),
            (
                "deploy/kustomization.yaml",
                "resources:\n- ../base\n- app.yaml\n",
            ),
            ("deploy/app.yaml", &configmap("app", &[("value", "1")])),
            ("base/kustomization.yaml", "resources:\n- base.yaml\n"),
            ("base/base.yaml", &configmap("base", &[("value", "1")])),
            ("extra/kustomization.yaml", "resources:\n- extra.yaml\n"),
            ("extra/extra.yaml", &configmap("extra", &[("value", "1")])),
            ("deploy/debug.log", "not for the cluster\n"),
        ],
    );
    let big = vec![0x5au8; 64 << 20];
    std::fs::create_dir_all(root.join("target/release/deps")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("target/release/deps/lib{i}.rlib")), &big).unwrap();
    }
    std::fs::create_dir_all(root.join("assets")).unwrap();
    for i in 0..2 {
        std::fs::write(root.join(format!("assets/video{i}.bin")), &big[..10 << 20]).unwrap();
    }
    for i in 0..500 {
        let d = root.join(format!("node_modules/pkg{i}/node_modules/dep/lib/a/b"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.js"), "module.exports = 1;\n").unwrap();
    }
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "app"]);
}

/// The files of the artifact the session's OCIRepository points at, pulled
/// with the `flux` CLI.
async fn artifact_files(
    harness: &Harness,
    client: &Client,
    ns: &str,
    name: &str,
) -> BTreeSet<String> {
    let repo = Api::<OCIRepository>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let revision = repo
        .status
        .and_then(|s| s.artifact)
        .map(|a| a.revision)
        .unwrap();
    let digest = revision
        .split_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap();
    let reference = format!("{}@{digest}", repo.spec.url);
    let out = tempfile::tempdir().unwrap();
    run(harness
        .flux()
        .args(["pull", "artifact", &reference, "--output"])
        .arg(out.path()));
    walkdir::WalkDir::new(out.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(out.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

async fn value(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

fn syncs(events: &[serde_json::Value]) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "synced" || e["event"] == "failed" || e["event"] == "phase")
        .count()
}

#[tokio::test]
async fn a_session_packages_and_watches_only_deploy_and_what_it_references() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    app_repository(root);
    let ns = unique("run-repo");
    let mut s = RunningSession::start(&harness, root, &["deploy", "--name", &ns]);
    s.next_sync().unwrap();
    let said = s
        .seen
        .iter()
        .find(|e| {
            e["event"] == "message"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("packaged "))
        })
        .cloned()
        .expect("what was packaged is said");
    assert_eq!(
        said["message"],
        "packaged deploy/ and base/ (4 files), 1 path outside deploy/"
    );
    // What the registry holds: deploy/ and base/ only (not the log Git ignores).
    let files = artifact_files(&harness, &client, &ns, &ns).await;
    let want: BTreeSet<String> = [
        "base/base.yaml",
        "base/kustomization.yaml",
        "deploy/app.yaml",
        "deploy/kustomization.yaml",
    ]
    .map(String::from)
    .into();
    assert_eq!(files, want);
    assert_eq!(value(&client, &ns, "base").await.as_deref(), Some("1"));

    // Build output, dependencies, sources and unreferenced manifests: no sync.
    std::fs::write(root.join("target/release/deps/lib0.rlib"), b"rebuilt").unwrap();
    std::fs::write(
        root.join("node_modules/pkg1/node_modules/dep/lib/a/b/index.js"),
        "module.exports = 2;\n",
    )
    .unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
    std::fs::write(
        root.join("extra/extra.yaml"),
        configmap("extra", &[("value", "2")]),
    )
    .unwrap();
    std::fs::write(root.join("deploy/debug.log"), "more\n").unwrap();
    let quiet = s.events_within(Duration::from_secs(3));
    assert_eq!(syncs(&quiet), 0, "{quiet:?}");
    let revision = |client: Client, ns: String| async move {
        Api::<Kustomization>::namespaced(client, &ns)
            .get(&ns)
            .await
            .unwrap()
            .status
            .and_then(|s| s.last_applied_revision)
    };
    let before = revision(client.clone(), ns.clone()).await;

    // base/ feeds the artifact: a save there syncs.
    std::fs::write(
        root.join("base/base.yaml"),
        configmap("base", &[("value", "2")]),
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &ns, "base").await.as_deref(), Some("2"));
    // The session says "synced" as soon as the change is applied and healthy;
    // Flux records the revision when its reconcile ends, a moment later.
    eventually(
        "Flux to record the new revision",
        Duration::from_secs(30),
        || {
            let (client, ns, before) = (client.clone(), ns.clone(), before.clone());
            async move {
                let now = revision(client, ns).await;
                if now != before {
                    Ok(())
                } else {
                    Err(format!("{now:?}"))
                }
            }
        },
    )
    .await;

    // A new reference is packaged and watched from the next save on.
    std::fs::write(
        root.join("deploy/kustomization.yaml"),
        "resources:\n- ../base\n- ../extra\n- app.yaml\n",
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &ns, "extra").await.as_deref(), Some("2"));
    assert!(
        artifact_files(&harness, &client, &ns, &ns)
            .await
            .contains("extra/extra.yaml")
    );
    std::fs::write(
        root.join("extra/extra.yaml"),
        configmap("extra", &[("value", "3")]),
    )
    .unwrap();
    s.next_sync().unwrap();
    assert_eq!(value(&client, &ns, "extra").await.as_deref(), Some("3"));

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    gitops_e2e::wait_namespace_gone(&client, &ns).await;
}

/// An overlay with a base, a component, a patch file, generator files and
/// a transformer configuration outside it: what Flux applies from the narrowed artifact (the session's
/// Kustomization's inventory and the objects) is what it applies from the
/// whole tree pushed by `flux push artifact` (a Kustomization made here, not
/// by the suite).
#[tokio::test]
async fn narrowing_does_not_change_what_flux_renders() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write_tree(
        root,
        &[
            (
                "overlays/dev/kustomization.yaml",
                "resources:\n- ../../base\ncomponents:\n- ../../components/team\npatches:\n- path: ../../patches/replicas.yaml\nconfigMapGenerator:\n- name: settings\n  files:\n  - app.conf=../../config/app.conf\n  envs:\n  - ../../config/dev.env\ntransformers:\n- ../../transformers/labels.yaml\n",
            ),
            (
                "transformers/labels.yaml",
                "apiVersion: builtin\nkind: LabelTransformer\nmetadata:\n  name: env\nlabels:\n  env: dev\nfieldSpecs:\n- path: metadata/labels\n  create: true\n",
            ),
            (
                "base/kustomization.yaml",
                "resources:\n- cm.yaml\n- ../shared/cm.yaml\n",
            ),
            ("base/cm.yaml", &configmap("web", &[("value", "base")])),
            ("shared/cm.yaml", &configmap("shared", &[("value", "s")])),
            (
                "components/team/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- team.yaml\ncommonLabels:\n  team: blue\n",
            ),
            (
                "components/team/team.yaml",
                &configmap("team", &[("value", "t")]),
            ),
            (
                "patches/replicas.yaml",
                &configmap("web", &[("value", "patched")]),
            ),
            ("config/app.conf", "mode=dev\n"),
            ("config/dev.env", "LEVEL=debug\n"),
            ("unrelated/broken.yaml", "kind: [not, rendered\n"),
        ],
    );
    // Not valid YAML, but never packaged: the session does not even read it.
    git(root, &["init", "-q"]);

    // Flux on the whole tree, pushed by the flux CLI.
    let stock = unique("stock");
    let reference = format!("oci://{}/e2e/{stock}:latest", harness.registry);
    run(harness.flux().args([
        "push",
        "artifact",
        &reference,
        &format!("--path={}", root.display()),
        "--source=file:///e2e",
        "--revision=main@sha1:0000000000000000000000000000000000000000",
    ]));
    gitops_e2e::create_namespace(&client, &stock).await;
    harness.kubectl_apply(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: {stock}\n  namespace: {stock}\nspec:\n  url: oci://{}/e2e/{stock}\n  ref:\n    tag: latest\n  interval: 10m\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {stock}\n  namespace: {stock}\nspec:\n  sourceRef:\n    kind: OCIRepository\n    name: {stock}\n  path: ./overlays/dev\n  prune: true\n  interval: 10m\n  targetNamespace: {stock}\n",
        harness.registry
    ));

    // The session, narrowed.
    let ns = unique("run-narrow");
    let mut s = RunningSession::start(&harness, root, &["overlays/dev", "--name", &ns]);
    s.next_sync().unwrap();
    let files = artifact_files(&harness, &client, &ns, &ns).await;
    assert!(
        !files.iter().any(|f| f.starts_with("unrelated/")),
        "{files:?}"
    );

    let inventory = |ns: String| {
        let client = client.clone();
        async move {
            let ks = Api::<Kustomization>::namespaced(client, &ns)
                .get(&ns)
                .await
                .map_err(|e| e.to_string())?;
            let status = ks.status.unwrap_or_default();
            let ready = gitops::flux::condition(&status.conditions, "Ready")
                .is_some_and(|c| c.status == "True");
            if !ready {
                return Err(format!("{:?}", status.conditions));
            }
            // Both render four objects: a Ready read before the inventory
            // (seen once in CI) is not yet the verdict.
            let entries = status.inventory.map(|i| i.entries).unwrap_or_default();
            if entries.is_empty() {
                return Err(format!(
                    "Ready, inventory not yet listed: {:?}",
                    status.conditions
                ));
            }
            Ok(entries
                .into_iter()
                .map(|e| e.id.replacen(&format!("{ns}_"), "NS_", 1))
                .collect::<BTreeSet<String>>())
        }
    };
    let theirs = eventually("the stock Kustomization to be Ready", WAIT, || {
        inventory(stock.clone())
    })
    .await;
    let ours = eventually("the session's inventory", WAIT, || inventory(ns.clone())).await;
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 4, "{ours:?}");
    // And the objects themselves: same data.
    for name in ["web", "shared", "team"] {
        assert_eq!(
            value(&client, &ns, name).await,
            value(&client, &stock, name).await,
            "{name}"
        );
    }
    let settings = |ns: String| {
        let client = client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, &ns)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|c| {
                    c.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("settings-"))
                })
                .and_then(|c| c.data)
        }
    };
    assert_eq!(settings(ns.clone()).await, settings(stock.clone()).await);
    assert!(settings(ns.clone()).await.is_some());
    // The transformer outside the overlay was applied, as Flux does on the whole tree.
    let labels = |ns: String| {
        let client = client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, &ns)
                .get("web")
                .await
                .unwrap()
                .metadata
                .labels
                .unwrap_or_default()
                .get("env")
                .cloned()
        }
    };
    assert_eq!(labels(ns.clone()).await.as_deref(), Some("dev"));
    assert_eq!(labels(ns.clone()).await, labels(stock.clone()).await);
    assert!(files.contains("transformers/labels.yaml"), "{files:?}");

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    let _ = run(Command::new("kubectl")
        .args(["--kubeconfig", harness.kubeconfig.to_str().unwrap()])
        .args(["delete", "namespace", &stock, "--wait=false"]));
}

/// A `secretGenerator` on a `.env` that Git ignores (as it should: it holds
/// a password): the file exists, so the reference check passes, and Git's
/// rules would leave it out of the artifact, breaking Flux's render after
/// the push. A file a kustomization references by name is packaged; the
/// first sync says so, and the Secret is in the cluster with the file's data.
#[tokio::test]
async fn a_git_ignored_env_file_of_a_secret_generator_is_packaged() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write_tree(
        root,
        &[
            (".gitignore", ".env\n*.log\n"),
            (
                "deploy/kustomization.yaml",
                "resources:\n- app.yaml\nsecretGenerator:\n- name: db\n  envs:\n  - .env\ngeneratorOptions:\n  disableNameSuffixHash: true\n",
            ),
            ("deploy/app.yaml", &configmap("app", &[("value", "1")])),
            ("deploy/.env", "PASSWORD=s3cret\nUSER=app\n"),
            ("deploy/debug.log", "not for the cluster\n"),
        ],
    );
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "app"]);
    let ns = unique("run-dotenv");
    let mut s = RunningSession::start(&harness, root, &["deploy", "--name", &ns]);
    s.next_sync().unwrap();
    let said = s
        .seen
        .iter()
        .find_map(|e| {
            e["message"]
                .as_str()
                .filter(|m| e["event"] == "message" && m.starts_with("packaged "))
                .map(String::from)
        })
        .expect("what was packaged is said");
    assert_eq!(
        said,
        "packaged deploy/ (3 files); packaged deploy/.env, which Git ignores (`.env` in \
         .gitignore), because deploy/kustomization.yaml references it"
    );
    let files = artifact_files(&harness, &client, &ns, &ns).await;
    assert!(files.contains("deploy/.env"), "{files:?}");
    // What nothing references still follows Git's rules.
    assert!(!files.contains("deploy/debug.log"), "{files:?}");
    let data = |client: Client, ns: String| async move {
        Api::<Secret>::namespaced(client, &ns)
            .get_opt("db")
            .await
            .unwrap()
            .and_then(|s| s.data)
            .map(|d| {
                d.into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
    };
    let got = data(client.clone(), ns.clone()).await;
    let want: std::collections::BTreeMap<String, String> =
        [("PASSWORD", "s3cret"), ("USER", "app")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    assert_eq!(got, Some(want));
    // And it is watched: a save of the ignored file syncs.
    std::fs::write(root.join("deploy/.env"), "PASSWORD=changed\nUSER=app\n").unwrap();
    s.next_sync().unwrap();
    let got = data(client.clone(), ns.clone()).await.unwrap_or_default();
    assert_eq!(got.get("PASSWORD").map(String::as_str), Some("changed"));

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    gitops_e2e::wait_namespace_gone(&client, &ns).await;
}

/// The user's global excludes file (`core.excludesFile` in ~/.gitconfig)
/// counts as `git check-ignore` counts it: what it matches stays out of the
/// artifact unless Git tracks it. Checked in Flux's inventory.
#[tokio::test]
async fn the_users_global_git_excludes_file_applies_but_never_to_tracked_files() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let home = tempfile::tempdir().unwrap();
    let excludes = home.path().join("global-ignore");
    std::fs::write(&excludes, "local-*.yaml\n").unwrap();
    std::fs::write(
        home.path().join(".gitconfig"),
        format!("[core]\n\texcludesFile = {}\n", excludes.display()),
    )
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    write_tree(
        repo.path(),
        &[
            ("deploy/app.yaml", &configmap("kept", &[("value", "1")])),
            (
                "deploy/local-dev.yaml",
                &configmap("leak", &[("value", "1")]),
            ),
            (
                "deploy/local-tracked.yaml",
                &configmap("tracked", &[("value", "1")]),
            ),
        ],
    );
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "-f", "deploy/local-tracked.yaml"]);
    let name = unique("run-excludes");
    let mut s = RunningSession::spawn(
        gitops_e2e::plugin("kubectl-gitops_run")
            .args(harness.kube_args())
            .args(["-o", "json", "--name", &name, "deploy"])
            .current_dir(repo.path())
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME"),
    );
    s.next_sync().unwrap();
    // The session says synced once the objects are healthy; Flux writes its
    // inventory with its own Ready a moment later.
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), &name);
    let ids: Vec<String> = eventually("Flux's inventory", WAIT, || {
        let kss = kss.clone();
        let name = name.clone();
        async move {
            let status = kss
                .get(&name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            match status.inventory {
                Some(i) if !i.entries.is_empty() => {
                    Ok(i.entries.into_iter().map(|e| e.id).collect())
                }
                _ => Err(format!("{:?}", status.conditions)),
            }
        }
    })
    .await;
    let has = |cm: &str| {
        ids.iter()
            .any(|id| id == &format!("{name}_{cm}__ConfigMap"))
    };
    assert!(has("kept") && has("tracked") && !has("leak"), "{ids:?}");
    assert_eq!(value(&client, &name, "leak").await, None);
    let footprint = gitops_e2e::Footprint::capture(&client, &name).await;
    s.signal("INT");
    assert_eq!(s.wait_exit(WAIT), Some(0));
    footprint.assert_gone(&client).await;
}
