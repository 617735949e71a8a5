//! When a deployed job fires on its own, and what happens to the slots it
//! misses or that overlap a run still going. These are part of [`JobSpec`]
//! (super::JobSpec); the Scheduler agent reads them, the logic lives in
//! `triggers`. [`FiredSlot`] is the Scheduler's record of how far
//! each job has fired, kept in the `{prefix}_fired` KV bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::calendar::{CalendarUse, DstRule};

/// `fire-once`'s default window.
pub const DEFAULT_MISFIRE_WINDOW: Duration = Duration::from_secs(3600);
/// `fire-all`'s default bound.
pub const DEFAULT_FIRE_ALL_MAX: u32 = 100;

/// When a job fires, as written in a deploy file (`kind = "cron"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TriggerSpec {
    /// A cron expression with seconds, read on the wall clock of `time_zone`.
    Cron {
        expr: String,
        /// An IANA time zone name (`Europe/Berlin`); UTC when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
        /// What a slot does when daylight saving time skips or repeats
        /// its time (default: shift a skipped one, fire a repeated one once).
        #[serde(default, skip_serializing_if = "DstRule::is_default")]
        dst: DstRule,
        /// The business calendar whose days off this trigger keeps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calendar: Option<CalendarUse>,
        /// Spreads each fire over up to this long after its slot (humantime).
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<String>")]
        jitter: Option<Duration>,
    },
    /// Every `every` (humantime: `90s`, `1h 30m`; at least 1s), counted from
    /// `start` (RFC 3339). Without `start` the slots are the whole multiples
    /// of `every` since the Unix epoch, the same on every agent.
    Interval {
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        every: Duration,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(with = "Option<String>")]
        start: Option<DateTime<Utc>>,
        /// Spreads each fire over up to this long after its slot (humantime).
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<String>")]
        jitter: Option<Duration>,
    },
    /// Once, at an RFC 3339 instant (`2026-03-29T02:30:00+02:00`).
    At {
        #[schemars(with = "String")]
        at: DateTime<Utc>,
    },
    /// One order per message published on the NATS subject `name`
    /// (wildcards allowed), read through the trigger stream Baton keeps
    /// (`triggers::subject`). Fires on messages, never on a clock.
    Subject {
        name: String,
        /// Parameter name → where its value comes from: `$.a.b[0]` (a
        /// field of the JSON payload), `header:NAME`, `token:N` (the
        /// subject's N-th token, from 1), `subject`, or `literal:TEXT`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
    },
    /// On events, not on a clock: each new file in `dir` whose name matches
    /// `pattern` (a glob: `*.csv`) starts one order once its size has not
    /// changed for `settle`, with the parameters `file` (its path) and
    /// `file_name`. The Scheduler agent watches the directory (inotify) and
    /// scans it every `rescan` as well (see `triggers::files`).
    File {
        /// An absolute directory path, seen by every agent (a shared mount).
        dir: String,
        /// Which file names count, as a glob (`*`, `?`, `[a-z]`, `{a,b}`).
        pattern: String,
        /// How long a file's size must stay the same before it starts its
        /// order (humantime; default 2s).
        #[serde(default = "default_settle", with = "humantime_serde")]
        #[schemars(with = "String")]
        settle: Duration,
        /// How often the directory is scanned besides inotify's events
        /// (humantime; default 10s).
        #[serde(default = "default_rescan", with = "humantime_serde")]
        #[schemars(with = "String")]
        rescan: Duration,
    },
}

/// A file trigger's `settle` when absent.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// A file trigger's `rescan` when absent.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(10);

fn default_settle() -> Duration {
    DEFAULT_SETTLE
}

fn default_rescan() -> Duration {
    DEFAULT_RESCAN
}

impl TriggerSpec {
    /// A plain cron trigger: default DST rules, no calendar, no jitter.
    pub fn cron(expr: impl Into<String>, time_zone: Option<&str>) -> TriggerSpec {
        TriggerSpec::Cron {
            expr: expr.into(),
            time_zone: time_zone.map(String::from),
            dst: DstRule::default(),
            calendar: None,
            jitter: None,
        }
    }

