//! `kubectl gitops-run lsp`: a language server over stdio that shows, in the
//! editor, what the session syncing the open directory learnt from the
//! cluster — a YAML error, Flux's refusal of a field, a rollout that cannot
//! succeed — on the line of the file that produced it.
//!
//! The server reads sessions the way `gitops-sessions` does, through their
//! record (the Lease's `dir`, `root` and `problems`), so a session the
//! editor started and one started in a terminal look the same.
//!
//! | module | what it owns |
//! |---|---|
//! | [`protocol`] | the wire: framing, JSON-RPC shapes, `file://` URIs |
//! | [`mapping`] | a problem → file, line, column, through kustomize overlays (pure) |
//! | [`server`] | the server's state and its answers (initialize, hover, code lens, commands) and the diagnostics it publishes |
//! | [`sessions`] | the cluster's side: the Leases watched, the live objects read, sync now and stop |

pub mod mapping;
pub mod protocol;
pub mod server;
pub mod sessions;

pub use server::{Options, serve, serve_stdio};

/// Why the language server stopped.
#[derive(Debug, thiserror::Error)]
pub enum LspError {
    #[error("the editor's connection failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("the editor sent a message this server cannot read: {0}")]
    Protocol(String),
}
