//! Why a session could not start, sync or stop: in words a user can act on.
//! (What the readers refuse is [`crate::session::readers::ReaderError`];
//! a bad session name is the record's, [`crate::session::record::RecordError`].)

use std::path::PathBuf;

use crate::flux;
use crate::kubeapi::{DeleteWaitError, WaitError};
use crate::registry::RegistryError;
use crate::sandbox::SandboxError;
use crate::session::record::RecordError;

/// Why a session could not start, sync or stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
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
    #[error(transparent)]
    Record(#[from] RecordError),
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
    Foreign(crate::session::record::ownership::Foreign),
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
    #[error(transparent)]
    Takeover(Box<crate::takeover::TakeoverError>),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl From<crate::session::record::ownership::OwnershipError> for EngineError {
    fn from(e: crate::session::record::ownership::OwnershipError) -> Self {
        match e {
            crate::session::record::ownership::OwnershipError::Foreign(f) => {
                EngineError::Foreign(f)
            }
            crate::session::record::ownership::OwnershipError::Kube(e) => EngineError::Kube(e),
        }
    }
}

impl From<crate::takeover::TakeoverError> for EngineError {
    fn from(e: crate::takeover::TakeoverError) -> Self {
        EngineError::Takeover(Box::new(e))
    }
}

impl From<DeleteWaitError> for EngineError {
    fn from(e: DeleteWaitError) -> Self {
        match e {
            DeleteWaitError::Kube(e) => EngineError::Kube(e),
            DeleteWaitError::Wait(e) => EngineError::Wait(e),
        }
    }
}
