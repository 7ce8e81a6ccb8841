//! Output helpers shared by the plugins: logging set-up and output formats.

use tracing_subscriber::EnvFilter;

/// Sends diagnostics to stderr. `verbosity` counts `-v` flags; `RUST_LOG`
/// overrides it.
pub fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "warn",
        1 => "info,gitops=debug",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
