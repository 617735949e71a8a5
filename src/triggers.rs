//! Triggers: when a job's slots fall, and which of them to fire. Pure.
//! Workflows have triggers too; here they are scheduled as jobs are, under
//! their key `workflow.NAME` ([`workflow_key`]) in place of a job's name.
//!
//! A *slot* is an instant at which a trigger fires, in milliseconds since the
//! Unix epoch (UTC). Nothing here reads a clock: the caller passes `now_ms`,
//! so tests drive everything with a clock they control.
//!
//! - [`TriggerSpec`] is what an operator writes (cron, interval, at);
//!   [`Trigger`] is its compiled form and answers "which slot comes next".
//! - [`policy`]: the misfire policy ([`due_slots`]) and the
//!   [`idempotency_key`] every fire is submitted with. The concurrency
//!   policy is the broker's to meet when the fire is submitted
//!   ([`crate::jobs::on_slot`]).
//! - [`queue`]: [`TimerQueue`], a min-heap of every schedule's next slot.
//! - [`subject`]: subject triggers, which fire on NATS messages, not on a
//!   clock: here they compile to a part with no slots.
//! - [`files`]: file triggers, which fire on events, not on a clock: their
//!   checks, when a file has settled, and its record and idempotency key.
//!   Here a file trigger has no slot at all (`next_after` is `None`).
//!
//! # Cron
//!
//! Six fields with seconds, `second minute hour day-of-month month
//! day-of-week`, and an optional seventh, the year (1970-2100); `@hourly`,
//! `@daily`, `@weekly`, `@monthly` and `@yearly` are accepted too (the `cron`
//! crate's dialect; time zones come from `chrono-tz`). Days of the week are written as names (`MON-FRI`):
//! numbers are refused, because dialects disagree on which day 1 is. When
//! both day-of-month and day-of-week are restricted, a day must match both.
//!
//! Cron fields match the wall clock of the trigger's time zone (UTC unless
//! `time_zone` names an IANA zone). Across daylight saving time changes
//! ([`wall`]; settable per trigger with `dst = { gap, overlap }`):
//!
//! - a local time that does not exist (the spring-forward gap: 02:30 on the
//!   last Sunday of March in Europe/Berlin) fires at the instant it would
//!   have been without the change, 03:30 (`gap = "shift"`, the default), or
//!   not at all (`gap = "skip"`); a shifted slot that lands on another slot
//!   fires once;
//! - a local time that happens twice (the fall-back overlap) fires at its
//!   first occurrence (`overlap = "first"`, the default), its second
//!   (`"last"`), or both (`"both"`).
//!
//! A cron trigger may name a business calendar ([`calendar`]): a slot on a
//! day off is skipped or moved to the next or previous working day, at the
//! same wall-clock time. Any trigger but `at` may have a `jitter`: each
//! fire comes up to that long after its slot, at an offset fixed by the
//! schedule's key and the slot ([`jitter`]) and always before the next slot,
//! so every agent computes the same fire and the order of fires holds.
//!
//! Intervals and `at` times are instants, untouched by time zones. Cron
//! slots fall on whole seconds; interval slots on whole milliseconds.
//!
//! Architecture invariant: a trigger's slots depend only on its spec, never on
//! when or where it was compiled, so two agents compute the same slots and
//! the [`idempotency_key`] of a slot is the same on both.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub mod calendar;
pub mod files;
mod jitter;
pub mod policy;
pub mod queue;
pub mod subject;
pub mod wall;

use calendar::Calendar;
use wall::CronClock;

pub use crate::protocol::{ConcurrencyPolicy, MisfirePolicy, TriggerSpec};
pub use policy::{due_slots, idempotency_key, submitted_name, workflow_key};
pub use queue::{Due, Gap, Schedule, TimerQueue};

/// Shortest interval accepted: slots are whole seconds apart at the finest.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A trigger or policy that cannot be used, saying which part and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("cron expression '{expr}': {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone '{name}': expected an IANA name such as 'Europe/Berlin' or 'UTC'")]
    TimeZone { name: String },
    #[error("interval every '{every}': must be at least 1s")]
    Interval { every: String },
    #[error("{field} '{at}': before 1970-01-01T00:00:00Z")]
    BeforeEpoch { field: &'static str, at: String },
    #[error("calendar '{name}': {reason}")]
    Calendar { name: String, reason: String },
    #[error("jitter: must be at least 1ms")]
    Jitter,
    #[error(
        "misfire fire-all max {max}: must be between 1 and {}",
        policy::MAX_FIRE_ALL
    )]
    FireAllMax { max: u32 },
    #[error("file trigger {field}: {reason}")]
    File { field: &'static str, reason: String },
}

