//! Workflows on the wire: a deployed workflow ([`WorkflowSpec`], its
//! [`StepSpec`]s and their [`OnFailure`]), and the steps of a workflow order
//! as its journal record and `order show` carry them ([`StepRun`],
//! [`StepState`], [`KillCause`]).
//!
//! Only the types live here. What they mean (validation, the deploy-file
//! form, `WorkflowSpec::dependencies`, the state machine that moves a
//! [`StepRun`]) is `crate::workflow`'s, which imports these.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MisfirePolicy, ParamSpec, TriggerSpec};

/// A deployed workflow, as carried on the wire and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowSpec {
    /// Unique name; one subject token (letters, digits, `-`, `_`).
    pub name: String,
    /// Free text shown by `baton status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The parameters a submitter may set, as for a job; any other is
    /// refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamSpec>,
    /// The steps; at least one.
    pub steps: Vec<StepSpec>,
    /// When the workflow starts on its own: the Scheduler agent submits an
    /// order through it for each slot, without parameters (the defaults
    /// apply). None: only
    /// submitted orders run it. Unlike a job's, a slot has no concurrency
    /// policy: it always starts a new order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
    /// What happens to slots missed while no Scheduler fired them.
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// Notification targets told of its orders' ends, besides the broker's
    /// global rules (see [`NotifyRules`](super::NotifyRules)).
    #[serde(default, skip_serializing_if = "super::NotifyRules::is_empty")]
    pub notify: super::NotifyRules,
}

/// One step of a workflow: a job to run once the steps it depends on are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepSpec {
    /// Unique within the workflow; one subject token.
    pub name: String,
    /// The deployed job this step runs (on that job's subagent cluster).
    pub job: String,
    /// Fixed parameters for this step, each one its job declares; `{{name}}`
    /// in a value is replaced by a declared workflow parameter or the result
    /// of a step this one waits for.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The steps this one waits for. Absent: the previous step in the list
    /// (none for the first); empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// What a failure of this step does to the order.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a failed step does to its order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum OnFailure {
    /// The order runs no further step and fails (it stays resumable).
    #[default]
    Stop,
    /// The step counts as done: the steps after it run.
    Continue,
    /// Run the step again, up to `times` more times, waiting `backoff`
    /// (humantime) before each; then as `stop`.
    Retry {
        times: u32,
        #[serde(default, with = "humantime_serde")]
        #[schemars(with = "String")]
        backoff: Duration,
    },
}

/// One step of a workflow order: its definition and where it is. Carried in
/// [`OrderInfo::steps`](crate::protocol::OrderInfo), so that a broker taking
/// over rebuilds the order from its journal record alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepRun {
    pub name: String,
    pub job: String,
    /// The step's own parameters, as defined.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The steps this one waits for, as indices into the order's steps.
    #[serde(default)]
    pub deps: Vec<usize>,
    #[serde(default)]
    pub state: StepState,
    /// Attempts dispatched so far (the latest is the current one); 0: never.
    #[serde(default)]
    pub attempt: u32,
    /// Retries used since the step was last reset by a resume.
    #[serde(default)]
    pub retries: u32,
    /// The task running the latest attempt, once it started.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Results of the latest attempt (`key=value` lines the job printed),
    /// which later steps receive as parameters.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// When the next retry is due, while one waits.
    #[serde(default)]
    pub retry_at_ms: Option<u64>,
    /// Failed, but counted as succeeded by a resume with `force_succeeded`.
    #[serde(default)]
    pub forced: bool,
    /// A kill was sent for the current attempt.
    #[serde(default)]
    pub kill: Option<KillCause>,
}

/// Where one step of an order is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    #[default]
    /// Not dispatched (yet, or again): waiting for dependencies or a retry.
    Pending,
    /// Dispatched; its task has not finished.
    Running,
    Succeeded,
    Failed,
    /// Jumped over by a resume from a later step.
    Skipped,
    /// Never ran, or was killed, because the order was cancelled.
    Cancelled,
}

/// Why a kill was sent to a running step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KillCause {
    Suspend,
    Cancel,
}
