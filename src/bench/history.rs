//! `baton bench history`: the broker's memory over many thousands of
//! ended orders. Each round drives `--orders` job orders that succeed and
//! `--orders` workflow orders that fail through a local cluster (closed
//! loops); the broker's resident memory is read after each round, and
//! once more after `broker.failed_hold` has passed (every failed order
//! expired). With history bounded (`broker.keep_finished`,
//! `broker.failed_hold`) the figures level off after the first rounds
//! instead of growing with every round.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::client::{bench_job, deploy_jobs, request_deploy};
use super::closed_loop::ClosedLoop;
use super::report::mib;
use super::setup::{CommonArgs, LocalBench, Setup};
use crate::protocol::*;
use crate::time::parse_duration;

const JOB: &str = "bench-noop";
const WORKFLOW: &str = "bench-doomed";
/// The longest `--failed-hold` waited for after the last round.
const MOST_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Job orders, and as many failing workflow orders, per round
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub orders: usize,
    /// Rounds
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Orders in flight at once
    #[arg(short = 'c', long, default_value_t = 64, value_parser = crate::bench::at_least_one::<usize>)]
    pub concurrency: usize,
    /// `broker.keep_finished` of the cluster's broker
    #[arg(long, default_value_t = 1000)]
    pub keep: usize,
    /// `broker.failed_hold` of the cluster's broker
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub failed_hold: Duration,
    /// Stop waiting for a round after this long
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct HistoryReport {
    scenario: &'static str,
    orders_per_round: usize,
    keep_finished: usize,
    failed_hold_ms: u64,
    /// The broker's resident memory before the first order.
    start_rss_kib: Option<u64>,
    rounds: Vec<Round>,
    /// After the last round and `failed_hold` (if at most 2 minutes):
    /// every failed order expired.
    after_hold_rss_kib: Option<u64>,
    broker_peak_rss_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Round {
    /// Orders ended so far (job and workflow orders).
    ended: usize,
    succeeded: usize,
    failed: usize,
    elapsed_s: f64,
    rss_kib: Option<u64>,
}

pub(super) async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let keep = args.keep.to_string();
    let hold = humantime::format_duration(args.failed_hold).to_string();
    let env = [
        ("BATON_BROKER__KEEP_FINISHED", keep.as_str()),
        ("BATON_BROKER__FAILED_HOLD", hold.as_str()),
    ];
    let setup = Setup {
        env: &env,
        ..Setup::subagents(1, 16)
    };
    let bench = LocalBench::start(setup, &args.common).await?;
    let run = measure(&bench, &args).await;
    bench.finish(run, &args.common, |_, _| {}, print_table)
}

async fn measure(bench: &LocalBench, args: &HistoryArgs) -> anyhow::Result<HistoryReport> {
    let workflow: WorkflowSpec = serde_json::from_value(serde_json::json!({
        "name": WORKFLOW,
        "steps": [{"name": "fails", "job": "bench-fail"}],
    }))?;
    let deploy = DeployRequest {
        workflows: vec![workflow],
        ..deploy_jobs(vec![
            bench_job(JOB, "true", vec![]),
            bench_job("bench-fail", "false", vec![]),
        ])
    };
    request_deploy(&bench.bus, &deploy).await?;
    let start_rss_kib = bench.memory_kib("broker");
    let mut rounds = Vec::new();
    let mut ended = 0;
    for round in 1..=args.rounds {
        let (mut succeeded, mut failed, mut elapsed_s) = (0, 0, 0.0);
        for name in [JOB, WORKFLOW] {
            let request = Duration::from_secs(30);
            let outcome = ClosedLoop::start(
                &bench.bus,
                name,
                args.orders,
                args.concurrency,
                request,
                args.timeout,
            )
            .await?
            .run()
            .await;
            ended += outcome.states.len();
            succeeded += outcome.succeeded();
            failed += (outcome.states.values())
                .filter(|s| **s == OrderState::Failed)
                .count();
            elapsed_s += outcome.elapsed_s;
        }
        let rss_kib = bench.memory_kib("broker");
        args.common.progress(format!(
            "round {round}: {ended} orders ended, broker {}",
            mib(rss_kib)
        ));
        rounds.push(Round {
            ended,
            succeeded,
            failed,
            elapsed_s,
            rss_kib,
        });
    }
    // a long hold (to compare with history unbounded) is not waited for
    let after_hold_rss_kib = if args.failed_hold <= MOST_WAIT {
        tokio::time::sleep(args.failed_hold + Duration::from_secs(1)).await;
        bench.memory_kib("broker")
    } else {
        None
    };
    Ok(HistoryReport {
        scenario: "history",
        orders_per_round: args.orders,
        keep_finished: args.keep,
        failed_hold_ms: args.failed_hold.as_millis() as u64,
        start_rss_kib,
        rounds,
        after_hold_rss_kib,
        broker_peak_rss_kib: bench.peak_memory_kib("broker"),
    })
}

fn print_table(r: &HistoryReport) {
    println!(
        "baton bench history: {} job orders (succeed) and {} workflow orders (fail) per round; \
         broker.keep_finished {}, broker.failed_hold {} ms",
        r.orders_per_round, r.orders_per_round, r.keep_finished, r.failed_hold_ms
    );
    println!(
        "  {:<12} {:>8} {:>10} {:>8} {:>9} {:>12}",
        "", "ended", "succeeded", "failed", "took s", "broker RSS"
    );
    println!(
        "  {:<12} {:>8} {:>10} {:>8} {:>9} {:>12}",
        "start",
        0,
        "-",
        "-",
        "-",
        mib(r.start_rss_kib)
    );
    for (i, round) in r.rounds.iter().enumerate() {
        println!(
            "  {:<12} {:>8} {:>10} {:>8} {:>9.1} {:>12}",
            format!("round {}", i + 1),
            round.ended,
            round.succeeded,
            round.failed,
            round.elapsed_s,
            mib(round.rss_kib)
        );
    }
    println!(
        "  {:<12} {:>8} {:>10} {:>8} {:>9} {:>12}",
        "after hold",
        "-",
        "-",
        "-",
        "-",
        mib(r.after_hold_rss_kib)
    );
    println!("  broker peak {}", mib(r.broker_peak_rss_kib));
}