impl TriggerSpec {
    /// Checks the spec; the error names the expression, zone or value.
    pub fn validate(&self) -> Result<(), TriggerError> {
        Trigger::compile(self, "").map(drop)
    }

    /// Whether `slot_ms` is one of its slots (before any jitter) for the
    /// schedule `key` (false when it does not compile).
    pub fn has_slot(&self, key: &str, slot_ms: u64) -> bool {
        Trigger::compile(self, key)
            .is_ok_and(|t| t.slots_only().last_at_or_before(slot_ms) == Some(slot_ms))
    }

    /// Which of `triggers` of the schedule `key` fired `slot_ms`: the first
    /// that has it, with its place from 1.
    pub fn fired(
        triggers: &[TriggerSpec],
        key: &str,
        slot_ms: u64,
    ) -> Option<crate::protocol::FiredBy> {
        let (i, trigger) = (triggers.iter().enumerate()).find(|(_, t)| t.has_slot(key, slot_ms))?;
        Some(crate::protocol::FiredBy {
            number: i as u32 + 1,
            trigger: trigger.clone(),
        })
    }
}

/// A compiled trigger: the union of the slots of one or more specs.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    parts: Vec<Part>,
}

/// One spec's slots, each fired up to `jitter_ms` after it.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    when: When,
    jitter_ms: u64,
    /// From the schedule's key: jittered fires differ from job to job.
    seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum When {
    Cron(CronClock),
    Interval {
        every_ms: u64,
        start_ms: u64,
    },
    At {
        at_ms: u64,
    },
    /// Fires on events (messages, files), never on the clock.
    Events,
}

impl Trigger {
    /// Compiles one spec of the schedule `key` (a job's name, or a
    /// workflow's [`workflow_key`]; jitter depends on it).
    pub fn compile(spec: &TriggerSpec, key: &str) -> Result<Trigger, TriggerError> {
        Ok(Trigger {
            parts: vec![Part::compile(spec, key)?],
        })
    }

    /// Compiles several specs into one trigger whose slots are all of
    /// theirs; a slot two of them share fires once. No specs: never fires.
    pub fn compile_all(specs: &[TriggerSpec], key: &str) -> Result<Trigger, TriggerError> {
        let parts = (specs.iter())
            .map(|s| Part::compile(s, key))
            .collect::<Result<_, _>>()?;
        Ok(Trigger { parts })
    }

    /// The first slot strictly after `after_ms`; `None` when there is none
    /// (an `at` already past, a cron pattern with no date left before 2101).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        self.parts
            .iter()
            .filter_map(|p| p.next_after(after_ms))
            .min()
    }

    /// The last slot at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        self.parts
            .iter()
            .filter_map(|p| p.last_at_or_before(at_ms))
            .max()
    }

    /// The slot a fire belongs to: `fire_ms` itself, or for a jittered
    /// fire the slot it was jittered from. Orders are keyed by it
    /// (`NAME@SLOT`), so changing a trigger's jitter never fires a slot
    /// twice.
    pub fn slot_of(&self, fire_ms: u64) -> u64 {
        (self.parts.iter())
            .filter(|p| p.jitter_ms > 0)
            .find_map(|p| {
                let slot = p.when.last_at_or_before(fire_ms)?;
                (p.jittered(slot) == fire_ms).then_some(slot)
            })
            .unwrap_or(fire_ms)
    }

    /// The same trigger without jitter: its slots, not its fires.
    pub fn slots_only(mut self) -> Trigger {
        self.parts.iter_mut().for_each(|p| p.jitter_ms = 0);
        self
    }

    /// Why `fire_ms` is where it is, when a calendar or DST moved, shifted
    /// or repeated it (see [`CronClock::note`]).
    pub fn note(&self, fire_ms: u64) -> Option<String> {
        self.parts.iter().find_map(|p| {
            if p.jitter_ms == 0 {
                return match &p.when {
                    When::Cron(clock) => clock.note(fire_ms),
                    _ => None,
                };
            }
            let slot = p.when.last_at_or_before(fire_ms)?;
            if p.jittered(slot) != fire_ms {
                return None;
            }
            let jitter = jitter_note(slot, fire_ms);
            let why = match &p.when {
                When::Cron(clock) => clock.note(slot),
                _ => None,
            };
            Some(match why {
                Some(why) => format!("{jitter}; {why}"),
                None => jitter,
            })
        })
    }

    /// The first `limit` slots in `(from_exclusive, to_inclusive]`, oldest first.
    pub fn slots_between(&self, from_exclusive: u64, to_inclusive: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = from_exclusive;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(slot) if slot <= to_inclusive => {
                    out.push(slot);
                    cursor = slot;
                }
                _ => break,
            }
        }
        out
    }

    /// The last `limit` slots in `[from_inclusive, to_inclusive]`, oldest
    /// first. Walks backwards, so it costs `limit` steps however long the
    /// range is.
    pub fn latest_slots(&self, from_inclusive: u64, to_inclusive: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = to_inclusive;
        while out.len() < limit {
            match self.last_at_or_before(cursor) {
                Some(slot) if slot >= from_inclusive => {
                    out.push(slot);
                    let Some(before) = slot.checked_sub(1) else {
                        break;
                    };
                    cursor = before;
                }
                _ => break,
            }
        }
        out.reverse();
        out
    }
}

