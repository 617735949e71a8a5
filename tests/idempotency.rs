//! A submit with a request id creates one order however often it is sent:
//! repeated, sent many times at once, or sent again after the broker was
//! killed and started anew. Sent again asking for something else (another
//! job or workflow, other parameters) it is refused with `conflict`.

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
    submit_as(bus, "mark", &[("file", file)], request_id).await
}

async fn submit_as(
    bus: &Bus,
    job: &str,
    params: &[(&str, &str)],
    request_id: &str,
) -> Result<SubmitReply, BusError> {
    let order = SubmitOrder {
        job: job.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        request_id: Some(request_id.into()),
        slot_ms: None,
    };
    let request = bus.request(bus.subjects().submit(), &order, REQUEST);
    within(REQUEST * 2, "submit", request).await
}

/// The `conflict` error of a refused submit; panics on any other answer.
fn conflict(result: Result<SubmitReply, BusError>, what: &str) -> String {
    match result {
        Err(BusError::Remote(e)) if e.error.code == ErrorCode::Conflict => e.error.message,
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
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
    // and asking that broker for something else under the id is refused
    let other_file = format!("{file}.other");
    let message = conflict(
        submit_with_id(&h.bus, &other_file, "nightly-2026-11-22").await,
        "other params after the fail-over",
    );
    assert!(
        message.contains("nightly-2026-11-22") && message.contains(&order_id),
        "{message}"
    );

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

const MORE: &str = r#"
[[job]]
name = "other"
program = "true"
[job.params.file]
default = "none"

[[workflow]]
name = "flow"
[workflow.params.file]
default = "none"
[[workflow.steps]]
name = "only"
job = "other"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_asking_for_something_else_is_a_conflict() {
    let h = cluster(&["sub-a"]).await;
    deploy(&h.bus, &format!("{JOB}{MORE}")).await;
    let file = h.scratch().join("runs").display().to_string();
    let first = submit_with_id(&h.bus, &file, "r-1").await.expect("submit");
    assert!(!first.duplicate);

    // other parameters: refused, naming the request id, the order and the parameter
    let message = conflict(
        submit_with_id(&h.bus, &format!("{file}.2"), "r-1").await,
        "other params",
    );
    assert_eq!(
        message,
        format!(
            "request_id 'r-1' was used for order {}, and this submit differs: other values \
             of parameter(s) file (compared with defaults applied); a new submit needs a new \
             request_id",
            first.order_id
        )
    );
    // another job, or a workflow
    for name in ["other", "flow"] {
        let message = conflict(
            submit_as(&h.bus, name, &[("file", &file)], "r-1").await,
            name,
        );
        assert!(
            message.contains(&first.order_id)
                && message.contains(&format!("it names '{name}', the order runs 'mark'")),
            "{message}"
        );
    }
    // the same job and parameters: the same order
    let again = submit_with_id(&h.bus, &file, "r-1").await.expect("repeat");
    assert_eq!(
        (again.order_id.as_str(), again.duplicate),
        (first.order_id.as_str(), true)
    );
    finished(&h.bus, &first.order_id).await;

    // a workflow order's request id: its parameters are compared with the
    // defaults applied on both sides
    let flow = submit_as(&h.bus, "flow", &[], "w-1")
        .await
        .expect("submit flow");
    let same = submit_as(&h.bus, "flow", &[("file", "none")], "w-1")
        .await
        .expect("the default given explicitly");
    assert_eq!(
        (same.order_id.as_str(), same.duplicate),
        (flow.order_id.as_str(), true)
    );
    let message = conflict(
        submit_as(&h.bus, "flow", &[("file", "x")], "w-1").await,
        "flow with other params",
    );
    assert!(
        message.contains(&flow.order_id) && message.contains("file"),
        "{message}"
    );
    let message = conflict(submit_as(&h.bus, "other", &[], "w-1").await, "a job");
    assert!(
        message.contains("it names 'other', the order runs 'flow'"),
        "{message}"
    );
    finished(&h.bus, &flow.order_id).await;

    let runs = std::fs::read_to_string(&file).unwrap();
    assert_eq!(runs.lines().count(), 1, "only the first order ran: {runs}");
}
