//! The loop's rules, on a paused clock: a fake syncer that takes time and a
//! channel of changes.

use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::session::Phase;

/// A sync that takes `took`, waits for Flux for the last `waiting` of it,
/// and returns the next scripted outcome (Ready when the script is done).
struct FakeSyncer {
    took: Duration,
    waiting: Duration,
    script: Vec<SyncOutcome>,
    starts: Arc<Mutex<Vec<Duration>>>,
    flag: Arc<AtomicBool>,
    t0: Instant,
    /// After a Ready sync, its workloads fail this long after (never: None).
    fails_after: Option<Duration>,
    /// When each such failure was reported.
    failed_at: Vec<Duration>,
}

impl FakeSyncer {
    fn new(took: Duration, waiting: Duration, script: Vec<SyncOutcome>) -> FakeSyncer {
        FakeSyncer {
            took,
            waiting,
            script,
            starts: Arc::default(),
            flag: Arc::default(),
            t0: Instant::now(),
            fails_after: None,
            failed_at: Vec::new(),
        }
    }

    fn starts(&self) -> Vec<u64> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect()
    }
}

impl Syncer for FakeSyncer {
    async fn sync(&mut self) -> SyncOutcome {
        self.starts.lock().unwrap().push(self.t0.elapsed());
        tokio::time::sleep(self.took - self.waiting).await;
        self.flag.store(true, Ordering::SeqCst);
        tokio::time::sleep(self.waiting).await;
        self.flag.store(false, Ordering::SeqCst);
        if self.script.is_empty() {
            SyncOutcome::Ready {
                revision: "r".into(),
            }
        } else {
            self.script.remove(0)
        }
    }
    fn waiting_flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
    async fn watch_after(&mut self) {
        match self.fails_after {
            Some(d) => {
                tokio::time::sleep(d).await;
                self.failed_at.push(self.t0.elapsed());
            }
            None => std::future::pending().await,
        }
    }
}

struct FakeChanges(mpsc::UnboundedReceiver<()>);

impl Changes for FakeChanges {
    async fn changed(&mut self) -> Option<Result<(), String>> {
        self.0.recv().await.map(Ok)
    }
    fn drain(&mut self) -> bool {
        let mut any = false;
        while self.0.try_recv().is_ok() {
            any = true;
        }
        any
    }
}

/// Sends a change at each of `at` (milliseconds from now).
fn saves(at: &[u64]) -> FakeChanges {
    let (tx, rx) = mpsc::unbounded_channel();
    let at = at.to_vec();
    tokio::spawn(async move {
        let t0 = Instant::now();
        for ms in at {
            tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
            let _ = tx.send(());
        }
        // Keep the channel open: a closed watcher ends the loop.
        tokio::time::sleep(Duration::from_secs(100_000)).await;
        drop(tx);
    });
    FakeChanges(rx)
}

fn push_failed() -> SyncOutcome {
    SyncOutcome::Failed {
        phase: Phase::Push,
        message: "registry unreachable".into(),
    }
}

