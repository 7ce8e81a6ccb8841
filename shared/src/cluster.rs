//! Kubernetes connection, resolved the kubectl way.
//!
//! [`KubeOptions`] carries what kubectl's connection flags say (kubeconfig,
//! context, cluster, user, namespace, impersonation, request timeout); the
//! plugins' flags themselves are in the CLI crate. Without a kubeconfig
//! path, `KUBECONFIG` (a path list, merged) or `~/.kube/config` is read,
//! then the in-cluster config.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::kubeconfig;
use kube::{Client, Config};

/// A client as kube's own (`Client::try_from`: TLS from the kubeconfig,
/// the timeouts, retries of throttled requests, credentials, impersonation
/// headers), whose connections send at once (`TCP_NODELAY`). Without it,
/// Nagle's algorithm holds back the last records of each new connection's
/// TLS handshake until the server's delayed ACK, 40 ms later: a sync opens a
/// few connections (its watches end with it), each paid 40 ms.
pub fn client(config: Config) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    // Each request and its response at debug level (`-vv`), failures too:
    // the caller says what a failure means, in words (tower-http's default
    // would print its own ERROR line for every refused connection while the
    // API server is down).
    let trace = tower_http::trace::TraceLayer::new_for_http()
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(trace)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// What the API server's logs and audit events see as the client, as
/// kubectl's `kubectl/v1.36.0 (linux/amd64)`, so a platform team can tell
/// the sessions' requests apart.
pub fn user_agent() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "kubectl-gitops/v{} ({}/{arch})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS
    )
}

/// Errors resolving or reaching the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: String,
        #[source]
        source: kubeconfig::KubeconfigError,
    },
    #[error(
        "no kubeconfig found and not running inside a cluster ({0}); set KUBECONFIG or pass --kubeconfig"
    )]
    NoKubeconfig(#[source] kube::config::InClusterError),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("context {0:?} is not in the kubeconfig (see `kubectl config get-contexts`)")]
    UnknownContext(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// How to reach the cluster, as kubectl's connection flags say it; the
/// default is kubectl's with no flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeOptions {
    /// The kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
    /// The kubeconfig cluster (default: the context's).
    pub cluster: Option<String>,
    /// The kubeconfig user (default: the context's).
    pub user: Option<String>,
    /// The namespace (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// The user to impersonate.
    pub impersonate: Option<String>,
    /// The groups to impersonate.
    pub impersonate_groups: Vec<String>,
    /// How long a single API request may take (zero: no limit).
    pub request_timeout: Duration,
}

/// A connected cluster: the client plus what was resolved to build it.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The namespace from `-n`, else the context's, else `default`.
    pub namespace: String,
    /// The kubeconfig context in use (`None` for in-cluster config).
    pub context: Option<String>,
    /// The API server URL.
    pub server: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl KubeOptions {
    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    fn load_kubeconfig(&self) -> Result<Option<Kubeconfig>, ClusterError> {
        if let Some(path) = &self.kubeconfig {
            return kubeconfig::read_from(path).map(Some).map_err(|source| {
                ClusterError::ReadKubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            });
        }
        match kubeconfig::read() {
            Ok(k) => Ok(Some(k)),
            // KUBECONFIG set but unreadable is a user error, not a fallback.
            Err(source) if std::env::var_os("KUBECONFIG").is_some() => {
                Err(ClusterError::ReadKubeconfig {
                    path: std::env::var("KUBECONFIG").unwrap_or_default(),
                    source,
                })
            }
            Err(_) => Ok(None),
        }
    }

    /// Resolves the configuration without connecting.
    pub async fn config(&self) -> Result<(Config, Option<String>), ClusterError> {
        let (mut config, context) = match self.load_kubeconfig()? {
            Some(kubeconfig) => {
                let context = self
                    .context
                    .clone()
                    .or_else(|| kubeconfig.current_context.clone());
                if let Some(name) = &context
                    && !kubeconfig.contexts.iter().any(|c| &c.name == name)
                {
                    return Err(ClusterError::UnknownContext(name.clone()));
                }
                let config = Config::from_custom_kubeconfig(kubeconfig, &self.options())
                    .await
                    .map_err(ClusterError::Kubeconfig)?;
                (config, context)
            }
            None => {
                let config = Config::incluster().map_err(ClusterError::NoKubeconfig)?;
                (config, None)
            }
        };
        if let Ok(agent) = http::HeaderValue::from_str(&user_agent()) {
            config.headers.push((http::header::USER_AGENT, agent));
        }
        if let Some(user) = &self.impersonate {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.impersonate_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(self.impersonate_groups.clone());
        }
        let timeout = self.request_timeout;
        if timeout > Duration::ZERO {
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
            config.connect_timeout = Some(timeout);
        }
        if let Some(ns) = &self.namespace {
            config.default_namespace = ns.clone();
        }
        Ok((config, context))
    }

    /// Resolves the configuration and builds a client (no request is made).
    pub async fn connect(&self) -> Result<Cluster, ClusterError> {
        let (config, context) = self.config().await?;
        let namespace = config.default_namespace.clone();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = client(config).map_err(ClusterError::Client)?;
        Ok(Cluster {
            client,
            namespace,
            context,
            server,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: one
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
- name: c2
  cluster: {server: "https://10.0.0.2:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: one
  context: {cluster: c1, user: u, namespace: team-a}
- name: two
  context: {cluster: c2, user: u}
"#;

    fn write_kubeconfig() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, KUBECONFIG.as_bytes()).unwrap();
        f
    }

    fn options(file: &tempfile::NamedTempFile) -> KubeOptions {
        KubeOptions {
            kubeconfig: Some(file.path().to_path_buf()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn honours_kubeconfig_context_and_namespace() {
        let file = write_kubeconfig();

        let (config, context) = options(&file).config().await.unwrap();
        assert_eq!(context.as_deref(), Some("one"));
        assert_eq!(config.default_namespace, "team-a");
        assert_eq!(config.cluster_url.host(), Some("127.0.0.1"));

        let two = KubeOptions {
            context: Some("two".into()),
            namespace: Some("b".into()),
            ..options(&file)
        };
        let (config, context) = two.config().await.unwrap();
        assert_eq!(context.as_deref(), Some("two"));
        assert_eq!(config.default_namespace, "b");
        assert_eq!(config.cluster_url.host(), Some("10.0.0.2"));
    }

    #[tokio::test]
    async fn impersonation_and_timeout_reach_the_config() {
        let file = write_kubeconfig();
        let options = KubeOptions {
            impersonate: Some("jane".into()),
            impersonate_groups: vec!["devs".into()],
            request_timeout: Duration::from_secs(5),
            ..options(&file)
        };
        let (config, _) = options.config().await.unwrap();
        assert_eq!(config.auth_info.impersonate.as_deref(), Some("jane"));
        assert_eq!(
            config.auth_info.impersonate_groups,
            Some(vec!["devs".to_string()])
        );
        assert_eq!(config.read_timeout, Some(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn unknown_context_and_missing_file_are_clear_errors() {
        let file = write_kubeconfig();
        let nope = KubeOptions {
            context: Some("nope".into()),
            ..options(&file)
        };
        let err = nope.config().await.unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not in the kubeconfig"), "{err}");

        let missing = KubeOptions {
            kubeconfig: Some("/does/not/exist".into()),
            ..Default::default()
        };
        let err = missing.config().await.unwrap_err().to_string();
        assert!(
            err.contains("cannot read kubeconfig /does/not/exist"),
            "{err}"
        );
    }
}
