//! `kubectl gitops-sessions`: see and manage GitOps Run sessions.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use gitops::output::{ListFormat, serialize, table_with, terminal_line, terminal_text, use_colour};
use gitops::session::readers::admin;
use gitops::session::readers::status::cluster_status;
use gitops::session::readers::view::{self, Filter, HEADERS, SessionView, WIDE, row};
use gitops_cli::completion::CompletionCommand;
use gitops_cli::format::ListFormatArg;
use gitops_cli::kube::KubeFlags;
use kube::Client;

/// List and manage live and stale GitOps Run sessions across the cluster.
#[derive(Parser)]
#[command(
    name = "kubectl gitops-sessions",
    version = gitops::VERSION,
    bin_name = "kubectl gitops-sessions"
)]
struct Cli {
    #[command(flatten)]
    kube: KubeFlags,
    #[command(flatten)]
    verbosity: gitops_cli::Verbosity,
    #[command(flatten)]
    list: ListArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
}

#[derive(clap::Args, Debug, Clone)]
struct ListArgs {
    /// Everyone's sessions in every namespace (default: yours, or all in -n NAMESPACE).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Omit the header row.
    #[arg(long)]
    no_headers: bool,
    /// Keep watching and print sessions as they change.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Label selector to filter on, e.g. gitops.kubectl.dev/sandbox=dev.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List sessions (the default).
    List(ListArgs),
    /// Show one session: status, inventory, conditions and recent events.
    Describe { name: String },
    /// Remove a session's objects in the safe order (refuses a live session without --force).
    Delete {
        name: String,
        /// Delete even though its heartbeat is live (its command keeps running).
        #[arg(long)]
        force: bool,
        /// How long Flux may take to prune what the session applied.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = gitops_cli::duration::value)]
        timeout: Duration,
    },
    /// Delete every session whose heartbeat is stale (crashed or killed commands).
    Prune {
        /// Only sessions stale for at least this long.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = gitops_cli::duration::value)]
        stale_after: Duration,
        /// How long Flux may take to prune what each session applied.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = gitops_cli::duration::value)]
        timeout: Duration,
    },
    /// Stream the logs of a session's pods (prefixed pod/container), following new pods.
    Logs { name: String },
    /// Serve a live web page of sessions and sandboxes on 127.0.0.1.
    Ui {
        /// Port to listen on (default: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Do not open the page in a browser ($BROWSER, else the system's opener).
        #[arg(long)]
        no_open: bool,
    },
    /// The cluster's mode: Run (live sessions), GitOps (Flux-managed namespaces), Snowflake (hand-applied objects).
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: ListFormatArg,
    },
    #[command(flatten)]
    Completion(CompletionCommand),
}

impl gitops_cli::Plugin for Cli {
    const BIN: &'static str = "kubectl-gitops_sessions";

    fn verbosity(&self) -> u8 {
        self.verbosity.verbose
    }

