//! The Broker: the one place that decides. It keeps the registry of subagents
//! from their registrations, heartbeats and probes, holds deployed jobs,
//! subagent clusters and orders, and chooses which subagent runs each task.
//!
//! The actor only decodes, calls the pure parts ([`order_book`], [`registry`],
//! [`placement`]) and acts: it publishes, requests and writes to JetStream.
//! Every handler returns at once; IO runs as spawned futures whose results
//! come back into the actor. Client-facing requests are in `requests.rs`,
//! subagent liveness in `liveness.rs`, and the journal of orders and the
//! takeover from it in `recovery.rs`.
//!
//! Size: over the ~500-line mark since before the security work; issue 19
//! (a pure `broker::core` returning effects) splits this actor by
//! responsibility, so it is not split piecemeal here.

pub mod agents;
mod audit;
mod death;
pub mod election;
mod elector;
mod flows;
mod gate;
pub mod health;
mod idempotency;
mod leadership;
pub mod lease;
mod liveness;
pub mod order_book;
pub mod placement;
pub mod probe;
mod recovery;
pub mod registry;
mod requests;
mod scheduler_lease;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tracing::{debug, info, warn};

use crate::bus::{Bus, BusError, Kv, KvChange, Received, Replier, Request, SenderProof};
use crate::config::Config;
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::FlowOrder;
use order_book::{Applied, Order, OrderBook, OrderEvent, Outcome, Phase};
use recovery::{Revisions, Then};
use registry::Registry;

/// Final orders kept in memory for lookups; older ones are read from JetStream.
const KEEP_FINISHED: usize = 10_000;
/// Added to a subagent's own orphan timeout before its tasks count as dead.
const ORPHAN_MARGIN: Duration = Duration::from_secs(1);
/// Before sending a dispatch again whose fate is unknown.
const RESEND_DELAY: Duration = Duration::from_millis(200);
/// How long a liveness probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything that reaches the broker from NATS.
enum Input {
    Submit(Request<SubmitOrder>),
    Deploy(Request<DeployRequest>),
    GetOrder(Request<GetOrder>),
    Cancel(Request<CancelOrder>),
    Status(Request<StatusRequest>),
    Control(Request<SubagentControl>),
    Register(Request<Register>),
    Leave(Request<Leave>),
    Result(Request<TaskResult>),
    Certificate(Request<DeathCertificate>),
    Heartbeat(Received<SubagentHeartbeat>),
    Suspend(Request<SuspendOrder>),
    Resume(Request<ResumeOrder>),
    List(Request<ListOrders>),
    Job(KvChange<JobSpec>),
    Cluster(KvChange<ClusterSpec>),
    Workflow(KvChange<WorkflowSpec>),
}

impl Message for Input {
    type Result = ();
}

pub struct Broker {
    bus: Bus,
    config: Config,
    id: String,
    started_at_ms: u64,
    /// The leadership lease revision this broker won; on every command.
    epoch: u64,
    jobs: HashMap<String, JobSpec>,
    clusters: HashMap<String, ClusterSpec>,
    workflows: HashMap<String, WorkflowSpec>,
    jobs_kv: Kv<JobSpec>,
    clusters_kv: Kv<ClusterSpec>,
    workflows_kv: Kv<WorkflowSpec>,
    orders_kv: Kv<OrderInfo>,
    book: OrderBook,
    /// Orders through workflows: every unfinished one, and the newest ended.
    flows: HashMap<String, FlowOrder>,
    /// The workflow order held for each request id.
    flow_requests: HashMap<String, String>,
    /// Orders with a journal write in flight, and what waits for their next write.
    writing: HashMap<String, Vec<Then>>,
    /// `finished` events waiting for their order's final state to be stored.
    unannounced: HashMap<String, OrderFinished>,
    /// The journal revision of each order's record, for compare-and-swap.
    revisions: Revisions,
    /// Subagents holding inherited tasks, until their first heartbeat.
    unreconciled: BTreeSet<String>,
    registry: Registry,
    /// The member each cluster chose last ("" for jobs without a cluster).
    last_placed: HashMap<String, String>,
    /// Subagent processes (instance ids) that left normally, most recent last:
    /// a heartbeat of theirs still in flight must not bring them back.
    departed: VecDeque<String>,
    /// Keeps one agent in the Scheduler role.
    elector: Addr<elector::Elector>,
    /// The other brokers and our lease, as the leadership loop last told.
    peers: LeaseNews,
    /// Tells `run_until_signal` the broker cannot go on.
    stopped: Option<tokio::sync::oneshot::Sender<()>>,
    /// Appends the records of state-changing commands (`audit.rs`).
    audit: audit::Audit,
    /// Until when it may act (see [`lease::Tenure`]).
    tenure: lease::Tenure,
    idle_warned: bool,
}

