//! Garbage on the wire: every request subject answers undecodable payloads
//! with an `ErrorReply` (never silence), and the cluster keeps working.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::auth::Role;
use baton::bus::{decode, BusError, Encoding};
use baton::protocol::*;
use bytes::Bytes;
use common::*;
use serde_json::{json, Value};

const HELLO: &str = r#"
[[job]]
name = "hello"
program = "echo"
args = ["hello,", "{{who}}"]
[job.params.who]
default = "world"
"#;

/// A request subject, with a well-formed body for it (only ever sent cut
/// short or mangled) and whether the broker serves it.
struct Target {
    subject: String,
    sample: Value,
    broker: bool,
    /// Whether `payload` decodes as this subject's request type.
    decodes: fn(Encoding, &[u8]) -> bool,
}

fn decodes_as<T: serde::de::DeserializeOwned>(encoding: Encoding, payload: &[u8]) -> bool {
    decode::<T>(encoding, payload).is_ok()
}

fn targets(s: &Subjects, subagent: &str) -> Vec<Target> {
    let target = |subject: String, sample: Value, broker, decodes| Target {
        subject,
        sample,
        broker,
        decodes,
    };
    vec![
        target(
            s.submit(),
            json!({"job": "hello", "params": {"who": "x"}}),
            true,
            decodes_as::<SubmitOrder>,
        ),
        target(
            s.deploy(),
            json!({"jobs": [{"name": "x", "program": "echo"}]}),
            true,
            decodes_as::<DeployRequest>,
        ),
        target(
            s.order_get(),
            json!({"order_id": "0192"}),
            true,
            decodes_as::<GetOrder>,
        ),
        target(s.status(), json!({}), true, decodes_as::<StatusRequest>),
        target(
            s.register(),
            json!({"subagent_id": "zz", "instance_id": "i", "capacity": 1}),
            true,
            decodes_as::<Register>,
        ),
        target(
            s.result(),
            json!({"task_id": "t", "order_id": "o", "job": "j", "attempt": 1,
                   "subagent_id": "zz", "started_at_ms": 1, "finished_at_ms": 2}),
            true,
            decodes_as::<TaskResult>,
        ),
        target(
            s.run(subagent),
            json!({"task_id": "t", "order_id": "o", "job": "j", "attempt": 1, "program": "true"}),
            false,
            decodes_as::<RunTask>,
        ),
    ]
}

