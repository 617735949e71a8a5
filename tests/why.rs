//! Why an order waits, why it failed, who started it, and who answers
//! `baton status` while no broker is active (issue 18, items 5 and 6):
//! real nats-server, brokers, subagents and an agent; the CLI as a user
//! runs it.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::{decode, Encoding};
use baton::protocol::*;
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

/// Bound on one CLI command.
const CLI: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_no_subagent_matches_says_why_once_and_submit_wait_prints_it() {
    let h = cluster(&["sub-1"]).await;
    deploy(
        &h.bus,
        r#"
[[cluster]]
name = "zone-b"
mode = "round-robin"
members = [{ labels = { zone = "b" } }]

[[job]]
name = "zoned"
program = "true"
cluster = "zone-b"
"#,
    )
    .await;
    let s = h.bus.subjects().clone();
    let mut events = within(
        REQUEST,
        "subscribe",
        h.bus.listen_raw(s.job_events("zoned")),
    )
    .await
    .expect("subscribe");
    let out = run_baton(&h, &["submit", "zoned", "--wait", "--timeout", "3s"], CLI).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "it never finishes: {stderr}");
    let said = "order waiting: no known subagent matches cluster 'zone-b'";
    assert_eq!(stderr.matches(said).count(), 1, "said once: {stderr}");
    // the events: one `changed` with the reason, though the broker
    // dispatched on every heartbeat for three seconds
    let mut waiting = Vec::new();
    while let Ok(Some((subject, payload))) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if let Some((_, _, EventKind::Changed)) = s.parse_event(&subject) {
            let e: OrderChanged = decode(Encoding::MessagePack, &payload).expect("decodes");
            waiting.push(e);
        }
    }
    match &waiting[..] {
        [e] => {
            let why = e.waiting.as_deref().unwrap_or_default();
            assert!(
                why.starts_with("waiting: no known subagent matches cluster 'zone-b'"),
                "{e:?}"
            );
            assert_eq!(
                (e.workflow.as_str(), e.state),
                ("zoned", OrderState::Accepted)
            );
        }
        other => panic!("one waiting event expected: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_shows_its_reason_its_stderr_tail_and_its_client() {
    let h = cluster(&["sub-1"]).await;
    deploy(
        &h.bus,
        r#"
[[job]]
name = "broken"
program = "sh"
args = ["-c", 'for i in $(seq 1 15); do echo "problem $i" >&2; done; echo fine; exit 3']
"#,
    )
    .await;
    let order_id = submit(&h.bus, "broken", &[]).await;
    let info = wait_for(Duration::from_secs(20), "the order fails", || async {
        order_info(&h.bus, &order_id)
            .await
            .filter(|o| o.state.is_final())
    })
    .await;
    assert_eq!((info.state, info.exit_code), (OrderState::Failed, Some(3)));
    let out = run_baton(&h, &["order", "show", &order_id], CLI).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("reason    its task exited with code 3\n"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "stderr (last 10 lines, 5 earlier: `baton order logs {order_id}`):\n"
        )),
        "{shown}"
    );
    assert!(shown.contains("  err| problem 6\n") && shown.contains("  err| problem 15\n"));
    assert!(
        !shown.contains("problem 5\n") && !shown.contains("fine"),
        "{shown}"
    );
    // the harness's client (admin credentials) signs its submits
    assert!(
        shown.contains("origin    a client signed by admin (verified), no request id\n"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_order_shows_its_trigger_and_slot() {
    let mut h = cluster(&["sub-1"]).await;
    deploy(
        &h.bus,
        r#"
[[job]]
name = "tick"
program = "true"
[[job.triggers]]
kind = "interval"
every = "1s"
"#,
    )
    .await;
    h.cluster
        .spawn("a1", &["agent", "--id", "a1"])
        .expect("spawn agent");
    let ask = ListOrders {
        job: Some("tick".into()),
        ..ListOrders::default()
    };
    let fired = wait_for(Duration::from_secs(20), "a slot fires", || async {
        let list: Result<OrderList, _> = h
            .bus
            .request(h.bus.subjects().order_list(), &ask, REQUEST)
            .await;
        list.ok()?.orders.into_iter().find(|o| o.slot_ms.is_some())
    })
    .await;
    let slot = fired.fired_by.as_ref().expect("the trigger that fired it");
    assert_eq!(slot.number, 1);
    let out = run_baton(&h, &["order", "show", &fired.order_id], CLI).await;
    let shown = text(&out.stdout);
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(fired.slot_ms.unwrap() as i64)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC (+00:00)")
        .to_string();
    assert!(
        shown.contains(&format!(
            "origin    trigger 1 of tick: every 1s; slot {at}\n"
        )),
        "{shown}"
    );
    let out = run_baton(&h, &["order", "list", "--job", "tick"], CLI).await;
    let listed = text(&out.stdout);
    assert!(
        listed.lines().next().is_some_and(|l| l.contains(" SLOT ")),
        "{listed}"
    );
    assert!(listed.contains(&at), "{listed}");
}

fn spawn_broker(h: &mut Harness, id: &str) {
    h.cluster
        .spawn(id, &["broker", "--id", id])
        .expect("spawn broker");
}

/// `baton status`'s output.
async fn status(h: &Harness) -> String {
    let out = run_baton(h, &["status"], CLI).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The id of the broker answering `status` now, if any.
async fn active(h: &Harness) -> Option<String> {
    let ask = StatusRequest::default();
    let reply = h
        .bus
        .request::<_, StatusReply>(h.bus.subjects().status(), &ask, Duration::from_secs(1))
        .await;
    reply.ok().map(|s| s.broker_id)
}

/// Standbys answer `status` (their view of the lease) while the active
/// broker is frozen, and say since when none is active once it is dead;
/// the active broker's full answer wins whenever there is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_answer_status_while_no_broker_is_active() {
    // a longer lease: the frozen broker's stays a few seconds
    let env = [("BATON_BROKER__LEASE", "4s")];
    let mut h = cluster_with_env(&["sub-1"], &env).await;
    let first = wait_for(Duration::from_secs(20), "a broker is active", || active(&h)).await;
    spawn_broker(&mut h, "b2");
    wait_until(Duration::from_secs(20), "b2 is a standby", || async {
        let views = broker_views(&h.bus).await;
        views
            .iter()
            .any(|v| v.broker_id == "b2" && v.role == BrokerRole::Standby)
    })
    .await;
    let shown = status(&h).await;
    assert!(
        shown.starts_with(&format!("broker {first} (protocol v")) && shown.contains("subagents ("),
        "the active's answer: {shown}"
    );

    h.cluster
        .signal("broker", Signal::SIGSTOP)
        .expect("freeze the active broker");
    let shown = status(&h).await;
    assert!(shown.starts_with("no active broker answered"), "{shown}");
    assert!(
        shown.contains(&format!(
            "  b2 standby, precedence 100: active broker per the lease: {first} (epoch "
        )),
        "{shown}"
    );

    // dead now; a better standby that never campaigns (heartbeats only)
    // holds b2 back for a whole lease once the lease is free
    h.cluster
        .signal("broker", Signal::SIGKILL)
        .expect("kill the frozen broker");
    let ghost = h.connect_as(Role::Broker, None).await;
    let beating = tokio::spawn(async move {
        loop {
            let hb = BrokerHeartbeat {
                broker_id: "ghost".into(),
                sent_at_ms: baton::time::now_ms(),
                protocol: PROTOCOL_VERSION,
                epoch: 0,
                role: BrokerRole::Standby,
                precedence: 1,
                lease_age_ms: None,
                instance: "ghost-process".into(),
            };
            ghost.post_signed(ghost.subjects().broker_heartbeat(), &hb);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let shown = wait_for(
        Duration::from_secs(20),
        "status says no broker is active",
        || async {
            let shown = status(&h).await;
            shown
                .contains("b2 standby, precedence 100: NO broker is active, since ")
                .then_some(shown)
        },
    )
    .await;
    assert!(shown.starts_with("no active broker answered"), "{shown}");
    beating.abort();
    // b2 takes over, and its full answer is what status shows
    wait_until(Duration::from_secs(20), "b2 answers status", || async {
        status(&h).await.starts_with("broker b2 (protocol v")
    })
    .await;
}
