//! Failure notifications: the rules a job or workflow carries (which
//! notification targets hear of its orders' ends) and the [`Notification`]
//! body the active broker sends to webhooks (HTTP POST, JSON) and NATS
//! subjects (`{p}.notify.{subject}`, JSON). Targets are named in the
//! broker's configuration (`[[notify.target]]`), never here: a URL or a
//! header may hold a secret, and the jobs bucket is readable by many.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OrderState;

/// `notify = { failure = [...], success = [...] }` on a job or workflow:
/// the notification targets (names from the broker's `[[notify.target]]`)
/// told when one of its orders ends so, besides the broker's global rules
/// (`[notify] on_failure`, `on_success`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotifyRules {
    /// Targets told when an order fails for good (no retry left).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<String>,
    /// Targets told when an order succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success: Vec<String>,
    /// Targets told when the Scheduler passes over its slots (misfire
    /// policy: missed while no Scheduler fired them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed: Vec<String>,
}

impl NotifyRules {
    pub fn is_empty(&self) -> bool {
        self.failure.is_empty() && self.success.is_empty() && self.missed.is_empty()
    }
}

/// What a notification tells of.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// An order (job or workflow order) failed for good.
    Failure,
    /// An order succeeded.
    Success,
    /// The active broker declared a subagent lost (gone without leaving).
    SubagentLost,
    /// No agent can hold the Scheduler role: no trigger fires.
    NoScheduler,
    /// A subagent told of as lost is heard again (sent to the targets of
    /// `subagent_lost`, so an alert can be cleared).
    SubagentBack,
    /// The triggers fire again after `no_scheduler` (sent to its targets).
    SchedulerBack,
    /// The Scheduler passed over slots of a job or workflow (its misfire
    /// policy: missed while no Scheduler fired them, or it fell behind).
    MissedSlot,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Failure => "failure",
            NotifyKind::Success => "success",
            NotifyKind::SubagentLost => "subagent_lost",
            NotifyKind::NoScheduler => "no_scheduler",
            NotifyKind::SubagentBack => "subagent_back",
            NotifyKind::SchedulerBack => "scheduler_back",
            NotifyKind::MissedSlot => "missed_slot",
        }
    }
}

/// The body of one notification: a webhook's HTTP POST (`Content-Type:
/// application/json`) and a subject target's NATS message, in JSON.
/// An order's end (`failure`, `success`) is delivered at least once: a
/// receiver drops a repeated `id`. The order fields are present for those
/// kinds only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    /// The same in every copy of this notification, so receivers drop
    /// repeats by it: `{order_id}:{kind}:{finished_at_ms}` for an order,
    /// `subagent:{id}:lost:{at_ms}`, `subagent:{id}:back:{at_ms}`,
    /// `scheduler:none:{at_ms}`, `scheduler:back:{at_ms}`.
    pub id: String,
    pub kind: NotifyKind,
    /// One line for people: what happened.
    pub summary: String,
    /// When it happened (ms since the epoch): an order's end, an event's time.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The job's name (of a workflow order: the workflow's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Present for a workflow order: the workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OrderState>,
    /// The exit code of the last task, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the last task, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Why: an order's failure when the exit code does not say it, why a
    /// subagent was lost, why no agent can be Scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Where an order's last task ran; the subagent lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_id: Option<String>,
    /// Tasks started for the order (retries included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The trigger slot it fired, when a Scheduler submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_ms: Option<u64>,
    /// Who submitted it, when the submit was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// The broker that sent this copy.
    pub broker_id: String,
    /// The cluster's subject prefix.
    pub prefix: String,
    /// How to see more: `baton order show {order_id}` (and `baton order
    /// logs {order_id}`), or `baton status`.
    pub hint: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}
