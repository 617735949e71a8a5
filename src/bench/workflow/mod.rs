//! `baton bench workflow`: orders through a workflow of sequential steps on a
//! round-robin cluster of subagents. It prints workflow orders per second,
//! order duration, the broker's hand-off between steps (a step order
//! finished -> the next step order placed, dispatched and started) and how
//! often consecutive steps changed subagent. With `--kill` the busiest
//! subagent is SIGKILLed (and not restarted) once a third of the orders are
//! submitted and a step runs, and it prints the steps that ran again, the
//! orders lost and the steps run twice, judged by marker lines the steps
//! write themselves when they complete.
//!
//! Times of steps are the wall-clock milliseconds of the orders' `history`
//! (one host, one clock); an order's duration is the bench's own, from its
//! submit to its `finished` event.
//!
//! - `records.rs`: the orders' records read afterwards and the figures
//!   taken from them and the markers (pure but for the reading).
//! - `report.rs`: the figures and their table.

mod records;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::stream;
use futures::StreamExt;
use nix::sys::signal::Signal;

use records::{ran_twice, read_records, result_windows, step_figures};
use report::{print_table, KillReport, WorkflowReport};

use super::client::{deploy_jobs, listen, member, request_deploy, sh_job};
use super::closed_loop::{ClosedLoop, Outcome};
use super::report::Latency;
use super::setup::{subagent_ids, CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::config::SubagentConfig;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::parse_duration;

/// The workflow, and the round-robin cluster its steps run in.
const WORKFLOW: &str = "bench-workflow";
/// The job every step runs.
const JOB: &str = "bench-step";
/// Longest wait for one request (a submit, an order's record).
const REQUEST: Duration = Duration::from_secs(10);
/// With `--kill`, longest wait for a step to run once a third of the orders
/// are submitted; then a subagent is killed anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The step's last act: it appends `workflow-order step step-attempt
/// step-order pid ms` to `$1/markers` once its work is done. A step killed
/// with its subagent never writes it, so a second line for one step is a
/// second completed run. No `{{` anywhere, so the broker substitutes nothing.
const MARKER: &str = r#"echo "$BATON_WORKFLOW_ORDER_ID $BATON_STEP $BATON_STEP_ATTEMPT $BATON_ORDER_ID $$ $(date +%s%3N)" >> "$1/markers""#;

#[derive(Debug, Args)]
pub struct WorkflowArgs {
    /// Workflow orders to submit
    #[arg(short = 'n', long, default_value_t = 50)]
    pub orders: usize,
    /// Workflow orders in flight at once (submitted, not yet finished)
    #[arg(short = 'c', long, default_value_t = 10, value_parser = crate::bench::at_least_one::<usize>)]
    pub concurrency: usize,
    /// Steps of the workflow, each after the one before
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// How long each step sleeps, in milliseconds (0: it only writes its marker)
    #[arg(long, default_value_t = 200)]
    pub step_ms: u64,
    /// Subagent processes, all members of the round-robin cluster
    #[arg(long, default_value_t = 3, value_parser = crate::bench::at_least_one::<usize>)]
    pub subagents: usize,
    /// Tasks each subagent runs at once [default: the subagent's default]
    #[arg(long)]
    pub capacity: Option<u32>,
    /// SIGKILL the busiest subagent (not restarted) once a third of the
    /// orders are submitted and a step runs
    #[arg(long)]
    pub kill: bool,
    /// Stop waiting after this long; orders not succeeded by then are lost
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// An event of a step order.
enum StepEvent {
    Started(TaskStarted),
    Finished(OrderFinished),
}

pub(super) async fn workflow(args: WorkflowArgs) -> anyhow::Result<()> {
    if args.orders == 0 || args.concurrency == 0 || args.steps == 0 || args.subagents == 0 {
        bail!("--orders, --concurrency, --steps and --subagents must be at least 1");
    }
    if args.kill && args.subagents < 2 {
        bail!("--kill needs at least 2 subagents: one is killed, the others carry on");
    }
    let capacity = args
        .capacity
        .unwrap_or_else(|| SubagentConfig::default().capacity);
    let mut bench =
        LocalBench::start(Setup::subagents(args.subagents, capacity), &args.common).await?;
    let dir = bench.evidence("markers", Some("workflow"));
    let result = async {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let steps = step_names(args.steps);
        deploy(&bench.bus, args.subagents, &steps, &dir, args.step_ms).await?;
        run(
            &mut bench.cluster,
            &bench.bus,
            &args,
            capacity,
            &steps,
            &dir,
        )
        .await
    }
    .await;
    bench.stop();
    args.common.emit(&result?, print_table)
}

fn step_names(steps: usize) -> Vec<String> {
    (1..=steps).map(|i| format!("s{i}")).collect()
}

/// Deploys the round-robin cluster of `sub-1..=subagents`, the restartable
/// step job in it and the workflow of `steps` in a row.
async fn deploy(
    bus: &Bus,
    subagents: usize,
    steps: &[String],
    dir: &Path,
    step_ms: u64,
) -> anyhow::Result<()> {
    let members = subagent_ids(subagents)
        .iter()
        .map(|id| member(id, 0))
        .collect();
    let script = match step_ms {
        0 => MARKER.to_string(),
        ms => format!("sleep {:.3}\n{MARKER}", ms as f64 / 1000.0),
    };
    let job = JobSpec {
        timeout_ms: Some(step_ms + 60_000),
        description: Some("writes a marker line, sleeps".into()),
        cluster: Some(WORKFLOW.into()),
        ..sh_job(
            JOB,
            &script,
            "baton-bench-step",
            vec![dir.display().to_string()],
        )
    };
    let workflow = WorkflowSpec {
        name: WORKFLOW.into(),
        description: Some(format!("{} steps in a row", steps.len())),
        params: Default::default(),
        steps: steps
            .iter()
            .map(|name| StepSpec {
                name: name.clone(),
                job: JOB.into(),
                params: Default::default(),
                after: None,
                on_failure: OnFailure::Stop,
            })
            .collect(),
        triggers: Vec::new(),
        misfire: Default::default(),
        notify: Default::default(),
    };
    let request = DeployRequest {
        clusters: vec![ClusterSpec {
            name: WORKFLOW.into(),
            mode: SchedulingMode::RoundRobin,
            members,
        }],
        workflows: vec![workflow],
        ..deploy_jobs(vec![job])
    };
    request_deploy(bus, &request).await
}

/// Submits the orders, kills a subagent when asked, waits for the orders to
/// finish, then reads their records and the markers.
async fn run(
    cluster: &mut LocalCluster,
    bus: &Bus,
    args: &WorkflowArgs,
    capacity: u32,
    steps: &[String],
    dir: &Path,
) -> anyhow::Result<WorkflowReport> {
    let s = bus.subjects().clone();
    let step_started = listen(
        bus,
        s.task_events(JOB, "*", EventKind::Started),
        StepEvent::Started,
    );
    let step_finished = listen(
        bus,
        s.event(JOB, "*", EventKind::Finished),
        StepEvent::Finished,
    );
    let mut step_events = stream::select(step_started.await?, step_finished.await?);

    let kill_after = args.orders.div_ceil(3);
    let mut kill_wait: Option<Instant> = None;
    let mut kill: Option<KillReport> = None;
    // step order -> subagent, while its task runs
    let mut running: HashMap<String, String> = HashMap::new();
    let mut step_tasks: BTreeMap<String, usize> = BTreeMap::new();

    let mut orders = ClosedLoop::start(
        bus,
        WORKFLOW,
        args.orders,
        args.concurrency,
        REQUEST,
        args.timeout,
    )
    .await?;
    while !orders.is_over() {
        // a third submitted, and a step running (or no step for a while)
        let kill_due = args.kill
            && kill.is_none()
            && orders.accepted() >= kill_after
            && (!running.is_empty()
                || *kill_wait.get_or_insert_with(Instant::now) + KILL_WAIT <= Instant::now());
        if kill_due {
            let victim = busiest(&running, args.subagents);
            let steps_running = running.values().filter(|s| **s == victim).count();
            cluster.signal(&victim, Signal::SIGKILL)?;
            args.common.progress(format_args!(
                "killed {victim} (SIGKILL) with {steps_running} steps running on it, \
                 {} orders submitted",
                orders.accepted()
            ));
            kill = Some(KillReport {
                victim,
                after_submitted: orders.accepted(),
                steps_running,
                steps_run_again: 0,
                orders_lost: 0,
                ran_twice: 0,
            });
        }
        tokio::select! {
            // submits up to the concurrency, takes a reply or `finished` event
            _ = orders.turn() => {}
            Some(event) = step_events.next() => match event {
                StepEvent::Started(e) => {
                    *step_tasks.entry(e.subagent_id.clone()).or_default() += 1;
                    running.insert(e.order_id, e.subagent_id);
                }
                StepEvent::Finished(e) => {
                    running.remove(&e.order_id);
                }
            },
            // looks again whether the kill is due
            _ = tokio::time::sleep(Duration::from_millis(50)), if args.kill && kill.is_none() => {}
        }
    }
    let outcome = orders.finish();
    let succeeded = outcome.succeeded();
    let Outcome {
        order_ids,
        states,
        latencies_ms: mut durations_ms,
        submit_errors,
        elapsed_s,
    } = outcome;

    let records = read_records(bus, &order_ids).await;
    let unread = order_ids.len() - records.orders.len();
    let figures = step_figures(&records, steps);
    let markers = std::fs::read_to_string(dir.join("markers")).unwrap_or_default();
    let mut windows_ms = result_windows(&markers, &records);
    if let Some(k) = kill.as_mut() {
        k.steps_run_again = figures.run_again;
        k.orders_lost = args.orders - succeeded;
        k.ran_twice = ran_twice(&markers, &records);
    }
    let mut handoffs_ms = figures.handoffs_ms;
    Ok(WorkflowReport {
        scenario: "workflow",
        orders: args.orders,
        concurrency: args.concurrency,
        steps: args.steps,
        step_ms: args.step_ms,
        subagents: args.subagents,
        capacity,
        finished: states.len(),
        succeeded,
        failed: states.len() - succeeded,
        unfinished: order_ids.len() - states.len(),
        submit_errors,
        unread,
        elapsed_s,
        orders_per_s: states.len() as f64 / elapsed_s,
        duration: Latency::of(&mut durations_ms),
        handoffs: handoffs_ms.len(),
        handoffs_skipped: figures.handoffs_skipped,
        handoff: Latency::of(&mut handoffs_ms),
        step_pairs: figures.pairs,
        other_subagent: figures.other_subagent,
        other_subagent_pct: match figures.pairs {
            0 => 0.0,
            n => 100.0 * figures.other_subagent as f64 / n as f64,
        },
        step_tasks,
        result_window: Latency::of(&mut windows_ms),
        kill,
    })
}

/// The subagent running the most step tasks (the first one on a tie).
fn busiest(running: &HashMap<String, String>, subagents: usize) -> String {
    let count = |id: &str| running.values().filter(|s| *s == id).count();
    let mut best = "sub-1".to_string();
    for id in subagent_ids(subagents).into_iter().skip(1) {
        if count(&id) > count(&best) {
            best = id;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_has_no_placeholders() {
        assert!(!MARKER.contains("{{"));
    }
}
