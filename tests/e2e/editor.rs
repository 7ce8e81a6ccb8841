//! The language server in a real editor: Neovim from Debian's packages
//! (0.7: `vim.lsp.start_client` + `buf_attach_client`), headless, driven
//! through its RPC socket (`nvim --server … --remote-expr`), its built-in
//! LSP client running `kubectl-gitops_run lsp` against the harness. Saves
//! are made in Neovim (`:write`); the assertions are on what Neovim holds
//! (`vim.diagnostic.get`, the answers to its requests) and on the cluster
//! (the Kustomization's verdict, the pods, the Lease), never on the
//! server's own output.
//!
//! The rollout failures are real: containers on the harness's real Node
//! (tests/cluster/node.sh) running images of the harness registry —
//! busybox exiting 3, an image the registry does not hold, hello-web's
//! readiness probe answered 503 — as the kubelet reports them.

// A test that cannot reach its peer, or finds the world other than it
// expects, fails loudly: panics are these tests' verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gitops_e2e::{
    Harness, RunningSession, eventually, kustomization_verdict, on_real_node, plugin, unique,
    write_tree,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn deployment(extra_labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n{extra_labels}    spec:\n      containers:\n      - name: app\n        image: example/web:1\n        resources:\n          requests:\n            cpu: 50m\n"
    )
}

const CONFIGMAP: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: hello\n";
const KUSTOMIZATION: &str = "resources:\n- deployment.yaml\n- configmap.yaml\n";

fn app(dir: &Path) {
    write_tree(
        dir,
        &[
            ("deploy/deployment.yaml", &deployment("")),
            ("deploy/configmap.yaml", CONFIGMAP),
            ("deploy/kustomization.yaml", KUSTOMIZATION),
        ],
    );
}

/// `deployment` on the harness's real Node, running hello-web from the
/// harness registry (`GET /healthz` answers its readiness probe).
fn real_deployment(harness: &Harness) -> String {
    deployment("")
        .replace(
            "        image: example/web:1\n",
            &format!(
                "        image: {}\n        readinessProbe:\n          httpGet:\n            path: /healthz\n            port: 8080\n          periodSeconds: 1\n",
                harness.image("hello-web:1.0")
            ),
        )
        .replace(
            "    spec:\n      containers:",
            &format!("    spec:\n{}      containers:", on_real_node(6)),
        )
}

/// `app` with its Deployment on the harness's real Node.
fn real_app(harness: &Harness, dir: &Path) {
    app(dir);
    write_tree(
        dir,
        &[("deploy/deployment.yaml", &real_deployment(harness))],
    );
}

/// The Lua the editor starts with: the LSP client for the workspace and a
/// few functions the test calls through `--remote-expr`.
const INIT_LUA: &str = r#"
local cmd = vim.fn.json_decode(os.getenv('GITOPS_LSP_CMD'))
local run_args = vim.fn.json_decode(os.getenv('GITOPS_LSP_RUN_ARGS'))
local id = vim.lsp.start_client({
  name = 'gitops-run',
  cmd = cmd,
  root_dir = os.getenv('GITOPS_LSP_ROOT'),
  init_options = { runArgs = run_args },
})
-- The file's buffer is loaded after this script runs.
vim.api.nvim_create_autocmd('VimEnter', { callback = function() vim.lsp.buf_attach_client(0, id) end })
T = {}
local function client() return vim.lsp.get_client_by_id(id) end
function T.ready()
  local c = client()
  return (c ~= nil and c.initialized and vim.lsp.buf_is_attached(0, id)) and 'yes' or 'no'
end
function T.diags()
  local out = {}
  for _, d in ipairs(vim.diagnostic.get(0)) do
    local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code) or ''
    table.insert(out, { lnum = d.lnum, col = d.col, severity = d.severity, source = d.source or '', message = d.message, code = code })
  end
  return vim.fn.json_encode(out)
end
function T.diags_of(path)
  local saved = vim.diagnostic.get(vim.uri_to_bufnr(vim.uri_from_fname(path)))
  local out = {}
  for _, d in ipairs(saved) do
    local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code) or ''
    table.insert(out, { lnum = d.lnum, col = d.col, severity = d.severity, message = d.message, code = code })
  end
  return vim.fn.json_encode(out)
