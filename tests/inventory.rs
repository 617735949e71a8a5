//! The job inventory and its lifecycle (issue 18, item 2): `job list` and
//! `job show` with next fire times on the trigger's clock, a deploy's plan
//! (`--dry-run`, `--prune`), `undeploy` refused while a workflow runs the
//! job, and `job pause|resume` with a trigger firing every second, held
//! across a SIGKILL of the active broker.

mod common;

use std::time::Duration;

use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// Short Scheduler leases so that an agent is elected quickly.
const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

/// Bound on an election, a takeover, or a few slots firing.
const LONG: Duration = Duration::from_secs(30);

const JOBS: &str = r#"
[[cluster]]
name = "all"
mode = "round-robin"
members = [{ subagent = "sub-1" }]

[[job]]
name = "hourly"
program = "true"
cluster = "all"
[[job.triggers]]
kind = "cron"
expr = "0 0 * * * *"
time_zone = "Europe/Berlin"

[[job]]
name = "step"
program = "true"

[[workflow]]
name = "flow"
[[workflow.steps]]
name = "only"
job = "step"
"#;

fn text(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

async fn baton_ok(h: &Harness, args: &[&str]) -> String {
    let out = run_baton(h, args, LONG).await;
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "baton {args:?}: {text}");
    text
}

async fn baton_refused(h: &Harness, args: &[&str]) -> String {
    let out = run_baton(h, args, LONG).await;
    let text = text(&out);
    assert_ne!(out.status.code(), Some(0), "baton {args:?}: {text}");
    text
}

