//! `baton bench failover-scheduler`: agents beside a broker and two
//! subagents, and a job whose cron trigger fires every second (misfire
//! `fire-all`), its task appending `$BATON_SLOT_MS` to a file. Each round
//! SIGKILLs the Scheduler agent half-way between two slots and measures from
//! the kill to (a) the broker declaring it lost, (b) the broker announcing
//! another agent as Scheduler and (c) the first order accepted after the
//! kill (the new Scheduler fires the missed slots first, so this is its
//! first fire); then restarts the killed agent under its id. At the end
//! the file says whether any slot ran twice or never.
//!
//! With `--with-broker` two brokers run, and each round SIGKILLs the active
//! broker together with the Scheduler: the standby takes over and must
//! elect a new Scheduler without knowing the dead one from its heartbeats.
//! The killed broker starts again as a standby. `--misfire fire-once`
//! shows the slots a gap costs a job that does not catch up.
//!
//! Times are the broker's `at_ms` on its events against the wall clock at
//! the kill (one host, one clock). Killing half-way between slots means the
//! old Scheduler's last fire was answered long before the kill, so no order
//! accepted after it can be the old Scheduler's.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use nix::sys::signal::Signal;
use serde::Serialize;

use super::slots::{check_slots, parse_slots};
use super::watch::{current_scheduler, Ready, Seen, Watch};
use super::{spawn_agent, Settings};
use crate::bench::client::{deploy_jobs, request_deploy, sh_job};
use crate::bench::report::{Latency, SpreadTable};
use crate::bench::setup::{spawn_broker, CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::schedule::{DEFAULT_FIRE_ALL_MAX, DEFAULT_MISFIRE_WINDOW};
use crate::protocol::*;
use crate::time::now_ms;
use crate::time::parse_duration;

pub(super) const JOB: &str = "bench-tick";
/// The trigger fires on every whole second.
const EVERY_MS: u64 = 1000;
/// How far into a second the Scheduler is killed.
const KILL_PHASE_MS: u64 = 500;
/// Subagents that run the ticks.
const SUBAGENTS: usize = 2;
/// The brokers: the first alone, or both with `--with-broker`.
const BROKERS: [&str; 2] = ["broker-1", "broker-2"];
/// Longest wait for each step of a round: a single Scheduler, its
/// replacement and first fire, the killed agent's return.
pub(super) const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// Slots this recent at the end are not judged: they may still be running.
const UNJUDGED_TAIL_MS: u64 = 2000;
/// Longest wait at the end for the judged slots to have run.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// `$1` is the file; no `{{`, so the broker substitutes nothing.
const TASK_SCRIPT: &str = r#"echo "$BATON_SLOT_MS" >> "$1""#;

#[derive(Debug, Args)]
pub struct FailoverSchedulerArgs {
    /// Schedulers killed
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Agents kept running (at least 2)
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// How long to let the cluster run after the killed agent is back
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub settle: Duration,
    /// Start no new round after this long
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    /// Run a standby broker, and kill the active broker with the Scheduler
    #[arg(long)]
    pub with_broker: bool,
    /// The job's misfire policy: what the new Scheduler fires of the slots
    /// missed while there was none
    #[arg(long, value_enum, default_value_t = Misfire::FireAll)]
    pub misfire: Misfire,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The misfire policies the bench's job can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Misfire {
    /// Every missed slot (at most 100)
    FireAll,
    /// The latest missed slot only
    FireOnce,
    /// No missed slot
    Skip,
}

impl Misfire {
    fn policy(self) -> MisfirePolicy {
        match self {
            Misfire::FireAll => MisfirePolicy::FireAll {
                max: DEFAULT_FIRE_ALL_MAX,
                max_lateness: None,
            },
            Misfire::FireOnce => MisfirePolicy::FireOnce {
                window: DEFAULT_MISFIRE_WINDOW,
            },
            Misfire::Skip => MisfirePolicy::Skip,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Misfire::FireAll => "fire-all",
            Misfire::FireOnce => "fire-once",
            Misfire::Skip => "skip",
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Report {
    scenario: &'static str,
    /// Each round killed the active broker too (a standby ran).
    with_broker: bool,
    misfire: &'static str,
    agents: usize,
    subagents: usize,
    settings: Option<Settings>,
    /// Schedulers killed.
    rounds: usize,
    /// Kill to the broker's announcement that the killed agent is gone.
    lost_declared: Latency,
    lost_declared_rounds: usize,
    /// Kill to the broker announcing another agent as Scheduler.
    new_scheduler: Latency,
    new_scheduler_rounds: usize,
    /// Kill to the first order accepted after it.
    first_fire: Latency,
    first_fire_rounds: usize,
    /// The Scheduler role moved with no kill behind it.
    unprompted_moves: usize,
    first_slot_ms: Option<u64>,
    last_slot_ms: Option<u64>,
    slots_checked: usize,
    /// Slots executed more than once.
    double_fires: usize,
    /// Slots between the first and the last checked never executed.
    missed_slots: usize,
    double_fire_slots: Vec<u64>,
    missed_slot_list: Vec<u64>,
    orders_accepted: usize,
    /// Slots with more than one accepted order.
    double_orders: usize,
    elapsed_s: f64,
}

pub(in crate::bench) async fn failover_scheduler(
    args: FailoverSchedulerArgs,
) -> anyhow::Result<()> {
    if args.agents < 2 {
        bail!("--agents must be at least 2: a killed Scheduler needs a successor");
    }
    let settings = Settings::load()?;
    let with_broker = if args.with_broker {
        "; the active broker killed with it (a standby runs)"
    } else {
        ""
    };
    args.common.progress(format_args!(
        "baton bench failover-scheduler: {} rounds, {} agents{with_broker}; misfire {}; {}",
        args.rounds,
        args.agents,
        args.misfire.as_str(),
        settings.describe()
    ));
    let setup = Setup {
        brokers: if args.with_broker {
            &BROKERS
        } else {
            &BROKERS[..1]
        },
        ..Setup::subagents(SUBAGENTS, 4)
    };
    let mut bench = LocalBench::start(setup, &args.common).await?;
    let slots_file = bench.evidence("slots", None);
    let run = run(&mut bench.cluster, &bench.bus, &args, &slots_file, settings).await;
    let stamp = |r: &mut Report, s| r.elapsed_s = s;
    bench.finish(run, &args.common, stamp, print_table)
}

async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    args: &FailoverSchedulerArgs,
    slots_file: &Path,
    settings: Settings,
) -> anyhow::Result<Report> {
    let stop_at = tokio::time::Instant::now() + args.timeout;
    let agents: Vec<String> = (1..=args.agents).map(|i| format!("agent-{i}")).collect();
    let standbys: Vec<String> = match args.with_broker {
        true => BROKERS.iter().map(|b| b.to_string()).collect(),
        false => Vec::new(),
    };
    for id in &agents {
        spawn_agent(cluster, id)?;
    }
    // listen before the first order exists
    let mut watch = Watch::start(bus).await?;
    deploy(bus, slots_file, args.misfire.policy()).await?;
    let first = current_scheduler(&mut watch, bus, &agents, &standbys).await?;
    watch.scheduler = Some(first.scheduler);
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    while watch.orders.is_empty() {
        if watch.step(deadline).await.is_none() {
            bail!("the job did not fire within {ROUND_LIMIT:?} of a Scheduler being elected");
        }
    }

    let mut report = Report {
        scenario: "failover-scheduler",
        with_broker: args.with_broker,
        misfire: args.misfire.as_str(),
        agents: args.agents,
        subagents: SUBAGENTS,
        settings: Some(settings),
        ..Report::default()
    };
    let (mut lost, mut new, mut fire) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if tokio::time::Instant::now() >= stop_at {
            eprintln!("timed out after {:?}: {round} rounds", args.timeout);
            break;
        }
        let Ready { scheduler, broker } =
            current_scheduler(&mut watch, bus, &agents, &standbys).await?;
        watch.scheduler = Some(scheduler.clone());
        let broker = args.with_broker.then_some(broker);
        let into = now_ms() % EVERY_MS;
        let wait = (KILL_PHASE_MS + EVERY_MS - into) % EVERY_MS;
        watch
            .idle(tokio::time::Instant::now() + Duration::from_millis(wait))
            .await;
        let kill = kill_and_watch(&mut watch, cluster, &scheduler, broker.as_deref()).await?;
        report.rounds += 1;
        lost.extend(kill.lost_ms);
        new.extend(kill.new_ms);
        fire.extend(kill.fire_ms);
        if let Some(broker) = &broker {
            // back as a standby; the next round waits until it is heard
            spawn_broker(cluster, broker)?;
        }
        restart(&mut watch, cluster, &scheduler).await?;
        watch.idle(tokio::time::Instant::now() + args.settle).await;
    }

    // every slot up to a little before now must have run exactly once
    let until_ms = now_ms().saturating_sub(UNJUDGED_TAIL_MS);
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    let check = loop {
        let text = std::fs::read_to_string(slots_file).unwrap_or_default();
        let check = check_slots(&parse_slots(&text), EVERY_MS, until_ms);
        if check.missed.is_empty() || tokio::time::Instant::now() >= deadline {
            break check;
        }
        watch
            .idle(tokio::time::Instant::now() + Duration::from_millis(200))
            .await;
    };

    report.lost_declared_rounds = lost.len();
    report.lost_declared = Latency::of(&mut lost);
    report.new_scheduler_rounds = new.len();
    report.new_scheduler = Latency::of(&mut new);
    report.first_fire_rounds = fire.len();
    report.first_fire = Latency::of(&mut fire);
    report.unprompted_moves = watch.unprompted_moves;
    report.first_slot_ms = check.first_ms;
    report.last_slot_ms = check.last_ms;
    report.slots_checked = check.checked;
    report.double_fires = check.doubles.len();
    report.missed_slots = check.missed.len();
    report.double_fire_slots = check.doubles;
    report.missed_slot_list = check.missed;
    report.orders_accepted = watch.orders.values().sum();
    report.double_orders = watch.orders.values().filter(|&&n| n > 1).count();
    Ok(report)
}

/// Deploys [`JOB`]: every second, with `misfire`, appending its slot to `file`.
async fn deploy(bus: &Bus, file: &Path, misfire: MisfirePolicy) -> anyhow::Result<()> {
    let job = JobSpec {
        description: Some("appends its slot to a file, every second".into()),
        triggers: vec![TriggerSpec::Cron {
            expr: "* * * * * *".into(),
            time_zone: None,
            dst: Default::default(),
            calendar: None,
            jitter: None,
        }],
        misfire,
        concurrency: ConcurrencyPolicy::Allow,
        ..sh_job(
            JOB,
            TASK_SCRIPT,
            "baton-bench-tick",
            vec![file.display().to_string()],
        )
    };
    request_deploy(bus, &deploy_jobs(vec![job])).await
}

/// What one kill measured, in ms from the kill.
struct Kill {
    lost_ms: Option<f64>,
    new_ms: Option<f64>,
    fire_ms: Option<f64>,
}

/// SIGKILLs `victim` (and `broker`, the active one, first) and follows
/// events until another agent is announced Scheduler and an order is
/// accepted (or [`ROUND_LIMIT`] passes).
async fn kill_and_watch(
    watch: &mut Watch,
    cluster: &mut LocalCluster,
    victim: &str,
    broker: Option<&str>,
) -> anyhow::Result<Kill> {
    let killed_at = now_ms();
    watch.expecting_move = true;
    if let Some(broker) = broker {
        cluster.signal(broker, Signal::SIGKILL)?;
    }
    cluster.signal(victim, Signal::SIGKILL)?;
    let since = |at_ms: u64| at_ms.saturating_sub(killed_at) as f64;
    let mut kill = Kill {
        lost_ms: None,
        new_ms: None,
        fire_ms: None,
    };
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    while kill.new_ms.is_none() || kill.fire_ms.is_none() {
        let Some(seen) = watch.step(deadline).await else {
            break;
        };
        match seen {
            Seen::Changed(c) if c.at_ms >= killed_at => {
                if c.agent_id == victim && c.role == AgentRole::Spare && kill.lost_ms.is_none() {
                    kill.lost_ms = Some(since(c.at_ms));
                }
                if c.agent_id != victim && c.role == AgentRole::Scheduler && kill.new_ms.is_none() {
                    kill.new_ms = Some(since(c.at_ms));
                }
            }
            Seen::Accepted(a) if a.at_ms > killed_at && kill.fire_ms.is_none() => {
                kill.fire_ms = Some(since(a.at_ms));
            }
            _ => {}
        }
    }
    watch.expecting_move = false;
    if kill.new_ms.is_none() {
        eprintln!("no new Scheduler announced within {ROUND_LIMIT:?} of killing {victim}");
    }
    if kill.fire_ms.is_none() {
        eprintln!("no order accepted within {ROUND_LIMIT:?} of killing {victim}");
    }
    Ok(kill)
}

/// Starts `victim` again under its id and waits until the broker has it back.
async fn restart(
    watch: &mut Watch,
    cluster: &mut LocalCluster,
    victim: &str,
) -> anyhow::Result<()> {
    let restarted_at = now_ms();
    spawn_agent(cluster, victim)?;
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        match watch.step(deadline).await {
            Some(Seen::Changed(c)) if c.agent_id == victim && c.at_ms >= restarted_at => {
                return Ok(())
            }
            Some(_) => {}
            None => bail!("{victim} did not join again within {ROUND_LIMIT:?} of its restart"),
        }
    }
}

fn print_table(r: &Report) {
    println!("baton bench failover-scheduler");
    println!(
        "  cluster           {} agents, {} subagents; one cron job firing every second (misfire {})",
        r.agents, r.subagents, r.misfire
    );
    if r.with_broker {
        println!("  each round        kills the active broker and the Scheduler together (a standby runs)");
    }
    if let Some(s) = &r.settings {
        println!("  settings          {}", s.describe());
    }
    println!("  target            kill to new Scheduler p50 under 2000 ms, kill to first fire p50 under 2000 ms; double fires 0, missed slots 0");
    println!("  elapsed           {:.1} s", r.elapsed_s);
    let table = SpreadTable {
        label: 26,
        count: 10,
    };
    table.print_kills(
        r.rounds,
        &[
            ("lost declared", &r.lost_declared, r.lost_declared_rounds),
            (
                "new Scheduler announced",
                &r.new_scheduler,
                r.new_scheduler_rounds,
            ),
            ("first fire (accepted)", &r.first_fire, r.first_fire_rounds),
        ],
    );
    println!();
    let span = match (r.first_slot_ms, r.last_slot_ms) {
        (Some(a), Some(b)) => format!(" ({} s of slots)", (b - a) / 1000 + 1),
        _ => String::new(),
    };
    println!("  slots checked     {}{span}", r.slots_checked);
    println!(
        "  double fires      {} {:?}",
        r.double_fires, r.double_fire_slots
    );
    println!(
        "  missed slots      {} {:?}",
        r.missed_slots, r.missed_slot_list
    );
    println!(
        "  orders accepted   {} ({} slots with more than one)",
        r.orders_accepted, r.double_orders
    );
    println!("  unprompted moves  {}", r.unprompted_moves);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_script_has_no_placeholders() {
        assert!(!TASK_SCRIPT.contains("{{"));
    }
}
