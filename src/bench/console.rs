//! `baton bench console`: how fast the web console's JSON endpoints answer
//! with many orders in the store. `--orders` orders of a job that runs
//! `true` go through the cluster (the broker holds the newest
//! `broker.keep_finished` of them, 10,000 by default, and lists those); then
//! `baton console` is asked, over HTTP like a page asks, for the first page
//! of orders, a filtered page, a page deep in the list (through the `next`
//! cursors), the status and the jobs, each `--rounds` times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;

use super::client::{bench_job, deploy_jobs, request_deploy};
use super::closed_loop::ClosedLoop;
use super::report::{print_spread, Latency};
use super::setup::{CommonArgs, LocalBench, Setup};

const JOB: &str = "bench-noop";

#[derive(Debug, Args)]
pub struct ConsoleBenchArgs {
    /// Orders run (and stored) before the console is asked
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub orders: usize,
    /// Orders in flight at once
    #[arg(short = 'c', long, default_value_t = 64, value_parser = crate::bench::at_least_one::<usize>)]
    pub concurrency: usize,
    /// Times each endpoint is asked
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// How deep the deep page is (pages of 50 followed through `next`)
    #[arg(long, default_value_t = 20)]
    pub depth: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct ConsoleReport {
    scenario: &'static str,
    orders_stored: usize,
    orders_per_s: f64,
    /// Each endpoint, asked `rounds` times: its path and answer times.
    endpoints: Vec<Endpoint>,
    elapsed_s: f64,
}

#[derive(Debug, Serialize)]
struct Endpoint {
    name: &'static str,
    path: String,
    bytes: usize,
    latency: Latency,
}

pub async fn console(args: ConsoleBenchArgs) -> anyhow::Result<()> {
    let mut bench = LocalBench::start(Setup::subagents(2, 32), &args.common).await?;
    let run = measure(&mut bench, &args).await;
    bench.finish(run, &args.common, |r, s| r.elapsed_s = s, print_table)
}

async fn measure(bench: &mut LocalBench, args: &ConsoleBenchArgs) -> anyhow::Result<ConsoleReport> {
    request_deploy(
        &bench.bus,
        &deploy_jobs(vec![bench_job(JOB, "true", Vec::new())]),
    )
    .await?;
    args.common.progress(format!(
        "running {} orders through the cluster",
        args.orders
    ));
    let started = Instant::now();
    let outcome = ClosedLoop::start(
        &bench.bus,
        JOB,
        args.orders,
        args.concurrency,
        Duration::from_secs(30),
        Duration::from_secs(3600),
    )
    .await?
    .run()
    .await;
    if outcome.submit_errors > 0 {
        bail!(
            "{} of {} submits failed",
            outcome.submit_errors,
            args.orders
        );
    }
    let submits_per_s = args.orders as f64 / started.elapsed().as_secs_f64();

    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    bench
        .cluster
        .spawn("console", &["console", "--listen", &addr.to_string()])?;
    wait_listening(addr)?;
    // the deep page's cursor, followed page by page as a person would
    let mut deep = "/api/orders?limit=50".to_string();
    for _ in 0..args.depth {
        let (_, body) = get(addr, &deep)?;
        let page: serde_json::Value = serde_json::from_str(&body)?;
        let Some(next) = page["next"].as_str() else {
            break;
        };
        deep = format!("/api/orders?limit=50&after={next}");
    }
    args.common.progress("asking the console");
    let endpoints = [
        ("orders, first page", "/api/orders?limit=50".to_string()),
        (
            "orders, filtered",
            format!("/api/orders?limit=50&job={JOB}&state=succeeded"),
        ),
        ("orders, deep page", deep),
        ("status", "/api/status".to_string()),
        ("jobs", "/api/jobs".to_string()),
    ];
    let mut measured = Vec::new();
    for (name, path) in endpoints {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.rounds.max(1) {
            let took = Instant::now();
            let (status, body) = get(addr, &path)?;
            times.push(took.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("{path}: HTTP {status}: {body}");
            }
            bytes = body.len();
        }
        measured.push(Endpoint {
            name,
            path,
            bytes,
            latency: Latency::of(&mut times),
        });
    }
    Ok(ConsoleReport {
        scenario: "console",
        orders_stored: args.orders,
        orders_per_s: submits_per_s,
        endpoints: measured,
        elapsed_s: 0.0,
    })
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("baton console did not listen on {addr} within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `GET path` over one HTTP/1.1 connection: the status and the body.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("HTTP response without a body")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP response without a status")?;
    Ok((status, body.to_string()))
}

fn print_table(r: &ConsoleReport) {
    println!("console with {} orders stored", r.orders_stored);
    println!("  {:<18}{:.0}", "orders per s", r.orders_per_s);
    for e in &r.endpoints {
        println!("  {} ({}, {} bytes)", e.name, e.path, e.bytes);
        print_spread("answer", &e.latency, 1);
    }
    println!("  {:<18}{:.0} s", "bench took", r.elapsed_s);
}
