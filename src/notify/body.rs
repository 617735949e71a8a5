//! The [`Notification`] body of each kind (pure).

use crate::protocol::{
    Notification, NotifyKind, OrderInfo, SlotsMissed, SubagentChanged, TriggersChanged,
};

/// Who sends: the broker and the cluster's prefix.
#[derive(Debug, Clone)]
pub struct Sender {
    pub broker_id: String,
    pub prefix: String,
}

impl Sender {
    fn blank(&self, id: String, kind: NotifyKind, summary: String, at_ms: u64) -> Notification {
        Notification {
            id,
            kind,
            summary,
            at_ms,
            order_id: None,
            job: None,
            workflow: None,
            state: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            reason: None,
            accepted_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            subagent_id: None,
            attempts: None,
            slot_ms: None,
            submitted_by: None,
            broker_id: self.broker_id.clone(),
            prefix: self.prefix.clone(),
            hint: "baton status".into(),
        }
    }
}

/// How an order ended, in words.
fn ending(record: &OrderInfo) -> String {
    if record.timed_out {
        "timed out".into()
    } else if let Some(code) = record.exit_code {
        format!("exit code {code}")
    } else if let Some(signal) = record.signal {
        format!("killed by signal {signal}")
    } else if let Some(reason) = &record.reason {
        reason.clone()
    } else {
        "no exit code".into()
    }
}

/// The notification of `kind` (failure, success) for `record`. Its `id` is
/// the same in every copy of it, and differs for a workflow order failing
/// again after a resume.
pub fn of_order(record: &OrderInfo, kind: NotifyKind, sender: &Sender) -> Notification {
    let order = &record.order_id;
    let at_ms = record.finished_at_ms.unwrap_or(record.accepted_at_ms);
    let what = match &record.workflow {
        Some(w) => format!("workflow {w}"),
        None => format!("job {}", record.job),
    };
    let summary = match kind {
        NotifyKind::Success => format!("order {order} of {what} succeeded"),
        _ => format!("order {order} of {what} failed: {}", ending(record)),
    };
    let id = format!("{order}:{}:{at_ms}", kind.as_str());
    Notification {
        order_id: Some(order.clone()),
        job: Some(record.job.clone()),
        workflow: record.workflow.clone(),
        state: Some(record.state),
        exit_code: record.exit_code,
        signal: record.signal,
        timed_out: record.timed_out,
        reason: record.reason.clone(),
        accepted_at_ms: Some(record.accepted_at_ms),
        started_at_ms: record.started_at_ms,
        finished_at_ms: record.finished_at_ms,
        subagent_id: record.subagent_id.clone(),
        attempts: Some(record.attempt),
        slot_ms: record.slot_ms,
        submitted_by: record.submitted_by.clone(),
        hint: if record.workflow.is_some() {
            format!("baton order show {order}")
        } else {
            format!("baton order show {order}; baton order logs {order}")
        },
        ..sender.blank(id, kind, summary, at_ms)
    }
}

/// The notification of a subagent declared lost, or (`SubagentBack`)
/// heard again after that.
pub fn of_subagent(event: &SubagentChanged, kind: NotifyKind, sender: &Sender) -> Notification {
    let sub = &event.subagent_id;
    let (id, summary) = match kind {
        NotifyKind::SubagentBack => (
            format!("subagent:{sub}:back:{}", event.at_ms),
            format!(
                "subagent {sub} is back ({}): {}",
                event.reason,
                event.state.as_str()
            ),
        ),
        _ => {
            let why = event.reason.strip_prefix("lost: ").unwrap_or(&event.reason);
            (
                format!("subagent:{sub}:lost:{}", event.at_ms),
                format!("subagent {sub} lost: {why}"),
            )
        }
    };
    Notification {
        subagent_id: Some(sub.clone()),
        reason: Some(event.reason.clone()),
        ..sender.blank(id, kind, summary, event.at_ms)
    }
}

/// The notification of the triggers stopping (no agent can be Scheduler),
/// or (`SchedulerBack`) firing again after that.
pub fn of_triggers(event: &TriggersChanged, kind: NotifyKind, sender: &Sender) -> Notification {
    let (id, summary) = match kind {
        NotifyKind::SchedulerBack => (
            format!("scheduler:back:{}", event.at_ms),
            format!(
                "triggers fire again: {}",
                (event.reason)
                    .strip_prefix("triggers fire again: ")
                    .unwrap_or(&event.reason)
            ),
        ),
        _ => {
            let why = (event.reason)
                .strip_prefix("triggers are NOT firing: ")
                .unwrap_or(&event.reason);
            (
                format!("scheduler:none:{}", event.at_ms),
                format!("no trigger fires: {why}"),
            )
        }
    };
    Notification {
        reason: Some(event.reason.clone()),
        ..sender.blank(id, kind, summary, event.at_ms)
    }
}

/// The notification of slots a misfire policy passed over.
pub fn of_missed_slots(event: &SlotsMissed, sender: &Sender) -> Notification {
    let what = if event.workflow { "workflow" } else { "job" };
    let id = format!("missed:{}:{}:{}", event.job, event.after_ms, event.until_ms);
    let summary = format!(
        "{} slot(s) of {what} {} missed between {} and {} (its misfire policy passed them over; Scheduler {})",
        event.count,
        event.job,
        clock(event.after_ms),
        clock(event.until_ms),
        event.scheduler
    );
    let name = Some(event.job.clone());
    Notification {
        job: name.clone().filter(|_| !event.workflow),
        workflow: name.filter(|_| event.workflow),
        reason: Some(format!("{} slot(s) missed", event.count)),
        slot_ms: Some(event.after_ms),
        ..sender.blank(id, NotifyKind::MissedSlot, summary, event.at_ms)
    }
}

/// An instant in RFC 3339, UTC, to the second.
fn clock(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
