//! A GitOps repository of one test on the harness's Git server, laid out as
//! the harness's fleet (`tests/cluster/fleet`, what `flux bootstrap git`
//! leaves plus two apps), with the test's own names, and bootstrapped into
//! the cluster: [`GitOpsRepo`].

// Helpers fail the calling test loudly: panics are the tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};

use crate::{Harness, create_namespace, eventually, run, unique};

/// How long the fixture waits for Flux to apply a commit.
const APPLIED: Duration = Duration::from_secs(120);

/// The API resource of a Flux kind (`GitRepository`, `Kustomization`,
/// `HelmRelease`, `HelmChart`) at the version the harness serves.
pub fn flux_resource(kind: &str) -> ApiResource {
    let (group, version) = match kind {
        "GitRepository" | "HelmChart" | "OCIRepository" => ("source.toolkit.fluxcd.io", "v1"),
        "Kustomization" => ("kustomize.toolkit.fluxcd.io", "v1"),
        "HelmRelease" => ("helm.toolkit.fluxcd.io", "v2"),
        other => panic!("flux_resource: unknown Flux kind {other}"),
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// [`flux_resource`] of `Kustomization`.
pub fn kustomization_resource() -> ApiResource {
    flux_resource("Kustomization")
}

/// Asks Flux to reconcile an object now (annotation
/// `reconcile.fluxcd.io/requestedAt`, as `flux reconcile` sets it); returns
/// the value, which the controller echoes in `status.lastHandledReconcileAt`.
pub async fn request_reconcile(client: &Client, kind: &str, ns: &str, name: &str) -> String {
    let at = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &flux_resource(kind));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": at}}
        })),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot request a reconcile of {kind} {ns}/{name}: {e}"));
    at
}

/// A test's own GitOps repository: a bare repository `NAME.git` on the
/// harness's Git server (pushes allowed), a working clone in a temporary
/// directory whose `origin` is the server's URL, holding the fleet's layout
/// with this test's names, pushed and bootstrapped:
///
/// - `clusters/local/flux-system/gotk-sync.yaml`: GitRepository
///   `flux-system` (branch main, interval 1m) and the parent Kustomization
///   `flux-system` (path `./clusters/local`, prune), both in
///   [`GitOpsRepo::flux_namespace`];
/// - `clusters/local/apps.yaml`: the app Kustomizations `podinfo` (path
///   `./apps/podinfo`, targetNamespace [`GitOpsRepo::podinfo_namespace`])
///   and `hello-chart` (path `./apps/hello-chart`, targetNamespace
///   [`GitOpsRepo::hello_namespace`]), prune, wait, in the flux namespace;
/// - `apps/podinfo/`: Namespace, ConfigMap `podinfo-config`, Deployment
///   `podinfo` (2 replicas), Service `podinfo`;
/// - `apps/hello-chart/`: Namespace, HelmRelease `hello` of the chart
///   `./charts/hello` from the same GitRepository (reconcileStrategy
///   Revision), values `greeting`;
/// - `charts/hello/`: Chart.yaml (0.1.0), values.yaml (`replicas`,
///   `greeting`), a Deployment `hello` (`{{ .Release.Name }}`).
///
/// [`GitOpsRepo::create`] returns once Flux has applied the pushed commit
/// (parent and both app Kustomizations Ready at `main@sha1:<HEAD>`, the
/// HelmRelease Ready). Call [`GitOpsRepo::cleanup`] at the end of the test;
/// dropping it removes the bare repository and the working clone.
pub struct GitOpsRepo {
    /// The repository's name on the server (`<name>.git`), unique to the test.
    pub name: String,
    /// Its URL on the Git server: `http://127.0.0.1:PORT/<name>.git`.
    pub url: String,
    /// Where its GitRepository and Kustomizations live (the test's `flux-system`).
    pub flux_namespace: String,
    /// Target namespace of the `podinfo` app.
    pub podinfo_namespace: String,
    /// Target namespace of the `hello-chart` app (and its HelmRelease).
    pub hello_namespace: String,
    bare: PathBuf,
    work: tempfile::TempDir,
}

