//! End to end: real nats-server, real `baton broker` and `baton subagent`
//! processes, and clients that speak only the wire protocol (or the CLI).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use baton::auth::Role;
use baton::bus::{decode, Bus, Encoding};
use baton::protocol::*;
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

/// `n` parameters declared required, as `JobSpec` wants them.
fn required(names: &[&str]) -> BTreeMap<String, ParamSpec> {
    names
        .iter()
        .map(|n| {
            let spec = ParamSpec {
                required: true,
                ..ParamSpec::default()
            };
            (n.to_string(), spec)
        })
        .collect()
}

fn params(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// What one order's events looked like, in arrival order.
#[derive(Debug, Default)]
struct Seen {
    accepted: bool,
    started: Vec<TaskStarted>,
    logs: Vec<TaskLog>,
    finished: Option<OrderFinished>,
    /// Events of this order that arrived after its `finished` event.
    after_finished: Vec<EventKind>,
}

/// Records one raw event into `seen`; true when it was a `finished` event.
fn record(seen: &mut HashMap<String, Seen>, s: &Subjects, subject: &str, payload: &[u8]) -> bool {
    let (_, order, kind) = s
        .parse_event(subject)
        .unwrap_or_else(|| panic!("not an event subject: {subject}"));
    let entry = seen.entry(order.to_string()).or_default();
    if entry.finished.is_some() {
        entry.after_finished.push(kind);
    }
    let mp = Encoding::MessagePack;
    match kind {
        EventKind::Accepted => {
            let e: OrderAccepted = decode(mp, payload).expect("accepted event decodes");
            assert_eq!(e.order_id, order);
            entry.accepted = true;
        }
        EventKind::Started => {
            let e: TaskStarted = decode(mp, payload).expect("started event decodes");
            assert!(entry.accepted, "{order}: started before accepted");
            entry.started.push(e);
        }
        EventKind::Changed => panic!("{order}: a changed event for a plain order"),
        EventKind::Log => {
            let e: TaskLog = decode(mp, payload).expect("log event decodes");
            assert!(
                !entry.started.is_empty(),
                "{order}: log line before started"
            );
            entry.logs.push(e);
        }
        EventKind::Finished => {
            let e: OrderFinished = decode(mp, payload).expect("finished event decodes");
            assert!(entry.finished.is_none(), "two finished events for {order}");
            entry.finished = Some(e);
            return true;
        }
    }
    false
}

/// A client made of async-nats and the wire types only, as a program in
/// another language would be: no `Bus`, nothing of the broker's.
struct PlainClient {
    nats: async_nats::Client,
}

impl PlainClient {
    /// Connects with the nkey seed in `seed_file`, replies coming to the
    /// identity's own inbox (`_INBOX.<public key>`), as Baton's roles allow.
    async fn connect(url: &str, seed_file: &std::path::Path) -> PlainClient {
        let seed = std::fs::read_to_string(seed_file).expect("read seed");
        let key = nkeys::KeyPair::from_seed(seed.trim()).expect("seed");
        let connect = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_string())
            .custom_inbox_prefix(format!("_INBOX.{}", key.public_key()))
            .connect(url);
        let nats = within(REQUEST, "connect", connect)
            .await
            .expect("plain client connects");
        PlainClient { nats }
    }

    /// One request in JSON or MessagePack; an `error` key makes it an `ErrorReply`.
    async fn request<Req, Resp>(
        &self,
        subject: String,
        json: bool,
        body: &Req,
    ) -> Result<Resp, ErrorReply>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let mut headers = async_nats::HeaderMap::new();
        let payload = if json {
            headers.insert("Content-Type", "application/json");
            serde_json::to_vec(body).unwrap()
        } else {
            rmp_serde::to_vec_named(body).unwrap()
        };
        let send = self
            .nats
            .request_with_headers(subject.clone(), headers, payload.into());
        let reply = within(REQUEST, "plain request", send)
            .await
            .unwrap_or_else(|e| panic!("no reply on {subject}: {e}"));
        let value: serde_json::Value = if json {
            serde_json::from_slice(&reply.payload).expect("JSON reply to a JSON request")
        } else {
            rmp_serde::from_slice(&reply.payload).expect("MessagePack reply")
        };
        if value.get("error").is_some() {
            Err(serde_json::from_value(value).expect("an ErrorReply"))
        } else {
            Ok(serde_json::from_value(value).expect("the reply type"))
        }
    }
}

