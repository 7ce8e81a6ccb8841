//! The session record: a `coordination.k8s.io` Lease per session, renewed
//! by the running command, with what `gitops-sessions` and the web page show
//! in its annotations. This module is the contract between the writer
//! (`gitops-run`) and the readers ([`crate::session::readers::view`]): one codec for both.
//!
//! | annotation (`gitops.kubectl.dev/…`) | meaning |
//! |---|---|
//! | `pid` | process id of the running command |
//! | `dir` | the synced directory (absolute) |
//! | `registry` | where it pushes (`host[:port]`) |
//! | `mode` | `sandboxed` or `cluster` |
//! | `sandbox` | the sandbox it applies into (empty in cluster mode) |
//! | `ephemeral-sandbox` | `true` when the session made that sandbox and removes it |
//! | `version` | the suite's version |
//! | `started-at` | RFC 3339 |
//! | `last-revision`, `last-sync`, `last-status` | the last sync: revision, RFC 3339 time, `Ready`/`Failed` |
//! | `port-forwards` | `--port-forward` specs, space-separated |
//! | `owner` | `user@host` that created it |
//! | `takes-over` | `namespace/name` of the Flux Kustomization the session runs in place of (`--take-over`) |
//! | `root` | the packaged root the session's file names are relative to (added later: missing means `dir`) |
//! | `problems` | JSON array of the last sync's causes of failure, one per cause: [`problems::Problem`] (added later: missing or unreadable means none) |
//! | `sync-history` | JSON array of the last [`HISTORY_LEN`] syncs, oldest first: [`SyncEntry`] (added later: readers take a missing or unreadable value as no history) |
//!
//! `spec.holderIdentity` is `user@host` while the command runs (empty once
//! it stopped with `--keep`, `removing:<user@host>` once `gitops-sessions`
//! claimed it to remove the session; see [`lease`]);
//! `spec.renewTime` + `leaseDurationSeconds` decide whether the heartbeat
//! is live.

mod error;
pub mod lease;
pub mod liveness;
mod name;
pub mod ownership;
pub mod problems;
pub mod writer;

pub use error::RecordError;
pub use name::{derive_name, validate_name};

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;

use crate::duration::parse_time;
use crate::labels;
use serde::Serialize;

/// Where a session applies: its record's `mode` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Into a sandbox (the default).
    Sandboxed,
    /// Straight into the cluster (`--no-session`).
    Cluster,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sandboxed => "sandboxed",
            Mode::Cluster => "cluster",
        }
    }
}

/// Lease annotations, under the suite's prefix.
pub mod keys {
    pub const PID: &str = "gitops.kubectl.dev/pid";
    pub const DIR: &str = "gitops.kubectl.dev/dir";
    pub const REGISTRY: &str = "gitops.kubectl.dev/registry";
    pub const MODE: &str = "gitops.kubectl.dev/mode";
    pub const SANDBOX: &str = "gitops.kubectl.dev/sandbox";
    pub const VERSION: &str = "gitops.kubectl.dev/version";
    pub const STARTED_AT: &str = "gitops.kubectl.dev/started-at";
    pub const LAST_REVISION: &str = "gitops.kubectl.dev/last-revision";
    pub const LAST_SYNC: &str = "gitops.kubectl.dev/last-sync";
    pub const LAST_STATUS: &str = "gitops.kubectl.dev/last-status";
    pub const EPHEMERAL_SANDBOX: &str = "gitops.kubectl.dev/ephemeral-sandbox";
    pub const PORT_FORWARDS: &str = "gitops.kubectl.dev/port-forwards";
    pub const SYNC_HISTORY: &str = "gitops.kubectl.dev/sync-history";
    pub const TAKES_OVER: &str = "gitops.kubectl.dev/takes-over";
    pub const ROOT: &str = "gitops.kubectl.dev/root";
    pub const PROBLEMS: &str = "gitops.kubectl.dev/problems";
}

/// How many syncs the Lease keeps in `sync-history`.
pub const HISTORY_LEN: usize = 10;
/// The longest failure message kept per sync (characters).
pub const HISTORY_MESSAGE_LEN: usize = 300;

