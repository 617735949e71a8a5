//! Orders through workflows: the broker's side of [`crate::workflow`].
//!
//! A workflow order ([`FlowOrder`]) is journaled in the orders bucket like
//! any order (its record carries its steps and history) but never placed
//! itself: each [`Effect::Dispatch`] of its run becomes a *step order*, an
//! ordinary order of the step's job with `parent` set and an id derived from
//! the workflow order, step and attempt ([`step_order_id`]). Step orders go
//! through the queue, placement, fail-over and the journal like any other;
//! once a step order's new state is in the journal its workflow order
//! follows it ([`Broker::step_order_stored`]): history, step started, step
//! finished.
//!
//! Here: effects, step orders, kills, retries. `submit.rs`: submitting a
//! workflow order; `commands.rs`: suspend, resume, cancel, list;
//! `news.rs`: `changed` and `finished` events; `takeover.rs`: picking
//! workflow orders up after a takeover.
//!
//! Crash safety: the workflow order is stored after every change, and is
//! never ahead of its step orders in the journal. A broker taking over
//! ([`Broker::resume_flows`]) places again every running step whose order it
//! does not hold (the derived id finds the one already stored), applies the
//! outcome of step orders that ended meanwhile, sends kills again, re-arms
//! retry timers, dispatches what is ready, and stops step orders its
//! workflow order never recorded.

mod commands;
mod news;
mod submit;
mod takeover;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::core::{self, Refusal, Then};
use super::order_book::Order;
use super::Broker;
use crate::bus::BusError;
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::order::step_request_id;
use crate::workflow::{step_order_id, Effect, Event, KillCause, TransitionError};

/// Before placing a step order again whose write failed.
const PLACE_RETRY: Duration = Duration::from_secs(1);
/// Before sending a kill again to a step order still being stored.
const KILL_RETRY: Duration = Duration::from_millis(200);

impl Broker {
    /// Applies `event` to a workflow order, carries out its effects,
    /// announces what changed and stores the order.
    pub(in crate::broker) fn flow_event(
        &mut self,
        flow_id: &str,
        event: Event,
        ctx: &mut Context<Self>,
    ) -> Result<(), TransitionError> {
        self.flow_event_then(flow_id, event, Then::Nothing, ctx)
    }

    /// [`Broker::flow_event`], then `then` once the order is stored.
    pub(in crate::broker) fn flow_event_then(
        &mut self,
        flow_id: &str,
        event: Event,
        then: Then<crate::bus::Replier>,
        ctx: &mut Context<Self>,
    ) -> Result<(), TransitionError> {
        let now = now_ms();
        let Some(flow) = self.core.flows.get_mut(flow_id) else {
            return Ok(());
        };
        let before = flow.info();
        let fx = flow.apply(event, now)?;
        let after = flow.info();
        self.announce_changes(&before, &after, now);
        self.act_on(flow_id, fx, ctx);
        if after.state.is_final() && after.state != before.state {
            self.flow_finished(flow_id);
        }
        if before != after || !matches!(then, Then::Nothing) {
            self.store(flow_id, then, ctx);
        }
        Ok(())
    }

    pub(in crate::broker) fn act_on(
        &mut self,
        flow_id: &str,
        fx: Vec<Effect>,
        ctx: &mut Context<Self>,
    ) {
        for effect in fx {
            match effect {
                Effect::Dispatch {
                    step,
                    attempt,
                    job,
                    params,
                } => {
                    let Some(workflow) = self.core.flows.get(flow_id).map(|f| f.run.workflow())
                    else {
                        return;
                    };
                    let parent = ParentStep {
                        order_id: flow_id.to_string(),
                        workflow: workflow.to_string(),
                        step,
                        attempt,
                    };
                    let id = self.step_order_id(&parent);
                    if let Some(flow) = self.core.flows.get_mut(flow_id) {
                        flow.dispatched(&parent.step, attempt, &job, &id);
                    }
                    info!(order = %flow_id, step = %parent.step, attempt, step_order = %id, "step dispatched");
                    self.place_step(parent, job, params, ctx);
                }
                Effect::Kill { step, attempt, .. } => {
                    let Some(flow) = self.core.flows.get(flow_id) else {
                        return;
                    };
                    let cause = flow.run.step(&step).and_then(|s| s.kill);
                    let parent = ParentStep {
                        order_id: flow_id.to_string(),
                        workflow: flow.run.workflow().to_string(),
                        step,
                        attempt,
                    };
                    // later: the kill may finish the step order at once,
                    // which changes this workflow order again
                    ctx.run_later(Duration::ZERO, move |act, ctx| {
                        act.kill_step(parent, cause, ctx)
                    });
                }
                Effect::ScheduleRetry { step, at_ms } => self.arm_retry(flow_id, step, at_ms, ctx),
                Effect::Suspended => info!(order = %flow_id, "workflow order suspended"),
                Effect::Finished(state) => {
                    info!(order = %flow_id, %state, "workflow order finished")
                }
            }
        }
    }

