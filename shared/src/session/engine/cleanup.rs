//! Removing a session: the applier first (Flux's pruning awaited), then the
//! source, Secrets, the sandbox the session made and the Lease. Only objects
//! labelled with the session are touched.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::{Client, ResourceExt};

use super::{EngineError, Event, Kind, OwnSandbox, Session, Stage};
use crate::flux::{self, Kustomization, OCIRepository};
use crate::kubeapi;
use crate::labels;
use crate::sandbox;
use crate::session::record::ownership::{SandboxMaker, sandbox_made_by};
use crate::takeover;

pub use crate::session::record::ownership::owned_by;

/// Removes a session's objects in the safe order: the HelmRelease or
/// Kustomization first, with Flux's uninstall/pruning awaited; then the
/// source, Secrets, the ephemeral sandbox and the Lease. Only objects
/// labelled with the session are touched, and the sandbox only when its
/// record says this session (Lease `namespace`/`session`, run by `owner`)
/// made it.
pub async fn cleanup(
    client: &Client,
    namespace: &str,
    session: &str,
    ephemeral_sandbox: Option<&str>,
    owner: &str,
    timeout: Duration,
) -> Result<Vec<String>, EngineError> {
    cleanup_and_hand_back(
        client,
        namespace,
        session,
        ephemeral_sandbox,
        owner,
        timeout,
    )
    .await
    .map(|(removed, _)| removed)
}

