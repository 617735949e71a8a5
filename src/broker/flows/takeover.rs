//! After a takeover: every workflow order picks up where its record left
//! it, and step orders no workflow order runs are stopped.

use std::time::Duration;

use actix::prelude::*;
use tracing::warn;

use crate::broker::core::Then;
use crate::broker::Broker;
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::Event;

impl Broker {
    /// After a takeover: every workflow order picks up where it was.
    pub(in crate::broker) fn resume_flows(&mut self, ctx: &mut Context<Self>) {
        let active: Vec<String> = self
            .core
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
            .core
            .book
            .iter()
            .filter(|o| !o.phase.is_final())
            .filter_map(|o| {
                let p = o.parent.as_ref()?;
                let wanted = self
                    .core
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
                self.core.book.get(&id).and_then(|o| o.parent.clone()),
                self.core.book.get(&id).map(|o| o.job.clone()),
            ) else {
                continue;
            };
            if let Some(flow) = self.core.flows.get_mut(&parent.order_id) {
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
    pub(in crate::broker) fn resume_flow(&mut self, flow_id: &str, ctx: &mut Context<Self>) {
        let flow_id = flow_id.to_string();
        {
            let Some(flow) = self.core.flows.get(&flow_id) else {
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
}
