//! How client commands print things for people (and as JSON lines).
//!
//! `events` turns events into the lines of `baton watch` and `submit
//! --wait`; `jobs` the job inventory and a deploy's plan; `orders` renders
//! `order show`, `order list` and the answers to order commands; `failure`
//! the stderr tail of a failed order's show; `origin` who started an
//! order (a trigger's slot, or a client); `attempts` a job order's tasks
//! and the retry it waits for; `status` renders `baton status`; `audit` the table of
//! `baton audit`. The helpers here (times, durations, tables) are shared.

mod attempts;
mod audit;
mod events;
mod failure;
mod jobs;
mod orders;
mod origin;
mod spread;
mod status;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

pub use audit::audit_text;
pub use events::{
    agent_line, broker_line, changed_text, event_line, finished_line, log_text, subagent_line,
    triggers_line, written_by_another,
};
pub use failure::StderrTails;
pub use jobs::{fire_time, job_list_text, job_switched_text, job_text, plan_text};
pub use orders::{control_line, order_list_text, order_text, task_of, Control, StepTails};
pub use status::{status_text, views_text};

fn clock(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time to the second, for tables: "2026-11-22T06:49:43Z".
fn clock_s(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in at most two units: "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
pub fn took(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A configured duration for messages: humantime's, with a space before
/// the unit words it writes without one: "7 days", "1 day 12h", "30s".
pub fn span(d: Duration) -> String {
    // in days past one (humantime counts 30.44-day months: 90 days would
    // read "2 months 29 days 2h 52m 48s")
    const DAY: u64 = 86_400;
    let days = d.as_secs() / DAY;
    if days > 0 {
        let unit = if days == 1 { "day" } else { "days" };
        let rest = d - Duration::from_secs(days * DAY);
        return match rest.is_zero() {
            true => format!("{days} {unit}"),
            false => format!("{days} {unit} {}", span(rest)),
        };
    }
    let text = humantime::format_duration(d).to_string();
    let parts: Vec<String> = text
        .split(' ')
        .map(|part| {
            let digits = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            let (n, unit) = part.split_at(digits);
            if unit.len() > 2 {
                format!("{n} {unit}")
            } else {
                part.to_string()
            }
        })
        .collect();
    parts.join(" ")
}

/// Rows under a header, each column as wide as its widest cell; the last
/// column is not padded.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = widths
            .iter()
            .zip(row)
            .map(|(w, cell)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{indent}{}", cells.join("  ").trim_end());
    }
}

fn key_values(map: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(" ")
}

/// Values the renderers' tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::protocol::{LogStream, TaskLog};

    /// 2026-01-31T08:00:00Z
    pub const T0: u64 = 1_769_846_400_000;

    /// A stdout line of `step` of the workflow order `0190-flow`.
    pub fn line(step: &str, task: &str, text: &str) -> TaskLog {
        TaskLog {
            order_id: "0190-flow".into(),
            job: "compile".into(),
            task_id: task.into(),
            subagent_id: "sub-1".into(),
            stream: LogStream::Stdout,
            step: Some(step.into()),
            seq: 1,
            line: text.into(),
            at_ms: T0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_at_most_two_units() {
        assert_eq!(took(850), "850ms");
        assert_eq!(took(12_345), "12.3s");
        assert_eq!(took(245_000), "4m05s");
        assert_eq!(took(2 * 3_600_000 + 3 * 60_000 + 59_000), "2h03m");
        assert_eq!(took(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn spans_put_a_space_before_unit_words() {
        let day = 86_400;
        assert_eq!(span(Duration::from_secs(7 * day)), "7 days");
        assert_eq!(span(Duration::from_secs(90 * day)), "90 days");
        assert_eq!(span(Duration::from_secs(400 * day + 61)), "400 days 1m 1s");
        assert_eq!(span(Duration::from_secs(day + 12 * 3600)), "1 day 12h");
        assert_eq!(span(Duration::from_secs(30)), "30s");
        assert_eq!(span(Duration::from_millis(1_500)), "1s 500ms");
    }
}