/// [`cleanup`], and the apps the session had taken over, back in GitOps
/// mode: a session that took over an app (see [`crate::takeover`]) leaves
/// what it applied to the original (its Kustomization orphans it), resumes
/// the original, waits until Flux reports Git's revision applied, and then
/// removes what it added that Git does not have.
pub async fn cleanup_and_hand_back(
    client: &Client,
    namespace: &str,
    session: &str,
    ephemeral_sandbox: Option<&str>,
    owner: &str,
    timeout: Duration,
) -> Result<(Vec<String>, Vec<takeover::handback::BackInGitOps>), EngineError> {
    crate::session::validate_name(session)?;
    let mut removed = Vec::new();
    let mut back = Vec::new();
    let started = tokio::time::Instant::now();
    let left = || timeout.saturating_sub(started.elapsed());
    let holder = format!("{namespace}/{session}");
    let originals = takeover::claim::held_by(client, namespace, &holder).await?;
    // What the session applied stays, for the original to take back.
    let applied = if originals.is_empty() {
        Vec::new()
    } else {
        takeover::handback::release_replacement(client, namespace, session).await?
    };
    // A chart session: uninstalling the release (deleting the HelmRelease,
    // awaited) comes first.
    let releases: Api<flux::HelmRelease> = Api::namespaced(client.clone(), namespace);
    if flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await?
        && let Some(hr) = releases.get_opt(session).await?
        && owned_by(&hr.metadata, session)
    {
        let what = format!(
            "helm-controller to uninstall HelmRelease {namespace}/{session} (is it running?)"
        );
        kubeapi::delete_and_await(&releases, session, left(), what).await?;
        if originals.is_empty() {
            removed.push(format!("helmrelease/{session} (release uninstalled)"));
        } else {
            removed.push(format!(
                "helmrelease/{session} (its release is handed back to Flux's own)"
            ));
        }
    }
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), namespace);
    if let Some(ks) = kss.get_opt(session).await?
        && owned_by(&ks.metadata, session)
    {
        let pruned = crate::flux::applied_objects(&ks);
        let what = format!(
            "kustomize-controller to prune what Kustomization {namespace}/{session} applied (is it running?)"
        );
        kubeapi::delete_and_await(&kss, session, left(), what).await?;
        if originals.is_empty() {
            removed.extend(pruned.into_iter().map(|p| format!("{p} (pruned by Flux)")));
            removed.push(format!("kustomization/{session}"));
        } else {
            removed.push(format!(
                "kustomization/{session} (what it applied is handed back to Flux's own)"
            ));
        }
    }
    for original in &originals {
        let (kind, name) = (original.kind, original.name.clone());
        let Some(request) =
            takeover::claim::hand_back(client, kind, namespace, &name, &holder).await?
        else {
            continue;
        };
        let app = original.id();
        match takeover::handback::await_gitops(client, kind, namespace, &name, &request, left())
            .await
        {
            Ok(b) => {
                if kind == takeover::AppKind::Kustomization
                    && let Some(now) = kss.get_opt(&name).await?
                {
                    removed.extend(
                        takeover::handback::remove_added(
                            client, &applied, &now, namespace, session,
                        )
                        .await?,
                    );
                }
                removed.push(format!("the takeover of {app} ({})", b.describe()));
                back.push(b);
            }
            // Resumed; Flux goes on with it. What the session added is left
            // (the original's inventory is not known yet): said.
            Err(e @ takeover::TakeoverError::NotBack { .. }) => {
                removed.push(format!("the takeover of {app} (resumed, but: {e})"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), namespace);
    if let Some(repo) = repos.get_opt(session).await?
        && owned_by(&repo.metadata, session)
        && kubeapi::delete(&repos, session).await?
    {
        removed.push(format!("ocirepository/{session}"));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!(
        "{},{}={session}",
        labels::managed_selector(),
        labels::SESSION
    ));
    // Names only: metadata, not the Secrets' values.
    for secret in secrets.list_metadata(&selector).await? {
        if kubeapi::delete(&secrets, &secret.name_any()).await? {
            removed.push(format!("secret/{}", secret.name_any()));
        }
    }
    // The sandbox before the Lease (which may live in it): a session of the
    // same name starting meanwhile sees it terminating and waits for it.
    let maker = SandboxMaker {
        namespace,
        session,
        owner,
    };
    if let Some(sb) = ephemeral_sandbox
        && sandbox::namespace(client, sb)
            .await?
            .is_some_and(|ns| sandbox_made_by(&ns.metadata, &maker))
    {
        let opts = sandbox::DeleteOptions {
            wait: false,
            timeout: left(),
        };
        if let sandbox::Deleted::Removed(_) = sandbox::delete(client, sb, &opts).await? {
            removed.push(format!("sandbox/{sb} (namespace {sb})"));
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    if let Some(lease) = leases.get_opt(session).await?
        && owned_by(&lease.metadata, session)
        && kubeapi::delete(&leases, session).await?
    {
        removed.push(format!("lease/{session}"));
    }
    Ok((removed, back))
}

/// Whether any of a session's Flux objects (its applier or its source)
/// still exists and is not being deleted.
pub async fn remains(client: &Client, namespace: &str, session: &str) -> Result<bool, EngineError> {
    let alive = |meta: &ObjectMeta| owned_by(meta, session) && meta.deletion_timestamp.is_none();
    let kss: Api<Kustomization> = Api::namespaced(client.clone(), namespace);
    if kss
        .get_opt(session)
        .await?
        .is_some_and(|o| alive(&o.metadata))
    {
        return Ok(true);
    }
    let repos: Api<OCIRepository> = Api::namespaced(client.clone(), namespace);
    if repos
        .get_opt(session)
        .await?
        .is_some_and(|o| alive(&o.metadata))
    {
        return Ok(true);
    }
    if flux::serves(client, "helm.toolkit.fluxcd.io/v2", "HelmRelease").await? {
        let releases: Api<flux::HelmRelease> = Api::namespaced(client.clone(), namespace);
        if releases
            .get_opt(session)
            .await?
            .is_some_and(|o| alive(&o.metadata))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Session {
    pub(super) fn stop_heartbeat(&mut self) {
        self.lease.stop_renewing();
    }

    /// Stops the heartbeat and removes what the session created. A session
    /// that never got to apply anything has nothing in the cluster.
    pub async fn cleanup(&mut self, timeout: Duration) -> Result<Vec<String>, EngineError> {
        self.stop_heartbeat();
        let removed = if self.stage != Stage::Prepared || self.own_sandbox == OwnSandbox::Made {
            let sandbox = (self.own_sandbox == OwnSandbox::Made).then_some(self.cfg.name.as_str());
            let (removed, back) = cleanup_and_hand_back(
                &self.client,
                &self.namespace,
                &self.cfg.name,
                sandbox,
                &self.cfg.owner,
                timeout,
            )
            .await?;
            for b in &back {
                self.say_back_in_gitops(b);
            }
            removed
        } else {
            Vec::new()
        };
        self.stage = Stage::Prepared;
        (self.report)(&Event::Cleaned {
            removed: removed.clone(),
        });
        Ok(removed)
    }

    /// Says that an app is back in GitOps mode, and, when the working copy
    /// under the synced directory holds what that commit does not
    /// (uncommitted, or committed and not pushed), that the cluster went
    /// back to Git's commit without it.
    fn say_back_in_gitops(&self, back: &takeover::handback::BackInGitOps) {
        (self.report)(&Event::Message {
            message: back.describe(),
        });
        let dir = self.dir();
        let Some(commit) = back.commit() else {
            return;
        };
        let short = &commit[..commit.len().min(7)];
        match crate::git::divergence(&dir, commit) {
            Some(d) if d.uncommitted || d.unpushed => {
                let what = match (d.uncommitted, d.unpushed) {
                    (true, true) => "uncommitted changes and commits not pushed",
                    (true, false) => "uncommitted changes",
                    _ => "commits not pushed",
                };
                (self.report)(&Event::Warning {
                    message: format!(
                        "the cluster went back to {short}, the commit Flux holds; your {what} \
                         under {} are not in Git, so they are no longer applied",
                        dir.display()
                    ),
                });
            }
            Some(_) => {}
            None => (self.report)(&Event::Warning {
                message: format!(
                    "the cluster went back to {short}, a commit this work tree has not fetched: \
                     `git pull` to see what Flux applies"
                ),
            }),
        }
    }

    /// Stops the heartbeat and leaves everything in place (`--keep`). The
    /// Lease is released (no holder), so the session shows as not running.
    pub async fn detach(&mut self) {
        self.stop_heartbeat();
        if self.stage == Stage::Prepared {
            return;
        }
        self.lease.release().await;
    }

    /// What is left in the cluster if the session stops without cleanup.
    pub fn leftovers(&self) -> Vec<String> {
        if self.stage == Stage::Prepared && self.own_sandbox != OwnSandbox::Made {
            return Vec::new();
        }
        let n = &self.cfg.name;
        let mut left = vec![
            format!(
                "{}/{n}",
                if self.kind == Kind::Chart {
                    "helmrelease"
                } else {
                    "kustomization"
                }
            ),
            format!("ocirepository/{n}"),
            format!("lease/{n}"),
        ];
        if self.own_sandbox == OwnSandbox::Made {
            left.push(format!("sandbox/{n}"));
        }
        left.into_iter()
            .map(|o| format!("{}/{o}", self.namespace))
            .collect()
    }
}

#[cfg(test)]
mod tests;
