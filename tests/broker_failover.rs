//! Broker high availability: several brokers, one active (a lease in
//! JetStream KV), the others standby. Killing, stopping or cutting off the
//! active one hands over to a standby that rebuilds the orders from
//! JetStream and carries on: nothing is lost and nothing runs twice.
//!
//! Jobs append their order id to a marker file when they start, so the test
//! counts executions per order from outside Baton.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::auth::Role;
use baton::bus::{decode, Bus, BusError, Encoding};
use baton::protocol::*;
use bytes::Bytes;
use common::proxy::Proxy;
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

const ENV: &[(&str, &str)] = &[("BATON_SUBAGENT__CAPACITY", "8")];

/// Bound on a takeover: lease expiry, recovery, subagents heard again.
const TAKEOVER: Duration = Duration::from_secs(20);

fn jobs(marker: &Path, gate: &Path) -> String {
    format!(
        r#"
[[job]]
name = "work"
program = "sh"
args = ["-c", 'echo "$BATON_ORDER_ID" >> "{marker}"; sleep 0.3']

[[job]]
name = "gate"
program = "sh"
args = ["-c", 'echo "$BATON_ORDER_ID" >> "{marker}"; while [ ! -f "{gate}" ]; do sleep 0.05; done']
"#,
        marker = marker.display(),
        gate = gate.display(),
    )
}

/// Executions per order id recorded in `marker`.
fn executions(marker: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(marker).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for id in text.lines().filter(|l| !l.is_empty()) {
        *runs.entry(id.to_string()).or_insert(0) += 1;
    }
    runs
}

/// The id of the broker answering requests now, if any.
async fn active(bus: &Bus) -> Option<String> {
    let ask = StatusRequest::default();
    let reply = bus
        .request::<_, StatusReply>(bus.subjects().status(), &ask, Duration::from_secs(1))
        .await;
    reply.ok().map(|s| s.broker_id)
}

/// Waits until a broker other than `not` answers; returns its id.
async fn active_other_than(bus: &Bus, not: Option<&str>) -> String {
    wait_for(TAKEOVER, "a broker is active", || async {
        active(bus).await.filter(|id| Some(id.as_str()) != not)
    })
    .await
}

/// Submits with `request_id`, retrying through a fail-over (no responders,
/// timeouts, unavailable) with the same id, as a careful client does.
async fn submit_surely(bus: &Bus, job: &str, request_id: &str) -> SubmitReply {
    let order = SubmitOrder {
        job: job.into(),
        params: BTreeMap::new(),
        request_id: Some(request_id.into()),
        slot_ms: None,
    };
    let subject = bus.subjects().submit();
    wait_for(TAKEOVER * 2, "a submit is accepted", || async {
        match bus
            .request::<_, SubmitReply>(subject.clone(), &order, Duration::from_secs(2))
            .await
        {
            Ok(reply) => Some(reply),
            Err(BusError::Remote(e)) if e.error.code == ErrorCode::UnknownJob => {
                panic!("submit refused: {e}")
            }
            Err(_) => None,
        }
    })
    .await
}

/// Waits until `order_id` is final (through fail-overs) and returns it.
async fn final_info(bus: &Bus, order_id: &str) -> OrderInfo {
    wait_for(Duration::from_secs(60), "the order is final", || async {
        order_info(bus, order_id)
            .await
            .filter(|o| o.state.is_final())
    })
    .await
}

/// The process name of a broker id: brokers we start are named after
/// their id; the harness's own one is "broker".
fn process_of(id: &str) -> &str {
    if id.starts_with("broker-") {
        "broker"
    } else {
        id
    }
}

