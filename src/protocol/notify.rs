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
}

impl NotifyRules {
    pub fn is_empty(&self) -> bool {
        self.failure.is_empty() && self.success.is_empty()
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
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Failure => "failure",
            NotifyKind::Success => "success",
        }
    }
}

/// The body of one notification: a webhook's HTTP POST (`Content-Type:
/// application/json`) and a subject target's NATS message, in JSON.
/// Delivered at least once: a receiver drops a repeated `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    /// `{order_id}:{kind}:{finished_at_ms}`: the same in every copy of this
    /// notification, so receivers drop repeats by it.
    pub id: String,
    pub kind: NotifyKind,
    pub order_id: String,
    /// The job's name (of a workflow order: the workflow's).
    pub job: String,
    /// Present for a workflow order: the workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub state: OrderState,
    /// The exit code of the last task, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the last task, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
    /// Why it failed when the exit code does not say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub accepted_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Where its last task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_id: Option<String>,
    /// Tasks started for the order (retries included).
    #[serde(default)]
    pub attempts: u32,
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
    /// logs {order_id}` for its output).
    pub hint: String,
}
