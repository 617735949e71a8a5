//! Jobs that run on several members of their cluster for one order: the
//! job's [`SpreadPolicy`] (in `JobSpec`), and where each member's task is
//! ([`SpreadMember`], in `OrderInfo`).
//!
//! Only the types live here. Which members an order spreads over, and how
//! its members' ends decide its own, are the broker's (`broker/spread.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OrderState;

/// How a job spreads one order over the members of its cluster: one task
/// on each member that is up when the order is placed (`count` absent), or
/// on up to `count` of them, chosen by the cluster's scheduling mode. Each
/// member's task is an order of its own (`member_of` the spread order),
/// bound to that member: it never runs on another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpreadPolicy {
    /// At most this many members (at least 1); absent: all that are up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The order succeeds when at least this many members' tasks succeeded;
    /// absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_succeeded: Option<u32>,
    /// How long a member's task lost with its subagent waits for that
    /// member to come back (restartable jobs only), in milliseconds; after
    /// that it fails "member lost". Zero: it fails at once.
    pub rejoin_ms: u64,
}

/// One member of a spread order: the subagent, the order that runs the
/// task there, and how that order stands (as of its last stored state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpreadMember {
    pub subagent_id: String,
    /// The member's order (`member_of` the spread order, bound to `subagent_id`).
    pub order_id: String,
    pub state: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why its order failed, when the exit code does not say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Tasks its order started (more than 1: it ran again).
    #[serde(default)]
    pub attempt: u32,
}
