//! Business calendars: which dates are working days. Pure.
//!
//! A [`Calendar`] is compiled from a [`CalendarSpec`]: working weekdays,
//! days off (dates, yearly dates, date ranges, and rules such as `4th THU of
//! NOV`), and optionally `only`, which keeps one working day a month (`last
//! working day of month`). Searches for the next or previous working day
//! look at most [`SEARCH_DAYS`] days ahead or back, so a calendar with no
//! working day left ends a trigger's slots instead of looping.

use chrono::{Datelike, Duration, NaiveDate, Weekday};

pub use crate::protocol::{CalendarSpec, OnHoliday};

/// How far a search for a working day looks (about ten years).
pub const SEARCH_DAYS: i64 = 3_660;
/// A deploy refuses a calendar with no working day in this many days.
pub const MUST_WORK_WITHIN_DAYS: i64 = 366;

/// A calendar entry that cannot be read, saying which and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("weekday '{0}': expected MON, TUE, WED, THU, FRI, SAT or SUN")]
    Weekday(String),
    #[error(
        "holiday '{0}': expected YYYY-MM-DD, MM-DD (every year), YYYY-MM-DD..YYYY-MM-DD, \
         or NTH WEEKDAY of MONTH such as '4th THU of NOV' or 'last MON of MAY'"
    )]
    Holiday(String),
    #[error("holiday '{0}': {1}")]
    HolidayValue(String, &'static str),
    #[error(
        "only '{0}': expected NTH working day of month, such as '1st working day of month', \
         'last working day of month' or '2nd last working day of month'"
    )]
    Only(String),
    #[error("no working day in the {MUST_WORK_WITHIN_DAYS} days from {0}")]
    NoWorkingDay(NaiveDate),
}

/// A compiled calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Indexed by days from Monday.
    weekdays: [bool; 7],
    holidays: Vec<Holiday>,
    /// Keep the n-th working day of each month (negative: from its end).
    only: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Holiday {
    Date(NaiveDate),
    Yearly {
        month: u32,
        day: u32,
    },
    Range(NaiveDate, NaiveDate),
    /// The n-th (negative: from the end) `weekday` of `month`.
    Nth {
        n: i32,
        weekday: Weekday,
        month: u32,
    },
}

impl Calendar {
    /// Compiles a spec; the error names the entry that cannot be read.
    pub fn compile(spec: &CalendarSpec) -> Result<Calendar, CalendarError> {
        let mut weekdays = [false; 7];
        for name in &spec.weekdays {
            let day = weekday(name).ok_or_else(|| CalendarError::Weekday(name.clone()))?;
            weekdays[day.num_days_from_monday() as usize] = true;
        }
        let holidays = (spec.holidays.iter())
            .map(|h| {
                holiday(h).ok_or_else(|| match why_not(h) {
                    Some(why) => CalendarError::HolidayValue(h.clone(), why),
                    None => CalendarError::Holiday(h.clone()),
                })
            })
            .collect::<Result<_, _>>()?;
        let only = match &spec.only {
            None => None,
            Some(text) => Some(only(text).ok_or_else(|| CalendarError::Only(text.clone()))?),
        };
        Ok(Calendar {
            weekdays,
            holidays,
            only,
        })
    }

    /// Refuses a calendar with no working day in the year from `from`.
    pub fn check_has_working_day(&self, from: NaiveDate) -> Result<(), CalendarError> {
        let found = (0..MUST_WORK_WITHIN_DAYS).any(|i| self.is_working(from + Duration::days(i)));
        if found {
            Ok(())
        } else {
            Err(CalendarError::NoWorkingDay(from))
        }
    }

    /// Whether it keeps only one working day a month (`only`).
    pub fn is_narrowed(&self) -> bool {
        self.only.is_some()
    }

    /// Whether `date` is a working day.
    pub fn is_working(&self, date: NaiveDate) -> bool {
        if !self.base_working(date) {
            return false;
        }
        let Some(n) = self.only else {
            return true;
        };
        let first = date.with_day(1).expect("day 1 exists");
        let days = days_in_month(date);
        let working = (0..days)
            .map(|i| first + Duration::days(i64::from(i)))
            .filter(|d| self.base_working(*d));
        let chosen = if n > 0 {
            working.clone().nth(n as usize - 1)
        } else {
            working.rev().nth((-n) as usize - 1)
        };
        chosen == Some(date)
    }

    /// The first working day at or after `date` (within [`SEARCH_DAYS`]).
    pub fn working_at_or_after(&self, date: NaiveDate) -> Option<NaiveDate> {
        (0..SEARCH_DAYS)
            .map_while(|i| date.checked_add_signed(Duration::days(i)))
            .find(|d| self.is_working(*d))
    }

    /// The last working day at or before `date` (within [`SEARCH_DAYS`]).
    pub fn working_at_or_before(&self, date: NaiveDate) -> Option<NaiveDate> {
        (0..SEARCH_DAYS)
            .map_while(|i| date.checked_sub_signed(Duration::days(i)))
            .find(|d| self.is_working(*d))
    }

