//! Workflows: named chains (DAGs) of steps, each running a deployed job, and
//! the state machine of an order moving through one.
//!
//! - [`definition`]: the deploy-file form (`[[workflow]]` tables, strict) of
//!   a [`WorkflowSpec`] and deploy-time validation. The wire types
//!   ([`WorkflowSpec`], [`StepRun`], [`StepState`], ...) live in
//!   [`crate::protocol::workflow`] and are re-exported here.
//! - [`state`]: [`WorkflowRun`], the state machine of one order, advanced by
//!   [`Event`]s into [`Effect`]s the broker acts on, with its transition table.
//! - [`order`]: [`FlowOrder`], a workflow order as the broker holds and
//!   journals it: the run, its history of step attempts, its record.
//! - [`params`]: a workflow order's parameters checked at submit.
//! - here: that machine's vocabulary (order states, events, effects,
//!   errors).
//!
//! Architecture invariant: pure. No IO, no clock reads (times arrive in
//! milliseconds with each event), no actix or async_nats, so the same events
//! can be journaled and replayed.

pub mod definition;
pub mod order;
pub mod params;
pub mod state;
#[cfg(test)]
mod tests;

pub use crate::protocol::workflow::{
    KillCause, OnFailure, StepRun, StepSpec, StepState, WorkflowSpec,
};
pub use definition::{validate_workflow, validate_workflows, WorkflowDef, WorkflowError};
pub use order::{step_order_id, FlowOrder};
pub use state::WorkflowRun;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;

use crate::protocol::OrderState;
use serde::{Deserialize, Serialize};

/// Where a workflow order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Suspending,
    Suspended,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Suspending => "suspending",
            RunState::Suspended => "suspended",
            RunState::Cancelling => "cancelling",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Succeeded or cancelled: the order never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Cancelled)
    }

    /// Succeeded, failed or cancelled, as the wire's order states count final
    /// (a failed workflow order can still be resumed).
    pub fn is_final(self) -> bool {
        self.is_terminal() || self == RunState::Failed
    }

    /// Suspended or failed: nothing runs until a command.
    pub fn is_held(self) -> bool {
        matches!(self, RunState::Suspended | RunState::Failed)
    }
}

impl RunState {
    /// The order state clients see (`pending` is `accepted`).
    pub fn wire(self) -> OrderState {
        match self {
            RunState::Pending => OrderState::Accepted,
            RunState::Running => OrderState::Running,
            RunState::Suspending => OrderState::Suspending,
            RunState::Suspended => OrderState::Suspended,
            RunState::Cancelling => OrderState::Cancelling,
            RunState::Succeeded => OrderState::Succeeded,
            RunState::Failed => OrderState::Failed,
            RunState::Cancelled => OrderState::Cancelled,
        }
    }

    pub fn from_wire(state: OrderState) -> RunState {
        match state {
            OrderState::Accepted => RunState::Pending,
            OrderState::Running => RunState::Running,
            OrderState::Suspending => RunState::Suspending,
            OrderState::Suspended => RunState::Suspended,
            OrderState::Cancelling => RunState::Cancelling,
            OrderState::Succeeded => RunState::Succeeded,
            OrderState::Failed => RunState::Failed,
            OrderState::Cancelled => RunState::Cancelled,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an order. Commands come from operators; the rest from the
/// broker (task progress) and its timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Start,
    StepStarted {
        step: String,
        attempt: u32,
        task: String,
    },
    StepFinished {
        step: String,
        attempt: u32,
        succeeded: bool,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        outputs: BTreeMap<String, String>,
    },
    Suspend {
        kill: bool,
    },
    Resume {
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        force_succeeded: bool,
    },
    Cancel {
        kill: bool,
    },
    RetryDue {
        step: String,
    },
}

/// What the caller must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Submit a task of `job` with these parameters for this attempt.
    Dispatch {
        step: String,
        attempt: u32,
        job: String,
        params: BTreeMap<String, String>,
    },
    /// Kill the step's running task.
    Kill {
        step: String,
        attempt: u32,
        task: Option<String>,
    },
    /// Send `RetryDue { step }` at `at_ms`.
    ScheduleRetry { step: String, at_ms: u64 },
    /// The order became suspended.
    Suspended,
    /// The order became succeeded, failed or cancelled.
    Finished(RunState),
}

/// A command or event the order's state does not allow; the run is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("order {}; it cannot be {command}{hint}", describe(.state))]
    NotAllowed {
        state: RunState,
        command: &'static str,
        hint: &'static str,
    },
    #[error("workflow '{workflow}' has no step '{step}' (its steps: {})", .steps.join(", "))]
    UnknownStep {
        workflow: String,
        step: String,
        steps: Vec<String>,
    },
    #[error("step '{step}' has no attempt {attempt} (attempts dispatched: {dispatched})")]
    UnknownAttempt {
        step: String,
        attempt: u32,
        dispatched: u32,
    },
}

fn describe(state: &RunState) -> String {
    match state {
        RunState::Succeeded | RunState::Failed => format!("has {state}"),
        _ => format!("is {state}"),
    }
}
