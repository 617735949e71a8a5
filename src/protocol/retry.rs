//! A job's retries on the wire: its [`RetryPolicy`] (in `JobSpec`), and the
//! history of an order's tasks ([`TaskAttempt`], in `OrderInfo`).
//!
//! Only the types live here. How long a retry waits (`jobs::retry`) and
//! when an order retries (`broker/order_book`) are decided where they are
//! used.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a job's failed task runs again: up to `times` more times, each after
/// an exponential backoff (`backoff_ms`, doubled per retry, at most
/// `max_backoff_ms`), with jitter when asked. A task fails when it exits
/// non-zero, is killed by a signal or times out; a cancel does not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetryPolicy {
    /// Retries after the first attempt (1 to 100).
    pub times: u32,
    /// The wait before the first retry, in milliseconds (more than zero).
    pub backoff_ms: u64,
    /// The longest wait, in milliseconds; at least `backoff_ms`. Absent:
    /// 100 × `backoff_ms`, at most one day.
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    /// Each wait is drawn between half of it and all of it, the same for the
    /// same order and retry on every broker.
    #[serde(default)]
    pub jitter: bool,
}

/// One task of an order: where it ran, how it ended, and why the order ran
/// again after it. Kept in [`OrderInfo::attempts`](crate::protocol::OrderInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskAttempt {
    /// The order's task count when this one was placed (`BATON_ATTEMPT`).
    pub attempt: u32,
    pub task_id: String,
    pub subagent_id: String,
    /// When its subagent started it; absent: never confirmed started.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// How it ended; absent while it runs.
    #[serde(default)]
    pub outcome: Option<AttemptOutcome>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// What the outcome does not say: the error of a task that could not
    /// run, how its subagent was lost.
    #[serde(default)]
    pub reason: Option<String>,
    /// Why the order ran again after it ("retry 1 of 3 after exit 1",
    /// "sub-3 lost").
    #[serde(default)]
    pub rerun: Option<String>,
}

impl TaskAttempt {
    /// A task just placed on a subagent: nothing known of how it goes.
    pub fn placed(attempt: u32, task_id: &str, subagent_id: &str) -> TaskAttempt {
        TaskAttempt {
            attempt,
            task_id: task_id.to_string(),
            subagent_id: subagent_id.to_string(),
            started_at_ms: None,
            finished_at_ms: None,
            outcome: None,
            exit_code: None,
            signal: None,
            reason: None,
            rerun: None,
        }
    }
}

/// How one task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Exited with code 0.
    Succeeded,
    /// Exited with a non-zero code.
    Exited,
    /// Killed by a signal.
    Signalled,
    /// Killed after the job's timeout.
    TimedOut,
    /// Could not run (`reason` says why).
    Error,
    /// Its subagent was lost, or killed the task itself (`reason` says how,
    /// and whether it was known to run).
    Lost,
    /// Ended by a cancel.
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Exited => "exited",
            AttemptOutcome::Signalled => "signalled",
            AttemptOutcome::TimedOut => "timed out",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}
