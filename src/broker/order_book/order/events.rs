//! The vocabulary of a job order's state machine: its phases ([`Phase`],
//! and how each shows on the wire), how a task ended ([`Outcome`]), the
//! events that move an order ([`OrderEvent`]), and what applying one gives
//! ([`Applied`], [`ApplyError`]). The table of which event moves which
//! phase is in `order.rs`.

use std::collections::BTreeMap;

use super::super::attempts;
use crate::protocol::OrderState;

/// Where an order is, with the in-between step the wire state hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Durable, waiting for a subagent with room.
    Queued,
    /// Handed to a subagent that has not yet confirmed.
    Dispatching,
    Running,
    /// Its task failed and its job's `retry` policy runs it again at
    /// `retry_at_ms` (stored before anything waits on it).
    Retrying,
    /// Its subagent is unreachable but may still run the task: waiting for a
    /// late result, the subagent's return, or its orphan timeout.
    Orphaned,
    /// A spread order placed on its members: each runs its task as an order
    /// of its own (`spread.rs`); it ends once they all have.
    Spread,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn wire(self) -> OrderState {
        match self {
            Phase::Queued | Phase::Dispatching | Phase::Retrying => OrderState::Accepted,
            Phase::Running | Phase::Orphaned | Phase::Spread => OrderState::Running,
            Phase::Succeeded => OrderState::Succeeded,
            Phase::Failed => OrderState::Failed,
            Phase::Cancelled => OrderState::Cancelled,
        }
    }

    pub fn is_final(self) -> bool {
        self.wire().is_final()
    }
}

/// How a task ended, as far as the order cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why it failed when the exit code does not tell.
    pub error: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: u64,
    /// The task's `::baton-result` values.
    pub outputs: BTreeMap<String, String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.timed_out
    }

    /// A failure a job's `retry` policy runs again: a non-zero exit, a
    /// signal, a timeout (not a task that could not run at all).
    pub fn retryable(&self) -> bool {
        use crate::protocol::AttemptOutcome::*;
        matches!(attempts::classify(self), Exited | Signalled | TimedOut)
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Dispatched {
        task_id: String,
        subagent_id: String,
        /// The subagent's process the task is sent to.
        instance_id: String,
    },
    DispatchFailed {
        task_id: String,
    },
    Started {
        task_id: String,
        at_ms: u64,
    },
    Finished {
        task_id: String,
        outcome: Outcome,
        /// When the broker took the result (a retry waits from then).
        at_ms: u64,
    },
    /// A retry's due time came: the order waits for a subagent again.
    RetryDue {
        at_ms: u64,
    },
    /// The task's subagent is out of sight (silent, or another process took
    /// its id): it may still run the task until `rerun_at_ms`, when its own
    /// orphan timeout and kill grace have passed.
    SubagentLost {
        subagent_id: String,
        at_ms: u64,
        rerun_at_ms: u64,
    },
    /// The reaper of subagent process `instance_id` certified its death and
    /// that the task's process group is gone: proof, so the task runs again
    /// at once (or fails, when not restartable).
    Certified {
        subagent_id: String,
        instance_id: String,
        at_ms: u64,
    },
    /// An unreachable subagent is back and still runs `running`.
    SubagentReturned {
        subagent_id: String,
        running: Vec<String>,
    },
    /// A broker that took over hears for the first time from the subagent
    /// an inherited task was placed on: it is process `instance_id` and runs
    /// `running`. A started task it no longer runs has ended; its result,
    /// repeated until acknowledged, is awaited until `result_by_ms`. A task
    /// placed on an earlier process of that id is in doubt until
    /// `doubt_until_ms` (that process's orphan timeout), unless certified.
    Reconciled {
        subagent_id: String,
        instance_id: String,
        running: Vec<String>,
        result_by_ms: u64,
        doubt_until_ms: u64,
        at_ms: u64,
    },
    /// The orphan timeout of an unreachable subagent has passed: its task is dead.
    OrphanDeadline {
        at_ms: u64,
    },
    /// The subagent killed the task itself (orphan or drain timeout): it is
    /// dead, and did not fail on its own.
    Abandoned {
        task_id: String,
        reason: String,
        at_ms: u64,
    },
    /// An operator cancels the order: a waiting one at once; a running one
    /// ends cancelled when its task ends (the broker kills it with `kill`).
    Cancel {
        at_ms: u64,
    },
    /// A trigger's order is not run: its job's concurrency policy forbids
    /// a second run while one is active. It ends cancelled, with `reason`.
    Skipped {
        reason: String,
        at_ms: u64,
    },
    /// A queued order cannot run at all (its job was removed).
    Refused {
        reason: String,
        at_ms: u64,
    },
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order moved from one phase to another.
    Moved { from: Phase, to: Phase },
    /// The event was about another (older) task or is repeated: recorded, no change.
    Stale,
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no order {0}")]
    UnknownOrder(String),
    #[error("order {order} is {phase:?}; {event} does not apply")]
    NotAllowed {
        order: String,
        phase: Phase,
        event: &'static str,
    },
}
