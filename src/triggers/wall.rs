//! A cron trigger's slots, in two steps. Pure.
//!
//! 1. **Wall times**: the local date-times its pattern matches, read on a
//!    clock without daylight saving, then kept, dropped or moved by its
//!    calendar ([`OnHoliday`]). These rise strictly.
//! 2. **Instants**: what each wall time names on the zone's real clock,
//!    under the trigger's [`DstRule`]: a time the clock skips shifts by the
//!    gap (02:30 in a 02:00-03:00 gap fires at 03:30) or is skipped; a time
//!    the clock shows twice fires the first time, the last, or both.
//!
//! Step 2 keeps the order of step 1 except within a few hours of a change
//! of offset (a shifted 02:30 falls after a real 03:00), so near one the
//! searches look [`MARGIN_MS`] further and keep the nearest instant.
//! A moved slot keeps its wall-clock time on the working day it moves to;
//! two slots that land on the same wall time there fire once.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

use super::calendar::{Calendar, OnHoliday};
use crate::protocol::{DstRule, GapRule, OverlapRule};

/// Longer than any change of a zone's offset (at most two hours in tzdb).
pub const MARGIN_MS: i64 = 3 * 3_600_000;
/// A slot more than this many days from a working day is dropped, not moved.
pub const MAX_MOVE_DAYS: i64 = 31;
/// Bounds the walks over days off, so no search loops for long.
const MAX_STEPS: usize = 10_000;

/// A compiled cron trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct CronClock {
    pub schedule: Box<cron::Schedule>,
    pub tz: Tz,
    pub dst: DstRule,
    pub calendar: Option<(Calendar, OnHoliday)>,
}

