//! Orders through workflows: the core's side of [`crate::workflow`].
//!
//! A workflow order ([`FlowOrder`]) is journaled in the orders bucket like
//! any order (its record carries its steps and history) but never placed
//! itself: each dispatch of its run becomes a *step order*, an ordinary
//! order of the step's job with `parent` set and an id derived from the
//! workflow order, step and attempt ([`step_order_id`]). Step orders go
//! through the queue, placement, fail-over and the journal like any other;
//! once a step order's new state is in the journal its workflow order
//! follows it ([`Core::step_order_stored`]): history, step started, step
//! finished.
//!
//! In detail: submitting a workflow's name stores a pending workflow order,
//! answers, and applies `Start`. Each `Effect::Dispatch` of the run becomes
//! a step order with `parent` (workflow order, step, attempt) and the id
//! `step_order_id(prefix, order, step, attempt)`, created with KV `create`.
//! In a round-robin cluster a step order goes to the member after the one
//! its workflow order last placed a step on (the step before it in a chain,
//! a sibling in a fan-out), so consecutive and parallel steps of one order
//! run on different subagents whenever another has room. The history keeps
//! every subagent a step attempt was placed on (`placed_on`; a task lost
//! with its subagent re-runs elsewhere) and its task count. A step order's
//! parameters are those of what the run offers it (order parameters,
//! upstream results, the step's own) that its job declares. Its task gets
//! `BATON_WORKFLOW`, `BATON_WORKFLOW_ORDER_ID`, `BATON_STEP` and
//! `BATON_STEP_ATTEMPT`, and its log lines are published as the workflow
//! order's (`TaskLog.step` set). Once a step order's new state is in the
//! journal (its write landed), `step_order_stored` updates the history and
//! feeds `StepStarted` / `StepFinished` to the run. `Effect::Kill` cancels
//! the step order with kill (sent again while the step order is still being
//! stored, and on a repeated command); `ScheduleRetry` arms a timer that
//! sends `RetryDue`. Each change publishes `changed` events (`OrderChanged`,
//! one per step that moved and one for the order) and is stored; a command
//! (suspend, resume, cancel) is answered once the new state is stored, and
//! an unstored workflow order is written again until it is.
//!
//! Here: the workflow run's effects, step orders, kills, retries.
//! `submit.rs`: submitting a workflow order; `commands.rs`: suspend,
//! resume, cancel; `news.rs`: `changed` and `finished` events;
//! `takeover.rs`: picking workflow orders up after a takeover;
//! `expiry.rs`: failed workflow orders expire after `broker.failed_hold`.
//!
//! Crash safety: the workflow order is stored after every change, and is
//! never ahead of its step orders in the journal. A broker taking over
//! keeps every unfinished or resumable workflow order (and the newest
//! `broker.keep_finished` ended ones)
//! and resumes each ([`Core::resume_flows`]): it places again every running step whose order it
//! does not hold (the derived id finds the one already stored), applies the
//! outcome of step orders that ended meanwhile, sends kills again, re-arms
//! retry timers, dispatches what is ready, and stops step orders its
//! workflow order never recorded.

mod commands;
mod expiry;
mod news;
mod submit;
mod takeover;

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::super::order_book::Order;
use super::{Core, Created, Event, Refusal, Then, Timer};
use crate::jobs;
use crate::protocol::*;
use crate::workflow::order::step_request_id;
use crate::workflow::{step_order_id, Effect as FlowEffect, Event as FlowEvent};
use crate::workflow::{KillCause, RunState, TransitionError};

