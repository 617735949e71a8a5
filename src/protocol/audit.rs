//! The audit trail: one [`AuditRecord`] per state-changing command the
//! broker answered, published by the broker on `{p}.audit.{command}` and
//! kept in the JetStream stream `{p}_audit` (read by `baton audit`; only
//! the `admin` role may read it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `outcome` of a command that was carried out.
pub const AUDIT_OK: &str = "ok";

/// Every command recorded (`AuditRecord::command`).
pub const AUDIT_COMMANDS: [&str; 12] = [
    "deploy",
    "undeploy",
    "job.pause",
    "job.resume",
    "order.cancel",
    "order.suspend",
    "order.resume",
    "subagent.disable",
    "subagent.enable",
    "subagent.stop",
    "scheduler.on",
    "scheduler.off",
];

/// One state-changing command and how the broker answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    /// When the broker knew the outcome.
    pub at_ms: u64,
    /// What was asked: `deploy`, `undeploy` (a deploy that only removes),
    /// `job.pause`, `job.resume`, `order.cancel`, `order.suspend`,
    /// `order.resume`, `subagent.disable`, `subagent.enable`,
    /// `subagent.stop`, `scheduler.on` or `scheduler.off`; also the last
    /// tokens of the subject the record is published on.
    pub command: String,
    /// What it was about: the names deployed (jobs, then workflows, then
    /// clusters, separated by `, `) or undeployed, the job, the order id,
    /// the subagent id or the agent id.
    pub target: String,
    /// `ok`, or the error code the command was refused with (`forbidden`,
    /// `not_found`, `invalid_state`, ...; see `ErrorReply`).
    pub outcome: String,
    /// The refusal's message, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who sent the command, as the broker could tell: the name of the
    /// identity that signed it (`admin`, `client`, ...; then `verified` is
    /// true), or `unsigned` (a NATS client that does not sign; the server's
    /// permissions let it in, but Baton cannot name it), `unchecked` (the
    /// broker runs without identities: `--insecure`) or `forged (why)` (a
    /// signature that does not verify; always refused).
    pub who: String,
    /// True when `who` is an identity whose signature the broker checked
    /// against the credentials folder's public keys.
    #[serde(default)]
    pub verified: bool,
    /// The broker that answered.
    pub broker_id: String,
    /// Options of the command that change what it does (`kill`, `from
    /// STEP`, `force succeeded: a, b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// Whether the command was carried out.
    pub fn ok(&self) -> bool {
        self.outcome == AUDIT_OK
    }
}
