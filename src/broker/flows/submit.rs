//! Submitting a workflow order: stored pending, answered, then started.

use actix::prelude::*;
use tracing::{info, warn};

use crate::broker::{act, core, Broker};
use crate::bus::{BusError, Replier};
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::params::{check_order_params, resolve_order_params};
use crate::workflow::{Event, FlowOrder};

impl Broker {
    /// `baton submit WORKFLOW`: checks the order's parameters against the
    /// workflow's (defaults filled in) and what its steps' jobs require,
    /// answers a repeated request id, or stores a pending workflow order,
    /// answers, and starts it.
    pub(in crate::broker) fn on_submit_workflow(
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
        let params = match resolve_order_params(&spec, &params) {
            Ok(params) => params,
            Err(e) => return self.error(&replier, ErrorCode::InvalidParam, e.to_string()),
        };
        let core = self.core.at(act::now());
        if core.answer_repeat(&replier, request_id.as_deref(), &name, &params) {
            return self.flush(ctx);
        }
        let job_of = |name: &str| self.core.jobs.get(name).cloned();
        if let Err(message) = check_order_params(&spec, &job_of, &params) {
            return self.error(&replier, ErrorCode::InvalidParam, message);
        }
        let order_id = self.core.at(act::now()).new_order_id(request_id.as_deref());
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
                    act.core.set_revision(&order_id, revision);
                    if let Some(flow) = act.core.flows.get_mut(&order_id) {
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
                    act.core.publish(core::Event::Accepted(event));
                    act.flush(ctx);
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
                    act.core.answer_stored(&replier, &info, existing.as_ref());
                    act.flush(ctx);
                }
                Err(e) => {
                    warn!(error = %e, "workflow order not stored; submit refused");
                    act.drop_flow(&order_id);
                    let refusal = core::Refusal::NotStored(e.to_string());
                    act.bus.reply(&replier, &refusal.reply());
                }
            }
        }));
    }

    /// Holds a workflow order in memory, findable by its request id.
    pub(in crate::broker) fn hold_flow(&mut self, flow: FlowOrder) {
        if let Some(r) = &flow.request_id {
            self.core.flow_requests.insert(r.clone(), flow.id.clone());
        }
        self.core.flows.insert(flow.id.clone(), flow);
    }

    pub(in crate::broker) fn drop_flow(&mut self, flow_id: &str) {
        if let Some(r) = self.core.flows.remove(flow_id).and_then(|f| f.request_id) {
            self.core.flow_requests.remove(&r);
        }
    }
}
