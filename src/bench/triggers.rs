//! `baton bench triggers`: orders started by event triggers. The `subject`
//! mode deploys one job with a subject trigger (`shop.orders.*`, the
//! message's `id` mapped to a parameter), starts one agent and waits until
//! it is Scheduler, then publishes `--rate` messages a second for
//! `--seconds` (with the `publisher` role's credentials, as any program
//! would) and follows the orders' `accepted` and `started` events until
//! every message started an order or `--grace` has passed after the last.
//!
//! Reported: orders started per second (from the first publish to the last
//! start), lateness from each message's publish to its task's start
//! (p50/p99/max), duplicates (a message that made more than one order) and
//! misses (a message that started none). Another mode (file triggers) may
//! be added beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::stream::{self, StreamExt as _};
use serde::Serialize;

use crate::auth::Role;
use crate::bench::client::{deploy_jobs, listen, sh_job};
use crate::bench::report::{print_spread, Latency};
use crate::bench::setup::{CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;
use crate::time::parse_duration;

const JOB: &str = "bench-subject";
const AGENT: &str = "agent-1";
/// Longest wait for the broker's consumer and for the Scheduler.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which event triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerMode {
    /// NATS-subject triggers: one message, one order
    Subject,
}

#[derive(Debug, Args)]
pub struct TriggersArgs {
    #[arg(long, value_enum, default_value = "subject")]
    pub mode: TriggerMode,
    /// Messages published per second
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to publish
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// After the last message, how long to wait for the orders to start
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// Subagents running the orders (each a trivial `true`)
    #[arg(long, default_value_t = 2, value_parser = crate::bench::at_least_one::<usize>)]
    pub subagents: usize,
    /// Tasks each subagent runs at once
    #[arg(long, default_value_t = 32)]
    pub capacity: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    mode: TriggerMode,
    rate_per_s: f64,
    window_s: u64,
    published: usize,
    /// Orders whose task started, one per message at most.
    started: usize,
    /// Started orders per second, from the first publish to the last start.
    started_per_s: f64,
    /// From a message's publish to its task's start.
    lateness: Latency,
    /// Messages that made more than one order.
    duplicates: usize,
    /// Messages whose order never started within the grace.
    misses: usize,
    agent_peak_rss_kib: Option<u64>,
    broker_peak_rss_kib: Option<u64>,
    elapsed_s: f64,
}

pub(super) async fn triggers(args: TriggersArgs) -> anyhow::Result<()> {
    if args.rate <= 0.0 || args.seconds == 0 || args.subagents == 0 {
        bail!("--rate, --seconds and --subagents must be above 0");
    }
    let count = (args.rate * args.seconds as f64).round() as usize;
    if count == 0 || count > 1_000_000 {
        bail!("--rate times --seconds must be between 1 and 1,000,000 messages");
    }
    args.common.progress(format_args!(
        "baton bench triggers --mode subject: {count} messages at {} /s over {} s, {} subagents of {}",
        args.rate, args.seconds, args.subagents, args.capacity
    ));
    let setup = Setup::subagents(args.subagents, args.capacity);
    let mut bench = LocalBench::start(setup, &args.common).await?;
    let run = run(&mut bench.cluster, &bench.bus, &args, count).await;
    let stamp = |r: &mut Report, s| r.elapsed_s = s;
    bench.finish(run, &args.common, stamp, print_table)
}

/// What the events said, as they came.
enum Seen {
    Accepted(OrderAccepted),
    Started(TaskStarted),
}

