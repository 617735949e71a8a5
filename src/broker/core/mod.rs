//! The broker's decisions, free of IO: `step(input, now) -> effects`.
//!
//! [`Core`] holds what the broker knows (deployed jobs, clusters and
//! workflows, the order book, the registry of subagents, the journal's
//! revisions and the writes in flight). [`Core::step`] takes one [`Input`]
//! (a decoded request or heartbeat, the outcome of an IO the broker did, a
//! timer) and the time, and returns the [`Effect`]s to carry out: replies,
//! event publishes, journal writes, requests to subagents and timers. The
//! actor (`broker/mod.rs`) turns NATS messages into inputs; `broker/act.rs`
//! carries the effects out, feeding each IO's outcome back as an input.
//!
//! - [`plan`]: which queued order goes to which subagent now.
//! - `journal.rs`: an order's state is stored before what waits for it
//!   (sending its task, acknowledging its result, publishing `finished`).
//! - `orders.rs`: dispatch, run replies, results.
//! - `subagents.rs`: registrations, heartbeats, probes, leaving, and the
//!   tasks of subagents out of sight; `certificate.rs`: death
//!   certificates; `inherited.rs`: tasks inherited at a takeover.
//! - `submit.rs`: submits of job orders (create, concurrency policy,
//!   repeats) and cancels; `flows/`: workflow orders and their step
//!   orders; `events.rs`: every order event, built from the order's record;
//!   `refusal.rs`: why a request is refused, with its wire code;
//!   `takeover.rs`: the state a new active broker starts from;
//!   `retries.rs`: job orders waiting for a retry, and their timers.
//! - `deploy.rs`: deploys and bucket changes; `switch.rs`: an operator's
//!   switch-over of a subagent; `waiting.rs`: why an order waits for a
//!   subagent, told once per reason.
//!
//! Architecture invariant: imports neither actix, nor the bus, nor the
//! clock; `R` is where a reply goes, opaque here. Once its lease may have
//! run out by the time it is given ([`lease::Tenure`]) it emits nothing:
//! the inputs it is given (IO outcomes, timers, the liveness tick, bucket
//! changes; the actor drops requests and heartbeats meanwhile) still
//! change its state,
//! and their effects wait until it renews its lease, or go with it when it
//! steps down.
//!

mod at_once;
mod certificate;
mod changes;
mod deploy;
mod events;
mod flows;
#[cfg(test)]
mod history_tests;
mod inherited;
mod journal;
mod orders;
mod pause;
pub mod plan;
mod quiet;
mod refusal;
mod retries;
mod spread;
mod subagents;
mod submit;
mod switch;
mod takeover;
#[cfg(test)]
mod tests;
mod waiting;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::warn;

use super::lease;
use super::order_book::{ById, OrderBook};
use super::registry::Registry;
use crate::config::Config;
use crate::protocol::*;
use crate::workflow::KillCause;
pub use changes::Deploying;
pub use deploy::SpecChange;
pub(super) use journal::{Revisions, Stored, Then};
pub use refusal::Refusal;
pub use submit::Created;
pub use switch::SwitchOf;
pub(super) use takeover::{Journal, Recovered};

/// Added to a subagent's own orphan timeout before its tasks count as dead.
pub(super) const ORPHAN_MARGIN: Duration = Duration::from_secs(1);
/// Before sending a dispatch again whose fate is unknown.
const RESEND_DELAY: Duration = Duration::from_millis(200);
/// How long after its start a task's `running` state is written, if it
/// still runs then (`orders.rs`: `store_started`; at the first liveness
/// check from then on).
const STARTED_WRITE_DELAY: Duration = Duration::from_secs(1);

/// The time as the core sees it: monotonic for durations, and wall-clock
/// milliseconds for what it records.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub ms: u64,
}

