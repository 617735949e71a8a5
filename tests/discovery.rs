//! NATS service discovery: the active broker's client API is the NATS
//! service `baton`, so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer
//! with its name, version and endpoints (as `nats micro ls|info|stats`
//! show them). A standby does not answer; after the active broker is
//! killed with SIGKILL, the broker that takes over does.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::auth::Role;
use baton::bus::Bus;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// A lease short enough for a quick takeover.
const ENV: &[(&str, &str)] = &[
    ("BATON_BROKER__LEASE", "1s"),
    ("BATON_BROKER__RENEW_INTERVAL", "200ms"),
];
const TAKEOVER: Duration = Duration::from_secs(20);
/// How long every answer to one discovery request is waited for.
const WINDOW: Duration = Duration::from_millis(500);

/// Every answer to `$SRV.<verb>.baton`, as JSON.
async fn ask(bus: &Bus, verb: &str) -> Vec<Value> {
    let subject = format!("$SRV.{verb}.baton");
    let gather = bus.gather_raw(subject.clone(), bytes::Bytes::new(), WINDOW);
    let answers = within(REQUEST, &subject, gather).await.expect("asked");
    // an empty payload is the server's "no responders" status
    answers
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| serde_json::from_slice(a).expect("a JSON answer"))
        .collect()
}

/// The one answer to `$SRV.<verb>.baton`, once exactly one comes and
/// `ok` holds for it.
async fn one_answer(bus: &Bus, verb: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let what = format!("one answer to $SRV.{verb}.baton");
    wait_for(TAKEOVER, &what, || async {
        match &ask(bus, verb).await[..] {
            [one] if ok(one) => Some(one.clone()),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_broker_answers_srv_ping_info_and_stats_and_its_successor_does() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    // a standby beside the active broker: it must not answer
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn standby");
    deploy(
        &h.bus,
        "[[job]]\nname = \"hello\"\nprogram = \"echo\"\nargs = [\"hi\"]\n",
    )
    .await;
    // a monitor, as an operator's `nats micro` would ask
    let monitor = h.connect_as(Role::Monitor, None).await;

    let ping = one_answer(&monitor, "PING", |_| true).await;
    assert_eq!(ping["name"], "baton", "{ping}");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"), "{ping}");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{ping}");

    let info = one_answer(&monitor, "INFO", |_| true).await;
    assert_eq!(info["name"], "baton", "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{info}");
    let first = info["metadata"]["broker"]
        .as_str()
        .expect("broker")
        .to_string();
    assert_ne!(first, "b2", "the standby does not serve: {info}");
    let epoch: u64 = info["metadata"]["epoch"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("epoch");
    let endpoints: BTreeMap<String, Value> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| (e["subject"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect();
    for subject in [
        "baton.api.submit",
        "baton.api.deploy",
        "baton.api.order.get",
        "baton.api.order.list",
        "baton.api.order.cancel",
        "baton.api.status",
        "baton.api.job.list",
        "baton.api.scheduler.control",
    ] {
        assert!(endpoints.contains_key(subject), "{subject} in {info}");
    }
    let submit = &endpoints["baton.api.submit"];
    assert_eq!(submit["name"], "submit", "{submit}");
    // the broker's term's own group: a frozen earlier broker shares none
    assert_eq!(submit["queue_group"], format!("baton-e{epoch}"), "{submit}");
    assert_eq!(
        submit["metadata"]["request_schema"], "schemas/SubmitOrder.json",
        "{submit}"
    );
    assert_eq!(
        submit["metadata"]["reply_schema"], "schemas/SubmitReply.json",
        "{submit}"
    );
    assert!(
        !endpoints.contains_key("baton.api.status.brokers"),
        "every broker answers status.brokers: no queue group for it"
    );

    // the API still works through the endpoints, each request once
    let (finished, _) = run_to_finish(&h.bus, "hello", BTreeMap::new()).await;
    assert_eq!(finished.state, baton::protocol::OrderState::Succeeded);
    // and one the broker cannot decode: answered bad_request, an error
    let refused = h.bus.request_raw(
        "baton.api.submit",
        baton::bus::Encoding::MessagePack,
        bytes::Bytes::from_static(b"\xc1 not msgpack"),
        REQUEST,
    );
    let _ = within(REQUEST * 2, "a malformed submit", refused).await;
    // STATS tells the requests answered (num_requests, num_errors, counted
    // just after each answer is queued) and those received (data.requests)
    let submit_stats = |stats: &Value| {
        let e = stats["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["subject"] == "baton.api.submit")
            .cloned()
            .expect("submit's stats");
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        (
            n(&e["num_requests"]),
            n(&e["num_errors"]),
            n(&e["data"]["requests"]),
        )
    };
    let stats = one_answer(&monitor, "STATS", |s| {
        let (answered, errors, received) = submit_stats(s);
        answered >= 2 && errors >= 1 && answered == received
    })
    .await;
    assert_eq!(stats["name"], "baton", "{stats}");
    let (answered, errors, _) = submit_stats(&stats);
    assert_eq!(errors, 1, "{stats}");
    assert!(answered >= 2, "{stats}");

    // kill -9 of the active broker: the standby takes over and answers
    h.cluster
        .signal("broker", Signal::SIGKILL)
        .expect("kill the active broker");
    let info = one_answer(&monitor, "INFO", |i| i["metadata"]["broker"] == "b2").await;
    let next: u64 = info["metadata"]["epoch"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("epoch");
    assert!(next > epoch, "a new epoch: {info}");
    let ping = one_answer(&monitor, "PING", |_| true).await;
    assert_eq!(ping["name"], "baton");
    // and the API is served by it
    let (finished, _) = run_to_finish(&h.bus, "hello", BTreeMap::new()).await;
    assert_eq!(finished.state, baton::protocol::OrderState::Succeeded);
}
