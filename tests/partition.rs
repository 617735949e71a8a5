//! Network partitions: subagent `sub-p` reaches NATS through a [`Proxy`]
//! that the test cuts like a pulled cable (sockets stay open, nothing gets
//! through), while `sub-q` is connected directly. A fixed-priority cluster
//! puts every task on `sub-p` while it is up.
//!
//! The promise under attack: a task runs again elsewhere only once its first
//! copy is known dead, so two copies never overlap; a short cut changes
//! nothing; a task that cannot run again fails as "subagent lost".
//!
//! The marker job appends `start|end|killed|overlap <order> <pid> <ms>`
//! lines to a file, so the test sees each run's life from outside Baton.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::bus::{decode, Bus, Encoding};
use baton::protocol::*;
use common::proxy::Proxy;
use common::*;
use futures::StreamExt;

const ORPHAN_TIMEOUT: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_millis(500);
const SUBAGENT_TIMEOUT: Duration = Duration::from_millis(1500);
const HEARTBEAT: Duration = Duration::from_millis(250);

/// For every process: the times above (heartbeats keep their default).
const ENV: &[(&str, &str)] = &[
    ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "3s"),
    ("BATON_SUBAGENT__KILL_GRACE", "500ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "1500ms"),
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "250ms"),
];

/// `marker` (restartable) and `marker-once` (not) run the same script on
/// cluster `pq`, where `sub-p` comes first. Before starting, the script
/// records an `overlap` line for every earlier run of the file still alive.
const JOBS: &str = r#"
[[cluster]]
name = "pq"
mode = "fixed-priority"
members = [{ subagent = "sub-p", priority = 2 }, { subagent = "sub-q", priority = 1 }]

[[job]]
name = "marker"
cluster = "pq"
program = "sh"
args = ["-c", '''
f="$BATON_PARAM_FILE"
ms() { date +%s%3N; }
if [ -f "$f" ]; then
  for pid in $(sed -n 's/^start [^ ]* \([0-9]*\) .*/\1/p' "$f"); do
    if kill -0 "$pid" 2>/dev/null; then echo "overlap $BATON_ORDER_ID $pid $(ms)" >> "$f"; fi
  done
fi
echo "start $BATON_ORDER_ID $$ $(ms)" >> "$f"
trap 'echo "killed $BATON_ORDER_ID $$ $(ms)" >> "$f"; exit 143' TERM
sleep "$BATON_PARAM_SECS" &
wait $!
echo "end $BATON_ORDER_ID $$ $(ms)" >> "$f"
''']
[job.params.file]
required = true
[job.params.secs]
required = true

[[job]]
name = "marker-once"
cluster = "pq"
restartable = false
program = "sh"
args = ["-c", '''
f="$BATON_PARAM_FILE"
ms() { date +%s%3N; }
echo "start $BATON_ORDER_ID $$ $(ms)" >> "$f"
trap 'echo "killed $BATON_ORDER_ID $$ $(ms)" >> "$f"; exit 143' TERM
sleep "$BATON_PARAM_SECS" &
wait $!
echo "end $BATON_ORDER_ID $$ $(ms)" >> "$f"
''']
[job.params.file]
required = true
[job.params.secs]
required = true
"#;

/// One line the marker job wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    kind: String,
    pid: i32,
    at_ms: u64,
}

fn marks(file: &Path) -> Vec<Mark> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [kind, _order, pid, at] => Mark {
                    kind: kind.to_string(),
                    pid: pid.parse().unwrap_or_else(|_| panic!("pid in {line:?}")),
                    at_ms: at.parse().unwrap_or_else(|_| panic!("time in {line:?}")),
                },
                _ => panic!("not a marker line: {line:?}"),
            }
        })
        .collect()
}

fn of_kind<'m>(marks: &'m [Mark], kind: &str) -> Vec<&'m Mark> {
    marks.iter().filter(|m| m.kind == kind).collect()
}

/// The events the test follows, in arrival order.
#[derive(Debug, Clone)]
enum Seen {
    Started(TaskStarted),
    Finished(OrderFinished),
    Subagent(SubagentChanged),
}

