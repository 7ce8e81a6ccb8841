//! The language server: its state (the workspace, the sessions that sync
//! it, the open documents, the diagnostics last published) and its answers.
//! Diagnostics are published as soon as a session's record changes — one
//! per cause, on the line [`super::mapping`] finds — and cleared when a
//! later sync no longer has them; only the files whose diagnostics changed
//! are sent again. Requests: `initialize`, `shutdown`, `textDocument/hover`
//! (the object's live state), `textDocument/codeLens` (one per document),
//! `workspace/executeCommand` (`gitops.syncNow`, `gitops.stopSession`,
//! `gitops.startSession`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kube::Client;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use super::LspError;
use super::mapping::{self, Place};
use super::protocol::{self as p, Diagnostic, Position, Range};
use super::sessions::{self, Known, Update};
use crate::session::record::problems::Problem;

pub const SYNC_NOW: &str = "gitops.syncNow";
pub const STOP_SESSION: &str = "gitops.stopSession";
pub const START_SESSION: &str = "gitops.startSession";

/// How the server starts a session for the workspace (`gitops.startSession`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `kubectl-gitops_run` program (the server's own executable).
    pub program: Option<PathBuf>,
    /// Arguments before DIR (the connection flags the server was given);
    /// the client's `initializationOptions.runArgs` follow them.
    pub args: Vec<String>,
}

/// Serves one client on `input`/`output` until it exits (or closes the
/// stream). `client`: the cluster (`None`: unreachable, said once to the
/// editor; no session is shown).
pub async fn serve<R, W>(
    input: R,
    mut output: W,
    client: Option<Client>,
    options: Options,
) -> Result<(), LspError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(input);
        loop {
            let m = p::read_message(&mut r).await;
            let end = !matches!(m, Ok(Some(_)));
            if msg_tx.send(m).is_err() || end {
                return;
            }
        }
    });
    let (upd_tx, mut upd_rx) = mpsc::unbounded_channel();
    let mut server = Server::new(client, options, upd_tx);
    let result = loop {
        let out = tokio::select! {
            m = msg_rx.recv() => match m {
                Some(Ok(Some(msg))) => server.handle(msg).await,
                Some(Ok(None)) | None => break Ok(()),
                Some(Err(e)) => break Err(e),
            },
            Some(u) = upd_rx.recv() => {
                server.update(u);
                server.publish()
            }
        };
        let mut failed = None;
        for m in &out {
            if let Err(e) = p::write_message(&mut output, m).await {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if server.exit {
            break Ok(());
        }
    };
    reader.abort();
    server.stop_child();
    result
}

/// [`serve`] on this process's stdin and stdout. Both are copied by plain
/// threads (a blocked read of stdin never holds up the runtime's exit).
pub async fn serve_stdio(client: Option<Client>, options: Options) -> Result<(), LspError> {
    use std::io::{Read as _, Write as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let handle = tokio::runtime::Handle::current();
    let (input, mut to_server) = tokio::io::duplex(1 << 16);
    let h = handle.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if h.block_on(to_server.write_all(&buf[..n])).is_err() {
                return;
            }
        }
    });
    let (output, mut from_server) = tokio::io::duplex(1 << 16);
    let copier = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = match handle.block_on(from_server.read(&mut buf)) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if stdout
                .write_all(&buf[..n])
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return;
            }
        }
    });
    let result = serve(input, output, client, options).await;
    // The output is closed: what was written reaches stdout before the end.
    let _ = tokio::task::spawn_blocking(move || copier.join()).await;
    result
}

