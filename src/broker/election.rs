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
//! Layout: here the vocabulary and [`ElectionState`] with its lease rules;
//! `round.rs` one round of [`decide`] (the five cases); `takeover.rs` where
//! a new broker starts from; `tests.rs` the unit and property tests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::health::{millis, HealthLevel};
use crate::config::SchedulerConfig;

mod firing;
mod round;
mod takeover;

pub use firing::{not_firing, Silent};
pub use round::decide;

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

    /// An operator turned `agent` off (under an earlier broker): it is
    /// not elected until turned on again.
    pub fn exclude(&mut self, agent: &str) {
        self.excluded.insert(agent.to_string());
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

/// How long the broker counts a fresh lease as running.
fn lease_total(config: &ElectionConfig) -> u64 {
    millis(config.lease).saturating_add(millis(config.lease_grace))
}

#[cfg(test)]
mod tests;
