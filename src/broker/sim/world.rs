//! The simulated world: the event queue, the clock, the network, the
//! brokers' leadership, and carrying out the cores' effects.
//!
//! Size: just over the ~500-line mark, mostly the one event enum and its
//! one dispatch; the brokers' side (`brokers.rs`) and the subagents' and
//! clients' (`parties.rs`) are apart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

mod brokers;
mod parties;

use super::check::Checker;
use super::faults::{self, Fault, Weather, FAULTS_UNTIL};
use super::journal::Journal;
use super::subagent::{Answer, Reaper, Report, SimSubagent};
use crate::broker::core::{Core, Input, Now, Reply, Stored};
use crate::broker::lease::Tenure;
use crate::config::Config;
use crate::protocol::*;
use crate::testing::Rng;

const BROKERS: usize = 2;
const SUBAGENTS: usize = 3;
const CLIENTS: usize = 2;
const TICK: u64 = 250;
const LEASE: u64 = 2_000;
/// How long a request waits for its answer.
const REQUEST_TIMEOUT: u64 = 1_000;
/// The run ends here at the latest.
const END: u64 = 90_000;
/// `broker.failed_hold`: failed workflow orders expire within the run.
const FAILED_HOLD: u64 = 3_000;
const BASE_MS: u64 = 1_800_000_000_000;
/// Retries of job `r`.
const RETRIES: u32 = 2;

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Client {
        c: usize,
        seq: u64,
    },
    /// An operator's cancel of an order.
    Operator {
        order_id: String,
    },
    Subagent {
        s: usize,
        instance: u64,
    },
}