/// What the server holds.
pub struct Server {
    client: Option<Client>,
    options: Options,
    updates: mpsc::UnboundedSender<Update>,
    watching: Option<tokio::task::JoinHandle<()>>,
    root: Option<PathBuf>,
    run_args: Vec<String>,
    initialized: bool,
    exit: bool,
    sessions: BTreeMap<(String, String), Known>,
    /// Per URI, the diagnostics last published (none: not in the map).
    published: BTreeMap<String, Vec<Diagnostic>>,
    /// Problems no file names, last said to the user.
    said: BTreeSet<String>,
    /// Open documents' text, by URI.
    open: BTreeMap<String, String>,
    /// The session this server started (`gitops.startSession`).
    child: Option<tokio::process::Child>,
    /// `user@host`: only sessions run by this user on this machine sync
    /// these files.
    me: String,
    /// Whether the client asks for code lenses again when told to
    /// (`workspace/codeLens/refresh`), and what they last showed.
    lens_refresh: bool,
    lens_state: String,
    requests: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(w) = self.watching.take() {
            w.abort();
        }
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn short_revision(r: &str) -> String {
    match r.split_once("sha256:") {
        Some((head, digest)) => format!(
            "{head}sha256:{}",
            digest.chars().take(12).collect::<String>()
        ),
        None => r.to_string(),
    }
}

fn diagnostic(p: &Problem, at: &Place) -> Diagnostic {
    let line = u32::try_from(at.line).unwrap_or(u32::MAX);
    let col = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
    Diagnostic {
        range: Range {
            start: Position {
                line,
                character: col(at.column),
            },
            end: Position {
                line,
                character: col(at.end_column.max(at.column + 1)),
            },
        },
        severity: if p.reason == "Unready" {
            p::SEVERITY_WARNING
        } else {
            p::SEVERITY_ERROR
        },
        code: p.reason.clone(),
        source: p::SOURCE,
        message: p.message.clone(),
    }
}

impl Server {
    pub fn new(
        client: Option<Client>,
        options: Options,
        updates: mpsc::UnboundedSender<Update>,
    ) -> Server {
        Server {
            client,
            options,
            updates,
            watching: None,
            root: None,
            run_args: Vec::new(),
            initialized: false,
            exit: false,
            sessions: BTreeMap::new(),
            published: BTreeMap::new(),
            said: BTreeSet::new(),
            open: BTreeMap::new(),
            child: None,
            me: crate::process::owner(),
            lens_refresh: false,
            lens_state: String::new(),
            requests: 0,
        }
    }

    /// Answers one message from the client: what to send back.
    pub async fn handle(&mut self, msg: Value) -> Vec<Value> {
        let method = msg["method"].as_str().unwrap_or_default().to_string();
        let id = msg.get("id").cloned();
        let params = &msg["params"];
        let Some(id) = id else {
            return self.notified(&method, params);
        };
        if method.is_empty() {
            // A response to a request of ours: none is sent.
            return Vec::new();
        }
        if !self.initialized && method != "initialize" {
            return vec![p::error_response(
                &id,
                p::SERVER_NOT_INITIALIZED,
                "the server is not initialized yet",
            )];
        }
        match method.as_str() {
            "initialize" => self.initialize(&id, params),
            "shutdown" => vec![p::response(&id, Value::Null)],
            "textDocument/hover" => vec![self.hover(&id, params).await],
            "textDocument/codeLens" => vec![p::response(&id, self.code_lenses(params))],
            "workspace/executeCommand" => self.execute(&id, params).await,
            _ => vec![p::error_response(
                &id,
                p::METHOD_NOT_FOUND,
                &format!("{method} is not supported by this server"),
            )],
        }
    }

