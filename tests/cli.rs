//! The `baton` command line as a user meets it: real processes against a
//! real cluster, their exit statuses and what they print.

mod common;

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, Command};

/// A job printing about 500 KB, far more than a pipe holds.
const LOUD: &str = r#"
[[job]]
name = "loud"
program = "sh"
args = ["-c", "yes 'a line of output, printed again and again until there are five thousand of them' | head -n 5000"]
"#;

const LIMIT: Duration = Duration::from_secs(30);

/// `baton <args>` with stdout and stderr piped.
fn spawn_baton(h: &Harness, args: &[&str]) -> Child {
    let mut command = Command::from(baton_cmd(h));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command.spawn().expect("spawn baton")
}

async fn next_line<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>, what: &str) -> String {
    within(LIMIT, what, lines.next_line())
        .await
        .expect("reads")
        .unwrap_or_else(|| panic!("output ended before {what}"))
}

/// Reads one line of stdout, closes it as `head -1` does, and returns how
/// the process ended and what it printed on stderr.
async fn close_after_one_line(mut child: Child) -> (ExitStatus, String) {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    next_line(&mut lines, "the first line on stdout").await;
    drop(lines);
    let output = within(
        LIMIT,
        "baton to end once stdout is closed",
        child.wait_with_output(),
    )
    .await
    .expect("waits");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_command_quietly_with_status_0() {
    let h = cluster(&["sub-1"]).await;
    deploy(&h.bus, LOUD).await;

    let submitted = spawn_baton(&h, &["submit", "loud", "--wait"]);
    let (status, stderr) = close_after_one_line(submitted).await;
    assert_eq!(status.code(), Some(0), "submit --wait | head -1: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let mut watch = spawn_baton(&h, &["watch"]);
    let stderr = watch.stderr.take().expect("stderr piped");
    let mut err_lines = BufReader::new(stderr).lines();
    let said = next_line(&mut err_lines, "watch to subscribe").await;
    assert!(said.starts_with("watching"), "{said}");
    submit(&h.bus, "loud", &[]).await;
    let (status, _) = close_after_one_line(watch).await;
    let mut rest = String::new();
    while let Ok(Some(line)) = err_lines.next_line().await {
        rest.push_str(&line);
    }
    assert_eq!(status.code(), Some(0), "watch | head -1: {rest}");
    assert!(!rest.contains("panicked"), "{rest}");
}

/// Every daemon says at the default log level that it waits for NATS, both
/// when the port refuses connections and when a listener never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_say_they_wait_for_nats() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("nats://{}", closed.local_addr().expect("address"));
    drop(closed);
    // accepts connections (the kernel does) and never says a word
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("nats://{}", silent.local_addr().expect("address"));
    let mut waiting = Vec::new();
    for url in [&closed_url, &silent_url] {
        for role in ["broker", "subagent", "agent"] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
            command
                .args(["--insecure", "--nats-url", url, role])
                .env_remove("BATON_LOG")
                .env_remove("BATON_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = command.spawn().expect("spawn baton");
            let stderr = child.stderr.take().expect("stderr piped");
            let says = format!("waiting for NATS at {url}");
            waiting.push(async move {
                let mut lines = BufReader::new(stderr).lines();
                let mut seen = Vec::new();
                loop {
                    let what = format!("{role} to say '{says}' (it said {seen:?})");
                    let line = next_line(&mut lines, &what).await;
                    if line.contains(&says) {
                        break;
                    }
                    seen.push(line);
                }
                drop(child);
            });
        }
    }
    futures::future::join_all(waiting).await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_no_broker_answers_says_so_once_and_then_why_it_gave_up() {
    let mut h = cluster(&[]).await;
    h.cluster
        .signal("broker", nix::sys::signal::Signal::SIGKILL)
        .expect("kill the broker");
    let mut command = Command::from(baton_cmd(&h));
    command
        .args(["submit", "anything"])
        .env("BATON_NATS__REQUEST_TIMEOUT", "2s")
        .kill_on_drop(true);
    let out = within(LIMIT, "baton submit", command.output())
        .await
        .expect("runs");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let retrying = err.lines().filter(|l| l.contains("retrying")).count();
    assert_eq!(retrying, 1, "one retry line: {err}");
    assert!(
        err.contains("no broker answered the submit of 'anything' within 2s"),
        "{err}"
    );
    assert!(!err.contains("refused"), "nothing refused it: {err}");
}

/// `watch` of a job nobody deployed says so at once (a typo would watch in
/// silence), and names what is deployed: "none", not an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_job_that_is_not_deployed_says_so() {
    let h = cluster(&[]).await;
    let mut command = Command::from(baton_cmd(&h));
    command
        .args(["watch", "nope"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut watch = command.spawn().expect("baton watch");
    let mut lines = BufReader::new(watch.stderr.take().expect("stderr")).lines();
    let said = within(LIMIT, "watch warns", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("nope") && !line.starts_with("watching") {
                return line;
            }
        }
        String::new()
    })
    .await;
    let _ = watch.kill().await;
    assert_eq!(
        said,
        "no job or workflow named 'nope' is deployed (jobs: none; workflows: none); \
         deploy it with `baton deploy FILE.toml`; watching for its events anyway"
    );
}

/// With no broker at all, `status` says so (it once panicked: it awaited
/// the active's answer again after it had already failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_no_broker_at_all_says_so() {
    let mut h = cluster(&[]).await;
    h.cluster
        .signal("broker", nix::sys::signal::Signal::SIGKILL)
        .expect("kill the broker");
    let mut command = Command::from(baton_cmd(&h));
    command.arg("status").kill_on_drop(true);
    let out = within(LIMIT, "baton status", command.output())
        .await
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.starts_with("no active broker answered"), "{stdout}");
    assert!(stdout.contains("no broker answered at all"), "{stdout}");
}

