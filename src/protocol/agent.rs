//! Messages between the broker and its agents: heartbeats with health,
//! liveness probes, and the commands that give and take the Scheduler role.
//! Also the operator's `scheduler on|off` request and agents in status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How well an agent is doing, from its CPU and memory figures. Declared
/// worst first, so `Ord` makes a better level greater.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    VeryBad,
    Bad,
    Ok,
    Good,
    Excellent,
}

impl HealthLevel {
    /// Every level, worst first.
    pub const ALL: [HealthLevel; 5] = [
        HealthLevel::VeryBad,
        HealthLevel::Bad,
        HealthLevel::Ok,
        HealthLevel::Good,
        HealthLevel::Excellent,
    ];

    /// The name used in configuration and output (`very_bad`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::VeryBad => "very_bad",
            HealthLevel::Bad => "bad",
            HealthLevel::Ok => "ok",
            HealthLevel::Good => "good",
            HealthLevel::Excellent => "excellent",
        }
    }
}

impl std::fmt::Display for HealthLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's machine figures, sampled for each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentHealth {
    /// Whole-machine CPU use, 0 to 100.
    pub cpu_percent: f32,
    /// Memory in use, 0 to 100.
    pub memory_percent: f32,
    /// One-minute load average.
    #[serde(default)]
    pub load_average: f32,
    /// Fires submitted and not yet answered by the broker.
    #[serde(default)]
    pub running: u32,
}

impl Eq for AgentHealth {}

/// Whether an agent fires triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// ON: fires every deployed trigger; one agent at a time.
    Scheduler,
    /// OFF: waits to be given the Scheduler role.
    Spare,
}

impl AgentRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Scheduler => "scheduler",
            AgentRole::Spare => "spare",
        }
    }
}

/// `{p}.hb.agent.{id}`: an agent is alive, with its role and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentHeartbeat {
    pub agent_id: String,
    /// New for every process start, so a restart under the same id is seen.
    pub instance_id: String,
    /// Started with "allow the broker to control my role".
    pub controlled: bool,
    /// The role it holds now.
    pub role: AgentRole,
    pub health: AgentHealth,
    /// Deployed triggers it keeps (while Scheduler).
    #[serde(default)]
    pub schedules: u32,
    /// The newest broker epoch it has obeyed.
    #[serde(default)]
    pub broker_epoch: u64,
    pub sent_at_ms: u64,
    /// How often it heartbeats.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    #[serde(default)]
    pub protocol: u32,
    /// What keeps its file triggers from watching (a directory missing or
    /// unreadable), one line each (while Scheduler).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_problems: Vec<String>,
}

/// `{p}.agent.{id}.role`: the broker gives, renews or takes the Scheduler role.
///
/// The role lasts `lease_ms` from receipt: an agent that hears no renewal
/// from the broker in that time turns itself off. A command from an older
/// `epoch` than the newest the agent has seen is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoleCommand {
    pub broker_id: String,
    /// The sending broker's epoch; newer brokers have larger epochs.
    pub epoch: u64,
    /// Numbers the broker's commands, to match answers to them.
    pub command: u64,
    pub action: RoleAction,
    /// How long the role lasts from receipt (`on` and `renew`).
    #[serde(default)]
    pub lease_ms: u64,
}

/// What a [`RoleCommand`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleAction {
    /// Take the Scheduler role.
    On,
    /// Keep it for another lease; an agent that is off stays off.
    Renew,
    /// Drop it; answer only once no more fires will be sent.
    Off,
}

/// Reply to [`RoleCommand`]: the role the agent holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoleAnswer {
    pub agent_id: String,
    pub instance_id: String,
    pub command: u64,
    pub role: AgentRole,
}

/// Reply to a [`Ping`](super::Ping) on `{p}.agent.{id}.ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentPong {
    pub agent_id: String,
    pub instance_id: String,
    pub role: AgentRole,
}