/// What reaches the core.
#[derive(Debug, Clone)]
pub enum Input<R> {
    /// A submit of a job's or a workflow's order, and the identity that
    /// signed it when the broker verified one.
    Submit(R, SubmitOrder, Option<String>),
    Cancel(R, CancelOrder),
    Suspend(R, SuspendOrder),
    Resume(R, ResumeOrder),
    Deploy(R, DeployRequest),
    /// A switch-over, and who asked for it.
    Control(R, SubagentControl, String),
    /// A job's or workflow's pause or resume, and who asked for it.
    JobControl(R, JobControl, String),
    /// A bucket entry changed (taken whether acting or not).
    Spec(SpecChange),
    /// The outcome of an [`Effect::Deploy`].
    Deployed {
        to: R,
        deploy: Box<Deploying>,
        written: Result<(), String>,
    },
    /// The outcome of an [`Effect::Switch`].
    Switched {
        to: R,
        of: SwitchOf,
        switch: OperatorSwitch,
        stored: Result<(), String>,
    },
    /// The outcome of an [`Effect::Stop`].
    Stopped {
        to: R,
        subagent_id: String,
        taken: Result<(), String>,
    },
    Result(R, TaskResult),
    Register(R, Register),
    Heartbeat(SubagentHeartbeat),
    Leave(R, Leave),
    Certificate(R, DeathCertificate),
    /// The outcome of an [`Effect::Write`].
    Written {
        info: Box<OrderInfo>,
        stored: Stored,
    },
    /// The outcome of an [`Effect::Create`].
    Created {
        info: Box<OrderInfo>,
        created: Created,
    },
    /// The outcome of an [`Effect::Run`].
    RunReply {
        subagent_id: String,
        run: Box<RunTask>,
        again: bool,
        reply: RunReply,
    },
    /// The outcome of an [`Effect::Probe`].
    Probed {
        subagent_id: String,
        reply: Probed,
    },
    /// An [`Effect::Later`] came due.
    Timer(Timer),
    /// The periodic liveness check.
    Check,
}

/// How a subagent answered a run request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReply {
    Accepted,
    /// Nobody listens on its subject: it did not take the task.
    NoResponders(String),
    /// It answered with an error: it did not take the task.
    Refused(String),
    /// No answer: it may have the task.
    Unknown(String),
}

/// How a subagent answered a liveness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    Answered(Pong),
    NoResponders,
    Unanswered(String),
}

/// What the core asks the actor to do.
#[derive(Debug)]
pub enum Effect<R> {
    Reply(R, Reply),
    Publish(Event),
    /// Store an order's record: a compare-and-swap on `revision` (read
    /// first when `None`), this broker's state written over another
    /// writer's; answered with [`Input::Written`].
    Write {
        info: Box<OrderInfo>,
        revision: Option<u64>,
    },
    /// Create a new order's record (with a request id, only if it has
    /// none yet); answered with [`Input::Created`].
    Create {
        info: Box<OrderInfo>,
        idempotent: bool,
    },
    /// Send a task, once everything published before has left (so its
    /// order's `accepted` precedes `started`); answered with
    /// [`Input::RunReply`].
    Run {
        subagent_id: String,
        run: Box<RunTask>,
        /// Sent before, with no answer: it may run already.
        again: bool,
    },
    /// Ask a subagent to kill a task (its order ends when its result comes).
    Kill {
        subagent_id: String,
        kill: KillTask,
    },
    /// Ask a subagent whether it lives; answered with [`Input::Probed`].
    Probe {
        subagent_id: String,
    },
    /// Feed `timer` back after `after`.
    Later {
        after: Duration,
        timer: Timer,
    },
    /// Write a deploy's jobs, clusters and workflows to their buckets;
    /// answered with [`Input::Deployed`].
    Deploy {
        to: R,
        deploy: Box<Deploying>,
    },
    /// Store an operator's switch (under [`SwitchOf::key`] in the switches
    /// bucket); answered with [`Input::Switched`].
    Switch {
        to: R,
        of: SwitchOf,
        switch: OperatorSwitch,
    },
    /// Ask a subagent to stop (drain); answered with [`Input::Stopped`].
    Stop {
        to: R,
        subagent_id: String,
        stop: StopSubagent,
    },
}

/// An answer to a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Submitted(SubmitReply),
    Ack(ResultAck),
    Registered(Registered),
    Left(Left),
    Certified(CertificateAccepted),
    Order(Box<OrderInfo>),
    Deployed(DeployReply),
    Switched(SubagentControlReply),
    JobSwitched(JobControlReply),
    Error(ErrorReply),
}

