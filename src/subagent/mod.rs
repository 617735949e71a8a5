//! The Subagent: a lightweight executor. It registers with the broker,
//! heartbeats, runs the tasks it is handed as OS processes, publishes their
//! output as log events, and reports each result until the broker
//! acknowledges it.
//!
//! Architecture invariant: a subagent keeps no state worth keeping across a
//! restart; the broker owns orders. A task id it already knows is never
//! started twice.

pub mod process;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use tracing::{debug, error, info, warn};

use crate::bus::{Bus, BusError, Received, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

/// Finished task ids remembered to recognise a repeated dispatch.
const REMEMBER_FINISHED: usize = 10_000;

struct Running {
    pid: Option<u32>,
}

struct Unacked {
    result: TaskResult,
    in_flight: bool,
}

pub struct Subagent {
    bus: Bus,
    config: Config,
    id: String,
    instance_id: String,
    registered: bool,
    registering: bool,
    running: HashMap<String, Running>,
    finished: VecDeque<String>,
    finished_set: HashSet<String>,
    unacked: BTreeMap<String, Unacked>,
    /// Tells `run_until_signal` why the subagent cannot go on.
    fatal: Option<oneshot::Sender<String>>,
}

/// Subscribes and starts the subagent in the current actix System.
pub async fn start(
    config: Config,
    bus: Bus,
    fatal: oneshot::Sender<String>,
) -> Result<Addr<Subagent>, BusError> {
    let id = config.subagent_id();
    let runs = bus.serve::<RunTask>(bus.subjects().run(&id)).await?;
    // heartbeats under our own id: another process using it is a configuration error
    let twins = bus
        .listen::<SubagentHeartbeat>(bus.subjects().subagent_heartbeat(&id))
        .await?;
    info!(subagent = %id, capacity = config.subagent.capacity, "subagent started");
    Ok(Subagent::create(move |ctx| {
        ctx.add_stream(runs);
        ctx.add_stream(twins);
        Subagent {
            bus,
            config,
            id,
            instance_id: uuid::Uuid::now_v7().to_string(),
            registered: false,
            registering: false,
            running: HashMap::new(),
            finished: VecDeque::new(),
            finished_set: HashSet::new(),
            unacked: BTreeMap::new(),
            fatal: Some(fatal),
        }
    }))
}

impl Actor for Subagent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.register(ctx);
        self.heartbeat();
        ctx.run_interval(self.config.subagent.heartbeat_interval, |act, ctx| {
            act.heartbeat();
            if !act.registered {
                act.register(ctx);
            }
        });
        ctx.run_interval(self.config.subagent.result_retry, |act, ctx| {
            let pending: Vec<String> = act.unacked.keys().cloned().collect();
            for task_id in pending {
                act.send_result(task_id, ctx);
            }
        });
    }
}

impl StreamHandler<Request<RunTask>> for Subagent {
    fn handle(&mut self, req: Request<RunTask>, ctx: &mut Self::Context) {
        self.on_run(req, ctx);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("task subscription ended; stopping");
        ctx.stop();
    }
}

