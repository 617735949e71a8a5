//! Death certificates: proof that a subagent process is dead, sent by its
//! reaper (`subagent/reaper.rs`) once it saw the process die, killed its
//! tasks' process groups and saw them empty.
//!
//! The gate lets a certificate through only when it is signed by the named
//! subagent's own identity. It counts only for the process it names
//! (`instance_id`): the orders whose task was placed on that process run
//! again at once (or fail, when not restartable), except tasks the reaper
//! could not kill (`survivors`), which stay in doubt until the orphan
//! timeout. A certificate naming a process the broker never placed anything
//! on and does not know is refused (`not_found`): a forged or mistaken one
//! changes nothing.

use std::collections::BTreeSet;

use actix::prelude::*;
use tracing::{info, warn};

use super::order_book::{Applied, OrderEvent};
use super::Broker;
use crate::bus::Request;
use crate::protocol::*;
use crate::time::now_ms;

impl Broker {
    pub(super) fn on_certificate(
        &mut self,
        req: Request<DeathCertificate>,
        ctx: &mut Context<Self>,
    ) {
        let c = req.body;
        let id = c.subagent_id.as_str();
        let current = self
            .registry
            .get(id)
            .is_some_and(|s| s.instance_id == c.instance_id);
        let survivors: BTreeSet<&str> = c.survivors.iter().map(String::as_str).collect();
        // the orders placed on that process: proven dead, or (survivors) in doubt
        let (survived, placed): (Vec<String>, Vec<String>) = self
            .book
            .on_subagent(id)
            .into_iter()
            .filter(|order_id| {
                self.book.get(order_id).is_some_and(|o| {
                    o.subagent_instance_id.as_deref() == Some(c.instance_id.as_str())
                })
            })
            .partition(|order_id| {
                self.book
                    .get(order_id)
                    .is_some_and(|o| o.task_id.as_deref().is_some_and(|t| survivors.contains(t)))
            });
        if !current && placed.is_empty() && survived.is_empty() {
            warn!(subagent = %id, instance = %c.instance_id, "death certificate for a process this broker does not know; ignored");
            let message = format!(
                "no process {} of subagent {id} is known here, and no task was placed on it: nothing to certify",
                c.instance_id
            );
            return self.error(&req.replier, ErrorCode::NotFound, message);
        }
        let doubt = self.registry.get(id).map(|s| s.doubt());
        if current && self.registry.declare_lost(id).is_some() {
            let how = format!(
                "lost: dead, certified by its reaper ({} task(s) killed{})",
                c.killed.len(),
                if survivors.is_empty() {
                    String::new()
                } else {
                    format!(", {} outlived SIGKILL", survivors.len())
                }
            );
            warn!(subagent = %id, instance = %c.instance_id, killed = c.killed.len(), survivors = survivors.len(), "subagent {how}");
            self.announce(id, SubagentState::Lost, &how);
        }
        let mut orders = 0;
        for order_id in placed {
            let task = self.book.get(&order_id).and_then(|o| o.task_id.clone());
            let event = OrderEvent::Certified {
                subagent_id: id.to_string(),
                instance_id: c.instance_id.clone(),
                at_ms: now_ms(),
            };
            if let Ok(Applied::Moved { to, .. }) = self.book.apply(&order_id, event) {
                orders += 1;
                if let Some(task) = task {
                    self.registry.release(id, &task, false);
                }
                info!(order = %order_id, subagent = %id, "task proven dead by its subagent's death certificate");
                self.after_move(&order_id, to, ctx);
            }
        }
        // what the reaper could not kill is in doubt, as for silence
        self.put_in_doubt(id, &survived, doubt.filter(|_| current), ctx);
        // a heartbeat it sent before dying must not bring it back
        self.remember_departed(&c.instance_id);
        self.bus
            .reply(&req.replier, &CertificateAccepted { orders });
        self.dispatch(ctx);
    }
}
