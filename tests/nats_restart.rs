//! A NATS server restart (JetStream on file storage) in the middle of work:
//! every process reconnects and carries on, every accepted order reaches a
//! final state, and no order runs twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::auth::Role;
use baton::protocol::*;
use common::*;
use tokio::io::AsyncBufReadExt;

const MARKER_JOB: &str = r#"
[[job]]
name = "work"
program = "sh"
args = ["-c", "echo \"start $BATON_ORDER_ID\" >> \"$BATON_PARAM_DIR/marks\"; sleep 1; echo \"end $BATON_ORDER_ID\" >> \"$BATON_PARAM_DIR/marks\""]
[job.params.dir]
required = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_a_nats_server_restart() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, MARKER_JOB).await;
    let dir = h.scratch();
    let params = BTreeMap::from([("dir".to_string(), dir.display().to_string())]);
    let dir_param = [("dir", dir.display().to_string())];
    let mut orders = Vec::new();
    for _ in 0..12 {
        orders.push(submit(&h.bus, "work", &dir_param).await);
    }
    // some run, some wait (8 slots for 12 orders)
    let marks = dir.join("marks");
    wait_until(Duration::from_secs(15), "tasks run", || {
        std::future::ready(marks.exists())
    })
    .await;
    // a person watching is told the connection went and came back
    let mut watch = tokio::process::Command::from(baton_cmd(&h));
    watch
        .arg("watch")
        .env_remove("BATON_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut watch = watch.spawn().expect("baton watch");
    let watching = std::time::Instant::now();
    // connected once it shows an event of the orders running
    let mut shown = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    within(
        Duration::from_secs(15),
        "watch shows an event",
        shown.next_line(),
    )
    .await
    .expect("a line");
    tokio::spawn(async move { while let Ok(Some(_)) = shown.next_line().await {} });

    within(
        Duration::from_secs(30),
        "nats-server restart",
        h.cluster.nats.restart(),
    )
    .await
    .expect("nats-server restarts on the same port and store");

    // the client reconnects by itself; every order ends, and succeeds
    for id in &orders {
        let info = wait_for(Duration::from_secs(60), "the order finishes", || {
            let (bus, id) = (h.bus.clone(), id.clone());
            async move { order_info(&bus, &id).await.filter(|o| o.state.is_final()) }
        })
        .await;
        assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id().expect("pid") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop watch");
    let watched = within(REQUEST, "watch ends", watch.wait_with_output())
        .await
        .expect("watch output");
    let said = String::from_utf8_lossy(&watched.stderr);
    assert!(
        said.contains("nats disconnected") && said.contains("nats reconnected"),
        "watch ran {:?}: {said}",
        watching.elapsed()
    );
    let text = std::fs::read_to_string(&marks).expect("markers");
    for id in &orders {
        let ends = text.lines().filter(|l| *l == format!("end {id}")).count();
        assert_eq!(ends, 1, "order {id} completed once:\n{text}");
    }
    // and the cluster still takes new work
    let (fin, _) = run_to_finish(&h.bus, "work", params).await;
    assert_eq!(fin.state, OrderState::Succeeded);
    let status: StatusReply = within(
        REQUEST,
        "status",
        h.bus
            .request(h.bus.subjects().status(), &StatusRequest {}, REQUEST),
    )
    .await
    .expect("status");
    assert!(
        status
            .subagents
            .iter()
            .all(|s| s.state == SubagentState::Available),
        "{status:?}"
    );
}

/// The operator's switches are in JetStream, so a NATS restart (the broker
/// may step down and take its lease back) keeps a disabled subagent
/// disabled and a paused job paused, with who and when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_switches_survive_a_nats_server_restart() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, MARKER_JOB).await;
    let limit = Duration::from_secs(30);
    for args in [
        &["subagent", "disable", "sub-b"][..],
        &["job", "pause", "work"],
    ] {
        let out = run_baton(&h, args, limit).await;
        assert_eq!(out.status.code(), Some(0), "baton {args:?}: {out:?}");
    }
    within(limit, "nats-server restart", h.cluster.nats.restart())
        .await
        .expect("nats-server restarts on the same port and store");

    let status = wait_for(
        Duration::from_secs(60),
        "both subagents heard again",
        || async {
            let ask = h.bus.request::<_, StatusReply>(
                h.bus.subjects().status(),
                &StatusRequest {},
                REQUEST,
            );
            let status = ask.await.ok()?;
            (status.subagents.len() == 2).then_some(status)
        },
    )
    .await;
    let sub_b = status
        .subagents
        .iter()
        .find(|s| s.id == "sub-b")
        .expect("sub-b");
    assert_eq!(sub_b.state, SubagentState::Disabled, "{sub_b:?}");
    assert!(sub_b
        .switched
        .as_ref()
        .is_some_and(|s| s.off && !s.by.is_empty()));
    let pause = status.paused.get("work").expect("work still paused");
    assert!(pause.off && !pause.by.is_empty(), "{pause:?}");
    // a trigger's slot is refused; a client's submit still runs
    let slot = SubmitOrder {
        job: "work".into(),
        params: BTreeMap::from([("dir".to_string(), h.scratch().display().to_string())]),
        request_id: Some("work@1000".into()),
        slot_ms: Some(1000),
    };
    let refused = h
        .bus
        .request::<_, SubmitReply>(h.bus.subjects().submit(), &slot, REQUEST)
        .await;
    let Err(baton::bus::BusError::Remote(e)) = refused else {
        panic!("a paused job's slot is refused: {refused:?}")
    };
    assert!(e.error.message.contains("work is paused"), "{e}");
}

