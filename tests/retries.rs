//! Job retries with real processes: a job's `retry` policy runs a failed
//! task again after its backoff, on whichever subagent placement chooses,
//! until it succeeds or the retries are used up; a retry waiting survives
//! a SIGKILL of the active broker; a cancel ends a waiting order at once.
//!
//! Each task appends its task id to a marker file and counts its order's
//! attempts in a file of its own, so the test sees from outside Baton what
//! ran, and how often.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton::bus::{Bus, BusError};
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// Bound on a takeover: lease expiry, recovery, subagents heard again.
const TAKEOVER: Duration = Duration::from_secs(20);
/// Bound on an order's whole run with its retries.
const RUN: Duration = Duration::from_secs(60);

/// `flaky` fails until its order's third attempt; `broken` always fails.
/// Both record each task in `marker`.
fn jobs(dir: &Path, backoff: &str) -> String {
    format!(
        r#"
[[job]]
name = "flaky"
program = "sh"
args = ["-c", '''
echo "$BATON_TASK_ID" >> "{dir}/marker"
f="{dir}/count-$BATON_ORDER_ID"
n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$f"
[ "$n" -ge 3 ]
''']
retry = {{ times = 3, backoff = "{backoff}", max_backoff = "{backoff}", jitter = true }}

[[job]]
name = "broken"
program = "sh"
args = ["-c", 'echo "$BATON_TASK_ID" >> "{dir}/marker"; exit 7']
retry = {{ times = 2, backoff = "{backoff}" }}
"#,
        dir = dir.display(),
    )
}

/// Tasks recorded in `marker`, with how often each ran.
fn tasks(dir: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(dir.join("marker")).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for task in text.lines().filter(|l| !l.is_empty()) {
        *runs.entry(task.to_string()).or_insert(0) += 1;
    }
    runs
}

/// The tasks of `order_id` that ran, each with how often it ran.
fn tasks_of(dir: &Path, order_id: &str) -> Vec<(String, usize)> {
    let prefix = format!("{order_id}-");
    (tasks(dir).into_iter())
        .filter(|(t, _)| t.starts_with(&prefix))
        .collect()
}

/// Waits until `order_id` is final (through fail-overs) and returns it.
async fn final_info(bus: &Bus, order_id: &str) -> OrderInfo {
    wait_for(RUN, "the order is final", || async {
        order_info(bus, order_id)
            .await
            .filter(|o| o.state.is_final())
    })
    .await
}

/// Waits until `order_id` waits for retry number `n`; returns it then.
async fn waiting_for_retry(bus: &Bus, order_id: &str, n: u32) -> OrderInfo {
    let what = format!("the order waits for retry {n}");
    wait_for(RUN, &what, || async {
        order_info(bus, order_id)
            .await
            .filter(|o| o.retries == n && o.retry_at_ms.is_some())
    })
    .await
}

/// The id of the broker answering requests now, if any.
async fn active(bus: &Bus) -> Option<String> {
    let ask = StatusRequest::default();
    let reply = bus
        .request::<_, StatusReply>(bus.subjects().status(), &ask, Duration::from_secs(1))
        .await;
    reply.ok().map(|s| s.broker_id)
}

/// Submits with a request id, through a fail-over, as a careful client does.
async fn submit_surely(bus: &Bus, job: &str, request_id: &str) -> String {
    let order = SubmitOrder {
        job: job.into(),
        params: BTreeMap::new(),
        request_id: Some(request_id.into()),
        slot_ms: None,
    };
    let subject = bus.subjects().submit();
    wait_for(TAKEOVER, "a submit is accepted", || async {
        match bus
            .request::<_, SubmitReply>(subject.clone(), &order, Duration::from_secs(2))
            .await
        {
            Ok(reply) => Some(reply.order_id),
            Err(BusError::Remote(e)) => panic!("submit refused: {e}"),
            Err(_) => None,
        }
    })
    .await
}

