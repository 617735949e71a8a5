//! `baton bench throughput`: orders per second and submit-to-finished latency
//! of a trivial job.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::client::{bench_job, deploy_jobs, request_deploy};
use super::closed_loop::ClosedLoop;
use super::cpu::{CpuPerOrder, RawSpawn, Sample};
use super::report::{mib, Latency};
use super::setup::{CommonArgs, LocalBench, Setup};
use crate::protocol::*;
use crate::time::parse_duration;

#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Orders to submit
    #[arg(short = 'n', long, default_value_t = 2000, value_parser = super::at_least_one::<usize>)]
    pub orders: usize,
    /// Orders in flight at once (submitted, not yet finished)
    #[arg(short = 'c', long, default_value_t = 64, value_parser = super::at_least_one::<usize>)]
    pub concurrency: usize,
    /// Subagent processes
    #[arg(long, default_value_t = 2, value_parser = super::at_least_one::<usize>)]
    pub subagents: usize,
    /// Tasks each subagent runs at once
    #[arg(long, default_value_t = 16, value_parser = super::at_least_one::<u32>)]
    pub capacity: u32,
    /// Threads that measure the machine's raw spawn rate (the same program
    /// started without Baton, as many times as --orders) before the run
    #[arg(long, default_value_t = 16, value_parser = super::at_least_one::<usize>)]
    pub raw_threads: usize,
    /// Stop waiting after this long
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
    /// NATS authentication and Baton's signature checks: on (as in
    /// production), off (--insecure), or both, one run after the other
    #[arg(long, value_enum, default_value = "on")]
    pub auth: AuthMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    On,
    Off,
    Both,
}

#[derive(Debug, Serialize)]
struct ThroughputReport {
    scenario: &'static str,
    /// Authentication and signatures on.
    auth: bool,
    orders: usize,
    concurrency: usize,
    subagents: usize,
    capacity: u32,
    finished: usize,
    succeeded: usize,
    failed: usize,
    submit_errors: usize,
    elapsed_s: f64,
    orders_per_s: f64,
    latency: Latency,
    /// The job's program spawned and waited for as fast as `raw_spawn.threads`
    /// threads go, without Baton, just before the run.
    raw_spawn: RawSpawn,
    /// `orders_per_s` as a share of `raw_spawn.spawns_per_s`.
    share_of_raw_spawn: f64,
    /// CPU per finished order of each process, from /proc over the run.
    cpu_per_order: CpuPerOrder,
    broker_peak_rss_kib: Option<u64>,
    subagent_peak_rss_kib_max: Option<u64>,
}

pub(super) async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let modes: &[bool] = match args.auth {
        AuthMode::On => &[true],
        AuthMode::Off => &[false],
        AuthMode::Both => &[false, true],
    };
    for &auth in modes {
        let report = measure(&args, auth).await?;
        args.common.emit(&report, print_table)?;
        if report.finished < report.orders {
            anyhow::bail!(
                "only {} of {} orders finished within --timeout {}: the figures cover those",
                report.finished,
                report.orders,
                humantime::format_duration(args.timeout)
            );
        }
    }
    Ok(())
}

/// The bench job's program.
const PROGRAM: &str = "true";

