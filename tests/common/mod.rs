//! The integration-test harness: a real nats-server (random port, temporary
//! store) and real `baton` processes per test, started through
//! [`LocalCluster`], plus helpers to wait for conditions with a deadline.
//!
//! Nothing here sleeps to let something happen: every wait polls a condition
//! until a deadline, and every await is bounded by a timeout. When a test
//! fails, the children's logs are printed as the harness drops.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::auth::Role;
use baton::bus::Credentials;
use baton::bus::{decode, Bus, BusError, Encoding};
use baton::launch::{LocalCluster, Logs, Security};
use baton::natsd::NatsServerOptions;
use baton::protocol::{
    BrokerChanged, CancelOrder, DeployReply, DeployRequest, EventKind, GetOrder, OrderFinished,
    OrderInfo, ResumeOrder, SubmitOrder, SubmitReply, SuspendOrder, TaskLog,
};
use futures::StreamExt;
use tempfile::TempDir;

pub mod partition;
pub mod proxy;

/// Bound on one request to the cluster.
pub const REQUEST: Duration = Duration::from_secs(5);
/// Bound on starting a cluster (nats-server, broker, subagents registering).
const START: Duration = Duration::from_secs(30);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(25);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 200;

/// One test's cluster. Dropping it kills every process; when the test is
/// panicking it first prints their logs.
pub struct Harness {
    // Declaration order is drop order: processes go before their folder.
    pub cluster: LocalCluster,
    pub bus: Bus,
    pub dir: TempDir,
}

impl Harness {
    pub fn nats_url(&self) -> String {
        self.cluster.nats.url()
    }

    /// A connection with the credentials of `role` (of subagent `id`),
    /// as any NATS program holding them would connect.
    pub async fn connect_as(&mut self, role: Role, id: Option<&str>) -> Bus {
        let credentials = self.cluster.credentials(role, id).expect("credentials");
        let connect = self.cluster.connect_with(credentials);
        within(REQUEST, "connect", connect).await.expect("connects")
    }

    /// The seed file of `role` (of subagent `id`), made when missing.
    pub fn seed(&mut self, role: Role, id: Option<&str>) -> std::path::PathBuf {
        match self.cluster.credentials(role, id).expect("credentials") {
            Credentials::NkeyFile(path) => path,
            other => panic!("no seed file: {other:?}"),
        }
    }

    /// A folder inside this test's temporary directory, for the test's own files.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.path().join("scratch");
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("logs"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.push(self.dir.path().join("nats.log"));
        files
    }

