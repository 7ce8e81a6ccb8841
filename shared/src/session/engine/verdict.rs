//! What Flux's objects say of the revision a sync pushed, and what the sync
//! does next: pure functions of the OCIRepository, the Kustomization and the
//! HelmRelease, so that the waits in [`super::sync`] and [`super::chart`]
//! only watch and act. Tested on objects recorded from a real Flux (the
//! files in `verdict/`), the way [`super::health`] is tested on pods.

use std::time::Duration;

use crate::flux::{self, HelmRelease, Kustomization, OCIRepository};

/// What an object says of the revision a sync waits for: the wait's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not there yet: keep waiting.
    Wait,
    /// (A Kustomization) applied, its health being checked: the workloads
    /// show this revision now and can be judged.
    Applied,
    /// Done: fetched, or applied and healthy.
    Ready,
    /// Failed, in words. `applied`: the failed revision reached the
    /// cluster (it is what runs now, not the last good one).
    Failed { message: String, applied: bool },
}

impl Step {
    /// The wait is over (ready or failed).
    pub fn is_done(&self) -> bool {
        matches!(self, Step::Ready | Step::Failed { .. })
    }
}

/// What the OCIRepository says of `revision`: [`Step::Ready`] once
/// source-controller fetched it, [`Step::Failed`] when its fetch failed
/// (a `Ready=False` naming it, not merely progressing), with its message.
pub fn source(repo: Option<&OCIRepository>, revision: &str) -> Step {
    let Some(status) = repo.and_then(|r| r.status.as_ref()) else {
        return Step::Wait;
    };
    if status
        .artifact
        .as_ref()
        .is_some_and(|a| a.revision == revision)
    {
        return Step::Ready;
    }
    match flux::condition(&status.conditions, "Ready") {
        Some(c)
            if c.status == "False" && c.reason != "Progressing" && c.message.contains(revision) =>
        {
            Step::Failed {
                message: c.message.clone(),
                applied: false,
            }
        }
        _ => Step::Wait,
    }
}

/// Whether kustomize-controller applied `revision` and is checking (or
/// found) its health: a sign in its current conditions, "Running health
/// checks for revision …" or a `Ready=True` "Applied revision: …"
/// (`lastAttemptedRevision` is set when a reconcile starts, before
/// anything is applied: not a sign; nor an old condition naming a
/// revision pushed again).
pub fn kustomization_applied(ks: Option<&Kustomization>, revision: &str) -> bool {
    let health_checked = format!("Running health checks for revision {revision}");
    let applied = format!("Applied revision: {revision}");
    ks.and_then(|k| k.status.as_ref()).is_some_and(|s| {
        s.conditions.iter().any(|c| {
            (c.type_ == "Reconciling" && c.message.contains(&health_checked))
                || (c.type_ == "Ready" && c.status == "True" && c.message.contains(&applied))
        })
    })
}

/// What the Kustomization says of `revision`: done when it last attempted
/// exactly that revision and its `Ready` is decided (a cancelled health
/// check is the previous revision's), then [`Step::Ready`] or
/// [`Step::Failed`] in words (`applied` when the health check failed);
/// before that [`Step::Applied`] (see [`kustomization_applied`]) or
/// [`Step::Wait`].
pub fn kustomization(ks: Option<&Kustomization>, revision: &str) -> Step {
    let Some(status) = ks.and_then(|k| k.status.as_ref()) else {
        return Step::Wait;
    };
    let ready = flux::condition(&status.conditions, "Ready");
    let done = status.last_attempted_revision.as_deref() == Some(revision)
        && ready.is_some_and(|c| c.status != "Unknown" && c.reason != "HealthCheckCanceled");
    if done {
        return match flux::failure(status) {
            Some(message) => Step::Failed {
                message,
                applied: ready.is_some_and(|c| c.reason == "HealthCheckFailed"),
            },
            None => Step::Ready,
        };
    }
    if kustomization_applied(ks, revision) {
        Step::Applied
    } else {
        Step::Wait
    }
}

/// What the HelmRelease says of chart `version`: done when helm-controller
/// last attempted it (its revision starts with the version) and its
/// `Ready` is decided; a failed release leaves the previous one in place
/// (`applied` is false).
pub fn release(hr: Option<&HelmRelease>, version: &str) -> Step {
    let Some(status) = hr.and_then(|h| h.status.as_ref()) else {
        return Step::Wait;
    };
    let done = status
        .last_attempted_revision
        .as_deref()
        .is_some_and(|r| r.starts_with(version))
        && flux::condition(&status.conditions, "Ready").is_some_and(|c| c.status != "Unknown");
    if !done {
        return Step::Wait;
    }
    match flux::helm_failure(status) {
        Some(message) => Step::Failed {
            message,
            applied: false,
        },
        None => Step::Ready,
    }
}

/// Who judges a revision's health: settled once the workloads' watch knows
/// the revision's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// The watch can judge every object: it says "healthy" as soon as they
    /// are, before Flux's next health poll.
    Watch,
    /// Some object is beyond it: Flux's `Ready` decides alone.
    Flux,
}

/// How long, once Flux gave its verdict (`flux`), the workloads' watch
/// gets to say the same and show the rollouts: none after a failure or
/// when the watch does not judge (`judge`: `None` while not known yet).
pub fn grace(flux: &Step, judge: Option<Judge>) -> Duration {
    if matches!(flux, Step::Failed { .. }) || judge == Some(Judge::Flux) {
        Duration::ZERO
    } else {
        Duration::from_millis(1500)
    }
}

/// The words of a rollout that cannot succeed (the watch saw it before
/// Flux's health check; the revision is applied).
pub fn rollout_failure(failure: &str) -> String {
    format!("the rollout cannot succeed: {failure}")
}

/// The words of a workload that failed for certain after its sync ended
/// healthy.
pub fn failed_after_sync(failure: &str) -> String {
    format!("healthy at first, then failed: {failure}")
}

/// The words of a health check that timed out, with why the pods are not
/// ready (kustomize-controller waits at least 30 s, whatever `timeout` says).
pub fn unhealthy_in_time(why: &str, timeout: Duration) -> String {
    format!(
        "applied, but the workloads did not become healthy within Flux's health check timeout \
         ({}s): {why}",
        timeout.as_secs().max(30)
    )
}

#[cfg(test)]
mod tests;
