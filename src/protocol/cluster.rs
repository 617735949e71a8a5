//! Messages between the broker and its subagents: registration, heartbeats,
//! task dispatch and results.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `{p}.broker.register`: a subagent introduces itself on start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Register {
    pub subagent_id: String,
    /// New for every process start, so a restart under the same id is seen.
    pub instance_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Most tasks it runs at once.
    pub capacity: u32,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub protocol: u32,
    /// How often it heartbeats.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// It kills its tasks after hearing no broker for this long.
    #[serde(default)]
    pub orphan_timeout_ms: u64,
}

/// Reply to [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Registered {
    pub broker_id: String,
    /// How often the broker expects a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The active broker's epoch (see [`BrokerHeartbeat::epoch`]).
    #[serde(default)]
    pub epoch: u64,
}

/// `{p}.hb.subagent.{id}`: a subagent is alive, with what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubagentHeartbeat {
    pub subagent_id: String,
    pub instance_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Task ids it is running now.
    #[serde(default)]
    pub running: Vec<String>,
    pub sent_at_ms: u64,
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub load: Option<super::Load>,
    /// Stopping normally: takes no new tasks.
    #[serde(default)]
    pub draining: bool,
    /// How often it heartbeats.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// It kills its tasks after hearing no broker for this long.
    #[serde(default)]
    pub orphan_timeout_ms: u64,
    /// Commands and broker heartbeats it refused since it started because
    /// no broker signed them.
    #[serde(default)]
    pub refused: u64,
}

/// `{p}.subagent.{id}.ping`: is this subagent alive? A killed one has no
/// responders at once; a busy one answers late.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ping {}

/// Reply to [`Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pong {
    pub subagent_id: String,
    pub instance_id: String,
    #[serde(default)]
    pub running: Vec<String>,
}

/// `{p}.subagent.{id}.stop`: drain and exit, as on SIGTERM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StopSubagent {
    /// The sending broker's epoch; a subagent refuses an older one.
    #[serde(default)]
    pub epoch: u64,
}

/// Reply to [`StopSubagent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stopping {
    /// Tasks it lets finish before it exits.
    pub running: u32,
}

/// `{p}.broker.leave`: a drained subagent says goodbye; this is not a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Leave {
    pub subagent_id: String,
    pub instance_id: String,
}

/// Reply to [`Leave`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Left {}

/// `{p}.hb.broker`: the broker is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokerHeartbeat {
    pub broker_id: String,
    pub sent_at_ms: u64,
    #[serde(default)]
    pub protocol: u32,
    /// The broker's epoch: the revision at which it won the leadership
    /// lease; a newer active broker has a larger one. Every command a broker
    /// sends carries it, and agents and subagents refuse commands of an
    /// older epoch than the newest they have seen from an active broker.
    #[serde(default)]
    pub epoch: u64,
    /// Active (serves every request) or standby (waits for the lease).
    #[serde(default = "active")]
    pub role: BrokerRole,
    /// Lower goes first: a standby waits while a live one with a lower
    /// precedence could take the lease.
    #[serde(default)]
    pub precedence: u32,
    /// Milliseconds since the active broker last renewed its lease.
    #[serde(default)]
    pub lease_age_ms: Option<u64>,
    /// The broker process that sent it (a UUIDv7, so ordered by start
    /// time): of two processes started with one id, the later one stops.
    #[serde(default)]
    pub instance: String,
}

fn active() -> BrokerRole {
    BrokerRole::Active
}

/// Whether a broker acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrokerRole {
    /// Holds the leadership lease: serves requests, dispatches, elects.
    Active,
    /// Waits to take the lease over.
    Standby,
    /// Stopped normally: its last heartbeat and leadership change say so,
    /// and the others drop it from their view at once.
    Stopped,
}

impl BrokerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerRole::Active => "active",
            BrokerRole::Standby => "standby",
            BrokerRole::Stopped => "stopped",
        }
    }
}

/// The value of the key `broker` in the `{p}_leader` KV bucket: who holds
/// the leadership lease. Created to campaign, updated with the revision
/// seen (compare-and-swap) to renew; it expires when not renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokerLease {
    pub broker_id: String,
    /// The revision the lease was won at: the holder's epoch.
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub precedence: u32,
    pub renewed_at_ms: u64,
}