impl GitOpsRepo {
    /// Creates, pushes and bootstraps a repository named `unique(prefix)`,
    /// and waits until Flux has applied it.
    pub async fn create(harness: &Harness, client: &Client, prefix: &str) -> GitOpsRepo {
        let name = unique(prefix);
        let url = format!("{}/{name}.git", harness.git_url().trim_end_matches('/'));
        let root = harness.git_root();
        let bare = root.join(format!("{name}.git"));
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        git_in(
            &root,
            &["init", "-q", "--bare", "-b", "main", &format!("{name}.git")],
        );
        git_in(&bare, &["config", "http.receivepack", "true"]);
        let work = tempfile::tempdir().expect("a temporary directory");
        let repo = GitOpsRepo {
            flux_namespace: name.clone(),
            podinfo_namespace: format!("{name}-podinfo"),
            hello_namespace: format!("{name}-hello"),
            name,
            url,
            bare,
            work,
        };
        repo.render();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["remote", "add", "origin", &repo.url]);
        repo.commit_and_push("Flux sync for clusters/local; apps podinfo and hello-chart");

        // What `flux bootstrap git` does in the cluster: the namespace, then
        // gotk-sync.yaml as Git holds it.
        create_namespace(client, &repo.flux_namespace).await;
        let sync = run(Command::new("git")
            .arg("-C")
            .arg(repo.workdir())
            .args(["show", "HEAD:clusters/local/flux-system/gotk-sync.yaml"]));
        harness.kubectl_apply(&sync);
        repo.wait_applied(client).await;
        repo
    }

    /// The working clone (the repository's root).
    pub fn workdir(&self) -> &Path {
        self.work.path()
    }

    /// `apps/<app>` in the working clone (`podinfo` or `hello-chart`).
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.workdir().join("apps").join(app)
    }

    /// `charts/hello` in the working clone.
    pub fn chart_dir(&self) -> PathBuf {
        self.workdir().join("charts/hello")
    }

    /// The working clone's `HEAD` commit (`git rev-parse HEAD`).
    pub fn head_sha(&self) -> String {
        run(Command::new("git")
            .arg("-C")
            .arg(self.workdir())
            .args(["rev-parse", "HEAD"]))
        .trim()
        .to_string()
    }

    /// What Flux reports for `HEAD`: `main@sha1:<sha>`.
    pub fn head_revision(&self) -> String {
        format!("main@sha1:{}", self.head_sha())
    }

    /// `git add -A`, commit with `msg`, push to `origin` main; returns the new sha.
    pub fn commit_and_push(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["push", "-q", "origin", "main"]);
        self.head_sha()
    }

    /// Adds a remote `name` spelled `url` (e.g. `git@github.com:org/fleet.git`);
    /// it is never fetched from or pushed to.
    pub fn add_remote(&self, name: &str, url: &str) {
        self.git(&["remote", "add", name, url]);
    }

    /// Spells `origin`'s URL as `url` (e.g. the ssh-style
    /// `git@127.0.0.1:<name>.git`, which cannot be cloned here) while pushes
    /// still go to the server (`remote.origin.pushurl`): what `git remote -v`
    /// shows then is `url` (fetch) and the server's URL (push).
    pub fn spell_origin(&self, url: &str) {
        self.git(&["remote", "set-url", "origin", url]);
        self.git(&["config", "remote.origin.pushurl", &self.url]);
    }

    /// Runs `git args…` in the working clone with a fixed author; panics if it fails.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.workdir(), args)
    }

    /// Asks source-controller to fetch the repository now.
    pub async fn reconcile_source(&self, client: &Client) -> String {
        request_reconcile(client, "GitRepository", &self.flux_namespace, "flux-system").await
    }

    /// Reads one of the repository's Kustomizations (`flux-system`, `podinfo`, `hello-chart`).
    pub async fn kustomization(&self, client: &Client, name: &str) -> DynamicObject {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &self.flux_namespace,
            &kustomization_resource(),
        );
        api.get(name)
            .await
            .unwrap_or_else(|e| panic!("Kustomization {}/{name}: {e}", self.flux_namespace))
    }

    /// Waits until the Kustomization `name` is Ready with
    /// `status.lastAppliedRevision` = `revision`.
    pub async fn wait_kustomization(&self, client: &Client, name: &str, revision: &str) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &self.flux_namespace,
            &kustomization_resource(),
        );
        wait_ready_at(
            &api,
            "Kustomization",
            name,
            "lastAppliedRevision",
            revision,
            |v| v == revision,
        )
        .await;
    }

    /// Waits until Flux has applied `HEAD` (which must be pushed): the
    /// parent `flux-system` and both app Kustomizations Ready at
    /// `main@sha1:<HEAD>`, then the HelmRelease `hello` Ready with the chart
    /// built from that commit (`status.lastAttemptedRevision`
    /// `<chart version>+<first 12 of HEAD>`: every commit is a new chart
    /// version with reconcileStrategy Revision). Asks for a fetch of the
    /// source first, so a commit is seen at once. With an app suspended,
    /// wait for what should move with [`GitOpsRepo::wait_kustomization`].
    pub async fn wait_applied(&self, client: &Client) {
        let revision = self.head_revision();
        let chart = format!("+{}", &self.head_sha()[..12]);
        self.reconcile_source(client).await;
        for name in ["flux-system", "podinfo", "hello-chart"] {
            self.wait_kustomization(client, name, &revision).await;
        }
        let releases: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &self.hello_namespace,
            &flux_resource("HelmRelease"),
        );
        let wanted = format!("ending in {chart}");
        wait_ready_at(
            &releases,
            "HelmRelease",
            "hello",
            "lastAttemptedRevision",
            &wanted,
            |v| v.ends_with(&chart),
        )
        .await;
    }

    /// Removes what the test put in the cluster: the flux namespace (its
    /// Kustomizations' finalizers prune what they applied), and the apps'
    /// namespaces when they carry Flux's labels for this repository's
    /// Kustomizations (in case a suspended one did not prune them).
    pub async fn cleanup(self, client: &Client) {
        use k8s_openapi::api::core::v1::Namespace;
        crate::delete_namespace(client, &self.flux_namespace).await;
        let api: Api<Namespace> = Api::all(client.clone());
        for ns in [&self.podinfo_namespace, &self.hello_namespace] {
            let ours = api.get_opt(ns).await.ok().flatten().is_some_and(|n| {
                n.metadata
                    .labels
                    .unwrap_or_default()
                    .get("kustomize.toolkit.fluxcd.io/namespace")
                    == Some(&self.flux_namespace)
            });
            if ours {
                let _ = api.delete(ns, &DeleteParams::default()).await;
            }
        }
    }

    /// Writes the fleet's files (tests/cluster/fleet) into the working
    /// clone, with this repository's URL and namespaces.
    fn render(&self) {
        let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/fleet");
        for entry in walkdir::WalkDir::new(&fleet) {
            let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", fleet.display()));
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(&fleet).expect("under the fleet");
            let text = std::fs::read_to_string(entry.path())
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()))
                .replace("@GIT_URL@", &self.url)
                .replace("@FLUX_NAMESPACE@", &self.flux_namespace)
                .replace("@PODINFO_NAMESPACE@", &self.podinfo_namespace)
                .replace("@HELLO_NAMESPACE@", &self.hello_namespace);
            let to = self.workdir().join(rel);
            std::fs::create_dir_all(to.parent().expect("a parent")).expect("create dir");
            std::fs::write(&to, text).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        }
    }
}

impl Drop for GitOpsRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}

/// `git -C dir args…` with a fixed author and no user configuration; returns stdout.
fn git_in(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.com")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.com"))
}

/// Waits until a Flux object is Ready and its `status.<field>` satisfies
/// `want` (described as `wanted`).
async fn wait_ready_at(
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    field: &str,
    wanted: &str,
    want: impl Fn(&str) -> bool,
) {
    let what = format!("{kind} {name} Ready with {field} {wanted}");
    eventually(&what, APPLIED, || async {
        let o = api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not there yet".to_string())?;
        let status = &o.data["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        let value = status[field].as_str().unwrap_or_default();
        match ready {
            Some(c) if c["status"] == "True" && want(value) => Ok(()),
            _ => Err(format!(
                "{field} {value:?}, Ready {}",
                ready.map(|c| c.to_string()).unwrap_or_default()
            )),
        }
    })
    .await
}
