//! Workflows end to end, with real processes over a real nats-server: a
//! five-step order on a round-robin cluster survives `kill -9` of a
//! subagent, a DAG fans out and joins with results flowing between steps,
//! orders are suspended, resumed (from a later step, after a failure, with
//! failed steps counted as succeeded) and cancelled with and without kill,
//! every command is idempotent, and broken workflows are refused at deploy.
//!
//! Steps are small `sh` scripts that leave marker files in a scratch folder
//! the order names (`dir`, a parameter each workflow declares): `<step>.pids`
//! (one line per attempt), `ran` (a line per step that finished its work). A
//! step with the `gate` parameter waits, bounded, for the file `<step>.go`
//! the test creates.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::bus::{decode, Bus, BusError, Encoding};
use baton::protocol::*;
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

/// Quick loss detection: heartbeats every 100ms, silence counts after 1s.
const FAST: [(&str, &str); 3] = [
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "100ms"),
    ("BATON_BROKER__HEARTBEAT_INTERVAL", "100ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "1s"),
];

/// Bound on any one condition a test waits for.
const WAIT: Duration = Duration::from_secs(20);

/// How long something that must not happen is watched for.
const QUIET: Duration = Duration::from_millis(1500);

/// The job every step runs: records its pid, waits for its go file when it
/// has a `gate` (30s at most, then exit 3), fails unless the file named by
/// `needs` exists (when set), then records that it ran and gives a result.
const WORK_JOB: &str = r#"
[[job]]
name = "work"
program = "sh"
timeout = "60s"
args = ["-c", '''
d="$BATON_PARAM_DIR"; s="$BATON_PARAM_STEP"
echo $$ >> "$d/$s.pids"
echo "hello from $s"
if [ -n "$BATON_PARAM_GATE" ]; then
  i=0
  while [ ! -f "$d/$s.go" ]; do
    i=$((i+1)); [ "$i" -gt 600 ] && exit 3
    sleep 0.05
  done
fi
if [ -n "$BATON_PARAM_NEEDS" ] && [ ! -f "$d/$BATON_PARAM_NEEDS" ]; then
  echo "no $BATON_PARAM_NEEDS" >&2
  exit 1
fi
echo "$s" >> "$d/ran"
echo "::baton-result done=$s"
''']
[job.params.dir]
required = true
[job.params.step]
required = true
[job.params.gate]
default = ""
[job.params.needs]
default = ""
"#;

/// The order's folder: declared by every workflow running `WORK_JOB`.
const DIR_PARAM: &str = "[workflow.params.dir]\nrequired = true\n";

/// `WORK_JOB` on a round-robin cluster `trio` of sub-a, sub-b and sub-c,
/// and a workflow running it in sequence: one step per entry, named and
/// with `params` as given (`step = "NAME"` added).
fn trio_chain(workflow: &str, steps: &[(&str, &str)]) -> String {
    let mut toml = format!(
        r#"
[[cluster]]
name = "trio"
mode = "round-robin"
members = [{{ subagent = "sub-a" }}, {{ subagent = "sub-b" }}, {{ subagent = "sub-c" }}]
{}
[[workflow]]
name = "{workflow}"
{DIR_PARAM}"#,
        WORK_JOB.replacen(
            "timeout = \"60s\"\n",
            "timeout = \"60s\"\ncluster = \"trio\"\n",
            1
        )
    );
    for (name, extra) in steps {
        let params = if extra.is_empty() {
            format!("step = \"{name}\"")
        } else {
            format!("step = \"{name}\", {extra}")
        };
        toml.push_str(&format!(
            "\n[[workflow.steps]]\nname = \"{name}\"\njob = \"work\"\nparams = {{ {params} }}\n"
        ));
    }
    toml
}

// ----- requests -------------------------------------------------------------

async fn get(bus: &Bus, order_id: &str) -> OrderInfo {
    order_info(bus, order_id)
        .await
        .unwrap_or_else(|| panic!("order.get {order_id}"))
}

async fn list(bus: &Bus, filter: &ListOrders) -> OrderList {
    let call = bus.request(bus.subjects().order_list(), filter, REQUEST);
    within(REQUEST * 2, "order.list", call)
        .await
        .expect("order.list answers")
}

/// Submits over the wire and returns the reply or the error.
async fn try_submit(bus: &Bus, job: &str) -> Result<SubmitReply, BusError> {
    try_submit_with(bus, job, &[]).await
}

/// [`try_submit`] with parameters.
async fn try_submit_with(
    bus: &Bus,
    job: &str,
    params: &[(&str, &str)],
) -> Result<SubmitReply, BusError> {
    let order = SubmitOrder {
        job: job.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_id: None,
        slot_ms: None,
    };
    let call = bus.request(bus.subjects().submit(), &order, REQUEST);
    within(REQUEST * 2, "submit", call).await
}

/// The error code of a refused request; panics when it was not refused.
fn error_of<T: std::fmt::Debug>(result: Result<T, BusError>, what: &str) -> ErrorReply {
    match result {
        Err(BusError::Remote(e)) => e,
        Err(other) => panic!("{what}: expected an error reply, got {other}"),
        Ok(reply) => panic!("{what}: expected an error reply, got {reply:?}"),
    }
}

/// Waits until the order satisfies `pred`; returns it.
async fn wait_order(
    bus: &Bus,
    order_id: &str,
    what: &str,
    pred: impl Fn(&OrderInfo) -> bool,
) -> OrderInfo {
    let pred = &pred;
    let what = format!("order {order_id}: {what}");
    wait_for(WAIT, &what, || async move {
        order_info(bus, order_id).await.filter(|o| pred(o))
    })
    .await
}

async fn wait_state(bus: &Bus, order_id: &str, state: OrderState) -> OrderInfo {
    let what = format!("it is {}", state.as_str());
    wait_order(bus, order_id, &what, |o| o.state == state).await
}

/// Waits until the order is succeeded, failed or cancelled.
async fn wait_final(bus: &Bus, order_id: &str) -> OrderInfo {
    wait_order(bus, order_id, "it ends", |o| o.state.is_final()).await
}

// ----- reading an order -----------------------------------------------------

fn step<'a>(info: &'a OrderInfo, name: &str) -> &'a StepRun {
    info.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {info:#?}"))
}

fn step_states(info: &OrderInfo) -> Vec<(&str, StepState)> {
    info.steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

fn attempts<'a>(info: &'a OrderInfo, name: &str) -> Vec<&'a StepAttempt> {
    info.history.iter().filter(|h| h.step == name).collect()
}

fn last_attempt<'a>(info: &'a OrderInfo, name: &str) -> &'a StepAttempt {
    attempts(info, name)
        .pop()
        .unwrap_or_else(|| panic!("step {name} never dispatched: {info:#?}"))
}