    /// Whether it fires on a clock (cron, interval, at), not on events.
    pub fn is_clock(&self) -> bool {
        !matches!(self, TriggerSpec::Subject { .. } | TriggerSpec::File { .. })
    }

    /// A plain interval trigger, without jitter.
    pub fn interval(every: Duration, start: Option<DateTime<Utc>>) -> TriggerSpec {
        TriggerSpec::Interval {
            every,
            start,
            jitter: None,
        }
    }
}

/// What to do with the slots missed while no Scheduler fired them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum MisfirePolicy {
    /// Fire the latest missed slot if it is no older than `window` (humantime).
    FireOnce {
        #[serde(default = "default_window", with = "humantime_serde")]
        #[schemars(with = "String")]
        window: Duration,
    },
    /// Fire every missed slot, at most `max` of them (the most recent), and
    /// none older than `max_lateness`.
    FireAll {
        #[serde(default = "default_max")]
        max: u32,
        /// Missed slots older than this are skipped, not caught up
        /// (humantime; none: any age, up to `max`).
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<String>")]
        max_lateness: Option<Duration>,
    },
    /// Fire no missed slot.
    Skip,
}

fn default_window() -> Duration {
    DEFAULT_MISFIRE_WINDOW
}

fn default_max() -> u32 {
    DEFAULT_FIRE_ALL_MAX
}

impl Default for MisfirePolicy {
    fn default() -> Self {
        MisfirePolicy::FireOnce {
            window: DEFAULT_MISFIRE_WINDOW,
        }
    }
}

/// What to do when a slot comes while runs of the job may be active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConcurrencyPolicy {
    /// Fire regardless of active runs.
    #[default]
    Allow,
    /// Skip the slot while a run is active: its order ends `cancelled`.
    Forbid,
    /// Cancel (and kill) the active runs, then fire.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "allow",
            ConcurrencyPolicy::Forbid => "forbid",
            ConcurrencyPolicy::Replace => "replace",
        }
    }
}

/// The value under a job's name in the `{prefix}_fired` KV bucket: the newest
/// trigger slot of the job fired (an order exists for it and for every
/// earlier slot the writing Scheduler fired). A Scheduler taking over reads
/// it to catch up on what was missed under the job's misfire policy; it only
/// ever moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FiredSlot {
    /// The job's name, or `workflow.NAME` for a workflow's triggers (also the key).
    pub job: String,
    /// The slot, in ms since the Unix epoch.
    pub slot_ms: u64,
    /// The order the slot's submit created (or found, when repeated).
    pub order_id: String,
    /// The agent that fired it.
    pub agent_id: String,
    /// When the broker accepted the slot's order.
    pub at_ms: u64,
}

/// The Scheduler's record of one file a file trigger has seen, kept in the
/// `{prefix}_files` KV bucket under [`FileRecord::key`]: written
/// (`claimed`) before the file's order is submitted, `submitted` once the
/// broker took it, deleted once the file is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileRecord {
    /// The job's name, or `workflow.NAME` for a workflow's triggers.
    pub job: String,
    /// The file's path.
    pub path: String,
    /// Its size in bytes when it settled.
    pub size: u64,
    /// Its modification time, in ms since the Unix epoch.
    pub mtime_ms: u64,
    /// Its inode number (0 where there is none).
    #[serde(default)]
    pub inode: u64,
    pub state: FileState,
    /// The order it started, once `submitted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The agent that wrote the record last.
    pub agent_id: String,
    /// When the record was written last, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// How far a file's order has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileState {
    /// Recorded; its submit may not have reached the broker.
    Claimed,
    /// The broker accepted its order.
    Submitted,
}

/// Which deployed trigger fired an order's slot, as `order.get` and
/// `order.list` tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FiredBy {
    /// Its place among the job's (or workflow's) triggers, from 1.
    pub number: u32,
    /// The trigger as deployed now: its kind, and for a cron trigger the
    /// time zone its slots are read in.
    pub trigger: TriggerSpec,
}
