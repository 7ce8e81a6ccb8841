//! `--help` of `kubectl-gitops_sessions` and of each of its subcommands, as a user
//! reads it (100 columns, no colour, no environment): a flag, a default or a
//! wording that changes shows up as a snapshot diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` then `git diff`).

use std::process::Command;

/// `kubectl-gitops_sessions [ARGS…] --help`: its stdout. It must succeed and print
/// nothing else.
fn help(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-gitops_sessions"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run kubectl-gitops_sessions: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.is_empty(),
        "kubectl-gitops_sessions {args:?} --help: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stdout.contains('\x1b'), "no colour: {stdout:?}");
    Ok(stdout)
}

#[test]
fn top_level() -> Result<(), String> {
    insta::assert_snapshot!("top_level", help(&[])?);
    Ok(())
}

#[test]
fn list() -> Result<(), String> {
    insta::assert_snapshot!("list", help(&["list"])?);
    Ok(())
}

#[test]
fn describe() -> Result<(), String> {
    insta::assert_snapshot!("describe", help(&["describe"])?);
    Ok(())
}

#[test]
fn delete() -> Result<(), String> {
    insta::assert_snapshot!("delete", help(&["delete"])?);
    Ok(())
}

#[test]
fn prune() -> Result<(), String> {
    insta::assert_snapshot!("prune", help(&["prune"])?);
    Ok(())
}

#[test]
fn logs() -> Result<(), String> {
    insta::assert_snapshot!("logs", help(&["logs"])?);
    Ok(())
}

#[test]
fn ui() -> Result<(), String> {
    insta::assert_snapshot!("ui", help(&["ui"])?);
    Ok(())
}

#[test]
fn status() -> Result<(), String> {
    insta::assert_snapshot!("status", help(&["status"])?);
    Ok(())
}

#[test]
fn completion() -> Result<(), String> {
    insta::assert_snapshot!("completion", help(&["completion"])?);
    Ok(())
}