// ----- marker files ---------------------------------------------------------

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The steps that did their work, in order (the `ran` file).
fn ran(dir: &Path) -> Vec<String> {
    lines(&dir.join("ran"))
}

/// The pids of a step's attempts so far.
fn pids(dir: &Path, step: &str) -> Vec<i32> {
    lines(&dir.join(format!("{step}.pids")))
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until a step's `n`th process (from 1) has started; returns its pid.
async fn started(dir: &Path, step: &str, n: usize) -> i32 {
    let what = format!("process {n} of step {step} started");
    wait_for(WAIT, &what, || {
        std::future::ready(pids(dir, step).get(n - 1).copied())
    })
    .await
}

/// Lets a gated step go on.
fn open_gate(dir: &Path, step: &str) {
    std::fs::write(dir.join(format!("{step}.go")), b"go").expect("write go file");
}

/// A fresh folder for one order's markers.
fn order_dir(h: &Harness, name: &str) -> PathBuf {
    let dir = h.scratch().join(name);
    std::fs::create_dir_all(&dir).expect("create order dir");
    dir
}

async fn submit_in(bus: &Bus, workflow: &str, dir: &Path) -> String {
    submit(bus, workflow, &[("dir", dir.display().to_string())]).await
}

// ----- events ---------------------------------------------------------------

/// What the tests look at among the events.
#[derive(Debug, Clone)]
enum Seen {
    Changed(OrderChanged),
    Finished(OrderFinished),
    Log(TaskLog),
}

/// Records the `changed`, `finished` and `log` events of every order (and
/// counts broker heartbeats) as they arrive. Started before the orders it
/// watches, so none of their events is missed.
struct Events {
    seen: Arc<Mutex<Vec<(String, Seen)>>>,
    heartbeats: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    async fn start(bus: &Bus) -> Events {
        let s = bus.subjects().clone();
        let mut streams = Vec::new();
        for subject in [s.all_events(), s.broker_heartbeat()] {
            let subscribe = bus.listen_raw(subject);
            let stream = within(REQUEST, "subscribe", subscribe)
                .await
                .expect("subscribe");
            streams.push(stream);
        }
        let mut messages = futures::stream::select_all(streams);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let heartbeats = Arc::new(Mutex::new(0));
        let (sink, beats) = (seen.clone(), heartbeats.clone());
        let task = tokio::spawn(async move {
            let mp = Encoding::MessagePack;
            while let Some((subject, payload)) = messages.next().await {
                if subject == s.broker_heartbeat() {
                    *beats.lock().unwrap() += 1;
                    continue;
                }
                let Some((_, order, kind)) = s.parse_event(&subject) else {
                    continue;
                };
                let seen = match kind {
                    EventKind::Changed => {
                        Seen::Changed(decode(mp, &payload).expect("changed decodes"))
                    }
                    EventKind::Finished => {
                        Seen::Finished(decode(mp, &payload).expect("finished decodes"))
                    }
                    EventKind::Log => Seen::Log(decode(mp, &payload).expect("log decodes")),
                    EventKind::Accepted | EventKind::Started => continue,
                };
                sink.lock().unwrap().push((order.to_string(), seen));
            }
        });
        Events {
            seen,
            heartbeats,
            task,
        }
    }

    fn of(&self, order_id: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == order_id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn changes(&self, order_id: &str) -> Vec<OrderChanged> {
        self.of(order_id)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Changed(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn finished(&self, order_id: &str) -> Option<OrderFinished> {
        self.of(order_id).into_iter().find_map(|s| match s {
            Seen::Finished(f) => Some(f),
            _ => None,
        })
    }

    fn logs(&self, order_id: &str) -> Vec<TaskLog> {
        self.of(order_id)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Log(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// Waits for the order's `finished` event.
    async fn wait_finished(&self, order_id: &str) -> OrderFinished {
        let what = format!("the finished event of {order_id}");
        wait_for(WAIT, &what, || std::future::ready(self.finished(order_id))).await
    }

    /// Waits until a `changed` event of the order satisfies `pred`.
    async fn wait_change(
        &self,
        order_id: &str,
        what: &str,
        pred: impl Fn(&OrderChanged) -> bool,
    ) -> OrderChanged {
        let what = format!("a changed event of {order_id}: {what}");
        wait_for(WAIT, &what, || {
            std::future::ready(self.changes(order_id).into_iter().find(|c| pred(c)))
        })
        .await
    }

    /// Waits until the broker has been up for longer than its subagent
    /// timeout (twelve 100ms heartbeats), so that a killed subagent is found
    /// lost by "no responders" at once.
    async fn broker_settled(&self) {
        wait_until(WAIT, "12 broker heartbeats", || {
            std::future::ready(*self.heartbeats.lock().unwrap() >= 12)
        })
        .await;
    }
}

// ----- the tests ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_step_workflow_round_robin_survives_a_subagent_kill() {
    let mut h = cluster_with_env(&["sub-a", "sub-b", "sub-c"], &FAST).await;
    let toml = trio_chain(
        "five",
        &[
            ("s1", ""),
            ("s2", ""),
            ("s3", "gate = \"yes\""),
            ("s4", ""),
            ("s5", ""),
        ],
    );
    let reply = deploy(&h.bus, &toml).await;
    assert_eq!(reply.workflows, ["five"], "{reply:?}");
    let events = Events::start(&h.bus).await;
    events.broker_settled().await;
    let bus = h.bus.clone();
    let dir = order_dir(&h, "five");
    let order = submit_in(&bus, "five", &dir).await;

    // step 3 runs (and waits for its gate): find where
    let first_pid = started(&dir, "s3", 1).await;
    let info = wait_order(&bus, &order, "step s3 has a subagent", |o| {
        o.history
            .iter()
            .any(|a| a.step == "s3" && a.subagent_id.is_some())
    })
    .await;
    assert_eq!(info.workflow.as_deref(), Some("five"), "{info:#?}");
    assert_eq!(info.state, OrderState::Running, "{info:#?}");
    let before: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| last_attempt(&info, s).subagent_id.clone().expect("placed"))
        .collect();
    assert_ne!(
        before[0], before[1],
        "s1 and s2 on one subagent: {before:?}"
    );
    assert_ne!(
        before[1], before[2],
        "s2 and s3 on one subagent: {before:?}"
    );
    assert_eq!(ran(&dir), ["s1", "s2"]);
    let victim = before[2].clone();
    let survivors: BTreeSet<String> = ["sub-a", "sub-b", "sub-c"]
        .iter()
        .map(|s| s.to_string())
        .filter(|s| *s != victim)
        .collect();

    h.cluster
        .signal(&victim, Signal::SIGKILL)
        .expect("kill -9 the subagent running step 3");
    wait_until(WAIT, "step 3's first process is gone", || {
        std::future::ready(process_gone(first_pid))
    })
    .await;
    open_gate(&dir, "s3");

    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    for (name, state) in step_states(&done) {
        assert_eq!(state, StepState::Succeeded, "step {name}: {done:#?}");
    }
    assert_eq!(ran(&dir), ["s1", "s2", "s3", "s4", "s5"], "{done:#?}");
    assert_eq!(pids(&dir, "s3").len(), 2, "step 3 ran twice: {done:#?}");

    // step 3 ran again: as a later attempt of its step order, or of the step
    let s3_order = get(&bus, &last_attempt(&done, "s3").order_id).await;
    let reran = s3_order.attempt >= 2 || attempts(&done, "s3").len() >= 2;
    assert!(reran, "step 3 did not run again: {s3_order:#?}\n{done:#?}");
    assert_eq!(s3_order.state, OrderState::Succeeded, "{s3_order:#?}");
    let parent = s3_order.parent.as_ref().expect("a step order has a parent");
    assert_eq!(
        (
            parent.order_id.as_str(),
            parent.workflow.as_str(),
            parent.step.as_str()
        ),
        (order.as_str(), "five", "s3"),
        "{s3_order:#?}"
    );
    let s3_final = s3_order.subagent_id.clone().expect("placed");
    assert!(survivors.contains(&s3_final), "s3 ended on {s3_final}");
    assert_eq!(
        last_attempt(&done, "s3").subagent_id.as_deref(),
        Some(s3_final.as_str()),
        "the history names where step 3 last ran: {done:#?}"
    );
    // and both runs: the killed subagent first, then the one it moved to
    let s3 = last_attempt(&done, "s3");
    assert_eq!(s3.placed_on.first(), Some(&victim), "{s3:?}");
    assert_eq!(s3.placed_on.last(), Some(&s3_final), "{s3:?}");
    assert!(s3.tasks >= 2, "{s3:?}");

    // the steps after it ran on the two remaining subagents, taking turns
    let after: Vec<String> = ["s4", "s5"]
        .iter()
        .map(|s| last_attempt(&done, s).subagent_id.clone().expect("placed"))
        .collect();
    for (name, on) in ["s4", "s5"].iter().zip(&after) {
        assert!(survivors.contains(on), "{name} ran on {on}: {done:#?}");
        assert_eq!(attempts(&done, name).len(), 1, "{done:#?}");
    }
    let sequence = [&before[0], &before[1], &s3_final, &after[0], &after[1]];
    for pair in sequence.windows(2) {
        assert_ne!(pair[0], pair[1], "consecutive steps: {sequence:?}");
    }
    for a in &done.history {
        assert!(
            a.started_at_ms.is_some() && a.finished_at_ms.is_some(),
            "{a:?}"
        );
    }

    let finished = events.wait_finished(&order).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_fan_out_and_join() {
    let h = cluster_with_env(&["sub-a", "sub-b", "sub-c"], &FAST).await;
    // each branch waits (bounded) until all three have started, so the
    // order only succeeds when they run at the same time
    let toml = r#"
[[job]]
name = "version"
program = "sh"
args = ["-c", 'echo "::baton-result version=7"']
timeout = "30s"

[[job]]
name = "branch"
program = "sh"
timeout = "60s"
args = ["-c", '''
d="$BATON_PARAM_DIR"; s="$BATON_PARAM_STEP"
touch "$d/started.$s"
i=0
while [ "$(ls "$d" | grep -c '^started\.')" -lt 3 ]; do
  i=$((i+1)); [ "$i" -gt 400 ] && { echo "alone" >&2; exit 3; }
  sleep 0.05
done
echo "::baton-result saw=$BATON_PARAM_A_VERSION"
touch "$d/done.$s"
''']
[job.params.dir]
required = true
[job.params.step]
required = true
[job.params.a_version]          # step a's result `version`
required = true

[[job]]
name = "join"
program = "sh"
timeout = "30s"
args = ["-c", '''
d="$BATON_PARAM_DIR"
echo "::baton-result seen=$BATON_PARAM_A_VERSION"
echo "::baton-result branches_done=$(ls "$d" | grep -c '^done\.')"
echo "::baton-result b2_saw=$BATON_PARAM_B2_SAW"
''']
[job.params.dir]
required = true
[job.params.a_version]
default = ""
[job.params.b2_saw]             # step b2's result `saw`
default = ""

[[workflow]]
name = "fan"
[workflow.params.dir]
required = true

[[workflow.steps]]
name = "a"
job = "version"

[[workflow.steps]]
name = "b1"
job = "branch"
after = ["a"]
params = { step = "b1" }

[[workflow.steps]]
name = "b2"
job = "branch"
after = ["a"]
params = { step = "b2" }

[[workflow.steps]]
name = "b3"
job = "branch"
after = ["a"]
params = { step = "b3" }

[[workflow.steps]]
name = "join"
job = "join"
after = ["b1", "b2", "b3"]
"#;
    let reply = deploy(&h.bus, toml).await;
    assert_eq!(reply.workflows, ["fan"], "{reply:?}");
    let bus = h.bus.clone();
    let dir = order_dir(&h, "fan");
    let order = submit_in(&bus, "fan", &dir).await;
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    for (name, state) in step_states(&done) {
        assert_eq!(state, StepState::Succeeded, "step {name}: {done:#?}");
    }
    assert_eq!(done.history.len(), 5, "one attempt per step: {done:#?}");

    // the results flowed: a's version reached the branches and the join
    assert_eq!(
        step(&done, "a").outputs.get("version").map(String::as_str),
        Some("7")
    );
    let join = step(&done, "join");
    assert_eq!(
        join.outputs.get("seen").map(String::as_str),
        Some("7"),
        "{join:#?}"
    );
    assert_eq!(
        join.outputs.get("branches_done").map(String::as_str),
        Some("3"),
        "{join:#?}"
    );
    assert_eq!(
        join.outputs.get("b2_saw").map(String::as_str),
        Some("7"),
        "{join:#?}"
    );

    // the branches overlapped in time, and the join came after them all
    let interval = |name: &str| {
        let a = last_attempt(&done, name);
        let (Some(start), Some(end)) = (a.started_at_ms, a.finished_at_ms) else {
            panic!("step {name} has no start or end: {a:?}");
        };
        (start, end)
    };
    let branches: Vec<(u64, u64)> = ["b1", "b2", "b3"].iter().map(|b| interval(b)).collect();
    let last_start = branches.iter().map(|b| b.0).max().unwrap();
    let first_end = branches.iter().map(|b| b.1).min().unwrap();
    assert!(
        last_start <= first_end,
        "the branches did not overlap: {branches:?}"
    );
    // round-robin per order: the three branches went to three subagents
    let placed: BTreeSet<&str> = ["b1", "b2", "b3"]
        .iter()
        .filter_map(|b| last_attempt(&done, b).subagent_id.as_deref())
        .collect();
    assert_eq!(placed.len(), 3, "{:#?}", done.history);
    let a_end = interval("a").1;
    assert!(
        branches.iter().all(|b| b.0 >= a_end),
        "{branches:?} a {a_end}"
    );
    let last_end = branches.iter().map(|b| b.1).max().unwrap();
    let (join_start, _) = interval("join");
    assert!(
        join_start >= last_end,
        "join started at {join_start}, before a branch ended at {last_end}"
    );

    // the order list finds it by workflow, and its step orders on request
    let flows = list(
        &bus,
        &ListOrders {
            workflow: Some("fan".into()),
            ..ListOrders::default()
        },
    )
    .await;
    let ids: Vec<&str> = flows.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, [order.as_str()], "{flows:#?}");
    let with_steps = list(
        &bus,
        &ListOrders {
            job: Some("branch".into()),
            steps: true,
            ..ListOrders::default()
        },
    )
    .await;
    let parents: BTreeSet<(&str, &str)> = with_steps
        .orders
        .iter()
        .filter_map(|o| o.parent.as_ref())
        .map(|p| (p.order_id.as_str(), p.step.as_str()))
        .collect();
    let expected: BTreeSet<(&str, &str)> = [
        (order.as_str(), "b1"),
        (order.as_str(), "b2"),
        (order.as_str(), "b3"),
    ]
    .into();
    assert_eq!(parents, expected, "{with_steps:#?}");
}

/// A three-step list: `s1` waits for its gate, `s2` and `s3` run at once.
const THREE: &str = r#"
[[workflow]]
name = "three"
[workflow.params.dir]
required = true

[[workflow.steps]]
name = "s1"
job = "work"
params = { step = "s1", gate = "yes" }

[[workflow.steps]]
name = "s2"
job = "work"
params = { step = "s2" }

[[workflow.steps]]
name = "s3"
job = "work"
params = { step = "s3" }
"#;

async fn three_step_cluster() -> Harness {
    let h = cluster_with_env(&["sub-a", "sub-b"], &FAST).await;
    let reply = deploy(&h.bus, &format!("{WORK_JOB}{THREE}")).await;
    assert_eq!(reply.workflows, ["three"], "{reply:?}");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_then_resume_from_a_later_step() {
    let h = three_step_cluster().await;
    let bus = h.bus.clone();
    let events = Events::start(&bus).await;
    let dir = order_dir(&h, "three");
    let order = submit_in(&bus, "three", &dir).await;
    let pid = started(&dir, "s1", 1).await;

    // suspend without kill: the running step goes on
    let info = suspend(&bus, &order, false).await.expect("suspend");
    assert_eq!(info.state, OrderState::Suspending, "{info:#?}");
    assert_eq!(step(&info, "s1").state, StepState::Running, "{info:#?}");
    assert!(!process_gone(pid), "step s1 keeps running");
    open_gate(&dir, "s1");
    let held = wait_state(&bus, &order, OrderState::Suspended).await;
    assert_eq!(
        step_states(&held),
        [
            ("s1", StepState::Succeeded),
            ("s2", StepState::Pending),
            ("s3", StepState::Pending)
        ],
        "{held:#?}"
    );
    assert_eq!(ran(&dir), ["s1"]);

    // held: step 2 is not dispatched
    holds_throughout(QUIET, "a suspended order dispatches nothing", || {
        let (bus, order, dir) = (bus.clone(), order.clone(), dir.clone());
        async move {
            let info = get(&bus, &order).await;
            info.state == OrderState::Suspended
                && attempts(&info, "s2").is_empty()
                && pids(&dir, "s2").is_empty()
        }
    })
    .await;

    // resume from step 3: step 2 is skipped
    let info = resume(&bus, &order, Some("s3"), false)
        .await
        .expect("resume");
    assert!(
        matches!(info.state, OrderState::Running | OrderState::Succeeded),
        "{info:#?}"
    );
    assert_eq!(step(&info, "s2").state, StepState::Skipped, "{info:#?}");
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    assert_eq!(
        step_states(&done),
        [
            ("s1", StepState::Succeeded),
            ("s2", StepState::Skipped),
            ("s3", StepState::Succeeded)
        ],
        "{done:#?}"
    );
    assert_eq!(ran(&dir), ["s1", "s3"]);
    assert!(attempts(&done, "s2").is_empty(), "{done:#?}");
    assert_eq!(attempts(&done, "s3").len(), 1, "{done:#?}");

    // the events tell the same story
    let finished = events.wait_finished(&order).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");
    let changes = events.changes(&order);
    let position = |state: OrderState| changes.iter().position(|c| c.state == state);
    let suspending = position(OrderState::Suspending);
    let suspended = position(OrderState::Suspended);
    assert!(
        suspending.is_some() && suspended.is_some() && suspending < suspended,
        "suspending then suspended: {changes:#?}"
    );
    // the order's own change (a step's that suspended it carries its state too)
    let suspended_said = changes
        .iter()
        .position(|c| c.step.is_none() && c.what == "suspended");
    let resumed = changes
        .iter()
        .skip(suspended_said.expect("a suspended change") + 1)
        .position(|c| c.state == OrderState::Running && c.what.contains("resum"));
    assert_eq!(
        resumed,
        Some(0),
        "resumed next after suspended, before the steps it dispatches: {changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.step.as_deref() == Some("s3") && c.step_state == Some(StepState::Succeeded)),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .all(|c| c.order_id == order && c.workflow == "three"),
        "{changes:#?}"
    );
    // the steps' output is published on the workflow order, with the step
    let logs = events.logs(&order);
    for s in ["s1", "s3"] {
        let line = format!("hello from {s}");
        assert!(
            logs.iter()
                .any(|l| l.step.as_deref() == Some(s) && l.line == line),
            "{s}: {logs:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_with_kill_reruns_the_step_on_resume() {
    let h = three_step_cluster().await;
    let bus = h.bus.clone();
    let events = Events::start(&bus).await;
    let dir = order_dir(&h, "three");
    let order = submit_in(&bus, "three", &dir).await;
    let pid = started(&dir, "s1", 1).await;

    let info = suspend(&bus, &order, true).await.expect("suspend --kill");
    assert!(
        matches!(info.state, OrderState::Suspending | OrderState::Suspended),
        "{info:#?}"
    );
    let held = wait_state(&bus, &order, OrderState::Suspended).await;
    wait_until(WAIT, "step s1's process is gone", || {
        std::future::ready(process_gone(pid))
    })
    .await;
    assert_eq!(step(&held, "s1").state, StepState::Pending, "{held:#?}");
    let first = attempts(&held, "s1");
    assert_eq!(first.len(), 1, "{held:#?}");
    assert!(
        first[0].state.is_final() && first[0].state != OrderState::Succeeded,
        "the killed attempt: {:?}",
        first[0]
    );
    assert!(attempts(&held, "s2").is_empty(), "{held:#?}");
    assert!(
        ran(&dir).is_empty(),
        "the killed step did not finish its work"
    );
    events
        .wait_change(&order, "suspended", |c| c.state == OrderState::Suspended)
        .await;

    // a plain resume runs step 1 again, as attempt 2
    open_gate(&dir, "s1");
    let info = resume(&bus, &order, None, false).await.expect("resume");
    assert!(
        !matches!(info.state, OrderState::Suspended | OrderState::Suspending),
        "{info:#?}"
    );
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    let s1 = attempts(&done, "s1");
    let numbers: Vec<u32> = s1.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2], "{done:#?}");
    let why = s1[0].reason.as_deref().unwrap_or_default();
    assert!(why.contains("suspend --kill"), "{:?}", s1[0]);
    assert_eq!(s1[1].state, OrderState::Succeeded, "{done:#?}");
    assert_ne!(s1[0].order_id, s1[1].order_id, "{done:#?}");
    assert_eq!(step(&done, "s1").attempt, 2, "{done:#?}");
    assert_eq!(ran(&dir), ["s1", "s2", "s3"]);
    assert_eq!(pids(&dir, "s1").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_without_kill_lets_the_step_finish() {
    let h = three_step_cluster().await;
    let bus = h.bus.clone();
    let events = Events::start(&bus).await;
    let dir = order_dir(&h, "three");
    let order = submit_in(&bus, "three", &dir).await;
    let pid = started(&dir, "s1", 1).await;

    let info = cancel(&bus, &order, false).await.expect("cancel");
    assert_eq!(info.state, OrderState::Cancelling, "{info:#?}");
    assert!(!process_gone(pid), "step s1 keeps running");
    open_gate(&dir, "s1");
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Cancelled, "{done:#?}");
    assert_eq!(step(&done, "s1").state, StepState::Succeeded, "{done:#?}");
    for s in ["s2", "s3"] {
        assert_eq!(step(&done, s).state, StepState::Cancelled, "{done:#?}");
        assert!(attempts(&done, s).is_empty(), "{done:#?}");
    }
    assert_eq!(ran(&dir), ["s1"]);
    holds_throughout(QUIET, "nothing runs after the cancel", || {
        std::future::ready(pids(&dir, "s2").is_empty())
    })
    .await;
    let finished = events.wait_finished(&order).await;
    assert_eq!(finished.state, OrderState::Cancelled, "{finished:?}");
    events
        .wait_change(&order, "cancelling", |c| c.state == OrderState::Cancelling)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_kill_kills_it() {
    let h = three_step_cluster().await;
    let bus = h.bus.clone();
    let events = Events::start(&bus).await;
    let dir = order_dir(&h, "three");
    let order = submit_in(&bus, "three", &dir).await;
    let pid = started(&dir, "s1", 1).await;
    let running = wait_order(&bus, &order, "s1 dispatched", |o| {
        !attempts(o, "s1").is_empty()
    })
    .await;
    let s1_order = last_attempt(&running, "s1").order_id.clone();

    let info = cancel(&bus, &order, true).await.expect("cancel --kill");
    assert!(
        matches!(info.state, OrderState::Cancelling | OrderState::Cancelled),
        "{info:#?}"
    );
    // the step's gate never opens: only the kill ends it within WAIT
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Cancelled, "{done:#?}");
    wait_until(WAIT, "step s1's process is gone", || {
        std::future::ready(process_gone(pid))
    })
    .await;
    let step_order = wait_final(&bus, &s1_order).await;
    assert_eq!(step_order.state, OrderState::Cancelled, "{step_order:#?}");
    assert_eq!(
        step_states(&done),
        [
            ("s1", StepState::Cancelled),
            ("s2", StepState::Cancelled),
            ("s3", StepState::Cancelled)
        ],
        "{done:#?}"
    );
    assert_eq!(
        last_attempt(&done, "s1").state,
        OrderState::Cancelled,
        "{done:#?}"
    );
    // opening the gate now changes nothing: the process is gone
    open_gate(&dir, "s1");
    holds_throughout(QUIET, "no step does its work after the kill", || {
        std::future::ready(ran(&dir).is_empty() && pids(&dir, "s2").is_empty())
    })
    .await;
    let finished = events.wait_finished(&order).await;
    assert_eq!(finished.state, OrderState::Cancelled, "{finished:?}");
}

/// `s2` fails unless the file `flag` exists in the order's folder.
const FRAGILE: &str = r#"
[[workflow]]
name = "fragile"
[workflow.params.dir]
required = true

[[workflow.steps]]
name = "s1"
job = "work"
params = { step = "s1" }

[[workflow.steps]]
name = "check"
job = "work"
params = { step = "check", needs = "flag" }

[[workflow.steps]]
name = "s3"
job = "work"
params = { step = "s3" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_a_failed_order() {
    let h = cluster_with_env(&["sub-a", "sub-b"], &FAST).await;
    let reply = deploy(&h.bus, &format!("{WORK_JOB}{FRAGILE}")).await;
    assert_eq!(reply.workflows, ["fragile"], "{reply:?}");
    let bus = h.bus.clone();
    let events = Events::start(&bus).await;

    // without the flag the order fails in `check`, and stays failed
    let dir = order_dir(&h, "retried");
    let order = submit_in(&bus, "fragile", &dir).await;
    let failed = wait_final(&bus, &order).await;
    assert_eq!(failed.state, OrderState::Failed, "{failed:#?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("check"),
        "the reason names the step: {failed:#?}"
    );
    assert_eq!(
        step_states(&failed),
        [
            ("s1", StepState::Succeeded),
            ("check", StepState::Failed),
            ("s3", StepState::Pending)
        ],
        "{failed:#?}"
    );
    let first = last_attempt(&failed, "check");
    assert_eq!(
        (first.attempt, first.state),
        (1, OrderState::Failed),
        "{first:?}"
    );
    assert_eq!(first.exit_code, Some(1), "{first:?}");
    let finished = events.wait_finished(&order).await;
    assert_eq!(finished.state, OrderState::Failed, "{finished:?}");
    holds_throughout(QUIET, "a failed order stays failed", || {
        let (bus, order) = (bus.clone(), order.clone());
        async move { get(&bus, &order).await.state == OrderState::Failed }
    })
    .await;

    // suspend is not allowed on a failed order
    let e = error_of(suspend(&bus, &order, false).await, "suspend a failed order");
    assert_eq!(e.error.code, ErrorCode::InvalidState, "{e}");

    // with the flag, a plain resume runs `check` again, as attempt 2
    std::fs::write(dir.join("flag"), b"").expect("write flag");
    let info = resume(&bus, &order, None, false).await.expect("resume");
    assert!(
        matches!(info.state, OrderState::Running | OrderState::Succeeded),
        "{info:#?}"
    );
    let done = wait_order(&bus, &order, "it succeeds", |o| {
        o.state == OrderState::Succeeded
    })
    .await;
    let numbers: Vec<(u32, OrderState)> = attempts(&done, "check")
        .iter()
        .map(|a| (a.attempt, a.state))
        .collect();
    assert_eq!(
        numbers,
        [(1, OrderState::Failed), (2, OrderState::Succeeded)],
        "{done:#?}"
    );
    assert_eq!(attempts(&done, "s1").len(), 1, "{done:#?}");
    assert_eq!(ran(&dir), ["s1", "check", "s3"]);

    // force_succeeded: the failed step counts as succeeded, the next one runs
    let dir = order_dir(&h, "forced");
    let order = submit_in(&bus, "fragile", &dir).await;
    let failed = wait_final(&bus, &order).await;
    assert_eq!(failed.state, OrderState::Failed, "{failed:#?}");
    let info = resume(&bus, &order, None, true)
        .await
        .expect("resume --force-succeeded");
    assert_eq!(
        step(&info, "check").state,
        StepState::Succeeded,
        "{info:#?}"
    );
    let done = wait_order(&bus, &order, "it succeeds", |o| {
        o.state == OrderState::Succeeded
    })
    .await;
    let check = step(&done, "check");
    assert!(check.forced, "{done:#?}");
    assert_eq!(check.state, StepState::Succeeded, "{done:#?}");
    assert_eq!(
        attempts(&done, "check").len(),
        1,
        "not run again: {done:#?}"
    );
    assert_eq!(ran(&dir), ["s1", "s3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_is_idempotent() {
    let h = three_step_cluster().await;
    let bus = h.bus.clone();

    // suspend twice: the same answer, no harm
    let dir = order_dir(&h, "suspended");
    let order = submit_in(&bus, "three", &dir).await;
    started(&dir, "s1", 1).await;
    let one = suspend(&bus, &order, false).await.expect("suspend");
    let two = suspend(&bus, &order, false).await.expect("suspend again");
    assert_eq!(one.state, OrderState::Suspending, "{one:#?}");
    assert_eq!(two.state, one.state, "{two:#?}");
    open_gate(&dir, "s1");
    wait_state(&bus, &order, OrderState::Suspended).await;
    let three = suspend(&bus, &order, false)
        .await
        .expect("suspend a third time");
    assert_eq!(three.state, OrderState::Suspended, "{three:#?}");

    // resume from a step that does not exist: an error naming it; still held
    let e = error_of(
        resume(&bus, &order, Some("no-such-step"), false).await,
        "resume from an unknown step",
    );
    assert!(e.error.message.contains("no-such-step"), "{e}");
    assert_eq!(get(&bus, &order).await.state, OrderState::Suspended);

    // resume twice: both fine
    let one = resume(&bus, &order, None, false).await.expect("resume");
    let two = resume(&bus, &order, None, false)
        .await
        .expect("resume again");
    for info in [&one, &two] {
        assert!(
            matches!(info.state, OrderState::Running | OrderState::Succeeded),
            "{info:#?}"
        );
    }
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    assert_eq!(ran(&dir), ["s1", "s2", "s3"], "each step ran once");
    assert_eq!(done.history.len(), 3, "{done:#?}");
    let e = error_of(
        suspend(&bus, &order, false).await,
        "suspend a succeeded order",
    );
    assert_eq!(e.error.code, ErrorCode::InvalidState, "{e}");

    // cancel twice: the same answer; again once cancelled
    let dir = order_dir(&h, "cancelled");
    let order = submit_in(&bus, "three", &dir).await;
    started(&dir, "s1", 1).await;
    let one = cancel(&bus, &order, false).await.expect("cancel");
    let two = cancel(&bus, &order, false).await.expect("cancel again");
    assert_eq!(one.state, OrderState::Cancelling, "{one:#?}");
    assert_eq!(two.state, one.state, "{two:#?}");
    open_gate(&dir, "s1");
    let done = wait_final(&bus, &order).await;
    assert_eq!(done.state, OrderState::Cancelled, "{done:#?}");
    let three = cancel(&bus, &order, true)
        .await
        .expect("cancel a cancelled order");
    assert_eq!(three.state, OrderState::Cancelled, "{three:#?}");
    let e = error_of(
        resume(&bus, &order, None, false).await,
        "resume a cancelled order",
    );
    assert_eq!(e.error.code, ErrorCode::InvalidState, "{e}");
    assert_eq!(ran(&dir), ["s1"]);

    // an unknown order
    let e = error_of(suspend(&bus, "no-such-order", false).await, "suspend");
    assert_eq!(e.error.code, ErrorCode::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rejects_broken_workflows() {
    let h = cluster(&["sub-a"]).await;
    deploy(&h.bus, WORK_JOB).await;
    let dir = h.scratch();

    let steps = |a: &str, b: &str| format!("[[workflow.steps]]\n{a}\n\n[[workflow.steps]]\n{b}\n");
    // (workflow, what the error names besides it, the workflow tables)
    let cases: Vec<(&str, Vec<&str>, String)> =
        vec![
        (
            "bad_unknown_job",
            vec!["step2", "nosuchjob"],
            steps(
                "name = \"step1\"\njob = \"work\"",
                "name = \"step2\"\njob = \"nosuchjob\"",
            ),
        ),
        (
            "bad_cycle",
            vec!["left", "right"],
            steps(
                "name = \"left\"\njob = \"work\"\nafter = [\"right\"]",
                "name = \"right\"\njob = \"work\"\nafter = [\"left\"]",
            ),
        ),
        (
            "bad_dangling",
            vec!["step2", "ghost"],
            steps(
                "name = \"step1\"\njob = \"work\"",
                "name = \"step2\"\njob = \"work\"\nafter = [\"ghost\"]",
            ),
        ),
        (
            "bad_duplicate",
            vec!["twin"],
            steps(
                "name = \"twin\"\njob = \"work\"",
                "name = \"twin\"\njob = \"work\"",
            ),
        ),
        ("bad_empty", vec![], String::new()),
        (
            "bad_retry",
            vec!["flaky"],
            steps(
                "name = \"step1\"\njob = \"work\"",
                "name = \"flaky\"\njob = \"work\"\non_failure = { action = \"retry\", times = 0 }",
            ),
        ),
        // a trigger fires without parameters: a step's job must not need one
        (
            "bad_trigger_params",
            vec!["step1", "needy", "who"],
            "[[workflow.triggers]]\nkind = \"interval\"\nevery = \"1h\"\n\n\
             [[workflow.steps]]\nname = \"step1\"\njob = \"needy\"\n\n\
             [[job]]\nname = \"needy\"\nprogram = \"true\"\n[job.params.who]\nrequired = true\n"
                .to_string(),
        ),
        // a step's placeholder naming no declared workflow parameter
        (
            "bad_placeholder",
            vec!["step1", "{{nope}}"],
            format!("{DIR_PARAM}\n[[workflow.steps]]\nname = \"step1\"\njob = \"work\"\nparams = {{ step = \"{{{{nope}}}}\" }}\n"),
        ),
        // a step's parameter its job does not declare
        (
            "bad_step_param",
            vec!["step1", "bogus", "work"],
            format!("{DIR_PARAM}\n[[workflow.steps]]\nname = \"step1\"\njob = \"work\"\nparams = {{ step = \"a\", bogus = \"1\" }}\n"),
        ),
        // a required parameter of the step's job that nothing gives
        (
            "bad_ungiven",
            vec!["step1", "work", "dir"],
            steps(
                "name = \"step1\"\njob = \"work\"\nparams = { step = \"a\" }",
                "name = \"step2\"\njob = \"work\"\nparams = { step = \"b\" }",
            ),
        ),
        // a workflow parameter with a bad name
        (
            "bad_wf_param",
            vec!["params.di-r"],
            "[workflow.params.di-r]\n\n[[workflow.steps]]\nname = \"step1\"\njob = \"work\"\nparams = { step = \"a\" }\n"
                .to_string(),
        ),
        // a trigger fires with the defaults: declared without one is not enough
        (
            "bad_trigger_default",
            vec!["step1", "work", "dir", "default"],
            "[workflow.params.dir]\n\n[[workflow.triggers]]\nkind = \"interval\"\nevery = \"1h\"\n\n\
             [[workflow.steps]]\nname = \"step1\"\njob = \"work\"\nparams = { step = \"a\" }\n"
                .to_string(),
        ),
        // a workflow named like a deployed job
        (
            "work",
            vec![],
            steps("name = \"step1\"\njob = \"work\"", "name = \"step2\"\njob = \"work\""),
        ),
    ];
    for (i, (name, names, tables)) in cases.iter().enumerate() {
        // each file also brings a new job, which must not be deployed either
        let extra = format!("extra_{i}");
        let text = format!(
            "[[job]]\nname = \"{extra}\"\nprogram = \"true\"\n\n[[workflow]]\nname = \"{name}\"\n\n{tables}"
        );
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, &text).expect("write deploy file");
        let out = run_baton(&h, &["deploy", &file.display().to_string()], REQUEST * 2).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}\n{text}");
        assert!(
            stderr.contains(name),
            "{name}: the error names it: {stderr}"
        );
        for n in names {
            assert!(stderr.contains(n), "{name}: the error names {n}: {stderr}");
        }
        let e = error_of(try_submit(&h.bus, &extra).await, "submit the extra job");
        assert_eq!(e.error.code, ErrorCode::UnknownJob, "{name}: {e}");
        if *name != "work" {
            let e = error_of(try_submit(&h.bus, name).await, "submit the broken workflow");
            assert_eq!(e.error.code, ErrorCode::UnknownJob, "{name}: {e}");
        }
    }

    // the same name for a job and a workflow in one file
    let text = r#"
[[job]]
name = "twice"
program = "true"

[[workflow]]
name = "twice"

[[workflow.steps]]
job = "work"
"#;
    let file = dir.join("twice.toml");
    std::fs::write(&file, text).expect("write deploy file");
    let out = run_baton(&h, &["deploy", &file.display().to_string()], REQUEST * 2).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("twice"),
        "{out:?}"
    );
    let e = error_of(try_submit(&h.bus, "twice").await, "submit twice");
    assert_eq!(e.error.code, ErrorCode::UnknownJob, "{e}");

    // the broker refuses a broken workflow sent over the wire, too
    // (built from JSON: the wire form accepts what it does not know)
    let request: DeployRequest = serde_json::from_str(
        r#"{"workflows": [{"name": "wire_bad", "steps": [{"name": "only", "job": "nosuchjob"}]}]}"#,
    )
    .expect("a deploy request");
    let call = h
        .bus
        .request::<_, DeployReply>(h.bus.subjects().deploy(), &request, REQUEST);
    let e = error_of(
        within(REQUEST * 2, "deploy", call).await,
        "deploy over the wire",
    );
    assert!(
        e.error.message.contains("wire_bad") && e.error.message.contains("only"),
        "{e}"
    );
    let e = error_of(try_submit(&h.bus, "wire_bad").await, "submit wire_bad");
    assert_eq!(e.error.code, ErrorCode::UnknownJob, "{e}");

    // and a good one deploys with the CLI and runs
    let file = dir.join("good.toml");
    std::fs::write(
        &file,
        format!("[[workflow]]\nname = \"good\"\n{DIR_PARAM}\n[[workflow.steps]]\njob = \"work\"\nparams = {{ step = \"only\" }}\n"),
    )
    .expect("write deploy file");
    let out = run_baton(&h, &["deploy", &file.display().to_string()], REQUEST * 2).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let run_dir = order_dir(&h, "good");
    let order = submit_in(&h.bus, "good", &run_dir).await;
    let done = wait_final(&h.bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    assert_eq!(ran(&run_dir), ["only"]);
}

/// Round-robin is per order: each step goes to the member after the one
/// that ran the step before it, even while other orders interleave theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_each_move_to_the_next_subagent_step_by_step() {
    let h = cluster_with_env(
        &["sub-a", "sub-b", "sub-c"],
        &[("BATON_SUBAGENT__CAPACITY", "16")],
    )
    .await;
    let toml = trio_chain("chain", &[("s1", ""), ("s2", ""), ("s3", ""), ("s4", "")]);
    deploy(&h.bus, &toml).await;
    let mut orders = Vec::new();
    for i in 0..8 {
        let dir = order_dir(&h, &format!("o{i}"));
        orders.push(submit_in(&h.bus, "chain", &dir).await);
    }
    for order in &orders {
        let info = wait_state(&h.bus, order, OrderState::Succeeded).await;
        let ran_on: Vec<&str> = ["s1", "s2", "s3", "s4"]
            .iter()
            .map(|s| last_attempt(&info, s).subagent_id.as_deref().unwrap_or("?"))
            .collect();
        let next = |s: &str| match s {
            "sub-a" => "sub-b",
            "sub-b" => "sub-c",
            _ => "sub-a",
        };
        for pair in ran_on.windows(2) {
            assert_eq!(pair[1], next(pair[0]), "order {order} ran on {ran_on:?}");
        }
    }
}

/// The CLI over a workflow order: `submit --wait`, `order show`, `order
/// list`, `order logs --step`, and a refused command's exit code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_shows_lists_and_steers_workflow_orders() {
    let h = cluster(&["sub-a", "sub-b"]).await;
    let toml = format!(
        r#"{}

[[workflow]]
name = "pair"
{DIR_PARAM}
[[workflow.steps]]
name = "first"
job = "work"
params = {{ step = "first" }}

[[workflow.steps]]
name = "second"
job = "work"
params = {{ step = "second" }}
"#,
        WORK_JOB.trim_end()
    );
    let file = h.scratch().join("pair.toml");
    std::fs::write(&file, toml).unwrap();
    let out = run_baton(&h, &["deploy", &file.display().to_string()], WAIT).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed workflows: pair"));

    let dir = order_dir(&h, "cli");
    let param = format!("dir={}", dir.display());
    let out = run_baton(&h, &["submit", "pair", "-p", &param, "--wait"], WAIT).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("hello from first") && stdout.contains("hello from second"),
        "{stdout}"
    );
    assert!(stderr.contains("step first succeeded"), "{stderr}");
    let order = get_order_id(&stderr).unwrap_or_else(|| panic!("order id in {stderr}"));

    let out = run_baton(&h, &["order", "show", &order], WAIT).await;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for expected in [
        "workflow  pair",
        "steps:",
        "history:",
        "first",
        "second",
        "hello from second",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in:\n{shown}");
    }
    assert!(
        shown.contains("sub-a") && shown.contains("sub-b"),
        "{shown}"
    );

    let out = run_baton(&h, &["order", "list", "--workflow", "pair"], WAIT).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&order) && listed.contains("succeeded"),
        "{listed}"
    );

    let out = run_baton(&h, &["order", "logs", &order, "--step", "second"], WAIT).await;
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("hello from second") && !logs.contains("hello from first"),
        "{logs}"
    );

    let out = run_baton(&h, &["order", "suspend", &order], WAIT).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("succeeded") && stderr.contains("suspended"),
        "{stderr}"
    );
}

/// The order id in `baton submit`'s "order ID accepted for NAME" line.
fn get_order_id(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        l.strip_prefix("order ")?
            .split_whitespace()
            .next()
            .map(str::to_string)
    })
}