/// One sync, as kept in `sync-history` (JSON, camelCase keys; fields are
/// only ever added).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncEntry {
    /// When the sync started.
    pub at: DateTime<Utc>,
    /// The revision pushed (`latest@sha256:…`; empty when it failed before the push).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// `Ready` or `Failed`.
    pub status: String,
    /// The phase that failed (`validate`, `build`, `push`, `fetch`, `apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<String>,
    /// Why it failed (at most [`HISTORY_MESSAGE_LEN`] characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The phases it went through, in order (a failed phase included).
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
}

/// One phase of a sync: when it started (ms after the sync started) and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTime {
    pub phase: String,
    pub start_ms: u64,
    pub ms: u64,
}

impl SyncEntry {
    /// From the start of the sync to the end of its last phase.
    pub fn total_ms(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.start_ms.saturating_add(p.ms))
            .max()
            .unwrap_or(0)
    }
}

/// The `sync-history` annotation's value.
pub fn history_to_annotation(history: &[SyncEntry]) -> String {
    serde_json::to_string(history).unwrap_or_else(|_| "[]".into())
}

/// Reads `sync-history` (no history when missing or unreadable: older
/// sessions did not write it).
pub fn history_from_annotation(value: Option<&str>) -> Vec<SyncEntry> {
    value
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Lease durations a session accepts (renewed at a third of it).
pub const MIN_LEASE: Duration = Duration::from_secs(3);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// What a Lease without a readable duration is taken to have.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// What a session's Lease says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub pid: String,
    pub dir: String,
    pub registry: String,
    pub mode: String,
    pub sandbox: Option<String>,
    pub ephemeral_sandbox: bool,
    pub version: String,
    pub started_at: Option<DateTime<Utc>>,
    pub last: Option<LastSync>,
    pub port_forwards: Vec<String>,
    pub owner: String,
    /// The last syncs, oldest first.
    pub history: Vec<SyncEntry>,
    /// `namespace/name` of the Kustomization it runs in place of.
    pub takes_over: Option<String>,
    /// The packaged root (empty when an older session did not say: `dir`).
    pub root: String,
    /// The last sync's causes of failure (none when it succeeded).
    pub problems: Vec<problems::Problem>,
}

/// The last sync a session recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastSync {
    pub revision: String,
    pub at: Option<DateTime<Utc>>,
    pub status: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl LastSync {
    /// The annotations of a sync note (a merge patch of just these).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::LAST_REVISION.to_string(), self.revision.clone()),
            (
                keys::LAST_SYNC.to_string(),
                self.at.map(rfc3339).unwrap_or_default(),
            ),
            (keys::LAST_STATUS.to_string(), self.status.clone()),
        ])
    }
}

