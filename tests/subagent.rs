//! Attacks on the subagent's promises: a task id never runs twice, one id
//! belongs to one process, a restarted subagent's old tasks are not waited
//! for, and a subagent started late gets work without restarting anything.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::auth::Role;
use baton::bus::BusError;
use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

const MARKER_JOB: &str = r#"
[[job]]
name = "marker"
program = "sh"
args = ["-c", "echo run >> \"$BATON_PARAM_FILE\"; sleep 0.3"]
[job.params.file]
required = true
"#;

fn run_task(task_id: &str, file: &str) -> RunTask {
    RunTask {
        task_id: task_id.into(),
        order_id: "not-an-order".into(),
        job: "marker".into(),
        attempt: 1,
        program: "sh".into(),
        args: vec!["-c".into(), format!("echo run >> {file}; sleep 0.5")],
        env: BTreeMap::new(),
        working_dir: None,
        timeout_ms: None,
        instance_id: None,
        epoch: 0,
        parent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_task_sent_many_times_runs_once() {
    let mut h = cluster(&["sub-a"]).await;
    // this test plays the broker
    let broker = h.connect_as(Role::Broker, None).await;
    let file = h.scratch().join("runs");
    let task = run_task("t-once", &file.display().to_string());
    let subject = h.bus.subjects().run("sub-a");
    // at once, and again after the first copy finished
    let sends = (0..5).map(|_| {
        let bus = broker.clone();
        let (subject, task) = (subject.clone(), task.clone());
        async move { bus.request::<_, RunAccepted>(subject, &task, REQUEST).await }
    });
    let replies = within(
        REQUEST * 2,
        "five dispatches",
        futures::future::join_all(sends),
    )
    .await;
    let accepted: Vec<RunAccepted> = replies
        .into_iter()
        .map(|r| r.expect("every dispatch is answered"))
        .collect();
    assert_eq!(
        accepted.iter().filter(|a| !a.duplicate).count(),
        1,
        "exactly one dispatch started the task: {accepted:?}"
    );
    wait_until(Duration::from_secs(10), "the task ran", || {
        std::future::ready(file.exists())
    })
    .await;
    let (bus, admin) = (broker.clone(), h.bus.clone());
    let again = wait_for(Duration::from_secs(10), "the task finished", || {
        let (bus, admin) = (bus.clone(), admin.clone());
        let (subject, task) = (subject.clone(), task.clone());
        async move {
            let reply: Result<RunAccepted, _> = bus.request(subject, &task, REQUEST).await;
            let status: StatusReply = admin
                .request(admin.subjects().status(), &StatusRequest {}, REQUEST)
                .await
                .ok()?;
            let idle = status.subagents.iter().all(|s| s.running == 0);
            idle.then_some(reply)
        }
    })
    .await;
    assert!(
        again.expect("answered").duplicate,
        "a finished task is not started again"
    );
    let runs = std::fs::read_to_string(&file).unwrap();
    assert_eq!(runs.lines().count(), 1, "the task ran once: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_id_stops() {
    let mut h = cluster(&["sub-a"]).await;
    h.cluster
        .spawn("sub-a-twin", &["subagent", "--id", "sub-a"])
        .expect("spawn twin");
    let code =
        tokio::task::block_in_place(|| h.cluster.wait_exit("sub-a-twin", Duration::from_secs(15)))
            .expect("the twin exits by itself");
    assert_eq!(code, Some(2), "the twin fails");
    let log = std::fs::read_to_string(h.dir.path().join("logs/sub-a-twin.log")).unwrap();
    assert!(
        log.contains("another running subagent uses the id 'sub-a'"),
        "{log}"
    );

    // the first one carries on
    deploy(&h.bus, MARKER_JOB).await;
    let file = h.scratch().join("runs").display().to_string();
    let params = BTreeMap::from([("file".to_string(), file)]);
    let (fin, _) = run_to_finish(&h.bus, "marker", params).await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.subagent_id.as_deref(), Some("sub-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subagent_restarted_under_its_id_reruns_its_old_tasks_at_once() {
    // a long timeout: the restart, not the silence, must reveal the loss
    let slow = [("BATON_BROKER__SUBAGENT_TIMEOUT", "60s")];
    let mut h = cluster_with_env(&["sub-a"], &slow).await;
    let jobs = "[[job]]\nname = \"long\"\nprogram = \"sleep\"\nargs = [\"60\"]\n\n\
                [[job]]\nname = \"once\"\nprogram = \"sleep\"\nargs = [\"60\"]\nrestartable = false\n";
    deploy(&h.bus, jobs).await;
    let bus = h.bus.clone();
    let mut orders = Vec::new();
    for job in ["long", "once"] {
        let order = SubmitOrder {
            job: job.into(),
            params: BTreeMap::new(),
            request_id: None,
            slot_ms: None,
        };
        let submit = bus.request(bus.subjects().submit(), &order, REQUEST);
        let reply: SubmitReply = within(REQUEST, "submit", submit).await.expect("submit");
        orders.push(reply.order_id);
    }
    let order_state = |bus: baton::bus::Bus, id: String| async move {
        let get = GetOrder { order_id: id };
        bus.request::<_, OrderInfo>(bus.subjects().order_get(), &get, REQUEST)
            .await
            .ok()
    };
    for id in &orders {
        wait_until(Duration::from_secs(10), "the orders run", || {
            let f = order_state(bus.clone(), id.clone());
            async move { f.await.is_some_and(|o| o.state == OrderState::Running) }
        })
        .await;
    }

    h.cluster.signal("sub-a", Signal::SIGKILL).expect("kill -9");
    h.cluster
        .spawn_subagent("sub-a", &[])
        .expect("restart sub-a");

    // the restartable one runs again, as attempt 2, on the new process
    let rerun = wait_for(Duration::from_secs(20), "the order runs again", || {
        let f = order_state(bus.clone(), orders[0].clone());
        async move {
            f.await
                .filter(|o| o.state == OrderState::Running && o.attempt == 2)
        }
    })
    .await;
    assert_eq!(rerun.subagent_id.as_deref(), Some("sub-a"));
    // the other one fails
    let info = wait_for(Duration::from_secs(20), "the order failed", || {
        let f = order_state(bus.clone(), orders[1].clone());
        async move { f.await.filter(|o| o.state.is_final()) }
    })
    .await;
    assert_eq!(info.state, OrderState::Failed, "{info:?}");
    assert!(
        info.reason
            .as_deref()
            .unwrap_or("")
            .contains("subagent lost"),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subagent_started_later_gets_tasks() {
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, MARKER_JOB).await;
    h.cluster.spawn_subagent("sub-late", &[]).expect("spawn");
    within(
        Duration::from_secs(15),
        "two subagents",
        h.cluster.wait_for_subagents(&h.bus, 2),
    )
    .await
    .expect("sub-late registers");
    let file = h.scratch().join("runs").display().to_string();
    let mut ran_on = Vec::new();
    for _ in 0..4 {
        let params = BTreeMap::from([("file".to_string(), file.clone())]);
        let (fin, _) = run_to_finish(&h.bus, "marker", params).await;
        ran_on.push(fin.subagent_id.unwrap_or_default());
    }
    assert!(ran_on.iter().any(|s| s == "sub-late"), "{ran_on:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_for_an_earlier_process_is_not_started() {
    let mut h = cluster(&["sub-a"]).await;
    let broker = h.connect_as(Role::Broker, None).await;
    let file = h.scratch().join("runs");
    let mut task = run_task("t-stale", &file.display().to_string());
    task.instance_id = Some("01900000-0000-7000-8000-000000000000".into());
    let subject = h.bus.subjects().run("sub-a");
    let reply = within(
        REQUEST * 2,
        "stale dispatch",
        broker.request::<_, RunAccepted>(subject, &task, Duration::from_millis(500)),
    )
    .await;
    assert!(
        matches!(reply, Err(BusError::TimedOut { .. })),
        "no answer: {reply:?}"
    );
    assert!(!file.exists(), "the task did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_priority_waits_for_the_best_member_rather_than_spill() {
    let mut h = cluster(&["sub-b"]).await;
    h.cluster
        .spawn_subagent("sub-a", &["--capacity", "1"])
        .expect("spawn sub-a");
    within(
        Duration::from_secs(15),
        "two subagents",
        h.cluster.wait_for_subagents(&h.bus, 2),
    )
    .await
    .expect("sub-a registers");
    let toml = r#"
[[cluster]]
name = "primary"
mode = "fixed-priority"
members = [{ subagent = "sub-a", priority = 2 }, { subagent = "sub-b", priority = 1 }]

[[job]]
name = "short"
program = "sleep"
args = ["0.2"]
cluster = "primary"
"#;
    deploy(&h.bus, toml).await;
    let runs = (0..3).map(|_| run_to_finish(&h.bus, "short", BTreeMap::new()));
    let finished = within(
        Duration::from_secs(30),
        "three orders",
        futures::future::join_all(runs),
    )
    .await;
    for (fin, _) in finished {
        assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
        assert_eq!(
            fin.subagent_id.as_deref(),
            Some("sub-a"),
            "all on the best member, one at a time: {fin:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_does_not_starve_heartbeats() {
    // fewer than a subscription buffers (64k), so this test client drops none
    const LINES: u64 = 50_000;
    let h = cluster(&["sub-a"]).await;
    let toml = format!(
        "[[job]]\nname = \"flood\"\nprogram = \"sh\"\nargs = [\"-c\", \"yes a-line-of-output | head -n {LINES}\"]\n"
    );
    deploy(&h.bus, &toml).await;
    let changes = h.bus.subjects().subagent_changes();
    let mut changes = within(
        REQUEST,
        "subscribe",
        h.bus.listen::<SubagentChanged>(changes),
    )
    .await
    .expect("subscribe to subagent changes");
    let (fin, logs) = run_to_finish(&h.bus, "flood", BTreeMap::new()).await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    // every line arrived, in order, numbered without gaps
    assert_eq!(logs.len() as u64, LINES, "lines published");
    assert!(
        logs.iter().zip(1..).all(|(l, n)| l.seq == n),
        "seq without gaps"
    );
    // and the subagent was never taken for lost while it streamed
    let status: StatusReply = within(
        REQUEST,
        "status",
        h.bus
            .request(h.bus.subjects().status(), &StatusRequest {}, REQUEST),
    )
    .await
    .expect("status");
    assert_eq!(status.subagents[0].state, SubagentState::Available);
    let lost = futures::StreamExt::next(&mut changes);
    if let Ok(Some(change)) = tokio::time::timeout(Duration::from_millis(1), lost).await {
        assert_ne!(change.body.state, SubagentState::Lost, "{change:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_an_older_broker_epoch_is_refused() {
    let mut h = cluster(&["sub-a"]).await;
    // Hand the lease over once, so the active epoch is above 1 and an older
    // one is not 0 (which means "unknown" and is never fenced).
    hand_the_lease_to_b2(&mut h);
    let heartbeats = h.bus.subjects().broker_heartbeat();
    let mut heartbeats = within(
        REQUEST,
        "subscribe",
        h.bus.listen::<BrokerHeartbeat>(heartbeats),
    )
    .await
    .expect("subscribe to broker heartbeats");
    let active = async {
        while let Some(hb) = futures::StreamExt::next(&mut heartbeats).await {
            if hb.body.role == BrokerRole::Active && hb.body.epoch > 1 {
                return hb.body.epoch;
            }
        }
        panic!("heartbeat subscription ended");
    };
    let epoch = within(
        Duration::from_secs(10),
        "an active broker heartbeat",
        active,
    )
    .await;
    let subject = h.bus.subjects().run("sub-a");
    let broker = h.connect_as(Role::Broker, None).await;
    let run = |task: RunTask| {
        let (bus, subject) = (broker.clone(), subject.clone());
        async move {
            let request = bus.request::<_, RunAccepted>(subject, &task, REQUEST);
            within(REQUEST * 2, "run", request).await
        }
    };

    // the current broker's epoch is obeyed
    let current_file = h.scratch().join("current");
    let mut current = run_task("t-current", &current_file.display().to_string());
    current.epoch = epoch;
    let accepted = run(current).await.expect("a current task is accepted");
    assert!(!accepted.duplicate, "{accepted:?}");

    // an older one is not: no run, no kill
    let fenced_file = h.scratch().join("fenced");
    let mut fenced = run_task("t-fenced", &fenced_file.display().to_string());
    fenced.epoch = epoch - 1;
    refused(run(fenced.clone()).await);
    assert!(!fenced_file.exists(), "the stale task did not run");
    let kill = KillTask {
        task_id: "t-current".into(),
        reason: "from a deposed broker".into(),
        epoch: epoch - 1,
    };
    let request = broker.request::<_, KillAccepted>(h.bus.subjects().kill("sub-a"), &kill, REQUEST);
    refused(within(REQUEST * 2, "kill", request).await);

    // the refusal changed nothing: the same task id from the current broker runs
    fenced.epoch = epoch;
    let accepted = run(fenced)
        .await
        .expect("the task is accepted at the current epoch");
    assert!(
        !accepted.duplicate,
        "the refused task was not remembered: {accepted:?}"
    );
    wait_until(Duration::from_secs(10), "both tasks ran", || {
        std::future::ready(current_file.exists() && fenced_file.exists())
    })
    .await;
}

/// Asserts that a broker command was refused as coming from a stale epoch.
fn refused<T: std::fmt::Debug>(reply: Result<T, BusError>) {
    match reply {
        Err(BusError::Remote(e)) => {
            assert_eq!(e.error.code, ErrorCode::InvalidState, "{e}");
            assert!(e.error.message.contains("stale broker epoch"), "{e}");
        }
        other => panic!("refused as stale: {other:?}"),
    }
}
