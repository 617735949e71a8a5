//! Network partitions: subagent `sub-p` reaches NATS through a [`Proxy`]
//! that the test cuts like a pulled cable (sockets stay open, nothing gets
//! through), while `sub-q` is connected directly. A fixed-priority cluster
//! puts every task on `sub-p` while it is up.
//!
//! The promise under attack: a task runs again elsewhere only once its first
//! copy is known dead, so two copies never overlap; a short cut changes
//! nothing; a task that cannot run again fails as "subagent lost".
//!
//! The marker job appends `start|end|killed|overlap <order> <pid> <ms>`
//! lines to a file, so the test sees each run's life from outside Baton.

mod common;

use std::time::Duration;

use baton::protocol::*;
use common::partition::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_cut_task_finishes_once() {
    let p = Partition::start().await;
    let (order, _) = p.start_on_p("marker", "2").await;

    p.proxy.cut();
    let cut_at = tokio::time::Instant::now();
    // longer than two heartbeats: the broker notices the silence and probes
    let silent = HEARTBEAT * 3;
    wait_until(
        SUBAGENT_TIMEOUT,
        "the broker hears nothing from sub-p",
        || async {
            p.status_of("sub-p")
                .await
                .is_some_and(|s| s.heartbeat_age_ms >= silent.as_millis() as u64)
        },
    )
    .await;
    p.proxy.heal();
    let cut_for = cut_at.elapsed();
    assert!(
        cut_for < SUBAGENT_TIMEOUT,
        "the cut was meant to be shorter than the subagent timeout: {cut_for:?}"
    );

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "ran once: {fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-p"), "{fin:?}");
    assert_eq!(p.events.started(&order).len(), 1, "one started event");

    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "one start: {m:?}");
    assert_eq!(of_kind(&m, "end").len(), 1, "one end: {m:?}");
    assert!(of_kind(&m, "killed").is_empty(), "not killed: {m:?}");
    // a cut shorter than the subagent timeout is no loss
    let changes = p.events.changes("sub-p");
    assert!(
        changes.iter().all(|c| c.state != SubagentState::Lost),
        "sub-p was declared lost after a {cut_for:?} cut: {changes:?}"
    );
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_cut_reruns_restartable_without_overlap() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "6").await;
    let first_pid = first.pid.expect("the first task's pid") as i32;

    p.proxy.cut();
    // sub-p hears no broker for its orphan timeout and kills the task (SIGTERM
    // within one heartbeat, SIGKILL after the grace; the script traps SIGTERM)
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(3);
    let killed = p.wait_mark("killed", limit).await;
    assert_eq!(killed.pid, first_pid, "the first run was killed");

    // only then does the broker run it again, on sub-q
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(10))
        .await;
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    assert!(
        process_gone(first_pid),
        "the first run is gone before the second runs"
    );
    let m = p.wait_mark_count("start", 2, Duration::from_secs(5)).await;
    let second_start = of_kind(&m, "start")[1].clone();
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    assert!(
        killed.at_ms < second_start.at_ms,
        "the second run started {} ms before the first was killed: {m:?}",
        killed.at_ms as i64 - second_start.at_ms as i64
    );
    let lost = p.events.changes("sub-p");
    assert!(
        lost.iter()
            .any(|c| c.state == SubagentState::Lost && c.reason.contains("unreachable")),
        "sub-p was lost as unreachable (it never died): {lost:?}"
    );

    p.proxy.heal();
    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-q"), "{fin:?}");

    // sub-p comes back and its late result of the first run changes nothing
    wait_until(Duration::from_secs(10), "sub-p is back", || async {
        p.status_of("sub-p")
            .await
            .is_some_and(|s| s.state == SubagentState::Available)
    })
    .await;
    let m = marks(&p.marker_file());
    let starts = of_kind(&m, "start");
    assert_eq!(starts.len(), 2, "two runs: {m:?}");
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    let ends = of_kind(&m, "end");
    assert_eq!(ends.len(), 1, "finished exactly once: {m:?}");
    assert_eq!(ends[0].pid, starts[1].pid, "by the second run: {m:?}");
    assert_eq!(p.events.finished(&order).len(), 1, "one finished event");
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    assert_eq!(info.attempt, 2, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_cut_fails_non_restartable() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker-once", "6").await;

    p.proxy.cut();
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(6);
    let fin = p.events.wait_finished(&order, limit).await;
    assert_eq!(fin.state, OrderState::Failed, "{fin:?}");
    let reason = fin.reason.clone().unwrap_or_default();
    assert!(reason.contains("subagent lost"), "{fin:?}");
    assert_eq!(fin.attempt, 1, "{fin:?}");
    // declared failed only once the task was dead
    let killed = p.wait_mark("killed", ORPHAN_TIMEOUT + KILL_GRACE).await;
    assert_eq!(killed.pid, first.pid.expect("pid") as i32);
    assert!(
        killed.at_ms <= fin.at_ms,
        "failed {} ms before sub-p killed the task",
        killed.at_ms - fin.at_ms
    );

    p.proxy.heal();
    wait_until(Duration::from_secs(10), "sub-p is back", || async {
        p.status_of("sub-p")
            .await
            .is_some_and(|s| s.state == SubagentState::Available && s.running == 0)
    })
    .await;
    // the late result ("killed by its subagent") does not change a final order
    let info = p.order(&order).await;
    assert_eq!(info.state, OrderState::Failed, "{info:?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap_or("")
            .contains("subagent lost"),
        "{info:?}"
    );
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "never run again: {m:?}");
    assert!(of_kind(&m, "end").is_empty(), "{m:?}");
    assert_eq!(p.events.started(&order).len(), 1, "one started event");
    assert_eq!(p.events.finished(&order).len(), 1, "one finished event");
}

/// The cut heals after `sub-p` killed its task (orphan timeout) but before
/// the broker's own deadline for it: the kill is the cluster's doing, not the
/// job's, so a restartable order runs again rather than failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_after_the_subagent_killed_its_task_reruns_it() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "6").await;
    p.proxy.cut();
    let limit = ORPHAN_TIMEOUT + KILL_GRACE + Duration::from_secs(3);
    let killed = p.wait_mark("killed", limit).await;
    assert_eq!(killed.pid, first.pid.expect("pid") as i32);
    // the broker still waits for the orphan timeout (heartbeat and margin added)
    let info = p.order(&order).await;
    assert_eq!(info.attempt, 1, "not yet run again: {info:?}");
    p.proxy.heal();

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(30))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    let m = marks(&p.marker_file());
    let starts = of_kind(&m, "start");
    assert_eq!(starts.len(), 2, "two runs: {m:?}");
    assert!(killed.at_ms < starts[1].at_ms, "{m:?}");
    assert!(of_kind(&m, "overlap").is_empty(), "runs overlapped: {m:?}");
    assert_eq!(of_kind(&m, "end").len(), 1, "finished exactly once: {m:?}");
}
