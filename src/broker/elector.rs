//! The Elector: the broker's actor, beside the Broker in the broker
//! process, that keeps exactly one agent in the Scheduler role. It learns
//! agents from their heartbeats ([`AgentBook`]; `agent.heartbeat_interval`,
//! silent past `scheduler.agent_timeout`) and listens to
//! `api.scheduler.control`, asks the pure [`decide`] who should hold the
//! role every `broker.check_interval` and on every operator request, and
//! sends what it decides as [`RoleCommand`]s stamped with the broker's
//! epoch (the leadership lease's revision). Role changes are published as
//! `AgentChanged`; the Broker asks it for the agents `status` shows
//! (`AgentsNow`).
//!
//! An agent whose heartbeats are late is probed (`agent.{id}.ping`); no
//! responders twice, one
//! heartbeat apart with no heartbeat between (and not just after our own
//! reconnect), proves its process gone, and its lease is dropped at once
//! ([`ElectionState::gone`]). Silence alone drops it from the book, but its
//! lease keeps the role from moving until it runs out (`scheduler.lease` +
//! `scheduler.lease_grace`).
//!
//! Every grant and renewal is recorded in JetStream before its command is
//! sent, and the record is deleted when its holder's lease ends early
//! (`scheduler_lease.rs`). At start the Elector reads its predecessor's
//! record and starts from [`ElectionState::taking_over`]; the holder of a
//! live inherited lease that has not been heard from is probed like a late
//! agent, so a holder that died with the previous broker frees the role
//! within two probes.

mod firing;
mod record;
mod switches;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::stream::{self, LocalBoxStream, StreamExt};
use tracing::{debug, info, warn};

use super::agents::{AgentBook, Check, Heard};
use super::audit::{Audit, Audited};
use super::election::{decide, Action, ElectionConfig, ElectionState, Predecessor, Request as Ask};
use super::probe::{self, Verdict};
use super::scheduler_lease::{self, Ledger};
use crate::bus::{Bus, BusError, Kv, Received, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

/// How long a liveness probe or role command waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

enum Input {
    Heartbeat(Received<AgentHeartbeat>),
    Control(Request<SchedulerControl>),
}

impl Message for Input {
    type Result = ();
}

/// The agents as `baton status` shows them, and why no trigger fires.
#[derive(Message)]
#[rtype(result = "(Vec<AgentStatus>, Option<String>)")]
pub struct AgentsNow;

/// A role command the election decided, for one agent.
struct Command {
    agent: String,
    /// The election's number for it, which the agent's answer echoes.
    number: u64,
    action: RoleAction,
    lease_ms: u64,
}

impl Command {
    fn new(agent: String, number: u64, action: RoleAction, lease_ms: u64) -> Command {
        Command {
            agent,
            number,
            action,
            lease_ms,
        }
    }
}

/// A role command waiting for its lease record to be written.
struct Grant {
    command: Command,
    decided: Instant,
}

pub struct Elector {
    bus: Bus,
    config: Config,
    election_config: ElectionConfig,
    broker_id: String,
    epoch: u64,
    book: AgentBook,
    election: ElectionState,
    /// Records operators' requests (`audit.rs`).
    audit: Audit,
    /// The Scheduler lease record's bucket, when it could be opened.
    record: Option<Kv<SchedulerLease>>,
    /// Writes of the record, in order, with the commands they hold back.
    ledger: Ledger<Grant>,
    /// The last write of the record failed (logged once per streak).
    record_failing: bool,
    /// The holder of a live lease inherited from the previous broker.
    inherited: Option<String>,
    started: Instant,
    /// Until when it may act (see `lease::Tenure`).
    tenure: super::lease::Tenure,
    /// Operators' `scheduler on|off` switches, kept in JetStream so that
    /// every broker taking over honours them; by agent id.
    switches: BTreeMap<String, OperatorSwitch>,
    switches_kv: Kv<OperatorSwitch>,
    /// When this broker started electing.
    electing_since: Instant,
    /// What was last said of the triggers: `Some(None)` firing,
    /// `Some(Some(why))` not firing; `None` nothing yet.
    not_firing: Option<Option<String>>,
    /// Agents dropped as silent, named when no agent is heard.
    silent: super::election::Silent,
}

/// Subscribes and starts the elector in the current actix System.
pub async fn start(
    config: Config,
    audit: Audit,
    bus: Bus,
    api: &crate::bus::ApiService,
    broker_id: String,
    epoch: u64,
    tenure: super::lease::Tenure,
) -> Result<Addr<Elector>, BusError> {
    let s = bus.subjects().clone();
    let inputs: Vec<LocalBoxStream<'static, Input>> = vec![
        bus.listen(s.agent_heartbeats())
            .await?
            .map(Input::Heartbeat)
            .boxed_local(),
        api.serve::<SchedulerControl, SchedulerControlReply>(
            "scheduler-control",
            s.scheduler_control(),
        )
        .await?
        .map(Input::Control)
        .boxed_local(),
    ];
    let election_config = ElectionConfig::from(&config.scheduler);
    let (record, predecessor) = scheduler_lease::read_predecessor(&bus, &config).await;
    // long enough for every agent's first heartbeat
    let settle = config.agent.heartbeat_interval * 2;
    let mut election = ElectionState::taking_over(now_ms(), &election_config, &predecessor, settle);
    // agents an operator turned off stay off under this broker too
    let switches_kv: Kv<OperatorSwitch> = bus.kv(&config.switches_bucket()).await?;
    let switches = switches::read(&switches_kv, &mut election).await?;
    let inherited = match predecessor {
        Predecessor::Granted { agent, .. } => Some(agent),
        Predecessor::Unknown | Predecessor::NoLease => None,
    };
    Ok(Elector::create(move |ctx| {
        ctx.add_stream(stream::select_all(inputs));
        Elector {
            election,
            bus,
            config,
            election_config,
            broker_id,
            epoch,
            book: AgentBook::default(),
            audit,
            record,
            ledger: Ledger::new(inherited.clone()),
            record_failing: false,
            inherited,
            started: Instant::now(),
            tenure,
            switches,
            switches_kv,
            electing_since: Instant::now(),
            not_firing: None,
            silent: Default::default(),
        }
    }))
}

