//! Durations as users type them: Go/kubectl style (`90s`, `1m30s`, `1h`,
//! `500ms`), plus `d` for days, and a bare number meaning seconds.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (examples: 30s, 5m, 1h30m, 2d)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses `30s`, `5m`, `1h30m`, `2d`, `250ms` or a bare number of seconds.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number before each unit"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(err("a unit (ms, s, m, h, d) is missing")),
            _ => return Err(err("unknown unit; use ms, s, m, h or d")),
        };
        let millis = value
            .checked_mul(millis_per)
            .ok_or_else(|| err("duration too large"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| err("duration too large"))?;
    }
    Ok(total)
}

/// Reads an RFC 3339 timestamp as the suite writes them in annotations
/// (`None` when absent or unreadable).
pub fn parse_time(s: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `now + d`, or `None` when that is beyond what a timestamp can hold.
pub fn checked_after(
    now: chrono::DateTime<chrono::Utc>,
    d: Duration,
) -> Option<chrono::DateTime<chrono::Utc>> {
    now.checked_add_signed(chrono::Duration::from_std(d).ok()?)
}

/// Bounds of a duration flag: at least `min`, at most `max`.
pub fn check_range(
    flag: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, RangeError> {
    if d < min || d > max {
        return Err(RangeError {
            flag: flag.to_string(),
            value: human_exact(d),
            min: human_exact(min),
            max: human_exact(max),
        });
    }
    Ok(d)
}

/// A duration flag outside its bounds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag} {value} is out of range: use a value from {min} to {max}")]
pub struct RangeError {
    flag: String,
    value: String,
    min: String,
    max: String,
}

fn human_exact(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Formats a duration the way kubectl prints ages: `45s`, `12m`, `3h20m`, `5d`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m", s / 60),
        3600..=86_399 => {
            let (h, m) = (s / 3600, (s % 3600) / 60);
            if m == 0 || h >= 8 {
                format!("{h}h")
            } else {
                format!("{h}h{m}m")
            }
        }
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod props {
    //! Durations come from flags and environment variables: any text.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptests::config(512))]

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn duration_like_text_parses_or_is_refused(s in "[0-9]{0,22}(ms|s|m|h|d|x|µs)?[0-9]{0,22}(ms|s|m|h|d)?") {
            if let Ok(d) = parse(&s) {
                // What parses is within what a timestamp can take, or is refused there.
                let _ = checked_after(chrono::Utc::now(), d);
                let _ = human(d);
                let _ = check_range("timeout", d, Duration::from_secs(1), Duration::from_secs(60));
            }
        }

        #[test]
        fn units_add_up(d in 0u64..10_000, h in 0u64..10_000, m in 0u64..10_000, s in 0u64..10_000, ms in 0u64..10_000) {
            let want = Duration::from_millis(ms + 1000 * (s + 60 * (m + 60 * (h + 24 * d))));
            prop_assert_eq!(parse(&format!("{d}d{h}h{m}m{s}s{ms}ms")), Ok(want));
            prop_assert_eq!(parse(&format!(" {s} ")), Ok(Duration::from_secs(s)));
        }

        #[test]
        fn any_duration_prints(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let _ = human(d);
            let _ = check_range("x", d, Duration::ZERO, Duration::MAX);
            let _ = checked_after(chrono::Utc::now(), d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_future_deadlines_are_refused_not_panicking() {
        let now = chrono::Utc::now();
        assert!(checked_after(now, Duration::from_secs(3600)).is_some());
        assert!(checked_after(now, Duration::from_secs(u64::MAX / 2)).is_none());
        assert!(parse_time(Some("2026-11-23T10:00:00Z")).is_some());
        assert!(parse_time(Some("yesterday")).is_none());
        let e = check_range(
            "lease-duration",
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--lease-duration 0ms is out of range: use a value from 1s to 3600s"
        );
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        for bad in ["", "m", "5x", "1.5h", "s5", "99999999999999999999d"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        assert!(parse("5").is_ok());
        assert!(parse("5 m").unwrap_err().to_string().contains("unit"));
    }

    #[test]
    fn formats_like_kubectl() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(3600 + 1200)), "1h20m");
        assert_eq!(human(Duration::from_secs(86_400 * 3)), "3d");
    }
}
