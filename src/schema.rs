//! Generation of `schemas/`: one JSON Schema per wire message, made from the
//! Rust types by schemars, and an AsyncAPI 3 document listing every subject
//! with who publishes, who subscribes, the payload and the encodings.
//!
//! Two tables drive everything: [`WIRE_TYPES`] (every message type, once) and
//! [`CHANNELS`] (every subject, once). Adding a message or a subject is one
//! line in each; the unit tests fail when the tables fall behind
//! [`Subjects`](crate::protocol::Subjects) or each other.
//!
//! Size: over the ~500-line mark because the two tables list every message
//! and every subject, one line each.
//!
//! Architecture invariant: the example messages in `schemas/examples/` are
//! written by hand and only decoded here ([`decode_example`]), never generated,
//! so they show what a client in another language would really send.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::path::Path;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Map, Value};

use crate::protocol::{self, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, PROTOCOL_VERSION};

/// The generated AsyncAPI document's file name.
pub const ASYNCAPI_FILE: &str = "asyncapi.json";

/// One wire message type: its name and what the generator and the example
/// decoder need from it.
struct WireType {
    name: &'static str,
    schema: fn() -> Value,
    round_trip: fn(&Value) -> Result<(), String>,
}

macro_rules! wire_types {
    ($($ty:ident),* $(,)?) => {
        /// Every message that travels on a subject, once, and the values
        /// other programs may read from Baton's KV buckets (`FiredSlot`).
        /// Nested types (`JobSpec`, `OrderState`, ...) appear as `$defs` in
        /// these schemas.
        const WIRE_TYPES: &[WireType] = &[$(WireType {
            name: stringify!($ty),
            schema: schema_of::<protocol::$ty>,
            round_trip: round_trip::<protocol::$ty>,
        }),*];
    };
}

wire_types![
    SubmitOrder,
    SubmitReply,
    DeployRequest,
    DeployReply,
    GetOrder,
    OrderInfo,
    StatusRequest,
    StatusReply,
    BrokerView,
    ErrorReply,
    Register,
    Registered,
    SubagentHeartbeat,
    BrokerHeartbeat,
    RunTask,
    RunAccepted,
    TaskResult,
    ResultAck,
    DeathCertificate,
    CertificateAccepted,
    OrderAccepted,
    TaskStarted,
    TaskLog,
    OrderFinished,
    SubagentControl,
    SubagentControlReply,
    Leave,
    Left,
    Ping,
    Pong,
    StopSubagent,
    Stopping,
    SubagentChanged,
    CancelOrder,
    KillTask,
    KillAccepted,
    AgentHeartbeat,
    RoleCommand,
    RoleAnswer,
    AgentPong,
    SchedulerControl,
    SchedulerControlReply,
    AgentChanged,
    FiredSlot,
    FileRecord,
    BrokerChanged,
    BrokerLease,
    SchedulerLease,
    OperatorSwitch,
    SuspendOrder,
    ResumeOrder,
    ListOrders,
    OrderList,
    OrderChanged,
    AuditRecord,
    ListJobs,
    JobList,
    GetJob,
    JobInfo,
    JobControl,
    JobControlReply,
    TriggersChanged,
    SlotsMissed,
    Notification,
];

/// The kinds of process on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// `baton` CLI commands or any other NATS client.
    Client,
    Broker,
    Subagent,
    /// `baton agent`: may hold the Scheduler role and then fires triggers.
    Agent,
}

impl Peer {
    fn token(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Broker => "broker",
            Peer::Subagent => "subagent",
            Peer::Agent => "agent",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Peer::Client => "clients (the `baton` CLI or any NATS client)",
            Peer::Broker => "the broker",
            Peer::Subagent => "a subagent",
            Peer::Agent => "an agent",
        }
    }
}

/// One subject.
struct Channel {
    /// The channel's key in the AsyncAPI document.
    id: &'static str,
    /// The subject, with `{parameter}` placeholders.
    address: &'static str,
    /// The message published on it (the request, on request subjects).
    message: &'static str,
    /// On request subjects, the success reply; the other reply is always `ErrorReply`.
    reply: Option<&'static str>,
    publisher: Peer,
    subscriber: Peer,
    /// Requests may be JSON (`Content-Type: application/json`); replies follow.
    json: bool,
    /// What the subject is for, in one sentence.
    summary: &'static str,
}

