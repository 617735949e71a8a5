//! `baton bench throughput`: orders per second and submit-to-finished latency
//! of a trivial job.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::client::{bench_job, deploy_jobs, request_deploy};
use super::closed_loop::ClosedLoop;
use super::report::{mib, Latency};
use super::setup::{CommonArgs, LocalBench, Setup};
use crate::protocol::*;
use crate::time::parse_duration;

#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Orders to submit
    #[arg(short = 'n', long, default_value_t = 2000)]
    pub orders: usize,
    /// Orders in flight at once (submitted, not yet finished)
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Subagent processes
    #[arg(long, default_value_t = 2)]
    pub subagents: usize,
    /// Tasks each subagent runs at once
    #[arg(long, default_value_t = 16)]
    pub capacity: u32,
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
    }
    Ok(())
}

async fn measure(args: &ThroughputArgs, auth: bool) -> anyhow::Result<ThroughputReport> {
    let setup = Setup {
        auth,
        ..Setup::subagents(args.subagents, args.capacity)
    };
    let bench = LocalBench::start(setup, &args.common).await?;
    let job = JobSpec {
        description: Some("does nothing, fast".into()),
        ..bench_job("bench-noop", "true", vec![])
    };
    request_deploy(&bench.bus, &deploy_jobs(vec![job])).await?;
    let mut outcome = ClosedLoop::start(
        &bench.bus,
        "bench-noop",
        args.orders,
        args.concurrency,
        Duration::from_secs(30),
        args.timeout,
    )
    .await?
    .run()
    .await;
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
        orders_per_s: finished as f64 / outcome.elapsed_s,
        latency: Latency::of(&mut outcome.latencies_ms),
        broker_peak_rss_kib: broker_peak,
        subagent_peak_rss_kib_max: subagent_peak,
    })
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
    println!("  latency p50       {:.1} ms", r.latency.p50_ms);
    println!("  latency p99       {:.1} ms", r.latency.p99_ms);
    println!("  latency max       {:.1} ms", r.latency.max_ms);
    println!("  broker peak RSS   {}", mib(r.broker_peak_rss_kib));
    println!(
        "  subagent peak RSS {} (largest)",
        mib(r.subagent_peak_rss_kib_max)
    );
}
