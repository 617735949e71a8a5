//! Subagents as the broker knows them: registrations, heartbeats, probes
//! and departures feed the registry. A subagent not heard as expected is
//! suspect (no new tasks); one silent for the subagent timeout is lost, its
//! tasks in doubt until its orphan timeout, unless its reaper certifies its
//! death first (`certificate.rs`). After a takeover, inherited tasks are
//! reconciled with the first heartbeat of their subagent (`inherited.rs`).
//!
//! Failure detection, step by step: subagents heartbeat every
//! `subagent.heartbeat_interval` (250 ms by default); the liveness tick
//! comes every `broker.check_interval` (100 ms). A heartbeat two intervals
//! late triggers a `ping` request. An answer clears any suspicion; no
//! responders, no answer, or a `run` nobody received makes the subagent
//! *suspect*: no new tasks, its running ones untouched (a live subagent
//! whose connection was reset, or that the server dropped as a slow
//! consumer, has no responders until it reconnects). Silence for the whole
//! `broker.subagent_timeout` makes it *lost*, still without proof of death:
//! its tasks are in doubt until its own orphan timeout and kill grace (as
//! it reported them) have passed since it was last heard, plus its
//! heartbeat interval (it checks at that pace), the broker's heartbeat
//! interval and a second of margin (`ORPHAN_MARGIN`). A `busy` refusal only
//! keeps it out of placement until its next heartbeat. A subagent heard
//! again under another process (`instance_id`) puts the earlier process's
//! tasks in doubt in the same way, unless the process heard runs them (two
//! processes with one id, until the newer one stops). Every change of a
//! subagent's state is published as `SubagentChanged`.
//!
//! Known limits: the subagent's orphan clock counts what it hears from the
//! broker, the broker's deadline what it hears from the subagent, so a loss
//! in one direction only (the subagent hears the broker, the broker not the
//! subagent) could outlast both; deadlines are wall-clock milliseconds; a
//! subagent and its reaper killed together on a live host leave what the
//! task started running; a subagent's own identity can certify its own
//! process.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::super::order_book::{Applied, OrderEvent, Phase};
use super::super::registry::{Check, Doubt, Seen, Sighting};
use super::{Core, Effect, Event, Probed, Refusal, Reply, ORPHAN_MARGIN};
use crate::config::Config;
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    pub(super) fn on_register(&mut self, to: R, r: Register) {
        if !subjects::is_valid_token(&r.subagent_id) {
            return self.refuse(&to, Refusal::BadSubagentId(r.subagent_id));
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
        let before = self.registry.get(&r.subagent_id).map(|s| s.state());
        let seen = self.registry.seen(sighting, self.now.at);
        info!(subagent = %r.subagent_id, capacity = r.capacity, host = ?r.hostname, "subagent registered");
        let subagent_id = r.subagent_id.clone();
        let registered = Registered {
            broker_id: self.id.clone(),
            heartbeat_interval_ms: self.config.broker.heartbeat_interval.as_millis() as u64,
            epoch: self.epoch,
        };
        self.reply(&to, Reply::Registered(registered));
        self.after_seen(&subagent_id, before, seen, None);
    }

    pub(in crate::broker) fn on_heartbeat(&mut self, hb: SubagentHeartbeat) {
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
        let seen = self.registry.seen(sighting, self.now.at);
        self.registry.note_refused(&hb.subagent_id, hb.refused);
        let after = self.registry.get(&hb.subagent_id).map(|s| s.state());
        if after == Some(SubagentState::Draining) && before != after {
            info!(subagent = %hb.subagent_id, "subagent draining");
            self.announce(
                &hb.subagent_id,
                SubagentState::Draining,
                "draining: stopping normally",
            );
        }
        self.after_seen(&hb.subagent_id, before, seen, Some(&hb.running));
    }

    /// Follows up on a sighting; `running`: the tasks it runs, when it said.
    /// `before`: its state before the sighting (`None`: unknown).
    fn after_seen(
        &mut self,
        id: &str,
        before: Option<SubagentState>,
        seen: Seen,
        running: Option<&[String]>,
    ) {
        self.on_sighting(id, running);
        let routine = seen == Seen::Alive;
        match seen {
            Seen::New => {
                self.honour_switch(id);
                info!(subagent = %id, "subagent joined");
                self.announce(id, SubagentState::Available, "joined");
            }
            Seen::Returned => {
                info!(subagent = %id, "lost subagent is back");
                let state = self
                    .registry
                    .get(id)
                    .map_or(SubagentState::Available, |s| s.state());
                self.announce(id, state, "back");
                self.reclaim(id, running);
            }
            Seen::Restarted { lost_tasks, doubt } => {
                if lost_tasks.is_empty() {
                    // (after its death certificate, say: nothing waits)
                    info!(subagent = %id, "another process of this subagent id; the earlier one left no task");
                } else {
                    warn!(subagent = %id, tasks = lost_tasks.len(), "another process of this subagent id; the earlier one's tasks wait for its death certificate or orphan timeout");
                }
                self.announce(id, SubagentState::Available, "restarted");
                self.lose_tasks(id, Some(doubt));
                // the one heard now may be the earlier one (two processes
                // with one id, until one of them stops): it keeps its tasks
                self.reclaim(id, running);
            }
            Seen::Alive if before == Some(SubagentState::Suspect) => {
                info!(subagent = %id, "suspect subagent heard again");
                let state = self
                    .registry
                    .get(id)
                    .map_or(SubagentState::Available, |s| s.state());
                self.announce(id, state, "heard again");
                // tasks put in doubt while it was suspect, which it runs
                self.reclaim(id, running);
            }
            // tasks put in doubt while it was out of sight, which it runs
            Seen::Alive if self.doubted.contains(id) => self.reclaim(id, running),
            Seen::Alive => {}
        }
        // a routine heartbeat of a subagent with no room (busy, draining,
        // disabled) changes no placement: no planning pass for it
        if !routine || self.registry.get(id).is_some_and(|s| s.takes_tasks()) {
            self.dispatch();
        }
    }

    /// Orders in doubt on `id` whose task the process heard now runs are
    /// running again, and occupy it. (Every heartbeat of a subagent with
    /// orders in doubt comes here, so a task it lists after it is heard
    /// again is never run a second time at the orphan deadline.)
    fn reclaim(&mut self, id: &str, running: Option<&[String]>) {
        let Some(running) = running.filter(|r| !r.is_empty()) else {
            return;
        };
        let mut in_doubt = false;
        for order_id in self.book.on_subagent(id) {
            let event = OrderEvent::SubagentReturned {
                subagent_id: id.to_string(),
                running: running.to_vec(),
            };
            match self.book.apply(&order_id, event) {
                Ok(Applied::Moved { .. }) => {
                    let task = self.book.get(&order_id).and_then(|o| o.task_id.clone());
                    if let Some(task) = task {
                        self.registry.assign(id, &task);
                    }
                }
                _ => {
                    let order = self.book.get(&order_id);
                    in_doubt |= order.is_some_and(|o| o.phase == Phase::Orphaned);
                }
            }
        }
        if !in_doubt {
            self.doubted.remove(id);
        }
    }

    /// Publishes a subagent's new state for anyone watching.
    pub(in crate::broker) fn announce(&mut self, id: &str, state: SubagentState, reason: &str) {
        let event = SubagentChanged {
            subagent_id: id.to_string(),
            state,
            reason: reason.to_string(),
            at_ms: self.now.ms,
        };
        self.publish(Event::Subagent(event));
    }

    /// A subagent is not heard as expected: no new tasks for it, and nothing
    /// more. Suspicion is not proof of death (a live subagent whose
    /// connection was dropped has no responders until it reconnects).
    pub(in crate::broker) fn suspect(&mut self, id: &str, why: &str) {
        if self.registry.suspect(id) {
            warn!(subagent = %id, "subagent suspect: {why}");
            self.announce(id, SubagentState::Suspect, &format!("suspect: {why}"));
        }
    }

    /// A subagent has been silent for the whole subagent timeout: lost, but
    /// not known dead; its tasks are in doubt until its orphan timeout.
    fn declare_unreachable(&mut self, id: &str) {
        let Some(tasks) = self.registry.declare_lost(id) else {
            return;
        };
        let how = "lost: silent, unreachable; its tasks run again only once it is proven dead";
        warn!(subagent = %id, tasks = tasks.len(), "subagent {how}");
        self.announce(id, SubagentState::Lost, how);
        let doubt = self.registry.get(id).map(|s| s.doubt());
        self.lose_tasks(id, doubt);
        self.dispatch();
    }

    /// The tasks placed on `id` are in doubt: they run again when its own
    /// orphan timeout and kill grace have passed since it was last heard
    /// (plus the interval it checks at, our heartbeat interval and a
    /// margin), or sooner on a death certificate. Unknown: as if heard now,
    /// with our own settings.
    pub(in crate::broker) fn lose_tasks(&mut self, id: &str, doubt: Option<Doubt>) {
        let orders = self.book.on_subagent(id);
        self.put_in_doubt(id, &orders, doubt);
    }

    /// `orders`, placed on `id`, are in doubt (see [`Broker::lose_tasks`]).
    pub(in crate::broker) fn put_in_doubt(
        &mut self,
        id: &str,
        orders: &[String],
        doubt: Option<Doubt>,
    ) {
        let now = self.now.at;
        let sub = &self.config.subagent;
        let doubt = doubt.unwrap_or(Doubt {
            last_seen: now,
            orphan_timeout: sub.orphan_timeout + sub.kill_grace,
            heartbeat_interval: sub.heartbeat_interval,
        });
        let silent = now.saturating_duration_since(doubt.last_seen);
        let last_seen_ms = self.now.ms.saturating_sub(silent.as_millis() as u64);
        let wait = doubt.orphan_timeout
            + doubt.heartbeat_interval
            + self.config.broker.heartbeat_interval
            + ORPHAN_MARGIN;
        for order_id in orders {
            // a run sent after it was last heard may still land (held up in
            // the server's buffer): its orphan timeout counts from then
            let sent_ms = (self.book.get(order_id))
                .filter(|o| o.phase == Phase::Dispatching)
                .and_then(|_| self.runs_sent.get(order_id).copied())
                .unwrap_or(0);
            let rerun_at_ms = last_seen_ms.max(sent_ms) + wait.as_millis() as u64;
            let event = OrderEvent::SubagentLost {
                subagent_id: id.to_string(),
                at_ms: self.now.ms,
                rerun_at_ms,
            };
            self.apply_and_act(order_id, event);
        }
        self.doubted.insert(id.to_string());
    }

    pub(in crate::broker) fn check_liveness(&mut self) {
        let timeout = self.config.broker.subagent_timeout;
        let every = self.config.broker.check_interval;
        let last = self.last_check.replace(self.now.at);
        if let Some(paused) = crate::broker::registry::paused_for(last, self.now.at, every) {
            info!(paused_ms = paused.as_millis() as u64, "the broker's thread was busy: subagents' silence meanwhile is not held against them");
            self.registry.forgive(paused, self.now.at);
        }
        for check in self.registry.check(self.now.at, timeout) {
            match check {
                Check::Probe(id) => self.probe(id),
                Check::Unreachable(id) => self.declare_unreachable(&id),
            }
        }
        let now = self.now.ms;
        let due = self.book.orphans_due(now);
        for order_id in &due {
            warn!(order = %order_id, "orphan timeout passed: the task is dead");
            self.apply_and_act(order_id, OrderEvent::OrphanDeadline { at_ms: now });
        }
        if !due.is_empty() {
            self.dispatch();
        }
        self.members_gone();
        self.store_started_due();
    }

    /// Asks a quiet subagent whether it lives. An answer clears suspicion;
    /// no responders or no answer makes it suspect, nothing more: a live
    /// subagent whose connection was dropped has no responders until it
    /// reconnects, and a busy one answers late.
    fn probe(&mut self, subagent_id: String) {
        self.emit(Effect::Probe { subagent_id });
    }

    pub(super) fn on_probed(&mut self, id: String, reply: Probed) {
        match reply {
            Probed::Answered(pong) => {
                let before = self.registry.get(&id).map(|s| s.state());
                if let Some(seen) = self.registry.touch(&id, &pong.instance_id, self.now.at) {
                    self.after_seen(&id, before, seen, Some(&pong.running));
                }
            }
            Probed::NoResponders => {
                self.suspect(&id, "heartbeats late and no responders to a probe")
            }
            Probed::Unanswered(e) => {
                debug!(subagent = %id, error = %e, "probe unanswered; it may be busy");
                self.suspect(&id, "heartbeats late and a probe unanswered")
            }
        }
    }

    pub(super) fn on_leave(&mut self, to: R, leave: Leave) {
        let Leave {
            subagent_id,
            instance_id,
        } = leave;
        if self.registry.remove(&subagent_id, &instance_id) {
            info!(subagent = %subagent_id, "subagent left normally");
            self.announce(&subagent_id, SubagentState::Left, "left: stopped normally");
        }
        self.remember_departed(&instance_id);
        self.reply(&to, Reply::Left(Left {}));
    }
}

fn interval_or(ms: u64, config: &Config) -> Duration {
    if ms == 0 {
        config.subagent.heartbeat_interval
    } else {
        Duration::from_millis(ms)
    }
}
