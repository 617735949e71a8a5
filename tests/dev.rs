//! `baton dev` as a user runs it: the real binary in a folder holding what it
//! needs (nats/dev.conf, a deploy file), on a free port (`--port 0`). One
//! `baton dev` per folder, what it does when one of its processes ends, and
//! `--fresh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::bus::{Bus, ConnectSettings, Credentials};
use baton::protocol::{StatusReply, SubagentState, Subjects, SubmitOrder, SubmitReply};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Bound on a `baton dev` coming up, or stopping.
const LIMIT: Duration = Duration::from_secs(60);

const JOBS: &str = r#"
[[job]]
name = "hello"
program = "echo"
args = ["hello"]
"#;

/// A folder laid out like the top of the repository, for `baton dev` to run in.
fn workspace() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("baton-dev-")
        .tempdir()
        .expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("nats")).expect("nats/");
    std::fs::copy(root.join("nats/dev.conf"), dir.path().join("nats/dev.conf")).expect("copy");
    std::fs::write(dir.path().join("jobs.toml"), JOBS).expect("jobs.toml");
    dir
}

/// A running `baton dev`: what it printed so far, and the pids it named
/// (its processes), all killed when this drops.
struct Dev {
    child: Child,
    pid: u32,
    said: Arc<Mutex<Vec<String>>>,
    /// Copies stderr into `said`; ends when the pipe closes.
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// What `baton dev is up: ...` said.
struct Banner {
    url: String,
    nats_pid: u32,
    pids: Vec<(String, u32)>,
}

impl Banner {
    fn pid(&self, name: &str) -> u32 {
        let found = self.pids.iter().find(|(n, _)| n == name);
        found
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.pids))
            .1
    }
}

