//! Who holds a session's Lease, and the rules that keep two parties from
//! fighting over one session's objects:
//! - the running command renews its heartbeat with a JSON patch that first
//!   *tests* that the Lease is still its own (holder and pid): a Lease that
//!   was deleted (404) or taken by someone else (the test fails, 422) is
//!   noticed at the next renewal, and the command stops syncing;
//! - `gitops-sessions prune` (and `delete`) first *claim* the Lease of the
//!   session they remove (holder `removing:<who>`, renew time now), with the
//!   resourceVersion they judged stale as a precondition: a session that
//!   came back to life meanwhile makes the claim fail (409) and is left
//!   alone, and of two concurrent prunes only one goes on;
//! - a starting session writes its Lease with the resourceVersion of the
//!   stale one it saw (or creates it), so it cannot overwrite a claim made
//!   after it looked; it then waits for that removal to finish.

use std::fmt;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};

use super::{self as record, keys};

/// The holder identity of a Lease whose session is being removed.
pub const REMOVING: &str = "removing:";

/// The holder that `who` (`user@host`) writes while removing a session.
pub fn removing_holder(who: &str) -> String {
    format!("{REMOVING}{who}")
}

/// Who is removing the session of this Lease, if anyone.
pub fn removed_by(lease: &Lease) -> Option<&str> {
    record::holder(lease).strip_prefix(REMOVING)
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// JSON-pointer form of an annotation key (`/` is `~1`).
fn annotation_pointer(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// The renewal: the holder and pid must still be ours, then the renew time
/// moves. One request.
pub fn renewal(owner: &str, pid: &str) -> Result<json_patch::Patch, serde_json::Error> {
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": owner},
        {"op": "test", "path": annotation_pointer(keys::PID), "value": pid},
        {"op": "replace", "path": "/spec/renewTime", "value": now()},
    ]))
}

/// The patch that moves a session's own sandbox's expiry to `expires`,
/// only while the sandbox's record still names the session (tests first).
pub fn sandbox_extension(
    lease_namespace: &str,
    session: &str,
    expires: chrono::DateTime<Utc>,
) -> Result<json_patch::Patch, serde_json::Error> {
    let label = |k: &str| {
        format!(
            "/metadata/labels/{}",
            k.replace('~', "~0").replace('/', "~1")
        )
    };
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": label(crate::labels::SESSION), "value": session},
        {"op": "test", "path": label(crate::labels::SESSION_NAMESPACE), "value": lease_namespace},
        {"op": "add", "path": annotation_pointer(crate::labels::EXPIRES_AT),
         "value": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
    ]))
}

/// Moves the expiry of the session's own sandbox to `ttl` from now (best
/// effort: a failure is logged, the next renewal tries again later).
pub async fn extend_sandbox(
    client: &kube::Client,
    sandbox: &str,
    lease_namespace: &str,
    session: &str,
    ttl: std::time::Duration,
) {
    let Some(expires) = crate::duration::checked_after(Utc::now(), ttl) else {
        return;
    };
    let patch = match sandbox_extension(lease_namespace, session, expires) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("cannot extend sandbox {sandbox}: {e}");
            return;
        }
    };
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces
        .patch(sandbox, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        tracing::debug!("cannot extend sandbox {sandbox}: {e}");
    }
}

/// Why a running session no longer holds its Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// `gitops-sessions prune` or `delete` is removing it.
    Removed { by: String },
    /// The Lease is gone, and nobody said they were removing it.
    Deleted,
    /// Another command holds it now.
    TakenOver { holder: String, pid: String },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Removed { by } => write!(
                f,
                "the session is being removed by {by} (`kubectl gitops-sessions prune` or `delete`)"
            ),
            Lost::Deleted => write!(f, "the session's Lease was deleted by someone else"),
            Lost::TakenOver { holder, pid } => write!(
                f,
                "the session was taken over by {holder} (pid {pid}), which syncs it now"
            ),
        }
    }
}

/// What a renewal found.
#[derive(Debug)]
pub enum Renewed {
    /// Ours, renewed.
    Held,
    /// Not ours any more.
    Lost(Lost),
    /// The API server could not be asked (retry later).
    Unknown(kube::Error),
}