/// What a run left: its violations and its trace.
pub struct Outcome {
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

#[derive(Debug, Clone)]
enum Ev {
    /// An IO outcome or timer of one broker process's core.
    Io {
        b: usize,
        gen: u64,
        input: Input<Addr>,
    },
    /// A request or publish to the brokers: each serving process gets it.
    ToBrokers(Input<Addr>),
    /// One of those, held by a paused broker process.
    Request {
        b: usize,
        input: Input<Addr>,
    },
    BrokerTick {
        b: usize,
    },
    Resume {
        b: usize,
    },
    RestartBroker {
        b: usize,
    },
    SubTick {
        s: usize,
        instance: u64,
    },
    ReaperTick {
        s: usize,
        instance: u64,
    },
    TaskEnd {
        s: usize,
        instance: u64,
        task_id: String,
    },
    Run {
        s: usize,
        req: u64,
        run: Box<RunTask>,
    },
    Kill {
        s: usize,
        req: u64,
        kill: KillTask,
    },
    Ping {
        s: usize,
        req: u64,
    },
    BrokerHeartbeat {
        s: usize,
        epoch: u64,
    },
    SubReply {
        s: usize,
        instance: u64,
        reply: Reply,
    },
    Answer {
        req: u64,
        answer: Answer,
    },
    RequestTimeout {
        req: u64,
    },
    ClientReply {
        c: usize,
        seq: u64,
        reply: Reply,
    },
    ClientNext {
        c: usize,
    },
    ClientTimeout {
        c: usize,
        seq: u64,
    },
    /// An operator cancels an order.
    Cancel {
        order_id: String,
        kill: bool,
    },
    CancelReply {
        order_id: String,
        reply: Reply,
    },
    Write {
        b: usize,
        gen: u64,
        info: Box<OrderInfo>,
        revision: Option<u64>,
    },
    Create {
        b: usize,
        gen: u64,
        info: Box<OrderInfo>,
        idempotent: bool,
    },
    Fault(Fault),
}

struct BrokerProc {
    core: Option<Core<Addr>>,
    tenure: Option<Tenure>,
    gen: u64,
    epoch: u64,
    crashed: bool,
    paused: bool,
    held: Vec<Ev>,
    renewed_at: u64,
}

/// A broker's request to a subagent, waiting for its answer.
enum Asked {
    Run {
        subagent_id: String,
        run: Box<RunTask>,
        again: bool,
    },
    Probe {
        subagent_id: String,
    },
    Kill,
}

struct Client {
    next: u64,
    total: u64,
    seq: u64,
    /// The request id (if any) and job of the submit waiting for its answer.
    in_flight: Option<(Option<String>, String)>,
}

pub struct World {
    rng: Rng,
    now: u64,
    base: Instant,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    next_event: u64,
    config: Config,
    jobs: Vec<JobSpec>,
    workflows: Vec<WorkflowSpec>,
    journal: Journal,
    brokers: Vec<BrokerProc>,
    lease: (u64, u64),
    subs: Vec<SimSubagent>,
    /// The reapers of dead subagent processes, by subagent and instance.
    reapers: BTreeMap<(usize, u64), Reaper>,
    partitioned_until: Vec<u64>,
    disconnected_until: Vec<u64>,
    clients: Vec<Client>,
    asked: BTreeMap<u64, (usize, u64, Asked)>,
    next_request: u64,
    weather: Weather,
    midway_crashes: u32,
    check: Checker,
    trace: Vec<String>,
    seed: u64,
}

/// Runs one seed.
pub fn run(seed: u64) -> Outcome {
    let mut w = World::new(seed);
    while let Some(Reverse((at, id))) = w.queue.pop() {
        if at > END || (at > FAULTS_UNTIL && at % TICK == 0 && w.settled()) {
            break;
        }
        w.now = at;
        if let Some(ev) = w.events.remove(&id) {
            w.handle(ev);
        }
    }
    let now = w.now;
    w.check.at_end(now, &w.journal);
    let waiting = w.clients.iter().filter(|c| c.in_flight.is_some()).count();
    if waiting > 0 {
        w.check
            .violations
            .push(format!("{waiting} client(s) never answered"));
    }
    Outcome {
        violations: w.check.violations,
        trace: w.trace,
    }
}

/// The spread job: one task on every subagent up when its order is placed;
/// a lost member has 1 s to come back; two successes will do.
fn spread_job() -> JobSpec {
    let spec = serde_json::json!({"name": "sp", "program": "true", "restartable": true,
        "spread": {"min_succeeded": 2, "rejoin_ms": 1000}});
    serde_json::from_value(spec).unwrap()
}

/// The job with retries: `RETRIES` of them, quick and jittered.
fn retrying_job() -> JobSpec {
    let spec = serde_json::json!({"name": "r", "program": "false", "restartable": true,
        "retry": {"times": RETRIES, "backoff_ms": 200, "max_backoff_ms": 700, "jitter": true}});
    serde_json::from_value(spec).expect("a valid job")
}

/// The workflow clients submit: a restartable step, then one that must
/// not run twice.
fn workflow() -> WorkflowSpec {
    let spec = serde_json::json!({
        "name": "w",
        "steps": [
            {"name": "a", "job": "j"},
            {"name": "b", "job": "once", "after": ["a"]},
        ],
    });
    serde_json::from_value(spec).expect("a valid workflow")
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let mut config = Config::default();
        config.broker.heartbeat_interval = Duration::from_millis(TICK);
        config.broker.check_interval = Duration::from_millis(TICK);
        config.broker.subagent_timeout = Duration::from_secs(2);
        config.broker.dispatch_timeout = Duration::from_millis(REQUEST_TIMEOUT);
        config.subagent.heartbeat_interval = Duration::from_millis(TICK);
        config.subagent.orphan_timeout = Duration::from_secs(3);
        config.subagent.kill_grace = Duration::from_millis(500);
        config.subagent.result_retry = Duration::from_millis(TICK);
        // failed workflow orders expire within the run, under the faults
        config.broker.failed_hold = Duration::from_millis(FAILED_HOLD);
        let job = |name: &str, restartable: bool| {
            let spec =
                serde_json::json!({"name": name, "program": "true", "restartable": restartable});
            serde_json::from_value::<JobSpec>(spec).unwrap()
        };
        let (faults, weather) = faults::draw(&mut rng, SUBAGENTS);
        let mut w = World {
            now: 0,
            base: Instant::now(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            config,
            jobs: vec![
                job("j", true),
                job("once", false),
                retrying_job(),
                spread_job(),
            ],
            workflows: vec![workflow()],
            journal: Journal::default(),
            brokers: (0..BROKERS)
                .map(|_| BrokerProc {
                    core: None,
                    tenure: None,
                    gen: 0,
                    epoch: 0,
                    crashed: false,
                    paused: false,
                    held: Vec::new(),
                    renewed_at: 0,
                })
                .collect(),
            lease: (0, 0),
            subs: (0..SUBAGENTS)
                .map(|s| SimSubagent::new(format!("s{s}"), 1, 1 + rng.below(2) as u32, 0))
                .collect(),
            reapers: BTreeMap::new(),
            partitioned_until: vec![0; SUBAGENTS],
            disconnected_until: vec![0; SUBAGENTS],
            clients: (0..CLIENTS)
                .map(|_| Client {
                    next: 0,
                    total: 3 + rng.below(8),
                    seq: 0,
                    in_flight: None,
                })
                .collect(),
            asked: BTreeMap::new(),
            next_request: 0,
            weather,
            midway_crashes: 0,
            check: Checker::new(("r".into(), RETRIES)),
            trace: Vec::new(),
            seed,
            rng,
        };
        w.note(format!("seed {seed}: {:?}", w.weather));
        for (at, fault) in faults {
            w.note(format!("fault at {at}: {fault:?}"));
            w.at(at, Ev::Fault(fault));
        }
        for b in 0..BROKERS {
            w.at(1 + b as u64 * 100, Ev::BrokerTick { b });
        }
        for s in 0..SUBAGENTS {
            w.at(10 + s as u64 * 37, Ev::SubTick { s, instance: 1 });
        }
        for c in 0..CLIENTS {
            w.at(300 + c as u64 * 50, Ev::ClientNext { c });
        }
        w
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!("{:>6} {line}", self.now));
    }

