//! Output helpers shared by the plugins: stdout that survives a closed pipe,
//! error chains, list formats and tables, and the one place that makes text
//! a remote party controls (pod logs, Lease annotations, event messages)
//! safe to write to a terminal. Logging set-up and the `error: …` line of a
//! failed command are the CLI crate's (`gitops_cli`).

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

/// `text` made safe for a terminal: every control character but tab and
/// newline (C0, DEL, and the C1 range U+0080–U+009F, which some terminals
/// read as CSI/OSC/…) is shown as a visible escape (`\x1b`, `\u{9b}`), so
/// a workload cannot move the cursor, rewrite the screen, set the clipboard
/// (OSC 52) or plant hyperlinks (OSC 8) in the user's terminal. Anything
/// else, printable Unicode included, is kept as it is. For every non-JSON
/// output of text that others control; `-o json` keeps the bytes.
pub fn terminal_text(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, true)
}

/// [`terminal_text`] for one line or table cell: newlines are escaped too
/// (`\n`), so the text cannot forge a line of its own.
pub fn terminal_line(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, false)
}

/// Whether `c` is neutralised by [`terminal_text`] (`newlines`: kept).
fn is_unsafe(c: char, newlines: bool) -> bool {
    match c {
        '\t' => false,
        '\n' => !newlines,
        c => c.is_control(),
    }
}

fn escape_controls(text: &str, newlines: bool) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c, newlines)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c, newlines) {
            out.push(c);
        } else if c == '\n' {
            out.push_str("\\n");
        } else if c == '\r' {
            out.push_str("\\r");
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod terminal_tests {
    use super::*;

    /// No byte a terminal acts on is left: ESC, CSI (C1 U+009B), OSC (U+009D), BEL, CR.
    fn inert(s: &str) -> bool {
        !s.chars().any(|c| c.is_control() && c != '\t' && c != '\n')
    }

    #[test]
    fn plain_text_is_kept_as_it_is() {
        for s in ["listening on :8080", "tab\there", "été ✓ 日本", ""] {
            assert!(
                matches!(terminal_text(s), std::borrow::Cow::Borrowed(_)),
                "{s}"
            );
            assert_eq!(terminal_line(s), s);
        }
        assert_eq!(terminal_text("a\nb"), "a\nb");
        assert_eq!(terminal_line("a\nb"), "a\\nb");
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let cases = [
            // OSC 52: set the clipboard.
            (
                "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07",
                "\\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\\x07",
            ),
            // OSC 8: a hyperlink whose text lies about its target.
            (
                "\x1b]8;;https://evil.example\x1b\\docs\x1b]8;;\x1b\\",
                "\\x1b]8;;https://evil.example\\x1b\\docs\\x1b]8;;\\x1b\\",
            ),
            // CSI: cursor up and erase the line, colours.
            ("ok\x1b[1A\x1b[2Kfaked", "ok\\x1b[1A\\x1b[2Kfaked"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            // A lone ESC, at the end.
            ("end\x1b", "end\\x1b"),
            // C1 controls as UTF-8 characters: CSI (U+009B), OSC (U+009D), ST (U+009C).
            (
                "\u{9b}2J\u{9d}0;title\u{9c}",
                "\\u{9b}2J\\u{9d}0;title\\u{9c}",
            ),
            // Carriage return overwrites the line; backspace, NUL, DEL.
            ("safe\rEVIL", "safe\\rEVIL"),
            ("a\x08\x00\x7fb", "a\\x08\\x00\\x7fb"),
        ];
        for (raw, shown) in cases {
            let t = terminal_text(raw);
            assert_eq!(t, shown, "{raw:?}");
            assert!(inert(&t), "{t:?}");
            assert!(inert(&terminal_line(raw)), "{raw:?}");
        }
    }

    #[test]
    fn table_cells_cannot_break_out() {
        let t = table(
            &["NAME", "NOTE"],
            &[vec!["a".into(), "x\x1b]52;c;aGk=\x07\nforged   row".into()]],
        );
        assert!(inert(&t.replace('\n', "")), "{t:?}");
        assert_eq!(t.lines().count(), 2, "{t}");
    }
}

/// Output formats of list commands (the plugins' `-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    // Cells hold text others control (notes, owners): shown, never obeyed.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_line(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
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
