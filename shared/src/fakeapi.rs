//! A small fake API server for unit tests (test builds only), served over
//! real HTTP on 127.0.0.1 so a real [`kube::Client`] talks to it.
//!
//! It keeps objects of any kind in memory, by URL (`/api/v1/…`,
//! `/apis/GROUP/VERSION/…`, namespaced or not) and answers as the API
//! server does where the suite's rules depend on it:
//! - GET, list (label and field selectors) and watch (from a
//!   resourceVersion: the changes since, then live ones);
//! - create (409 AlreadyExists), replace and merge patch with a
//!   `metadata.resourceVersion` precondition (409 Conflict when it is not
//!   the current one), JSON patch whose `test` operations must hold (422),
//!   server-side apply (taken as a merge, creating when absent);
//! - delete with `preconditions` (409) and `propagationPolicy`: an object
//!   with finalizers gets a deletion timestamp and goes when a later write
//!   empties them (as a controller does);
//! - `GET /version` (hyper adds the `Date` header) and the discovery of
//!   the API groups a test declares ([`Handle::serve_group`]).
//!
//! Every request is recorded in order ([`Handle::requests`]), and a test
//! can act just before a given request is answered ([`Handle::before`]),
//! to make a race happen exactly there. Tests change objects directly with
//! [`Handle::put`], [`Handle::update`] and [`Handle::remove`] (the Lease
//! shorthands [`Handle::modify`] and [`Handle::delete`] too); watchers see
//! those changes like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::selector::{Expression, Selector};

/// Where an object lives: (group/version, plural, namespace or "", name).
type Key = (String, String, String, String);

/// One request as the fake received and answered it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// The `content-type` (the kind of patch).
    pub content_type: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
    pub status: u16,
}

impl Request {
    /// `METHOD path status`, for assertions on the order of requests.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.status)
    }

    /// Whether it is a watch.
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// A change, as watchers see it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

type Hook = Box<dyn FnOnce(&Handle) + Send>;

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<Change>,
    requests: Vec<Request>,
    /// group/version -> (plural, kind, namespaced)
    groups: BTreeMap<String, Vec<(String, String, bool)>>,
    hooks: Vec<(Method, String, Hook)>,
    uids: u64,
}

/// The fake's state, shared by the server and the test.
#[derive(Clone)]
pub struct Handle {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<Change>,
}

