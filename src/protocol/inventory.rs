//! The job inventory: what is deployed, whether it is paused, when it fires
//! next and how its last orders went (`job.list`, `job.get`); pausing and
//! resuming a job or workflow (`job.control`); and the plan a deploy
//! answers with (what it adds, changes field by field, removes, leaves).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{JobSpec, OperatorSwitch, OrderSummary, TriggerSpec, WorkflowSpec};

/// Whether a name is a job's or a workflow's (they share one namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Job,
    Workflow,
}

/// `{p}.api.job.list`: every deployed job and workflow, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListJobs {}

/// Reply to [`ListJobs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
}

/// One slot of a trigger, with the time zone its trigger reads (UTC when
/// absent), so that a client can show it on that wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FireTime {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Why the fire is there, when a calendar or DST moved, shifted or
    /// repeated it: "moved from Sat 12-26 (days off)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One line of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobSummary {
    pub name: String,
    pub kind: JobKind,
    /// The subagent cluster a job runs on (none: any subagent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
    /// Set while an operator has it paused: who, when, and whether manual
    /// submits are refused too (`all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<OperatorSwitch>,
    /// Its next slot from now (none: no trigger, or none left). A paused
    /// job's slots are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<FireTime>,
    /// Its newest order the broker holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_order: Option<OrderSummary>,
}

/// `{p}.api.job.get`: one job or workflow in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetJob {
    pub name: String,
    /// How many next fire times to list (default 10, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u32>,
}

/// Reply to [`GetJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobInfo {
    pub name: String,
    pub kind: JobKind,
    /// The definition, for a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
    /// The definition, for a workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<OperatorSwitch>,
    /// While paused: how many of its slots have fallen since the pause (not
    /// fired; on resume its misfire policy decides about them).
    #[serde(default)]
    pub skipped_slots: u64,
    /// Its next slots from now (`GetJob::next` of them), oldest first.
    #[serde(default)]
    pub next_fires: Vec<FireTime>,
    /// Its newest orders the broker holds (at most 10), newest first.
    #[serde(default)]
    pub recent_orders: Vec<OrderSummary>,
    /// The workflows with a step that runs this job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// `{p}.api.job.control`: pause or resume a job or workflow (admin only).
/// Stored in the switches bucket (key `job.NAME`) before the answer, so
/// every broker taking over, and every Scheduler, honours it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobControl {
    pub name: String,
    /// `true`: pause (its triggers do not fire); `false`: resume.
    pub pause: bool,
    /// With `pause`: refuse manual submits of it too (workflow steps that
    /// run a job still run).
    #[serde(default)]
    pub all: bool,
}

/// Reply to [`JobControl`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobControlReply {
    pub name: String,
    pub kind: JobKind,
    /// What is stored now. A job paused again keeps its first pause's
    /// time and author.
    pub switched: OperatorSwitch,
    /// `false` when it was already paused (or not paused, for a resume).
    #[serde(default = "yes")]
    pub changed: bool,
}

fn yes() -> bool {
    true
}

/// What a definition is, in a [`DeployPlan`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SpecKind {
    Cluster,
    Job,
    Workflow,
}

/// A definition by kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Named {
    pub kind: SpecKind,
    pub name: String,
}

/// A definition a deploy replaces, with the fields that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpecChanged {
    pub kind: SpecKind,
    pub name: String,
    /// The fields that differ, by name.
    pub fields: Vec<FieldChange>,
}

/// One field of a definition, before and after a deploy, as JSON (`null`
/// when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// What a deploy does to what is deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployPlan {
    #[serde(default)]
    pub added: Vec<Named>,
    #[serde(default)]
    pub changed: Vec<SpecChanged>,
    #[serde(default)]
    pub removed: Vec<Named>,
    #[serde(default)]
    pub unchanged: Vec<Named>,
    /// Deployed, not in this deploy, and left deployed (with `prune` they
    /// would be removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Named>,
    /// How many more are kept than `kept` lists (it lists the first 100).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept_more: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
