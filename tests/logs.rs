//! Task logs kept in JetStream: `baton order logs ID` prints a finished
//! order's every line in order, stdout and stderr apart (or as JSON);
//! `--follow` prints a running order's lines as they come and ends with the
//! order; an unknown order is a clear error.
//!
//! The broker creates the log stream when it becomes active; the test makes
//! sure it is there (and that creating it again is harmless) before any task
//! runs.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use baton::config::Config;
use baton::protocol::*;
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const JOBS: &str = r#"
[[job]]
name = "chatty"
program = "sh"
args = ["-c", "for i in 1 2 3 4 5 6; do echo out-$i; echo err-$i >&2; done"]

[[job]]
name = "gated"
program = "sh"
args = ["-c", "echo first; while [ ! -e \"$BATON_PARAM_GATE\" ]; do sleep 0.05; done; echo second >&2; echo third"]
[job.params.gate]
required = true
"#;

/// Bound on one `baton order logs` run that should end by itself.
const CLI: Duration = Duration::from_secs(20);

async fn logs_cluster() -> Harness {
    let h = cluster(&["sub-1"]).await;
    let config = Config::default();
    let stream = config.log_stream();
    let retention = config.nats.log_retention;
    let ensure = h.bus.ensure_log_stream(&stream, retention);
    within(REQUEST, "log stream", ensure)
        .await
        .expect("log stream created");
    // idempotent
    let again = h.bus.ensure_log_stream(&stream, retention);
    within(REQUEST, "log stream again", again)
        .await
        .expect("log stream exists");
    deploy(&h.bus, JOBS).await;
    h
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

fn numbered(prefix: &str) -> Vec<String> {
    (1..=6).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_orders_lines_are_printed_in_order() {
    let h = logs_cluster().await;
    let (finished, live) = run_to_finish(&h.bus, "chatty", BTreeMap::new()).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");
    assert_eq!(live.len(), 12, "{live:?}");
    let id = finished.order_id.as_str();

    let out = run_baton(&h, &["order", "logs", id], CLI).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out.stdout), numbered("out"));
    assert_eq!(lines(&out.stderr), numbered("err"));

    // as JSON: every line, stdout and stderr, in the order they were published
    let out = run_baton(&h, &["order", "logs", id, "--json"], CLI).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let stored: Vec<TaskLog> = lines(&out.stdout)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a TaskLog as JSON"))
        .collect();
    assert_eq!(stored, live);

    // --step names the job for now
    let out = run_baton(&h, &["order", "logs", id, "--step", "chatty"], CLI).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out.stdout), numbered("out"));
    let out = run_baton(&h, &["order", "logs", id, "--step", "other"], CLI).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no lines of step other") && stderr.contains("chatty"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_lines_as_they_come_and_ends_with_the_order() {
    let h = logs_cluster().await;
    let gate = h.scratch().join("gate");
    let id = submit(&h.bus, "gated", &[("gate", gate.display().to_string())]).await;

    let mut command = tokio::process::Command::from(baton_cmd(&h));
    command
        .args(["order", "logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn baton order logs --follow");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // the task waits for the gate: this line can only come from following
    let first = within(CLI, "the first line", stdout.next_line()).await;
    assert_eq!(first.expect("read stdout").as_deref(), Some("first"));
    assert!(
        order_info(&h.bus, &id)
            .await
            .is_some_and(|o| !o.state.is_final()),
        "the order still runs"
    );

    std::fs::write(&gate, "").expect("open the gate");
    let third = within(CLI, "the last line", stdout.next_line()).await;
    assert_eq!(third.expect("read stdout").as_deref(), Some("third"));
    // the order's end ends the command
    let end = within(CLI, "stdout closes", stdout.next_line()).await;
    assert_eq!(end.expect("read stdout"), None);
    let out = within(CLI, "follow exits", child.wait_with_output())
        .await
        .expect("wait for baton");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out.stderr), ["second"]);
    let info = order_info(&h.bus, &id).await.expect("order.get");
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_is_a_clear_error() {
    let h = logs_cluster().await;
    for args in [
        &["order", "logs", "0000-nope"][..],
        &["order", "logs", "0000-nope", "--follow"][..],
    ] {
        let out = run_baton(&h, args, CLI).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "no logs for order 0000-nope: unknown order, not run yet, \
                 or older than the retention (7 days)"
            ),
            "{args:?}: {stderr}"
        );
    }
    let out = run_baton(&h, &["order", "logs", "a.*"], CLI).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an order id"),
        "{out:?}"
    );
}
