//! `baton bench schedules`: one agent, a broker and `--subagents` (one by
//! default, running the fired `true`s: orders that only queued would make
//! every dispatch pass of the broker walk a queue that grows by the fire
//! rate). Deploys `--count` jobs,
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
//!
//! The deploy's rate is reported for its first and last tenth (a deploy's
//! cost must not grow with what is deployed), and memory per schedule as
//! the growth of each process's RSS from before the deploy to its peak.
//! `--kill` then SIGKILLs the Scheduler with a second agent waiting
//! (`window.rs`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::slots::{period_for_rate, spread_start};
use super::window::{self, Takeover, Window};
use super::{spawn_agent, Settings};
use crate::bench::client::{bench_job, deploy_jobs};
use crate::bench::report::{mib, print_spread};
use crate::bench::setup::{CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::parse_duration;

const AGENT: &str = "agent-1";
/// The shortest period a job fires at, whatever the rate.
const MIN_PERIOD_MS: u64 = 10_000;
/// Every job's interval counts from here (2024-01-01T00:00:00Z) plus its share.
const ANCHOR_MS: u64 = 1_704_067_200_000;
/// Longest wait for one deploy request.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries of one deploy request before the bench gives up.
const DEPLOY_TRIES: u32 = 10;
/// Between two tries of one deploy request.
const DEPLOY_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Task slots of each subagent running the fires.
const CAPACITY: u32 = 8;

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
    /// Subagents running the fired orders (0: they only queue)
    #[arg(long, default_value_t = 1)]
    pub subagents: usize,
    /// Then SIGKILL the Scheduler with a second agent waiting, and measure
    /// its takeover and a window after it
    #[arg(long)]
    pub kill: bool,
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
    subagents: usize,
    /// The deploy requests, from the first sent to the last answered.
    deploy_s: f64,
    /// Jobs deployed per second over the first and the last tenth of the
    /// deploy requests.
    deploy_first_jobs_per_s: f64,
    deploy_last_jobs_per_s: f64,
    /// Deploy requests sent again after no reply (a broker stepped down).
    deploy_retries: u32,
    /// From the first deploy request to the agent reporting, as Scheduler,
    /// every schedule held.
    all_held_s: f64,
    #[serde(flatten)]
    window: Window,
    agent_peak_rss_kib: Option<u64>,
    broker_peak_rss_kib: Option<u64>,
    /// Peak RSS minus RSS before the deploy, per schedule.
    agent_bytes_per_schedule: Option<u64>,
    broker_bytes_per_job: Option<u64>,
    /// With `--kill`: the second agent's takeover.
    takeover: Option<Takeover>,
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
    let setup = Setup::subagents(args.subagents, CAPACITY);
    let mut bench = LocalBench::start(setup, &args.common).await?;
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
    let rss = |cluster: &LocalCluster, name| cluster.pid(name).and_then(LocalCluster::memory_kib);
    let rss_before = (rss(cluster, AGENT), rss(cluster, "broker"));

    let deploy_started = Instant::now();
    let batches = count.div_ceil(args.batch);
    let tenth = batches.div_ceil(10);
    let (mut first_tenth_s, mut last_tenth_from) = (0.0, 0.0);
    let mut deploy_retries = 0;
    for b in 0..batches {
        if b == batches - tenth {
            last_tenth_from = deploy_started.elapsed().as_secs_f64();
        }
        let jobs = (b * args.batch..((b + 1) * args.batch).min(count))
            .map(|i| job(i, count, &shape))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let request = deploy_jobs(jobs);
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = bus.request::<_, DeployReply>(s.deploy(), &request, DEPLOY_TIMEOUT);
            match sent.await {
                Ok(_) => break,
                // a broker that stepped down drops requests: the same deploy
                // again is answered by the active one (an unchanged job is a no-op)
                Err(e) if tries < DEPLOY_TRIES => {
                    deploy_retries += 1;
                    eprintln!(
                        "deploy request {} of {batches}: {e}; sending it again",
                        b + 1
                    );
                    // "no responders" comes at once while no broker is active
                    tokio::time::sleep(DEPLOY_RETRY_DELAY).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("deploy request {} of {batches}", b + 1))
                }
            }
        }
        if b + 1 == tenth {
            first_tenth_s = deploy_started.elapsed().as_secs_f64();
        }
        if (b + 1) % 10 == 0 || b + 1 == batches {
            eprintln!(
                "deployed {} of {count} jobs in {:.1} s",
                ((b + 1) * args.batch).min(count),
                deploy_started.elapsed().as_secs_f64()
            );
        }
    }
    let deploy_s = deploy_started.elapsed().as_secs_f64();
    let tenth_jobs = (tenth * args.batch).min(count) as f64;
    let per_s = |jobs: f64, s: f64| if s > 0.0 { jobs / s } else { 0.0 };

    window::wait_held(&mut beats, AGENT, count, args.hold_timeout, |_| {}).await?;
    let all_held_s = deploy_started.elapsed().as_secs_f64();
    drop(beats);
    eprintln!(
        "{AGENT} holds all {count} schedules after {all_held_s:.1} s; measuring for {} s",
        args.seconds
    );
    let judged = Judged { count, shape };
    let tolerance = settings.lateness_tolerance_ms;
    let window = window::measure(bus, args.seconds, tolerance, &judged).await?;
    let peak = |name| cluster.pid(name).and_then(LocalCluster::peak_memory_kib);
    let (agent_peak, broker_peak) = (peak(AGENT), peak("broker"));
    if args.kill {
        // the takeover may fail: what was measured so far is said first
        let l = &window.lateness;
        eprintln!(
            "window: {} fires ({} expected, {} missing), lateness p50 {:.0} ms, p99 {:.0} ms, \
             max {:.0} ms; deploy {deploy_s:.1} s; peak RSS agent {}, broker {}; now the takeover",
            window.fires,
            window.expected_fires,
            window.missing_fires,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            mib(agent_peak),
            mib(broker_peak)
        );
    }
    let takeover = match args.kill {
        true => {
            let times = (args.seconds, args.hold_timeout, tolerance);
            Some(window::takeover(cluster, bus, AGENT, times, &judged).await?)
        }
        false => None,
    };
    let per_job = |peak: Option<u64>, before: Option<u64>| {
        Some(peak?.saturating_sub(before?) * 1024 / count as u64)
    };
    Ok(Report {
        scenario: "schedules",
        schedules: count,
        every_ms,
        calendar: args.calendar,
        jitter_ms: args.jitter.map(|j| j.as_millis() as u64),
        fires_per_s: count as f64 * 1000.0 / every_ms as f64,
        subagents: args.subagents,
        deploy_s,
        deploy_first_jobs_per_s: per_s(tenth_jobs, first_tenth_s),
        deploy_last_jobs_per_s: per_s(tenth_jobs, deploy_s - last_tenth_from),
        deploy_retries,
        all_held_s,
        window,
        agent_peak_rss_kib: agent_peak,
        broker_peak_rss_kib: broker_peak,
        agent_bytes_per_schedule: per_job(agent_peak, rss_before.0),
        broker_bytes_per_job: per_job(broker_peak, rss_before.1),
        takeover,
        settings,
        elapsed_s: 0.0,
    })
}