/// Renews the Lease `name` if it is still held by `owner` with `pid`.
pub async fn renew(api: &Api<Lease>, name: &str, owner: &str, pid: &str) -> Renewed {
    let patch = match renewal(owner, pid) {
        Ok(p) => p,
        Err(e) => return Renewed::Unknown(kube::Error::SerdeError(e)),
    };
    match api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Renewed::Held,
        Err(kube::Error::Api(s)) if s.code == 404 => Renewed::Lost(Lost::Deleted),
        // A failed test (or any other refusal of the patch): who holds it?
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
            match api.get_opt(name).await {
                Ok(None) => Renewed::Lost(Lost::Deleted),
                Ok(Some(lease)) => match held_by(&lease, owner, pid) {
                    None => Renewed::Held,
                    Some(lost) => Renewed::Lost(lost),
                },
                Err(e) => Renewed::Unknown(e),
            }
        }
        Err(e) => Renewed::Unknown(e),
    }
}

/// `None` when the Lease is held by `owner` with `pid`, else why not.
pub fn held_by(lease: &Lease, owner: &str, pid: &str) -> Option<Lost> {
    if let Some(by) = removed_by(lease) {
        return Some(Lost::Removed { by: by.to_string() });
    }
    let holder = record::holder(lease);
    let theirs = record::Record::of(lease).pid;
    if holder == owner && theirs == pid {
        return None;
    }
    Some(Lost::TakenOver {
        holder: if holder.is_empty() {
            "nobody (released)".into()
        } else {
            holder.to_string()
        },
        pid: theirs,
    })
}

/// Claims the Lease of a session that `who` is about to remove. With
/// `resource_version`, only if the Lease has not changed since it was read
/// (`Ok(false)`: it changed, someone renewed or claimed it). `Ok(false)`
/// also when it is gone.
pub async fn claim(
    api: &Api<Lease>,
    name: &str,
    who: &str,
    resource_version: Option<&str>,
) -> Result<bool, kube::Error> {
    let mut patch = serde_json::json!({
        "spec": {"holderIdentity": removing_holder(who), "renewTime": now()},
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({"resourceVersion": rv});
    }
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a stop long enough to lose the heartbeat happened between two
/// renewals: the wall-clock gap (a suspended laptop or process) when it is
/// longer than the lease.
pub fn gap(
    last: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
    lease: std::time::Duration,
) -> Option<std::time::Duration> {
    let gap = (now - last).to_std().ok()?;
    (gap > lease).then_some(gap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn lease(holder: &str, pid: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(keys::PID.to_string(), pid.to_string())])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_ours_only_with_our_holder_and_pid() {
        assert_eq!(
            held_by(&lease("ann@laptop", "42"), "ann@laptop", "42"),
            None
        );
        assert_eq!(
            held_by(&lease("ann@laptop", "43"), "ann@laptop", "42"),
            Some(Lost::TakenOver {
                holder: "ann@laptop".into(),
                pid: "43".into()
            })
        );
        assert_eq!(
            held_by(&lease("removing:bob@ci", "42"), "ann@laptop", "42"),
            Some(Lost::Removed {
                by: "bob@ci".into()
            })
        );
        assert!(
            Lost::Removed {
                by: "bob@ci".into()
            }
            .to_string()
            .contains("gitops-sessions prune")
        );
    }

    #[test]
    fn the_renewal_tests_holder_and_pid_before_it_writes() {
        let patch = serde_json::to_value(renewal("ann@laptop", "42").unwrap()).unwrap();
        let ops = patch.as_array().unwrap();
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["path"], "/spec/holderIdentity");
        assert_eq!(
            ops[1]["path"],
            "/metadata/annotations/gitops.kubectl.dev~1pid"
        );
        assert_eq!(ops[1]["value"], "42");
        assert_eq!(ops[2]["op"], "replace");
        assert_eq!(ops[2]["path"], "/spec/renewTime");
    }

    #[test]
    fn the_sandbox_extension_tests_the_record_before_it_writes() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let patch = serde_json::to_value(sandbox_extension("run-a", "run-a", t).unwrap()).unwrap();
        let ops = patch.as_array().unwrap();
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(
            ops[0]["path"],
            "/metadata/labels/gitops.kubectl.dev~1session"
        );
        assert_eq!(
            ops[1]["path"],
            "/metadata/labels/gitops.kubectl.dev~1session-namespace"
        );
        assert_eq!(
            ops[2]["path"],
            "/metadata/annotations/gitops.kubectl.dev~1expires-at"
        );
        assert_eq!(ops[2]["value"], "2026-12-07T10:00:00Z");
    }

    #[test]
    fn a_gap_counts_only_when_longer_than_the_lease() {
        let t = Utc::now();
        let lease = std::time::Duration::from_secs(15);
        assert_eq!(gap(t, t + chrono::Duration::seconds(10), lease), None);
        assert_eq!(
            gap(t, t + chrono::Duration::seconds(40), lease),
            Some(std::time::Duration::from_secs(40))
        );
        assert_eq!(gap(t, t - chrono::Duration::seconds(40), lease), None);
    }
}
