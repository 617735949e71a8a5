//! The table of wire message types ([`WIRE_TYPES`]): each type's JSON
//! Schema, and the MessagePack round trip and field check an example
//! message of it must pass.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use crate::protocol;

/// One wire message type: its name and what the generator and the example
/// decoder need from it.
pub(super) struct WireType {
    pub(super) name: &'static str,
    pub(super) schema: fn() -> Value,
    pub(super) round_trip: fn(&Value) -> Result<(), String>,
}

macro_rules! wire_types {
    ($($ty:ident),* $(,)?) => {
        /// Every message that travels on a subject, once, and the values
        /// other programs may read from Baton's KV buckets (`FiredSlot`).
        /// Nested types (`JobSpec`, `OrderState`, ...) appear as `$defs` in
        /// these schemas.
        pub(super) const WIRE_TYPES: &[WireType] = &[$(WireType {
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