impl Actor for Elector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(holder) = self.inherited.clone() {
            self.probe_holder(holder, None, ctx);
        }
        ctx.run_interval(self.config.broker.check_interval, |act, ctx| {
            // a broker resumed past its lease elects nobody (see `lease::Tenure`)
            if act.tenure.holds(Instant::now()) {
                act.check(ctx);
                act.round(Ask::None, None, ctx);
                act.announce_firing();
            }
        });
    }
}

impl StreamHandler<Input> for Elector {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        if !self.tenure.holds(Instant::now()) {
            return;
        }
        match input {
            Input::Heartbeat(hb) if !hb.sender.is(crate::auth::Role::Agent) => {
                if self.bus.stats().count_refused() {
                    warn!(sender = %hb.sender.describe(), "agent heartbeat not signed by an agent ignored (logged at the 1st, 2nd, 4th, 8th... refusal)");
                }
            }
            Input::Heartbeat(hb) => self.on_heartbeat(hb.body, ctx),
            Input::Control(req) => {
                let asked = super::gate::Asked::Switch;
                let audited = Audited::scheduler(&req.body, req.sender.get());
                if let Err(why) = super::gate::admits(asked, req.sender.get()) {
                    self.bus.stats().count_refused();
                    warn!(%why, "scheduler control refused");
                    let code = ErrorCode::Forbidden;
                    return self.audit.refuse(&req.replier, &audited, code, &why);
                }
                self.on_control(req, audited, ctx)
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        warn!("agent subscriptions ended; the Scheduler role is no longer managed");
    }
}

/// The broker stepped down: stop electing (and unsubscribe).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Elector {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<AgentsNow> for Elector {
    type Result = MessageResult<AgentsNow>;

    fn handle(&mut self, _: AgentsNow, _: &mut Self::Context) -> Self::Result {
        let agents = self.agents_now();
        let why = self.silent.not_firing(&agents);
        MessageResult((agents, why))
    }
}

