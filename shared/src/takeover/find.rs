//! Which Flux Kustomization deploys a directory of a Git work tree: one
//! whose `sourceRef` is a `GitRepository` whose URL names the same
//! repository as one of the work tree's remotes ([`super::remote`]), and
//! whose `spec.path` is the directory's path from the repository's root.
//! The suite's own Kustomizations (sessions) are never candidates.

use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

use super::remote;
use super::{AppKind, TakeoverError};
use crate::flux::{GitRepository, Kustomization};

/// A Flux Kustomization or HelmRelease that deploys a directory from Git:
/// the app a session can take over.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub kind: AppKind,
    pub namespace: String,
    pub name: String,
    /// Its source, as said in output: `GitRepository flux-system/flux-system@main`.
    pub source: String,
    /// Its `spec.path`, from the repository's root (`""` for the root).
    pub path: String,
    /// Its spec as read (the session's replacement takes its settings).
    pub spec: serde_json::Value,
    /// What it had applied when read: the objects the session then
    /// updates in place rather than creates.
    pub inventory: Vec<crate::flux::InventoryEntry>,
}

impl App {
    /// `Kustomization flux-system/podinfo`.
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    /// Its spec, typed as `T` (a Kustomization's or a HelmRelease's).
    pub fn spec_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, TakeoverError> {
        serde_json::from_value(self.spec.clone()).map_err(|e| TakeoverError::Spec {
            app: self.id(),
            message: e.to_string(),
        })
    }

    /// A field of its spec that both kinds have (`targetNamespace`,
    /// `serviceAccountName`).
    pub fn spec_str(&self, field: &str) -> Option<String> {
        self.spec[field].as_str().map(str::to_string)
    }

    /// What was found, in a sentence: `apps/podinfo is deployed by
    /// Kustomization flux-system/podinfo from GitRepository flux-system/flux-system@main`.
    pub fn describe(&self) -> String {
        let dir = if self.path.is_empty() {
            "."
        } else {
            &self.path
        };
        format!("{dir} is deployed by {} from {}", self.id(), self.source)
    }

    fn of(ks: &Kustomization, repo: Option<&GitRepository>) -> App {
        let namespace = ks.namespace().unwrap_or_default();
        let r = &ks.spec.source_ref;
        let source_ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
        App {
            kind: AppKind::Kustomization,
            name: ks.name_any(),
            source: source_label(&r.kind, &source_ns, &r.name, repo),
            path: repo_path(ks.spec.path.as_deref()),
            // A spec the API server sent serialises back without fail.
            spec: serde_json::to_value(&ks.spec).unwrap_or_default(),
            inventory: ks
                .status
                .as_ref()
                .and_then(|s| s.inventory.as_ref())
                .map(|i| i.entries.clone())
                .unwrap_or_default(),
            namespace,
        }
    }
}

/// A HelmRelease's chart source: `spec.chart.spec` (`sourceRef`, `chart`).
fn chart_source(hr: &DynamicObject) -> Option<(String, String, Option<String>, String)> {
    let c = &hr.data["spec"]["chart"]["spec"];
    let r = &c["sourceRef"];
    Some((
        r["kind"].as_str()?.to_string(),
        r["name"].as_str()?.to_string(),
        r["namespace"].as_str().map(str::to_string),
        c["chart"].as_str()?.to_string(),
    ))
}

/// A source as said in output: `GitRepository flux-system/flux-system@main`
/// (the ref only when the GitRepository was read).
fn source_label(kind: &str, namespace: &str, name: &str, repo: Option<&GitRepository>) -> String {
    let reference = repo
        .and_then(|g| g.spec.reference.as_ref())
        .map(|r| format!("@{}", r.display()))
        .unwrap_or_default();
    format!("{kind} {namespace}/{name}{reference}")
}

fn release_app(hr: &DynamicObject, repo: Option<&GitRepository>) -> Option<App> {
    let (kind, name, ns, chart) = chart_source(hr)?;
    let namespace = hr.namespace().unwrap_or_default();
    let source_ns = ns.unwrap_or_else(|| namespace.clone());
    Some(App {
        kind: AppKind::HelmRelease,
        name: hr.name_any(),
        source: source_label(&kind, &source_ns, &name, repo),
        path: repo_path(Some(&chart)),
        spec: hr.data["spec"].clone(),
        inventory: Vec::new(),
        namespace,
    })
}

