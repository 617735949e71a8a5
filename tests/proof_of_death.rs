//! Proof of death before a second copy. A subagent whose NATS connection was
//! dropped is alive: a reset connection, a slow consumer the server dropped,
//! or refused reconnects make its subscriptions vanish ("no responders"),
//! but its task runs on. The promise under attack: a task runs again
//! elsewhere only once its first copy is proven dead, by its reaper's death
//! certificate (kill -9 of the subagent: fast) or by the subagent's own
//! orphan timeout and kill grace (reaper gone too, frozen host: slow, never
//! overlapping).
//!
//! `sub-p` (first in the cluster) reaches NATS through a proxy; `sub-q` is
//! connected directly. The marker job records each run from outside Baton.

mod common;

use std::time::{Duration, Instant};

use baton::protocol::*;
use common::partition::*;
use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// An orphan timeout longer than the connection stays refused: `sub-p`
/// keeps its task through the outage.
const PATIENT: &[(&str, &str)] = &[
    ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "8s"),
    ("BATON_SUBAGENT__KILL_GRACE", "500ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "1500ms"),
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "250ms"),
];
/// How long the proxy refuses `sub-p`: past the subagent timeout (the
/// broker loses it), short of its orphan timeout.
const REFUSED: Duration = Duration::from_secs(3);

/// A subagent timeout and orphan timeout so long that only a death
/// certificate can explain a task running elsewhere within seconds.
const SLOW_FALLBACK: &[(&str, &str)] = &[
    ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "60s"),
    ("BATON_SUBAGENT__KILL_GRACE", "500ms"),
    ("BATON_BROKER__SUBAGENT_TIMEOUT", "30s"),
    ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "250ms"),
];

/// Asserts that no change of `sub-p` names a death certificate.
fn never_certified(p: &Partition, why: &str) {
    let changes = p.events.changes("sub-p");
    assert!(
        changes.iter().all(|c| !c.reason.contains("certified")),
        "{why}: {changes:?}"
    );
}

/// `sub-p`'s process id and its reaper's.
fn sub_p_and_reaper(p: &Partition) -> (u32, i32) {
    let pid = p.h.cluster.pid("sub-p").expect("sub-p runs");
    (pid, reaper_of(pid).expect("sub-p has a reaper"))
}

/// The state `sub-p` reaches in `status` while refused, and the order's
/// attempt then.
async fn wait_out_of_sight(p: &Partition, order: &str) {
    wait_until(
        Duration::from_secs(10),
        "the broker loses sight of sub-p",
        || async {
            p.status_of("sub-p")
                .await
                .is_some_and(|s| matches!(s.state, SubagentState::Suspect | SubagentState::Lost))
        },
    )
    .await;
    let info = p.order(order).await;
    assert_eq!(info.attempt, 1, "not run again on suspicion: {info:?}");
}

/// Refuses `sub-p`'s connection for [`REFUSED`] while its task runs; the
/// order ends on `sub-p`, once, as if nothing had happened.
async fn dropped_connection_changes_nothing(job: &str) {
    let p = Partition::start_with(PATIENT, "").await;
    let (order, first) = p.start_on_p(job, "6").await;

    p.proxy.refuse();
    let refused_at = Instant::now();
    wait_out_of_sight(&p, &order).await;
    // the outage itself lasts REFUSED (a fault's length, not a wait for a condition)
    let left = REFUSED.saturating_sub(refused_at.elapsed());
    tokio::time::sleep(left).await;
    let info = p.order(&order).await;
    assert_eq!(info.attempt, 1, "not run again while refused: {info:?}");
    assert!(!info.state.is_final(), "not ended while refused: {info:?}");
    p.proxy.accept();

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
    assert_eq!(of_kind(&m, "end")[0].pid, first.pid.unwrap() as i32);
    assert!(of_kind(&m, "overlap").is_empty(), "{m:?}");
    assert!(of_kind(&m, "killed").is_empty(), "{m:?}");
    never_certified(&p, "a live subagent was certified dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_does_not_run_a_restartable_task_twice() {
    dropped_connection_changes_nothing("marker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_does_not_fail_a_non_restartable_order() {
    dropped_connection_changes_nothing("marker-once").await;
}

/// Refused past its orphan timeout: `sub-p` kills its own task, and only
/// then does the task run on `sub-q`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_past_the_orphan_timeout_reruns_only_after_the_kill() {
    let p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "30").await;
    let first_pid = first.pid.expect("pid") as i32;

    p.proxy.refuse();
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(20))
        .await;
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    let m = p.wait_mark_count("start", 2, Duration::from_secs(5)).await;
    let killed = of_kind(&m, "killed");
    assert_eq!(killed.len(), 1, "sub-p killed its task: {m:?}");
    assert_eq!(killed[0].pid, first_pid);
    let second_start = of_kind(&m, "start")[1].clone();
    assert!(
        killed[0].at_ms <= second_start.at_ms,
        "the second run started {} ms before the first was killed: {m:?}",
        killed[0].at_ms as i64 - second_start.at_ms as i64
    );
    assert!(of_kind(&m, "overlap").is_empty(), "{m:?}");
    p.proxy.accept();
    wait_until(Duration::from_secs(15), "sub-p is back", || async {
        p.status_of("sub-p")
            .await
            .is_some_and(|s| s.state == SubagentState::Available && s.running == 0)
    })
    .await;
}

