//! `kubectl gitops-run`: GitOps Run for any cluster with Flux.

mod artifact_cmd;
mod run_cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gitops_cli::completion::CompletionCommand;
use gitops_cli::kube::KubeFlags;

/// Sync a directory of manifests to the cluster through Flux on every save.
///
/// `kubectl gitops-run [DIR]` starts a session: DIR is packaged as a Flux OCI
/// artifact, pushed, and applied by Flux into a sandbox (or straight into the
/// cluster with --no-session); every save syncs again. Ctrl+C removes what the
/// session created.
#[derive(Parser)]
#[command(
    name = "kubectl gitops-run",
    version = gitops::VERSION,
    bin_name = "kubectl gitops-run"
)]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    #[command(flatten)]
    verbosity: gitops_cli::Verbosity,
    #[command(flatten)]
    run: run_cmd::RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the current context can run sessions: reachable, Flux installed.
    Check,
    /// Package DIR as a Flux artifact layer (gzip'd tarball); print its digest.
    Build(artifact_cmd::BuildArgs),
    /// Package DIR and push it as a Flux OCI artifact.
    Push(artifact_cmd::PushArgs),
    /// Compare DIR with an artifact by file content (exit 0 equal, 1 different, 2 error).
    Diff(artifact_cmd::DiffArgs),
    /// Serve the Language Server Protocol on stdio, for an editor: the problems of the session
    /// syncing the workspace at their file:line, hover, code lenses (docs/editors.md).
    Lsp,
    #[command(flatten)]
    Completion(CompletionCommand),
}

impl gitops_cli::Plugin for Cli {
    const BIN: &'static str = "kubectl-gitops_run";

    fn verbosity(&self) -> u8 {
        self.verbosity.verbose
    }

    fn completion(&self) -> Option<&CompletionCommand> {
        match &self.command {
            Some(Command::Completion(c)) => Some(c),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    gitops_cli::main(run)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => run_cmd::run(&cli.kube, cli.run).await,
        Some(Command::Completion(_)) => Ok(ExitCode::SUCCESS),
        Some(Command::Check) => check(&cli.kube).await.map(|()| ExitCode::SUCCESS),
        Some(Command::Lsp) => lsp(&cli.kube).await,
        Some(Command::Build(args)) => artifact_cmd::build(args).await,
        Some(Command::Push(args)) => artifact_cmd::push(args).await,
        Some(Command::Diff(args)) => {
            // diff(1)'s convention: 1 means "different", so trouble is 2.
            Ok(match artifact_cmd::diff(args).await {
                Ok(code) => code,
                Err(e) => {
                    gitops_cli::report(&e);
                    ExitCode::from(2)
                }
            })
        }
    }
}

/// The language server on stdio. The cluster is connected once; when it
/// cannot be, the server still runs and says so to the editor.
async fn lsp(kube: &KubeFlags) -> Result<ExitCode> {
    let client = match kube.connect().await {
        Ok(c) => Some(c.client),
        Err(e) => {
            gitops::output::stderr_line(&format!("warning: {e:#}"));
            None
        }
    };
    let options = gitops::lsp::Options {
        program: std::env::current_exe().ok(),
        args: kube.to_args(),
    };
    gitops::lsp::serve_stdio(client, options).await?;
    Ok(ExitCode::SUCCESS)
}

async fn check(kube: &KubeFlags) -> Result<()> {
    let cluster = kube.connect().await?;
    gitops::outln!(
        "context:   {}",
        cluster.context.as_deref().unwrap_or("(in-cluster)")
    );
    gitops::outln!("server:    {}", cluster.server);
    gitops::outln!("namespace: {}", cluster.namespace);
    gitops::flux::check_installed(&cluster.client, &cluster.server).await?;
    gitops::outln!("flux:      OCIRepository and Kustomization v1 APIs are served");
    Ok(())
}