    fn base_working(&self, date: NaiveDate) -> bool {
        self.weekdays[date.weekday().num_days_from_monday() as usize]
            && !self.holidays.iter().any(|h| h.contains(date))
    }
}

impl Holiday {
    fn contains(&self, date: NaiveDate) -> bool {
        match *self {
            Holiday::Date(d) => d == date,
            Holiday::Yearly { month, day } => date.month() == month && date.day() == day,
            Holiday::Range(from, to) => from <= date && date <= to,
            Holiday::Nth { n, weekday, month } => {
                if date.month() != month || date.weekday() != weekday {
                    return false;
                }
                let week = (date.day() as i32 - 1) / 7 + 1;
                let from_end = (days_in_month(date) as i32 - date.day() as i32) / 7 + 1;
                if n > 0 {
                    week == n
                } else {
                    from_end == -n
                }
            }
        }
    }
}

fn days_in_month(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.map_or(31, |n| n.pred_opt().map_or(31, |last| last.day()))
}

/// `MON` ... `SUN`, in any case.
pub fn weekday(name: &str) -> Option<Weekday> {
    let day = match name.to_ascii_uppercase().as_str() {
        "MON" => Weekday::Mon,
        "TUE" => Weekday::Tue,
        "WED" => Weekday::Wed,
        "THU" => Weekday::Thu,
        "FRI" => Weekday::Fri,
        "SAT" => Weekday::Sat,
        "SUN" => Weekday::Sun,
        _ => return None,
    };
    Some(day)
}

fn month(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let upper = name.to_ascii_uppercase();
    MONTHS
        .iter()
        .position(|m| *m == upper)
        .map(|i| i as u32 + 1)
}

/// `1st`, `2nd`, `3rd`, `4th` ... (positive), `last` (-1), `2nd last` (-2).
fn ordinal(words: &[&str]) -> Option<i32> {
    let count = |word: &str| -> Option<i32> {
        let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = &word[digits.len()..];
        let n: i32 = digits.parse().ok()?;
        let expected = match (n % 100, n % 10) {
            (11..=13, _) => "th",
            (_, 1) => "st",
            (_, 2) => "nd",
            (_, 3) => "rd",
            _ => "th",
        };
        (n >= 1 && suffix.eq_ignore_ascii_case(expected)).then_some(n)
    };
    match words {
        [w] if w.eq_ignore_ascii_case("last") => Some(-1),
        [n, w] if w.eq_ignore_ascii_case("last") => count(n).map(|n| -n),
        [n] => count(n),
        _ => None,
    }
}

fn date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// What is wrong with a holiday written in one of the accepted shapes.
fn why_not(text: &str) -> Option<&'static str> {
    let text = text.trim();
    if let Some((from, to)) = text.split_once("..") {
        return match (date(from.trim()), date(to.trim())) {
            (Some(from), Some(to)) if from > to => Some("the range ends before it starts"),
            _ => None,
        };
    }
    let numbers: Vec<&str> = text.split('-').collect();
    let all_digits = numbers
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match (all_digits, numbers.len()) {
        (true, 2 | 3) => Some("no such date (check the month and the day)"),
        _ => None,
    }
}

