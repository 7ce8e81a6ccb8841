//! A small fake API server for unit tests (test builds only): an in-memory
//! store of Leases served over real HTTP on 127.0.0.1, with `GET /version`
//! (hyper adds the `Date` header), GET of one Lease, and watches of one
//! Lease (`fieldSelector=metadata.name=…`) that see every change the test
//! makes with [`FakeApi::modify`] and [`FakeApi::delete`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use tokio::sync::broadcast;

type Key = (String, String);

#[derive(Clone)]
struct Shared {
    leases: Arc<Mutex<BTreeMap<Key, Lease>>>,
    rv: Arc<Mutex<u64>>,
    events: broadcast::Sender<(Key, String)>,
}

/// The running fake; dropped, it stops serving.
pub struct FakeApi {
    shared: Shared,
    pub client: kube::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json(code: StatusCode, v: &impl serde::Serialize) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_string(v).unwrap_or_default(),
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("leases \"{name}\" not found"), "reason": "NotFound", "code": 404}),
    )
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake"}),
    )
}

async fn get_lease(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let found = s
        .leases
        .lock()
        .ok()
        .and_then(|l| l.get(&(ns, name.clone())).cloned());
    match found {
        Some(l) => json(StatusCode::OK, &l),
        None => not_found(&name),
    }
}

async fn watch_leases(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let name = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .unwrap_or_default()
        .to_string();
    if q.get("watch").map(String::as_str) != Some("true") {
        return json(StatusCode::BAD_REQUEST, &"only watches are served");
    }
    let key = (ns, name);
    let rx = s.events.subscribe();
    let stream = futures::stream::unfold((rx, key), |(mut rx, key)| async move {
        loop {
            match rx.recv().await {
                Ok((k, line)) if k == key => {
                    return Some((Ok::<_, Infallible>(Bytes::from(line)), (rx, key)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

impl FakeApi {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> FakeApi {
        let shared = Shared {
            leases: Arc::default(),
            rv: Arc::new(Mutex::new(100)),
            events: broadcast::channel(256).0,
        };
        let app = Router::new()
            .route("/version", get(version))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                get(watch_leases),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        FakeApi {
            shared,
            client,
            server,
        }
    }

    fn next_rv(&self) -> String {
        let mut rv = self.shared.rv.lock().unwrap();
        *rv += 1;
        rv.to_string()
    }

    /// Stores a Lease (namespace and name from its metadata) with a new
    /// resourceVersion, and tells the watchers; returns it as stored.
    pub fn put(&self, mut lease: Lease) -> Lease {
        lease.metadata.resource_version = Some(self.next_rv());
        let key = (lease.namespace().unwrap_or_default(), lease.name_any());
        let kind = if self.shared.leases.lock().unwrap().contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.shared
            .leases
            .lock()
            .unwrap()
            .insert(key.clone(), lease.clone());
        self.tell(key, kind, &lease);
        lease
    }

    /// Changes a stored Lease (as a renewal would).
    pub fn modify(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Lease)) {
        let key = (namespace.to_string(), name.to_string());
        let Some(mut lease) = self.shared.leases.lock().unwrap().get(&key).cloned() else {
            return;
        };
        change(&mut lease);
        self.put(lease);
    }

    /// Deletes a stored Lease.
    pub fn delete(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(mut lease) = self.shared.leases.lock().unwrap().remove(&key) {
            lease.metadata.resource_version = Some(self.next_rv());
            self.tell(key, "DELETED", &lease);
        }
    }

    fn tell(&self, key: Key, kind: &str, lease: &Lease) {
        let mut line = serde_json::json!({"type": kind, "object": lease}).to_string();
        line.push('\n');
        let _ = self.shared.events.send((key, line));
    }
}