/// `{p}.api.scheduler.control`: an operator moves the Scheduler role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulerControl {
    pub agent_id: String,
    pub action: SchedulerAction,
}

/// What an operator asks of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerAction {
    /// Make it the Scheduler: the current one is turned off first.
    On,
    /// Turn it off and keep it out of elections until turned on again; if
    /// no Scheduler remains, another agent is elected.
    Off,
}

/// Reply to [`SchedulerControl`]: the request is accepted and under way;
/// `baton status` (or the agent's heartbeats) shows when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulerControlReply {
    pub agent_id: String,
    pub action: SchedulerAction,
    /// The role the agent reports now (before the change takes effect).
    pub role: AgentRole,
}

/// One agent as the broker sees it, in [`StatusReply`](super::StatusReply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentStatus {
    pub id: String,
    pub role: AgentRole,
    /// Lets the broker control its role.
    pub controlled: bool,
    /// Turned off by an operator: not elected until turned on again.
    #[serde(default)]
    pub excluded: bool,
    pub health_level: HealthLevel,
    pub health: AgentHealth,
    /// Its switch condition holds: the role moves to a healthier spare.
    #[serde(default)]
    pub switch_condition_met: bool,
    #[serde(default)]
    pub schedules: u32,
    /// What keeps its file triggers from watching (a directory missing or
    /// unreadable), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_problems: Vec<String>,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Milliseconds left of the lease the broker granted it, if any.
    #[serde(default)]
    pub lease_left_ms: Option<u64>,
    /// The operator's last `scheduler on` or `off` of it (`off`: turned
    /// off), kept across broker takeovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<super::api::OperatorSwitch>,
}

/// `{p}.cluster.agent.{id}`: an agent's role changed, as the broker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgentChanged {
    pub agent_id: String,
    pub role: AgentRole,
    /// Why, for people.
    pub reason: String,
    pub at_ms: u64,
}

/// The value of the key `lease` in the `{p}_scheduler` KV bucket: the
/// Scheduler lease the active broker granted or renewed last, written
/// before its `on` or `renew` command is sent and deleted when the holder
/// confirmed giving the role up or its process is known gone. A broker
/// taking over reads it to know whose lease may still run, instead of
/// granting nothing for a whole lease. Only brokers write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulerLease {
    /// The agent holding the lease.
    pub agent_id: String,
    /// The broker that granted it.
    pub broker_id: String,
    /// That broker's epoch.
    pub epoch: u64,
    /// Until when the broker counts the lease as running, grace included
    /// (ms since the Unix epoch, the broker's clock).
    pub until_ms: u64,
    /// When it was granted or last renewed (ms since the Unix epoch).
    #[serde(default)]
    pub granted_at_ms: u64,
}

/// `{p}.cluster.scheduler`: whether the deployed triggers fire, as the
/// active broker sees it; published when it changes. While no agent can
/// hold the Scheduler role (none connected, all turned off by an operator,
/// all outside the broker's control or too unhealthy), nothing fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggersChanged {
    pub firing: bool,
    /// The Scheduler, when one holds the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Why, for people.
    pub reason: String,
    pub at_ms: u64,
}

/// `{p}.cluster.scheduler.missed`: the Scheduler passed over slots of a job
/// or workflow under its misfire policy (missed while no Scheduler fired
/// them, or it fell behind). Published by the agent holding the role; the
/// active broker's notifier tells `on_missed_slot` targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SlotsMissed {
    /// The job's (or workflow's) name.
    pub job: String,
    /// A workflow's slots, not a job's.
    #[serde(default)]
    pub workflow: bool,
    /// The agent holding the Scheduler role.
    pub scheduler: String,
    /// Slots passed over (counted up to 10,000 per gap).
    pub count: u64,
    /// The gap: after the last slot fired (ms since the epoch) ...
    pub after_ms: u64,
    /// ... up to this time.
    pub until_ms: u64,
    pub at_ms: u64,
}