impl Record {
    /// The annotations the writer puts on the Lease.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (keys::PID.to_string(), self.pid.clone()),
            (keys::DIR.to_string(), self.dir.clone()),
            (keys::REGISTRY.to_string(), self.registry.clone()),
            (keys::MODE.to_string(), self.mode.clone()),
            (
                keys::SANDBOX.to_string(),
                self.sandbox.clone().unwrap_or_default(),
            ),
            (
                keys::EPHEMERAL_SANDBOX.to_string(),
                self.ephemeral_sandbox.to_string(),
            ),
            (keys::VERSION.to_string(), self.version.clone()),
            (
                keys::STARTED_AT.to_string(),
                self.started_at.map(rfc3339).unwrap_or_default(),
            ),
            (
                keys::PORT_FORWARDS.to_string(),
                self.port_forwards.join(" "),
            ),
            (labels::OWNER.to_string(), self.owner.clone()),
        ]);
        if let Some(last) = &self.last {
            a.extend(last.to_annotations());
        }
        if let Some(t) = &self.takes_over {
            a.insert(keys::TAKES_OVER.to_string(), t.clone());
        }
        if !self.history.is_empty() {
            a.insert(
                keys::SYNC_HISTORY.to_string(),
                history_to_annotation(&self.history),
            );
        }
        if !self.root.is_empty() {
            a.insert(keys::ROOT.to_string(), self.root.clone());
        }
        if !self.problems.is_empty() {
            a.insert(
                keys::PROBLEMS.to_string(),
                problems::to_annotation(&self.problems),
            );
        }
        a
    }

    /// Reads the record back from a Lease's annotations.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Record {
        let get = |k: &str| a.get(k).cloned().unwrap_or_default();
        let revision = get(keys::LAST_REVISION);
        Record {
            pid: get(keys::PID),
            dir: get(keys::DIR),
            registry: get(keys::REGISTRY),
            mode: get(keys::MODE),
            sandbox: Some(get(keys::SANDBOX)).filter(|s| !s.is_empty()),
            ephemeral_sandbox: get(keys::EPHEMERAL_SANDBOX) == "true",
            version: get(keys::VERSION),
            started_at: parse_time(a.get(keys::STARTED_AT).map(String::as_str)),
            last: (!revision.is_empty()).then(|| LastSync {
                revision,
                at: parse_time(a.get(keys::LAST_SYNC).map(String::as_str)),
                status: get(keys::LAST_STATUS),
            }),
            port_forwards: get(keys::PORT_FORWARDS)
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            owner: get(labels::OWNER),
            history: history_from_annotation(a.get(keys::SYNC_HISTORY).map(String::as_str)),
            takes_over: a.get(keys::TAKES_OVER).filter(|t| !t.is_empty()).cloned(),
            root: get(keys::ROOT),
            problems: problems::from_annotation(a.get(keys::PROBLEMS).map(String::as_str)),
        }
    }

    /// The record of a Lease.
    pub fn of(lease: &Lease) -> Record {
        Record::from_annotations(lease.annotations())
    }
}

/// The holder of a Lease (`user@host`; empty once released with `--keep`).
pub fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

/// The duration recorded in a Lease ([`DEFAULT_LEASE`] when missing).
pub fn lease_duration(lease: &Lease) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_LEASE, Duration::from_secs)
}

/// When the Lease was last renewed.
pub fn renewed_at(lease: &Lease) -> Option<DateTime<Utc>> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
}

/// Whether a Lease is held and was renewed within its duration.
pub fn lease_is_live(lease: &Lease, now: DateTime<Utc>) -> bool {
    if holder(lease).is_empty() {
        return false;
    }
    let Some(renewed) = renewed_at(lease) else {
        return false;
    };
    let Ok(duration) = chrono::Duration::from_std(lease_duration(lease)) else {
        return false;
    };
    renewed + duration > now
}

