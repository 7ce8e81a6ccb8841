//! `kubectl gitops-sessions`: see and manage GitOps Run sessions.

use anyhow::Result;
use clap::Parser;
use gitops::cluster::KubeFlags;

/// List and manage live and stale GitOps Run sessions across the cluster.
#[derive(Parser)]
#[command(
    name = "kubectl gitops-sessions",
    version = gitops::VERSION,
    bin_name = "kubectl gitops-sessions",
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> Result<()> {
    gitops::install_crypto_provider();
    let cli = Cli::parse();
    gitops::output::init_logging(cli.verbose);
    let _ = cli.kube;
    Ok(())
}