fn write(h: &Harness, name: &str, toml: &str) -> String {
    let file = h.scratch().join(name);
    std::fs::write(&file, toml).expect("write a deploy file");
    file.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_lists_shows_plans_and_undeploys() {
    let h = cluster(&["sub-1"]).await;
    let file = write(&h, "jobs.toml", JOBS);
    let first = baton_ok(&h, &["deploy", &file]).await;
    assert!(first.contains("+ add job hourly"), "{first}");
    assert!(first.contains("+ add workflow flow"), "{first}");

    let list = baton_ok(&h, &["job", "list"]).await;
    for expected in [
        "NAME",
        "NEXT FIRE",
        "hourly",
        "cron 0 0 * * * * (Europe/Berlin)",
    ] {
        assert!(list.contains(expected), "{expected:?} in {list}");
    }
    assert!(list.contains("flow") && list.contains("workflow"), "{list}");
    // the next fire on Berlin's clock: CET or CEST with its offset
    assert!(list.contains(":00:00 CE"), "{list}");

    let show = baton_ok(&h, &["job", "show", "hourly"]).await;
    let fires = show.lines().filter(|l| l.contains(":00:00 CE")).count();
    assert_eq!(fires, 10, "ten next fire times: {show}");
    assert!(
        show.contains("(+01:00)") || show.contains("(+02:00)"),
        "{show}"
    );

    // recent orders, and who runs a job
    let order = submit(&h.bus, "step", &[]).await;
    wait_until(LONG, "the order succeeded", || async {
        order_info(&h.bus, &order)
            .await
            .is_some_and(|o| o.state == OrderState::Succeeded)
    })
    .await;
    let step: JobInfo = h
        .bus
        .request(
            h.bus.subjects().job_get(),
            &GetJob {
                name: "step".into(),
                next: None,
            },
            REQUEST,
        )
        .await
        .expect("job.get");
    assert_eq!(step.used_by, ["flow"]);
    assert_eq!(step.recent_orders.len(), 1, "{step:?}");
    assert_eq!(step.recent_orders[0].order_id, order);
    let show = baton_ok(&h, &["job", "show", "step"]).await;
    assert!(
        show.contains(&order) && show.contains("succeeded"),
        "{show}"
    );
    let missing = baton_refused(&h, &["job", "show", "nope"]).await;
    assert!(
        missing.contains("no job or workflow named 'nope'"),
        "{missing}"
    );

    // a changed file: the plan, field by field; --dry-run changes nothing
    let changed = JOBS.replace(
        "name = \"hourly\"\nprogram = \"true\"",
        "name = \"hourly\"\nprogram = \"false\"",
    );
    let changed = write(&h, "changed.toml", &changed);
    let plan = baton_ok(&h, &["deploy", &changed, "--dry-run"]).await;
    assert!(plan.contains("~ change job hourly"), "{plan}");
    assert!(plan.contains("program: \"true\" -> \"false\""), "{plan}");
    assert!(plan.contains("= unchanged job step"), "{plan}");
    let list: JobList = h
        .bus
        .request(h.bus.subjects().job_list(), &ListJobs {}, REQUEST)
        .await
        .expect("job.list");
    let hourly = list
        .jobs
        .iter()
        .find(|j| j.name == "hourly")
        .expect("hourly");
    assert!(hourly.next_fire.is_some(), "{hourly:?}");
    let show: JobInfo = h
        .bus
        .request(
            h.bus.subjects().job_get(),
            &GetJob {
                name: "hourly".into(),
                next: Some(3),
            },
            REQUEST,
        )
        .await
        .expect("job.get");
    assert_eq!(show.next_fires.len(), 3, "{show:?}");
    assert_eq!(
        show.job.expect("a job").program,
        "true",
        "a dry run changes nothing"
    );

    // --prune removes what the file no longer holds
    let only_hourly = write(
        &h,
        "hourly.toml",
        &JOBS[..JOBS.find("[[job]]\nname = \"step\"").expect("step")],
    );
    let plan = baton_ok(&h, &["deploy", &only_hourly, "--dry-run"]).await;
    assert!(
        plan.contains(". kept job step (not in these files"),
        "{plan}"
    );
    let plan = baton_ok(&h, &["deploy", &only_hourly, "--prune", "--dry-run"]).await;
    assert!(plan.contains("- remove job step"), "{plan}");
    assert!(plan.contains("- remove workflow flow"), "{plan}");

    // undeploy: refused while a workflow runs the job, naming it
    let refused = baton_refused(&h, &["undeploy", "step"]).await;
    assert!(
        refused.contains("step 'only' of workflow 'flow' runs it"),
        "{refused}"
    );
    let gone = baton_ok(&h, &["undeploy", "flow", "step"]).await;
    assert!(
        gone.contains("- remove workflow flow") && gone.contains("- remove job step"),
        "{gone}"
    );
    let list = baton_ok(&h, &["job", "list"]).await;
    assert!(!list.contains("flow") && !list.contains("step"), "{list}");
    let refused = baton_refused(&h, &["submit", "step"]).await;
    assert!(
        refused.contains("no job or workflow named 'step'"),
        "{refused}"
    );
    let again = baton_refused(&h, &["undeploy", "step"]).await;
    assert!(again.contains("no job or workflow of this name"), "{again}");
    let cluster = baton_refused(&h, &["undeploy", "all"]).await;
    assert!(cluster.contains("'all' is a cluster"), "{cluster}");
}

/// Two jobs firing every second: `tick` skips the slots missed while
/// paused, `catchup` fires them all on resume.
const TICK: &str = r#"
[[job]]
name = "tick"
program = "true"
misfire = { policy = "skip" }
[[job.triggers]]
kind = "interval"
every = "1s"

[[job]]
name = "catchup"
program = "true"
misfire = { policy = "fire-all", max = 100 }
[[job.triggers]]
kind = "interval"
every = "1s"
"#;

/// The orders of `job` the broker holds.
async fn ticks(h: &Harness, job: &str) -> Vec<OrderSummary> {
    let ask = ListOrders {
        job: Some(job.into()),
        limit: Some(1000),
        ..ListOrders::default()
    };
    let list: Result<OrderList, _> = h
        .bus
        .request(h.bus.subjects().order_list(), &ask, REQUEST)
        .await;
    list.map(|l| l.orders).unwrap_or_default()
}

/// The slots after `after_ms` that fired orders of `job`.
async fn fired_after(h: &Harness, job: &str, after_ms: u64) -> Vec<u64> {
    let orders = ticks(h, job).await;
    let slots = orders.iter().filter_map(|o| o.slot_ms);
    slots.filter(|&s| s > after_ms).collect()
}

/// Whether neither job fired a slot after `after_ms`.
async fn none_fired(h: &Harness, after_ms: u64) -> bool {
    fired_after(h, "tick", after_ms).await.is_empty()
        && fired_after(h, "catchup", after_ms).await.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_does_not_fire_under_any_broker_until_resumed() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn b2");
    h.cluster.spawn_agent("a1", &[]).expect("spawn agent");
    let file = write(&h, "tick.toml", TICK);
    baton_ok(&h, &["deploy", &file]).await;
    wait_until(LONG, "tick fires", || async {
        fired_after(&h, "tick", 0).await.len() >= 2
    })
    .await;

    let paused = baton_ok(&h, &["job", "pause", "tick"]).await;
    assert!(paused.contains("job tick paused by"), "{paused}");
    assert!(paused.contains("manual submits still run"), "{paused}");
    baton_ok(&h, &["job", "pause", "catchup"]).await;
    let paused_at = baton::time::now_ms();
    holds_throughout(Duration::from_secs(3), "no slot fires while paused", || {
        none_fired(&h, paused_at)
    })
    .await;

    // the active broker dies; the next one keeps the pause
    h.cluster
        .signal("broker", Signal::SIGKILL)
        .expect("kill the active broker");
    wait_until(LONG, "b2 answers", || async {
        let ask = StatusRequest::default();
        let status = h
            .bus
            .request::<_, StatusReply>(h.bus.subjects().status(), &ask, REQUEST);
        status.await.is_ok_and(|s| s.broker_id == "b2")
    })
    .await;
    holds_throughout(Duration::from_secs(3), "no slot fires under b2", || {
        none_fired(&h, paused_at)
    })
    .await;
    let show = baton_ok(&h, &["job", "show", "tick"]).await;
    assert!(show.contains("state: paused by"), "{show}");
    let skipped = show
        .lines()
        .find_map(|l| l.strip_prefix("skipped slots since the pause: "))
        .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .expect("skipped slots");
    assert!(skipped >= 5, "{show}");
    let list = baton_ok(&h, &["job", "list"]).await;
    assert!(list.contains("- (paused)"), "{list}");
    let status = baton_ok(&h, &["status"]).await;
    assert!(
        status.contains("paused: tick (its triggers do not fire), by "),
        "{status}"
    );

    // manual submits still run; with --all they are refused
    let manual = submit(&h.bus, "tick", &[]).await;
    assert!(!manual.is_empty());
    let again = baton_ok(&h, &["job", "pause", "tick", "--all"]).await;
    // a change (manual submits refused now), said as one, not "already paused"
    assert!(
        again.contains("job tick paused by") && again.contains("manual submits are refused too"),
        "{again}"
    );
    let show = baton_ok(&h, &["job", "show", "tick"]).await;
    assert!(show.contains("state: paused by"), "{show}");
    let still_skipped = show
        .lines()
        .find_map(|l| l.strip_prefix("skipped slots since the pause: "))
        .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .expect("skipped slots");
    assert!(still_skipped >= skipped, "the first pause counts: {show}");
    let refused = baton_refused(&h, &["submit", "tick"]).await;
    assert!(refused.contains("tick is paused with --all"), "{refused}");
    assert!(refused.contains("baton job resume tick"), "{refused}");

    // resumed: they fire again; the misfire policy decides about the
    // slots skipped: `skip` leaves them, `fire-all` fires each one
    let resumed = baton_ok(&h, &["job", "resume", "tick"]).await;
    assert!(resumed.contains("job tick resumed by"), "{resumed}");
    baton_ok(&h, &["job", "resume", "catchup"]).await;
    let resumed_at = baton::time::now_ms();
    wait_until(LONG, "tick fires again", || async {
        !fired_after(&h, "tick", resumed_at).await.is_empty()
    })
    .await;
    let window = |slots: Vec<u64>| -> Vec<u64> {
        let during = slots.into_iter().filter(|&s| s + 1_500 < resumed_at);
        during.collect()
    };
    let skipped = window(fired_after(&h, "tick", paused_at + 1_500).await);
    assert!(skipped.is_empty(), "slots of the pause fired: {skipped:?}");
    let caught_up = wait_for(LONG, "catchup fires the slots of the pause", || async {
        let slots = window(fired_after(&h, "catchup", paused_at + 1_500).await);
        (slots.len() >= 5).then_some(slots)
    })
    .await;
    let mut unique = caught_up.clone();
    unique.dedup();
    assert_eq!(unique, caught_up, "each slot once");
}

/// Orders of `job` per slot.
async fn orders_per_slot(h: &Harness, job: &str) -> std::collections::BTreeMap<u64, usize> {
    let mut per_slot = std::collections::BTreeMap::new();
    for slot in fired_after(h, job, 0).await {
        *per_slot.entry(slot).or_insert(0) += 1;
    }
    per_slot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_over_fired_slots_fires_each_slot_once_however_often_run() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    h.cluster.spawn_agent("a1", &[]).expect("spawn agent");
    let file = write(&h, "tick.toml", TICK);
    baton_ok(&h, &["deploy", &file]).await;
    // the Scheduler fires a few slots, then the window reaches back before them
    wait_until(LONG, "tick fires", || async {
        fired_after(&h, "tick", 0).await.len() >= 3
    })
    .await;
    let dry = baton_ok(
        &h,
        &["job", "backfill", "tick", "--from", "12s", "--dry-run"],
    )
    .await;
    assert!(dry.contains("nothing submitted (dry run)"), "{dry}");
    let out = baton_ok(&h, &["job", "backfill", "tick", "--from", "20s"]).await;
    assert!(out.contains("already fired: order"), "{out}");
    assert!(out.contains("submitted: order"), "{out}");
    let again = baton_ok(
        &h,
        &["job", "backfill", "tick", "--from", "20s", "--to", "3s"],
    )
    .await;
    // a window inside the first one: everything fired before
    assert!(again.contains(": 0 submitted"), "{again}");
    assert!(again.contains(", 0 refused"), "{again}");
    assert!(!again.contains("submitted: order"), "{again}");
    let per_slot = orders_per_slot(&h, "tick").await;
    assert!(per_slot.len() >= 12, "{per_slot:?}");
    let twice: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "slots with two orders: {twice:?}");
    let refused = baton_refused(
        &h,
        &[
            "job",
            "backfill",
            "tick",
            "--from",
            "1s",
            "--to",
            "2026-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(refused.contains("--from is after --to"), "{refused}");
}
