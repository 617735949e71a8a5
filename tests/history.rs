//! Bounded history with real processes: a failed workflow order says in
//! `baton order show` until when it can be resumed, expires after
//! `broker.failed_hold` (here across a SIGKILL of the active broker, the
//! standby computing the deadline from the record), and a resume is then
//! refused; an ended order's record leaves the journal after
//! `broker.order_retention`.

mod common;

use std::time::Duration;

use baton::bus::{Bus, BusError};
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// Bound on a takeover, an expiry, a sweep.
const LIMIT: Duration = Duration::from_secs(60);

const DEPLOYMENT: &str = r#"
[[job]]
name = "fails"
program = "false"

[[job]]
name = "works"
program = "true"

[[workflow]]
name = "doomed"
[[workflow.steps]]
name = "only"
job = "fails"
"#;

async fn get(bus: &Bus, order_id: &str) -> Result<OrderInfo, BusError> {
    let get = GetOrder {
        order_id: order_id.into(),
    };
    let request = bus.request(bus.subjects().order_get(), &get, REQUEST);
    within(REQUEST * 2, "order.get", request).await
}

async fn active(bus: &Bus) -> Option<String> {
    let status = StatusRequest::default();
    let reply = bus.request::<_, StatusReply>(bus.subjects().status(), &status, REQUEST);
    within(REQUEST * 2, "status", reply)
        .await
        .ok()
        .map(|s| s.broker_id)
}

async fn order_show(h: &Harness, order_id: &str) -> String {
    let out = run_baton(h, &["order", "show", order_id], REQUEST * 3).await;
    assert!(out.status.success(), "order show: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workflow_order_expires_across_a_broker_kill_and_is_no_longer_resumable() {
    let env = [("BATON_BROKER__FAILED_HOLD", "8s")];
    let mut h = cluster_with_env(&["sub-1"], &env).await;
    deploy(&h.bus, DEPLOYMENT).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn standby broker");
    let order = submit(&h.bus, "doomed", &[]).await;
    let failed = wait_for(LIMIT, "the workflow order fails", || async {
        get(&h.bus, &order)
            .await
            .ok()
            .filter(|o| o.state == OrderState::Failed)
    })
    .await;
    let until = failed
        .resumable_until_ms
        .expect("until when it can be resumed");
    let finished = failed.finished_at_ms.expect("when it failed");
    assert_eq!(
        until,
        finished + 8_000,
        "broker.failed_hold after it failed"
    );
    assert_eq!(failed.expired_at_ms, None);
    let text = order_show(&h, &order).await;
    assert!(
        text.contains("expires   ") && text.contains("resume or cancel it before"),
        "{text}"
    );
    // the active broker dies; the standby takes over and keeps the deadline
    let first = wait_for(LIMIT, "a broker is active", || active(&h.bus)).await;
    let process = if first == "b2" { "b2" } else { "broker" };
    h.cluster
        .signal(process, Signal::SIGKILL)
        .expect("kill the active broker");
    wait_until(LIMIT, "the other broker takes over", || async {
        active(&h.bus).await.is_some_and(|id| id != first)
    })
    .await;
    let expired = wait_for(LIMIT, "the workflow order expires", || async {
        get(&h.bus, &order)
            .await
            .ok()
            .filter(|o| o.expired_at_ms.is_some())
    })
    .await;
    assert_eq!(expired.state, OrderState::Failed, "it stays failed");
    assert!(expired.expired_at_ms.unwrap() >= until);
    assert_eq!(expired.resumable_until_ms, None);
    let text = order_show(&h, &order).await;
    assert!(
        text.contains("expired   ") && text.contains("it can no longer be resumed"),
        "{text}"
    );
    // a resume is refused, saying why
    let refused = match resume(&h.bus, &order, None, false).await {
        Err(BusError::Remote(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused.error.code, ErrorCode::InvalidState);
    assert!(
        refused.error.message.contains("expired at")
            && refused.error.message.contains("broker.failed_hold"),
        "{}",
        refused.error.message
    );
    let out = run_baton(&h, &["order", "resume", &order], REQUEST * 3).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("expired"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_orders_record_leaves_the_journal_after_its_retention() {
    // one ended order held in memory: the older one is read from the journal
    let env = [
        ("BATON_BROKER__ORDER_RETENTION", "3s"),
        ("BATON_BROKER__KEEP_FINISHED", "1"),
    ];
    let h = cluster_with_env(&["sub-1"], &env).await;
    deploy(&h.bus, DEPLOYMENT).await;
    let (first, _) = run_to_finish(&h.bus, "works", Default::default()).await;
    let (second, _) = run_to_finish(&h.bus, "works", Default::default()).await;
    // read from the journal until the sweep removes it
    let info = get(&h.bus, &first.order_id).await.expect("still kept");
    assert_eq!(info.state, OrderState::Succeeded);
    wait_until(LIMIT, "the first order's record is removed", || async {
        matches!(
            get(&h.bus, &first.order_id).await,
            Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound
        )
    })
    .await;
    // the newest ended order is still answered from memory
    let held = get(&h.bus, &second.order_id).await.expect("held");
    assert_eq!(held.state, OrderState::Succeeded);
}
