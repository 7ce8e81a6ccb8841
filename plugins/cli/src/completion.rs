//! Shell completion for the plugins.
//!
//! - `completion bash|zsh|fish` prints a script for the plugin's own binary.
//! - kubectl (1.26+) completes plugin arguments by running an executable
//!   named `kubectl_complete-<plugin>` with the words typed so far; it speaks
//!   cobra's `__complete` protocol: candidates one per line, then
//!   `:<directive>`. Each plugin answers it through a hidden `__complete`
//!   subcommand, and the archives ship the tiny `kubectl_complete-*` scripts.

use clap::Command;

/// cobra's ShellCompDirectiveDefault: the shell may also complete file names.
pub const DIRECTIVE_DEFAULT: u8 = 0;
/// cobra's ShellCompDirectiveNoFileComp.
pub const DIRECTIVE_NO_FILES: u8 = 4;

/// Candidates for the last of `words` (the word being typed), in cobra's
/// `__complete` output format.
pub fn cobra_complete(cmd: &Command, words: &[String]) -> String {
    let (typed, before) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut current = cmd;
    for word in before {
        if word.starts_with('-') {
            continue;
        }
        if let Some(sub) = current
            .get_subcommands()
            .find(|s| s.get_name() == word || s.get_all_aliases().any(|a| a == word))
        {
            current = sub;
        }
    }
    let mut out = Vec::new();
    let mut directive = DIRECTIVE_NO_FILES;
    if typed.starts_with('-') {
        for arg in current.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                if flag.starts_with(typed) {
                    out.push(match arg.get_help() {
                        Some(help) => format!("{flag}\t{}", first_line(&help.to_string())),
                        None => flag,
                    });
                }
            }
        }
    } else {
        for sub in current
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            if sub.get_name().starts_with(typed) {
                out.push(match sub.get_about() {
                    Some(about) => {
                        format!("{}\t{}", sub.get_name(), first_line(&about.to_string()))
                    }
                    None => sub.get_name().to_string(),
                });
            }
        }
        // A positional argument (a directory, a file) may follow: let the shell offer paths.
        if current.get_positionals().next().is_some() {
            directive = DIRECTIVE_DEFAULT;
        }
    }
    out.push(format!(":{directive}"));
    out.join("\n") + "\n"
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The completion subcommands every plugin has (flattened into its own).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CompletionCommand {
    /// Print a shell completion script: bash, zsh or fish.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// kubectl's plugin completion protocol (run by kubectl_complete-*).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

impl CompletionCommand {
    /// Answers on stdout; `cmd` is the plugin's whole command, `bin` its binary name.
    pub fn run(&self, mut cmd: Command, bin: &str) {
        use std::io::Write;
        let out = match self {
            CompletionCommand::Completion { shell } => script(&mut cmd, *shell, bin),
            CompletionCommand::Complete { words } => cobra_complete(&cmd, words).into_bytes(),
        };
        let _ = std::io::stdout().write_all(&out);
    }
}

/// The script of a shell, for `completion SHELL`.
pub fn script(cmd: &mut Command, shell: clap_complete::Shell, bin: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, cmd, bin, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("kubectl-gitops_run")
            .arg(Arg::new("dir"))
            .arg(
                Arg::new("once")
                    .long("once")
                    .action(ArgAction::SetTrue)
                    .help("Sync once"),
            )
            .arg(Arg::new("name").long("name"))
            .subcommand(
                Command::new("build")
                    .about("Package DIR")
                    .arg(Arg::new("dir"))
                    .arg(Arg::new("ignore").long("ignore")),
            )
            .subcommand(Command::new("push").about("Push DIR"))
            .subcommand(Command::new("secret").hide(true))
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn completes_subcommands_then_lets_the_shell_offer_paths() {
        assert_eq!(
            cobra_complete(&cli(), &words(&[""])),
            "build\tPackage DIR\npush\tPush DIR\n:0\n"
        );
        assert_eq!(
            cobra_complete(&cli(), &words(&["pu"])),
            "push\tPush DIR\n:0\n"
        );
    }

    #[test]
    fn completes_flags_of_the_current_subcommand() {
        assert_eq!(
            cobra_complete(&cli(), &words(&["--o"])),
            "--once\tSync once\n:4\n"
        );
        assert_eq!(
            cobra_complete(&cli(), &words(&["build", "--ig"])),
            "--ignore\n:4\n"
        );
    }
}