impl StreamHandler<Received<SubagentHeartbeat>> for Subagent {
    fn handle(&mut self, hb: Received<SubagentHeartbeat>, ctx: &mut Self::Context) {
        let other = hb.body.instance_id;
        // instance ids are UUIDv7, ordered by start time: the later process yields
        if other != self.instance_id && other < self.instance_id {
            error!(subagent = %self.id, "another running subagent uses this id; stopping");
            if let Some(fatal) = self.fatal.take() {
                let _ = fatal.send(format!(
                    "another running subagent uses the id '{}'; give each subagent its own --id",
                    self.id
                ));
            }
            ctx.stop();
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Subagent {
    fn register(&mut self, ctx: &mut Context<Self>) {
        if self.registering {
            return;
        }
        self.registering = true;
        let hello = Register {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            labels: self.config.subagent.labels.clone(),
            capacity: self.config.subagent.capacity,
            hostname: Some(crate::config::hostname()),
            pid: Some(std::process::id()),
            protocol: PROTOCOL_VERSION,
        };
        let bus = self.bus.clone();
        let subject = bus.subjects().register();
        let request = async move {
            bus.request::<_, Registered>(subject, &hello, Duration::from_secs(2))
                .await
        };
        ctx.spawn(request.into_actor(self).map(|reply, act, _| {
            act.registering = false;
            match reply {
                Ok(r) => {
                    act.registered = true;
                    info!(broker = %r.broker_id, "registered with broker");
                }
                Err(e) => debug!(error = %e, "registration not answered yet"),
            }
        }));
    }

    fn heartbeat(&self) {
        let hb = SubagentHeartbeat {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            labels: self.config.subagent.labels.clone(),
            capacity: self.config.subagent.capacity,
            running: self.running.keys().cloned().collect(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
        };
        self.bus
            .post(self.bus.subjects().subagent_heartbeat(&self.id), &hb);
    }

    fn knows(&self, task_id: &str) -> bool {
        self.running.contains_key(task_id)
            || self.unacked.contains_key(task_id)
            || self.finished_set.contains(task_id)
    }

    fn on_run(&mut self, req: Request<RunTask>, ctx: &mut Context<Self>) {
        let task = req.body;
        if task
            .instance_id
            .as_ref()
            .is_some_and(|i| *i != self.instance_id)
        {
            // Meant for another process under this id. No answer: if that
            // process is alive (a duplicate id), its answer is the one that counts.
            warn!(task = %task.task_id, "task meant for another process with this subagent id; ignored");
            return;
        }
        if self.knows(&task.task_id) {
            let pid = self.running.get(&task.task_id).and_then(|r| r.pid);
            let reply = RunAccepted {
                task_id: task.task_id,
                duplicate: true,
                pid,
            };
            return self.bus.reply(&req.replier, &reply);
        }
        if self.running.len() >= self.config.subagent.capacity as usize {
            let error = ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "subagent {} runs {} tasks, its capacity",
                    self.id,
                    self.running.len()
                ),
            );
            return self.bus.reply(&req.replier, &error);
        }
        let started_at_ms = now_ms();
        let spawned = match process::spawn(&task) {
            Ok(spawned) => spawned,
            Err(e) => {
                let error = format!("cannot start '{}': {e}", task.program);
                warn!(task = %task.task_id, %error, "task not started");
                let reply = RunAccepted {
                    task_id: task.task_id.clone(),
                    duplicate: false,
                    pid: None,
                };
                self.bus.reply(&req.replier, &reply);
                let exit = process::Exit {
                    error: Some(error),
                    ..process::Exit::default()
                };
                return self.on_exit(task, None, exit, started_at_ms, ctx);
            }
        };
        let pid = spawned.pid;
        debug!(task = %task.task_id, pid, "task started");
        self.running
            .insert(task.task_id.clone(), Running { pid: Some(pid) });
        let reply = RunAccepted {
            task_id: task.task_id.clone(),
            duplicate: false,
            pid: Some(pid),
        };
        self.bus.reply(&req.replier, &reply);

        // posted before any log line of the task, through the same ordered queue
        let started = TaskStarted {
            order_id: task.order_id.clone(),
            job: task.job.clone(),
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            subagent_id: self.id.clone(),
            pid: Some(pid),
            at_ms: started_at_ms,
        };
        let s = self.bus.subjects();
        self.bus.post(
            s.event(&task.job, &task.order_id, EventKind::Started),
            &started,
        );

        let bus = self.bus.clone();
        let subject = bus
            .subjects()
            .event(&task.job, &task.order_id, EventKind::Log);
        let mut log = TaskLog {
            order_id: task.order_id.clone(),
            job: task.job.clone(),
            task_id: task.task_id.clone(),
            subagent_id: self.id.clone(),
            stream: LogStream::Stdout,
            seq: 0,
            line: String::new(),
            at_ms: 0,
        };
        let on_line = move |stream, line| {
            log.seq += 1;
            log.stream = stream;
            log.line = line;
            log.at_ms = now_ms();
            bus.post(subject.clone(), &log);
            async {}
        };
        let timeout = task.timeout_ms.map(Duration::from_millis);
        let supervised = process::supervise(
            spawned,
            timeout,
            self.config.subagent.kill_grace,
            self.config.subagent.max_line_bytes,
            on_line,
        );
        ctx.spawn(
            supervised
                .into_actor(self)
                .map(move |exit, act, ctx| act.on_exit(task, Some(pid), exit, started_at_ms, ctx)),
        );
    }

    fn on_exit(
        &mut self,
        task: RunTask,
        pid: Option<u32>,
        exit: process::Exit,
        started_at_ms: u64,
        ctx: &mut Context<Self>,
    ) {
        self.running.remove(&task.task_id);
        debug!(task = %task.task_id, ?exit, "task ended");
        let result = TaskResult {
            task_id: task.task_id.clone(),
            order_id: task.order_id,
            job: task.job,
            attempt: task.attempt,
            subagent_id: self.id.clone(),
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            error: exit.error,
            pid,
            started_at_ms,
            finished_at_ms: now_ms(),
        };
        self.remember_finished(&task.task_id);
        self.unacked.insert(
            task.task_id.clone(),
            Unacked {
                result,
                in_flight: false,
            },
        );
        self.send_result(task.task_id, ctx);
    }

    fn remember_finished(&mut self, task_id: &str) {
        self.finished.push_back(task_id.to_string());
        self.finished_set.insert(task_id.to_string());
        while self.finished.len() > REMEMBER_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.finished_set.remove(&old);
            }
        }
    }

    /// Sends a result to the broker; it stays buffered until acknowledged.
    fn send_result(&mut self, task_id: String, ctx: &mut Context<Self>) {
        let Some(entry) = self.unacked.get_mut(&task_id) else {
            return;
        };
        if entry.in_flight {
            return;
        }
        entry.in_flight = true;
        let result = entry.result.clone();
        let bus = self.bus.clone();
        let subject = bus.subjects().result();
        let timeout = self
            .config
            .subagent
            .result_retry
            .max(Duration::from_secs(1));
        let request = async move {
            // log lines first: the result must not overtake them
            bus.posted().await;
            bus.request::<_, ResultAck>(subject, &result, timeout).await
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |reply, act, _| match reply {
                    Ok(_) => {
                        act.unacked.remove(&task_id);
                    }
                    Err(e) => {
                        debug!(task = %task_id, error = %e, "result not acknowledged; will retry");
                        if let Some(entry) = act.unacked.get_mut(&task_id) {
                            entry.in_flight = false;
                        }
                    }
                }),
        );
    }
}

/// Runs a subagent until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let (fatal, fatal_rx) = oneshot::channel();
    let _subagent = start(config, bus, fatal).await?;
    tokio::select! {
        _ = crate::cli::wait_for_signal() => {
            info!("subagent stopping");
            Ok(())
        }
        Ok(reason) = fatal_rx => Err(anyhow::anyhow!(reason)),
    }
}
