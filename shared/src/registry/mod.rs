//! OCI registries: artifact references, credentials, and the client that
//! pushes, pulls and diffs Flux artifacts (the artifact itself is built in
//! [`crate::artifact`]).
//!
//! A push uploads only the blobs the registry lacks, and writes the tag last
//! (the manifest PUT), so a failed push never leaves a tag pointing at a
//! partial artifact. Transient failures are retried with backoff; the rest
//! are reported in words a user can act on. Credentials are never printed.
//!
//! - `reference`: [`ArtifactRef`], and [`registry_address`], the one place a
//!   registry's `HOST[:PORT]` is taken out of a reference, location or URL;
//! - `credentials`: `--creds` and the Docker config;
//! - `client`: the [`Registry`] client: the distribution API and its login
//!   (a session keeps one: [`KeptRegistry`]);
//! - `http`: its transport (hyper and rustls, as the Kubernetes client;
//!   the environment's proxies; timeouts; redirects);
//! - `push`: the push chain, as methods of [`Registry`];
//! - `pull`: the download and the diff;
//! - `error`: [`RegistryError`], and the classification of the client's errors;
//! - `fake`: a scripted registry for unit tests.

mod client;
mod credentials;
mod error;
#[cfg(test)]
mod fake;
mod http;
mod pull;
mod push;
mod reference;

pub use client::{Access, KeptRegistry, Registry, RegistryOptions};
pub use credentials::{Credentials, docker_config_credentials};
pub use error::RegistryError;
pub use push::{BlobInfo, PushOptions, Pushed, Upload};
pub use reference::{ArtifactRef, is_loopback, registry_address};
