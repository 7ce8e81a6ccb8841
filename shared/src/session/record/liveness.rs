//! Whether a session's Lease is live, judged so that no clock skew makes a
//! live session look dead.
//!
//! A Lease's `renewTime` is written by the session's clock; the reader's
//! clock may be minutes off (a VM or WSL clock after sleep, a colleague's
//! laptop). So a glance at `renewTime` only ever says "live": a Lease that
//! looks fresh (by the API server's clock, which every reader shares) is
//! live at once. A Lease that looks old is *observed*: it is stale only if
//! nothing about it (its resourceVersion: renewals, holder, record) changed
//! during one full lease period measured by the reader's own monotonic
//! clock, as client-go's leader election does with its observed time. A
//! session whose writer's clock is behind still renews, so it is seen live;
//! one that died stops changing, so it is stale after one period whatever
//! the clocks say.
//!
//! [`decide`] is the rule (pure); [`judge`] applies it to many Leases at
//! once, with one watch per Lease and one wait for all of them (the longest
//! lease period), so pruning N sessions waits one period, not N.
//! `gitops-sessions prune` and `delete`, the page's Delete button, a
//! takeover by `--name` and `gitops-sandbox gc` all decide through it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};

use super::{self as record, holder, lease_duration, lease_is_live};

/// What one look at a Lease says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glance {
    /// No holder: released (`--keep`); nobody renews it.
    Released,
    /// Held by this user on this machine by a process that has exited.
    HolderGone,
    /// Renewed within its duration by the reference clock: live.
    Fresh,
    /// Looks old: live or stale is decided by observing it.
    Suspect,
}

/// The verdict on a Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Someone holds and renews it (or changed it while it was observed).
    Live,
    /// Nobody renews it.
    Stale,
    /// It was deleted while it was observed.
    Gone,
}

/// One look at a Lease, at `now` (the API server's time when known).
/// `holder_process_gone`: see [`record::holder_process_gone`].
pub fn glance(lease: &Lease, now: DateTime<Utc>, holder_process_gone: bool) -> Glance {
    if holder(lease).is_empty() {
        Glance::Released
    } else if holder_process_gone {
        Glance::HolderGone
    } else if lease_is_live(lease, now) {
        Glance::Fresh
    } else {
        Glance::Suspect
    }
}

/// The rule. `changed`: the Lease changed since it was first seen;
/// `observed`: for how long it has been observed (monotonic clock);
/// `period`: its lease duration. `None`: keep observing.
pub fn decide(
    glance: Glance,
    changed: bool,
    observed: Duration,
    period: Duration,
) -> Option<Verdict> {
    match glance {
        Glance::Released | Glance::HolderGone => Some(Verdict::Stale),
        Glance::Fresh => Some(Verdict::Live),
        Glance::Suspect if changed => Some(Verdict::Live),
        Glance::Suspect if observed >= period => Some(Verdict::Stale),
        Glance::Suspect => None,
    }
}

/// A Lease and the verdict on it: the Lease as last seen (its
/// resourceVersion is the precondition of a claim that acts on the verdict).
#[derive(Debug, Clone)]
pub struct Judged {
    pub lease: Lease,
    pub verdict: Verdict,
}