end
function T.set(line, text)
  vim.api.nvim_buf_set_lines(0, line, line + 1, false, { text })
  vim.cmd('silent write')
  return 'ok'
end
function T.insert(line, text)
  vim.api.nvim_buf_set_lines(0, line, line, false, { text })
  vim.cmd('silent write')
  return 'ok'
end
function T.replace(first, last, lines)
  vim.api.nvim_buf_set_lines(0, first, last, false, lines)
  vim.cmd('silent write')
  return 'ok'
end
function T.delete(line)
  vim.api.nvim_buf_set_lines(0, line, line + 1, false, {})
  vim.cmd('silent write')
  return 'ok'
end
function T.request(method, params)
  local res, err = client().request_sync(method, params, 10000, 0)
  if res == nil then return vim.fn.json_encode({ err = tostring(err) }) end
  return vim.fn.json_encode({ result = res.result, err = res.err })
end
local function doc() return { uri = vim.uri_from_bufnr(0) } end
function T.lens() return T.request('textDocument/codeLens', { textDocument = doc() }) end
function T.hover(line) return T.request('textDocument/hover', { textDocument = doc(), position = { line = line, character = 2 } }) end
function T.command(name) return T.request('workspace/executeCommand', { command = name, arguments = { vim.uri_from_bufnr(0) } }) end
"#;

