//! Tests of triggers, policies and the timer queue, all against times the
//! test chooses.

use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::policy::{DEFAULT_FIRE_ALL_MAX, DEFAULT_MISFIRE_WINDOW, DEFAULT_TOLERANCE_MS};
use super::*;
use crate::testing::Rng;

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis() as u64
}

fn cron(expr: &str, time_zone: Option<&str>) -> Trigger {
    Trigger::compile(
        &TriggerSpec::Cron {
            expr: expr.to_string(),
            time_zone: time_zone.map(str::to_string),
            dst: Default::default(),
            calendar: None,
            jitter: None,
        },
        "job",
    )
    .unwrap()
}

fn every(secs: u64, start_ms: Option<u64>) -> Trigger {
    Trigger::compile(
        &TriggerSpec::Interval {
            every: Duration::from_secs(secs),
            start: start_ms.map(|ms| Utc.timestamp_millis_opt(ms as i64).unwrap()),
            jitter: None,
        },
        "job",
    )
    .unwrap()
}

fn at(ms: u64) -> Trigger {
    Trigger::compile(
        &TriggerSpec::At {
            at: Utc.timestamp_millis_opt(ms as i64).unwrap(),
        },
        "job",
    )
    .unwrap()
}

fn error_of(spec: TriggerSpec) -> String {
    spec.validate().unwrap_err().to_string()
}

// ---- triggers ----

#[test]
fn cron_with_seconds_fires_every_five_seconds() {
    let t = cron("*/5 * * * * *", None);
    let base = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(t.next_after(base), Some(base + 5 * SEC));
    assert_eq!(t.next_after(base + 1), Some(base + 5 * SEC));
    assert_eq!(t.next_after(base + 4_999), Some(base + 5 * SEC));
    assert_eq!(
        t.slots_between(base, base + 20 * SEC, 100),
        vec![
            base + 5 * SEC,
            base + 10 * SEC,
            base + 15 * SEC,
            base + 20 * SEC
        ]
    );
    assert_eq!(t.slots_between(base, base + 20 * SEC, 2).len(), 2);
    assert_eq!(t.last_at_or_before(base + 7 * SEC), Some(base + 5 * SEC));
    assert_eq!(t.last_at_or_before(base + 5 * SEC), Some(base + 5 * SEC));
    assert_eq!(
        t.latest_slots(base, base + 20 * SEC, 2),
        vec![base + 15 * SEC, base + 20 * SEC]
    );
}

#[test]
fn cron_honours_the_time_zone() {
    let t = cron("0 0 9 * * MON-FRI", Some("America/New_York"));
    // Friday 2026-01-02 10:00 UTC is 05:00 in New York; 09:00 EST is 14:00 UTC.
    let friday = utc(2026, 1, 2, 10, 0, 0);
    assert_eq!(t.next_after(friday), Some(utc(2026, 1, 2, 14, 0, 0)));
    // After it, the next is Monday.
    assert_eq!(
        t.next_after(utc(2026, 1, 2, 14, 0, 0)),
        Some(utc(2026, 1, 5, 14, 0, 0))
    );
}

#[test]
fn cron_shifts_a_local_time_in_the_spring_forward_gap_by_the_gap() {
    // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 never
    // happens, so it fires at 03:30 CEST, the instant 02:30 CET would have been.
    let t = cron("0 30 2 * * *", Some("Europe/Berlin"));
    let slots = t.slots_between(utc(2026, 3, 27, 12, 0, 0), utc(2026, 3, 30, 12, 0, 0), 10);
    assert_eq!(
        slots,
        vec![
            utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
            utc(2026, 3, 29, 1, 30, 0), // 03:30 CEST, shifted
            utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
        ]
    );
    assert_eq!(
        t.last_at_or_before(utc(2026, 3, 29, 1, 29, 0)),
        Some(utc(2026, 3, 28, 1, 30, 0))
    );
    assert_eq!(
        t.last_at_or_before(utc(2026, 3, 30, 0, 0, 0)),
        Some(utc(2026, 3, 29, 1, 30, 0))
    );
}

