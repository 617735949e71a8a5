//! Attacks on the subagent's heartbeat pace (`subagent/pace.rs`): idle
//! subagents heartbeat slower and say so, busy ones at the busy pace; many
//! idle subagents left alone are never suspected nor lost; and an idle one
//! killed with SIGKILL just after taking a task is replaced at once (its
//! reaper's certificate does not wait for heartbeats).
//!
//! An idle subagent listens to the broker's heartbeats only until it hears
//! the active broker, once per tick: it still learns a new broker's epoch
//! from them alone (no command teaches it), and one given a task listens
//! again at once, so it still kills the task at its orphan timeout when
//! the broker is gone.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::BusError;
use baton::protocol::*;
use common::*;
use futures::StreamExt as _;
use nix::sys::signal::Signal;

const SLEEPER: &str = "[[job]]\nname = \"sleeper\"\nprogram = \"sleep\"\nargs = [\"60\"]\n";

/// The next heartbeat of `id` that satisfies `wanted`.
async fn heartbeat_where(
    bus: &baton::bus::Bus,
    id: &str,
    what: &str,
    wanted: impl Fn(&SubagentHeartbeat) -> bool,
) -> SubagentHeartbeat {
    let mut heard = bus
        .listen::<SubagentHeartbeat>(bus.subjects().subagent_heartbeat(id))
        .await
        .expect("listen to heartbeats");
    let find = async {
        while let Some(hb) = heard.next().await {
            if wanted(&hb.body) {
                return hb.body;
            }
        }
        panic!("heartbeats ended");
    };
    within(Duration::from_secs(15), what, find).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_heartbeats_announce_the_idle_period_and_busy_ones_the_busy_period() {
    let h = cluster(&["sub-a"]).await;
    let idle = heartbeat_where(&h.bus, "sub-a", "an idle heartbeat", |hb| {
        hb.running.is_empty()
    })
    .await;
    assert_eq!(idle.heartbeat_interval_ms, 750, "{idle:?}");
    deploy(&h.bus, SLEEPER).await;
    let order = submit(&h.bus, "sleeper", &[]).await;
    let busy = heartbeat_where(&h.bus, "sub-a", "a heartbeat with the task", |hb| {
        !hb.running.is_empty()
    })
    .await;
    assert_eq!(busy.heartbeat_interval_ms, 250, "{busy:?}");
    cancel(&h.bus, &order, true).await.expect("cancelled");
    let idle = heartbeat_where(&h.bus, "sub-a", "idle again", |hb| hb.running.is_empty()).await;
    assert_eq!(idle.heartbeat_interval_ms, 750, "{idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_subagents_are_never_suspected_nor_lost() {
    let ids: Vec<String> = (1..=24).map(|i| format!("sub-{i}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let h = cluster(&names).await;
    let mut changes = h
        .bus
        .listen::<SubagentChanged>(h.bus.subjects().subagent_changes())
        .await
        .expect("listen to changes");
    // many idle periods, several subagent timeouts
    let watch = tokio::time::sleep(Duration::from_secs(8));
    tokio::pin!(watch);
    loop {
        tokio::select! {
            _ = &mut watch => break,
            change = changes.next() => {
                let change = change.expect("changes go on").body;
                assert!(
                    !matches!(change.state, SubagentState::Suspect | SubagentState::Lost),
                    "an idle live subagent was suspected or lost: {change:?}"
                );
            }
        }
    }
    let status: StatusReply = h
        .bus
        .request(h.bus.subjects().status(), &StatusRequest {}, REQUEST)
        .await
        .expect("status");
    let available = status
        .subagents
        .iter()
        .filter(|s| s.state == SubagentState::Available)
        .count();
    assert_eq!(available, ids.len(), "{:?}", status.subagents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subagent_killed_as_it_takes_a_task_is_replaced_at_once() {
    // only a death certificate can run the task elsewhere within seconds
    let slow = [
        ("BATON_BROKER__SUBAGENT_TIMEOUT", "30s"),
        ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "60s"),
    ];
    let mut h = cluster_with_env(&["sub-a", "sub-b"], &slow).await;
    deploy(&h.bus, SLEEPER).await;
    let s = h.bus.subjects().clone();
    let mut started = h
        .bus
        .listen::<TaskStarted>(s.task_events("sleeper", "*", EventKind::Started))
        .await
        .expect("listen to starts");
    let order = submit(&h.bus, "sleeper", &[]).await;
    let first = within(REQUEST * 5, "the task starts", started.next())
        .await
        .expect("a start")
        .body;
    // killed at once: its last heartbeat said idle, and the next is not due
    h.cluster
        .signal(&first.subagent_id, Signal::SIGKILL)
        .expect("kill");
    let again = within(
        Duration::from_secs(10),
        "the task starts elsewhere",
        async {
            loop {
                let next = started.next().await.expect("a start").body;
                if next.order_id == order {
                    return next;
                }
            }
        },
    )
    .await;
    assert_ne!(again.subagent_id, first.subagent_id, "{again:?}");
    assert_eq!(again.attempt, 2, "{again:?}");
    cancel(&h.bus, &order, true).await.expect("cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subagent_learns_a_new_broker_epoch_from_its_heartbeats() {
    let mut h = cluster(&["sub-a"]).await;
    // the lease handed over: b2 is active with a newer epoch, and sends
    // sub-a no command (no orders): only its heartbeats can tell it
    hand_the_lease_to_b2(&mut h);
    let mut heartbeats = within(
        REQUEST,
        "subscribe",
        h.bus
            .listen::<BrokerHeartbeat>(h.bus.subjects().broker_heartbeat()),
    )
    .await
    .expect("subscribe to broker heartbeats");
    let newer = async {
        while let Some(hb) = heartbeats.next().await {
            if hb.body.role == BrokerRole::Active && hb.body.broker_id == "b2" {
                return hb.body.epoch;
            }
        }
        panic!("heartbeat subscription ended");
    };
    let epoch = within(Duration::from_secs(15), "b2 active", newer).await;
    assert!(epoch > 1, "{epoch}");
    // a kill of no task, in the deposed epoch, changes nothing either way:
    // answered (not found) until sub-a knows b2's epoch, refused after
    let broker = h.connect_as(Role::Broker, None).await;
    let kill = KillTask {
        task_id: "none".into(),
        reason: "from the deposed broker".into(),
        epoch: epoch - 1,
    };
    let subject = h.bus.subjects().kill("sub-a");
    wait_until(
        Duration::from_secs(10),
        "idle sub-a refuses the deposed broker's epoch",
        || {
            let (broker, subject, kill) = (broker.clone(), subject.clone(), kill.clone());
            async move {
                let asked = broker.request::<_, KillAccepted>(subject, &kill, REQUEST);
                match tokio::time::timeout(REQUEST * 2, asked).await {
                    Ok(Err(BusError::Remote(e))) => e.error.message.contains("stale broker epoch"),
                    Ok(Ok(accepted)) => {
                        assert!(!accepted.found, "{accepted:?}");
                        false
                    }
                    _ => false,
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subagent_given_a_task_kills_it_at_its_orphan_timeout_when_the_broker_is_gone() {
    let short = [
        ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "3s"),
        ("BATON_SUBAGENT__KILL_GRACE", "500ms"),
    ];
    let mut h = cluster_with_env(&["sub-a"], &short).await;
    // idle for a few of its ticks first: it listens to the broker only now and then
    let idle = heartbeat_where(&h.bus, "sub-a", "an idle heartbeat", |hb| {
        hb.running.is_empty()
    })
    .await;
    assert_eq!(idle.heartbeat_interval_ms, 750, "{idle:?}");
    deploy(&h.bus, SLEEPER).await;
    let s = h.bus.subjects().clone();
    let mut started = h
        .bus
        .listen::<TaskStarted>(s.task_events("sleeper", "*", EventKind::Started))
        .await
        .expect("listen to starts");
    submit(&h.bus, "sleeper", &[]).await;
    let task = within(REQUEST * 5, "the task starts", started.next())
        .await
        .expect("a start")
        .body;
    let pid = task.pid.expect("the task's pid") as i32;
    // no broker any more, and none takes over
    h.cluster
        .signal("broker", Signal::SIGKILL)
        .expect("kill the broker");
    // sleep 60 would run on: only the orphan timeout (3 s) ends it
    wait_until(
        Duration::from_secs(20),
        "sub-a kills its orphaned task",
        || std::future::ready(process_gone(pid)),
    )
    .await;
}
