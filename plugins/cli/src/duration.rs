//! Duration flags (`--timeout 2m`, `--stale-after 1h`): read by the
//! library's rule ([`gitops::duration::parse`]), either as clap reads a
//! value ([`value`], a usage error) or once the command runs ([`flag`], an
//! `error: --FLAG: …`).

use std::time::Duration;

use anyhow::{Context, Result};

/// clap's value parser for a duration flag:
/// `#[arg(long, value_parser = gitops_cli::duration::value)]`.
pub fn value(s: &str) -> Result<Duration, String> {
    gitops::duration::parse(s).map_err(|e| e.to_string())
}

/// The value of `--{name}`, read when the command runs; the error names the flag.
pub fn flag(name: &str, text: &str) -> Result<Duration> {
    gitops::duration::parse(text).with_context(|| format!("--{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_readings_agree_and_name_what_failed() {
        assert_eq!(value("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(flag("timeout", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            value("5x").unwrap_err(),
            "invalid duration \"5x\": unknown unit; use ms, s, m, h or d (examples: 30s, 5m, 1h30m, 2d)"
        );
        let e = flag("timeout", "5x").unwrap_err();
        assert_eq!(
            gitops::output::error_chain(e.as_ref()),
            format!("--timeout: {}", value("5x").unwrap_err())
        );
    }
}
