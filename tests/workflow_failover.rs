//! Workflow orders across a broker fail-over: the active broker is killed
//! with SIGKILL while workflow orders move step by step; the standby takes
//! them over from the journal and finishes them. No step is lost, and none
//! runs twice (each step appends its workflow order and step to a marker
//! file when it starts).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton::auth::Role;
use baton::bus::Bus;
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// Bound on a takeover: lease expiry, recovery, subagents heard again.
const TAKEOVER: Duration = Duration::from_secs(20);

fn deployment(marker: &Path, gate: &Path) -> String {
    format!(
        r#"
[[job]]
name = "step"
program = "sh"
args = ["-c", 'echo "$BATON_WORKFLOW_ORDER_ID $BATON_STEP" >> "{marker}"; sleep 0.4']

[[job]]
name = "held"
program = "sh"
args = ["-c", 'echo "$BATON_WORKFLOW_ORDER_ID $BATON_STEP" >> "{marker}"; while [ ! -f "{gate}" ]; do sleep 0.05; done']

[[workflow]]
name = "chain"
[[workflow.steps]]
name = "s1"
job = "step"
[[workflow.steps]]
name = "s2"
job = "step"
[[workflow.steps]]
name = "s3"
job = "step"
[[workflow.steps]]
name = "s4"
job = "step"

[[workflow]]
name = "gated"
[[workflow.steps]]
name = "wait"
job = "held"
[[workflow.steps]]
name = "after"
job = "step"
"#,
        marker = marker.display(),
        gate = gate.display(),
    )
}

/// A cluster with a standby broker `b2` and the deployment above; the
/// marker file and the gate of the `held` job.
async fn with_standby(subagents: &[&str], env: &[(&str, &str)]) -> (Harness, PathBuf, PathBuf) {
    let mut h = cluster_with_env(subagents, env).await;
    let (marker, gate) = (h.scratch().join("marker"), h.scratch().join("gate"));
    deploy(&h.bus, &deployment(&marker, &gate)).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn broker");
    (h, marker, gate)
}

/// Runs per (workflow order, step) recorded in `marker`.
fn runs(marker: &Path) -> BTreeMap<(String, String), usize> {
    let text = std::fs::read_to_string(marker).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for line in text.lines() {
        if let Some((order, step)) = line.split_once(' ') {
            *runs
                .entry((order.to_string(), step.to_string()))
                .or_insert(0) += 1;
        }
    }
    runs
}

async fn active(bus: &Bus) -> Option<String> {
    let reply = bus
        .request::<_, StatusReply>(
            bus.subjects().status(),
            &StatusRequest::default(),
            Duration::from_secs(1),
        )
        .await;
    reply.ok().map(|s| s.broker_id)
}

/// Kills the active broker and waits until the other one is active.
async fn fail_over(h: &mut Harness) {
    let id = wait_for(TAKEOVER, "a broker is active", || active(&h.bus)).await;
    let process = if id.starts_with("broker-") {
        "broker"
    } else {
        id.as_str()
    };
    h.cluster
        .signal(process, Signal::SIGKILL)
        .expect("kill the active broker");
    wait_for(TAKEOVER, "the standby is active", || async {
        active(&h.bus).await.filter(|now| *now != id)
    })
    .await;
}

async fn submit_flow(bus: &Bus, workflow: &str, request_id: &str) -> String {
    let order = SubmitOrder {
        job: workflow.into(),
        params: BTreeMap::new(),
        request_id: Some(request_id.into()),
        slot_ms: None,
    };
    let reply: SubmitReply = bus
        .request(bus.subjects().submit(), &order, REQUEST)
        .await
        .expect("workflow order accepted");
    reply.order_id
}

