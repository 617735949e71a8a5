//! Results a task prints as `::baton-result KEY=VALUE` lines: the finished
//! order holds exactly the valid ones (`order.get`, `baton order show`),
//! and every line, the malformed one too, is still in the task's log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use baton::protocol::*;
use common::*;

const JOBS: &str = r#"
[[job]]
name = "reporter"
program = "sh"
args = ["-c", "echo working; echo '::baton-result rows=42'; echo '::baton-result bad key=1'; echo '::baton-result file=/tmp/out a.csv'"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_order_holds_the_results_its_task_printed() {
    let h = cluster(&["sub-1"]).await;
    deploy(&h.bus, JOBS).await;
    let (finished, logs) = run_to_finish(&h.bus, "reporter", BTreeMap::new()).await;
    assert_eq!(finished.state, OrderState::Succeeded, "{finished:?}");

    let info = order_info(&h.bus, &finished.order_id)
        .await
        .expect("order.get answered");
    let expected: BTreeMap<String, String> = [
        ("rows".to_string(), "42".to_string()),
        ("file".to_string(), "/tmp/out a.csv".to_string()),
    ]
    .into();
    assert_eq!(info.outputs, expected);

    // every line is still published; the malformed one is followed by a warning
    let lines: Vec<(LogStream, &str)> = logs.iter().map(|l| (l.stream, l.line.as_str())).collect();
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == LogStream::Stdout)
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(
        stdout,
        [
            "working",
            "::baton-result rows=42",
            "::baton-result bad key=1",
            "::baton-result file=/tmp/out a.csv",
        ]
    );
    assert!(
        lines
            .iter()
            .any(|(s, l)| *s == LogStream::Stderr && l.starts_with("baton: result line ignored")),
        "{lines:?}"
    );

    let out = run_baton(
        &h,
        &["order", "show", &finished.order_id],
        Duration::from_secs(20),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("results   file=/tmp/out a.csv rows=42"),
        "{text}"
    );
}
