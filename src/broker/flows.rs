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
//! Crash safety: the workflow order is stored after every change, and is
//! never ahead of its step orders in the journal. A broker taking over
//! ([`Broker::resume_flows`]) places again every running step whose order it
//! does not hold (the derived id finds the one already stored), applies the
//! outcome of step orders that ended meanwhile, sends kills again, re-arms
//! retry timers, dispatches what is ready, and stops step orders its
//! workflow order never recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::order_book::Order;
use super::recovery::Then;
use super::{Broker, KEEP_FINISHED};
use crate::bus::{BusError, Replier, Request};
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::order::step_request_id;
use crate::workflow::{step_order_id, Effect, Event, FlowOrder, KillCause, TransitionError};

/// Before placing a step order again whose write failed.
const PLACE_RETRY: Duration = Duration::from_secs(1);
/// Before sending a kill again to a step order still being stored.
const KILL_RETRY: Duration = Duration::from_millis(200);
/// Default and largest `limit` of an order list.
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 10_000;

impl Broker {
    /// `baton submit WORKFLOW`: stores a pending workflow order, answers,
    /// and starts it.
    pub(super) fn on_submit_workflow(
        &mut self,
        spec: WorkflowSpec,
        body: SubmitOrder,
        replier: Replier,
        ctx: &mut Context<Self>,
    ) {
        let SubmitOrder {
            job: name,
            params,
            request_id,
            slot_ms,
        } = body;
        if let Some(existing) = request_id.as_deref().and_then(|r| self.flow_by_request(r)) {
            if !existing.durable {
                let message =
                    "a submit with this request_id is being stored right now; send it again";
                return self.error(&replier, ErrorCode::Busy, message);
            }
            let reply = SubmitReply {
                order_id: existing.id.clone(),
                job: name,
                state: existing.state().wire(),
                duplicate: true,
            };
            return self.bus.reply(&replier, &reply);
        }
        if let Some((param, _)) = params.iter().find(|(k, v)| !valid_param(k, v)) {
            let message = format!(
                "parameter '{param}': names use letters, digits and '_', values at most {} bytes without NUL",
                jobs::MAX_PARAM_BYTES
            );
            return self.error(&replier, ErrorCode::InvalidParam, message);
        }
        let order_id = self.new_order_id(request_id.as_deref());
        let idempotent = request_id.is_some();
        let flow = match FlowOrder::new(
            order_id.clone(),
            &spec,
            params,
            request_id,
            slot_ms,
            now_ms(),
        ) {
            Ok(flow) => flow,
            Err(e) => return self.error(&replier, ErrorCode::InvalidJob, e.to_string()),
        };
        let info = flow.info();
        self.hold_flow(flow);
        let kv = self.orders_kv.clone();
        let flow_id = order_id.clone();
        let write = async move {
            let created = if idempotent {
                kv.create_revision(&order_id, &info).await?
            } else {
                kv.put(&order_id, &info).await.map(Some)?
            };
            let existing = match created {
                Some(_) => None,
                None => kv.get(&order_id).await?,
            };
            Ok::<_, BusError>((info, created, existing))
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            let order_id = flow_id;
            match written {
                Ok((info, Some(revision), _)) => {
                    act.set_revision(&order_id, revision);
                    if let Some(flow) = act.flows.get_mut(&order_id) {
                        flow.durable = true;
                    }
                    let reply = SubmitReply {
                        order_id: order_id.clone(),
                        job: info.job.clone(),
                        state: OrderState::Accepted,
                        duplicate: false,
                    };
                    act.bus.reply(&replier, &reply);
                    let event = OrderAccepted {
                        order_id: order_id.clone(),
                        job: info.job.clone(),
                        params: info.params,
                        slot_ms: info.slot_ms,
                        at_ms: info.accepted_at_ms,
                    };
                    let s = act.bus.subjects();
                    act.bus
                        .post(s.event(&info.job, &order_id, EventKind::Accepted), &event);
                    info!(order = %order_id, workflow = %info.job, "workflow order accepted");
                    let _ = act.flow_event(&order_id, Event::Start, ctx);
                }
                Ok((info, None, existing)) => {
                    act.drop_flow(&info.order_id);
                    // stored by an earlier try whose answer was lost: ours now
                    if let Some(flow) = existing.as_ref().and_then(FlowOrder::restore) {
                        if !flow.state().is_final() {
                            info!(order = %flow.id, "workflow order stored by an earlier submit taken up");
                            act.hold_flow(flow);
                            act.resume_flow(&info.order_id, ctx);
                        }
                    }
                    let reply = SubmitReply {
                        order_id: info.order_id,
                        job: info.job,
                        state: existing.map_or(OrderState::Accepted, |e| e.state),
                        duplicate: true,
                    };
                    act.bus.reply(&replier, &reply);
                }
                Err(e) => {
                    warn!(error = %e, "workflow order not stored; submit refused");
                    act.drop_flow(&order_id);
                    act.error(
                        &replier,
                        ErrorCode::Unavailable,
                        format!(
                            "the order could not be stored in JetStream, nothing was accepted: {e}"
                        ),
                    );
                }
            }
        }));
    }

    fn flow_by_request(&self, request_id: &str) -> Option<&FlowOrder> {
        self.flow_requests
            .get(request_id)
            .and_then(|id| self.flows.get(id))
    }

    /// Holds a workflow order in memory, findable by its request id.
    pub(super) fn hold_flow(&mut self, flow: FlowOrder) {
        if let Some(r) = &flow.request_id {
            self.flow_requests.insert(r.clone(), flow.id.clone());
        }
        self.flows.insert(flow.id.clone(), flow);
    }

    fn drop_flow(&mut self, flow_id: &str) {
        if let Some(r) = self.flows.remove(flow_id).and_then(|f| f.request_id) {
            self.flow_requests.remove(&r);
        }
    }

    /// Applies `event` to a workflow order, carries out its effects,
    /// announces what changed and stores the order.
    pub(super) fn flow_event(
        &mut self,
        flow_id: &str,
        event: Event,
        ctx: &mut Context<Self>,
    ) -> Result<(), TransitionError> {
        self.flow_event_then(flow_id, event, Then::Nothing, ctx)
    }

    /// [`Broker::flow_event`], then `then` once the order is stored.
    fn flow_event_then(
        &mut self,
        flow_id: &str,
        event: Event,
        then: Then,
        ctx: &mut Context<Self>,
    ) -> Result<(), TransitionError> {
        let now = now_ms();
        let Some(flow) = self.flows.get_mut(flow_id) else {
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

    fn act_on(&mut self, flow_id: &str, fx: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in fx {
            match effect {
                Effect::Dispatch {
                    step,
                    attempt,
                    job,
                    params,
                } => {
                    let Some(workflow) = self.flows.get(flow_id).map(|f| f.run.workflow()) else {
                        return;
                    };
                    let parent = ParentStep {
                        order_id: flow_id.to_string(),
                        workflow: workflow.to_string(),
                        step,
                        attempt,
                    };
                    let id = self.step_order_id(&parent);
                    if let Some(flow) = self.flows.get_mut(flow_id) {
                        flow.dispatched(&parent.step, attempt, &job, &id);
                    }
                    info!(order = %flow_id, step = %parent.step, attempt, step_order = %id, "step dispatched");
                    self.place_step(parent, job, params, ctx);
                }
                Effect::Kill { step, attempt, .. } => {
                    let Some(flow) = self.flows.get(flow_id) else {
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

    fn step_order_id(&self, parent: &ParentStep) -> String {
        step_order_id(
            self.bus.subjects().prefix(),
            &parent.order_id,
            &parent.step,
            parent.attempt,
        )
    }

    /// Places a step attempt as an order of its job; one already placed
    /// (same derived id) is found instead, in memory or in the journal.
    fn place_step(
        &mut self,
        parent: ParentStep,
        job: String,
        params: BTreeMap<String, String>,
        ctx: &mut Context<Self>,
    ) {
        let order_id = self.step_order_id(&parent);
        if let Some(held) = self.book.get(&order_id).map(|o| (o.durable, o.info())) {
            // held: stored (its state applies), or being stored right now
            if held.0 {
                self.step_order_stored(&held.1, ctx);
            }
            return;
        }
        let Some(spec) = self.jobs.get(&job) else {
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
        self.book.insert(order);
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
                    act.set_revision(&info.order_id, revision);
                    act.book.enqueue(&info.order_id);
                    act.kill_if_asked(&parent, ctx);
                    let event = OrderAccepted {
                        order_id: info.order_id.clone(),
                        job: info.job.clone(),
                        params: info.params,
                        slot_ms: None,
                        at_ms: info.accepted_at_ms,
                    };
                    let s = act.bus.subjects();
                    act.bus.post(
                        s.event(&info.job, &info.order_id, EventKind::Accepted),
                        &event,
                    );
                    act.dispatch(ctx);
                }
                Ok((info, None, existing)) => {
                    // stored before (by us, or a broker before us), not held
                    act.book.remove(&info.order_id);
                    let Some((stored, revision)) = existing else {
                        return act.retry_place(parent, ctx);
                    };
                    if stored.parent.as_ref() != Some(&parent) {
                        // not expected: step order ids have their own namespace
                        warn!(order = %stored.order_id, "a step order's id holds another order");
                        let reason = "its order id is taken by another order".to_string();
                        return act.step_refused(parent, stored.order_id, reason, ctx);
                    }
                    let restartable = act.jobs.get(&stored.job).is_some_and(|j| j.restartable);
                    act.book
                        .restore([Order::restore(&stored, restartable)]);
                    act.set_revision(&stored.order_id, revision);
                    act.step_order_stored(&stored, ctx);
                    act.kill_if_asked(&parent, ctx);
                    act.dispatch(ctx);
                }
                Err(e) => {
                    warn!(step_order = %info_id(&parent), error = %e, "step order not stored; placing it again");
                    act.book.remove(&act.step_order_id(&parent));
                    act.retry_place(parent, ctx);
                }
            }
        }));
    }

    /// Places a step attempt again later, if its workflow order still runs it.
    fn retry_place(&mut self, parent: ParentStep, ctx: &mut Context<Self>) {
        ctx.run_later(PLACE_RETRY, move |act, ctx| {
            let Some(flow) = act.flows.get(&parent.order_id) else {
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
    fn step_refused(
        &mut self,
        parent: ParentStep,
        order_id: String,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        warn!(order = %parent.order_id, step = %parent.step, %reason, "step not placed");
        ctx.run_later(Duration::ZERO, move |act, ctx| {
            let Some(flow) = act.flows.get_mut(&parent.order_id) else {
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
    fn kill_step(&mut self, parent: ParentStep, cause: Option<KillCause>, ctx: &mut Context<Self>) {
        let still = self.flows.get(&parent.order_id).is_some_and(|f| {
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
            Err((ErrorCode::Busy | ErrorCode::NotFound, _)) => {
                ctx.run_later(KILL_RETRY, move |act, ctx| {
                    act.kill_step(parent, cause, ctx)
                });
            }
            Err((_, message)) => debug!(step_order = %id, %message, "step kill not needed"),
        }
    }

    /// Sends a kill the step waits for (asked before its order was held).
    fn kill_if_asked(&mut self, parent: &ParentStep, ctx: &mut Context<Self>) {
        let cause = self
            .flows
            .get(&parent.order_id)
            .and_then(|f| f.run.step(&parent.step))
            .filter(|s| s.attempt == parent.attempt && s.state == StepState::Running)
            .and_then(|s| s.kill);
        if cause.is_some() {
            self.kill_step(parent.clone(), cause, ctx);
        }
    }

    fn arm_retry(&mut self, flow_id: &str, step: String, at_ms: u64, ctx: &mut Context<Self>) {
        let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
        let flow_id = flow_id.to_string();
        ctx.run_later(wait, move |act, ctx| {
            let _ = act.flow_event(&flow_id, Event::RetryDue { step: step.clone() }, ctx);
            // early by the wall clock (it stepped back): wait again
            let waiting = act
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
    pub(super) fn step_order_stored(&mut self, info: &OrderInfo, ctx: &mut Context<Self>) {
        let order_id = info.order_id.as_str();
        let Some(parent) = info.parent.clone() else {
            return;
        };
        let Some(flow) = self.flows.get_mut(&parent.order_id) else {
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

    /// After a takeover: every workflow order picks up where it was.
    pub(super) fn resume_flows(&mut self, ctx: &mut Context<Self>) {
        let active: Vec<String> = self
            .flows
            .values()
            .filter(|f| !f.state().is_held() && !f.state().is_final())
            .map(|f| f.id.clone())
            .collect();
        for flow_id in active {
            self.resume_flow(&flow_id, ctx);
        }
        // A workflow order is stored after its step orders, so a crash can
        // leave a step order its workflow order never knew it placed (or
        // no longer wants): it is stopped. One it still wants was adopted
        // above, when the step was dispatched again under the same id.
        let orphans: Vec<String> = self
            .book
            .iter()
            .filter(|o| !o.phase.is_final())
            .filter_map(|o| {
                let p = o.parent.as_ref()?;
                let wanted = self
                    .flows
                    .get(&p.order_id)
                    .and_then(|f| f.run.step(&p.step));
                let wanted =
                    wanted.is_some_and(|s| s.attempt == p.attempt && s.state == StepState::Running);
                (!wanted).then(|| o.id.clone())
            })
            .collect();
        for id in orphans {
            warn!(step_order = %id, "step order its workflow order does not run; cancelled");
            let (Some(parent), Some(job)) = (
                self.book.get(&id).and_then(|o| o.parent.clone()),
                self.book.get(&id).map(|o| o.job.clone()),
            ) else {
                continue;
            };
            if let Some(flow) = self.flows.get_mut(&parent.order_id) {
                // its attempt number is taken: the step's next one is fresh
                flow.run.note_attempt(&parent.step, parent.attempt);
                flow.dispatched(&parent.step, parent.attempt, &job, &id);
                self.store(&parent.order_id, Then::Nothing, ctx);
            }
            let reason = "its workflow order does not run this step attempt";
            let _ = self.cancel(&id, true, reason, ctx);
        }
    }

    /// Picks a workflow order up where its record left it: running steps
    /// placed (or found), kills sent again, retries re-armed, ready steps
    /// dispatched.
    fn resume_flow(&mut self, flow_id: &str, ctx: &mut Context<Self>) {
        let flow_id = flow_id.to_string();
        {
            let Some(flow) = self.flows.get(&flow_id) else {
                return;
            };
            let workflow = flow.run.workflow().to_string();
            let now = now_ms();
            let mut running = Vec::new();
            for s in flow.run.steps() {
                if let Some(at_ms) = s.retry_at_ms {
                    running.push((s.name.clone(), s.attempt, None, Some(at_ms)));
                } else if s.state == StepState::Running {
                    running.push((
                        s.name.clone(),
                        s.attempt,
                        Some((s.job.clone(), s.kill)),
                        None,
                    ));
                }
            }
            let params: Vec<_> = running
                .iter()
                .map(|(step, ..)| flow.run.params_of(step).unwrap_or_default())
                .collect();
            for ((step, attempt, placed, retry), params) in running.into_iter().zip(params) {
                if let Some(at_ms) = retry {
                    self.arm_retry(&flow_id, step, at_ms.max(now), ctx);
                    continue;
                }
                let Some((job, kill)) = placed else { continue };
                let parent = ParentStep {
                    order_id: flow_id.clone(),
                    workflow: workflow.clone(),
                    step,
                    attempt,
                };
                if kill.is_some() {
                    let (p, cause) = (parent.clone(), kill);
                    ctx.run_later(Duration::ZERO, move |act, ctx| act.kill_step(p, cause, ctx));
                }
                self.place_step(parent, job, params, ctx);
            }
        }
        // dispatches what became ready but was not yet dispatched
        let _ = self.flow_event(&flow_id, Event::Start, ctx);
    }

    /// A workflow order ended: beyond [`KEEP_FINISHED`] ended ones, the
    /// oldest are forgotten (they stay in the journal).
    fn flow_finished(&mut self, flow_id: &str) {
        if let Some(flow) = self.flows.get(flow_id) {
            let info = flow.info();
            let event = OrderFinished {
                order_id: info.order_id.clone(),
                job: info.job.clone(),
                state: info.state,
                exit_code: None,
                signal: None,
                timed_out: false,
                reason: info.reason.clone(),
                subagent_id: None,
                attempt: info.attempt,
                duration_ms: info
                    .finished_at_ms
                    .zip(info.started_at_ms)
                    .map(|(f, s)| f.saturating_sub(s)),
                at_ms: now_ms(),
            };
            let s = self.bus.subjects();
            self.bus.post(
                s.event(&info.job, &info.order_id, EventKind::Finished),
                &event,
            );
        }
        let ended = self
            .flows
            .values()
            .filter(|f| f.state().is_terminal())
            .count();
        if ended > KEEP_FINISHED {
            if let Some(oldest) = self
                .flows
                .values()
                .filter(|f| f.state().is_terminal() && !self.writing.contains_key(&f.id))
                .min_by_key(|f| f.finished_at_ms)
                .map(|f| f.id.clone())
            {
                self.drop_flow(&oldest);
            }
        }
    }

    /// Publishes a `changed` event for each step that moved and for the
    /// order's own state.
    fn announce_changes(&self, before: &OrderInfo, after: &OrderInfo, now: u64) {
        let s = self.bus.subjects();
        let subject = s.event(&after.job, &after.order_id, EventKind::Changed);
        let workflow = after.job.clone();
        for (b, a) in before.steps.iter().zip(&after.steps) {
            if b.state == a.state && b.attempt == a.attempt {
                continue;
            }
            let step_order_id = (a.attempt > 0)
                .then(|| step_order_id(s.prefix(), &after.order_id, &a.name, a.attempt));
            let mut what = format!("step {} {}", a.name, step_state_word(a.state));
            if a.state == StepState::Running && a.attempt > 1 {
                what.push_str(&format!(" (attempt {})", a.attempt));
            }
            if a.forced {
                what.push_str(" (failed, counted as succeeded)");
            }
            let event = OrderChanged {
                order_id: after.order_id.clone(),
                workflow: workflow.clone(),
                state: after.state,
                step: Some(a.name.clone()),
                attempt: Some(a.attempt),
                step_state: Some(a.state),
                step_order_id,
                what,
                at_ms: now,
            };
            self.bus.post(subject.clone(), &event);
        }
        if before.state != after.state {
            let resumed = matches!(
                before.state,
                OrderState::Suspended | OrderState::Failed | OrderState::Suspending
            ) && after.state == OrderState::Running;
            let what = if resumed {
                "resumed".to_string()
            } else {
                after.state.as_str().to_string()
            };
            let event = OrderChanged {
                order_id: after.order_id.clone(),
                workflow,
                state: after.state,
                step: None,
                attempt: None,
                step_state: None,
                step_order_id: None,
                what,
                at_ms: now,
            };
            self.bus.post(subject, &event);
        }
    }

    /// Suspend, resume or cancel a workflow order: the reply is the order,
    /// or why the command is not allowed now.
    fn command_flow(
        &mut self,
        replier: &Replier,
        order_id: &str,
        event: Event,
        ctx: &mut Context<Self>,
    ) {
        if self.flows.get(order_id).is_some_and(|f| !f.durable) {
            let message = format!("order {order_id} is being stored right now; send it again");
            return self.error(replier, ErrorCode::Busy, message);
        }
        let label = match &event {
            Event::Suspend { .. } => "suspend",
            Event::Resume { .. } => "resume",
            _ => "cancel",
        };
        let then = Then::Reply {
            replier: replier.clone(),
        };
        let kill = matches!(
            event,
            Event::Suspend { kill: true } | Event::Cancel { kill: true }
        );
        let killing = |b: &Broker| -> Vec<ParentStep> {
            let Some(flow) = b.flows.get(order_id) else {
                return Vec::new();
            };
            flow.run
                .steps()
                .iter()
                .filter(|s| s.state == StepState::Running && s.kill.is_some())
                .map(|s| ParentStep {
                    order_id: order_id.to_string(),
                    workflow: flow.run.workflow().to_string(),
                    step: s.name.clone(),
                    attempt: s.attempt,
                })
                .collect()
        };
        // a kill asked before is sent again (its first delivery may be lost);
        // the run itself asks only once
        let asked_before = if kill { killing(self) } else { Vec::new() };
        match self.flow_event_then(order_id, event, then, ctx) {
            Ok(()) => {
                if let Some(flow) = self.flows.get(order_id) {
                    info!(order = %order_id, command = label, state = %flow.state(), "workflow order command");
                }
                for parent in asked_before {
                    self.kill_if_asked(&parent, ctx);
                }
            }
            Err(e) => {
                let code = match e {
                    TransitionError::UnknownStep { .. } => ErrorCode::InvalidParam,
                    _ => ErrorCode::InvalidState,
                };
                let message = format!("order {order_id}: {e}");
                self.error(replier, code, message);
            }
        }
    }

    /// For a step order: the subagent that ran the latest attempt of the
    /// steps it waits for (the step before it, in a chain).
    pub(super) fn previous_step_subagent(&self, order_id: &str) -> Option<String> {
        let parent = self.book.get(order_id)?.parent.as_ref()?;
        let flow = self.flows.get(&parent.order_id)?;
        let steps = flow.run.steps();
        let step = steps.iter().find(|s| s.name == parent.step)?;
        let before: Vec<&str> = step.deps.iter().map(|&d| steps[d].name.as_str()).collect();
        flow.history
            .iter()
            .filter(|h| before.contains(&h.step.as_str()) && h.subagent_id.is_some())
            .max_by_key(|h| h.finished_at_ms)
            .and_then(|h| h.subagent_id.clone())
    }

    /// Whether `order_id` is a workflow order this broker holds.
    pub(super) fn is_flow(&self, order_id: &str) -> bool {
        self.flows.contains_key(order_id)
    }

    pub(super) fn cancel_flow(
        &mut self,
        replier: &Replier,
        order_id: &str,
        kill: bool,
        ctx: &mut Context<Self>,
    ) {
        self.command_flow(replier, order_id, Event::Cancel { kill }, ctx);
    }

    pub(super) fn on_suspend(&mut self, req: Request<SuspendOrder>, ctx: &mut Context<Self>) {
        let SuspendOrder { order_id, kill } = req.body;
        if !self.is_flow(&order_id) {
            return self.not_a_flow(&req.replier, &order_id, "suspended");
        }
        self.command_flow(&req.replier, &order_id, Event::Suspend { kill }, ctx);
    }

    pub(super) fn on_resume(&mut self, req: Request<ResumeOrder>, ctx: &mut Context<Self>) {
        let ResumeOrder {
            order_id,
            from,
            force_succeeded,
        } = req.body;
        if !self.is_flow(&order_id) {
            return self.not_a_flow(&req.replier, &order_id, "resumed");
        }
        let event = Event::Resume {
            from,
            force_succeeded,
        };
        self.command_flow(&req.replier, &order_id, event, ctx);
    }

    fn not_a_flow(&self, replier: &Replier, order_id: &str, verb: &str) {
        let (code, message) = match self.book.get(order_id) {
            Some(order) if order.parent.is_some() => {
                let p = order.parent.as_ref().expect("checked");
                (
                    ErrorCode::InvalidState,
                    format!(
                        "order {order_id} runs step '{}' (attempt {}) of workflow order {}; only that order can be {verb}",
                        p.step, p.attempt, p.order_id
                    ),
                )
            }
            Some(order) => (
                ErrorCode::InvalidState,
                format!(
                    "order {order_id} runs job '{}', not a workflow: only workflow orders can be {verb} (cancel works for any order)",
                    order.job
                ),
            ),
            None => (
                ErrorCode::NotFound,
                format!(
                    "no workflow order {order_id} is held by this broker (see `baton order list`); succeeded and cancelled orders cannot be {verb}"
                ),
            ),
        };
        self.error(replier, code, message);
    }

    /// `baton order list`: held orders, newest first, filtered.
    pub(super) fn on_list(&mut self, req: Request<ListOrders>) {
        let q = req.body;
        let limit = q.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX) as usize;
        let keep = |o: &OrderSummary| {
            (q.steps || q.job.is_some() || o.parent.is_none())
                && q.workflow.as_ref().is_none_or(|w| {
                    o.workflow.as_ref() == Some(w)
                        || o.parent
                            .as_ref()
                            .is_some_and(|p| &p.workflow == w && q.steps)
                })
                && q.job.as_ref().is_none_or(|j| &o.job == j)
                && q.state.is_none_or(|s| o.state == s)
                && q.since_ms.is_none_or(|t| o.accepted_at_ms >= t)
                && q.until_ms.is_none_or(|t| o.accepted_at_ms < t)
        };
        let mut orders: Vec<OrderSummary> = self
            .book
            .iter()
            .map(|o| o.info().summary())
            .chain(self.flows.values().map(|f| f.info().summary()))
            .filter(keep)
            .collect();
        orders.sort_by(|a, b| {
            b.accepted_at_ms
                .cmp(&a.accepted_at_ms)
                .then_with(|| b.order_id.cmp(&a.order_id))
        });
        let truncated = orders.len() > limit;
        orders.truncate(limit);
        self.bus
            .reply(&req.replier, &OrderList { orders, truncated });
    }
}

fn info_id(parent: &ParentStep) -> String {
    format!("{}/{}#{}", parent.order_id, parent.step, parent.attempt)
}

fn valid_param(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && value.len() <= jobs::MAX_PARAM_BYTES
        && !value.contains('\0')
}

fn step_state_word(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running => "dispatched",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
}