/// The pids whose parent is `parent`, from /proc, with their names.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let stat = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces
            let text = stat(&pid)?;
            let (head, rest) = text.rsplit_once(") ")?;
            let name = head.split_once(" (")?.1.to_string();
            let ppid = rest.split(' ').nth(1)?.parse::<u32>().ok()?;
            (ppid == parent).then(|| Some((pid.parse().ok()?, name)))?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_stopped_by_sigterm_stops_its_whole_cluster_and_bad_counts_are_refused() {
    let bench = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .arg("bench")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };
    // a count of none is refused before anything starts
    for zero in [
        ["-c", "0"],
        ["--subagents", "0"],
        ["-n", "0"],
        ["--capacity", "0"],
    ] {
        let args = ["throughput", zero[0], zero[1]];
        let out = within(LIMIT, "bench refuses", bench(&args).output()).await;
        let out = out.expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{zero:?}: {stderr}");
        assert!(
            stderr.contains("'0'") && stderr.contains("1 or more"),
            "{zero:?}: {stderr}"
        );
    }

    // one order at a time: its cluster runs for a while
    let args = [
        "throughput",
        "-n",
        "3000",
        "-c",
        "1",
        "--subagents",
        "1",
        "--raw-threads",
        "2",
    ];
    let child = bench(&args).spawn().expect("spawn bench");
    let pid = child.id().expect("pid");
    // its cluster, not the raw spawns' `true`s
    let cluster = move || {
        let children = children_of(pid);
        let named = |n: &str| {
            children
                .iter()
                .filter(|(_, name)| name.starts_with(n))
                .count()
        };
        let up = named("nats-server") == 1 && named("baton") >= 2;
        up.then(|| children.into_iter().map(|(p, _)| p).collect::<Vec<u32>>())
    };
    let up = || async move { cluster() };
    let mut started = wait_for(Duration::from_secs(60), "the bench's cluster", up).await;
    let reapers: Vec<u32> = started
        .iter()
        .filter_map(|p| baton::launch::reaper_of(*p))
        .collect();
    started.extend(reapers);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = within(LIMIT, "the bench to stop", child.wait_with_output()).await;
    let out = out.expect("waits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for p in started {
        let gone = || async move { process_gone(p as i32) };
        wait_until(LIMIT, &format!("the bench's process {p} is gone"), gone).await;
    }
}
