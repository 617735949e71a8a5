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
//! Size: over the ~500-line mark since it was written; the benches' shared
//! setup and reports are to move out with issue 19's `bench` clean-up.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::stream;
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde::Serialize;

use super::closed_loop::{ClosedLoop, Outcome};
use super::{request_deploy, sh_job, start_cluster, stop_cluster, work_dir, Latency};
use crate::bus::Bus;
use crate::config::SubagentConfig;
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
    #[arg(short = 'c', long, default_value_t = 10)]
    pub concurrency: usize,
    /// Steps of the workflow, each after the one before
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// How long each step sleeps, in milliseconds (0: it only writes its marker)
    #[arg(long, default_value_t = 200)]
    pub step_ms: u64,
    /// Subagent processes, all members of the round-robin cluster
    #[arg(long, default_value_t = 3)]
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
    /// Keep the cluster's logs, and the steps' marker file, in this folder
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Print the figures as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct WorkflowReport {
    scenario: &'static str,
    orders: usize,
    concurrency: usize,
    steps: usize,
    step_ms: u64,
    subagents: usize,
    capacity: u32,
    finished: usize,
    succeeded: usize,
    failed: usize,
    unfinished: usize,
    submit_errors: usize,
    /// Orders whose record could not be read afterwards.
    unread: usize,
    elapsed_s: f64,
    orders_per_s: f64,
    /// Submit to the order's `finished` event.
    duration: Latency,
    /// Pairs of consecutive steps measured for the hand-off.
    handoffs: usize,
    /// Pairs left out because the later step ran more than once (its start
    /// is the rerun's, not the hand-off's).
    handoffs_skipped: usize,
    /// Start of step k+1 minus the end of step k.
    handoff: Latency,
    /// Pairs of consecutive succeeded steps with both subagents known.
    step_pairs: usize,
    /// Of those, the pairs that ran on different subagents.
    other_subagent: usize,
    other_subagent_pct: f64,
    /// Step tasks started per subagent, from the step job's events.
    step_tasks: BTreeMap<String, usize>,
    /// From a step's last act (its marker line) to its subagent holding the
    /// result (and handing it to its reaper): a subagent killed within this
    /// window loses the result, and the step runs again.
    result_window: Latency,
    kill: Option<KillReport>,
}

#[derive(Debug, Serialize)]
struct KillReport {
    victim: String,
    /// Orders submitted when it was killed.
    after_submitted: usize,
    /// Step tasks it ran when it was killed (as its events told).
    steps_running: usize,
    /// (order, step) pairs that started more than one task: another step
    /// attempt, or a task run again by its step order.
    steps_run_again: usize,
    /// Orders not succeeded within the timeout.
    orders_lost: usize,
    /// Completed runs beyond one, over all (order, step) pairs. A step whose
    /// subagent is killed after the step's process ended but before its
    /// result reached the broker runs again (its result died with the
    /// subagent), so this can be non-zero without any fault.
    ran_twice: usize,
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
    let work = work_dir();
    let (mut cluster, bus) =
        start_cluster(&work, args.logs.clone(), args.subagents, capacity).await?;
    // beside the logs when they are kept, so the evidence stays too
    let dir = match &args.logs {
        Some(logs) => logs.join(format!("markers-{}-workflow", std::process::id())),
        None => work.join("markers"),
    };
    let result = async {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let steps = step_names(args.steps);
        deploy(&bus, args.subagents, &steps, &dir, args.step_ms).await?;
        run(&mut cluster, &bus, &args, capacity, &steps, &dir).await
    }
    .await;
    stop_cluster(cluster, &work);
    super::emit(&result?, args.json, print_table)
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
    let members = (1..=subagents)
        .map(|i| ClusterMember {
            subagent: Some(format!("sub-{i}")),
            labels: Default::default(),
            priority: 0,
        })
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
    };
    let request = DeployRequest {
        dry_run: false,
        jobs: vec![job],
        clusters: vec![ClusterSpec {
            name: WORKFLOW.into(),
            mode: SchedulingMode::RoundRobin,
            members,
        }],
        workflows: vec![workflow],
    };
    request_deploy(bus, &request).await
}

/// Submits the orders, kills a subagent when asked, waits for the orders to
/// finish, then reads their records and the markers.
async fn run(
    cluster: &mut crate::launch::LocalCluster,
    bus: &Bus,
    args: &WorkflowArgs,
    capacity: u32,
    steps: &[String],
    dir: &Path,
) -> anyhow::Result<WorkflowReport> {
    let s = bus.subjects().clone();
    let step_started = bus
        .listen::<TaskStarted>(s.task_events(JOB, "*", EventKind::Started))
        .await?
        .map(|r| StepEvent::Started(r.body));
    let step_finished = bus
        .listen::<OrderFinished>(s.event(JOB, "*", EventKind::Finished))
        .await?
        .map(|r| StepEvent::Finished(r.body));
    let mut step_events = stream::select(step_started, step_finished);

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
            if !args.json {
                eprintln!(
                    "killed {victim} (SIGKILL) with {steps_running} steps running on it, \
                     {} orders submitted",
                    orders.accepted()
                );
            }
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
    for i in 2..=subagents {
        let id = format!("sub-{i}");
        if count(&id) > count(&best) {
            best = id;
        }
    }
    best
}

