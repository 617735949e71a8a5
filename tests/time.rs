//! Time with a real Scheduler: business calendars skip and move slots, and
//! jittered fires stay in their window, once each, across a SIGKILL of the
//! Scheduler agent.
//!
//! Each job appends its slot (`BATON_SLOT_MS`) to a file of its own, so the
//! test counts runs per slot from outside Baton.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton::protocol::*;
use baton::triggers::Trigger;
use chrono::{Duration as Days, TimeZone};
use chrono_tz::Tz;
use common::*;
use nix::sys::signal::Signal;

const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

const ELECTION: Duration = Duration::from_secs(15);

/// A job that records its slots in `dir/NAME`, with trigger lines `trigger`.
fn job(dir: &Path, name: &str, misfire: &str, trigger: &str) -> String {
    format!(
        r#"
[[job]]
name = "{name}"
program = "sh"
args = ["-c", 'echo "$BATON_SLOT_MS $(date +%s%3N)" >> "$BATON_PARAM_FILE"']
misfire = {misfire}
[job.params.file]
default = "{}"
[[job.triggers]]
{trigger}
"#,
        dir.join(name).display()
    )
}

/// Runs per slot in `file`, and the latest start (ms) seen for each slot.
fn runs(file: &Path) -> BTreeMap<u64, (usize, u64)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let slot: u64 = words.next().and_then(|w| w.parse().ok()).expect("a slot");
        let started: u64 = words.next().and_then(|w| w.parse().ok()).expect("a start");
        let entry = runs.entry(slot).or_insert((0, started));
        entry.0 += 1;
        entry.1 = entry.1.max(started);
    }
    runs
}

