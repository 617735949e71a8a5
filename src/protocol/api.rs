//! Client-facing requests and replies: submit, deploy, order lookup, status.
//!
//! Every reply is either the success type named by the request or an
//! [`ErrorReply`]; a client tells them apart by the `error` key, which only
//! error replies carry.
//!
//! Size: over the ~500-line mark: one documented type per client-facing
//! message, each field's doc going into `schemas/`; splitting by request
//! would scatter types that `schema.rs` lists together.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::workflow::{KillCause, OnFailure, StepRun, StepSpec, StepState, WorkflowSpec};

/// A deployed job definition. Clients refer to jobs by name; they never send
/// a command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobSpec {
    /// Unique name; one subject token (letters, digits, `-`, `_`).
    pub name: String,
    /// The program to run, as a path or a name looked up on the subagent's PATH.
    pub program: String,
    /// Arguments; `{{param}}` is replaced by the order's value of `param`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory on the subagent; its own when absent.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The task is killed (SIGTERM, grace, SIGKILL) after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The parameters a submitter may set; any other is refused.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Free text shown by `baton status`.
    #[serde(default)]
    pub description: Option<String>,
    /// The subagent cluster whose members run this job's tasks; every
    /// subagent, round-robin, when absent.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Whether a task lost with its subagent runs again on another one
    /// (default true); when false the order fails with "subagent lost".
    #[serde(default = "yes")]
    pub restartable: bool,
    /// When the job fires on its own: the Scheduler agent submits an order
    /// for each slot. None: only submitted orders run it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<super::TriggerSpec>,
    /// What happens to slots missed while no Scheduler fired them.
    #[serde(default)]
    pub misfire: super::MisfirePolicy,
    /// What a slot does while an earlier run of the job is still active.
    #[serde(default)]
    pub concurrency: super::ConcurrencyPolicy,
    /// Whether, and how, a failed task runs again; none: the order fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<super::RetryPolicy>,
    /// Run each order on every member of the cluster that is up (or on up
    /// to `count` of them), one task each; none: on one member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<super::SpreadPolicy>,
    /// Notification targets told of its orders' ends, besides the broker's
    /// global rules (see [`NotifyRules`](super::NotifyRules)).
    #[serde(default, skip_serializing_if = "super::NotifyRules::is_empty")]
    pub notify: super::NotifyRules,
}

fn yes() -> bool {
    true
}

/// A named selection of subagents with a scheduling mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterSpec {
    /// Unique name; one subject token.
    pub name: String,
    pub mode: SchedulingMode,
    /// Who belongs: each entry names a subagent id or a label selector.
    pub members: Vec<ClusterMember>,
}

/// How a cluster chooses the member for the next task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulingMode {
    /// Active-passive: always the highest-priority available member; members
    /// of equal priority take turns.
    FixedPriority,
    /// Active-active: each next task to the next available member.
    RoundRobin,
    /// The member with the fewest running tasks for its capacity, then the
    /// least busy CPU.
    LeastLoaded,
}

impl SchedulingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulingMode::FixedPriority => "fixed-priority",
            SchedulingMode::RoundRobin => "round-robin",
            SchedulingMode::LeastLoaded => "least-loaded",
        }
    }
}

/// One entry of a cluster: a subagent id, or labels a subagent must all carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterMember {
    /// A subagent id.
    #[serde(default)]
    pub subagent: Option<String>,
    /// Every subagent carrying all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Higher runs first in fixed-priority mode.
    #[serde(default)]
    pub priority: i32,
}

/// One parameter a submitter may set. The process sees it as the environment
/// variable `BATON_PARAM_<NAME>` (upper case) and in `{{name}}` in arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParamSpec {
    /// Used when the submitter does not set the parameter.
    #[serde(default)]
    pub default: Option<String>,
    /// A submit without this parameter (and without a default) is refused.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: Option<String>,
}

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

/// `{p}.api.deploy`: add or replace job definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployRequest {
    #[serde(default)]
    pub jobs: Vec<JobSpec>,
    /// Subagent clusters, deployed before the jobs that name them.
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// Workflows, deployed after the jobs their steps name.
    #[serde(default)]
    pub workflows: Vec<WorkflowSpec>,
    /// Only check everything (as a deploy would, against what is deployed);
    /// store nothing. The reply's plan says what a deploy would do.
    #[serde(default)]
    pub dry_run: bool,
    /// Jobs and workflows to undeploy, by name (`baton undeploy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Undeploy every job, workflow and cluster this request does not hold.
    #[serde(default)]
    pub prune: bool,
}

/// Reply to [`DeployRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployReply {
    /// Names of the jobs now deployed by this request.
    pub deployed: Vec<String>,
    /// Names of the subagent clusters now deployed by this request.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Names of the workflows now deployed by this request.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// A dry run: all of it would deploy, nothing was stored.
    #[serde(default)]
    pub dry_run: bool,
    /// What deploys but deserves a look, e.g. a cluster no known subagent
    /// matches (its orders wait until one does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What it added, changed (field by field), removed and left alone.
    #[serde(default)]
    pub plan: super::DeployPlan,
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
            reason: self.reason.clone(),
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

/// `{p}.api.status`: ask the broker for the cluster's state. Has no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusRequest {}