/// The running fake; dropped, it stops serving.
pub struct FakeApi {
    handle: Handle,
    pub client: kube::Client,
    server: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for FakeApi {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a path names.
enum Target {
    Version,
    Discovery(String),
    /// (group/version, plural, namespace or "", name)
    Collection(String, String, String),
    Object(Key),
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match segs.as_slice() {
        ["version"] => return Some(Target::Version),
        ["apis", g, v] => return Some(Target::Discovery(format!("{g}/{v}"))),
        ["api", "v1", rest @ ..] => ("v1".to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let s = |x: &&str| x.to_string();
    Some(match rest {
        ["namespaces", ns, plural] => Target::Collection(gv, s(plural), s(ns)),
        ["namespaces", ns, plural, name] => Target::Object((gv, s(plural), s(ns), s(name))),
        [plural] => Target::Collection(gv, s(plural), String::new()),
        [plural, name] => Target::Object((gv, s(plural), String::new(), s(name))),
        _ => return None,
    })
}

fn query_map(query: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A `labelSelector` query (`a=b,c!=d,e in (f,g),!h`) as a [`Selector`].
fn parse_selector(q: &str) -> Selector {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in q.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&q[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&q[start..]);
    let set = |s: &str| -> BTreeSet<String> {
        s.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_string())
            .collect()
    };
    let all = terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Some((k, vs)) = t.split_once(" notin ") {
                Expression::NotIn(k.trim().into(), set(vs))
            } else if let Some((k, vs)) = t.split_once(" in ") {
                Expression::In(k.trim().into(), set(vs))
            } else if let Some((k, v)) = t.split_once("!=") {
                Expression::NotEqual(k.into(), v.into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Expression::Equal(k.into(), v.into())
            } else if let Some(k) = t.strip_prefix('!') {
                Expression::DoesNotExist(k.into())
            } else {
                Expression::Exists(t.into())
            }
        })
        .collect();
    Selector::All(all)
}

/// Whether an object passes a list's or watch's selectors.
fn selected(obj: &Value, q: &BTreeMap<String, String>) -> bool {
    if let Some(l) = q.get("labelSelector") {
        let labels: BTreeMap<String, String> = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if !parse_selector(l).matches(&labels) {
            return false;
        }
    }
    if let Some(f) = q.get("fieldSelector") {
        for term in f.split(',').filter(|t| !t.is_empty()) {
            let (path, want, equal) = match term.split_once("!=") {
                Some((p, v)) => (p, v, false),
                None => match term.split_once('=') {
                    Some((p, v)) => (p, v.trim_start_matches('='), true),
                    None => continue,
                },
            };
            let mut v = obj;
            for part in path.split('.') {
                v = &v[part];
            }
            if (v.as_str().unwrap_or_default() == want) != equal {
                return false;
            }
        }
    }
    true
}

fn in_collection(key: &Key, gv: &str, plural: &str, ns: &str) -> bool {
    key.0 == gv && key.1 == plural && (ns.is_empty() || key.2 == ns)
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

impl Handle {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a change (new resourceVersion, history, watchers), with the
    /// store locked.
    fn commit(&self, store: &mut Store, key: Key, kind: &'static str, mut object: Value) -> Value {
        let rv = store.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind == "DELETED" {
            store.objects.remove(&key);
        } else {
            store.objects.insert(key.clone(), object.clone());
        }
        let change = Change {
            rv,
            key,
            kind,
            object: object.clone(),
        };
        store.history.push(change.clone());
        let _ = self.events.send(change);
        object
    }

    /// Writes an object as stored (metadata the server owns kept or made);
    /// an object being deleted whose finalizers are gone goes.
    fn write(&self, store: &mut Store, key: Key, mut object: Value) -> Value {
        let old = store.objects.get(&key).cloned();
        let meta = &mut object["metadata"];
        meta["name"] = json!(key.3);
        if !key.2.is_empty() {
            meta["namespace"] = json!(key.2);
        }
        // The server's own fields: kept from the stored object, else made
        // (a test may give them when it puts an object).
        for f in ["uid", "creationTimestamp", "deletionTimestamp"] {
            if let Some(v) = old
                .as_ref()
                .map(|o| &o["metadata"][f])
                .filter(|v| !v.is_null())
            {
                meta[f] = v.clone();
            }
        }
        if meta["uid"].is_null() {
            store.uids += 1;
            meta["uid"] = json!(format!("uid-{}", store.uids));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!(now());
        }
        let finalized = object["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if !object["metadata"]["deletionTimestamp"].is_null() && finalized {
            return self.commit(store, key, "DELETED", object);
        }
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.commit(store, key, kind, object)
    }

    fn key_of<K>(namespace: &str, name: &str) -> Key
    where
        K: kube::Resource<DynamicType = ()>,
    {
        (
            K::api_version(&()).into_owned(),
            K::plural(&()).into_owned(),
            namespace.to_string(),
            name.to_string(),
        )
    }

    /// Stores an object (namespace and name from its metadata; a new
    /// resourceVersion; a uid if it had none) and tells the watchers;
    /// returns it as stored.
    pub fn put<K>(&self, obj: K) -> K
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let meta = obj.meta();
        let key = Self::key_of::<K>(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let mut value = serde_json::to_value(&obj).unwrap_or_default();
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let stored = {
            let mut store = self.lock();
            self.write(&mut store, key, value)
        };
        serde_json::from_value(stored).unwrap_or(obj)
    }

    /// The object stored there, if any.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let key = Self::key_of::<K>(namespace, name);
        let v = self.lock().objects.get(&key).cloned()?;
        serde_json::from_value(v).ok()
    }

    /// Changes a stored object (as its controller or its owner would);
    /// an object being deleted whose finalizers this empties goes.
    pub fn update<K>(&self, namespace: &str, name: &str, change: impl FnOnce(&mut K))
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let key = Self::key_of::<K>(namespace, name);
        let mut store = self.lock();
        let Some(v) = store.objects.get(&key).cloned() else {
            return;
        };
        let Ok(mut obj) = serde_json::from_value::<K>(v) else {
            return;
        };
        change(&mut obj);
        let mut value = serde_json::to_value(&obj).unwrap_or_default();
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        self.write(&mut store, key, value);
    }

    /// Removes a stored object at once (finalizers or not).
    pub fn remove<K>(&self, namespace: &str, name: &str)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let key = Self::key_of::<K>(namespace, name);
        let mut store = self.lock();
        if let Some(v) = store.objects.get(&key).cloned() {
            self.commit(&mut store, key, "DELETED", v);
        }
    }

    /// Changes a stored Lease (as a renewal would).
    pub fn modify(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Lease)) {
        self.update::<Lease>(namespace, name, change);
    }

