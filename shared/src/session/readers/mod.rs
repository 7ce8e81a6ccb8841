//! What `kubectl gitops-sessions` and the web page do with sessions that
//! are not their own process: [`view`] lists them (the Lease joined with
//! their Flux objects), [`admin`] finds, describes, deletes and prunes them,
//! [`status`] tells the cluster's mode (Run, GitOps, Snowflake), [`logs`]
//! follows their pods and Flux's warnings, and [`export`] hands a directory
//! over to GitOps mode. They read the session [`record`](super::record);
//! of the running command's engine they use only its cleanup, so that a
//! `delete` or `prune` removes a session exactly as its own command would.

pub mod admin;
mod error;
pub mod export;
pub mod logs;
pub mod status;
pub mod view;

pub use error::ReaderError;
