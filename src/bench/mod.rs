//! `baton bench`: speed measured on a local cluster the command starts itself.
//! It reports what it measured and asserts nothing.
//!
//! - `closed_loop.rs`: orders of one job kept in flight and timed from
//!   submit to `finished`, for `throughput.rs` and `workflow.rs`.
//! - `throughput.rs`: orders per second and submit-to-finished latency.
//! - `failover/`: how fast the tasks of a killed subagent run elsewhere
//!   (`feed.rs` keeps its stream of orders and follows their events,
//!   `report.rs` holds its figures).
//! - `scheduler/failover.rs`: how fast a SIGKILLed Scheduler agent is
//!   replaced and its triggers fire again, with no slot run twice or never.
//! - `scheduler/schedules.rs`: how late a Scheduler holding many interval
//!   triggers fires them.
//! - `broker/`: how fast a standby broker replaces a SIGKILLed active one
//!   and dispatches again, with no order lost or run twice.
//! - `workflow.rs`: workflow orders per second over a round-robin cluster,
//!   the hand-off between steps, and with `--kill` the steps run again.

mod broker;
mod closed_loop;
mod failover;
mod scheduler;
mod throughput;
mod workflow;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use crate::bus::Bus;
use crate::launch::{LocalCluster, Logs, Security};
use crate::natsd::NatsServerOptions;
use crate::protocol::{DeployReply, DeployRequest, JobSpec};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Orders per second and submit-to-finished latency of a trivial job
    Throughput(throughput::ThroughputArgs),
    /// Time from SIGKILL of a busy subagent to its loss being declared and its
    /// tasks starting elsewhere, per scheduling mode
    FailoverSubagent(failover::FailoverArgs),
    /// Time from SIGKILL of the Scheduler agent to another agent holding the
    /// role and to its first fire; slots fired twice or never
    FailoverScheduler(scheduler::FailoverSchedulerArgs),
    /// Lateness of the fires of many interval triggers held by one Scheduler
    Schedules(scheduler::SchedulesArgs),
    /// Time from SIGKILL of the active broker to a standby being active and
    /// dispatching; orders lost or run twice
    FailoverBroker(broker::FailoverBrokerArgs),
    /// Workflow orders per second, step hand-off latency and steps changing
    /// subagent over a round-robin cluster; with --kill, a subagent killed
    Workflow(workflow::WorkflowArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Throughput(args) => throughput::throughput(args).await,
        BenchCommand::FailoverSubagent(args) => failover::failover(args).await,
        BenchCommand::FailoverScheduler(args) => scheduler::failover_scheduler(args).await,
        BenchCommand::Schedules(args) => scheduler::schedules(args).await,
        BenchCommand::FailoverBroker(args) => broker::failover_broker(args).await,
        BenchCommand::Workflow(args) => workflow::workflow(args).await,
    }
}

/// The spread of a set of measurements, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    /// Sorts `values` (milliseconds) and takes p50, p99 and max.
    fn of(values: &mut [f64]) -> Latency {
        values.sort_by(|a, b| a.total_cmp(b));
        Latency {
            p50_ms: percentile(values, 0.50),
            p99_ms: percentile(values, 0.99),
            max_ms: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A scratch folder for one bench run, named after this process.
fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()))
}

/// Starts nats-server, a broker (process and id `broker`) and subagents
/// `sub-1..=subagents` in `work` (logs in `logs`, else `work/logs`), and
/// waits until the subagents are available.
async fn start_cluster(
    work: &Path,
    logs: Option<PathBuf>,
    subagents: usize,
    capacity: u32,
) -> anyhow::Result<(LocalCluster, Bus)> {
    start_cluster_with(work, logs, &["broker"], subagents, capacity, false).await
}

/// [`start_cluster`] with the brokers `brokers`, each process named after
/// its id; `insecure`: no authentication (every bench runs with it on
/// otherwise, as production does).
async fn start_cluster_with(
    work: &Path,
    logs: Option<PathBuf>,
    brokers: &[&str],
    subagents: usize,
    capacity: u32,
    insecure: bool,
) -> anyhow::Result<(LocalCluster, Bus)> {
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let logs = logs.unwrap_or_else(|| work.join("logs"));
    let nats = NatsServerOptions {
        port: None,
        store_dir: work.join("nats"),
        config_file: None,
        log_file: Some(work.join("nats-server.log")),
        ..Default::default()
    };
    let exe = std::env::current_exe()?;
    let ids: Vec<String> = (1..=subagents).map(|i| format!("sub-{i}")).collect();
    let security = if insecure {
        Security::Insecure
    } else {
        // every subagent's identity before the server starts (no reloads)
        crate::auth::AuthDir::init(&work.join("auth"), "bench", &ids)?;
        Security::Auth(work.join("auth"))
    };
    let mut cluster = LocalCluster::start(nats, exe, "bench", Logs::Dir(logs), security).await?;
    for id in brokers {
        cluster.spawn(id, &["broker", "--id", id])?;
    }
    let capacity = capacity.to_string();
    for id in &ids {
        cluster.spawn_subagent(id, &["--capacity", &capacity])?;
    }
    let bus = cluster.client().await?;
    cluster.wait_for_subagents(&bus, subagents).await?;
    Ok((cluster, bus))
}

/// A bench's job `name` running `program args`: restartable, a minute's
/// timeout, no parameters, description, cluster or triggers. Set the rest
/// with struct update syntax.
fn bench_job(name: &str, program: &str, args: Vec<String>) -> JobSpec {
    JobSpec {
        name: name.into(),
        program: program.into(),
        args,
        env: Default::default(),
        working_dir: None,
        timeout_ms: Some(60_000),
        params: Default::default(),
        description: None,
        cluster: None,
        restartable: true,
        triggers: Vec::new(),
        misfire: Default::default(),
        concurrency: Default::default(),
    }
}

/// [`bench_job`] running `sh -c script`, with `$0` `arg0` and `$1`.. `args`.
fn sh_job(name: &str, script: &str, arg0: &str, args: Vec<String>) -> JobSpec {
    let mut argv = vec!["-c".to_string(), script.to_string(), arg0.to_string()];
    argv.extend(args);
    bench_job(name, "sh", argv)
}

/// Deploys `request`, waiting up to 10 s for the broker's reply.
async fn request_deploy(bus: &Bus, request: &DeployRequest) -> anyhow::Result<()> {
    let _: DeployReply = bus
        .request(bus.subjects().deploy(), request, Duration::from_secs(10))
        .await
        .context("deploy")?;
    Ok(())
}

/// Prints a bench's report: as JSON, or as the bench's table.
fn emit<R: Serialize>(report: &R, json: bool, table: impl FnOnce(&R)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        table(report);
    }
    Ok(())
}

/// Stops the cluster and removes the scratch folder (logs kept elsewhere stay).
fn stop_cluster(mut cluster: LocalCluster, work: &Path) {
    cluster.stop(Duration::from_secs(5));
    drop(cluster);
    let _ = std::fs::remove_dir_all(work);
}

#[cfg(test)]
mod tests {
    use super::{percentile, Latency};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn latency_sorts_first() {
        let l = Latency::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (2.0, 3.0, 3.0));
        assert_eq!(Latency::of(&mut []).max_ms, 0.0);
    }
}
