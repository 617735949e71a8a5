//! How a trigger meets the calendar and the clock: business calendars
//! ([`CalendarUse`], [`CalendarSpec`]) and the daylight-saving rules of a
//! cron trigger ([`DstRule`]). Part of [`TriggerSpec`](super::TriggerSpec);
//! the logic lives in `triggers::calendar` and `triggers::wall`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The working days of a deployed `[[calendar]]`, resolved at deploy: the
/// included calendars' holidays are listed here too, so a trigger's slots
/// depend on the trigger alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CalendarSpec {
    /// Working days of the week: `MON` ... `SUN`.
    pub weekdays: Vec<String>,
    /// Days off, each `YYYY-MM-DD`, `MM-DD` (every year),
    /// `YYYY-MM-DD..YYYY-MM-DD` (both ends included), or `NTH WEEKDAY of
    /// MONTH` (`4th THU of NOV`, `last MON of MAY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    /// Keeps one working day a month: `last working day of month`, `1st
    /// working day of month`, `2nd last working day of month`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
}

/// A cron trigger's calendar, by name, with its days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CalendarUse {
    /// The `[[calendar]]` it was deployed from.
    pub name: String,
    /// What a slot on a day off does.
    #[serde(default)]
    pub on_holiday: OnHoliday,
    /// The calendar's days, as deployed.
    pub days: CalendarSpec,
}

/// What a slot that falls on a day off does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnHoliday {
    /// It does not fire.
    #[default]
    Skip,
    /// It fires on the next working day, at the same wall-clock time.
    Next,
    /// It fires on the previous working day, at the same wall-clock time.
    Previous,
}

/// What a cron slot does when daylight saving time skips or repeats its
/// wall-clock time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct DstRule {
    /// A time the clock skips (spring forward).
    #[serde(default)]
    pub gap: GapRule,
    /// A time the clock shows twice (fall back).
    #[serde(default)]
    pub overlap: OverlapRule,
}

impl DstRule {
    pub fn is_default(&self) -> bool {
        *self == DstRule::default()
    }
}

/// A slot at a wall-clock time the clock skips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GapRule {
    /// It fires at the instant the time would have been without the
    /// change: 02:30 in a gap from 02:00 to 03:00 fires at 03:30.
    #[default]
    Shift,
    /// It does not fire.
    Skip,
}

/// A slot at a wall-clock time the clock shows twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapRule {
    /// It fires once, the first time (still on summer time).
    #[default]
    First,
    /// It fires once, the second time.
    Last,
    /// It fires both times.
    Both,
}
