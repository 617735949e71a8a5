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
        NotifyKind::SubagentLost | NotifyKind::SubagentBack => (&global.on_subagent_lost, &none),
        NotifyKind::NoScheduler | NotifyKind::SchedulerBack => (&global.on_no_scheduler, &none),
        NotifyKind::MissedSlot => (&global.on_missed_slot, &own.missed),
    };
    let mut names: Vec<String> = global.iter().chain(own).cloned().collect();
    names.sort();
    names.dedup();
    names
}

/// The outages this notifier told of and not yet of their end: so a
/// subagent heard again after `subagent_lost`, and the triggers firing
/// again after `no_scheduler`, are told of once each (a new broker starts
/// with none: it tells of the outages it sees).
#[derive(Debug, Default)]
pub struct Outages {
    lost: std::collections::BTreeSet<String>,
    no_scheduler: bool,
}

impl Outages {
    /// What a subagent's change tells of, if anything: lost, or back after
    /// being told lost (a suspect is not lost; one that left is no outage).
    pub fn subagent(&mut self, event: &SubagentChanged) -> Option<NotifyKind> {
        let id = &event.subagent_id;
        match event.state {
            SubagentState::Lost => {
                self.lost.insert(id.clone());
                Some(NotifyKind::SubagentLost)
            }
            SubagentState::Suspect => None,
            SubagentState::Left => {
                self.lost.remove(id);
                None
            }
            _ => self.lost.remove(id).then_some(NotifyKind::SubagentBack),
        }
    }

    /// What a change of the triggers tells of: none fire (each time it is
    /// said), or they fire again after that was told.
    pub fn triggers(&mut self, event: &TriggersChanged) -> Option<NotifyKind> {
        match event.firing {
            false => {
                self.no_scheduler = true;
                Some(NotifyKind::NoScheduler)
            }
            true => std::mem::take(&mut self.no_scheduler).then_some(NotifyKind::SchedulerBack),
        }
    }
}
