//! A NATS server restart (JetStream on file storage) in the middle of work:
//! every process reconnects and carries on, every accepted order reaches a
//! final state, and no order runs twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::protocol::*;
use common::*;

const MARKER_JOB: &str = r#"
[[job]]
name = "work"
program = "sh"
args = ["-c", "echo \"start $BATON_ORDER_ID\" >> \"$BATON_PARAM_DIR/marks\"; sleep 1; echo \"end $BATON_ORDER_ID\" >> \"$BATON_PARAM_DIR/marks\""]
[job.params.dir]
required = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_a_nats_server_restart() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, MARKER_JOB).await;
    let dir = h.scratch();
    let params = BTreeMap::from([("dir".to_string(), dir.display().to_string())]);
    let dir_param = [("dir", dir.display().to_string())];
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(submit(&h.bus, "work", &dir_param).await);
    }
    // some run, some wait (8 slots for 12 orders)
    let marks = dir.join("marks");
    wait_until(Duration::from_secs(15), "tasks run", || {
        std::future::ready(marks.exists())
    })
    .await;

    within(
        Duration::from_secs(30),
        "nats-server restart",
        h.cluster.nats.restart(),
    )
    .await
    .expect("nats-server restarts on the same port and store");

    // the client reconnects by itself; every order ends, and succeeds
    for id in &orders {
        let info = wait_for(Duration::from_secs(60), "the order finishes", || {
            let (bus, id) = (h.bus.clone(), id.clone());
            async move { order_info(&bus, &id).await.filter(|o| o.state.is_final()) }
        })
        .await;
        assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    }
    let text = std::fs::read_to_string(&marks).expect("markers");
    for id in &orders {
        let ends = text.lines().filter(|l| *l == format!("end {id}")).count();
        assert_eq!(ends, 1, "order {id} completed once:\n{text}");
    }
    // and the cluster still takes new work
    let (fin, _) = run_to_finish(&h.bus, "work", params).await;
    assert_eq!(fin.state, OrderState::Succeeded);
    let status: StatusReply = within(
        REQUEST,
        "status",
        h.bus
            .request(h.bus.subjects().status(), &StatusRequest {}, REQUEST),
    )
    .await
    .expect("status");
    assert!(
        status
            .subagents
            .iter()
            .all(|s| s.state == SubagentState::Available),
        "{status:?}"
    );
}
