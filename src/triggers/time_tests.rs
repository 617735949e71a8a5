//! Daylight saving rules, calendars and jitter, with property tests.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::*;
use crate::protocol::{CalendarSpec, CalendarUse, DstRule, GapRule, OnHoliday, OverlapRule};
use crate::testing::Rng;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

fn spec(expr: &str, zone: &str, dst: DstRule) -> TriggerSpec {
    TriggerSpec::Cron {
        expr: expr.to_string(),
        time_zone: Some(zone.to_string()),
        dst,
        calendar: None,
        jitter: None,
    }
}

fn utc_ms(text: &str) -> u64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis() as u64
}

fn offset_ms(tz: Tz, ms: i64) -> i64 {
    let at = DateTime::from_timestamp_millis(ms).unwrap().naive_utc();
    i64::from(tz.offset_from_utc_datetime(&at).fix().local_minus_utc()) * 1000
}

/// Every change of `tz`'s offset in 2020-2040, to the minute.
fn transitions(tz: Tz) -> Vec<i64> {
    let start = utc_ms("2020-01-01T00:00:00Z") as i64;
    let end = utc_ms("2041-01-01T00:00:00Z") as i64;
    let mut out = Vec::new();
    let mut t = start;
    while t < end {
        let next = t + DAY as i64;
        if offset_ms(tz, t) != offset_ms(tz, next) {
            let (mut lo, mut hi) = (t, next);
            while hi - lo > MIN as i64 {
                let mid = lo + (hi - lo) / 2;
                if offset_ms(tz, mid) == offset_ms(tz, t) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push(hi);
        }
        t = next;
    }
    out
}

/// The wall-clock times of a pattern from the list below, worked out by hand.
fn walls(
    pattern: (u32, Option<u32>, u32),
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Vec<NaiveDateTime> {
    // (minute step or minute, hour or every hour, ...): daily at h:m, hourly at :m, every k minutes
    let (minute, hour, step) = pattern;
    let mut out = Vec::new();
    let mut t = from.date().and_hms_opt(0, 0, 0).unwrap();
    while t <= to {
        let m = t.minute();
        let hit = match (hour, step) {
            (Some(h), _) => t.hour() == h && m == minute,
            (None, 0) => m == minute,
            (None, k) => m % k == 0,
        };
        if hit && t >= from {
            out.push(t);
        }
        t += chrono::Duration::minutes(1);
    }
    out
}

fn expr_of(pattern: (u32, Option<u32>, u32)) -> String {
    match pattern {
        (m, Some(h), _) => format!("0 {m} {h} * * *"),
        (m, None, 0) => format!("0 {m} * * * *"),
        (_, None, k) => format!("0 */{k} * * * *"),
    }
}

/// What a wall time names under the default rules, worked out apart from
/// `wall.rs`: the first of two, or a skipped time read with the offset of
/// the day before.
fn default_instant(tz: Tz, wall: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
        LocalResult::None => {
            let as_utc = wall.and_utc().timestamp_millis();
            as_utc - offset_ms(tz, as_utc - DAY as i64)
        }
    }
}

/// Property: around every DST change of four zones (one with a 30-minute
/// shift) in 2020-2040, with the default rules, every wall-clock slot of a
/// pattern fires, exactly once, at the instant the rules give it; a skipped
/// time that shifts onto a real slot shares its fire.
#[test]
fn with_the_default_rules_every_wall_clock_slot_fires_once_across_dst_changes() {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
    ];
    let mut rng = Rng::new(2026);
    let mut changes = 0;
    for zone in zones {
        let tz: Tz = zone.parse().unwrap();
        let all = transitions(tz);
        assert!(all.len() >= 40, "{zone}: {} changes in 21 years", all.len());
        for t in all {
            changes += 1;
            let patterns = [
                (rng.below(60) as u32, Some(rng.pick(&[0u32, 1, 2, 3])), 0),
                (rng.pick(&[0u32, 15, 30, 45]), None, 0),
                (0, None, rng.pick(&[10u32, 15, 30])),
            ];
            for pattern in patterns {
                let trigger =
                    Trigger::compile(&spec(&expr_of(pattern), zone, DstRule::default()), "j")
                        .unwrap();
                let (from, to) = (t - 12 * HOUR as i64, t + 12 * HOUR as i64);
                let local = |ms: i64| {
                    DateTime::from_timestamp_millis(ms + offset_ms(tz, ms))
                        .unwrap()
                        .naive_utc()
                };
                // wall times whose instant lands well inside [from, to]
                let mut want: Vec<u64> = walls(
                    pattern,
                    local(from) - chrono::Duration::hours(3),
                    local(to) + chrono::Duration::hours(3),
                )
                .into_iter()
                .map(|w| default_instant(tz, w))
                .filter(|i| (from..=to).contains(i))
                .map(|i| i as u64)
                .collect();
                want.sort();
                want.dedup();
                let got = trigger.slots_between(from as u64 - 1, to as u64, 10_000);
                assert_eq!(got, want, "{zone} {} around {t}", expr_of(pattern));
                let back = trigger.latest_slots(from as u64, to as u64, 10_000);
                assert_eq!(
                    back,
                    want,
                    "{zone} {} backwards around {t}",
                    expr_of(pattern)
                );
            }
        }
    }
    assert!(changes > 160, "{changes}");
}

