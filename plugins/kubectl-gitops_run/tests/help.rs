//! `--help` of `kubectl-gitops_run` and of each of its subcommands, as a user
//! reads it: one snapshot each in `snapshots/` (see `gitops_cli::testing`).

#[test]
fn help() -> Result<(), String> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-gitops_run"));
    let table = ["check", "build", "push", "diff", "lsp", "completion"];
    for (name, text) in gitops_cli::testing::cases(bin, &table)? {
        insta::assert_snapshot!(name, text);
    }
    Ok(())
}