/// A status event.
#[derive(Debug, Clone)]
pub enum Event {
    Accepted(OrderAccepted),
    /// A workflow order's step or state changed.
    Changed(OrderChanged),
    Finished(OrderFinished),
    Subagent(SubagentChanged),
}

/// What a timer brings back.
#[derive(Debug, Clone)]
pub enum Timer {
    /// Send again a dispatch whose fate was unknown.
    Resend {
        subagent_id: String,
        run: Box<RunTask>,
    },
    /// Write again an order whose state must land.
    Rewrite { order_id: String },
    /// `broker.subagent_timeout` after taking over: the subagents of
    /// inherited tasks never heard from are out of sight.
    Unseen,
    /// Place a step attempt again whose order was not stored.
    PlaceStep(ParentStep),
    /// Kill a step attempt's order (asked while it was being stored).
    KillStep {
        parent: ParentStep,
        cause: Option<KillCause>,
    },
    /// A step attempt could not be placed: it fails.
    StepRefused {
        parent: ParentStep,
        order_id: String,
        reason: String,
    },
    /// A step's retry is due.
    RetryDue { flow_id: String, step: String },
    /// A job order's retry is due.
    OrderRetry { order_id: String },
    /// A failed workflow order's deadline to be resumed (`at_ms`) passed.
    Expire { flow_id: String, at_ms: u64 },
    /// Create the members' orders of a spread order again (one was not stored).
    PlaceMembers { order_id: String },
}

/// The broker's state, and every decision over it.
pub struct Core<R> {
    pub(super) id: String,
    pub(super) config: Config,
    /// The leadership lease revision this broker won; on every command.
    pub(super) epoch: u64,
    pub(super) jobs: HashMap<String, JobSpec>,
    pub(super) clusters: HashMap<String, ClusterSpec>,
    pub(super) workflows: HashMap<String, WorkflowSpec>,
    /// Every order held, of jobs and of workflows.
    pub(super) book: OrderBook,
    /// Orders with a journal write in flight, and what waits for it.
    pub(super) writing: ById<journal::Writes<R>>,
    /// `finished` events waiting for their order's final state to be stored.
    pub(super) unannounced: ById<Event>,
    /// The journal revision of each order's record, for compare-and-swap.
    pub(super) revisions: Revisions,
    /// Subagents holding inherited tasks, until their first heartbeat.
    pub(super) unreconciled: BTreeSet<String>,
    /// Operators' switches of subagents, by id: one switched off stays
    /// disabled whenever it is seen, under any broker.
    pub(super) switches: BTreeMap<String, OperatorSwitch>,
    /// Operators' pauses of jobs and workflows, by name (`pause.rs`).
    pub(super) pauses: BTreeMap<String, OperatorSwitch>,
    /// Subagents with orders in doubt, which their heartbeats may reclaim.
    pub(super) doubted: BTreeSet<String>,
    pub(super) registry: Registry,
    /// The member each cluster chose last ("" for jobs without a cluster).
    pub(super) last_placed: HashMap<String, String>,
    /// Subagent processes (instance ids) that left normally or were
    /// certified dead, most recent last: a heartbeat of theirs still in
    /// flight must not bring them back.
    pub(super) departed: VecDeque<String>,
    /// Why each waiting order was last told to wait (`waiting.rs`).
    told_waiting: HashMap<String, String>,
    /// What the last dispatch pass left in the queue (`at_once.rs`).
    left_queued: at_once::LeftQueued,
    /// Members' orders waiting for a member that is away, since when (ms;
    /// `spread.rs`).
    away_since: HashMap<String, u64>,
    /// When the newest `run` of each order was sent (ms): one sent after
    /// its subagent was last heard may still land (`subagents.rs`).
    runs_sent: ById<u64>,
    /// Confirmed starts to store once due, if their order still runs that
    /// task (`orders.rs`: `store_started`), oldest first: one delay for
    /// all, so the queue is in due order, looked at on each liveness check.
    started: VecDeque<(Instant, String, String)>,
    /// Failed journal writes, warned of once per `quiet::QUIET_FOR`.
    unstored: quiet::Quiet,
    /// Submits refused as not stored, warned of once in a while.
    refused_unstored: quiet::Quiet,
    /// Orders waiting for their record to be created, and what waits.
    creating: ById<submit::Pending<R>>,
    /// Seeds the ids of orders without a request id, unique per broker.
    id_seed: u64,
    ids: u64,
    /// Until when it may act.
    tenure: lease::Tenure,
    idle_warned: bool,
    /// When subagents' liveness was last checked (a longer gap than usual
    /// is the broker's own pause, forgiven them, `registry::paused_for`).
    pub(super) last_check: Option<std::time::Instant>,
    pub(super) now: Now,
    out: Vec<Effect<R>>,
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A core taking over from what the journal held; its first effects
    /// (the timer for subagents never heard from, workflow orders picked
    /// up where they were) are ready to take.
    pub(in crate::broker) fn new(
        id: String,
        config: Config,
        epoch: u64,
        tenure: lease::Tenure,
        recovered: Recovered,
        id_seed: u64,
        now: Now,
    ) -> Core<R> {
        let mut core = Core {
            id,
            epoch,
            jobs: recovered.jobs,
            clusters: recovered.clusters,
            workflows: recovered.workflows,
            unreconciled: recovered.book.inherited_subagents(),
            doubted: BTreeSet::new(),
            switches: recovered.switches,
            pauses: recovered.pauses,
            book: recovered.book,
            writing: ById::default(),
            unannounced: ById::default(),
            revisions: recovered.revisions,
            registry: Registry::default(),
            last_placed: HashMap::new(),
            departed: VecDeque::new(),
            creating: ById::default(),
            told_waiting: HashMap::new(),
            left_queued: at_once::LeftQueued::default(),
            away_since: HashMap::new(),
            unstored: quiet::Quiet::default(),
            refused_unstored: quiet::Quiet::default(),
            runs_sent: ById::default(),
            started: VecDeque::new(),
            id_seed,
            ids: 0,
            tenure,
            idle_warned: false,
            last_check: None,
            now,
            out: Vec::new(),
            config,
        };
        if !core.unreconciled.is_empty() {
            let after = core.config.broker.subagent_timeout;
            core.later(after, Timer::Unseen);
        }
        core.arm_retries();
        core.hold_failed_flows();
        core.resume_flows();
        core.resume_spreads();
        core
    }

