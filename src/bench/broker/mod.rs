//! `baton bench failover-broker`: brokers `broker-1..n` (one active, the
//! others standbys), three subagents, and a steady stream of orders at a
//! fixed rate, each submitted with its own request id and sent again under
//! it (timeout, no responders, `unavailable`) until a broker accepts it.
//! Each task appends its order id to a marker file, then sleeps.
//!
//! Each round SIGKILLs the active broker and measures from the kill to
//! (a) another broker announcing itself active and (b) the first dispatch
//! by it: the first `started` event of an order first submitted after the
//! kill. The killed broker could neither accept nor dispatch such an order,
//! so this is the new broker's work for certain; the first `started` event
//! of any order is reported beside it, but may be a task the killed broker
//! sent just before it died. Then the killed broker is started again under
//! its name and the cluster settles before the next round. At the end the
//! bench stops submitting, waits for every accepted order to be final, and
//! judges by the marker file whether any order ran twice, or succeeded
//! without running.
//!
//! Times are wall-clock milliseconds: the kill's, the `at_ms`/`sent_at_ms`
//! of the brokers' and subagents' events (one host, one clock), and the
//! arrival of submit replies.
//!
//! - `round.rs`: one kill and what it measured.
//! - `traffic.rs`: the stream of orders and the events followed.
//! - `ledger.rs`: the pure bookkeeping (orders, brokers, tally).
//! - `report.rs`: the figures and their table.

pub(super) mod ledger;
mod report;
mod round;
pub(super) mod traffic;

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use nix::sys::signal::Signal;

use ledger::count_markers;
use report::{print_table, Measured, Report, Settings};
use round::{kill_and_watch, ready, restart, Measurements};
use traffic::{Traffic, GIVE_UP, TASK_MS};

