//! `baton bench cluster`: Baton on a three-node JetStream cluster
//! (`natsd::cluster`, random ports, Baton's authentication) with every
//! bucket at replicas 3, two brokers, two agents and two subagents, each
//! given all three URLs so it fails over. A steady stream of orders (each
//! under its own request id, sent again until accepted, as in
//! `failover-broker`) runs beside a job firing every second.
//!
//! Each round SIGKILLs a node of the orders bucket's stream
//! (`KV_<prefix>_orders`): odd rounds its leader, even rounds a follower;
//! the node is started again after `--down` and the round ends once it is a
//! current replica again (`round.rs`); meanwhile it notes which of Baton's
//! buckets' streams the node led and when each had a new leader, to tell
//! JetStream's election from Baton's own part (`elections.rs`). Then it
//! SIGKILLs the Scheduler agent `--scheduler-kills` times
//! (`scheduler.rs`). At the end the bench stops
//! submitting, waits for every accepted order to be final, and counts from
//! the tasks' marker file and the trigger's slot file the orders lost or
//! run twice and the slots run twice (`report.rs`).

mod elections;
mod report;
mod round;
mod scatter;
mod scheduler;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tokio::time::Instant;

use report::{print_table, read_slots, runs_of_slots_from, Report, Victim};

use super::broker::ledger::count_markers;
use super::broker::traffic::{Seen, Traffic, GIVE_UP};
use super::client::{deploy_jobs, request_deploy, sh_job};
use super::setup::{subagent_ids, CommonArgs};
use crate::auth::{AuthDir, Role};
use crate::bus::{Bus, Placement};
use crate::launch::{wait_for_status, LocalCluster, Logs};
use crate::natsd::NatsClusterOptions;
use crate::protocol::*;
use crate::time::{now_ms, parse_duration};

const PREFIX: &str = "bench";
const JOB: &str = "bench-cluster";
const TICK: &str = "bench-cluster-tick";
const NODES: usize = 3;
const BROKERS: usize = 2;
const AGENTS: usize = 2;
const SUBAGENTS: usize = 2;
const CAPACITY: u32 = 8;
/// Longest wait for the processes to come up, and at the end for the last
/// orders to be final.
pub(super) const LIMIT: Duration = Duration::from_secs(60);
/// `$1` the marker file, `$2` seconds to sleep.
const TASK_SCRIPT: &str = r#"echo "$BATON_ORDER_ID" >> "$1"; sleep "$2""#;
/// `$1` the slot file: the slot and when it ran, in ms.
const TICK_SCRIPT: &str = r#"echo "$BATON_SLOT_MS $(date +%s%3N)" >> "$1""#;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Node kills: odd rounds kill the orders stream's leader, even rounds a follower
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Orders submitted per second
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long a killed node stays down
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub down: Duration,
    /// Then one more round killing the orders stream's leader and a follower at once (no quorum)
    #[arg(long)]
    pub no_quorum: bool,
    /// Then SIGKILL the agent that is the Scheduler this many times (started again after --down)
    #[arg(long, default_value_t = 1)]
    pub scheduler_kills: usize,
    /// How long to let the cluster run between rounds
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub settle: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The traffic and what the bench noted of it, plus the stream it watches.
pub(super) struct Watch {
    traffic: Traffic,
    observer: Bus,
    stream: String,
    slots: PathBuf,
    accepted_ms: Vec<u64>,
    finished_ms: Vec<u64>,
}

impl Watch {
    /// Follows the traffic until `until`.
    async fn follow(&mut self, until: Instant) {
        self.follow_until(until, |_| false).await;
    }

    /// Follows the traffic until `until`, or until `stop` holds for an event.
    async fn follow_until(&mut self, until: Instant, stop: impl Fn(&Seen) -> bool) {
        while let Some(seen) = self.traffic.step(until).await {
            match &seen {
                Seen::Accepted(_, at) => self.accepted_ms.push(*at),
                Seen::Finished(_) => self.finished_ms.push(now_ms()),
                _ => {}
            }
            if stop(&seen) {
                return;
            }
        }
    }

