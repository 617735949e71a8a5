//! Cancelling orders: one waiting in the broker because every member of its
//! cluster is full never runs; a running one ends cancelled, at once with
//! `--kill`; a finished one cannot be cancelled.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::bus::{Bus, BusError};
use baton::protocol::*;
use common::*;

const JOBS: &str = r#"
[[cluster]]
name = "one"
mode = "round-robin"
members = [{ subagent = "sub-a" }]

[[job]]
name = "hold"
program = "sh"
args = ["-c", "echo $$ > \"$BATON_PARAM_FILE\"; exec sleep 60"]
cluster = "one"
[job.params.file]
required = true

[[job]]
name = "quick"
program = "true"
cluster = "one"
"#;

async fn get(bus: &Bus, order_id: &str) -> OrderInfo {
    order_info(bus, order_id).await.expect("order.get")
}

async fn cancel(bus: &Bus, order_id: &str, kill: bool) -> Result<OrderInfo, BusError> {
    let request = CancelOrder {
        order_id: order_id.into(),
        kill,
    };
    let cancel = bus.request(bus.subjects().order_cancel(), &request, REQUEST);
    within(REQUEST * 2, "cancel", cancel).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_order_is_cancelled_and_a_running_one_killed() {
    let mut h = cluster(&[]).await;
    h.cluster
        .spawn_subagent("sub-a", &["--capacity", "1"])
        .expect("spawn sub-a");
    within(
        Duration::from_secs(15),
        "sub-a",
        h.cluster.wait_for_subagents(&h.bus, 1),
    )
    .await
    .expect("sub-a registers");
    deploy(&h.bus, JOBS).await;
    let bus = h.bus.clone();
    let pid_file = h.scratch().join("hold.pid");
    let holding = submit(&bus, "hold", &[("file", pid_file.display().to_string())]).await;
    let pid: i32 = wait_for(Duration::from_secs(15), "the first order runs", || {
        let text = std::fs::read_to_string(&pid_file).ok();
        async move { text.and_then(|t| t.trim().parse().ok()) }
    })
    .await;

    // sub-a is full: this one waits in the broker
    let waiting = submit(&bus, "quick", &[]).await;
    assert_eq!(get(&bus, &waiting).await.state, OrderState::Accepted);
    let info = cancel(&bus, &waiting, false).await.expect("cancel waiting");
    assert_eq!(info.state, OrderState::Cancelled, "{info:?}");
    let again = cancel(&bus, &waiting, false)
        .await
        .expect("cancel is idempotent");
    assert_eq!(again.state, OrderState::Cancelled);

    // the running one: without --kill it keeps running, cancel requested
    let info = cancel(&bus, &holding, false).await.expect("cancel running");
    assert_eq!(info.state, OrderState::Running);
    assert!(info.cancel_requested, "{info:?}");
    assert!(!process_gone(pid), "still running without --kill");
    // with --kill it ends now, cancelled, and is not run again
    cancel(&bus, &holding, true).await.expect("cancel --kill");
    let done = wait_for(Duration::from_secs(15), "the running order ends", || {
        let bus = bus.clone();
        let id = holding.clone();
        async move { Some(get(&bus, &id).await).filter(|o| o.state.is_final()) }
    })
    .await;
    assert_eq!(done.state, OrderState::Cancelled, "{done:?}");
    assert_eq!(done.attempt, 1, "{done:?}");
    wait_until(Duration::from_secs(10), "the task process is gone", || {
        std::future::ready(process_gone(pid))
    })
    .await;

    // the cancelled waiting order never ran; a new one runs now that sub-a is free
    let waiting_info = get(&bus, &waiting).await;
    assert_eq!(waiting_info.attempt, 0, "{waiting_info:?}");
    let (fin, _) = run_to_finish(&bus, "quick", BTreeMap::new()).await;
    assert_eq!(fin.state, OrderState::Succeeded);

    // a finished order cannot be cancelled
    let e = cancel(&bus, &fin.order_id, true).await.unwrap_err();
    match e {
        BusError::Remote(r) => assert_eq!(r.error.code, ErrorCode::InvalidState, "{r}"),
        other => panic!("expected invalid_state, got {other}"),
    }
    let e = cancel(&bus, "no-such-order", false).await.unwrap_err();
    assert!(
        matches!(e, BusError::Remote(ref r) if r.error.code == ErrorCode::NotFound),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_and_cancels_orders() {
    let h = cluster(&["sub-a"]).await;
    deploy(&h.bus, JOBS).await;
    let pid_file = h.scratch().join("hold.pid");
    let id = submit(&h.bus, "hold", &[("file", pid_file.display().to_string())]).await;
    wait_until(Duration::from_secs(15), "the order runs", || {
        std::future::ready(pid_file.exists())
    })
    .await;
    let out = run_baton(&h, &["order", "show", &id], REQUEST * 2).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("state     running") && text.contains("subagent  sub-a"),
        "{text}"
    );
    let out = run_baton(&h, &["order", "cancel", &id, "--kill"], REQUEST * 2).await;
    assert!(out.status.success(), "{out:?}");
    let done = wait_for(Duration::from_secs(15), "cancelled", || {
        let (bus, id) = (h.bus.clone(), id.clone());
        async move { Some(get(&bus, &id).await).filter(|o| o.state.is_final()) }
    })
    .await;
    assert_eq!(done.state, OrderState::Cancelled);
    let out = run_baton(&h, &["order", "cancel", &id], REQUEST * 2).await;
    assert!(
        out.status.success(),
        "cancel of a cancelled order is fine: {out:?}"
    );
    let out = run_baton(&h, &["order", "show", "nope"], REQUEST * 2).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no order"),
        "{out:?}"
    );
}
