//! `baton bench`: speed measured on a local cluster the command starts itself.
//! It reports what it measured and asserts nothing.
//!
//! Every bench starts its cluster through `setup.rs` (`LocalBench`: the
//! flags all benches share, the cluster, its scratch folder), deploys and
//! listens through `client.rs`, and prints through `report.rs` (spreads,
//! shared formats; `CommonArgs::emit` prints the table or `--json`).
//!
//! - `closed_loop.rs`: orders of one job kept in flight and timed from
//!   submit to `finished`, for `throughput.rs` and `workflow.rs`.
//! - `throughput.rs`: orders per second and submit-to-finished latency, as
//!   a share of the machine's raw spawn rate, and CPU per order of each
//!   process (`cpu.rs`: both measured from /proc and a spawn loop).
//! - `failover/`: how fast the tasks of a killed subagent run elsewhere
//!   (`feed.rs` keeps its stream of orders and follows their events,
//!   `report.rs` holds its figures).
//! - `scheduler/failover.rs`: how fast a SIGKILLed Scheduler agent is
//!   replaced and its triggers fire again, with no slot run twice or never.
//! - `scheduler/schedules.rs`: how late a Scheduler holding many interval
//!   triggers fires them.
//! - `broker/`: how fast a standby broker replaces a SIGKILLed active one
//!   and dispatches again, with no order lost or run twice.
//! - `cluster/`: Baton on a three-node JetStream cluster losing a node
//!   (the orders stream's leader, or a follower): stalls, lost or doubled
//!   orders and slots, and the restarted node catching up.
//! - `workflow.rs`: workflow orders per second over a round-robin cluster,
//!   the hand-off between steps, and with `--kill` the steps run again.
//! - `console.rs`: the web console's JSON endpoints' answer times with
//!   many orders held.
//! - `history.rs`: the broker's memory over rounds of many thousands of
//!   ended and failed orders.
//! - `triggers.rs`: orders started by subject triggers' messages: per
//!   second, publish-to-start lateness, duplicates and misses.
//! - `files.rs`: file triggers: orders started per second and lateness
//!   from a file's arrival, duplicates and misses (with `--kill`, across a
//!   SIGKILLed Scheduler).
//! - `scale/`: many subagent processes on one broker: heartbeat cost,
//!   memory per subagent with its reaper (`procs.rs`, from /proc), dispatch
//!   latency under that load (`stream.rs`), false losses, and the time to
//!   notice SIGKILLed ones.

mod broker;
mod client;
mod closed_loop;
mod cluster;
mod console;
mod cpu;
mod failover;
mod files;
mod history;
mod report;
mod scale;
mod scheduler;
mod setup;
mod throughput;
mod triggers;
mod workflow;

use clap::Subcommand;

pub use setup::CommonArgs;

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
    /// Baton on a 3-node JetStream cluster losing a node (the orders
    /// stream's leader, or a follower; two at once with --no-quorum): stalls,
    /// JetStream's elections apart from Baton's part, orders lost or run
    /// twice, trigger gaps, the restarted node catching up; then the
    /// Scheduler agent SIGKILLed
    Cluster(cluster::ClusterArgs),
    /// Workflow orders per second, step hand-off latency and steps changing
    /// subagent over a round-robin cluster; with --kill, a subagent killed
    Workflow(workflow::WorkflowArgs),
    /// The broker's memory over rounds of thousands of succeeded job orders
    /// and failed workflow orders (bounded history)
    History(history::HistoryArgs),
    /// Answer times of the web console's endpoints (orders, status, jobs)
    /// with many orders held
    Console(console::ConsoleBenchArgs),
    /// Orders started per second by event triggers (--mode subject), the
    /// lateness from a message's publish to its task's start, duplicates
    /// and misses
    Triggers(triggers::TriggersArgs),
    /// File triggers: orders started per second and lateness from a file's
    /// arrival to its order; duplicates and misses, with --kill across a
    /// SIGKILLed Scheduler
    Files(files::FilesArgs),
    /// Many subagent processes on one broker: heartbeats/s, broker and
    /// nats-server CPU and memory, dispatch latency, false losses, memory
    /// per subagent with its reaper, time to notice a SIGKILLed one
    Scale(scale::ScaleArgs),
}

/// Runs a bench until it ends, or until SIGINT or SIGTERM: then the bench
/// is dropped, and with it its cluster (every process it started is
/// killed, its temporary folders removed), so nothing is left running.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    tokio::select! {
        ran = bench(command) => ran,
        _ = crate::daemon::wait_for_signal() => {
            anyhow::bail!("interrupted: the bench's cluster is stopped, nothing measured")
        }
    }
}

async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Throughput(args) => throughput::throughput(args).await,
        BenchCommand::FailoverSubagent(args) => failover::failover(args).await,
        BenchCommand::FailoverScheduler(args) => scheduler::failover_scheduler(args).await,
        BenchCommand::Schedules(args) => scheduler::schedules(args).await,
        BenchCommand::FailoverBroker(args) => broker::failover_broker(args).await,
        BenchCommand::Cluster(args) => cluster::cluster(args).await,
        BenchCommand::Workflow(args) => workflow::workflow(args).await,
        BenchCommand::History(args) => history::history(args).await,
        BenchCommand::Console(args) => console::console(args).await,
        BenchCommand::Triggers(args) => triggers::triggers(args).await,
        BenchCommand::Files(args) => files::files(args).await,
        BenchCommand::Scale(args) => scale::scale(args).await,
    }
}

/// A count that must be 1 or more (a bench of none measures nothing, or
/// waits forever).
pub(crate) fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + Default + PartialEq,
    T::Err: std::fmt::Display,
{
    match text.parse::<T>() {
        Ok(n) if n == T::default() => Err("must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