/// The workflow orders' records and the task attempts of their step orders.
#[derive(Default)]
struct Records {
    orders: Vec<OrderInfo>,
    /// Step order id -> tasks it started (its `attempt`).
    tasks: HashMap<String, u32>,
}

/// Reads every workflow order and each step order of its history, one at a
/// time (bounded: one request per order and step attempt).
async fn read_records(bus: &Bus, order_ids: &[String]) -> Records {
    let get = |order_id: &str| {
        let request = GetOrder {
            order_id: order_id.to_string(),
        };
        async move {
            bus.request::<_, OrderInfo>(bus.subjects().order_get(), &request, REQUEST)
                .await
                .inspect_err(
                    |e| tracing::warn!(order = %request.order_id, error = %e, "cannot read order"),
                )
                .ok()
        }
    };
    let mut records = Records::default();
    for id in order_ids {
        let Some(info) = get(id).await else { continue };
        for h in &info.history {
            if let Some(step_order) = get(&h.order_id).await {
                records.tasks.insert(h.order_id.clone(), step_order.attempt);
            }
        }
        records.orders.push(info);
    }
    records
}

#[derive(Debug, Default, PartialEq)]
struct StepFigures {
    handoffs_ms: Vec<f64>,
    handoffs_skipped: usize,
    pairs: usize,
    other_subagent: usize,
    run_again: usize,
}

/// Hand-offs, changes of subagent and steps run again, from the histories.
fn step_figures(records: &Records, steps: &[String]) -> StepFigures {
    let mut f = StepFigures::default();
    let tasks = |h: &StepAttempt| records.tasks.get(&h.order_id).copied().unwrap_or(1);
    for info in &records.orders {
        let attempts = |step: &str| -> Vec<&StepAttempt> {
            info.history.iter().filter(|h| h.step == step).collect()
        };
        let done = |step: &str| {
            info.history
                .iter()
                .rev()
                .find(|h| h.step == step && h.state == OrderState::Succeeded)
        };
        for step in steps {
            if attempts(step).into_iter().map(tasks).sum::<u32>() > 1 {
                f.run_again += 1;
            }
        }
        for pair in steps.windows(2) {
            let (prev, next) = (done(&pair[0]), attempts(&pair[1]));
            if let (Some(p), Some(n)) = (prev, done(&pair[1])) {
                if let (Some(a), Some(b)) = (&p.subagent_id, &n.subagent_id) {
                    f.pairs += 1;
                    f.other_subagent += usize::from(a != b);
                }
            }
            let Some(first) = next.first() else { continue };
            if next.len() > 1 || tasks(first) > 1 {
                f.handoffs_skipped += 1;
                continue;
            }
            let ended = prev.and_then(|p| p.finished_at_ms);
            if let (Some(ended), Some(began)) = (ended, first.started_at_ms) {
                f.handoffs_ms.push(began as f64 - ended as f64);
            }
        }
    }
    f
}

/// For each marker line whose step order succeeded: the result's end time
/// (stamped when the subagent saw the process end) minus the marker's time.
fn result_windows(markers: &str, records: &Records) -> Vec<f64> {
    let ended: HashMap<&str, u64> = records
        .orders
        .iter()
        .flat_map(|o| &o.history)
        .filter(|h| h.state == OrderState::Succeeded)
        .filter_map(|h| Some((h.order_id.as_str(), h.finished_at_ms?)))
        .collect();
    markers
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (step_order, at_ms) = (fields.get(3)?, fields.get(5)?.parse::<u64>().ok()?);
            Some(ended.get(step_order)?.saturating_sub(at_ms) as f64)
        })
        .collect()
}

/// Completed runs beyond one per (workflow order, step), for the orders read.
fn ran_twice(markers: &str, records: &Records) -> usize {
    let mut lines: HashMap<(&str, &str), usize> = HashMap::new();
    for line in markers.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(order), Some(step)) = (fields.next(), fields.next()) {
            *lines.entry((order, step)).or_default() += 1;
        }
    }
    let read: std::collections::HashSet<&str> =
        records.orders.iter().map(|o| o.order_id.as_str()).collect();
    lines
        .iter()
        .filter(|((order, _), _)| read.contains(order))
        .map(|(_, &n)| n.saturating_sub(1))
        .sum()
}