/// A headless Neovim editing one file, its LSP client running our server.
struct Nvim {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nvim {
    fn start(harness: &Harness, root: &Path, file: &Path, run_args: &[&str]) -> Nvim {
        let nvim = which("nvim").unwrap_or_else(|| {
            panic!("Neovim is not installed: run tests/ui/setup (make test does), or apt-get install neovim")
        });
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nvim.sock");
        let init = dir.path().join("init.lua");
        std::fs::write(&init, INIT_LUA).unwrap();
        let server = plugin("kubectl-gitops_run").get_program().to_owned();
        let mut cmd: Vec<String> = vec![server.to_string_lossy().into(), "lsp".into()];
        cmd.extend(harness.kube_args());
        let child = Command::new(nvim)
            .arg("--headless")
            .arg("--listen")
            .arg(&socket)
            .args(["-n", "-i", "NONE", "-u"])
            .arg(&init)
            .arg(file)
            .current_dir(root)
            .env("GITOPS_LSP_CMD", serde_json::to_string(&cmd).unwrap())
            .env("GITOPS_LSP_ROOT", root)
            .env(
                "GITOPS_LSP_RUN_ARGS",
                serde_json::to_string(run_args).unwrap(),
            )
            .env("HOME", dir.path())
            .env("XDG_STATE_HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nvim");
        let nvim = Nvim {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(nvim.socket.exists() && nvim.lua("T.ready()") == "yes") {
            assert!(
                Instant::now() < deadline,
                "Neovim's LSP client did not initialize within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        nvim
    }

    /// `luaeval(code)` in the editor, as text.
    fn lua(&self, code: &str) -> String {
        let out = Command::new("nvim")
            .arg("--server")
            .arg(&self.socket)
            .arg("--remote-expr")
            .arg(format!("luaeval('{}')", code.replace('\'', "''")))
            .stdin(Stdio::null())
            .output()
            .expect("nvim --remote-expr");
        // Neovim 0.7 prints the result on stderr (later ones on stdout).
        let text = if out.stdout.is_empty() {
            out.stderr
        } else {
            out.stdout
        };
        String::from_utf8_lossy(&text).trim().to_string()
    }

    fn json(&self, code: &str) -> Value {
        let text = self.lua(code);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{code}: {e}: {text:?}"))
    }

    /// What Neovim holds for the buffer.
    fn diagnostics(&self) -> Vec<Value> {
        self.json("T.diags()")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the diagnostics Neovim holds satisfy `ok`.
    fn wait_diagnostics(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.diagnostics();
            if ok(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; Neovim holds: {d:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What Neovim holds for another file (published for it, not open).
    fn wait_diagnostics_of(
        &self,
        file: &Path,
        what: &str,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let code = format!("T.diags_of({})", lua_string(&file.display().to_string()));
        loop {
            let d = self.json(&code).as_array().cloned().unwrap_or_default();
            if ok(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; Neovim holds: {d:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn save_line(&self, line: usize, text: &str) {
        assert_eq!(
            self.lua(&format!("T.set({line}, {})", lua_string(text))),
            "ok"
        );
    }

    /// Replaces lines `first..last` (0-based, end excluded) with `lines`,
    /// in one save.
    fn save_lines(&self, first: usize, last: usize, lines: &[&str]) {
        let list: Vec<String> = lines.iter().map(|l| lua_string(l)).collect();
        assert_eq!(
            self.lua(&format!(
                "T.replace({first}, {last}, {{{}}})",
                list.join(", ")
            )),
            "ok"
        );
    }
}

impl Drop for Nvim {
    fn drop(&mut self) {
        let _ = Command::new("nvim")
            .arg("--server")
            .arg(&self.socket)
            .args(["--remote-send", "<C-\\><C-N>:qa!<CR>"])
            .output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The 0-based line of the first line of `file` that contains `needle`.
fn line_of(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}", file.display()))
}

async fn flux_namespace(client: &Client, session: &str) -> String {
    eventually("the session's Lease", WAIT, || async {
        gitops_e2e::session_lease(client, session)
            .await
            .and_then(|l| l.metadata.namespace)
            .ok_or_else(|| "no Lease yet".to_string())
    })
    .await
}

#[tokio::test]
async fn a_terminal_sessions_rejected_field_and_yaml_error_show_in_neovim_and_clear_when_fixed() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    app(&root);
    let file = root.join("deploy/deployment.yaml");
    let ns = unique("lsp-term");
    let nvim = Nvim::start(&harness, &root, &file, &[]);

    // A session started in a terminal: the editor picks it up from its
    // Lease (the code lens says it synced).
    let mut s = RunningSession::start(&harness, &root, &["deploy", "--name", &ns]);
    let revision = s.next_sync().expect("the first sync");
    let flux_ns = flux_namespace(&client, &ns).await;
    let lens = eventually("the code lens to show the session", WAIT, || async {
        let l = nvim.json("T.lens()");
        let titles = l["result"].to_string();
        if titles.contains("Ready") {
            Ok(l)
        } else {
            Err(titles)
        }
    })
    .await;
    assert!(
        lens["result"].to_string().contains("gitops.syncNow"),
        "{lens}"
    );
    assert!(nvim.diagnostics().is_empty());
    // Hover: the live Deployment's state and the session's revision.
    let hover = nvim.json("T.hover(3)");
    let text = hover["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains(&format!("Deployment/{}/web", ns)) || text.contains("Deployment/"),
        "{hover}"
    );
    let short = &revision[..revision.find("sha256:").unwrap() + 19];
    assert!(text.contains(short), "{short} not in {text}");
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    assert!(text.contains(&format!("ready {ready}/1")), "{text}");

    // A mistake the API server rejects (Flux's dry-run): on `replicas:`.
    let replicas = line_of(&file, "replicas:");
    nvim.save_line(replicas, "  replicas: -1");
    let diags = nvim.wait_diagnostics("the rejected field", |d| !d.is_empty());
    assert_eq!(diags.len(), 1, "one diagnostic per cause: {diags:#?}");
    assert_eq!(diags[0]["lnum"], replicas, "{diags:#?}");
    assert_eq!(diags[0]["severity"], 1);
    assert_eq!(diags[0]["source"], "gitops-run");
    assert!(
        diags[0]["message"].as_str().unwrap().contains("replicas"),
        "{diags:#?}"
    );
    // The cluster's answer: Flux refused it, the Deployment kept 1 replica.
    let verdict = kustomization_verdict(&client, &flux_ns, &ns, WAIT).await;
    assert!(verdict.unwrap_err().contains("replicas"));
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));

    // Fixed: cleared, and Flux applied it.
    nvim.save_line(replicas, "  replicas: 1");
    nvim.wait_diagnostics("the rejection to clear", <[Value]>::is_empty);
    kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap();

    // Invalid YAML: the parser's place; nothing reaches the cluster.
    let applied = gitops_e2e::session_lease(&client, &ns).await.unwrap();
    nvim.save_line(2, "metadata: [");
    let diags = nvim.wait_diagnostics("the YAML error", |d| !d.is_empty());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(diags[0]["lnum"].as_u64().unwrap() >= 2, "{diags:#?}");
    assert_eq!(diags[0]["code"], "YAML", "{diags:#?}");
    let now = gitops_e2e::session_lease(&client, &ns).await.unwrap();
    let last = |l: &Lease| {
        l.metadata.annotations.as_ref().unwrap()["gitops.kubectl.dev/last-revision"].clone()
    };
    assert_eq!(last(&now), last(&applied), "nothing new was applied");
    nvim.save_line(2, "metadata:");
    nvim.wait_diagnostics("the YAML error to clear", <[Value]>::is_empty);

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
    // The session is gone: so is what the editor showed of it.
    eventually("the Lease to be gone", WAIT, || async {
        match gitops_e2e::session_lease(&client, &ns).await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let lens = eventually("the code lens to offer a new session", WAIT, || async {
        let l = nvim.json("T.lens()");
        if l["result"].to_string().contains("gitops.startSession") {
            Ok(l)
        } else {
            Err(l.to_string())
        }
    })
    .await;
    drop(lens);
}

/// Whether the Deployment `web` of `ns` has one ready replica (the API
/// server's account).
async fn web_ready(client: &Client, ns: &str) {
    eventually("the Deployment to be ready", WAIT, || async {
        let d: Deployment = Api::namespaced(client.clone(), ns)
            .get("web")
            .await
            .map_err(|e| e.to_string())?;
        match d.status.and_then(|s| s.ready_replicas) {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The pods of `ns` the API server holds.
async fn pods(client: &Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_crash_looping_workload_started_from_the_editor_shows_its_exit_code_on_the_container() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    real_app(&harness, &root);
    let file = root.join("deploy/deployment.yaml");
    let ns = unique("lsp-crash");
    // The editor starts the session itself (its command; the session's
    // flags from the client's configuration).
    let nvim = Nvim::start(&harness, &root.join("deploy"), &file, &["--name", &ns]);
    let started = nvim.json("T.command(\"gitops.startSession\")");
    assert!(started["err"].is_null(), "{started}");
    let flux_ns = flux_namespace(&client, &ns).await;
    kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap();
    eventually("the code lens to show the session", WAIT, || async {
        let l = nvim.json("T.lens()");
        if l["result"].to_string().contains(&ns) {
            Ok(())
        } else {
            Err(l.to_string())
        }
    })
    .await;

    // The container crashes for real: busybox exits 3 a second after it
    // starts (before its readiness probe could pass). On the container's
    // line, with the exit code.
    let image = line_of(&file, "image:");
    let healthy = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .nth(image)
        .unwrap()
        .to_string();
    let busybox = format!("        image: {}", harness.image("busybox:harness"));
    nvim.save_lines(
        image,
        image + 1,
        &[&busybox, "        command: [sh, -c, 'sleep 1; exit 3']"],
    );
    let container = line_of(&file, "- name: app");
    let diags = nvim.wait_diagnostics("the crash loop", |d| !d.is_empty());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0]["lnum"], container, "{diags:#?}");
    assert_eq!(diags[0]["code"], "CrashLoopBackOff", "{diags:#?}");
    assert_eq!(diags[0]["severity"], 1, "{diags:#?}");
    assert_eq!(diags[0]["source"], "gitops-run", "{diags:#?}");
    let message = diags[0]["message"].as_str().unwrap();
    assert!(message.contains("exit 3"), "{message}");
    // The kubelet's account: the container on the real Node exited 3 and
    // was restarted.
    let crashed = pods(&client, &ns).await;
    assert!(
        crashed.iter().any(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(harness.real_node())
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        let exit = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                            s.and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code)
                        };
                        c.image == harness.image("busybox:harness")
                            && (exit(c.last_state.as_ref()) == Some(3)
                                || exit(c.state.as_ref()) == Some(3))
                    })
        }),
        "no container on the real Node exited 3: {crashed:?}"
    );

    // Fixed: cleared (once, not again), and the Deployment rolls out.
    nvim.save_lines(image, image + 2, &[&healthy]);
    nvim.wait_diagnostics("the crash loop to clear", <[Value]>::is_empty);
    web_ready(&client, &ns).await;

    // Stopped from the editor: the session cleans up (its Lease is gone).
    let stopped = nvim.json("T.command(\"gitops.stopSession\")");
    assert!(stopped["err"].is_null(), "{stopped}");
    eventually(
        "the session to be removed",
        Duration::from_secs(120),
        || async {
            match gitops_e2e::session_lease(&client, &ns).await {
                None => Ok(()),
                Some(_) => Err("the Lease is still there".to_string()),
            }
        },
    )
    .await;
}

/// What `kubectl-gitops_run lsp` advertises in its answer to `initialize`.
fn server_capabilities() -> Value {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut server = plugin("kubectl-gitops_run")
        .args(["lsp", "--kubeconfig", "/nonexistent"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#;
    let mut stdin = server.stdin.take().unwrap();
    write!(stdin, "Content-Length: {}\r\n\r\n", body.len()).unwrap();
    stdin.write_all(body).unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut buf = vec![0; length];
    out.read_exact(&mut buf).unwrap();
    drop(stdin);
    let _ = server.kill();
    let _ = server.wait();
    serde_json::from_slice::<Value>(&buf).unwrap()["result"]["capabilities"].clone()
}

/// A file of a zip archive, read with Python's zipfile (a prerequisite).
fn unzip(archive: &Path, name: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nn = sys.argv[2]\nsys.stdout.write(z.read(n).decode() if n in z.namelist() else '\\0')",
        ])
        .arg(archive)
        .arg(name)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    (text != "\0").then_some(text)
}

#[test]
fn the_vscode_extension_builds_into_a_vsix_whose_manifest_matches_the_server() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo.join("editors/vscode/build"))
        .arg(out.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("editors/vscode/build");
    assert!(built.status.success(), "the extension did not build");
    let vsix = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    assert!(vsix.is_file(), "{}", vsix.display());

    let manifest: Value =
        serde_json::from_str(&unzip(&vsix, "extension/package.json").expect("package.json"))
            .unwrap();
    assert!(
        manifest["engines"]["vscode"]
            .as_str()
            .unwrap()
            .starts_with('^')
    );
    let main = manifest["main"].as_str().unwrap().trim_start_matches("./");
    assert!(
        unzip(&vsix, &format!("extension/{main}")).is_some_and(|js| js.contains("lsp")),
        "the entry point {main} is packaged and starts `lsp`"
    );
    assert!(
        unzip(
            &vsix,
            "extension/node_modules/vscode-languageclient/package.json"
        )
        .is_some(),
        "its runtime dependency is packaged"
    );
    assert!(
        unzip(&vsix, "extension/src/extension.ts").is_none(),
        "sources are left out"
    );
    let vsixmanifest = unzip(&vsix, "extension.vsixmanifest").expect("extension.vsixmanifest");
    assert!(
        vsixmanifest.contains(&format!(
            "Version=\"{}\"",
            manifest["version"].as_str().unwrap()
        )),
        "{vsixmanifest}"
    );
    assert!(!manifest["activationEvents"].as_array().unwrap().is_empty());
    for key in ["gitopsRun.path", "gitopsRun.kubeArgs", "gitopsRun.runArgs"] {
        let p = &manifest["contributes"]["configuration"]["properties"][key];
        assert!(p["markdownDescription"].is_string(), "{key} is documented");
    }
    // Every command the extension shows is one the server runs, and back.
    let contributed: std::collections::BTreeSet<String> = manifest["contributes"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_string())
        .collect();
    let served: std::collections::BTreeSet<String> =
        server_capabilities()["executeCommandProvider"]["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
    assert_eq!(contributed, served);
}

#[tokio::test]
async fn through_an_overlay_the_patch_and_the_base_line_that_set_the_field_get_flux_s_refusal() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    write_tree(
        &root,
        &[
            ("base/deployment.yaml", &deployment("")),
            ("base/kustomization.yaml", "resources:\n- deployment.yaml\n"),
            (
                "dev/kustomization.yaml",
                "namePrefix: dev-\nresources:\n- ../base\npatches:\n- path: replicas.yaml\n",
            ),
            (
                "dev/replicas.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n",
            ),
        ],
    );
    let patch = root.join("dev/replicas.yaml");
    let base = root.join("base/deployment.yaml");
    let ns = unique("lsp-overlay");
    let nvim = Nvim::start(&harness, &root, &patch, &[]);
    let root_arg = root.display().to_string();
    let mut s = RunningSession::start(
        &harness,
        &root,
        &["dev", "--root-dir", &root_arg, "--name", &ns],
    );
    s.next_sync().expect("the first sync");
    let flux_ns = flux_namespace(&client, &ns).await;

    // The patch sets an invalid value: on the patch's line, not the base's.
    let replicas = line_of(&patch, "replicas:");
    nvim.save_line(replicas, "  replicas: -2");
    let diags = nvim.wait_diagnostics("the rejection on the patch", |d| !d.is_empty());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0]["lnum"], replicas, "{diags:#?}");
    assert_eq!(diags[0]["code"], "Invalid", "{diags:#?}");
    let refusal = kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap_err();
    assert!(
        refusal.contains(&format!("Deployment/{ns}/dev-web")),
        "{refusal}"
    );
    assert!(
        nvim.json(&format!(
            "T.diags_of({})",
            lua_string(&base.display().to_string())
        ))
        .as_array()
        .unwrap()
        .is_empty()
    );
    nvim.save_line(replicas, "  replicas: 2");
    nvim.wait_diagnostics("the patch's rejection to clear", <[Value]>::is_empty);
    kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap();

    // An immutable field changed in the base (saved elsewhere): on the
    // base document's `selector:`.
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("app: web", "app: web2");
    std::fs::write(&base, text).unwrap();
    let selector = line_of(&base, "  selector:");
    let diags = nvim.wait_diagnostics_of(&base, "the immutable selector", |d| !d.is_empty());
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0]["lnum"], selector, "{diags:#?}");
    assert_eq!(diags[0]["code"], "Immutable", "{diags:#?}");
    let refusal = kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap_err();
    assert!(refusal.contains("immutable"), "{refusal}");
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("dev-web")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().selector.match_labels.unwrap()["app"],
        "web",
        "the cluster kept the selector"
    );

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
}

/// Four causes in one terminal session, each shown where it is and
/// cleared by its fix: an image the harness registry does not hold (the
/// real Node's containerd fails to pull it), hello-web's readiness probe
/// answered 503 (the kubelet's probe; reported once Flux's 30 s health
/// check gives up), a pod no Node has room for (the scheduler's verdict),
/// and a cluster-scoped object the sandbox refuses (the
/// API server's RBAC, in Flux's dry-run).
#[tokio::test]
async fn a_pull_failure_a_failing_probe_no_room_and_a_refusal_show_on_their_lines_and_clear() {
    let harness = Harness::get();
    let client = harness.cluster().await.client;
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    real_app(&harness, &root);
    let file = root.join("deploy/deployment.yaml");
    let ns = unique("lsp-real");
    let nvim = Nvim::start(&harness, &root, &file, &[]);
    let mut s = RunningSession::start(
        &harness,
        &root,
        &["deploy", "--name", &ns, "--timeout", "30s"],
    );
    s.next_sync().expect("the first sync");
    let flux_ns = flux_namespace(&client, &ns).await;
    web_ready(&client, &ns).await;
    assert!(nvim.diagnostics().is_empty());
    let one = |diags: &[Value], line: usize, severity: u64, code: &str| {
        assert_eq!(diags.len(), 1, "one diagnostic per cause: {diags:#?}");
        assert_eq!(diags[0]["lnum"], line, "{diags:#?}");
        assert_eq!(diags[0]["severity"], severity, "{diags:#?}");
        assert_eq!(diags[0]["source"], "gitops-run", "{diags:#?}");
        assert_eq!(diags[0]["code"], code, "{diags:#?}");
        diags[0]["message"].as_str().unwrap().to_string()
    };

    // An image the registry does not hold: on the `image:` line.
    let image = line_of(&file, "image:");
    let healthy = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .nth(image)
        .unwrap()
        .to_string();
    let missing = harness.image("gitops-e2e-never-pushed:1");
    nvim.save_line(image, &format!("        image: {missing}"));
    let diags = nvim.wait_diagnostics("the pull failure", |d| !d.is_empty());
    let message = one(&diags, image, 1, "ImagePull");
    assert!(
        message.contains(&format!("cannot pull its image \"{missing}\"")),
        "{message}"
    );
    let pulling = pods(&client, &ns).await;
    let on_real_node: Vec<Pod> = pulling
        .iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(harness.real_node())
        })
        .cloned()
        .collect();
    assert!(
        gitops_e2e::pull_failed(&on_real_node, &missing),
        "{pulling:?}"
    );
    nvim.save_line(image, &healthy);
    nvim.wait_diagnostics("the pull failure to clear", <[Value]>::is_empty);
    web_ready(&client, &ns).await;

