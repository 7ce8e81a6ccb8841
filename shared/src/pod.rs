//! Whether a pod is ready, read once from its status ([`Readiness::of`]).
//!
//! Callers ask one of two questions of the answer, and say which:
//! - **can it take traffic now** ([`Readiness::serving`]): its `Ready`
//!   condition is `True` and it is not being deleted, the pods a Service
//!   routes to. Port-forward picks such a pod: a terminating one is about
//!   to go, and one that ran to completion listens on nothing.
//! - **has it got where it should** ([`Readiness::settled`]): kstatus'
//!   rule, which Flux's health check applies to a Pod: `Ready`, or its
//!   containers ran to completion (`Succeeded`); a pod being deleted is
//!   neither (kstatus calls it Terminating). A sync's health and the page's
//!   objects tree ask this.

use crate::workloads::Pod;

/// Where a pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Being deleted (a deletion timestamp), whatever its conditions say.
    Terminating,
    /// Its `Ready` condition is `True`.
    Ready,
    /// Phase `Succeeded`: every container ran to completion.
    Completed,
    /// Anything else: not ready (yet), or failed.
    NotReady,
}

impl Readiness {
    /// Reads a pod's status.
    pub fn of(pod: &Pod) -> Readiness {
        let status = pod.status.as_ref();
        if pod.metadata.deletion_timestamp.is_some() {
            Readiness::Terminating
        } else if status.and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            Readiness::Completed
        } else if status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        {
            Readiness::Ready
        } else {
            Readiness::NotReady
        }
    }

    /// It can take traffic now (see the module's documentation).
    pub fn serving(self) -> bool {
        self == Readiness::Ready
    }

    /// It got where it should: ready, or ran to completion (see the
    /// module's documentation).
    pub fn settled(self) -> bool {
        matches!(self, Readiness::Ready | Readiness::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: Option<&str>, deleting: bool) -> Pod {
        let mut conditions = vec![serde_json::json!({"type": "PodScheduled", "status": "True"})];
        if let Some(r) = ready {
            conditions.push(serde_json::json!({"type": "Ready", "status": r}));
        }
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": phase, "conditions": conditions},
        }))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                ));
        }
        p
    }

    /// One row per pod state: what it reads as, whether it can take
    /// traffic (port-forward), whether it got where it should (health, page).
    #[test]
    fn readiness_and_the_two_questions_asked_of_it() {
        use Readiness::*;
        let rows = [
            (
                "running, ready",
                pod("Running", Some("True"), false),
                Ready,
                true,
                true,
            ),
            (
                "running, not ready",
                pod("Running", Some("False"), false),
                NotReady,
                false,
                false,
            ),
            (
                "running, no Ready condition yet",
                pod("Running", None, false),
                NotReady,
                false,
                false,
            ),
            (
                "pending",
                pod("Pending", None, false),
                NotReady,
                false,
                false,
            ),
            // The kubelet sets Ready False (PodCompleted) once it finished.
            (
                "succeeded",
                pod("Succeeded", Some("False"), false),
                Completed,
                false,
                true,
            ),
            (
                "failed",
                pod("Failed", Some("False"), false),
                NotReady,
                false,
                false,
            ),
            (
                "ready but terminating",
                pod("Running", Some("True"), true),
                Terminating,
                false,
                false,
            ),
            (
                "succeeded and terminating",
                pod("Succeeded", Some("False"), true),
                Terminating,
                false,
                false,
            ),
        ];
        for (what, p, readiness, serving, settled) in rows {
            let r = Readiness::of(&p);
            assert_eq!(r, readiness, "{what}");
            assert_eq!(r.serving(), serving, "{what}: serving");
            assert_eq!(r.settled(), settled, "{what}: settled");
        }
        assert_eq!(Readiness::of(&Pod::default()), NotReady);
    }
}