#[test]
fn the_repeated_hour_fires_first_last_or_both_and_the_gap_shifts_or_skips() {
    // Europe/Berlin, 2026-10-25: 02:30 is at 00:30Z (CEST) and at 01:30Z (CET)
    let day = (
        utc_ms("2026-10-24T12:00:00Z"),
        utc_ms("2026-10-25T12:00:00Z"),
    );
    let rule = |overlap| DstRule {
        gap: GapRule::Shift,
        overlap,
    };
    let slots = |dst| {
        Trigger::compile(&spec("0 30 2 * * *", "Europe/Berlin", dst), "j")
            .unwrap()
            .slots_between(day.0, day.1, 10)
    };
    let (first, second) = (
        utc_ms("2026-10-25T00:30:00Z"),
        utc_ms("2026-10-25T01:30:00Z"),
    );
    assert_eq!(slots(rule(OverlapRule::First)), vec![first]);
    assert_eq!(slots(rule(OverlapRule::Last)), vec![second]);
    assert_eq!(slots(rule(OverlapRule::Both)), vec![first, second]);
    // every quarter hour, both passes: 4 more fires than on a plain night
    let quarter = Trigger::compile(
        &spec("0 */15 * * * *", "Europe/Berlin", rule(OverlapRule::Both)),
        "j",
    )
    .unwrap();
    let night = quarter.slots_between(
        utc_ms("2026-10-24T22:00:00Z") - 1,
        utc_ms("2026-10-25T02:59:00Z"),
        100,
    );
    assert_eq!(night.len(), 20, "5 hours of instants, 4 fires each");
    // spring, 2026-03-29: 02:30 does not exist
    let spring = (
        utc_ms("2026-03-28T12:00:00Z"),
        utc_ms("2026-03-29T12:00:00Z"),
    );
    let gap = |gap| {
        let dst = DstRule {
            gap,
            overlap: OverlapRule::First,
        };
        Trigger::compile(&spec("0 30 2 * * *", "Europe/Berlin", dst), "j")
            .unwrap()
            .slots_between(spring.0, spring.1, 10)
    };
    assert_eq!(gap(GapRule::Shift), vec![utc_ms("2026-03-29T01:30:00Z")]);
    assert_eq!(gap(GapRule::Skip), Vec::<u64>::new());
}

fn with_calendar(expr: &str, zone: &str, rule: OnHoliday, days: CalendarSpec) -> Trigger {
    let spec = TriggerSpec::Cron {
        expr: expr.to_string(),
        time_zone: Some(zone.to_string()),
        dst: DstRule::default(),
        calendar: Some(CalendarUse {
            name: "work".into(),
            on_holiday: rule,
            days,
        }),
        jitter: None,
    };
    Trigger::compile(&spec, "j").unwrap()
}