/// Reply to [`StatusRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusReply {
    pub protocol: u32,
    pub broker_id: String,
    pub broker_started_at_ms: u64,
    pub subagents: Vec<SubagentStatus>,
    /// Names of the deployed jobs.
    pub jobs: Vec<String>,
    /// Names of the deployed workflows.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// The jobs and workflows an operator paused, by name: who, when, and
    /// whether manual submits are refused too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paused: BTreeMap<String, OperatorSwitch>,
    /// Deployed subagent clusters with the subagents they resolve to now.
    #[serde(default)]
    pub clusters: Vec<ClusterStatus>,
    pub orders: OrderCounts,
    /// Every broker heard from: the active one and the standbys.
    #[serde(default)]
    pub brokers: Vec<BrokerStatus>,
    /// Connected agents with their Scheduler role and health.
    #[serde(default)]
    pub agents: Vec<super::AgentStatus>,
    /// Set while no agent can hold the Scheduler role: why the triggers
    /// are not firing (none connected, all turned off, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_firing: Option<String>,
    /// Messages the broker dropped or refused because they could not be decoded.
    #[serde(default)]
    pub malformed_messages: u64,
    /// Messages the broker refused because their sender may not send them
    /// (a report not signed by its subagent, a request signed by a role that
    /// may not ask it, a forged signature).
    #[serde(default)]
    pub refused_messages: u64,
    /// Audit records JetStream did not store (the commands stood; see the
    /// broker's log).
    #[serde(default)]
    pub unstored_audit_records: u64,
}

/// One broker as the active broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokerStatus {
    pub id: String,
    pub role: super::BrokerRole,
    /// Its epoch, when active.
    #[serde(default)]
    pub epoch: u64,
    pub precedence: u32,
    /// Milliseconds since the active broker last renewed its lease.
    #[serde(default)]
    pub lease_age_ms: Option<u64>,
    /// Milliseconds since its last heartbeat (0 for the one answering).
    pub heartbeat_age_ms: u64,
}

/// One subagent as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubagentStatus {
    pub id: String,
    pub state: SubagentState,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Tasks the broker has handed to it that have not finished.
    pub running: u32,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Tasks it has finished since it registered.
    #[serde(default)]
    pub tasks_finished: u64,
    /// Its machine's load, from its last heartbeat.
    #[serde(default)]
    pub load: Option<Load>,
    /// Commands it refused because no broker signed them (from its heartbeat).
    #[serde(default)]
    pub refused: u64,
    /// The operator's last disable or enable of it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<OperatorSwitch>,
}

/// A deployed cluster as the broker resolves it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterStatus {
    pub name: String,
    pub mode: SchedulingMode,
    /// Known subagents that belong, highest priority first.
    pub members: Vec<ClusterMemberStatus>,
}

/// One known subagent of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterMemberStatus {
    pub subagent_id: String,
    pub priority: i32,
    pub state: SubagentState,
}

/// A machine's load as a subagent samples it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Load {
    /// Whole-machine CPU use, 0 to 100.
    pub cpu_percent: f32,
    /// Memory in use, 0 to 100.
    pub memory_percent: f32,
    /// Tasks the subagent runs.
    pub running: u32,
}

impl Eq for Load {}

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

/// Whether a subagent takes tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubagentState {
    /// Heartbeating and taking tasks.
    Available,
    /// Switched off by an operator: no new tasks, running ones finish.
    Disabled,
    /// Stopping normally: no new tasks, running ones finish, then it leaves.
    Draining,
    /// Gone without leaving: killed, crashed, or cut off. Its tasks run
    /// again elsewhere only once proven dead (its reaper's death certificate,
    /// or its own orphan timeout and kill grace passed).
    Lost,
    /// Drained and left normally (only seen in events).
    Left,
    /// Not heard as expected (late heartbeats, no responders, a dispatch
    /// nobody received): no new tasks until it is heard again, but its
    /// running tasks are left alone. Suspicion is not proof of death.
    Suspect,
}

impl SubagentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubagentState::Available => "available",
            SubagentState::Disabled => "disabled",
            SubagentState::Draining => "draining",
            SubagentState::Lost => "lost",
            SubagentState::Left => "left",
            SubagentState::Suspect => "suspect",
        }
    }
}

/// How many orders the broker holds in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCounts {
    pub accepted: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// The reply to any request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

/// What went wrong: a stable code to match on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload could not be decoded as the subject's request type.
    BadRequest,
    /// The payload is larger than the broker accepts.
    TooLarge,
    /// No job of that name is deployed.
    UnknownJob,
    /// A parameter is not declared by the job or workflow, a required one is
    /// missing, or a value or their count is over the limit.
    InvalidParam,
    /// A job definition failed validation.
    InvalidJob,
    /// No such order.
    NotFound,
    /// The order (or subagent) is in a state that does not allow this.
    InvalidState,
    /// The receiver has no room for the request now; try again or elsewhere.
    Busy,
    /// A repeated `request_id` names another job or workflow, or other
    /// parameters, than its first order (which the message names).
    Conflict,
    /// The sender may not ask this (its signature names another role or
    /// subagent, or does not verify).
    Forbidden,
    /// Storage or another dependency failed; the request had no effect.
    Unavailable,
    /// A bug: please report it.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownJob => "unknown_job",
            ErrorCode::InvalidParam => "invalid_param",
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Busy => "busy",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error.message, self.error.code.as_str())
    }
}

impl std::error::Error for ErrorReply {}