use super::client::{deploy_jobs, request_deploy, sh_job};
use super::setup::{subagent_ids, CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::parse_duration;

const JOB: &str = "bench-broker";
const SUBAGENTS: usize = 3;
const CAPACITY: u32 = 8;
/// Longest wait for each step of a round: a single active broker, the new
/// one and its first dispatch, the killed one's return.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait at the end for the last orders to be accepted and final.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// `$1` is the marker file, `$2` the seconds to sleep; no `{{`, so the
/// broker substitutes nothing in it.
const TASK_SCRIPT: &str = r#"echo "$BATON_ORDER_ID" >> "$1"; sleep "$2""#;

#[derive(Debug, Args)]
pub struct FailoverBrokerArgs {
    /// Broker processes, one of them active
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub brokers: u8,
    /// Active brokers killed
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Orders submitted per second
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to let the cluster run after the killed broker is back
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub settle: Duration,
    /// Start no new round after this long
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub(super) async fn failover_broker(args: FailoverBrokerArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be above 0 and at most 10000 orders/s");
    }
    let settings = Settings::load()?;
    args.common.progress(format_args!(
        "baton bench failover-broker: {} rounds, {} brokers, {} orders/s; {}",
        args.rounds,
        args.brokers,
        args.rate,
        settings.describe()
    ));
    let ids: Vec<String> = (1..=args.brokers).map(|i| format!("broker-{i}")).collect();
    let brokers: Vec<&str> = ids.iter().map(String::as_str).collect();
    let setup = Setup {
        brokers: &brokers,
        ..Setup::subagents(SUBAGENTS, CAPACITY)
    };
    let mut bench = LocalBench::start(setup, &args.common).await?;
    let markers = bench.evidence("markers", None);
    let run = run(
        &mut bench.cluster,
        &bench.bus,
        &args,
        &ids,
        &markers,
        settings,
    )
    .await;
    stop_subagents(&mut bench.cluster);
    let stamp = |r: &mut Report, s| r.elapsed_s = s;
    bench.finish(run, &args.common, stamp, print_table)
}

/// Stops the subagents first, while a broker acknowledges their leave (the
/// cluster stops its newest processes first: a restarted broker).
fn stop_subagents(cluster: &mut LocalCluster) {
    let names = subagent_ids(SUBAGENTS);
    for name in &names {
        let _ = cluster.signal(name, Signal::SIGTERM);
    }
    for name in &names {
        let _ = cluster.wait_exit(name, Duration::from_secs(5));
    }
}

async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    args: &FailoverBrokerArgs,
    ids: &[String],
    markers: &Path,
    settings: Settings,
) -> anyhow::Result<Report> {
    let stop_at = tokio::time::Instant::now() + args.timeout;
    let alive = Duration::from_millis(settings.heartbeat_ms * 4).max(Duration::from_secs(1));
    // listen before the first order exists
    let mut traffic = Traffic::start(bus, JOB, args.rate).await?;
    deploy(bus, markers).await?;
    ready(&mut traffic, ids, alive).await?;
    traffic.feed(true);
    traffic
        .idle(tokio::time::Instant::now() + args.settle)
        .await;

    let mut m = Measurements::default();
    let mut rounds = 0;
    for round in 1..=args.rounds {
        if tokio::time::Instant::now() >= stop_at {
            eprintln!("timed out after {:?}: {} rounds", args.timeout, round - 1);
            break;
        }
        let (victim, epoch) = ready(&mut traffic, ids, alive).await?;
        let kill = kill_and_watch(&mut traffic, cluster, &victim, epoch).await?;
        rounds += 1;
        args.common.progress(format_args!(
            "round {round}: {}",
            kill.describe(&victim, epoch)
        ));
        m.add(&kill);
        restart(&mut traffic, cluster, &victim).await?;
        traffic
            .idle(tokio::time::Instant::now() + args.settle)
            .await;
    }

    traffic.feed(false);
    drain(&mut traffic).await;
    let text = std::fs::read_to_string(markers).unwrap_or_default();
    let (min, max) = TASK_MS;
    Ok(Report {
        scenario: "failover-broker",
        brokers: ids.len(),
        subagents: SUBAGENTS,
        capacity: CAPACITY,
        rate: args.rate,
        task_ms_min: min,
        task_ms_max: max,
        settings,
        rounds,
        new_active: Measured::of(m.new_active),
        first_accepted: Measured::of(m.first_accepted),
        first_dispatch: Measured::of(m.first_dispatch),
        first_started_any: Measured::of(m.first_started_any),
        tally: traffic.ledger.tally(&count_markers(&text)),
        rejected: traffic.rejected.clone().into_iter().collect(),
        elapsed_s: 0.0,
    })
}

/// Deploys [`JOB`]: appends its order id to `markers`, then sleeps `secs`.
async fn deploy(bus: &Bus, markers: &Path) -> anyhow::Result<()> {
    let secs = ParamSpec {
        default: Some("0.1".into()),
        required: false,
        description: Some("seconds to sleep".into()),
    };
    let job = JobSpec {
        params: [("secs".to_string(), secs)].into(),
        description: Some("appends its order id to a file, then sleeps".into()),
        ..sh_job(
            JOB,
            TASK_SCRIPT,
            "baton-bench-task",
            vec![markers.display().to_string(), "{{secs}}".into()],
        )
    };
    request_deploy(bus, &deploy_jobs(vec![job])).await
}

/// Lets the last submits be accepted (or given up on), then waits until
/// every accepted order is final, asking the broker about those whose
/// `finished` event did not come; at most [`DRAIN_LIMIT`] (plus the
/// give-up time of a submit still being retried).
async fn drain(traffic: &mut Traffic) {
    let deadline = tokio::time::Instant::now() + GIVE_UP.max(DRAIN_LIMIT);
    while traffic.submitting() > 0 {
        if traffic.step(deadline).await.is_none() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while !traffic.ledger.unfinished().is_empty() && tokio::time::Instant::now() < deadline {
        traffic
            .idle(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
        traffic.poll_unfinished().await;
    }
    let left = traffic.ledger.unaccepted();
    if left > 0 {
        eprintln!("{left} orders were still being submitted at the end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_script_has_no_placeholders() {
        assert!(!TASK_SCRIPT.contains("{{"));
    }
}