/// The server drops `sub-p` as a slow consumer (a small pending limit; the
/// proxy stops reading while the test floods a subject `sub-p` listens
/// to): its subscriptions vanish, its task runs on, and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_dropped_by_the_server_keeps_its_task() {
    let server = "max_pending: 1048576\nwrite_deadline: \"1s\"";
    let mut p = Partition::start_with(PATIENT, server).await;
    let (order, first) = p.start_on_p("marker", "6").await;
    let twin =
        p.h.connect_as(baton::auth::Role::Subagent, Some("sub-p"))
            .await;

    p.proxy.cut();
    // junk on sub-p's own heartbeat subject: sub-p (twin check) and the
    // broker subscribe to it, and both drop what does not decode
    let subject = twin.subjects().subagent_heartbeat("sub-p");
    let junk = bytes::Bytes::from(vec![0xc1u8; 60 * 1024]);
    let log = p.h.dir.path().join("nats.log");
    let flooded = wait_for(
        Duration::from_secs(20),
        "the server drops sub-p as a slow consumer",
        || {
            let twin = twin.clone();
            let subject = subject.clone();
            let junk = junk.clone();
            let log = log.clone();
            async move {
                for _ in 0..32 {
                    let _ = twin.publish_raw(subject.clone(), junk.clone()).await;
                }
                let _ = twin.flush().await;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("Slow Consumer").then_some(())
            }
        },
    );
    flooded.await;
    wait_out_of_sight(&p, &order).await;
    p.proxy.heal();

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "ran once: {fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-p"), "{fin:?}");
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "one start: {m:?}");
    assert_eq!(
        of_kind(&m, "end")[0].pid,
        first.pid.unwrap() as i32,
        "{m:?}"
    );
}

/// kill -9 of `sub-p`: its reaper kills the task's whole group and certifies
/// the death; the task runs on `sub-q` at once, long before the fallback
/// (a 30 s subagent timeout, a 60 s orphan timeout) would allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_is_certified_by_the_reaper_and_reruns_at_once() {
    let mut p = Partition::start_with(SLOW_FALLBACK, "").await;
    let (order, first) = p.start_on_p("marker", "30").await;
    let first_pid = first.pid.expect("pid") as i32;
    sub_p_and_reaper(&p);

    p.h.cluster
        .signal("sub-p", Signal::SIGKILL)
        .expect("kill -9 sub-p");
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(10))
        .await;
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    assert!(
        group_members(first_pid).is_empty(),
        "the first run's process group is gone"
    );
    let changes = p.events.changes("sub-p");
    assert!(
        changes
            .iter()
            .any(|c| c.state == SubagentState::Lost && c.reason.contains("certified by its reaper")),
        "{changes:?}"
    );
    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(40))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "end").len(), 1, "{m:?}");
    assert!(of_kind(&m, "overlap").is_empty(), "{m:?}");
}

