//! The Broker: the one place that decides. It keeps the registry of subagents
//! from their registrations and heartbeats, holds deployed jobs and orders,
//! and chooses which subagent runs each task.
//!
//! The actor only decodes, calls the pure parts ([`order_book`], [`registry`],
//! [`placement`]) and acts: it publishes, requests and writes to JetStream.
//! Every handler returns at once; IO runs as spawned futures whose results
//! come back into the actor.

pub mod order_book;
pub mod placement;
pub mod registry;

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tracing::{debug, info, warn};

use crate::bus::{Bus, BusError, Kv, KvChange, Received, Replier, Request};
use crate::config::Config;
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use order_book::{Applied, Order, OrderBook, OrderEvent, Outcome, Phase};
use registry::{Registry, Seen, Sighting};

/// Final orders kept in memory for lookups; older ones are read from JetStream.
const KEEP_FINISHED: usize = 10_000;

/// Everything that reaches the broker from NATS.
enum Input {
    Submit(Request<SubmitOrder>),
    Deploy(Request<DeployRequest>),
    GetOrder(Request<GetOrder>),
    Status(Request<StatusRequest>),
    Register(Request<Register>),
    Result(Request<TaskResult>),
    Heartbeat(Received<SubagentHeartbeat>),
    Job(KvChange<JobSpec>),
}

impl Message for Input {
    type Result = ();
}

pub struct Broker {
    bus: Bus,
    config: Config,
    id: String,
    started_at_ms: u64,
    jobs: HashMap<String, JobSpec>,
    jobs_kv: Kv<JobSpec>,
    orders_kv: Kv<OrderInfo>,
    book: OrderBook,
    registry: Registry,
    last_placed: Option<String>,
}

/// Connects, subscribes and starts the broker in the current actix System.
pub async fn start(config: Config, bus: Bus) -> Result<Addr<Broker>, BusError> {
    let jobs_kv: Kv<JobSpec> = bus.kv(&config.jobs_bucket()).await?;
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
        bus.serve(s.order_get())
            .await?
            .map(Input::GetOrder)
            .boxed_local(),
        bus.serve(s.status())
            .await?
            .map(Input::Status)
            .boxed_local(),
        bus.serve(s.register())
            .await?
            .map(Input::Register)
            .boxed_local(),
        bus.serve(s.result())
            .await?
            .map(Input::Result)
            .boxed_local(),
        bus.listen(s.subagent_heartbeats())
            .await?
            .map(Input::Heartbeat)
            .boxed_local(),
        jobs_kv.watch().await?.map(Input::Job).boxed_local(),
    ];
    let id = config.broker_id();
    info!(broker = %id, prefix = %s.prefix(), "broker started");
    Ok(Broker::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Broker {
            bus,
            config,
            id,
            started_at_ms: now_ms(),
            jobs: HashMap::new(),
            jobs_kv,
            orders_kv,
            book: OrderBook::new(KEEP_FINISHED),
            registry: Registry::default(),
            last_placed: None,
        }
    }))
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.broker.heartbeat_interval, |act, ctx| {
            act.tick(ctx)
        });
    }
}

impl StreamHandler<Input> for Broker {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        match input {
            Input::Submit(r) => self.on_submit(r, ctx),
            Input::Deploy(r) => self.on_deploy(r, ctx),
            Input::GetOrder(r) => self.on_get_order(r, ctx),
            Input::Status(r) => self.on_status(r),
            Input::Register(r) => self.on_register(r, ctx),
            Input::Result(r) => self.on_result(r, ctx),
            Input::Heartbeat(h) => self.on_heartbeat(h.body, ctx),
            Input::Job(change) => self.on_job_change(change),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("all broker subscriptions ended; stopping");
        ctx.stop();
    }
}

impl Broker {
    fn error(&self, replier: &Replier, code: ErrorCode, message: impl Into<String>) {
        self.bus.reply(replier, &ErrorReply::new(code, message));
    }

