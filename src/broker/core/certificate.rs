//! Proof of death from a subagent's reaper (`subagent/reaper.rs`): a
//! [`DeathCertificate`] on `{p}.broker.certificate` counts only when signed
//! by the named subagent's own identity (`gate.rs`) and only for the orders
//! placed on the process it names (`instance_id`); one naming a process the
//! broker does not know and never placed anything on is answered
//! `not_found`. Tasks whose groups outlived SIGKILL (`survivors`) stay in
//! doubt until the orphan deadline, as for silence (`subagents.rs`).

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::super::order_book::{Applied, OrderEvent};
use super::{Core, Refusal, Reply};
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A subagent process that is gone for good (left, or certified dead):
    /// a heartbeat of its still in flight must not bring it back.
    pub(in crate::broker) fn remember_departed(&mut self, instance_id: &str) {
        if !self.departed.iter().any(|i| i == instance_id) {
            self.departed.push_back(instance_id.to_string());
            if self.departed.len() > 1024 {
                self.departed.pop_front();
            }
        }
    }
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    pub(super) fn on_certificate(&mut self, to: R, c: DeathCertificate) {
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
            let refusal = Refusal::UnknownProcess {
                subagent: id.to_string(),
                instance: c.instance_id.clone(),
            };
            return self.refuse(&to, refusal);
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
                at_ms: self.now.ms,
            };
            if let Ok(Applied::Moved { to, .. }) = self.book.apply(&order_id, event) {
                orders += 1;
                if let Some(task) = task {
                    self.registry.release(id, &task, false);
                }
                info!(order = %order_id, subagent = %id, "task proven dead by its subagent's death certificate");
                self.after_move(&order_id, to);
            }
        }
        // what the reaper could not kill is in doubt, as for silence
        self.put_in_doubt(id, &survived, doubt.filter(|_| current));
        // a heartbeat it sent before dying must not bring it back
        self.remember_departed(&c.instance_id);
        self.reply(&to, Reply::Certified(CertificateAccepted { orders }));
        self.dispatch();
    }
}