    /// Deletes a stored Lease.
    pub fn delete(&self, namespace: &str, name: &str) {
        self.remove::<Lease>(namespace, name);
    }

    /// The requests received so far, in order (watches included).
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Serves discovery of `group_version` with these `(plural, Kind)`
    /// namespaced resources (without it, the group is not served: 404).
    pub fn serve_group(&self, group_version: &str, resources: &[(&str, &str)]) {
        self.lock().groups.insert(
            group_version.to_string(),
            resources
                .iter()
                .map(|(p, k)| (p.to_string(), k.to_string(), true))
                .collect(),
        );
    }

    /// Runs `hook` once, just before the first `method` request on exactly
    /// `path` is answered (to make a race happen there).
    pub fn before(&self, method: Method, path: &str, hook: impl FnOnce(&Handle) + Send + 'static) {
        self.lock()
            .hooks
            .push((method, path.to_string(), Box::new(hook)));
    }
}

async fn handle(
    State(h): State<Handle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let hook = {
        let mut store = h.lock();
        let at = store
            .hooks
            .iter()
            .position(|(m, p, _)| *m == method && *p == path);
        at.map(|i| store.hooks.remove(i).2)
    };
    if let Some(hook) = hook {
        hook(&h);
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let q = query_map(&query);
    let (code, response) = answer(&h, &method, &path, &q, &content_type, body.clone());
    h.lock().requests.push(Request {
        method: method.to_string(),
        path,
        query,
        content_type,
        body,
        status: code.as_u16(),
    });
    response
}

fn answer(
    h: &Handle,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: Option<Value>,
) -> (StatusCode, Response) {
    let reply = |code: StatusCode, v: Value| (code, json_response(code, &v));
    let fail =
        |code: StatusCode, reason: &str, message: String| (code, status(code, reason, message));
    let Some(target) = parse_path(path) else {
        return fail(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{path} is not served"),
        );
    };
    match (method, target) {
        (&Method::GET, Target::Version) => reply(
            StatusCode::OK,
            json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-fake"}),
        ),
        (&Method::GET, Target::Discovery(gv)) => match h.lock().groups.get(&gv) {
            Some(resources) => reply(
                StatusCode::OK,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources.iter().map(|(plural, kind, namespaced)| json!({
                        "name": plural, "singularName": kind.to_lowercase(),
                        "namespaced": namespaced, "kind": kind,
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                    })).collect::<Vec<_>>()}),
            ),
            None => fail(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{gv} is not served"),
            ),
        },
        (&Method::GET, Target::Collection(gv, plural, ns)) => {
            let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                return (StatusCode::OK, watch_response(h, gv, plural, ns, q.clone()));
            }
            let store = h.lock();
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|(k, v)| in_collection(k, &gv, &plural, &ns) && selected(v, q))
                .map(|(_, v)| v.clone())
                .collect();
            reply(
                StatusCode::OK,
                json!({"apiVersion": gv, "kind": "List",
                    "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
            )
        }
        (&Method::GET, Target::Object(key)) => match h.lock().objects.get(&key) {
            Some(v) => reply(StatusCode::OK, v.clone()),
            None => not_found(&key),
        },
        (&Method::POST, Target::Collection(gv, plural, ns)) => {
            let Some(obj) = body else {
                return fail(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let key = (gv, plural, ns, name.to_string());
            let mut store = h.lock();
            if store.objects.contains_key(&key) {
                return fail(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{} \"{}\" already exists", key.1, key.3),
                );
            }
            let stored = h.write(&mut store, key, obj);
            reply(StatusCode::CREATED, stored)
        }
        (&Method::PUT, Target::Object(key)) => {
            let Some(obj) = body else {
                return fail(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            let mut store = h.lock();
            let Some(current) = store.objects.get(&key) else {
                return not_found(&key);
            };
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && Some(rv) != current["metadata"]["resourceVersion"].as_str()
            {
                return conflict(&key);
            }
            let stored = h.write(&mut store, key, obj);
            reply(StatusCode::OK, stored)
        }
        (&Method::PATCH, Target::Object(key)) => {
            let Some(patch) = body else {
                return fail(StatusCode::BAD_REQUEST, "BadRequest", "no body".into());
            };
            let mut store = h.lock();
            let apply = content_type.starts_with("application/apply-patch");
            let current = match store.objects.get(&key) {
                Some(c) => c.clone(),
                None if apply => json!({"apiVersion": patch["apiVersion"], "kind": patch["kind"]}),
                None => return not_found(&key),
            };
            let mut doc = current.clone();
            if content_type.starts_with("application/json-patch") {
                let ops: json_patch::Patch = match serde_json::from_value(patch) {
                    Ok(p) => p,
                    Err(e) => return fail(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
                };
                if let Err(e) = json_patch::patch(&mut doc, &ops) {
                    return fail(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
                }
            } else {
                if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
                    && Some(rv) != current["metadata"]["resourceVersion"].as_str()
                {
                    return conflict(&key);
                }
                json_patch::merge(&mut doc, &patch);
            }
            let stored = h.write(&mut store, key, doc);
            reply(StatusCode::OK, stored)
        }
        (&Method::DELETE, Target::Object(key)) => {
            let mut store = h.lock();
            let Some(current) = store.objects.get(&key).cloned() else {
                return not_found(&key);
            };
            let options = body.unwrap_or_default();
            let pre = &options["preconditions"];
            for f in ["resourceVersion", "uid"] {
                if let Some(want) = pre[f].as_str()
                    && Some(want) != current["metadata"][f].as_str()
                {
                    return conflict(&key);
                }
            }
            let finalizers = current["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if finalizers {
                if current["metadata"]["deletionTimestamp"].is_null() {
                    let mut doc = current;
                    doc["metadata"]["deletionTimestamp"] = json!(now());
                    let stored = h.commit(&mut store, key, "MODIFIED", doc);
                    return reply(StatusCode::OK, stored);
                }
                return reply(StatusCode::OK, current);
            }
            let gone = h.commit(&mut store, key, "DELETED", current);
            reply(StatusCode::OK, gone)
        }
        _ => fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path} is not served"),
        ),
    }
}

fn not_found(key: &Key) -> (StatusCode, Response) {
    (
        StatusCode::NOT_FOUND,
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{}\" not found", key.1, key.3),
        ),
    )
}