    /// Awaits `work` while following the traffic, so what the traffic
    /// brings is seen (and timed) as it comes, not after `work`.
    async fn while_following<F: std::future::Future>(&mut self, work: F) -> F::Output {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = self.follow(Instant::now() + Duration::from_millis(100)) => {}
            }
        }
    }

    /// The orders stream's placement, asked while following the traffic;
    /// `None` when it cannot be read now.
    async fn placement(&mut self) -> Option<Placement> {
        let (observer, stream) = (self.observer.clone(), self.stream.clone());
        self.while_following(async move { placement_of(&observer, &stream).await })
            .await
    }

    /// When the trigger's job ran, in ms.
    fn fires(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(&self.slots).unwrap_or_default();
        read_slots(&text).0
    }

    /// When the trigger's job ran for a slot due at or after `from_ms`.
    fn fires_of_slots_from(&self, from_ms: u64) -> Vec<u64> {
        let text = std::fs::read_to_string(&self.slots).unwrap_or_default();
        runs_of_slots_from(&text, from_ms)
    }
}

/// `stream`'s placement; `None` when it cannot be read within a second.
async fn placement_of(observer: &Bus, stream: &str) -> Option<Placement> {
    let ask = tokio::time::timeout(Duration::from_secs(1), observer.placement(stream));
    ask.await.ok()?.ok()
}

pub(super) async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be above 0 and at most 1000 orders/s");
    }
    args.common.progress(format_args!(
        "baton bench cluster: {NODES} nodes, {} rounds, {} orders/s, node down {:?}",
        args.rounds, args.rate, args.down
    ));
    let started = std::time::Instant::now();
    let work = std::env::temp_dir().join(format!("baton-bench-cluster-{}", std::process::id()));
    let evidence = args.common.logs.clone().unwrap_or_else(|| work.clone());
    let result = async {
        let mut cluster = start(&work, &args.common).await?;
        let run = run(&mut cluster, &args, &evidence).await;
        cluster.stop(Duration::from_secs(5));
        run
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    let mut report = result?;
    report.elapsed_s = started.elapsed().as_secs_f64();
    args.common.emit(&report, print_table)
}

/// The nodes, then the brokers, agents and subagents, each preferring a
/// different node; ready once the subagents are available and an agent
/// is the Scheduler.
async fn start(work: &Path, common: &CommonArgs) -> anyhow::Result<LocalCluster> {
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let logs = common.logs.clone().unwrap_or_else(|| work.join("logs"));
    let ids = subagent_ids(SUBAGENTS);
    AuthDir::init(&work.join("auth"), PREFIX, &ids)?;
    let nats = NatsClusterOptions {
        nodes: NODES,
        dir: work.join("nats"),
        ..Default::default()
    };
    let exe = std::env::current_exe()?;
    let mut cluster =
        LocalCluster::start_cluster(nats, exe, PREFIX, Logs::Dir(logs), work.join("auth")).await?;
    cluster.env("BATON_NATS__REPLICAS", "3");
    let mut n = 0;
    let mut spawn = |cluster: &mut LocalCluster, name: &str, args: &[&str]| {
        n += 1;
        let urls = cluster.urls_from(n % NODES);
        cluster.spawn_via(name, args, &urls)
    };
    for i in 1..=BROKERS {
        let id = format!("broker-{i}");
        spawn(&mut cluster, &id, &["broker", "--id", &id])?;
    }
    for i in 1..=AGENTS {
        let id = format!("agent-{i}");
        spawn(&mut cluster, &id, &["agent", "--id", &id])?;
    }
    let capacity = CAPACITY.to_string();
    for id in &ids {
        spawn(
            &mut cluster,
            id,
            &["subagent", "--id", id, "--capacity", &capacity],
        )?;
    }
    Ok(cluster)
}

