//! `baton bench files`: file triggers. A broker, no subagent (orders only
//! queue: running them is not what is measured) and one agent (two with
//! `--kill`). Deploys one job with a `file` trigger on a scratch folder,
//! waits until an agent is Scheduler, then drops `--files` files into the
//! folder (each written under a name that does not match, then renamed in:
//! its arrival), all at once or `--rate` a second, and takes every
//! `accepted` event of the job: the file it names (its `file_name`
//! parameter) and when the broker accepted it.
//!
//! Reported: orders started per second (files over the time from the first
//! arrival to the last order accepted), lateness from arrival to order
//! accepted (p50/p99/max; it includes `settle`, reported beside it), files
//! that started two orders or more (duplicates) and files that started
//! none within the grace (misses). With `--kill` the Scheduler is
//! SIGKILLed when half the files are in, and the other agent takes over.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt as _;
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::bench::client::{bench_job, deploy_jobs, request_deploy};
use crate::bench::report::{print_spread, Latency};
use crate::bench::setup::{ms, CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::{now_ms, parse_duration};

const JOB: &str = "ingest";
const AGENTS: [&str; 2] = ["agent-1", "agent-2"];
/// Longest wait for an agent to become Scheduler.
const ELECTION: Duration = Duration::from_secs(30);
/// Short leases, so a takeover after `--kill` is quick.
const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Files dropped into the watched folder
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub files: usize,
    /// Files per second; 0: all at once (a burst)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// The trigger's settle time
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub settle: Duration,
    /// The trigger's rescan period
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub rescan: Duration,
    /// SIGKILL the Scheduler agent when half the files are in (two agents run)
    #[arg(long)]
    pub kill: bool,
    /// After the last file, how long to wait for its order
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    files: usize,
    /// Files per second dropped (0: all at once).
    rate: f64,
    settle_ms: u64,
    rescan_ms: u64,
    kill: bool,
    /// Files whose order was accepted.
    started: usize,
    /// Orders accepted per second, from the first arrival to the last order.
    orders_per_s: f64,
    /// From a file's arrival to its order accepted (includes `settle_ms`).
    lateness: Latency,
    /// Files that started more than one order.
    duplicates: usize,
    /// Files that started no order within the grace.
    misses: usize,
    agent_peak_rss_kib: Option<u64>,
    elapsed_s: f64,
}

pub(in crate::bench) async fn files(args: FilesArgs) -> anyhow::Result<()> {
    if args.files == 0 {
        bail!("--files must be at least 1");
    }
    args.common.progress(format_args!(
        "baton bench files: {} files, {}, settle {}, rescan {}{}",
        args.files,
        match args.rate {
            r if r > 0.0 => format!("{r} a second"),
            _ => "all at once".to_string(),
        },
        humantime::format_duration(args.settle),
        humantime::format_duration(args.rescan),
        if args.kill {
            ", Scheduler SIGKILLed half-way"
        } else {
            ""
        }
    ));
    let setup = Setup {
        env: ENV,
        ..Setup::subagents(0, 1)
    };
    let mut bench = LocalBench::start(setup, &args.common).await?;
    let inbox = bench.evidence("files-in", None);
    let run = run(&mut bench.cluster, &bench.bus, &inbox, &args).await;
    let _ = std::fs::remove_dir_all(&inbox);
    let stamp = |r: &mut Report, s| r.elapsed_s = s;
    bench.finish(run, &args.common, stamp, print_table)
}

