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

/// One line for an error and its causes, skipping causes whose text the
/// line already holds (many libraries repeat their source in their message).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Prints `error: …` to stderr and gives the exit code for a failed command.
pub fn report(err: &(dyn std::error::Error + 'static)) -> std::process::ExitCode {
    eprintln!("error: {}", error_chain(err));
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read kubeconfig /x: failed to read: no such file")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("push failed")]
    struct Push(#[source] std::io::Error);

    #[test]
    fn chains_skip_repeated_causes() {
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(
            error_chain(&e),
            "cannot read kubeconfig /x: failed to read: no such file"
        );
        let e = Push(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "push failed: connection refused");
    }
}

/// Output formats of list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

/// Serialises `value` as pretty JSON or YAML.
pub fn serialize<T: serde::Serialize>(value: &T, format: ListFormat) -> String {
    match format {
        ListFormat::Yaml => serde_saphyr::to_string(value).unwrap_or_default(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    }
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let t = table(
            &["NAME", "AGE"],
            &[
                vec!["a-long-name".into(), "5m".into()],
                vec!["b".into(), "1h".into()],
            ],
        );
        assert_eq!(t, "NAME          AGE\na-long-name   5m\nb             1h\n");
    }
}