/// A Kustomization's `spec.path` (or a directory's path in its work tree)
/// as compared: `./apps/podinfo/`, `apps/podinfo` and `/apps/podinfo` are
/// `apps/podinfo`; the root is `""`.
pub fn repo_path(path: Option<&str>) -> String {
    let p = path.unwrap_or_default().replace('\\', "/");
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// The Kustomizations (of `kss`, sourced from `repos`) that deploy
/// `prefix` (the directory's path from the work tree's top level) of the
/// repository one of `remotes` names. Pure.
pub fn matching(
    remotes: &[String],
    prefix: &str,
    repos: &[GitRepository],
    kss: &[Kustomization],
    releases: &[DynamicObject],
) -> Vec<App> {
    let prefix = repo_path(Some(prefix));
    let ours = |r: &GitRepository| {
        remotes
            .iter()
            .any(|u| remote::same_repository(u, &r.spec.url))
    };
    let mut found: Vec<App> = kss
        .iter()
        .filter(|ks| {
            !crate::labels::is_managed(ks.metadata.labels.as_ref())
                && ks.metadata.deletion_timestamp.is_none()
        })
        .filter(|ks| ks.spec.source_ref.kind == "GitRepository")
        .filter(|ks| repo_path(ks.spec.path.as_deref()) == prefix)
        .filter_map(|ks| {
            let ns = ks.namespace().unwrap_or_default();
            let r = &ks.spec.source_ref;
            let source_ns = r.namespace.as_deref().unwrap_or(&ns);
            let repo = repos
                .iter()
                .find(|g| g.name_any() == r.name && g.namespace().as_deref() == Some(source_ns))?;
            ours(repo).then(|| App::of(ks, Some(repo)))
        })
        .collect();
    found.extend(
        releases
            .iter()
            .filter(|hr| !crate::labels::is_managed(hr.metadata.labels.as_ref()))
            .filter(|hr| hr.metadata.deletion_timestamp.is_none())
            .filter_map(|hr| {
                let (kind, name, ns, chart) = chart_source(hr)?;
                let own_ns = hr.namespace().unwrap_or_default();
                let source_ns = ns.unwrap_or(own_ns);
                if kind != "GitRepository" || repo_path(Some(&chart)) != prefix {
                    return None;
                }
                let repo = repos.iter().find(|g| {
                    g.name_any() == name && g.namespace().as_deref() == Some(source_ns.as_str())
                })?;
                ours(repo).then(|| release_app(hr, Some(repo)))?
            }),
    );
    found.sort_by(|a, b| {
        (a.kind.as_str(), &a.namespace, &a.name).cmp(&(b.kind.as_str(), &b.namespace, &b.name))
    });
    found
}

/// Lists the cluster's GitRepositories and Kustomizations and returns those
/// that deploy `prefix` of the work tree whose remotes are `remotes`. A
/// cluster without Flux's Git source, or where the user may not list them
/// across namespaces, has none to offer.
pub async fn find(
    client: &Client,
    remotes: &[String],
    prefix: &str,
) -> Result<Vec<App>, TakeoverError> {
    if remotes.is_empty() {
        return Ok(Vec::new());
    }
    let repos: Api<GitRepository> = Api::all(client.clone());
    let repos = match repos.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if crate::kubeapi::is_status(&e, &[403, 404]) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if repos.is_empty() {
        return Ok(Vec::new());
    }
    let kss: Api<Kustomization> = Api::all(client.clone());
    let kss = match kss.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if crate::kubeapi::is_status(&e, &[403, 404]) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let hrs: Api<DynamicObject> = Api::all_with(client.clone(), &AppKind::HelmRelease.resource());
    let hrs = match hrs.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if crate::kubeapi::is_status(&e, &[403, 404]) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(matching(remotes, prefix, &repos, &kss, &hrs))
}

/// The Flux Kustomizations that deploy `dir` from its Git work tree's
/// repository (none outside a work tree or without remotes).
pub async fn for_dir(
    client: &Client,
    dir: &std::path::Path,
) -> Result<(Vec<App>, Vec<String>), TakeoverError> {
    let Some(info) = crate::git::GitInfo::for_dir(dir) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let remotes = crate::git::remotes(dir);
    Ok((find(client, &remotes, &info.prefix).await?, remotes))
}

/// The app named `[KIND/]NAMESPACE/NAME` (`--take-over`): a Flux
/// Kustomization (the default kind; any source) or a HelmRelease
/// (`helmrelease/NAMESPACE/NAME`, its chart from any source) the suite did
/// not make.
pub async fn named(client: &Client, id: &str) -> Result<App, TakeoverError> {
    let parts: Vec<&str> = id.split('/').collect();
    let (kind, ns, name) = match parts.as_slice() {
        [ns, name] => (AppKind::Kustomization, *ns, *name),
        [k, ns, name] if k.eq_ignore_ascii_case("kustomization") => {
            (AppKind::Kustomization, *ns, *name)
        }
        [k, ns, name] if k.eq_ignore_ascii_case("helmrelease") => {
            (AppKind::HelmRelease, *ns, *name)
        }
        _ => return Err(TakeoverError::BadName(id.to_string())),
    };
    if ns.is_empty() || name.is_empty() {
        return Err(TakeoverError::BadName(id.to_string()));
    }
    let not_found = || TakeoverError::NotFound(format!("{} {ns}/{name}", kind.as_str()));
    let repo_of = |kind: &str, name: &str, ns: &str| {
        let (kind, name, ns) = (kind.to_string(), name.to_string(), ns.to_string());
        async move {
            if kind != "GitRepository" {
                return None;
            }
            let repos: Api<GitRepository> = Api::namespaced(client.clone(), &ns);
            repos.get_opt(&name).await.ok().flatten()
        }
    };
    match kind {
        AppKind::Kustomization => {
            let kss: Api<Kustomization> = Api::namespaced(client.clone(), ns);
            let ks = kss
                .get_opt(name)
                .await?
                .filter(|ks| !crate::labels::is_managed(ks.metadata.labels.as_ref()))
                .ok_or_else(not_found)?;
            let r = &ks.spec.source_ref;
            let repo = repo_of(&r.kind, &r.name, r.namespace.as_deref().unwrap_or(ns)).await;
            Ok(App::of(&ks, repo.as_ref()))
        }
        AppKind::HelmRelease => {
            let hrs: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &AppKind::HelmRelease.resource());
            let hr = hrs
                .get_opt(name)
                .await?
                .filter(|hr| !crate::labels::is_managed(hr.metadata.labels.as_ref()))
                .ok_or_else(not_found)?;
            let (k, n, source_ns, _) = chart_source(&hr).ok_or_else(|| TakeoverError::Spec {
                app: format!("HelmRelease {ns}/{name}"),
                message: "no spec.chart.spec (a chartRef is not taken over)".into(),
            })?;
            let repo = repo_of(&k, &n, source_ns.as_deref().unwrap_or(ns)).await;
            release_app(&hr, repo.as_ref()).ok_or_else(not_found)
        }
    }
}

