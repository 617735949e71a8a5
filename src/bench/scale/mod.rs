//! `baton bench scale --subagents N`: N real subagent processes (each with
//! its reaper) against one broker, authentication on as in production.
//! They start in batches of `--batch`, each batch awaited until the broker
//! counts it available; then an idle window and a steady stream of orders,
//! each measured from /proc (the broker's and nats-server's CPU and
//! memory, the subagents' CPU and wakeups, their memory as RSS, PSS and
//! private, the machine's memory) and from the bus (heartbeats per second,
//! counted on the heartbeat subjects the broker listens to; dispatch
//! latency from the `accepted` and `started` events). Then it SIGKILLs
//! `--kills` busy subagents one at a time and times, from the kill, the
//! loss being declared and the task starting on another subagent. Any
//! subagent declared lost that was not killed is a false loss.
//!
//! Every process is stopped on the way out, on an error or Ctrl-C too:
//! the subagents all at once with SIGTERM (they drain, leave and let their
//! reapers go), then the broker and nats-server.

mod procs;
mod report;
mod stream;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use report::{Kills, ScaleReport, Window};
use stream::Stream;

use super::client::{bench_job, deploy_jobs, request_deploy};
use super::cpu::Times;
use super::report::Latency;
use super::setup::{children_config, ms, spawn_broker, subagent_ids, CommonArgs};
use crate::bus::Bus;
use crate::launch::{wait_for_status, LocalCluster, Logs, Security};
use crate::natsd::NatsServerOptions;
use crate::protocol::*;
use crate::time::now_ms;

