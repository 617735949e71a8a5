//! Which records of the orders journal have been kept long enough: the
//! rule is written once here, and used by a broker taking over (it reads
//! every record anyway, `core/takeover.rs`) and by the active broker's
//! periodic sweep (`sweep.rs`). Pure.
//!
//! A record goes `broker.order_retention` after its order ended for good:
//! a job order (or step order) once final, a workflow order once
//! succeeded or cancelled, or failed and expired (`broker.failed_hold`
//! after it failed; until then it can be resumed). Never an unfinished
//! order, whatever its age (so the bucket takes no `max_age`: a waiting
//! order's record is not rewritten while it waits), and never a step
//! order whose workflow order can still change (resuming it reads its
//! step orders' history from memory, and a broker taking over finds a
//! step attempt again by its step order's record). Each record is
//! removed with a compare-and-delete on the revision it was read at, so a
//! record written since (a submit reusing a request id after its first
//! order was removed) is left alone.
//!
//! A request id is remembered only as long as its order's record: a
//! repeated submit after the retention makes a new order.

use crate::protocol::{OrderInfo, OrderState};

/// Whether a record's order never changes again: ended, and not a failed
/// workflow order that can still be resumed or cancelled.
pub(super) fn ended_for_good(info: &OrderInfo) -> bool {
    let resumable =
        info.workflow.is_some() && info.state == OrderState::Failed && info.expired_at_ms.is_none();
    info.state.is_final() && !resumable
}

/// When a record's order ended for good, if it did.
pub(super) fn ended_at_ms(info: &OrderInfo) -> Option<u64> {
    if !ended_for_good(info) {
        return None;
    }
    info.expired_at_ms.or(info.finished_at_ms)
}

/// Whether `info`'s record has been kept `keep_ms` since its order ended
/// for good, at `now_ms`. `open(flow_id)` tells whether a workflow order
/// can still change (held unfinished or failed and resumable, or its
/// record says so); a step order of one such is kept.
pub(super) fn expired(
    info: &OrderInfo,
    now_ms: u64,
    keep_ms: u64,
    open: impl Fn(&str) -> bool,
) -> bool {
    let Some(ended) = ended_at_ms(info) else {
        return false;
    };
    if info.parent.as_ref().is_some_and(|p| open(&p.order_id)) {
        return false;
    }
    ended.saturating_add(keep_ms) <= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ParentStep;

    const KEEP: u64 = 1_000;

    fn record(state: OrderState, finished: Option<u64>) -> OrderInfo {
        OrderInfo {
            finished_at_ms: finished,
            ..OrderInfo::new("o".into(), "j".into(), state, 0)
        }
    }

    fn flow(state: OrderState, finished: Option<u64>, expired: Option<u64>) -> OrderInfo {
        OrderInfo {
            workflow: Some("wf".into()),
            expired_at_ms: expired,
            ..record(state, finished)
        }
    }

    #[test]
    fn ended_records_go_after_the_retention_and_unfinished_ones_never() {
        let never = |_: &str| false;
        for state in [
            OrderState::Succeeded,
            OrderState::Failed,
            OrderState::Cancelled,
        ] {
            let r = record(state, Some(10));
            assert!(!expired(&r, 10 + KEEP - 1, KEEP, never), "{state:?}");
            assert!(expired(&r, 10 + KEEP, KEEP, never), "{state:?}");
        }
        for state in [
            OrderState::Accepted,
            OrderState::Running,
            OrderState::Suspending,
            OrderState::Suspended,
            OrderState::Cancelling,
        ] {
            for r in [record(state, None), flow(state, None, None)] {
                assert!(!expired(&r, u64::MAX, KEEP, never), "{state:?}");
            }
        }
    }

    #[test]
    fn a_failed_workflow_order_goes_only_after_it_expired() {
        let never = |_: &str| false;
        let resumable = flow(OrderState::Failed, Some(10), None);
        assert!(!expired(&resumable, u64::MAX, KEEP, never));
        let gone = flow(OrderState::Failed, Some(10), Some(500));
        assert!(
            !expired(&gone, 500 + KEEP - 1, KEEP, never),
            "counted from expiry"
        );
        assert!(expired(&gone, 500 + KEEP, KEEP, never));
        let done = flow(OrderState::Succeeded, Some(10), None);
        assert!(expired(&done, 10 + KEEP, KEEP, never));
    }

    #[test]
    fn a_step_order_stays_while_its_workflow_order_can_change() {
        let mut step = record(OrderState::Failed, Some(10));
        step.parent = Some(ParentStep {
            order_id: "wf-1".into(),
            workflow: "wf".into(),
            step: "a".into(),
            attempt: 1,
        });
        assert!(!expired(&step, u64::MAX, KEEP, |id| id == "wf-1"));
        assert!(expired(&step, 10 + KEEP, KEEP, |id| id == "other"));
    }
}