const fn channel(
    id: &'static str,
    address: &'static str,
    (message, reply): (&'static str, Option<&'static str>),
    (publisher, subscriber): (Peer, Peer),
    json: bool,
    summary: &'static str,
) -> Channel {
    Channel {
        id,
        address,
        message,
        reply,
        publisher,
        subscriber,
        json,
        summary,
    }
}

/// Every subject in `protocol::subjects`, once.
#[rustfmt::skip]
const CHANNELS: &[Channel] = {
    use Peer::{Agent, Broker, Client, Subagent};
    &[
    channel("submit", "{prefix}.api.submit", ("SubmitOrder", Some("SubmitReply")), (Client, Broker), true,
        "Submit an order: one run of a deployed job. The order is durable once the reply arrives."),
    channel("deploy", "{prefix}.api.deploy", ("DeployRequest", Some("DeployReply")), (Client, Broker), true,
        "Add or replace job, cluster and workflow definitions, and remove some (`remove`, or `prune` for all the request does not hold); the reply's plan says what was added, changed field by field, removed and left. Admin only."),
    channel("jobList", "{prefix}.api.job.list", ("ListJobs", Some("JobList")), (Client, Broker), true,
        "The job inventory: every deployed job and workflow with its cluster, triggers, pause, next fire time (with its trigger's zone) and last order."),
    channel("jobGet", "{prefix}.api.job.get", ("GetJob", Some("JobInfo")), (Client, Broker), true,
        "One job or workflow: its definition, pause and skipped slots, next 10 fire times, newest orders, and the workflows that run it."),
    channel("jobControl", "{prefix}.api.job.control", ("JobControl", Some("JobControlReply")), (Client, Broker), true,
        "Pause (its triggers do not fire; with all, manual submits are refused too) or resume a job or workflow; stored before the reply, held by every broker and Scheduler after. Admin only."),
    channel("orderGet", "{prefix}.api.order.get", ("GetOrder", Some("OrderInfo")), (Client, Broker), true,
        "Look up one order and its current state."),
    channel("status", "{prefix}.api.status", ("StatusRequest", Some("StatusReply")), (Client, Broker), true,
        "Ask the broker for the cluster's state: subagents, jobs, order counts."),
    channel("statusBrokers", "{prefix}.api.status.brokers", ("StatusRequest", Some("BrokerView")), (Client, Broker), true,
        "Ask every broker, standbys included, for its own view of the leadership (who holds the lease); every one answers, so gather the answers for a while."),
    channel("orderCancel", "{prefix}.api.order.cancel", ("CancelOrder", Some("OrderInfo")), (Client, Broker), true,
        "Cancel an order: a waiting one at once, a running one when its task ends (now with kill). Idempotent."),
    channel("orderSuspend", "{prefix}.api.order.suspend", ("SuspendOrder", Some("OrderInfo")), (Client, Broker), true,
        "Suspend a workflow order: it holds before its next step once its running steps finish (or are killed, with kill, and run again on resume). Idempotent."),
    channel("orderResume", "{prefix}.api.order.resume", ("ResumeOrder", Some("OrderInfo")), (Client, Broker), true,
        "Resume a suspended or failed workflow order, optionally from a step or with failed steps counted as succeeded."),
    channel("orderList", "{prefix}.api.order.list", ("ListOrders", Some("OrderList")), (Client, Broker), true,
        "List the orders the broker holds (every unfinished one and the newest finished ones), newest first, filtered by workflow, job, state and time."),
    channel("kill", "{prefix}.subagent.{subagent_id}.kill", ("KillTask", Some("KillAccepted")), (Broker, Subagent), false,
        "Kill a running task now (a cancelled order's, with kill); its result follows as usual."),
    channel("subagentControl", "{prefix}.api.subagent.control", ("SubagentControl", Some("SubagentControlReply")), (Client, Broker), true,
        "Switch-over by an operator: disable, enable or stop (drain) a subagent."),
    channel("leave", "{prefix}.broker.leave", ("Leave", Some("Left")), (Subagent, Broker), false,
        "A drained subagent leaves normally; this is not a failure."),
    channel("ping", "{prefix}.subagent.{subagent_id}.ping", ("Ping", Some("Pong")), (Broker, Subagent), false,
        "Liveness probe when heartbeats are late: a killed subagent has no responders, a busy one answers late."),
    channel("stop", "{prefix}.subagent.{subagent_id}.stop", ("StopSubagent", Some("Stopping")), (Broker, Subagent), false,
        "Drain and exit, as on SIGTERM."),
    channel("subagentChanged", "{prefix}.cluster.subagent.{subagent_id}", ("SubagentChanged", None), (Broker, Client), false,
        "Event: a subagent joined, was lost, came back, was disabled or enabled, is draining, or left."),
    channel("register", "{prefix}.broker.register", ("Register", Some("Registered")), (Subagent, Broker), false,
        "A subagent introduces itself when it starts, retrying until a broker answers."),
    channel("result", "{prefix}.broker.result", ("TaskResult", Some("ResultAck")), (Subagent, Broker), false,
        "A subagent reports how a task ended; it repeats the report until it is acknowledged."),
    channel("certificate", "{prefix}.broker.certificate", ("DeathCertificate", Some("CertificateAccepted")), (Subagent, Broker), false,
        "A subagent's reaper certifies that the subagent process died and that it killed its tasks' process groups and saw them gone; the broker runs those tasks again elsewhere at once. Only the subagent's own identity may send it, and it counts only for the process it names."),
    channel("run", "{prefix}.subagent.{subagent_id}.run", ("RunTask", Some("RunAccepted")), (Broker, Subagent), false,
        "The broker hands one task to one subagent; sending the same task_id again starts no second copy."),
    channel("subagentHeartbeat", "{prefix}.hb.subagent.{subagent_id}", ("SubagentHeartbeat", None), (Subagent, Broker), false,
        "A subagent is alive, with the tasks it runs; the broker takes it for lost when heartbeats stop."),
    channel("brokerHeartbeat", "{prefix}.hb.broker", ("BrokerHeartbeat", None), (Broker, Client), false,
        "The broker is alive. No Baton process depends on it in protocol v1; monitors may watch it."),
    channel("agentHeartbeat", "{prefix}.hb.agent.{agent_id}", ("AgentHeartbeat", None), (Agent, Broker), false,
        "An agent is alive, with its role and health figures; the broker elects the Scheduler from these."),
    channel("agentRole", "{prefix}.agent.{agent_id}.role", ("RoleCommand", Some("RoleAnswer")), (Broker, Agent), false,
        "The broker gives (with a lease), renews or takes the Scheduler role; commands of an older broker epoch are refused."),
    channel("agentPing", "{prefix}.agent.{agent_id}.ping", ("Ping", Some("AgentPong")), (Broker, Agent), false,
        "Liveness probe when an agent's heartbeats are late: a killed agent has no responders."),
    channel("schedulerControl", "{prefix}.api.scheduler.control", ("SchedulerControl", Some("SchedulerControlReply")), (Client, Broker), true,
        "An operator turns an agent's Scheduler role on (moving it from the current one) or off."),
    channel("agentChanged", "{prefix}.cluster.agent.{agent_id}", ("AgentChanged", None), (Broker, Client), false,
        "Event: an agent became Scheduler or spare, joined or was lost, as the broker saw it."),
    channel("triggersChanged", "{prefix}.cluster.scheduler", ("TriggersChanged", None), (Broker, Client), false,
        "Event: the deployed triggers stopped firing because no agent can hold the Scheduler role (the reason says why: none connected, all turned off, none under the broker's control, all too unhealthy), or fire again."),
    channel("slotsMissed", "{prefix}.cluster.scheduler.missed", ("SlotsMissed", None), (Agent, Client), false,
        "Event: the Scheduler's misfire policy passed over slots of a job or workflow (how many, in which gap); the active broker's notifier tells `on_missed_slot` targets."),
    channel("brokerChanged", "{prefix}.cluster.broker.{broker_id}", ("BrokerChanged", None), (Broker, Client), false,
        "Event: a broker became active (with its epoch) or stepped down."),
    channel("orderAccepted", "{prefix}.events.{job}.{order_id}.accepted", ("OrderAccepted", None), (Broker, Client), false,
        "Event: the order is durable and waits for a subagent."),
    channel("taskStarted", "{prefix}.events.{job}.{order_id}.started.{subagent_id}", ("TaskStarted", None), (Subagent, Client), false,
        "Event: a subagent has started the order's task. The last token is the publishing subagent, which the server holds to its own id: readers drop one whose `subagent_id` differs."),
    channel("taskLog", "{prefix}.events.{job}.{order_id}.log.{subagent_id}", ("TaskLog", None), (Subagent, Client), false,
        "Event: one line of the task's output, published by the subagent as it comes. The last token is the publishing subagent, which the server holds to its own id: readers drop a line whose `subagent_id` differs."),
    channel("orderChanged", "{prefix}.events.{job}.{order_id}.changed", ("OrderChanged", None), (Broker, Client), false,
        "Event: a workflow order moved: a step was dispatched or finished, or the order was suspended, resumed or is being cancelled ({job} is the workflow)."),
    channel("orderFinished", "{prefix}.events.{job}.{order_id}.finished", ("OrderFinished", None), (Broker, Client), false,
        "Event: the order reached a final state (succeeded, failed or cancelled; a failed workflow order can still be resumed)."),
    channel("notification", "{prefix}.notify.{subject}", ("Notification", None), (Broker, Client), false,
        "A notification of an order that ended (failed or succeeded) for a subject target of the broker's `[[notify.target]]` (`subject = \"{subject}\"`), as the job's or workflow's `notify` rules and the broker's `[notify]` rules say. Unlike every other subject, the payload is JSON: the same body a webhook target is POSTed. Sent at least once by the active broker (a receiver drops a repeated `id`)."),
    channel("audit", "{prefix}.audit.{command}", ("AuditRecord", None), (Broker, Client), false,
        "The audit trail: one record per state-changing command (deploy and undeploy, job pause and resume, order cancel, suspend and resume, subagent and Scheduler switch-overs) once its outcome is known, kept in the JetStream stream `{prefix}_audit` (read by `baton audit`; of the client roles only `admin` may read it)."),
    ]
};

