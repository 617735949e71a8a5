//! `baton bench schedules`: one agent, a broker and no subagent (the orders
//! only queue: running them is not what is measured). Deploys `--count` jobs,
//! each with one interval trigger, waits until the agent is Scheduler and
//! holds them all, then for `--seconds` takes every accepted order and
//! measures its lateness, the broker's `at_ms` minus the slot.
//!
//! The load is set by the overall fire rate, not by the count: every job
//! fires every `count / rate` seconds (at least [`MIN_PERIOD_MS`]), and job
//! `i` starts `i / count` of a period after a fixed anchor, so the slots of
//! all jobs fall evenly, `rate` per second (100 by default: at 10,000 jobs
//! each fires every 100 s, at 100,000 every 1,000 s). The misfire policy is
//! `fire-all`, so a Scheduler that falls behind still fires every slot and
//! its lateness shows rather than being skipped.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt as _;
use serde::Serialize;

use super::slots::{period_for_rate, spread_start};
use super::{spawn_agent, Settings};
use crate::bench::client::{bench_job, deploy_jobs};
use crate::bench::report::{mib, print_spread, Latency};
use crate::bench::setup::{CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;
use crate::time::parse_duration;

const AGENT: &str = "agent-1";
/// The shortest period a job fires at, whatever the rate.
const MIN_PERIOD_MS: u64 = 10_000;
/// Every job's interval counts from here (2024-01-01T00:00:00Z) plus its share.
const ANCHOR_MS: u64 = 1_704_067_200_000;
/// Longest wait for one deploy request.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the window fires of its slots are still taken.
const LATE_GRACE: Duration = Duration::from_secs(5);
/// How often progress is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Jobs deployed, one interval trigger each
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub count: usize,
    /// How long to measure, once the Scheduler holds every schedule
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Fires per second of all jobs together; sets each job's period
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Jobs per deploy request (each request stays under NATS's 1 MB)
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Longest wait, after the deploy, for the Scheduler to hold every schedule
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub hold_timeout: Duration,
    /// Spread each fire up to this long after its slot (lateness is still
    /// counted from the jittered fire)
    #[arg(long, value_parser = parse_duration)]
    pub jitter: Option<Duration>,
    /// Cron triggers on a business calendar (Europe/Berlin, 40 days off,
    /// slots on days off moved to the next working day) in place of
    /// intervals: each job fires once a minute, so --rate is count/60
    #[arg(long)]
    pub calendar: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    schedules: usize,
    /// Each job's period.
    every_ms: u64,
    /// Cron triggers on a business calendar, or intervals.
    calendar: bool,
    /// Each fire's spread after its slot, in ms.
    jitter_ms: Option<u64>,
    /// Fires per second of all jobs together.
    fires_per_s: f64,
    settings: Settings,
    /// The deploy requests, from the first sent to the last answered.
    deploy_s: f64,
    /// From the first deploy request to the agent reporting, as Scheduler,
    /// every schedule held.
    all_held_s: f64,
    window_s: u64,
    /// Slots in the window, of all jobs.
    expected_fires: u64,
    /// Orders accepted for slots in the window.
    fires: usize,
    /// Slots in the window with no order accepted within the grace after it.
    missing_fires: u64,
    /// Fires later than the lateness tolerance.
    fires_over_tolerance: usize,
    /// Accepted minus slot.
    lateness: Latency,
    agent_peak_rss_kib: Option<u64>,
    broker_peak_rss_kib: Option<u64>,
    elapsed_s: f64,
}

pub(in crate::bench) async fn schedules(args: SchedulesArgs) -> anyhow::Result<()> {
    if args.count == 0 || args.batch == 0 || args.seconds == 0 {
        bail!("--count, --batch and --seconds must be at least 1");
    }
    let settings = Settings::load()?;
    args.common.progress(format_args!(
        "baton bench schedules: {} jobs, about {} fires/s, {} s; {}",
        args.count,
        args.rate,
        args.seconds,
        settings.describe()
    ));
    let mut bench = LocalBench::start(Setup::subagents(0, 1), &args.common).await?;
    let run = run(&mut bench.cluster, &bench.bus, &args, settings).await;
    let stamp = |r: &mut Report, s| r.elapsed_s = s;
    bench.finish(run, &args.common, stamp, print_table)
}

async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    args: &SchedulesArgs,
    settings: Settings,
) -> anyhow::Result<Report> {
    let s = bus.subjects().clone();
    let count = args.count;
    let every_ms = if args.calendar {
        60_000
    } else {
        period_for_rate(count, args.rate, MIN_PERIOD_MS)
    };
    let shape = Shape {
        every_ms,
        jitter: args.jitter,
        calendar: args.calendar.then(bench_calendar),
    };
    spawn_agent(cluster, AGENT)?;
    let mut beats = bus
        .listen::<AgentHeartbeat>(s.agent_heartbeat(AGENT))
        .await?;

    let deploy_started = Instant::now();
    let batches = count.div_ceil(args.batch);
    for b in 0..batches {
        let jobs = (b * args.batch..((b + 1) * args.batch).min(count))
            .map(|i| job(i, count, &shape))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let _: DeployReply = bus
            .request(s.deploy(), &deploy_jobs(jobs), DEPLOY_TIMEOUT)
            .await
            .with_context(|| format!("deploy request {} of {batches}", b + 1))?;
        if (b + 1) % 10 == 0 || b + 1 == batches {
            eprintln!(
                "deployed {} of {count} jobs in {:.1} s",
                ((b + 1) * args.batch).min(count),
                deploy_started.elapsed().as_secs_f64()
            );
        }
    }
    let deploy_s = deploy_started.elapsed().as_secs_f64();

    let deadline = tokio::time::Instant::now() + args.hold_timeout;
    let mut progress_at = Instant::now() + PROGRESS_EVERY;
    let mut last: Option<AgentHeartbeat> = None;
    loop {
        let beat = tokio::select! {
            beat = beats.next() => beat.context("the agent's heartbeats ended")?.body,
            _ = tokio::time::sleep_until(deadline) => {
                let seen = last.map_or("no heartbeat".to_string(), |hb| {
                    format!("last heartbeat: {}, {} schedules", hb.role.as_str(), hb.schedules)
                });
                bail!(
                    "{AGENT} did not hold {count} schedules within {} s of the deploy ({seen})",
                    args.hold_timeout.as_secs()
                );
            }
        };
        if beat.role == AgentRole::Scheduler && beat.schedules as usize == count {
            break;
        }
        if Instant::now() >= progress_at {
            progress_at = Instant::now() + PROGRESS_EVERY;
            eprintln!(
                "{AGENT}: {}, {} of {count} schedules, {:.0} s since the deploy started",
                beat.role.as_str(),
                beat.schedules,
                deploy_started.elapsed().as_secs_f64()
            );
        }
        last = Some(beat);
    }
    let all_held_s = deploy_started.elapsed().as_secs_f64();
    drop(beats);
    eprintln!(
        "{AGENT} holds all {count} schedules after {all_held_s:.1} s; measuring for {} s",
        args.seconds
    );

    let mut accepted = bus
        .listen::<OrderAccepted>(s.event("*", "*", EventKind::Accepted))
        .await?;
    bus.flush().await?;
    // slots from here on: the subscription is in place before they are due
    let from_ms = now_ms() + 100;
    let to_ms = from_ms + args.seconds * 1000;
    let stop = tokio::time::Instant::now()
        + Duration::from_millis(to_ms.saturating_sub(now_ms()))
        + LATE_GRACE;
    let mut accepted_slots = Vec::new();
    loop {
        let event = tokio::select! {
            event = accepted.next() => event.context("the event subscription ended")?.body,
            _ = tokio::time::sleep_until(stop) => break,
        };
        if let Some(slot) = event.slot_ms.filter(|s| (from_ms..to_ms).contains(s)) {
            accepted_slots.push((event.job, slot, event.at_ms));
        }
    }
    // late from the fire, not the slot: a jittered slot fires after it on purpose
    let mut lateness = Vec::with_capacity(accepted_slots.len());
    let index = |name: &str| name.strip_prefix('s').and_then(|n| n.parse::<usize>().ok());
    for (name, slot, at_ms) in accepted_slots {
        let fire = match (shape.jitter, index(&name)) {
            (Some(_), Some(i)) => {
                let spec = job(i, count, &shape)?;
                let trigger = crate::triggers::Trigger::compile_all(&spec.triggers, &spec.name)?;
                trigger.next_after(slot.saturating_sub(1)).unwrap_or(slot)
            }
            _ => slot,
        };
        lateness.push(at_ms.saturating_sub(fire) as f64);
    }
    let expected_fires: u64 = (0..count)
        .map(|i| slots_in_window(&job(i, count, &shape)?, from_ms, to_ms))
        .sum::<anyhow::Result<u64>>()?;
    let fires = lateness.len();
    let tolerance = settings.lateness_tolerance_ms as f64;
    Ok(Report {
        scenario: "schedules",
        schedules: count,
        every_ms,
        calendar: args.calendar,
        jitter_ms: args.jitter.map(|j| j.as_millis() as u64),
        fires_per_s: count as f64 * 1000.0 / every_ms as f64,
        deploy_s,
        all_held_s,
        window_s: args.seconds,
        expected_fires,
        fires,
        missing_fires: expected_fires.saturating_sub(fires as u64),
        fires_over_tolerance: lateness.iter().filter(|&&l| l > tolerance).count(),
        lateness: Latency::of(&mut lateness),
        agent_peak_rss_kib: cluster.pid(AGENT).and_then(LocalCluster::peak_memory_kib),
        broker_peak_rss_kib: cluster
            .pid("broker")
            .and_then(LocalCluster::peak_memory_kib),
        settings,
        elapsed_s: 0.0,
    })
}