#[test]
fn cron_fires_a_repeated_local_time_once_at_its_first_occurrence() {
    // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30
    // happens at 00:30 UTC and again at 01:30 UTC.
    let t = cron("0 30 2 * * *", Some("Europe/Berlin"));
    let slots = t.slots_between(utc(2026, 10, 23, 12, 0, 0), utc(2026, 10, 26, 12, 0, 0), 10);
    assert_eq!(
        slots,
        vec![
            utc(2026, 10, 24, 0, 30, 0), // 02:30 CEST
            utc(2026, 10, 25, 0, 30, 0), // first 02:30 (CEST), not the second
            utc(2026, 10, 26, 1, 30, 0), // 02:30 CET
        ]
    );
    // Asked from inside the second pass, the repeated time is not a slot.
    assert_eq!(
        t.next_after(utc(2026, 10, 25, 1, 0, 0)),
        Some(utc(2026, 10, 26, 1, 30, 0))
    );
    assert_eq!(
        t.last_at_or_before(utc(2026, 10, 25, 1, 45, 0)),
        Some(utc(2026, 10, 25, 0, 30, 0))
    );
    // Sub-hourly patterns have no slot in the second pass either.
    let quarter = cron("0 */15 * * * *", Some("Europe/Berlin"));
    let slots = quarter.slots_between(utc(2026, 10, 24, 23, 50, 0), utc(2026, 10, 25, 2, 0, 0), 20);
    let expected: Vec<u64> = [(0, 0), (0, 15), (0, 30), (0, 45), (2, 0)]
        .iter()
        .map(|&(h, m)| utc(2026, 10, 25, h, m, 0))
        .collect();
    assert_eq!(slots, expected);
}

#[test]
fn interval_counts_from_the_epoch_or_its_start() {
    let t = every(90, None);
    assert_eq!(t.next_after(0), Some(90 * SEC));
    assert_eq!(t.next_after(90 * SEC), Some(180 * SEC));
    assert_eq!(t.next_after(90 * SEC - 1), Some(90 * SEC));
    assert_eq!(t.last_at_or_before(200 * SEC), Some(180 * SEC));
    let start = utc(2026, 5, 1, 0, 0, 7);
    let t = every(3600, Some(start));
    assert_eq!(t.next_after(0), Some(start));
    assert_eq!(t.next_after(start), Some(start + HOUR));
    assert_eq!(t.last_at_or_before(start - 1), None);
    assert_eq!(t.last_at_or_before(start + 90 * MIN), Some(start + HOUR));
}

#[test]
fn at_fires_once_then_never() {
    let when = utc(2026, 7, 1, 12, 0, 0);
    let t = at(when);
    assert_eq!(t.next_after(when - 1), Some(when));
    assert_eq!(t.next_after(when), None);
    assert_eq!(t.slots_between(0, u64::MAX, 10), vec![when]);
    let mut queue = TimerQueue::default();
    let schedule = Schedule {
        trigger: t,
        misfire: MisfirePolicy::default(),
    };
    queue.insert("once", schedule, None, when - HOUR);
    let mut out = Vec::new();
    queue.pop_due(when, &mut out);
    assert_eq!(
        out,
        vec![Due {
            job: "once".into(),
            slot_ms: when,
            nominal_ms: when,
        }]
    );
    assert_eq!(queue.next_deadline(), None);
    assert_eq!(queue.next_slot("once"), None);
    assert!(queue.contains("once"));
}

#[test]
fn several_specs_fire_their_union_and_a_shared_slot_once() {
    let base = utc(2026, 1, 1, 0, 0, 0);
    let specs = [
        TriggerSpec::Cron {
            expr: "0 0 * * * *".into(),
            time_zone: None,
            dst: Default::default(),
            calendar: None,
            jitter: None,
        },
        TriggerSpec::Interval {
            every: Duration::from_secs(1800),
            start: None,
            jitter: None,
        },
        TriggerSpec::At {
            at: Utc.timestamp_millis_opt((base + 10 * MIN) as i64).unwrap(),
        },
    ];
    let t = Trigger::compile_all(&specs, "job").unwrap();
    assert_eq!(
        t.slots_between(base, base + HOUR, 10),
        vec![base + 10 * MIN, base + 30 * MIN, base + HOUR]
    );
    assert_eq!(
        Trigger::compile_all(&[], "job").unwrap().next_after(0),
        None
    );
}