/// The `{parameter}`s a channel address may use, with their descriptions.
const PARAMETERS: &[(&str, &str)] = &[
    ("prefix", "The cluster's subject prefix (setting `prefix`, env `BATON_PREFIX`, flag `--prefix`). One subject token."),
    ("subagent_id", "A subagent's id, as in its `Register` message. One subject token."),
    ("agent_id", "An agent's id, as in its `AgentHeartbeat`. One subject token."),
    ("broker_id", "A broker's id, as in its `BrokerHeartbeat`. One subject token."),
    ("job", "The job's name. One subject token."),
    ("order_id", "The order's id, as in `SubmitReply.order_id`."),
    ("subject", "A notification target's `subject` setting: one or more tokens."),
    ("command", "The audited command, as in `AuditRecord.command`: `deploy`, or two tokens such as `order.cancel` or `subagent.disable`."),
];

const INFO_DESCRIPTION: &str = "\
Baton's wire protocol over NATS: the messages its broker, subagents and clients exchange, \
and the subjects they travel on. Every subject starts with a prefix (`{prefix}`, default `baton`), \
so several clusters can share one NATS account.

**Encodings.** Every payload is a MessagePack map with named fields (string keys: the property \
names of the JSON Schemas; integers in any MessagePack width). The client-facing request \
subjects (`{prefix}.api.*`) also accept JSON when the request carries the NATS header \
`Content-Type: application/json`. A reply is always in its request's encoding, and a JSON reply \
carries the same header. Every other subject is MessagePack only. Each channel says which it is, \
also as `x-json-accepted`.

