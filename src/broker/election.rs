//! The broker's decision on which agent holds the Scheduler role. Pure: the
//! broker passes in what its registry knows of the agents, the operator's
//! request and the time, and gets back commands to send; [`ElectionState`]
//! is the memory between calls.
//!
//! Only agents that let the broker control their role (`controlled`) take
//! part. Each call of [`decide`] works through the algorithm's cases:
//!
//! 1. No Scheduler: after `connection_timeout` without one, turn on the best
//!    candidate: one whose switch condition is not met if there is one, then
//!    the best health, then the smallest id. When every candidate meets the
//!    condition the best of them is still chosen: a poor Scheduler fires
//!    triggers, none does not.
//! 2. The Scheduler meets its switch condition: hand the role to the best
//!    spare that does not; with no such spare, keep it.
//! 3. Several Schedulers: keep the one not meeting the condition, then the
//!    healthier, then the smaller id; turn the others off.
//! 4. `scheduler on X`: turn the others off, then X on.
//! 5. `scheduler off X`: turn X off and keep it out of elections until an
//!    operator turns it on again (so with X the only candidate, no Scheduler
//!    remains: that is what was asked). If no other Scheduler remains, the
//!    best spare not meeting the condition takes over at once, without the
//!    connection timeout (the old Scheduler is known gone); with none, case 1
//!    follows.
//!
//! Safe hand-over: turning an agent on grants a lease of `lease`; the agent
//! holds the role only while its lease lasts, and [`Action::Renew`] extends
//! it. The broker counts a lease as running for `lease_grace` longer, to
//! cover message delay. [`Action::TurnOn`] goes to an agent only when no
//! other agent may be on: none reports on, and every lease granted to
//! another has run out or its holder answered a [`Action::TurnOff`]
//! ([`ElectionState::off_confirmed`]). Where the seed goes ahead 5 s after an
//! unanswered "turn off", Baton asks again every `answer_timeout` and waits
//! for the lease.
//!
//! A new broker learns its predecessor's leases from the record the
//! Elector keeps in JetStream (`takeover.rs`,
//! [`ElectionState::taking_over`]): with no live lease recorded it elects
//! as soon as the agents' first heartbeats are in; with a live one only
//! that holder may be on until the lease runs out or the holder is proven
//! gone; when the record cannot be read it grants nothing for one lease and
//! grace ([`ElectionState::new`]). A new broker chooses nobody in case 1
//! before its quiet time is over, so the choice is made among every agent
//! heard by then.
//!
//! Decisions beyond the seed:
//!
//! - An agent outside broker control that reports on counts as the
//!   Scheduler: the broker cannot turn it off, so it turns the controlled
//!   ones off and elects nobody beside it, rather than risk double firing.
//! - An agent told to turn on that does not report on within one lease is
//!   turned off and ranked last (unresponsive) until it reports on or an
//!   operator turns it on, so a broken agent cannot hold the election.
//! - A Scheduler that disconnects keeps the role until the connection timeout
//!   passes; it is not turned off before then.
//! - A manual `scheduler on X` overrides the switch condition only once: if
//!   X meets it, case 2 applies to X like to any Scheduler.
//!
//! Size: over the ~500-line mark (the five cases, the lease rules and their
//! reasons); the next commit splits it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::health::{millis, HealthLevel};
use crate::config::SchedulerConfig;

mod takeover;

pub use takeover::Predecessor;

/// Timings of the election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// How long no Scheduler is tolerated before one is elected.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// How long an agent has to answer a command before it is sent again.
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// How long an agent holds the role without hearing from the broker.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How much longer the broker counts a lease as running: more than a
    /// command takes to arrive.
    #[serde(with = "humantime_serde")]
    pub lease_grace: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            connection_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(10),
            lease_grace: Duration::from_secs(2),
        }
    }
}

impl From<&SchedulerConfig> for ElectionConfig {
    /// The election's timings from the `[scheduler]` settings.
    fn from(config: &SchedulerConfig) -> Self {
        ElectionConfig {
            connection_timeout: config.connection_timeout,
            answer_timeout: config.answer_timeout,
            lease: config.lease,
            lease_grace: config.lease_grace,
        }
    }
}

/// What the broker's registry knows of one connected agent. The role must
/// reflect the agent's latest answer or heartbeat, whichever it sent last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub id: String,
    /// Started with "allow the broker to control my role".
    pub controlled: bool,
    /// The agent says it is the Scheduler.
    pub reported_on: bool,
    pub health: HealthLevel,
    /// Its switch condition holds now (see `HealthHistory::condition_met`).
    pub switch_condition_met: bool,
}

/// An operator's request, if any arrived since the last call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    None,
    On(String),
    Off(String),
}

/// Identifies a command, so an answer can be matched to the latest one.
pub type CommandId = u64;

/// What the broker should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take the Scheduler role for `lease_ms` from receipt.
    TurnOn {
        agent: String,
        command: CommandId,
        lease_ms: u64,
    },
    /// Keep the role for `lease_ms` from receipt; an agent that is off ignores it.
    Renew {
        agent: String,
        command: CommandId,
        lease_ms: u64,
    },
    /// Drop the role and answer; pass the answer to [`ElectionState::off_confirmed`].
    TurnOff { agent: String, command: CommandId },
    /// Tell the operator the request was refused.
    Reject { agent: String, reason: Rejection },
}

/// Why an operator's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("agent is not connected")]
    NotConnected,
    #[error("agent does not let the broker control its role")]
    NotControlled,
    #[error("agent {agent} is Scheduler outside the broker's control")]
    UncontrolledScheduler { agent: String },
}

/// The last command sent to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    command: CommandId,
    /// When it was sent, in ms.
    at: u64,
    told: Told,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// Turn on, first asked at `first_ms`; not reported on since.
    On {
        first_ms: u64,
    },
    /// Reported on after a turn-on, or renewed.
    Held,
    Off,
}

/// The broker's memory between calls of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionState {
    /// Agent id -> when its lease runs out for the broker (grace included).
    leases: BTreeMap<String, u64>,
    /// Agent id -> the last command sent, while it may matter.
    sent: BTreeMap<String, Sent>,
    /// Turned off by an operator: never elected until turned on by one.
    excluded: BTreeSet<String>,
    /// Did not take the role when told: ranked last.
    unresponsive: BTreeSet<String>,
    /// Chosen to be Scheduler, waiting for the others to be off.
    pending: Option<String>,
    no_scheduler_since_ms: Option<u64>,
    quiet_until_ms: u64,
    /// A Scheduler is known gone: elect its successor without waiting.
    successor_now: bool,
    next_command: CommandId,
}

impl ElectionState {
    /// A broker starting at `now_ms`: no role is granted for one lease and
    /// grace, since leases granted by a previous broker may still run.
    pub fn new(now_ms: u64, config: &ElectionConfig) -> Self {
        ElectionState {
            leases: BTreeMap::new(),
            sent: BTreeMap::new(),
            excluded: BTreeSet::new(),
            unresponsive: BTreeSet::new(),
            pending: None,
            no_scheduler_since_ms: None,
            quiet_until_ms: now_ms.saturating_add(lease_total(config)),
            successor_now: false,
            next_command: 1,
        }
    }

    /// `agent` answered `command` (a [`Action::TurnOff`]): it is off, its
    /// lease is over. An answer to an older command is ignored. Returns
    /// whether the answer counted.
    pub fn off_confirmed(&mut self, agent: &str, command: CommandId) -> bool {
        let latest = self
            .sent
            .get(agent)
            .is_some_and(|s| s.command == command && s.told == Told::Off);
        if latest {
            self.leases.remove(agent);
        }
        latest
    }

