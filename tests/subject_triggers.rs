//! Subject triggers with a real nats-server, broker, agents and subagent:
//! messages published while no agent holds the Scheduler role wait in the
//! trigger stream and start one order each once one does; a message that
//! cannot be mapped lands on the dead-letter subject with its reason and
//! the next one still runs; a SIGKILL of the Scheduler loses no message
//! and runs none twice; a paused job's messages wait and run on resume.
//!
//! Each order appends its mapped parameters to a file, so the test counts
//! runs per message from outside Baton.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton::auth::Role;
use baton::bus::Bus;
use baton::protocol::*;
use bytes::Bytes;
use common::*;
use nix::sys::signal::Signal;

const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

const ELECTION: Duration = Duration::from_secs(15);
const STREAM: &str = "baton_triggers";
const CONSUMER: &str = "job_ingest";

/// A job that appends `ID REGION KIND` of each message to `dir/runs`.
fn job(dir: &Path) -> String {
    format!(
        r#"
[[job]]
name = "ingest"
program = "sh"
args = ["-c", 'echo "$BATON_PARAM_ID $BATON_PARAM_REGION $BATON_PARAM_KIND" >> "$BATON_PARAM_FILE"']
[job.params.file]
default = "{}"
[job.params.id]
required = true
[job.params.region]
default = "none"
[job.params.kind]
default = ""
[[job.triggers]]
kind = "subject"
name = "orders.created.>"
params = {{ id = "$.order.id", region = "header:Region", kind = "token:3" }}
"#,
        dir.join("runs").display()
    )
}

/// Runs per message id, and the rest of each id's first line.
fn runs(dir: &Path) -> BTreeMap<String, (usize, String)> {
    let text = std::fs::read_to_string(dir.join("runs")).unwrap_or_default();
    let mut runs: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (id, rest) = line.split_once(' ').unwrap_or((line, ""));
        let entry = runs.entry(id.to_string()).or_insert((0, rest.to_string()));
        entry.0 += 1;
    }
    runs
}

/// Deploys the job and waits until the broker made its consumer, so
/// messages published from now on are kept.
async fn deploy_and_wait_for_consumer(h: &Harness, dir: &Path) {
    deploy(&h.bus, &job(dir)).await;
    wait_for(ELECTION, "the trigger consumer exists", || async {
        h.bus.trigger_backlog(STREAM, CONSUMER).await.ok()
    })
    .await;
}