    fn on_submit(&mut self, req: Request<SubmitOrder>, ctx: &mut Context<Self>) {
        let SubmitOrder {
            job,
            params,
            request_id,
        } = req.body;
        if let Some(existing) = request_id
            .as_deref()
            .and_then(|r| self.book.by_request_id(r))
        {
            let reply = SubmitReply {
                order_id: existing.id.clone(),
                job: existing.job.clone(),
                state: existing.phase.wire(),
                duplicate: true,
            };
            self.bus.reply(&req.replier, &reply);
            return;
        }
        let Some(spec) = self.jobs.get(&job) else {
            let message = format!(
                "no job named '{job}' is deployed (deployed: {}); deploy it with `baton deploy FILE.toml`",
                self.job_names().join(", ")
            );
            return self.error(&req.replier, ErrorCode::UnknownJob, message);
        };
        let params = match jobs::resolve_params(spec, &params) {
            Ok(params) => params,
            Err(e) => return self.error(&req.replier, ErrorCode::InvalidParam, e.to_string()),
        };
        let order_id = uuid::Uuid::now_v7().to_string();
        let order = Order::new(order_id.clone(), job, params, request_id, now_ms());
        let info = order.info();
        let failed_id = order_id.clone();
        self.book.insert(order);
        let kv = self.orders_kv.clone();
        let replier = req.replier;
        let write = async move { kv.put(&order_id, &info).await.map(|_| info) };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            match written {
                Ok(info) => {
                    act.book.enqueue(&info.order_id);
                    let reply = SubmitReply {
                        order_id: info.order_id.clone(),
                        job: info.job.clone(),
                        state: OrderState::Accepted,
                        duplicate: false,
                    };
                    act.bus.reply(&replier, &reply);
                    let event = OrderAccepted {
                        order_id: info.order_id.clone(),
                        job: info.job.clone(),
                        params: info.params,
                        at_ms: info.accepted_at_ms,
                    };
                    let s = act.bus.subjects();
                    act.bus.post(
                        s.event(&event.job, &event.order_id, EventKind::Accepted),
                        &event,
                    );
                    act.dispatch(ctx);
                }
                Err(e) => {
                    warn!(error = %e, "order not stored; submit refused");
                    act.book.remove(&failed_id);
                    act.error(
                        &replier,
                        ErrorCode::Unavailable,
                        format!("the order could not be stored in JetStream, nothing was accepted: {e}"),
                    );
                }
            }
        }));
    }

    /// Hands queued orders to subagents while both exist.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while let Some(order) = self.book.next_queued() {
            let order_id = order.id.clone();
            let Some(spec) = self.jobs.get(&order.job) else {
                let reason = format!("job '{}' is no longer deployed", order.job);
                let event = OrderEvent::Refused {
                    reason,
                    at_ms: now_ms(),
                };
                if let Ok(Applied::Moved { .. }) = self.book.apply(&order_id, event) {
                    self.finish(&order_id, None, ctx);
                }
                continue;
            };
            let Some(subagent) =
                placement::round_robin(self.registry.iter(), self.last_placed.as_deref())
            else {
                break;
            };
            let (args, env) = jobs::command_for(spec, &order.id, &order.params);
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
                instance_id: Some(subagent.instance_id.clone()),
            };
            let subagent_id = subagent.id.clone();
            let event = OrderEvent::Dispatched {
                task_id: run.task_id.clone(),
                subagent_id: subagent_id.clone(),
            };
            if let Err(e) = self.book.apply(&order_id, event) {
                warn!(order = %order_id, error = %e, "dispatch refused by the order book");
                continue;
            }
            self.registry.assign(&subagent_id, &run.task_id);
            self.last_placed = Some(subagent_id.clone());
            debug!(order = %order_id, subagent = %subagent_id, "dispatching");
            self.send_run(subagent_id, run, ctx);
        }
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
                let at_ms = now_ms();
                let event = OrderEvent::Started {
                    task_id: run.task_id.clone(),
                    at_ms,
                };
                if let Err(e) = self.book.apply(&run.order_id, event) {
                    warn!(task = %run.task_id, pid = ?accepted.pid, error = %e, "start not recorded");
                }
            }
            Err(BusError::TimedOut { .. })
                if self
                    .registry
                    .get(&subagent_id)
                    .is_some_and(|s| s.state == SubagentState::Available) =>
            {
                // it may have the task already; the same task id is safe to resend
                debug!(task = %run.task_id, subagent = %subagent_id, "dispatch timed out; resending");
                self.send_run(subagent_id, run, ctx);
            }
            Err(e) => {
                warn!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch failed; task goes back to the queue");
                self.registry.suspect(&subagent_id);
                self.registry.release(&subagent_id, &run.task_id, false);
                let event = OrderEvent::DispatchFailed {
                    task_id: run.task_id,
                };
                let _ = self.book.apply(&run.order_id, event);
                self.dispatch(ctx);
            }
        }
    }

    fn on_result(&mut self, req: Request<TaskResult>, ctx: &mut Context<Self>) {
        let r = req.body;
        self.registry.release(&r.subagent_id, &r.task_id, true);
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
        };
        let seen = self.registry.seen(sighting, Instant::now());
        info!(subagent = %r.subagent_id, capacity = r.capacity, host = ?r.hostname, "subagent registered");
        let subagent_id = r.subagent_id.clone();
        self.bus.reply(
            &req.replier,
            &Registered {
                broker_id: self.id.clone(),
                heartbeat_interval_ms: self.config.subagent.heartbeat_interval.as_millis() as u64,
            },
        );
        self.after_seen(&subagent_id, seen, ctx);
    }

    fn on_heartbeat(&mut self, hb: SubagentHeartbeat, ctx: &mut Context<Self>) {
        if !subjects::is_valid_token(&hb.subagent_id) {
            return;
        }
        let sighting = Sighting {
            id: &hb.subagent_id,
            instance_id: &hb.instance_id,
            labels: &hb.labels,
            capacity: hb.capacity,
        };
        let seen = self.registry.seen(sighting, Instant::now());
        if seen == Seen::New {
            info!(subagent = %hb.subagent_id, "subagent joined by heartbeat");
        }
        self.after_seen(&hb.subagent_id, seen, ctx);
    }

    fn after_seen(&mut self, subagent_id: &str, seen: Seen, ctx: &mut Context<Self>) {
        match seen {
            Seen::Returned => info!(subagent = %subagent_id, "lost subagent is back"),
            Seen::Restarted { lost_tasks } => {
                warn!(subagent = %subagent_id, tasks = lost_tasks.len(), "subagent restarted; its tasks died with it");
                self.lose_tasks(subagent_id, ctx);
            }
            Seen::New | Seen::Alive => {}
        }
        self.dispatch(ctx);
    }

    /// Orders whose task was on a dead subagent: back to the queue when the
    /// task was never confirmed, failed when it was running.
    fn lose_tasks(&mut self, subagent_id: &str, ctx: &mut Context<Self>) {
        for order_id in self.book.on_subagent(subagent_id) {
            let event = OrderEvent::SubagentLost {
                subagent_id: subagent_id.to_string(),
                at_ms: now_ms(),
            };
            if let Ok(Applied::Moved { to, .. }) = self.book.apply(&order_id, event) {
                if to.is_final() {
                    self.finish(&order_id, None, ctx);
                }
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.broker.subagent_timeout;
        for (subagent_id, tasks) in self.registry.expire(Instant::now(), timeout) {
            warn!(subagent = %subagent_id, tasks = tasks.len(), "subagent lost: no heartbeat within {}", humantime::format_duration(timeout));
            self.lose_tasks(&subagent_id, ctx);
        }
        let hb = BrokerHeartbeat {
            broker_id: self.id.clone(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
        };
        self.bus.post(self.bus.subjects().broker_heartbeat(), &hb);
        self.dispatch(ctx);
    }

    fn on_deploy(&mut self, req: Request<DeployRequest>, ctx: &mut Context<Self>) {
        let specs = req.body.jobs;
        if specs.is_empty() {
            return self.error(
                &req.replier,
                ErrorCode::InvalidJob,
                "no jobs in the request",
            );
        }
        for spec in &specs {
            if let Err(e) = jobs::validate_job(spec) {
                return self.error(&req.replier, ErrorCode::InvalidJob, e.to_string());
            }
        }
        let kv = self.jobs_kv.clone();
        let replier = req.replier;
        let write = async move {
            for spec in &specs {
                kv.put(&spec.name, spec).await?;
            }
            Ok::<_, BusError>(specs)
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |written, act, ctx| match written {
                    Ok(specs) => {
                        let deployed: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
                        info!(jobs = ?deployed, "jobs deployed");
                        for spec in specs {
                            act.jobs.insert(spec.name.clone(), spec);
                        }
                        act.bus.reply(&replier, &DeployReply { deployed });
                        act.dispatch(ctx);
                    }
                    Err(e) => act.error(
                        &replier,
                        ErrorCode::Unavailable,
                        format!("jobs could not be stored in JetStream: {e}"),
                    ),
                }),
        );
    }

    fn on_job_change(&mut self, change: KvChange<JobSpec>) {
        match change.value {
            Some(spec) if jobs::validate_job(&spec).is_ok() && spec.name == change.key => {
                self.jobs.insert(change.key, spec);
            }
            Some(_) => {
                warn!(job = %change.key, "invalid job definition in the jobs bucket ignored")
            }
            None => {
                self.jobs.remove(&change.key);
            }
        }
    }

    fn on_get_order(&mut self, req: Request<GetOrder>, ctx: &mut Context<Self>) {
        if let Some(order) = self.book.get(&req.body.order_id) {
            return self.bus.reply(&req.replier, &order.info());
        }
        if !subjects::is_valid_token(&req.body.order_id) {
            let message = format!("no order {:?}", req.body.order_id);
            return self.error(&req.replier, ErrorCode::NotFound, message);
        }
        let kv = self.orders_kv.clone();
        let bus = self.bus.clone();
        let Request { body, replier } = req;
        ctx.spawn(
            async move {
                match kv.get(&body.order_id).await {
                    Ok(Some(info)) => bus.reply(&replier, &info),
                    Ok(None) => bus.reply(
                        &replier,
                        &ErrorReply::new(
                            ErrorCode::NotFound,
                            format!("no order {}", body.order_id),
                        ),
                    ),
                    Err(e) => bus.reply(
                        &replier,
                        &ErrorReply::new(ErrorCode::Unavailable, e.to_string()),
                    ),
                }
            }
            .into_actor(self),
        );
    }

    fn on_status(&mut self, req: Request<StatusRequest>) {
        let reply = StatusReply {
            protocol: PROTOCOL_VERSION,
            broker_id: self.id.clone(),
            broker_started_at_ms: self.started_at_ms,
            subagents: self.registry.status(Instant::now()),
            jobs: self.job_names(),
            orders: self.book.counts(),
            malformed_messages: self.bus.stats().malformed(),
        };
        self.bus.reply(&req.replier, &reply);
    }

    fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.jobs.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Stops the broker's System on SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let _broker = start(config, bus).await?;
    crate::cli::wait_for_signal().await;
    info!("broker stopping");
    Ok(())
}