/// The API server's clock, from the `Date` header of a `GET /version`
/// (truncated to the second: the server's time is up to one second
/// later); `None` when it cannot be read.
pub async fn server_now(client: &Client) -> Option<DateTime<Utc>> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .ok()?;
    let response = client.send(request).await.ok()?;
    let date = response.headers().get(http::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(date)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn key(lease: &Lease) -> (String, String) {
    (lease.namespace().unwrap_or_default(), lease.name_any())
}

/// Judges `leases` (as just read) with [`decide`]: those that need it are
/// observed together, each for its own lease period, in one wait. `me` is
/// this `user@host` (for [`record::holder_process_gone`]). The verdicts
/// come back in the order of `leases`.
pub async fn judge(client: &Client, leases: Vec<Lease>, me: &str) -> Vec<Judged> {
    // The latest the server's time can be: a glance says "live" only when
    // the Lease is fresh then too. A Lease that expired within the Date
    // header's truncated second (a session just killed, seen stale by a
    // reader with a finer clock) is observed, not called live.
    let now = match server_now(client).await {
        Some(date) => date + chrono::Duration::seconds(1),
        None => Utc::now(),
    };
    let started = tokio::time::Instant::now();
    let mut out: Vec<Option<Judged>> = Vec::with_capacity(leases.len());
    // Index into `out` -> (glance, period, first resourceVersion).
    let mut pending: BTreeMap<usize, (Glance, Duration, Option<String>)> = BTreeMap::new();
    for (i, lease) in leases.into_iter().enumerate() {
        let g = glance(&lease, now, record::holder_process_gone(&lease, me));
        let period = lease_duration(&lease);
        match decide(g, false, Duration::ZERO, period) {
            Some(verdict) => out.push(Some(Judged { lease, verdict })),
            None => {
                pending.insert(i, (g, period, lease.resource_version()));
                out.push(Some(Judged {
                    lease,
                    verdict: Verdict::Stale,
                }));
            }
        }
    }
    if !pending.is_empty() {
        observe(client, &mut out, pending, started).await;
    }
    out.into_iter().flatten().collect()
}

/// Watches the pending Leases (one watch each, from the resourceVersion
/// seen) until each changed or its period passed; a Lease whose period
/// passed is read once more to confirm it did not change.
async fn observe(
    client: &Client,
    out: &mut [Option<Judged>],
    mut pending: BTreeMap<usize, (Glance, Duration, Option<String>)>,
    started: tokio::time::Instant,
) {
    let mut streams = Vec::new();
    for (&i, (_, period, rv)) in &pending {
        let Some(j) = out.get(i).and_then(Option::as_ref) else {
            continue;
        };
        let (ns, name) = key(&j.lease);
        let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(u32::try_from(period.as_secs().saturating_add(5)).unwrap_or(u32::MAX));
        let rv = rv.clone().unwrap_or_else(|| "0".into());
        let stream = async move {
            match api.watch(&params, &rv).await {
                Ok(s) => s.map(move |e| (i, e.ok())).boxed(),
                Err(_) => futures::stream::empty().boxed(),
            }
        };
        streams.push(futures::stream::once(stream).flatten().boxed());
    }
    let mut events = futures::stream::select_all(streams);
    while !pending.is_empty() {
        let next_deadline = pending
            .values()
            .map(|(_, period, _)| started + *period)
            .min()
            .unwrap_or(started);
        tokio::select! {
            event = events.next(), if !events.is_empty() => {
                let Some((i, Some(event))) = event else { continue };
                let Some((g, period, first)) = pending.get(&i).cloned() else { continue };
                let verdict = match event {
                    WatchEvent::Deleted(_) => Some(Verdict::Gone),
                    WatchEvent::Added(l) | WatchEvent::Modified(l) => {
                        let changed = l.resource_version() != first;
                        let v = decide(g, changed, started.elapsed(), period);
                        if let (Some(_), Some(slot)) = (v, out.get_mut(i).and_then(Option::as_mut)) {
                            slot.lease = l;
                        }
                        v.filter(|_| changed)
                    }
                    WatchEvent::Bookmark(_) | WatchEvent::Error(_) => None,
                };
                if let (Some(v), Some(slot)) = (verdict, out.get_mut(i).and_then(Option::as_mut)) {
                    slot.verdict = v;
                    pending.remove(&i);
                }
            }
            () = tokio::time::sleep_until(next_deadline) => {
                let due: Vec<usize> = pending
                    .iter()
                    .filter(|(_, (_, period, _))| started + *period <= tokio::time::Instant::now())
                    .map(|(i, _)| *i)
                    .collect();
                for i in due {
                    let Some((g, period, first)) = pending.remove(&i) else { continue };
                    let Some(slot) = out.get_mut(i).and_then(Option::as_mut) else { continue };
                    let (ns, name) = key(&slot.lease);
                    let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
                    slot.verdict = match api.get_opt(&name).await {
                        Ok(None) => Verdict::Gone,
                        Ok(Some(now)) => {
                            let changed = now.resource_version() != first;
                            slot.lease = now;
                            decide(g, changed, started.elapsed(), period).unwrap_or(Verdict::Live)
                        }
                        // Not known to be stale: never taken.
                        Err(_) => Verdict::Live,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: DateTime<Utc>, seconds: i32) -> Lease {
        let ts = k8s_openapi::jiff::Timestamp::from_millisecond(renewed.timestamp_millis())
            .expect("a time");
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(ts)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const PERIOD: Duration = Duration::from_secs(30);

    #[test]
    fn a_fresh_lease_is_live_at_once_and_a_released_or_orphaned_one_stale_at_once() {
        let now = Utc::now();
        let fresh = lease("ann@laptop", now - chrono::Duration::seconds(5), 30);
        assert_eq!(glance(&fresh, now, false), Glance::Fresh);
        assert_eq!(
            decide(Glance::Fresh, false, Duration::ZERO, PERIOD),
            Some(Verdict::Live)
        );
        assert_eq!(glance(&lease("", now, 30), now, false), Glance::Released);
        assert_eq!(glance(&fresh, now, true), Glance::HolderGone);
        for g in [Glance::Released, Glance::HolderGone] {
            assert_eq!(
                decide(g, false, Duration::ZERO, PERIOD),
                Some(Verdict::Stale)
            );
        }
    }

    #[test]
    fn an_old_looking_lease_is_stale_only_after_a_full_unchanged_period() {
        let now = Utc::now();
        // The writer's clock is ten minutes behind the reference clock: the
        // Lease looks ten minutes old although it was just renewed.
        let skewed = lease("ann@laptop", now - chrono::Duration::minutes(10), 30);
        assert_eq!(glance(&skewed, now, false), Glance::Suspect);
        assert_eq!(decide(Glance::Suspect, false, Duration::ZERO, PERIOD), None);
        assert_eq!(
            decide(Glance::Suspect, false, Duration::from_secs(29), PERIOD),
            None
        );
        // A renewal seen during the period: live, however old it looks.
        assert_eq!(
            decide(Glance::Suspect, true, Duration::from_secs(10), PERIOD),
            Some(Verdict::Live)
        );
        assert_eq!(
            decide(Glance::Suspect, true, Duration::from_secs(300), PERIOD),
            Some(Verdict::Live)
        );
        // Unchanged for a whole period: nobody renews it.
        assert_eq!(
            decide(Glance::Suspect, false, PERIOD, PERIOD),
            Some(Verdict::Stale)
        );
    }

    fn held(ns: &str, name: &str, renewed: DateTime<Utc>, seconds: i32) -> Lease {
        let mut l = lease("ann@laptop", renewed, seconds);
        l.metadata.namespace = Some(ns.into());
        l.metadata.name = Some(name.into());
        l
    }

    /// Over a fake API server: old-looking Leases are watched together, one
    /// period in all; the renewed one is live, the untouched one stale, the
    /// deleted one gone, and the fresh one live without any wait.
    #[tokio::test]
    async fn old_looking_leases_are_watched_together_for_one_period() {
        let api = crate::fakeapi::FakeApi::start().await;
        // The reference clock is the API server's (its `Date` header).
        let server = server_now(&api.client).await.expect("the server's Date");
        assert!((server - Utc::now()).num_seconds().abs() <= 2, "{server}");
        // Written by a clock ten minutes behind: every one looks expired.
        let old = Utc::now() - chrono::Duration::minutes(10);
        let live = api.put(held("a", "live", old, 2));
        let dead = api.put(held("b", "dead", old, 2));
        let gone = api.put(held("a", "gone", old, 2));
        let fresh = api.put(held("c", "fresh", Utc::now(), 2));
        let started = std::time::Instant::now();
        let judging = tokio::spawn({
            let client = api.client.clone();
            async move { judge(&client, vec![live, dead, gone, fresh], "me@here").await }
        });
        // The live one renews (with its own, skewed clock) every 300 ms.
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            api.modify("a", "live", |l| {
                if let Some(s) = l.spec.as_mut() {
                    s.renew_time = Some(MicroTime(
                        k8s_openapi::jiff::Timestamp::from_millisecond(
                            (old + chrono::Duration::milliseconds(300 * i)).timestamp_millis(),
                        )
                        .unwrap(),
                    ));
                }
            });
            if i == 2 {
                api.delete("a", "gone");
            }
        }
        let judged = judging.await.unwrap();
        let elapsed = started.elapsed();
        let verdicts: Vec<(String, Verdict)> = judged
            .iter()
            .map(|j| (j.lease.name_any(), j.verdict))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                ("live".into(), Verdict::Live),
                ("dead".into(), Verdict::Stale),
                ("gone".into(), Verdict::Gone),
                ("fresh".into(), Verdict::Live),
            ]
        );
        // The stale verdict's Lease is the one observed: the claim's precondition.
        assert_eq!(judged[1].lease.resource_version().as_deref(), Some("102"));
        // One period for all of them (2 s), not one per Lease.
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(3500),
            "{elapsed:?}"
        );

        // A renewal is seen by the watch as it happens: no need to wait the period.
        let live = api.put(held("a", "live", old, 30));
        let started = std::time::Instant::now();
        let judging = tokio::spawn({
            let client = api.client.clone();
            async move { judge(&client, vec![live], "me@here").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.modify("a", "live", |_| {});
        let judged = judging.await.unwrap();
        assert_eq!(judged[0].verdict, Verdict::Live);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// A session killed just now: its Lease expired a moment ago by the
    /// server's exact time, but within the second the `Date` header
    /// truncates away. The page (finer clock) already shows it stale; the
    /// judge must not call it live (the Delete button then refused it).
    #[tokio::test]
    async fn a_lease_expired_within_the_dates_truncated_second_is_observed_not_live() {
        let api = crate::fakeapi::FakeApi::start().await;
        for _ in 0..3 {
            let dead = api.put(held(
                "a",
                "dead",
                Utc::now() - chrono::Duration::milliseconds(2_050),
                2,
            ));
            let judged = judge(&api.client, vec![dead], "me@here").await;
            assert_eq!(judged[0].verdict, Verdict::Stale);
        }
    }

    #[test]
    fn a_reader_clock_ahead_or_behind_never_makes_a_renewing_lease_stale() {
        let truth = Utc::now();
        let renewed = truth - chrono::Duration::seconds(3);
        for skew in [-600i64, -60, 0, 60, 600] {
            let reader_now = truth + chrono::Duration::seconds(skew);
            let l = lease("ann@laptop", renewed, 30);
            let g = glance(&l, reader_now, false);
            // However it looks, a Lease that is renewed during the period
            // (every third of it) is never judged stale.
            for observed in [0u64, 10, 20, 30, 60] {
                let v = decide(g, observed >= 10, Duration::from_secs(observed), PERIOD);
                assert_ne!(
                    v,
                    Some(Verdict::Stale),
                    "skew {skew}s, observed {observed}s"
                );
            }
        }
    }
}