async fn run_for(
    syncer: &mut FakeSyncer,
    changes: &mut FakeChanges,
    stop_after: Duration,
    events: &Mutex<Vec<Event>>,
) -> LoopEnd {
    let stop = tokio::time::sleep(stop_after);
    tokio::pin!(stop);
    sync_loop(
        syncer,
        changes,
        stop.as_mut(),
        false,
        &|e: &Event| events.lock().unwrap().push(e.clone()),
        || {},
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn saves_during_a_sync_queue_exactly_one_more() {
    let mut syncer = FakeSyncer::new(Duration::from_secs(1), Duration::ZERO, vec![]);
    let mut changes = saves(&[200, 400, 600, 3000]);
    let events = Mutex::new(Vec::new());
    let end = run_for(&mut syncer, &mut changes, Duration::from_secs(10), &events).await;
    assert_eq!(end, LoopEnd::Stopped);
    // The first sync, one for the three saves during it, one for the save at 3 s.
    assert_eq!(syncer.starts(), vec![0, 1000, 3000]);
}

#[tokio::test(start_paused = true)]
async fn failed_pushes_are_retried_with_doubling_backoff_then_reset() {
    let mut syncer = FakeSyncer::new(
        Duration::from_millis(100),
        Duration::ZERO,
        vec![push_failed(), push_failed(), push_failed()],
    );
    let mut changes = saves(&[]);
    let events = Mutex::new(Vec::new());
    run_for(&mut syncer, &mut changes, Duration::from_secs(120), &events).await;
    // 0 fails, +2 s, fails, +4 s, fails, +8 s, Ready; then no retries.
    assert_eq!(syncer.starts(), vec![0, 2100, 6200, 14300]);
}

#[tokio::test(start_paused = true)]
async fn a_save_supersedes_a_sync_waiting_for_flux() {
    // Each sync pushes within 100 ms, then waits 10 s for Flux.
    let mut syncer = FakeSyncer::new(
        Duration::from_millis(10_100),
        Duration::from_secs(10),
        vec![],
    );
    let mut changes = saves(&[500]);
    let events = Mutex::new(Vec::new());
    run_for(&mut syncer, &mut changes, Duration::from_secs(30), &events).await;
    assert_eq!(syncer.starts(), vec![0, 500]);
    assert!(events.lock().unwrap().contains(&Event::Superseded));
}

#[tokio::test(start_paused = true)]
async fn a_save_before_the_push_does_not_abandon_the_sync() {
    // The save lands while validating/building (not yet waiting for Flux).
    let mut syncer = FakeSyncer::new(Duration::from_secs(2), Duration::from_secs(1), vec![]);
    let mut changes = saves(&[300]);
    let events = Mutex::new(Vec::new());
    run_for(&mut syncer, &mut changes, Duration::from_secs(30), &events).await;
    assert_eq!(syncer.starts(), vec![0, 2000]);
    assert!(!events.lock().unwrap().contains(&Event::Superseded));
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_first_sync_ends_the_loop_at_once() {
    let mut syncer = FakeSyncer::new(Duration::from_secs(60), Duration::ZERO, vec![]);
    let mut changes = saves(&[]);
    let events = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let end = run_for(
        &mut syncer,
        &mut changes,
        Duration::from_millis(300),
        &events,
    )
    .await;
    assert_eq!(end, LoopEnd::Stopped);
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn once_returns_the_first_outcome_and_a_closed_watcher_ends_the_loop() {
    let mut syncer = FakeSyncer::new(
        Duration::from_millis(50),
        Duration::ZERO,
        vec![push_failed()],
    );
    let (_tx, rx) = mpsc::unbounded_channel();
    let mut changes = FakeChanges(rx);
    let stop = std::future::pending::<()>();
    tokio::pin!(stop);
    let end = sync_loop(
        &mut syncer,
        &mut changes,
        stop.as_mut(),
        true,
        &|_| {},
        || {},
    )
    .await;
    assert_eq!(end, LoopEnd::Once(push_failed()));

    let (tx, rx) = mpsc::unbounded_channel::<()>();
    drop(tx);
    let mut changes = FakeChanges(rx);
    let stop = std::future::pending::<()>();
    tokio::pin!(stop);
    let mut started = 0;
    let end = sync_loop(
        &mut syncer,
        &mut changes,
        stop.as_mut(),
        false,
        &|_| {},
        || started += 1,
    )
    .await;
    assert_eq!(end, LoopEnd::WatcherGone);
    assert_eq!(started, 1);
}

#[tokio::test(start_paused = true)]
async fn what_a_ready_sync_applied_is_watched_until_it_fails_or_the_next_save() {
    let apply_failed = SyncOutcome::Failed {
        phase: Phase::Apply,
        message: "the rollout cannot succeed".into(),
    };
    let mut syncer = FakeSyncer::new(
        Duration::from_millis(100),
        Duration::ZERO,
        vec![
            SyncOutcome::Ready {
                revision: "a".into(),
            },
            SyncOutcome::Ready {
                revision: "b".into(),
            },
            apply_failed,
            SyncOutcome::Ready {
                revision: "c".into(),
            },
        ],
    );
    syncer.fails_after = Some(Duration::from_millis(500));
    // Saves at 1 s (after the first sync's failure showed), 1.2 s (before
    // the second sync's could: the save ends that watch), 3 s (after a
    // failed sync: nothing watched meanwhile) and 5 s.
    let mut changes = saves(&[1000, 1200, 3000, 5000]);
    let events = Mutex::new(Vec::new());
    let end = run_for(&mut syncer, &mut changes, Duration::from_secs(8), &events).await;
    assert_eq!(end, LoopEnd::Stopped);
    assert_eq!(syncer.starts(), vec![0, 1000, 1200, 3000, 5000]);
    let failed: Vec<u64> = syncer
        .failed_at
        .iter()
        .map(|d| d.as_millis() as u64)
        .collect();
    // Once per Ready sync left alone for 500 ms (100 + 500, 3100 + 500,
    // 5100 + 500), never again while idle: not for the sync ended at 1100
    // (a save came first) nor the failed one ended at 1300.
    assert_eq!(failed, vec![600, 3600, 5600]);
}