/// Subscribes and starts the broker in the current actix System.
/// `epoch` is the leadership lease's revision this broker won (see
/// `leadership.rs`); every command it sends carries it.
pub async fn start(
    config: Config,
    bus: Bus,
    epoch: u64,
    tenure: lease::Tenure,
) -> Result<Addr<Broker>, BusError> {
    let jobs_kv: Kv<JobSpec> = bus.kv(&config.jobs_bucket()).await?;
    let clusters_kv: Kv<ClusterSpec> = bus.kv(&config.clusters_bucket()).await?;
    let workflows_kv: Kv<WorkflowSpec> = bus.kv(&config.workflows_bucket()).await?;
    let orders_kv: Kv<OrderInfo> = bus.kv(&config.orders_bucket()).await?;
    // agents may read and write it but not create it (see `auth::roles`)
    bus.kv::<crate::protocol::FiredSlot>(&config.fired_bucket())
        .await?;
    // task output is kept from now on (see `baton order logs`)
    if let Err(e) = bus
        .ensure_log_stream(&config.log_stream(), config.nats.log_retention)
        .await
    {
        warn!(error = %e, "cannot create the log stream; task output is not kept");
    }
    // state-changing commands are recorded from now on (see `baton audit`)
    if let Err(e) = bus
        .ensure_audit_stream(&config.audit_stream(), config.nats.audit_retention)
        .await
    {
        warn!(error = %e, "cannot create the audit stream; commands are not recorded");
    }
    // the orders are taken over before anything is served
    let recovered = recovery::recover(
        &jobs_kv,
        &clusters_kv,
        &workflows_kv,
        &orders_kv,
        KEEP_FINISHED,
    )
    .await?;
    let s = bus.subjects().clone();
    let inputs: Vec<LocalBoxStream<'static, Input>> = vec![
        bus.serve(s.submit())
            .await?
            .map(Input::Submit)
            .boxed_local(),
        bus.serve(s.deploy())
            .await?
            .map(Input::Deploy)
            .boxed_local(),
        bus.serve(s.order_cancel())
            .await?
            .map(Input::Cancel)
            .boxed_local(),
        bus.serve(s.order_get())
            .await?
            .map(Input::GetOrder)
            .boxed_local(),
        bus.serve(s.order_suspend())
            .await?
            .map(Input::Suspend)
            .boxed_local(),
        bus.serve(s.order_resume())
            .await?
            .map(Input::Resume)
            .boxed_local(),
        bus.serve(s.order_list())
            .await?
            .map(Input::List)
            .boxed_local(),
        bus.serve(s.status())
            .await?
            .map(Input::Status)
            .boxed_local(),
        bus.serve(s.subagent_control())
            .await?
            .map(Input::Control)
            .boxed_local(),
        bus.serve(s.register())
            .await?
            .map(Input::Register)
            .boxed_local(),
        bus.serve(s.leave()).await?.map(Input::Leave).boxed_local(),
        bus.serve(s.result())
            .await?
            .map(Input::Result)
            .boxed_local(),
        bus.serve(s.certificate())
            .await?
            .map(Input::Certificate)
            .boxed_local(),
        bus.listen(s.subagent_heartbeats())
            .await?
            .map(Input::Heartbeat)
            .boxed_local(),
        jobs_kv.watch().await?.map(Input::Job).boxed_local(),
        clusters_kv.watch().await?.map(Input::Cluster).boxed_local(),
        workflows_kv
            .watch()
            .await?
            .map(Input::Workflow)
            .boxed_local(),
    ];
    let id = config.broker_id();
    let started_at_ms = now_ms();
    let audit = audit::Audit::new(bus.clone(), id.clone());
    let elector = elector::start(
        config.clone(),
        audit.clone(),
        bus.clone(),
        id.clone(),
        epoch,
        tenure.clone(),
    )
    .await?;
    info!(broker = %id, prefix = %s.prefix(), epoch, "broker active");
    Ok(Broker::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Broker {
            bus,
            config,
            id,
            started_at_ms,
            epoch,
            jobs: recovered.jobs,
            clusters: recovered.clusters,
            workflows: recovered.workflows,
            jobs_kv,
            clusters_kv,
            workflows_kv,
            orders_kv,
            flow_requests: recovered
                .flows
                .values()
                .filter_map(|f| Some((f.request_id.clone()?, f.id.clone())))
                .collect(),
            flows: recovered.flows,
            unreconciled: recovered.book.inherited_subagents(),
            book: recovered.book,
            writing: HashMap::new(),
            unannounced: HashMap::new(),
            revisions: recovered.revisions,
            registry: Registry::default(),
            last_placed: HashMap::new(),
            departed: VecDeque::new(),
            elector,
            peers: LeaseNews::default(),
            stopped: None,
            audit,
            tenure,
            idle_warned: false,
        }
    }))
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.broker.heartbeat_interval, |act, _| {
            if act.acting() {
                act.publish_heartbeat()
            }
        });
        ctx.run_interval(self.config.broker.check_interval, |act, ctx| {
            if act.acting() {
                act.check_liveness(ctx)
            }
        });
        if !self.unreconciled.is_empty() {
            ctx.run_later(self.config.broker.subagent_timeout, |act, ctx| {
                act.unseen_deadline(ctx)
            });
        }
        self.resume_flows(ctx);
    }
}

