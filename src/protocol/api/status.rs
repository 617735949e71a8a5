//! The cluster's state as the active broker tells it (`{p}.api.status`):
//! brokers, subagents and their load, clusters, and order counts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{OperatorSwitch, SchedulingMode};

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
