//! Submitting a workflow order: stored pending, answered, then started.

use tracing::{info, warn};

use super::super::submit::Pending;
use super::super::{Core, Created, Event, Refusal, Reply};
use crate::protocol::*;
use crate::workflow::params::{check_order_params, resolve_order_params};
use crate::workflow::{Event as FlowEvent, FlowOrder};

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// `baton submit WORKFLOW`: checks the order's parameters against the
    /// workflow's (defaults filled in) and what its steps' jobs require,
    /// answers a repeated request id, or stores a pending workflow order,
    /// answers, and starts it.
    pub(in crate::broker::core) fn submit_workflow(
        &mut self,
        to: R,
        spec: &WorkflowSpec,
        submit: SubmitOrder,
        by: Option<String>,
    ) {
        let SubmitOrder {
            job: name,
            params,
            request_id,
            slot_ms,
        } = submit;
        let params = match resolve_order_params(spec, &params) {
            Ok(params) => params,
            Err(e) => return self.refuse(&to, Refusal::InvalidParam(e.to_string())),
        };
        if self.answer_repeat(&to, request_id.as_deref(), &name, &params) {
            return;
        }
        let job_of = |name: &str| self.jobs.get(name).cloned();
        if let Err(message) = check_order_params(spec, &job_of, &params) {
            return self.refuse(&to, Refusal::InvalidParam(message));
        }
        let order_id = self.new_order_id(request_id.as_deref());
        let idempotent = request_id.is_some();
        let flow = FlowOrder::new(order_id, spec, params, request_id, slot_ms, self.now.ms);
        let mut flow = match flow {
            Ok(flow) => flow,
            Err(e) => return self.refuse(&to, Refusal::InvalidWorkflow(e.to_string())),
        };
        flow.submitted_by = by;
        let info = Box::new(flow.info());
        self.book.insert_flow(flow);
        self.creating(&info.order_id, Pending::Flow { to });
        self.emit(super::super::Effect::Create { info, idempotent });
    }

    /// A workflow order's record was created, found, or not stored.
    pub(in crate::broker::core) fn flow_created(
        &mut self,
        to: R,
        info: OrderInfo,
        created: Created,
    ) {
        let order_id = info.order_id.clone();
        match created {
            Created::At(revision) => {
                self.set_revision(&order_id, revision);
                if let Some(flow) = self.book.flow_mut(&order_id) {
                    flow.durable = true;
                }
                let reply = SubmitReply {
                    order_id: order_id.clone(),
                    job: info.job.clone(),
                    state: OrderState::Accepted,
                    duplicate: false,
                };
                self.reply(&to, Reply::Submitted(reply));
                self.publish(Event::accepted(&info));
                info!(order = %order_id, workflow = %info.job, "workflow order accepted");
                let _ = self.flow_event(&order_id, FlowEvent::Start);
            }
            Created::Exists(existing) => {
                self.book.remove_flow(&order_id);
                let stored = existing.map(|(stored, revision)| (*stored, revision));
                self.answer_stored(&to, &info, stored.as_ref().map(|(s, _)| s));
                // stored by an earlier try whose answer was lost: ours now
                let Some((stored, revision)) = stored else {
                    return;
                };
                if let Some(flow) = FlowOrder::restore(&stored).filter(|f| !f.state().is_final()) {
                    info!(order = %flow.id, "workflow order stored by an earlier submit taken up");
                    self.book.insert_flow(flow);
                    self.set_revision(&order_id, revision);
                    self.resume_flow(&order_id);
                }
            }
            Created::Failed(e) if info.request_id.is_none() => {
                // its write may have landed, and no repeat can find it: the
                // record is made to say it never runs (written until stored)
                warn!(order = %order_id, error = %e, "workflow order not confirmed stored; submit refused, and the order cancelled in case it was");
                let _ = self.flow_event(&order_id, FlowEvent::Cancel { kill: false });
                if let Some(flow) = self.book.flow_mut(&order_id) {
                    // being written until stored: commands need not wait
                    flow.durable = true;
                }
                self.refuse(&to, Refusal::NotStored(e));
            }
            Created::Failed(e) => {
                warn!(error = %e, "workflow order not stored; submit refused");
                self.book.remove_flow(&order_id);
                self.refuse(&to, Refusal::NotStored(e));
            }
        }
    }
}
