//! The command line the three kubectl-gitops plugins share.
//!
//! The library (`gitops`) never sees a command line; this crate turns flags
//! into its plain options and runs a plugin's command the same way in every
//! binary:
//!
//! - [`main`]: the skeleton of each `main.rs` (TLS provider, flags, logging,
//!   completion, the runtime, `error: …` and the exit code);
//! - [`kube`]: kubectl's connection flags, into [`gitops::cluster::KubeOptions`];
//! - [`completion`]: `completion SHELL` and kubectl's `__complete` protocol;
//! - [`duration`], [`format`](mod@format), [`registry`]: duration flags, `-o` list
//!   formats and registry credentials;
//! - [`session_dir`]: what `kubectl gitops-run DIR` packages and syncs.

pub mod completion;
pub mod duration;
pub mod format;
pub mod kube;
pub mod registry;
pub mod session_dir;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;

use completion::CompletionCommand;

/// `-v`: the same flag in every plugin.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Verbosity {
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// A plugin's parsed command line, as [`main`] needs it.
pub trait Plugin: Parser {
    /// The binary's file name, which completion scripts call.
    const BIN: &'static str;
    /// How many `-v` were given.
    fn verbosity(&self) -> u8;
    /// The completion subcommand, when that is what was asked.
    fn completion(&self) -> Option<&CompletionCommand>;
}

/// A plugin's `main`: installs the TLS crypto provider, parses the flags
/// (clap prints its own usage errors and exits 2), starts logging, answers
/// `completion SHELL` and `__complete WORDS…` without touching the cluster,
/// and otherwise runs `command` on a multi-threaded runtime. A failed
/// command prints one `error: …` line on stderr and exits 1; a command
/// chooses any other exit code itself.
///
/// SIGPIPE stays ignored (Rust's default): a write to a peer that went away
/// (an API server or registry killed mid-request) must be an error the
/// session handles, never a signal that kills it before it cleans up. A
/// closed stdout (`kubectl gitops-sessions | head`) is handled where stdout
/// is written: see [`gitops::output::stdout`].
pub fn main<P, F>(command: impl FnOnce(P) -> F) -> ExitCode
where
    P: Plugin,
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    gitops::install_crypto_provider();
    let cli = P::parse();
    init_logging(cli.verbosity());
    if let Some(c) = cli.completion() {
        c.run(P::command(), P::BIN);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(
                &anyhow::Error::new(e)
                    .context("cannot start the async runtime (out of threads or memory?)"),
            );
        }
    };
    match runtime.block_on(command(cli)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// Sends diagnostics to stderr. `verbosity` counts `-v` flags; `RUST_LOG`
/// (`LEVEL` or `TARGET=LEVEL`, comma-separated, as `info,kube=debug`)
/// overrides it.
pub fn init_logging(verbosity: u8) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbosity {
        0 => "warn",
        1 => "info,gitops=debug",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

/// Prints `error: …` (the error and its causes, on one line, safe for a
/// terminal) to stderr and gives the exit code of a failed command.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let line = format!("error: {}", gitops::output::error_chain(err.as_ref()));
    gitops::output::stderr_line(&gitops::output::terminal_text(&line));
    ExitCode::FAILURE
}

#[cfg(test)]
mod logging_tests {
    use tracing_subscriber::filter::{LevelFilter, Targets};

    #[test]
    fn verbosity_levels_and_rust_log_directives_parse() {
        let targets = |s: &str| s.parse::<Targets>().unwrap();
        assert_eq!(targets("warn").default_level(), Some(LevelFilter::WARN));
        let v = targets("info,gitops=debug");
        let debug = tracing_subscriber::filter::LevelFilter::DEBUG
            .into_level()
            .unwrap();
        assert!(v.would_enable("gitops::session", &debug));
        assert!(!v.would_enable("kube_client", &debug));
    }
}
