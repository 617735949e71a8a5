//! One round of the election ([`decide`]): the five cases worked through
//! against the agents' views, the operator's request and the leases held in
//! [`ElectionState`], giving the commands to send.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::{millis, Action, AgentView, ElectionConfig, ElectionState, Rejection, Request, Told};

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