fn work(holidays: &[&str]) -> CalendarSpec {
    CalendarSpec {
        weekdays: ["MON", "TUE", "WED", "THU", "FRI"]
            .map(String::from)
            .to_vec(),
        holidays: holidays.iter().map(|h| h.to_string()).collect(),
        only: None,
    }
}

fn berlin_days(slots: &[u64]) -> Vec<String> {
    let tz: Tz = "Europe/Berlin".parse().unwrap();
    slots
        .iter()
        .map(|ms| {
            tz.timestamp_millis_opt(*ms as i64)
                .unwrap()
                .format("%a %d %H:%M")
                .to_string()
        })
        .collect()
}

#[test]
fn a_calendar_skips_or_moves_the_slots_of_days_off() {
    // Christmas 2026: Thu 24 (holiday), Fri 25 (holiday), Sat 26, Sun 27
    let cal = work(&["2026-12-24", "12-25"]);
    let (from, to) = (
        utc_ms("2026-12-22T12:00:00Z"),
        utc_ms("2026-12-30T12:00:00Z"),
    );
    let daily = |rule| {
        berlin_days(
            &with_calendar("0 0 9 * * *", "Europe/Berlin", rule, cal.clone())
                .slots_between(from, to, 20),
        )
    };
    assert_eq!(
        daily(OnHoliday::Skip),
        [
            "Wed 23 09:00",
            "Mon 28 09:00",
            "Tue 29 09:00",
            "Wed 30 09:00"
        ]
    );
    // the four days off fire once on Monday, with Monday's own slot
    assert_eq!(
        daily(OnHoliday::Next),
        [
            "Wed 23 09:00",
            "Mon 28 09:00",
            "Tue 29 09:00",
            "Wed 30 09:00"
        ]
    );
    assert_eq!(
        daily(OnHoliday::Previous),
        [
            "Wed 23 09:00",
            "Mon 28 09:00",
            "Tue 29 09:00",
            "Wed 30 09:00"
        ]
    );
    // a weekly Saturday report moves to Friday, or to Monday
    let saturday = |rule| {
        berlin_days(
            &with_calendar("0 0 6 * * SAT", "Europe/Berlin", rule, cal.clone())
                .slots_between(from, to, 20),
        )
    };
    let never = TriggerSpec::Cron {
        expr: "0 0 6 * * SAT".into(),
        time_zone: None,
        dst: DstRule::default(),
        calendar: Some(CalendarUse {
            name: "work".into(),
            on_holiday: OnHoliday::Skip,
            days: cal.clone(),
        }),
        jitter: None,
    };
    assert_eq!(
        never.validate().unwrap_err().to_string(),
        "cron expression '0 0 6 * * SAT': matches no working day of calendar 'work' between 1970 and 2100"
    );
    assert_eq!(saturday(OnHoliday::Next), ["Mon 28 06:00"]);
    assert_eq!(
        saturday(OnHoliday::Previous),
        ["Wed 23 06:00"],
        "Fri 25 and Thu 24 are holidays"
    );
    // the last working day of the month
    let month_end = CalendarSpec {
        only: Some("last working day of month".into()),
        ..work(&["12-31"])
    };
    let t = with_calendar("0 0 18 * * *", "Europe/Berlin", OnHoliday::Skip, month_end);
    let slots = t.slots_between(
        utc_ms("2026-11-01T00:00:00Z"),
        utc_ms("2027-03-01T00:00:00Z"),
        10,
    );
    assert_eq!(
        berlin_days(&slots),
        [
            "Mon 30 18:00",
            "Wed 30 18:00",
            "Fri 29 18:00",
            "Fri 26 18:00"
        ]
    );
}

