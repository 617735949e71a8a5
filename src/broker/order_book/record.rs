//! A job order as its journal record ([`OrderInfo`]) holds it: the record
//! an [`Order`] is stored and answered as ([`Order::info`]), and the order
//! a broker taking over rebuilds from it ([`Order::restore`]), so that
//! `restore(info).info() == info`.

use super::attempts::Attempts;
use super::{Order, Outcome, Phase};
use crate::protocol::{OrderInfo, OrderState};

impl Order {
    /// An order as the journal stored it, for a broker taking over:
    /// `accepted` without a task waits in the queue; `accepted` with a task
    /// (dispatched, never confirmed) and `running` keep their task on its
    /// subagent, `inherited`; final orders stay as they ended. `restartable`
    /// comes from the order's job.
    pub fn restore(info: &OrderInfo, restartable: bool) -> Order {
        let mut order = Order::new(
            info.order_id.clone(),
            info.job.clone(),
            info.params.clone(),
            info.request_id.clone(),
            info.accepted_at_ms,
        );
        order.slot_ms = info.slot_ms;
        order.submitted_by.clone_from(&info.submitted_by);
        order.parent.clone_from(&info.parent);
        order.restartable = restartable;
        order.attempt = info.attempt;
        order.cancel_requested = info.cancel_requested;
        order.durable = true;
        order.started_at_ms = info.started_at_ms;
        order.task_id = info.task_id.clone();
        order.subagent_id = info.subagent_id.clone();
        order.subagent_instance_id = info.subagent_instance_id.clone();
        order.retries = info.retries;
        order.attempts = Attempts::restore(info);
        order.spread = info.spread;
        order.members.clone_from(&info.members);
        order.member_of.clone_from(&info.member_of);
        order.pin.clone_from(&info.pin);
        let spread = order.spread.is_some() && !order.members.is_empty();
        let placed = order.task_id.is_some() && order.subagent_id.is_some();
        order.phase = match info.state {
            // placed on its members: they run (and end) as orders of their own
            OrderState::Running if spread => Phase::Spread,
            OrderState::Accepted if placed => Phase::Dispatching,
            OrderState::Accepted if info.retry_at_ms.is_some() => {
                order.retry_at_ms = info.retry_at_ms;
                order.retry_reason.clone_from(&info.reason);
                Phase::Retrying
            }
            OrderState::Running if placed => {
                order.confirmed = true;
                Phase::Running
            }
            // a task never placed (a running one without a task is never
            // journaled) waits for a subagent; the workflow-only states
            // never describe a plain order
            OrderState::Accepted
            | OrderState::Running
            | OrderState::Suspending
            | OrderState::Suspended
            | OrderState::Cancelling => {
                order.task_id = None;
                order.subagent_id = None;
                order.subagent_instance_id = None;
                Phase::Queued
            }
            OrderState::Succeeded => Phase::Succeeded,
            OrderState::Failed => Phase::Failed,
            OrderState::Cancelled => Phase::Cancelled,
        };
        order.inherited = matches!(order.phase, Phase::Dispatching | Phase::Running);
        if order.phase.is_final() {
            order.outcome = Some(Outcome {
                exit_code: info.exit_code,
                signal: info.signal,
                timed_out: info.timed_out,
                error: info.reason.clone(),
                started_at_ms: info.started_at_ms,
                finished_at_ms: info.finished_at_ms.unwrap_or(info.accepted_at_ms),
                outputs: info.outputs.clone(),
            });
        }
        order
    }

    /// The order as clients and the journal see it.
    pub fn info(&self) -> OrderInfo {
        let outcome = self.outcome.clone().unwrap_or_default();
        OrderInfo {
            params: self.params.clone(),
            attempt: self.attempt,
            subagent_id: self.subagent_id.clone(),
            task_id: self.task_id.clone(),
            subagent_instance_id: self.subagent_instance_id.clone(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            reason: outcome.error.or_else(|| match self.phase {
                Phase::Orphaned => Some(in_doubt(self.rerun_at_ms)),
                Phase::Retrying => self.retry_reason.clone(),
                _ => None,
            }),
            request_id: self.request_id.clone(),
            slot_ms: self.slot_ms,
            cancel_requested: self.cancel_requested,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.outcome.as_ref().map(|o| o.finished_at_ms),
            outputs: outcome.outputs,
            parent: self.parent.clone(),
            submitted_by: self.submitted_by.clone(),
            retries: self.retries,
            retry_at_ms: self.retry_at_ms,
            attempts: self.attempts.kept.clone(),
            attempts_dropped: self.attempts.dropped,
            spread: self.spread,
            members: self.members.clone(),
            member_of: self.member_of.clone(),
            pin: self.pin.clone(),
            ..OrderInfo::new(
                self.id.clone(),
                self.job.clone(),
                self.phase.wire(),
                self.accepted_at_ms,
            )
        }
    }
}

/// Why an order's task is in doubt, and until when at the latest (pure).
fn in_doubt(until_ms: Option<u64>) -> String {
    let why = "task in doubt: waiting for its result or its subagent's orphan timeout";
    match until_ms {
        Some(ms) => format!(
            "{why} (decided by {} at the latest)",
            crate::time::utc_time_of_day(ms)
        ),
        None => why.to_string(),
    }
}

#[cfg(test)]
mod in_doubt_tests {
    use super::in_doubt;

    #[test]
    fn a_task_in_doubt_says_by_when_it_is_decided() {
        assert_eq!(
            in_doubt(Some(3_723_000)),
            "task in doubt: waiting for its result or its subagent's orphan timeout \
             (decided by 01:02:03 UTC at the latest)"
        );
        assert!(!in_doubt(None).contains("decided"));
    }
}