async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    inbox: &Path,
    args: &FilesArgs,
) -> anyhow::Result<Report> {
    std::fs::create_dir_all(inbox).with_context(|| format!("cannot create {}", inbox.display()))?;
    let s = bus.subjects().clone();
    let mut job = bench_job(JOB, "true", Vec::new());
    for name in ["file", "file_name"] {
        job.params.insert(name.into(), ParamSpec::default());
    }
    job.triggers = vec![TriggerSpec::File {
        dir: inbox.display().to_string(),
        pattern: "*.dat".into(),
        settle: args.settle,
        rescan: args.rescan,
    }];
    request_deploy(bus, &deploy_jobs(vec![job])).await?;
    let agents = if args.kill { &AGENTS[..] } else { &AGENTS[..1] };
    for id in agents {
        cluster.spawn_agent(id, &[])?;
    }
    let scheduler = scheduler(bus, None).await?;
    let mut accepted = bus
        .listen::<OrderAccepted>(s.event(JOB, "*", EventKind::Accepted))
        .await?;
    bus.flush().await?;

    let mut arrivals: BTreeMap<String, u64> = BTreeMap::new();
    let mut starts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let take = |event: OrderAccepted, starts: &mut BTreeMap<String, Vec<u64>>| {
        if let Some(name) = event.params.get("file_name") {
            starts.entry(name.clone()).or_default().push(event.at_ms);
        }
    };
    let pace = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let begun = Instant::now();
    for i in 0..args.files {
        let name = format!("f{i:07}.dat");
        let staged = inbox.join(format!(".{name}.part"));
        std::fs::write(&staged, name.as_bytes())?;
        std::fs::rename(&staged, inbox.join(&name))?;
        arrivals.insert(name, now_ms());
        if args.kill && i + 1 == args.files / 2 {
            cluster.signal(&scheduler, Signal::SIGKILL)?;
            args.common
                .progress(format_args!("SIGKILLed {scheduler} after {} files", i + 1));
        }
        if let Some(pace) = pace {
            let due = begun + pace * (i as u32 + 1);
            // take events while pacing, so none queue up unread
            while let Ok(Some(event)) = tokio::time::timeout_at(due.into(), accepted.next()).await {
                take(event.body, &mut starts);
            }
        }
    }
    let last_arrival = tokio::time::Instant::now();
    loop {
        let all_in = arrivals.keys().all(|n| starts.contains_key(n));
        let quiet = if all_in {
            // then a little longer, for duplicates
            last_arrival.max(tokio::time::Instant::now()) + Duration::from_secs(2)
        } else {
            last_arrival + args.grace
        };
        match tokio::time::timeout_at(quiet, accepted.next()).await {
            Ok(Some(event)) => take(event.body, &mut starts),
            Ok(None) => bail!("the event subscription ended"),
            Err(_) => break,
        }
    }
    let first_arrival = arrivals.values().min().copied().unwrap_or(0);
    let mut lateness = Vec::new();
    let mut last_start = first_arrival;
    for (name, at) in &arrivals {
        if let Some(first) = starts.get(name).and_then(|s| s.iter().min()) {
            lateness.push(first.saturating_sub(*at) as f64);
            last_start = last_start.max(*first);
        }
    }
    let started = lateness.len();
    let span_s = (last_start.saturating_sub(first_arrival) as f64 / 1000.0).max(0.001);
    Ok(Report {
        scenario: "files",
        files: args.files,
        rate: args.rate,
        settle_ms: ms(args.settle),
        rescan_ms: ms(args.rescan),
        kill: args.kill,
        started,
        orders_per_s: started as f64 / span_s,
        lateness: Latency::of(&mut lateness),
        duplicates: starts.values().filter(|s| s.len() > 1).count(),
        misses: args.files - started,
        agent_peak_rss_kib: (agents.iter())
            .filter_map(|a| cluster.pid(a).and_then(LocalCluster::peak_memory_kib))
            .max(),
        elapsed_s: 0.0,
    })
}

/// Waits for an agent other than `not` to report itself Scheduler.
async fn scheduler(bus: &Bus, not: Option<&str>) -> anyhow::Result<String> {
    let mut beats = bus
        .listen::<AgentHeartbeat>(bus.subjects().agent_heartbeat("*"))
        .await?;
    let deadline = tokio::time::Instant::now() + ELECTION;
    loop {
        let beat = tokio::time::timeout_at(deadline, beats.next())
            .await
            .context("no agent became Scheduler in time")?
            .context("the heartbeats ended")?
            .body;
        if beat.role == AgentRole::Scheduler && Some(beat.agent_id.as_str()) != not {
            return Ok(beat.agent_id);
        }
    }
}

fn print_table(r: &Report) {
    println!("file triggers: {} files", r.files);
    let rate = match r.rate {
        x if x > 0.0 => format!("{x} a second"),
        _ => "all at once".to_string(),
    };
    println!("  {:<18}{rate}", "dropped");
    println!(
        "  {:<18}{} ms (rescan {} ms)",
        "settle", r.settle_ms, r.rescan_ms
    );
    if r.kill {
        println!("  {:<18}the Scheduler, half-way", "SIGKILLed");
    }
    println!("  {:<18}{} of {}", "orders started", r.started, r.files);
    println!("  {:<18}{:.0}", "orders/s", r.orders_per_s);
    print_spread("lateness", &r.lateness, 0);
    println!("  {:<18}{}", "duplicates", r.duplicates);
    println!("  {:<18}{}", "misses", r.misses);
    println!("  {:<18}{:.1} s", "elapsed", r.elapsed_s);
}
