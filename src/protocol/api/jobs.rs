//! What a deploy carries: job definitions with their parameters, subagent
//! clusters and their scheduling modes, and the deploy request and reply.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkflowSpec;

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
