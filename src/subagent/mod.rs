//! The Subagent: a lightweight executor. It registers with the broker,
//! heartbeats with its load, answers liveness probes, runs the tasks it is
//! handed as OS processes, publishes their output as events, and reports each
//! result (with the task's `::baton-result` values, [`results`]) until the
//! broker acknowledges it.
//!
//! It registers (retrying until answered), heartbeats its running task ids
//! and its load (sysinfo) at the pace [`pace`] decides (slower while
//! idle, when its clock, `clock.rs`, ticks only then too, and it listens
//! to the broker's heartbeats only until it hears one), answers `ping`,
//! serves `run` and `stop`, and
//! replaces a reaper that died ([`reaper`], which reads `/proc` through
//! [`groups`]), telling it everything again.
//!
//! It kills its own tasks when it has heard no broker for `orphan_timeout`
//! (so the broker may run them elsewhere): broker contact is an active
//! broker's heartbeat, command or acknowledgement (a `ping` does not count:
//! its answer may not get through); when it notices a gap longer than the
//! orphan timeout and grace (a frozen process thawing), it kills them with
//! SIGKILL at once. On SIGTERM or a stop request
//! it drains: no new tasks, running ones finish (up to `drain_timeout`),
//! results are acknowledged, then it leaves and exits 0.
//!
//! It obeys only the newest active broker: a `run`, `kill` or `stop` not
//! signed by a broker, or from an older broker epoch than the newest seen, is
//! refused (`guard.rs`, [`epoch`]). Only an
//! active broker counts as broker contact; a standby acknowledges nothing.
//! Whether a `run` starts a task is decided by [`admission`] (pure) over
//! the task table, [`tasks`]; `run.rs` acts on the decision.
//!
//! Architecture invariant: a subagent keeps no state worth keeping across a
//! restart; the broker owns orders. A task id it already knows is never
//! started twice.

pub mod admission;
mod batched;
pub mod build;
mod clock;
mod delivery;
mod drain;
pub mod epoch;
pub mod groups;
mod guard;
pub mod memory;
pub mod pace;
pub mod process;
pub mod reaper;
pub mod relay;
pub mod results;
mod run;
pub mod tasks;

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use crate::bus::{Bus, BusError, Received, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

enum Input {
    Run(Request<RunTask>),
    Ping(Request<Ping>),
    Stop(Request<StopSubagent>),
    Kill(Request<KillTask>),
    /// Heartbeats under our own id: another process using it is a configuration error.
    Twin(Received<SubagentHeartbeat>),
}

impl Message for Input {
    type Result = ();
}

/// A broker heartbeat, from the subscription the subagent opens and closes
/// as its pace says ([`pace::Pace::listens_always`], `guard.rs`).
struct Beat(Received<BrokerHeartbeat>);

/// Start draining, as on SIGTERM.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

pub struct Subagent {
    bus: Bus,
    config: Config,
    id: String,
    instance_id: String,
    registered: bool,
    registering: bool,
    draining: bool,
    leaving: bool,
    last_broker_contact: Instant,
    /// The heartbeat periods, and when the last heartbeat went with the
    /// period it announced ([`pace`]).
    pace: pace::Pace,
    last_heartbeat: Option<(Instant, Duration)>,
    /// The next tick of its clock, and when it comes ([`pace::Pace::next_tick`]).
    tick: Option<(SpawnHandle, Instant)>,
    /// Its subscription to the broker's heartbeats while open, and whether
    /// one is being opened.
    listening: Option<SpawnHandle>,
    subscribing: bool,
    /// When unacknowledged results were last sent again.
    last_retry: Instant,
    /// Since when nothing runs and every result is acknowledged; whether
    /// it worked (started, ran tasks) since it last dropped its clean
    /// pages ([`memory::drop_again`]).
    idle_since: Option<Instant>,
    worked: bool,
    /// When its clean pages were last dropped.
    last_drop: Instant,
    /// The newest active broker epoch seen; older brokers' commands are refused.
    fence: epoch::EpochFence,
    /// Running tasks, unacknowledged results, lately finished ids.
    tasks: tasks::Tasks,
    system: sysinfo::System,
    /// Kills what our tasks leave behind if we die.
    reaper: Option<reaper::Reaper>,
    /// Tells `run_until_signal` the subagent is done: drained, or cannot go on.
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Subscribes and starts the subagent in the current actix System. `done`
/// receives `Ok` once it has drained and left, or why it had to stop.
pub async fn start(
    config: Config,
    bus: Bus,
    done: oneshot::Sender<Result<(), String>>,
) -> Result<Addr<Subagent>, BusError> {
    let id = config.subagent_id();
    let s = bus.subjects().clone();
    let inputs: Vec<LocalBoxStream<'static, Input>> = vec![
        bus.serve(s.run(&id)).await?.map(Input::Run).boxed_local(),
        bus.serve(s.ping(&id)).await?.map(Input::Ping).boxed_local(),
        bus.serve(s.stop(&id)).await?.map(Input::Stop).boxed_local(),
        bus.serve(s.kill(&id)).await?.map(Input::Kill).boxed_local(),
        bus.listen(s.subagent_heartbeat(&id))
            .await?
            .map(Input::Twin)
            .boxed_local(),
    ];
    let instance_id = uuid::Uuid::now_v7().to_string();
    let hello = reaper::Hello {
        subagent_id: id.clone(),
        instance_id: instance_id.clone(),
        config: config.clone(),
    };
    let reaper = match std::env::current_exe().and_then(|exe| reaper::Reaper::start(&exe, &hello)) {
        Ok(reaper) => Some(reaper),
        Err(e) => {
            warn!(error = %e, "cannot start the reaper: a task's children may outlive a killed subagent, \
                and its death is known only after its orphan timeout");
            None
        }
    };
    let reaper_pid = reaper.as_ref().map(reaper::Reaper::pid);
    info!(subagent = %id, instance = %instance_id, capacity = config.subagent.capacity, ?reaper_pid, "subagent started");
    let pace = pace::Pace::new(
        config.subagent.heartbeat_interval,
        config.subagent.idle_heartbeat_interval,
        config.broker.subagent_timeout,
    );
    Ok(Subagent::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Subagent {
            bus,
            config,
            id,
            instance_id,
            registered: false,
            registering: false,
            draining: false,
            leaving: false,
            last_broker_contact: Instant::now(),
            pace,
            last_heartbeat: None,
            tick: None,
            listening: None,
            subscribing: false,
            last_retry: Instant::now(),
            idle_since: None,
            worked: true,
            last_drop: Instant::now(),
            fence: epoch::EpochFence::default(),
            tasks: tasks::Tasks::default(),
            system: sysinfo::System::new(),
            reaper,
            done: Some(done),
        }
    }))
}