    /// `agent`'s process is known gone: NATS has no subscriber on its
    /// subjects, so its connection is closed. It holds no lease any more, and
    /// if it held one its successor is elected at the next round without the
    /// connection timeout, as in case 5. Callers remove it from the agents
    /// they pass to [`decide`].
    ///
    /// Safe because a closed connection cannot submit fires; a fire queued
    /// before it closed carries its slot's idempotency key, so it cannot
    /// become a second order of a slot the successor fires too.
    pub fn gone(&mut self, agent: &str) {
        let held = self.leases.remove(agent).is_some();
        self.sent.remove(agent);
        if self.pending.as_deref() == Some(agent) {
            self.pending = None;
        }
        self.successor_now |= held;
    }

    /// When `agent`'s lease runs out for the broker, if it holds one.
    pub fn lease_expires_at_ms(&self, agent: &str) -> Option<u64> {
        self.leases.get(agent).copied()
    }

    /// Whether an operator turned `agent` off and not on again.
    pub fn is_excluded(&self, agent: &str) -> bool {
        self.excluded.contains(agent)
    }

    /// Whether `agent` was told to turn on and did not.
    pub fn is_unresponsive(&self, agent: &str) -> bool {
        self.unresponsive.contains(agent)
    }

    /// The agent chosen to be Scheduler once the others are off.
    pub fn pending(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Since when no Scheduler was seen, while case 1 waits.
    pub fn no_scheduler_since_ms(&self) -> Option<u64> {
        self.no_scheduler_since_ms
    }

    fn lease_live(&self, id: &str) -> bool {
        self.leases.contains_key(id)
    }

    fn told(&self, id: &str) -> Option<Told> {
        self.sent.get(id).map(|s| s.told)
    }

    fn candidate(&self, a: &AgentView) -> bool {
        a.controlled && !self.excluded.contains(&a.id)
    }

    /// A candidate that is or is becoming the Scheduler, and is not being turned off.
    fn holds(&self, a: &AgentView) -> bool {
        self.candidate(a)
            && (a.reported_on || self.lease_live(&a.id))
            && self.told(&a.id) != Some(Told::Off)
    }

    /// A spare the role may move to in cases 2 and 5.
    fn good_spare(&self, a: &AgentView) -> bool {
        self.candidate(a) && !a.switch_condition_met && !self.unresponsive.contains(&a.id)
    }

    /// Records a command to `agent` and returns it. Turning on or renewing
    /// grants a fresh lease and ends a hand-over to `agent`.
    fn command(&mut self, config: &ElectionConfig, agent: &str, told: Told, now_ms: u64) -> Action {
        let (command, agent) = (self.next_command, agent.to_string());
        self.next_command += 1;
        let sent = Sent {
            command,
            at: now_ms,
            told,
        };
        self.sent.insert(agent.clone(), sent);
        if told == Told::Off {
            return Action::TurnOff { agent, command };
        }
        let expires = now_ms.saturating_add(lease_total(config));
        self.leases.insert(agent.clone(), expires);
        if self.pending.as_ref() == Some(&agent) {
            self.pending = None;
        }
        let lease_ms = millis(config.lease);
        match told {
            Told::On { .. } => Action::TurnOn {
                agent,
                command,
                lease_ms,
            },
            Told::Held | Told::Off => Action::Renew {
                agent,
                command,
                lease_ms,
            },
        }
    }

    /// Whether a command like `told` should be sent (again) to `id`.
    fn due(&self, id: &str, told: Told, config: &ElectionConfig, now_ms: u64) -> bool {
        let same = |t: Told| std::mem::discriminant(&t) == std::mem::discriminant(&told);
        !self.sent.get(id).is_some_and(|s| {
            same(s.told) && now_ms < s.at.saturating_add(millis(config.answer_timeout))
        })
    }
}

/// Who should be Scheduler after this round.
#[derive(Clone, Copy)]
enum Target<'a> {
    Agent(&'a AgentView),
    /// Waiting (case 1) or no candidate.
    Nobody,
    /// An agent outside broker control is on.
    Uncontrolled,
}

/// One round of the election: `agents` are the connected agents (unique
/// ids), `request` the operator's request since the last round. Call it on
/// every heartbeat, answer and request, and periodically.
pub fn decide(
    config: &ElectionConfig,
    state: &mut ElectionState,
    agents: &[AgentView],
    request: &Request,
    now_ms: u64,
) -> Vec<Action> {
    let view = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut round = Round {
        config,
        state,
        view,
        now_ms,
        out: Vec::new(),
    };
    round.tidy();
    let skip_wait = round.apply(request) | std::mem::take(&mut round.state.successor_now);
    let target = round.target(skip_wait);
    round.enforce(target);
    round.out
}

struct Round<'a, 's> {
    config: &'a ElectionConfig,
    state: &'s mut ElectionState,
    view: BTreeMap<&'a str, &'a AgentView>,
    now_ms: u64,
    out: Vec<Action>,
}

impl<'a> Round<'a, '_> {
    fn reported_on(&self, id: &str) -> bool {
        self.view.get(id).is_some_and(|a| a.reported_on)
    }

    fn may_be_on(&self, id: &str) -> bool {
        self.reported_on(id) || self.state.lease_live(id)
    }

    fn send(&mut self, agent: &str, told: Told) {
        let action = self.state.command(self.config, agent, told, self.now_ms);
        self.out.push(action);
    }

    /// Forgets what has run its course and gives up on agents that did not
    /// take the role within one lease.
    fn tidy(&mut self) {
        let now_ms = self.now_ms;
        self.state.leases.retain(|_, expires| *expires > now_ms);
        let (view, state) = (&self.view, &mut *self.state);
        let reported_on = |id: &str| view.get(id).is_some_and(|a| a.reported_on);
        let leases = &state.leases;
        state
            .sent
            .retain(|id, _| reported_on(id) || leases.contains_key(id));
        let give_up_at = |first_ms: u64| first_ms.saturating_add(millis(self.config.lease));
        let mut given_up = Vec::new();
        for (id, sent) in state.sent.iter_mut() {
            match sent.told {
                Told::On { .. } if reported_on(id) => sent.told = Told::Held,
                Told::On { first_ms } if now_ms >= give_up_at(first_ms) => {
                    given_up.push(id.clone())
                }
                _ => {}
            }
        }
        for a in view.values().filter(|a| a.reported_on) {
            state.unresponsive.remove(&a.id);
        }
        for id in given_up {
            self.send(&id, Told::Off);
            self.state.unresponsive.insert(id);
        }
    }

    /// Applies an operator's request; returns whether a successor may be
    /// chosen at once (case 5).
    fn apply(&mut self, request: &Request) -> bool {
        let (id, turn_on) = match request {
            Request::None => return false,
            Request::On(id) => (id, true),
            Request::Off(id) => (id, false),
        };
        let uncontrolled_on = self.view.values().find(|a| !a.controlled && a.reported_on);
        let reason = match self.view.get(id.as_str()) {
            Some(a) if !a.controlled => Some(Rejection::NotControlled),
            None if turn_on || !self.state.lease_live(id) => Some(Rejection::NotConnected),
            _ if turn_on => uncontrolled_on.map(|u| Rejection::UncontrolledScheduler {
                agent: u.id.clone(),
            }),
            _ => None,
        };
        if let Some(reason) = reason {
            let agent = id.clone();
            self.out.push(Action::Reject { agent, reason });
            return false;
        }
        let state = &mut *self.state;
        if turn_on {
            state.excluded.remove(id);
            state.unresponsive.remove(id);
            state.pending = Some(id.clone());
        } else {
            state.excluded.insert(id.clone());
            if state.pending.as_ref() == Some(id) {
                state.pending = None;
            }
        }
        !turn_on
    }

