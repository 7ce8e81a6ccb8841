//! The few ways the suite writes to and waits on the API server, defined
//! once: server-side apply under one field manager, delete that treats
//! "already gone" as done, and one timed wait on an object (a watch, never
//! a poll).

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
