//! Prometheus metrics: a live cluster (nats-server, a broker, a subagent
//! and an agent, each serving `/metrics` with `--metrics-listen`) is
//! scraped over HTTP while it runs orders and fires a trigger, and the
//! counters, gauges and histograms are seen to move.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough for an election and a first fire after a broker start.
const FIRE: Duration = Duration::from_secs(20);
const SCRAPE: Duration = Duration::from_secs(15);

/// A port free now on 127.0.0.1 (the process given it binds it next).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `GET /metrics` on `port`: the body, or why not.
async fn scrape(port: u16) -> Result<String, String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("not 200: {head}"));
        }
        if !head.to_lowercase().contains("text/plain; version=0.0.4") {
            return Err(format!("not the Prometheus text format: {head}"));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Every sample of a scrape: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Waits until the sample `series` scraped from `port` meets `ok`.
async fn wait_sample(port: u16, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let what = format!("{series} on port {port}");
    wait_for(SCRAPE, &what, || async {
        let text = scrape(port).await.ok()?;
        samples(&text).get(series).copied().filter(|v| ok(*v))
    })
    .await
}

const JOBS: &str = r#"
[[cluster]]
name = "nowhere"
mode = "round-robin"
members = [{ labels = { zone = "none" } }]

[[job]]
name = "hello"
program = "echo"
args = ["hello"]

[[job]]
name = "nap"
program = "sleep"
args = ["3"]

[[job]]
name = "stuck"
program = "true"
cluster = "nowhere"

[[job]]
name = "tick"
program = "true"
[[job.triggers]]
kind = "interval"
every = "1s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_cluster_serves_metrics_that_move() {
    let (broker, sub, agent) = (free_port(), free_port(), free_port());
    let env = [
        ("BATON_METRICS__LISTEN", broker.to_string()),
        ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "1s".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = cluster_with_env(&[], &env).await;
    let (sub_port, agent_port) = (sub.to_string(), agent.to_string());
    h.cluster
        .spawn_subagent("sub-1", &["--metrics-listen", &sub_port])
        .expect("spawn subagent");
    h.cluster
        .spawn_agent("agent-1", &["--metrics-listen", &agent_port])
        .expect("spawn agent");
    let ready = h.cluster.wait_for_subagents(&h.bus, 1);
    within(Duration::from_secs(30), "subagent up", ready)
        .await
        .expect("subagent registers");

    // the broker: active, with its epoch and the subagent known
    wait_sample(broker, "baton_broker_active", |v| v == 1.0).await;
    wait_sample(broker, "baton_broker_epoch", |v| v > 0.0).await;
    let active = r#"baton_broker_leadership_changes_total{change="active"}"#;
    wait_sample(broker, active, |v| v == 1.0).await;
    wait_sample(broker, r#"baton_subagents{state="available"}"#, |v| {
        v == 1.0
    })
    .await;
    let reply = deploy(&h.bus, JOBS).await;
    assert!(!reply.deployed.is_empty(), "deployed: {reply:?}");

    // an order accepted and finished moves the counters and histograms
    let (finished, _) = run_to_finish(&h.bus, "hello", BTreeMap::new()).await;
    assert_eq!(finished.state, baton::protocol::OrderState::Succeeded);
    let accepted = r#"baton_orders_accepted_total{job="hello"}"#;
    wait_sample(broker, accepted, |v| v == 1.0).await;
    let done = r#"baton_orders_finished_total{job="hello",outcome="succeeded"}"#;
    wait_sample(broker, done, |v| v == 1.0).await;
    wait_sample(broker, "baton_dispatch_latency_seconds_count", |v| v >= 1.0).await;
    wait_sample(broker, "baton_task_duration_seconds_count", |v| v >= 1.0).await;
    let created = r#"baton_journal_write_seconds_count{op="create"}"#;
    wait_sample(broker, created, |v| v >= 1.0).await;
    let written = r#"baton_journal_write_seconds_count{op="write"}"#;
    wait_sample(broker, written, |v| v >= 1.0).await;
    wait_sample(sub, "baton_subagent_tasks_started_total", |v| v >= 1.0).await;
    let ok = r#"baton_subagent_tasks_finished_total{outcome="succeeded"}"#;
    wait_sample(sub, ok, |v| v >= 1.0).await;

    // a running task shows on both sides while it runs
    let nap = submit(&h.bus, "nap", &[]).await;
    wait_sample(sub, "baton_subagent_running_tasks", |v| v == 1.0).await;
    wait_sample(broker, "baton_running_tasks", |v| v == 1.0).await;
    let running = r#"baton_orders{state="running"}"#;
    wait_sample(broker, running, |v| v >= 1.0).await;

    // an order no subagent can take waits in its cluster's queue
    let _stuck = submit(&h.bus, "stuck", &[]).await;
    wait_sample(broker, r#"baton_queue_depth{cluster="nowhere"}"#, |v| {
        v == 1.0
    })
    .await;
    let age = r#"baton_queue_oldest_age_seconds{cluster="nowhere"}"#;
    wait_sample(broker, age, |v| v > 0.0).await;
    let members = r#"baton_cluster_available_members{cluster="nowhere"}"#;
    wait_sample(broker, members, |v| v == 0.0).await;
    let every = r#"baton_cluster_available_members{cluster="*"}"#;
    wait_sample(broker, every, |v| v == 1.0).await;

    // the Scheduler: elected, firing the interval trigger on time
    let on = r#"baton_scheduler_role_changes_total{change="on"}"#;
    wait_sample(broker, on, |v| v >= 1.0).await;
    wait_sample(agent, "baton_agent_scheduler", |v| v == 1.0).await;
    let what = "a slot fired";
    let fired = wait_for(FIRE, what, || async {
        let s = samples(&scrape(agent).await.ok()?);
        let on_time = s.get(r#"baton_scheduler_slots_total{outcome="fired",reason="on_time"}"#);
        let late = s.get(r#"baton_scheduler_slots_total{outcome="fired",reason="late"}"#);
        let n = on_time.unwrap_or(&0.0) + late.unwrap_or(&0.0);
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(fired >= 1.0);
    let lateness = "baton_scheduler_fire_lateness_seconds_count";
    wait_sample(agent, lateness, |v| v >= 1.0).await;
    let ticks = r#"baton_orders_accepted_total{job="tick"}"#;
    wait_sample(broker, ticks, |v| v >= 1.0).await;

    // every process has the bus's counters
    for port in [broker, sub, agent] {
        let text = scrape(port).await.expect("scrape");
        let s = samples(&text);
        assert!(
            s.contains_key(r#"baton_messages_refused_total{reason="sender"}"#),
            "{text}"
        );
        assert!(
            s.contains_key(r#"baton_messages_dropped_total{reason="unstored"}"#),
            "{text}"
        );
    }
    // the nap order ends; its task leaves the gauges
    let nap_done = || async {
        let info = order_info(&h.bus, &nap).await?;
        info.state.is_final().then_some(())
    };
    wait_for(Duration::from_secs(15), "nap finished", nap_done).await;
    wait_sample(sub, "baton_subagent_running_tasks", |v| v == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_by_default_and_a_bad_address_is_refused() {
    let h = cluster(&[]).await;
    let out = run_baton(
        &h,
        &["broker", "--metrics-listen", "localhost:x"],
        Duration::from_secs(20),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("HOST:PORT"), "stderr: {stderr}");
}