/// Reply on `{p}.api.status.brokers`, where every broker process answers
/// (a request there gathers answers for a while): its own view of the
/// leadership, so an operator sees the brokers while none is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokerView {
    pub broker_id: String,
    /// `active` while it holds the lease; then `{p}.api.status` has its
    /// full answer.
    pub role: BrokerRole,
    /// Its epoch, when active.
    #[serde(default)]
    pub epoch: u64,
    pub precedence: u32,
    pub protocol: u32,
    /// The leadership lease as it just read it: who is active, and when
    /// they last renewed it. Absent while no broker holds it.
    #[serde(default)]
    pub lease: Option<BrokerLease>,
    /// Why the lease could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_error: Option<String>,
    /// While no broker holds the lease: since when, as far as it knows (the
    /// last time it heard an active broker, or its own start).
    #[serde(default)]
    pub no_active_since_ms: Option<u64>,
    /// The other brokers it hears, with the age of their last heartbeat.
    #[serde(default)]
    pub brokers: Vec<super::BrokerStatus>,
    pub at_ms: u64,
}

/// `{p}.cluster.broker.{id}`: a broker became active or stepped down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BrokerChanged {
    pub broker_id: String,
    pub role: BrokerRole,
    pub epoch: u64,
    /// Why, for people.
    pub reason: String,
    pub at_ms: u64,
}

/// `{p}.subagent.{id}.run`: run one task. Sending the same `task_id` again is
/// safe: the subagent recognises it and does not start a second copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunTask {
    pub task_id: String,
    pub order_id: String,
    pub job: String,
    pub attempt: u32,
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The subagent process this task is meant for (from its registration);
    /// a restarted subagent refuses tasks meant for its previous process.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The sending broker's epoch; a subagent refuses an older one.
    #[serde(default)]
    pub epoch: u64,
    /// The task runs a step of this workflow order: its log lines are
    /// published as the workflow order's, naming the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<super::ParentStep>,
}

/// Reply to [`RunTask`]: the subagent owns the task and will report its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunAccepted {
    pub task_id: String,
    /// The task was already known to the subagent; no second copy was started.
    #[serde(default)]
    pub duplicate: bool,
    /// Process id of the task (absent when it could not be started).
    #[serde(default)]
    pub pid: Option<u32>,
}

/// `{p}.broker.result`: a task ended. The subagent repeats it until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub task_id: String,
    pub order_id: String,
    pub job: String,
    pub attempt: u32,
    pub subagent_id: String,
    /// Exit code when the process exited by itself.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The job timeout killed the process.
    #[serde(default)]
    pub timed_out: bool,
    /// The process could not be started (or waited for), and why.
    #[serde(default)]
    pub error: Option<String>,
    /// The subagent killed the task itself (orphan timeout, drain timeout),
    /// and why: the job did not end on its own, so a restartable job runs
    /// again elsewhere.
    #[serde(default)]
    pub abandoned: Option<String>,
    /// What the task printed as `::baton-result KEY=VALUE` lines on stdout
    /// (at most 32; a later line with the same key wins).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub pid: Option<u32>,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
}

/// Reply to [`TaskResult`]: the broker has recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultAck {
    pub task_id: String,
}

/// `{p}.subagent.{id}.kill`: kill a running task now (SIGTERM, grace,
/// SIGKILL); its result follows as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KillTask {
    pub task_id: String,
    /// Reported in the task's result.
    pub reason: String,
    /// The sending broker's epoch; a subagent refuses an older one.
    #[serde(default)]
    pub epoch: u64,
}

/// Reply to [`KillTask`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KillAccepted {
    pub task_id: String,
    /// Whether the task was running there.
    pub found: bool,
}

/// `{p}.broker.certificate`: a subagent process is dead. Sent by its
/// reaper (a companion process on the same host, with the subagent's
/// credentials) once it saw the subagent die, killed the process groups of
/// its tasks and saw them gone. The broker accepts it only when signed by
/// that subagent's identity, and applies it only to tasks placed on that
/// process (`instance_id`); those run again elsewhere at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeathCertificate {
    pub subagent_id: String,
    /// The dead process (its `instance_id` from `Register`).
    pub instance_id: String,
    /// Tasks whose process groups the reaper killed and saw gone.
    #[serde(default)]
    pub killed: Vec<String>,
    /// Tasks whose process groups still held a live process after SIGKILL
    /// for as long as the reaper waited (uninterruptible sleep, or a
    /// process it may not signal): not proven dead, so the broker runs them
    /// again only after the subagent's orphan timeout and kill grace, as if
    /// it were cut off (the SIGKILL stays pending on them).
    #[serde(default)]
    pub survivors: Vec<String>,
    /// When the reaper saw the subagent die.
    pub died_at_ms: u64,
    /// When the groups were gone.
    pub certified_at_ms: u64,
}

/// Reply to [`DeathCertificate`]: the broker applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateAccepted {
    /// Orders whose task the certificate proved dead (run again or failed).
    pub orders: u32,
}
