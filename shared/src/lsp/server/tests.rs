//! The server over a real byte stream, against the fake API server: a
//! session's Lease written (as by a terminal session) shows up as
//! diagnostics on the right line, a later sync clears them, nothing is
//! published twice, hover and code lenses read the session, and the
//! lifecycle (initialize … shutdown, exit) is the protocol's.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

use super::*;
use crate::fakeapi::FakeApi;
use crate::session::record::{self, LastSync, problems};
use crate::session::testkit;
use crate::testutil::write_tree;

const NS: &str = "dev";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx\n";

struct Editor {
    w: WriteHalf<DuplexStream>,
    r: BufReader<ReadHalf<DuplexStream>>,
    next: i64,
}

impl Editor {
    async fn send(&mut self, v: Value) {
        p::write_message(&mut self.w, &v).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> i64 {
        self.next += 1;
        let id = self.next;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    async fn recv(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), p::read_message(&mut self.r))
            .await
            .expect("the server answers within 10 s")
            .unwrap()
            .unwrap()
    }

    /// The next message that is not a notification of `skip`.
    async fn response(&mut self, id: i64) -> Value {
        loop {
            let m = self.recv().await;
            if m["id"] == id {
                return m;
            }
        }
    }
}

fn start(api: &FakeApi) -> (Editor, tokio::task::JoinHandle<Result<(), LspError>>) {
    let (editor, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    let (er, ew) = tokio::io::split(editor);
    let client = api.client.clone();
    let task = tokio::spawn(serve(sr, sw, Some(client), Options::default()));
    (
        Editor {
            w: ew,
            r: BufReader::new(er),
            next: 0,
        },
        task,
    )
}

/// A live session of this user on this machine.
fn mine(ns: &str, name: &str) -> Lease {
    testkit::lease(ns, name, &crate::process::owner(), chrono::Utc::now(), 30)
}

fn set_record(lease: &mut Lease, change: impl FnOnce(&mut record::Record)) {
    let mut r = record::Record::of(lease);
    change(&mut r);
    lease.metadata.annotations = Some(r.to_annotations());
}

#[tokio::test]
async fn a_sessions_problems_are_published_on_their_line_cleared_and_never_twice() {
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    write_tree(
        &root,
        &[
            ("app/deploy.yaml", DEPLOY),
            ("app/bad.yaml", "a: b\n  c: d\n"),
        ],
    );
    let dir = root.join("app");
    let api = FakeApi::start().await;
    let mut lease = mine(NS, "run-app-1");
    set_record(&mut lease, |r| {
        r.dir = dir.display().to_string();
        r.root = root.display().to_string();
        r.last = Some(LastSync {
            revision: "latest@sha256:0123456789abcdef".into(),
            at: None,
            status: "Failed".into(),
        });
        r.problems = problems::from_failure(
            "apply",
            "Deployment/dev/web dry-run failed (Invalid): spec.replicas: Invalid value: -1: must be",
            None,
        );
    });
    api.put(lease);

    let (mut ed, task) = start(&api);
    let id = ed
        .request(
            "initialize",
            json!({"rootUri": p::uri_of_path(&root), "capabilities": {}}),
        )
        .await;
    let init = ed.response(id).await;
    assert_eq!(init["result"]["capabilities"]["hoverProvider"], true);
    ed.send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        .await;

    // The session's problem, on `replicas:` (0-based line 5).
    let m = ed.recv().await;
    assert_eq!(m["method"], "textDocument/publishDiagnostics", "{m}");
    assert_eq!(m["params"]["uri"], p::uri_of_path(&dir.join("deploy.yaml")));
    let d = &m["params"]["diagnostics"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d[0]["range"]["start"], json!({"line": 5, "character": 2}));
    assert_eq!(d[0]["severity"], 1);
    assert_eq!(d[0]["source"], "gitops-run");
    assert_eq!(d[0]["code"], "Invalid");

    // Hover on the Deployment: the session and its last sync.
    let uri = p::uri_of_path(&dir.join("deploy.yaml"));
    let id = ed
        .request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": {"line": 3, "character": 3}}),
        )
        .await;
    let hover = ed.response(id).await;
    let text = hover["result"]["contents"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("run-app-1"), "{text}");
    assert!(text.contains("latest@sha256:0123456789ab`"), "{text}");
    assert!(text.contains("✗ Invalid"), "{text}");
    // A code lens on the document, naming the problem, that syncs now.
    let id = ed
        .request(
            "textDocument/codeLens",
            json!({"textDocument": {"uri": uri}}),
        )
        .await;
    let lenses = ed.response(id).await;
    assert_eq!(lenses["result"][0]["command"]["command"], SYNC_NOW);
    assert!(
        lenses["result"][0]["command"]["title"]
            .as_str()
            .unwrap()
            .contains("Invalid")
    );

    // The same problem written again (a renewal, another sync failing the
    // same way): nothing is published again.
    api.modify(NS, "run-app-1", |l| {
        set_record(l, |r| r.pid = "4243".into());
    });
    // A YAML error instead: the old one cleared, the new one published.
    api.modify(NS, "run-app-1", |l| {
        set_record(l, |r| {
            r.problems = vec![problems::yaml_error(
                "app/bad.yaml",
                2,
                4,
                "mapping values are not allowed here",
            )];
        });
    });
    let mut seen = BTreeMap::new();
    for _ in 0..2 {
        let m = ed.recv().await;
        assert_eq!(m["method"], "textDocument/publishDiagnostics", "{m}");
        seen.insert(
            m["params"]["uri"].as_str().unwrap().to_string(),
            m["params"]["diagnostics"].clone(),
        );
    }
    assert_eq!(seen[&uri], json!([]));
    let bad = &seen[&p::uri_of_path(&dir.join("bad.yaml"))];
    assert_eq!(bad[0]["range"]["start"], json!({"line": 1, "character": 3}));
    assert_eq!(bad[0]["code"], "YAML");

    // Fixed: cleared; then the session goes away: nothing more to clear.
    api.modify(NS, "run-app-1", |l| set_record(l, |r| r.problems.clear()));
    let m = ed.recv().await;
    assert_eq!(m["params"]["diagnostics"], json!([]), "{m}");
    api.delete(NS, "run-app-1");
    let id = ed.request("shutdown", Value::Null).await;
    // The next message is the answer: no publication came in between.
    let m = ed.recv().await;
    assert_eq!(m["id"], id, "{m}");
    ed.send(json!({"jsonrpc": "2.0", "method": "exit"})).await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn other_directories_sessions_are_not_shown_and_requests_wait_for_initialize() {
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    write_tree(&root, &[("mine/a.yaml", DEPLOY), ("theirs/a.yaml", DEPLOY)]);
    let api = FakeApi::start().await;
    let mut lease = mine(NS, "run-theirs");
    set_record(&mut lease, |r| {
        r.dir = root.join("theirs").display().to_string();
        r.problems = problems::from_failure(
            "apply",
            "Deployment/dev/web: pod web-1 container app: CrashLoopBackOff (exit 2)",
            None,
        );
    });
    api.put(lease);
    // Someone else's session of a directory of the same path (another machine).
    let mut lease = testkit::live_lease(NS, "run-elsewhere");
    set_record(&mut lease, |r| {
        r.dir = root.join("mine").display().to_string();
        r.problems = problems::from_failure(
            "apply",
            "Deployment/dev/web: pod web-1 container app: CrashLoopBackOff (exit 9)",
            None,
        );
    });
    api.put(lease);
    let (mut ed, task) = start(&api);
    let id = ed.request("textDocument/hover", json!({})).await;
    assert_eq!(
        ed.response(id).await["error"]["code"],
        p::SERVER_NOT_INITIALIZED
    );
    let id = ed
        .request(
            "initialize",
            json!({"rootUri": p::uri_of_path(&root.join("mine"))}),
        )
        .await;
    ed.response(id).await;
    // A session of `mine` appears (as a terminal session's Lease is written): only its problems show.
    let mut lease = mine(NS, "run-mine");
    set_record(&mut lease, |r| {
        r.dir = root.join("mine").display().to_string();
        r.problems = problems::from_failure(
            "apply",
            "Deployment/dev/web: pod web-1 container app: CrashLoopBackOff (exit 2)",
            None,
        );
    });
    api.put(lease);
    let m = ed.recv().await;
    assert_eq!(
        m["params"]["uri"],
        p::uri_of_path(&root.join("mine/a.yaml")),
        "{m}"
    );
    // Only this user's session on this machine: one diagnostic.
    assert_eq!(
        m["params"]["diagnostics"].as_array().unwrap().len(),
        1,
        "{m}"
    );
    let d = &m["params"]["diagnostics"][0];
    assert_eq!(d["code"], "CrashLoopBackOff");
    assert_eq!(d["range"]["start"]["line"], 9, "{d}");
    assert!(d["message"].as_str().unwrap().contains("exit 2"));
    let id = ed
        .request("workspace/executeCommand", json!({"command": "nope"}))
        .await;
    assert_eq!(ed.response(id).await["error"]["code"], p::INVALID_PARAMS);
    drop(ed);
    // The editor went away: the server ends.
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_garbled_frame_ends_the_server_with_an_error() {
    let api = FakeApi::start().await;
    let (mut ed, task) = start(&api);
    ed.w.write_all(b"Content-Length: 2\r\n\r\n{[")
        .await
        .unwrap();
    assert!(matches!(task.await.unwrap(), Err(LspError::Protocol(_))));
}

#[cfg(unix)]
#[tokio::test]
async fn sync_now_asks_flux_stop_interrupts_the_sessions_command_and_lenses_are_refreshed() {
    let t = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(t.path()).unwrap();
    write_tree(&root, &[("app/a.yaml", DEPLOY)]);
    let api = FakeApi::start().await;
    api.put(testkit::kustomization(NS, "run-app-2"));
    api.put(testkit::source(NS, "run-app-2"));
    // The session's command: a process of ours that SIGINT ends.
    let mut command = tokio::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut lease = mine(NS, "run-app-2");
    set_record(&mut lease, |r| {
        r.dir = root.join("app").display().to_string();
        r.pid = command.id().unwrap().to_string();
    });
    api.put(lease);
    let (mut ed, task) = start(&api);
    let id = ed
        .request(
            "initialize",
            json!({"rootUri": p::uri_of_path(&root), "capabilities": {"workspace": {"codeLens": {"refreshSupport": true}}}}),
        )
        .await;
    ed.response(id).await;
    // The session shows up: the client is asked to refresh its lenses.
    let m = ed.recv().await;
    assert_eq!(m["method"], "workspace/codeLens/refresh", "{m}");
    ed.send(json!({"jsonrpc": "2.0", "id": m["id"], "result": null}))
        .await;

    let uri = p::uri_of_path(&root.join("app/a.yaml"));
    let id = ed
        .request(
            "workspace/executeCommand",
            json!({"command": SYNC_NOW, "arguments": [uri]}),
        )
        .await;
    let r = ed.response(id).await;
    assert!(r["error"].is_null(), "{r}");
    let requested = |o: Option<Value>| {
        o.and_then(|o| {
            o["metadata"]["annotations"][crate::flux::RECONCILE_REQUESTED_AT]
                .as_str()
                .map(str::to_string)
        })
    };
    let ks = api
        .get::<crate::flux::Kustomization>(NS, "run-app-2")
        .unwrap();
    let repo = api
        .get::<crate::flux::OCIRepository>(NS, "run-app-2")
        .unwrap();
    assert!(requested(serde_json::to_value(ks).ok()).is_some());
    assert!(requested(serde_json::to_value(repo).ok()).is_some());

    let id = ed
        .request(
            "workspace/executeCommand",
            json!({"command": STOP_SESSION, "arguments": [uri]}),
        )
        .await;
    let r = ed.response(id).await;
    assert!(r["error"].is_null(), "{r}");
    let status = tokio::time::timeout(Duration::from_secs(10), command.wait())
        .await
        .expect("the command ends")
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(2), "SIGINT, as Ctrl+C");
    drop(ed);
    task.await.unwrap().unwrap();
}
