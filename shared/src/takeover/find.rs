//! Which Flux Kustomization deploys a directory of a Git work tree: one
//! whose `sourceRef` is a `GitRepository` whose URL names the same
//! repository as one of the work tree's remotes ([`super::remote`]), and
//! whose `spec.path` is the directory's path from the repository's root.
//! The suite's own Kustomizations (sessions) are never candidates.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::TakeoverError;
use super::remote;
use crate::flux::{GitRepository, Kustomization, KustomizationSpec};

/// A Flux Kustomization that deploys a directory from Git: the app a
/// session can take over.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub namespace: String,
    pub name: String,
    /// Its source, as said in output: `GitRepository flux-system/flux-system@main`.
    pub source: String,
    /// Its `spec.path`, from the repository's root (`""` for the root).
    pub path: String,
    /// Its spec as read (the session's replacement takes its settings).
    pub spec: KustomizationSpec,
    /// What it had applied when read: the objects the session then
    /// updates in place rather than creates.
    pub inventory: Vec<crate::flux::InventoryEntry>,
}

impl App {
    /// `Kustomization flux-system/podinfo`.
    pub fn id(&self) -> String {
        format!("Kustomization {}/{}", self.namespace, self.name)
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
        let reference = repo
            .and_then(|g| g.spec.reference.as_ref())
            .map(|r| format!("@{}", r.display()))
            .unwrap_or_default();
        App {
            name: ks.name_any(),
            source: format!("{} {source_ns}/{}{reference}", r.kind, r.name),
            path: repo_path(ks.spec.path.as_deref()),
            spec: ks.spec.clone(),
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
    found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
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
        Err(e) if crate::kubeapi::is_status(&e, &[403, 404]) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(matching(remotes, prefix, &repos, &kss))
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

/// The Kustomization named `NAMESPACE/NAME` (`--take-over NAMESPACE/NAME`):
/// any Flux Kustomization the suite did not make, whatever its source.
pub async fn named(client: &Client, id: &str) -> Result<App, TakeoverError> {
    let (ns, name) = id
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| TakeoverError::BadName(id.to_string()))?;
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    let ks = kss
        .get_opt(name)
        .await?
        .filter(|ks| !crate::labels::is_managed(ks.metadata.labels.as_ref()))
        .ok_or_else(|| TakeoverError::NotFound(format!("Kustomization {ns}/{name}")))?;
    let repo = if ks.spec.source_ref.kind == "GitRepository" {
        let r = &ks.spec.source_ref;
        let repos: Api<GitRepository> =
            Api::namespaced(client.clone(), r.namespace.as_deref().unwrap_or(ns));
        repos.get_opt(&r.name).await.ok().flatten()
    } else {
        None
    };
    Ok(App::of(&ks, repo.as_ref()))
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
                .map(|a| format!("{}/{}", a.namespace, a.name))
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
        let found = matching(&remotes, "apps/podinfo", &repos, &kss);
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
                &kss
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
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "root");
        assert_eq!(
            found[0].describe(),
            ". is deployed by Kustomization default/root from GitRepository default/fleet@main"
        );
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