/// The job every order runs.
const JOB: &str = "scale";
/// Longest wait for one batch of subagents to be available.
const BATCH_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for a killed subagent's loss and its task's rerun.
const KILL_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the last orders once the stream stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long the subagents may take to drain and leave at the end.
const STOP_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Subagent processes to start (each with its reaper)
    #[arg(long, default_value_t = 100, value_parser = crate::bench::at_least_one::<usize>)]
    pub subagents: usize,
    /// Seconds of the steady stream of orders
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Seconds of the idle window before it (no orders)
    #[arg(long, default_value_t = 10)]
    pub idle_seconds: u64,
    /// Orders kept in flight during the stream
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// How long each task sleeps, in milliseconds
    #[arg(long, default_value_t = 500)]
    pub task_ms: u64,
    /// Busy subagents killed with SIGKILL, one at a time, after the stream
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Subagents started at once before waiting for the broker to know them
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    if args.subagents == 0 || args.batch == 0 || args.seconds == 0 {
        bail!("--subagents, --batch and --seconds must be at least 1");
    }
    let started = Instant::now();
    let work = std::env::temp_dir().join(format!("baton-bench-scale-{}", std::process::id()));
    let result = match start_nats(&work, &args).await {
        Ok(mut cluster) => {
            let run = tokio::select! {
                run = measure(&mut cluster, &args) => run,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
            stop(&mut cluster, &args.common);
            drop(cluster);
            run
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&work);
    let mut report = result?;
    report.elapsed_s = started.elapsed().as_secs_f64();
    args.common.emit(&report, report::print_table)
}

/// Every subagent's identity first (the server learns them at its start,
/// no reloads), then nats-server.
async fn start_nats(work: &Path, args: &ScaleArgs) -> anyhow::Result<LocalCluster> {
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let logs = args
        .common
        .logs
        .clone()
        .unwrap_or_else(|| work.join("logs"));
    let ids = subagent_ids(args.subagents);
    crate::auth::AuthDir::init(&work.join("auth"), "bench", &ids)?;
    let nats = NatsServerOptions {
        port: None,
        store_dir: work.join("nats"),
        config_file: None,
        log_file: Some(work.join("nats-server.log")),
        ..Default::default()
    };
    let exe = std::env::current_exe()?;
    let security = Security::Auth(work.join("auth"));
    LocalCluster::start(nats, exe, "bench", Logs::Dir(logs), security).await
}

async fn measure(cluster: &mut LocalCluster, args: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    let common = &args.common;
    let config = children_config()?;
    spawn_broker(cluster, "broker")?;
    let bus = cluster.client().await?;
    wait_for_status(&bus, Duration::from_secs(30), "the broker", |_| true).await?;
    let startup = Instant::now();
    let ids = subagent_ids(args.subagents);
    for batch in ids.chunks(args.batch) {
        for id in batch {
            cluster.spawn_subagent(id, &["--capacity", "1"])?;
        }
        let n = cluster.procs().len() - 1;
        wait_for_status(&bus, BATCH_LIMIT, &format!("{n} subagents"), |s| {
            available(s) >= n
        })
        .await?;
        common.progress(format!("{n} subagents available"));
    }
    let startup_s = startup.elapsed().as_secs_f64();
    let secs = format!("{:.3}", args.task_ms as f64 / 1000.0);
    request_deploy(
        &bus,
        &deploy_jobs(vec![bench_job(JOB, "sleep", vec![secs])]),
    )
    .await?;
    let heartbeats = count_heartbeats(&bus).await?;
    let mut stream = Stream::start(&bus, JOB, args.in_flight).await?;
    let broker = cluster.pid("broker").context("the broker is not running")?;
    let nats = cluster.nats.pid();
    let subagent_pids: Vec<u32> = ids.iter().filter_map(|id| cluster.pid(id)).collect();

    common.progress(format!("idle for {} s", args.idle_seconds));
    let idle_memory = procs::subagent_memory(&subagent_pids);
    let probe = Probe::start(broker, nats, &subagent_pids, &heartbeats);
    let end = tokio::time::Instant::now() + Duration::from_secs(args.idle_seconds);
    stream.run_until(end).await;
    let idle = probe.finish(broker, nats, &heartbeats, 0);

    common.progress(format!("steady stream for {} s", args.seconds));
    stream.feeding = true;
    stream.measuring = true;
    let probe = Probe::start(broker, nats, &subagent_pids, &heartbeats);
    let finished_before = stream.finished;
    let mut peak_machine = procs::machine_used_kib().unwrap_or(0);
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    while tokio::time::Instant::now() < end {
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(end);
        stream.run_until(tick).await;
        peak_machine = peak_machine.max(procs::machine_used_kib().unwrap_or(0));
    }
    let busy_memory = procs::subagent_memory(&subagent_pids);
    let steady = probe.finish(broker, nats, &heartbeats, stream.finished - finished_before);
    stream.measuring = false;

    let kills = kill_some(cluster, &mut stream, args).await;
    stream.feeding = false;
    let drain = tokio::time::Instant::now() + DRAIN_LIMIT + Duration::from_millis(args.task_ms);
    while stream.in_flight() > 0 && stream.step(drain).await {}

    Ok(ScaleReport {
        subagents: args.subagents,
        heartbeat_interval_ms: ms(config.subagent.heartbeat_interval),
        idle_heartbeat_interval_ms: ms(crate::subagent::pace::Pace::new(
            config.subagent.heartbeat_interval,
            config.subagent.idle_heartbeat_interval,
            config.broker.subagent_timeout,
        )
        .idle),
        in_flight: args.in_flight,
        task_ms: args.task_ms,
        startup_s,
        idle,
        steady,
        orders_finished: stream.finished,
        orders_failed: stream.failed,
        submit_errors: stream.submit_errors,
        unfinished: stream.in_flight(),
        dispatch: Latency::of(&mut stream.dispatch_ms.clone()),
        dispatch_measured: stream.dispatch_ms.len(),
        false_losses: stream.false_losses.len(),
        idle_memory,
        busy_memory,
        machine_used_mib: peak_machine as f64 / 1024.0,
        kills,
        load_average: procs::load_average(),
        elapsed_s: 0.0,
    })
}

/// Subagents the broker counts available.
fn available(status: &StatusReply) -> usize {
    (status.subagents.iter())
        .filter(|a| a.state == SubagentState::Available)
        .count()
}

/// Heartbeats seen on the subjects the broker hears them on, counted as
/// they come.
async fn count_heartbeats(bus: &Bus) -> anyhow::Result<std::rc::Rc<std::cell::Cell<u64>>> {
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut heard = bus.listen_raw(bus.subjects().subagent_heartbeats()).await?;
    let counter = count.clone();
    actix_rt::spawn(async move {
        while heard.next().await.is_some() {
            counter.set(counter.get() + 1);
        }
    });
    Ok(count)
}

/// CPU and heartbeats at the start of a window.
struct Probe<'a> {
    at: Instant,
    broker: Times,
    nats: Times,
    subagent_pids: &'a [u32],
    subagents: u64,
    wakeups: u64,
    heartbeats: u64,
}

/// CPU ticks (user and system) of all of `pids` that still run.
fn ticks_of(pids: &[u32]) -> u64 {
    (pids.iter())
        .filter_map(|p| Times::of(*p))
        .map(|t| t.user + t.system)
        .sum()
}

