//! `kubectl gitops-sandbox`: isolated environments for GitOps Run sessions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use gitops::duration;
use gitops::output::{ListFormat, serialize, table};
use gitops::sandbox::{
    self, CreateOptions, DeleteOptions, Deleted, Isolation, Quota, Sandbox, VclusterChart,
};
use gitops_cli::completion::CompletionCommand;
use gitops_cli::format::ListFormatArg;
use gitops_cli::kube::KubeFlags;

/// Create, list and delete isolated environments for GitOps Run sessions.
#[derive(Parser)]
#[command(
    name = "kubectl gitops-sandbox",
    version = gitops::VERSION,
    bin_name = "kubectl gitops-sandbox"
)]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    #[command(flatten)]
    verbosity: gitops_cli::Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum IsolationArg {
    /// A confined namespace (default).
    Namespace,
    /// A virtual cluster installed with Flux's helm-controller.
    Vcluster,
    /// Another cluster, reached with --target-kubeconfig.
    Kubeconfig,
}

#[derive(Subcommand)]
enum Command {
    /// Create a sandbox.
    Create {
        /// Sandbox name (also its namespace's name).
        name: String,
        #[arg(long, value_enum, default_value = "namespace")]
        isolation: IsolationArg,
        /// Expire after this long (e.g. 8h, 2d); `gc` deletes expired sandboxes.
        #[arg(long, value_name = "DURATION", value_parser = gitops_cli::duration::value)]
        ttl: Option<Duration>,
        /// Resource limits for a namespace sandbox, e.g. cpu=2,memory=4Gi,pods=20.
        #[arg(long, value_name = "cpu=…,memory=…,pods=…")]
        quota: Option<String>,
        /// The kubeconfig of the cluster sessions apply into (--isolation kubeconfig).
        #[arg(long, value_name = "FILE")]
        target_kubeconfig: Option<PathBuf>,
        /// Wait until the sandbox is ready (vcluster: installed).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = gitops_cli::duration::value)]
        timeout: Duration,
        /// The Helm repository of the vcluster chart (https://… or oci://…), e.g. a mirror.
        #[arg(
            long,
            value_name = "URL",
            env = "GITOPS_VCLUSTER_CHART_REPO",
            default_value = sandbox::VCLUSTER_CHART_REPO
        )]
        vcluster_chart_repo: String,
        /// The vcluster chart version or range (e.g. 0.21.x); default: the newest.
        #[arg(long, value_name = "VERSION")]
        vcluster_version: Option<String>,
        /// A values file for the vcluster chart (YAML), e.g. persistence or resources.
        #[arg(long, value_name = "FILE")]
        vcluster_values: Option<PathBuf>,
        /// Create a namespace sandbox even where the sandbox boundary (see `policy`) is
        /// not in force. Its payload is then NOT contained: it can do whatever Flux can.
        #[arg(long)]
        unconfined: bool,
    },
    /// Print the admission policy that makes namespace sandboxes a security boundary
    /// (for a cluster administrator, or the cluster's GitOps repository); --install
    /// applies it. `create` installs it itself when you may.
    Policy {
        /// Install it in the cluster instead of printing it.
        #[arg(long)]
        install: bool,
    },
    /// Delete a sandbox and everything in it (Flux's garbage collection first).
    Delete {
        name: String,
        /// Wait until the namespace is gone.
        #[arg(long)]
        wait: bool,
        /// How long each step may take.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = gitops_cli::duration::value)]
        timeout: Duration,
    },
    /// List sandboxes (yours; -A for everyone's).
    List {
        /// Everyone's sandboxes, not only yours.
        #[arg(short = 'A', long)]
        all: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: ListFormatArg,
    },
    /// Delete the sandboxes whose TTL has passed.
    Gc {
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = gitops_cli::duration::value)]
        timeout: Duration,
    },
    #[command(flatten)]
    Completion(CompletionCommand),
}

impl gitops_cli::Plugin for Cli {
    const BIN: &'static str = "kubectl-gitops_sandbox";

    fn verbosity(&self) -> u8 {
        self.verbosity.verbose
    }

