//! `baton bench throughput`: orders per second and submit-to-finished latency
//! of a trivial job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;

use super::{start_cluster, stop_cluster, work_dir, Latency};
use crate::cli::parse_duration;
use crate::launch::LocalCluster;
use crate::protocol::*;

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
    /// Keep the cluster's logs in this folder
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct ThroughputReport {
    scenario: &'static str,
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
    let work = work_dir();
    let (cluster, bus) =
        start_cluster(&work, args.logs.clone(), args.subagents, args.capacity).await?;
    let job = JobSpec {
        name: "bench-noop".into(),
        program: "true".into(),
        args: vec![],
        env: Default::default(),
        working_dir: None,
        timeout_ms: Some(60_000),
        params: Default::default(),
        description: Some("does nothing, fast".into()),
        cluster: None,
        restartable: true,
        triggers: Vec::new(),
        misfire: Default::default(),
        concurrency: Default::default(),
    };
    let s = bus.subjects().clone();
    let _: DeployReply = bus
        .request(
            s.deploy(),
            &DeployRequest {
                workflows: Vec::new(),
                jobs: vec![job],
                clusters: vec![],
            },
            Duration::from_secs(10),
        )
        .await
        .context("deploy")?;
    let mut finished_events = bus
        .listen::<OrderFinished>(s.event("bench-noop", "*", EventKind::Finished))
        .await?;

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut submits = FuturesUnordered::new();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut early: HashMap<String, (Instant, OrderState)> = HashMap::new();
    let mut latencies_ms: Vec<f64> = Vec::with_capacity(args.orders);
    let (mut submitted, mut in_flight, mut done) = (0usize, 0usize, 0usize);
    let (mut succeeded, mut failed, mut submit_errors) = (0usize, 0usize, 0usize);
    let mut count = |state: OrderState, t0: Instant, t1: Instant, lat: &mut Vec<f64>| {
        lat.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        if state == OrderState::Succeeded {
            succeeded += 1
        } else {
            failed += 1
        }
    };
    while done < args.orders {
        while in_flight < args.concurrency && submitted < args.orders {
            let bus = bus.clone();
            let subject = s.submit();
            submits.push(async move {
                let t0 = Instant::now();
                let order = SubmitOrder {
                    job: "bench-noop".into(),
                    params: Default::default(),
                    request_id: None,
                    slot_ms: None,
                };
                let reply: Result<SubmitReply, _> =
                    bus.request(subject, &order, Duration::from_secs(30)).await;
                (t0, reply)
            });
            submitted += 1;
            in_flight += 1;
        }
        tokio::select! {
            Some((t0, reply)) = submits.next() => match reply {
                Ok(reply) => match early.remove(&reply.order_id) {
                    Some((t1, state)) => {
                        count(state, t0, t1, &mut latencies_ms);
                        in_flight -= 1;
                        done += 1;
                    }
                    None => {
                        sent_at.insert(reply.order_id, t0);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "submit failed");
                    submit_errors += 1;
                    in_flight -= 1;
                    done += 1;
                }
            },
            Some(event) = finished_events.next() => {
                let t1 = Instant::now();
                let e = event.body;
                match sent_at.remove(&e.order_id) {
                    Some(t0) => {
                        count(e.state, t0, t1, &mut latencies_ms);
                        in_flight -= 1;
                        done += 1;
                    }
                    None => {
                        early.insert(e.order_id, (t1, e.state));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("timed out after {:?} with {done} of {} orders finished", args.timeout, args.orders);
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let broker_peak = cluster
        .pid("broker")
        .and_then(LocalCluster::peak_memory_kib);
    let subagent_peak = cluster
        .procs()
        .iter()
        .filter(|p| p.name.starts_with("sub-"))
        .filter_map(|p| LocalCluster::peak_memory_kib(p.pid()))
        .max();
    stop_cluster(cluster, &work);

    let report = ThroughputReport {
        scenario: "throughput",
        orders: args.orders,
        concurrency: args.concurrency,
        subagents: args.subagents,
        capacity: args.capacity,
        finished: latencies_ms.len(),
        succeeded,
        failed,
        submit_errors,
        elapsed_s: elapsed,
        orders_per_s: latencies_ms.len() as f64 / elapsed,
        latency: Latency::of(&mut latencies_ms),
        broker_peak_rss_kib: broker_peak,
        subagent_peak_rss_kib_max: subagent_peak,
    };
    super::emit(&report, args.json, print_table)
}

fn print_table(r: &ThroughputReport) {
    let kib = |v: Option<u64>| {
        v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!("baton bench throughput");
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
    println!("  broker peak RSS   {}", kib(r.broker_peak_rss_kib));
    println!(
        "  subagent peak RSS {} (largest)",
        kib(r.subagent_peak_rss_kib_max)
    );
}