impl Dev {
    /// `baton dev --port 0 --agents 1 --jobs jobs.toml <args>` in `dir`,
    /// with `--subagents 2` unless `args` say how many.
    fn start(dir: &Path, args: &[&str]) -> Dev {
        let args: Vec<&str> = ["--jobs", "jobs.toml"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        Dev::start_with(dir, &args)
    }

    /// `baton dev --port 0 --agents 1 <args>` in `dir`, with `--subagents
    /// 2` unless `args` say how many.
    fn start_with(dir: &Path, args: &[&str]) -> Dev {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command.arg("dev");
        if !args.contains(&"--subagents") {
            command.args(["--subagents", "2"]);
        }
        command
            .args(["--port", "0", "--agents", "1", "--console-port", "0"])
            .args(args)
            .current_dir(dir)
            .env_remove("BATON_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn baton dev");
        let pid = child.id().expect("pid");
        let said = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let lines_said = said.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                lines_said.lock().unwrap().push(line);
            }
        });
        let reader = Some(reader);
        Dev {
            child,
            pid,
            said,
            reader,
        }
    }

    /// Waits until a line of stderr contains `what`; returns that line.
    async fn said(&self, what: &str) -> String {
        let find = || async {
            let said = self.said.lock().unwrap();
            said.iter().find(|line| line.contains(what)).cloned()
        };
        wait_for(LIMIT, &format!("baton dev says '{what}'"), find).await
    }

    /// Waits until the cluster is up.
    async fn up(&self) -> Banner {
        let line = self.said("baton dev is up: nats-server at ").await;
        let rest = line.split_once(" at ").expect("at").1;
        let (url, rest) = rest.split_once(' ').expect("url");
        let mut pids = Vec::new();
        for part in format!("nats-server {rest}").split(", ") {
            let (name, pid) = part.split_once("(pid ").expect("(pid N)");
            let pid = pid.trim_end_matches(')').parse().expect("a pid");
            pids.push((name.trim().to_string(), pid));
        }
        let nats_pid = pids.remove(0).1;
        Banner {
            url: url.to_string(),
            nats_pid,
            pids,
        }
    }

    /// Waits for `baton dev` to exit; returns its status and all it printed.
    async fn exit(&mut self) -> (ExitStatus, String) {
        let status = within(LIMIT, "baton dev to exit", self.child.wait()).await;
        let status = status.expect("waits");
        if let Some(reader) = self.reader.take() {
            let _ = within(LIMIT, "baton dev's stderr to close", reader).await;
        }
        (status, self.text())
    }

    fn text(&self) -> String {
        self.said.lock().unwrap().join("\n")
    }

    /// The pids of every process it said it started.
    fn started(&self) -> Vec<u32> {
        let said = self.said.lock().unwrap();
        let lines = said
            .iter()
            .filter(|l| l.starts_with("baton dev is up") || l.contains("started it again"));
        lines
            .flat_map(|line| line.split("(pid ").skip(1))
            .filter_map(|tail| tail.split(')').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== baton dev (pid {}) said =====\n{}",
                self.pid,
                self.text()
            );
        }
        let _ = self.child.start_kill();
        for pid in self.started() {
            let reaper = baton::launch::reaper_of(pid);
            for pid in [Some(pid), reaper].into_iter().flatten() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A connection with `baton dev`'s admin credentials in `dir`.
async fn connect(dir: &Path, url: &str) -> Bus {
    let settings = ConnectSettings {
        url: url.to_string(),
        name: "dev-test".into(),
        connect_timeout: REQUEST,
        retry_initial_connect: false,
        max_message_bytes: 1 << 20,
        replicas: 1,
        credentials: Credentials::NkeyFile(dir.join(".baton/dev/auth/admin.nk")),
        tls: Default::default(),
        identities: None,
    };
    let connect = Bus::connect(&settings, Subjects::new("baton"));
    within(REQUEST, "connect", connect).await.expect("connects")
}

async fn status_when(bus: &Bus, what: &str, ready: impl Fn(&StatusReply) -> bool) -> StatusReply {
    let wait = baton::launch::wait_for_status(bus, LIMIT, what, ready);
    within(LIMIT + REQUEST, what, wait).await.expect(what)
}

fn available(status: &StatusReply, id: &str) -> bool {
    let found = status.subagents.iter().find(|s| s.id == id);
    found.is_some_and(|s| s.state == SubagentState::Available)
}

fn store(dir: &Path) -> PathBuf {
    dir.join(".baton/dev")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn gone(what: &str, pid: u32) {
    let gone = || async move { process_gone(pid as i32) };
    wait_until(LIMIT, &format!("{what} (pid {pid}) is gone"), gone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_baton_dev_in_the_same_folder_is_refused_before_it_touches_the_store() {
    let dir = workspace();
    let first = Dev::start(dir.path(), &[]);
    let banner = first.up().await;
    let auth_conf = read(&store(dir.path()).join("auth/auth.conf"));

    // more subagents than the first: it would add their identities
    let mut second = Dev::start(dir.path(), &["--subagents", "4"]);
    let (status, said) = second.exit().await;

    assert_eq!(status.code(), Some(2), "{said}");
    let canonical = std::fs::canonicalize(store(dir.path())).unwrap();
    let pid = first.pid;
    let expected = format!(
        "{} is in use by another `baton dev` (pid {pid})",
        canonical.display()
    );
    assert!(said.contains(&expected), "{said}");
    assert!(
        said.contains(&format!("stop the other `baton dev` (pid {pid})")),
        "{said}"
    );
    assert!(
        said.contains("or run this one from another directory"),
        "{said}"
    );
    assert!(
        !said.contains("--port"),
        "no other port for the same store: {said}"
    );
    // refused before anything was started or written
    let log = read(&store(dir.path()).join("nats-server.log"));
    assert_eq!(log.matches("Starting nats-server").count(), 1, "{log}");
    assert_eq!(read(&store(dir.path()).join("auth/auth.conf")), auth_conf);

    // and the first carries on
    assert!(!process_gone(first.pid as i32));
    let bus = connect(dir.path(), &banner.url).await;
    status_when(&bus, "the first's subagents", |s| {
        available(s, "sub-1") && available(s, "sub-2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_is_reported_and_started_again() {
    let dir = workspace();
    let dev = Dev::start(dir.path(), &[]);
    let banner = dev.up().await;
    let killed = banner.pid("sub-2");

    kill(Pid::from_raw(killed as i32), Signal::SIGKILL).expect("kill -9 sub-2");
    let report = format!(
        "baton dev: subagent sub-2 (pid {killed}) was killed by signal 9 (SIGKILL); \
         its log: .baton/dev/logs/sub-2.log; started it again (pid "
    );
    let line = dev.said(&report).await;
    let tail = line.rsplit_once("(pid ").expect("new pid").1;
    let new: u32 = tail.trim_end_matches(')').parse().expect("a pid");
    assert_ne!(new, killed);
    assert!(!process_gone(new as i32), "the new sub-2 runs");

    // the new sub-2 has registered with the broker, and dev runs on
    let log = store(dir.path()).join("logs/sub-2.log");
    let registered = || async { read(&log).matches("registered with broker").count() == 2 };
    wait_until(LIMIT, "the second sub-2 registers", registered).await;
    let bus = connect(dir.path(), &banner.url).await;
    status_when(&bus, "sub-2 available", |s| available(s, "sub-2")).await;
    assert!(!process_gone(dev.pid as i32), "baton dev runs on");

    // every child serves its metrics where the banner said; the new sub-2
    // on the same port as the one killed
    let line = dev.said("Prometheus metrics: ").await;
    let line = line.split_once("Prometheus metrics: ").expect("urls").1;
    for name in ["broker", "sub-2", "agent-1"] {
        let start = format!("{name} http://");
        let url = line.split(", ").find_map(|p| p.trim().strip_prefix(&start));
        let addr = url.expect("a URL").trim_end_matches("/metrics").to_string();
        let what = format!("{name}'s metrics at {addr}");
        wait_for(LIMIT, &what, || async { metrics_at(&addr).await }).await;
    }
}

/// The body of `GET /metrics` at `addr` (HOST:PORT), once it answers.
async fn metrics_at(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = "GET /metrics HTTP/1.0\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    tokio::time::timeout(REQUEST, read).await.ok()?.ok()?;
    let ok = response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200");
    (ok && response.contains("baton_")).then_some(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_keeps_ending_stops_the_whole_cluster_with_status_2() {
    let dir = workspace();
    let mut dev = Dev::start(dir.path(), &[]);
    let banner = dev.up().await;

    let mut sub = banner.pid("sub-1");
    for _ in 0..3 {
        kill(Pid::from_raw(sub as i32), Signal::SIGKILL).expect("kill -9 sub-1");
        let line = dev.said(&format!("sub-1 (pid {sub}) was killed")).await;
        let tail = line
            .rsplit_once("started it again (pid ")
            .expect("restarted")
            .1;
        sub = tail.trim_end_matches(')').parse().expect("a pid");
    }
    kill(Pid::from_raw(sub as i32), Signal::SIGKILL).expect("kill -9 sub-1");
    let (status, said) = dev.exit().await;

    assert_eq!(status.code(), Some(2), "{said}");
    let reason = format!(
        "error: subagent sub-1 (pid {sub}) was killed by signal 9 (SIGKILL); \
         its log: .baton/dev/logs/sub-1.log; it ended 4 times within 60s, so it is not started again"
    );
    assert!(said.ends_with(&reason), "{said}");
    for (name, pid) in &banner.pids {
        gone(name, *pid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_ending_stops_the_whole_cluster_with_status_2() {
    let dir = workspace();
    let mut dev = Dev::start(dir.path(), &[]);
    let banner = dev.up().await;

    let nats = banner.nats_pid;
    kill(Pid::from_raw(nats as i32), Signal::SIGKILL).expect("kill -9 nats-server");
    let (status, said) = dev.exit().await;

    assert_eq!(status.code(), Some(2), "{said}");
    let reason = format!(
        "error: nats-server (pid {nats}) was killed by signal 9 (SIGKILL); \
         its log: .baton/dev/nats-server.log; nothing works without it"
    );
    assert!(said.ends_with(&reason), "{said}");
    for (name, pid) in &banner.pids {
        gone(name, *pid).await;
    }

    // nothing holds the folder any more
    let again = Dev::start(dir.path(), &[]);
    again.up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_baton_dev_leaves_the_folder_locked_only_while_its_server_runs() {
    let dir = workspace();
    let mut first = Dev::start(dir.path(), &[]);
    let banner = first.up().await;
    first.child.start_kill().expect("kill -9 baton dev");
    within(LIMIT, "baton dev dies", first.child.wait())
        .await
        .expect("waits");

    // its nats-server, left behind, still uses the store
    let mut second = Dev::start(dir.path(), &[]);
    let (status, said) = second.exit().await;
    assert_eq!(status.code(), Some(2), "{said}");
    let nats = banner.nats_pid;
    let expected = format!("is in use by nats-server (pid {nats}), left running by a `baton dev` (pid {}) that has exited: stop it (`kill {nats}`)", first.pid);
    assert!(said.contains(&expected), "{said}");

    kill(Pid::from_raw(nats as i32), Signal::SIGKILL).expect("kill -9 nats-server");
    gone("nats-server", nats).await;
    let third = Dev::start(dir.path(), &[]);
    third.up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_deletes_the_cluster_state_and_keeps_the_credentials() {
    let dir = workspace();
    let orders = |s: &StatusReply| {
        let o = &s.orders;
        o.accepted + o.running + o.succeeded + o.failed + o.cancelled
    };

    let mut dev = Dev::start(dir.path(), &[]);
    let banner = dev.up().await;
    let bus = connect(dir.path(), &banner.url).await;
    let order = SubmitOrder {
        job: "hello".into(),
        params: Default::default(),
        request_id: None,
        slot_ms: None,
    };
    let submit = bus.request(bus.subjects().submit(), &order, REQUEST);
    let _: SubmitReply = within(REQUEST * 2, "submit", submit).await.expect("submit");
    status_when(&bus, "the order done", |s| s.orders.succeeded == 1).await;
    stop(&mut dev).await;
    let seed = read(&store(dir.path()).join("auth/admin.nk"));

    // without --fresh the order is still there
    let mut dev = Dev::start(dir.path(), &[]);
    let banner = dev.up().await;
    let bus = connect(dir.path(), &banner.url).await;
    status_when(&bus, "the order kept", |s| orders(s) == 1).await;
    stop(&mut dev).await;

    let mut dev = Dev::start(dir.path(), &["--fresh"]);
    let banner = dev.up().await;
    dev.said("--fresh: deleted the JetStream data and logs in .baton/dev")
        .await;
    let bus = connect(dir.path(), &banner.url).await;
    let status = status_when(&bus, "the broker", |_| true).await;
    assert_eq!(orders(&status), 0, "{:?}", status.orders);
    assert_eq!(read(&store(dir.path()).join("auth/admin.nk")), seed);
    stop(&mut dev).await;
}

/// An installed `baton` in a folder holding nothing of the repository's:
/// it runs with the server configuration and examples built into it, and
/// says to run `baton`, not `cargo run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_runs_in_an_empty_folder_with_what_is_built_in() {
    let dir = tempfile::Builder::new()
        .prefix("baton-dev-bare-")
        .tempdir()
        .expect("temp dir");
    // --config reaches every child (here: the subagents' capacity)
    std::fs::write(dir.path().join("baton.toml"), "[subagent]\ncapacity = 7\n").unwrap();
    let mut dev = Dev::start_with(dir.path(), &["--config", "baton.toml"]);
    let banner = dev.up().await;
    let deployed = dev.said("deployed from ").await;
    assert!(
        deployed.starts_with("deployed from the built-in examples/jobs.toml: ")
            && deployed.contains("hello"),
        "{deployed}"
    );
    let hint = dev.said("submit hello --param who=you --wait").await;
    assert!(hint.trim_start().starts_with("baton "), "{hint}");
    assert!(store(dir.path()).join("nats-server.conf").is_file());
    let bus = connect(dir.path(), &banner.url).await;
    let capacity_7 =
        |s: &StatusReply| s.subagents.len() == 2 && s.subagents.iter().all(|s| s.capacity == 7);
    status_when(
        &bus,
        "subagents with the --config file's capacity",
        capacity_7,
    )
    .await;
    stop(&mut dev).await;
}

/// Stops `baton dev` as Ctrl-C does; it exits 0.
async fn stop(dev: &mut Dev) {
    kill(Pid::from_raw(dev.pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let (status, said) = dev.exit().await;
    assert!(status.success(), "{said}");
}
