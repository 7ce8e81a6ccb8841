//! `kubectl gitops-sandbox`: isolated environments for GitOps Run sessions.

use anyhow::Result;
use clap::Parser;
use gitops::cluster::KubeFlags;

/// Create, list and delete isolated environments for GitOps Run sessions.
#[derive(Parser)]
#[command(
    name = "kubectl gitops-sandbox",
    version = gitops::VERSION,
    bin_name = "kubectl gitops-sandbox",
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
