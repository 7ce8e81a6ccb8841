//! `kubectl gitops-run [DIR]`: the live session.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use gitops::artifact::{self, IgnoreRules, WalkOptions};
use gitops::portforward::ForwardSpec;
use gitops::session::engine::live::{self, Forwards, LiveOptions};
use gitops::session::engine::preflight;
use gitops::session::engine::watch::{DirWatcher, WatchTarget};
use gitops::session::readers::export;
use gitops::session::{self, Event, Mode, Reporter, Session, SessionConfig};
use gitops_cli::kube::KubeFlags;
use gitops_cli::session_dir::SessionDir;
use indicatif::{ProgressBar, ProgressStyle};

use crate::artifact_cmd::Format;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The directory of manifests to sync (default: the current directory).
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Same as DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "dir")]
    path: Option<PathBuf>,
    /// What is packaged, so overlays can reach `../base` (default: the Git
    /// top level of DIR, else DIR).
    #[arg(long, value_name = "DIR")]
    root_dir: Option<PathBuf>,
    /// Session name (default: derived from DIR, unique per user).
    #[arg(long)]
    name: Option<String>,
    /// Apply into this existing sandbox instead of an ephemeral one.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["no_session", "take_over"])]
    sandbox: Option<String>,
    /// Run DIR in place of the Flux Kustomization (or, for a chart, the
    /// HelmRelease) that deploys it from Git, found from DIR's Git remotes and
    /// path, or named (NAMESPACE/NAME, helmrelease/NAMESPACE/NAME): Flux's copy
    /// is suspended until the session stops, then resumed and awaited.
    #[arg(
        long,
        value_name = "[KIND/]NAMESPACE/NAME",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with = "target_namespace"
    )]
    take_over: Option<String>,
    /// Apply straight into the cluster ("cluster mode"), no sandbox.
    #[arg(long)]
    no_session: bool,
    /// Cluster mode: the namespace objects without one go to.
    #[arg(long, value_name = "NAMESPACE", requires = "no_session")]
    target_namespace: Option<String>,
    /// Registry to push to: oci://HOST[:PORT][/PREFIX] (default: $GITOPS_RUN_REGISTRY,
    /// then the cluster's kube-public/local-registry-hosting ConfigMap).
    #[arg(long, value_name = "oci://HOST")]
    registry: Option<String>,
    /// Plain HTTP to a registry that is not on this machine.
    #[arg(long)]
    insecure_registry: bool,
    /// Registry credentials (default: ~/.docker/config.json). Never printed.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = gitops_cli::registry::CREDS_ENV,
        hide_env_values = true
    )]
    creds: Option<String>,
    /// Run on this context even though it does not look local (repeatable).
    #[arg(long = "allow-k8s-context", value_name = "NAME")]
    allow_context: Vec<String>,
    /// Also exclude files matching this gitignore pattern (repeatable).
    #[arg(long = "ignore", value_name = "PATTERN")]
    ignore: Vec<String>,
    /// Largest file accepted in the artifact.
    #[arg(long, value_name = "SIZE", default_value = "50MiB")]
    max_file_size: String,
    /// Sync once, print the result and exit: 0 if Ready, 1 otherwise.
    #[arg(long)]
    once: bool,
    /// Leave the session's objects in the cluster on exit.
    #[arg(long)]
    keep: bool,
    /// Stream the logs of the session's pods (prefixed pod/container),
    /// following the new pods of every rollout.
    #[arg(long)]
    logs: bool,
    /// Watch DIR by polling every second instead of the OS's file events
    /// (automatic on network, VM-shared and FUSE filesystems).
    #[arg(long)]
    poll: bool,
    /// How long Flux may take to apply and health-check a sync.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    timeout: String,
    /// An age key file: stored as a Secret so SOPS-encrypted manifests are decrypted.
    #[arg(long, value_name = "FILE")]
    decryption_key_file: Option<PathBuf>,
    /// Write GitRepository + Kustomization manifests that sync DIR from its Git remote.
    #[arg(long, value_name = "FILE")]
    export_gitops: Option<PathBuf>,
    /// Output: text (spinners on a terminal) or json (one event per line).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    /// Forward a local port to the session's workload, through the API server
    /// (repeatable): resource=svc/NAME,port=LOCAL[:REMOTE] (also deploy/, pod/).
    #[arg(
        long = "port-forward",
        value_name = "resource=svc/NAME,port=LOCAL[:REMOTE]"
    )]
    port_forward: Vec<String>,
    /// Helm charts (DIR holds a Chart.yaml): a values file for the release
    /// (repeatable, later files win; the chart's values.yaml is the base).
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    values: Vec<PathBuf>,
    /// Helm charts, cluster mode: the namespace the release installs into.
    #[arg(long, value_name = "NAMESPACE")]
    release_namespace: Option<String>,
    /// How long the session's heartbeat (Lease) stays valid without renewal.
    #[arg(long, value_name = "DURATION", default_value = "30s", hide = true)]
    lease_duration: String,
    /// How long cleanup on exit may take (Flux pruning what was applied included).
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    cleanup_timeout: String,
}