/// Payloads none of which is a valid request for `target`.
fn garbage_for(target: &Target, rng: &mut Garbage) -> Vec<(&'static str, Encoding, Vec<u8>)> {
    let mp = Encoding::MessagePack;
    let valid = rmp_serde::to_vec_named(&target.sample).expect("encode sample");
    let mut payloads = vec![
        ("empty", mp, Vec::new()),
        ("random bytes", mp, rng.bytes(64)),
        ("truncated msgpack", mp, valid[..valid.len() / 2].to_vec()),
        ("msgpack nil", mp, vec![0xc0]),
        ("msgpack string", mp, rmp_serde::to_vec("hello").unwrap()),
        (
            "msgpack array",
            mp,
            rmp_serde::to_vec(&(1, "two", 3.0)).unwrap(),
        ),
        ("invalid json", Encoding::Json, br#"{"job": "hel"#.to_vec()),
        ("json number", Encoding::Json, b"42".to_vec()),
        ("random bytes as json", Encoding::Json, rng.bytes(64)),
    ];
    // every field of the sample with a value of the wrong type
    if let Value::Object(fields) = &target.sample {
        if !fields.is_empty() {
            // the sample's own values, positionally: the protocol is maps only
            let positional: Vec<&Value> = fields.values().collect();
            payloads.push((
                "positional msgpack array",
                mp,
                rmp_serde::to_vec(&positional).unwrap(),
            ));
            let wrong: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| {
                    let bad = if v.is_array() {
                        json!("x")
                    } else {
                        json!([1, 2])
                    };
                    (k.clone(), bad)
                })
                .collect();
            let wrong = Value::Object(wrong);
            payloads.push((
                "msgpack wrong types",
                mp,
                rmp_serde::to_vec_named(&wrong).unwrap(),
            ));
            let json_wrong = serde_json::to_vec(&wrong).unwrap();
            payloads.push(("json wrong types", Encoding::Json, json_wrong));
        }
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_status_request_is_answered() {
    let h = cluster(&[]).await;
    let subject = h.bus.subjects().status();
    for encoding in [Encoding::MessagePack, Encoding::Json] {
        let reply = h.bus.request_raw(&subject, encoding, Bytes::new(), REQUEST);
        let reply = within(REQUEST * 2, "empty status", reply)
            .await
            .expect("status answers an empty request");
        let status: StatusReply = baton::bus::decode(encoding, &reply).expect("a StatusReply");
        assert_eq!(status.protocol, PROTOCOL_VERSION);
    }
}

async fn status(h: &Harness) -> StatusReply {
    let request = StatusRequest::default();
    let status = h.bus.request(h.bus.subjects().status(), &request, REQUEST);
    within(REQUEST * 2, "status", status)
        .await
        .expect("status answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_subject_keeps_the_cluster_working() {
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, HELLO).await;
    // garbage from an identity that may publish on every subject (a broker's):
    // what is left once the server's permissions keep the others out
    let garbler = h.connect_as(Role::Broker, None).await;
    let s = h.bus.subjects().clone();
    let submit = s.submit();
    let mut rng = Garbage::new(0x5eed_ba70);

    // every garbage request, sent at once; each must get an ErrorReply
    let mut sends = Vec::new();
    let mut to_broker = 0u64;
    for target in targets(&s, "sub-a") {
        for (what, encoding, payload) in garbage_for(&target, &mut rng) {
            if payload.is_empty() && (target.decodes)(encoding, &payload) {
                // an empty payload is an empty map: valid where no field is required
                continue;
            }
            assert!(
                !(target.decodes)(encoding, &payload),
                "test bug: {what} decodes on {}",
                target.subject
            );
            to_broker += u64::from(target.broker);
            let (bus, subject) = (garbler.clone(), target.subject.clone());
            sends.push(async move {
                let reply = bus
                    .request_raw(&subject, encoding, Bytes::from(payload), REQUEST)
                    .await;
                (subject, what, encoding, reply)
            });
        }
    }
    let replies = within(
        REQUEST * 3,
        "garbage requests",
        futures::future::join_all(sends),
    )
    .await;
    for (subject, what, encoding, reply) in replies {
        let reply = reply.unwrap_or_else(|e| panic!("{what} on {subject}: no reply: {e}"));
        let error: ErrorReply = decode(encoding, &reply).unwrap_or_else(|e| {
            panic!(
                "{what} on {subject}: reply is no {encoding:?} ErrorReply ({e}): {:?}",
                String::from_utf8_lossy(&reply)
            )
        });
        assert_eq!(
            error.error.code,
            ErrorCode::BadRequest,
            "{what} on {subject}: {error}"
        );
        assert!(!error.error.message.is_empty());
    }

    // a submit of ~900 KiB (under NATS's 1 MiB max_payload): refused, not dropped
    let big = json!({"job": "hello", "params": {"who": "x".repeat(900 * 1024)}});
    let big = Bytes::from(serde_json::to_vec(&big).unwrap());
    let request = h.bus.request_raw(&submit, Encoding::Json, big, REQUEST);
    let reply = within(REQUEST * 2, "900 KiB submit", request)
        .await
        .expect("900 KiB submit answered");
    let error: ErrorReply = decode(Encoding::Json, &reply).expect("900 KiB: an ErrorReply");
    assert!(
        matches!(
            error.error.code,
            ErrorCode::InvalidParam | ErrorCode::TooLarge | ErrorCode::BadRequest
        ),
        "{error}"
    );
    assert!(error.error.message.contains("who"), "{error}");

    // over max_payload: the client refuses to send it, at once
    let huge = Bytes::from(vec![b'x'; 1024 * 1024 + 1]);
    let request = h
        .bus
        .request_raw(&submit, Encoding::MessagePack, huge, REQUEST);
    match within(REQUEST * 2, "1 MiB + 1 submit", request).await {
        Err(BusError::Transport { .. }) => {}
        other => panic!("1 MiB + 1 byte: expected a transport error, got {other:?}"),
    }

    // garbage publishes: heartbeats (the broker decodes subagent and broker
    // heartbeats) and events (it does not)
    let hb_garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        rng.bytes(64),
        rmp_serde::to_vec(&(1, "two")).unwrap(),
        rmp_serde::to_vec_named(&json!({"subagent_id": 5, "capacity": "lots"})).unwrap(),
    ];
    let hb_count = hb_garbage.len() as u64;
    for payload in hb_garbage {
        let publish = garbler.publish_raw(s.subagent_heartbeat("x"), Bytes::from(payload));
        within(REQUEST, "publish", publish).await.expect("publish");
    }
    // a well-formed heartbeat whose id is no subject token is ignored, not registered
    let odd = SubagentHeartbeat {
        subagent_id: "not a token".into(),
        instance_id: "i".into(),
        labels: BTreeMap::new(),
        capacity: 1,
        running: Vec::new(),
        sent_at_ms: 1,
        protocol: PROTOCOL_VERSION,
        load: None,
        draining: false,
        heartbeat_interval_ms: 250,
        orphan_timeout_ms: 15_000,
        refused: 0,
    };
    let odd = Bytes::from(rmp_serde::to_vec_named(&odd).unwrap());
    let publish = garbler.publish_raw(s.subagent_heartbeat("y"), odd);
    within(REQUEST, "publish", publish).await.expect("publish");
    for subject in [
        s.broker_heartbeat(),
        s.event("hello", "fake-order", EventKind::Finished),
        s.event("hello", "fake-order", EventKind::Log),
        format!("{}.events.garbage", s.prefix()),
    ] {
        let publish = garbler.publish_raw(subject, Bytes::from(rng.bytes(32)));
        within(REQUEST, "publish", publish).await.expect("publish");
    }
    within(REQUEST, "flush", garbler.flush())
        .await
        .expect("flush");

    // the broker process decodes broker heartbeats too (its standby peers)
    let expected = to_broker + hb_count + 1;
    wait_until(
        Duration::from_secs(10),
        "the broker counted every malformed message",
        || async { status(&h).await.malformed_messages >= expected },
    )
    .await;
    let after = status(&h).await;
    assert_eq!(after.malformed_messages, expected, "{after:?}");
    let ids: Vec<(&str, SubagentState)> = after
        .subagents
        .iter()
        .map(|a| (a.id.as_str(), a.state))
        .collect();
    assert_eq!(ids, vec![("sub-a", SubagentState::Available)], "{after:?}");
    assert_eq!(after.jobs, vec!["hello".to_string()]);
    let total = after.orders.accepted
        + after.orders.running
        + after.orders.succeeded
        + after.orders.failed
        + after.orders.cancelled;
    assert_eq!(total, 0, "garbage created no order: {:?}", after.orders);

    // and a real order still goes through
    let who = BTreeMap::from([("who".to_string(), "after garbage".to_string())]);
    let (fin, logs) = run_to_finish(&h.bus, "hello", who).await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-a"));
    let lines: Vec<&str> = logs.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines, vec!["hello, after garbage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_client_gets_json_replies() {
    let h = cluster(&[]).await;
    deploy(&h.bus, HELLO).await;
    let submit = h.bus.subjects().submit();

    let body = Bytes::from_static(br#"{"job":"hello"}"#);
    let request = h.bus.request_raw(&submit, Encoding::Json, body, REQUEST);
    let reply = within(REQUEST * 2, "json submit", request)
        .await
        .expect("json submit answered");
    let reply: Value = serde_json::from_slice(&reply).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&reply)
        )
    });
    let order_id = reply["order_id"].as_str().unwrap_or_default();
    assert!(!order_id.is_empty(), "{reply}");
    assert_eq!(reply["job"], "hello", "{reply}");
    assert_eq!(reply["state"], "accepted", "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");

    // the order exists, with its default parameter filled in
    let get = json!({ "order_id": order_id });
    let get = Bytes::from(serde_json::to_vec(&get).unwrap());
    let order_get = h.bus.subjects().order_get();
    let request = h.bus.request_raw(&order_get, Encoding::Json, get, REQUEST);
    let info = within(REQUEST * 2, "json order.get", request)
        .await
        .expect("json order.get answered");
    let info: Value = serde_json::from_slice(&info).expect("order.get reply is JSON");
    assert_eq!(info["order_id"], order_id, "{info}");
    assert_eq!(info["params"]["who"], "world", "{info}");

    let body = Bytes::from_static(br#"{"job":"nope","params":{}}"#);
    let request = h.bus.request_raw(&submit, Encoding::Json, body, REQUEST);
    let reply = within(REQUEST * 2, "json submit of unknown job", request)
        .await
        .expect("answered");
    let reply: Value = serde_json::from_slice(&reply).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&reply)
        )
    });
    assert_eq!(reply["error"]["code"], "unknown_job", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nope"), "{reply}");
    assert!(reply.get("order_id").is_none(), "{reply}");
}

