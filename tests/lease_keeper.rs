//! The brokers' lease keeper runs on a thread (and a NATS connection) of
//! its own: a broker whose own thread is busy keeps its lease, and one
//! whose thread is wedged gives it up.
//!
//! The broker under attack runs in this test's process (`run_until_signal`,
//! as `baton broker` runs it), so the test can block its actix thread, the
//! one its Broker runs on, while its lease keeper's thread runs on; the
//! other broker and the subagent are real processes.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::Bus;
use baton::config::Config;
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// Bound on a takeover: lease expiry, recovery, subagents heard again.
const TAKEOVER: Duration = Duration::from_secs(30);
/// The in-process broker's `broker.stall_timeout`.
const STALL: &str = "6s";

/// Starts a broker named `id` in this process on a thread of its own (an
/// actix System, as `baton broker` runs); returns that thread's arbiter,
/// to block it with.
fn broker_in_process(h: &mut Harness, id: &str) -> actix::ArbiterHandle {
    let seed = h.seed(Role::Broker, None);
    let overrides = [
        ("nats.url", h.nats_url()),
        ("nats.nkey", seed.display().to_string()),
        ("broker.id", id.to_string()),
        ("broker.stall_timeout", STALL.to_string()),
    ];
    let config = Config::load(None, &overrides).expect("config");
    // its log goes to this test's output
    baton::daemon::init_logging("info,async_nats=warn");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            tx.send(actix::Arbiter::current()).expect("arbiter");
            let bus = baton::daemon::connect(&config, "baton-broker")
                .await
                .expect("connect");
            let _ = baton::broker::run_until_signal(config, bus).await;
        });
    });
    rx.recv_timeout(REQUEST).expect("broker thread started")
}

/// Blocks the broker's actix thread for `length` (the fault: the thread
/// does nothing else meanwhile, like one decoding a huge takeover).
fn block(arbiter: &actix::ArbiterHandle, length: Duration) {
    arbiter.spawn(async move { std::thread::sleep(length) });
}

/// The id and epoch of the broker answering status now, if any.
async fn active(bus: &Bus) -> Option<(String, u64)> {
    let ask = StatusRequest::default();
    let reply = bus
        .request::<_, StatusReply>(bus.subjects().status(), &ask, Duration::from_secs(1))
        .await
        .ok()?;
    let epoch = reply
        .brokers
        .iter()
        .find(|b| b.id == reply.broker_id)?
        .epoch;
    Some((reply.broker_id, epoch))
}

/// A broker whose actix thread is blocked for more than two leases keeps
/// its lease (its keeper renews from its own thread), so the standby never
/// becomes active; blocked past `broker.stall_timeout` (wedged), it gives
/// the lease up, the standby takes over, and the wedged one comes back a
/// standby acting on nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_broker_keeps_its_lease_and_a_wedged_one_gives_it_up() {
    let mut h = cluster_with_env(&["sub-1"], &[]).await;
    let arbiter = broker_in_process(&mut h, "inproc");
    // make the in-process broker the active one
    wait_until(TAKEOVER, "the process broker is active", || async {
        active(&h.bus).await.is_some_and(|(id, _)| id != "inproc")
    })
    .await;
    wait_until(TAKEOVER, "inproc is heard as a standby", || async {
        let ask = StatusRequest::default();
        let s = h
            .bus
            .request::<_, StatusReply>(h.bus.subjects().status(), &ask, REQUEST);
        s.await
            .is_ok_and(|s| s.brokers.iter().any(|b| b.id == "inproc"))
    })
    .await;
    h.cluster
        .signal("broker", Signal::SIGTERM)
        .expect("stop the process broker");
    let (_, epoch) = wait_for(TAKEOVER, "inproc is active", || async {
        active(&h.bus).await.filter(|(id, _)| id == "inproc")
    })
    .await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn b2");
    wait_until(TAKEOVER, "b2 is heard as a standby", || async {
        let ask = StatusRequest::default();
        let s = h
            .bus
            .request::<_, StatusReply>(h.bus.subjects().status(), &ask, REQUEST);
        s.await.is_ok_and(|s| {
            (s.brokers.iter()).any(|b| b.id == "b2" && b.role == BrokerRole::Standby)
        })
    })
    .await;
    let changes = record_broker_changes(&h.bus).await;

    // busy for more than two leases (2 s each), less than the stall timeout
    block(&arbiter, Duration::from_secs(5));
    wait_until(TAKEOVER, "inproc is busy", || async {
        active(&h.bus).await.is_none()
    })
    .await;
    wait_until(TAKEOVER, "inproc answers again", || async {
        active(&h.bus).await.is_some()
    })
    .await;
    assert_eq!(
        active(&h.bus).await,
        Some(("inproc".to_string(), epoch)),
        "the busy broker kept its lease, at the same epoch"
    );
    let seen = changes.lock().unwrap().clone();
    assert!(seen.is_empty(), "no leadership change: {seen:?}");

    // wedged past the stall timeout: the lease is given up
    block(&arbiter, Duration::from_secs(20));
    let (_, next) = wait_for(TAKEOVER, "b2 takes over", || async {
        active(&h.bus).await.filter(|(id, _)| id == "b2")
    })
    .await;
    assert!(next > epoch);
    let seen = changes.lock().unwrap().clone();
    let down = (seen.iter())
        .position(|c| c.broker_id == "inproc" && c.role == BrokerRole::Standby)
        .unwrap_or_else(|| panic!("inproc said it stepped down: {seen:?}"));
    assert!(seen[down].reason.contains("stalled"), "{seen:?}");
    let up = (seen.iter())
        .position(|c| c.broker_id == "b2" && c.role == BrokerRole::Active)
        .unwrap_or_else(|| panic!("b2 announced itself: {seen:?}"));
    assert!(down < up, "the wedged broker stepped down first: {seen:?}");
    // thawed, it is a standby and b2 goes on
    wait_until(TAKEOVER, "the thawed broker is a standby", || async {
        let ask = StatusRequest::default();
        let s = h
            .bus
            .request::<_, StatusReply>(h.bus.subjects().status(), &ask, REQUEST);
        s.await.is_ok_and(|s| {
            s.broker_id == "b2"
                && (s.brokers.iter()).any(|b| b.id == "inproc" && b.role == BrokerRole::Standby)
        })
    })
    .await;
    let now = wait_for(TAKEOVER, "a broker answers", || active(&h.bus)).await;
    assert_eq!(now, ("b2".to_string(), next), "b2 goes on, at its epoch");
}