impl CronClock {
    /// The first slot strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = i64::try_from(after_ms).ok()?;
        let near = |ms: i64| self.offset_ms(ms - MARGIN_MS) != self.offset_ms(ms + MARGIN_MS);
        let local = naive(after + self.offset_ms(after))?;
        let mut wall = if near(after) {
            local - Duration::milliseconds(MARGIN_MS)
        } else {
            local
        };
        let mut best: Option<(i64, NaiveDateTime)> = None;
        while let Some(w) = self.wall_after(wall) {
            for i in self.instants(w).into_iter().flatten() {
                if i > after && best.is_none_or(|(b, _)| i < b) {
                    best = Some((i, w));
                }
            }
            if let Some((b, bw)) = best {
                if !near(b) || w > bw + Duration::milliseconds(MARGIN_MS) {
                    break;
                }
            }
            wall = w;
        }
        best.and_then(|(b, _)| u64::try_from(b).ok())
    }

    /// The last slot at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = i64::try_from(at_ms).ok()?;
        let near = |ms: i64| self.offset_ms(ms - MARGIN_MS) != self.offset_ms(ms + MARGIN_MS);
        let local = naive(at + self.offset_ms(at))?;
        let mut wall = if near(at) {
            local + Duration::milliseconds(MARGIN_MS)
        } else {
            local
        };
        let mut best: Option<(i64, NaiveDateTime)> = None;
        while let Some(w) = self.wall_at_or_before(wall) {
            for i in self.instants(w).into_iter().flatten() {
                if (0..=at).contains(&i) && best.is_none_or(|(b, _)| i > b) {
                    best = Some((i, w));
                }
            }
            if let Some((b, bw)) = best {
                if !near(b) || w < bw - Duration::milliseconds(MARGIN_MS) {
                    break;
                }
            }
            wall = w - Duration::milliseconds(1);
        }
        best.and_then(|(b, _)| u64::try_from(b).ok())
    }

    /// Why a fire of this trigger is where it is, when a calendar or DST
    /// put it there: "moved from Sat 12-26, Sun 12-27 (days off)", "after
    /// days off: Thu 12-24 (skipped)", "02:30 does not exist today (DST):
    /// shifted by the gap", "02:30 happens twice today (DST): first pass".
    pub fn note(&self, fire_ms: u64) -> Option<String> {
        let at = i64::try_from(fire_ms).ok()?;
        let wall = naive(at + self.offset_ms(at))?;
        let mut notes = Vec::new();
        // the wall time the fire came from: itself, or a skipped one shifted
        let before = self.offset_ms(at - 86_400_000);
        let shifted = naive(at + before)
            .filter(|w| *w != wall && matches!(self.tz.from_local_datetime(w), LocalResult::None));
        let source = shifted.unwrap_or(wall);
        if shifted.is_some() {
            let hm = source.format("%H:%M");
            notes.push(format!(
                "{hm} does not exist that day (DST): shifted by the gap"
            ));
        }
        if let LocalResult::Ambiguous(first, _) = self.tz.from_local_datetime(&wall) {
            let pass = if first.timestamp_millis() == at {
                "first"
            } else {
                "second"
            };
            let hm = wall.format("%H:%M");
            notes.push(format!("{hm} happens twice that day (DST): {pass} pass"));
        }
        if let Some((calendar, rule)) = &self.calendar {
            let (day, time) = (source.date(), source.time());
            let matches = |d: NaiveDate| self.last_on(d, Some(time)) == Some(time);
            let days = |mut ds: Vec<NaiveDate>| {
                ds.sort();
                let names: Vec<String> = ds
                    .iter()
                    .map(|d| d.format("%a %m-%d").to_string())
                    .collect();
                names.join(", ")
            };
            if *rule == OnHoliday::Skip {
                let first_today = self.first_on(day, None) == Some(time);
                let off: Vec<NaiveDate> = feeding_days(calendar, OnHoliday::Next, day)
                    .skip(1)
                    .filter(|d| self.first_on(*d, None).is_some())
                    .collect();
                // an `only` calendar leaves out most working days: not news
                if first_today && !off.is_empty() && !calendar.is_narrowed() {
                    notes.push(format!("after days off: {} (skipped)", days(off)));
                }
            } else {
                let from: Vec<NaiveDate> = feeding_days(calendar, *rule, day)
                    .skip(1)
                    .filter(|d| matches(*d))
                    .collect();
                if !from.is_empty() {
                    notes.push(format!("moved from {} (days off)", days(from)));
                }
            }
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    /// The instants a wall time names under the DST rules, earliest first.
    pub fn instants(&self, wall: NaiveDateTime) -> [Option<i64>; 2] {
        let ms = |dt: DateTime<Tz>| dt.timestamp_millis();
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(dt) => [Some(ms(dt)), None],
            LocalResult::Ambiguous(first, last) => match self.dst.overlap {
                OverlapRule::First => [Some(ms(first)), None],
                OverlapRule::Last => [Some(ms(last)), None],
                OverlapRule::Both => [Some(ms(first)), Some(ms(last))],
            },
            LocalResult::None => match self.dst.gap {
                GapRule::Skip => [None, None],
                GapRule::Shift => {
                    // read with the offset before the change, a day earlier
                    let as_utc = wall.and_utc().timestamp_millis();
                    let before = self.offset_ms(as_utc - 86_400_000);
                    [Some(as_utc - before), None]
                }
            },
        }
    }

    /// The zone's offset from UTC at an instant, in ms.
    pub fn offset_ms(&self, at_ms: i64) -> i64 {
        let at = DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
        i64::from(
            self.tz
                .offset_from_utc_datetime(&at.naive_utc())
                .fix()
                .local_minus_utc(),
        ) * 1000
    }

    /// The first wall time strictly after `wall`.
    pub fn wall_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let Some((calendar, rule)) = &self.calendar else {
            return self.pattern_after(wall);
        };
        if *rule != OnHoliday::Skip {
            return self.moved_after(calendar, *rule, wall);
        }
        let mut slot = self.pattern_after(wall)?;
        for _ in 0..MAX_STEPS {
            if calendar.is_working(slot.date()) {
                return Some(slot);
            }
            let day = calendar.working_at_or_after(slot.date().succ_opt()?)?;
            slot = self.pattern_after(start_of(day) - Duration::milliseconds(1))?;
        }
        None
    }

    /// The last wall time at or before `wall`.
    pub fn wall_at_or_before(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let Some((calendar, rule)) = &self.calendar else {
            return self.pattern_at_or_before(wall);
        };
        if *rule != OnHoliday::Skip {
            return self.moved_at_or_before(calendar, *rule, wall);
        }
        let mut slot = self.pattern_at_or_before(wall)?;
        for _ in 0..MAX_STEPS {
            if calendar.is_working(slot.date()) {
                return Some(slot);
            }
            let day = calendar.working_at_or_before(slot.date().pred_opt()?)?;
            slot = self.pattern_at_or_before(end_of(day))?;
        }
        None
    }

    /// The pattern's first match strictly after `wall`, on a clock without DST.
    fn pattern_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let from = Utc.from_utc_datetime(&wall);
        self.schedule.after(&from).next().map(|t| t.naive_utc())
    }

    /// The pattern's last match at or before `wall`, on a clock without DST.
    fn pattern_at_or_before(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        // matches fall on whole seconds; the iterator yields those strictly before
        let from = Utc.from_utc_datetime(&(wall + Duration::milliseconds(1)));
        self.schedule
            .after(&from)
            .next_back()
            .map(|t| t.naive_utc())
    }

    fn moved_after(
        &self,
        calendar: &Calendar,
        rule: OnHoliday,
        wall: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let (mut day, mut after) = (wall.date(), Some(wall.time()));
        for _ in 0..MAX_STEPS {
            let working = calendar.working_at_or_after(day)?;
            if working != day {
                after = None;
            }
            let earliest = feeding_days(calendar, rule, working)
                .filter_map(|d| self.first_on(d, after))
                .min();
            if let Some(time) = earliest {
                return Some(working.and_time(time));
            }
            (day, after) = (working.succ_opt()?, None);
        }
        None
    }

    fn moved_at_or_before(
        &self,
        calendar: &Calendar,
        rule: OnHoliday,
        wall: NaiveDateTime,
    ) -> Option<NaiveDateTime> {
        let (mut day, mut upto) = (wall.date(), Some(wall.time()));
        for _ in 0..MAX_STEPS {
            let working = calendar.working_at_or_before(day)?;
            if working != day {
                upto = None;
            }
            let latest = feeding_days(calendar, rule, working)
                .filter_map(|d| self.last_on(d, upto))
                .max();
            if let Some(time) = latest {
                return Some(working.and_time(time));
            }
            (day, upto) = (working.pred_opt()?, None);
        }
        None
    }

    /// The pattern's first time on `day` after `after` (none: from midnight).
    fn first_on(&self, day: NaiveDate, after: Option<NaiveTime>) -> Option<NaiveTime> {
        let from = match after {
            Some(t) => day.and_time(t),
            None => start_of(day) - Duration::milliseconds(1),
        };
        let slot = self.pattern_after(from)?;
        (slot.date() == day).then_some(slot.time())
    }

    /// The pattern's last time on `day` at or before `upto` (none: all day).
    fn last_on(&self, day: NaiveDate, upto: Option<NaiveTime>) -> Option<NaiveTime> {
        let to = match upto {
            Some(t) => day.and_time(t),
            None => end_of(day),
        };
        let slot = self.pattern_at_or_before(to)?;
        (slot.date() == day).then_some(slot.time())
    }
}

/// The days whose slots fire on working day `day`: itself, and the days
/// off before it (moving to the next working day) or after it (moving to
/// the previous one), at most [`MAX_MOVE_DAYS`] of them.
pub fn feeding_days(
    calendar: &Calendar,
    rule: OnHoliday,
    day: NaiveDate,
) -> impl Iterator<Item = NaiveDate> + '_ {
    let step: i64 = match rule {
        OnHoliday::Next => -1,
        OnHoliday::Previous => 1,
        OnHoliday::Skip => 0,
    };
    let off = move |i: i64| day.checked_add_signed(Duration::days(step * i));
    let extra = (1..=MAX_MOVE_DAYS)
        .take_while(move |&i| step != 0 && off(i).is_some_and(|d| !calendar.is_working(d)))
        .count() as i64;
    (0..=extra).filter_map(off)
}

fn start_of(day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::MIN)
}

fn end_of(day: NaiveDate) -> NaiveDateTime {
    day.and_hms_milli_opt(23, 59, 59, 999)
        .expect("a valid time")
}

fn naive(ms: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ms).map(|t| t.naive_utc())
}