impl Elector {
    /// Every agent heard from, with its role, lease and operator switch.
    pub(super) fn agents_now(&self) -> Vec<AgentStatus> {
        let election = &self.election;
        let lease = |id: &str| (election.lease_expires_at_ms(id), election.is_excluded(id));
        let cond = &self.config.scheduler.switch_condition;
        let mut agents = self.book.status(cond, lease, Instant::now(), now_ms());
        for a in &mut agents {
            a.switched = self.switches.get(&a.id).cloned();
        }
        agents
    }

    fn on_heartbeat(&mut self, hb: AgentHeartbeat, ctx: &mut Context<Self>) {
        if !subjects::is_valid_token(&hb.agent_id) {
            return;
        }
        let keep = self.config.scheduler.switch_condition.for_ + Duration::from_secs(60);
        let th = &self.config.scheduler.health;
        self.silent.heard(&hb.agent_id);
        match self.book.heard(&hb, th, keep, Instant::now(), now_ms()) {
            Heard::New => {
                info!(agent = %hb.agent_id, role = hb.role.as_str(), controlled = hb.controlled, "agent joined");
                self.announce(&hb.agent_id, hb.role, "joined");
            }
            Heard::Restarted => {
                info!(agent = %hb.agent_id, "agent restarted; its previous process is gone");
                self.lost(&hb.agent_id, ctx);
                self.announce(&hb.agent_id, hb.role, "restarted");
            }
            Heard::Alive { role_changed: true } => {
                self.announce(&hb.agent_id, hb.role, "reported by the agent");
            }
            Heard::Alive { .. } => {}
        }
    }

    fn on_control(
        &mut self,
        req: Request<SchedulerControl>,
        audited: Audited,
        ctx: &mut Context<Self>,
    ) {
        let SchedulerControl { agent_id, action } = req.body.clone();
        let Some(agent) = self.book.get(&agent_id) else {
            let message =
                format!("no agent '{agent_id}' is connected; `baton status` lists the agents");
            return self
                .audit
                .refuse(&req.replier, &audited, ErrorCode::NotFound, &message);
        };
        let role = agent.role;
        let ask = match action {
            SchedulerAction::On => Ask::On(agent_id.clone()),
            SchedulerAction::Off => Ask::Off(agent_id.clone()),
        };
        info!(agent = %agent_id, ?action, "operator asks to move the Scheduler role");
        let switch = OperatorSwitch {
            off: action == SchedulerAction::Off,
            by: req.sender.get().describe(),
            at_ms: now_ms(),
            all: false,
        };
        let reply = SchedulerControlReply {
            agent_id,
            action,
            role,
        };
        let control = switches::Control {
            replier: req.replier,
            audited,
            reply,
            switch,
        };
        self.round(ask, Some(control), ctx);
    }

    /// One election round; `control` is answered with the reply, or with
    /// the refusal the round produced.
    fn round(&mut self, ask: Ask, control: Option<switches::Control>, ctx: &mut Context<Self>) {
        let now = now_ms();
        let views = self
            .book
            .views(&self.config.scheduler.switch_condition, now);
        let actions = decide(&self.election_config, &mut self.election, &views, &ask, now);
        let mut refused = None;
        for action in actions {
            match action {
                Action::TurnOn {
                    agent,
                    command,
                    lease_ms,
                } => {
                    info!(agent = %agent, lease_ms, "turning the Scheduler role on");
                    super::metrics::role_change("on");
                    self.grant(Command::new(agent, command, RoleAction::On, lease_ms), ctx);
                }
                Action::Renew {
                    agent,
                    command,
                    lease_ms,
                } => self.grant(
                    Command::new(agent, command, RoleAction::Renew, lease_ms),
                    ctx,
                ),
                Action::TurnOff { agent, command } => {
                    info!(agent = %agent, "turning the Scheduler role off");
                    super::metrics::role_change("off");
                    self.send(Command::new(agent, command, RoleAction::Off, 0), ctx);
                }
                Action::Reject { agent, reason } => {
                    warn!(agent = %agent, %reason, "operator request refused");
                    refused = Some(format!("agent '{agent}': {reason}"));
                }
            }
        }
        if let Some(control) = control {
            match refused {
                Some(message) => {
                    let code = ErrorCode::InvalidState;
                    let switches::Control {
                        replier, audited, ..
                    } = control;
                    self.audit.refuse(&replier, &audited, code, &message)
                }
                None => self.store_switch(control, ctx),
            }
        }
    }

