//! The Broker: the one place that decides. It keeps the registry of subagents
//! from their registrations, heartbeats and probes, holds deployed jobs,
//! subagent clusters and orders, and chooses which subagent runs each task.
//!
//! The actor only decodes, calls the pure parts ([`order_book`], [`registry`],
//! [`placement`]) and acts: it publishes, requests and writes to JetStream.
//! Every handler returns at once; IO runs as spawned futures whose results
//! come back into the actor. Client-facing requests are in `requests.rs`.

pub mod agents;
mod elector;
pub mod order_book;
pub mod placement;
pub mod registry;
mod requests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tracing::{debug, info, warn};

use crate::bus::{Bus, BusError, Kv, KvChange, Received, Replier, Request};
use crate::config::Config;
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use order_book::{Applied, Order, OrderBook, OrderEvent, Outcome, Phase};
use registry::{Check, Registry, Seen, Sighting};

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
    Heartbeat(Received<SubagentHeartbeat>),
    Job(KvChange<JobSpec>),
    Cluster(KvChange<ClusterSpec>),
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
    jobs_kv: Kv<JobSpec>,
    clusters_kv: Kv<ClusterSpec>,
    orders_kv: Kv<OrderInfo>,
    book: OrderBook,
    registry: Registry,
    /// The member each cluster chose last ("" for jobs without a cluster).
    last_placed: HashMap<String, String>,
    /// Subagent processes (instance ids) that left normally, most recent last:
    /// a heartbeat of theirs still in flight must not bring them back.
    departed: VecDeque<String>,
    /// Keeps one agent in the Scheduler role.
    elector: Addr<elector::Elector>,
    /// Tells `run_until_signal` the broker cannot go on.
    stopped: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Subscribes and starts the broker in the current actix System.
/// `epoch` is the leadership lease's revision this broker won (see
/// `leadership.rs`); every command it sends carries it.
pub async fn start(config: Config, bus: Bus, epoch: u64) -> Result<Addr<Broker>, BusError> {
    let jobs_kv: Kv<JobSpec> = bus.kv(&config.jobs_bucket()).await?;
    let clusters_kv: Kv<ClusterSpec> = bus.kv(&config.clusters_bucket()).await?;
    let orders_kv: Kv<OrderInfo> = bus.kv(&config.orders_bucket()).await?;
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
        bus.listen(s.subagent_heartbeats())
            .await?
            .map(Input::Heartbeat)
            .boxed_local(),
        jobs_kv.watch().await?.map(Input::Job).boxed_local(),
        clusters_kv.watch().await?.map(Input::Cluster).boxed_local(),
    ];
    let id = config.broker_id();
    let started_at_ms = now_ms();
    let elector = elector::start(config.clone(), bus.clone(), id.clone(), epoch).await?;
    info!(broker = %id, prefix = %s.prefix(), epoch, "broker active");
    Ok(Broker::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Broker {
            bus,
            config,
            id,
            started_at_ms,
            epoch,
            jobs: HashMap::new(),
            clusters: HashMap::new(),
            jobs_kv,
            clusters_kv,
            orders_kv,
            book: OrderBook::new(KEEP_FINISHED),
            registry: Registry::default(),
            last_placed: HashMap::new(),
            departed: VecDeque::new(),
            elector,
            stopped: None,
        }
    }))
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.broker.heartbeat_interval, |act, _| {
            act.publish_heartbeat()
        });
        ctx.run_interval(self.config.broker.check_interval, |act, ctx| {
            act.check_liveness(ctx)
        });
    }
}

impl StreamHandler<Input> for Broker {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
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
            Input::Heartbeat(h) => self.on_heartbeat(h.body, ctx),
            Input::Job(change) => self.on_job_change(change),
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
    fn error(&self, replier: &Replier, code: ErrorCode, message: impl Into<String>) {
        self.bus.reply(replier, &ErrorReply::new(code, message));
    }