pub async fn run(kube: &KubeFlags, args: RunArgs) -> Result<ExitCode> {
    let SessionDir { dir, root, path } = SessionDir::resolve(
        args.dir.as_deref().or(args.path.as_deref()),
        args.root_dir.as_deref(),
    )?;
    // Sessions also follow Git's ignore rules; what the sync needs is
    // narrowed per sync (session::packaging).
    let walk = WalkOptions {
        ignore: args.ignore.clone(),
        max_file_size: artifact::parse_size(&args.max_file_size)?,
        git_ignore: true,
        only: None,
        keep: Vec::new(),
    };
    let timeout = gitops_cli::duration::flag("timeout", &args.timeout)?;
    let cleanup_timeout = gitops_cli::duration::flag("cleanup-timeout", &args.cleanup_timeout)?;
    let lease_duration = gitops_cli::duration::flag("lease-duration", &args.lease_duration)?;
    let decryption_key = match &args.decryption_key_file {
        Some(f) => Some(
            std::fs::read(f).with_context(|| format!("--decryption-key-file {}", f.display()))?,
        ),
        None => None,
    };
    let forwards = args
        .port_forward
        .iter()
        .map(|s| s.parse::<ForwardSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    // A busy local port is refused before anything else happens.
    let forwards = Forwards::bind(&forwards).await?;
    let registry_options =
        gitops_cli::registry::options(args.creds.as_deref(), args.insecure_registry)?;
    let values = args
        .values
        .iter()
        .map(|v| std::fs::canonicalize(v).with_context(|| format!("--values {}", v.display())))
        .collect::<Result<Vec<_>>>()?;

    let cluster = kube.connect().await?;
    preflight::check_local_context(
        cluster.context.as_deref(),
        &cluster.server,
        &args.allow_context,
    )?;
    gitops::flux::check_installed(&cluster.client, &cluster.server).await?;
    let env_registry = std::env::var("GITOPS_RUN_REGISTRY").ok();
    let registry = preflight::choose_registry(
        &cluster.client,
        args.registry.as_deref(),
        env_registry.as_deref(),
        args.insecure_registry,
    )
    .await?;
    let owner = gitops::labels::owner();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| session::derive_name(&dir, &owner));
    let printer = Printer::new(args.output);
    let reporter: Reporter = {
        let printer = printer.clone();
        Arc::new(move |e: &Event| printer.print(e))
    };
    let take_over = find_app(&cluster, &dir, args.take_over.as_deref(), &reporter).await?;
    let mode = if args.no_session || take_over.is_some() {
        Mode::Cluster
    } else {
        Mode::Sandboxed
    };
    // Cluster mode: objects that name no namespace go where `kubectl
    // apply` would put them (the context's), or the mix is refused, before
    // anything is pushed.
    let mut target_namespace = args.target_namespace.clone();
    if mode == Mode::Cluster
        && take_over.is_none()
        && target_namespace.is_none()
        && !gitops::helm::is_chart(&dir)
    {
        target_namespace =
            gitops::session::engine::validate::default_namespace(&root, &dir, &cluster.namespace)?;
        if let Some(ns) = &target_namespace {
            reporter(&Event::Message {
                message: format!(
                    "the manifests name no namespace: they go to namespace {ns} (from -n or the context, \
                     as kubectl apply would place them); --target-namespace to choose another"
                ),
            });
        }
    }
    if let Some(file) = &args.export_gitops {
        let text = export::gitops_manifests(&dir, &name, "flux-system")?;
        std::fs::write(file, text)
            .with_context(|| format!("--export-gitops {}", file.display()))?;
    }
    let cfg = SessionConfig {
        name,
        root: root.clone(),
        path,
        mode,
        sandbox: args.sandbox.clone(),
        namespace: cluster.namespace.clone(),
        target_namespace,
        registry_options,
        registry,
        walk: walk.clone(),
        decryption_key,
        timeout,
        lease_duration,
        port_forwards: args.port_forward.clone(),
        values,
        release_namespace: args.release_namespace.clone(),
        owner,
        take_over,
    };
    // Watch before the first sync so saves made during it are not missed.
    // Validates the --ignore patterns before anything else happens.
    IgnoreRules::new(&root, &walk.ignore)?;
    let target = WatchTarget {
        root: root.clone(),
        dir: dir.clone(),
        walk: walk.clone(),
    };
    let backing = if args.poll {
        gitops::session::engine::watch::Backing::Poll
    } else {
        gitops::session::engine::watch::Backing::Auto
    };
    let watcher = DirWatcher::start(target, gitops::session::engine::watch::QUIET, backing, None)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let session = tokio::select! {
        s = Session::start(cluster.client.clone(), cfg, reporter) => s?,
        _ = gitops::process::shutdown_signal() => bail!("interrupted before the session started; nothing was changed"),
    };
    let options = LiveOptions {
        once: args.once,
        keep: args.keep,
        cleanup_timeout,
        export_file: args.export_gitops.clone(),
        logs: args.logs,
    };
    let end = live::run(
        session,
        watcher,
        options,
        forwards,
        gitops::process::shutdown_signal,
        gitops::process::interrupt_signal,
    )
    .await?;
    Ok(ExitCode::from(end.exit_code()))
}