/// The subagent and its reaper killed together: nobody certifies, so the
/// task runs again only when sub-p's orphan timeout and kill grace have
/// passed since it was last heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_subagent_and_reaper_waits_for_the_orphan_timeout() {
    let mut p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "30").await;
    let first_pid = first.pid.expect("pid") as i32;
    let (_, reaper) = sub_p_and_reaper(&p);

    kill(Pid::from_raw(reaper), Signal::SIGKILL).expect("kill -9 the reaper");
    p.h.cluster
        .signal("sub-p", Signal::SIGKILL)
        .expect("kill -9 sub-p");
    let killed_at = baton::time::now_ms();
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(20))
        .await;
    // the task lives on: no one is left to kill it
    let _ = killpg(Pid::from_raw(first_pid), Signal::SIGKILL);
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    let waited = second.at_ms.saturating_sub(killed_at);
    let floor = (ORPHAN_TIMEOUT + KILL_GRACE).as_millis() as u64 - 2 * HEARTBEAT.as_millis() as u64;
    assert!(
        waited >= floor,
        "ran again {waited} ms after the kill, before the orphan timeout and grace could pass"
    );
    never_certified(&p, "nobody could certify");
}

/// A frozen host: sub-p, its reaper and its task stopped (SIGSTOP). No
/// certificate; the task runs on sub-q only after the orphan timeout; when
/// the host thaws, sub-p kills its stale copy before it can finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_host_reruns_after_the_orphan_timeout_and_its_copy_dies_on_thaw() {
    let mut p = Partition::start().await;
    let (order, first) = p.start_on_p("marker", "30").await;
    let first_pid = first.pid.expect("pid") as i32;
    let (_, reaper) = sub_p_and_reaper(&p);

    let group = Pid::from_raw(first_pid);
    killpg(group, Signal::SIGSTOP).expect("freeze the task");
    kill(Pid::from_raw(reaper), Signal::SIGSTOP).expect("freeze the reaper");
    p.h.cluster
        .signal("sub-p", Signal::SIGSTOP)
        .expect("freeze sub-p");
    let frozen_at = baton::time::now_ms();
    let second = p
        .events
        .wait_started(&order, 2, Duration::from_secs(20))
        .await;
    assert_eq!(second.subagent_id, "sub-q", "{second:?}");
    let floor = (ORPHAN_TIMEOUT + KILL_GRACE).as_millis() as u64 - 2 * HEARTBEAT.as_millis() as u64;
    assert!(
        second.at_ms.saturating_sub(frozen_at) >= floor,
        "ran again before the orphan timeout and grace could pass"
    );

    // the host thaws, all at once: sub-p notices how long it was away and
    // kills its stale copy at once (no SIGTERM grace: it may run elsewhere)
    killpg(group, Signal::SIGCONT).expect("thaw the task");
    p.h.cluster
        .signal("sub-p", Signal::SIGCONT)
        .expect("thaw sub-p");
    kill(Pid::from_raw(reaper), Signal::SIGCONT).expect("thaw the reaper");
    wait_until(Duration::from_secs(10), "the stale copy is killed", || {
        std::future::ready(group_members(first_pid).is_empty())
    })
    .await;
    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(40))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 2, "{fin:?}");
    let m = marks(&p.marker_file());
    let ends = of_kind(&m, "end");
    assert_eq!(ends.len(), 1, "{m:?}");
    assert_ne!(
        ends[0].pid, first_pid,
        "the stale copy never finished: {m:?}"
    );
    never_certified(&p, "a frozen subagent was certified dead");
}

/// A result that would have died with its subagent: the task ends while
/// `sub-p` cannot reach NATS, then `sub-p` is killed before it could deliver
/// the result. Its reaper holds the result and hands it over once NATS is
/// reachable: the non-restartable order succeeds instead of failing as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_outlives_its_subagent_through_the_reaper() {
    let mut p = Partition::start_with(PATIENT, "").await;
    let (order, first) = p.start_on_p("marker-once", "1").await;

    p.proxy.refuse();
    let end = p.wait_mark("end", Duration::from_secs(10)).await;
    assert_eq!(end.pid, first.pid.unwrap() as i32);
    // the subagent has the result but no connection to deliver it on
    let log = p.h.dir.path().join("logs").join("sub-p.log");
    wait_until(Duration::from_secs(10), "sub-p holds the result", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains("task ended"))
    })
    .await;
    let info = p.order(&order).await;
    assert!(!info.state.is_final(), "not delivered yet: {info:?}");
    let (pid, _) = sub_p_and_reaper(&p);
    p.h.cluster
        .signal("sub-p", Signal::SIGKILL)
        .expect("kill -9 sub-p");
    wait_until(Duration::from_secs(10), "sub-p is gone", || {
        std::future::ready(process_gone(pid as i32))
    })
    .await;
    p.proxy.accept();

    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(20))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "{fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-p"), "{fin:?}");
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "ran once: {m:?}");
}

