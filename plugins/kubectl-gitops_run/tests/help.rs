//! `--help` of `kubectl-gitops_run` and of each of its subcommands, as a user
//! reads it (100 columns, no colour, no environment): a flag, a default or a
//! wording that changes shows up as a snapshot diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test` then `git diff`).

use std::process::Command;

/// `kubectl-gitops_run [ARGS…] --help`: its stdout. It must succeed and print
/// nothing else.
fn help(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-gitops_run"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run kubectl-gitops_run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.is_empty(),
        "kubectl-gitops_run {args:?} --help: {}\n{stdout}\n{stderr}",
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
fn check() -> Result<(), String> {
    insta::assert_snapshot!("check", help(&["check"])?);
    Ok(())
}

#[test]
fn build() -> Result<(), String> {
    insta::assert_snapshot!("build", help(&["build"])?);
    Ok(())
}

#[test]
fn push() -> Result<(), String> {
    insta::assert_snapshot!("push", help(&["push"])?);
    Ok(())
}

#[test]
fn diff() -> Result<(), String> {
    insta::assert_snapshot!("diff", help(&["diff"])?);
    Ok(())
}

#[test]
fn completion() -> Result<(), String> {
    insta::assert_snapshot!("completion", help(&["completion"])?);
    Ok(())
}