**Requests and replies.** Request subjects use NATS request-reply: the answer goes to the \
request's reply subject (an inbox). Every reply is either the success type named by the operation \
or an `ErrorReply`; they differ by the `error` key, which only error replies carry. A request that \
cannot be decoded gets `ErrorReply` with code `bad_request`; one above the size limit (1 MiB by \
default) gets `too_large`. With no broker running, NATS answers \"no responders\".

**Compatibility.** Readers ignore fields they do not know, and a missing field that is not \
`required` in its schema takes its default (empty, `false`, `0` or null), so peers can add fields \
without a new protocol version. Registrations, heartbeats and status replies carry `protocol`, \
the protocol version (this document's `info.version`). Fields named `*_at_ms` are milliseconds since the Unix epoch; other `*_ms` fields are durations \
in milliseconds.

**Operations** are written from the cluster's side (the broker and its subagents): `receive` means \
a Baton process subscribes (and replies, on request subjects); `send` means a Baton process \
publishes. A client does the opposite. Each operation names who publishes and who subscribes, \
also as `x-publisher` and `x-subscriber` (`client`, `broker` or `subagent`).

**Events** are plain publishes, neither acknowledged nor stored. Subscribe per order with \
`{prefix}.events.*.{order_id}.>`, per job with `{prefix}.events.{job}.>` or to all with \
`{prefix}.events.>`; to see every event of an order, subscribe (per job or to all) before \
submitting it. `{prefix}.api.order.get` tells an order's state at any time.

The payload schemas are JSON Schema 2020-12 files next to this document (`<TypeName>.json`), \
generated from the Rust types by `cargo run -- schemas`; their descriptions write the prefix as \
`{p}`. `examples/` holds example messages.";

/// Every generated file: relative name -> contents (pretty JSON, trailing newline).
pub fn generate() -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = WIRE_TYPES
        .iter()
        .map(|t| (format!("{}.json", t.name), pretty(&(t.schema)())))
        .collect();
    files.insert(ASYNCAPI_FILE.to_string(), pretty(&asyncapi()));
    let console = crate::console::openapi::document();
    files.insert(crate::console::openapi::FILE.to_string(), pretty(&console));
    files
}