    fn at(&mut self, at: u64, ev: Ev) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, id)));
    }

    fn after(&mut self, ms: u64, ev: Ev) {
        self.at(self.now + ms, ev);
    }

    fn time(&self) -> Now {
        Now {
            at: self.base + Duration::from_millis(self.now),
            ms: BASE_MS + self.now,
        }
    }

    fn faulty(&self) -> bool {
        self.now < FAULTS_UNTIL
    }

    /// Sends over the network: delayed, perhaps lost or duplicated, and
    /// lost while `s` is cut off.
    fn send(&mut self, s: Option<usize>, ev: Ev) {
        let cut = |s: usize| self.partitioned_until[s].max(self.disconnected_until[s]) > self.now;
        if s.is_some_and(cut) {
            return;
        }
        let w = self.weather;
        if self.faulty() && self.rng.percent(w.loss) {
            return;
        }
        let spike = self.faulty() && self.rng.percent(w.spike);
        let delay = 1 + self.rng.below(15) + if spike { 100 + self.rng.below(300) } else { 0 };
        if self.faulty() && self.rng.percent(w.duplicate) {
            let again = delay + 1 + self.rng.below(50);
            self.after(again, ev.clone());
        }
        self.after(delay, ev);
    }

    /// Nothing left to do: every client answered, every order ended for
    /// good (a failed workflow order expired).
    fn settled(&self) -> bool {
        let ended = crate::broker::retention::ended_for_good;
        self.clients
            .iter()
            .all(|c| c.in_flight.is_none() && c.next >= c.total)
            && self.journal.all().iter().all(ended)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Io { b, gen, input } => self.deliver(b, Some(gen), input),
            Ev::ToBrokers(input) => {
                for b in 0..BROKERS {
                    self.deliver(b, None, input.clone());
                }
            }
            Ev::Request { b, input } => self.deliver(b, None, input),
            Ev::BrokerTick { b } => self.broker_tick(b),
            Ev::Resume { b } => self.resume(b),
            Ev::RestartBroker { b } => {
                self.note(format!("b{b} restarts as a standby"));
                self.brokers[b].crashed = false;
            }
            Ev::SubTick { s, instance } => {
                if self.subs[s].alive && self.subs[s].instance == instance {
                    let out = self.subs[s].tick(self.now);
                    self.sub_out(s, out);
                    self.after(TICK, Ev::SubTick { s, instance });
                }
            }
            Ev::ReaperTick { s, instance } => {
                let now = self.now;
                let Some(report) = self
                    .reapers
                    .get_mut(&(s, instance))
                    .and_then(|r| r.tick(now))
                else {
                    return;
                };
                let addr = Addr::Subagent { s, instance };
                let input = match report {
                    Report::Result(r) => Input::Result(addr, r),
                    Report::Certificate(c) => Input::Certificate(addr, c),
                    _ => return,
                };
                // the reaper reaches the brokers even from a cut-off host
                self.send(None, Ev::ToBrokers(input));
                self.after(TICK, Ev::ReaperTick { s, instance });
            }
            Ev::TaskEnd {
                s,
                instance,
                task_id,
            } => {
                if self.subs[s].alive && self.subs[s].instance == instance {
                    let out = self.subs[s].end(&task_id, self.now, None, None);
                    self.sub_out(s, out);
                }
            }
            Ev::Run { s, req, run } => {
                if self.subs[s].alive {
                    let ms = 50 + self.rng.below(1_500);
                    // the job with retries fails often
                    let exit = i32::from(run.job == "r" && self.rng.percent(55));
                    if let Some(out) = self.subs[s].run(*run, self.now, ms, exit) {
                        self.sub_answer(s, req, out);
                    }
                }
            }
            Ev::Kill { s, req, kill } => {
                if self.subs[s].alive {
                    let out = self.subs[s].kill(kill, self.now);
                    self.sub_answer(s, req, out);
                }
            }
            Ev::Ping { s, req } => {
                if self.subs[s].alive {
                    let out = self.subs[s].ping();
                    self.sub_answer(s, req, out);
                }
            }
            Ev::BrokerHeartbeat { s, epoch } => {
                if self.subs[s].alive {
                    self.subs[s].broker_heartbeat(epoch, self.now);
                }
            }
            Ev::SubReply { s, instance, reply } => self.sub_reply(s, instance, reply),
            Ev::Answer { req, answer } => self.answered(req, Some(answer)),
            Ev::RequestTimeout { req } => self.answered(req, None),
            Ev::ClientReply { c, seq, reply } => self.client_reply(c, seq, reply),
            Ev::ClientNext { c } => self.client_next(c),
            Ev::Cancel { order_id, kill } => {
                let cancel = CancelOrder {
                    order_id: order_id.clone(),
                    kill,
                };
                let to = Addr::Operator { order_id };
                self.send(None, Ev::ToBrokers(Input::Cancel(to, cancel)));
            }
            Ev::CancelReply { order_id, reply } => self.cancel_reply(order_id, reply),
            Ev::ClientTimeout { c, seq } => {
                if self.clients[c].seq == seq && self.clients[c].in_flight.is_some() {
                    self.client_send(c);
                }
            }
            Ev::Write {
                b,
                gen,
                info,
                revision,
            } => {
                // a crashed broker's write continues no further than its
                // first compare-and-swap; a live one's while its lease holds
                let p = &self.brokers[b];
                let now = self.time().at;
                let holds = p.gen == gen && p.tenure.as_ref().is_some_and(|t| t.holds(now));
                let stored = self.journal.write(&info, revision, holds);
                if let (Stored::At(_), Some(due)) = (&stored, info.retry_at_ms) {
                    self.check
                        .retry_stored(&info.order_id, due.saturating_sub(BASE_MS));
                }
                let stored = self.maybe_fail(stored, Stored::Unknown("timeout".into()));
                self.io(b, gen, Input::Written { info, stored });
            }
            Ev::Create {
                b,
                gen,
                info,
                idempotent,
            } => {
                let created = self.journal.create(&info, idempotent);
                let failed = crate::broker::core::Created::Failed("timeout".into());
                let created = self.maybe_fail(created, failed);
                self.io(b, gen, Input::Created { info, created });
            }
            Ev::Fault(fault) => self.fault(fault),
        }
    }

    /// A journal operation's answer may be lost (its fate unknown).
    fn maybe_fail<T>(&mut self, done: T, failed: T) -> T {
        if self.faulty() && self.rng.percent(self.weather.failed_write) {
            failed
        } else {
            done
        }
    }

    /// An IO outcome for a broker's core, as the same generation gets it.
    fn io(&mut self, b: usize, gen: u64, input: Input<Addr>) {
        let delay = 1 + self.rng.below(5);
        self.after(delay, Ev::Io { b, gen, input });
    }
}