impl Input {
    /// What it asks, when the sender matters, who sent it, and where to answer.
    fn asked(&self) -> Option<(gate::Asked<'_>, &SenderProof, Option<&Replier>)> {
        use gate::Asked;
        Some(match self {
            Input::Deploy(r) => (Asked::Admin, &r.sender, Some(&r.replier)),
            Input::Control(r) => (Asked::Admin, &r.sender, Some(&r.replier)),
            Input::Register(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Leave(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Result(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Certificate(r) => {
                let asked = Asked::FromSubagent(&r.body.subagent_id);
                (asked, &r.sender, Some(&r.replier))
            }
            Input::Heartbeat(h) => (Asked::FromSubagent(&h.body.subagent_id), &h.sender, None),
            _ => return None,
        })
    }
}

impl StreamHandler<Input> for Broker {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        if !self.acting() {
            // no answer: the client asks again, and the next broker answers
            return;
        }
        if let Some((asked, sender, replier)) = input.asked() {
            if let Err(why) = gate::admits(asked, sender.get()) {
                if self.bus.stats().count_refused() {
                    let refused = self.bus.stats().refused();
                    warn!(asked = ?asked, %why, refused, "message refused (logged at the 1st, 2nd, 4th, 8th... refusal)");
                }
                match (replier, input.audited()) {
                    (Some(replier), Some(audited)) => {
                        self.refuse(replier, &audited, ErrorCode::Forbidden, why)
                    }
                    (Some(replier), None) => self.error(replier, ErrorCode::Forbidden, why),
                    (None, _) => {}
                }
                return;
            }
        }
        match input {
            Input::Submit(r) => self.on_submit(r, ctx),
            Input::Deploy(r) => self.on_deploy(r, ctx),
            Input::GetOrder(r) => self.on_get_order(r, ctx),
            Input::Cancel(r) => self.on_cancel(r, ctx),
            Input::Status(r) => self.on_status(r, ctx),
            Input::Control(r) => self.on_control(r, ctx),
            Input::Register(r) => self.on_register(r, ctx),
            Input::Leave(r) => self.on_leave(r),
            Input::Result(r) => self.on_result(r, ctx),
            Input::Certificate(r) => self.on_certificate(r, ctx),
            Input::Heartbeat(h) => self.on_heartbeat(h.body, ctx),
            Input::Suspend(r) => self.on_suspend(r, ctx),
            Input::Resume(r) => self.on_resume(r, ctx),
            Input::List(r) => self.on_list(r),
            Input::Job(change) => self.on_job_change(change),
            Input::Workflow(change) => self.on_workflow_change(change),
            Input::Cluster(change) => self.on_cluster_change(change),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("all broker subscriptions ended; stopping");
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.send(());
        }
        ctx.stop();
    }
}

impl Broker {
    /// Whether its lease still holds by its own clock. A broker resumed
    /// after a pause longer than its lease does nothing more: the leadership
    /// loop is about to stop it, and a standby may already act.
    fn acting(&mut self) -> bool {
        let holds = self.tenure.holds(std::time::Instant::now());
        if !holds && !self.idle_warned {
            self.idle_warned = true;
            warn!(broker = %self.id, epoch = self.epoch, "the lease may have run out (this process was paused?): acting on nothing until stepping down");
        }
        holds
    }

    fn error(&self, replier: &Replier, code: ErrorCode, message: impl Into<String>) {
        self.bus.reply(replier, &ErrorReply::new(code, message));
    }

    /// Hands queued orders to subagents, oldest first. An order whose
    /// cluster has no room waits without holding up other clusters' orders.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if !self.acting() {
            return;
        }
        let queued: Vec<(String, String)> = self
            .book
            .queued()
            .map(|o| (o.id.clone(), o.job.clone()))
            .collect();
        let mut blocked: HashSet<String> = HashSet::new();
        for (order_id, job) in queued {
            let Some(spec) = self.jobs.get(&job) else {
                let reason = format!("job '{job}' is no longer deployed");
                let event = OrderEvent::Refused {
                    reason,
                    at_ms: now_ms(),
                };
                self.apply_and_act(&order_id, event, ctx);
                continue;
            };
            let key = spec.cluster.clone().unwrap_or_default();
            if blocked.contains(&key) {
                continue;
            }
            let cluster = spec.cluster.as_ref().and_then(|c| self.clusters.get(c));
            let mode = cluster.map_or(SchedulingMode::RoundRobin, |c| c.mode);
            let chosen = if spec.cluster.is_some() && cluster.is_none() {
                None
            } else {
                let members = placement::members(cluster, self.registry.iter());
                // round-robin: a workflow step goes to the member after the
                // one that ran the step before it in its own order
                let previous = match mode {
                    SchedulingMode::RoundRobin => self.previous_step_subagent(&order_id),
                    _ => None,
                };
                let last = previous
                    .as_deref()
                    .or_else(|| self.last_placed.get(&key).map(String::as_str));
                placement::choose(mode, &members, last)
                    .map(|s| (s.id.clone(), s.instance_id.clone()))
            };
            let Some((subagent_id, instance_id)) = chosen else {
                blocked.insert(key);
                continue;
            };
            self.last_placed.insert(key, subagent_id.clone());
            // assigns the task in the registry, so the next choice sees it
            self.dispatch_one(&order_id, subagent_id, instance_id, ctx);
        }
        if self.book.queue_len() > 1024 {
            self.book.compact_queue();
        }
    }

