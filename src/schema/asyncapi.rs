//! The AsyncAPI 3 document (`asyncapi.json`): every subject of
//! [`CHANNELS`] as a channel and an operation, every wire type as a message.

use serde_json::{json, Map, Value};

use super::channels::{Channel, CHANNELS, PARAMETERS};
use super::wire_types::{WireType, WIRE_TYPES};
use crate::protocol::{CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, PROTOCOL_VERSION};

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

/// The `{parameter}` names in a channel address, in order.
pub(super) fn parameters_of(address: &str) -> Vec<&str> {
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
pub(super) fn asyncapi() -> Value {
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