    fn completion(&self) -> Option<&CompletionCommand> {
        match &self.command {
            Command::Completion(c) => Some(c),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    gitops_cli::main(|cli| async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Policy { install: false } = cli.command {
        gitops::out!("{}", sandbox::boundary::manifest_yaml());
        return Ok(());
    }
    let cluster = cli.kube.connect().await?;
    let client = cluster.client;
    match cli.command {
        Command::Create {
            name,
            isolation,
            ttl,
            quota,
            target_kubeconfig,
            wait,
            timeout,
            vcluster_chart_repo,
            vcluster_version,
            vcluster_values,
            unconfined,
        } => {
            let isolation = match isolation {
                IsolationArg::Namespace => Isolation::Namespace,
                IsolationArg::Vcluster => Isolation::Vcluster,
                IsolationArg::Kubeconfig => Isolation::Kubeconfig,
            };
            let target_kubeconfig = match target_kubeconfig {
                Some(path) => {
                    let content = std::fs::read(&path)
                        .with_context(|| format!("--target-kubeconfig {}", path.display()))?;
                    Some((path.display().to_string(), content))
                }
                None => None,
            };
            if !matches!(isolation, Isolation::Vcluster)
                && (vcluster_version.is_some() || vcluster_values.is_some())
            {
                anyhow::bail!("--vcluster-version and --vcluster-values need --isolation vcluster");
            }
            let values = match &vcluster_values {
                Some(path) => gitops::helm::read_values(path)
                    .map_err(|e| anyhow::anyhow!("--vcluster-values {}: {e}", path.display()))?,
                None => VclusterChart::default().values,
            };
            let options = CreateOptions {
                isolation,
                ttl,
                quota: quota.as_deref().map(str::parse::<Quota>).transpose()?,
                target_kubeconfig,
                wait,
                timeout,
                vcluster: VclusterChart {
                    repo: vcluster_chart_repo,
                    version: vcluster_version,
                    values,
                },
                unconfined,
                ..Default::default()
            };
            let sandbox = sandbox::create(&client, &name, &options).await?;
            if sandbox.unconfined {
                eprintln!(
                    "warning: sandbox {name} is NOT a security boundary: the sandbox boundary \
                     policy is not in force here, so its payload can do whatever Flux can"
                );
            }
            let expires = sandbox
                .expires
                .map(|e| {
                    format!(
                        ", expires in {}",
                        duration::human((e - Utc::now()).to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_default();
            gitops::outln!(
                "sandbox {} created (isolation {}, namespace {}{expires})",
                sandbox.name,
                sandbox.isolation.as_str(),
                sandbox.namespace
            );
        }
        Command::Delete {
            name,
            wait,
            timeout,
        } => match sandbox::delete(&client, &name, &DeleteOptions { wait, timeout }).await? {
            Deleted::NotFound => eprintln!("sandbox {name} not found; nothing to delete"),
            Deleted::Removed(objects) => {
                for o in &objects {
                    gitops::outln!("deleted {o}");
                }
                gitops::outln!("sandbox {name} deleted");
            }
        },
        Command::List { all, output } => {
            let output = ListFormat::from(output);
            let owner = gitops::labels::owner();
            let sandboxes = sandbox::list(&client, (!all).then_some(owner.as_str())).await?;
            match output {
                ListFormat::Json | ListFormat::Yaml => {
                    gitops::out!("{}", serialize(&sandboxes, output))
                }
                ListFormat::Table | ListFormat::Wide => {
                    if sandboxes.is_empty() {
                        eprintln!(
                            "No sandboxes found{}.",
                            if all {
                                ""
                            } else {
                                " of yours (-A lists everyone's)"
                            }
                        );
                    } else {
                        gitops::out!("{}", render(&sandboxes, output == ListFormat::Wide));
                    }
                }
            }
        }
        Command::Completion(_) => {}
        Command::Policy { .. } => {
            if !sandbox::boundary::ensure(&client).await? {
                anyhow::bail!(
                    "you may not install the sandbox boundary policy (a cluster-scoped \
                     ValidatingAdmissionPolicy and its binding): ask a cluster administrator \
                     to run `kubectl gitops-sandbox policy --install`"
                );
            }
            gitops::outln!(
                "sandbox boundary policy {} installed",
                sandbox::boundary::NAME
            );
        }
        Command::Gc { timeout } => {
            let deleted = sandbox::gc(
                &client,
                &DeleteOptions {
                    wait: false,
                    timeout,
                },
            )
            .await?;
            if deleted.is_empty() {
                gitops::outln!("no expired sandboxes");
            }
            for name in deleted {
                gitops::outln!("sandbox {name} expired and was deleted");
            }
        }
    }
    Ok(())
}

fn render(sandboxes: &[Sandbox], wide: bool) -> String {
    render_at(sandboxes, wide, Utc::now())
}

fn render_at(sandboxes: &[Sandbox], wide: bool, now: chrono::DateTime<Utc>) -> String {
    let mut headers = vec![
        "NAME",
        "ISOLATION",
        "NAMESPACE",
        "AGE",
        "EXPIRES",
        "READY",
        "SESSIONS",
    ];
    if wide {
        headers.extend(["OWNER", "QUOTA", "TARGET"]);
    }
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|s| {
            let age = s
                .created
                .map(|c| duration::human((now - c).to_std().unwrap_or_default()))
                .unwrap_or_else(|| "<unknown>".into());
            let expires = match s.expires {
                None => "never".to_string(),
                Some(e) if e <= now => "expired".to_string(),
                Some(e) => format!(
                    "in {}",
                    duration::human((e - now).to_std().unwrap_or_default())
                ),
            };
            let ready = if s.terminating {
                "Terminating"
            } else if s.ready {
                "True"
            } else {
                "False"
            };
            let isolation = if s.unconfined {
                format!("{} (unconfined)", s.isolation.as_str())
            } else {
                s.isolation.as_str().to_string()
            };
            let mut row = vec![
                s.name.clone(),
                isolation,
                s.namespace.clone(),
                age,
                expires,
                ready.into(),
                s.sessions.to_string(),
            ];
            if wide {
                let target = match (&s.target.service_account, &s.target.kubeconfig_secret) {
                    (Some(sa), _) => format!("serviceaccount/{sa}"),
                    (None, Some((secret, key))) => format!("secret/{secret}[{key}]"),
                    _ => "-".into(),
                };
                row.extend([
                    s.owner.clone().unwrap_or_else(|| "-".into()),
                    s.quota.clone().unwrap_or_else(|| "-".into()),
                    target,
                ]);
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitops::sandbox::{Isolation, Target};

    #[test]
    fn list_table_and_wide() {
        let now = gitops::duration::parse_time(Some("2026-11-23T12:00:00Z")).unwrap();
        let at = |s: &str| gitops::duration::parse_time(Some(s));
        let sandboxes = vec![
            Sandbox {
                name: "dev".into(),
                isolation: Isolation::Namespace,
                namespace: "dev".into(),
                owner: Some("ann@laptop".into()),
                created: at("2026-11-23T10:00:00Z"),
                expires: at("2026-11-23T18:00:00Z"),
                ready: true,
                terminating: false,
                sessions: 2,
                quota: Some("cpu=2,pods=20".into()),
                target: Target::namespace_sandbox("dev"),
                unconfined: false,
            },
            Sandbox {
                name: "remote".into(),
                isolation: Isolation::Kubeconfig,
                namespace: "remote".into(),
                owner: None,
                created: at("2026-11-20T12:00:00Z"),
                expires: at("2026-11-22T12:00:00Z"),
                ready: false,
                terminating: true,
                sessions: 0,
                quota: None,
                target: Target {
                    namespace: "remote".into(),
                    service_account: None,
                    kubeconfig_secret: Some(("gitops-sandbox-kubeconfig".into(), "value".into())),
                    target_namespace: None,
                    vcluster: None,
                },
                unconfined: false,
            },
        ];
        insta::assert_snapshot!("table", render_at(&sandboxes, false, now));
        insta::assert_snapshot!("wide", render_at(&sandboxes, true, now));
    }
}
