//! What a session reports as it happens: the events behind its console
//! lines and, one JSON object per line, its `-o json` output. The JSON form
//! is a public interface (see the snapshot test): add fields, never rename.

use std::sync::Arc;

use serde::Serialize;

pub use super::changes::{Action, Change};

pub use crate::session::record::Mode;

/// A phase of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Validate,
    Build,
    Push,
    Fetch,
    Apply,
}

impl Phase {
    /// Its name in the JSON output and the Lease's `sync-history`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Build => "build",
            Phase::Push => "push",
            Phase::Fetch => "fetch",
            Phase::Apply => "apply",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Validate => "validate",
            Phase::Build => "build",
            Phase::Push => "push",
            Phase::Fetch => "fetched by Flux",
            Phase::Apply => "applied and healthy",
        }
    }
}

/// What a session reports, as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        session: String,
        namespace: String,
        mode: Mode,
        sandbox: Option<String>,
        registry: String,
        root: String,
        path: String,
    },
    PhaseStarted {
        phase: Phase,
    },
    PhaseDone {
        phase: Phase,
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Synced {
        revision: String,
        changes: Vec<Change>,
        elapsed_ms: u64,
    },
    Unchanged {
        digest: String,
    },
    Failed {
        phase: Phase,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// The revision still applied and healthy, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_good: Option<String>,
    },
    /// A workload's rollout while Flux health-checks the sync (sent when it
    /// changes): `ready` of `desired` replicas, `done` once rolled out.
    Rollout {
        object: String,
        ready: i32,
        desired: i32,
        done: bool,
    },
    /// A line a container of the session printed (`--logs`).
    Log {
        pod: String,
        container: String,
        line: String,
    },
    /// A save arrived while Flux was still applying the previous one: that
    /// wait is abandoned and the newer save is synced.
    Superseded,
    Warning {
        message: String,
    },
    /// A line for the user (watching, stopping, kept, …).
    Message {
        message: String,
    },
    Cleaned {
        removed: Vec<String>,
    },
}

/// Receives a session's events.
pub type Reporter = Arc<dyn Fn(&Event) + Send + Sync>;

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Ready { revision: String },
    Unchanged,
    Failed { phase: Phase, message: String },
}

impl SyncOutcome {
    /// A failure the loop retries with backoff even without a change (the
    /// registry was unreachable).
    pub fn needs_retry(&self) -> bool {
        matches!(
            self,
            SyncOutcome::Failed {
                phase: Phase::Push,
                ..
            }
        )
    }

    /// Whether what the directory holds is applied and healthy.
    pub fn is_ready(&self) -> bool {
        matches!(self, SyncOutcome::Ready { .. } | SyncOutcome::Unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `-o json` protocol, one line per event: a public interface.
    #[test]
    fn json_events_are_stable() {
        let events = vec![
            Event::Started {
                session: "run-app-abc123".into(),
                namespace: "run-app-abc123".into(),
                mode: Mode::Sandboxed,
                sandbox: Some("run-app-abc123".into()),
                registry: "127.0.0.1:5000 (--registry)".into(),
                root: "/home/ann/app".into(),
                path: "./deploy".into(),
            },
            Event::PhaseStarted {
                phase: Phase::Validate,
            },
            Event::PhaseDone {
                phase: Phase::Push,
                elapsed_ms: 12,
                detail: Some("oci://127.0.0.1:5000/gitops-run/x@sha256:00".into()),
            },
            Event::Synced {
                revision: "latest@sha256:00".into(),
                changes: vec![Change {
                    object: "ConfigMap/run-app-abc123/web".into(),
                    action: Action::Created,
                }],
                elapsed_ms: 340,
            },
            Event::Unchanged {
                digest: "sha256:11".into(),
            },
            Event::Failed {
                phase: Phase::Apply,
                message: "not allowed".into(),
                file: Some("deploy/role.yaml".into()),
                last_good: Some("latest@sha256:00".into()),
            },
            Event::Failed {
                phase: Phase::Validate,
                message: "invalid YAML".into(),
                file: None,
                last_good: None,
            },
            Event::Superseded,
            Event::Rollout {
                object: "Deployment/run-app-abc123/web".into(),
                ready: 1,
                desired: 3,
                done: false,
            },
            Event::Log {
                pod: "web-5d8f7-abcde".into(),
                container: "app".into(),
                line: "listening on :8080".into(),
            },
            Event::Warning {
                message: "w".into(),
            },
            Event::Message {
                message: "m".into(),
            },
            Event::Cleaned {
                removed: vec!["lease/x".into()],
            },
        ];
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }
}