/// The bench's jobs, as the windows judge their fires.
struct Judged {
    count: usize,
    shape: Shape,
}

impl window::Slots for Judged {
    fn slots_in(&self, job_index: usize, from_ms: u64, to_ms: u64) -> anyhow::Result<u64> {
        slots_in_window(&job(job_index, self.count, &self.shape)?, from_ms, to_ms)
    }

    fn fire_of(&self, name: &str, slot: u64) -> anyhow::Result<u64> {
        let index = name.strip_prefix('s').and_then(|n| n.parse::<usize>().ok());
        Ok(match (self.shape.jitter, index) {
            (Some(_), Some(i)) => {
                let spec = job(i, self.count, &self.shape)?;
                let trigger = crate::triggers::Trigger::compile_all(&spec.triggers, &spec.name)?;
                trigger.next_after(slot.saturating_sub(1)).unwrap_or(slot)
            }
            _ => slot,
        })
    }

    fn count(&self) -> usize {
        self.count
    }
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
    println!("  subagents         {} (running the fires)", r.subagents);
    println!(
        "  deploy            {:.1} s ({:.0} jobs/s over the first tenth, {:.0} over the last; {} requests sent again)",
        r.deploy_s, r.deploy_first_jobs_per_s, r.deploy_last_jobs_per_s, r.deploy_retries
    );
    println!(
        "  all held after    {:.1} s from the first deploy request",
        r.all_held_s
    );
    print_window(&r.window);
    let bytes = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{b} bytes each"));
    println!(
        "  agent peak RSS    {} ({})",
        mib(r.agent_peak_rss_kib),
        bytes(r.agent_bytes_per_schedule)
    );
    println!(
        "  broker peak RSS   {} ({})",
        mib(r.broker_peak_rss_kib),
        bytes(r.broker_bytes_per_job)
    );
    if let Some(t) = &r.takeover {
        println!("  SIGKILL of the Scheduler, {} takes over:", window::SPARE);
        println!("    role moved      {:.1} s after the kill", t.role_moved_s);
        println!("    all held        {:.1} s after the kill", t.all_held_s);
        println!(
            "    gap             {} slots due until all held, {} never fired",
            t.gap_slots, t.gap_missing
        );
        print_window(&t.after);
        println!("    spare peak RSS  {}", mib(t.spare_peak_rss_kib));
    }
    println!("  elapsed           {:.1} s", r.elapsed_s);
}

fn print_window(w: &Window) {
    println!(
        "  fires             {} in {} s ({} expected, {} missing, {} over the tolerance)",
        w.fires, w.window_s, w.expected_fires, w.missing_fires, w.fires_over_tolerance
    );
    print_spread("lateness", &w.lateness, 0);
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