    /// Takes one input at `now`: what to do about it.
    pub fn step(&mut self, input: Input<R>, now: Now) -> Vec<Effect<R>> {
        self.now = now;
        match input {
            Input::Submit(to, s, by) => self.on_submit(to, s, by),
            Input::Cancel(to, c) => self.on_cancel(to, c),
            Input::Suspend(to, s) => self.on_suspend(to, s),
            Input::Resume(to, r) => self.on_resume(to, r),
            Input::Deploy(to, d) => self.on_deploy(to, d),
            Input::Control(to, c, by) => self.on_control(to, c, by),
            Input::JobControl(to, c, by) => self.on_job_control(to, c, by),
            Input::Switched {
                to,
                of,
                switch,
                stored,
            } => self.on_switched(to, of, switch, stored),
            Input::Spec(change) => self.on_spec_change(change),
            Input::Deployed {
                to,
                deploy,
                written,
            } => self.on_deployed(to, *deploy, written),
            Input::Stopped {
                to,
                subagent_id,
                taken,
            } => self.on_stopped(to, subagent_id, taken),
            Input::Created { info, created } => self.on_created(*info, created),
            Input::Result(to, r) => self.on_result(to, r),
            Input::Register(to, r) => self.on_register(to, r),
            Input::Heartbeat(hb) => self.on_heartbeat(hb),
            Input::Leave(to, l) => self.on_leave(to, l),
            Input::Certificate(to, c) => self.on_certificate(to, c),
            Input::Written { info, stored } => self.written(*info, stored),
            Input::RunReply {
                subagent_id,
                run,
                again,
                reply,
            } => self.on_run_reply(subagent_id, *run, again, reply),
            Input::Probed { subagent_id, reply } => self.on_probed(subagent_id, reply),
            Input::Timer(Timer::Resend { subagent_id, run }) => {
                // only while the order still waits on that very dispatch
                if self.dispatched_as(&subagent_id, &run) {
                    self.send_run(subagent_id, *run, true)
                }
            }
            Input::Timer(Timer::Rewrite { order_id }) => self.store(&order_id, Then::Nothing),
            Input::Timer(Timer::Unseen) => self.unseen_deadline(),
            Input::Timer(Timer::PlaceStep(parent)) => self.place_again(parent),
            Input::Timer(Timer::KillStep { parent, cause }) => self.kill_step(parent, cause),
            Input::Timer(Timer::StepRefused {
                parent,
                order_id,
                reason,
            }) => self.fail_step(parent, order_id, reason),
            Input::Timer(Timer::RetryDue { flow_id, step }) => self.retry_due(flow_id, step),
            Input::Timer(Timer::OrderRetry { order_id }) => self.order_retry_due(order_id),
            Input::Timer(Timer::Expire { flow_id, at_ms }) => self.expire_due(flow_id, at_ms),
            Input::Timer(Timer::PlaceMembers { order_id }) => self.place_members_again(&order_id),
            Input::Check => self.check_liveness(),
        }
        self.take_effects()
    }