    fn dispatch_one(
        &mut self,
        order_id: &str,
        subagent_id: String,
        instance_id: String,
        ctx: &mut Context<Self>,
    ) {
        let run = self.book.get(order_id).and_then(|order| {
            self.run_task(order, order.next_task_id(), order.attempt + 1, instance_id)
        });
        let Some(run) = run else {
            return;
        };
        let event = OrderEvent::Dispatched {
            task_id: run.task_id.clone(),
            subagent_id: subagent_id.clone(),
            instance_id: run.instance_id.clone().unwrap_or_default(),
        };
        if let Err(e) = self.book.apply(order_id, event) {
            warn!(order = %order_id, error = %e, "dispatch refused by the order book");
            return;
        }
        self.registry.assign(&subagent_id, &run.task_id);
        debug!(order = %order_id, subagent = %subagent_id, attempt = run.attempt, "dispatching");
        // journaled before it is sent: a broker taking over knows where it went
        let run = Box::new(run);
        self.store(order_id, Then::Run { subagent_id, run }, ctx);
    }

    /// The task running `order` as `task_id`; `None` when its job is gone.
    fn run_task(
        &self,
        order: &Order,
        task_id: String,
        attempt: u32,
        instance_id: String,
    ) -> Option<RunTask> {
        let spec = self.jobs.get(&order.job)?;
        let (args, mut env) = jobs::command_for(spec, &order.id, &order.params);
        if let Some(slot_ms) = order.slot_ms {
            env.insert("BATON_SLOT_MS".into(), slot_ms.to_string());
        }
        if let Some(parent) = &order.parent {
            env.insert("BATON_WORKFLOW".into(), parent.workflow.clone());
            env.insert("BATON_WORKFLOW_ORDER_ID".into(), parent.order_id.clone());
            env.insert("BATON_STEP".into(), parent.step.clone());
            env.insert("BATON_STEP_ATTEMPT".into(), parent.attempt.to_string());
        }
        Some(RunTask {
            task_id,
            order_id: order.id.clone(),
            job: order.job.clone(),
            attempt,
            program: spec.program.clone(),
            args,
            env,
            working_dir: spec.working_dir.clone(),
            timeout_ms: spec.timeout_ms,
            instance_id: Some(instance_id),
            epoch: self.epoch,
            parent: order.parent.clone(),
        })
    }