#[test]
fn validation_errors_name_what_is_wrong() {
    let cron_spec = |expr: &str, tz: Option<&str>| TriggerSpec::Cron {
        expr: expr.into(),
        time_zone: tz.map(str::to_string),
        dst: Default::default(),
        calendar: None,
        jitter: None,
    };
    assert_eq!(
        error_of(cron_spec("*/5 * * * *", None)),
        "cron expression '*/5 * * * *': expected 6 or 7 fields (second minute hour day-of-month \
         month day-of-week [year]), found 5"
    );
    assert_eq!(
        error_of(cron_spec("0 61 * * * *", None)),
        "cron expression '0 61 * * * *': Minutes must be less than 59. ('61' specified.) \
         (at character 3)"
    );
    let e = error_of(cron_spec("0 0 9 * * 1-5", None));
    assert!(e.contains("day of week '1-5': use names"), "{e}");
    assert_eq!(
        error_of(cron_spec("x y z * * *", None)),
        "cron expression 'x y z * * *': The 'Seconds' field does not support using names. \
         'x' specified (at character 1)"
    );
    assert_eq!(
        error_of(cron_spec("0 0 * * * * 1960", None)),
        "cron expression '0 0 * * * * 1960': not a valid cron expression (at character 13)"
    );
    assert_eq!(
        error_of(cron_spec("0 0 0 30 FEB *", None)),
        "cron expression '0 0 0 30 FEB *': matches no date between 1970 and 2100"
    );
    assert_eq!(
        error_of(cron_spec("0 0 * * * *", Some("Europe/Berln"))),
        "unknown time zone 'Europe/Berln': expected an IANA name such as 'Europe/Berlin' or 'UTC'"
    );
    let interval = TriggerSpec::Interval {
        every: Duration::from_millis(500),
        start: None,
        jitter: None,
    };
    assert_eq!(
        error_of(interval),
        "interval every '500ms': must be at least 1s"
    );
    let old = TriggerSpec::At {
        at: Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap(),
    };
    assert_eq!(
        error_of(old),
        "at '1969-12-31T00:00:00+00:00': before 1970-01-01T00:00:00Z"
    );
    assert_eq!(
        MisfirePolicy::FireAll {
            max: 0,
            max_lateness: None
        }
        .validate()
        .unwrap_err()
        .to_string(),
        "misfire fire-all max 0: must be between 1 and 10000"
    );
    assert!(cron_spec("0 0 9 * * MON-FRI/2", None).validate().is_ok());
    assert!(cron_spec("@daily", Some("Asia/Tokyo")).validate().is_ok());
    assert!(cron_spec("0 0 9 1 * * 2027", None).validate().is_ok());
}

#[test]
fn specs_and_policies_read_from_toml() {
    #[derive(Debug, serde::Deserialize)]
    struct File {
        trigger: Vec<TriggerSpec>,
        misfire: Vec<MisfirePolicy>,
        concurrency: Vec<ConcurrencyPolicy>,
    }
    let file: File = toml::from_str(
        r#"
        trigger = [
            { kind = "cron", expr = "0 30 2 * * *", time_zone = "Europe/Berlin" },
            { kind = "interval", every = "1h 30m", start = "2026-01-01T00:00:00Z" },
            { kind = "at", at = "2026-03-29T03:30:00+02:00" },
        ]
        misfire = [
            { policy = "fire-once" },
            { policy = "fire-once", window = "10m" },
            { policy = "fire-all" },
            { policy = "skip" },
        ]
        concurrency = ["allow", "forbid", "replace"]
        "#,
    )
    .unwrap();
    assert_eq!(
        file.trigger[1],
        TriggerSpec::Interval {
            every: Duration::from_secs(5400),
            start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            jitter: None,
        }
    );
    assert_eq!(
        file.trigger[2],
        TriggerSpec::At {
            at: Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
        }
    );
    assert_eq!(file.misfire[0], MisfirePolicy::default());
    assert_eq!(
        file.misfire[1],
        MisfirePolicy::FireOnce {
            window: Duration::from_secs(600)
        }
    );
    assert_eq!(
        file.misfire[2],
        MisfirePolicy::FireAll {
            max: DEFAULT_FIRE_ALL_MAX,
            max_lateness: None,
        }
    );
    assert_eq!(file.misfire[3], MisfirePolicy::Skip);
    assert_eq!(
        file.concurrency,
        vec![
            ConcurrencyPolicy::Allow,
            ConcurrencyPolicy::Forbid,
            ConcurrencyPolicy::Replace
        ]
    );
    for spec in &file.trigger {
        spec.validate().unwrap();
        let text = toml::to_string(&serde_json::json!({ "t": spec })).unwrap();
        let back: std::collections::BTreeMap<String, TriggerSpec> = toml::from_str(&text).unwrap();
        assert_eq!(&back["t"], spec);
    }
    let typo = toml::from_str::<File>(
        r#"
        trigger = [{ kind = "cron", expr = "0 * * * * *", timezone = "UTC" }]
        misfire = []
        concurrency = []
        "#,
    );
    // A wire type ignores fields it does not know, so peers can add some;
    // the deploy file refuses them (`jobs::tests::triggers_parse_and_validate`).
    assert!(typo.is_ok());
}

// ---- misfire ----

const TOL: u64 = DEFAULT_TOLERANCE_MS;

fn once(window: Duration) -> MisfirePolicy {
    MisfirePolicy::FireOnce { window }
}