    /// Sets the time for calls from the actor's own handlers.
    pub fn at(&mut self, now: Now) -> &mut Core<R> {
        self.now = now;
        self
    }

    /// The effects decided so far, to carry out now. None while the lease
    /// may have run out: they wait, and go out only if this broker renews
    /// its lease (no other broker can have acted meanwhile); if it steps
    /// down instead, they are dropped with it. (Dropping them at once would
    /// leave the journal writes they stand for waiting forever.)
    pub fn take_effects(&mut self) -> Vec<Effect<R>> {
        if self.acting() {
            std::mem::take(&mut self.out)
        } else {
            Vec::new()
        }
    }

    /// Whether its lease still holds at the time it was given. A broker
    /// resumed after a pause longer than its lease emits nothing until it
    /// renews (nobody else acted) or steps down (a standby may act).
    pub fn acting(&mut self) -> bool {
        let holds = self.tenure.holds(self.now.at);
        if !holds && !self.idle_warned {
            self.idle_warned = true;
            warn!(broker = %self.id, epoch = self.epoch, "the lease may have run out (this process was paused?): acting on nothing until it is renewed or this broker steps down");
        }
        holds
    }

    pub(super) fn emit(&mut self, effect: Effect<R>) {
        self.out.push(effect);
    }

    pub(super) fn reply(&mut self, to: &R, reply: Reply) {
        self.emit(Effect::Reply(to.clone(), reply));
    }

    pub(super) fn refuse(&mut self, to: &R, refusal: Refusal) {
        self.reply(to, Reply::Error(refusal.reply()));
    }

    pub(in crate::broker) fn publish(&mut self, event: Event) {
        self.emit(Effect::Publish(event));
    }

    pub(super) fn later(&mut self, after: Duration, timer: Timer) {
        self.emit(Effect::Later { after, timer });
    }
}

#[cfg(test)]
impl<R> Core<R> {
    /// Whether the order of `task_id` ended with that task, as held here
    /// (for the simulation's checks).
    pub(in crate::broker) fn ended_with(&self, task_id: &str) -> bool {
        let order_id = task_id.rsplit_once('-').map_or(task_id, |(o, _)| o);
        self.book
            .get(order_id)
            .is_some_and(|o| o.phase.is_final() && o.task_id.as_deref() == Some(task_id))
    }

    /// Whether the order of `task_id` waits for a retry after that task,
    /// as held here (for the simulation's checks).
    pub(in crate::broker) fn retrying_after(&self, task_id: &str) -> bool {
        let order_id = task_id.rsplit_once('-').map_or(task_id, |(o, _)| o);
        self.book.get(order_id).is_some_and(|o| {
            o.phase == super::order_book::Phase::Retrying
                && o.attempts.kept.last().map(|a| a.task_id.as_str()) == Some(task_id)
        })
    }
}
