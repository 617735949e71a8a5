//! A local cluster of `baton` child processes (a broker, subagents, agents) beside
//! a local nats-server: what `baton dev`, `baton bench` and the integration
//! tests run. Every process is a real OS process, so it can be killed with
//! SIGKILL like a crashed one.
//!
//! Secure unless asked otherwise ([`Security`]): each child gets its role's
//! seed, and a new subagent id gets an identity (the server then reloads).
//! Each child gets its own process group, so a Ctrl-C at the terminal
//! reaches only `baton dev`, which stops the children newest first
//! (subagents drain and leave while the broker still runs), then
//! nats-server. [`LocalCluster::exited`] reports a process that has ended
//! (nats-server included) and [`LocalCluster::respawn`] starts it again;
//! what to do about it is the caller's choice.
//!
//! [`LocalCluster::start_cluster`] runs the processes over a JetStream
//! cluster of nats-servers instead (`natsd::cluster`): `nats` is its first
//! node and `peers` the others; every process is given all the nodes' URLs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::auth::{AuthDir, Role};
use crate::bus::{Bus, ConnectSettings, Credentials};
use crate::natsd::{NatsServer, NatsServerOptions};
use crate::protocol::{StatusReply, StatusRequest, SubagentState, Subjects};

mod nodes;
mod proc;

pub use proc::{Exited, Proc};

/// Where child processes' logs go.
#[derive(Debug, Clone)]
pub enum Logs {
    /// To this process's stderr, each line prefixed with the child's name,
    /// and to `<dir>/<name>.log`.
    Prefixed(PathBuf),
    /// To `<dir>/<name>.log`.
    Dir(PathBuf),
}

impl Logs {
    fn dir(&self) -> &Path {
        match self {
            Logs::Prefixed(dir) | Logs::Dir(dir) => dir,
        }
    }
}

/// How a local cluster's NATS is protected.
#[derive(Debug, Clone)]
pub enum Security {
    /// nats-server enforces Baton's roles with the identities in this
    /// credentials folder (made or extended with `AuthDir::init`), and every
    /// process connects with its own role's nkey: a subagent with its own.
    Auth(PathBuf),
    /// No authentication at all (`--insecure`): for comparisons only.
    Insecure,
}

/// nats-server plus `baton` processes started by this process.
pub struct LocalCluster {
    pub nats: NatsServer,
    /// The other nodes of a JetStream cluster ([`LocalCluster::start_cluster`]).
    pub peers: Vec<NatsServer>,
    auth: Option<AuthDir>,
    baton: PathBuf,
    prefix: String,
    logs: Logs,
    env: Vec<(String, String)>,
    procs: Vec<Proc>,
}

