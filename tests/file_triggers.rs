//! File triggers: the Scheduler agent starts one order per new file in a
//! watched directory, exactly once, while the Scheduler is SIGKILLed and
//! the role moves; files already there at takeover are picked up once; a
//! file removed and put back is a new file; a missing directory is
//! reported in `baton status`, not a crash.
//!
//! The `import` job appends the name of its file (`BATON_PARAM_FILE_NAME`)
//! to a log, so the test counts runs per file from outside Baton, and
//! counts the job's orders through `order.list`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton::protocol::*;
use common::*;
use nix::sys::signal::Signal;

/// For every process: a short lease so hand-overs are quick to test.
const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

const ELECTION: Duration = Duration::from_secs(15);

/// A job started by each `*.csv` file in `dir`, logging the file's name.
fn import_job(dir: &Path, log: &Path) -> String {
    format!(
        r#"
[[job]]
name = "import"
program = "sh"
args = ["-c", 'echo "$BATON_PARAM_FILE_NAME" >> "{log}"']
[job.params.file]
default = ""
[job.params.file_name]
default = ""
[[job.triggers]]
kind = "file"
dir = "{dir}"
pattern = "*.csv"
settle = "300ms"
rescan = "500ms"
"#,
        log = log.display(),
        dir = dir.display()
    )
}

async fn status(h: &Harness) -> StatusReply {
    let ask = StatusRequest::default();
    let request = h.bus.request(h.bus.subjects().status(), &ask, REQUEST);
    within(REQUEST * 2, "status", request)
        .await
        .expect("status reply")
}

async fn one_scheduler(h: &Harness, not: Option<&str>) -> String {
    wait_for(ELECTION, "exactly one Scheduler", || async {
        let s = status(h).await;
        let on: Vec<String> = (s.agents.iter())
            .filter(|a| a.role == AgentRole::Scheduler)
            .map(|a| a.id.clone())
            .collect();
        match &on[..] {
            [one] if Some(one.as_str()) != not => Some(one.clone()),
            _ => None,
        }
    })
    .await
}

/// Runs per file name, from the job's log.
fn runs(log: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        *runs.entry(line.trim().to_string()).or_insert(0) += 1;
    }
    runs
}

/// The `import` job's orders, as the broker lists them.
async fn orders(h: &Harness) -> usize {
    let list = ListOrders {
        job: Some("import".into()),
        limit: Some(10_000),
        ..Default::default()
    };
    let request = h.bus.request(h.bus.subjects().order_list(), &list, REQUEST);
    let reply: OrderList = within(REQUEST * 2, "order list", request)
        .await
        .expect("order list");
    reply.orders.len()
}

/// Writes `name` in two parts, as a slow copy would.
fn drop_file(dir: &Path, name: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name)).expect("create file");
    f.write_all(b"id,value\n").expect("write");
    f.write_all(name.as_bytes()).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_start_one_order_each_while_the_scheduler_is_killed() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let inbox = h.scratch().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let log = h.scratch().join("runs");
    // present before any Scheduler
    let mut expected: Vec<String> = (0..5).map(|i| format!("pre-{i}.csv")).collect();
    for name in &expected {
        drop_file(&inbox, name);
    }
    drop_file(&inbox, "ignored.txt");
    deploy(&h.bus, &import_job(&inbox, &log)).await;
    for id in ["a1", "a2"] {
        h.cluster.spawn(id, &["agent", "--id", id]).unwrap();
    }
    let mut scheduler = one_scheduler(&h, None).await;
    wait_until(Duration::from_secs(20), "the files present run", || {
        let n = runs(&log).len();
        async move { n >= 5 }
    })
    .await;

    // files arrive steadily; the Scheduler is SIGKILLed three times
    for round in 0..3 {
        for i in 0..8 {
            let name = format!("drop-{round}-{i}.csv");
            drop_file(&inbox, &name);
            expected.push(name);
            tokio::time::sleep(Duration::from_millis(80)).await;
            if i == 4 {
                h.cluster.signal(&scheduler, Signal::SIGKILL).unwrap();
                // arrive while no Scheduler runs: there at takeover
                for j in 0..3 {
                    let name = format!("takeover-{round}-{j}.csv");
                    drop_file(&inbox, &name);
                    expected.push(name);
                }
            }
        }
        let next = one_scheduler(&h, Some(&scheduler)).await;
        eprintln!("round {round}: killed {scheduler}, {next} took over");
        h.cluster
            .spawn(&scheduler, &["agent", "--id", &scheduler])
            .unwrap();
        scheduler = next;
    }
    let all = expected.len();
    wait_until(Duration::from_secs(30), "every file ran", || {
        let n = runs(&log).len();
        async move { n >= all }
    })
    .await;
    // and nothing runs twice later, or a file that does not match
    holds_throughout(Duration::from_secs(2), "each file ran once", || {
        let r = runs(&log);
        async move { r.values().all(|&n| n == 1) && r.len() == all }
    })
    .await;
    let r = runs(&log);
    let ran: Vec<&String> = r.keys().collect();
    let mut wanted: Vec<&String> = expected.iter().collect();
    wanted.sort();
    assert_eq!(ran, wanted);
    assert_eq!(orders(&h).await, all, "one order per file");

    // removed, then arriving again: a new file, a new order
    std::fs::remove_file(inbox.join("pre-0.csv")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop_file(&inbox, "pre-0.csv");
    wait_until(Duration::from_secs(15), "the file put back runs", || {
        let n = runs(&log).get("pre-0.csv").copied();
        async move { n == Some(2) }
    })
    .await;
    holds_throughout(Duration::from_secs(1), "it runs once more only", || {
        let r = runs(&log);
        async move { r["pre-0.csv"] == 2 && r.values().sum::<usize>() == all + 1 }
    })
    .await;
    assert_eq!(orders(&h).await, all + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_reported_and_watched_once_it_appears() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let inbox = h.scratch().join("later");
    let log = h.scratch().join("runs");
    deploy(&h.bus, &import_job(&inbox, &log)).await;
    h.cluster.spawn("a1", &["agent", "--id", "a1"]).unwrap();
    one_scheduler(&h, None).await;
    let shown = inbox.display().to_string();
    wait_until(ELECTION, "the missing directory is reported", || async {
        let s = status(&h).await;
        s.agents
            .iter()
            .any(|a| a.watch_problems.iter().any(|p| p.contains(&shown)))
    })
    .await;
    let out = run_baton(&h, &["status"], REQUEST * 2).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("file trigger:") && text.contains(&shown),
        "{text}"
    );
    // still alive and heartbeating
    let pid = h.cluster.pid("a1").expect("a1's pid") as i32;
    assert!(!process_gone(pid));

    std::fs::create_dir_all(&inbox).unwrap();
    drop_file(&inbox, "late.csv");
    wait_until(
        Duration::from_secs(15),
        "the file in the new directory runs",
        || {
            let n = runs(&log).get("late.csv").copied();
            async move { n == Some(1) }
        },
    )
    .await;
    wait_until(Duration::from_secs(5), "the problem is cleared", || async {
        let s = status(&h).await;
        s.agents.iter().all(|a| a.watch_problems.is_empty())
    })
    .await;
}
