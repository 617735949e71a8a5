//! Operators' requests on workflow orders: suspend, resume and cancel,
//! each answered once the order's new state is stored.

use tracing::info;

use super::super::{Core, Refusal, Then};
use crate::protocol::*;
use crate::workflow::Event as FlowEvent;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Suspend, resume or cancel a workflow order: answered with the order
    /// once it is stored, or with why the command is not allowed now.
    pub(in crate::broker::core) fn command_flow(
        &mut self,
        to: &R,
        order_id: &str,
        event: FlowEvent,
    ) {
        if self.book.flow(order_id).is_some_and(|f| !f.durable) {
            return self.refuse(to, Refusal::FlowBeingStored(order_id.to_string()));
        }
        let (label, verb) = match &event {
            FlowEvent::Suspend { .. } => ("suspend", "suspended"),
            FlowEvent::Resume { .. } => ("resume", "resumed"),
            _ => ("cancel", "cancelled"),
        };
        if let Some(refusal) = self.expired_refusal(order_id, verb) {
            return self.refuse(to, refusal);
        }
        let kill = matches!(
            event,
            FlowEvent::Suspend { kill: true } | FlowEvent::Cancel { kill: true }
        );
        // a kill asked before is sent again (its first delivery may be
        // lost); the run itself asks only once
        let asked_before = if kill {
            self.killing(order_id)
        } else {
            Vec::new()
        };
        let then = Then::Reply { to: to.clone() };
        match self.flow_event_then(order_id, event, then) {
            Ok(()) => {
                if let Some(flow) = self.book.flow(order_id) {
                    info!(order = %order_id, command = label, state = %flow.state(), "workflow order command");
                }
                for parent in asked_before {
                    self.kill_if_asked(&parent);
                }
            }
            Err(error) => {
                let order = order_id.to_string();
                self.refuse(to, Refusal::NotNow { order, error });
            }
        }
    }

    /// The step attempts of a workflow order that run with a kill asked.
    fn killing(&self, order_id: &str) -> Vec<ParentStep> {
        let Some(flow) = self.book.flow(order_id) else {
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
    }

    pub(in crate::broker::core) fn on_suspend(&mut self, to: R, req: SuspendOrder) {
        let SuspendOrder { order_id, kill } = req;
        match self.book.flow(&order_id) {
            Some(_) => self.command_flow(&to, &order_id, FlowEvent::Suspend { kill }),
            None => self.not_a_flow(&to, &order_id, "suspended"),
        }
    }

    pub(in crate::broker::core) fn on_resume(&mut self, to: R, req: ResumeOrder) {
        let ResumeOrder {
            order_id,
            from,
            force_succeeded,
        } = req;
        let event = FlowEvent::Resume {
            from,
            force_succeeded,
        };
        match self.book.flow(&order_id) {
            Some(_) => self.command_flow(&to, &order_id, event),
            None => self.not_a_flow(&to, &order_id, "resumed"),
        }
    }

    /// Refuses a workflow command on an order that is no workflow order.
    fn not_a_flow(&mut self, to: &R, order_id: &str, verb: &'static str) {
        let order = order_id.to_string();
        let refusal = match self.book.get(order_id) {
            Some(o) => match &o.parent {
                Some(p) => Refusal::StepOrder {
                    order,
                    step: p.step.clone(),
                    attempt: p.attempt,
                    flow: p.order_id.clone(),
                    verb,
                },
                None => Refusal::JobOrder {
                    order,
                    job: o.job.clone(),
                    verb,
                },
            },
            None => Refusal::NoFlow { order, verb },
        };
        self.refuse(to, refusal);
    }
}
