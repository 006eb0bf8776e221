//! Upper bounds of durations: what PostgreSQL accepts for the settings pgvigil sends it, and a
//! sanity bound for everything else.
//!
//! `statement_timeout` and `lock_timeout` are `int` GUCs in milliseconds: PostgreSQL refuses
//! anything above 2147483647 ms (about 24.8 days) with "invalid value for parameter ... exceeds
//! integer range", and a target whose session settings are refused never comes up. pgvigil sends
//! `statement_timeout`, `lock_timeout` (every session) and `exact_count_timeout` (`SET LOCAL
//! statement_timeout` around each exact count), so those three are checked against that limit
//! here, where the error can still point at FILE:LINE:COL. The same limit holds on every
//! supported version (13 to 18).
//!
//! Every other duration (intervals, windows, backoffs) is bounded at [`MAX_DURATION`]: nothing
//! pgvigil schedules is meaningful past a year, and the bound keeps `Instant + interval`
//! arithmetic far from overflow whatever a file says.

use std::time::Duration;

/// The largest value of an `int` millisecond GUC (`statement_timeout`, `lock_timeout`).
pub const PG_INT_MILLIS_MAX: Duration = Duration::from_millis(i32::MAX as u64);

/// The longest duration any key takes.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The keys whose value pgvigil sends to PostgreSQL as an `int` millisecond setting.
const PG_MILLIS_KEYS: &[(&str, &str)] = &[
    ("statement_timeout", "statement_timeout"),
    ("lock_timeout", "lock_timeout"),
    ("exact_count_timeout", "statement_timeout"),
];

/// Check `value` of `key` against its upper bound; the error names the key, the value, the
/// limit and what to write instead.
pub(crate) fn check_max(key: &str, value: Duration) -> Result<(), String> {
    if let Some((_, setting)) = PG_MILLIS_KEYS.iter().find(|(k, _)| *k == key) {
        if value > PG_INT_MILLIS_MAX {
            return Err(format!(
                "{key} = \"{}\" is more than PostgreSQL accepts: {setting} is an int in milliseconds, at most 2147483647ms (about 24.8 days); use a shorter duration, e.g. \"1h\"",
                humantime::format_duration(value)
            ));
        }
    }
    check_general(key, value)
}

/// The bound every duration has.
pub(crate) fn check_general(key: &str, value: Duration) -> Result<(), String> {
    if value > MAX_DURATION {
        return Err(format!(
            "{key} = \"{}\" is too long; use at most {} (365 days)",
            humantime::format_duration(value),
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_settings_stop_at_the_int_millisecond_range() {
        assert!(check_max("statement_timeout", PG_INT_MILLIS_MAX).is_ok());
        let err =
            check_max("lock_timeout", PG_INT_MILLIS_MAX + Duration::from_millis(1)).unwrap_err();
        assert!(
            err.starts_with(
                "lock_timeout = \"24days 20h 31m 23s 648ms\" is more than PostgreSQL accepts"
            ),
            "{err}"
        );
        let err = check_max("exact_count_timeout", Duration::from_secs(30 * 86_400)).unwrap_err();
        assert!(
            err.contains("statement_timeout is an int in milliseconds"),
            "{err}"
        );
        // Not sent to PostgreSQL: only the general bound.
        assert!(check_max("poll_interval", Duration::from_secs(30 * 86_400)).is_ok());
        assert!(check_max("poll_interval", MAX_DURATION * 2).is_err());
    }
}