/// Before placing a step order again whose write failed.
const PLACE_RETRY: Duration = Duration::from_secs(1);
/// Before sending a kill again to a step order still being stored.
const KILL_RETRY: Duration = Duration::from_millis(200);

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Applies `event` to a workflow order, carries out its effects,
    /// announces what changed and stores the order.
    pub(in crate::broker) fn flow_event(
        &mut self,
        flow_id: &str,
        event: FlowEvent,
    ) -> Result<(), TransitionError> {
        self.flow_event_then(flow_id, event, Then::Nothing)
    }

    /// [`Core::flow_event`], then `then` once the order is stored.
    pub(in crate::broker) fn flow_event_then(
        &mut self,
        flow_id: &str,
        event: FlowEvent,
        then: Then<R>,
    ) -> Result<(), TransitionError> {
        let now = self.now.ms;
        let Some(flow) = self.book.flow_mut(flow_id) else {
            return Ok(());
        };
        if flow.expired_at_ms.is_some() {
            // it never changes again (commands are refused before)
            self.follow_up(flow_id, then, true);
            return Ok(());
        }
        let before = flow.info();
        let fx = flow.apply(event, now)?;
        self.hold_if_failed(flow_id);
        let Some(after) = self.book.info(flow_id) else {
            return Ok(());
        };
        self.announce_changes(&before, &after);
        self.act_on(flow_id, fx);
        if after.state.is_final() && after.state != before.state {
            self.flow_finished(flow_id);
        } else if before.state.is_final() && !after.state.is_final() {
            // resumed before its end was stored: that end is not announced
            self.unannounced.remove(flow_id);
        }
        if before != after || !matches!(then, Then::Nothing) {
            self.store(flow_id, then);
        }
        Ok(())
    }

    fn act_on(&mut self, flow_id: &str, fx: Vec<FlowEffect>) {
        for effect in fx {
            match effect {
                FlowEffect::Dispatch {
                    step,
                    attempt,
                    job,
                    params,
                } => {
                    let Some(parent) = self.parent_step(flow_id, step, attempt) else {
                        return;
                    };
                    let id = self.step_order_id(&parent);
                    if let Some(flow) = self.book.flow_mut(flow_id) {
                        flow.dispatched(&parent.step, attempt, &job, &id);
                    }
                    info!(order = %flow_id, step = %parent.step, attempt, step_order = %id, "step dispatched");
                    self.place_step(parent, job, params);
                }
                FlowEffect::Kill { step, attempt, .. } => {
                    let Some(flow) = self.book.flow(flow_id) else {
                        return;
                    };
                    let cause = flow.run.step(&step).and_then(|s| s.kill);
                    let Some(parent) = self.parent_step(flow_id, step, attempt) else {
                        return;
                    };
                    // later: the kill may finish the step order at once,
                    // which changes this workflow order again
                    self.later(Duration::ZERO, Timer::KillStep { parent, cause });
                }
                FlowEffect::ScheduleRetry { step, at_ms } => self.arm_retry(flow_id, step, at_ms),
                FlowEffect::Suspended => info!(order = %flow_id, "workflow order suspended"),
                FlowEffect::Finished(state) => {
                    info!(order = %flow_id, %state, "workflow order finished")
                }
            }
        }
    }

    /// The step attempt of a workflow order this core holds.
    fn parent_step(&self, flow_id: &str, step: String, attempt: u32) -> Option<ParentStep> {
        let flow = self.book.flow(flow_id)?;
        Some(ParentStep {
            order_id: flow_id.to_string(),
            workflow: flow.run.workflow().to_string(),
            step,
            attempt,
        })
    }

    pub(in crate::broker) fn step_order_id(&self, parent: &ParentStep) -> String {
        step_order_id(
            &self.config.prefix,
            &parent.order_id,
            &parent.step,
            parent.attempt,
        )
    }

    /// Whether the workflow order still runs this step attempt.
    fn runs(&self, parent: &ParentStep) -> bool {
        self.book
            .flow(&parent.order_id)
            .and_then(|f| f.run.step(&parent.step))
            .is_some_and(|s| s.attempt == parent.attempt && s.state == StepState::Running)
    }

    /// Places a step attempt as an order of its job; one already placed
    /// (same derived id) is found instead, in memory or in the journal.
    fn place_step(&mut self, parent: ParentStep, job: String, params: BTreeMap<String, String>) {
        let order_id = self.step_order_id(&parent);
        if let Some(held) = self.book.get(&order_id).map(|o| (o.durable, o.info())) {
            // held: stored (its state applies), or being stored right now
            if held.0 {
                self.step_order_stored(&held.1);
            }
            return;
        }
        let Some(spec) = self.jobs.get(&job) else {
            let reason = format!("job '{job}' is not deployed; deploy it, then resume the order");
            return self.step_refused(parent, order_id, reason);
        };
        let params = match jobs::resolve_step_params(spec, &params) {
            Ok(params) => params,
            Err(e) => return self.step_refused(parent, order_id, e.to_string()),
        };
        let request_id = step_request_id(&parent.order_id, &parent.step, parent.attempt);
        let mut order = Order::new(order_id, job, params, Some(request_id), self.now.ms);
        order.restartable = spec.restartable;
        order.retry = spec.retry;
        order.spread = spec.spread;
        order.parent = Some(parent.clone());
        self.create(order, super::submit::Pending::Step(parent));
    }

    /// A step order's record was created, found, or not stored.
    pub(super) fn step_created(&mut self, parent: ParentStep, info: OrderInfo, created: Created) {
        match created {
            Created::At(revision) => {
                self.set_revision(&info.order_id, revision);
                self.book.enqueue(&info.order_id);
                self.kill_if_asked(&parent);
                self.publish(Event::accepted(&info));
                self.dispatch();
            }
            Created::Exists(existing) => {
                // stored before (by us, or a broker before us), not held
                self.book.remove(&info.order_id);
                let Some((stored, revision)) = existing else {
                    return self.retry_place(parent);
                };
                if stored.parent.as_ref() != Some(&parent) {
                    // not expected: step order ids have their own namespace
                    warn!(order = %stored.order_id, "a step order's id holds another order");
                    let reason = "its order id is taken by another order".to_string();
                    return self.step_refused(parent, stored.order_id.clone(), reason);
                }
                self.book.restore([self.restored(&stored)]);
                self.retry_stored(&stored);
                self.set_revision(&stored.order_id, revision);
                self.step_order_stored(&stored);
                self.kill_if_asked(&parent);
                self.dispatch();
            }
            Created::Failed(e) => {
                warn!(step_order = %info.order_id, error = %e, "step order not stored; placing it again");
                self.book.remove(&info.order_id);
                self.retry_place(parent);
            }
        }
    }

    /// Places a step attempt again later, if its workflow order still runs it.
    fn retry_place(&mut self, parent: ParentStep) {
        self.later(PLACE_RETRY, Timer::PlaceStep(parent));
    }

    /// [`Timer::PlaceStep`] came due.
    pub(super) fn place_again(&mut self, parent: ParentStep) {
        if !self.runs(&parent) {
            return;
        }
        let Some(flow) = self.book.flow(&parent.order_id) else {
            return;
        };
        let params = flow.run.params_of(&parent.step);
        let job = flow.run.step(&parent.step).map(|s| s.job.clone());
        if let (Some(params), Some(job)) = (params, job) {
            self.place_step(parent, job, params);
        }
    }

    /// A step attempt that could not be placed fails with `reason` (in a
    /// step of its own: its workflow order may be changing right now).
    fn step_refused(&mut self, parent: ParentStep, order_id: String, reason: String) {
        warn!(order = %parent.order_id, step = %parent.step, %reason, "step not placed");
        let timer = Timer::StepRefused {
            parent,
            order_id,
            reason,
        };
        self.later(Duration::ZERO, timer);
    }

    /// [`Timer::StepRefused`] came due.
    pub(super) fn fail_step(&mut self, parent: ParentStep, order_id: String, reason: String) {
        let now = self.now.ms;
        let Some(flow) = self.book.flow_mut(&parent.order_id) else {
            return;
        };
        let event = flow.refused(&parent, &order_id, reason, now);
        if let Err(e) = self.flow_event(&parent.order_id, event) {
            debug!(error = %e, "refused step no longer current");
        }
    }

    /// Kills a step's order (cancel with kill); tried again while the step
    /// order is still being stored.
    pub(super) fn kill_step(&mut self, parent: ParentStep, cause: Option<KillCause>) {
        let asked = self
            .book
            .flow(&parent.order_id)
            .and_then(|f| f.run.step(&parent.step))
            .is_some_and(|s| s.kill.is_some());
        if !asked || !self.runs(&parent) {
            return;
        }
        let id = self.step_order_id(&parent);
        let reason = match cause {
            Some(KillCause::Suspend) => "killed: its workflow order was suspended with --kill",
            _ => "killed: its workflow order was cancelled with --kill",
        };
        match self.cancel(&id, true, reason) {
            Ok(()) => {}
            // being stored, or being placed again: killed once it is held
            Err(Refusal::CancelWhileStoring(_) | Refusal::NotHeld(_)) => {
                self.later(KILL_RETRY, Timer::KillStep { parent, cause });
            }
            Err(why) => debug!(step_order = %id, %why, "step kill not needed"),
        }
    }

    /// Sends a kill the step waits for (asked before its order was held).
    fn kill_if_asked(&mut self, parent: &ParentStep) {
        let cause = self
            .book
            .flow(&parent.order_id)
            .and_then(|f| f.run.step(&parent.step))
            .filter(|s| s.attempt == parent.attempt && s.state == StepState::Running)
            .and_then(|s| s.kill);
        if cause.is_some() {
            self.kill_step(parent.clone(), cause);
        }
    }

    fn arm_retry(&mut self, flow_id: &str, step: String, at_ms: u64) {
        let after = Duration::from_millis(at_ms.saturating_sub(self.now.ms));
        let flow_id = flow_id.to_string();
        self.later(after, Timer::RetryDue { flow_id, step });
    }

    /// [`Timer::RetryDue`] came due.
    pub(super) fn retry_due(&mut self, flow_id: String, step: String) {
        let due = FlowEvent::RetryDue { step: step.clone() };
        let _ = self.flow_event(&flow_id, due);
        // early by the wall clock (it stepped back): wait again. Not while
        // the order is held or stopping: a resume schedules its retries
        let now = self.now.ms;
        let waiting = (self.book.flow(&flow_id))
            .filter(|f| f.state() == RunState::Running)
            .and_then(|f| f.run.step(&step)?.retry_at_ms)
            .filter(|&at_ms| at_ms > now);
        if let Some(at_ms) = waiting {
            self.arm_retry(&flow_id, step, at_ms);
        }
    }

    /// A step order's state was stored: its workflow order follows (never
    /// ahead of what the journal holds of its step orders).
    pub(super) fn step_order_stored(&mut self, info: &OrderInfo) {
        let Some(parent) = info.parent.clone() else {
            return;
        };
        let Some(flow) = self.book.flow_mut(&parent.order_id) else {
            return;
        };
        let before = flow.history.clone();
        match flow.step_order_moved(info) {
            Some(event) => {
                if let Err(e) = self.flow_event(&parent.order_id, event) {
                    debug!(step_order = %info.order_id, error = %e, "step order's news is stale");
                }
            }
            None if before != flow.history => self.store(&parent.order_id, Then::Nothing),
            None => {}
        }
    }
}
