//! Which notifications an order's journal record calls for, and to whom
//! (pure).

use crate::config::NotifyConfig;
use crate::protocol::{
    NotifyKind, NotifyRules, OrderInfo, OrderState, SubagentChanged, SubagentState, TriggersChanged,
};

/// What `record` tells of, if anything: a job order or workflow order that
/// ended failed or succeeded. A step order of a workflow is told through
/// its workflow order, a spread member's order through its spread order; a cancelled order, one waiting for a retry and an
/// unfinished one call for nothing, and so does the rewrite of a failed
/// workflow order that expired (it was told of when it failed).
pub fn kind_of(record: &OrderInfo) -> Option<NotifyKind> {
    // a step's order is told through its workflow order, a member's
    // through its spread order
    if record.parent.is_some() || record.member_of.is_some() || record.expired_at_ms.is_some() {
        return None;
    }
    match record.state {
        OrderState::Failed => Some(NotifyKind::Failure),
        OrderState::Succeeded => Some(NotifyKind::Success),
        _ => None,
    }
}

/// The target names told of `kind`: the global rules' and, of an order's
/// end, the job's (or workflow's) own, each once, in name order.
pub fn targets(global: &NotifyConfig, own: &NotifyRules, kind: NotifyKind) -> Vec<String> {
    let none = Vec::new();
    let (global, own) = match kind {
        NotifyKind::Failure => (&global.on_failure, &own.failure),
        NotifyKind::Success => (&global.on_success, &own.success),
        NotifyKind::SubagentLost => (&global.on_subagent_lost, &none),
        NotifyKind::NoScheduler => (&global.on_no_scheduler, &none),
        NotifyKind::MissedSlot => (&global.on_missed_slot, &own.missed),
    };
    let mut names: Vec<String> = global.iter().chain(own).cloned().collect();
    names.sort();
    names.dedup();
    names
}

/// What a cluster event tells of, if anything: a subagent lost, or the
/// triggers stopping because no agent can be Scheduler.
pub fn kind_of_subagent(event: &SubagentChanged) -> Option<NotifyKind> {
    (event.state == SubagentState::Lost).then_some(NotifyKind::SubagentLost)
}

pub fn kind_of_triggers(event: &TriggersChanged) -> Option<NotifyKind> {
    (!event.firing).then_some(NotifyKind::NoScheduler)
}