/// What every job's trigger looks like.
struct Shape {
    every_ms: u64,
    jitter: Option<Duration>,
    calendar: Option<CalendarUse>,
}

/// 40 days off, none of them near now, on every day of the week: each fire
/// looks its day up, and none is moved during the run.
fn bench_calendar() -> CalendarUse {
    let mut holidays: Vec<String> = (1..=12).map(|m| format!("{m:02}-28")).collect();
    holidays.extend((2000..2020).map(|y| format!("{y}-06-15")));
    holidays.extend(
        [
            "4th THU of NOV",
            "last MON of MAY",
            "2010-01-01..2010-12-31",
        ]
        .map(String::from),
    );
    holidays.extend((2090..2095).map(|y| format!("{y}-01-02")));
    CalendarUse {
        name: "bench".into(),
        on_holiday: OnHoliday::Next,
        days: CalendarSpec {
            weekdays: ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
                .map(String::from)
                .to_vec(),
            holidays,
            only: None,
        },
    }
}

/// The slots of `job` in `[from_ms, to_ms)`.
fn slots_in_window(job: &JobSpec, from_ms: u64, to_ms: u64) -> anyhow::Result<u64> {
    // slots, as the orders carry them, not jittered fires
    let trigger = crate::triggers::Trigger::compile_all(&job.triggers, &job.name)?.slots_only();
    Ok(trigger
        .slots_between(from_ms.saturating_sub(1), to_ms - 1, 100_000)
        .len() as u64)
}