impl Actor for Subagent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.check_own_subjects(ctx);
        self.listen(ctx);
        self.register(ctx);
        self.heartbeat();
        self.schedule_tick(ctx);
    }
}

impl StreamHandler<Input> for Subagent {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        match input {
            Input::Run(r) => self.on_run(r, ctx),
            Input::Ping(r) => {
                // an answer may not get through: a ping is no contact
                let pong = Pong {
                    subagent_id: self.id.clone(),
                    instance_id: self.instance_id.clone(),
                    running: self.tasks.running_ids(),
                };
                self.bus.reply(&r.replier, &pong);
            }
            Input::Stop(r) => {
                if !self.obey("stop", r.body.epoch, &r.sender, &r.replier) {
                    return;
                }
                let stopping = Stopping {
                    running: self.tasks.running_len() as u32,
                };
                self.bus.reply(&r.replier, &stopping);
                info!("stop requested");
                self.drain(ctx);
            }
            Input::Kill(r) => {
                if !self.obey("kill", r.body.epoch, &r.sender, &r.replier) {
                    return;
                }
                let KillTask {
                    task_id, reason, ..
                } = r.body;
                let kill = self
                    .tasks
                    .running_mut(&task_id)
                    .and_then(tasks::Running::take_kill);
                let found = kill.is_some();
                if let Some(kill) = kill {
                    info!(task = %task_id, %reason, "killing the task on request");
                    let _ = kill.send(reason);
                }
                self.bus.reply(&r.replier, &KillAccepted { task_id, found });
            }
            Input::Twin(hb) => self.on_twin(hb.body, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("subscriptions ended; stopping");
        self.exit(Err("lost its NATS subscriptions".into()), ctx);
    }
}

impl Handler<Drain> for Subagent {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        self.drain(ctx);
    }
}