async fn run(
    cluster: &mut LocalCluster,
    args: &ClusterArgs,
    evidence: &Path,
) -> anyhow::Result<Report> {
    let bus = cluster.client().await?;
    // stream info of the orders bucket is the broker's to read
    let observer = cluster
        .connect_with(cluster.seed(Role::Broker, None))
        .await?;
    let what = "the subagents available and a Scheduler";
    wait_for_status(&bus, LIMIT, what, |s| {
        let subagents = s
            .subagents
            .iter()
            .filter(|a| a.state == SubagentState::Available);
        subagents.count() >= SUBAGENTS && s.agents.iter().any(|a| a.role == AgentRole::Scheduler)
    })
    .await?;
    std::fs::create_dir_all(evidence)?;
    let pid = std::process::id();
    let markers = evidence.join(format!("cluster-markers-{pid}"));
    let slots = evidence.join(format!("cluster-slots-{pid}"));
    let traffic = Traffic::start(&bus, JOB, args.rate).await?;
    deploy(&bus, &markers, &slots).await?;
    let mut w = Watch {
        traffic,
        observer,
        stream: format!("KV_{PREFIX}_orders"),
        slots: slots.clone(),
        accepted_ms: Vec::new(),
        finished_ms: Vec::new(),
    };
    w.traffic.feed(true);
    w.follow(Instant::now() + args.settle).await;
    let mut rounds = Vec::new();
    let quorum = args.no_quorum.then_some(Victim::Quorum);
    let victims = (1..=args.rounds).map(Victim::of_round).chain(quorum);
    for (number, victim) in (1..).zip(victims) {
        let r = round::round(&mut w, cluster, number, victim, args.down).await?;
        args.common.progress(format_args!(
            "round {number}: killed {} ({}, leading {:?}): next accepted {:?} ms, elections {:?} ms, Baton's part {:?} ms, stall {} ms, trigger gap {:?} ms, caught up {} after {:?} ms",
            r.node, victim.label(), r.led, r.next_accepted_ms, r.elected_ms, r.baton_ms, r.stall_ms, r.trigger_gap_ms, r.caught_up, r.catch_up_ms
        ));
        rounds.push(r);
        w.follow(Instant::now() + args.settle).await;
    }
    let mut scheduler_moves = Vec::new();
    for _ in 0..args.scheduler_kills {
        let m = scheduler::kill_scheduler(&mut w, cluster, &bus, args.down).await?;
        args.common.progress(format_args!(
            "Scheduler {} killed: {:?} took the role after {:?} ms, the trigger ran {:?} ms after the kill",
            m.killed, m.successor, m.moved_ms, m.next_fire_ms
        ));
        scheduler_moves.push(m);
        w.follow(Instant::now() + args.settle).await;
    }
    w.traffic.feed(false);
    drain(&mut w).await;
    let text = std::fs::read_to_string(&markers).unwrap_or_default();
    let (_, slots_twice, slots_run) =
        read_slots(&std::fs::read_to_string(&slots).unwrap_or_default());
    Ok(Report {
        scenario: "cluster",
        nodes: NODES,
        replicas: 3,
        brokers: BROKERS,
        agents: AGENTS,
        subagents: SUBAGENTS,
        rate: args.rate,
        down_ms: args.down.as_millis() as u64,
        rounds,
        scheduler_moves,
        tally: w.traffic.ledger.tally(&count_markers(&text)),
        slots_twice,
        slots_run,
        rejected: w.traffic.rejected.clone().into_iter().collect(),
        elapsed_s: 0.0,
    })
}

/// The order job (marks, then sleeps 0.1-0.5 s) and the trigger's job
/// (records its slot and when it ran), firing every second.
async fn deploy(bus: &Bus, markers: &Path, slots: &Path) -> anyhow::Result<()> {
    let secs = ParamSpec {
        default: Some("0.1".into()),
        required: false,
        description: Some("seconds to sleep".into()),
    };
    let job = JobSpec {
        params: [("secs".to_string(), secs)].into(),
        ..sh_job(
            JOB,
            TASK_SCRIPT,
            "baton-bench-task",
            vec![markers.display().to_string(), "{{secs}}".into()],
        )
    };
    let tick = JobSpec {
        triggers: vec![TriggerSpec::Cron {
            expr: "* * * * * *".into(),
            time_zone: None,
            dst: Default::default(),
            calendar: None,
            jitter: None,
        }],
        concurrency: ConcurrencyPolicy::Allow,
        ..sh_job(
            TICK,
            TICK_SCRIPT,
            "baton-bench-tick",
            vec![slots.display().to_string()],
        )
    };
    request_deploy(bus, &deploy_jobs(vec![job, tick])).await
}

/// Lets the last submits be accepted, then waits until every accepted
/// order is final (asking the broker about those whose event did not come).
async fn drain(w: &mut Watch) {
    let deadline = Instant::now() + GIVE_UP.max(LIMIT);
    while w.traffic.submitting() > 0 {
        if w.traffic.step(deadline).await.is_none() {
            break;
        }
    }
    let deadline = Instant::now() + LIMIT;
    while !w.traffic.ledger.unfinished().is_empty() && Instant::now() < deadline {
        w.follow(Instant::now() + Duration::from_secs(1)).await;
        w.traffic.poll_unfinished().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_have_no_placeholders() {
        assert!(!TASK_SCRIPT.contains("{{") && !TICK_SCRIPT.contains("{{"));
    }
}
