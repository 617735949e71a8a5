//! Network faults for one subagent: `sub-p` reaches NATS through a
//! [`Proxy`] the test cuts, resets or refuses, while `sub-q` is connected
//! directly. A fixed-priority cluster puts every task on `sub-p` while it is
//! up. The marker job appends `start|end|killed|overlap <order> <pid> <ms>`
//! lines to a file, so a test sees each run's life from outside Baton.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::bus::{decode, Bus, Encoding};
use baton::protocol::*;
use futures::StreamExt;

use super::proxy::Proxy;
use super::*;

pub const ORPHAN_TIMEOUT: Duration = Duration::from_secs(3);
pub const KILL_GRACE: Duration = Duration::from_millis(500);
pub const SUBAGENT_TIMEOUT: Duration = Duration::from_millis(1500);
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// For every process: the times above (heartbeats keep their default).
pub const ENV: &[(&str, &str)] = &[
    ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "3s"),
    ("BATON_SUBAGENT__KILL_GRACE", "500ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "1500ms"),
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "250ms"),
];

/// `marker` (restartable) and `marker-once` (not) run the same script on
/// cluster `pq`, where `sub-p` comes first. Before starting, the script
/// records an `overlap` line for every earlier run of the file still alive.
pub const JOBS: &str = r#"
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
    # alive and not a zombie (a zombie runs nothing; its new parent collects it)
    case "$(cat "/proc/$pid/stat" 2>/dev/null)" in
      ""|*") Z "*|*") X "*) ;;
      *) echo "overlap $BATON_ORDER_ID $pid $(ms)" >> "$f" ;;
    esac
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
pub struct Mark {
    pub kind: String,
    pub pid: i32,
    pub at_ms: u64,
}

pub fn marks(file: &Path) -> Vec<Mark> {
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

pub fn of_kind<'m>(marks: &'m [Mark], kind: &str) -> Vec<&'m Mark> {
    marks.iter().filter(|m| m.kind == kind).collect()
}

/// The events the test follows, in arrival order.
#[derive(Debug, Clone)]
pub enum Seen {
    Started(TaskStarted),
    Finished(OrderFinished),
    Subagent(SubagentChanged),
}

/// Records order events and subagent changes in the background.
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(bus: &Bus) -> Recorder {
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

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn started(&self, order: &str) -> Vec<TaskStarted> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Started(s) if s.order_id == order => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn finished(&self, order: &str) -> Vec<OrderFinished> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Finished(f) if f.order_id == order => Some(f),
                _ => None,
            })
            .collect()
    }

    pub fn changes(&self, subagent: &str) -> Vec<SubagentChanged> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Subagent(c) if c.subagent_id == subagent => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Waits for the `started` event of the order's attempt `attempt`.
    pub async fn wait_started(&self, order: &str, attempt: u32, limit: Duration) -> TaskStarted {
        let what = format!("attempt {attempt} of {order} started");
        wait_for(limit, &what, || {
            let started = self.started(order);
            std::future::ready(started.into_iter().find(|s| s.attempt == attempt))
        })
        .await
    }

    pub async fn wait_finished(&self, order: &str, limit: Duration) -> OrderFinished {
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
pub struct Partition {
    // drop order: the proxy and recorder before the harness prints its logs
    pub proxy: Proxy,
    pub events: Recorder,
    pub h: Harness,
}

impl Partition {
    pub async fn start() -> Partition {
        Partition::start_with(ENV, "").await
    }

    /// With other settings for every process and for nats-server.
    pub async fn start_with(env: &[(&str, &str)], server: &str) -> Partition {
        let mut h = cluster_with(&["sub-q"], env, server).await;
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

    pub fn marker_file(&self) -> PathBuf {
        self.h.scratch().join("marks")
    }

    pub async fn submit(&self, job: &str, secs: &str) -> String {
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

    pub async fn order(&self, order: &str) -> OrderInfo {
        let bus = &self.h.bus;
        let get = GetOrder {
            order_id: order.to_string(),
        };
        let request = bus.request(bus.subjects().order_get(), &get, REQUEST);
        within(REQUEST * 2, "get order", request)
            .await
            .expect("order known")
    }

    pub async fn status_of(&self, subagent: &str) -> Option<SubagentStatus> {
        let bus = &self.h.bus;
        let status: StatusReply = bus
            .request(bus.subjects().status(), &StatusRequest {}, REQUEST)
            .await
            .ok()?;
        status.subagents.into_iter().find(|s| s.id == subagent)
    }

    /// Waits until the marker file holds a line of `kind`.
    pub async fn wait_mark(&self, kind: &str, limit: Duration) -> Mark {
        let file = self.marker_file();
        wait_for(limit, &format!("a '{kind}' marker"), || {
            let found = marks(&file).into_iter().find(|m| m.kind == kind);
            std::future::ready(found)
        })
        .await
    }

    /// Waits until the marker file holds `n` lines of `kind`; returns all lines.
    pub async fn wait_mark_count(&self, kind: &str, n: usize, limit: Duration) -> Vec<Mark> {
        let file = self.marker_file();
        wait_for(limit, &format!("{n} '{kind}' markers"), || {
            let m = marks(&file);
            std::future::ready((of_kind(&m, kind).len() >= n).then_some(m))
        })
        .await
    }

    /// Starts the order's first task on `sub-p` and waits until it runs.
    pub async fn start_on_p(&self, job: &str, secs: &str) -> (String, TaskStarted) {
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
