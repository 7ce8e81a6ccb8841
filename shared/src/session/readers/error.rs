//! Why `gitops-sessions` (and the page) could not find, remove or follow a
//! session: in words a user can act on.

use crate::session::engine::EngineError;
use crate::session::record::RecordError;

/// Why a reader could not do what was asked of a session.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("no session named {0} (see `kubectl gitops-sessions -A`)")]
    NotFound(String),
    #[error("sessions named {0} exist in several namespaces ({1}); choose one with -n")]
    Ambiguous(String, String),
    #[error(
        "session {0} changed while it was being removed (its command renewed it, or another \
         `gitops-sessions prune` or `delete` is removing it); it was left alone"
    )]
    CameBack(String),
    #[error(
        "session {name} is running (pid {pid} on {host}); stop it with Ctrl+C where it runs, or pass --force"
    )]
    Live {
        name: String,
        pid: String,
        host: String,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Removing the session's objects failed (see [`crate::session::engine::cleanup`]).
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}
