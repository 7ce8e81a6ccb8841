//! Opens a file in the user's web browser, without a shell: the commands
//! in `$BROWSER` (a list separated by `:`, `;` on Windows, each a command
//! whose `%s` is replaced by the file, or which gets it as its last
//! argument; the first one that starts wins), then the system's opener:
//! `open` on macOS, `rundll32 url.dll,FileProtocolHandler` on Windows,
//! `xdg-open` elsewhere. What is opened is a file path (the page's
//! launcher), never a secret: other local users can read every process's
//! command line.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// The commands that may open `target`, in the order they are tried.
pub fn commands(browser: Option<&str>, target: &Path) -> Vec<Vec<OsString>> {
    let sep = if cfg!(windows) { ';' } else { ':' };
    let mut out: Vec<Vec<OsString>> = browser
        .unwrap_or_default()
        .split(sep)
        .filter_map(|entry| {
            let words: Vec<&str> = entry.split_whitespace().collect();
            if words.is_empty() {
                return None;
            }
            let mut argv: Vec<OsString> = Vec::new();
            let mut placed = false;
            for w in words {
                if w.contains("%s") {
                    placed = true;
                    let mut parts = w.split("%s");
                    let mut arg = OsString::from(parts.next().unwrap_or_default());
                    for p in parts {
                        arg.push(target.as_os_str());
                        arg.push(p);
                    }
                    argv.push(arg);
                } else {
                    argv.push(w.into());
                }
            }
            if !placed {
                argv.push(target.as_os_str().to_owned());
            }
            Some(argv)
        })
        .collect();
    let system: &[&str] = if cfg!(target_os = "macos") {
        &["open"]
    } else if cfg!(windows) {
        &["rundll32", "url.dll,FileProtocolHandler"]
    } else {
        &["xdg-open"]
    };
    let mut argv: Vec<OsString> = system.iter().map(OsString::from).collect();
    argv.push(target.as_os_str().to_owned());
    out.push(argv);
    out
}

/// Opens `target` in a browser (see the module); the child is reaped in
/// the background.
pub fn open(target: &Path) -> std::io::Result<()> {
    let browser = std::env::var("BROWSER").ok();
    let mut last = None;
    for argv in commands(browser.as_deref(), target) {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        match Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(());
            }
            Err(e) => {
                last = Some(std::io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", program.to_string_lossy()),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no command to open a browser with")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: Vec<Vec<OsString>>) -> Vec<Vec<String>> {
        v.into_iter()
            .map(|a| a.into_iter().map(|s| s.into_string().unwrap()).collect())
            .collect()
    }

    #[test]
    fn browser_commands_follow_the_convention() {
        let t = Path::new("/tmp/x/open.html");
        #[cfg(not(windows))]
        {
            let c = strs(commands(Some("firefox --new-tab:w3m %s -x"), t));
            assert_eq!(
                c[..2],
                [
                    vec!["firefox", "--new-tab", "/tmp/x/open.html"],
                    vec!["w3m", "/tmp/x/open.html", "-x"],
                ]
            );
            assert_eq!(c.len(), 3, "then the system's opener");
            assert_eq!(
                strs(commands(Some("wrap --url=%s"), t))[0],
                ["wrap", "--url=/tmp/x/open.html"]
            );
        }
        let system = strs(commands(None, t));
        assert_eq!(system.len(), 1);
        assert_eq!(system[0].last().unwrap(), "/tmp/x/open.html");
        if cfg!(windows) {
            assert_eq!(system[0][0], "rundll32");
        } else if cfg!(target_os = "macos") {
            assert_eq!(system[0][0], "open");
        } else {
            assert_eq!(system[0][0], "xdg-open");
        }
        assert_eq!(strs(commands(Some(""), t)), system);
    }
}