fn print_table(r: &WorkflowReport) {
    println!("baton bench workflow");
    println!(
        "  orders            {} ({} in flight, {} steps of {} ms, {} subagents x {} slots, round-robin)",
        r.orders, r.concurrency, r.steps, r.step_ms, r.subagents, r.capacity
    );
    println!(
        "  finished          {} ({} succeeded, {} failed, {} unfinished, {} submit errors)",
        r.finished, r.succeeded, r.failed, r.unfinished, r.submit_errors
    );
    println!("  elapsed           {:.2} s", r.elapsed_s);
    println!(
        "  throughput        {:.2} workflow orders/s",
        r.orders_per_s
    );
    println!("  duration p50      {:.1} ms", r.duration.p50_ms);
    println!("  duration p99      {:.1} ms", r.duration.p99_ms);
    println!("  duration max      {:.1} ms", r.duration.max_ms);
    println!(
        "  hand-off          {} step pairs ({} skipped: next step ran again)",
        r.handoffs, r.handoffs_skipped
    );
    println!("  hand-off p50      {:.1} ms", r.handoff.p50_ms);
    println!("  hand-off p99      {:.1} ms", r.handoff.p99_ms);
    println!("  hand-off max      {:.1} ms", r.handoff.max_ms);
    println!(
        "  result window     p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (a step's last act to its subagent holding the result)",
        r.result_window.p50_ms, r.result_window.p99_ms, r.result_window.max_ms
    );
    println!(
        "  other subagent    {:.1}% ({} of {} consecutive steps)",
        r.other_subagent_pct, r.other_subagent, r.step_pairs
    );
    let tasks: Vec<String> = r
        .step_tasks
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    println!("  step tasks        {}", tasks.join(", "));
    if r.unread > 0 {
        println!("  unread records    {}", r.unread);
    }
    if let Some(k) = &r.kill {
        println!(
            "  killed            {} ({} steps running, {} orders submitted)",
            k.victim, k.steps_running, k.after_submitted
        );
        println!("  steps run again   {}", k.steps_run_again);
        println!("  orders lost       {}", k.orders_lost);
        println!(
            "  completed twice   {} (a step ended just before its subagent was killed, result lost with it)",
            k.ran_twice
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(step: &str, order: &str, sub: &str, start: u64, end: u64) -> StepAttempt {
        StepAttempt {
            placed_on: Vec::new(),
            tasks: 0,
            step: step.into(),
            job: JOB.into(),
            attempt: 1,
            order_id: order.into(),
            state: OrderState::Succeeded,
            subagent_id: Some(sub.into()),
            exit_code: Some(0),
            reason: None,
            started_at_ms: Some(start),
            finished_at_ms: Some(end),
        }
    }

    fn records(history: Vec<StepAttempt>, tasks: &[(&str, u32)]) -> Records {
        let info = OrderInfo {
            workflow: Some(WORKFLOW.into()),
            history,
            ..OrderInfo::new("w1".into(), WORKFLOW.into(), OrderState::Succeeded, 0)
        };
        Records {
            orders: vec![info],
            tasks: tasks.iter().map(|(o, n)| (o.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn handoffs_and_subagent_changes_come_from_the_history() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 100, 300),
                attempt("s2", "b", "sub-2", 310, 500),
                attempt("s3", "c", "sub-2", 530, 700),
            ],
            &[("a", 1), ("b", 1), ("c", 1)],
        );
        let f = step_figures(&r, &step_names(3));
        assert_eq!(f.handoffs_ms, vec![10.0, 30.0]);
        assert_eq!((f.pairs, f.other_subagent, f.run_again), (2, 1, 0));
    }

    #[test]
    fn a_rerun_step_is_no_handoff_and_runs_again() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 100, 300),
                attempt("s2", "b", "sub-3", 4000, 4200),
            ],
            &[("a", 1), ("b", 2)],
        );
        let f = step_figures(&r, &step_names(2));
        assert!(f.handoffs_ms.is_empty());
        assert_eq!((f.handoffs_skipped, f.run_again), (1, 1));
    }

    #[test]
    fn a_second_completed_run_of_a_step_ran_twice() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 0, 1),
                attempt("s2", "b", "sub-2", 2, 3),
            ],
            &[("a", 1), ("b", 2)],
        );
        let markers =
            "w1 s1 1 a 10\nw1 s1 1 a 11\nw1 s2 1 b 12\nw1 s2 1 b 13\nw9 s1 1 x 14\nw9 s1 1 x 15\n";
        // s1 and s2 each completed twice; w9 was not read
        assert_eq!(ran_twice(markers, &r), 2);
    }

    #[test]
    fn the_marker_has_no_placeholders() {
        assert!(!MARKER.contains("{{"));
    }
}