async fn wait_state(bus: &Bus, order_id: &str, state: OrderState) -> OrderInfo {
    wait_for(
        Duration::from_secs(60),
        &format!("order {state:?}"),
        || async { order_info(bus, order_id).await.filter(|o| o.state == state) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_broker_twice_mid_workflow_loses_and_repeats_no_step() {
    let env = [("BATON_SUBAGENT__CAPACITY", "8")];
    let (mut h, marker, _) = with_standby(&["sub-1", "sub-2"], &env).await;

    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(submit_flow(&h.bus, "chain", &format!("chain-{i}")).await);
    }
    // first kill once every order has begun, the second in the middle
    wait_until(
        Duration::from_secs(30),
        "every order ran a step",
        || async {
            let r = runs(&marker);
            orders.iter().all(|o| r.keys().any(|(id, _)| id == o))
        },
    )
    .await;
    fail_over(&mut h).await;
    h.cluster
        .spawn("b3", &["broker", "--id", "b3"])
        .expect("spawn broker");
    wait_until(Duration::from_secs(30), "steps go on", || async {
        runs(&marker)
            .keys()
            .filter(|(_, step)| step == "s3")
            .count()
            >= 2
    })
    .await;
    fail_over(&mut h).await;

    for order in &orders {
        let info = wait_state(&h.bus, order, OrderState::Succeeded).await;
        assert!(
            info.steps.iter().all(|s| s.state == StepState::Succeeded),
            "{info:?}"
        );
    }
    let r = runs(&marker);
    for order in &orders {
        for step in ["s1", "s2", "s3", "s4"] {
            let n = r.get(&(order.clone(), step.to_string())).copied();
            assert_eq!(n, Some(1), "order {order} step {step} ran {n:?} times");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_order_stays_suspended_across_a_broker_failover_and_resumes() {
    let (mut h, marker, gate) = with_standby(&["sub-1"], &[]).await;
    let order = submit_flow(&h.bus, "gated", "gated-1").await;
    wait_until(Duration::from_secs(30), "step 'wait' runs", || async {
        !runs(&marker).is_empty()
    })
    .await;
    let info = suspend(&h.bus, &order, false)
        .await
        .expect("suspend accepted");
    assert_eq!(info.state, OrderState::Suspending);

    fail_over(&mut h).await;
    // the step finishes under the new broker, which holds the order
    std::fs::write(&gate, "open").unwrap();
    let info = wait_state(&h.bus, &order, OrderState::Suspended).await;
    assert_eq!(info.steps[0].state, StepState::Succeeded);
    assert_eq!(info.steps[1].state, StepState::Pending);
    holds_throughout(
        Duration::from_secs(1),
        "nothing runs while suspended",
        || async { runs(&marker).len() == 1 },
    )
    .await;

    resume(&h.bus, &order, None, false)
        .await
        .expect("resume accepted");
    let info = wait_state(&h.bus, &order, OrderState::Succeeded).await;
    assert_eq!(info.history.len(), 2, "{:?}", info.history);
    let r = runs(&marker);
    assert_eq!(r.values().sum::<usize>(), 2, "{r:?}");
}

/// A crash can leave a step order in the journal that its workflow order's
/// record never got to know (the workflow order is stored after its step
/// orders). A broker taking over stops such a step order: it never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_order_its_workflow_order_never_recorded_is_stopped_at_takeover() {
    let (mut h, marker, _) = with_standby(&["sub-1"], &[]).await;
    let order = submit_flow(&h.bus, "chain", "chain-orphan").await;
    wait_until(Duration::from_secs(30), "step s1 runs", || async {
        !runs(&marker).is_empty()
    })
    .await;
    let _ = suspend(&h.bus, &order, false)
        .await
        .expect("suspend accepted");
    let held = wait_state(&h.bus, &order, OrderState::Suspended).await;

    // What a broker killed between storing a step order and storing its
    // workflow order leaves: step s2's order, queued, unknown to the order.
    let broker = h.connect_as(Role::Broker, None).await;
    let kv: baton::bus::Kv<OrderInfo> = within(REQUEST, "orders bucket", broker.kv("baton_orders"))
        .await
        .expect("orders bucket");
    let step_order = baton::workflow::step_order_id("baton", &order, "s2", 1);
    let mut orphan = order_info(&h.bus, &held.history[0].order_id)
        .await
        .expect("s1's order");
    orphan.order_id = step_order.clone();
    orphan.state = OrderState::Accepted;
    orphan.attempt = 0;
    orphan.task_id = None;
    orphan.subagent_id = None;
    orphan.subagent_instance_id = None;
    orphan.exit_code = None;
    orphan.started_at_ms = None;
    orphan.finished_at_ms = None;
    orphan.request_id = Some(format!("{order}/s2/1"));
    orphan.parent = Some(ParentStep {
        order_id: order.clone(),
        workflow: "chain".into(),
        step: "s2".into(),
        attempt: 1,
    });
    kv.put(&step_order, &orphan)
        .await
        .expect("write the step order");

    fail_over(&mut h).await;
    let stopped = wait_state(&h.bus, &step_order, OrderState::Cancelled).await;
    assert!(
        stopped.reason.is_some() || stopped.cancel_requested,
        "{stopped:?}"
    );
    let info = order_info(&h.bus, &order)
        .await
        .expect("the workflow order");
    assert_eq!(info.state, OrderState::Suspended, "{info:?}");
    holds_throughout(Duration::from_secs(1), "s2 never runs", || async {
        runs(&marker).len() == 1
    })
    .await;

    // resumed, the order runs s2 as its own attempt and succeeds
    resume(&h.bus, &order, None, false)
        .await
        .expect("resume accepted");
    let info = wait_state(&h.bus, &order, OrderState::Succeeded).await;
    let r = runs(&marker);
    assert_eq!(r.values().sum::<usize>(), 4, "{r:?} {:?}", info.history);
}

/// A workflow submit with a request id makes one order, whether repeated
/// at once, or after the broker that took it was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_workflow_submit_finds_the_first_order_across_a_failover() {
    let (mut h, marker, _) = with_standby(&["sub-1"], &[]).await;
    let submit = SubmitOrder {
        job: "chain".into(),
        params: BTreeMap::new(),
        request_id: Some("nightly-2026-11-22".into()),
        slot_ms: None,
    };
    let again = || async {
        let reply: SubmitReply = h
            .bus
            .request(h.bus.subjects().submit(), &submit, REQUEST)
            .await
            .expect("submit answered");
        reply
    };
    let first = again().await;
    assert!(!first.duplicate);
    let second = again().await;
    assert_eq!(
        (second.order_id.as_str(), second.duplicate),
        (first.order_id.as_str(), true)
    );

    fail_over(&mut h).await;
    let third = wait_for(TAKEOVER, "the new broker answers the submit", || async {
        h.bus
            .request::<_, SubmitReply>(h.bus.subjects().submit(), &submit, REQUEST)
            .await
            .ok()
    })
    .await;
    assert_eq!(
        (third.order_id.as_str(), third.duplicate),
        (first.order_id.as_str(), true)
    );
    wait_state(&h.bus, &first.order_id, OrderState::Succeeded).await;
    let r = runs(&marker);
    assert_eq!(r.len(), 4, "one order, four steps, each once: {r:?}");
    assert!(r.values().all(|&n| n == 1), "{r:?}");
}