/// Writes every generated file into `dir` (created if needed) and removes the
/// `*.json` files at its top that are no longer generated. `README.md` and
/// `examples/` are left alone. Returns the names written.
pub fn write(dir: &Path) -> std::io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let files = generate();
    for name in stale(dir, &files)? {
        fs::remove_file(dir.join(name))?;
    }
    for (name, contents) in &files {
        fs::write(dir.join(name), contents)?;
    }
    Ok(files.into_keys().collect())
}

/// Compares `dir` with what [`generate`] makes now. Lists every generated file
/// that is missing or differs, and every `*.json` at the top of `dir` that is no
/// longer generated. Files compare as JSON values, so formatting does not matter.
pub fn check(dir: &Path) -> Result<(), Vec<String>> {
    let files = generate();
    let mut problems = Vec::new();
    for (name, expected) in &files {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(found) if same_json(&found, expected) => {}
            Ok(_) => problems.push(format!("{}: differs from the code", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{}: missing", path.display()))
            }
            Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    match stale(dir, &files) {
        Ok(names) => problems.extend(
            names
                .into_iter()
                .map(|n| format!("{}: no longer generated", dir.join(n).display())),
        ),
        Err(e) => problems.push(format!("{}: cannot list: {e}", dir.display())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Decodes an example message as the wire type named `type_name`, then checks
/// that it survives a MessagePack round trip (`rmp_serde::to_vec_named`) and
/// that it uses no field the type does not have (peers would silently ignore it).
pub fn decode_example(type_name: &str, json: &Value) -> Result<(), String> {
    let Some(wire) = WIRE_TYPES.iter().find(|t| t.name == type_name) else {
        let known: Vec<&str> = WIRE_TYPES.iter().map(|t| t.name).collect();
        return Err(format!(
            "`{type_name}` is not a wire type; known: {}",
            known.join(", ")
        ));
    };
    (wire.round_trip)(json)
}

fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = schemars::schema_for!(T).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$comment".into(),
            json!(format!(
                "Generated from the Rust type baton::protocol::{} by `cargo run -- schemas`; do not edit.",
                T::schema_name()
            )),
        );
    }
    schema
}

fn round_trip<T>(json: &Value) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value: T =
        serde_json::from_value(json.clone()).map_err(|e| format!("does not decode: {e}"))?;
    let packed = rmp_serde::to_vec_named(&value)
        .map_err(|e| format!("does not encode as MessagePack: {e}"))?;
    let unpacked: T = rmp_serde::from_slice(&packed)
        .map_err(|e| format!("its MessagePack does not decode: {e}"))?;
    if unpacked != value {
        return Err(format!(
            "MessagePack round trip changed {value:?} into {unpacked:?}"
        ));
    }
    let encoded =
        serde_json::to_value(&value).map_err(|e| format!("does not encode as JSON: {e}"))?;
    known_fields(json, &encoded, "")
}

/// Every object key in `example` also appears in `encoded` (the example decoded
/// and encoded again), so the example has no field the type would ignore.
fn known_fields(example: &Value, encoded: &Value, path: &str) -> Result<(), String> {
    match (example, encoded) {
        (Value::Object(example), Value::Object(encoded)) => {
            for (key, value) in example {
                let path = format!("{path}/{key}");
                match encoded.get(key) {
                    Some(encoded) => known_fields(value, encoded, &path)?,
                    None => {
                        return Err(format!(
                            "`{path}` is not a field of this type; it would be ignored"
                        ))
                    }
                }
            }
            Ok(())
        }
        (Value::Array(example), Value::Array(encoded)) => example
            .iter()
            .zip(encoded)
            .enumerate()
            .try_for_each(|(i, (ex, en))| known_fields(ex, en, &format!("{path}/{i}"))),
        _ => Ok(()),
    }
}

/// Names of the `*.json` files at the top of `dir` that are not in `files`.
fn stale(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && entry.file_type()?.is_file() && !files.contains_key(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn same_json(found: &str, expected: &str) -> bool {
    found == expected
        || matches!(
            (serde_json::from_str::<Value>(found), serde_json::from_str::<Value>(expected)),
            (Ok(a), Ok(b)) if a == b
        )
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values encode");
    text.push('\n');
    text
}

/// The `{parameter}` names in a channel address, in order.
fn parameters_of(address: &str) -> Vec<&str> {
    address
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

fn reply_channel_id(c: &Channel) -> String {
    format!("{}Reply", c.id)
}

/// The AsyncAPI 3.0.0 document.
fn asyncapi() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    for c in CHANNELS {
        channels.insert(c.id.into(), channel_object(c));
        if let Some(reply) = c.reply {
            channels.insert(reply_channel_id(c), reply_channel_object(c, reply));
        }
        operations.insert(c.id.into(), operation_object(c));
    }
    let messages: Map<String, Value> = WIRE_TYPES
        .iter()
        .map(|t| (t.name.to_string(), message_object(t)))
        .collect();
    let parameters: Map<String, Value> = PARAMETERS
        .iter()
        .map(|(name, description)| {
            let mut p = json!({ "description": description });
            if *name == "prefix" {
                p["default"] = json!("baton");
            }
            (name.to_string(), p)
        })
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Baton",
            "version": PROTOCOL_VERSION.to_string(),
            "description": INFO_DESCRIPTION,
            "license": { "name": "Apache-2.0" },
        },
        "defaultContentType": "application/msgpack",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "A NATS server with JetStream (`baton dev` starts one here). \
                    Use the cluster's own address in production.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "parameters": parameters,
        },
    })
}