async fn measure(args: &ThroughputArgs, auth: bool) -> anyhow::Result<ThroughputReport> {
    args.common.progress(format!(
        "measuring the raw spawn rate of '{PROGRAM}' ({} threads)",
        args.raw_threads
    ));
    let (orders, threads) = (args.orders, args.raw_threads);
    let raw_spawn =
        tokio::task::spawn_blocking(move || RawSpawn::measure(PROGRAM, orders, threads)).await?;
    let setup = Setup {
        auth,
        ..Setup::subagents(args.subagents, args.capacity)
    };
    let bench = LocalBench::start(setup, &args.common).await?;
    let job = JobSpec {
        description: Some("does nothing, fast".into()),
        ..bench_job("bench-noop", PROGRAM, vec![])
    };
    request_deploy(&bench.bus, &deploy_jobs(vec![job])).await?;
    let closed_loop = ClosedLoop::start(
        &bench.bus,
        "bench-noop",
        args.orders,
        args.concurrency,
        Duration::from_secs(30),
        args.timeout,
    )
    .await?;
    let sample = || {
        let subagents: Vec<u32> = bench
            .cluster
            .procs()
            .iter()
            .filter(|p| p.name.starts_with("sub-"))
            .map(|p| p.pid())
            .collect();
        Sample::take(
            bench.cluster.pid("broker"),
            bench.cluster.nats.pid(),
            &subagents,
        )
    };
    let before = sample();
    let mut outcome = closed_loop.run().await;
    let after = sample();
    let broker_peak = bench.peak_memory_kib("broker");
    let subagent_peak = bench
        .cluster
        .procs()
        .iter()
        .filter(|p| p.name.starts_with("sub-"))
        .filter_map(|p| bench.peak_memory_kib(&p.name))
        .max();
    bench.stop();

    let (finished, succeeded) = (outcome.latencies_ms.len(), outcome.succeeded());
    let orders_per_s = finished as f64 / outcome.elapsed_s;
    Ok(ThroughputReport {
        scenario: "throughput",
        auth,
        orders: args.orders,
        concurrency: args.concurrency,
        subagents: args.subagents,
        capacity: args.capacity,
        finished,
        succeeded,
        failed: finished - succeeded,
        submit_errors: outcome.submit_errors,
        elapsed_s: outcome.elapsed_s,
        orders_per_s,
        latency: Latency::of(&mut outcome.latencies_ms),
        share_of_raw_spawn: share(orders_per_s, raw_spawn.spawns_per_s),
        raw_spawn,
        cpu_per_order: CpuPerOrder::between(&before, &after, finished),
        broker_peak_rss_kib: broker_peak,
        subagent_peak_rss_kib_max: subagent_peak,
    })
}

/// `part` as a share of `whole` (0 when `whole` is not positive).
fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

fn print_table(r: &ThroughputReport) {
    let auth = if r.auth {
        "authentication and signatures on"
    } else {
        "no authentication (--auth off)"
    };
    println!("baton bench throughput ({auth})");
    println!(
        "  orders            {} ({} in flight, {} subagents x {} slots)",
        r.orders, r.concurrency, r.subagents, r.capacity
    );
    println!(
        "  finished          {} ({} succeeded, {} failed, {} submit errors)",
        r.finished, r.succeeded, r.failed, r.submit_errors
    );
    println!("  elapsed           {:.2} s", r.elapsed_s);
    println!("  throughput        {:.0} orders/s", r.orders_per_s);
    println!(
        "  raw spawn rate    {:.0} spawns/s ('{PROGRAM}', {} threads, {} failed)",
        r.raw_spawn.spawns_per_s, r.raw_spawn.threads, r.raw_spawn.failed
    );
    println!("  share of raw      {:.0}%", r.share_of_raw_spawn * 100.0);
    println!("  latency p50       {:.1} ms", r.latency.p50_ms);
    println!("  latency p99       {:.1} ms", r.latency.p99_ms);
    println!("  latency max       {:.1} ms", r.latency.max_ms);
    let cpu = &r.cpu_per_order;
    println!(
        "  CPU per order     broker {:.0} µs, nats-server {:.0} µs",
        cpu.broker_us, cpu.nats_server_us
    );
    println!(
        "                    subagents {:.0} µs ({:.0} µs system), their reapers {:.0} µs",
        cpu.subagents_us, cpu.subagents_system_us, cpu.reapers_us
    );
    println!(
        "                    their tasks {:.0} µs",
        cpu.subagent_children_us
    );
    println!("                    bench client {:.0} µs", cpu.client_us);
    println!("  broker peak RSS   {}", mib(r.broker_peak_rss_kib));
    println!(
        "  subagent peak RSS {} (largest)",
        mib(r.subagent_peak_rss_kib_max)
    );
}