    /// Cases 1, 2, 3 and 5: who should be Scheduler.
    fn target(&mut self, skip_wait: bool) -> Target<'a> {
        let view = &self.view;
        let state = &mut *self.state;
        if view.values().any(|a| !a.controlled && a.reported_on) {
            state.pending = None;
            state.no_scheduler_since_ms = None;
            return Target::Uncontrolled;
        }
        if let Some(id) = state.pending.clone() {
            match view.get(id.as_str()) {
                Some(a) if state.candidate(a) => {
                    state.no_scheduler_since_ms = None;
                    return Target::Agent(a);
                }
                _ => state.pending = None,
            }
        }
        let holders = view.values().copied().filter(|a| state.holds(a));
        if let Some(keep) = best(state, holders) {
            state.no_scheduler_since_ms = None;
            if keep.switch_condition_met {
                let spares = view.values().copied();
                let spares = spares.filter(|a| state.good_spare(a) && !state.holds(a));
                if let Some(spare) = best(state, spares) {
                    state.pending = Some(spare.id.clone());
                    return Target::Agent(spare);
                }
            }
            return Target::Agent(keep);
        }
        if self.now_ms < state.quiet_until_ms {
            state.no_scheduler_since_ms.get_or_insert(self.now_ms);
            return Target::Nobody;
        }
        let spares = view
            .values()
            .copied()
            .filter(|a| skip_wait && state.good_spare(a));
        let elected = best(state, spares).or_else(|| {
            let since = *state.no_scheduler_since_ms.get_or_insert(self.now_ms);
            let waited =
                self.now_ms.saturating_sub(since) >= millis(self.config.connection_timeout);
            best(
                state,
                view.values()
                    .copied()
                    .filter(|a| waited && state.candidate(a)),
            )
        });
        let Some(a) = elected else {
            return Target::Nobody;
        };
        state.pending = Some(a.id.clone());
        state.no_scheduler_since_ms = None;
        Target::Agent(a)
    }

    /// Sends what makes the target the only Scheduler, as far as is safe now.
    fn enforce(&mut self, target: Target<'a>) {
        let target_id = match target {
            Target::Agent(a) => Some(a.id.as_str()),
            Target::Nobody | Target::Uncontrolled => None,
        };
        let others: BTreeSet<String> = (self.view.keys().map(|id| id.to_string()))
            .chain(self.state.leases.keys().cloned())
            .filter(|id| Some(id.as_str()) != target_id)
            .collect();
        for id in &others {
            let connected = self.view.get(id.as_str()).copied();
            // An agent outside broker control is left alone, unless it holds
            // a lease from before it left: that grant is revoked.
            let uncontrolled = connected.is_some_and(|a| !a.controlled);
            if (uncontrolled && !self.state.lease_live(id)) || !self.may_be_on(id) {
                continue;
            }
            // While case 1 waits, a Scheduler that went silent may come back.
            let revoked = self.state.told(id) == Some(Told::Off);
            let waiting = matches!(target, Target::Nobody);
            let wanted = revoked || connected.is_some() || !waiting;
            if wanted && self.state.due(id, Told::Off, self.config, self.now_ms) {
                self.send(id, Told::Off);
            }
        }
        let Target::Agent(t) = target else {
            return;
        };
        if t.reported_on {
            // Renewed when half the lease the agent counts is left.
            let left = millis(self.config.lease_grace) + millis(self.config.lease) / 2;
            let renew_at = self.state.leases.get(&t.id).map(|e| e.saturating_sub(left));
            let held = self.state.told(&t.id) == Some(Told::Held);
            if !held || renew_at.is_none_or(|at| self.now_ms >= at) {
                self.send(&t.id, Told::Held);
            }
            if self.state.pending.as_ref() == Some(&t.id) {
                self.state.pending = None;
            }
            return;
        }
        let first_ms = match self.state.told(&t.id) {
            Some(Told::On { first_ms }) => first_ms,
            _ => self.now_ms,
        };
        let on = Told::On { first_ms };
        let safe = !others.iter().any(|id| self.may_be_on(id));
        let quiet = self.now_ms < self.state.quiet_until_ms;
        if safe && !quiet && self.state.due(&t.id, on, self.config, self.now_ms) {
            self.send(&t.id, on);
        }
    }
}

/// Ranking: responsive first, then switch condition not met, then health,
/// then the smallest id.
fn best<'a>(
    state: &ElectionState,
    agents: impl Iterator<Item = &'a AgentView>,
) -> Option<&'a AgentView> {
    agents.max_by_key(|a| {
        let responsive = !state.unresponsive.contains(&a.id);
        (
            responsive,
            !a.switch_condition_met,
            a.health,
            Reverse(a.id.as_str()),
        )
    })
}