/// A Lease held by this user on this machine whose process has exited is
/// not running, whatever its renew time says (a crash, a `kill -9`). A pid
/// that is this process's own was reused (Windows hands out freed ids again
/// at once): the process that wrote it is gone.
pub fn holder_process_gone(lease: &Lease, owner: &str) -> bool {
    let pid = Record::of(lease).pid.parse::<u32>().ok();
    holder(lease) == owner
        && pid.is_some_and(|pid| pid == std::process::id() || !crate::process::is_alive(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn records_round_trip_through_annotations() {
        let record = Record {
            pid: "4242".into(),
            dir: "/home/ann/app/deploy".into(),
            registry: "127.0.0.1:5000".into(),
            mode: "sandboxed".into(),
            sandbox: Some("run-deploy-abc123".into()),
            ephemeral_sandbox: true,
            version: "0.1.0".into(),
            started_at: parse_time(Some("2026-11-23T10:00:00.125Z")),
            last: Some(LastSync {
                revision: "latest@sha256:00".into(),
                at: parse_time(Some("2026-11-23T10:01:00Z")),
                status: "Ready".into(),
            }),
            port_forwards: vec![
                "resource=svc/web,port=8080".into(),
                "resource=pod/db,port=5432".into(),
            ],
            owner: "ann@laptop".into(),
            takes_over: Some("flux-system/podinfo".into()),
            root: "/home/ann/app".into(),
            problems: problems::from_failure(
                "apply",
                "Deployment/dev/web: pod web-1 container app: CrashLoopBackOff (exit 1)",
                Some("deploy/web.yaml"),
            ),
            history: vec![
                SyncEntry {
                    at: parse_time(Some("2026-11-23T10:00:30Z")).unwrap(),
                    revision: String::new(),
                    status: "Failed".into(),
                    failed_phase: Some("validate".into()),
                    message: "deploy/a.yaml:3: invalid YAML".into(),
                    phases: vec![PhaseTime {
                        phase: "validate".into(),
                        start_ms: 0,
                        ms: 4,
                    }],
                },
                SyncEntry {
                    at: parse_time(Some("2026-11-23T10:00:59Z")).unwrap(),
                    revision: "latest@sha256:00".into(),
                    status: "Ready".into(),
                    failed_phase: None,
                    message: String::new(),
                    phases: ["validate", "build", "push", "fetch", "apply"]
                        .iter()
                        .enumerate()
                        .map(|(i, p)| PhaseTime {
                            phase: p.to_string(),
                            start_ms: i as u64 * 100,
                            ms: 90,
                        })
                        .collect(),
                },
            ],
        };
        assert_eq!(record.history[1].total_ms(), 490);
        assert_eq!(Record::from_annotations(&record.to_annotations()), record);
        let minimal = Record {
            owner: "ann@laptop".into(),
            ..Default::default()
        };
        assert_eq!(Record::from_annotations(&minimal.to_annotations()), minimal);
    }

    #[test]
    fn the_history_is_json_and_its_absence_or_garbage_is_no_history() {
        let json = r#"[{"at":"2026-11-23T10:00:00Z","status":"Ready","revision":"latest@sha256:00","phases":[{"phase":"build","startMs":3,"ms":7}],"somethingNew":1}]"#;
        let h = history_from_annotation(Some(json));
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].phases[0].phase, "build");
        assert_eq!(h[0].total_ms(), 10);
        assert!(history_from_annotation(None).is_empty());
        assert!(history_from_annotation(Some("not json")).is_empty());
        // An old Lease (no history key) reads as before.
        let old = BTreeMap::from([(keys::LAST_REVISION.to_string(), "r".to_string())]);
        assert!(Record::from_annotations(&old).history.is_empty());
        let out = history_to_annotation(&h);
        assert!(out.contains("\"startMs\":3"), "{out}");
        assert!(!out.contains("failedPhase"), "{out}");
    }

    #[test]
    fn leases_go_stale_after_their_own_duration() {
        let now = Utc::now();
        let at = |secs_ago: i64, duration: Option<i32>| {
            let ts = k8s_openapi::jiff::Timestamp::from_millisecond(
                now.timestamp_millis() - secs_ago * 1000,
            )
            .unwrap();
            Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some("u@h".into()),
                    lease_duration_seconds: duration,
                    renew_time: Some(MicroTime(ts)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        assert!(lease_is_live(&at(5, Some(30)), now));
        assert!(!lease_is_live(&at(31, Some(30)), now));
        assert!(lease_is_live(&at(100, Some(300)), now));
        assert_eq!(lease_duration(&at(0, Some(300))), Duration::from_secs(300));
        assert_eq!(lease_duration(&at(0, None)), DEFAULT_LEASE);
        assert_eq!(lease_duration(&at(0, Some(-5))), DEFAULT_LEASE);
        assert!(!lease_is_live(&Lease::default(), now));
    }

    #[test]
    fn a_dead_holder_on_this_machine_is_gone() {
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("me@here".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut live = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        lease
            .annotations_mut()
            .insert(keys::PID.into(), live.id().to_string());
        assert!(!holder_process_gone(&lease, "me@here"));
        let _ = live.kill();
        let _ = live.wait();
        // Its own pid, reused: the writer is gone.
        lease
            .annotations_mut()
            .insert(keys::PID.into(), std::process::id().to_string());
        assert!(holder_process_gone(&lease, "me@here"));
        lease
            .annotations_mut()
            .insert(keys::PID.into(), "999999999".into());
        assert!(holder_process_gone(&lease, "me@here"));
        // Someone else's session: never judged from this machine.
        assert!(!holder_process_gone(&lease, "other@there"));
    }
}
