//! Orders as clients see them: the submit and its reply, an order's state,
//! its lookup ([`OrderInfo`], with a workflow order's steps and history) and
//! the order list.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{StepRun, StepState};

/// `{p}.api.submit`: ask for one run of a deployed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubmitOrder {
    /// Name of a deployed job or workflow.
    pub job: String,
    /// Values for the parameters the job (or workflow) declares: any other
    /// name is refused, as are more than 256 values or a value over 64 KiB
    /// (`invalid_param`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A client-chosen id; repeating a submit with the same id, job and
    /// parameters (compared with defaults applied) returns the first order
    /// instead of creating a second one, also after a broker restart (the
    /// order id is derived from it and created atomically in JetStream).
    /// The same id with another job or other parameters is refused
    /// (`conflict`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// The trigger slot (ms since the Unix epoch) this order fires; set by
    /// the Scheduler agent, with `request_id` `job@slot`. The job's
    /// concurrency policy applies to such orders, and the task sees the
    /// slot as `BATON_SLOT_MS`.
    #[serde(default)]
    pub slot_ms: Option<u64>,
}

/// Reply to [`SubmitOrder`]: the order is durable and will reach a final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubmitReply {
    pub order_id: String,
    pub job: String,
    pub state: OrderState,
    /// True when `request_id` matched an earlier submit and this is that order.
    #[serde(default)]
    pub duplicate: bool,
}

/// The state of an order as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Durable and waiting for (or being handed to) a subagent.
    Accepted,
    /// A subagent runs its task.
    Running,
    /// The task exited with code 0.
    Succeeded,
    /// The task exited non-zero, was killed, timed out or could not run.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// A workflow order waiting for its running steps before it holds.
    Suspending,
    /// A workflow order held before its next step until resumed.
    Suspended,
    /// A workflow order waiting for its running steps before it ends cancelled.
    Cancelling,
}

impl OrderState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderState::Succeeded | OrderState::Failed | OrderState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Accepted => "accepted",
            OrderState::Running => "running",
            OrderState::Succeeded => "succeeded",
            OrderState::Failed => "failed",
            OrderState::Cancelled => "cancelled",
            OrderState::Suspending => "suspending",
            OrderState::Suspended => "suspended",
            OrderState::Cancelling => "cancelling",
        }
    }
}

/// `{p}.api.order.get`: look up one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetOrder {
    pub order_id: String,
}

/// An order with its current state; the reply to [`GetOrder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderInfo {
    pub order_id: String,
    pub job: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub state: OrderState,
    /// Number of tasks started for this order so far.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub subagent_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    /// The process of `subagent_id` (its `instance_id`) the task was sent
    /// to: a broker taking over knows a restarted subagent lost the task.
    #[serde(default)]
    pub subagent_instance_id: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// Why the order failed when the exit code does not say it.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    /// The trigger slot this order fires, when a Scheduler submitted it.
    #[serde(default)]
    pub slot_ms: Option<u64>,
    /// Cancelled while its task runs: it ends `cancelled` when the task ends.
    #[serde(default)]
    pub cancel_requested: bool,
    pub accepted_at_ms: u64,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The results its finished task printed (`::baton-result KEY=VALUE`).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// An order through a workflow: the workflow's name (`job` holds it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// A workflow order's steps, as defined, with where each one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRun>,
    /// A workflow order's history: every step attempt dispatched, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepAttempt>,
    /// An order running one step of a workflow order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentStep>,
    /// The identity that signed its submit, as the broker verified it
    /// (`client`, `admin`, ...); absent when the submit was not signed, or
    /// was fired by a Scheduler (see `slot_ms` and `fired_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// In `order.get` and `order.list` replies only (not stored): the
    /// deployed trigger whose slot `slot_ms` is (the first, when several
    /// share it); absent when none of its triggers has that slot now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<super::FiredBy>,
    /// Retries of its job's `retry` policy used so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// While it waits for a retry: when it runs again (ms since the epoch);
    /// `reason` says which retry and after what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
    /// A job order's tasks, oldest first: the newest
    /// [`TaskAttempt`](super::TaskAttempt)s, `attempts_dropped` older ones
    /// left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<super::TaskAttempt>,
    /// Older tasks left out of `attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts_dropped: u32,
    /// A failed workflow order: until when it can be resumed or cancelled
    /// (`broker.failed_hold` after it failed); then it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable_until_ms: Option<u64>,
    /// A failed workflow order that expired: when. It stays failed and can
    /// no longer be resumed or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at_ms: Option<u64>,
    /// A spread order (its job has `spread`): the policy it was placed
    /// under; with `members` once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<super::SpreadPolicy>,
    /// A spread order's members, each with the order running its task there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<super::SpreadMember>,
    /// A member's order: the spread order it runs a task of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<String>,
    /// A member's order: the subagent it runs on, and only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl OrderInfo {
    /// An order of `job` in `state`, accepted at `accepted_at_ms`, with every
    /// other field empty: no params, attempt 0, no task, no outcome, no
    /// workflow. Set the rest with struct update syntax
    /// (`OrderInfo { reason, ..OrderInfo::new(..) }`).
    pub fn new(order_id: String, job: String, state: OrderState, accepted_at_ms: u64) -> OrderInfo {
        OrderInfo {
            order_id,
            job,
            params: BTreeMap::new(),
            state,
            attempt: 0,
            subagent_id: None,
            task_id: None,
            subagent_instance_id: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            reason: None,
            request_id: None,
            slot_ms: None,
            cancel_requested: false,
            accepted_at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            outputs: BTreeMap::new(),
            workflow: None,
            steps: Vec::new(),
            history: Vec::new(),
            parent: None,
            submitted_by: None,
            fired_by: None,
            retries: 0,
            retry_at_ms: None,
            attempts: Vec::new(),
            attempts_dropped: 0,
            resumable_until_ms: None,
            expired_at_ms: None,
            spread: None,
            members: Vec::new(),
            member_of: None,
            pin: None,
        }
    }

    /// Why it failed: its `reason`, else how its last task ended.
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = &self.reason {
            return Some(reason.clone());
        }
        if self.state != OrderState::Failed {
            return None;
        }
        match (self.timed_out, self.exit_code, self.signal) {
            (true, _, _) => Some("its task ran past the job's timeout and was killed".into()),
            (_, Some(code), _) => Some(format!("its task exited with code {code}")),
            (_, None, Some(signal)) => Some(format!("its task was killed by signal {signal}")),
            _ => None,
        }
    }

    /// Its line in an [`OrderList`].
    pub fn summary(&self) -> OrderSummary {
        let current_steps = self
            .steps
            .iter()
            .filter(|s| match self.state {
                OrderState::Failed => s.state == StepState::Failed,
                _ => s.state == StepState::Running,
            })
            .map(|s| s.name.clone())
            .collect();
        OrderSummary {
            order_id: self.order_id.clone(),
            job: self.job.clone(),
            workflow: self.workflow.clone(),
            state: self.state,
            accepted_at_ms: self.accepted_at_ms,
            finished_at_ms: self.finished_at_ms,
            subagent_id: self.subagent_id.clone(),
            current_steps,
            parent: self.parent.clone(),
            member_of: self.member_of.clone(),
            request_id: self.request_id.clone(),
            slot_ms: self.slot_ms,
            reason: self.failure(),
            fired_by: self.fired_by.clone(),
            retry_at_ms: self.retry_at_ms,
        }
    }
}