fn spawn_broker(h: &mut Harness, id: &str) {
    h.cluster
        .spawn(id, &["broker", "--id", id])
        .expect("spawn broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_of_the_active_broker_with_500_orders_in_flight_lose_and_repeat_nothing() {
    let mut h = cluster_with_env(&["sub-1", "sub-2", "sub-3"], ENV).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    spawn_broker(&mut h, "b2");

    // A steady stream of 500 orders, each retried with its request id.
    let bus = h.bus.clone();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let sink = accepted.clone();
    let feeder = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(40));
        for i in 0..500 {
            pace.tick().await;
            let reply = submit_surely(&bus, "work", &format!("order-{i}")).await;
            sink.lock().unwrap().push(reply.order_id);
        }
    });

    let mut killed = Vec::new();
    for round in 0..5 {
        wait_until(TAKEOVER, "orders flow", || {
            let n = accepted.lock().unwrap().len();
            async move { n >= 60 * round + 30 }
        })
        .await;
        let id = active_other_than(&h.bus, None).await;
        h.cluster
            .signal(process_of(&id), Signal::SIGKILL)
            .expect("kill the active broker");
        let next = active_other_than(&h.bus, Some(&id)).await;
        eprintln!("round {round}: killed {id}, {next} took over");
        // The killed one comes back as a standby.
        let name = if id.starts_with("broker-") {
            "b1".to_string()
        } else {
            id.clone()
        };
        spawn_broker(&mut h, &name);
        killed.push(id);
    }
    within(Duration::from_secs(120), "all 500 submitted", feeder)
        .await
        .expect("feeder");
    let ids = accepted.lock().unwrap().clone();
    assert_eq!(ids.len(), 500);
    for id in &ids {
        let info = final_info(&h.bus, id).await;
        assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    }
    let runs = executions(&marker);
    let twice: Vec<_> = runs.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "orders executed twice: {twice:?}");
    for id in &ids {
        assert_eq!(
            runs.get(id),
            Some(&1),
            "order {id} executed {:?} times",
            runs.get(id)
        );
    }
    assert_eq!(killed.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_unacknowledged_by_a_killed_broker_reaches_the_next_one() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let (marker, gate) = (h.scratch().join("marker"), h.scratch().join("gate"));
    deploy(&h.bus, &jobs(&marker, &gate)).await;
    spawn_broker(&mut h, "b2");
    let first = active_other_than(&h.bus, None).await;
    let order = submit_surely(&h.bus, "gate", "gated").await.order_id;
    wait_until(Duration::from_secs(10), "the task runs", || async {
        order_info(&h.bus, &order)
            .await
            .is_some_and(|o| o.state == OrderState::Running)
    })
    .await;
    // Freeze the broker, let the task finish: its result goes unacknowledged.
    // (Only a broker's credentials may listen to results.)
    let watcher = h.connect_as(Role::Broker, None).await;
    let mut results = watcher
        .listen::<TaskResult>(watcher.subjects().result())
        .await
        .expect("subscribe to results");
    h.cluster
        .signal(process_of(&first), Signal::SIGSTOP)
        .expect("stop the broker");
    std::fs::write(&gate, "").expect("open the gate");
    // Sent, and sent again: the frozen broker never acknowledged it.
    let mut sent = 0;
    while sent < 2 {
        let result = within(Duration::from_secs(10), "the task's result", results.next())
            .await
            .expect("result subscription");
        sent += usize::from(result.body.order_id == order);
    }
    h.cluster
        .signal(process_of(&first), Signal::SIGKILL)
        .expect("kill the broker");
    active_other_than(&h.bus, Some(&first)).await;
    let info = final_info(&h.bus, &order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    assert_eq!(info.attempt, 1, "{info:?}");
    assert_eq!(executions(&marker).get(&order), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_across_a_fail_over_is_one_order() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    spawn_broker(&mut h, "b2");
    let first = active_other_than(&h.bus, None).await;
    let before = submit_surely(&h.bus, "work", "same-request").await;
    assert!(!before.duplicate);
    h.cluster
        .signal(process_of(&first), Signal::SIGKILL)
        .expect("kill the broker");
    let after = submit_surely(&h.bus, "work", "same-request").await;
    assert_eq!(after.order_id, before.order_id);
    assert!(after.duplicate);
    let info = final_info(&h.bus, &before.order_id).await;
    assert_eq!(info.state, OrderState::Succeeded);
    assert_eq!(executions(&marker).get(&before.order_id), Some(&1));
}

/// Whether the active broker's status lists `id` among the brokers.
async fn listed(bus: &Bus, id: &str) -> bool {
    let ask = StatusRequest::default();
    let status = bus.request::<_, StatusReply>(bus.subjects().status(), &ask, REQUEST);
    status
        .await
        .is_ok_and(|s| s.brokers.iter().any(|b| b.id == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_lease_over_at_once_to_the_standby_that_goes_first() {
    // A lease far longer than the wait below: only a release explains a
    // takeover. Heartbeats far apart: a standby started after another's
    // heartbeat would wait seconds for the next one to learn of it.
    let slow = [
        ("BATON_BROKER__LEASE", "60s"),
        ("BATON_BROKER__HEARTBEAT_INTERVAL", "3s"),
    ];
    let env = [ENV, &slow].concat();
    let mut h = cluster_with_env(&["sub-1"], &env).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    let first = active_other_than(&h.bus, None).await;
    // Two standbys; b3's lower precedence puts it first. b3 is heard
    // before b2 starts, so b2 learns of b3 only if b3 greets it.
    h.cluster
        .spawn("b3", &["broker", "--id", "b3", "--precedence", "10"])
        .expect("spawn b3");
    wait_until(Duration::from_secs(10), "b3 heartbeats", || {
        listed(&h.bus, "b3")
    })
    .await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2", "--precedence", "200"])
        .expect("spawn b2");
    wait_until(Duration::from_secs(10), "b2 heartbeats", || {
        listed(&h.bus, "b2")
    })
    .await;
    let views = broker_views(&h.bus).await;
    let b2 = views
        .iter()
        .find(|v| v.broker_id == "b2")
        .expect("b2 answers");
    assert!(
        b2.brokers.iter().any(|b| b.id == "b3"),
        "b3 answered b2's first heartbeat: {:?}",
        b2.brokers
    );
    let waiting = submit_surely(&h.bus, "work", "before-stop").await.order_id;
    let changes = record_broker_changes(&h.bus).await;
    h.cluster
        .signal(process_of(&first), Signal::SIGTERM)
        .expect("stop the broker");
    let code = h
        .cluster
        .wait_exit(process_of(&first), Duration::from_secs(10))
        .expect("it exits");
    assert_eq!(code, Some(0));
    let next = wait_for(
        Duration::from_secs(15),
        "the standby takes over",
        || async { active(&h.bus).await.filter(|id| *id != first) },
    )
    .await;
    assert_eq!(
        next, "b3",
        "the standby with the lower precedence goes first"
    );
    let after = submit_surely(&h.bus, "work", "after-stop").await.order_id;
    for id in [&waiting, &after] {
        assert_eq!(final_info(&h.bus, id).await.state, OrderState::Succeeded);
        assert_eq!(executions(&marker).get(id.as_str()), Some(&1));
    }
    // a broker stopped normally leaves the view at once, not when its
    // heartbeats are missed (four intervals: 12 s here); a standby too
    wait_until(
        Duration::from_secs(5),
        "the stopped broker leaves",
        || async { !listed(&h.bus, &first).await },
    )
    .await;
    h.cluster.signal("b2", Signal::SIGTERM).expect("stop b2");
    let code = h.cluster.wait_exit("b2", Duration::from_secs(10));
    assert_eq!(code.expect("b2 exits"), Some(0));
    wait_until(
        Duration::from_secs(5),
        "the stopped standby leaves",
        || async { !listed(&h.bus, "b2").await },
    )
    .await;
    let said = |id: &str| {
        let seen = changes.lock().unwrap();
        let said = seen.iter().find(|c| c.broker_id == id).cloned();
        said.map(|c| (c.role, c.reason))
    };
    wait_until(Duration::from_secs(5), "both stops announced", || {
        std::future::ready(said("b2").is_some())
    })
    .await;
    assert_eq!(
        said(&first),
        Some((
            BrokerRole::Stopped,
            "stopped normally; lease handed over".into()
        ))
    );
    assert_eq!(
        said("b2"),
        Some((BrokerRole::Stopped, "stopped normally".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_from_nats_steps_down_and_comes_back_a_standby() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    let changes = record_broker_changes(&h.bus).await;
    // b1 reaches NATS through a proxy; make it the active one.
    let proxy = Proxy::start(&h.nats_url()).await.expect("proxy");
    h.cluster
        .spawn_via("b1", &["broker", "--id", "b1"], &proxy.url())
        .expect("spawn b1");
    let first = active_other_than(&h.bus, None).await;
    h.cluster
        .signal(process_of(&first), Signal::SIGTERM)
        .expect("stop the first broker");
    assert_eq!(active_other_than(&h.bus, Some(&first)).await, "b1");
    spawn_broker(&mut h, "b2");

    proxy.cut();
    assert_eq!(active_other_than(&h.bus, Some("b1")).await, "b2");
    let order = submit_surely(&h.bus, "work", "during-cut").await.order_id;
    assert_eq!(
        final_info(&h.bus, &order).await.state,
        OrderState::Succeeded
    );
    proxy.heal();
    wait_until(TAKEOVER, "b1 heartbeats as a standby", || async {
        let hb = h
            .bus
            .listen::<BrokerHeartbeat>(h.bus.subjects().broker_heartbeat())
            .await
            .expect("subscribe");
        let mut hb = hb.filter(|hb| futures::future::ready(hb.body.broker_id == "b1"));
        matches!(
            tokio::time::timeout(Duration::from_secs(2), hb.next()).await,
            Ok(Some(hb)) if hb.body.role == BrokerRole::Standby
        )
    })
    .await;
    assert_eq!(active(&h.bus).await.as_deref(), Some("b2"));
    // Status lists both, with their roles, the epoch and the lease's age.
    let shown = wait_for(Duration::from_secs(5), "status lists b1", || async {
        let ask = StatusRequest::default();
        let s: StatusReply = h
            .bus
            .request(h.bus.subjects().status(), &ask, REQUEST)
            .await
            .ok()?;
        s.brokers.iter().any(|b| b.id == "b1").then_some(s.brokers)
    })
    .await;
    let b2 = shown.iter().find(|b| b.id == "b2").expect("b2 listed");
    assert_eq!(b2.role, BrokerRole::Active);
    assert!(b2.epoch > 0 && b2.lease_age_ms.is_some(), "{b2:?}");
    let b1 = shown.iter().find(|b| b.id == "b1").expect("b1 listed");
    assert_eq!(b1.role, BrokerRole::Standby, "{shown:?}");
    let out = run_baton(&h, &["status"], Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("brokers (2)") && text.contains("standby"),
        "{text}"
    );
    // b1 stepped down before b2 became active: never two at once.
    let changes = changes.lock().unwrap().clone();
    let b1_down = changes
        .iter()
        .find(|c| c.broker_id == "b1" && c.role == BrokerRole::Standby);
    let b2_up = changes
        .iter()
        .find(|c| c.broker_id == "b2" && c.role == BrokerRole::Active)
        .expect("b2 announced itself");
    if let Some(down) = b1_down {
        assert!(down.at_ms <= b2_up.at_ms, "{changes:?}");
    }
    assert!(b2_up.epoch > 0);
}

/// The classic pause: the active broker is frozen (SIGSTOP) past its lease
/// while a standby takes over, then thaws. Its timers fire at once, and
/// without a check of its own lease it would declare the silent subagent
/// lost and act as if still in charge. It must act on nothing and step
/// down: no subagent is ever announced lost or suspect, and orders run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_paused_past_its_lease_acts_on_nothing_when_it_resumes() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    spawn_broker(&mut h, "b2");
    let first = active_other_than(&h.bus, None).await;
    let s = h.bus.subjects().clone();
    let mut changes = within(REQUEST, "subscribe", h.bus.listen_raw(s.subagent_changes()))
        .await
        .expect("subscribe");
    let seen: Arc<Mutex<Vec<SubagentChanged>>> = Arc::default();
    let into = seen.clone();
    let recorder = tokio::spawn(async move {
        while let Some((_, payload)) = changes.next().await {
            if let Ok(c) = decode::<SubagentChanged>(Encoding::MessagePack, &payload) {
                into.lock().unwrap().push(c);
            }
        }
    });

    h.cluster
        .signal(process_of(&first), Signal::SIGSTOP)
        .expect("freeze the active broker");
    let next = active_other_than(&h.bus, Some(&first)).await;
    let frozen = std::time::Instant::now();
    // the frozen broker still holds its subscriptions: no request is lost on it
    for i in 0..10 {
        let ask = StatusRequest::default();
        let status = h.bus.request::<_, StatusReply>(s.status(), &ask, REQUEST);
        match status.await {
            Ok(st) => assert_eq!(st.broker_id, next, "request {i} answered by"),
            Err(e) => panic!("request {i} while {first} is frozen: {e}"),
        }
    }
    // frozen past the subagent timeout too: its liveness check would find
    // every subagent silent the moment it thaws (the fault's length, not a
    // wait for a condition)
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(frozen.elapsed())).await;
    h.cluster
        .signal(process_of(&first), Signal::SIGCONT)
        .expect("thaw it");
    wait_until(
        Duration::from_secs(15),
        "the thawed broker is a standby",
        || async {
            let ask = StatusRequest::default();
            let status = h
                .bus
                .request::<_, StatusReply>(s.status(), &ask, REQUEST)
                .await;
            status.is_ok_and(|st| {
                st.broker_id == next
                    && st
                        .brokers
                        .iter()
                        .any(|b| b.id == first && b.role == BrokerRole::Standby)
            })
        },
    )
    .await;
    let after = submit_surely(&h.bus, "work", "after-thaw").await.order_id;
    assert_eq!(
        final_info(&h.bus, &after).await.state,
        OrderState::Succeeded
    );
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    let alarms: Vec<&SubagentChanged> = seen
        .iter()
        .filter(|c| matches!(c.state, SubagentState::Lost | SubagentState::Suspect))
        .collect();
    assert!(
        alarms.is_empty(),
        "a paused broker acted on its thaw: {alarms:?}"
    );
}

/// The subagent `id` as the active broker reports it, if it does.
async fn subagent_status(bus: &Bus, id: &str) -> Option<SubagentStatus> {
    let ask = StatusRequest::default();
    let reply = bus
        .request::<_, StatusReply>(bus.subjects().status(), &ask, Duration::from_secs(1))
        .await
        .ok()?;
    reply.subagents.into_iter().find(|s| s.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subagent_an_operator_disabled_stays_disabled_under_the_next_broker() {
    let mut h = cluster_with_env(&["sub-1", "sub-2"], ENV).await;
    let marker = h.scratch().join("marker");
    deploy(&h.bus, &jobs(&marker, &h.scratch().join("never"))).await;
    spawn_broker(&mut h, "b2");
    let first = active_other_than(&h.bus, None).await;
    wait_for(TAKEOVER, "sub-2 is available", || async {
        subagent_status(&h.bus, "sub-2")
            .await
            .filter(|s| s.state == SubagentState::Available)
    })
    .await;
    let out = run_baton(&h, &["subagent", "disable", "sub-2"], TAKEOVER).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    h.cluster
        .signal(process_of(&first), Signal::SIGKILL)
        .expect("kill the broker");
    let second = active_other_than(&h.bus, Some(&first)).await;
    let sub2 = wait_for(TAKEOVER, "the new broker has heard from sub-2", || async {
        subagent_status(&h.bus, "sub-2").await
    })
    .await;
    assert_eq!(
        sub2.state,
        SubagentState::Disabled,
        "under {second}: {sub2:?}"
    );
    let switch = sub2.switched.expect("who switched it, and when");
    assert!(switch.off && !switch.by.is_empty(), "{switch:?}");
    let status = run_baton(&h, &["status"], TAKEOVER).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("sub-2 disabled by "), "{text}");

    // no new task goes to it; enabled again, it takes tasks
    for n in 0..3 {
        let order = submit_surely(&h.bus, "work", &format!("after-{n}")).await;
        let info = final_info(&h.bus, &order.order_id).await;
        assert_eq!(info.subagent_id.as_deref(), Some("sub-1"), "{info:?}");
    }
    let out = run_baton(&h, &["subagent", "enable", "sub-2"], TAKEOVER).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sub2 = subagent_status(&h.bus, "sub-2").await.expect("known");
    assert_eq!(sub2.state, SubagentState::Available);
    assert!(sub2.switched.is_some_and(|s| !s.off));
}

/// Rewrites the server's authorization so brokers may not touch the orders
/// bucket's stream (its JetStream API), or gives them it back; returns once
/// a broker identity's stream info request is refused or answered again.
async fn orders_stream_denied_to_brokers(h: &mut Harness, denied: bool) {
    let auth = h.cluster.auth().expect("secure cluster").clone();
    let broker_key = auth
        .identities()
        .iter()
        .find(|i| i.role() == Some(Role::Broker))
        .expect("a broker identity")
        .public_key
        .clone();
    let mut conf = auth.server_conf();
    if denied {
        let deny = "deny: [\"$JS.API.*.*.KV_baton_orders\", \"$JS.API.*.*.KV_baton_orders.>\", \
                    \"$JS.API.*.*.*.KV_baton_orders\", \"$JS.API.*.*.*.KV_baton_orders.>\"] }, subscribe";
        let lines: Vec<String> = conf
            .lines()
            .map(|line| match line.contains(&broker_key) {
                true => line.replacen("] }, subscribe", &format!("], {deny}"), 1),
                false => line.to_string(),
            })
            .collect();
        conf = lines.join("\n") + "\n";
        assert!(conf.contains("deny: [\"$JS.API"), "{conf}");
    }
    // connected before: a connection made during a reload may be refused
    let broker = h.connect_as(Role::Broker, None).await;
    std::fs::write(auth.server_conf_path(), conf).expect("write auth.conf");
    h.cluster.nats.reload().expect("reload");
    let what = format!("the server applies the orders stream's denial: {denied}");
    wait_until(TAKEOVER, &what, || {
        let broker = broker.clone();
        async move {
            let info = "$JS.API.STREAM.INFO.KV_baton_orders";
            let asked = broker.request_raw(info, Encoding::Json, Bytes::new(), REQUEST);
            matches!(asked.await, Err(BusError::Denied { .. })) == denied
        }
    })
    .await;
}

/// A broker wins the lease but cannot take over (JetStream refuses it the
/// orders bucket): it gives the lease back and stays a standby, alive;
/// clients' submits fail with a clear error meanwhile and nothing is
/// accepted; once JetStream answers again it takes over by itself, and the
/// order running all along (the subagent's orphan timeout outlasts the
/// outage) ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_takeover_fails_stays_a_standby_and_takes_over_once_jetstream_answers() {
    let env = [ENV[0], ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "2m")];
    let mut h = cluster_with_env(&["sub-1"], &env).await;
    let marker = h.scratch().join("marker");
    let gate = h.scratch().join("gate");
    deploy(&h.bus, &jobs(&marker, &gate)).await;
    let before = submit_surely(&h.bus, "gate", "before").await.order_id;
    let changes = record_broker_changes(&h.bus).await;
    spawn_broker(&mut h, "b2");
    let first = active_other_than(&h.bus, None).await;
    orders_stream_denied_to_brokers(&mut h, true).await;
    h.cluster
        .signal(process_of(&first), Signal::SIGKILL)
        .expect("kill the active broker");

    let refused = wait_for(Duration::from_secs(60), "b2's takeover fails", || async {
        let changes = changes.lock().unwrap().clone();
        changes
            .into_iter()
            .find(|c| c.broker_id == "b2" && c.role == BrokerRole::Standby)
    })
    .await;
    assert_eq!(refused.reason, "its takeover failed", "{refused:?}");
    let submit = SubmitOrder {
        job: "work".into(),
        params: BTreeMap::new(),
        request_id: Some("during-refusal".into()),
        slot_ms: None,
    };
    let asked = h
        .bus
        .request::<_, SubmitReply>(h.bus.subjects().submit(), &submit, REQUEST)
        .await;
    assert!(
        matches!(
            asked,
            Err(BusError::NoResponders { .. }) | Err(BusError::TimedOut { .. })
        ),
        "no broker serves while none could take over: {asked:?}"
    );
    let b2 = h.cluster.pid("b2").expect("b2's pid");
    assert!(
        !process_gone(b2 as i32),
        "b2 exited after its failed takeover"
    );

    orders_stream_denied_to_brokers(&mut h, false).await;
    assert_eq!(active_other_than(&h.bus, Some(&first)).await, "b2");
    let after = submit_surely(&h.bus, "work", "after").await.order_id;
    assert_eq!(
        final_info(&h.bus, &after).await.state,
        OrderState::Succeeded
    );
    std::fs::write(&gate, "").expect("open the gate");
    assert_eq!(
        final_info(&h.bus, &before).await.state,
        OrderState::Succeeded
    );
    for id in [&before, &after] {
        assert_eq!(executions(&marker).get(id.as_str()), Some(&1), "{id}");
    }
    let changes = changes.lock().unwrap().clone();
    let failed = changes
        .iter()
        .filter(|c| c.broker_id == "b2" && c.reason == "its takeover failed")
        .count();
    assert!(failed >= 1, "{changes:?}");
    assert!(
        changes
            .iter()
            .any(|c| c.broker_id == "b2" && c.role == BrokerRole::Active),
        "{changes:?}"
    );
}

/// Two broker processes started with one id would mix each other up in
/// every view and ranking: the later one stops, saying why, and the first
/// one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_process_with_the_same_id_stops() {
    let mut h = cluster(&[]).await;
    spawn_broker(&mut h, "twin");
    wait_until(TAKEOVER, "twin is heard as a standby", || {
        listed(&h.bus, "twin")
    })
    .await;
    h.cluster
        .spawn("twin-again", &["broker", "--id", "twin"])
        .expect("spawn the second twin");
    let code =
        tokio::task::block_in_place(|| h.cluster.wait_exit("twin-again", Duration::from_secs(15)))
            .expect("the second twin exits by itself");
    assert_eq!(code, Some(2), "the second twin fails");
    let log = std::fs::read_to_string(h.dir.path().join("logs/twin-again.log")).unwrap();
    assert!(
        log.contains("another running broker uses the id 'twin' (standby in its last heartbeat); give each broker its own --id"),
        "{log}"
    );
    let first = std::fs::read_to_string(h.dir.path().join("logs/twin.log")).unwrap();
    assert!(
        !first.contains("another running broker uses the id"),
        "the first one stays: {first}"
    );
    holds_throughout(Duration::from_secs(2), "twin is still a standby", || {
        listed(&h.bus, "twin")
    })
    .await;
    assert!(h
        .cluster
        .pid("twin")
        .is_some_and(|pid| !process_gone(pid as i32)));
}
