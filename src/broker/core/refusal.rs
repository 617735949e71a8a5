//! Why the core refuses a request: one enum, each case's wire code in one
//! place ([`Refusal::code`]), its message in its `Display`.

use super::super::idempotency::Conflict;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::workflow::TransitionError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no job or workflow named '{job}' is deployed (jobs: {jobs}; workflows: {workflows}); deploy it with `baton deploy FILE.toml`"
    )]
    UnknownJob {
        job: String,
        jobs: String,
        workflows: String,
    },
    /// A parameter the job does not declare, or a value it does not take.
    #[error("{0}")]
    InvalidParam(String),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error("a submit with this request_id is being stored right now; send it again")]
    SubmitBeingStored,
    #[error(
        "JetStream did not confirm storing the order ({0}); send the submit again with the same request_id to learn whether it was accepted (without one, nothing is accepted)"
    )]
    NotStored(String),
    #[error("order {0} is being stored right now; cancel it again")]
    CancelWhileStoring(String),
    #[error("no order {0} is held by this broker (finished ones are not cancelled)")]
    NotHeld(String),
    #[error("order {order} already {state}; there is nothing to cancel")]
    AlreadyEnded { order: String, state: String },
    #[error("no order {0}")]
    NoOrder(String),
    #[error(
        "order {0}: its new state could not be stored in JetStream yet (it is retried); send the command again to learn the outcome"
    )]
    StateNotStored(String),
    /// A workflow order that cannot be made from its workflow.
    #[error("{0}")]
    InvalidWorkflow(String),
    #[error("order {0} is being stored right now; send it again")]
    FlowBeingStored(String),
    /// A command the workflow order's state does not allow now.
    #[error("order {order}: {error}")]
    NotNow {
        order: String,
        error: TransitionError,
    },
    #[error(
        "order {order} runs step '{step}' (attempt {attempt}) of workflow order {flow}; only that order can be {verb}"
    )]
    StepOrder {
        order: String,
        step: String,
        attempt: u32,
        flow: String,
        verb: &'static str,
    },
    #[error(
        "order {order} runs job '{job}', not a workflow: only workflow orders can be {verb} (cancel works for any order)"
    )]
    JobOrder {
        order: String,
        job: String,
        verb: &'static str,
    },
    #[error("no order {0} is held by this broker; check the id with `baton order list`")]
    Unknown(String),
    /// No workflow order held under this id (suspend, resume).
    #[error(
        "no workflow order {order} that can be {verb} is held by this broker: it may have ended for good (succeeded, cancelled, or failed and expired after broker.failed_hold); `baton order show {order}` says which"
    )]
    NoFlow { order: String, verb: &'static str },
    /// A failed workflow order held past `broker.failed_hold`.
    #[error(
        "order {order} failed and expired at {at} (broker.failed_hold after it failed): it can no longer be {verb}; submit the workflow again for a new order"
    )]
    Expired {
        order: String,
        at: String,
        verb: &'static str,
    },
    /// A deploy that does not fit what is deployed, or is invalid.
    #[error("{0}")]
    InvalidDeploy(String),
    #[error("the deployment could not be stored in JetStream: {0}")]
    DeployNotStored(String),
    #[error("no subagent '{0}' is known (see `baton status`)")]
    UnknownSubagent(String),
    #[error("subagent '{0}' is lost; it cannot be switched now")]
    SubagentLost(String),
    #[error(
        "the switch '{what}' could not be stored in JetStream ({error}); nothing changed, send it again"
    )]
    SwitchNotStored { what: String, error: String },
    /// A submit of a paused job or workflow: a trigger's always, a
    /// client's when paused with `--all`.
    #[error(
        "{name} is paused{all} (by {by} at {at}); `baton job resume {name}` lets it run again"
    )]
    Paused {
        name: String,
        all: &'static str,
        by: String,
        at: String,
    },
    #[error("subagent '{subagent}' did not take the stop: {error}")]
    StopNotTaken { subagent: String, error: String },
    /// The gate refused the sender (see `broker/gate.rs`).
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "'{prefix}' is the start or end of more than one order ({ids}...); give more of the id"
    )]
    Ambiguous { prefix: String, ids: String },
    #[error("the order could not be read from JetStream: {0}")]
    Unreadable(String),
    #[error("subagent id {0:?} is not a valid subject token")]
    BadSubagentId(String),
    #[error(
        "no process {instance} of subagent {subagent} is known here, and no task was placed on it: nothing to certify"
    )]
    UnknownProcess { subagent: String, instance: String },
}

impl Refusal {
    /// The code clients match on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownJob { .. } => ErrorCode::UnknownJob,
            Refusal::InvalidParam(_) => ErrorCode::InvalidParam,
            Refusal::InvalidWorkflow(_) => ErrorCode::InvalidJob,
            Refusal::NotNow {
                error: TransitionError::UnknownStep { .. },
                ..
            } => ErrorCode::InvalidParam,
            Refusal::NotNow { .. } | Refusal::StepOrder { .. } | Refusal::JobOrder { .. } => {
                ErrorCode::InvalidState
            }
            Refusal::FlowBeingStored(_) => ErrorCode::Busy,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
            Refusal::Ambiguous { .. } => ErrorCode::InvalidParam,
            Refusal::Unreadable(_) => ErrorCode::Unavailable,
            Refusal::Unknown(_) | Refusal::UnknownSubagent(_) | Refusal::NoFlow { .. } => {
                ErrorCode::NotFound
            }
            Refusal::InvalidDeploy(_) => ErrorCode::InvalidJob,
            Refusal::DeployNotStored(_)
            | Refusal::SubagentLost(_)
            | Refusal::StopNotTaken { .. }
            | Refusal::SwitchNotStored { .. } => ErrorCode::Unavailable,
            Refusal::Conflict(_) => ErrorCode::Conflict,
            Refusal::SubmitBeingStored | Refusal::CancelWhileStoring(_) => ErrorCode::Busy,
            Refusal::NotStored(_) | Refusal::StateNotStored(_) => ErrorCode::Unavailable,
            Refusal::NotHeld(_) | Refusal::NoOrder(_) | Refusal::UnknownProcess { .. } => {
                ErrorCode::NotFound
            }
            Refusal::AlreadyEnded { .. } | Refusal::Paused { .. } | Refusal::Expired { .. } => {
                ErrorCode::InvalidState
            }
            Refusal::BadSubagentId(_) => ErrorCode::BadRequest,
        }
    }

    pub fn reply(&self) -> ErrorReply {
        ErrorReply::new(self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code_and_names_the_way_out() {
        let unknown = Refusal::UnknownJob {
            job: "x".into(),
            jobs: "a, b".into(),
            workflows: String::new(),
        };
        assert_eq!(unknown.code(), ErrorCode::UnknownJob);
        assert!(unknown.to_string().contains("baton deploy"));
        let busy = Refusal::CancelWhileStoring("o".into());
        assert_eq!(busy.reply().error.code, ErrorCode::Busy);
        assert!(busy.to_string().contains("cancel it again"));
        let not_stored = Refusal::NotStored("timeout".into());
        assert_eq!(not_stored.code(), ErrorCode::Unavailable);
        assert!(not_stored.to_string().contains("same request_id"));
    }
}