/// The limits a submitter meets: a value over 64 KiB and more than 256
/// parameters are refused with `invalid_param`, naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_values_and_counts_over_the_limit_are_refused() {
    let h = cluster(&[]).await;
    deploy(&h.bus, HELLO).await;
    let try_submit = |params: BTreeMap<String, String>| {
        let order = SubmitOrder {
            job: "hello".into(),
            params,
            request_id: None,
            slot_ms: None,
        };
        let bus = h.bus.clone();
        async move {
            let call = bus.request::<_, SubmitReply>(bus.subjects().submit(), &order, REQUEST);
            within(REQUEST * 2, "submit", call).await
        }
    };
    let refused = |result: Result<SubmitReply, BusError>| match result {
        Err(BusError::Remote(e)) if e.error.code == ErrorCode::InvalidParam => e.error.message,
        other => panic!("expected invalid_param, got {other:?}"),
    };

    let at_limit = BTreeMap::from([("who".to_string(), "x".repeat(64 * 1024))]);
    try_submit(at_limit).await.expect("64 KiB is accepted");
    let over = BTreeMap::from([("who".to_string(), "x".repeat(64 * 1024 + 1))]);
    let message = refused(try_submit(over).await);
    assert!(
        message.contains("'who'") && message.contains("65536 bytes"),
        "{message}"
    );
    let many = (0..257)
        .map(|i| (format!("p{i}"), "1".to_string()))
        .collect();
    let message = refused(try_submit(many).await);
    assert_eq!(message, "257 parameters given; at most 256 are accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_server_takes_says_what_to_do_and_the_connection_lives() {
    let h = cluster(&[]).await;
    let deploy: DeployRequest = serde_json::from_value(json!({
        "jobs": [{ "name": "big", "program": "true", "description": "x".repeat(1_100_000) }],
    }))
    .expect("a deploy");
    let call = h
        .bus
        .request::<_, DeployReply>(h.bus.subjects().deploy(), &deploy, REQUEST);
    match within(REQUEST * 2, "deploy", call).await {
        Err(BusError::Transport { reason, .. }) => assert!(
            reason.contains("more than this NATS server takes (1048576 bytes")
                && reason.contains("several deploys"),
            "{reason}"
        ),
        other => panic!("expected the size named, got {other:?}"),
    }
    status(&h).await;
}