#[test]
fn a_job_deployed_now_catches_nothing_up() {
    let t = every(60, None);
    for policy in [
        MisfirePolicy::default(),
        MisfirePolicy::FireAll {
            max: 10,
            max_lateness: None,
        },
        MisfirePolicy::Skip,
    ] {
        assert!(due_slots(&t, None, 10 * MIN, &policy, TOL).is_empty());
    }
}

#[test]
fn an_on_time_slot_fires_under_every_policy() {
    let t = every(60, None);
    for policy in [
        once(Duration::ZERO),
        MisfirePolicy::FireAll {
            max: 1,
            max_lateness: None,
        },
        MisfirePolicy::Skip,
    ] {
        assert_eq!(
            due_slots(&t, Some(9 * MIN), 10 * MIN, &policy, TOL),
            vec![10 * MIN]
        );
        assert_eq!(
            due_slots(&t, Some(9 * MIN), 10 * MIN + TOL, &policy, TOL),
            vec![10 * MIN]
        );
        assert!(due_slots(&t, Some(9 * MIN), 10 * MIN - 1, &policy, TOL).is_empty());
        // Already fired, or fired by a Scheduler whose clock is ahead.
        assert!(due_slots(&t, Some(10 * MIN), 10 * MIN + 5, &policy, TOL).is_empty());
        assert!(due_slots(&t, Some(11 * MIN), 10 * MIN + 5, &policy, TOL).is_empty());
    }
}

#[test]
fn fire_once_fires_the_latest_missed_slot_within_its_window() {
    let t = every(600, None); // every 10 minutes
    let window = Duration::from_secs(300);
    let policy = once(window);
    // Down from 00:05 to 00:34: 00:10, 00:20, 00:30 missed; 00:30 is 4 minutes old.
    let last = 0;
    assert_eq!(
        due_slots(&t, Some(last), 34 * MIN, &policy, TOL),
        vec![30 * MIN]
    );
    // Window edges: 5 minutes old fires, 5 minutes and 1 ms does not.
    assert_eq!(
        due_slots(&t, Some(last), 35 * MIN, &policy, TOL),
        vec![30 * MIN]
    );
    assert!(due_slots(&t, Some(last), 35 * MIN + 1, &policy, TOL).is_empty());
    // Nothing missed, nothing due.
    assert!(due_slots(&t, Some(30 * MIN), 39 * MIN, &policy, TOL).is_empty());
    // The default window is an hour.
    assert_eq!(DEFAULT_MISFIRE_WINDOW, Duration::from_secs(3600));
    let default = MisfirePolicy::default();
    assert_eq!(
        due_slots(&t, Some(last), 90 * MIN, &default, TOL),
        vec![90 * MIN]
    );
    assert_eq!(
        due_slots(&t, Some(last), 99 * MIN, &default, TOL),
        vec![90 * MIN]
    );
    assert_eq!(
        due_slots(&t, Some(last), 150 * MIN, &default, TOL),
        vec![150 * MIN]
    );
    // A zero window still fires an on-time slot.
    assert_eq!(
        due_slots(&t, Some(last), 30 * MIN + 200, &once(Duration::ZERO), TOL),
        vec![30 * MIN]
    );
}

#[test]
fn fire_all_fires_every_missed_slot_up_to_its_bound() {
    let t = every(60, None);
    let all = MisfirePolicy::FireAll {
        max: 5,
        max_lateness: None,
    };
    // Three missed plus one on time: all four, oldest first.
    let slots = due_slots(&t, Some(MIN), 5 * MIN, &all, TOL);
    assert_eq!(slots, vec![2 * MIN, 3 * MIN, 4 * MIN, 5 * MIN]);
    // Exactly the bound: all of them.
    let slots = due_slots(&t, Some(0), 5 * MIN + 30 * SEC, &all, TOL);
    assert_eq!(slots, (1..=5).map(|k| k * MIN).collect::<Vec<_>>());
    // Over the bound: the most recent five.
    let slots = due_slots(&t, Some(0), 1000 * MIN + 30 * SEC, &all, TOL);
    assert_eq!(slots, (996..=1000).map(|k| k * MIN).collect::<Vec<_>>());
    // A cron trigger a year behind costs only the bound.
    let c = cron("* * * * * *", None);
    let now = utc(2026, 6, 1, 0, 0, 0);
    let slots = due_slots(&c, Some(now - 365 * 24 * HOUR), now, &all, TOL);
    assert_eq!(
        slots,
        (0..5).rev().map(|k| now - k * SEC).collect::<Vec<_>>()
    );
}