    fn initialize(&mut self, id: &Value, params: &Value) -> Vec<Value> {
        let root = params["rootUri"]
            .as_str()
            .and_then(p::path_of_uri)
            .or_else(|| params["rootPath"].as_str().map(PathBuf::from))
            .or_else(|| {
                params["workspaceFolders"][0]["uri"]
                    .as_str()
                    .and_then(p::path_of_uri)
            });
        self.root = root.as_deref().map(canonical);
        self.run_args = params["initializationOptions"]["runArgs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        self.lens_refresh = params["capabilities"]["workspace"]["codeLens"]["refreshSupport"]
            .as_bool()
            .unwrap_or(false);
        self.initialized = true;
        let mut out = vec![p::response(
            id,
            json!({
                "capabilities": {
                    "textDocumentSync": {"openClose": true, "change": 1, "save": {"includeText": false}},
                    "hoverProvider": true,
                    "codeLensProvider": {"resolveProvider": false},
                    "executeCommandProvider": {"commands": [SYNC_NOW, STOP_SESSION, START_SESSION]},
                },
                "serverInfo": {"name": "kubectl-gitops-run", "version": crate::VERSION},
            }),
        )];
        match &self.client {
            Some(client) if self.watching.is_none() => {
                self.watching = Some(tokio::spawn(sessions::watch(
                    client.clone(),
                    self.updates.clone(),
                )));
            }
            Some(_) => {}
            None => out.push(p::notification(
                "window/showMessage",
                json!({"type": 2, "message": "gitops-run: the cluster cannot be reached (see the kubeconfig's current context); no session is shown"}),
            )),
        }
        out
    }

    fn notified(&mut self, method: &str, params: &Value) -> Vec<Value> {
        let uri = params["textDocument"]["uri"].as_str().map(str::to_string);
        match (method, uri) {
            ("exit", _) => {
                self.exit = true;
                Vec::new()
            }
            ("textDocument/didOpen", Some(uri)) => {
                let text = params["textDocument"]["text"].as_str().unwrap_or_default();
                self.open.insert(uri, text.to_string());
                Vec::new()
            }
            ("textDocument/didChange", Some(uri)) => {
                if let Some(text) = params["contentChanges"]
                    .as_array()
                    .and_then(|c| c.last())
                    .and_then(|c| c["text"].as_str())
                {
                    self.open.insert(uri, text.to_string());
                }
                Vec::new()
            }
            ("textDocument/didClose", Some(uri)) => {
                self.open.remove(&uri);
                Vec::new()
            }
            // The lines of a problem may have moved: placed again.
            ("textDocument/didSave", Some(_)) => self.publish(),
            _ => Vec::new(),
        }
    }

    /// Takes in a change of the sessions.
    pub fn update(&mut self, u: Update) {
        match u {
            Update::All(all) => {
                self.sessions = all
                    .into_iter()
                    .map(|k| ((k.namespace.clone(), k.name.clone()), k))
                    .collect();
            }
            Update::Changed(k) => {
                self.sessions
                    .insert((k.namespace.clone(), k.name.clone()), *k);
            }
            Update::Gone { namespace, name } => {
                self.sessions.remove(&(namespace, name));
            }
        }
    }

    /// The running sessions that sync the workspace (or a directory in it).
    fn relevant(&self) -> impl Iterator<Item = &Known> {
        self.sessions.values().filter(|s| {
            let dir = Path::new(&s.record.dir);
            s.running()
                && s.holder == self.me
                && self
                    .root
                    .as_ref()
                    .is_some_and(|r| dir.starts_with(r) || r.starts_with(dir))
        })
    }

    /// The session whose files include `file`: its directory's, else its
    /// root's (an overlay's base), else the workspace's only one.
    fn session_for(&self, file: &Path) -> Option<&Known> {
        let all: Vec<&Known> = self.relevant().collect();
        all.iter()
            .find(|s| file.starts_with(&s.record.dir))
            .or_else(|| {
                all.iter()
                    .find(|s| !s.record.root.is_empty() && file.starts_with(&s.record.root))
            })
            .or(all.first())
            .copied()
    }

    /// Every problem of the relevant sessions, placed (or not).
    fn placed(&self) -> (BTreeMap<String, Vec<Diagnostic>>, BTreeSet<String>) {
        let mut by_uri: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
        let mut unplaced = BTreeSet::new();
        for s in self.relevant() {
            let dir = Path::new(&s.record.dir);
            let root = if s.record.root.is_empty() {
                dir
            } else {
                Path::new(&s.record.root)
            };
            for problem in &s.record.problems {
                // Only files of the session (a record names them; it is
                // no reason to read others).
                match mapping::locate(root, dir, problem).filter(|at| at.file.starts_with(root)) {
                    Some(at) => by_uri
                        .entry(p::uri_of_path(&at.file))
                        .or_default()
                        .push(diagnostic(problem, &at)),
                    None => {
                        unplaced.insert(format!(
                            "gitops-run: session {}: {}",
                            s.name, problem.message
                        ));
                    }
                }
            }
        }
        for d in by_uri.values_mut() {
            d.sort();
            d.dedup();
        }
        (by_uri, unplaced)
    }

    /// The notifications that bring the editor up to date: the files
    /// whose diagnostics changed (an empty list clears), and problems that
    /// no file names, once.
    pub fn publish(&mut self) -> Vec<Value> {
        let (now, unplaced) = self.placed();
        let mut out = Vec::new();
        let uris: BTreeSet<String> = now.keys().chain(self.published.keys()).cloned().collect();
        for uri in uris {
            let new = now.get(&uri).cloned().unwrap_or_default();
            if self.published.get(&uri).cloned().unwrap_or_default() == new {
                continue;
            }
            out.push(p::notification(
                "textDocument/publishDiagnostics",
                json!({"uri": uri, "diagnostics": new}),
            ));
            if new.is_empty() {
                self.published.remove(&uri);
            } else {
                self.published.insert(uri, new);
            }
        }
        // What the code lenses show changed: the client asks again.
        let lens_state = self
            .relevant()
            .map(|s| {
                format!(
                    "{}/{} {:?} {}",
                    s.namespace,
                    s.name,
                    s.record.last,
                    s.record.problems.len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        if lens_state != self.lens_state {
            self.lens_state = lens_state;
            if self.lens_refresh {
                self.requests += 1;
                out.push(json!({"jsonrpc": "2.0", "id": format!("gitops-run-{}", self.requests), "method": "workspace/codeLens/refresh"}));
            }
        }
        for m in unplaced.difference(&self.said) {
            out.push(p::notification(
                "window/showMessage",
                json!({"type": 1, "message": m}),
            ));
        }
        self.said = unplaced;
        out
    }

    fn text_of(&self, uri: &str) -> Option<String> {
        self.open
            .get(uri)
            .cloned()
            .or_else(|| std::fs::read_to_string(p::path_of_uri(uri)?).ok())
    }

    async fn hover(&self, id: &Value, params: &Value) -> Value {
        let uri = params["textDocument"]["uri"].as_str().unwrap_or_default();
        let line = params["position"]["line"].as_u64().unwrap_or(0);
        let (Some(text), Some(path)) = (self.text_of(uri), p::path_of_uri(uri)) else {
            return p::response(id, Value::Null);
        };
        let Some(doc) = mapping::doc_at(&text, usize::try_from(line).unwrap_or(usize::MAX)) else {
            return p::response(id, Value::Null);
        };
        let (Some(kind), Some(name)) = (doc.kind.clone(), doc.name.clone()) else {
            return p::response(id, Value::Null);
        };
        let Some(session) = self.session_for(&path).cloned() else {
            return p::response(
                id,
                json!({"contents": {"kind": "markdown", "value": format!("**{kind}/{name}**: no GitOps Run session syncs this directory (`kubectl gitops-run DIR`, or the command *gitops-run: start a session*)")}}),
            );
        };
        let live = match &self.client {
            Some(c) => sessions::live(c, &session, &kind, &name).await,
            None => sessions::Live::default(),
        };
        let mut md = vec![format!(
            "**{}** · session `{}` ({})",
            live.object.clone().unwrap_or(format!("{kind}/{name}")),
            session.name,
            session.holder
        )];
        if live.object.is_none() {
            md.push("not applied by the session (yet)".into());
        }
        md.extend(live.state.iter().cloned());
        if let Some(last) = &session.record.last {
            md.push(format!(
                "last sync: {} at {}, revision `{}`",
                last.status,
                last.at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default(),
                short_revision(&last.revision)
            ));
        }
        if let Some(a) = &live.applier {
            md.push(format!("Flux: {a}"));
        }
        let here = self.published.get(uri).cloned().unwrap_or_default();
        for d in here.iter().filter(|d| {
            let l = d.range.start.line as usize;
            (doc.start..doc.end).contains(&l)
        }) {
            md.push(format!("✗ {}: {}", d.code, d.message));
        }
        p::response(
            id,
            json!({"contents": {"kind": "markdown", "value": md.join("\n\n")}}),
        )
    }

    fn code_lenses(&self, params: &Value) -> Value {
        let uri = params["textDocument"]["uri"].as_str().unwrap_or_default();
        let (Some(text), Some(path)) = (self.text_of(uri), p::path_of_uri(uri)) else {
            return json!([]);
        };
        let session = self.session_for(&path);
        let here = self.published.get(uri).cloned().unwrap_or_default();
        let mut lenses = Vec::new();
        for (i, doc) in mapping::documents(&text).iter().enumerate() {
            if doc.kind.is_none() || doc.name.is_none() {
                continue;
            }
            let line = u32::try_from(doc.start).unwrap_or(u32::MAX);
            let range = json!({"start": {"line": line, "character": 0}, "end": {"line": line, "character": 0}});
            let Some(s) = session else {
                if i == 0 {
                    lenses.push(json!({"range": range, "command": {"title": "▶ gitops-run: start a session", "command": START_SESSION, "arguments": [uri]}}));
                }
                continue;
            };
            let problems: Vec<&Diagnostic> = here
                .iter()
                .filter(|d| (doc.start..doc.end).contains(&(d.range.start.line as usize)))
                .collect();
            let title = match (problems.first(), &s.record.last) {
                (Some(d), _) => format!(
                    "✗ {} ({} problem{}) · sync now",
                    d.code,
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ),
                (None, Some(last)) => format!(
                    "{} {} {} · sync now",
                    if last.status == "Ready" { "✓" } else { "✗" },
                    last.status,
                    short_revision(&last.revision)
                ),
                (None, None) => "… not synced yet · sync now".to_string(),
            };
            lenses.push(json!({"range": range, "command": {"title": title, "command": SYNC_NOW, "arguments": [uri]}}));
            if i == 0 {
                lenses.push(json!({"range": range, "command": {"title": format!("■ stop session {}", s.name), "command": STOP_SESSION, "arguments": [uri]}}));
            }
        }
        Value::Array(lenses)
    }

    /// The session a command is about: its first argument (a file URI),
    /// else the workspace's.
    fn command_session(&self, params: &Value) -> Option<Known> {
        let file = params["arguments"][0]
            .as_str()
            .and_then(p::path_of_uri)
            .or_else(|| self.root.clone())?;
        self.session_for(&file).cloned()
    }

    async fn execute(&mut self, id: &Value, params: &Value) -> Vec<Value> {
        let command = params["command"].as_str().unwrap_or_default();
        let fail = |m: String| vec![p::error_response(id, p::REQUEST_FAILED, &m)];
        match command {
            SYNC_NOW => {
                let (Some(s), Some(c)) = (self.command_session(params), &self.client) else {
                    return fail("gitops-run: no session syncs this workspace".into());
                };
                match sessions::sync_now(c, &s).await {
                    Ok(()) => vec![p::response(
                        id,
                        json!(format!("asked Flux to sync session {} now", s.name)),
                    )],
                    Err(e) => fail(format!(
                        "gitops-run: cannot ask Flux to sync session {}: {e}",
                        s.name
                    )),
                }
            }
            STOP_SESSION => {
                let Some(s) = self.command_session(params) else {
                    return fail("gitops-run: no session syncs this workspace".into());
                };
                let own = self
                    .child
                    .as_ref()
                    .and_then(|c| c.id())
                    .is_some_and(|pid| s.record.pid == pid.to_string());
                if own {
                    self.stop_child();
                    return vec![p::response(
                        id,
                        json!(format!("stopping session {}", s.name)),
                    )];
                }
                match sessions::stop(&s) {
                    Ok(()) => vec![p::response(
                        id,
                        json!(format!("stopping session {}", s.name)),
                    )],
                    Err(e) => fail(e.to_string()),
                }
            }
            START_SESSION => self.start(id, params),
            _ => vec![p::error_response(
                id,
                p::INVALID_PARAMS,
                &format!("unknown command {command:?}"),
            )],
        }
    }

    fn start(&mut self, id: &Value, params: &Value) -> Vec<Value> {
        let fail = |m: String| vec![p::error_response(id, p::REQUEST_FAILED, &m)];
        if let Some(s) = self.relevant().next() {
            return fail(format!(
                "gitops-run: session {} already syncs {} ({})",
                s.name, s.record.dir, s.holder
            ));
        }
        if let Some(c) = &mut self.child
            && matches!(c.try_wait(), Ok(None))
        {
            return fail("gitops-run: the session this editor started is still starting".into());
        }
        let dir = params["arguments"][0]
            .as_str()
            .and_then(p::path_of_uri)
            .map(|p| {
                if p.is_file() {
                    p.parent().map(Path::to_path_buf).unwrap_or(p)
                } else {
                    p
                }
            })
            .or_else(|| self.root.clone());
        let (Some(program), Some(dir)) = (self.options.program.clone(), dir) else {
            return fail("gitops-run: no directory to sync (open a folder)".into());
        };
        let log =
            std::env::temp_dir().join(format!("kubectl-gitops-lsp-{}.log", std::process::id()));
        let stderr = match std::fs::File::create(&log) {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.options.args)
            .args(&self.run_args)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        match cmd.spawn() {
            Ok(child) => {
                self.child = Some(child);
                vec![p::response(
                    id,
                    json!(format!(
                        "starting a session for {} (its output: {})",
                        dir.display(),
                        log.display()
                    )),
                )]
            }
            Err(e) => fail(format!("gitops-run: cannot start a session: {e}")),
        }
    }

    /// Stops the session this server started, as Ctrl+C does (it cleans up).
    fn stop_child(&mut self) {
        if let Some(c) = self.child.take()
            && let Some(pid) = c.id()
        {
            crate::process::interrupt(pid);
        }
    }
}

#[cfg(test)]
mod tests;