/// Records order events and subagent changes in the background.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(bus: &Bus) -> Recorder {
        let s = bus.subjects().clone();
        let subscribe = async {
            let events = bus.listen_raw(s.all_events()).await?;
            let changes = bus.listen_raw(s.subagent_changes()).await?;
            Ok::<_, baton::bus::BusError>(futures::stream::select(events, changes))
        };
        let mut stream = within(REQUEST, "subscribe", subscribe)
            .await
            .expect("subscribe to events");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            let mp = Encoding::MessagePack;
            while let Some((subject, payload)) = stream.next().await {
                let event = match s.parse_event(&subject) {
                    Some((_, _, EventKind::Started)) => {
                        Seen::Started(decode(mp, &payload).expect("started decodes"))
                    }
                    Some((_, _, EventKind::Finished)) => {
                        Seen::Finished(decode(mp, &payload).expect("finished decodes"))
                    }
                    Some(_) => continue,
                    None => Seen::Subagent(decode(mp, &payload).expect("change decodes")),
                };
                into.lock().unwrap().push(event);
            }
        });
        Recorder { seen, task }
    }

    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn started(&self, order: &str) -> Vec<TaskStarted> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Started(s) if s.order_id == order => Some(s),
                _ => None,
            })
            .collect()
    }

    fn finished(&self, order: &str) -> Vec<OrderFinished> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Finished(f) if f.order_id == order => Some(f),
                _ => None,
            })
            .collect()
    }

    fn changes(&self, subagent: &str) -> Vec<SubagentChanged> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Subagent(c) if c.subagent_id == subagent => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Waits for the `started` event of the order's attempt `attempt`.
    async fn wait_started(&self, order: &str, attempt: u32, limit: Duration) -> TaskStarted {
        let what = format!("attempt {attempt} of {order} started");
        wait_for(limit, &what, || {
            let started = self.started(order);
            std::future::ready(started.into_iter().find(|s| s.attempt == attempt))
        })
        .await
    }

    async fn wait_finished(&self, order: &str, limit: Duration) -> OrderFinished {
        let what = format!("{order} finished");
        wait_for(limit, &what, || {
            std::future::ready(self.finished(order).into_iter().next())
        })
        .await
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
        if std::thread::panicking() {
            eprintln!("===== events seen =====");
            for event in self.all() {
                eprintln!("{event:?}");
            }
        }
    }
}

/// A cluster with `sub-q` connected directly and `sub-p` through a proxy,
/// the marker jobs deployed, and events recorded.
struct Partition {
    // drop order: the proxy and recorder before the harness prints its logs
    proxy: Proxy,
    events: Recorder,
    h: Harness,
}

impl Partition {
    async fn start() -> Partition {
        let mut h = cluster_with_env(&["sub-q"], ENV).await;
        let proxy = Proxy::start(&h.nats_url()).await.expect("start proxy");
        h.cluster
            .spawn_via("sub-p", &["subagent", "--id", "sub-p"], &proxy.url())
            .expect("spawn sub-p");
        let both = h.cluster.wait_for_subagents(&h.bus, 2);
        if let Err(e) = within(Duration::from_secs(30), "sub-p registers", both).await {
            h.print_logs();
            panic!("sub-p did not join through the proxy: {e:#}");
        }
        deploy(&h.bus, JOBS).await;
        let events = Recorder::start(&h.bus).await;
        Partition { proxy, events, h }
    }

    fn marker_file(&self) -> PathBuf {
        self.h.scratch().join("marks")
    }

    async fn submit(&self, job: &str, secs: &str) -> String {
        let params = BTreeMap::from([
            ("file".to_string(), self.marker_file().display().to_string()),
            ("secs".to_string(), secs.to_string()),
        ]);
        let order = SubmitOrder {
            job: job.into(),
            params,
            request_id: None,
            slot_ms: None,
        };
        let bus = &self.h.bus;
        let submit = bus.request(bus.subjects().submit(), &order, REQUEST);
        let reply: SubmitReply = within(REQUEST * 2, "submit", submit)
            .await
            .expect("submit accepted");
        reply.order_id
    }