#[test]
fn fire_all_skips_missed_slots_older_than_its_max_lateness() {
    let t = every(60, None);
    let all = MisfirePolicy::FireAll {
        max: 100,
        max_lateness: Some(Duration::from_secs(150)),
    };
    // ten minutes behind: only the slots of the last 2.5 minutes
    let slots = due_slots(&t, Some(0), 10 * MIN + 10 * SEC, &all, TOL);
    assert_eq!(slots, vec![8 * MIN, 9 * MIN, 10 * MIN]);
    // the bound never drops an on-time slot
    let tight = MisfirePolicy::FireAll {
        max: 100,
        max_lateness: Some(Duration::ZERO),
    };
    assert_eq!(
        due_slots(&t, Some(0), 10 * MIN + TOL, &tight, TOL),
        vec![10 * MIN]
    );
    // and parses from a deploy file
    let file = "[[job]]\nname = \"j\"\nprogram = \"true\"\nmisfire = { policy = \"fire-all\", max_lateness = \"1h\" }\n";
    let job = &crate::jobs::parse_deploy_file("j.toml", file)
        .expect("parses")
        .jobs[0];
    assert_eq!(
        job.misfire,
        MisfirePolicy::FireAll {
            max: DEFAULT_FIRE_ALL_MAX,
            max_lateness: Some(Duration::from_secs(3600)),
        }
    );
}

#[test]
fn skip_fires_only_on_time_slots() {
    let t = every(60, None);
    assert!(due_slots(&t, Some(0), 5 * MIN + TOL + 1, &MisfirePolicy::Skip, TOL).is_empty());
    assert_eq!(
        due_slots(&t, Some(0), 5 * MIN + TOL, &MisfirePolicy::Skip, TOL),
        vec![5 * MIN]
    );
    // Several slots inside the tolerance are all on time.
    let fast = every(1, None);
    assert_eq!(
        due_slots(&fast, Some(0), 100 * SEC, &MisfirePolicy::Skip, 2 * SEC),
        vec![98 * SEC, 99 * SEC, 100 * SEC]
    );
}

#[test]
fn property_fire_all_never_repeats_or_drops_a_slot_under_its_bound() {
    let zones = [
        None,
        Some("Europe/Berlin"),
        Some("America/New_York"),
        Some("Australia/Lord_Howe"),
    ];
    let exprs = [
        "*/7 * * * * *",
        "0 */15 * * * *",
        "0 30 2 * * *",
        "13 0,30 * * * *",
        "@hourly",
    ];
    let mut rng = Rng::new(1);
    for case in 0..60 {
        let trigger = if rng.below(2) == 0 {
            every(1 + rng.below(7200), Some(rng.below(10 * HOUR)))
        } else {
            let expr = exprs[rng.below(exprs.len() as u64) as usize];
            cron(expr, zones[rng.below(zones.len() as u64) as usize])
        };
        let max = 1 + rng.below(20) as u32;
        let fire_all = MisfirePolicy::FireAll {
            max,
            max_lateness: None,
        };
        let fire_once = once(Duration::from_secs(rng.below(7200)));
        // Start near a DST change now and then.
        let mut now = utc(2026, 10, 24, 22, 0, 0) + rng.below(30 * 24 * HOUR) * (case % 2);
        let mut last_all = now;
        let mut last_once = now;
        let mut fired = std::collections::BTreeSet::new();
        for _ in 0..25 {
            // Up or down for a while: from ms to days.
            let gap = match rng.below(4) {
                0 => rng.below(10 * SEC),
                1 => rng.below(HOUR),
                2 => rng.below(6 * HOUR),
                _ => rng.below(3 * 24 * HOUR),
            };
            now += gap;
            let all = trigger.slots_between(last_all, now, max as usize + 1);
            let got = due_slots(&trigger, Some(last_all), now, &fire_all, TOL);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "case {case}: {got:?}");
            assert!(got.iter().all(|&s| s > last_all && s <= now), "case {case}");
            for &slot in &got {
                assert!(fired.insert(slot), "case {case}: slot {slot} fired twice");
            }
            if all.len() <= max as usize {
                assert_eq!(got, all, "case {case}: a slot was dropped under the bound");
            } else {
                assert_eq!(got.len(), max as usize, "case {case}");
                assert_eq!(got.last(), trigger.last_at_or_before(now).as_ref());
            }
            if let Some(&newest) = got.last() {
                last_all = newest;
            }
            let one = due_slots(&trigger, Some(last_once), now, &fire_once, TOL);
            assert!(one.len() <= 1, "case {case}: fire-once returned {one:?}");
            if let Some(&slot) = one.first() {
                assert!(slot > last_once && slot <= now);
                last_once = slot;
            }
        }
    }
}