async fn publish(publisher: &Bus, id: &str) {
    let payload = format!(r#"{{"order":{{"id":"{id}","total":12.5}}}}"#);
    let headers = [("Region".to_string(), "eu".to_string())];
    let sent =
        publisher.publish_with_headers("orders.created.web".into(), &headers, Bytes::from(payload));
    within(REQUEST, "publish", sent).await.expect("published");
}

async fn scheduler(h: &Harness) -> String {
    wait_for(ELECTION, "a Scheduler", || async {
        let status: StatusReply = h
            .bus
            .request(
                h.bus.subjects().status(),
                &StatusRequest::default(),
                REQUEST,
            )
            .await
            .ok()?;
        let on = status
            .agents
            .iter()
            .find(|a| a.role == AgentRole::Scheduler)?;
        Some(on.id.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_no_agent_holds_the_role_start_one_order_each_once_one_does() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    deploy_and_wait_for_consumer(&h, &dir).await;
    let publisher = h.connect_as(Role::Publisher, None).await;
    const N: usize = 20;
    for i in 0..N {
        publish(&publisher, &format!("m{i}")).await;
    }
    within(REQUEST, "flush", publisher.flush()).await.unwrap();
    wait_for(ELECTION, "every message stored", || async {
        let backlog = h.bus.trigger_backlog(STREAM, CONSUMER).await.ok()?;
        (backlog.pending == N as u64).then_some(())
    })
    .await;
    assert!(runs(&dir).is_empty(), "nothing ran without a Scheduler");
    h.cluster
        .spawn("a1", &["agent", "--id", "a1"])
        .expect("agent");
    wait_until(Duration::from_secs(60), "one run per message", || {
        let n = runs(&dir).len();
        async move { n >= N }
    })
    .await;
    holds_throughout(Duration::from_secs(2), "no message runs twice", || {
        let r = runs(&dir);
        async move { r.len() == N && r.values().all(|(n, _)| *n == 1) }
    })
    .await;
    let r = runs(&dir);
    for i in 0..N {
        let (n, rest) = &r[&format!("m{i}")];
        assert_eq!((*n, rest.as_str()), (1, "eu web"), "m{i}");
    }
    let listed: OrderList = h
        .bus
        .request(
            h.bus.subjects().order_list(),
            &ListOrders {
                job: Some("ingest".into()),
                ..Default::default()
            },
            REQUEST,
        )
        .await
        .expect("order list");
    assert_eq!(listed.orders.len(), N, "one order per message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_shaped_message_lands_on_the_dead_letter_subject_and_the_next_still_runs() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    deploy_and_wait_for_consumer(&h, &dir).await;
    h.cluster
        .spawn("a1", &["agent", "--id", "a1"])
        .expect("agent");
    scheduler(&h).await;
    let publisher = h.connect_as(Role::Publisher, None).await;
    let bad = Bytes::from_static(br#"{"order":{"total":3}}"#);
    let sent = publisher.publish_with_headers("orders.created.app".into(), &[], bad.clone());
    within(REQUEST, "publish", sent).await.unwrap();
    publish(&publisher, "after-bad").await;
    wait_until(Duration::from_secs(60), "the next message runs", || {
        let ran = runs(&dir).contains_key("after-bad");
        async move { ran }
    })
    .await;
    let letters = wait_for(ELECTION, "the dead letter is kept", || async {
        let letters = h
            .bus
            .dead_letters(
                "baton_triggers_dead",
                h.bus.subjects().trigger_dead("ingest"),
                10,
            )
            .await
            .ok()?;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.payload, bad, "the payload as published");
    let header = |name: &str| {
        (letter.headers.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("Baton-Reason").as_deref(),
        Some("parameter 'id': $.order.id: no such field in the payload")
    );
    assert_eq!(
        header("Baton-Subject").as_deref(),
        Some("orders.created.app")
    );
    assert!(header("Baton-Sequence").is_some());
    assert_eq!(runs(&dir).len(), 1, "the bad message started nothing");
    let out = run_baton(&h, &["job", "dead-letters", "ingest"], ELECTION).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains("consumer job_ingest: 0 message(s) waiting")
            && text.contains("orders.created.app: parameter 'id': $.order.id: no such field")
            && text.contains(r#"payload: {"order":{"total":3}}"#),
        "{text}"
    );
    let out = run_baton(&h, &["job", "dead-letters", "nothing"], ELECTION).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no consumer job_nothing") && text.contains("no dead letters"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scheduler_loses_no_message_and_runs_none_twice() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    deploy_and_wait_for_consumer(&h, &dir).await;
    for id in ["a1", "a2"] {
        h.cluster.spawn(id, &["agent", "--id", id]).expect("agent");
    }
    let first = scheduler(&h).await;
    let publisher = h.connect_as(Role::Publisher, None).await;
    const N: usize = 60;
    for i in 0..N {
        if i == N / 3 {
            h.cluster
                .signal(&first, Signal::SIGKILL)
                .expect("kill the Scheduler");
        }
        publish(&publisher, &format!("k{i}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    within(REQUEST, "flush", publisher.flush()).await.unwrap();
    wait_until(Duration::from_secs(90), "every message runs", || {
        let n = runs(&dir).len();
        async move { n >= N }
    })
    .await;
    holds_throughout(Duration::from_secs(3), "no message runs twice", || {
        let r = runs(&dir);
        async move { r.len() == N && r.values().all(|(n, _)| *n == 1) }
    })
    .await;
    let next = scheduler(&h).await;
    assert_ne!(next, first, "another agent took over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_jobs_messages_wait_in_the_stream_and_run_on_resume() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let dir = h.scratch();
    deploy_and_wait_for_consumer(&h, &dir).await;
    h.cluster
        .spawn("a1", &["agent", "--id", "a1"])
        .expect("agent");
    scheduler(&h).await;
    let out = run_baton(&h, &["job", "pause", "ingest"], ELECTION).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let publisher = h.connect_as(Role::Publisher, None).await;
    for i in 0..3 {
        publish(&publisher, &format!("p{i}")).await;
    }
    within(REQUEST, "flush", publisher.flush()).await.unwrap();
    wait_for(ELECTION, "the messages wait in the stream", || async {
        let backlog = h.bus.trigger_backlog(STREAM, CONSUMER).await.ok()?;
        (backlog.pending == 3).then_some(())
    })
    .await;
    assert!(runs(&dir).is_empty(), "nothing ran while paused");
    let out = run_baton(&h, &["job", "resume", "ingest"], ELECTION).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_until(Duration::from_secs(60), "the waiting messages run", || {
        let n = runs(&dir).len();
        async move { n >= 3 }
    })
    .await;
    holds_throughout(Duration::from_secs(2), "each once", || {
        let r = runs(&dir);
        async move { r.len() == 3 && r.values().all(|(n, _)| *n == 1) }
    })
    .await;
}