    async fn order(&self, order: &str) -> OrderInfo {
        let bus = &self.h.bus;
        let get = GetOrder {
            order_id: order.to_string(),
        };
        let request = bus.request(bus.subjects().order_get(), &get, REQUEST);
        within(REQUEST * 2, "get order", request)
            .await
            .expect("order known")
    }

    async fn status_of(&self, subagent: &str) -> Option<SubagentStatus> {
        let bus = &self.h.bus;
        let status: StatusReply = bus
            .request(bus.subjects().status(), &StatusRequest {}, REQUEST)
            .await
            .ok()?;
        status.subagents.into_iter().find(|s| s.id == subagent)
    }

    /// Waits until the marker file holds a line of `kind`.
    async fn wait_mark(&self, kind: &str, limit: Duration) -> Mark {
        let file = self.marker_file();
        wait_for(limit, &format!("a '{kind}' marker"), || {
            let found = marks(&file).into_iter().find(|m| m.kind == kind);
            std::future::ready(found)
        })
        .await
    }

    /// Waits until the marker file holds `n` lines of `kind`; returns all lines.
    async fn wait_mark_count(&self, kind: &str, n: usize, limit: Duration) -> Vec<Mark> {
        let file = self.marker_file();
        wait_for(limit, &format!("{n} '{kind}' markers"), || {
            let m = marks(&file);
            std::future::ready((of_kind(&m, kind).len() >= n).then_some(m))
        })
        .await
    }

