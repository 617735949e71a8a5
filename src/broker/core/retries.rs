//! Job orders waiting for a retry (`Phase::Retrying`, decided by the order
//! book from its job's `retry` policy, `jobs::retry`): the timer that
//! brings each back to the queue.
//!
//! The due time is journaled with the order (`retry_at_ms`) before anything
//! waits on it: the failed task's result is acknowledged, and the timer
//! armed, only once that write landed ([`Core::retry_stored`]); a write
//! that did not land is written again until it does. A broker taking over
//! arms the timer of every order its journal shows waiting
//! ([`Core::arm_retries`]), at once for one overdue. A cancel ends a
//! waiting order at once; a timer that finds its order no longer waiting
//! does nothing.

use std::time::Duration;

use tracing::info;

use super::super::order_book::{Applied, Order, OrderEvent, Phase};
use super::{Core, Then, Timer};
use crate::protocol::OrderInfo;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A job order as its journal record holds it, with its job's
    /// `restartable` and `retry` as deployed now.
    pub(super) fn restored(&self, info: &OrderInfo) -> Order {
        let job = self.jobs.get(&info.job);
        let restartable = job.is_some_and(|j| j.restartable);
        Order::restore(info, restartable).with_retry(job.and_then(|j| j.retry))
    }

    /// Arms the timer of every order waiting for its retry (after a takeover).
    pub(super) fn arm_retries(&mut self) {
        let mut waiting: Vec<(String, u64)> = (self.book.iter())
            .filter(|o| o.phase == Phase::Retrying)
            .filter_map(|o| Some((o.id.clone(), o.retry_at_ms?)))
            .collect();
        waiting.sort();
        for (order_id, at_ms) in waiting {
            self.arm_retry_of(order_id, at_ms);
        }
    }

    fn arm_retry_of(&mut self, order_id: String, at_ms: u64) {
        let after = Duration::from_millis(at_ms.saturating_sub(self.now.ms));
        self.later(after, Timer::OrderRetry { order_id });
    }

    /// An order's record landed: one stored waiting for its retry (and
    /// still waiting for that one) gets its timer.
    pub(super) fn retry_stored(&mut self, info: &OrderInfo) {
        let Some(at_ms) = info.retry_at_ms else {
            return;
        };
        let waiting = self.book.get(&info.order_id).is_some_and(|o| {
            o.phase == Phase::Retrying && o.retry_at_ms == Some(at_ms) && info.task_id.is_none()
        });
        if waiting {
            self.arm_retry_of(info.order_id.clone(), at_ms);
        }
    }

    /// [`Timer::OrderRetry`] came due: the order waits for a subagent again.
    pub(super) fn order_retry_due(&mut self, order_id: String) {
        let event = OrderEvent::RetryDue { at_ms: self.now.ms };
        match self.book.apply(&order_id, event) {
            Ok(Applied::Moved { .. }) => {
                info!(order = %order_id, "retry due; the order waits for a subagent");
                self.store(&order_id, Then::Nothing);
                self.dispatch();
            }
            _ => {
                // early by the wall clock (it stepped back): wait again
                let early = (self.book.get(&order_id))
                    .filter(|o| o.phase == Phase::Retrying)
                    .and_then(|o| o.retry_at_ms);
                if let Some(at_ms) = early {
                    self.arm_retry_of(order_id, at_ms);
                }
            }
        }
    }
}
