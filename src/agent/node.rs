//! The Agent actor, the process `baton agent` runs.
//!
//! It heartbeats with its role and health, answers liveness probes, and
//! obeys the broker's role commands ([`RoleState`] decides). While it holds
//! the Scheduler role it fires the deployed triggers (`firing.rs`), and
//! turns subject triggers' messages into orders (`subjects.rs`). On
//! SIGTERM it stops firing and publishes a last heartbeat as a spare, so the
//! broker elects another Scheduler at once.
//!
//! Architecture invariant: the heartbeat and the lease check are timers on
//! the actor and every handler is short (firing IO runs as spawned futures),
//! so firing work cannot delay them.

mod files;
mod firing;
mod subjects;
mod watched;

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::role::RoleState;
use crate::bus::{Bus, BusError, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

use firing::Firing;

/// How often a Scheduler checks that its lease has not run out.
const LEASE_CHECK: Duration = Duration::from_millis(100);
/// On shutdown, how long the last heartbeat may take to reach NATS.
const LAST_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

enum Input {
    Role(Request<RoleCommand>),
    Ping(Request<Ping>),
}

impl Message for Input {
    type Result = ();
}

/// Stop firing and publish a last heartbeat as a spare, as on SIGTERM; the
/// actor then stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct Agent {
    bus: Bus,
    config: Config,
    id: String,
    instance_id: String,
    role: RoleState,
    /// The Scheduler's work, while it holds the role.
    firing: Option<Firing>,
    /// Numbers each spell as Scheduler; results of IO started in an earlier
    /// one are ignored.
    term: u64,
    /// Fires submitted and not answered yet, of any term.
    submitting: u32,
    health: AgentHealth,
    system: sysinfo::System,
    stopping: bool,
    /// Tells `run_until_signal` the agent cannot go on.
    done: Option<oneshot::Sender<String>>,
}

/// Subscribes and starts the agent in the current actix System. `done`
/// receives why the agent had to stop, if it stops by itself.
pub async fn start(
    config: Config,
    bus: Bus,
    done: oneshot::Sender<String>,
) -> Result<Addr<Agent>, BusError> {
    let id = config.agent_id();
    let s = bus.subjects().clone();
    let inputs: Vec<LocalBoxStream<'static, Input>> = vec![
        bus.serve(s.agent_role(&id))
            .await?
            .map(Input::Role)
            .boxed_local(),
        bus.serve(s.agent_ping(&id))
            .await?
            .map(Input::Ping)
            .boxed_local(),
    ];
    let controlled = config.agent.role_control;
    info!(agent = %id, role_control = controlled, "agent started");
    Ok(Agent::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Agent {
            role: RoleState::new(&id, controlled),
            bus,
            config,
            id,
            instance_id: uuid::Uuid::now_v7().to_string(),
            firing: None,
            term: 0,
            submitting: 0,
            health: AgentHealth::default(),
            system: sysinfo::System::new(),
            stopping: false,
            done: Some(done),
        }
    }))
}

impl Actor for Agent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.role.role() == AgentRole::Scheduler {
            info!(agent = %self.id, "scheduler outside the broker's control");
            self.start_firing(ctx);
        }
        self.sample_health();
        self.heartbeat();
        ctx.run_interval(self.config.agent.heartbeat_interval, |act, _| {
            act.sample_health();
            act.heartbeat();
        });
        ctx.run_interval(LEASE_CHECK, |act, ctx| {
            let before = act.role.role();
            if act.role.expire(Instant::now()) {
                warn!(agent = %act.id, "scheduler lease ran out without word from the broker; turning off");
                act.role_changed(before, "lease ran out", ctx);
            }
        });
    }
}

impl StreamHandler<Input> for Agent {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        match input {
            Input::Role(r) => self.on_role(r, ctx),
            Input::Ping(r) => {
                let pong = AgentPong {
                    agent_id: self.id.clone(),
                    instance_id: self.instance_id.clone(),
                    role: self.role.role(),
                };
                self.bus.reply(&r.replier, &pong);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        warn!("subscriptions ended; stopping");
        self.stop_firing(ctx);
        if let Some(done) = self.done.take() {
            let _ = done.send("lost its NATS subscriptions".into());
        }
        ctx.stop();
    }
}

impl Handler<Shutdown> for Agent {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.stopping = true;
        let before = self.role.role();
        self.role.give_up();
        self.role_changed(before, "shutting down", ctx);
        // role_changed heartbeats only on a change; the broker hears the end either way
        if before == AgentRole::Spare {
            self.heartbeat();
        }
        ctx.stop();
    }
}

