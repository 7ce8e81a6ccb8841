//! Property tests of what the library reads from outside that no single
//! module owns: the Lease record codec (annotations any user of the
//! cluster can write). The per-module ones (durations, `--port-forward`
//! specs, registry references, kustomizations) sit beside their code; the
//! page's query parameters in `ui/query_props.rs`.
//!
//! Cases are bounded ([`config`]), so `cargo test` runs every property in
//! well under a second: that is the bounded fuzzing round CI runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use crate::session::record::{
    self, LastSync, PhaseTime, Record, SyncEntry, history_from_annotation, keys,
};

/// The bounded round: a fixed number of cases, no failure files written
/// into the source tree (a failing input is kept as a unit test instead).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A time as the codec keeps it: milliseconds, years 1970 to 9999.
fn millis_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799_999)
        .prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

fn sync_entry() -> impl Strategy<Value = SyncEntry> {
    (
        any_time(),
        any::<String>(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        any::<String>(),
        proptest::collection::vec((any::<String>(), any::<u64>(), any::<u64>()), 0..4),
    )
        .prop_map(
            |(at, revision, status, failed_phase, message, phases)| SyncEntry {
                at,
                revision,
                status,
                failed_phase,
                message,
                phases: phases
                    .into_iter()
                    .map(|(phase, start_ms, ms)| PhaseTime {
                        phase,
                        start_ms,
                        ms,
                    })
                    .collect(),
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    let text = any::<String>;
    (
        (text(), text(), text(), text(), text(), text()),
        proptest::option::of(".+"),
        any::<bool>(),
        proptest::option::of(millis_time()),
        proptest::option::of((".+", proptest::option::of(millis_time()), text())),
        proptest::collection::vec("[^\\s]+", 0..4),
        proptest::collection::vec(sync_entry(), 0..3),
        proptest::option::of(".+"),
    )
        .prop_map(
            |(
                (pid, dir, registry, mode, version, owner),
                sandbox,
                ephemeral_sandbox,
                started_at,
                last,
                port_forwards,
                history,
                takes_over,
            )| Record {
                pid,
                dir,
                registry,
                mode,
                sandbox,
                ephemeral_sandbox,
                version,
                started_at,
                last: last.map(|(revision, at, status)| LastSync {
                    revision,
                    at,
                    status,
                }),
                port_forwards,
                owner,
                history,
                takes_over,
                ..Default::default()
            },
        )
}

/// Annotations as anyone with write access to a Lease may leave them: the
/// record's keys (some with near-miss values) and others.
fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        Just(keys::PID.to_string()),
        Just(keys::STARTED_AT.to_string()),
        Just(keys::LAST_REVISION.to_string()),
        Just(keys::LAST_SYNC.to_string()),
        Just(keys::PORT_FORWARDS.to_string()),
        Just(keys::SYNC_HISTORY.to_string()),
        Just(keys::SANDBOX.to_string()),
        Just(keys::EPHEMERAL_SANDBOX.to_string()),
        Just(crate::labels::OWNER.to_string()),
        any::<String>(),
    ];
    let value = prop_oneof![
        any::<String>(),
        "[0-9:TZ.+-]{0,40}",
        "\\[\\{\"at\":\"[0-9T:.Z-]{0,30}\"(,\"status\":\"[a-z]*\")?(,\"phases\":\\[\\{\"phase\":\"\",\"startMs\":[0-9-]{1,25},\"ms\":[0-9e.-]{1,25}\\}\\])?\\}\\]",
    ];
    proptest::collection::btree_map(key, value, 0..8)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_record_reads_back_as_written(r in record()) {
        prop_assert_eq!(Record::from_annotations(&r.to_annotations()), r);
    }

    #[test]
    fn any_annotations_read_without_panicking(a in annotations()) {
        let r = Record::from_annotations(&a);
        // What was read writes and reads back the same.
        prop_assert_eq!(Record::from_annotations(&r.to_annotations()), r);
    }

    #[test]
    fn any_history_text_reads_without_panicking(s in any::<String>()) {
        let _ = history_from_annotation(Some(&s));
    }

    #[test]
    fn a_history_reads_back_as_written(h in proptest::collection::vec(sync_entry(), 0..5)) {
        let text = record::history_to_annotation(&h);
        prop_assert_eq!(history_from_annotation(Some(&text)), h.clone());
        for e in &h {
            let _ = e.total_ms();
        }
    }
}
