//! Subagent liveness: registrations, heartbeats, probes and departures
//! feed the registry. A subagent not heard as expected is suspect (no new
//! tasks); one silent for the subagent timeout is lost, its tasks in doubt
//! until its orphan timeout, unless its reaper certifies its death first
//! (`death.rs`).

use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::order_book::{Applied, OrderEvent};
use super::registry::{Check, Doubt, Seen, Sighting};
use super::{Broker, ORPHAN_MARGIN, PROBE_TIMEOUT};
use crate::bus::{BusError, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

impl Broker {
    pub(super) fn on_register(&mut self, req: Request<Register>, ctx: &mut Context<Self>) {
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
        let before = self.registry.get(&r.subagent_id).map(|s| s.state());
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
        self.after_seen(&subagent_id, before, seen, None, ctx);
    }

    pub(super) fn on_heartbeat(&mut self, hb: SubagentHeartbeat, ctx: &mut Context<Self>) {
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
        self.after_seen(&hb.subagent_id, before, seen, Some(&hb.running), ctx);
    }

    /// Follows up on a sighting; `running`: the tasks it runs, when it said.
    /// `before`: its state before the sighting (`None`: unknown).
    fn after_seen(
        &mut self,
        id: &str,
        before: Option<SubagentState>,
        seen: Seen,
        running: Option<&[String]>,
        ctx: &mut Context<Self>,
    ) {
        self.on_sighting(id, running, ctx);
        match seen {
            Seen::New => {
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
                warn!(subagent = %id, tasks = lost_tasks.len(), "another process of this subagent id; the earlier one's tasks wait for its death certificate or orphan timeout");
                self.announce(id, SubagentState::Available, "restarted");
                self.lose_tasks(id, Some(doubt), ctx);
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
            }
            Seen::Alive => {}
        }
        self.dispatch(ctx);
    }

    /// Orders in doubt on `id` whose task the process heard now runs are
    /// running again, and occupy it.
    fn reclaim(&mut self, id: &str, running: Option<&[String]>) {
        let Some(running) = running.filter(|r| !r.is_empty()) else {
            return;
        };
        for order_id in self.book.on_subagent(id) {
            let event = OrderEvent::SubagentReturned {
                subagent_id: id.to_string(),
                running: running.to_vec(),
            };
            if let Ok(Applied::Moved { .. }) = self.book.apply(&order_id, event) {
                if let Some(task) = self.book.get(&order_id).and_then(|o| o.task_id.clone()) {
                    self.registry.assign(id, &task);
                }
            }
        }
    }

    /// Publishes a subagent's new state for anyone watching.
    pub(super) fn announce(&mut self, id: &str, state: SubagentState, reason: &str) {
        if !self.acting() {
            return;
        }
        let event = SubagentChanged {
            subagent_id: id.to_string(),
            state,
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.bus
            .post(self.bus.subjects().subagent_changed(id), &event);
    }

    /// A subagent is not heard as expected: no new tasks for it, and nothing
    /// more. Suspicion is not proof of death (a live subagent whose
    /// connection was dropped has no responders until it reconnects).
    pub(super) fn suspect(&mut self, id: &str, why: &str) {
        if self.registry.suspect(id) {
            warn!(subagent = %id, "subagent suspect: {why}");
            self.announce(id, SubagentState::Suspect, &format!("suspect: {why}"));
        }
    }

    /// A subagent has been silent for the whole subagent timeout: lost, but
    /// not known dead; its tasks are in doubt until its orphan timeout.
    fn declare_unreachable(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(tasks) = self.registry.declare_lost(id) else {
            return;
        };
        let how = "lost: silent, unreachable; its tasks run again only once it is proven dead";
        warn!(subagent = %id, tasks = tasks.len(), "subagent {how}");
        self.announce(id, SubagentState::Lost, how);
        let doubt = self.registry.get(id).map(|s| s.doubt());
        self.lose_tasks(id, doubt, ctx);
        self.dispatch(ctx);
    }

    /// The tasks placed on `id` are in doubt: they run again when its own
    /// orphan timeout and kill grace have passed since it was last heard
    /// (plus the interval it checks at, our heartbeat interval and a
    /// margin), or sooner on a death certificate. Unknown: as if heard now,
    /// with our own settings.
    pub(super) fn lose_tasks(&mut self, id: &str, doubt: Option<Doubt>, ctx: &mut Context<Self>) {
        let orders = self.book.on_subagent(id);
        self.put_in_doubt(id, &orders, doubt, ctx);
    }

    /// `orders`, placed on `id`, are in doubt (see [`Broker::lose_tasks`]).
    pub(super) fn put_in_doubt(
        &mut self,
        id: &str,
        orders: &[String],
        doubt: Option<Doubt>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let sub = &self.config.subagent;
        let doubt = doubt.unwrap_or(Doubt {
            last_seen: now,
            orphan_timeout: sub.orphan_timeout + sub.kill_grace,
            heartbeat_interval: sub.heartbeat_interval,
        });
        let silent = now.saturating_duration_since(doubt.last_seen);
        let last_seen_ms = now_ms().saturating_sub(silent.as_millis() as u64);
        let wait = doubt.orphan_timeout
            + doubt.heartbeat_interval
            + self.config.broker.heartbeat_interval
            + ORPHAN_MARGIN;
        let rerun_at_ms = last_seen_ms + wait.as_millis() as u64;
        for order_id in orders {
            let event = OrderEvent::SubagentLost {
                subagent_id: id.to_string(),
                at_ms: now_ms(),
                rerun_at_ms,
            };
            self.apply_and_act(order_id, event, ctx);
        }
    }

    pub(super) fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.broker.subagent_timeout;
        for check in self.registry.check(Instant::now(), timeout) {
            match check {
                Check::Probe(id) => self.probe(id, ctx),
                Check::Unreachable(id) => self.declare_unreachable(&id, ctx),
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

    /// Asks a quiet subagent whether it lives. An answer clears suspicion;
    /// no responders or no answer makes it suspect, nothing more: a live
    /// subagent whose connection was dropped has no responders until it
    /// reconnects, and a busy one answers late.
    fn probe(&mut self, id: String, ctx: &mut Context<Self>) {
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
                        let before = act.registry.get(&id).map(|s| s.state());
                        if let Some(seen) =
                            act.registry.touch(&id, &pong.instance_id, Instant::now())
                        {
                            act.after_seen(&id, before, seen, Some(&pong.running), ctx);
                        }
                    }
                    Err(BusError::NoResponders { .. }) => {
                        act.suspect(&id, "heartbeats late and no responders to a probe")
                    }
                    Err(e) => {
                        debug!(subagent = %id, error = %e, "probe unanswered; it may be busy");
                        act.suspect(&id, "heartbeats late and a probe unanswered")
                    }
                }),
        );
    }

    pub(super) fn on_leave(&mut self, req: Request<Leave>) {
        let Leave {
            subagent_id,
            instance_id,
        } = req.body;
        if self.registry.remove(&subagent_id, &instance_id) {
            info!(subagent = %subagent_id, "subagent left normally");
            self.announce(&subagent_id, SubagentState::Left, "left: stopped normally");
        }
        self.remember_departed(&instance_id);
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

impl Broker {
    /// A subagent process that is gone for good (left, or certified dead):
    /// a heartbeat of its still in flight must not bring it back.
    pub(super) fn remember_departed(&mut self, instance_id: &str) {
        if !self.departed.iter().any(|i| i == instance_id) {
            self.departed.push_back(instance_id.to_string());
            if self.departed.len() > 1024 {
                self.departed.pop_front();
            }
        }
    }
}