/// Job `i` of `count`: runs `true`, every period from its share of it.
fn job(i: usize, count: usize, shape: &Shape) -> anyhow::Result<JobSpec> {
    let every_ms = shape.every_ms;
    let start_ms = spread_start(ANCHOR_MS, every_ms, i, count);
    let start = DateTime::<Utc>::from_timestamp_millis(start_ms as i64)
        .context("a start time out of range")?;
    let trigger = match &shape.calendar {
        // once a minute, at the job's own second
        Some(calendar) => TriggerSpec::Cron {
            expr: format!("{} * * * * *", (start_ms / 1000) % 60),
            time_zone: Some("Europe/Berlin".into()),
            dst: DstRule::default(),
            calendar: Some(calendar.clone()),
            jitter: shape.jitter,
        },
        None => TriggerSpec::Interval {
            every: Duration::from_millis(every_ms),
            start: Some(start),
            jitter: shape.jitter,
        },
    };
    Ok(JobSpec {
        triggers: vec![trigger],
        misfire: MisfirePolicy::FireAll {
            max: 100,
            max_lateness: None,
        },
        concurrency: ConcurrencyPolicy::Allow,
        ..bench_job(&format!("s{i:06}"), "true", vec![])
    })
}

fn print_table(r: &Report) {
    println!("baton bench schedules");
    let kind = if r.calendar {
        "cron triggers on a calendar"
    } else {
        "interval triggers"
    };
    println!(
        "  schedules         {} {kind}, each every {} s, {:.0} fires/s together",
        r.schedules,
        r.every_ms as f64 / 1000.0,
        r.fires_per_s
    );
    if let Some(jitter) = r.jitter_ms {
        println!("  jitter            up to {jitter} ms after each slot");
    }
    println!("  settings          {}", r.settings.describe());
    println!("  target            lateness p99 under 100 ms at 10,000 schedules");
    println!("  deploy            {:.1} s", r.deploy_s);
    println!(
        "  all held after    {:.1} s from the first deploy request",
        r.all_held_s
    );
    println!(
        "  fires             {} in {} s ({} expected, {} missing, {} over the tolerance)",
        r.fires, r.window_s, r.expected_fires, r.missing_fires, r.fires_over_tolerance
    );
    print_spread("lateness", &r.lateness, 0);
    println!("  agent peak RSS    {}", mib(r.agent_peak_rss_kib));
    println!("  broker peak RSS   {}", mib(r.broker_peak_rss_kib));
    println!("  elapsed           {:.1} s", r.elapsed_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_spread_over_the_period() {
        let shape = Shape {
            every_ms: 10_000,
            jitter: None,
            calendar: None,
        };
        let a = job(0, 4, &shape).unwrap();
        let b = job(3, 4, &shape).unwrap();
        assert_eq!(a.name, "s000000");
        let start = |j: &JobSpec| match &j.triggers[0] {
            TriggerSpec::Interval { start, .. } => start.unwrap().timestamp_millis() as u64,
            _ => unreachable!(),
        };
        assert_eq!(start(&a), ANCHOR_MS);
        assert_eq!(start(&b), ANCHOR_MS + 7_500);
        assert!(crate::jobs::validate_job(&a).is_ok());
        // one slot a second: a 10 s window holds 10
        let every = Shape {
            every_ms: 1_000,
            jitter: None,
            calendar: None,
        };
        let one = job(1, 4, &every).unwrap();
        let from = ANCHOR_MS + 100_000;
        assert_eq!(slots_in_window(&one, from, from + 10_000).unwrap(), 10);
        // on a calendar, with jitter: once a minute, at the job's own second
        let calendar = Shape {
            every_ms: 60_000,
            jitter: Some(Duration::from_secs(5)),
            calendar: Some(bench_calendar()),
        };
        let c = job(2, 4, &calendar).unwrap();
        crate::jobs::validate_job(&c).unwrap();
        assert_eq!(slots_in_window(&c, from, from + 600_000).unwrap(), 10);
    }
}