/// A second process started under `sub-p`'s id while `sub-p` runs a task
/// (a mistake, or an orchestrator restarting a subagent it thinks is gone):
/// the broker sees "another process" and puts the task in doubt, but the
/// first process still runs it, says so in its next heartbeat, and keeps it.
/// The newer process stops when it hears the older one. The task runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_the_id_does_not_rerun_the_first_ones_task() {
    let mut p = Partition::start_with(PATIENT, "").await;
    let (order, first) = p.start_on_p("marker", "14").await;
    p.h.cluster
        .spawn("twin", &["subagent", "--id", "sub-p"])
        .expect("spawn a second sub-p");
    let cluster = &mut p.h.cluster;
    let exited = tokio::task::block_in_place(|| cluster.wait_exit("twin", Duration::from_secs(15)));
    assert!(
        matches!(exited, Ok(Some(code)) if code != 0),
        "the newer process stops: {exited:?}"
    );
    let fin = p
        .events
        .wait_finished(&order, Duration::from_secs(30))
        .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "ran once: {fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-p"), "{fin:?}");
    let m = marks(&p.marker_file());
    assert_eq!(of_kind(&m, "start").len(), 1, "one start: {m:?}");
    assert_eq!(
        of_kind(&m, "end")[0].pid,
        first.pid.unwrap() as i32,
        "{m:?}"
    );
}

/// A task the subagent was spawning when it died, before it could name the
/// task's process group to its reaper: the reaper, told of the task just
/// before the spawn, finds it by the marks in its environment and kills its
/// whole group. The subagent is played by this test (its end of the pipe
/// closed = its death); the reaper is the real `baton __reaper`, whose
/// broker is unreachable, so it certifies nothing.
#[test]
fn a_task_whose_group_the_reaper_never_heard_dies_with_its_subagent() {
    use baton::subagent::process::{INSTANCE_ENV, TASK_ENV};
    use baton::subagent::reaper::{Hello, Reaper};
    use std::os::unix::process::CommandExt;

    let instance = format!("test-instance-{}", std::process::id());
    let mut config = baton::config::Config::default();
    config.nats.url = "nats://127.0.0.1:1".into();
    config.subagent.orphan_timeout = Duration::from_millis(500);
    config.subagent.kill_grace = Duration::from_millis(100);
    let hello = Hello {
        subagent_id: "sub-window".into(),
        instance_id: instance.clone(),
        config,
    };
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_baton"));
    let mut reaper = Reaper::start(exe, &hello).expect("start the reaper");
    let spawn = |task: &str, instance: &str| {
        std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .env(TASK_ENV, task)
            .env(INSTANCE_ENV, instance)
            .process_group(0)
            .spawn()
            .expect("spawn")
    };
    reaper.intend("o-1");
    let mut told = spawn("o-1", &instance);
    // another subagent process's task of the same id, and a task whose
    // start was abandoned: neither is this reaper's to kill
    reaper.intend("o-2");
    reaper.abandon("o-2");
    let mut other = spawn("o-1", "another-instance");
    let mut abandoned = spawn("o-2", &instance);
    let groups = [told.id(), other.id(), abandoned.id()].map(|p| p as i32);
    let within = |limit: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        done()
    };
    let started = within(Duration::from_secs(10), &|| {
        groups.iter().all(|g| group_members(*g).len() >= 2)
    });
    assert!(started, "each `sh` started its `sleep`");

    drop(reaper);
    assert!(
        within(Duration::from_secs(10), &|| group_members(groups[0])
            .is_empty()),
        "the task's whole group died with its subagent"
    );
    let _ = told.wait();
    assert!(
        !group_members(groups[1]).is_empty(),
        "another process's task lives"
    );
    assert!(
        !group_members(groups[2]).is_empty(),
        "an abandoned start's lives"
    );
    for (group, child) in groups[1..].iter().zip([&mut other, &mut abandoned]) {
        let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
        let _ = child.wait();
    }
}
