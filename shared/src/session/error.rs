//! Why a session could not start, sync or stop: in words a user can act on.

use std::path::PathBuf;

use crate::flux;
use crate::kubeapi::{DeleteWaitError, WaitError};
use crate::registry::RegistryError;
use crate::sandbox::SandboxError;

/// Why a session could not start, sync or stop.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "context {context:?} (API server {server}) does not look like a local cluster; GitOps Run \
         changes what it syncs on every save, so it only runs on local clusters by default. If \
         you mean it, pass --allow-k8s-context {context}"
    )]
    NotLocal { context: String, server: String },
    #[error(
        "no registry to push to. Choose one of: --registry oci://HOST[:PORT], the \
         GITOPS_RUN_REGISTRY environment variable, or a cluster that publishes its local registry \
         in the ConfigMap kube-public/local-registry-hosting (kind, k3d, minikube and ctlptl do)"
    )]
    NoRegistry,
    #[error("invalid session name {0:?}: use lowercase letters, digits and '-' (at most 63)")]
    InvalidName(String),
    #[error(
        "session {name} is already running ({holder}, pid {pid}); stop it first, or pick another --name"
    )]
    AlreadyRunning {
        name: String,
        holder: String,
        pid: String,
    },
    #[error(
        "a sandbox named {name} already exists, made by {owner}; pick another session name with --name"
    )]
    SandboxTaken { name: String, owner: String },
    /// An object of a name the session wants that it did not create.
    #[error("{0}")]
    Foreign(super::record::ownership::Foreign),
    #[error("sandbox {0} does not exist; create it with `kubectl gitops-sandbox create {0}`")]
    NoSuchSandbox(String),
    #[error("{what}: {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Flag(String),
    #[error("--values {file}: {message}")]
    Values { file: PathBuf, message: String },
    #[error("{0}")]
    Flux(#[from] flux::FluxError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("{0}")]
    Kube(#[from] kube::Error),
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
}

impl From<super::record::ownership::OwnershipError> for SessionError {
    fn from(e: super::record::ownership::OwnershipError) -> Self {
        match e {
            super::record::ownership::OwnershipError::Foreign(f) => SessionError::Foreign(f),
            super::record::ownership::OwnershipError::Kube(e) => SessionError::Kube(e),
        }
    }
}

impl From<DeleteWaitError> for SessionError {
    fn from(e: DeleteWaitError) -> Self {
        match e {
            DeleteWaitError::Kube(e) => SessionError::Kube(e),
            DeleteWaitError::Wait(e) => SessionError::Wait(e),
        }
    }
}