    /// Hands queued orders to subagents, oldest first. An order whose
    /// cluster has no room waits without holding up other clusters' orders.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
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
                let last = self.last_placed.get(&key).map(String::as_str);
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
        let Some(order) = self.book.get(order_id) else {
            return;
        };
        let Some(spec) = self.jobs.get(&order.job) else {
            return;
        };
        let (args, mut env) = jobs::command_for(spec, &order.id, &order.params);
        if let Some(slot_ms) = order.slot_ms {
            env.insert("BATON_SLOT_MS".into(), slot_ms.to_string());
        }
        let run = RunTask {
            task_id: order.next_task_id(),
            order_id: order.id.clone(),
            job: order.job.clone(),
            attempt: order.attempt + 1,
            program: spec.program.clone(),
            args,
            env,
            working_dir: spec.working_dir.clone(),
            timeout_ms: spec.timeout_ms,
            instance_id: Some(instance_id),
            epoch: self.epoch,
        };
        let event = OrderEvent::Dispatched {
            task_id: run.task_id.clone(),
            subagent_id: subagent_id.clone(),
        };
        if let Err(e) = self.book.apply(order_id, event) {
            warn!(order = %order_id, error = %e, "dispatch refused by the order book");
            return;
        }
        self.registry.assign(&subagent_id, &run.task_id);
        debug!(order = %order_id, subagent = %subagent_id, attempt = run.attempt, "dispatching");
        self.send_run(subagent_id, run, ctx);
    }

    fn send_run(&mut self, subagent_id: String, run: RunTask, ctx: &mut Context<Self>) {
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
                if let Err(e) = self.book.apply(&run.order_id, event) {
                    warn!(task = %run.task_id, pid = ?accepted.pid, error = %e, "start not recorded");
                }
            }
            Err(e @ (BusError::NoResponders { .. } | BusError::Remote(_))) => {
                // definite: it did not take the task (nobody listened, or it refused)
                warn!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch failed; task goes back to the queue");
                self.registry.suspect(&subagent_id);
                self.registry.release(&subagent_id, &run.task_id, false);
                let event = OrderEvent::DispatchFailed {
                    task_id: run.task_id,
                };
                let _ = self.book.apply(&run.order_id, event);
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
            self.apply_and_act(&r.order_id, event, ctx);
            self.persist_and_ack(&r.order_id, req.replier, r.task_id, ctx);
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
                self.persist_and_ack(&r.order_id, req.replier, r.task_id, ctx);
            }
            Err(e) => {
                debug!(task = %r.task_id, error = %e, "result for an order not held here");
                self.bus
                    .reply(&req.replier, &ResultAck { task_id: r.task_id });
            }
        }
    }

    /// Publishes an order's final state, stores it, then acknowledges the result (if any).
    fn finish(&mut self, order_id: &str, ack: Option<(Replier, String)>, ctx: &mut Context<Self>) {
        let Some(order) = self.book.get(order_id) else {
            return;
        };
        let info = order.info();
        let duration_ms = match (info.started_at_ms, info.finished_at_ms) {
            (Some(s), Some(f)) => Some(f.saturating_sub(s)),
            _ => None,
        };
        let event = OrderFinished {
            order_id: info.order_id.clone(),
            job: info.job.clone(),
            state: info.state,
            exit_code: info.exit_code,
            signal: info.signal,
            timed_out: info.timed_out,
            reason: info.reason.clone(),
            subagent_id: info.subagent_id.clone(),
            attempt: info.attempt,
            duration_ms,
            at_ms: now_ms(),
        };
        let s = self.bus.subjects();
        self.bus.post(
            s.event(&info.job, &info.order_id, EventKind::Finished),
            &event,
        );
        match ack {
            Some((replier, task_id)) => self.persist_and_ack(order_id, replier, task_id, ctx),
            None => self.persist(info, ctx),
        }
    }

    fn persist(&mut self, info: OrderInfo, ctx: &mut Context<Self>) {
        let kv = self.orders_kv.clone();
        ctx.spawn(
            async move {
                if let Err(e) = kv.put(&info.order_id, &info).await {
                    warn!(order = %info.order_id, error = %e, "order state not stored");
                }
            }
            .into_actor(self),
        );
    }

    /// Acknowledges a result once the order's state is stored; an order not
    /// stored is not acknowledged, so the subagent sends the result again.
    fn persist_and_ack(
        &mut self,
        order_id: &str,
        replier: Replier,
        task_id: String,
        ctx: &mut Context<Self>,
    ) {
        let info = self.book.get(order_id).map(Order::info);
        let kv = self.orders_kv.clone();
        let bus = self.bus.clone();
        ctx.spawn(
            async move {
                if let Some(info) = info.filter(|i| i.state.is_final()) {
                    if let Err(e) = kv.put(&info.order_id, &info).await {
                        warn!(order = %info.order_id, error = %e, "order state not stored; result not acknowledged");
                        return;
                    }
                }
                bus.reply(&replier, &ResultAck { task_id });
            }
            .into_actor(self),
        );
    }

    fn on_register(&mut self, req: Request<Register>, ctx: &mut Context<Self>) {
        let r = &req.body;
        if !subjects::is_valid_token(&r.subagent_id) {
            return self.error(
                &req.replier,
                ErrorCode::BadRequest,
                format!(
                    "subagent id {:?} is not a valid subject token",
                    r.subagent_id
                ),
            );
        }
        let sighting = Sighting {
            id: &r.subagent_id,
            instance_id: &r.instance_id,
            labels: &r.labels,
            capacity: r.capacity,
            load: None,
            draining: false,
            heartbeat_interval: interval_or(r.heartbeat_interval_ms, &self.config),
            orphan_timeout: Duration::from_millis(r.orphan_timeout_ms),
        };
        let seen = self.registry.seen(sighting, Instant::now());
        info!(subagent = %r.subagent_id, capacity = r.capacity, host = ?r.hostname, "subagent registered");
        let subagent_id = r.subagent_id.clone();
        self.bus.reply(
            &req.replier,
            &Registered {
                broker_id: self.id.clone(),
                heartbeat_interval_ms: self.config.broker.heartbeat_interval.as_millis() as u64,
                epoch: self.epoch,
            },
        );
        self.after_seen(&subagent_id, seen, &[], ctx);
    }

    fn on_heartbeat(&mut self, hb: SubagentHeartbeat, ctx: &mut Context<Self>) {
        if !subjects::is_valid_token(&hb.subagent_id) || self.departed.contains(&hb.instance_id) {
            return;
        }
        let before = self.registry.get(&hb.subagent_id).map(|s| s.state());
        let sighting = Sighting {
            id: &hb.subagent_id,
            instance_id: &hb.instance_id,
            labels: &hb.labels,
            capacity: hb.capacity,
            load: hb.load,
            draining: hb.draining,
            heartbeat_interval: interval_or(hb.heartbeat_interval_ms, &self.config),
            orphan_timeout: Duration::from_millis(hb.orphan_timeout_ms),
        };
        let seen = self.registry.seen(sighting, Instant::now());
        let after = self.registry.get(&hb.subagent_id).map(|s| s.state());
        if after == Some(SubagentState::Draining) && before != after {
            info!(subagent = %hb.subagent_id, "subagent draining");
            self.announce(
                &hb.subagent_id,
                SubagentState::Draining,
                "draining: stopping normally",
            );
        }
        self.after_seen(&hb.subagent_id, seen, &hb.running, ctx);
    }

    fn after_seen(&mut self, id: &str, seen: Seen, running: &[String], ctx: &mut Context<Self>) {
        match seen {
            Seen::New => {
                info!(subagent = %id, "subagent joined");
                self.announce(id, SubagentState::Available, "joined");
            }
            Seen::Returned => {
                info!(subagent = %id, "lost subagent is back");
                self.announce(id, SubagentState::Available, "back");
                for order_id in self.book.on_subagent(id) {
                    let event = OrderEvent::SubagentReturned {
                        subagent_id: id.to_string(),
                        running: running.to_vec(),
                    };
                    if let Ok(Applied::Moved { .. }) = self.book.apply(&order_id, event) {
                        if let Some(task) = self.book.get(&order_id).and_then(|o| o.task_id.clone())
                        {
                            self.registry.assign(id, &task);
                        }
                    }
                }
            }
            Seen::Restarted { lost_tasks } => {
                warn!(subagent = %id, tasks = lost_tasks.len(), "subagent restarted; its tasks died with it");
                self.announce(id, SubagentState::Available, "restarted");
                self.lose_tasks(id, true, ctx);
            }
            Seen::Alive => {}
        }
        self.dispatch(ctx);
    }

    /// Publishes a subagent's new state for anyone watching.
    fn announce(&self, id: &str, state: SubagentState, reason: &str) {
        let event = SubagentChanged {
            subagent_id: id.to_string(),
            state,
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.bus
            .post(self.bus.subjects().subagent_changed(id), &event);
    }

    /// A subagent is gone. `dead`: it vanished at once, so its tasks died
    /// with it; otherwise they are in doubt until its orphan timeout passes.
    fn declare_lost(&mut self, id: &str, dead: bool, ctx: &mut Context<Self>) {
        let Some(tasks) = self.registry.declare_lost(id) else {
            return;
        };
        let how = if dead {
            "lost: no responders (killed or crashed)"
        } else {
            "lost: silent, unreachable"
        };
        warn!(subagent = %id, tasks = tasks.len(), dead, "subagent {how}");
        self.announce(id, SubagentState::Lost, how);
        self.lose_tasks(id, dead, ctx);
        self.dispatch(ctx);
    }

    fn lose_tasks(&mut self, id: &str, dead: bool, ctx: &mut Context<Self>) {
        let rerun_at_ms = self.registry.get(id).map_or(0, |s| {
            let silent = Instant::now().saturating_duration_since(s.last_seen);
            let last_seen_ms = now_ms().saturating_sub(silent.as_millis() as u64);
            last_seen_ms
                + (s.orphan_timeout + s.heartbeat_interval + ORPHAN_MARGIN).as_millis() as u64
        });
        for order_id in self.book.on_subagent(id) {
            let event = OrderEvent::SubagentLost {
                subagent_id: id.to_string(),
                at_ms: now_ms(),
                dead,
                rerun_at_ms,
            };
            self.apply_and_act(&order_id, event, ctx);
        }
    }

    /// Applies an event and follows up on where the order moved.
    fn apply_and_act(&mut self, order_id: &str, event: OrderEvent, ctx: &mut Context<Self>) {
        match self.book.apply(order_id, event) {
            Ok(Applied::Moved { to, .. }) if to.is_final() => self.finish(order_id, None, ctx),
            Ok(Applied::Moved {
                to: Phase::Queued, ..
            }) => {
                info!(order = %order_id, "order back in the queue");
            }
            Ok(Applied::Moved {
                to: Phase::Orphaned,
                ..
            }) => {
                info!(order = %order_id, "task in doubt until its subagent's orphan timeout");
            }
            _ => {}
        }
    }

    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.broker.subagent_timeout;
        for check in self.registry.check(Instant::now(), timeout) {
            match check {
                Check::Probe(id) => self.probe(id, None, ctx),
                Check::Unreachable(id) => self.declare_lost(&id, false, ctx),
            }
        }
        let now = now_ms();
        let due = self.book.orphans_due(now);
        for order_id in &due {
            warn!(order = %order_id, "orphan timeout passed: the task is dead");
            self.apply_and_act(order_id, OrderEvent::OrphanDeadline { at_ms: now }, ctx);
        }
        if !due.is_empty() {
            self.dispatch(ctx);
        }
    }

    /// Asks a quiet subagent whether it lives: no responders means its
    /// process is gone; a late answer means it is only busy.
    ///
    /// No responders is taken as proof of death only when it holds twice, one
    /// heartbeat interval apart, with no heartbeat in between (a live subagent
    /// whose connection was dropped reconnects and resubscribes in that time),
    /// and not shortly after the broker itself reconnected (after a NATS
    /// restart the subagents may not have reconnected yet). Otherwise the
    /// subagent can only be declared lost by silence, with its tasks in doubt.
    fn probe(&mut self, id: String, first_no_responders: Option<Instant>, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let subject = bus.subjects().ping(&id);
        let request = async move {
            bus.request::<_, Pong>(subject, &Ping {}, PROBE_TIMEOUT)
                .await
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |reply, act, ctx| match reply {
                    Ok(pong) => {
                        if let Some(seen) =
                            act.registry.touch(&id, &pong.instance_id, Instant::now())
                        {
                            act.after_seen(&id, seen, &pong.running, ctx);
                        }
                    }
                    Err(BusError::NoResponders { .. }) => {
                        act.on_no_responders(id, first_no_responders, ctx)
                    }
                    Err(e) => {
                        debug!(subagent = %id, error = %e, "probe unanswered; it may be busy")
                    }
                }),
        );
    }

    fn on_no_responders(&mut self, id: String, first: Option<Instant>, ctx: &mut Context<Self>) {
        let Some(subagent) = self.registry.get(&id) else {
            return;
        };
        let reconnected = self.bus.stats().reconnected_at_ms();
        let since = now_ms().saturating_sub(reconnected);
        if reconnected > 0 && since < self.config.broker.subagent_timeout.as_millis() as u64 {
            debug!(subagent = %id, "no responders, but we only just reconnected; not proof of death");
            return;
        }
        match first {
            None => {
                let again = subagent.heartbeat_interval;
                let now = Instant::now();
                ctx.run_later(again, move |act, ctx| act.probe(id, Some(now), ctx));
            }
            Some(first) if subagent.last_seen < first => self.declare_lost(&id, true, ctx),
            Some(_) => debug!(subagent = %id, "heard from it between two probes; alive"),
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
            lease_age_ms: None,
        };
        self.bus.post(self.bus.subjects().broker_heartbeat(), &hb);
    }

    fn on_leave(&mut self, req: Request<Leave>) {
        let Leave {
            subagent_id,
            instance_id,
        } = req.body;
        if self.registry.remove(&subagent_id, &instance_id) {
            info!(subagent = %subagent_id, "subagent left normally");
            self.announce(&subagent_id, SubagentState::Left, "left: stopped normally");
        }
        if !self.departed.contains(&instance_id) {
            self.departed.push_back(instance_id);
            if self.departed.len() > 1024 {
                self.departed.pop_front();
            }
        }
        self.bus.reply(&req.replier, &Left {});
    }
}

fn interval_or(ms: u64, config: &Config) -> Duration {
    if ms == 0 {
        config.subagent.heartbeat_interval
    } else {
        Duration::from_millis(ms)
    }
}

/// Runs a broker until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let broker = start(config, bus, now_ms()).await?;
    let (stopped, failed) = tokio::sync::oneshot::channel();
    broker.do_send(NotifyStop(stopped));
    tokio::select! {
        _ = crate::cli::wait_for_signal() => {
            info!("broker stopping");
            Ok(())
        }
        Ok(()) = failed => Err(anyhow::anyhow!("the broker lost its NATS subscriptions")),
    }
}

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

/// Asks the broker to say when it stops by itself.
struct NotifyStop(tokio::sync::oneshot::Sender<()>);

impl Message for NotifyStop {
    type Result = ();
}

impl Handler<NotifyStop> for Broker {
    type Result = ();

    fn handle(&mut self, msg: NotifyStop, _: &mut Self::Context) {
        self.stopped = Some(msg.0);
    }
}