/// The Flux Kustomization to run in place of (`--take-over`): the one that
/// deploys DIR from its Git remotes, or the one named. Without the flag,
/// what deploys DIR is said, and nothing is taken over.
async fn find_app(
    cluster: &gitops::cluster::Cluster,
    dir: &std::path::Path,
    take_over: Option<&str>,
    report: &Reporter,
) -> Result<Option<gitops::takeover::App>> {
    use gitops::takeover::find;
    let client = &cluster.client;
    match take_over {
        Some(id) if !id.is_empty() => {
            let app = find::named(client, id).await?;
            report(&Event::Message {
                message: app.describe(),
            });
            Ok(Some(app))
        }
        Some(_) => {
            let (found, remotes) = find::for_dir(client, dir).await?;
            let app = find::one(found, &dir.display().to_string(), &remotes)?;
            report(&Event::Message {
                message: app.describe(),
            });
            Ok(Some(app))
        }
        None => {
            // Only said: a session never takes over by surprise. A cluster
            // that cannot be asked has nothing to say.
            if let Ok((found, _)) = find::for_dir(client, dir).await {
                for app in found {
                    report(&Event::Message {
                        message: format!(
                            "{}; this session runs beside it. To run your working copy in its \
                             place until you stop: --take-over {}/{}",
                            app.describe(),
                            app.namespace,
                            app.name
                        ),
                    });
                }
            }
            Ok(None)
        }
    }
}

