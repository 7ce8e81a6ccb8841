//! Timings with a budget, printed against it: what unit tests used to
//! assert on the wall clock, which a loaded machine makes flaky. The unit
//! tests keep what is rendered and batched; this measures how fast.
//! - The page: 200 sessions from their Leases to the table's rows and its
//!   counters, as the hub renders on every change and every second. Budget
//!   10 ms, a hundredth of that second.
//! - The watcher: a save to the batch that syncs it. On Linux the save's
//!   close ends the batch a fifth of the quiet window after it; without the
//!   close the batch waits the whole window, so the window is the budget.
//!   Shown for the session's own window ([`QUIET`]) and for a 200 ms one.
//!
//! `cargo bench -p kubectl-gitops --bench budgets` (in `make bench`) prints
//! medians of many runs; `cargo test` runs each once, as a smoke test.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use gitops::artifact::{WalkOptions, canonical_root};
use gitops::session::engine::watch::{DirWatcher, QUIET, WatchTarget};
use gitops::session::readers::view::build_views;
use gitops::ui::render::{session_counts, session_rows};
use k8s_openapi::api::coordination::v1::Lease;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = |n: usize| if bench { n } else { 1 };
    let page = page(runs(101))?;
    report(
        bench,
        "page: 200 sessions, Leases to rows and counters",
        page,
        Duration::from_millis(10),
    );
    let dir = tempfile::tempdir()?;
    let root = canonical_root(dir.path())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for window in [QUIET, Duration::from_millis(200)] {
        let took = rt.block_on(saves(&root, window, runs(21)))?;
        report(
            bench,
            &format!("watcher: a save to its batch ({window:?} quiet window)"),
            took,
            window,
        );
    }
    Ok(())
}

/// Prints `took` against `budget`; a single smoke-test run (`cargo test`,
/// unoptimised) is no measurement and gets no verdict.
fn report(bench: bool, what: &str, took: Duration, budget: Duration) {
    if !bench {
        println!("{what}: ran once in {took:.2?} (`cargo bench` measures it)");
        return;
    }
    let verdict = if took <= budget {
        "within budget"
    } else {
        "OVER BUDGET"
    };
    println!("{what}: median {took:.2?}, budget {budget:?}: {verdict}");
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

/// A live sandboxed session's Lease, as the hub's watch holds it.
fn lease(i: usize, renewed: &str) -> Result<Lease> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("s{i:03}"), "namespace": format!("ns{}", i % 7),
            "labels": {"app.kubernetes.io/managed-by": "kubectl-gitops", "gitops.kubectl.dev/component": "session",
                       "gitops.kubectl.dev/sandbox": format!("ns{}", i % 7)},
            "annotations": {"gitops.kubectl.dev/mode": "sandboxed", "gitops.kubectl.dev/dir": format!("/src/s{i}"),
                            "gitops.kubectl.dev/owner": "ann@laptop"}},
        "spec": {"holderIdentity": "ann@laptop", "leaseDurationSeconds": 30, "renewTime": renewed}
    }))?)
}

/// The median time from 200 Leases to the sessions table and its counters.
fn page(runs: usize) -> Result<Duration> {
    let renewed = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let leases = (0..200)
        .map(|i| lease(i, &renewed))
        .collect::<Result<Vec<_>>>()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let views = build_views(&leases, &[], &[], &[], Utc::now());
        let rows = session_rows(&views);
        let counts = session_counts(&views);
        times.push(t.elapsed());
        let shown = rows.matches("<tr data-key=").count();
        if shown != 200 || std::hint::black_box(counts).is_empty() {
            return Err(format!("the page rendered {shown} of 200 sessions").into());
        }
    }
    Ok(median(times))
}

/// The median time from a save in `root` to the watcher's batch of it.
async fn saves(root: &Path, quiet: Duration, runs: usize) -> Result<Duration> {
    let target = WatchTarget {
        root: root.to_path_buf(),
        dir: root.to_path_buf(),
        walk: WalkOptions {
            git_ignore: true,
            ..Default::default()
        },
    };
    let mut watcher = DirWatcher::new(target, quiet)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut times = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        std::fs::write(root.join("app.yaml"), format!("kind: ConfigMap # {i}\n"))?;
        match tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await {
            Ok(Some(Ok(_))) => times.push(t.elapsed()),
            other => return Err(format!("save {i} was not seen: {other:?}").into()),
        }
        // Let anything trailing the save arrive, and drop it.
        tokio::time::sleep(quiet * 2).await;
        watcher.drain();
    }
    Ok(median(times))
}
