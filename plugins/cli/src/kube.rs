//! kubectl's connection flags (`--kubeconfig`, `--context`, `--cluster`,
//! `--user`, `-n`, `--as`, `--as-group`, `--request-timeout`), global in
//! every plugin, and what they become: [`gitops::cluster::KubeOptions`].

use std::path::PathBuf;

use anyhow::Result;
use gitops::cluster::{Cluster, KubeOptions};

/// The kubectl connection flags, shared by every plugin.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Kubernetes options")]
pub struct KubeFlags {
    /// Path to the kubeconfig file to use (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The name of the kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The name of the kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// The namespace scope for this request (default: the context's namespace).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Username to impersonate for the operation.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub impersonate: Option<String>,
    /// Group to impersonate for the operation (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub impersonate_groups: Vec<String>,
    /// How long to wait for a single API request (e.g. 30s, 1m; 0 means no limit).
    #[arg(long, global = true, value_name = "DURATION", default_value = "0")]
    pub request_timeout: String,
}

impl KubeFlags {
    /// The flags as the library's options; fails on an unreadable
    /// `--request-timeout`.
    pub fn options(&self) -> Result<KubeOptions> {
        let request_timeout = crate::duration::flag("request-timeout", &self.request_timeout)?;
        Ok(KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
            namespace: self.namespace.clone(),
            impersonate: self.impersonate.clone(),
            impersonate_groups: self.impersonate_groups.clone(),
            request_timeout,
        })
    }

    /// The flags as given, to pass on to another command (the sessions the
    /// language server starts connect the same way).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut put = |flag: &str, v: &Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{flag}={v}"));
            }
        };
        put(
            "kubeconfig",
            &self.kubeconfig.as_ref().map(|p| p.display().to_string()),
        );
        put("context", &self.context);
        put("cluster", &self.cluster);
        put("user", &self.user);
        put("namespace", &self.namespace);
        put("as", &self.impersonate);
        for g in &self.impersonate_groups {
            a.push(format!("--as-group={g}"));
        }
        if self.request_timeout != "0" {
            a.push(format!("--request-timeout={}", self.request_timeout));
        }
        a
    }

    /// Resolves the connection and builds a client (no request is made).
    pub async fn connect(&self) -> Result<Cluster> {
        Ok(self.options()?.connect().await?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kube: KubeFlags,
    }

    fn options(args: &[&str]) -> Result<KubeOptions> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?
            .kube
            .options()
    }

    #[test]
    fn no_flags_are_kubectls_defaults() {
        assert_eq!(options(&[]).unwrap(), KubeOptions::default());
    }

    #[test]
    fn every_flag_reaches_the_options() {
        let got = options(&[
            "--kubeconfig",
            "/k/config",
            "--context",
            "two",
            "--cluster",
            "c2",
            "--user",
            "u",
            "-n",
            "b",
            "--as",
            "jane",
            "--as-group",
            "devs",
            "--as-group",
            "ops",
            "--request-timeout",
            "1m30s",
        ])
        .unwrap();
        assert_eq!(
            got,
            KubeOptions {
                kubeconfig: Some("/k/config".into()),
                context: Some("two".into()),
                cluster: Some("c2".into()),
                user: Some("u".into()),
                namespace: Some("b".into()),
                impersonate: Some("jane".into()),
                impersonate_groups: vec!["devs".into(), "ops".into()],
                request_timeout: Duration::from_secs(90),
            }
        );
    }

    #[test]
    fn an_unreadable_request_timeout_names_the_flag() {
        let err = options(&["--request-timeout", "soon"]).unwrap_err();
        assert_eq!(
            gitops::output::error_chain(err.as_ref()),
            "--request-timeout: invalid duration \"soon\": expected a number before each unit \
             (examples: 30s, 5m, 1h30m, 2d)"
        );
    }
}
