//! The [`Notification`] body of an order's end (pure).

use crate::protocol::{Notification, NotifyKind, OrderInfo};

/// The notification of `kind` for `record`, sent by `broker_id` of the
/// cluster under `prefix`. Its `id` is the same in every copy of it, and
/// differs for a workflow order failing again after a resume.
pub fn notification(
    record: &OrderInfo,
    kind: NotifyKind,
    broker_id: &str,
    prefix: &str,
) -> Notification {
    let order = &record.order_id;
    let hint = if record.workflow.is_some() {
        format!("baton order show {order}")
    } else {
        format!("baton order show {order}; baton order logs {order}")
    };
    Notification {
        id: format!(
            "{order}:{}:{}",
            kind.as_str(),
            record.finished_at_ms.unwrap_or_default()
        ),
        kind,
        order_id: order.clone(),
        job: record.job.clone(),
        workflow: record.workflow.clone(),
        state: record.state,
        exit_code: record.exit_code,
        signal: record.signal,
        timed_out: record.timed_out,
        reason: record.reason.clone(),
        accepted_at_ms: record.accepted_at_ms,
        started_at_ms: record.started_at_ms,
        finished_at_ms: record.finished_at_ms,
        subagent_id: record.subagent_id.clone(),
        attempts: record.attempt,
        slot_ms: record.slot_ms,
        submitted_by: record.submitted_by.clone(),
        broker_id: broker_id.to_string(),
        prefix: prefix.to_string(),
        hint,
    }
}
