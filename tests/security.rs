//! Attacks on the bus, each made with the credentials of a role that must
//! not do it, and with none: nats-server, running the authorization
//! `baton auth init` generates, refuses them (the server's permissions, not
//! Baton's own checks, stop every attack here), and the cluster runs jobs
//! normally afterwards. Baton's own parts: clear refusals, a broker and a
//! subagent that will not run on an open bus, a subagent that stops when
//! its credentials are another's.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::{Bus, BusError, ConnectSettings, Credentials, Encoding};
use baton::natsd::{NatsServer, NatsServerOptions};
use baton::protocol::*;
use bytes::Bytes;
use common::*;
use serde_json::json;

const JOBS: &str = r#"
[[job]]
name = "hello"
program = "echo"
args = ["hi"]

[[job]]
name = "gate"
program = "sh"
args = ["-c", "while [ ! -e \"$BATON_PARAM_GATE\" ]; do sleep 0.05; done"]
[job.params.gate]
required = true
"#;

/// Every identity that is not a broker, named for messages.
const NOT_BROKERS: [(Role, Option<&str>); 5] = [
    (Role::Agent, None),
    (Role::Subagent, Some("sub-b")),
    (Role::Client, None),
    (Role::Admin, None),
    (Role::Monitor, None),
];

async fn status_of(bus: &Bus) -> StatusReply {
    let everything = StatusRequest::default();
    let ask = bus.request(bus.subjects().status(), &everything, REQUEST);
    within(REQUEST, "status", ask).await.expect("status")
}

fn pack(value: serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&value).expect("encode")
}

/// Sends `payload` to `subject` as a request, which the server must refuse.
async fn refused(bus: &Bus, who: &str, subject: &str, payload: Vec<u8>) {
    let request = bus.request_raw(
        subject,
        Encoding::MessagePack,
        Bytes::from(payload),
        REQUEST,
    );
    match within(REQUEST * 2, subject, request).await {
        Err(BusError::Denied { .. }) => {}
        other => panic!("{who} on {subject}: expected the server to refuse, got {other:?}"),
    }
}

/// A running order of `gate` and its task id; `gate` opens it.
async fn running_gate(h: &Harness, gate: &std::path::Path) -> OrderInfo {
    let order = submit(&h.bus, "gate", &[("gate", gate.display().to_string())]).await;
    wait_for(Duration::from_secs(15), "the gate task runs", || async {
        order_info(&h.bus, &order)
            .await
            .filter(|o| o.state == OrderState::Running)
    })
    .await
}