#[test]
fn property_next_after_and_last_at_or_before_agree() {
    let zones = [
        None,
        Some("Europe/Berlin"),
        Some("America/Sao_Paulo"),
        Some("Asia/Kolkata"),
    ];
    let exprs = [
        "*/20 * * * * *",
        "0 */10 * * * *",
        "0 30 1,2,3 * * *",
        "0 0 0 * * SUN",
    ];
    let mut rng = Rng::new(42);
    for case in 0..200 {
        let expr = exprs[rng.below(exprs.len() as u64) as usize];
        let t = cron(expr, zones[rng.below(zones.len() as u64) as usize]);
        // Around the 2026 March and October changes.
        let base = if rng.below(2) == 0 {
            utc(2026, 3, 27, 0, 0, 0)
        } else {
            utc(2026, 10, 23, 0, 0, 0)
        };
        let probe = base + rng.below(5 * 24 * HOUR);
        let next = t.next_after(probe).unwrap();
        assert!(next > probe, "case {case}");
        assert_eq!(t.last_at_or_before(next), Some(next), "case {case}: {expr}");
        assert!(
            t.last_at_or_before(next - 1).is_none_or(|s| s <= probe),
            "case {case}: {expr}"
        );
    }
}

#[test]
fn forward_and_backward_agree_across_dst_changes() {
    let zones = [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "UTC",
    ];
    let exprs = ["0 */15 * * * *", "0 30 2 * * *", "20 0,30 1-3 * * *"];
    // Both 2026 changes of each zone (Lord Howe: April and October).
    let ranges = [
        (utc(2026, 3, 7, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0)),
        (utc(2026, 3, 28, 0, 0, 0), utc(2026, 3, 30, 0, 0, 0)),
        (utc(2026, 4, 4, 0, 0, 0), utc(2026, 4, 5, 12, 0, 0)),
        (utc(2026, 10, 3, 0, 0, 0), utc(2026, 10, 4, 12, 0, 0)),
        (utc(2026, 10, 24, 0, 0, 0), utc(2026, 10, 26, 0, 0, 0)),
        (utc(2026, 10, 31, 0, 0, 0), utc(2026, 11, 2, 12, 0, 0)),
    ];
    for zone in zones {
        for expr in exprs {
            let t = cron(expr, Some(zone));
            for (from, to) in ranges {
                let slots = t.slots_between(from, to, usize::MAX);
                let mut probe = from + 1;
                while probe < to {
                    let before = slots.iter().rev().find(|&&s| s <= probe).copied();
                    let after = slots.iter().find(|&&s| s > probe).copied();
                    let context = format!("{expr} in {zone} at {probe}");
                    if before.is_some() {
                        assert_eq!(t.last_at_or_before(probe), before, "{context}");
                    }
                    match after {
                        Some(_) => assert_eq!(t.next_after(probe), after, "{context}"),
                        None => assert!(t.next_after(probe).unwrap() > to, "{context}"),
                    }
                    probe += 7 * MIN + 13;
                }
            }
        }
    }
}

// ---- idempotency ----

#[test]
fn the_idempotency_key_is_the_job_and_the_slot() {
    assert_eq!(
        idempotency_key("nightly", 1_767_225_600_000),
        "nightly@1767225600000"
    );
    assert_eq!(idempotency_key("nightly", 5), idempotency_key("nightly", 5));
    assert_ne!(idempotency_key("a", 12), idempotency_key("a1", 2));
    let due = Due {
        job: "report".into(),
        slot_ms: 7,
        nominal_ms: 7,
    };
    assert_eq!(due.idempotency_key(), "report@7");
}

#[test]
fn a_workflows_schedule_keeps_apart_from_a_job_of_the_same_name() {
    let key = workflow_key("nightly");
    assert_eq!(key, "workflow.nightly");
    assert_ne!(key, "nightly");
    assert_eq!(submitted_name(&key), "nightly");
    assert_eq!(submitted_name("nightly"), "nightly");
    // a job's name is a subject token: no job is named like a workflow's key
    assert!(!crate::protocol::subjects::is_valid_token(&key));
    let due = Due {
        job: key,
        slot_ms: 7,
        nominal_ms: 7,
    };
    assert_eq!(due.idempotency_key(), "workflow.nightly@7");
    assert_ne!(due.idempotency_key(), idempotency_key("nightly", 7));
}

// ---- timer queue ----

fn schedule(trigger: Trigger, misfire: MisfirePolicy) -> Schedule {
    Schedule { trigger, misfire }
}

/// Pops at every deadline up to `until`, as a Scheduler that is never late.
fn run_until(queue: &mut TimerQueue, until: u64, out: &mut Vec<Due>) {
    while let Some(deadline) = queue.next_deadline().filter(|&d| d <= until) {
        queue.pop_due(deadline, out);
    }
}