fn holiday(text: &str) -> Option<Holiday> {
    let text = text.trim();
    if let Some((from, to)) = text.split_once("..") {
        let (from, to) = (date(from.trim())?, date(to.trim())?);
        return (from <= to).then_some(Holiday::Range(from, to));
    }
    if let Some(d) = date(text) {
        return Some(Holiday::Date(d));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if let [ord @ .., day, of, m] = words.as_slice() {
        if !of.eq_ignore_ascii_case("of") {
            return None;
        }
        let n = ordinal(ord)?;
        return (n.abs() <= 5).then_some(Holiday::Nth {
            n,
            weekday: weekday(day)?,
            month: month(m)?,
        });
    }
    let (m, d) = text.split_once('-')?;
    let (month, day): (u32, u32) = (m.parse().ok()?, d.parse().ok()?);
    // 2024 is a leap year: 02-29 is a yearly date too
    NaiveDate::from_ymd_opt(2024, month, day)?;
    Some(Holiday::Yearly { month, day })
}

fn only(text: &str) -> Option<i32> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let tail = ["working", "day", "of", "month"];
    let split = words.len().checked_sub(tail.len())?;
    let (ord, rest) = words.split_at(split);
    let matches = rest
        .iter()
        .zip(tail)
        .all(|(a, b)| a.eq_ignore_ascii_case(b));
    let n = ordinal(ord)?;
    (matches && n.abs() <= 23).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn spec(weekdays: &str, holidays: &[&str], only: Option<&str>) -> CalendarSpec {
        CalendarSpec {
            weekdays: weekdays.split_whitespace().map(String::from).collect(),
            holidays: holidays.iter().map(|h| h.to_string()).collect(),
            only: only.map(String::from),
        }
    }

    fn d(text: &str) -> NaiveDate {
        date(text).unwrap()
    }

    const WORK: &str = "MON TUE WED THU FRI";

    #[test]
    fn weekdays_dates_yearly_ranges_and_rules_are_days_off() {
        let cal = Calendar::compile(&spec(
            WORK,
            &[
                "2026-12-24",
                "12-25",
                "2026-08-03..2026-08-07",
                "4th THU of NOV",
                "last MON of MAY",
            ],
            None,
        ))
        .unwrap();
        assert!(cal.is_working(d("2026-12-23")));
        assert!(!cal.is_working(d("2026-12-24")), "a date");
        assert!(!cal.is_working(d("2026-12-25")), "yearly");
        assert!(!cal.is_working(d("2031-12-25")), "yearly, another year");
        assert!(!cal.is_working(d("2026-12-26")), "a Saturday");
        assert!(!cal.is_working(d("2026-08-03")) && !cal.is_working(d("2026-08-07")));
        assert!(cal.is_working(d("2026-08-10")), "after the range");
        assert!(!cal.is_working(d("2026-11-26")), "Thanksgiving 2026");
        assert!(cal.is_working(d("2026-11-19")), "the 3rd Thursday");
        assert!(!cal.is_working(d("2026-05-25")), "Memorial Day 2026");
        assert!(cal.is_working(d("2026-05-18")));
    }

    #[test]
    fn only_keeps_one_working_day_a_month() {
        let last = Calendar::compile(&spec(
            WORK,
            &["2026-07-31"],
            Some("last working day of month"),
        ))
        .unwrap();
        // July 2026 ends on a Friday that is a day off: Thursday the 30th
        assert!(last.is_working(d("2026-07-30")));
        assert!(!last.is_working(d("2026-07-31")) && !last.is_working(d("2026-07-29")));
        // May 2026 ends on a Sunday: Friday the 29th
        assert!(last.is_working(d("2026-05-29")));
        let first = Calendar::compile(&spec(WORK, &[], Some("1st working day of month"))).unwrap();
        assert!(
            first.is_working(d("2026-08-03")),
            "Aug 1 2026 is a Saturday"
        );
        let second_last =
            Calendar::compile(&spec(WORK, &[], Some("2nd last working day of month"))).unwrap();
        assert!(second_last.is_working(d("2026-05-28")));
    }

    #[test]
    fn bad_entries_are_named() {
        for (s, want) in [
            (spec("MON FUN", &[], None), "weekday 'FUN'"),
            (
                spec(WORK, &["12-32"], None),
                "holiday '12-32': no such date",
            ),
            (
                spec(WORK, &["2026-02-30"], None),
                "holiday '2026-02-30': no such date",
            ),
            (
                spec(WORK, &["2026-13-01"], None),
                "holiday '2026-13-01': no such date",
            ),
            (
                spec(WORK, &["2026-09-01..2026-08-01"], None),
                "holiday '2026-09-01..2026-08-01': the range ends before it starts",
            ),
            (
                spec(WORK, &["Christmas"], None),
                "holiday 'Christmas': expected YYYY-MM-DD",
            ),
            (
                spec(WORK, &["6th MON of MAY"], None),
                "holiday '6th MON of MAY'",
            ),
            (
                spec(WORK, &["1nd MON of MAY"], None),
                "holiday '1nd MON of MAY'",
            ),
            (spec(WORK, &[], Some("last day")), "only 'last day'"),
        ] {
            let e = Calendar::compile(&s).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let none = Calendar::compile(&spec("", &[], None)).unwrap();
        let e = none.check_has_working_day(d("2026-12-06")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no working day in the 366 days from 2026-12-06"
        );
        assert!(
            none.working_at_or_after(d("2026-12-06")).is_none(),
            "bounded"
        );
    }

    /// Property: the searches agree with `is_working` day by day.
    #[test]
    fn searches_find_the_nearest_working_day() {
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let holidays: Vec<String> = (0..rng.below(20))
                .map(|_| {
                    let day = d("2026-01-01") + Duration::days(rng.below(400) as i64);
                    day.to_string()
                })
                .collect();
            let refs: Vec<&str> = holidays.iter().map(String::as_str).collect();
            let only = rng.percent(30).then_some("last working day of month");
            let cal = Calendar::compile(&spec("MON WED FRI SAT", &refs, only)).unwrap();
            let from = d("2026-01-01") + Duration::days(rng.below(365) as i64);
            let next = cal.working_at_or_after(from).unwrap();
            assert!(cal.is_working(next) && next >= from);
            assert!(
                (0..(next - from).num_days()).all(|i| !cal.is_working(from + Duration::days(i)))
            );
            let prev = cal.working_at_or_before(from).unwrap();
            assert!(cal.is_working(prev) && prev <= from);
            assert!(
                (1..=(from - prev).num_days()).all(|i| !cal.is_working(prev + Duration::days(i)))
            );
        }
    }
}