async fn get_order(bus: &Bus, order_id: &str) -> Result<OrderInfo, baton::bus::BusError> {
    let request = GetOrder {
        order_id: order_id.to_string(),
    };
    let get = bus.request(bus.subjects().order_get(), &request, REQUEST);
    within(REQUEST + Duration::from_secs(1), "order.get", get).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_orders_from_a_plain_client() {
    const ORDERS: usize = 100;
    let mut h = cluster(&["sub-a", "sub-b"]).await;
    let seed = h.seed(Role::Admin, None);
    let bus = &h.bus;
    let s = bus.subjects().clone();

    let job = JobSpec {
        name: "echo-exit".into(),
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "echo line-$BATON_PARAM_N; echo err-$BATON_PARAM_N >&2; exit $BATON_PARAM_CODE".into(),
        ],
        env: BTreeMap::new(),
        working_dir: None,
        timeout_ms: Some(30_000),
        params: required(&["n", "code"]),
        description: None,
        cluster: None,
        restartable: true,
        triggers: Vec::new(),
        misfire: Default::default(),
        concurrency: Default::default(),
        retry: None,
        spread: None,
        notify: Default::default(),
    };
    let client = PlainClient::connect(&h.nats_url(), &seed).await;
    let request = DeployRequest {
        dry_run: false,
        jobs: vec![job],
        clusters: vec![],
        workflows: vec![],
        ..Default::default()
    };
    // a deploy needs an admin's signature, which a plain client cannot give
    let refused = client
        .request::<_, DeployReply>(s.deploy(), true, &request)
        .await
        .expect_err("an unsigned deploy");
    assert_eq!(refused.error.code, ErrorCode::Forbidden, "{refused}");
    let deployed: DeployReply = within(
        REQUEST,
        "deploy",
        bus.request(s.deploy(), &request, REQUEST),
    )
    .await
    .expect("deploy signed by the admin");
    assert_eq!(deployed.deployed, vec!["echo-exit".to_string()]);

    // subscribe before submitting, so no event is missed
    let subscribe = client.nats.subscribe("baton.events.echo-exit.>");
    let mut events = within(REQUEST, "subscribe", subscribe)
        .await
        .expect("subscribe to events")
        .map(|m| (m.subject.to_string(), m.payload));

    let submits = (0..ORDERS).map(|i| {
        let json = i % 2 == 0;
        let code = if i % 3 == 0 { 1 } else { 0 };
        let order = SubmitOrder {
            job: "echo-exit".into(),
            params: params(&[("n", i.to_string()), ("code", code.to_string())]),
            request_id: None,
            slot_ms: None,
        };
        let client = &client;
        async move {
            let reply: SubmitReply = client
                .request("baton.api.submit".into(), json, &order)
                .await
                .unwrap_or_else(|e| panic!("submit {i} (json: {json}) refused: {e}"));
            (i, code, reply)
        }
    });
    let replies = within(
        Duration::from_secs(30),
        "100 submits",
        futures::future::join_all(submits),
    )
    .await;
    let mut orders: HashMap<String, (usize, i32)> = HashMap::new();
    for (i, code, reply) in replies {
        assert_eq!(reply.job, "echo-exit");
        assert_eq!(reply.state, OrderState::Accepted);
        assert!(!reply.duplicate);
        assert!(
            orders.insert(reply.order_id.clone(), (i, code)).is_none(),
            "order id {} given twice",
            reply.order_id
        );
    }

    let mut seen: HashMap<String, Seen> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut finished = 0;
    while finished < ORDERS {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let Ok(Some((subject, payload))) = next else {
            panic!("only {finished} of {ORDERS} orders finished within 60s");
        };
        if record(&mut seen, &s, &subject, &payload) {
            finished += 1;
        }
    }

    let mut used = BTreeSet::new();
    for (order_id, (i, code)) in &orders {
        let e = seen
            .get(order_id)
            .unwrap_or_else(|| panic!("no events for order {i} ({order_id})"));
        let fin = e.finished.as_ref().expect("finished");
        let expected_state = if *code == 0 {
            OrderState::Succeeded
        } else {
            OrderState::Failed
        };
        assert_eq!(fin.state, expected_state, "order {i}: {fin:?}");
        assert_eq!(fin.exit_code, Some(*code), "order {i}: {fin:?}");
        assert!(!fin.timed_out, "order {i}: {fin:?}");
        assert_eq!(fin.attempt, 1, "order {i}: {fin:?}");
        assert!(e.accepted, "order {i}: no accepted event");
        assert!(
            e.after_finished.is_empty(),
            "order {i}: events after finished: {:?}",
            e.after_finished
        );
        assert_eq!(e.started.len(), 1, "order {i}: {:?}", e.started);
        let started = &e.started[0];
        assert!(
            ["sub-a", "sub-b"].contains(&started.subagent_id.as_str()),
            "order {i} started on {}",
            started.subagent_id
        );
        assert_eq!(
            fin.subagent_id.as_deref(),
            Some(started.subagent_id.as_str())
        );
        used.insert(started.subagent_id.clone());

        let lines: Vec<(LogStream, &str)> =
            e.logs.iter().map(|l| (l.stream, l.line.as_str())).collect();
        let (out, err) = (format!("line-{i}"), format!("err-{i}"));
        assert!(
            lines.contains(&(LogStream::Stdout, out.as_str())),
            "order {i}: stdout line missing before finished: {lines:?}"
        );
        assert!(
            lines.contains(&(LogStream::Stderr, err.as_str())),
            "order {i}: stderr line missing before finished: {lines:?}"
        );
        assert_eq!(lines.len(), 2, "order {i}: {lines:?}");
        let seqs: BTreeSet<u64> = e.logs.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, BTreeSet::from([1, 2]), "order {i}: log seq numbers");
        for log in &e.logs {
            assert_eq!(
                log.task_id, started.task_id,
                "order {i}: log of another task"
            );
            assert_eq!(log.subagent_id, started.subagent_id);
        }
    }
    assert_eq!(
        used,
        BTreeSet::from(["sub-a".to_string(), "sub-b".to_string()]),
        "both subagents ran tasks"
    );

    // the broker answers lookups with the final state
    let (order_id, (i, _)) = orders.iter().find(|(_, (i, _))| *i == 3).expect("order 3");
    let info = get_order(bus, order_id).await.expect("order.get");
    assert_eq!(&info.order_id, order_id);
    assert_eq!(info.job, "echo-exit");
    assert_eq!(info.state, OrderState::Failed);
    assert_eq!(info.exit_code, Some(1));
    assert_eq!(info.attempt, 1);
    assert_eq!(info.params.get("n"), Some(&i.to_string()));
    let fin = seen[order_id].finished.as_ref().unwrap();
    assert_eq!(info.subagent_id, fin.subagent_id);
    assert!(info.finished_at_ms.is_some() && info.started_at_ms.is_some());

    let status: StatusReply = within(
        REQUEST * 2,
        "status",
        bus.request(s.status(), &StatusRequest::default(), REQUEST),
    )
    .await
    .expect("status");
    let counts = &status.orders;
    assert_eq!(
        (counts.succeeded + counts.failed, counts.failed),
        (ORDERS as u64, (ORDERS as u64).div_ceil(3)),
        "{counts:?}"
    );
    assert_eq!(status.malformed_messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_reports_outcome() {
    let h = cluster(&["sub-a"]).await;
    let limit = Duration::from_secs(30);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let jobs = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jobs.toml");
    let out = run_baton(&h, &["deploy", jobs], limit).await;
    assert_eq!(out.status.code(), Some(0), "deploy: {out:?}");
    assert!(text(&out.stdout).contains("hello"), "{out:?}");

    let out = run_baton(&h, &["submit", "hello", "-p", "who=Test", "--wait"], limit).await;
    assert_eq!(out.status.code(), Some(0), "submit hello: {out:?}");
    assert!(
        text(&out.stdout).lines().any(|l| l == "hello, Test"),
        "stdout: {:?}",
        text(&out.stdout)
    );

    let out = run_baton(&h, &["submit", "fail", "--wait"], limit).await;
    assert_eq!(out.status.code(), Some(1), "submit fail: {out:?}");
    assert!(
        text(&out.stderr).contains("something went wrong"),
        "stderr: {}",
        text(&out.stderr)
    );

    let out = run_baton(&h, &["submit", "nope"], limit).await;
    assert_eq!(out.status.code(), Some(2), "submit nope: {out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown_job") && err.contains("no job or workflow named 'nope'"),
        "stderr: {err}"
    );

    let out = run_baton(&h, &["submit", "hello", "-p", "cmd=x"], limit).await;
    assert_eq!(out.status.code(), Some(2), "submit -p cmd=x: {out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("'cmd'") && err.contains("invalid_param"),
        "stderr: {err}"
    );

    let broken = h.scratch().join("broken.toml");
    let toml = "[[job]]\nname = \"broken-job\"\nprogram = \"echo\"\nargs = [\"{{missing}}\"]\n";
    std::fs::write(&broken, toml).expect("write broken.toml");
    let out = run_baton(&h, &["deploy", broken.to_str().unwrap()], limit).await;
    assert_eq!(out.status.code(), Some(2), "deploy broken: {out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(broken.to_str().unwrap()), "file: {err}");
    assert!(err.contains("broken-job"), "job: {err}");
    assert!(err.contains("'args'"), "field: {err}");
    assert!(err.contains("missing"), "placeholder: {err}");

    // nothing of the broken file reached the broker
    let status: StatusReply = within(
        REQUEST * 2,
        "status",
        h.bus.request(
            h.bus.subjects().status(),
            &StatusRequest::default(),
            REQUEST,
        ),
    )
    .await
    .expect("status");
    assert!(
        !status.jobs.contains(&"broken-job".to_string()),
        "{:?}",
        status.jobs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_kills_the_process() {
    let h = cluster(&["sub-a"]).await;
    let toml =
        "[[job]]\nname = \"sleeper\"\nprogram = \"sleep\"\nargs = [\"30\"]\ntimeout = \"300ms\"\n";
    deploy(&h.bus, toml).await;
    let (fin, _) = run_to_finish(&h.bus, "sleeper", BTreeMap::new()).await;
    assert!(fin.timed_out, "{fin:?}");
    assert_eq!(fin.state, OrderState::Failed, "{fin:?}");
    assert_eq!(fin.signal, Some(Signal::SIGTERM as i32), "{fin:?}");
    assert_eq!(fin.exit_code, None, "{fin:?}");
    let ran = fin.duration_ms.expect("duration");
    assert!((300..30_000).contains(&ran), "ran for {ran} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_subagent_kills_its_tasks() {
    // a quick loss detection keeps the test short
    let fast = [
        ("BATON_SUBAGENT__HEARTBEAT_INTERVAL", "100ms"),
        ("BATON_BROKER__HEARTBEAT_INTERVAL", "100ms"),
        ("BATON_BROKER__SUBAGENT_TIMEOUT", "1s"),
    ];
    let mut h = cluster_with_env(&["sub-a"], &fast).await;
    let toml = r#"
[[job]]
name = "pid-sleeper"
program = "sh"
args = ["-c", "sleep 60 & echo $! > \"$BATON_PARAM_FILE.child\"; echo $$ > \"$BATON_PARAM_FILE.tmp\" && mv \"$BATON_PARAM_FILE.tmp\" \"$BATON_PARAM_FILE\"; wait"]
restartable = false
[job.params.file]
required = true
"#;
    deploy(&h.bus, toml).await;
    let pid_file = h.scratch().join("task.pid");
    let order = SubmitOrder {
        job: "pid-sleeper".into(),
        params: params(&[("file", pid_file.display().to_string())]),
        request_id: None,
        slot_ms: None,
    };
    let bus = h.bus.clone();
    let reply: SubmitReply = within(
        REQUEST * 2,
        "submit",
        bus.request(bus.subjects().submit(), &order, REQUEST),
    )
    .await
    .expect("submit");

    let pid: i32 = wait_for(Duration::from_secs(20), "the task wrote its pid", || {
        let text = std::fs::read_to_string(&pid_file).ok();
        async move { text.and_then(|t| t.trim().parse().ok()) }
    })
    .await;
    assert!(!process_gone(pid), "task {pid} runs");
    wait_until(Duration::from_secs(10), "the order is running", || {
        let (bus, id) = (bus.clone(), reply.order_id.clone());
        async move {
            get_order(&bus, &id)
                .await
                .is_ok_and(|o| o.state == OrderState::Running)
        }
    })
    .await;

    h.cluster
        .signal("sub-a", Signal::SIGKILL)
        .expect("kill -9 sub-a");

    wait_until(Duration::from_secs(10), "the task process is gone", || {
        std::future::ready(process_gone(pid))
    })
    .await;
    // and what the task started, too (the task guard kills the whole group)
    let child: i32 = std::fs::read_to_string(pid_file.with_extension("pid.child"))
        .expect("the task wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    wait_until(Duration::from_secs(10), "the task's child is gone", || {
        std::future::ready(process_gone(child))
    })
    .await;

    let info = wait_for(Duration::from_secs(15), "the order failed", || {
        let (bus, id) = (bus.clone(), reply.order_id.clone());
        async move {
            get_order(&bus, &id)
                .await
                .ok()
                .filter(|o| o.state.is_final())
        }
    })
    .await;
    assert_eq!(info.state, OrderState::Failed, "{info:?}");
    let reason = info.reason.clone().unwrap_or_default();
    assert!(reason.contains("subagent lost"), "{info:?}");
    assert!(reason.contains("sub-a"), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_no_subagent_can_take_says_why_it_waits() {
    let h = cluster(&["sub-a"]).await;
    let toml = r#"
[[cluster]]
name = "zone-b"
mode = "round-robin"
members = [{ labels = { zone = "b" } }]

[[job]]
name = "in-b"
program = "true"
cluster = "zone-b"
"#;
    let file = h.scratch().join("zone-b.toml");
    std::fs::write(&file, toml).expect("write the deployment");
    let limit = Duration::from_secs(30);
    let out = run_baton(&h, &["deploy", file.to_str().expect("a path")], limit).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("warning: cluster 'zone-b': no known subagent matches it"),
        "{warned}"
    );
    let order_id = submit(&h.bus, "in-b", &[]).await;
    let info = get_order(&h.bus, &order_id).await.expect("the order");
    assert_eq!(info.state, OrderState::Accepted);
    let reason = info.reason.unwrap_or_default();
    assert!(
        reason.contains("no known subagent matches cluster 'zone-b'"),
        "{reason}"
    );
    let out = run_baton(&h, &["order", "show", &order_id], limit).await;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("reason    waiting: no known subagent"),
        "{shown}"
    );
    let out = run_baton(&h, &["order", "list"], limit).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("waiting: no known subagent"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_knows_its_task_id_attempt_and_subagent() {
    let h = cluster(&["sub-a"]).await;
    let out = h.scratch().join("env");
    let toml = format!(
        r#"
[[job]]
name = "env"
program = "sh"
args = ["-c", 'echo "$BATON_TASK_ID $BATON_ATTEMPT $BATON_SUBAGENT" > "{}"']
"#,
        out.display()
    );
    deploy(&h.bus, &toml).await;
    let order_id = submit(&h.bus, "env", &[]).await;
    let seen = wait_for(Duration::from_secs(30), "the task ran", || async {
        let text = std::fs::read_to_string(&out).ok()?;
        text.ends_with('\n').then_some(text)
    })
    .await;
    assert_eq!(seen.trim(), format!("{order_id}-1 1 sub-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_of_an_order_id_names_it_everywhere() {
    let h = cluster(&["sub-a"]).await;
    let toml = r#"
[[cluster]]
name = "nowhere"
mode = "round-robin"
members = [{ subagent = "no-such-subagent" }]

[[job]]
name = "parked"
program = "true"
cluster = "nowhere"
"#;
    deploy(&h.bus, toml).await;
    let order_id = submit(&h.bus, "parked", &[]).await;
    // as `baton watch` prints it
    let short = &order_id[..12];
    let limit = Duration::from_secs(30);
    let out = run_baton(&h, &["order", "show", short], limit).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&order_id),
        "{out:?}"
    );
    let out = run_baton(&h, &["order", "cancel", short], limit).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let info = get_order(&h.bus, &order_id).await.expect("the order");
    assert_eq!(info.state, OrderState::Cancelled);
    let out = run_baton(&h, &["order", "show", "zzzz"], limit).await;
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no order"),
        "{out:?}"
    );
}

/// A client that forgets the `Content-Type` header still gets JSON read as
/// JSON and answered in JSON; and an order id is the UUIDv5 of
/// `PREFIX/REQUEST_ID` (URL namespace), so a client can follow an order's
/// events before its submit is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_without_a_header_is_answered_in_json_and_order_ids_derive_from_request_ids() {
    let mut h = cluster(&["sub-a"]).await;
    deploy(&h.bus, "[[job]]\nname = \"hello\"\nprogram = \"true\"\n").await;
    let seed = h.seed(Role::Client, None);
    let client = PlainClient::connect(&h.nats_url(), &seed).await;
    let s = h.bus.subjects().clone();
    let ask = |subject: String, body: &'static str| {
        let nats = client.nats.clone();
        async move {
            let reply = within(
                REQUEST,
                "a JSON request without a header",
                nats.request(subject, body.into()),
            )
            .await
            .expect("a reply");
            serde_json::from_slice::<serde_json::Value>(&reply.payload)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.payload))
        }
    };
    let refused = ask(s.submit(), r#" {"job":"nope"}"#).await;
    assert_eq!(refused["error"]["code"], "unknown_job", "{refused}");
    let accepted = ask(s.submit(), r#"{"job":"hello","request_id":"req-1"}"#).await;
    let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"baton/req-1").to_string();
    assert_eq!(accepted["order_id"], expected.as_str(), "{accepted}");
    let status = ask(s.status(), "{}").await;
    assert!(status["subagents"].is_array(), "{status}");
}
