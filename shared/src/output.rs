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

/// One line for an error and its causes, leaving out causes whose text the
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

/// Writes to stdout, flushed. Errors are returned, so a caller that must
/// clean up (a live session) can; most callers use [`outln!`](crate::outln)
/// or [`out!`](crate::out), which end the process on a closed pipe.
pub fn try_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// Writes to stdout for a one-shot command. When the reader has gone away
/// (`| head` has read enough) the process ends quietly with status 0, as
/// the output it still had was not wanted; any other write error is
/// reported and ends the process with status 1. Never panics, unlike
/// `println!`.
pub fn stdout(args: std::fmt::Arguments<'_>) {
    if let Err(e) = try_stdout(args) {
        std::process::exit(stdout_failure(&e));
    }
}

/// The exit status for a failed write to stdout, reporting it unless the
/// reader simply went away.
fn stdout_failure(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        0
    } else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
        1
    }
}

/// Writes a line to stderr, ignoring a closed stderr (a status line nobody
/// can read is not worth ending a session over). Never panics, unlike
/// `eprintln!`.
pub fn stderr_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `println!` for the plugins' stdout: see [`output::stdout`](crate::output::stdout).
#[macro_export]
macro_rules! outln {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for the plugins' stdout: see [`output::stdout`](crate::output::stdout).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// Prints `error: …` to stderr and gives the exit code for a failed command.
pub fn report(err: &(dyn std::error::Error + 'static)) -> std::process::ExitCode {
    stderr_line(&format!("error: {}", error_chain(err)));
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
    fn a_closed_pipe_ends_quietly_other_errors_fail() {
        let gone = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(stdout_failure(&gone), 0);
        assert_eq!(stdout_failure(&std::io::Error::other("disk full")), 1);
    }

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

/// Whether to colour output: stdout is a terminal and `NO_COLOR` is unset.
pub fn use_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// ANSI colour code for a cell (`column`, `text`), or `None`.
pub type Colouring<'a> = &'a dyn Fn(usize, &str) -> Option<&'static str>;

/// Left-aligned columns separated by three spaces, as kubectl prints them.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    table_with(headers, rows, true, None)
}

/// [`table`] with optional headers and colours (applied after alignment).
pub fn table_with(
    headers: &[&str],
    rows: &[Vec<String>],
    with_headers: bool,
    colour: Option<Colouring<'_>>,
) -> String {
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
    let header = with_headers.then_some(&header_row);
    for (r, row) in header.into_iter().chain(rows).enumerate() {
        let is_header = with_headers && r == 0;
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let code = if is_header {
                None
            } else {
                colour.and_then(|c| c(i, cell))
            };
            match code {
                Some(code) => line.push_str(&format!("\x1b[{code}m{cell}\x1b[0m")),
                None => line.push_str(cell),
            }
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
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
    fn colours_do_not_break_alignment() {
        let colour = |col: usize, text: &str| (col == 1 && text == "Failed").then_some("31");
        let t = table_with(
            &["A", "B", "C"],
            &[vec!["x".into(), "Failed".into(), "1".into()]],
            false,
            Some(&colour),
        );
        assert_eq!(t, "x   \x1b[31mFailed\x1b[0m   1\n");
    }

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