/// Property: with any calendar and rule, the forward and backward searches
/// agree, every fire falls on a working day at a wall time of the pattern,
/// and with `skip` the fires are exactly the pattern's slots on working days.
#[test]
fn calendar_searches_agree_both_ways_and_fire_on_working_days_only() {
    let mut rng = Rng::new(11);
    let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    for round in 0..60 {
        let holidays: Vec<String> = (0..rng.below(30))
            .map(|_| (base + chrono::Duration::days(rng.below(120) as i64)).to_string())
            .collect();
        let weekdays = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
        let mut days = CalendarSpec {
            weekdays: weekdays
                .iter()
                .filter(|_| rng.percent(70))
                .map(|d| d.to_string())
                .collect(),
            holidays,
            only: None,
        };
        if days.weekdays.is_empty() {
            days.weekdays.push("WED".into());
        }
        let rule = rng.pick(&[OnHoliday::Skip, OnHoliday::Next, OnHoliday::Previous]);
        let expr = rng.pick(&[
            "0 0 9 * * *",
            "0 30 */6 * * *",
            "0 15 2 * * *",
            "0 0 12 * * MON,THU",
        ]);
        let zone = rng.pick(&["Europe/Berlin", "America/New_York", "UTC"]);
        let t = with_calendar(expr, zone, rule, days.clone());
        let cal = calendar::Calendar::compile(&days).unwrap();
        let (from, to) = (
            utc_ms("2026-01-05T00:00:00Z"),
            utc_ms("2026-04-20T00:00:00Z"),
        );
        let fwd = t.slots_between(from - 1, to, 10_000);
        let back = t.latest_slots(from, to, 10_000);
        assert_eq!(fwd, back, "round {round}: {expr} {zone} {rule:?}");
        let tz: Tz = zone.parse().unwrap();
        for ms in &fwd {
            let local = tz.timestamp_millis_opt(*ms as i64).unwrap();
            assert!(
                cal.is_working(local.date_naive()),
                "round {round}: {local} is a day off"
            );
        }
        if rule == OnHoliday::Skip {
            let plain = Trigger::compile(&spec(expr, zone, DstRule::default()), "j").unwrap();
            let want: Vec<u64> = plain
                .slots_between(from - 1, to, 10_000)
                .into_iter()
                .filter(|ms| {
                    cal.is_working(tz.timestamp_millis_opt(*ms as i64).unwrap().date_naive())
                })
                .collect();
            assert_eq!(fwd, want, "round {round}");
        }
    }
}

fn jittered(key: &str, every_s: u64, jitter: Duration) -> Trigger {
    let spec = TriggerSpec::Interval {
        every: Duration::from_secs(every_s),
        start: None,
        jitter: Some(jitter),
    };
    Trigger::compile(&spec, key).unwrap()
}

/// Property: a jittered fire stays in its slot's window and before the next
/// slot, is the same wherever it is computed, and the searches agree both
/// ways, so a Scheduler that takes over fires no slot twice or early.
#[test]
fn jittered_fires_stay_in_their_window_and_agree_both_ways() {
    let mut rng = Rng::new(5);
    for round in 0..40 {
        let every = rng.pick(&[1u64, 5, 60, 3600]);
        let jitter = Duration::from_millis(rng.pick(&[1u64, 500, 30_000, 10_000_000]));
        let key = format!("job-{round}");
        let t = jittered(&key, every, jitter);
        let plain = Trigger::compile(
            &TriggerSpec::interval(Duration::from_secs(every), None),
            &key,
        )
        .unwrap();
        let from = 1_800_000_000_000 + rng.below(DAY);
        let to = from + every * 1000 * 50;
        let fires = t.slots_between(from, to, 100);
        for fire in &fires {
            let slot = plain.last_at_or_before(*fire).unwrap();
            assert!(
                *fire - slot < (jitter.as_millis() as u64).max(1),
                "round {round}: in its window"
            );
            assert!(
                *fire < slot + every * 1000,
                "round {round}: before the next slot"
            );
        }
        assert_eq!(fires, t.latest_slots(from + 1, to, 100), "round {round}");
        assert_eq!(
            fires,
            jittered(&key, every, jitter).slots_between(from, to, 100),
            "the same on another agent"
        );
    }
    // two jobs on one schedule fire at different instants
    let a = jittered("a", 3600, Duration::from_secs(600)).next_after(0);
    let b = jittered("b", 3600, Duration::from_secs(600)).next_after(0);
    assert_ne!(a, b);
}