/// A broker that steps down and takes over again in the same process (a
/// JetStream node died, and the lease's stream elected a new leader) must
/// not wait for JetStream to answer look-ups it already made: the buckets
/// and the fixed streams a connection opened once open again at once, even
/// while no server answers at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_streams_opened_once_open_again_without_jetstream() {
    let mut h = cluster(&[]).await;
    let bus = h.connect_as(Role::Broker, None).await;
    let limits = baton::bus::StreamLimits {
        max_age: Duration::from_secs(3600),
        max_bytes: None,
    };
    let jobs = bus.kv::<JobSpec>("baton_jobs").await.expect("jobs bucket");
    bus.ensure_audit_stream("baton_audit", limits)
        .await
        .expect("audit stream");
    h.cluster.nats.kill();
    let again = async {
        let jobs_again = bus.kv::<JobSpec>("baton_jobs").await;
        let audit_again = bus.ensure_audit_stream("baton_audit", limits).await;
        (jobs_again, audit_again)
    };
    let (jobs_again, audit_again) = within(Duration::from_secs(1), "opened again", again).await;
    assert!(jobs_again.is_ok() && audit_again.is_ok());
    drop(jobs);
    // a bucket never opened on this connection is looked up, and fails
    let unknown = tokio::time::timeout(Duration::from_secs(1), bus.kv::<JobSpec>("baton_other"));
    assert!(!matches!(unknown.await, Ok(Ok(_))), "nothing answers it");
}

/// A broker that lost its lease while NATS was away campaigns for it again;
/// a campaign whose request the client held back until it reconnected (long
/// after the request timed out) must not leave a lease that names the
/// broker but that no broker acts under: it would keep every broker out
/// until it expired. Every lease written with epoch 0 after the restart is
/// the one the broker then takes (a create and its epoch's update, or a
/// late create the broker adopts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_created_by_a_campaign_sent_while_nats_was_away_is_taken_not_orphaned() {
    let lease = Duration::from_secs(4);
    let env = [("BATON_BROKER__LEASE", "4s")];
    let mut h = cluster_with_env(&[], &env).await;
    let before = h.connect_as(Role::Broker, Some("watcher")).await;
    let kv = before.kv_expiring::<BrokerLease>("baton_leader", lease);
    let kv = within(REQUEST, "leader bucket", kv).await.expect("kv");
    let (held, _) = within(REQUEST, "lease", kv.get_with_revision("broker"))
        .await
        .expect("read the lease")
        .expect("the broker holds the lease");
    drop(kv);
    drop(before);
    // away for longer than the lease: the broker steps down and campaigns
    // while disconnected
    h.cluster.nats.kill();
    tokio::time::sleep(lease + Duration::from_secs(2)).await;
    h.cluster
        .nats
        .start_again()
        .await
        .expect("nats-server starts again");
    // a fresh connection, so it reads from the server's first moments
    let watcher = h.connect_as(Role::Broker, Some("watcher")).await;
    let kv = watcher.kv_expiring::<BrokerLease>("baton_leader", lease);
    let kv = within(REQUEST, "leader bucket", kv).await.expect("kv");
    let seen = std::sync::Mutex::new(Vec::new());
    let taken = wait_for(Duration::from_secs(30), "the broker active again", || {
        let read = kv.get_with_revision("broker");
        let seen = &seen;
        async move {
            let (lease, revision) = read.await.ok()??;
            let mut seen = seen.lock().expect("seen");
            if seen.last() != Some(&(lease.epoch, revision)) {
                seen.push((lease.epoch, revision));
            }
            (lease.epoch > held.epoch).then_some(lease.epoch)
        }
    })
    .await;
    let seen = seen.into_inner().expect("seen");
    let orphans: Vec<_> = seen
        .iter()
        .filter(|(epoch, revision)| *epoch == 0 && *revision != taken)
        .collect();
    assert!(
        orphans.is_empty(),
        "leases (epoch, revision) seen after the restart: {seen:?}; the broker took epoch {taken}"
    );
}
