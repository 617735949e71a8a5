//! Wall-clock helpers: every timestamp on the wire is milliseconds since the Unix epoch.
//! Durations given on the command line are humantime strings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as carried by wire messages (`*_ms` fields).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A humantime duration from the command line (`500ms`, `30s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}: use a duration such as 500ms, 30s or 2m"))
}

/// The time of day of `at_ms` (ms since the epoch) in UTC, as `HH:MM:SS UTC`,
/// for messages that say when something happened or will be decided.
pub fn utc_time_of_day(at_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms as i64)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default()
}