fn message_ref(channel_id: &str, message: &str) -> Value {
    json!({ "$ref": format!("#/channels/{channel_id}/messages/{message}") })
}

fn channel_object(c: &Channel) -> Value {
    let encoding = if c.json {
        "Encoding: a MessagePack map, or JSON when the request carries the header \
         `Content-Type: application/json`; the reply comes in the request's encoding."
    } else {
        "Encoding: a MessagePack map only."
    };
    let parameters: Map<String, Value> = parameters_of(c.address)
        .into_iter()
        .map(|p| {
            (
                p.to_string(),
                json!({ "$ref": format!("#/components/parameters/{p}") }),
            )
        })
        .collect();
    json!({
        "address": c.address,
        "summary": c.summary,
        "description": format!("{} {encoding}", c.summary),
        "messages": { c.message: { "$ref": format!("#/components/messages/{}", c.message) } },
        "parameters": parameters,
        "x-json-accepted": c.json,
    })
}

fn reply_channel_object(c: &Channel, reply: &str) -> Value {
    json!({
        "address": null,
        "summary": format!("The reply to `{}`: the requester's NATS reply subject (an inbox).", c.address),
        "messages": {
            reply: { "$ref": format!("#/components/messages/{reply}") },
            "ErrorReply": { "$ref": "#/components/messages/ErrorReply" },
        },
        "x-json-accepted": c.json,
    })
}

fn operation_object(c: &Channel) -> Value {
    let mut description = format!(
        "Published by {}; subscribed to by {}.",
        c.publisher.describe(),
        c.subscriber.describe()
    );
    if let Some(reply) = c.reply {
        description.push_str(&format!(
            " A request: {} replies with `{reply}` on success or `ErrorReply` on failure.",
            c.subscriber.describe()
        ));
    }
    let action = if c.reply.is_some() { "receive" } else { "send" };
    let mut operation = json!({
        "action": action,
        "channel": { "$ref": format!("#/channels/{}", c.id) },
        "summary": c.summary,
        "description": description,
        "messages": [message_ref(c.id, c.message)],
        "x-publisher": c.publisher.token(),
        "x-subscriber": c.subscriber.token(),
    });
    if let Some(reply) = c.reply {
        let id = reply_channel_id(c);
        operation["reply"] = json!({
            "channel": { "$ref": format!("#/channels/{id}") },
            "messages": [message_ref(&id, reply), message_ref(&id, "ErrorReply")],
        });
    }
    operation
}

