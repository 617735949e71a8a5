//! Operators' requests on workflow orders: suspend, resume, cancel (each
//! answered once the new state is stored), and the order list.

use actix::prelude::*;
use tracing::info;

use crate::broker::audit::Audited;
use crate::broker::core::Then;
use crate::broker::Broker;
use crate::bus::{Replier, Request};
use crate::protocol::*;
use crate::workflow::{Event, TransitionError};

/// Default and largest `limit` of an order list.
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 10_000;

impl Broker {
    /// Suspend, resume or cancel a workflow order: the reply is the order,
    /// or why the command is not allowed now. It is audited once the order
    /// takes it (or refuses it); the reply follows once the order is stored.
    pub(in crate::broker) fn command_flow(
        &mut self,
        (replier, audited): (&Replier, &Audited),
        order_id: &str,
        event: Event,
        ctx: &mut Context<Self>,
    ) {
        if self.core.flows.get(order_id).is_some_and(|f| !f.durable) {
            let message = format!("order {order_id} is being stored right now; send it again");
            return self.refuse(replier, audited, ErrorCode::Busy, message);
        }
        let label = match &event {
            Event::Suspend { .. } => "suspend",
            Event::Resume { .. } => "resume",
            _ => "cancel",
        };
        let then = Then::Reply {
            to: replier.clone(),
        };
        let kill = matches!(
            event,
            Event::Suspend { kill: true } | Event::Cancel { kill: true }
        );
        let killing = |b: &Broker| -> Vec<ParentStep> {
            let Some(flow) = b.core.flows.get(order_id) else {
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
                self.audit(audited, Ok(()));
                if let Some(flow) = self.core.flows.get(order_id) {
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
                self.refuse(replier, audited, code, message);
            }
        }
    }

    /// Whether `order_id` is a workflow order this broker holds.
    pub(in crate::broker) fn is_flow(&self, order_id: &str) -> bool {
        self.core.flows.contains_key(order_id)
    }

    pub(in crate::broker) fn cancel_flow(
        &mut self,
        asked: (&Replier, &Audited),
        order_id: &str,
        kill: bool,
        ctx: &mut Context<Self>,
    ) {
        self.command_flow(asked, order_id, Event::Cancel { kill }, ctx);
    }

    pub(in crate::broker) fn on_suspend(
        &mut self,
        req: Request<SuspendOrder>,
        ctx: &mut Context<Self>,
    ) {
        let audited = Audited::suspend(&req.body, req.sender.get());
        let asked = (&req.replier, &audited);
        let SuspendOrder { order_id, kill } = req.body;
        if !self.is_flow(&order_id) {
            return self.not_a_flow(asked, &order_id, "suspended");
        }
        self.command_flow(asked, &order_id, Event::Suspend { kill }, ctx);
    }

    pub(in crate::broker) fn on_resume(
        &mut self,
        req: Request<ResumeOrder>,
        ctx: &mut Context<Self>,
    ) {
        let audited = Audited::resume(&req.body, req.sender.get());
        let ResumeOrder {
            order_id,
            from,
            force_succeeded,
        } = req.body;
        let asked = (&req.replier, &audited);
        if !self.is_flow(&order_id) {
            return self.not_a_flow(asked, &order_id, "resumed");
        }
        let event = Event::Resume {
            from,
            force_succeeded,
        };
        self.command_flow(asked, &order_id, event, ctx);
    }

    pub(in crate::broker) fn not_a_flow(
        &self,
        (replier, audited): (&Replier, &Audited),
        order_id: &str,
        verb: &str,
    ) {
        let (code, message) = match self.core.book.get(order_id) {
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
                    "no order {order_id} is held by this broker; check the id with `baton order list`"
                ),
            ),
        };
        self.refuse(replier, audited, code, message);
    }

    /// `baton order list`: held orders, newest first, filtered.
    pub(in crate::broker) fn on_list(&mut self, req: Request<ListOrders>) {
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
            .core
            .book
            .iter()
            .map(|o| o.info().summary())
            .chain(self.core.flows.values().map(|f| f.info().summary()))
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
