//! After a takeover: every workflow order picks up where its record left
//! it, and step orders no workflow order runs are stopped.

use std::time::Duration;

use tracing::warn;

use super::super::{Core, Then, Timer};
use crate::protocol::*;
use crate::workflow::Event as FlowEvent;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// After a takeover: every workflow order picks up where it was.
    pub(in crate::broker::core) fn resume_flows(&mut self) {
        for flow_id in self.book.flow_ids() {
            let active = self.book.flow(&flow_id).map(|f| f.state());
            if active.is_some_and(|s| !s.is_held() && !s.is_final()) {
                self.resume_flow(&flow_id);
            }
        }
        // A workflow order is stored after its step orders, so a crash can
        // leave a step order its workflow order never knew it placed (or
        // no longer wants): it is stopped. One it still wants was adopted
        // above, when the step was dispatched again under the same id.
        self.stop_unwanted_steps(None);
    }

    /// Cancels (with kill) the unfinished step orders no workflow order
    /// runs (of `flow_id` only, if given). A workflow order that can
    /// still change records the attempt, so its next one is fresh.
    pub(in crate::broker::core) fn stop_unwanted_steps(&mut self, flow_id: Option<&str>) {
        let mut orphans: Vec<(String, ParentStep, String)> = (self.book.iter())
            .filter(|o| !o.phase.is_final())
            .filter_map(|o| Some((o.id.clone(), o.parent.clone()?, o.job.clone())))
            .filter(|(_, p, _)| flow_id.is_none_or(|f| p.order_id == f) && !self.runs(p))
            .collect();
        orphans.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, parent, job) in orphans {
            warn!(step_order = %id, "step order its workflow order does not run; cancelled");
            let flow = self.book.flow_mut(&parent.order_id);
            if let Some(flow) = flow.filter(|f| !f.state().is_terminal()) {
                flow.run.note_attempt(&parent.step, parent.attempt);
                flow.dispatched(&parent.step, parent.attempt, &job, &id);
                self.store(&parent.order_id, Then::Nothing);
            }
            let reason = "its workflow order does not run this step attempt";
            let _ = self.cancel(&id, true, reason);
        }
    }

    /// Picks a workflow order up where its record left it: running steps
    /// placed (or found), kills sent again, retries re-armed, ready steps
    /// dispatched.
    pub(in crate::broker::core) fn resume_flow(&mut self, flow_id: &str) {
        let Some(flow) = self.book.flow(flow_id) else {
            return;
        };
        let workflow = flow.run.workflow().to_string();
        let mut retries = Vec::new();
        let mut running = Vec::new();
        for s in flow.run.steps() {
            if let Some(at_ms) = s.retry_at_ms {
                retries.push((s.name.clone(), at_ms));
            } else if s.state == StepState::Running {
                let params = flow.run.params_of(&s.name).unwrap_or_default();
                let parent = ParentStep {
                    order_id: flow_id.to_string(),
                    workflow: workflow.clone(),
                    step: s.name.clone(),
                    attempt: s.attempt,
                };
                running.push((parent, s.job.clone(), s.kill, params));
            }
        }
        for (step, at_ms) in retries {
            self.arm_retry(flow_id, step, at_ms.max(self.now.ms));
        }
        for (parent, job, kill, params) in running {
            if kill.is_some() {
                let timer = Timer::KillStep {
                    parent: parent.clone(),
                    cause: kill,
                };
                self.later(Duration::ZERO, timer);
            }
            self.place_step(parent, job, params);
        }
        // dispatches what became ready but was not yet dispatched
        let _ = self.flow_event(flow_id, FlowEvent::Start);
    }
}