impl LocalCluster {
    /// Starts nats-server; add processes with [`LocalCluster::spawn`]. With
    /// [`Security::Auth`] and no config file of its own, the server enforces
    /// the folder's `auth.conf`; a config file must include it itself.
    pub async fn start(
        mut nats: NatsServerOptions,
        baton: PathBuf,
        prefix: &str,
        logs: Logs,
        security: Security,
    ) -> anyhow::Result<LocalCluster> {
        let dir = logs.dir();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log folder {}", dir.display()))?;
        let auth = match security {
            Security::Auth(dir) => {
                let auth = AuthDir::init(&dir, prefix, &[])?;
                if nats.config_file.is_none() {
                    nats.authorization = Some(auth.server_conf_path());
                }
                nats.probe_credentials = Credentials::NkeyFile(auth.seed_path(Role::Admin, None));
                Some(auth)
            }
            Security::Insecure => None,
        };
        let nats = NatsServer::start(nats).await?;
        Ok(LocalCluster {
            nats,
            peers: Vec::new(),
            auth,
            baton,
            prefix: prefix.to_string(),
            logs,
            env: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// Sets an environment variable for processes spawned from now on.
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts `baton <args>` named `name` against this cluster's NATS.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<u32> {
        let url = self.urls_from(0);
        self.spawn_via(name, args, &url)
    }

    /// Starts `baton <args>` named `name` connecting to NATS at `url` (a
    /// proxy in front of this cluster's server, say), with the credentials
    /// of its role (`broker`, `agent`, `subagent --id ID`; admin for client
    /// commands). Environment set with [`LocalCluster::env`] wins.
    pub fn spawn_via(&mut self, name: &str, args: &[&str], url: &str) -> anyhow::Result<u32> {
        let (role, id) = role_of(args);
        let credentials = self.credentials(role, id.as_deref())?;
        let mut command = Command::new(&self.baton);
        command
            .args(args)
            .arg("--nats-url")
            .arg(url)
            .arg("--prefix")
            .arg(&self.prefix)
            .envs(credentials_env(&credentials))
            .envs(self.env.iter().cloned())
            // its own process group: a Ctrl-C at the terminal reaches only
            // us, and we stop the children in order (one SIGTERM each)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let log = self.logs.dir().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        match &self.logs {
            Logs::Prefixed(_) => command.stderr(Stdio::piped()),
            Logs::Dir(_) => command.stderr(file.try_clone()?),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.baton.display()))?;
        if let Some(stderr) = child.stderr.take() {
            proc::tee(stderr, name, Some(file));
        }
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            url: url.to_string(),
            log: Some(log),
            child,
        });
        Ok(pid)
    }

    /// The first process found to have ended since the last call, reaped
    /// and no longer counted among [`LocalCluster::procs`]: nats-server
    /// first, then the `baton` children; `None` while all of them run.
    pub fn exited(&mut self) -> Option<Exited> {
        if let Some(status) = self.nats.exited() {
            let (pid, log) = (self.nats.pid(), self.nats.log_path().to_path_buf());
            return Some(Exited::nats_server(pid, status, log));
        }
        let (index, exited) = (self.procs.iter_mut().enumerate())
            .find_map(|(index, p)| Some((index, p.exited()?)))?;
        self.procs.remove(index);
        Some(exited)
    }

    /// Starts again, under the same name and with the same command line, a
    /// `baton` process that has [`exited`](LocalCluster::exited).
    pub fn respawn(&mut self, exited: &Exited) -> anyhow::Result<u32> {
        if exited.is_nats_server() {
            bail!("nats-server is not respawned: {exited}");
        }
        let args: Vec<&str> = exited.args.iter().map(String::as_str).collect();
        self.spawn_via(&exited.name, &args, &exited.url)
    }

    /// Starts `baton subagent --id <id>` with extra arguments.
    pub fn spawn_subagent(&mut self, id: &str, extra: &[&str]) -> anyhow::Result<u32> {
        let mut args = vec!["subagent", "--id", id];
        args.extend_from_slice(extra);
        self.spawn(id, &args)
    }

    /// Starts `baton agent --id <id>` with extra arguments (`--no-role-control`).
    pub fn spawn_agent(&mut self, id: &str, extra: &[&str]) -> anyhow::Result<u32> {
        let mut args = vec!["agent", "--id", id];
        args.extend_from_slice(extra);
        self.spawn(id, &args)
    }

    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == name).map(Proc::pid)
    }

    /// Sends `signal` to the named process; with SIGKILL also reaps it.
    pub fn signal(&mut self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let Some(index) = self.procs.iter().position(|p| p.name == name) else {
            bail!("no process named {name}");
        };
        kill(Pid::from_raw(self.procs[index].pid() as i32), signal)?;
        if signal == Signal::SIGKILL {
            let mut proc = self.procs.remove(index);
            let _ = proc.child.wait();
        }
        Ok(())
    }

    /// Waits for the named process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let Some(index) = self.procs.iter().position(|p| p.name == name) else {
            bail!("no process named {name}");
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.procs[index].child.try_wait()? {
                self.procs.remove(index);
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("{name} did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connection to this cluster's NATS with admin credentials.
    pub async fn client(&self) -> anyhow::Result<Bus> {
        let credentials = self.seed(Role::Admin, None);
        self.connect_with(credentials).await
    }

    /// A connection to this cluster's NATS with `credentials`.
    pub async fn connect_with(&self, credentials: Credentials) -> anyhow::Result<Bus> {
        let settings = ConnectSettings {
            url: self.urls_from(0),
            name: "baton-local".into(),
            connect_timeout: Duration::from_secs(5),
            retry_initial_connect: false,
            max_message_bytes: 1024 * 1024,
            replicas: 1,
            credentials,
            tls: Default::default(),
            identities: None,
        };
        Ok(Bus::connect(&settings, Subjects::new(self.prefix.clone())).await?)
    }

    /// The credentials folder, unless the cluster is insecure.
    pub fn auth(&self) -> Option<&AuthDir> {
        self.auth.as_ref()
    }

    /// The credentials of `role` (of subagent `id`): its seed file, made
    /// first for a new subagent id (the server then reloads its
    /// configuration, and this waits until the new identity can connect).
    pub fn credentials(&mut self, role: Role, id: Option<&str>) -> anyhow::Result<Credentials> {
        let Some(auth) = &mut self.auth else {
            return Ok(Credentials::None);
        };
        if let (Role::Subagent, Some(id)) = (role, id) {
            if auth.add_subagent(id)? {
                self.nats.reload()?;
                let credentials = self.seed(role, Some(id));
                wait_until_known(&self.nats.url(), &credentials)?;
                return Ok(credentials);
            }
        }
        Ok(self.seed(role, id))
    }

    /// The seed file of an identity already in the folder.
    pub fn seed(&self, role: Role, id: Option<&str>) -> Credentials {
        match &self.auth {
            Some(auth) => Credentials::NkeyFile(auth.seed_path(role, id)),
            None => Credentials::None,
        }
    }

    /// Asks the broker for its status until `ready` holds, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        bus: &Bus,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&StatusReply) -> bool,
    ) -> anyhow::Result<StatusReply> {
        wait_for_status(bus, timeout, what, ready).await
    }

    /// Waits until `n` subagents are available.
    pub async fn wait_for_subagents(&self, bus: &Bus, n: usize) -> anyhow::Result<StatusReply> {
        wait_for_subagents(bus, n).await
    }

    /// Stops the processes newest first (subagents drain and leave while the
    /// broker still runs): SIGTERM to each, SIGKILL to one still running
    /// after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for p in self.procs.iter_mut().rev() {
            let _ = kill(Pid::from_raw(p.pid() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
    }

    /// Resident memory (VmRSS) of a process now, in KiB, from /proc.
    pub fn memory_kib(pid: u32) -> Option<u64> {
        read_status_kib(
            &Path::new("/proc").join(pid.to_string()).join("status"),
            "VmRSS:",
        )
    }

    /// Peak resident memory (VmHWM) of a process, in KiB, from /proc.
    pub fn peak_memory_kib(pid: u32) -> Option<u64> {
        read_status_kib(
            &Path::new("/proc").join(pid.to_string()).join("status"),
            "VmHWM:",
        )
    }
}

/// Asks the broker for its status until `ready` holds, or fails after `timeout`.
pub async fn wait_for_status(
    bus: &Bus,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&StatusReply) -> bool,
) -> anyhow::Result<StatusReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status: Result<StatusReply, _> = bus
            .request(
                bus.subjects().status(),
                &StatusRequest::default(),
                Duration::from_secs(1),
            )
            .await;
        if let Ok(status) = &status {
            if ready(status) {
                return Ok(status.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last status: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` subagents are available, for at most 30 s.
pub async fn wait_for_subagents(bus: &Bus, n: usize) -> anyhow::Result<StatusReply> {
    let what = format!("{n} subagents");
    wait_for_status(bus, Duration::from_secs(30), &what, |s| {
        s.subagents
            .iter()
            .filter(|a| a.state == SubagentState::Available)
            .count()
            >= n
    })
    .await
}

/// The role a `baton` command line runs as, and its `--id`.
fn role_of(args: &[&str]) -> (Role, Option<String>) {
    let id = args
        .windows(2)
        .find(|w| w[0] == "--id")
        .map(|w| w[1].to_string());
    let role = match args.first() {
        Some(&"broker") => Role::Broker,
        Some(&"agent") => Role::Agent,
        Some(&"console") => Role::Console,
        // `subagent disable ID` and the like are admin commands
        Some(&"subagent") if id.is_some() => Role::Subagent,
        _ => Role::Admin,
    };
    (role, id)
}

/// The environment giving a child process `credentials`.
fn credentials_env(credentials: &Credentials) -> Vec<(String, String)> {
    match credentials {
        Credentials::NkeyFile(path) => {
            vec![("BATON_NATS__NKEY".into(), path.display().to_string())]
        }
        _ => vec![("BATON_NATS__INSECURE".into(), "true".into())],
    }
}

/// Blocks until `credentials` connect to `url` (a reloading server learns
/// them a moment later), for at most 10 s.
fn wait_until_known(url: &str, credentials: &Credentials) -> anyhow::Result<()> {
    let (url, credentials) = (url.to_string(), credentials.clone());
    let wait = move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let tried = crate::bus::probe_connect(&url, &credentials, Duration::from_secs(1));
                match tried.await {
                    Ok(()) => return Ok(()),
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        bail!("nats-server did not learn new credentials within 10s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    std::thread::spawn(wait)
        .join()
        .map_err(|_| anyhow::anyhow!("credentials wait panicked"))?
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn read_status_kib(path: &Path, key: &str) -> Option<u64> {
    status_kib(&std::fs::read_to_string(path).ok()?, key)
}

/// The value of a `/proc/PID/status` line `Key:   123 kB`, in KiB.
pub(crate) fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The reaper a subagent process started (`baton __reaper`, its child; see
/// `subagent/reaper.rs`), found in `/proc`.
pub fn reaper_of(subagent_pid: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            let parent = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            parent == Some(subagent_pid)
                && String::from_utf8_lossy(&cmdline).contains(crate::subagent::reaper::ARG)
        })
}