/// Prints session events: spinners on a terminal, plain lines otherwise, or JSON.
#[derive(Clone)]
struct Printer {
    format: Format,
    tty: bool,
    spinner: Arc<Mutex<Option<ProgressBar>>>,
    /// Lines written, instead of stderr (tests).
    captured: Option<Arc<Mutex<Vec<String>>>>,
}

impl Printer {
    fn new(format: Format) -> Printer {
        Printer {
            format,
            tty: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            spinner: Arc::new(Mutex::new(None)),
            captured: None,
        }
    }

    /// Keeps the line (tests); `false` when it is to be written.
    fn capture(&self, text: &str) -> bool {
        match &self.captured {
            Some(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(text.to_string());
                }
                true
            }
            None => false,
        }
    }

    /// Writes a line of text; what others control in it (log lines, Flux's
    /// messages) is shown, never obeyed by the terminal.
    fn out(&self, text: &str) {
        let text = &*gitops::output::terminal_text(text);
        if self.capture(text) {
            return;
        }
        match self.spinner.lock().ok().and_then(|s| s.clone()) {
            Some(pb) => pb.println(text),
            None => gitops::output::stderr_line(text),
        }
    }

    fn finish_spinner(&self, text: &str) {
        let text = &*gitops::output::terminal_text(text);
        if self.capture(text) {
            return;
        }
        let pb = self.spinner.lock().ok().and_then(|mut s| s.take());
        match pb {
            Some(pb) => pb.finish_with_message(text.to_string()),
            None => gitops::output::stderr_line(text),
        }
    }

    fn print(&self, event: &Event) {
        if self.format == Format::Json {
            let line = serde_json::to_string(event).unwrap_or_default();
            // The reader went away (`| jq` exited): end the session as on
            // Ctrl+C so it cleans up, rather than dying or syncing unseen.
            if gitops::output::try_stdout(format_args!("{line}\n")).is_err() {
                gitops::process::output_closed();
            }
            return;
        }
        match event {
            Event::Started {
                session,
                namespace,
                mode,
                sandbox,
                registry,
                root,
                path,
            } => {
                let place = match (mode, sandbox) {
                    (Mode::Sandboxed, Some(s)) => format!("sandbox {s}"),
                    _ => format!("namespace {namespace} (cluster mode)"),
                };
                self.out(&format!(
                    "session {session}: syncing {path} of {root} into {place}, through registry {registry}"
                ));
            }
            Event::PhaseStarted { phase } => {
                if self.tty {
                    let pb = ProgressBar::new_spinner();
                    pb.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.set_message(phase.label());
                    pb.enable_steady_tick(Duration::from_millis(80));
                    if let Ok(mut s) = self.spinner.lock() {
                        *s = Some(pb);
                    }
                }
            }
            Event::PhaseDone {
                phase,
                elapsed_ms,
                detail,
            } => {
                let detail = detail
                    .as_deref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default();
                self.finish_spinner(&format!("  ✓ {} ({elapsed_ms} ms){detail}", phase.label()));
            }
            Event::Unchanged { .. } => {
                self.finish_spinner("  = no change since the last sync; nothing pushed");
            }
            Event::Synced {
                revision,
                changes,
                elapsed_ms,
            } => {
                for c in changes {
                    self.out(&format!("    {} {}", c.object, c.action.as_str()));
                }
                self.out(&format!("  synced {revision} in {elapsed_ms} ms"));
            }
            Event::Failed {
                phase,
                message,
                file,
                last_good,
            } => {
                let file = file
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                let text = format!("  ✗ {} failed{file}: {message}", phase.label());
                self.finish_spinner(&text.replace('\n', "\n      "));
                match last_good {
                    Some(r) => self.out(&format!(
                        "    {} stays applied; fix it and save again",
                        short(r)
                    )),
                    None => self.out("    fix it and save again"),
                }
            }
            Event::Rollout {
                object,
                ready,
                desired,
                done,
            } => {
                if *done {
                    self.out(&format!(
                        "    {object} rolled out ({ready}/{desired} ready)"
                    ));
                } else {
                    self.out(&format!("    {object} {ready}/{desired} ready"));
                }
            }
            Event::Log {
                pod,
                container,
                line,
            } => self.out(&format!(
                "  [{pod}/{container}] {}",
                gitops::output::terminal_line(line)
            )),
            Event::Superseded => {
                self.finish_spinner("  ↷ a newer save arrived; syncing it instead");
            }
            Event::Message { message } => self.out(message),
            Event::Warning { message } => self.out(&format!("  warning: {message}")),
            Event::Cleaned { removed } => {
                for r in removed {
                    self.out(&format!("  removed {r}"));
                }
            }
        }
    }
}