/// A parameter a step's job requires is checked at submit, not when the
/// order reaches that step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_order_missing_a_required_parameter_is_refused_at_submit() {
    let h = cluster(&["sub-a"]).await;
    deploy(
        &h.bus,
        r#"
[[job]]
name = "prepare"
program = "true"

[[job]]
name = "ship"
program = "true"
[job.params.target]
required = true

[[workflow]]
name = "release"
[workflow.params.target]        # optional for the workflow, required by ship
[[workflow.steps]]
name = "prepare"
job = "prepare"
[[workflow.steps]]
name = "ship"
job = "ship"
"#,
    )
    .await;
    let e = error_of(try_submit(&h.bus, "release").await, "submit without target");
    assert_eq!(e.error.code, ErrorCode::InvalidParam, "{e}");
    assert!(
        e.error.message.contains("step 'ship'") && e.error.message.contains("--param target="),
        "{e}"
    );
    let order = submit(&h.bus, "release", &[("target", "prod".to_string())]).await;
    let done = wait_final(&h.bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
}

/// A workflow declares what a submitter may set, as a job does; each step
/// receives only the parameters its job declares, whatever the order, the
/// step's own `params` or earlier steps' results offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_parameters_are_declared_and_steps_get_only_their_jobs_own() {
    let h = cluster(&["sub-a"]).await;
    deploy(
        &h.bus,
        r#"
[[job]]
name = "give"
program = "sh"
args = ["-c", 'echo "::baton-result version=7"; echo "::baton-result token=t0p"']

[[job]]
name = "show"
program = "sh"
args = ["-c", 'env | grep "^BATON_" | sort > "$BATON_PARAM_DIR/$BATON_STEP.env"']
[job.params.dir]
required = true
[job.params.give_version]       # step give's result `version`
default = ""
[job.params.label]
default = ""

[[workflow]]
name = "leak"
[workflow.params.dir]
required = true
[workflow.params.secret]
default = "hush"
[[workflow.steps]]
name = "give"
job = "give"
[[workflow.steps]]
name = "show"
job = "show"
params = { label = "{{secret}}-x" }
"#,
    )
    .await;
    let dir = order_dir(&h, "leak");
    let dir_param = dir.display().to_string();

    // a name the workflow does not declare, or a required one missing
    let e = error_of(
        try_submit_with(&h.bus, "leak", &[("dir", &dir_param), ("bogus", "1")]).await,
        "submit with an undeclared parameter",
    );
    assert_eq!(e.error.code, ErrorCode::InvalidParam, "{e}");
    assert_eq!(
        e.error.message,
        "workflow 'leak' has no parameter 'bogus' (it accepts: dir, secret)"
    );
    let e = error_of(try_submit(&h.bus, "leak").await, "submit without dir");
    assert_eq!(e.error.code, ErrorCode::InvalidParam, "{e}");
    assert!(e.error.message.contains("'dir'"), "{e}");

    let order = submit(
        &h.bus,
        "leak",
        &[("dir", dir_param.clone()), ("secret", "s3cret".into())],
    )
    .await;
    let done = wait_final(&h.bus, &order).await;
    assert_eq!(done.state, OrderState::Succeeded, "{done:#?}");
    // the order keeps its parameters, defaults applied
    assert_eq!(
        done.params.get("secret").map(String::as_str),
        Some("s3cret")
    );

    let env = lines(&dir.join("show.env"));
    let params: Vec<&str> = env
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("BATON_PARAM_"))
        .collect();
    assert_eq!(
        params,
        [
            format!("BATON_PARAM_DIR={dir_param}").as_str(),
            "BATON_PARAM_GIVE_VERSION=7",
            "BATON_PARAM_LABEL=s3cret-x",
        ],
        "{env:#?}"
    );
    // the special variables are there as before
    for expected in [
        format!("BATON_WORKFLOW_ORDER_ID={order}"),
        "BATON_STEP=show".to_string(),
        "BATON_WORKFLOW=leak".to_string(),
    ] {
        assert!(env.contains(&expected), "no {expected} in {env:#?}");
    }
    // the step order's record holds only those parameters, too
    let step_order = &last_attempt(&done, "show").order_id;
    let info = get(&h.bus, step_order).await;
    let names: Vec<&str> = info.params.keys().map(String::as_str).collect();
    assert_eq!(names, ["dir", "give_version", "label"], "{info:#?}");
}