fn conflict(key: &Key) -> (StatusCode, Response) {
    (
        StatusCode::CONFLICT,
        status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                key.1, key.3
            ),
        ),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch: from resourceVersion R, the recorded changes after R, then the
/// live ones; from "0" or none, the objects there now (ADDED), then live.
fn watch_response(
    h: &Handle,
    gv: String,
    plural: String,
    ns: String,
    q: BTreeMap<String, String>,
) -> Response {
    let since: Option<u64> = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);
    let ours =
        move |key: &Key, obj: &Value| in_collection(key, &gv, &plural, &ns) && selected(obj, &q);
    // Changes are sent with the store locked: subscribing under the lock
    // makes the past and the live changes meet without a gap.
    let (rx, past, last) = {
        let store = h.lock();
        let rx = h.events.subscribe();
        let past: Vec<Bytes> = match since {
            Some(r) => store
                .history
                .iter()
                .filter(|c| c.rv > r && ours(&c.key, &c.object))
                .map(|c| event_line(c.kind, &c.object))
                .collect(),
            None => store
                .objects
                .iter()
                .filter(|(k, v)| ours(k, v))
                .map(|(_, v)| event_line("ADDED", v))
                .collect(),
        };
        (rx, past, store.rv)
    };
    let live = futures::stream::unfold((rx, ours), move |(mut rx, ours)| async move {
        loop {
            match rx.recv().await {
                Ok(c) if c.rv > last && ours(&c.key, &c.object) => {
                    let line = event_line(c.kind, &c.object);
                    return Some((Ok::<_, Infallible>(line), (rx, ours)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::stream::iter(past.into_iter().map(Ok::<_, Infallible>)).chain(live);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

impl FakeApi {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> FakeApi {
        let handle = Handle {
            store: Arc::new(Mutex::new(Store {
                rv: 100,
                ..Default::default()
            })),
            events: broadcast::channel(1024).0,
        };
        let app = Router::new()
            .fallback(handle_any)
            .with_state(handle.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        FakeApi {
            handle,
            client,
            server,
        }
    }
}

async fn handle_any(
    state: State<Handle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, method, uri, headers, body).await
}

#[cfg(test)]
mod tests {
    //! The fake answers as the API server does where the rules depend on it.
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn code(r: Result<impl Sized, kube::Error>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn preconditions_conflicts_and_finalizers() {
        let fake = FakeApi::start().await;
        let api: Api<ConfigMap> = Api::namespaced(fake.client.clone(), "ns");
        let a = api.create(&Default::default(), &cm("a")).await.unwrap();
        assert_eq!(code(api.create(&Default::default(), &cm("a")).await), 409);
        let rv = a.metadata.resource_version.clone().unwrap();
        // A merge patch or replace with a resourceVersion that is not the
        // current one: 409.
        let stale = serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"k": "v"}});
        let merge = |p| Patch::Merge(p);
        assert_eq!(
            code(
                api.patch("a", &PatchParams::default(), &merge(&stale))
                    .await
            ),
            409
        );
        let fresh = serde_json::json!({"metadata": {"resourceVersion": rv}, "data": {"k": "v"}});
        let b = api
            .patch("a", &PatchParams::default(), &merge(&fresh))
            .await
            .unwrap();
        assert_eq!(b.data.unwrap()["k"], "v");
        assert_eq!(code(api.replace("a", &Default::default(), &a).await), 409);
        // A JSON patch whose test fails: 422, nothing written.
        let test: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/data/k", "value": "w"},
            {"op": "replace", "path": "/data/k", "value": "x"},
        ]))
        .unwrap();
        assert_eq!(
            code(
                api.patch("a", &PatchParams::default(), &Patch::Json::<()>(test))
                    .await
            ),
            422
        );
        assert_eq!(
            fake.get::<ConfigMap>("ns", "a").unwrap().data.unwrap()["k"],
            "v"
        );
        // A delete with a precondition that does not hold: 409.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..Default::default()
        };
        assert_eq!(code(api.delete("a", &dp).await), 409);
        // Finalizers keep an object, marked, until they are gone.
        let mut f = cm("f");
        f.metadata.finalizers = Some(vec!["x".into()]);
        fake.put(f);
        api.delete("f", &DeleteParams::background()).await.unwrap();
        let marked = fake.get::<ConfigMap>("ns", "f").unwrap();
        assert!(marked.metadata.deletion_timestamp.is_some());
        fake.update::<ConfigMap>("ns", "f", |c| c.metadata.finalizers = None);
        assert!(fake.get::<ConfigMap>("ns", "f").is_none());
        // Lists filter by label; discovery serves only the declared groups.
        fake.put(cm("b"));
        let l = api
            .list(&kube::api::ListParams::default().labels("app in (b,c)"))
            .await
            .unwrap();
        assert_eq!(l.items.len(), 1);
        assert!(
            !crate::flux::serves(&fake.client, "helm.toolkit.fluxcd.io/v2", "HelmRelease")
                .await
                .unwrap()
        );
        fake.serve_group(
            "helm.toolkit.fluxcd.io/v2",
            &[("helmreleases", "HelmRelease")],
        );
        assert!(
            crate::flux::serves(&fake.client, "helm.toolkit.fluxcd.io/v2", "HelmRelease")
                .await
                .unwrap()
        );
        let log: Vec<String> = fake.requests().iter().map(Request::line).collect();
        assert_eq!(log[0], "POST /api/v1/namespaces/ns/configmaps 201");
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.query.contains("labelSelector"))
        );
    }
}