/// Picks the one app to take over: refused when there is none or more than one.
pub fn one(found: Vec<App>, dir: &str, remotes: &[String]) -> Result<App, TakeoverError> {
    let mut found = found;
    match found.len() {
        0 => Err(TakeoverError::NoMatch {
            dir: dir.to_string(),
            remotes: if remotes.is_empty() {
                "none".into()
            } else {
                remotes.join(", ")
            },
        }),
        1 => Ok(found.remove(0)),
        _ => Err(TakeoverError::Ambiguous {
            dir: dir.to_string(),
            apps: found
                .iter()
                .map(|a| match a.kind {
                    AppKind::Kustomization => format!("{}/{}", a.namespace, a.name),
                    AppKind::HelmRelease => format!("helmrelease/{}/{}", a.namespace, a.name),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(ns: &str, name: &str, url: &str) -> GitRepository {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1m"},
        }))
        .unwrap()
    }

    fn ks(ns: &str, name: &str, path: &str, source: serde_json::Value) -> Kustomization {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"interval": "1m", "prune": true, "path": path, "sourceRef": source},
        }))
        .unwrap()
    }

    #[test]
    fn the_kustomization_of_the_directory_from_this_repository_is_found() {
        let repos = [
            repo(
                "flux-system",
                "flux-system",
                "ssh://git@github.com/acme/fleet",
            ),
            repo("flux-system", "other", "https://github.com/acme/other.git"),
            repo("team", "fleet", "https://github.com/acme/fleet.git"),
        ];
        let git = serde_json::json!({"kind": "GitRepository", "name": "flux-system"});
        let kss = [
            ks("flux-system", "podinfo", "./apps/podinfo", git.clone()),
            // Another path of the same repository.
            ks("flux-system", "redis", "./apps/redis", git.clone()),
            // The same path of another repository.
            ks(
                "flux-system",
                "podinfo-other",
                "apps/podinfo",
                serde_json::json!({"kind": "GitRepository", "name": "other"}),
            ),
            // The same repository through a source in another namespace.
            ks(
                "team",
                "podinfo",
                "apps/podinfo/",
                serde_json::json!({"kind": "GitRepository", "name": "fleet"}),
            ),
            // Same path, but an OCI source.
            ks(
                "flux-system",
                "podinfo-oci",
                "./apps/podinfo",
                serde_json::json!({"kind": "OCIRepository", "name": "flux-system"}),
            ),
            // A source that does not exist.
            ks(
                "flux-system",
                "ghost",
                "./apps/podinfo",
                serde_json::json!({"kind": "GitRepository", "name": "ghost"}),
            ),
        ];
        let remotes = ["git@github.com:acme/fleet.git".to_string()];
        let found = matching(&remotes, "apps/podinfo", &repos, &kss, &[]);
        let ids: Vec<String> = found.iter().map(App::id).collect();
        assert_eq!(
            ids,
            [
                "Kustomization flux-system/podinfo",
                "Kustomization team/podinfo"
            ]
        );
        assert_eq!(
            found[0].describe(),
            "apps/podinfo is deployed by Kustomization flux-system/podinfo from GitRepository flux-system/flux-system@main"
        );
        assert!(one(found.clone(), "apps/podinfo", &remotes).is_err());
        // No remote of this repository: nothing.
        assert!(
            matching(
                &["https://github.com/acme/app".into()],
                "apps/podinfo",
                &repos,
                &kss,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_suites_own_kustomizations_are_never_candidates() {
        let repos = [repo("default", "fleet", "https://example.com/fleet")];
        let mut own = ks(
            "default",
            "run-x",
            "./",
            serde_json::json!({"kind": "GitRepository", "name": "fleet"}),
        );
        own.metadata.labels = Some(crate::labels::managed("session"));
        let theirs = ks(
            "default",
            "root",
            ".",
            serde_json::json!({"kind": "GitRepository", "name": "fleet"}),
        );
        let found = matching(
            &["https://example.com/fleet.git".into()],
            "",
            &repos,
            &[own, theirs],
            &[],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "root");
        assert_eq!(
            found[0].describe(),
            ". is deployed by Kustomization default/root from GitRepository default/fleet@main"
        );
    }

    #[test]
    fn the_helm_release_whose_chart_is_the_directory_is_found() {
        let repos = [repo(
            "flux-system",
            "flux-system",
            "https://git.example/fleet.git",
        )];
        let hr = |ns: &str, name: &str, chart: &str, source: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"namespace": ns, "name": name},
                "spec": {"interval": "10m", "values": {"greeting": "hi"},
                         "chart": {"spec": {"chart": chart, "sourceRef": source}}},
            }))
            .unwrap()
        };
        let git = serde_json::json!({"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"});
        let releases = [
            hr("hello", "hello", "./charts/hello", git.clone()),
            hr("hello", "other", "./charts/other", git.clone()),
            // A chart from a Helm repository of the same name.
            hr(
                "hello",
                "repo",
                "hello",
                serde_json::json!({"kind": "HelmRepository", "name": "charts"}),
            ),
        ];
        let found = matching(
            &["git@git.example:fleet.git".into()],
            "charts/hello",
            &repos,
            &[],
            &releases,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, AppKind::HelmRelease);
        assert_eq!(
            found[0].describe(),
            "charts/hello is deployed by HelmRelease hello/hello from GitRepository flux-system/flux-system@main"
        );
        assert_eq!(found[0].spec["values"]["greeting"], "hi");
    }

    #[test]
    fn paths_compare_however_they_are_spelled() {
        for p in [
            "./apps/podinfo",
            "apps/podinfo/",
            "/apps/podinfo",
            "apps//podinfo",
            "apps\\podinfo",
            "./apps/./podinfo",
        ] {
            assert_eq!(repo_path(Some(p)), "apps/podinfo", "{p}");
        }
        for root in [None, Some(""), Some("."), Some("./"), Some("/")] {
            assert_eq!(repo_path(root), "");
        }
    }
}