impl Part {
    fn compile(spec: &TriggerSpec, key: &str) -> Result<Part, TriggerError> {
        let jitter = match spec {
            TriggerSpec::Cron { jitter, .. } | TriggerSpec::Interval { jitter, .. } => *jitter,
            TriggerSpec::At { .. } | TriggerSpec::Subject { .. } | TriggerSpec::File { .. } => None,
        };
        let jitter_ms = jitter.map_or(0, |j| u64::try_from(j.as_millis()).unwrap_or(u64::MAX));
        if jitter.is_some() && jitter_ms == 0 {
            return Err(TriggerError::Jitter);
        }
        let part = Part {
            when: When::compile(spec)?,
            jitter_ms,
            seed: jitter::seed(key),
        };
        if let When::Cron(_) = part.when {
            if part.when.next_after(0).is_none() {
                let TriggerSpec::Cron { expr, calendar, .. } = spec else {
                    unreachable!("a cron part comes from a cron spec")
                };
                let reason = match calendar {
                    Some(c) => format!(
                        "matches no working day of calendar '{}' between 1970 and 2100",
                        c.name
                    ),
                    None => "matches no date between 1970 and 2100".to_string(),
                };
                return Err(TriggerError::Cron {
                    expr: expr.clone(),
                    reason,
                });
            }
        }
        Ok(part)
    }

    fn next_after(&self, after_ms: u64) -> Option<u64> {
        if self.jitter_ms == 0 {
            return self.when.next_after(after_ms);
        }
        // the last slot at or before `after_ms` may fire after it
        if let Some(slot) = self.when.last_at_or_before(after_ms) {
            let fire = self.jittered(slot);
            if fire > after_ms {
                return Some(fire);
            }
        }
        self.when
            .next_after(after_ms)
            .map(|slot| self.jittered(slot))
    }

    fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        if self.jitter_ms == 0 {
            return self.when.last_at_or_before(at_ms);
        }
        let slot = self.when.last_at_or_before(at_ms)?;
        let fire = self.jittered(slot);
        if fire <= at_ms {
            return Some(fire);
        }
        // fires before `slot`, so at or before `at_ms`
        let before = self.when.last_at_or_before(slot.checked_sub(1)?)?;
        Some(self.jittered(before))
    }

    /// Where in its window `slot` fires: before the next slot, so fires
    /// keep their order.
    fn jittered(&self, slot: u64) -> u64 {
        let room = match self.when.next_after(slot) {
            Some(next) => self.jitter_ms.min(next - slot),
            None => self.jitter_ms,
        };
        slot + jitter::offset(self.seed, slot, room)
    }
}