fn reruns(info: &OrderInfo) -> Vec<Option<&str>> {
    info.attempts.iter().map(|a| a.rerun.as_deref()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_twice_then_succeeds_ends_succeeded_after_three_attempts() {
    let h = cluster(&["sub-1", "sub-2"]).await;
    let dir = h.scratch();
    deploy(&h.bus, &jobs(&dir, "300ms")).await;
    let order = submit(&h.bus, "flaky", &[]).await;
    let info = final_info(&h.bus, &order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:#?}");
    assert_eq!((info.retries, info.attempt), (2, 3));
    assert_eq!(
        reruns(&info),
        [
            Some("retry 1 of 3 after exit 1"),
            Some("retry 2 of 3 after exit 1"),
            None
        ]
    );
    let outcomes: Vec<Option<AttemptOutcome>> = info.attempts.iter().map(|a| a.outcome).collect();
    use AttemptOutcome::*;
    assert_eq!(outcomes, [Some(Exited), Some(Exited), Some(Succeeded)]);
    for a in &info.attempts {
        assert!(
            a.started_at_ms.is_some() && a.finished_at_ms.is_some(),
            "{a:?}"
        );
    }
    // each attempt a task of its own, run once
    let ran = tasks_of(&dir, &order);
    let expected: Vec<(String, usize)> = (1..=3).map(|n| (format!("{order}-{n}"), 1)).collect();
    assert_eq!(ran, expected);
    // what `baton order show` shows
    let out = run_baton(&h, &["order", "show", &order], Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("state     succeeded"), "{text}");
    assert!(text.contains("tasks:"), "{text}");
    assert!(text.contains("retry 2 of 3 after exit 1"), "{text}");
    // what `baton submit --wait` says as it goes
    let out = run_baton(&h, &["submit", "flaky", "--wait"], RUN).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for line in [
        "order retry 1 of 3 after exit 1, in ",
        "order retry 2 of 3 after exit 1, in ",
        "started on ",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.contains("succeeded") && last.ends_with(", attempt 3"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_ends_failed_after_its_retries_are_used_up() {
    let h = cluster(&["sub-1"]).await;
    let dir = h.scratch();
    deploy(&h.bus, &jobs(&dir, "200ms")).await;
    let order = submit(&h.bus, "broken", &[]).await;
    let info = final_info(&h.bus, &order).await;
    assert_eq!(info.state, OrderState::Failed, "{info:#?}");
    assert_eq!((info.exit_code, info.retries), (Some(7), 2));
    assert_eq!(info.retry_at_ms, None);
    assert_eq!(
        reruns(&info),
        [
            Some("retry 1 of 2 after exit 7"),
            Some("retry 2 of 2 after exit 7"),
            None
        ]
    );
    assert_eq!(tasks_of(&dir, &order).len(), 3, "times + 1 attempts");
    // the retries waited: each start at least the backoff after the end before
    let a = &info.attempts;
    for pair in a.windows(2) {
        let (ended, next) = (
            pair[0].finished_at_ms.unwrap(),
            pair[1].started_at_ms.unwrap(),
        );
        assert!(next >= ended + 100, "{pair:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_when_the_active_broker_is_killed_still_runs_once() {
    let mut h = cluster(&["sub-1", "sub-2"]).await;
    let dir = h.scratch();
    deploy(&h.bus, &jobs(&dir, "3s")).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn a standby broker");
    let first = wait_for(TAKEOVER, "a broker is active", || active(&h.bus)).await;
    let order = submit_surely(&h.bus, "flaky", "flaky-1").await;
    // the first attempt failed, the retry waits: kill the broker now
    let waiting = waiting_for_retry(&h.bus, &order, 1).await;
    assert_eq!(waiting.state, OrderState::Accepted);
    let name = if first.starts_with("broker-") {
        "broker"
    } else {
        first.as_str()
    };
    h.cluster
        .signal(name, Signal::SIGKILL)
        .expect("kill the active broker");
    let next = wait_for(TAKEOVER, "another broker is active", || async {
        active(&h.bus).await.filter(|id| *id != first)
    })
    .await;
    eprintln!("killed {first} while the order waited for its retry; {next} took over");
    let info = final_info(&h.bus, &order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:#?}");
    assert_eq!((info.retries, info.attempts.len()), (2, 3), "{info:#?}");
    // exactly once per attempt: three tasks, each run once
    let ran = tasks_of(&dir, &order);
    let expected: Vec<(String, usize)> = (1..=3).map(|n| (format!("{order}-{n}"), 1)).collect();
    assert_eq!(ran, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_retry_wait_ends_the_order_cancelled_and_nothing_runs_again() {
    let h = cluster(&["sub-1"]).await;
    let dir = h.scratch();
    deploy(&h.bus, &jobs(&dir, "2s")).await;
    let order = submit(&h.bus, "broken", &[]).await;
    let waiting = waiting_for_retry(&h.bus, &order, 1).await;
    let due = waiting.retry_at_ms.expect("a due time");
    let cancelled = cancel(&h.bus, &order, false)
        .await
        .expect("cancel answered");
    assert_eq!(
        cancelled.state,
        OrderState::Cancelled,
        "at once: {cancelled:#?}"
    );
    assert_eq!(cancelled.retry_at_ms, None);
    // past the retry's due time, no further task has started
    let past_due = Duration::from_millis(due.saturating_sub(now_ms()) + 1_500);
    holds_throughout(past_due, "no attempt after the cancel", || async {
        tasks_of(&dir, &order).len() == 1
    })
    .await;
    let info = order_info(&h.bus, &order).await.expect("the order");
    assert_eq!(info.state, OrderState::Cancelled);
    assert_eq!(info.attempts.len(), 1);
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}