#[test]
fn queue_orders_jobs_by_next_slot_and_rearms_them() {
    let mut q = TimerQueue::default();
    let start = utc(2026, 1, 1, 0, 0, 0);
    q.insert(
        "a",
        schedule(every(60, None), MisfirePolicy::default()),
        None,
        start,
    );
    q.insert(
        "b",
        schedule(cron("30 * * * * *", None), MisfirePolicy::default()),
        None,
        start,
    );
    assert_eq!(q.next_deadline(), Some(start + 30 * SEC));
    let mut out = Vec::new();
    run_until(&mut q, start + 2 * MIN, &mut out);
    let got: Vec<(&str, u64)> = out
        .iter()
        .map(|d| (d.job.as_str(), d.slot_ms - start))
        .collect();
    assert_eq!(
        got,
        vec![("b", 30 * SEC), ("a", MIN), ("b", 90 * SEC), ("a", 2 * MIN)]
    );
    assert_eq!(q.next_slot("a"), Some(start + 3 * MIN));
    assert_eq!(q.cursor("a"), Some(start + 2 * MIN));
}

#[test]
fn queue_replaces_and_removes_jobs() {
    let mut q = TimerQueue::default();
    let t0 = utc(2026, 1, 1, 0, 0, 0);
    q.insert(
        "a",
        schedule(every(60, None), MisfirePolicy::default()),
        None,
        t0,
    );
    q.insert(
        "a",
        schedule(every(3600, None), MisfirePolicy::default()),
        None,
        t0,
    );
    assert_eq!(q.len(), 1);
    assert_eq!(q.next_deadline(), Some(t0 + HOUR));
    let mut out = Vec::new();
    q.pop_due(t0 + 59 * MIN, &mut out);
    assert!(
        out.is_empty(),
        "the replaced schedule's slots are gone: {out:?}"
    );
    assert!(q.remove("a"));
    assert!(!q.remove("a"));
    assert_eq!(q.next_deadline(), None);
    assert!(q.is_empty());
    // Churn: replacing many times leaves one live item per job.
    for round in 0..50 {
        for job in 0..100 {
            let t = every(60 + round, Some(t0));
            q.insert(
                &format!("j{job}"),
                schedule(t, MisfirePolicy::default()),
                None,
                t0,
            );
        }
    }
    assert_eq!(q.len(), 100);
    out.clear();
    run_until(&mut q, t0 + 109 * SEC, &mut out);
    assert_eq!(out.len(), 100); // all at t0 + 109s (every 109s), once each
}

#[test]
fn queue_takeover_applies_the_misfire_policy() {
    let t0 = utc(2026, 1, 1, 0, 0, 0);
    let now = t0 + 10 * MIN + 5 * SEC;
    let mut q = TimerQueue::default();
    let minutely = || every(60, None);
    q.insert(
        "all",
        schedule(
            minutely(),
            MisfirePolicy::FireAll {
                max: 3,
                max_lateness: None,
            },
        ),
        Some(t0),
        now,
    );
    q.insert(
        "once",
        schedule(minutely(), MisfirePolicy::default()),
        Some(t0),
        now,
    );
    q.insert(
        "skip",
        schedule(minutely(), MisfirePolicy::Skip),
        Some(t0),
        now,
    );
    q.insert(
        "new",
        schedule(
            minutely(),
            MisfirePolicy::FireAll {
                max: 3,
                max_lateness: None,
            },
        ),
        None,
        now,
    );
    assert_eq!(q.next_deadline(), Some(t0 + MIN));
    let mut out = Vec::new();
    q.pop_due(now, &mut out);
    let mut got: Vec<(&str, u64)> = out
        .iter()
        .map(|d| (d.job.as_str(), (d.slot_ms - t0) / MIN))
        .collect();
    got.sort();
    assert_eq!(got, vec![("all", 8), ("all", 9), ("all", 10), ("once", 10)]);
    for job in ["all", "once", "skip", "new"] {
        assert_eq!(q.next_slot(job), Some(t0 + 11 * MIN), "{job}");
    }
    // A Scheduler that falls behind is a misfire too.
    out.clear();
    q.pop_due(t0 + 13 * MIN + 30 * SEC, &mut out);
    let mut got: Vec<(&str, u64)> = out
        .iter()
        .map(|d| (d.job.as_str(), (d.slot_ms - t0) / MIN))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("all", 11),
            ("all", 12),
            ("all", 13),
            ("new", 11),
            ("new", 12),
            ("new", 13),
            ("once", 13)
        ]
    );
}