    fn send_run(&mut self, subagent_id: String, run: RunTask, ctx: &mut Context<Self>) {
        if !self.acting() {
            return;
        }
        let bus = self.bus.clone();
        let subject = bus.subjects().run(&subagent_id);
        let timeout = self.config.broker.dispatch_timeout;
        let request = async move {
            // the order's accepted event goes out before its task can start
            bus.posted().await;
            let reply = bus.request::<_, RunAccepted>(subject, &run, timeout).await;
            (run, reply)
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |(run, reply), act, ctx| act.on_run_reply(subagent_id, run, reply, ctx)),
        );
    }

    fn on_run_reply(
        &mut self,
        subagent_id: String,
        run: RunTask,
        reply: Result<RunAccepted, BusError>,
        ctx: &mut Context<Self>,
    ) {
        let still_ours = self.book.get(&run.order_id).is_some_and(|o| {
            o.phase == Phase::Dispatching && o.task_id.as_deref() == Some(run.task_id.as_str())
        });
        if !still_ours {
            return;
        }
        match reply {
            Ok(accepted) => {
                let event = OrderEvent::Started {
                    task_id: run.task_id.clone(),
                    at_ms: now_ms(),
                };
                match self.book.apply(&run.order_id, event) {
                    Ok(Applied::Moved { .. }) => self.store(&run.order_id, Then::Nothing, ctx),
                    Ok(Applied::Stale) => {}
                    Err(e) => {
                        warn!(task = %run.task_id, pid = ?accepted.pid, error = %e, "start not recorded")
                    }
                }
            }
            Err(e @ (BusError::NoResponders { .. } | BusError::Remote(_))) => {
                // definite: it did not take the task (nobody listened, or it refused)
                warn!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch failed; task goes back to the queue");
                if matches!(e, BusError::NoResponders { .. }) {
                    self.suspect(&subagent_id, "a dispatch found no responders");
                } else {
                    // it answered: alive, but out of placement until it heartbeats again
                    self.registry.said_busy(&subagent_id);
                }
                self.registry.release(&subagent_id, &run.task_id, false);
                let event = OrderEvent::DispatchFailed {
                    task_id: run.task_id,
                };
                if let Ok(Applied::Moved { .. }) = self.book.apply(&run.order_id, event) {
                    self.store(&run.order_id, Then::Nothing, ctx);
                }
                self.dispatch(ctx);
            }
            Err(e) => {
                // it may have the task already; the same task id is safe to
                // send again, and its loss, if it is lost, is handled there
                debug!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch unconfirmed; sending again");
                ctx.run_later(RESEND_DELAY, move |act, ctx| {
                    act.send_run(subagent_id, run, ctx)
                });
            }
        }
    }

    fn on_result(&mut self, req: Request<TaskResult>, ctx: &mut Context<Self>) {
        let r = req.body;
        self.registry.release(&r.subagent_id, &r.task_id, true);
        if let Some(reason) = r.abandoned.clone() {
            let event = OrderEvent::Abandoned {
                task_id: r.task_id.clone(),
                reason,
                at_ms: r.finished_at_ms,
            };
            let applied = self.book.apply(&r.order_id, event);
            let ack = (req.replier, r.task_id);
            match applied {
                Ok(Applied::Moved { to, .. }) if to.is_final() => {
                    self.finish(&r.order_id, Some(ack), ctx)
                }
                // back in the queue: stored so before the subagent forgets it
                Ok(Applied::Moved { .. }) => {
                    info!(order = %r.order_id, "order back in the queue");
                    let (replier, task_id) = ack;
                    self.store(&r.order_id, Then::Ack { replier, task_id }, ctx);
                }
                _ => self.ack_stale(&r.order_id, ack, ctx),
            }
            self.dispatch(ctx);
            return;
        }
        let outcome = Outcome {
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            error: r.error.clone(),
            started_at_ms: Some(r.started_at_ms),
            finished_at_ms: r.finished_at_ms,
            outputs: r.outputs.clone(),
        };
        let event = OrderEvent::Finished {
            task_id: r.task_id.clone(),
            outcome,
        };
        match self.book.apply(&r.order_id, event) {
            Ok(Applied::Moved { .. }) => {
                self.finish(&r.order_id, Some((req.replier, r.task_id)), ctx);
                self.dispatch(ctx);
            }
            Ok(Applied::Stale) => {
                debug!(task = %r.task_id, "stale or repeated result recorded");
                self.ack_stale(&r.order_id, (req.replier, r.task_id), ctx);
            }
            Err(e) => {
                debug!(task = %r.task_id, error = %e, "result for an order not held here");
                self.bus
                    .reply(&req.replier, &ResultAck { task_id: r.task_id });
            }
        }
    }

    /// Acknowledges a result that changed nothing; for a final order only
    /// once its state is stored (a repeated result may follow a failed write).
    fn ack_stale(&mut self, order_id: &str, ack: (Replier, String), ctx: &mut Context<Self>) {
        let (replier, task_id) = ack;
        if self.book.get(order_id).is_some_and(|o| o.phase.is_final()) {
            self.store(order_id, Then::Ack { replier, task_id }, ctx);
        } else {
            self.bus.reply(&replier, &ResultAck { task_id });
        }
    }

    /// Applies an event and follows up on where the order moved.
    fn apply_and_act(&mut self, order_id: &str, event: OrderEvent, ctx: &mut Context<Self>) {
        if let Ok(Applied::Moved { to, .. }) = self.book.apply(order_id, event) {
            self.after_move(order_id, to, ctx);
        }
    }

    /// Follows up on an order that moved to `to`.
    fn after_move(&mut self, order_id: &str, to: Phase, ctx: &mut Context<Self>) {
        match to {
            _ if to.is_final() => self.finish(order_id, None, ctx),
            Phase::Queued => {
                info!(order = %order_id, "order back in the queue");
                self.store(order_id, Then::Nothing, ctx);
            }
            Phase::Orphaned => {
                info!(order = %order_id, "task in doubt until its subagent's orphan timeout");
            }
            _ => {}
        }
    }

    fn publish_heartbeat(&mut self) {
        let hb = BrokerHeartbeat {
            broker_id: self.id.clone(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
            epoch: self.epoch,
            role: BrokerRole::Active,
            precedence: self.config.broker.precedence,
            lease_age_ms: self.peers.lease_age_ms(),
        };
        self.bus
            .post_signed(self.bus.subjects().broker_heartbeat(), &hb);
    }
}