fn message_object(t: &WireType) -> Value {
    let schema = (t.schema)();
    let mut message = json!({
        "name": t.name,
        "title": t.name,
        "payload": { "$ref": format!("{}.json", t.name) },
    });
    if let Some(description) = schema.get("description") {
        message["description"] = description.clone();
    }
    // ErrorReply answers every request, so it travels on the JSON subjects too.
    let on_json_channel = CHANNELS.iter().any(|c| {
        c.json && (c.message == t.name || c.reply == Some(t.name) || t.name == "ErrorReply")
    });
    if on_json_channel {
        message["headers"] = json!({
            "type": "object",
            "properties": {
                CONTENT_TYPE_HEADER: {
                    "type": "string",
                    "const": JSON_CONTENT_TYPE,
                    "description": "Present when the payload is JSON instead of MessagePack \
                        (only on the client-facing `{prefix}.api.*` subjects).",
                }
            }
        });
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::protocol::{EventKind, Subjects};

    /// Every channel address with its placeholders filled in.
    fn concrete_addresses() -> BTreeSet<String> {
        CHANNELS
            .iter()
            .map(|c| {
                c.address
                    .replace("{prefix}", "baton")
                    .replace("{subagent_id}", "SUBAGENT")
                    .replace("{agent_id}", "AGENT")
                    .replace("{broker_id}", "BROKER")
                    .replace("{job}", "JOB")
                    .replace("{order_id}", "ORDER")
                    .replace("{command}", "COMMAND")
                    .replace("{subject}", "SUBJECT")
            })
            .collect()
    }

    #[test]
    fn every_subject_is_a_channel_and_every_channel_a_subject() {
        let s = Subjects::new("baton");
        // One line per `Subjects` method that names a concrete subject; a new
        // method belongs here and in CHANNELS.
        let mut subjects: BTreeSet<String> = [
            s.submit(),
            s.deploy(),
            s.order_get(),
            s.status(),
            s.status_brokers(),
            s.register(),
            s.result(),
            s.run("SUBAGENT"),
            s.subagent_heartbeat("SUBAGENT"),
            s.broker_heartbeat(),
            s.subagent_control(),
            s.order_cancel(),
            s.order_suspend(),
            s.order_resume(),
            s.order_list(),
            s.kill("SUBAGENT"),
            s.leave(),
            s.ping("SUBAGENT"),
            s.stop("SUBAGENT"),
            s.subagent_changed("SUBAGENT"),
            s.agent_heartbeat("AGENT"),
            s.agent_role("AGENT"),
            s.agent_ping("AGENT"),
            s.scheduler_control(),
            s.agent_changed("AGENT"),
            s.broker_changed("BROKER"),
            s.audit("COMMAND"),
            s.certificate(),
            s.job_list(),
            s.job_get(),
            s.job_control(),
            s.triggers_changed(),
            s.slots_missed(),
            s.notify("SUBJECT"),
        ]
        .into_iter()
        .collect();
        subjects.extend(EventKind::ALL.map(|k| match k {
            EventKind::Started | EventKind::Log => s.task_event("JOB", "ORDER", k, "SUBAGENT"),
            _ => s.event("JOB", "ORDER", k),
        }));
        assert_eq!(subjects, concrete_addresses());

        let addresses = concrete_addresses();
        for wildcard in [
            s.subagent_heartbeats(),
            s.subagent_changes(),
            s.agent_heartbeats(),
            s.agent_changes(),
            s.broker_changes(),
            s.all_events(),
            s.job_events("JOB"),
            s.order_events("ORDER"),
            s.all_audit(),
        ] {
            assert!(
                addresses
                    .iter()
                    .any(|a| crate::auth::subject_matches(&wildcard, a)),
                "{wildcard} matches no channel"
            );
        }
    }

    #[test]
    fn channels_and_wire_types_name_each_other() {
        let types: BTreeSet<&str> = WIRE_TYPES.iter().map(|t| t.name).collect();
        assert_eq!(types.len(), WIRE_TYPES.len(), "a wire type is listed twice");
        let mut used: BTreeSet<&str> = CHANNELS
            .iter()
            .flat_map(|c| std::iter::once(c.message).chain(c.reply))
            .collect();
        used.insert("ErrorReply");
        // stored in the `{prefix}_fired` KV bucket, on no subject
        used.insert("FiredSlot");
        // stored in the `{prefix}_files` KV bucket
        used.insert("FileRecord");
        used.insert("BrokerLease");
        used.insert("SchedulerLease");
        // stored in the `{prefix}_switches` KV bucket
        used.insert("OperatorSwitch");
        assert_eq!(used, types);
        let ids: BTreeSet<&str> = CHANNELS.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), CHANNELS.len(), "a channel id is used twice");
    }

    #[test]
    fn only_api_subjects_take_json() {
        for c in CHANNELS {
            assert_eq!(c.json, c.address.starts_with("{prefix}.api."), "{}", c.id);
        }
    }

    #[test]
    fn every_parameter_is_declared() {
        let declared: BTreeSet<&str> = PARAMETERS.iter().map(|(p, _)| *p).collect();
        for c in CHANNELS {
            for p in parameters_of(c.address) {
                assert!(declared.contains(p), "{}: undeclared parameter {p}", c.id);
            }
        }
        assert_eq!(parameters_of("{a}.x.{b}.y"), ["a", "b"]);
    }

    /// Every `$ref` inside the document points at something in it or at a
    /// generated schema file.
    #[test]
    fn asyncapi_references_resolve() {
        let files = generate();
        let doc = asyncapi();
        fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            match r.strip_prefix('#') {
                Some(pointer) => assert!(doc.pointer(pointer).is_some(), "dangling {r}"),
                None => assert!(files.contains_key(r), "no schema file {r}"),
            }
        }
    }

    #[test]
    fn schemas_describe_fields_and_defs() {
        let files = generate();
        let submit: Value = serde_json::from_str(&files["SubmitOrder.json"]).unwrap();
        assert_eq!(submit["title"], "SubmitOrder");
        assert_eq!(submit["required"], json!(["job"]));
        let deploy: Value = serde_json::from_str(&files["DeployRequest.json"]).unwrap();
        assert!(deploy.pointer("/$defs/JobSpec").is_some());
        assert!(files.values().all(|f| f.ends_with("}\n")));
    }

    #[test]
    fn examples_must_decode_and_use_known_fields() {
        assert!(decode_example("SubmitOrder", &json!({ "job": "hello" })).is_ok());
        let err = decode_example("SubmitOrder", &json!({ "job": 5 })).unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        let err = decode_example("SubmitOrder", &json!({ "job": "a", "parms": {} })).unwrap_err();
        assert!(err.contains("/parms"), "{err}");
        let err = decode_example(
            "DeployRequest",
            &json!({ "jobs": [{ "name": "a", "program": "b", "params": { "x": { "requird": true } } }] }),
        )
        .unwrap_err();
        assert!(err.contains("/jobs/0/params/x/requird"), "{err}");
        assert!(decode_example("NoSuchType", &json!({})).is_err());
    }

    #[test]
    fn check_reports_missing_differing_and_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path()).is_err());
        let written = write(dir.path()).unwrap();
        // asyncapi.json and console-openapi.json besides the types
        assert_eq!(written.len(), WIRE_TYPES.len() + 2);
        assert_eq!(check(dir.path()), Ok(()));

        fs::write(dir.path().join("SubmitOrder.json"), "{}\n").unwrap();
        fs::remove_file(dir.path().join("GetOrder.json")).unwrap();
        fs::write(dir.path().join("Gone.json"), "{}\n").unwrap();
        fs::create_dir(dir.path().join("examples")).unwrap();
        fs::write(dir.path().join("examples/SubmitOrder.json"), "{}\n").unwrap();
        let problems = check(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("GetOrder.json: missing"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("SubmitOrder.json: differs"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("Gone.json: no longer generated"),
            "{problems:?}"
        );

        write(dir.path()).unwrap();
        assert_eq!(check(dir.path()), Ok(()));
        assert!(dir.path().join("examples/SubmitOrder.json").exists());
    }
}
