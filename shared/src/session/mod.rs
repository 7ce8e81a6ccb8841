//! GitOps Run sessions, in three parts:
//!
//! - [`engine`]: the running command (`gitops-run`): the live loop, one
//!   sync (validate, build, push, wait for Flux), the watcher, workload
//!   health, and the cleanup when it stops;
//! - [`record`]: the contract between that command and everyone else: a
//!   `coordination.k8s.io` Lease per session, its annotations, who holds
//!   it, whether it is live, and which objects are the session's;
//! - [`readers`]: what `gitops-sessions` and the web page do with sessions
//!   that are not their own process: list, describe, delete, prune, follow
//!   logs, tell the cluster's mode, export to GitOps mode.
//!
//! Every object a session creates carries the suite's labels and the
//! session's name, and cleanup deletes only those. The readers depend on
//! the record; of the engine they use only [`cleanup`] (and its error), the
//! one way a session's objects are removed (and an app it took over, see
//! [`crate::takeover`], handed back).

pub mod engine;
pub mod readers;
pub mod record;
#[cfg(test)]
pub(crate) mod testkit;

pub use crate::kubeapi::FIELD_MANAGER;
pub use engine::EngineError;
pub use engine::changes::{Action, Change};
pub use engine::cleanup::cleanup;
pub use engine::events::{Event, Phase, Reporter, SyncOutcome};
pub use engine::preflight::RegistryChoice;
pub use engine::{Session, SessionConfig};
pub use readers::ReaderError;
pub use record::RecordError;
pub use record::{Mode, derive_name, keys, lease_is_live, validate_name};