#[test]
fn jitter_and_a_zero_jitter_are_checked() {
    let zero = TriggerSpec::Interval {
        every: Duration::from_secs(60),
        start: None,
        jitter: Some(Duration::ZERO),
    };
    assert_eq!(
        zero.validate().unwrap_err().to_string(),
        "jitter: must be at least 1ms"
    );
    let cron = TriggerSpec::Cron {
        expr: "0 0 9 * * *".into(),
        time_zone: None,
        dst: DstRule::default(),
        calendar: Some(CalendarUse {
            name: "bad".into(),
            on_holiday: OnHoliday::Skip,
            days: CalendarSpec {
                weekdays: vec!["XYZ".into()],
                ..CalendarSpec::default()
            },
        }),
        jitter: None,
    };
    assert!(cron
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("calendar 'bad': weekday 'XYZ'"));
    let _ = Utc::now().year();
}

#[test]
fn a_fire_says_when_a_calendar_or_dst_put_it_there() {
    let cal = work(&["2026-12-24", "12-25"]);
    let monday = utc_ms("2026-12-28T08:00:00Z");
    let next = with_calendar("0 0 9 * * *", "Europe/Berlin", OnHoliday::Next, cal.clone());
    assert_eq!(
        next.note(monday).as_deref(),
        Some("moved from Thu 12-24, Fri 12-25, Sat 12-26, Sun 12-27 (days off)")
    );
    assert_eq!(next.note(utc_ms("2026-12-29T08:00:00Z")), None);
    let skip = with_calendar("0 0 9 * * *", "Europe/Berlin", OnHoliday::Skip, cal);
    assert_eq!(
        skip.note(monday).as_deref(),
        Some("after days off: Thu 12-24, Fri 12-25, Sat 12-26, Sun 12-27 (skipped)")
    );
    let plain = Trigger::compile(
        &spec("0 30 2 * * *", "Europe/Berlin", DstRule::default()),
        "j",
    )
    .unwrap();
    assert_eq!(
        plain.note(utc_ms("2026-03-29T01:30:00Z")).as_deref(),
        Some("02:30 does not exist that day (DST): shifted by the gap")
    );
    assert_eq!(
        plain.note(utc_ms("2026-10-25T00:30:00Z")).as_deref(),
        Some("02:30 happens twice that day (DST): first pass")
    );
    assert_eq!(plain.note(utc_ms("2026-10-26T01:30:00Z")), None);
}

/// A fire's key is its slot's: changing the jitter on redeploy moves the
/// fire, never the key, so a slot already fired is not fired again.
#[test]
fn a_jittered_fire_is_keyed_by_its_slot_whatever_the_jitter() {
    let spec = |jitter: u64| TriggerSpec::Cron {
        expr: "0 * * * * *".into(),
        time_zone: None,
        dst: DstRule::default(),
        calendar: None,
        jitter: Some(Duration::from_secs(jitter)),
    };
    let (forty, fifty_nine) = (
        Trigger::compile(&spec(40), "slotecho").unwrap(),
        Trigger::compile(&spec(59), "slotecho").unwrap(),
    );
    let minute = utc_ms("2026-12-06T19:42:00Z");
    let (a, b) = (
        forty.next_after(minute - 1).unwrap(),
        fifty_nine.next_after(minute - 1).unwrap(),
    );
    assert_ne!(a, b, "the fire moves");
    assert_eq!(forty.slot_of(a), minute);
    assert_eq!(fifty_nine.slot_of(b), minute, "the key does not");
    assert!(spec(40).has_slot("slotecho", minute) && !spec(40).has_slot("slotecho", a));
    let note = forty.note(a).unwrap();
    assert!(note.starts_with("jittered: slot 19:42:00 UTC + "), "{note}");
    let mut queue = TimerQueue::new(1_000);
    queue.insert(
        "slotecho",
        Schedule {
            trigger: forty,
            misfire: MisfirePolicy::Skip,
        },
        Some(minute - 60_000),
        minute - 1,
    );
    let mut out = Vec::new();
    queue.pop_due(a, &mut out);
    assert_eq!(
        out.last().map(|d| d.idempotency_key()),
        Some(format!("slotecho@{minute}"))
    );
}