    fn completion(&self) -> Option<&CompletionCommand> {
        match &self.command {
            Some(Command::Completion(c)) => Some(c),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    gitops_cli::main(|cli| async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli) -> Result<()> {
    let cluster = cli.kube.connect().await?;
    let client = cluster.client;
    let namespace = cli.kube.namespace.clone();
    match cli.command {
        None => list(&client, namespace, cli.list).await,
        Some(Command::List(args)) => list(&client, namespace, args).await,
        Some(Command::Describe { name }) => {
            let s = admin::find(&client, namespace.as_deref(), &name).await?;
            // Notes, owners and event messages are others' text: shown, never obeyed.
            let text = admin::describe(&client, &s).await?.render(Utc::now());
            gitops::out!("{}", terminal_text(&text));
            Ok(())
        }
        Some(Command::Delete {
            name,
            force,
            timeout,
        }) => {
            let s = admin::find(&client, namespace.as_deref(), &name).await?;
            let removed = admin::delete(&client, &s, force, timeout).await?;
            for r in &removed {
                gitops::outln!("removed {r}");
            }
            gitops::outln!("session {} deleted", s.name);
            Ok(())
        }
        Some(Command::Prune {
            stale_after,
            timeout,
        }) => {
            let pruned = admin::prune(&client, namespace.as_deref(), stale_after, timeout).await?;
            if pruned.is_empty() {
                gitops::outln!("no stale sessions");
            }
            for p in pruned {
                for r in &p.removed {
                    gitops::outln!("removed {r}");
                }
                gitops::outln!("session {} deleted", p.name);
            }
            Ok(())
        }
        Some(Command::Logs { name }) => {
            let s = admin::find(&client, namespace.as_deref(), &name).await?;
            let Some((ns, all_pods)) = admin::workloads(&client, &s).await? else {
                anyhow::bail!(
                    "session {name} applies into another cluster (a kubeconfig or vcluster sandbox); read its logs there"
                );
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(gitops::session::readers::logs::follow(
                client.clone(),
                ns,
                s.name.clone(),
                s.namespace.clone(),
                all_pods,
                tx,
            ));
            while let Some(l) = rx.recv().await {
                gitops::outln!("{}", log_line(&l));
            }
            Ok(())
        }
        Some(Command::Status { output }) => status(&client, output.into()).await,
        Some(Command::Ui { port, no_open }) => {
            gitops::ui::serve(client, port, !no_open, |r| {
                gitops::outln!("serving the sessions page at {}", r.page);
                gitops::outln!(
                    "sign a browser in with this one-time URL (it works once): {}",
                    r.login
                );
                gitops::outln!("(only this machine can reach it. Ctrl+C to stop)");
                if let Some(Err(e)) = r.opened {
                    gitops::outln!(
                        "could not open a browser ({e}); open the one-time URL above yourself"
                    );
                }
            })
            .await?;
            Ok(())
        }
        Some(Command::Completion(_)) => Ok(()),
    }
}

/// A pod's log line as `logs` prints it: what the workload wrote is shown,
/// never obeyed by the terminal (escape sequences appear as `\x1b[…`).
fn log_line(l: &gitops::session::readers::logs::LogLine) -> String {
    format!(
        "[{}/{}] {}",
        terminal_line(&l.pod),
        terminal_line(&l.container),
        terminal_line(&l.line)
    )
}

fn colour(col: usize, text: &str) -> Option<&'static str> {
    match col {
        6 if text == "Ready" => Some("32"),
        6 if text.starts_with("Failed") => Some("31"),
        6 => Some("33"),
        8 if text == "stale" => Some("33"),
        8 if text == "live" => Some("32"),
        _ => None,
    }
}

fn render(sessions: &[SessionView], args: &ListArgs, headers: bool) -> String {
    render_at(sessions, args, headers, Utc::now())
}

fn render_at(
    sessions: &[SessionView],
    args: &ListArgs,
    headers: bool,
    now: chrono::DateTime<Utc>,
) -> String {
    match args.output {
        Output::Json => serialize(&sessions, ListFormat::Json),
        Output::Yaml => serialize(&sessions, ListFormat::Yaml),
        Output::Name => sessions
            .iter()
            .map(|s| format!("session/{}\n", s.name))
            .collect(),
        Output::Table | Output::Wide => {
            let wide = args.output == Output::Wide;
            let mut h: Vec<&str> = HEADERS.to_vec();
            if wide {
                h.extend(WIDE);
            }
            let rows: Vec<Vec<String>> = sessions.iter().map(|s| row(s, wide, now)).collect();
            let paint: &dyn Fn(usize, &str) -> Option<&'static str> = &colour;
            table_with(
                &h,
                &rows,
                headers && !args.no_headers,
                use_colour().then_some(paint),
            )
        }
    }
}

async fn list(client: &Client, namespace: Option<String>, args: ListArgs) -> Result<()> {
    let owner = (!args.all_namespaces && namespace.is_none()).then(gitops::labels::owner);
    let filter = Filter {
        namespace: if args.all_namespaces { None } else { namespace },
        selector: args.selector.clone(),
        owner,
        name: None,
    };
    if args.watch {
        return watch(client, &filter, &args).await;
    }
    let sessions = view::list(client, &filter).await?;
    if sessions.is_empty() && matches!(args.output, Output::Table | Output::Wide) {
        eprintln!(
            "No sessions found{}.",
            if filter.owner.is_some() {
                " of yours (-A lists everyone's)"
            } else {
                ""
            }
        );
        return Ok(());
    }
    gitops::out!("{}", render(&sessions, &args, true));
    Ok(())
}

type Shown = std::collections::BTreeMap<(String, String), SessionView>;

/// What to print of `now` after `last` was shown: the sessions that are new
/// or whose status, heartbeat or revision changed, and those gone.
fn changes(last: &Shown, now: &Shown) -> (Vec<SessionView>, Vec<String>) {
    let changed = now
        .iter()
        .filter(|(k, s)| {
            last.get(*k).is_none_or(|old| {
                old.status != s.status || old.heartbeat != s.heartbeat || old.revision != s.revision
            })
        })
        .map(|(_, s)| s.clone())
        .collect();
    let gone = last
        .iter()
        .filter(|(k, _)| !now.contains_key(*k))
        .map(|(_, s)| s.name.clone())
        .collect();
    (changed, gone)
}

/// `-w`: the table once, then a line for each session as it changes. One
/// list and then a watch per kind (as `kubectl get -w`), not a list a second.
async fn watch(client: &Client, filter: &Filter, args: &ListArgs) -> Result<()> {
    let key = |s: &SessionView| (s.namespace.clone(), s.name.clone());
    let mut last: Option<Shown> = None;
    view::watch(client, filter, |sessions| {
        let now: Shown = sessions.into_iter().map(|s| (key(&s), s)).collect();
        match &last {
            None => {
                let all: Vec<SessionView> = now.values().cloned().collect();
                gitops::out!("{}", render(&all, args, true));
            }
            Some(last) => {
                let (changed, gone) = changes(last, &now);
                for name in gone {
                    gitops::outln!("{name} deleted");
                }
                if !changed.is_empty() {
                    gitops::out!("{}", render(&changed, args, false));
                }
            }
        }
        last = Some(now);
        true
    })
    .await?;
    Ok(())
}

async fn status(client: &Client, output: ListFormat) -> Result<()> {
    let st = cluster_status(client).await?;
    if matches!(output, ListFormat::Json | ListFormat::Yaml) {
        gitops::out!("{}", serialize(&st, output));
    } else {
        gitops::out!("{}", terminal_text(&st.render()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitops::flux::Condition;
    use gitops::session::readers::admin::{Description, EventLine};
    use gitops::session::readers::view::{Heartbeat, SyncStatus};

    fn at(s: &str) -> Option<chrono::DateTime<Utc>> {
        gitops::duration::parse_time(Some(s))
    }

    fn sessions() -> Vec<SessionView> {
        let web = SessionView {
            name: "run-web-3f9a1c".into(),
            namespace: "run-web-3f9a1c".into(),
            mode: "sandboxed".into(),
            sandbox: Some("run-web-3f9a1c".into()),
            ephemeral_sandbox: true,
            source: "/home/ann/app/deploy".into(),
            revision: format!("latest@sha256:{}", "84c1".repeat(16)),
            status: SyncStatus {
                state: "Ready".into(),
                reason: String::new(),
                message: "Applied revision: latest@sha256:84c1".into(),
            },
            last_sync: at("2026-11-23T11:59:30Z"),
            heartbeat: Heartbeat::Live,
            heartbeat_at: at("2026-11-23T11:59:55Z"),
            user: "ann".into(),
            host: "laptop".into(),
            pid: "4242".into(),
            registry: "127.0.0.1:5000".into(),
            artifact: format!("latest@sha256:{}", "84c1".repeat(16)),
            port_forwards: vec!["resource=svc/web,port=8080".into()],
            version: "0.1.0".into(),
            started: at("2026-11-23T11:00:00Z"),
            inventory: vec![
                "ConfigMap/run-web-3f9a1c/web".into(),
                "Deployment/run-web-3f9a1c/web".into(),
            ],
            lease_duration: Duration::from_secs(30),
        };
        let api = SessionView {
            name: "run-api-77aa01".into(),
            namespace: "default".into(),
            mode: "cluster".into(),
            sandbox: None,
            ephemeral_sandbox: false,
            source: "/home/bob/api".into(),
            revision: String::new(),
            status: SyncStatus {
                state: "Failed".into(),
                reason: "HealthCheckFailed".into(),
                message: "timeout waiting for: [Deployment/default/api status: 'InProgress']"
                    .into(),
            },
            last_sync: None,
            heartbeat: Heartbeat::Stale,
            heartbeat_at: at("2026-11-23T11:00:00Z"),
            user: "bob".into(),
            host: "desk".into(),
            pid: "99".into(),
            registry: "127.0.0.1:5000".into(),
            artifact: String::new(),
            port_forwards: vec![],
            version: "0.1.0".into(),
            started: at("2026-11-23T10:00:00Z"),
            inventory: vec![],
            lease_duration: Duration::from_secs(30),
        };
        vec![api, web]
    }

    fn args(output: Output) -> ListArgs {
        ListArgs {
            all_namespaces: true,
            output,
            no_headers: false,
            watch: false,
            selector: None,
        }
    }

    #[test]
    fn watch_prints_new_changed_and_gone_sessions_only() {
        let shown = |v: Vec<SessionView>| -> Shown {
            v.into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect()
        };
        let [api, web]: [SessionView; 2] = sessions().try_into().unwrap();
        let last = shown(vec![api.clone(), web.clone()]);
        assert_eq!(changes(&last, &last), (vec![], vec![]));
        let mut renewed = web.clone();
        renewed.heartbeat_at = at("2026-11-23T12:00:01Z");
        assert_eq!(
            changes(&last, &shown(vec![api.clone(), renewed])),
            (vec![], vec![])
        );
        let mut failed = web.clone();
        failed.status.state = "Failed".into();
        let mut stale = api.clone();
        stale.heartbeat = Heartbeat::Live;
        assert_eq!(
            changes(&last, &shown(vec![stale.clone(), failed.clone()])),
            (vec![stale, failed], vec![])
        );
        assert_eq!(
            changes(&shown(vec![api.clone()]), &shown(vec![web.clone()])),
            (vec![web], vec![api.name])
        );
    }

    #[test]
    fn table_wide_and_name_output() {
        let now = at("2026-11-23T12:00:00Z").unwrap();
        let s = sessions();
        insta::assert_snapshot!("table", render_at(&s, &args(Output::Table), true, now));
        insta::assert_snapshot!("wide", render_at(&s, &args(Output::Wide), true, now));
        insta::assert_snapshot!("name", render_at(&s, &args(Output::Name), true, now));
    }

    #[test]
    fn describe_text() {
        let now = at("2026-11-23T12:00:00Z").unwrap();
        let d = Description {
            session: sessions().remove(1),
            conditions: vec![
                (
                    "Kustomization",
                    Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: "ReconciliationSucceeded".into(),
                        message: "Applied revision: latest@sha256:84c1".into(),
                        ..Default::default()
                    },
                ),
                (
                    "OCIRepository",
                    Condition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: "Succeeded".into(),
                        message: "stored artifact".into(),
                        ..Default::default()
                    },
                ),
            ],
            events: vec![EventLine {
                at: at("2026-11-23T11:59:29Z"),
                kind: "OCIRepository".into(),
                reason: "NewArtifact".into(),
                message: "stored artifact with revision 'latest@sha256:84c1'".into(),
            }],
        };
        insta::assert_snapshot!(d.render(now));
        assert_eq!(d.revisions(), ["latest@sha256:84c1"]);
    }
}
