//! A submit with a request id creates one order however often it is sent:
//! repeated, sent many times at once, or sent again after the broker was
//! killed and started anew.

mod common;

use std::time::Duration;

use baton::bus::{Bus, BusError};
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

const JOB: &str = r#"
[[job]]
name = "mark"
program = "sh"
args = ["-c", "echo \"run $BATON_ORDER_ID\" >> \"$BATON_PARAM_FILE\""]
[job.params.file]
required = true
"#;

async fn submit_with_id(bus: &Bus, file: &str, request_id: &str) -> Result<SubmitReply, BusError> {
    let order = SubmitOrder {
        job: "mark".into(),
        params: [("file".to_string(), file.to_string())].into(),
        request_id: Some(request_id.into()),
        slot_ms: None,
    };
    let request = bus.request(bus.subjects().submit(), &order, REQUEST);
    within(REQUEST * 2, "submit", request).await
}

async fn finished(bus: &Bus, order_id: &str) -> OrderInfo {
    wait_for(Duration::from_secs(20), "the order finishes", || {
        let (bus, id) = (bus.clone(), order_id.to_string());
        async move { order_info(&bus, &id).await.filter(|o| o.state.is_final()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_makes_one_order() {
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, JOB).await;
    let file = h.scratch().join("runs").display().to_string();

    // many at once
    let sends = (0..10).map(|_| submit_with_id(&h.bus, &file, "nightly-2026-11-22"));
    let replies = within(REQUEST * 3, "ten submits", futures::future::join_all(sends)).await;
    let accepted: Vec<SubmitReply> = replies
        .into_iter()
        .filter_map(|r| match r {
            Ok(reply) => Some(reply),
            // the one answer allowed besides the order: "being stored, send again"
            Err(BusError::Remote(e)) if e.error.code == ErrorCode::Busy => None,
            Err(e) => panic!("unexpected answer: {e}"),
        })
        .collect();
    assert!(!accepted.is_empty());
    let order_id = accepted[0].order_id.clone();
    assert!(
        accepted.iter().all(|r| r.order_id == order_id),
        "{accepted:?}"
    );
    assert!(
        accepted.iter().filter(|r| !r.duplicate).count() <= 1,
        "{accepted:?}"
    );
    let info = finished(&h.bus, &order_id).await;
    assert_eq!(info.state, OrderState::Succeeded);

    // again, later
    let again = submit_with_id(&h.bus, &file, "nightly-2026-11-22")
        .await
        .expect("submit");
    assert_eq!(
        (again.order_id.as_str(), again.duplicate),
        (order_id.as_str(), true)
    );
    assert_eq!(again.state, OrderState::Succeeded);

    // again, to a broker started after the first was killed
    h.cluster
        .signal("broker", Signal::SIGKILL)
        .expect("kill -9 broker");
    h.cluster
        .spawn("broker-2", &["broker"])
        .expect("start a new broker");
    within(
        Duration::from_secs(15),
        "the new broker sees sub-a",
        h.cluster.wait_for_subagents(&h.bus, 1),
    )
    .await
    .expect("new broker up");
    let after = submit_with_id(&h.bus, &file, "nightly-2026-11-22")
        .await
        .expect("submit");
    assert_eq!(
        (after.order_id.as_str(), after.duplicate),
        (order_id.as_str(), true)
    );
    assert_eq!(after.state, OrderState::Succeeded);

    // another id is another order
    let other = submit_with_id(&h.bus, &file, "nightly-2026-11-23")
        .await
        .expect("submit");
    assert_ne!(other.order_id, order_id);
    assert!(!other.duplicate);
    finished(&h.bus, &other.order_id).await;

    let runs = std::fs::read_to_string(&file).unwrap();
    let of_first = runs.lines().filter(|l| l.ends_with(&order_id)).count();
    assert_eq!(of_first, 1, "the first order ran once: {runs}");
    assert_eq!(runs.lines().count(), 2, "{runs}");
}