impl Subagent {
    fn exit(&mut self, result: Result<(), String>, ctx: &mut Context<Self>) {
        if let (Ok(()), Some(reaper)) = (&result, &mut self.reaper) {
            // drained and left: nothing of ours runs, nothing to certify
            reaper.clean_exit();
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
        ctx.stop();
    }

    fn on_twin(&mut self, hb: SubagentHeartbeat, ctx: &mut Context<Self>) {
        // instance ids are UUIDv7, ordered by start time: the later process yields
        if hb.instance_id != self.instance_id && hb.instance_id < self.instance_id {
            error!(subagent = %self.id, "another running subagent uses this id; stopping");
            let reason = format!(
                "another running subagent uses the id '{}'; give each subagent its own --id",
                self.id
            );
            self.exit(Err(reason), ctx);
        }
    }

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
            heartbeat_interval_ms: self.announced().as_millis() as u64,
            orphan_timeout_ms: self.orphan_limit().as_millis() as u64,
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
                    if !act.registered {
                        // started: the startup code is not run again
                        let dropped = memory::drop_clean_pages();
                        act.last_drop = Instant::now();
                        debug!(bytes = dropped, "startup code dropped from the map");
                    }
                    act.registered = true;
                    act.heard_broker();
                    act.fence.observe(r.epoch);
                    info!(broker = %r.broker_id, epoch = r.epoch, "registered with broker");
                }
                Err(e) => debug!(error = %e, "registration not answered yet"),
            }
        }));
    }

    /// When all of this subagent's tasks are surely dead after losing the
    /// broker: the orphan timeout plus the kill grace.
    fn orphan_limit(&self) -> Duration {
        self.config.subagent.orphan_timeout + self.config.subagent.kill_grace
    }

    /// The heartbeat period that applies now ([`pace::Pace::interval`]).
    fn announced(&self) -> Duration {
        (self.pace).interval(self.tasks.running_len(), self.draining)
    }

    /// A tick: heartbeats when one is due at the pace that applies.
    fn heartbeat_if_due(&mut self) {
        let due = self.last_heartbeat.is_none_or(|(at, announced)| {
            let (running, draining) = (self.tasks.running_len(), self.draining);
            self.pace.due(at.elapsed(), announced, running, draining)
        });
        if due {
            self.heartbeat();
        }
    }

    fn heartbeat(&mut self) {
        if self.leaving {
            // gone: a heartbeat now would make the broker take us back
            return;
        }
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory().max(1) as f64;
        let announced = self.announced();
        let load = Load {
            cpu_percent: self.system.global_cpu_usage(),
            memory_percent: (self.system.used_memory() as f64 / total * 100.0) as f32,
            running: self.tasks.running_len() as u32,
        };
        let hb = SubagentHeartbeat {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            labels: self.config.subagent.labels.clone(),
            capacity: self.config.subagent.capacity,
            running: self.tasks.running_ids(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
            load: Some(load),
            draining: self.draining,
            heartbeat_interval_ms: announced.as_millis() as u64,
            orphan_timeout_ms: self.orphan_limit().as_millis() as u64,
            refused: self.bus.stats().refused(),
        };
        self.last_heartbeat = Some((Instant::now(), announced));
        self.bus
            .post_signed(self.bus.subjects().subagent_heartbeat(&self.id), &hb);
    }

    /// Contact with the active broker. After a gap longer than the orphan
    /// timeout (this process was frozen, or the messages were held up), the
    /// broker already counts our tasks as dead and may run them elsewhere:
    /// they are killed before the contact counts.
    fn heard_broker(&mut self) {
        self.check_orphaned();
        self.last_broker_contact = Instant::now();
    }

    /// No broker for `orphan_timeout`: kill every running task, so the
    /// broker can run restartable ones elsewhere without two copies (SIGTERM,
    /// then SIGKILL after the grace). Past the orphan timeout and the grace
    /// (a frozen process thawing, contact held up) the broker may already run
    /// them elsewhere: SIGKILL at once.
    fn check_orphaned(&mut self) {
        let silent = self.last_broker_contact.elapsed();
        let timeout = self.config.subagent.orphan_timeout;
        if silent <= timeout {
            return;
        }
        let at_once = silent > self.orphan_limit();
        let reason = format!(
            "killed by its subagent: no broker heard for {}",
            humantime::format_duration(timeout)
        );
        for (task_id, running) in self.tasks.all_running_mut() {
            if at_once {
                warn!(task = %task_id, silent_ms = silent.as_millis() as u64, "no broker for longer than the orphan timeout and grace; killing the task at once");
                let group = nix::unistd::Pid::from_raw(running.pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(kill) = running.take_kill() {
                warn!(task = %task_id, "no broker within the orphan timeout; killing the task");
                let _ = kill.send(reason.clone());
            }
        }
    }
}

pub use drain::run_until_signal;