pub use leadership::run_until_signal;

/// The broker lost (or gave up) the leadership lease: it stops acting at
/// once. Its subscriptions end with it; unfinished IO is dropped (nothing
/// unstored was acknowledged), and the next active broker rebuilds the
/// state from JetStream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown;

impl Handler<StepDown> for Broker {
    type Result = ();

    fn handle(&mut self, _: StepDown, ctx: &mut Self::Context) {
        info!(broker = %self.id, epoch = self.epoch, "broker stepping down");
        self.elector.do_send(elector::Stop);
        self.stopped = None;
        ctx.stop();
    }
}

/// From the leadership loop: when the lease was last renewed, and the other
/// brokers heard from (for `status` and heartbeats).
#[derive(Message, Default, Clone)]
#[rtype(result = "()")]
pub struct LeaseNews {
    pub renewed_at: Option<std::time::Instant>,
    pub peers: Vec<BrokerStatus>,
}

impl LeaseNews {
    fn lease_age_ms(&self) -> Option<u64> {
        self.renewed_at.map(|t| t.elapsed().as_millis() as u64)
    }

    /// Every broker: this one first, then the others by id.
    fn brokers(&self, me: BrokerStatus) -> Vec<BrokerStatus> {
        let mut all = vec![me];
        all.extend(self.peers.iter().cloned());
        all
    }
}

impl Handler<LeaseNews> for Broker {
    type Result = ();

    fn handle(&mut self, news: LeaseNews, _: &mut Self::Context) {
        self.peers = news;
    }
}

/// Asks the broker to say when it stops by itself.
pub(crate) struct NotifyStop(tokio::sync::oneshot::Sender<()>);

impl Message for NotifyStop {
    type Result = ();
}

impl Handler<NotifyStop> for Broker {
    type Result = ();

    fn handle(&mut self, msg: NotifyStop, _: &mut Self::Context) {
        self.stopped = Some(msg.0);
    }
}