async fn order_runs_to_success(h: &Harness) {
    let (finished, _) = run_to_finish(&h.bus, "hello", Default::default()).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_but_the_broker_commands_a_subagent_or_receives_its_tasks() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let gate = h.scratch().join("gate");
    let running = running_gate(&h, &gate).await;
    let (task, victim) = (
        running.task_id.clone().expect("task id"),
        running.subagent_id.clone().expect("subagent"),
    );
    let other = if victim == "sub-a" { "sub-b" } else { "sub-a" };
    let marker = h.scratch().join("pwned");
    let s = h.bus.subjects().clone();
    let run = pack(json!({
        "task_id": "forged-task", "order_id": "forged", "job": "hello", "attempt": 1,
        "program": "touch", "args": [marker.display().to_string()],
    }));
    let kill = pack(json!({"task_id": task, "reason": "subagent lost", "epoch": u64::MAX / 2}));
    for (role, id) in NOT_BROKERS {
        // the other subagent's own identity is the most dangerous one here
        let id = if role == Role::Subagent {
            Some(other)
        } else {
            id
        };
        let attacker = h.connect_as(role, id).await;
        let who = format!("{role} {id:?}");
        refused(&attacker, &who, &s.run(&victim), run.clone()).await;
        refused(&attacker, &who, &s.kill(&victim), kill.clone()).await;
        refused(&attacker, &who, &s.stop(&victim), pack(json!({"epoch": 0}))).await;
    }

    // a subagent's credentials cannot take another subagent's tasks
    let thief = h.connect_as(Role::Subagent, Some(other)).await;
    let listen = thief.listen_raw(s.run(&victim));
    let _stolen = within(REQUEST, "subscribe", listen)
        .await
        .expect("subscribe call");
    let _everyone = within(REQUEST, "subscribe", thief.listen_raw(s.run("*")))
        .await
        .expect("subscribe call");
    wait_until(REQUEST, "the server refused both subscriptions", || async {
        thief.stats().denied() >= 2
    })
    .await;

    assert!(!marker.exists(), "a forged RunTask ran");
    let now = order_info(&h.bus, &running.order_id).await.expect("order");
    assert_eq!(
        now.state,
        OrderState::Running,
        "the forged kill did nothing"
    );
    std::fs::write(&gate, "").expect("open the gate");
    wait_until(Duration::from_secs(15), "the order succeeds", || async {
        order_info(&h.bus, &running.order_id)
            .await
            .is_some_and(|o| o.state == OrderState::Succeeded)
    })
    .await;
    order_runs_to_success(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_registrations_heartbeats_and_results_are_refused() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let gate = h.scratch().join("gate");
    let running = running_gate(&h, &gate).await;
    let s = h.bus.subjects().clone();
    let register = pack(json!({
        "subagent_id": "fake", "instance_id": "i", "capacity": 100, "protocol": PROTOCOL_VERSION,
    }));
    let heartbeat = pack(json!({
        "subagent_id": "fake", "instance_id": "i", "capacity": 100, "sent_at_ms": 1,
        "protocol": PROTOCOL_VERSION,
    }));
    let result = pack(json!({
        "task_id": running.task_id, "order_id": running.order_id, "job": "gate",
        "attempt": running.attempt, "subagent_id": running.subagent_id, "exit_code": 0,
    }));
    for (role, id) in NOT_BROKERS
        .into_iter()
        .filter(|(r, _)| *r != Role::Subagent)
    {
        let attacker = h.connect_as(role, id).await;
        let who = role.to_string();
        refused(&attacker, &who, &s.register(), register.clone()).await;
        refused(
            &attacker,
            &who,
            &s.subagent_heartbeat("fake"),
            heartbeat.clone(),
        )
        .await;
        refused(
            &attacker,
            &who,
            &s.subagent_heartbeat("sub-a"),
            heartbeat.clone(),
        )
        .await;
        refused(&attacker, &who, &s.result(), result.clone()).await;
    }
    // a subagent may heartbeat only as itself
    let sub_b = h.connect_as(Role::Subagent, Some("sub-b")).await;
    let who = "subagent sub-b";
    refused(
        &sub_b,
        who,
        &s.subagent_heartbeat("sub-a"),
        heartbeat.clone(),
    )
    .await;
    refused(&sub_b, who, &s.subagent_heartbeat("fake"), heartbeat).await;

    let status = status_of(&h.bus).await;
    let ids: Vec<&str> = status.subagents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["sub-a", "sub-b"], "no fake subagent registered");
    let now = order_info(&h.bus, &running.order_id).await.expect("order");
    assert_eq!(now.state, OrderState::Running, "no forged result counted");

    // a subagent writes output lines only in its own name, and readers drop a
    // line whose publisher is not the subagent it names
    let victim = running.subagent_id.clone().expect("placed");
    let forger_id = if victim == "sub-a" { "sub-b" } else { "sub-a" };
    let forger = h.connect_as(Role::Subagent, Some(forger_id)).await;
    let order = running.order_id.clone();
    let line = pack(json!({
        "order_id": order, "job": "gate", "task_id": running.task_id, "subagent_id": victim,
        "stream": "stdout", "line": "FORGED LINE", "at_ms": 1, "seq": 1,
    }));
    let in_victims_name = s.task_event("gate", &order, EventKind::Log, &victim);
    refused(&forger, forger_id, &in_victims_name, line.clone()).await;
    let unnamed = s.event("gate", &order, EventKind::Log);
    refused(&forger, forger_id, &unnamed, line.clone()).await;
    let own_name = s.task_event("gate", &order, EventKind::Log, forger_id);
    let publish = forger.publish_raw(own_name, Bytes::from(line));
    within(REQUEST, "publish", publish)
        .await
        .expect("published in its own name");
    within(REQUEST, "flush", forger.flush())
        .await
        .expect("flush");

    std::fs::write(&gate, "").expect("open the gate");
    wait_until(
        Duration::from_secs(15),
        "the gate order succeeds",
        || async {
            order_info(&h.bus, &order)
                .await
                .is_some_and(|o| o.state == OrderState::Succeeded)
        },
    )
    .await;
    let out = run_baton(&h, &["order", "logs", &order], Duration::from_secs(20)).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !printed.contains("FORGED"),
        "a forged line was shown: {printed}"
    );
    order_runs_to_success(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_broker_heartbeats_and_commands_cannot_wedge_anyone() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let s = h.bus.subjects().clone();
    let heartbeat = pack(json!({
        "broker_id": "evil", "sent_at_ms": 1, "protocol": PROTOCOL_VERSION,
        "epoch": u64::MAX / 2, "role": "active",
    }));
    let role = pack(json!({
        "broker_id": "evil", "epoch": u64::MAX / 2, "command": 1, "action": "on", "lease_ms": 60000,
    }));
    for (attacker_role, id) in NOT_BROKERS {
        let attacker = h.connect_as(attacker_role, id).await;
        let who = attacker_role.to_string();
        for _ in 0..8 {
            refused(&attacker, &who, &s.broker_heartbeat(), heartbeat.clone()).await;
        }
        refused(&attacker, &who, &s.agent_role("agent-1"), role.clone()).await;
        if attacker_role != Role::Subagent {
            // (a subagent may leave: only as itself, by its instance id)
            let leave = pack(json!({"subagent_id": "sub-a", "instance_id": "i"}));
            refused(&attacker, &who, &s.leave(), leave).await;
        }
    }
    // the real broker's next dispatches still run, on both subagents
    for _ in 0..4 {
        order_runs_to_success(&h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_but_the_broker_wipes_purges_or_takes_the_lease() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let (earlier, _) = run_to_finish(&h.bus, "hello", Default::default()).await;
    let streams = [
        "KV_baton_orders",
        "KV_baton_jobs",
        "KV_baton_clusters",
        "KV_baton_workflows",
        "KV_baton_fired",
        "KV_baton_files",
        "KV_baton_leader",
        "baton_logs",
    ];
    for (role, id) in NOT_BROKERS {
        let attacker = h.connect_as(role, id).await;
        let who = role.to_string();
        for stream in streams {
            for op in ["STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE"] {
                let subject = format!("$JS.API.{op}.{stream}");
                refused(&attacker, &who, &subject, b"{}".to_vec()).await;
            }
            let subject = format!("$JS.API.STREAM.MSG.DELETE.{stream}");
            refused(&attacker, &who, &subject, b"{\"seq\":1}".to_vec()).await;
        }
        let lease = pack(json!({"broker_id": "evil", "acquired_at_ms": 1}));
        refused(&attacker, &who, "$KV.baton_leader.leader", lease).await;
        refused(&attacker, &who, "$KV.baton_orders.x", b"x".to_vec()).await;
        refused(&attacker, &who, "$KV.baton_jobs.hello", b"x".to_vec()).await;
    }
    // everything is still there, and works
    let kept = order_info(&h.bus, &earlier.order_id)
        .await
        .expect("order kept");
    assert_eq!(kept.state, OrderState::Succeeded);
    order_runs_to_success(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_need_admin_credentials_and_strangers_get_nothing() {
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, JOBS).await;
    let s = h.bus.subjects().clone();
    let deploy_request = pack(json!({"jobs": [], "clusters": []}));
    let control = pack(json!({"agent_id": "agent-1", "action": "on"}));
    let disable = pack(json!({"subagent_id": "sub-a", "action": "disable"}));
    for role in [Role::Client, Role::Monitor] {
        let attacker = h.connect_as(role, None).await;
        let who = role.to_string();
        refused(&attacker, &who, &s.deploy(), deploy_request.clone()).await;
        refused(&attacker, &who, &s.scheduler_control(), control.clone()).await;
        refused(&attacker, &who, &s.subagent_control(), disable.clone()).await;
    }
    let monitor = h.connect_as(Role::Monitor, None).await;
    refused(
        &monitor,
        "monitor",
        &s.submit(),
        pack(json!({"job": "hello"})),
    )
    .await;
    let cancel = pack(json!({"order_id": "x", "kill": true}));
    refused(&monitor, "monitor", &s.order_cancel(), cancel).await;

    // the CLI with client credentials: a clear refusal, at once
    let client_seed = h.seed(Role::Client, None);
    let jobs_file = h.scratch().join("jobs.toml");
    std::fs::write(&jobs_file, JOBS).unwrap();
    let jobs_path = jobs_file.display().to_string();
    let seed_path = client_seed.display().to_string();
    let args = [
        "--nats-nkey",
        seed_path.as_str(),
        "deploy",
        jobs_path.as_str(),
    ];
    let out = run_baton(&h, &args, Duration::from_secs(20)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("api.deploy"),
        "{stderr}"
    );
    let hint = "it takes the credentials of: admin (these are client's)";
    assert!(stderr.contains(hint), "{stderr}");

    // no credentials, or unknown ones: the server lets nothing in
    let url = h.nats_url();
    let Err(err) = connect(&url, Credentials::None).await else {
        panic!("an anonymous connection was let in");
    };
    assert!(err.to_string().contains("asks for credentials"), "{err}");
    let stranger = h.scratch().join("stranger.nk");
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    std::fs::write(&stranger, seed).unwrap();
    let Err(err) = connect(&url, Credentials::NkeyFile(stranger.clone())).await else {
        panic!("an unknown nkey was let in");
    };
    assert!(
        err.to_string().contains(&stranger.display().to_string()),
        "{err}"
    );
    assert!(!err.to_string().contains("SU"), "no seed in errors: {err}");

    // the CLI outside any repository, with no credentials: names the settings
    let mut command = tokio::process::Command::from(baton_cmd(&h));
    command
        .env_remove("BATON_NATS__NKEY")
        .current_dir(h.scratch())
        .arg("status")
        .kill_on_drop(true);
    let out = within(Duration::from_secs(20), "status", command.output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nats.nkey") && stderr.contains("baton auth init"),
        "{stderr}"
    );
    order_runs_to_success(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_another_identity_s_credentials_or_none_to_check_stops_with_the_reason() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    let seed = |h: &mut Harness, role, id| h.seed(role, id).display().to_string();
    let sub_b = seed(&mut h, Role::Subagent, Some("sub-b"));
    let broker = seed(&mut h, Role::Broker, None);
    let client = seed(&mut h, Role::Client, None);
    let stops = |args: Vec<String>, says: &'static str| {
        let h = &h;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run_baton(h, &args, Duration::from_secs(30)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
    };
    let run = |seed: &str, rest: &[&str]| {
        let mut args = vec!["--nats-nkey".to_string(), seed.to_string()];
        args.extend(rest.iter().map(|a| a.to_string()));
        args
    };
    let sub_x = ["subagent", "--id", "sub-x"];
    stops(
        run(&sub_b, &sub_x),
        "these credentials are subagent-sub-b's, not subagent-sub-x's",
    )
    .await;
    stops(
        run(&broker, &sub_x),
        "these credentials are broker's, not subagent-sub-x's",
    )
    .await;
    stops(
        run(&client, &["broker"]),
        "these credentials are client's, not broker's",
    )
    .await;
    stops(
        run(&client, &["agent"]),
        "these credentials are client's, not agent's",
    )
    .await;
    // a seed alone, without the identities to check others against
    let lone = h.scratch().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(&broker, lone.join("broker.nk")).unwrap();
    let lone_seed = lone.join("broker.nk").display().to_string();
    stops(run(&lone_seed, &["broker"]), "no identities.toml beside").await;
    // no credentials at all: refused at once, not asked again and again
    let mut command = tokio::process::Command::from(baton_cmd(&h));
    command
        .args(["broker", "--id", "b-none"])
        .env_remove("BATON_NATS__NKEY")
        .kill_on_drop(true);
    let out = within(Duration::from_secs(30), "broker", command.output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the server asks for credentials and none are set"),
        "{stderr}"
    );
    let refusals = stderr.matches("authorization violation").count();
    assert!(refusals <= 2, "asked once: {refusals} refusals\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_or_subagent_refuses_a_server_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let options = NatsServerOptions {
        store_dir: dir.path().join("store"),
        ..Default::default()
    };
    let nats = within(Duration::from_secs(15), "nats", NatsServer::start(options))
        .await
        .expect("open nats-server");
    for args in [vec!["broker"], vec!["subagent", "--id", "s1"]] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .args(&args)
            .args(["--nats-url", &nats.url()])
            .env_remove("BATON_NATS__NKEY")
            .env_remove("BATON_CONFIG")
            .kill_on_drop(true);
        let out = within(Duration::from_secs(20), "refusal", command.output())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("asks for no credentials"), "{stderr}");
        assert!(
            stderr.contains("--insecure") && stderr.contains("baton auth init"),
            "{stderr}"
        );
    }
    // --insecure: an experiment, allowed
    let mut broker = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["broker", "--insecure", "--nats-url", &nats.url()])
        .env_remove("BATON_CONFIG")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let bus = connect(&nats.url(), Credentials::None)
        .await
        .expect("connect");
    let ask = StatusRequest::default();
    wait_until(
        Duration::from_secs(15),
        "the insecure broker answers",
        || async {
            let status = bus.subjects().status();
            let asked = bus.request::<_, StatusReply>(status, &ask, Duration::from_secs(1));
            asked.await.is_ok()
        },
    )
    .await;
    let _ = broker.kill().await;
}

async fn connect(url: &str, credentials: Credentials) -> Result<Bus, BusError> {
    let settings = ConnectSettings {
        url: url.to_string(),
        name: "attacker".into(),
        connect_timeout: Duration::from_secs(3),
        retry_initial_connect: false,
        max_message_bytes: 1 << 20,
        replicas: 1,
        credentials,
        tls: Default::default(),
        identities: None,
    };
    within(
        REQUEST,
        "connect",
        Bus::connect(&settings, Subjects::new("baton")),
    )
    .await
}

/// Rewrites the server's authorization so every identity may do anything
/// (a misconfigured server), and waits until a client's `run` reaches the
/// subagent.
async fn open_the_server_wide(h: &mut Harness) {
    let auth = h.cluster.auth().expect("secure cluster").clone();
    let users: Vec<String> = auth
        .identities()
        .iter()
        .map(|i| format!("    {{ nkey: {:?} }}", i.public_key))
        .collect();
    let conf = format!(
        "authorization {{\n  users = [\n{}\n  ]\n}}\n",
        users.join("\n")
    );
    std::fs::write(auth.server_conf_path(), conf).expect("write auth.conf");
    h.cluster.nats.reload().expect("reload");
    let client = h.connect_as(Role::Client, None).await;
    let run = h.bus.subjects().run("sub-a");
    wait_until(
        Duration::from_secs(10),
        "the server lets a client publish anything",
        || {
            let client = client.clone();
            let run = run.clone();
            async move {
                let probe = client.request_raw(&run, Encoding::MessagePack, Bytes::new(), REQUEST);
                !matches!(probe.await, Err(BusError::Denied { .. }))
            }
        },
    )
    .await;
}

/// A plain NATS client (it signs nothing) holding the monitor's seed.
async fn plain_client(h: &mut Harness) -> async_nats::Client {
    let seed = std::fs::read_to_string(h.seed(Role::Monitor, None)).unwrap();
    let plain = async_nats::ConnectOptions::new()
        .nkey(seed.trim().to_string())
        .connect(h.nats_url());
    within(REQUEST, "plain connect", plain)
        .await
        .expect("plain")
}

fn forbidden<T: std::fmt::Debug>(who: &str, what: &str, reply: Result<T, BusError>) {
    match reply {
        Err(BusError::Remote(e)) if e.error.code == ErrorCode::Forbidden => {}
        other => panic!("{who}: {what}: expected Baton to refuse it (forbidden), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_wide_open_server_baton_s_own_checks_still_refuse_forgeries() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let gate = h.scratch().join("gate");
    let running = running_gate(&h, &gate).await;
    open_the_server_wide(&mut h).await;
    let s = h.bus.subjects().clone();
    let victim = running.subagent_id.clone().expect("placed");
    let other = if victim == "sub-a" { "sub-b" } else { "sub-a" };
    let marker = h.scratch().join("pwned");
    let task = RunTask {
        task_id: "forged-task".into(),
        order_id: "forged".into(),
        job: "hello".into(),
        attempt: 1,
        program: "touch".into(),
        args: vec![marker.display().to_string()],
        env: Default::default(),
        working_dir: None,
        timeout_ms: None,
        instance_id: None,
        epoch: 0,
        parent: None,
    };
    let client = h.connect_as(Role::Client, None).await;
    let thief = h.connect_as(Role::Subagent, Some(other)).await;
    let agent = h.connect_as(Role::Agent, None).await;
    // an unsigned sender: a plain NATS client holding some identity's seed
    let plain = plain_client(&mut h).await;
    for (who, bus) in [("client", &client), ("subagent", &thief), ("agent", &agent)] {
        let run = bus
            .request::<_, RunAccepted>(s.run(&victim), &task, REQUEST)
            .await;
        forbidden(who, "run", run);
        let kill = KillTask {
            task_id: running.task_id.clone().unwrap(),
            reason: "subagent lost".into(),
            epoch: 0,
        };
        let kill = bus
            .request::<_, KillAccepted>(s.kill(&victim), &kill, REQUEST)
            .await;
        forbidden(who, "kill", kill);
    }
    // a forged result for the running task, signed by the other subagent
    let result: TaskResult = serde_json::from_value(json!({
        "task_id": running.task_id, "order_id": running.order_id, "job": "gate",
        "attempt": running.attempt, "subagent_id": victim, "exit_code": 0,
        "started_at_ms": 1, "finished_at_ms": 2,
    }))
    .expect("a result");
    let forged = thief
        .request::<_, ResultAck>(s.result(), &result, REQUEST)
        .await;
    forbidden("subagent", "someone else's result", forged);
    // a fake subagent registered by a client
    let register = Register {
        subagent_id: "fake".into(),
        instance_id: "i".into(),
        labels: Default::default(),
        capacity: 100,
        hostname: None,
        pid: None,
        protocol: PROTOCOL_VERSION,
        heartbeat_interval_ms: 250,
        orphan_timeout_ms: 10_000,
    };
    let fake = client
        .request::<_, Registered>(s.register(), &register, REQUEST)
        .await;
    forbidden("client", "register", fake);
    // forged broker heartbeats with a huge epoch, signed and unsigned
    let heartbeat = pack(json!({
        "broker_id": "evil", "sent_at_ms": 1, "protocol": PROTOCOL_VERSION,
        "epoch": u64::MAX / 2, "role": "active",
    }));
    for _ in 0..8 {
        for bus in [&client, &thief] {
            let publish = bus.publish_raw(s.broker_heartbeat(), Bytes::from(heartbeat.clone()));
            within(REQUEST, "publish", publish).await.expect("publish");
        }
        let unsigned = plain.publish(s.broker_heartbeat(), Bytes::from(heartbeat.clone()));
        within(REQUEST, "publish", unsigned).await.expect("publish");
    }
    within(REQUEST, "flush", plain.flush())
        .await
        .expect("flush");
    // a deploy signed by a client
    let deploy_request = DeployRequest {
        dry_run: false,
        jobs: vec![],
        clusters: vec![],
        workflows: vec![],
        ..Default::default()
    };
    let deploy = client
        .request::<_, DeployReply>(s.deploy(), &deploy_request, REQUEST)
        .await;
    forbidden("client", "deploy", deploy);
    let unsigned = rmp_serde::to_vec_named(&deploy_request).unwrap();
    let reply = plain.request(s.deploy(), Bytes::from(unsigned));
    let reply = within(REQUEST, "unsigned deploy", reply)
        .await
        .expect("answered");
    let refused: ErrorReply = rmp_serde::from_slice(&reply.payload).expect("an error reply");
    assert_eq!(refused.error.code, ErrorCode::Forbidden, "{refused}");

    assert!(!marker.exists(), "a forged RunTask ran");
    let now = order_info(&h.bus, &running.order_id).await.expect("order");
    assert_eq!(
        now.state,
        OrderState::Running,
        "no forged kill or result counted"
    );
    let status = status_of(&h.bus).await;
    assert!(status.refused_messages >= 3, "{status:?}");
    // the subagents' own refusals reach status with their heartbeats
    wait_until(REQUEST, "the victim's refusals are in status", || async {
        let st = status_of(&h.bus).await;
        st.subagents
            .iter()
            .any(|a| a.id == victim && a.refused >= 6)
    })
    .await;
    assert!(!status.subagents.iter().any(|a| a.id == "fake"));
    // both refused deploys are in the audit trail, with who sent them
    wait_until(REQUEST * 2, "the refused deploys are audited", || async {
        let out = run_baton(&h, &["audit", "--json", "--command", "deploy"], REQUEST * 4).await;
        let records: Vec<baton::protocol::AuditRecord> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let refused = |who: &str, verified: bool| {
            records
                .iter()
                .any(|r| r.outcome == "forbidden" && r.who == who && r.verified == verified)
        };
        refused("client", true) && refused("unsigned", false)
    })
    .await;
    // the subagents kept the real broker's epoch: its dispatches still run
    std::fs::write(&gate, "").expect("open the gate");
    for _ in 0..4 {
        order_runs_to_success(&h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_and_tokens_work_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    for (auth, good, bad) in [
        (
            "authorization { users = [ { user: ann, password: \"s3cret-pw\" } ] }",
            Credentials::UserPassword {
                user: "ann".into(),
                password: "s3cret-pw".into(),
            },
            Credentials::UserPassword {
                user: "ann".into(),
                password: "wrong-pw".into(),
            },
        ),
        (
            "authorization { token: \"t0ken-value\" }",
            Credentials::Token("t0ken-value".into()),
            Credentials::Token("wrong-t0ken".into()),
        ),
    ] {
        let store = tempfile::tempdir_in(dir.path()).unwrap();
        let conf = store.path().join("nats.conf");
        let text = format!("jetstream {{ store_dir: {:?} }}\n{auth}\n", store.path());
        std::fs::write(&conf, text).unwrap();
        let options = NatsServerOptions {
            config_file: Some(conf),
            probe_credentials: good.clone(),
            ..Default::default()
        };
        let nats = within(Duration::from_secs(15), "nats", NatsServer::start(options))
            .await
            .expect("nats-server with users");
        let bus = connect(&nats.url(), good.clone())
            .await
            .expect("good credentials");
        within(REQUEST, "flush", bus.flush()).await.expect("flush");
        let Err(err) = connect(&nats.url(), bad).await else {
            panic!("wrong credentials let in");
        };
        let text = err.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(
            !text.contains("wrong-pw") && !text.contains("wrong-t0ken"),
            "{text}"
        );
        // in the URL: used, and never shown
        let (user_url, secret) = match &good {
            Credentials::UserPassword { .. } => (
                nats.url().replace("nats://", "nats://ann:s3cret-pw@"),
                "s3cret-pw",
            ),
            _ => (
                nats.url().replace("nats://", "nats://t0ken-value@"),
                "t0ken-value",
            ),
        };
        connect(&user_url, Credentials::None)
            .await
            .expect("credentials in the URL");
        let wrong_url = user_url.replace(secret, "nope");
        let Err(err) = connect(&wrong_url, Credentials::None).await else {
            panic!("wrong URL credentials let in");
        };
        assert!(!err.to_string().contains("nope"), "{err}");
        assert!(err.to_string().contains("<redacted>"), "{err}");
    }
}

/// A death certificate makes the broker run a subagent's tasks elsewhere at
/// once, so a forged one would run a live task twice. Only the named
/// subagent's identity may send one (the server refuses clients; the broker
/// refuses other subagents), and only for the process it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_death_certificates_are_refused() {
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOBS).await;
    let gate = h.scratch().join("gate");
    let running = running_gate(&h, &gate).await;
    let victim = running.subagent_id.clone().expect("placed");
    let other = if victim == "sub-a" { "sub-b" } else { "sub-a" };
    let instance = running.subagent_instance_id.clone().expect("its process");
    let s = h.bus.subjects().clone();
    let certificate = |instance: &str| DeathCertificate {
        subagent_id: victim.clone(),
        instance_id: instance.to_string(),
        killed: vec![running.task_id.clone().unwrap()],
        survivors: vec![],
        died_at_ms: 1,
        certified_at_ms: 2,
    };
    let client = h.connect_as(Role::Client, None).await;
    let payload = rmp_serde::to_vec_named(&certificate(&instance)).unwrap();
    refused(&client, "client", &s.certificate(), payload).await;
    let thief = h.connect_as(Role::Subagent, Some(other)).await;
    let forged = thief
        .request::<_, CertificateAccepted>(s.certificate(), &certificate(&instance), REQUEST)
        .await;
    forbidden("another subagent", "certificate", forged);
    let own = h.connect_as(Role::Subagent, Some(&victim)).await;
    let wrong = own
        .request::<_, CertificateAccepted>(
            s.certificate(),
            &certificate("no-such-process"),
            REQUEST,
        )
        .await;
    match wrong {
        Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound => {
            assert!(e.error.message.contains("no-such-process"), "{e}")
        }
        other => panic!("a certificate for another process: expected not_found, got {other:?}"),
    }

    let now = order_info(&h.bus, &running.order_id).await.expect("order");
    assert_eq!(now.state, OrderState::Running, "{now:?}");
    assert_eq!(now.attempt, 1, "never run again: {now:?}");
    let status = status_of(&h.bus).await;
    let state = status
        .subagents
        .iter()
        .find(|a| a.id == victim)
        .map(|a| a.state);
    assert_eq!(state, Some(SubagentState::Available), "{status:?}");
    std::fs::write(&gate, "").expect("open the gate");
    let fin = wait_for(Duration::from_secs(15), "the gate order ends", || async {
        order_info(&h.bus, &running.order_id)
            .await
            .filter(|o| o.state.is_final())
    })
    .await;
    assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
    assert_eq!(fin.attempt, 1, "{fin:?}");
}

/// What a subscriber caught on one subject: headers and payloads, in order.
async fn caught(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    use futures::StreamExt;
    let mut all = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        all.push(m);
    }
    all
}

fn has(m: &async_nats::Message, header: &str) -> bool {
    m.headers.as_ref().and_then(|h| h.get(header)).is_some()
}

fn headers_of(m: &async_nats::Message) -> async_nats::HeaderMap {
    m.headers.clone().expect("headers")
}

/// Session codes (`auth/session.rs`): once a subagent and the broker have
/// exchanged one signed request each way, its results and the broker's
/// runs carry a code instead of a signature. On a wide-open server, a code
/// replayed over another payload is refused, and a code for a session no
/// one holds is answered, signed by the broker, "sign it again".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_codes_replace_signatures_and_forged_ones_are_refused() {
    use baton::auth::{verify, SessionKey, Signed, MAC_HEADER, RESIGN_HEADER, SESSION_HEADER};
    use baton::auth::{SIGNATURE_HEADER, SIGNER_HEADER};
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, JOBS).await;
    open_the_server_wide(&mut h).await;
    let s = h.bus.subjects().clone();
    let plain = plain_client(&mut h).await;
    let mut results = plain.subscribe(s.result()).await.expect("subscribe");
    let mut runs = plain.subscribe(s.run("sub-a")).await.expect("subscribe");
    within(REQUEST, "flush", plain.flush())
        .await
        .expect("flush");
    for _ in 0..3 {
        order_runs_to_success(&h).await;
    }
    let (results, runs) = (caught(&mut results).await, caught(&mut runs).await);
    for (what, caught) in [("result", &results), ("run", &runs)] {
        assert!(caught.len() >= 3, "{what}: {} caught", caught.len());
        let (first, last) = (&caught[0], caught.last().unwrap());
        assert!(
            has(first, SIGNATURE_HEADER) && has(first, SESSION_HEADER),
            "the first {what} is signed with its session key: {:?}",
            first.headers
        );
        assert!(
            has(last, MAC_HEADER) && !has(last, SIGNATURE_HEADER),
            "a later {what} carries a code, not a signature: {:?}",
            last.headers
        );
    }
    let request = |subject: String, headers: async_nats::HeaderMap, payload: Vec<u8>| {
        let plain = plain.clone();
        async move {
            let ask = plain.request_with_headers(subject, headers, Bytes::from(payload));
            within(REQUEST, "request", ask).await.expect("an answer")
        }
    };
    let refusal = |reply: &async_nats::Message| -> ErrorReply {
        rmp_serde::from_slice(&reply.payload).expect("an error reply")
    };

    // a coded result replayed over another exit code
    let coded = results.last().unwrap();
    let mut result: TaskResult = rmp_serde::from_slice(&coded.payload).expect("a result");
    result.exit_code = Some(3);
    let payload = rmp_serde::to_vec_named(&result).unwrap();
    let reply = request(s.result(), headers_of(coded), payload).await;
    assert_eq!(refusal(&reply).error.code, ErrorCode::Forbidden);
    assert!(
        !has(&reply, RESIGN_HEADER),
        "the session is known: a forgery"
    );

    // a coded run replayed over another program
    let marker = h.scratch().join("pwned");
    let coded = runs.last().unwrap();
    let mut task: RunTask = rmp_serde::from_slice(&coded.payload).expect("a run");
    task.task_id = "forged-task".into();
    task.program = "touch".into();
    task.args = vec![marker.display().to_string()];
    let payload = rmp_serde::to_vec_named(&task).unwrap();
    let reply = request(s.run("sub-a"), headers_of(coded), payload).await;
    assert_eq!(refusal(&reply).error.code, ErrorCode::Forbidden);

    // a code from a session key no one learned: "sign it again", signed
    // over that very code, and as a reply only
    let coded = results.last().unwrap();
    let mac = coded.headers.as_ref().unwrap().get(MAC_HEADER).unwrap();
    let broker_session = mac.as_str().split_once('.').unwrap().0.to_string();
    let signer = coded.headers.as_ref().unwrap().get(SIGNER_HEADER).unwrap();
    let junk = format!("{broker_session}.AAAA");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SIGNER_HEADER, signer.as_str());
    headers.insert(SESSION_HEADER, SessionKey::generate().public());
    headers.insert(MAC_HEADER, junk.as_str());
    let reply = request(s.result(), headers.clone(), coded.payload.to_vec()).await;
    assert!(has(&reply, RESIGN_HEADER), "{:?}", reply.headers);
    let auth = h.cluster.auth().expect("secure").clone();
    let broker = auth
        .identities()
        .iter()
        .find(|i| i.name == "broker")
        .expect("the broker's identity");
    let reply_headers = reply.headers.as_ref().unwrap();
    let by = reply_headers.get(SIGNER_HEADER).map(|v| v.as_str());
    assert_eq!(by, Some(broker.public_key.as_str()));
    let signature = reply_headers.get(SIGNATURE_HEADER).unwrap().as_str();
    // signed over the request as the broker saw it (schemas/README.md)
    let session = headers.get(SESSION_HEADER).unwrap().as_str().to_string();
    let parts = [
        s.result(),
        signer.as_str().to_string(),
        session,
        junk.clone(),
    ];
    let seen: Vec<String> = parts.iter().map(|p| format!("{}:{p}", p.len())).collect();
    let seen = seen.join(" ");
    let as_reply = Signed {
        answering: Some(&seen),
        ..Signed::new(&reply.subject, &reply.payload)
    };
    assert!(verify(&broker.public_key, as_reply, signature));
    let as_command = Signed::new(&reply.subject, &reply.payload);
    assert!(
        !verify(&broker.public_key, as_command, signature),
        "a reply's signature is no command's"
    );
    // ... so one sent where a command goes is no command: the broker's
    // signed answer to a junk code, with the reply subject set to the
    // subagent's `stop`, does not stop it
    let stop = plain.publish_with_reply_and_headers(
        s.result(),
        s.stop("sub-a"),
        headers,
        coded.payload.clone(),
    );
    within(REQUEST, "publish", stop).await.expect("publish");
    within(REQUEST, "flush", plain.flush())
        .await
        .expect("flush");

    assert!(!marker.exists(), "a forged run ran");
    for _ in 0..2 {
        order_runs_to_success(&h).await;
    }
    let status = status_of(&h.bus).await;
    let sub_a = status.subagents.iter().find(|a| a.id == "sub-a");
    assert!(
        sub_a.is_some_and(|a| a.state == SubagentState::Available),
        "sub-a keeps serving: {sub_a:?}"
    );
}