/// One attempt of one step: the order that ran it and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepAttempt {
    pub step: String,
    pub job: String,
    pub attempt: u32,
    /// The order running this attempt (its `parent` names this order).
    pub order_id: String,
    pub state: OrderState,
    /// Where its latest task ran (or runs).
    #[serde(default)]
    pub subagent_id: Option<String>,
    /// Every subagent a task of this attempt was placed on, in order: a task
    /// lost with its subagent runs again on another one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placed_on: Vec<String>,
    /// Tasks its order started (more than one: re-run after a subagent was lost).
    #[serde(default)]
    pub tasks: u32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
}

/// The workflow order and step an order runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParentStep {
    pub order_id: String,
    pub workflow: String,
    pub step: String,
    pub attempt: u32,
}

/// `{p}.api.order.list`: the orders the broker holds (every unfinished one
/// and the newest finished ones), newest first, filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListOrders {
    /// Only orders through this workflow.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only orders of this job (steps of workflows included).
    #[serde(default)]
    pub job: Option<String>,
    /// Only orders in this state.
    #[serde(default)]
    pub state: Option<OrderState>,
    /// Only orders accepted at or after this time (ms since the epoch).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Only orders accepted before this time (ms since the epoch).
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Include the orders running workflow steps (left out by default).
    #[serde(default)]
    pub steps: bool,
    /// At most this many (default 100, at most 10000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Reply to [`ListOrders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderList {
    pub orders: Vec<OrderSummary>,
    /// More orders matched than `limit`.
    #[serde(default)]
    pub truncated: bool,
}

/// One line of [`OrderList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderSummary {
    pub order_id: String,
    /// The job, or the workflow for a workflow order.
    pub job: String,
    #[serde(default)]
    pub workflow: Option<String>,
    pub state: OrderState,
    pub accepted_at_ms: u64,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    #[serde(default)]
    pub subagent_id: Option<String>,
    /// For a workflow order: the steps running now, or the step it failed in.
    #[serde(default)]
    pub current_steps: Vec<String>,
    #[serde(default)]
    pub parent: Option<ParentStep>,
    /// A member's order: the spread order it runs a task of (listed with
    /// `steps` only, like a workflow step's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<String>,
    /// The submitter's idempotency key, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The trigger slot it fires, for an order a Scheduler submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_ms: Option<u64>,
    /// Why it failed, was cancelled, is in doubt, or waits for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The trigger whose slot it fires (as in [`OrderInfo::fired_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<super::FiredBy>,
    /// While it waits for a retry: when it runs again (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
}
