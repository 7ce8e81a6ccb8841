//! The `--help` snapshot test every plugin runs (feature `testing`, for
//! the plugins' tests only): the binary's help and each subcommand's, as a
//! user reads it (100 columns, no colour, no environment). Each plugin's
//! `tests/help.rs` is one table, its snapshots in `tests/snapshots/`; a flag,
//! a default or a wording that changes shows up as a snapshot diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` then `git diff`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// `BIN [ARGS…] --help`: its stdout. It must succeed, print nothing on
/// stderr and no colour.
pub fn help(bin: &Path, args: &[&str]) -> Result<String, String> {
    let shown = bin.file_name().unwrap_or(bin.as_os_str()).to_string_lossy();
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || !stderr.is_empty() {
        return Err(format!(
            "{shown} {args:?} --help: {}\n{stdout}\n{stderr}",
            out.status
        ));
    }
    if stdout.contains('\x1b') {
        return Err(format!("{shown} {args:?} --help has colour: {stdout:?}"));
    }
    Ok(stdout)
}

/// The subcommands a top-level help lists under `Commands:` (`help` aside).
pub fn subcommands(top_level: &str) -> BTreeSet<String> {
    top_level
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The help texts to snapshot of `bin`, by snapshot name: `top_level`,
/// then each subcommand of `table` under its own name. Fails when `table`
/// leaves out a subcommand the binary lists, or names one it does not.
pub fn cases(bin: &Path, table: &[&str]) -> Result<Vec<(String, String)>, String> {
    let top = help(bin, &[])?;
    let listed = subcommands(&top);
    let tabled: BTreeSet<String> = table.iter().map(|s| s.to_string()).collect();
    if listed != tabled {
        return Err(format!(
            "the table of subcommands {tabled:?} is not the binary's {listed:?}: \
             give each subcommand its snapshot"
        ));
    }
    let mut out = vec![("top_level".to_string(), top)];
    for sub in table {
        out.push((sub.to_string(), help(bin, &[sub])?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_are_read_from_the_commands_section() {
        let top = "About\n\nUsage: x [OPTIONS] <COMMAND>\n\nCommands:\n  create      Create a \
                   sandbox\n  policy      Print the admission policy that makes namespace \
                   sandboxes a\n              security boundary\n  completion  Print a shell \
                   completion script\n  help        Print this message\n\nOptions:\n  -v, \
                   --verbose\n";
        assert_eq!(
            subcommands(top),
            ["completion", "create", "policy"]
                .map(String::from)
                .into_iter()
                .collect()
        );
    }
}
