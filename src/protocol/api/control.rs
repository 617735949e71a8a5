//! What an operator does: suspend, resume or cancel an order; disable,
//! enable or stop a subagent; and the switches the brokers keep for them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SubagentState;

/// `{p}.api.order.suspend`: hold a workflow order before its next step. A
/// running step finishes first (`suspending`), or is killed with `kill` and
/// runs again on resume. Repeating it is harmless; the reply is the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SuspendOrder {
    pub order_id: String,
    #[serde(default)]
    pub kill: bool,
}

/// `{p}.api.order.resume`: continue a suspended or failed workflow order, or
/// a suspending one (which then goes on). `from`: run again from this step
/// (the steps it waits for count as done); `force_succeeded`: failed steps
/// count as succeeded. The reply is the order with its new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResumeOrder {
    pub order_id: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub force_succeeded: bool,
}

/// `{p}.api.order.cancel`: cancel an order. A waiting order is cancelled at
/// once; a running one when its task ends, which `kill` makes happen now
/// (SIGTERM to the task, grace, SIGKILL). Repeating it is harmless; the reply
/// is the order with its new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CancelOrder {
    pub order_id: String,
    #[serde(default)]
    pub kill: bool,
}

/// `{p}.api.subagent.control`: switch-over by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubagentControl {
    pub subagent_id: String,
    pub action: SubagentAction,
}

/// What an operator does to a subagent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubagentAction {
    /// No new tasks; running ones finish.
    Disable,
    /// Takes tasks again.
    Enable,
    /// Drain (no new tasks, running ones finish) and exit, as on SIGTERM.
    Stop,
}

/// The key prefix of a subagent's switch in the `{prefix}_switches` bucket.
pub const SUBAGENT_SWITCH: &str = "subagent.";
/// The key prefix of an agent's switch (Scheduler role off) there.
pub const AGENT_SWITCH: &str = "agent.";
/// The key prefix of a job's or workflow's pause there.
pub const JOB_SWITCH: &str = "job.";

/// An operator's switch, kept in the `{prefix}_switches` KV bucket so that
/// every broker taking over honours it: of a subagent (`subagent.{id}`: it
/// takes no new tasks while off, disabled), of an agent (`agent.{id}`: it
/// may not hold the Scheduler role while off), of a job or workflow
/// (`job.{name}`: paused, its triggers do not fire while off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OperatorSwitch {
    /// Disabled (`true`) or enabled again (`false`).
    pub off: bool,
    /// Who switched it (the identity that sent the command).
    pub by: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// A job's or workflow's pause only: manual submits are refused too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// Reply to [`SubagentControl`]: the subagent's state now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubagentControlReply {
    pub subagent_id: String,
    pub state: SubagentState,
}
