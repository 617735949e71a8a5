//! The journal of orders is fenced by revision: a write buffered by a broker
//! that has since stepped down (a compare-and-swap on the revision it knew)
//! is refused once the active broker has written the order again, and a
//! record changed behind the active broker's back is written over with the
//! active broker's state.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::{Bus, Kv};
use baton::protocol::*;
use common::*;

const JOBS: &str = r#"
[[job]]
name = "gate"
program = "sh"
args = ["-c", "while [ ! -e \"$BATON_PARAM_GATE\" ]; do sleep 0.05; done"]
[job.params.gate]
required = true

[[job]]
name = "quick"
program = "true"
"#;

async fn orders(bus: &Bus) -> Kv<OrderInfo> {
    within(REQUEST, "open the orders bucket", bus.kv("baton_orders"))
        .await
        .expect("orders bucket")
}

/// The order's record and its revision once `state` is journaled.
async fn record_in(kv: &Kv<OrderInfo>, order_id: &str, state: OrderState) -> (OrderInfo, u64) {
    let what = format!("the journal says {}", state.as_str());
    wait_for(Duration::from_secs(20), &what, || async move {
        let record = kv.get_with_revision(order_id).await.ok().flatten();
        record.filter(|(info, _)| info.state == state)
    })
    .await
}

async fn broker_says(bus: &Bus, order_id: &str, state: OrderState) -> OrderInfo {
    let what = format!("the broker says {}", state.as_str());
    wait_for(Duration::from_secs(20), &what, || async move {
        order_info(bus, order_id).await.filter(|o| o.state == state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_brokers_write_cannot_roll_a_finished_order_back() {
    let mut h = cluster(&["sub-1"]).await;
    deploy(&h.bus, JOBS).await;
    // writing behind the broker's back takes a (stale) broker's credentials
    let kv = orders(&h.connect_as(Role::Broker, None).await).await;
    let gate = h.scratch().join("gate");
    let order_id = submit(&h.bus, "gate", &[("gate", gate.display().to_string())]).await;

    // what a broker cut off now would know: the order running, at this revision
    let (running, running_rev) = record_in(&kv, &order_id, OrderState::Running).await;
    std::fs::write(&gate, b"").expect("open the gate");
    let (done, done_rev) = record_in(&kv, &order_id, OrderState::Succeeded).await;
    assert!(done_rev > running_rev);

    // its buffered write reaches JetStream late: refused
    let late = kv.update(&order_id, &running, running_rev);
    let late = within(REQUEST, "the stale write", late).await;
    assert_eq!(late.expect("the stale write is answered"), None);
    let record = within(REQUEST, "read the record", kv.get_with_revision(&order_id)).await;
    assert_eq!(record.expect("read the record"), Some((done, done_rev)));
    let info = broker_says(&h.bus, &order_id, OrderState::Succeeded).await;
    assert_eq!(info.attempt, 1, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_behind_the_brokers_back_is_written_over() {
    // no subagent: the order waits in the broker
    let mut h = cluster(&[]).await;
    deploy(&h.bus, JOBS).await;
    let kv = orders(&h.connect_as(Role::Broker, None).await).await;
    let order_id = submit(&h.bus, "quick", &[]).await;
    let (accepted, _) = record_in(&kv, &order_id, OrderState::Accepted).await;

    // another writer (a stale broker with a plain put) changes the record
    let mut theirs = accepted.clone();
    theirs.state = OrderState::Running;
    theirs.subagent_id = Some("ghost".into());
    theirs.task_id = Some(format!("{order_id}-1"));
    theirs.attempt = 1;
    let put = within(
        REQUEST,
        "the other writer's put",
        kv.put(&order_id, &theirs),
    )
    .await;
    put.expect("the other writer's put");

    let cancel = CancelOrder {
        order_id: order_id.clone(),
        kill: false,
    };
    let request = h
        .bus
        .request(h.bus.subjects().order_cancel(), &cancel, REQUEST);
    let reply: OrderInfo = within(REQUEST * 2, "cancel", request)
        .await
        .expect("cancel answered");
    assert_eq!(reply.state, OrderState::Cancelled, "{reply:?}");

    // the broker's state wins
    let (record, _) = record_in(&kv, &order_id, OrderState::Cancelled).await;
    assert_eq!(record.subagent_id, None, "{record:?}");
    assert_eq!(record.attempt, 0, "{record:?}");
    let info = broker_says(&h.bus, &order_id, OrderState::Cancelled).await;
    assert_eq!(info, record);
    let log = h.dir.path().join("logs").join("broker.log");
    wait_until(REQUEST, "the broker logs the other writer", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains("order record changed by another writer"))
    })
    .await;
}