    pub(in crate::broker) fn step_order_id(&self, parent: &ParentStep) -> String {
        step_order_id(
            self.bus.subjects().prefix(),
            &parent.order_id,
            &parent.step,
            parent.attempt,
        )
    }

    /// Places a step attempt as an order of its job; one already placed
    /// (same derived id) is found instead, in memory or in the journal.
    pub(in crate::broker) fn place_step(
        &mut self,
        parent: ParentStep,
        job: String,
        params: BTreeMap<String, String>,
        ctx: &mut Context<Self>,
    ) {
        let order_id = self.step_order_id(&parent);
        if let Some(held) = self.core.book.get(&order_id).map(|o| (o.durable, o.info())) {
            // held: stored (its state applies), or being stored right now
            if held.0 {
                self.step_order_stored(&held.1, ctx);
            }
            return;
        }
        let Some(spec) = self.core.jobs.get(&job) else {
            let reason = format!("job '{job}' is not deployed; deploy it, then resume the order");
            return self.step_refused(parent, order_id, reason, ctx);
        };
        let params = match jobs::resolve_step_params(spec, &params) {
            Ok(params) => params,
            Err(e) => return self.step_refused(parent, order_id, e.to_string(), ctx),
        };
        let request_id = step_request_id(&parent.order_id, &parent.step, parent.attempt);
        let mut order = Order::new(order_id.clone(), job, params, Some(request_id), now_ms());
        order.restartable = spec.restartable;
        order.parent = Some(parent.clone());
        let info = order.info();
        self.core.book.insert(order);
        let kv = self.orders_kv.clone();
        let write = async move {
            let created = kv.create_revision(&info.order_id, &info).await?;
            let existing = match created {
                Some(_) => None,
                None => kv.get_with_revision(&info.order_id).await?,
            };
            Ok::<_, BusError>((info, created, existing))
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            match written {
                Ok((info, Some(revision), _)) => {
                    act.core.set_revision(&info.order_id, revision);
                    act.core.book.enqueue(&info.order_id);
                    act.kill_if_asked(&parent, ctx);
                    let event = OrderAccepted {
                        order_id: info.order_id.clone(),
                        job: info.job.clone(),
                        params: info.params,
                        slot_ms: None,
                        at_ms: info.accepted_at_ms,
                    };
                    act.core.publish(core::Event::Accepted(event));
                    act.dispatch(ctx);
                }
                Ok((info, None, existing)) => {
                    // stored before (by us, or a broker before us), not held
                    act.core.book.remove(&info.order_id);
                    let Some((stored, revision)) = existing else {
                        return act.retry_place(parent, ctx);
                    };
                    if stored.parent.as_ref() != Some(&parent) {
                        // not expected: step order ids have their own namespace
                        warn!(order = %stored.order_id, "a step order's id holds another order");
                        let reason = "its order id is taken by another order".to_string();
                        return act.step_refused(parent, stored.order_id, reason, ctx);
                    }
                    let restartable = act.core.jobs.get(&stored.job).is_some_and(|j| j.restartable);
                    act.core.book
                        .restore([Order::restore(&stored, restartable)]);
                    act.core.set_revision(&stored.order_id, revision);
                    act.step_order_stored(&stored, ctx);
                    act.kill_if_asked(&parent, ctx);
                    act.dispatch(ctx);
                }
                Err(e) => {
                    warn!(step_order = %info_id(&parent), error = %e, "step order not stored; placing it again");
                    act.core.book.remove(&act.step_order_id(&parent));
                    act.retry_place(parent, ctx);
                }
            }
        }));
    }

    /// Places a step attempt again later, if its workflow order still runs it.
    pub(in crate::broker) fn retry_place(&mut self, parent: ParentStep, ctx: &mut Context<Self>) {
        ctx.run_later(PLACE_RETRY, move |act, ctx| {
            let Some(flow) = act.core.flows.get(&parent.order_id) else {
                return;
            };
            let current = flow
                .run
                .step(&parent.step)
                .is_some_and(|s| s.attempt == parent.attempt && s.state == StepState::Running);
            let params = flow.run.params_of(&parent.step);
            let job = flow.run.step(&parent.step).map(|s| s.job.clone());
            if let (true, Some(params), Some(job)) = (current, params, job) {
                act.place_step(parent, job, params, ctx);
            }
        });
    }

    /// A step attempt that could not be placed fails with `reason`.
    pub(in crate::broker) fn step_refused(
        &mut self,
        parent: ParentStep,
        order_id: String,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        warn!(order = %parent.order_id, step = %parent.step, %reason, "step not placed");
        ctx.run_later(Duration::ZERO, move |act, ctx| {
            let Some(flow) = act.core.flows.get_mut(&parent.order_id) else {
                return;
            };
            let event = flow.refused(&parent, &order_id, reason, now_ms());
            if let Err(e) = act.flow_event(&parent.order_id, event, ctx) {
                debug!(error = %e, "refused step no longer current");
            }
        });
    }

    /// Kills a step's order (cancel with kill); tried again while the step
    /// order is still being stored.
    pub(in crate::broker) fn kill_step(
        &mut self,
        parent: ParentStep,
        cause: Option<KillCause>,
        ctx: &mut Context<Self>,
    ) {
        let still = self.core.flows.get(&parent.order_id).is_some_and(|f| {
            f.run.step(&parent.step).is_some_and(|s| {
                s.attempt == parent.attempt && s.state == StepState::Running && s.kill.is_some()
            })
        });
        if !still {
            return;
        }
        let id = self.step_order_id(&parent);
        let reason = match cause {
            Some(KillCause::Suspend) => "killed: its workflow order was suspended with --kill",
            _ => "killed: its workflow order was cancelled with --kill",
        };
        match self.cancel(&id, true, reason, ctx) {
            Ok(()) => {}
            // being stored, or being placed again: killed once it is held
            Err(Refusal::CancelWhileStoring(_) | Refusal::NotHeld(_)) => {
                ctx.run_later(KILL_RETRY, move |act, ctx| {
                    act.kill_step(parent, cause, ctx)
                });
            }
            Err(why) => debug!(step_order = %id, %why, "step kill not needed"),
        }
    }

    /// Sends a kill the step waits for (asked before its order was held).
    pub(in crate::broker) fn kill_if_asked(
        &mut self,
        parent: &ParentStep,
        ctx: &mut Context<Self>,
    ) {
        let cause = self
            .core
            .flows
            .get(&parent.order_id)
            .and_then(|f| f.run.step(&parent.step))
            .filter(|s| s.attempt == parent.attempt && s.state == StepState::Running)
            .and_then(|s| s.kill);
        if cause.is_some() {
            self.kill_step(parent.clone(), cause, ctx);
        }
    }

    pub(in crate::broker) fn arm_retry(
        &mut self,
        flow_id: &str,
        step: String,
        at_ms: u64,
        ctx: &mut Context<Self>,
    ) {
        let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
        let flow_id = flow_id.to_string();
        ctx.run_later(wait, move |act, ctx| {
            let _ = act.flow_event(&flow_id, Event::RetryDue { step: step.clone() }, ctx);
            // early by the wall clock (it stepped back): wait again
            let waiting = act
                .core
                .flows
                .get(&flow_id)
                .and_then(|f| f.run.step(&step)?.retry_at_ms);
            if let Some(at_ms) = waiting {
                act.arm_retry(&flow_id, step, at_ms, ctx);
            }
        });
    }

    /// A step order's state was stored: its workflow order follows (never
    /// ahead of what the journal holds of its step orders).
    pub(in crate::broker) fn step_order_stored(
        &mut self,
        info: &OrderInfo,
        ctx: &mut Context<Self>,
    ) {
        let order_id = info.order_id.as_str();
        let Some(parent) = info.parent.clone() else {
            return;
        };
        let Some(flow) = self.core.flows.get_mut(&parent.order_id) else {
            return;
        };
        let before = flow.history.clone();
        match flow.step_order_moved(info) {
            Some(event) => {
                if let Err(e) = self.flow_event(&parent.order_id, event, ctx) {
                    debug!(step_order = %order_id, error = %e, "step order's news is stale");
                }
            }
            None if before != flow.history => self.store(&parent.order_id, Then::Nothing, ctx),
            None => {}
        }
    }
}

fn info_id(parent: &ParentStep) -> String {
    format!("{}/{}#{}", parent.order_id, parent.step, parent.attempt)
}