impl When {
    fn compile(spec: &TriggerSpec) -> Result<When, TriggerError> {
        match spec {
            TriggerSpec::Cron {
                expr,
                time_zone,
                dst,
                calendar,
                ..
            } => {
                let tz = match time_zone {
                    None => Tz::UTC,
                    Some(name) => name
                        .parse::<Tz>()
                        .map_err(|_| TriggerError::TimeZone { name: name.clone() })?,
                };
                let cron_error = |reason: String| TriggerError::Cron {
                    expr: expr.clone(),
                    reason,
                };
                check_cron_fields(expr).map_err(cron_error)?;
                let schedule = expr
                    .parse::<cron::Schedule>()
                    .map_err(|e| cron_error(cron_reason(&e.to_string())))?;
                let calendar = match calendar {
                    None => None,
                    Some(use_) => {
                        let compiled =
                            Calendar::compile(&use_.days).map_err(|e| TriggerError::Calendar {
                                name: use_.name.clone(),
                                reason: e.to_string(),
                            })?;
                        Some((compiled, use_.on_holiday))
                    }
                };
                Ok(When::Cron(CronClock {
                    schedule: Box::new(schedule),
                    tz,
                    dst: *dst,
                    calendar,
                }))
            }
            TriggerSpec::Interval { every, start, .. } => {
                if *every < MIN_INTERVAL {
                    return Err(TriggerError::Interval {
                        every: humantime::format_duration(*every).to_string(),
                    });
                }
                let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                let start_ms = match start {
                    None => 0,
                    Some(at) => epoch_ms("start", at)?,
                };
                Ok(When::Interval { every_ms, start_ms })
            }
            TriggerSpec::At { at } => Ok(When::At {
                at_ms: epoch_ms("at", at)?,
            }),
            // checked with the job's parameters (`jobs::validate_job`)
            TriggerSpec::Subject { .. } => Ok(When::Events),
            TriggerSpec::File { .. } => files::FileWatch::compile(spec).map(|_| When::Events),
        }
    }

    fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            When::At { at_ms } => (*at_ms > after_ms).then_some(*at_ms),
            When::Events => None,
            When::Interval { every_ms, start_ms } => {
                if after_ms < *start_ms {
                    return Some(*start_ms);
                }
                let k = (after_ms - start_ms) / every_ms + 1;
                k.checked_mul(*every_ms)?.checked_add(*start_ms)
            }
            When::Cron(clock) => clock.next_after(after_ms),
        }
    }

    fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        match self {
            When::At { at_ms: slot } => (*slot <= at_ms).then_some(*slot),
            When::Events => None,
            When::Interval { every_ms, start_ms } => {
                let since = at_ms.checked_sub(*start_ms)?;
                Some(start_ms + since / every_ms * every_ms)
            }
            When::Cron(clock) => clock.last_at_or_before(at_ms),
        }
    }
}

/// "jittered: slot 19:42:00 UTC + 8s 400ms".
fn jitter_note(slot_ms: u64, fire_ms: u64) -> String {
    let slot = DateTime::from_timestamp_millis(slot_ms as i64).unwrap_or_default();
    let late = humantime::format_duration(Duration::from_millis(fire_ms - slot_ms));
    format!("jittered: slot {} UTC + {late}", slot.format("%H:%M:%S"))
}

fn epoch_ms(field: &'static str, at: &DateTime<Utc>) -> Result<u64, TriggerError> {
    u64::try_from(at.timestamp_millis()).map_err(|_| TriggerError::BeforeEpoch {
        field,
        at: at.to_rfc3339(),
    })
}

/// One line from a `cron` crate error, which echoes the expression and
/// marks the place with a caret on a line of its own.
fn cron_reason(error: &str) -> String {
    let lines: Vec<&str> = error.lines().collect();
    let (column, message) = match lines.as_slice() {
        [_, caret, rest @ ..] if caret.trim() == "^" => (caret.find('^'), rest.join(" ")),
        _ => (None, error.to_string()),
    };
    let message = message.trim().trim_end_matches('.');
    let message = if message.is_empty() {
        "not a valid cron expression"
    } else {
        message
    };
    match column {
        Some(column) => format!("{message} (at character {})", column + 1),
        None => message.to_string(),
    }
}

/// Checks what the `cron` crate would accept but Baton does not: a field
/// count other than 6 or 7, and day-of-week numbers.
fn check_cron_fields(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() == 1 && fields[0].starts_with('@') {
        return Ok(());
    }
    if !(6..=7).contains(&fields.len()) {
        return Err(format!(
            "expected 6 or 7 fields (second minute hour day-of-month month day-of-week [year]), found {}",
            fields.len()
        ));
    }
    let day_of_week = fields[5];
    let numeric = day_of_week.split(',').any(|item| {
        let range = item.split('/').next().unwrap_or_default();
        range.bytes().any(|b| b.is_ascii_digit())
    });
    if numeric {
        return Err(format!(
            "day of week '{day_of_week}': use names (SUN, MON, ... SAT), since cron dialects number the days differently"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod time_tests;