impl Agent {
    fn on_role(&mut self, req: Request<RoleCommand>, ctx: &mut Context<Self>) {
        if !req.sender.is(crate::auth::Role::Broker) {
            self.bus.stats().count_refused();
            let sender = req.sender.describe();
            warn!(%sender, "role command not signed by a broker refused");
            let refused = ErrorReply::new(
                ErrorCode::Forbidden,
                format!("role command refused: not signed by a broker (sender: {sender})"),
            );
            return self.bus.reply(&req.replier, &refused);
        }
        let command = req.body;
        if self.stopping {
            let refused = ErrorReply::new(
                ErrorCode::InvalidState,
                format!("agent {} is shutting down", self.id),
            );
            return self.bus.reply(&req.replier, &refused);
        }
        match self.role.command(&command, Instant::now()) {
            Ok(before) => {
                let reason = match command.action {
                    RoleAction::On => "turned on by the broker",
                    RoleAction::Renew => "renewed by the broker",
                    RoleAction::Off => "turned off by the broker",
                };
                debug!(broker = %command.broker_id, epoch = command.epoch, action = ?command.action, lease_ms = command.lease_ms, "role command");
                self.role_changed(before, reason, ctx);
                let answer = RoleAnswer {
                    agent_id: self.id.clone(),
                    instance_id: self.instance_id.clone(),
                    command: command.command,
                    role: self.role.role(),
                };
                self.bus.reply(&req.replier, &answer);
            }
            Err(refused) => {
                debug!(broker = %command.broker_id, epoch = command.epoch, reason = %refused.error.message, "role command refused");
                self.bus.reply(&req.replier, &refused);
            }
        }
    }

    /// Starts or stops firing after the role went from `before` to the
    /// current one, and tells the broker at once.
    fn role_changed(&mut self, before: AgentRole, reason: &str, ctx: &mut Context<Self>) {
        let now = self.role.role();
        if now == before {
            return;
        }
        info!(
            agent = %self.id,
            from = before.as_str(),
            to = now.as_str(),
            epoch = self.role.epoch(),
            reason,
            "role changed"
        );
        match now {
            AgentRole::Scheduler => self.start_firing(ctx),
            AgentRole::Spare => self.stop_firing(ctx),
        }
        self.heartbeat();
    }

    fn sample_health(&mut self) {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory().max(1) as f64;
        let measured = self.system.global_cpu_usage();
        self.health = AgentHealth {
            cpu_percent: self.config.agent.simulate_cpu_percent.unwrap_or(measured),
            memory_percent: (self.system.used_memory() as f64 / total * 100.0) as f32,
            load_average: sysinfo::System::load_average().one as f32,
            running: self.submitting,
        };
    }

    /// Publishes a heartbeat with the health last sampled.
    fn heartbeat(&mut self) {
        let schedules = self.firing.as_ref().map_or(0, Firing::schedules);
        let hb = AgentHeartbeat {
            agent_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            controlled: self.role.controlled(),
            role: self.role.role(),
            health: AgentHealth {
                running: self.submitting,
                ..self.health
            },
            schedules: u32::try_from(schedules).unwrap_or(u32::MAX),
            broker_epoch: self.role.epoch(),
            sent_at_ms: now_ms(),
            heartbeat_interval_ms: self.config.agent.heartbeat_interval.as_millis() as u64,
            protocol: PROTOCOL_VERSION,
            watch_problems: (self.firing.as_ref()).map_or_else(Vec::new, |f| f.files.problems()),
        };
        self.bus
            .post_signed(self.bus.subjects().agent_heartbeat(&self.id), &hb);
    }
}

/// Runs an agent until SIGINT/SIGTERM (then it stops firing, tells the
/// broker it is a spare, and returns `Ok`), or until it cannot go on.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let (done, mut failed) = oneshot::channel();
    let agent = start(config, bus.clone(), done).await?;
    tokio::select! {
        _ = crate::daemon::wait_for_signal() => {
            info!("signal received; stopping");
            let _ = agent.send(Shutdown).await;
            let sent = async {
                bus.posted().await;
                bus.flush().await
            };
            match tokio::time::timeout(LAST_HEARTBEAT_TIMEOUT, sent).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "last heartbeat not sent"),
                Err(_) => warn!("last heartbeat not sent in time"),
            }
            Ok(())
        }
        reason = &mut failed => Err(anyhow::anyhow!(
            reason.unwrap_or_else(|_| "the agent stopped unexpectedly".into())
        )),
    }
}