    // hello-web answers the probe 503: a warning on `readinessProbe:`.
    let probe = line_of(&file, "readinessProbe:");
    let path = line_of(&file, "path: /healthz");
    nvim.save_line(path, "            path: /status/503");
    let diags = nvim.wait_diagnostics("the failing probe", |d| !d.is_empty());
    let message = one(&diags, probe, 2, "Unready");
    assert!(message.contains("statuscode: 503"), "{message}");
    let events: Vec<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unhealthy")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
                && e.message.as_deref().is_some_and(|m| {
                    m.contains("Readiness probe failed: HTTP probe failed with statuscode: 503")
                })),
        "no Unhealthy event from the kubelet: {events:?}"
    );
    nvim.save_line(path, "            path: /healthz");
    nvim.wait_diagnostics("the failing probe to clear", <[Value]>::is_empty);
    web_ready(&client, &ns).await;

    // More CPU than any Node has: the scheduler cannot place the new pod;
    // on the workload's document (its name).
    let cpu = line_of(&file, "cpu: 50m");
    nvim.save_line(cpu, "            cpu: \"1000\"");
    let diags = nvim.wait_diagnostics("the unschedulable pod", |d| !d.is_empty());
    let message = one(&diags, line_of(&file, "  name: web"), 1, "Unschedulable");
    assert!(
        message.contains(&format!("Deployment/{ns}/web")),
        "{message}"
    );
    let pending = pods(&client, &ns).await;
    assert!(
        pending.iter().any(|p| p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable"))),
        "no pod the scheduler left unschedulable: {pending:?}"
    );
    nvim.save_line(cpu, "            cpu: 50m");
    nvim.wait_diagnostics("the unschedulable pod to clear", <[Value]>::is_empty);
    web_ready(&client, &ns).await;

    // A ClusterRole appended as a second document: the sandbox refuses it,
    // on that document (its name), not the Deployment's.
    let role = unique("lsp-greedy");
    let end = std::fs::read_to_string(&file).unwrap().lines().count();
    let name = format!("  name: {role}");
    nvim.save_lines(
        end,
        end,
        &[
            "---",
            "apiVersion: rbac.authorization.k8s.io/v1",
            "kind: ClusterRole",
            "metadata:",
            &name,
            "rules: []",
        ],
    );
    let diags = nvim.wait_diagnostics("the sandbox's refusal", |d| !d.is_empty());
    let message = one(&diags, line_of(&file, &name), 1, "Forbidden");
    assert!(
        message.contains(&format!("ClusterRole/{role}")),
        "{message}"
    );
    let refusal = kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap_err();
    // The API server's RBAC refused Flux's dry-run as the sandbox.
    assert!(
        refusal.contains("cannot patch resource \"clusterroles\""),
        "{refusal}"
    );
    assert!(
        Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
            .get_opt(&role)
            .await
            .unwrap()
            .is_none()
    );
    nvim.save_lines(end, end + 6, &[]);
    nvim.wait_diagnostics("the refusal to clear", <[Value]>::is_empty);
    kustomization_verdict(&client, &flux_ns, &ns, WAIT)
        .await
        .unwrap();

    s.signal("INT");
    assert_eq!(s.wait_exit(Duration::from_secs(120)), Some(0));
}
