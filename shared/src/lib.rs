//! The library behind the kubectl-gitops plugins.
//!
//! Every behaviour lives here, organised by concern; it never sees a command
//! line. The plugin binaries and their shared command-line crate
//! (`plugins/cli`, `gitops_cli`) parse arguments and print. Errors are
//! [`thiserror`] types per module, so the binaries can turn them into
//! messages a user can act on.
//!
//! `unwrap_or_default()` means one of three things here, and nothing else:
//! a Kubernetes field that is optional, whose absence means empty (labels,
//! a status not written yet); the first piece of a split, which always
//! exists; or printing a value of our own that cannot fail to serialise
//! (said where it happens). A failure that can happen (a file, a request, a
//! parse of outside input) is returned or reported, never defaulted away.

pub mod artifact;
pub mod cluster;
pub mod duration;
pub mod flux;
pub mod git;
pub mod helm;
pub mod kubeapi;
pub mod kubeconfig;
pub mod kustomize;
pub mod labels;
pub mod lsp;
pub mod output;
pub mod pod;
pub mod portforward;
pub mod process;
pub mod registry;
pub mod sandbox;
pub mod selector;
pub mod session;
pub mod takeover;
pub mod ui;
pub mod workloads;
pub mod yaml;

/// The suite's version, shared by the three plugins.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the process-wide TLS crypto provider (ring) used by both the
/// Kubernetes client and the registry client. Call once, first thing in `main`
/// (the plugins' `gitops_cli::main` does).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
pub(crate) mod fakeapi;

#[cfg(test)]
mod proptests;

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers for the unit tests.
    use std::path::Path;

    /// Writes `(path, content)` files under `root`, making directories.
    pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (p, s) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        }
    }
}
