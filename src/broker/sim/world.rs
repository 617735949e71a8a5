//! The simulated world: the event queue, the clock, the network, the
//! brokers' leadership, and carrying out the cores' effects.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use super::check::Checker;
use super::faults::{self, Fault, Weather, FAULTS_UNTIL};
use super::journal::Journal;
use super::subagent::{Answer, Out, Reaper, Report, SimSubagent};
use crate::broker::core::{
    Core, Effect, Event, Input, Now, Probed, Recovered, Reply, RunReply, Stored,
};
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
const BASE_MS: u64 = 1_800_000_000_000;

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Client { c: usize, seq: u64 },
    Subagent { s: usize, instance: u64 },
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
    in_flight: Option<(String, String)>,
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
    journal: Journal,
    brokers: Vec<BrokerProc>,
    lease: (u64, u64),
    subs: Vec<SimSubagent>,
    /// The reapers of dead subagent processes, by subagent and instance.
    reapers: BTreeMap<(usize, u64), Reaper>,
    partitioned_until: Vec<u64>,
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
            jobs: vec![job("j", true), job("once", false)],
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
            check: Checker::default(),
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
        if s.is_some_and(|s| self.partitioned_until[s] > self.now) {
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

    /// Nothing left to do: every client answered, every order ended.
    fn settled(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.in_flight.is_none() && c.next >= c.total)
            && self.journal.all().iter().all(|i| i.state.is_final())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Io { b, gen, input } => self.deliver(b, Some(gen), input),
            Ev::ToBrokers(input) => {
                for b in 0..BROKERS {
                    self.deliver(b, None, input.clone());
                }
            }
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
                    let out = self.subs[s].end(&task_id, self.now, None);
                    self.sub_out(s, out);
                }
            }
            Ev::Run { s, req, run } => {
                if self.subs[s].alive {
                    let ms = 50 + self.rng.below(1_500);
                    if let Some(out) = self.subs[s].run(*run, self.now, ms) {
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
                let stored = self.journal.write(&info, revision);
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

    fn deliver(&mut self, b: usize, gen: Option<u64>, input: Input<Addr>) {
        let p = &mut self.brokers[b];
        if p.crashed || p.core.is_none() || gen.is_some_and(|g| g != p.gen) {
            return;
        }
        if p.paused {
            let gen = p.gen;
            p.held.push(Ev::Io { b, gen, input });
            return;
        }
        if let Some(line) = describe(&input) {
            self.note(format!("b{b} <- {line}"));
        }
        let now = self.time();
        let core = self.brokers[b].core.as_mut().expect("checked");
        let effects = core.step(input, now);
        self.carry_out(b, effects);
    }

    fn broker_tick(&mut self, b: usize) {
        self.after(TICK, Ev::BrokerTick { b });
        let p = &self.brokers[b];
        if p.crashed || p.paused {
            return;
        }
        if p.core.is_some() {
            if self.lease.0 != p.epoch {
                self.note(format!("b{b} steps down: epoch {} is over", p.epoch));
                self.stop_core(b);
                return;
            }
            let now = self.time();
            let p = &mut self.brokers[b];
            p.renewed_at = self.now;
            self.lease.1 = self.now;
            if let Some(tenure) = &p.tenure {
                tenure.renewed(now.at);
            }
            let epoch = p.epoch;
            for s in 0..SUBAGENTS {
                self.send(Some(s), Ev::BrokerHeartbeat { s, epoch });
            }
            self.deliver(b, None, Input::Check);
        } else if self.now >= self.lease.1 + LEASE || self.lease.0 == 0 {
            self.take_over(b);
        }
    }

    fn take_over(&mut self, b: usize) {
        let epoch = self.lease.0 + 1;
        self.lease = (epoch, self.now);
        let now = self.time();
        let tenure = Tenure::new(now.at, Duration::from_millis(LEASE));
        let journal = self.journal.snapshot(&self.jobs);
        let recovered = Recovered::from_journal(journal, 10_000);
        let id = format!("b{b}");
        let config = self.config.clone();
        let seed = self.seed.wrapping_mul(31) ^ epoch;
        let mut core = Core::new(id, config, epoch, tenure.clone(), recovered, seed, now);
        let effects = core.take_effects();
        let p = &mut self.brokers[b];
        p.core = Some(core);
        p.tenure = Some(tenure);
        p.epoch = epoch;
        p.gen += 1;
        p.renewed_at = self.now;
        self.note(format!("b{b} takes over at epoch {epoch}"));
        self.carry_out(b, effects);
    }

    fn stop_core(&mut self, b: usize) {
        let p = &mut self.brokers[b];
        p.core = None;
        p.tenure = None;
        p.gen += 1;
        p.held.clear();
    }

    fn resume(&mut self, b: usize) {
        self.note(format!("b{b} resumes"));
        self.brokers[b].paused = false;
        let held = std::mem::take(&mut self.brokers[b].held);
        for ev in held {
            self.handle(ev);
        }
    }

    /// Carries out one step's effects (a crash may cut them short).
    fn carry_out(&mut self, b: usize, effects: Vec<Effect<Addr>>) {
        if effects.is_empty() {
            return;
        }
        let p = &self.brokers[b];
        if self.lease.0 != p.epoch && self.now >= p.renewed_at + LEASE {
            let what = format!(
                "t={} b{b} acted at epoch {} after its lease ran out (epoch {} holds it)",
                self.now, p.epoch, self.lease.0
            );
            self.check.violations.push(what);
        }
        let gen = p.gen;
        let cut = (self.faulty()
            && self.midway_crashes < 2
            && self.rng.below(1000) < self.weather.crash_midway)
            .then(|| self.rng.below(effects.len() as u64) as usize);
        for (i, effect) in effects.into_iter().enumerate() {
            if cut == Some(i) {
                self.midway_crashes += 1;
                self.note(format!("b{b} crashes midway through its effects"));
                let restart_after = 300 + self.rng.below(2_000);
                self.crash_broker(b, restart_after);
                return;
            }
            self.effect(b, gen, effect);
        }
    }

    fn effect(&mut self, b: usize, gen: u64, effect: Effect<Addr>) {
        match effect {
            Effect::Reply(Addr::Client { c, seq }, reply) => {
                self.send(None, Ev::ClientReply { c, seq, reply })
            }
            Effect::Reply(Addr::Subagent { s, instance }, reply) => {
                if let Reply::Ack(ack) = &reply {
                    let core = self.brokers[b].core.as_ref();
                    let ended = core.is_some_and(|c| c.ended_with(&ack.task_id));
                    self.check
                        .acked(self.now, &self.journal, &ack.task_id, ended);
                }
                self.send(Some(s), Ev::SubReply { s, instance, reply })
            }
            Effect::Publish(Event::Finished(f)) => {
                self.check
                    .finished(self.now, &self.journal, &f.order_id, f.state);
                self.note(format!("b{b}: {} finished {:?}", f.order_id, f.state));
            }
            Effect::Publish(_) => {}
            Effect::Write { info, revision } => {
                let (state, sub) = (info.state, info.subagent_id.as_deref().unwrap_or("-"));
                self.note(format!("b{b}: write {} {state:?} on {sub}", info.order_id));
                let delay = self.journal_delay();
                let info = Box::new(info);
                self.after(
                    delay,
                    Ev::Write {
                        b,
                        gen,
                        info,
                        revision,
                    },
                );
            }
            Effect::Create { info, idempotent } => {
                let delay = self.journal_delay();
                self.after(
                    delay,
                    Ev::Create {
                        b,
                        gen,
                        info,
                        idempotent,
                    },
                );
            }
            Effect::Run {
                subagent_id,
                run,
                again,
            } => {
                self.check
                    .run_sent(self.now, &self.journal, &run.order_id, &run.task_id);
                self.note(format!("b{b}: run {} on {subagent_id}", run.task_id));
                let asked = Asked::Run {
                    subagent_id,
                    run,
                    again,
                };
                self.ask(b, gen, asked);
            }
            Effect::Kill { subagent_id, kill } => {
                let s = index(&subagent_id);
                let req = self.request(b, gen, Asked::Kill);
                self.send(Some(s), Ev::Kill { s, req, kill });
            }
            Effect::Probe { subagent_id } => self.ask(b, gen, Asked::Probe { subagent_id }),
            Effect::Later { after, timer } => {
                let input = Input::Timer(timer);
                self.after(after.as_millis() as u64, Ev::Io { b, gen, input });
            }
            Effect::StepStored(_) => {}
        }
    }

    fn journal_delay(&mut self) -> u64 {
        let slow = self.faulty() && self.rng.percent(self.weather.slow_write);
        1 + self.rng.below(10) + if slow { 200 + self.rng.below(1_300) } else { 0 }
    }

    fn request(&mut self, b: usize, gen: u64, asked: Asked) -> u64 {
        self.next_request += 1;
        let req = self.next_request;
        self.asked.insert(req, (b, gen, asked));
        self.after(REQUEST_TIMEOUT, Ev::RequestTimeout { req });
        req
    }

    /// A run or probe request: no responders at once when nobody listens.
    fn ask(&mut self, b: usize, gen: u64, asked: Asked) {
        let s = match &asked {
            Asked::Run { subagent_id, .. } | Asked::Probe { subagent_id } => index(subagent_id),
            Asked::Kill => return,
        };
        let run = match &asked {
            Asked::Run { run, again, .. } => Some((run.clone(), *again)),
            _ => None,
        };
        let req = self.request(b, gen, asked);
        if !self.subs[s].alive {
            self.asked.remove(&req);
            let input = match run {
                Some((run, again)) => Input::RunReply {
                    subagent_id: format!("s{s}"),
                    run,
                    again,
                    reply: RunReply::NoResponders("no responders".into()),
                },
                None => Input::Probed {
                    subagent_id: format!("s{s}"),
                    reply: Probed::NoResponders,
                },
            };
            return self.io(b, gen, input);
        }
        match run {
            Some((run, _)) => self.send(Some(s), Ev::Run { s, req, run }),
            None => self.send(Some(s), Ev::Ping { s, req }),
        }
    }

    /// A request's answer came (or its time ran out: `None`).
    fn answered(&mut self, req: u64, answer: Option<Answer>) {
        let Some((b, gen, asked)) = self.asked.remove(&req) else {
            return;
        };
        let input = match (asked, answer) {
            (Asked::Kill, _) => return,
            (
                Asked::Run {
                    subagent_id,
                    run,
                    again,
                },
                answer,
            ) => {
                let reply = match answer {
                    Some(Answer::Accepted) => RunReply::Accepted,
                    Some(Answer::Refused(why)) => RunReply::Refused(why),
                    _ => RunReply::Unknown("timed out".into()),
                };
                Input::RunReply {
                    subagent_id,
                    run,
                    again,
                    reply,
                }
            }
            (Asked::Probe { subagent_id }, answer) => {
                let reply = match answer {
                    Some(Answer::Pong(pong)) => Probed::Answered(pong),
                    _ => Probed::Unanswered("timed out".into()),
                };
                Input::Probed { subagent_id, reply }
            }
        };
        self.deliver(b, Some(gen), input);
    }

    fn sub_answer(&mut self, s: usize, req: u64, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Answer(answer) => self.send(Some(s), Ev::Answer { req, answer }),
                other => self.sub_out(s, vec![other]),
            }
        }
    }

    fn sub_out(&mut self, s: usize, out: Vec<Out>) {
        let instance = self.subs[s].instance;
        let addr = Addr::Subagent { s, instance };
        for o in out {
            let input = match o {
                Out::Send(Report::Register(r)) => Input::Register(addr.clone(), r),
                Out::Send(Report::Result(r)) => Input::Result(addr.clone(), r),
                Out::Send(Report::Heartbeat(hb)) => Input::Heartbeat(hb),
                Out::Send(Report::Certificate(c)) => Input::Certificate(addr.clone(), c),
                Out::Started {
                    task_id,
                    order_id,
                    ms,
                } => {
                    let name = self.subs[s].instance_id();
                    self.check.started(self.now, &task_id, &order_id, &name);
                    self.note(format!("{name} starts {task_id} ({ms} ms)"));
                    self.after(
                        ms,
                        Ev::TaskEnd {
                            s,
                            instance,
                            task_id,
                        },
                    );
                    continue;
                }
                Out::Ended { task_id } => {
                    self.note(format!("s{s}#{instance} ends {task_id}"));
                    self.check.ended(self.now, &task_id);
                    continue;
                }
                Out::Answer(_) => continue,
            };
            // a dead subagent's reaper reaches the brokers even so
            let cut_off = self.subs[s].alive.then_some(s);
            self.send(cut_off, Ev::ToBrokers(input));
        }
    }

    fn sub_reply(&mut self, s: usize, instance: u64, reply: Reply) {
        if let Some(reaper) = self.reapers.get_mut(&(s, instance)) {
            match reply {
                Reply::Ack(ack) => reaper.acked(&ack.task_id),
                Reply::Certified(_) => reaper.certified(),
                _ => {}
            }
            return;
        }
        let sub = &mut self.subs[s];
        if !sub.alive || sub.instance != instance {
            return;
        }
        match reply {
            Reply::Registered(r) => sub.registered(r.epoch, self.now),
            Reply::Ack(ack) => sub.acked(&ack.task_id),
            _ => {}
        }
    }

    fn client_next(&mut self, c: usize) {
        let faulty = self.faulty();
        let client = &mut self.clients[c];
        if client.in_flight.is_some() || client.next >= client.total || !faulty {
            client.total = client.total.min(client.next);
            return;
        }
        let job = if self.rng.percent(25) { "once" } else { "j" };
        let request_id = format!("c{c}-{}", client.next);
        client.next += 1;
        client.in_flight = Some((request_id, job.to_string()));
        self.client_send(c);
    }

    fn client_send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.seq += 1;
        let seq = client.seq;
        let Some((request_id, job)) = client.in_flight.clone() else {
            return;
        };
        let submit = SubmitOrder {
            job,
            params: BTreeMap::new(),
            request_id: Some(request_id),
            slot_ms: None,
        };
        self.send(
            None,
            Ev::ToBrokers(Input::Submit(Addr::Client { c, seq }, submit)),
        );
        self.after(REQUEST_TIMEOUT, Ev::ClientTimeout { c, seq });
    }

    fn client_reply(&mut self, c: usize, seq: u64, reply: Reply) {
        if self.clients[c].seq != seq || self.clients[c].in_flight.is_none() {
            return;
        }
        match reply {
            Reply::Submitted(r) => {
                let job = self.clients[c].in_flight.take().map(|(_, job)| job);
                if job.as_deref() == Some("once") {
                    self.check.once.insert(r.order_id.clone());
                }
                self.note(format!("c{c} accepted {} ({})", r.order_id, r.job));
                self.check.accepted.insert(r.order_id);
                let gap = self.rng.below(600);
                self.after(gap, Ev::ClientNext { c });
            }
            Reply::Error(e) if matches!(e.error.code, ErrorCode::Busy | ErrorCode::Unavailable) => {
                self.after(200, Ev::ClientTimeout { c, seq });
            }
            other => {
                let what = format!("t={} c{c}: submit answered {other:?}", self.now);
                self.check.violations.push(what);
                self.clients[c].in_flight = None;
            }
        }
    }

    fn crash_broker(&mut self, b: usize, restart_after: u64) {
        self.stop_core(b);
        self.brokers[b].crashed = true;
        self.brokers[b].paused = false;
        self.after(restart_after, Ev::RestartBroker { b });
    }

    fn fault(&mut self, fault: Fault) {
        self.note(format!("{fault:?}"));
        let active = (0..BROKERS).find(|b| {
            let p = &self.brokers[*b];
            p.core.is_some() && !p.crashed && !p.paused && p.epoch == self.lease.0
        });
        match fault {
            Fault::KillSubagent { s, reaper } => {
                if self.subs[s].alive {
                    let (out, dead) = self.subs[s].die(self.now);
                    self.sub_out(s, out);
                    if reaper {
                        let instance = dead.s_instance;
                        self.reapers.insert((s, instance), dead);
                        self.after(1, Ev::ReaperTick { s, instance });
                    }
                }
            }
            Fault::RestartSubagent { s } => {
                let instance = self.subs[s].instance + 1;
                let capacity = 1 + self.rng.below(2) as u32;
                self.subs[s] = SimSubagent::new(format!("s{s}"), instance, capacity, self.now);
                self.after(1, Ev::SubTick { s, instance });
            }
            Fault::Partition { s, until } => self.partitioned_until[s] = until,
            Fault::CrashBroker { restart_after } => {
                if let Some(b) = active {
                    self.crash_broker(b, restart_after);
                }
            }
            Fault::PauseBroker { ms } => {
                if let Some(b) = active {
                    self.brokers[b].paused = true;
                    self.after(ms, Ev::Resume { b });
                }
            }
        }
    }
}

fn index(subagent_id: &str) -> usize {
    subagent_id.trim_start_matches('s').parse().unwrap_or(0)
}

/// A trace line for the inputs worth following.
fn describe(input: &Input<Addr>) -> Option<String> {
    Some(match input {
        Input::RunReply {
            run, reply, again, ..
        } => {
            format!("run reply {} (again {again}): {reply:?}", run.task_id)
        }
        Input::Certificate(_, c) => format!("certificate {} killed {:?}", c.instance_id, c.killed),
        Input::Result(_, r) => format!("result {} signal {:?}", r.task_id, r.signal),
        Input::Written { info, stored } => format!(
            "written {} {:?} task {:?}: {stored:?}",
            info.order_id, info.state, info.task_id
        ),
        Input::Probed { subagent_id, reply } => format!("probed {subagent_id}: {reply:?}"),
        _ => return None,
    })
}
