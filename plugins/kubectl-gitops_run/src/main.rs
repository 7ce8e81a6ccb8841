//! `kubectl gitops-run`: GitOps Run for any cluster with Flux.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gitops::cluster::KubeFlags;

/// Sync a directory of manifests to the cluster through Flux on every save.
#[derive(Parser)]
#[command(name = "kubectl gitops-run", version = gitops::VERSION, bin_name = "kubectl gitops-run")]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the current context can run sessions: reachable, Flux installed.
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    gitops::install_crypto_provider();
    let cli = Cli::parse();
    gitops::output::init_logging(cli.verbose);
    let result = match cli.command {
        Command::Check => check(&cli.kube).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => gitops::output::report(e.as_ref()),
    }
}

async fn check(kube: &KubeFlags) -> Result<()> {
    let cluster = kube.connect().await?;
    println!(
        "context:   {}",
        cluster.context.as_deref().unwrap_or("(in-cluster)")
    );
    println!("server:    {}", cluster.server);
    println!("namespace: {}", cluster.namespace);
    gitops::flux::check_installed(&cluster.client, &cluster.server).await?;
    println!("flux:      OCIRepository and Kustomization v1 APIs are served");
    Ok(())
}