    /// Prints the tail of every child's log (and nats-server's) to stderr.
    pub fn print_logs(&self) {
        for file in self.log_files() {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "===== {} (last {} of {} lines) =====",
                file.display(),
                tail.len(),
                lines.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

/// A broker and the named subagents over a fresh nats-server.
pub async fn cluster(subagents: &[&str]) -> Harness {
    cluster_with_env(subagents, &[]).await
}

/// Like [`cluster`], with extra environment variables (such as `BATON_*`
/// configuration) for every `baton` process.
pub async fn cluster_with_env(subagents: &[&str], env: &[(&str, &str)]) -> Harness {
    cluster_with(subagents, env, "").await
}

/// Like [`cluster_with_env`], with more nats-server settings (limits).
pub async fn cluster_with(subagents: &[&str], env: &[(&str, &str)], server: &str) -> Harness {
    let dir = tempfile::Builder::new()
        .prefix("baton-test-")
        .tempdir()
        .expect("create temp dir");
    let nats = NatsServerOptions {
        port: None,
        store_dir: dir.path().join("store"),
        config_file: None,
        log_file: Some(dir.path().join("nats.log")),
        settings: server.to_string(),
        ..Default::default()
    };
    // the known subagents' identities before the server starts: adding one
    // later reloads the server's configuration
    let ids: Vec<String> = subagents.iter().map(|s| s.to_string()).collect();
    baton::auth::AuthDir::init(&dir.path().join("auth"), "baton", &ids).expect("auth init");
    let start = LocalCluster::start(
        nats,
        PathBuf::from(env!("CARGO_BIN_EXE_baton")),
        "baton",
        Logs::Dir(dir.path().join("logs")),
        Security::Auth(dir.path().join("auth")),
    );
    let mut cluster = within(START, "nats-server start", start)
        .await
        .expect("start nats-server (is it installed? see nats/install.sh)");
    cluster.env("BATON_LOG", "info,baton=debug");
    cluster.env("NO_COLOR", "1");
    for (key, value) in env {
        cluster.env(key, value);
    }
    cluster.spawn("broker", &["broker"]).expect("spawn broker");
    for id in subagents {
        cluster.spawn_subagent(id, &[]).expect("spawn subagent");
    }
    let bus = within(REQUEST, "client connect", cluster.client())
        .await
        .expect("client connects");
    let harness = Harness { cluster, bus, dir };
    let ready = harness
        .cluster
        .wait_for_subagents(&harness.bus, subagents.len());
    if let Err(e) = within(START, "subagents available", ready).await {
        harness.print_logs();
        panic!("cluster did not come up: {e:#}");
    }
    harness
}

/// Starts broker `b2` and stops the first one with SIGTERM: it hands the
/// lease over at once, and `b2` acts with a newer epoch.
pub fn hand_the_lease_to_b2(h: &mut Harness) {
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn b2");
    h.cluster
        .signal("broker", nix::sys::signal::Signal::SIGTERM)
        .expect("stop the first broker");
}

/// Awaits `fut`, panicking with `what` when it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `condition` until it yields `Some`, or panics naming `what` once
/// `limit` has passed. Each poll is itself bounded by the remaining time.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(Some(value)) = tokio::time::timeout_at(deadline, condition()).await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds, or panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let poll = || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    };
    wait_for(limit, what, poll).await
}

/// Polls `condition` for the whole of `span`, panicking naming `what` the
/// first time it does not hold: for things that must not happen.
pub async fn holds_throughout<F, Fut>(span: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        let held = within(span + REQUEST, what, condition()).await;
        assert!(held, "no longer true: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Validates deploy-file text as `baton deploy` does and deploys it over the
/// wire (`DeployRequest` on `{p}.api.deploy`).
pub async fn deploy(bus: &Bus, toml_text: &str) -> DeployReply {
    let d = baton::jobs::parse_deploy_file("test.toml", toml_text).expect("valid deploy file");
    let request = DeployRequest {
        dry_run: false,
        jobs: d.jobs,
        clusters: d.clusters,
        workflows: d.workflows,
        ..Default::default()
    };
    let deploy = bus.request(bus.subjects().deploy(), &request, REQUEST);
    within(REQUEST + Duration::from_secs(1), "deploy", deploy)
        .await
        .expect("deploy accepted")
}

/// Submits `job` with `params` over the wire; returns the order id.
pub async fn submit(bus: &Bus, job: &str, params: &[(&str, String)]) -> String {
    let order = SubmitOrder {
        job: job.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        request_id: None,
        slot_ms: None,
    };
    let request = bus.request(bus.subjects().submit(), &order, REQUEST);
    let reply: SubmitReply = within(REQUEST * 2, "submit", request)
        .await
        .expect("submit accepted");
    reply.order_id
}

/// The order as the broker holds it now; `None` when it does not answer.
pub async fn order_info(bus: &Bus, order_id: &str) -> Option<OrderInfo> {
    let get = GetOrder {
        order_id: order_id.into(),
    };
    let request = bus.request(bus.subjects().order_get(), &get, REQUEST);
    within(REQUEST * 2, "order.get", request).await.ok()
}

/// Submits `job` with `params` over the wire and follows the order's events
/// until it finishes: returns the `finished` event and the log lines before it.
pub async fn run_to_finish(
    bus: &Bus,
    job: &str,
    params: BTreeMap<String, String>,
) -> (OrderFinished, Vec<TaskLog>) {
    let s = bus.subjects().clone();
    // subscribe before submitting, so no event is missed
    let subscribe = bus.listen_raw(s.job_events(job));
    let mut events = within(REQUEST, "subscribe", subscribe)
        .await
        .expect("subscribe to events");
    let order = SubmitOrder {
        job: job.into(),
        params,
        request_id: None,
        slot_ms: None,
    };
    let submit = bus.request(s.submit(), &order, REQUEST);
    let reply: SubmitReply = within(REQUEST * 2, "submit", submit)
        .await
        .expect("submit accepted");
    let mp = Encoding::MessagePack;
    let follow = async {
        let mut logs = Vec::new();
        while let Some((subject, payload)) = events.next().await {
            match s.parse_event(&subject) {
                Some((_, id, kind)) if id == reply.order_id => match kind {
                    EventKind::Log => logs.push(decode(mp, &payload).expect("log decodes")),
                    EventKind::Finished => {
                        return (decode(mp, &payload).expect("finished decodes"), logs)
                    }
                    EventKind::Accepted | EventKind::Started | EventKind::Changed => {}
                },
                _ => {}
            }
        }
        panic!("event subscription ended");
    };
    within(Duration::from_secs(30), "finished event", follow).await
}

/// `baton` (the binary under test) pointed at the harness's NATS and
/// prefix, with admin credentials.
pub fn baton_cmd(harness: &Harness) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .arg("--nats-url")
        .arg(harness.nats_url())
        .arg("--prefix")
        .arg("baton")
        .env_remove("BATON_CONFIG")
        .env("BATON_LOG", "warn");
    if let Credentials::NkeyFile(seed) = harness.cluster.seed(Role::Admin, None) {
        command.env("BATON_NATS__NKEY", seed);
    }
    command
}

/// Runs `baton <args>` against the harness and returns its output; the
/// process is killed if it runs longer than `limit`.
pub async fn run_baton(harness: &Harness, args: &[&str], limit: Duration) -> Output {
    let mut command = tokio::process::Command::from(baton_cmd(harness));
    command.args(args).kill_on_drop(true);
    let what = format!("baton {}", args.join(" "));
    within(limit, &what, command.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// True when no process `pid` runs any more: it does not exist, or it is a
/// zombie waiting for a parent that does not reap (PID 1 in some containers).
pub fn process_gone(pid: i32) -> bool {
    let pid_t = nix::unistd::Pid::from_raw(pid);
    if nix::sys::signal::kill(pid_t, None).is_err() {
        return true;
    }
    proc_state(pid).is_some_and(|state| state == 'Z' || state == 'X')
}

/// The state letter from `/proc/<pid>/stat` (after the parenthesised name).
fn proc_state(pid: i32) -> Option<char> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A small deterministic generator for garbage payloads (xorshift64*).
pub struct Garbage(u64);

impl Garbage {
    pub fn new(seed: u64) -> Garbage {
        Garbage(seed.max(1))
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 56) as u8).collect()
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ----- workflow order commands ----------------------------------------------

/// `order.suspend`: the order, or the broker's error.
pub async fn suspend(bus: &Bus, order_id: &str, kill: bool) -> Result<OrderInfo, BusError> {
    let request = SuspendOrder {
        order_id: order_id.into(),
        kill,
    };
    let call = bus.request(bus.subjects().order_suspend(), &request, REQUEST);
    within(REQUEST * 2, "suspend", call).await
}

/// `order.resume`: the order, or the broker's error.
pub async fn resume(
    bus: &Bus,
    order_id: &str,
    from: Option<&str>,
    force_succeeded: bool,
) -> Result<OrderInfo, BusError> {
    let request = ResumeOrder {
        order_id: order_id.into(),
        from: from.map(str::to_string),
        force_succeeded,
    };
    let call = bus.request(bus.subjects().order_resume(), &request, REQUEST);
    within(REQUEST * 2, "resume", call).await
}

/// `order.cancel`: the order, or the broker's error.
pub async fn cancel(bus: &Bus, order_id: &str, kill: bool) -> Result<OrderInfo, BusError> {
    let request = CancelOrder {
        order_id: order_id.into(),
        kill,
    };
    let call = bus.request(bus.subjects().order_cancel(), &request, REQUEST);
    within(REQUEST * 2, "cancel", call).await
}

/// The fields after the parenthesised name in `/proc/<pid>/stat`: state,
/// parent pid and process group.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, ppid, group))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            proc_stat(*pid)
                .is_some_and(|(state, _, group)| group == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// The reaper a subagent process started (`baton __reaper`, its child).
pub fn reaper_of(subagent_pid: u32) -> Option<i32> {
    baton::launch::reaper_of(subagent_pid).map(|pid| pid as i32)
}

/// Every leadership change published from now on, in order of arrival.
pub async fn record_broker_changes(bus: &Bus) -> Arc<Mutex<Vec<BrokerChanged>>> {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = changes.clone();
    let mut events = within(
        REQUEST,
        "subscribe",
        bus.listen_raw(bus.subjects().broker_changes()),
    )
    .await
    .expect("subscribe");
    tokio::spawn(async move {
        while let Some((_, payload)) = events.next().await {
            let e: BrokerChanged = decode(Encoding::MessagePack, &payload).expect("event");
            sink.lock().unwrap().push(e);
        }
    });
    changes
}

/// Every broker's own view (`{p}.api.status.brokers`), as gathered within
/// 300 ms; none when the request fails.
pub async fn broker_views(bus: &Bus) -> Vec<baton::protocol::BrokerView> {
    let ask = baton::protocol::StatusRequest::default();
    let views = bus.gather(
        bus.subjects().status_brokers(),
        &ask,
        Duration::from_millis(300),
    );
    views.await.unwrap_or_default()
}
