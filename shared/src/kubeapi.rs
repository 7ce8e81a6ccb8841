//! The few ways the suite writes to, waits on and watches the API server,
//! defined once: server-side apply under one field manager, delete that
//! treats "already gone" as done, one timed wait on an object (a watch,
//! never a poll), and [`watch`], a typed watch through one untyped watcher.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{Condition, await_condition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field manager of the suite's server-side applies.
pub const FIELD_MANAGER: &str = "kubectl-gitops";

/// Why a wait ended without its condition.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {} waiting for {what}", crate::duration::human(*limit))]
    Timeout { limit: Duration, what: String },
    #[error("lost the watch while waiting for {what}: {message}")]
    Watch { what: String, message: String },
}

/// Server-side applies `obj` (named `name`) with the suite's field manager,
/// taking over fields from other managers.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Deletes an object (background propagation); `Ok(false)` when it was
/// already gone.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an API error has one of these HTTP status codes.
pub fn is_status(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Waits, at most `limit`, until `cond` holds for the object `name` (also
/// when it does not exist: conditions see `None`). A watch on that one
/// object: no polling. On timeout the error says what was awaited.
pub async fn await_object<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    what: impl Into<String>,
    cond: impl Condition<K>,
) -> Result<Option<K>, WaitError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let what = what.into();
    match tokio::time::timeout(limit, await_condition(api.clone(), name, cond)).await {
        Err(_) => Err(WaitError::Timeout { limit, what }),
        Ok(Err(e)) => Err(WaitError::Watch {
            what,
            message: e.to_string(),
        }),
        Ok(Ok(obj)) => Ok(obj),
    }
}

/// Deletes an object and waits (at most `limit`) until it is gone, its
/// finalizers done. `Ok(false)` when there was nothing to delete.
pub async fn delete_and_await<K>(
    api: &Api<K>,
    name: &str,
    limit: Duration,
    what: impl Into<String>,
) -> Result<bool, DeleteWaitError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(false);
    };
    // The API server gives every stored object a UID (one without would
    // end the wait below at once).
    let uid = obj.meta().uid.clone().unwrap_or_default();
    delete(api, name).await?;
    await_object(
        api,
        name,
        limit,
        what,
        kube::runtime::wait::conditions::is_deleted(&uid),
    )
    .await?;
    Ok(true)
}

/// A failed delete-and-wait: the API call or the wait.
#[derive(Debug, thiserror::Error)]
pub enum DeleteWaitError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Wait(#[from] WaitError),
}

/// Watches kind `K` (in `namespace`, or in all namespaces) as kube's
/// `watcher` does, events and errors alike. The watch itself is of untyped
/// objects, each read into `K` as it comes (one that does not read is
/// skipped, and logged): one watcher, kube's watch state machine, serves
/// every kind, where a typed watcher per kind costs each binary a copy.
pub fn watch<K>(
    client: kube::Client,
    namespace: Option<&str>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>>
+ Send
+ 'static
where
    K: kube::Resource<DynamicType = ()> + DeserializeOwned + Send + 'static,
{
    use futures::StreamExt as _;
    use kube::api::{ApiResource, DynamicObject};
    use kube::runtime::watcher::{Event, watcher};
    let resource = ApiResource::erase::<K>(&());
    let api = match namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client, ns, &resource),
        None => Api::<DynamicObject>::all_with(client, &resource),
    };
    watcher(api, config).filter_map(move |event| {
        futures::future::ready(match event {
            Ok(Event::Apply(o)) => typed::<K>(o).map(|o| Ok(Event::Apply(o))),
            Ok(Event::InitApply(o)) => typed::<K>(o).map(|o| Ok(Event::InitApply(o))),
            Ok(Event::Delete(o)) => typed::<K>(o).map(|o| Ok(Event::Delete(o))),
            Ok(Event::Init) => Some(Ok(Event::Init)),
            Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
            Err(e) => Some(Err(e)),
        })
    })
}

/// An untyped object read as `K` (None, logged, when it does not read).
fn typed<K: DeserializeOwned>(object: kube::api::DynamicObject) -> Option<K> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .inspect_err(|e| tracing::debug!("a watched object does not read: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{Deployment, Pod};

    #[test]
    fn a_watched_object_reads_as_its_kind() {
        // What the API server sends on a watch, as the untyped watcher holds it.
        let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "dev", "resourceVersion": "7"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"readyReplicas": 1, "observedGeneration": 3}
        }))
        .unwrap();
        let deployment: Deployment = typed(object.clone()).unwrap();
        assert_eq!(deployment.metadata.name.as_deref(), Some("web"));
        assert_eq!(deployment.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(deployment.spec.unwrap().replicas, Some(2));
        assert_eq!(deployment.status.unwrap().ready_replicas, Some(1));
        // One that does not read as the kind asked for is skipped.
        let mut odd = object;
        odd.data["spec"] = serde_json::json!("not a spec");
        assert!(typed::<Deployment>(odd).is_none());
        assert!(
            typed::<Pod>(
                serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap()
            )
            .is_some()
        );
    }
}
