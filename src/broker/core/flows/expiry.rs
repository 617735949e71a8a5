//! Failed workflow orders expire: a failed order stays resumable for
//! `broker.failed_hold` after it failed (its record says until when,
//! `resumable_until_ms`); then it expires: it stays failed, its record
//! says when (`expired_at_ms`, stored like any change, and a `changed`
//! event "expired" follows), it can no longer be resumed or cancelled
//! ([`Refusal::Expired`]), and it counts as ended, so the bounded memory
//! of ended workflow orders (`broker.keep_finished`) lets it go.
//!
//! A timer ([`Timer::Expire`]) is armed when an order fails, for the
//! deadline it failed with; a timer for an older deadline (the order was
//! resumed and failed again) does nothing. A broker taking over computes
//! each failed order's deadline from its record (when it failed, plus its
//! own `broker.failed_hold`), stores it if it moved, expires the overdue
//! ones at once and arms a timer for the others.

use std::time::Duration;

use tracing::info;

use super::super::{Core, Refusal, Then, Timer};
use crate::workflow::RunState;

impl<R: Clone + std::fmt::Debug> Core<R> {
    fn failed_hold_ms(&self) -> u64 {
        self.config.broker.failed_hold.as_millis() as u64
    }

    /// After a workflow order changed: if it failed, hold it resumable
    /// until its deadline (set on the order, so its record says it).
    pub(super) fn hold_if_failed(&mut self, flow_id: &str) {
        let hold_ms = self.failed_hold_ms();
        let until = self.book.flow_mut(flow_id).and_then(|f| f.hold(hold_ms));
        if let Some(until) = until {
            self.arm_expiry(flow_id, until);
        }
    }

    fn arm_expiry(&mut self, flow_id: &str, at_ms: u64) {
        let after = Duration::from_millis(at_ms.saturating_sub(self.now.ms));
        let flow_id = flow_id.to_string();
        self.later(after, Timer::Expire { flow_id, at_ms });
    }

    /// [`Timer::Expire`] came due: the order expires if it still waits
    /// for that deadline.
    pub(in crate::broker::core) fn expire_due(&mut self, flow_id: String, at_ms: u64) {
        let now = self.now.ms;
        let Some(flow) = self.book.flow_mut(&flow_id) else {
            return;
        };
        if flow.resumable_until_ms != Some(at_ms) || flow.state() != RunState::Failed {
            return;
        }
        if at_ms > now {
            // early by the wall clock (it stepped back): wait again
            return self.arm_expiry(&flow_id, at_ms);
        }
        let before = flow.info();
        if !flow.expire(now) {
            return;
        }
        let after = flow.info();
        info!(order = %flow_id, "failed workflow order expired; it can no longer be resumed");
        self.announce_changes(&before, &after);
        self.store(&flow_id, Then::Nothing);
        self.forget_oldest_ended();
    }

    /// After a takeover, before workflow orders are picked up (one that
    /// fails then has its own timer): each failed workflow order's
    /// deadline from its record and this broker's hold; the overdue ones
    /// expire now.
    pub(in crate::broker::core) fn hold_failed_flows(&mut self) {
        let hold_ms = self.failed_hold_ms();
        for flow_id in self.book.flow_ids() {
            let Some(flow) = self.book.flow_mut(&flow_id) else {
                continue;
            };
            if flow.state() != RunState::Failed || flow.expired_at_ms.is_some() {
                continue;
            }
            let moved = flow.hold(hold_ms).is_some();
            let Some(until) = flow.resumable_until_ms else {
                continue;
            };
            if until <= self.now.ms {
                self.expire_due(flow_id, until);
                continue;
            }
            if moved {
                self.store(&flow_id, Then::Nothing);
            }
            self.arm_expiry(&flow_id, until);
        }
    }

    /// Why a command on an expired workflow order is refused, if it is.
    pub(in crate::broker::core) fn expired_refusal(
        &self,
        flow_id: &str,
        verb: &'static str,
    ) -> Option<Refusal> {
        let at_ms = self.book.flow(flow_id)?.expired_at_ms?;
        let at = std::time::UNIX_EPOCH + Duration::from_millis(at_ms);
        Some(Refusal::Expired {
            order: flow_id.to_string(),
            at: humantime::format_rfc3339_seconds(at).to_string(),
            verb,
        })
    }
}