    /// Sends `command` to its agent; a turn-off the agent confirms ends
    /// the agent's lease record.
    fn send(&mut self, command: Command, ctx: &mut Context<Self>) {
        let Command {
            agent,
            number: command,
            action,
            lease_ms,
        } = command;
        let bus = self.bus.clone();
        let subject = bus.subjects().agent_role(&agent);
        let request = RoleCommand {
            broker_id: self.broker_id.clone(),
            epoch: self.epoch,
            command,
            action,
            lease_ms,
        };
        let ask = async move {
            bus.request::<_, RoleAnswer>(subject, &request, ANSWER_TIMEOUT)
                .await
        };
        ctx.spawn(ask.into_actor(self).map(move |answer, act, ctx| match answer {
            Ok(answer) => {
                let now = now_ms();
                let changed = act.book.answered(&agent, &answer.instance_id, answer.role, now);
                if changed {
                    act.announce(&agent, answer.role, "told by the broker");
                }
                let off = action == RoleAction::Off && answer.role == AgentRole::Spare;
                if off && act.election.off_confirmed(&agent, command) {
                    act.ledger.ended(&agent);
                    act.write_record(ctx);
                }
            }
            Err(e) => debug!(agent = %agent, ?action, error = %e, "role command unanswered; it is sent again"),
        }));
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.scheduler.agent_timeout;
        for check in self.book.check(Instant::now(), timeout) {
            match check {
                Check::Probe(id) => self.probe(id, None, ctx),
                Check::Silent(id) => {
                    warn!(agent = %id, "agent silent; dropped (a lease it holds still runs out)");
                    self.silent.dropped(&id, now_ms());
                    self.announce(&id, AgentRole::Spare, "lost: silent");
                }
            }
        }
    }

    /// Asks a quiet agent whether it lives; see the module docs.
    fn probe(&mut self, id: String, first_no_responders: Option<Instant>, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let subject = bus.subjects().agent_ping(&id);
        let ping = async move {
            bus.request::<_, AgentPong>(subject, &Ping {}, ANSWER_TIMEOUT)
                .await
        };
        ctx.spawn(
            ping.into_actor(self)
                .map(move |reply, act, ctx| match reply {
                    Ok(pong) => act.book.touch(&id, &pong.instance_id, Instant::now()),
                    Err(BusError::NoResponders { .. }) => {
                        act.on_no_responders(id, first_no_responders, ctx)
                    }
                    Err(e) => debug!(agent = %id, error = %e, "probe unanswered; it may be busy"),
                }),
        );
    }

    fn on_no_responders(&mut self, id: String, first: Option<Instant>, ctx: &mut Context<Self>) {
        let Some(agent) = self.book.get(&id) else {
            return;
        };
        let reconnected = self.bus.stats().reconnected_at_ms();
        let guard = self.config.scheduler.agent_timeout;
        match probe::judge(first, agent.last_seen, reconnected, now_ms(), guard) {
            Verdict::NotProof => {
                debug!(agent = %id, "no responders, but we only just reconnected; not proof of death")
            }
            Verdict::AskAgain => {
                let now = Instant::now();
                let again = agent.heartbeat_interval;
                ctx.run_later(again, move |act, ctx| act.probe(id, Some(now), ctx));
            }
            Verdict::Gone => {
                let was = agent.role;
                warn!(agent = %id, role = was.as_str(), "agent process gone (no responders)");
                self.book.remove(&id);
                self.lost(&id, ctx);
                self.announce(&id, AgentRole::Spare, "lost: process gone");
                self.round(Ask::None, None, ctx);
            }
            Verdict::Alive => debug!(agent = %id, "heard from it between two probes; alive"),
        }
    }

    /// Publishes an agent's role change for anyone watching.
    fn announce(&self, id: &str, role: AgentRole, reason: &str) {
        let event = AgentChanged {
            agent_id: id.to_string(),
            role,
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.bus.post(self.bus.subjects().agent_changed(id), &event);
    }
}