/// A zone whose wall clock is within a few hours of noon now, so the test's
/// "yesterday", "today" and "tomorrow" hold while it runs.
fn zone_near_noon() -> (&'static str, Tz) {
    let names = [
        "Etc/GMT+12",
        "Etc/GMT+11",
        "Etc/GMT+10",
        "Etc/GMT+9",
        "Etc/GMT+8",
        "Etc/GMT+7",
        "Etc/GMT+6",
        "Etc/GMT+5",
        "Etc/GMT+4",
        "Etc/GMT+3",
        "Etc/GMT+2",
        "Etc/GMT+1",
        "Etc/GMT",
        "Etc/GMT-1",
        "Etc/GMT-2",
        "Etc/GMT-3",
        "Etc/GMT-4",
        "Etc/GMT-5",
        "Etc/GMT-6",
        "Etc/GMT-7",
        "Etc/GMT-8",
        "Etc/GMT-9",
        "Etc/GMT-10",
        "Etc/GMT-11",
        "Etc/GMT-12",
    ];
    let now = chrono::Utc::now();
    names
        .iter()
        .map(|n| (*n, n.parse::<Tz>().unwrap()))
        .find(|(_, tz)| {
            use chrono::Timelike;
            (10..14).contains(&now.with_timezone(tz).hour())
        })
        .expect("some zone is near noon")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_skips_and_moves_slots_with_a_real_scheduler() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    let (zone, tz) = zone_near_noon();
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let (yesterday, tomorrow) = (today - Days::days(1), today + Days::days(1));
    let on = |day: chrono::NaiveDate| {
        use chrono::Datelike;
        format!("*/2 * * {} {} *", day.day(), day.month())
    };
    let cron = |expr: &str, extra: &str| {
        format!("kind = \"cron\"\nexpr = \"{expr}\"\ntime_zone = \"{zone}\"\n{extra}")
    };
    let text = format!(
        r#"
[[calendar]]
name = "off-around-today"
weekdays = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
holidays = ["{yesterday}", "{tomorrow}"]

[[calendar]]
name = "off-today"
weekdays = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
holidays = ["{today}"]
{}{}{}{}"#,
        job(
            &dir,
            "plain",
            "{ policy = \"skip\" }",
            &cron("*/2 * * * * *", "")
        ),
        job(
            &dir,
            "skipped",
            "{ policy = \"skip\" }",
            &cron("*/2 * * * * *", "calendar = \"off-today\"")
        ),
        job(
            &dir,
            "from-yesterday",
            "{ policy = \"skip\" }",
            &cron(
                &on(yesterday),
                "calendar = \"off-around-today\"\non_holiday = \"next\""
            )
        ),
        job(
            &dir,
            "from-tomorrow",
            "{ policy = \"skip\" }",
            &cron(
                &on(tomorrow),
                "calendar = \"off-around-today\"\non_holiday = \"previous\""
            )
        ),
    );
    deploy(&h.bus, &text).await;
    h.cluster
        .spawn("a1", &["agent", "--id", "a1"])
        .expect("agent");
    wait_until(Duration::from_secs(30), "the moved jobs fire today", || {
        let n = [
            runs(&dir.join("plain")).len(),
            runs(&dir.join("from-yesterday")).len(),
            runs(&dir.join("from-tomorrow")).len(),
        ];
        async move { n[0] >= 3 && n[1] >= 2 && n[2] >= 2 }
    })
    .await;
    assert!(
        runs(&dir.join("skipped")).is_empty(),
        "today is a day off for 'skipped'"
    );
    for name in ["from-yesterday", "from-tomorrow"] {
        let r = runs(&dir.join(name));
        for (slot, (n, _)) in &r {
            assert_eq!(*n, 1, "{name}: slot {slot} ran {n} times");
            let local = tz.timestamp_millis_opt(*slot as i64).unwrap();
            assert_eq!(local.date_naive(), today, "{name}: moved to today");
            assert_eq!(slot % 2000, 0, "{name}: at the pattern's wall-clock times");
        }
    }
    // job show lists the moved fires on today's date, on the zone's clock
    let get = GetJob {
        name: "from-yesterday".into(),
        next: Some(3),
    };
    let info: JobInfo = h
        .bus
        .request(h.bus.subjects().job_get(), &get, REQUEST)
        .await
        .expect("job get");
    assert_eq!(info.next_fires.len(), 3);
    for fire in &info.next_fires {
        let local = tz.timestamp_millis_opt(fire.at_ms as i64).unwrap();
        assert_eq!(local.date_naive(), today, "{fire:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_fires_stay_in_their_window_once_each_across_a_scheduler_kill() {
    let mut h = cluster_with_env(&["sub-1", "sub-2"], ENV).await;
    let dir = h.scratch();
    let trigger = "kind = \"interval\"\nevery = \"2s\"\njitter = \"1500ms\"";
    deploy(
        &h.bus,
        &job(&dir, "jit", "{ policy = \"fire-all\" }", trigger),
    )
    .await;
    for id in ["a1", "a2"] {
        h.cluster.spawn(id, &["agent", "--id", id]).expect("agent");
    }
    let file = dir.join("jit");
    let scheduler = wait_for(ELECTION, "a Scheduler", || async {
        let status: StatusReply = h
            .bus
            .request(
                h.bus.subjects().status(),
                &StatusRequest::default(),
                REQUEST,
            )
            .await
            .ok()?;
        let on = status
            .agents
            .iter()
            .find(|a| a.role == AgentRole::Scheduler)?;
        Some(on.id.clone())
    })
    .await;
    wait_until(Duration::from_secs(20), "three fires", || {
        let n = runs(&file).len();
        async move { n >= 3 }
    })
    .await;
    h.cluster
        .signal(&scheduler, Signal::SIGKILL)
        .expect("kill the Scheduler");
    let before = runs(&file).len();
    wait_until(Duration::from_secs(30), "the next Scheduler fires", || {
        let n = runs(&file).len();
        async move { n >= before + 4 }
    })
    .await;
    let r = runs(&file);
    let spec = TriggerSpec::Interval {
        every: Duration::from_secs(2),
        start: None,
        jitter: Some(Duration::from_millis(1500)),
    };
    let fires = Trigger::compile(&spec, "jit").unwrap();
    let slots = fires.clone().slots_only();
    // BATON_SLOT_MS is the slot; the fire comes up to 1.5 s after it
    let (first, last) = (*r.keys().next().unwrap(), *r.keys().last().unwrap());
    let want = slots.slots_between(first - 1, last, 1000);
    let got: Vec<u64> = r.keys().copied().collect();
    assert_eq!(
        got, want,
        "0 missed, 0 extra: every slot from the first to the last"
    );
    let mut off_the_second = 0;
    for (slot, (n, started)) in &r {
        assert_eq!(*n, 1, "slot {slot} ran {n} times");
        let fire = fires.next_after(slot - 1).unwrap();
        assert_eq!(fires.slot_of(fire), *slot);
        assert!(
            fire - slot < 1500,
            "slot {slot} fires in its window, at {fire}"
        );
        assert!(
            *started >= fire,
            "slot {slot} started before its fire {fire}, at {started}"
        );
        off_the_second += usize::from(fire % 1000 != 0);
    }
    assert!(off_the_second > 0, "jitter moved the fires: {got:?}");
}

/// A calendar travels in the triggers naming it: changing it warns of the
/// jobs left out of the deploy, and calendars alone are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_calendar_names_the_jobs_that_keep_its_old_days() {
    let h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    let cal =
        |holiday: &str| format!("[[calendar]]\nname = \"work\"\nholidays = [\"{holiday}\"]\n");
    let job = |name: &str| {
        format!("[[job]]\nname = \"{name}\"\nprogram = \"true\"\n[[job.triggers]]\nkind = \"cron\"\nexpr = \"0 0 9 * * *\"\ncalendar = \"work\"\n")
    };
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (c1, a, b) = (
        write("c1.toml", &cal("12-25")),
        write("a.toml", &job("a")),
        write("b.toml", &job("b")),
    );
    let out = run_baton(&h, &["deploy", &c1, &a, &b], Duration::from_secs(30)).await;
    assert!(out.status.success(), "{out:?}");
    let c2 = write("c2.toml", &cal("12-26"));
    let out = run_baton(&h, &["deploy", &c2, &a], Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr.contains("warning: calendar 'work' changes, but b not in this deploy: it keeps the old days until its file is deployed with it"),
        "{stderr}"
    );
    let out = run_baton(&h, &["deploy", &c2], Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("define only calendars"), "{stderr}");
}
