//! `build`, `push` and `diff`: the artifact engine on the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use gitops::artifact::{self, WalkOptions};
use gitops::registry::{ArtifactRef, PushOptions, Registry, RegistryOptions};

/// Which files go into the artifact.
#[derive(Args, Debug, Clone)]
pub struct SelectArgs {
    /// Also exclude files matching this gitignore pattern (repeatable). Adds to
    /// Flux's default excludes and every .sourceignore; never replaces them.
    #[arg(long = "ignore", value_name = "PATTERN")]
    ignore: Vec<String>,
    /// Largest file accepted (e.g. 512KiB, 50MiB).
    #[arg(long, value_name = "SIZE", default_value = "50MiB", value_parser = parse_size)]
    max_file_size: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    artifact::parse_size(s).map_err(|e| e.to_string())
}

impl SelectArgs {
    fn walk_options(&self) -> WalkOptions {
        // Flux's semantics: exactly the directory given, Git's rules not applied.
        WalkOptions {
            ignore: self.ignore.clone(),
            max_file_size: self.max_file_size,
            ..Default::default()
        }
    }
}

/// How to reach the registry.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Registry credentials as USER:PASSWORD (default: ~/.docker/config.json
    /// and its credential helpers). Never printed.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = gitops_cli::registry::CREDS_ENV,
        hide_env_values = true
    )]
    creds: Option<String>,
    /// Use plain HTTP for a registry that is not on this machine (loopback
    /// registries always may).
    #[arg(long)]
    insecure_registry: bool,
}

impl RegistryArgs {
    fn options(&self) -> Result<RegistryOptions> {
        Ok(gitops_cli::registry::options(
            self.creds.as_deref(),
            self.insecure_registry,
        )?)
    }
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The directory to package.
    dir: PathBuf,
    /// Where to write the layer (`-` for stdout).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "artifact.tgz"
    )]
    output: PathBuf,
    #[command(flatten)]
    select: SelectArgs,
}

/// The directory to package, refused when it is `/` or the home directory.
fn packaged(dir: &std::path::Path) -> Result<()> {
    artifact::refuse_too_broad(&artifact::canonical_root(dir)?)?;
    Ok(())
}

pub async fn build(args: BuildArgs) -> Result<ExitCode> {
    packaged(&args.dir)?;
    let options = args.select.walk_options();
    let (dir, output) = (args.dir.clone(), args.output.clone());
    let built =
        tokio::task::spawn_blocking(move || artifact::build_to_file(&dir, &options, &output))
            .await??;
    if args.output.as_os_str() == "-" {
        eprintln!("{}", built.layer.digest);
    } else {
        eprintln!(
            "packaged {} ({} entries, {} bytes) into {}",
            args.dir.display(),
            built.entries,
            built.layer.size,
            args.output.display()
        );
        gitops::outln!("{}", built.layer.digest);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The directory to package.
    dir: PathBuf,
    /// Where to push: oci://HOST/REPOSITORY[:TAG] (tag defaults to latest).
    reference: String,
    /// Pin the `created` annotation so the manifest digest depends only on content.
    #[arg(long)]
    reproducible: bool,
    /// Override the `source` annotation (default: the Git remote, else a file:// URL).
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Override the `revision` annotation (default: <branch>@sha1:<commit>).
    #[arg(long, value_name = "REVISION")]
    revision: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub async fn push(args: PushArgs) -> Result<ExitCode> {
    let reference: ArtifactRef = args.reference.parse()?;
    let options = PushOptions {
        walk: args.select.walk_options(),
        reproducible: args.reproducible,
        source: args.source.clone(),
        revision: args.revision.clone(),
    };
    let registry = args.registry.options()?;
    packaged(&args.dir)?;
    let pushed = Registry::new(&reference, &registry)
        .push(&args.dir, &options)
        .await?;
    match args.output {
        Format::Json => gitops::outln!("{}", serde_json::to_string_pretty(&pushed)?),
        Format::Text => {
            let reused = if pushed.uploaded.is_empty() {
                " (all blobs already in the registry)".to_string()
            } else {
                String::new()
            };
            eprintln!(
                "pushed {} ({} entries, layer {} bytes){reused}",
                pushed.reference, pushed.entries, pushed.layer.size
            );
            eprintln!("revision {}", pushed.revision);
            gitops::outln!("{}", pushed.digest_url);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The directory to compare.
    dir: PathBuf,
    /// The artifact: oci://HOST/REPOSITORY[:TAG|@DIGEST].
    reference: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub async fn diff(args: DiffArgs) -> Result<ExitCode> {
    packaged(&args.dir)?;
    let reference: ArtifactRef = args.reference.parse()?;
    let diff = Registry::new(&reference, &args.registry.options()?)
        .diff(&args.dir, &args.select.walk_options())
        .await?;
    match args.output {
        Format::Json => gitops::outln!("{}", serde_json::to_string_pretty(&diff)?),
        Format::Text => {
            for (mark, paths) in [
                ("+", &diff.added),
                ("-", &diff.removed),
                ("~", &diff.changed),
            ] {
                for p in paths {
                    gitops::outln!("{mark} {p}");
                }
            }
            if diff.is_empty() {
                eprintln!("{} matches {reference}", args.dir.display());
            }
        }
    }
    Ok(if diff.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