/// How long the broker counts a fresh lease as running.
fn lease_total(config: &ElectionConfig) -> u64 {
    millis(config.lease).saturating_add(millis(config.lease_grace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthLevel::*;

    /// After the quiet time of a broker started at 0 with default timings.
    pub(super) const T0: u64 = 100_000;

    fn cfg() -> ElectionConfig {
        ElectionConfig::default()
    }

    fn fresh() -> ElectionState {
        ElectionState::new(0, &cfg())
    }

    pub(super) fn a(id: &str, health: HealthLevel) -> AgentView {
        AgentView {
            id: id.into(),
            controlled: true,
            reported_on: false,
            health,
            switch_condition_met: false,
        }
    }

    pub(super) fn on(mut v: AgentView) -> AgentView {
        v.reported_on = true;
        v
    }

    fn off(mut v: AgentView) -> AgentView {
        v.reported_on = false;
        v
    }

    fn met(mut v: AgentView) -> AgentView {
        v.switch_condition_met = true;
        v
    }

    fn uncontrolled(mut v: AgentView) -> AgentView {
        v.controlled = false;
        v
    }

    fn run(s: &mut ElectionState, agents: &[AgentView], now: u64) -> Vec<Action> {
        decide(&cfg(), s, agents, &Request::None, now)
    }

    fn ask(s: &mut ElectionState, agents: &[AgentView], r: Request, now: u64) -> Vec<Action> {
        decide(&cfg(), s, agents, &r, now)
    }

    pub(super) fn turned_on(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|x| match x {
                Action::TurnOn { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn turned_off(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|x| match x {
                Action::TurnOff { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn renewed(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|x| match x {
                Action::Renew { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect()
    }

    fn off_command(actions: &[Action], id: &str) -> CommandId {
        actions
            .iter()
            .find_map(|x| match x {
                Action::TurnOff { agent, command } if agent == id => Some(*command),
                _ => None,
            })
            .expect("a TurnOff")
    }

    fn rejection(actions: &[Action]) -> Option<&Rejection> {
        actions.iter().find_map(|x| match x {
            Action::Reject { reason, .. } => Some(reason),
            _ => None,
        })
    }

    /// A state where `id` holds a fresh lease and reports on at `now`.
    fn with_scheduler(agents: &[AgentView], id: &str, now: u64) -> ElectionState {
        let mut s = fresh();
        let acts = run(&mut s, agents, now);
        assert_eq!(renewed(&acts), [id]);
        s
    }

    #[test]
    fn config_defaults_and_humantime() {
        let c: ElectionConfig = toml::from_str("connection_timeout = \"15s\"\n").expect("parse");
        assert_eq!(c.connection_timeout, Duration::from_secs(15));
        assert_eq!(c.answer_timeout, Duration::from_secs(5));
        assert_eq!(cfg().connection_timeout, Duration::from_secs(2));
        assert!(toml::from_str::<ElectionConfig>("timeout = \"1s\"\n").is_err());
    }

    #[test]
    fn a_scheduler_known_gone_is_replaced_at_once() {
        let agents = [on(a("a", Excellent)), a("b", Good), a("c", Ok)];
        let mut s = with_scheduler(&agents, "a", T0);
        // While it is only silent, its lease holds the others back.
        let rest = [a("b", Good), a("c", Ok)];
        assert!(turned_on(&run(&mut s, &rest, T0 + 100)).is_empty());
        s.gone("a");
        assert_eq!(s.lease_expires_at_ms("a"), None);
        assert_eq!(turned_on(&run(&mut s, &rest, T0 + 200)), ["b"]);
        // A spare known gone changes nothing: no lease, no hurry.
        let mut s = with_scheduler(&agents, "a", T0);
        s.gone("c");
        let acts = run(&mut s, &[on(a("a", Excellent)), a("b", Good)], T0 + 100);
        assert!(turned_on(&acts).is_empty(), "{acts:?}");
    }

    // Case 1: no Scheduler.

    #[test]
    fn case1_waits_the_connection_timeout_then_turns_on_the_healthiest() {
        let agents = [a("b", Good), a("c", Excellent), a("a", Ok)];
        let mut s = fresh();
        assert!(run(&mut s, &agents, T0).is_empty());
        assert_eq!(s.no_scheduler_since_ms(), Some(T0));
        assert!(run(&mut s, &agents, T0 + 1_999).is_empty());
        let acts = run(&mut s, &agents, T0 + 2_000);
        assert_eq!(
            acts,
            [Action::TurnOn {
                agent: "c".into(),
                command: 1,
                lease_ms: 10_000
            }]
        );
        assert_eq!(s.lease_expires_at_ms("c"), Some(T0 + 14_000));
        assert_eq!(s.no_scheduler_since_ms(), None);
        // Not asked again while the answer may still come.
        assert!(run(&mut s, &agents, T0 + 3_000).is_empty());
        let agents = [a("b", Good), on(a("c", Excellent)), a("a", Ok)];
        assert_eq!(renewed(&run(&mut s, &agents, T0 + 9_000)), ["c"]);
    }

    #[test]
    fn case1_prefers_an_agent_not_meeting_the_switch_condition() {
        let agents = [met(a("c", Excellent)), a("b", Bad), met(a("a", Good))];
        let mut s = fresh();
        run(&mut s, &agents, T0);
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["b"]);
    }

    #[test]
    fn case1_falls_back_to_the_best_when_every_agent_meets_the_condition() {
        let agents = [met(a("c", Bad)), met(a("b", Ok))];
        let mut s = fresh();
        run(&mut s, &agents, T0);
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["b"]);
    }

    #[test]
    fn case1_breaks_health_ties_by_the_smallest_id() {
        let agents = [a("c", Good), a("a", Good), a("b", Good)];
        let mut s = fresh();
        run(&mut s, &agents, T0);
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["a"]);
    }

    #[test]
    fn case1_never_turns_on_an_uncontrolled_agent() {
        let agents = [uncontrolled(a("a", Excellent)), uncontrolled(a("b", Good))];
        let mut s = fresh();
        for t in (T0..T0 + 60_000).step_by(1_000) {
            assert!(run(&mut s, &agents, t).is_empty());
        }
        // No Scheduler for long: a controlled agent that joins is elected at once.
        let agents = [uncontrolled(a("a", Excellent)), a("z", VeryBad)];
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 60_000)), ["z"]);
    }

    #[test]
    fn case1_a_scheduler_reporting_within_the_timeout_keeps_the_role() {
        let mut s = fresh();
        assert!(run(&mut s, &[a("a", Bad), a("b", Excellent)], T0).is_empty());
        let agents = [on(a("a", Bad)), a("b", Excellent)];
        assert_eq!(run(&mut s, &agents, T0 + 1_500).len(), 1, "a renewal");
        for t in (T0 + 2_000..T0 + 30_000).step_by(500) {
            let acts = run(&mut s, &agents, t);
            assert!(turned_on(&acts).is_empty() && turned_off(&acts).is_empty());
        }
    }

    #[test]
    fn case1_a_silent_scheduler_is_replaced_only_after_its_lease() {
        let mut s = with_scheduler(&[on(a("a", Good)), a("b", Ok)], "a", T0);
        // a falls silent: the registry drops it.
        let agents = [a("b", Ok)];
        assert!(
            run(&mut s, &agents, T0 + 3_000).is_empty(),
            "not revoked while waiting"
        );
        let acts = run(&mut s, &agents, T0 + 5_000);
        assert_eq!(turned_off(&acts), ["a"]);
        assert!(turned_on(&acts).is_empty());
        assert_eq!(s.pending(), Some("b"));
        assert!(turned_on(&run(&mut s, &agents, T0 + 11_999)).is_empty());
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 12_000)), ["b"]);
    }

    #[test]
    fn case1_a_new_broker_grants_nothing_for_one_lease_and_grace() {
        let agents = [a("a", Good)];
        let mut s = ElectionState::new(1_000, &cfg());
        assert!(run(&mut s, &agents, 1_000).is_empty());
        assert!(run(&mut s, &agents, 5_000).is_empty());
        assert_eq!(s.pending(), None, "chosen once the quiet time is over");
        assert!(run(&mut s, &agents, 12_999).is_empty());
        assert_eq!(turned_on(&run(&mut s, &agents, 13_000)), ["a"]);
    }

    #[test]
    fn case1_the_wait_restarts_after_a_scheduler_was_seen() {
        let mut s = fresh();
        run(&mut s, &[a("a", Good), a("b", Good)], T0);
        run(&mut s, &[on(a("a", Good)), a("b", Good)], T0 + 1_000);
        assert_eq!(s.no_scheduler_since_ms(), None);
        // a leaves; the wait starts again from when it was missed.
        assert!(run(&mut s, &[a("b", Good)], T0 + 1_500).is_empty());
        assert_eq!(s.no_scheduler_since_ms(), Some(T0 + 1_500));
        assert!(turned_on(&run(&mut s, &[a("b", Good)], T0 + 3_499)).is_empty());
        assert_eq!(turned_off(&run(&mut s, &[a("b", Good)], T0 + 3_500)), ["a"]);
    }

    #[test]
    fn a_scheduler_that_drops_the_role_by_itself_is_asked_to_take_it_again() {
        let agents = [on(a("a", Good)), a("b", Excellent)];
        let mut s = with_scheduler(&agents, "a", T0);
        let agents = [a("a", Good), a("b", Excellent)];
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_000)), ["a"]);
    }

    // Case 2: the Scheduler meets its switch condition.

    #[test]
    fn case2_turns_the_old_scheduler_off_first_and_the_spare_on_after_its_answer() {
        let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok), a("q", Bad)], "s", T0);
        let agents = [met(on(a("s", VeryBad))), a("p", Ok), a("q", Bad)];
        let acts = run(&mut s, &agents, T0 + 1_000);
        assert_eq!(turned_off(&acts), ["s"]);
        assert!(turned_on(&acts).is_empty());
        assert_eq!(s.pending(), Some("p"));
        let command = off_command(&acts, "s");
        assert!(
            run(&mut s, &agents, T0 + 1_100).is_empty(),
            "s still reports on"
        );
        assert!(s.off_confirmed("s", command));
        assert!(
            run(&mut s, &agents, T0 + 1_200).is_empty(),
            "s still reports on"
        );
        let agents = [met(a("s", VeryBad)), a("p", Ok), a("q", Bad)];
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_300)), ["p"]);
        assert_eq!(s.pending(), None);
        let agents = [met(a("s", VeryBad)), on(a("p", Ok)), a("q", Bad)];
        assert!(run(&mut s, &agents, T0 + 1_400).is_empty());
        assert_eq!(renewed(&run(&mut s, &agents, T0 + 6_300)), ["p"]);
    }

    #[test]
    fn case2_without_an_answer_the_hand_over_waits_for_the_lease() {
        let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok)], "s", T0);
        let agents = [met(on(a("s", VeryBad))), a("p", Ok)];
        assert_eq!(turned_off(&run(&mut s, &agents, T0 + 1_000)), ["s"]);
        let gone = [a("p", Ok)];
        assert!(run(&mut s, &gone, T0 + 2_000).is_empty());
        assert_eq!(
            turned_off(&run(&mut s, &gone, T0 + 6_000)),
            ["s"],
            "asked again"
        );
        assert!(turned_on(&run(&mut s, &gone, T0 + 11_999)).is_empty());
        assert_eq!(turned_on(&run(&mut s, &gone, T0 + 12_000)), ["p"]);
    }

    #[test]
    fn case2_keeps_the_scheduler_when_no_spare_is_fit() {
        let spares = [
            vec![],
            vec![met(a("p", Excellent))],
            vec![uncontrolled(a("p", Excellent))],
        ];
        for others in spares {
            let mut agents = vec![on(a("s", Good))];
            agents.extend(others.iter().cloned());
            let mut s = with_scheduler(&agents, "s", T0);
            agents[0] = met(on(a("s", VeryBad)));
            for t in (T0 + 1_000..T0 + 60_000).step_by(1_000) {
                let acts = run(&mut s, &agents, t);
                assert!(turned_off(&acts).is_empty() && turned_on(&acts).is_empty());
            }
            assert_eq!(s.pending(), None);
        }
    }

    #[test]
    fn case2_skips_a_spare_an_operator_turned_off() {
        let agents = [on(a("s", Good)), a("p", Excellent), a("q", Ok)];
        let mut s = with_scheduler(&agents, "s", T0);
        ask(&mut s, &agents, Request::Off("p".into()), T0 + 100);
        let agents = [met(on(a("s", VeryBad))), a("p", Excellent), a("q", Ok)];
        run(&mut s, &agents, T0 + 1_000);
        assert_eq!(s.pending(), Some("q"));
    }

    #[test]
    fn a_late_answer_to_an_older_command_does_not_count() {
        let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok)], "s", T0);
        let agents = [met(on(a("s", VeryBad))), a("p", Ok)];
        let first = off_command(&run(&mut s, &agents, T0 + 1_000), "s");
        let second = off_command(&run(&mut s, &agents, T0 + 6_000), "s");
        assert!(!s.off_confirmed("s", first));
        assert!(!s.off_confirmed("p", second));
        assert_eq!(s.lease_expires_at_ms("s"), Some(T0 + 12_000));
        assert!(s.off_confirmed("s", second));
        assert_eq!(s.lease_expires_at_ms("s"), None);
    }

    // Case 3: several Schedulers.

    #[test]
    fn case3_keeps_the_one_not_meeting_the_condition() {
        let agents = [met(on(a("a", Excellent))), on(a("b", Bad))];
        let mut s = fresh();
        let acts = run(&mut s, &agents, T0);
        assert_eq!(turned_off(&acts), ["a"]);
        assert_eq!(renewed(&acts), ["b"]);
        assert!(turned_on(&acts).is_empty());
    }

    #[test]
    fn case3_keeps_the_healthier_then_the_smaller_id() {
        let agents = [on(a("a", Ok)), on(a("b", Good)), on(a("c", Good))];
        let mut s = fresh();
        let acts = run(&mut s, &agents, T0);
        assert_eq!(turned_off(&acts), ["a", "c"]);
        assert_eq!(renewed(&acts), ["b"]);
        // The losers are not taken back while their reports lag.
        let acts = run(&mut s, &agents, T0 + 1_000);
        assert!(acts.is_empty(), "{acts:?}");
    }

    #[test]
    fn case3_an_uncontrolled_scheduler_turns_the_controlled_ones_off() {
        let agents = [uncontrolled(on(a("u", VeryBad))), on(a("a", Excellent))];
        let mut s = fresh();
        let acts = run(&mut s, &agents, T0);
        assert_eq!(acts.len(), 1);
        assert_eq!(turned_off(&acts), ["a"]);
        let agents = [uncontrolled(on(a("u", VeryBad))), a("a", Excellent)];
        for t in (T0 + 1_000..T0 + 60_000).step_by(1_000) {
            assert!(turned_on(&run(&mut s, &agents, t)).is_empty());
        }
        let acts = ask(&mut s, &agents, Request::On("a".into()), T0 + 60_000);
        assert_eq!(
            rejection(&acts),
            Some(&Rejection::UncontrolledScheduler { agent: "u".into() })
        );
    }

    // Case 4: scheduler on X.

    #[test]
    fn case4_turns_the_current_scheduler_off_then_the_chosen_one_on() {
        let agents = [on(a("s", Excellent)), a("x", Bad)];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 1_000);
        assert_eq!(turned_off(&acts), ["s"]);
        assert!(turned_on(&acts).is_empty());
        assert!(s.off_confirmed("s", off_command(&acts, "s")));
        let agents = [a("s", Excellent), a("x", Bad)];
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_100)), ["x"]);
        let agents = [a("s", Excellent), on(a("x", Bad))];
        for t in (T0 + 1_200..T0 + 60_000).step_by(500) {
            let acts = run(&mut s, &agents, t);
            assert!(turned_on(&acts).is_empty() && turned_off(&acts).is_empty());
        }
    }

    #[test]
    fn case4_an_unanswering_scheduler_is_asked_again_and_nobody_is_turned_on_beside_it() {
        let agents = [on(a("s", Excellent)), a("x", Bad)];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 1_000);
        assert_eq!(turned_off(&acts), ["s"]);
        let mut asked = 1;
        for t in (T0 + 1_500..T0 + 60_000).step_by(500) {
            let acts = run(&mut s, &agents, t);
            assert!(turned_on(&acts).is_empty());
            asked += turned_off(&acts).len();
        }
        assert_eq!(asked, 12, "once per answer timeout");
    }

    #[test]
    fn case4_rejects_unknown_and_uncontrolled_agents() {
        let agents = [on(a("s", Good)), uncontrolled(a("u", Excellent))];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::On("nope".into()), T0 + 1);
        assert_eq!(rejection(&acts), Some(&Rejection::NotConnected));
        let acts = ask(&mut s, &agents, Request::On("u".into()), T0 + 2);
        assert_eq!(rejection(&acts), Some(&Rejection::NotControlled));
        assert!(turned_off(&acts).is_empty());
        let acts = ask(&mut s, &agents, Request::Off("u".into()), T0 + 3);
        assert_eq!(rejection(&acts), Some(&Rejection::NotControlled));
        let acts = ask(&mut s, &agents, Request::Off("nope".into()), T0 + 4);
        assert_eq!(rejection(&acts), Some(&Rejection::NotConnected));
    }

    #[test]
    fn case4_on_the_current_scheduler_changes_nothing() {
        let agents = [on(a("s", Bad)), a("x", Excellent)];
        let mut s = with_scheduler(&agents, "s", T0);
        assert!(ask(&mut s, &agents, Request::On("s".into()), T0 + 1_000).is_empty());
        assert_eq!(s.pending(), None);
    }

    #[test]
    fn case4_brings_back_an_agent_an_operator_turned_off() {
        let agents = [a("x", Good)];
        let mut s = fresh();
        ask(&mut s, &agents, Request::Off("x".into()), T0);
        assert!(s.is_excluded("x"));
        assert!(run(&mut s, &agents, T0 + 10_000).is_empty());
        let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 20_000);
        assert_eq!(turned_on(&acts), ["x"]);
        assert!(!s.is_excluded("x"));
    }

    // Case 5: scheduler off X.

    #[test]
    fn case5_elects_a_successor_without_the_connection_timeout() {
        let agents = [on(a("s", Excellent)), a("p", Ok), met(a("q", Good))];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
        assert_eq!(turned_off(&acts), ["s"]);
        assert!(turned_on(&acts).is_empty());
        assert_eq!(s.pending(), Some("p"), "q meets the switch condition");
        assert!(s.off_confirmed("s", off_command(&acts, "s")));
        let agents = [a("s", Excellent), a("p", Ok), met(a("q", Good))];
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_001)), ["p"]);
    }

    #[test]
    fn case5_with_another_scheduler_left_nobody_is_elected() {
        let agents = [on(a("s", Excellent)), on(a("t", Ok)), a("p", Good)];
        let mut s = fresh();
        let acts = ask(&mut s, &agents, Request::Off("s".into()), T0);
        assert_eq!(turned_off(&acts), ["s"]);
        assert_eq!(renewed(&acts), ["t"]);
        assert!(turned_on(&acts).is_empty());
        assert_eq!(s.pending(), None);
    }

    #[test]
    fn case5_off_on_a_spare_leaves_the_scheduler_alone() {
        let agents = [on(a("s", Good)), a("p", Excellent)];
        let mut s = with_scheduler(&agents, "s", T0);
        assert!(ask(&mut s, &agents, Request::Off("p".into()), T0 + 1).is_empty());
        assert!(s.is_excluded("p"));
        let agents = [met(on(a("s", VeryBad))), a("p", Excellent)];
        assert!(run(&mut s, &agents, T0 + 2).is_empty(), "p is no spare now");
    }

    #[test]
    fn case5_the_only_candidate_stays_off_until_an_operator_turns_it_on() {
        let agents = [on(a("s", Good)), uncontrolled(a("u", Excellent))];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
        assert!(s.off_confirmed("s", off_command(&acts, "s")));
        let agents = [a("s", Good), uncontrolled(a("u", Excellent))];
        for t in (T0 + 2_000..T0 + 120_000).step_by(1_000) {
            assert!(run(&mut s, &agents, t).is_empty());
        }
        let acts = ask(&mut s, &agents, Request::On("s".into()), T0 + 120_000);
        assert_eq!(turned_on(&acts), ["s"]);
    }

    #[test]
    fn case5_with_only_unfit_spares_case1_elects_one_after_the_timeout() {
        let agents = [on(a("s", Good)), met(a("p", Bad))];
        let mut s = with_scheduler(&agents, "s", T0);
        let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
        assert_eq!(s.pending(), None);
        assert!(s.off_confirmed("s", off_command(&acts, "s")));
        let agents = [off(agents[0].clone()), met(a("p", Bad))];
        assert!(run(&mut s, &agents, T0 + 2_999).is_empty());
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 3_000)), ["p"]);
    }

    #[test]
    fn case5_off_on_a_pending_agent_cancels_the_hand_over() {
        let agents = [on(a("s", Good)), a("x", Ok)];
        let mut s = with_scheduler(&agents, "s", T0);
        ask(&mut s, &agents, Request::On("x".into()), T0 + 1);
        assert_eq!(s.pending(), Some("x"));
        let acts = ask(&mut s, &agents, Request::Off("x".into()), T0 + 2);
        assert_eq!(s.pending(), None);
        assert_eq!(renewed(&acts), ["s"], "s is the Scheduler again");
    }

    // Leases.

    #[test]
    fn the_scheduler_is_renewed_when_half_its_lease_is_left() {
        let agents = [on(a("s", Good))];
        let mut s = with_scheduler(&agents, "s", T0);
        assert!(run(&mut s, &agents, T0 + 4_999).is_empty());
        let acts = run(&mut s, &agents, T0 + 5_000);
        assert!(matches!(
            &acts[..],
            [Action::Renew {
                lease_ms: 10_000,
                ..
            }]
        ));
        assert_eq!(s.lease_expires_at_ms("s"), Some(T0 + 17_000));
    }

    #[test]
    fn an_agent_that_never_takes_the_role_is_given_up_and_ranked_last() {
        let agents = [a("p", Excellent), a("q", Bad)];
        let mut s = fresh();
        run(&mut s, &agents, T0);
        assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["p"]);
        assert!(run(&mut s, &agents, T0 + 6_999).is_empty());
        assert_eq!(
            turned_on(&run(&mut s, &agents, T0 + 7_000)),
            ["p"],
            "asked again"
        );
        let acts = run(&mut s, &agents, T0 + 12_000);
        assert_eq!(turned_off(&acts), ["p"]);
        assert!(s.is_unresponsive("p"));
        // p's lease from the second ask runs until T0 + 19_000.
        let mut first_on = None;
        for t in (T0 + 12_500..T0 + 30_000).step_by(500) {
            if let [x] = &turned_on(&run(&mut s, &agents, t))[..] {
                first_on.get_or_insert((t, x.to_string()));
            }
        }
        assert_eq!(first_on, Some((T0 + 19_000, "q".to_string())));
        // Reporting on clears the mark.
        run(&mut s, &[on(a("p", Excellent)), a("q", Bad)], T0 + 30_000);
        assert!(!s.is_unresponsive("p"));
    }

    #[test]
    fn a_spontaneous_scheduler_gets_a_lease() {
        let mut s = fresh();
        let acts = run(&mut s, &[on(a("a", Ok))], 0);
        assert_eq!(
            renewed(&acts),
            ["a"],
            "renewals are allowed in the quiet time"
        );
        assert_eq!(s.lease_expires_at_ms("a"), Some(12_000));
    }

    // Property tests.

    use crate::testing::Rng;

    const IDS: [&str; 4] = ["a", "b", "c", "d"];

    /// What must hold of every decision, given the state before it.
    fn check_decision(
        before: &ElectionState,
        after: &ElectionState,
        agents: &[AgentView],
        request: &Request,
        acts: &[Action],
        now: u64,
    ) {
        let ctx = || format!("at {now}: {agents:?} {request:?} -> {acts:?}");
        let find = |id: &str| agents.iter().find(|a| a.id == id);
        let ons = turned_on(acts);
        assert!(ons.len() <= 1, "{}", ctx());
        for x in ons {
            let v = find(x).expect("turned on while not connected");
            assert!(
                v.controlled && !v.reported_on && !after.is_excluded(x),
                "{}",
                ctx()
            );
            assert!(
                now >= before.quiet_until_ms,
                "turned on in the quiet time: {}",
                ctx()
            );
            for y in agents.iter().filter(|y| y.id != x) {
                assert!(!y.reported_on, "{} is on: {}", y.id, ctx());
            }
            for (y, expires) in before.leases.iter().filter(|(y, _)| *y != x) {
                assert!(*expires <= now, "{y} holds a lease: {}", ctx());
            }
        }
        for x in renewed(acts) {
            assert!(
                find(x).is_some_and(|v| v.controlled && v.reported_on),
                "{}",
                ctx()
            );
        }
        for x in turned_off(acts) {
            let leased = before.leases.get(x).is_some_and(|e| *e > now);
            assert!(find(x).is_none_or(|v| v.controlled) || leased, "{}", ctx());
        }
        if *request == Request::None {
            assert!(rejection(acts).is_none(), "{}", ctx());
        }
        // At most one agent is told to be on and holds a lease.
        let told_on = after
            .sent
            .iter()
            .filter(|(id, s)| s.told != Told::Off && after.leases.contains_key(*id))
            .count();
        assert!(told_on <= 1, "{:?} {}", after.sent, ctx());
    }

    #[test]
    fn decisions_on_random_views_never_turn_on_beside_a_possible_scheduler() {
        let mut turn_ons = 0;
        for seed in 0..300 {
            let mut rng = Rng::new(seed);
            let mut s = fresh();
            let mut world: Vec<(bool, AgentView)> = IDS
                .iter()
                .map(|id| (rng.percent(70), a(id, rng.pick(&HealthLevel::ALL))))
                .collect();
            let mut offs: Vec<(String, CommandId)> = Vec::new();
            let mut now = 0;
            for _ in 0..300 {
                now += rng.below(3_000);
                for (present, v) in world.iter_mut() {
                    if rng.percent(5) {
                        *present = !*present;
                    }
                    if rng.percent(8) {
                        v.reported_on = !v.reported_on;
                    }
                    if rng.percent(3) {
                        v.controlled = !v.controlled;
                    }
                    if rng.percent(10) {
                        v.health = rng.pick(&HealthLevel::ALL);
                    }
                    if rng.percent(5) {
                        v.switch_condition_met = !v.switch_condition_met;
                    }
                }
                if !offs.is_empty() && rng.percent(40) {
                    let (id, command) = offs.remove(rng.below(offs.len() as u64) as usize);
                    s.off_confirmed(&id, command);
                }
                let request = match rng.below(20) {
                    0 => Request::On(rng.pick(&IDS).into()),
                    1 => Request::Off(rng.pick(&IDS).into()),
                    _ => Request::None,
                };
                let agents: Vec<AgentView> = world
                    .iter()
                    .filter(|(p, _)| *p)
                    .map(|(_, v)| v.clone())
                    .collect();
                let before = s.clone();
                let acts = decide(&cfg(), &mut s, &agents, &request, now);
                check_decision(&before, &s, &agents, &request, &acts, now);
                for act in &acts {
                    match act {
                        Action::TurnOff { agent, command } => offs.push((agent.clone(), *command)),
                        Action::TurnOn { .. } => turn_ons += 1,
                        _ => {}
                    }
                }
            }
        }
        assert!(
            turn_ons > 1_000,
            "the fuzzing reached elections: {turn_ons}"
        );
    }

    /// A message in flight, delivered at a time.
    #[derive(Debug)]
    enum Msg {
        Command(Action),
        Heartbeat {
            on: bool,
            controlled: bool,
            level: HealthLevel,
        },
        OffAnswer(CommandId),
    }

    struct SimAgent {
        id: String,
        connected: bool,
        controlled: bool,
        on: bool,
        lease_until: u64,
        level: HealthLevel,
        next_heartbeat: u64,
        inbox: std::collections::VecDeque<(u64, Msg)>,
        outbox: std::collections::VecDeque<(u64, Msg)>,
    }

    struct Seen {
        last_ms: u64,
        controlled: bool,
        on: bool,
        history: crate::broker::health::HealthHistory,
    }

    const MAX_DELAY: u64 = 1_000;
    const REGISTRY_TIMEOUT: u64 = 3_000;

    struct Sim {
        rng: Rng,
        now: u64,
        loss: u64,
        agents: Vec<SimAgent>,
        registry: BTreeMap<String, Seen>,
        state: ElectionState,
        cond: crate::config::SwitchCondition,
        turn_ons: usize,
        offs: usize,
        /// Agents whose process crashed since the last step.
        crashed: Vec<String>,
        /// The broker died since the last step: a standby takes over.
        broker_died: bool,
        takeovers: usize,
        /// The Scheduler lease record in JetStream: holder and end. The
        /// broker writes it before sending a grant (here: at once).
        record: Option<(String, u64)>,
    }

    /// How long a new broker waits for the agents' first heartbeats.
    const SETTLE: Duration = Duration::from_millis(500);

    /// Queues `msg` behind what is already in flight on the same path, so a
    /// path delivers in order like one NATS connection.
    fn queue(
        rng: &mut Rng,
        q: &mut std::collections::VecDeque<(u64, Msg)>,
        now: u64,
        loss: u64,
        msg: Msg,
    ) {
        if rng.percent(loss) {
            return;
        }
        let at = (now + rng.below(MAX_DELAY)).max(q.back().map_or(0, |(t, _)| *t));
        q.push_back((at, msg));
    }

    impl Sim {
        fn new(seed: u64, n: usize) -> Self {
            let mut rng = Rng::new(seed);
            let agents = IDS[..n]
                .iter()
                .map(|id| SimAgent {
                    id: id.to_string(),
                    connected: true,
                    controlled: rng.percent(85),
                    on: false,
                    lease_until: 0,
                    level: rng.pick(&HealthLevel::ALL),
                    next_heartbeat: rng.below(1_000),
                    inbox: Default::default(),
                    outbox: Default::default(),
                })
                .collect();
            Sim {
                rng,
                now: 0,
                loss: 10,
                agents,
                registry: BTreeMap::new(),
                state: fresh(),
                cond: crate::config::SwitchCondition {
                    at_or_below: Bad,
                    for_: Duration::from_secs(5),
                },
                turn_ons: 0,
                offs: 0,
                crashed: Vec::new(),
                broker_died: false,
                takeovers: 0,
                record: None,
            }
        }

        /// A standby takes over from a dead broker: it knows no agent, the
        /// answers to its predecessor's commands are lost, and it reads the
        /// lease record (or fails to, one time in five).
        fn take_over(&mut self) {
            let known = match &self.record {
                _ if self.rng.percent(20) => Predecessor::Unknown,
                None => Predecessor::NoLease,
                Some((agent, until_ms)) => Predecessor::Granted {
                    agent: agent.clone(),
                    until_ms: *until_ms,
                },
            };
            self.state = ElectionState::taking_over(self.now, &cfg(), &known, SETTLE);
            self.registry.clear();
            for ag in &mut self.agents {
                ag.outbox.retain(|(_, m)| !matches!(m, Msg::OffAnswer(_)));
            }
            self.takeovers += 1;
        }

        /// The lease of `id` is over for the broker: its record goes.
        fn clear_record(&mut self, id: &str) {
            if self.record.as_ref().is_some_and(|(holder, _)| holder == id) {
                self.record = None;
            }
        }

        fn chaos(&mut self) -> Request {
            let rng = &mut self.rng;
            let i = rng.below(self.agents.len() as u64) as usize;
            let ag = &mut self.agents[i];
            match rng.below(100) {
                0..=2 => ag.connected = !ag.connected,
                3 => {
                    // A crash: the process restarts off, with nothing in
                    // flight, and the broker learns its process is gone (no
                    // responders on its connection's subjects).
                    ag.on = false;
                    ag.lease_until = 0;
                    ag.inbox.clear();
                    ag.outbox.clear();
                    self.crashed.push(ag.id.clone());
                }
                4..=8 => ag.level = rng.pick(&HealthLevel::ALL),
                9 => {
                    // Leaving broker control, the agent drops the role.
                    ag.controlled = !ag.controlled;
                    ag.on = false;
                }
                10..=11 => return Request::On(ag.id.clone()),
                12 => return Request::Off(ag.id.clone()),
                13 => self.broker_died = true,
                _ => {}
            }
            Request::None
        }

        fn step(&mut self, chaos: bool) {
            self.now += 50 + self.rng.below(600);
            let now = self.now;
            let request = if chaos { self.chaos() } else { Request::None };
            let lease_ms = millis(cfg().lease);
            for ag in &mut self.agents {
                if ag.on && now >= ag.lease_until {
                    ag.on = false;
                }
                while ag.inbox.front().is_some_and(|(t, _)| *t <= now) {
                    let Some((at, Msg::Command(cmd))) = ag.inbox.pop_front() else {
                        continue;
                    };
                    if !ag.connected || !ag.controlled {
                        continue;
                    }
                    match cmd {
                        Action::TurnOn { lease_ms, .. } => {
                            ag.on = true;
                            ag.lease_until = at + lease_ms;
                        }
                        Action::Renew { lease_ms, .. } if ag.on => ag.lease_until = at + lease_ms,
                        Action::TurnOff { command, .. } => {
                            ag.on = false;
                            let msg = Msg::OffAnswer(command);
                            queue(&mut self.rng, &mut ag.outbox, at, self.loss, msg);
                        }
                        _ => {}
                    }
                }
                debug_assert!(!ag.on || ag.lease_until <= now + lease_ms);
                if now >= ag.next_heartbeat {
                    ag.next_heartbeat = now + 700 + self.rng.below(600);
                    if ag.connected {
                        let msg = Msg::Heartbeat {
                            on: ag.on,
                            controlled: ag.controlled,
                            level: ag.level,
                        };
                        queue(&mut self.rng, &mut ag.outbox, now, self.loss, msg);
                    }
                }
                while ag.outbox.front().is_some_and(|(t, _)| *t <= now) {
                    let Some((at, msg)) = ag.outbox.pop_front() else {
                        continue;
                    };
                    if !ag.connected {
                        continue;
                    }
                    match msg {
                        Msg::Heartbeat {
                            on,
                            controlled,
                            level,
                        } => {
                            let seen = self.registry.entry(ag.id.clone()).or_insert(Seen {
                                last_ms: at,
                                controlled,
                                on,
                                history: Default::default(),
                            });
                            seen.last_ms = at;
                            seen.controlled = controlled;
                            seen.on = on;
                            seen.history.record(at, level);
                        }
                        Msg::OffAnswer(command) => {
                            let confirmed = self.state.off_confirmed(&ag.id, command);
                            let recorded = self.record.as_ref().map(|(holder, _)| holder);
                            if confirmed && recorded == Some(&ag.id) {
                                self.record = None;
                            }
                        }
                        Msg::Command(_) => {}
                    }
                }
            }
            for id in std::mem::take(&mut self.crashed) {
                self.state.gone(&id);
                self.clear_record(&id);
                self.registry.remove(&id);
            }
            if std::mem::take(&mut self.broker_died) {
                self.take_over();
            }
            self.registry
                .retain(|_, seen| now.saturating_sub(seen.last_ms) <= REGISTRY_TIMEOUT);
            let views: Vec<AgentView> = self
                .registry
                .iter()
                .map(|(id, seen)| AgentView {
                    id: id.clone(),
                    controlled: seen.controlled,
                    reported_on: seen.on,
                    health: seen.history.latest().unwrap_or(VeryBad),
                    switch_condition_met: seen.history.condition_met(&self.cond, now),
                })
                .collect();
            let before = self.state.clone();
            let acts = decide(&cfg(), &mut self.state, &views, &request, now);
            check_decision(&before, &self.state, &views, &request, &acts, now);
            for act in acts {
                if let Action::TurnOn { agent, .. } | Action::Renew { agent, .. } = &act {
                    if let Action::TurnOn { .. } = &act {
                        let other_live = self
                            .record
                            .as_ref()
                            .is_some_and(|(holder, until)| holder != agent && *until > now);
                        assert!(!other_live, "{agent} turned on beside {:?}", self.record);
                    }
                    let until = self.state.lease_expires_at_ms(agent).expect("granted");
                    self.record = Some((agent.clone(), until));
                }
                let to = match &act {
                    Action::TurnOn { agent, .. } => {
                        self.turn_ons += 1;
                        agent
                    }
                    Action::TurnOff { agent, .. } => {
                        self.offs += 1;
                        agent
                    }
                    Action::Renew { agent, .. } => agent,
                    Action::Reject { .. } => continue,
                };
                if let Some(ag) = self.agents.iter_mut().find(|ag| &ag.id == to) {
                    if ag.connected {
                        queue(
                            &mut self.rng,
                            &mut ag.inbox,
                            now,
                            self.loss,
                            Msg::Command(act),
                        );
                    }
                }
            }
            let on: Vec<&str> = self
                .agents
                .iter()
                .filter(|ag| ag.on)
                .map(|ag| ag.id.as_str())
                .collect();
            assert!(on.len() <= 1, "two Schedulers at {now}: {on:?}");
        }
    }

    #[test]
    fn simulated_cluster_never_has_two_schedulers_and_settles_on_one() {
        let (mut turn_ons, mut offs, mut settled_on, mut takeovers) = (0, 0, 0, 0);
        for seed in 0..300 {
            let n = 1 + (seed as usize % IDS.len());
            let mut sim = Sim::new(seed, n);
            for _ in 0..600 {
                sim.step(true);
            }
            // Calm: everyone reachable, nothing lost, nothing changes.
            sim.loss = 0;
            for ag in &mut sim.agents {
                ag.connected = true;
            }
            let calm_from = sim.now;
            while sim.now < calm_from + 90_000 {
                sim.step(false);
            }
            let eligible: Vec<&str> = sim
                .agents
                .iter()
                .filter(|ag| ag.controlled && !sim.state.is_excluded(&ag.id))
                .map(|ag| ag.id.as_str())
                .collect();
            let on: Vec<&str> = sim
                .agents
                .iter()
                .filter(|ag| ag.on)
                .map(|ag| ag.id.as_str())
                .collect();
            if eligible.is_empty() {
                assert!(on.is_empty(), "seed {seed}: {on:?}");
            } else {
                assert_eq!(on.len(), 1, "seed {seed}: no Scheduler among {eligible:?}");
                assert!(eligible.contains(&on[0]), "seed {seed}");
                assert!(sim.registry[on[0]].on, "seed {seed}: the broker sees it");
                settled_on += 1;
            }
            turn_ons += sim.turn_ons;
            offs += sim.offs;
            takeovers += sim.takeovers;
        }
        assert!(turn_ons > 600 && offs > 600, "{turn_ons} {offs}");
        assert!(takeovers > 600, "brokers took over: {takeovers}");
        assert!(settled_on > 150, "{settled_on}");
    }
}