    /// Starts the order's first task on `sub-p` and waits until it runs.
    async fn start_on_p(&self, job: &str, secs: &str) -> (String, TaskStarted) {
        let order = self.submit(job, secs).await;
        let first = self
            .events
            .wait_started(&order, 1, Duration::from_secs(10))
            .await;
        assert_eq!(first.subagent_id, "sub-p", "the cluster prefers sub-p");
        self.wait_mark("start", Duration::from_secs(5)).await;
        (order, first)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_cut_task_finishes_once() {
    let p = Partition::start().await;
    let (order, _) = p.start_on_p("marker", "2").await;

    p.proxy.cut();
    let cut_at = tokio::time::Instant::now();
    // longer than two heartbeats: the broker notices the silence and probes
    let silent = HEARTBEAT * 3;
    wait_until(
        SUBAGENT_TIMEOUT,
        "the broker hears nothing from sub-p",
        || async {
            p.status_of("sub-p")
                .await
                .is_some_and(|s| s.heartbeat_age_ms >= silent.as_millis() as u64)
        },
    )
    .await;
    p.proxy.heal();
    let cut_for = cut_at.elapsed();
    assert!(
        cut_for < SUBAGENT_TIMEOUT,
        "the cut was meant to be shorter than the subagent timeout: {cut_for:?}"
    );

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "ran once: {fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-p"), "{fin:?}");
    assert_eq!(p.events.started(&order).len(), 1, "one started event");

    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "one start: {m:?}");
    assert_eq!(of_kind(&m, "end").len(), 1, "one end: {m:?}");
    assert!(of_kind(&m, "killed").is_empty(), "not killed: {m:?}");
    // a cut shorter than the subagent timeout is no loss
    let changes = p.events.changes("sub-p");
    assert!(
        changes.iter().all(|c| c.state != SubagentState::Lost),
        "sub-p was declared lost after a {cut_for:?} cut: {changes:?}"
    );
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_cut_reruns_restartable_without_overlap() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "6").await;
    let first_pid = first.pid.expect("the first task's pid") as i32;

    p.proxy.cut();
    // sub-p hears no broker for its orphan timeout and kills the task (SIGTERM
    // within one heartbeat, SIGKILL after the grace; the script traps SIGTERM)
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(3);
    let killed = p.wait_mark("killed", limit).await;
    assert_eq!(killed.pid, first_pid, "the first run was killed");

    // only then does the broker run it again, on sub-q
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(10))
        .await;
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    assert!(
        process_gone(first_pid),
        "the first run is gone before the second runs"
    );
    let m = p.wait_mark_count("start", 2, Duration::from_secs(5)).await;
    let second_start = of_kind(&m, "start")[1].clone();
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    assert!(
        killed.at_ms < second_start.at_ms,
        "the second run started {} ms before the first was killed: {m:?}",
        killed.at_ms as i64 - second_start.at_ms as i64
    );
    let lost = p.events.changes("sub-p");
    assert!(
        lost.iter()
            .any(|c| c.state == SubagentState::Lost && c.reason.contains("unreachable")),
        "sub-p was lost as unreachable (it never died): {lost:?}"
    );

    p.proxy.heal();
    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-q"), "{fin:?}");

    // sub-p comes back and its late result of the first run changes nothing
    wait_until(Duration::from_secs(10), "sub-p is back", || async {
        p.status_of("sub-p")
            .await
            .is_some_and(|s| s.state == SubagentState::Available)
    })
    .await;
    let m = marks(&p.marker_file());
    let starts = of_kind(&m, "start");
    assert_eq!(starts.len(), 2, "two runs: {m:?}");
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    let ends = of_kind(&m, "end");
    assert_eq!(ends.len(), 1, "finished exactly once: {m:?}");
    assert_eq!(ends[0].pid, starts[1].pid, "by the second run: {m:?}");
    assert_eq!(p.events.finished(&order).len(), 1, "one finished event");
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    assert_eq!(info.attempt, 2, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_cut_fails_non_restartable() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker-once", "6").await;

    p.proxy.cut();
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(6);
    let fin = p.events.wait_finished(&order, limit).await;
    assert_eq!(fin.state, OrderState::Failed, "{fin:?}");
    let reason = fin.reason.clone().unwrap_or_default();
    assert!(reason.contains("subagent lost"), "{fin:?}");
    assert_eq!(fin.attempt, 1, "{fin:?}");
    // declared failed only once the task was dead
    let killed = p.wait_mark("killed", ORPHAN_TIMEOUT + KILL_GRACE).await;
    assert_eq!(killed.pid, first.pid.expect("pid") as i32);
    assert!(
        killed.at_ms <= fin.at_ms,
        "failed {} ms before sub-p killed the task",
        killed.at_ms - fin.at_ms
    );

    p.proxy.heal();
    wait_until(Duration::from_secs(10), "sub-p is back", || async {
        p.status_of("sub-p")
            .await
            .is_some_and(|s| s.state == SubagentState::Available && s.running == 0)
    })
    .await;
    // the late result ("killed by its subagent") does not change a final order
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Failed, "{info:?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap_or("")
            .contains("subagent lost"),
        "{info:?}"
    );
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "never run again: {m:?}");
    assert!(of_kind(&m, "end").is_empty(), "{m:?}");
    assert_eq!(p.events.started(&order).len(), 1, "one started event");
    assert_eq!(p.events.finished(&order).len(), 1, "one finished event");
}

/// The cut heals after `sub-p` killed its task (orphan timeout) but before
/// the broker's own deadline for it: the kill is the cluster's doing, not the
/// job's, so a restartable order runs again rather than failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_after_the_subagent_killed_its_task_reruns_it() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "6").await;
    p.proxy.cut();
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(3);
    let killed = p.wait_mark("killed", limit).await;
    assert_eq!(killed.pid, first.pid.expect("pid") as i32);
    // the broker still waits for the orphan timeout (heartbeat and margin added)
    let info = p.order(&order).await;
    assert_eq!(info.attempt, 1, "not yet run again: {info:?}");
    p.proxy.heal();

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(30))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    let m = marks(&p.marker_file());
    let starts = of_kind(&m, "start");
    assert_eq!(starts.len(), 2, "two runs: {m:?}");
    assert!(killed.at_ms < starts[1].at_ms, "{m:?}");
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    assert_eq!(of_kind(&m, "end").len(), 1, "finished exactly once: {m:?}");
}