impl<'a> Probe<'a> {
    fn start(
        broker: u32,
        nats: u32,
        subagent_pids: &'a [u32],
        heartbeats: &std::cell::Cell<u64>,
    ) -> Probe<'a> {
        Probe {
            at: Instant::now(),
            broker: Times::of(broker).unwrap_or_default(),
            nats: Times::of(nats).unwrap_or_default(),
            subagent_pids,
            subagents: ticks_of(subagent_pids),
            wakeups: procs::wakeups(subagent_pids),
            heartbeats: heartbeats.get(),
        }
    }

    fn finish(
        self,
        broker: u32,
        nats: u32,
        heartbeats: &std::cell::Cell<u64>,
        orders: usize,
    ) -> Window {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let percent = |pid: u32, before: &Times| {
            let spent = Times::of(pid).unwrap_or_default().since(before);
            (spent.user + spent.system) as f64 / 100.0 / secs * 100.0
        };
        Window {
            seconds: secs,
            heartbeats_per_s: (heartbeats.get() - self.heartbeats) as f64 / secs,
            broker_cpu_percent: percent(broker, &self.broker),
            broker_rss_mib: LocalCluster::memory_kib(broker).unwrap_or(0) as f64 / 1024.0,
            nats_cpu_percent: percent(nats, &self.nats),
            nats_rss_mib: LocalCluster::memory_kib(nats).unwrap_or(0) as f64 / 1024.0,
            orders_per_s: orders as f64 / secs,
            subagents_cpu_percent: ticks_of(self.subagent_pids).saturating_sub(self.subagents)
                as f64
                / 100.0
                / secs
                * 100.0,
            subagent_wakeups_per_s: procs::wakeups(self.subagent_pids).saturating_sub(self.wakeups)
                as f64
                / self.subagent_pids.len().max(1) as f64
                / secs,
        }
    }
}

/// Kills busy subagents one at a time (the stream still feeding) and times
/// their loss and their task's start elsewhere.
async fn kill_some(cluster: &mut LocalCluster, stream: &mut Stream, args: &ScaleArgs) -> Kills {
    let (mut lost, mut rerun) = (Vec::new(), Vec::new());
    for round in 0..args.kills {
        let look = tokio::time::Instant::now() + KILL_LIMIT;
        let victim = loop {
            if let Some(v) = stream.busy_subagent() {
                break Some(v);
            }
            if !stream.step(look).await {
                break None;
            }
        };
        let Some(victim) = victim else {
            args.common.progress("no busy subagent to kill");
            break;
        };
        let orders = stream.running_on(&victim);
        // an order already run again after an earlier kill is timed anew
        for order in orders.keys() {
            stream.reruns.remove(order);
        }
        stream.killed.insert(victim.clone());
        let killed_ms = now_ms();
        if let Err(e) = cluster.signal(&victim, Signal::SIGKILL) {
            args.common.progress(format!("cannot kill {victim}: {e}"));
            continue;
        }
        let deadline = tokio::time::Instant::now() + KILL_LIMIT;
        let done = |s: &Stream| {
            s.lost_at.contains_key(&victim) && orders.keys().all(|o| s.reruns.contains_key(o))
        };
        while !done(stream) && stream.step(deadline).await {}
        if let Some(at) = stream.lost_at.get(&victim) {
            lost.push(at.saturating_sub(killed_ms) as f64);
        }
        let elsewhere = orders
            .keys()
            .filter_map(|o| stream.reruns.get(o))
            .map(|(_, at)| *at)
            .max();
        if let Some(at) = elsewhere.filter(|_| orders.keys().all(|o| stream.reruns.contains_key(o)))
        {
            rerun.push(at.saturating_sub(killed_ms) as f64);
        }
        args.common
            .progress(format!("kill {}: {victim}", round + 1));
    }
    Kills {
        killed: stream.killed.len(),
        lost_measured: lost.len(),
        rerun_measured: rerun.len(),
        to_lost: Latency::of(&mut lost),
        to_rerun: Latency::of(&mut rerun),
    }
}

/// Stops every process: the subagents at once with SIGTERM (they drain,
/// leave and dismiss their reapers), SIGKILL to any left after
/// `STOP_LIMIT`, then the broker and nats-server.
fn stop(cluster: &mut LocalCluster, common: &CommonArgs) {
    let subagents: Vec<u32> = (cluster.procs().iter())
        .filter(|p| p.name.starts_with("sub-"))
        .map(|p| p.pid())
        .collect();
    common.progress(format!("stopping {} subagents", subagents.len()));
    for pid in &subagents {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_LIMIT;
    while Instant::now() < deadline && subagents.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.stop(Duration::from_secs(5));
}

/// Whether `pid` runs (a zombie, not yet reaped, counts as gone).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    state.is_some_and(|s| s != "Z")
}