#[test]
fn queue_holds_100_000_schedules_through_an_hour() {
    let t0 = utc(2026, 1, 1, 0, 0, 0);
    let t1 = t0 + HOUR;
    let mut q = TimerQueue::default();
    let mut expected = 0u64;
    for i in 0..100_000u64 {
        let period = (i % 60 + 1) * 60; // 1 to 60 minutes
        let start = t0 - HOUR + (i % 97) * SEC;
        let t = every(period, Some(start));
        expected += t.slots_between(t0, t1, usize::MAX).len() as u64;
        q.insert(
            &format!("job-{i}"),
            schedule(
                t,
                MisfirePolicy::FireAll {
                    max: 100,
                    max_lateness: None,
                },
            ),
            None,
            t0,
        );
    }
    for i in 0..20u64 {
        let t = cron(&format!("{} */5 * * * *", i % 60), Some("Europe/Berlin"));
        expected += 12;
        q.insert(
            &format!("cron-{i}"),
            schedule(t, MisfirePolicy::default()),
            None,
            t0,
        );
    }
    // Redeploy a few and remove a few while running.
    let mut out = Vec::new();
    run_until(&mut q, t0 + HOUR / 2, &mut out);
    for i in 0..1_000u64 {
        assert!(q.remove(&format!("job-{i}")));
        let period = (i % 60 + 1) * 60;
        let start = t0 - HOUR + (i % 97) * SEC;
        expected -= every(period, Some(start))
            .slots_between(t0 + HOUR / 2, t1, usize::MAX)
            .len() as u64;
    }
    run_until(&mut q, t1, &mut out);
    assert_eq!(q.len(), 99_020);
    assert_eq!(out.len() as u64, expected);
    let mut keys: Vec<String> = out.iter().map(Due::idempotency_key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), out.len(), "a slot fired twice");
    assert!(q.next_deadline().unwrap() > t1);
}

#[test]
fn the_trigger_that_fired_a_slot_is_the_first_that_has_it() {
    let every = TriggerSpec::Interval {
        every: Duration::from_secs(10),
        start: None,
        jitter: None,
    };
    let cron = TriggerSpec::Cron {
        expr: "0 0 16 * * *".into(),
        time_zone: Some("Europe/Berlin".into()),
        dst: Default::default(),
        calendar: None,
        jitter: None,
    };
    // 16:00 in Berlin, winter time
    let slot = utc(2026, 12, 6, 15, 0, 0);
    assert!(cron.has_slot("j", slot) && !cron.has_slot("j", slot + SEC));
    assert!(every.has_slot("j", slot) && !every.has_slot("j", slot + 1));
    let both = [cron, every];
    let fired = |at| TriggerSpec::fired(&both, "j", at).map(|f| f.number);
    assert_eq!(fired(slot), Some(1), "both have it: the first");
    assert_eq!(fired(slot + 10 * SEC), Some(2));
    assert_eq!(fired(slot + 1), None);
}

#[test]
fn queue_counts_the_slots_its_misfire_policy_passed_over() {
    let t0 = utc(2026, 1, 1, 0, 0, 0);
    let mut q = TimerQueue::default();
    q.insert(
        "on-time",
        schedule(every(60, None), once(Duration::from_secs(3600))),
        None,
        t0,
    );
    let mut out = Vec::new();
    run_until(&mut q, t0 + 5 * MIN, &mut out);
    assert_eq!(out.len(), 5);
    assert_eq!(q.take_missed(), 0, "on time: nothing missed");

    // ten slots missed since the last fired one: fire-once fires the latest
    let mut q = TimerQueue::default();
    q.insert(
        "gap",
        schedule(every(60, None), once(Duration::from_secs(3600))),
        Some(t0),
        t0,
    );
    let mut out = Vec::new();
    q.pop_due(t0 + 10 * MIN + SEC, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(q.take_missed(), 9);
    assert_eq!(q.take_missed(), 0, "taken");
    // and the gap, per schedule, for its notification
    let gap = crate::triggers::Gap {
        job: "gap".into(),
        count: 9,
        after_ms: t0,
        until_ms: t0 + 10 * MIN + SEC,
    };
    assert_eq!(q.take_gaps(), [gap]);
    assert!(q.take_gaps().is_empty(), "taken");

    // skip: a slot more than the tolerance late is passed over
    let mut q = TimerQueue::default();
    q.insert(
        "late",
        schedule(every(60, None), MisfirePolicy::Skip),
        None,
        t0,
    );
    let mut out = Vec::new();
    q.pop_due(t0 + MIN + 5 * SEC, &mut out);
    assert!(out.is_empty());
    assert_eq!(q.take_missed(), 1);
}
