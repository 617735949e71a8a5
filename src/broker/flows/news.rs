//! What a workflow order tells the world: `changed` events for each step
//! that moved and for the order, `finished` when it ends.

use crate::broker::core::Event;
use crate::broker::{Broker, KEEP_FINISHED};
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::step_order_id;

impl Broker {
    /// A workflow order ended: beyond [`KEEP_FINISHED`] ended ones, the
    /// oldest are forgotten (they stay in the journal).
    pub(in crate::broker) fn flow_finished(&mut self, flow_id: &str) {
        if let Some(flow) = self.core.flows.get(flow_id) {
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
            // published once the order's final state is stored (the
            // journal's `written`), as for any order
            self.core.unannounced.insert(info.order_id.clone(), event);
        }
        let ended = self
            .core
            .flows
            .values()
            .filter(|f| f.state().is_terminal())
            .count();
        if ended > KEEP_FINISHED {
            if let Some(oldest) = self
                .core
                .flows
                .values()
                .filter(|f| f.state().is_terminal() && !self.core.writing.contains_key(&f.id))
                .min_by_key(|f| f.finished_at_ms)
                .map(|f| f.id.clone())
            {
                self.drop_flow(&oldest);
            }
        }
    }

    /// Publishes a `changed` event for each step that moved and for the
    /// order's own state.
    pub(in crate::broker) fn announce_changes(
        &mut self,
        before: &OrderInfo,
        after: &OrderInfo,
        now: u64,
    ) {
        let s = self.bus.subjects().clone();
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
            self.core.publish(Event::Changed(event));
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
            self.core.publish(Event::Changed(event));
        }
    }
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