async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    args: &TriggersArgs,
    count: usize,
) -> anyhow::Result<Report> {
    let s = bus.subjects().clone();
    let mut job = sh_job(JOB, "exit 0", "bench", Vec::new());
    job.params.insert("id".into(), ParamSpec::default());
    job.triggers = vec![TriggerSpec::Subject {
        name: "shop.orders.*".into(),
        params: [("id".to_string(), "$.id".to_string())].into(),
    }];
    let _: DeployReply = bus
        .request(s.deploy(), &deploy_jobs(vec![job]), READY_TIMEOUT)
        .await
        .context("deploy")?;
    let stream = format!("{}_triggers", s.prefix());
    let consumer = crate::triggers::subject::consumer_name(JOB);
    wait(
        READY_TIMEOUT,
        "the broker made the trigger consumer",
        || async { bus.trigger_backlog(&stream, &consumer).await.is_ok() },
    )
    .await?;
    cluster.spawn_agent(AGENT, &[])?;
    wait(
        READY_TIMEOUT,
        "the agent holds the Scheduler role",
        || async {
            let status: Option<StatusReply> = bus
                .request(
                    s.status(),
                    &StatusRequest::default(),
                    Duration::from_secs(5),
                )
                .await
                .ok();
            status.is_some_and(|st| {
                st.agents
                    .iter()
                    .any(|a| a.id == AGENT && a.role == AgentRole::Scheduler)
            })
        },
    )
    .await?;
    let accepted = listen(bus, s.event(JOB, "*", EventKind::Accepted), Seen::Accepted).await?;
    let started = listen(
        bus,
        s.task_events(JOB, "*", EventKind::Started),
        Seen::Started,
    )
    .await?;
    let mut events = stream::select(accepted, started);
    bus.flush().await?;
    let credentials = cluster.credentials(Role::Publisher, None)?;
    let publisher = cluster.connect_with(credentials).await?;

    eprintln!("publishing {count} messages");
    let mut ledger = Ledger::default();
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let begun = tokio::time::Instant::now();
    let mut next = 0usize;
    let mut last_publish = begun;
    loop {
        let due = begun + gap.mul_f64(next as f64);
        let event = if next < count {
            tokio::select! {
                e = events.next() => Some(e),
                _ = tokio::time::sleep_until(due) => None,
            }
        } else {
            let until = last_publish + args.grace;
            if ledger.started_all(count) {
                break;
            }
            tokio::select! {
                e = events.next() => Some(e),
                _ = tokio::time::sleep_until(until) => break,
            }
        };
        match event {
            Some(Some(Seen::Accepted(a))) => ledger.accepted(&a),
            Some(Some(Seen::Started(t))) => ledger.started(&t),
            Some(None) => bail!("the event subscription ended"),
            None => {
                let id = format!("m{next}");
                let payload = format!(r#"{{"id":"{id}"}}"#);
                ledger.published(&id, now_ms());
                publisher
                    .publish_with_headers("shop.orders.new".into(), &[], Bytes::from(payload))
                    .await?;
                next += 1;
                if next == count {
                    publisher.flush().await?;
                    last_publish = tokio::time::Instant::now();
                    eprintln!("published {count}; waiting for their orders to start");
                }
            }
        }
    }
    let figures = ledger.figures();
    Ok(Report {
        scenario: "triggers",
        mode: args.mode,
        rate_per_s: args.rate,
        window_s: args.seconds,
        published: count,
        started: figures.started,
        started_per_s: figures.started_per_s,
        lateness: figures.lateness,
        duplicates: figures.duplicates,
        misses: figures.misses,
        agent_peak_rss_kib: cluster.pid(AGENT).and_then(LocalCluster::peak_memory_kib),
        broker_peak_rss_kib: cluster
            .pid("broker")
            .and_then(LocalCluster::peak_memory_kib),
        elapsed_s: 0.0,
    })
}

/// Polls `check` every 100 ms until it holds, or fails naming `what`.
async fn wait<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The bookkeeping of one run, pure: what was published when, which
/// orders each message made, when each order's first task started.
#[derive(Debug, Default)]
struct Ledger {
    published_ms: BTreeMap<String, u64>,
    /// Message id → the orders accepted for it.
    orders: BTreeMap<String, BTreeSet<String>>,
    /// Order id → its first task's start.
    started_ms: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Figures {
    started: usize,
    started_per_s: f64,
    lateness: Latency,
    duplicates: usize,
    misses: usize,
}

impl Ledger {
    fn published(&mut self, id: &str, at_ms: u64) {
        self.published_ms.insert(id.to_string(), at_ms);
    }

    fn accepted(&mut self, event: &OrderAccepted) {
        if let Some(id) = event.params.get("id") {
            let orders = self.orders.entry(id.clone()).or_default();
            orders.insert(event.order_id.clone());
        }
    }

    fn started(&mut self, event: &TaskStarted) {
        self.started_ms
            .entry(event.order_id.clone())
            .or_insert(event.at_ms);
    }

    /// The start of the first of `id`'s orders that started.
    fn start_of(&self, id: &str) -> Option<u64> {
        let orders = self.orders.get(id)?;
        orders
            .iter()
            .filter_map(|o| self.started_ms.get(o))
            .min()
            .copied()
    }

    fn started_all(&self, count: usize) -> bool {
        self.published_ms.len() == count
            && self
                .published_ms
                .keys()
                .all(|id| self.start_of(id).is_some())
    }

    fn figures(&self) -> Figures {
        let mut lateness = Vec::new();
        let mut last_start = 0;
        for (id, sent) in &self.published_ms {
            if let Some(start) = self.start_of(id) {
                lateness.push(start.saturating_sub(*sent) as f64);
                last_start = last_start.max(start);
            }
        }
        let first = self.published_ms.values().min().copied().unwrap_or(0);
        let span_s = last_start.saturating_sub(first) as f64 / 1000.0;
        let started = lateness.len();
        Figures {
            started,
            started_per_s: if span_s > 0.0 {
                started as f64 / span_s
            } else {
                0.0
            },
            lateness: Latency::of(&mut lateness),
            duplicates: self.orders.values().filter(|o| o.len() > 1).count(),
            misses: self.published_ms.len() - started,
        }
    }
}

fn print_table(r: &Report) {
    println!("baton bench triggers --mode subject");
    println!(
        "messages:         {} published at {} /s over {} s",
        r.published, r.rate_per_s, r.window_s
    );
    println!(
        "orders started:   {} ({:.1} /s from the first publish to the last start)",
        r.started, r.started_per_s
    );
    println!("lateness, publish to task start:");
    print_spread("", &r.lateness, 0);
    println!("duplicates:       {}", r.duplicates);
    println!("misses:           {}", r.misses);
    println!(
        "peak memory:      agent {}, broker {}",
        crate::bench::report::mib(r.agent_peak_rss_kib),
        crate::bench::report::mib(r.broker_peak_rss_kib)
    );
    println!("bench took {:.1} s", r.elapsed_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(order: &str, id: &str) -> OrderAccepted {
        OrderAccepted {
            order_id: order.into(),
            job: JOB.into(),
            params: [("id".to_string(), id.to_string())].into(),
            slot_ms: None,
            at_ms: 0,
        }
    }

    fn started(order: &str, at_ms: u64) -> TaskStarted {
        TaskStarted {
            order_id: order.into(),
            job: JOB.into(),
            task_id: format!("{order}-t"),
            attempt: 1,
            subagent_id: "sub-1".into(),
            pid: None,
            at_ms,
        }
    }

    #[test]
    fn lateness_runs_from_publish_to_the_first_start_and_duplicates_and_misses_are_counted() {
        let mut l = Ledger::default();
        for (i, at) in [1_000, 1_100, 1_200, 1_300].iter().enumerate() {
            l.published(&format!("m{i}"), *at);
        }
        l.accepted(&accepted("o0", "m0"));
        l.accepted(&accepted("o0", "m0")); // the same order seen again
        l.accepted(&accepted("o1", "m1"));
        l.accepted(&accepted("o1b", "m1")); // a second order: a duplicate
        l.accepted(&accepted("o2", "m2")); // never starts: a miss
        l.started(&started("o0", 1_050));
        l.started(&started("o0", 1_900)); // a retry's start is not the first
        l.started(&started("o1", 1_400));
        l.started(&started("o1b", 1_500));
        assert!(!l.started_all(4));
        let f = l.figures();
        assert_eq!(f.started, 2);
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.misses, 2);
        assert_eq!(f.lateness.max_ms, 300.0);
        assert_eq!(f.lateness.p50_ms, 50.0);
        assert!((f.started_per_s - 2.0 / 0.4).abs() < 1e-9);
    }
}
