//! Status events: plain publishes on `{p}.events.{job}.{order}.{kind}` that any
//! NATS client may subscribe to, per order (`{p}.events.*.{order}.>`), per job
//! (`{p}.events.{job}.>`) or all (`{p}.events.>`).
//!
//! The broker publishes `accepted` and `finished`; the subagent running the
//! task publishes `started` and its `log` lines directly, so output does not
//! pass through the broker. For one order the kinds arrive in that order:
//! `accepted`, then per task `started` and its `log` lines, then `finished`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OrderState;

/// `accepted`: the order is durable and waits for a subagent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderAccepted {
    pub order_id: String,
    pub job: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The trigger slot this order fires, when a Scheduler submitted it.
    #[serde(default)]
    pub slot_ms: Option<u64>,
    pub at_ms: u64,
}

/// `started`: a subagent has started the order's task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStarted {
    pub order_id: String,
    pub job: String,
    pub task_id: String,
    pub attempt: u32,
    pub subagent_id: String,
    #[serde(default)]
    pub pid: Option<u32>,
    pub at_ms: u64,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// `log`: one line of a task's output, published as it comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskLog {
    pub order_id: String,
    pub job: String,
    pub task_id: String,
    pub subagent_id: String,
    pub stream: LogStream,
    /// For a workflow step's task: the step. `order_id` is then the
    /// workflow order, and the line is published on its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Counts the task's lines from 1, over both streams, so gaps can be seen.
    pub seq: u64,
    /// The line without its newline; invalid UTF-8 is replaced, long lines are cut.
    pub line: String,
    pub at_ms: u64,
}

/// `finished`: the order reached a final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFinished {
    pub order_id: String,
    pub job: String,
    pub state: OrderState,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// Why, when the exit code does not say it (spawn error, subagent lost).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub subagent_id: Option<String>,
    /// Tasks started for this order (for a workflow order, its steps' tasks).
    #[serde(default)]
    pub attempt: u32,
    /// Run time of the last task, in milliseconds (for a workflow order,
    /// from its first step's start to its end).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub at_ms: u64,
    /// An order through a workflow: the workflow's name (`job` holds it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

/// `changed`: a workflow order moved: a step was dispatched or finished, or
/// the order was suspended, resumed or is being cancelled; or an order (or
/// a workflow step's order) started waiting for a subagent, or waits for
/// another reason now (`waiting`). Its `accepted` and `finished` events
/// come as for any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderChanged {
    pub order_id: String,
    /// The workflow; for a job order (its `waiting` events, a spread
    /// order's news) the job: the `{job}` token of the subject.
    pub workflow: String,
    /// The order's state after the change.
    pub state: OrderState,
    /// The step that moved, if a step did.
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub step_state: Option<super::workflow::StepState>,
    /// The order running the step's attempt; for a spread order, the
    /// order of the member that ended.
    #[serde(default)]
    pub step_order_id: Option<String>,
    /// What happened, for people: "step build dispatched", "suspended", ...
    pub what: String,
    /// Why the order (for a step, the step's order) waits for a subagent,
    /// as `order.get` says it: "waiting: no known subagent matches cluster
    /// 'zone-b' (...)". Sent when it starts waiting and when the reason
    /// changes, not while it stays the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub at_ms: u64,
}

/// `{p}.cluster.subagent.{id}`: a subagent's state changed (joined, lost,
/// disabled, draining, left, back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubagentChanged {
    pub subagent_id: String,
    pub state: super::SubagentState,
    /// What happened, for people: "joined", "lost: no responders", "left", ...
    pub reason: String,
    pub at_ms: u64,
}