/// `latest@sha256:0123456789ab…` for a revision.
fn short(revision: &str) -> String {
    match revision.split_once("@sha256:") {
        Some((tag, digest)) => format!("{tag}@sha256:{}…", &digest[..digest.len().min(12)]),
        None => revision.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitops::session::{Action, Change, Phase};

    fn text(events: &[Event]) -> String {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let printer = Printer {
            format: Format::Text,
            tty: false,
            spinner: Arc::new(Mutex::new(None)),
            captured: Some(lines.clone()),
        };
        for e in events {
            printer.print(e);
        }
        // `|` keeps the indentation visible (insta trims what is common).
        lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("|{l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn what_others_control_is_shown_not_obeyed() {
        let printed = text(&[
            Event::Log {
                pod: "web-1".into(),
                container: "web".into(),
                line: "ok\r\x1b]52;c;aGk=\x07\u{9b}2J".into(),
            },
            Event::Warning {
                message: "Kustomization/s: Failed: \x1b[1Afake\nsecond line".into(),
            },
        ]);
        assert!(
            !printed.chars().any(|c| c.is_control() && c != '\n'),
            "{printed:?}"
        );
        assert_eq!(
            printed,
            "|  [web-1/web] ok\\r\\x1b]52;c;aGk=\\x07\\u{9b}2J\n\
             |  warning: Kustomization/s: Failed: \\x1b[1Afake\nsecond line"
        );
    }

    #[test]
    fn rollouts_print_as_plain_lines() {
        let rollout = |ready, done| Event::Rollout {
            object: "Deployment/NS/web".into(),
            ready,
            desired: 3,
            done,
        };
        insta::assert_snapshot!(text(&[
            Event::PhaseStarted { phase: Phase::Apply },
            rollout(1, false),
            rollout(3, true),
            Event::PhaseDone {
                phase: Phase::Apply,
                elapsed_ms: 2100,
                detail: None,
            },
            Event::Synced {
                revision: "latest@sha256:0123456789abcdef".into(),
                changes: vec![Change {
                    object: "Deployment/NS/web".into(),
                    action: Action::Configured,
                }],
                elapsed_ms: 2500,
            },
            rollout(0, false),
            Event::Failed {
                phase: Phase::Apply,
                message: "the rollout cannot succeed: Deployment/NS/web: pod web-abc is running but not ready (readiness probe failing)".into(),
                file: Some("deploy/web.yaml".into()),
                last_good: Some("latest@sha256:0123456789abcdef".into()),
            },
        ]), @r"
        |    Deployment/NS/web 1/3 ready
        |    Deployment/NS/web rolled out (3/3 ready)
        |  ✓ applied and healthy (2100 ms)
        |    Deployment/NS/web configured
        |  synced latest@sha256:0123456789abcdef in 2500 ms
        |    Deployment/NS/web 0/3 ready
        |  ✗ applied and healthy failed (deploy/web.yaml): the rollout cannot succeed: Deployment/NS/web: pod web-abc is running but not ready (readiness probe failing)
        |    latest@sha256:0123456789ab… stays applied; fix it and save again
        ");
    }
}
