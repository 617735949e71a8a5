//! The reaper: a small companion process that outlives its subagent, kills
//! what the subagent's tasks left behind when the subagent dies, and
//! certifies the death to the broker.
//!
//! Each task runs in its own process group, with no parent-death signal (it
//! would force a full `fork` of the subagent per task, see
//! [`super::process`]; nor would it reach what the task started, `sh -c
//! 'work & ...'`). So every subagent starts `baton __reaper` (through the
//! lean `baton-reaper` while it lives, [`super::relay`]) with a pipe on
//! its stdin and tells it who it is (a [`Hello`] line: id, instance,
//! settings), each task just before its spawn (`?TASK`), the process group
//! it got (`+PGID TASK`) or that it failed to start (`!TASK`), the group's
//! end (`-PGID`), and each result until the broker acknowledges it
//! (`=RESULT`, `~TASK`).
//!
//! When the subagent dies, by kill -9 or any other way, the kernel closes the
//! pipe: the reaper reads end-of-file at once, or at most 5 ms later when it
//! was letting lines gather ([`super::batched`]; no polling). A task told of
//! but whose group it never heard is found by the marks in its environment
//! ([`groups::marked`]): the end-of-file comes only once every copy of the
//! pipe is closed, and a task being spawned holds one until its `exec`, so
//! by then it runs its program, marked. The reaper kills every group it
//! holds with SIGKILL and waits until no live process is left in them. Then
//! it connects to NATS with the subagent's own credentials, hands
//! the broker the results it was never sent or never acknowledged, and sends
//! a [`DeathCertificate`] naming the subagent, its process (`instance_id`)
//! and the tasks it killed. The broker runs those tasks again elsewhere at
//! once: proof of death, in milliseconds, without waiting for the orphan
//! timeout. A subagent that stops normally says so (`.`) and gets no
//! certificate.
//!
//! Architecture invariant: the reaper acts only after the subagent process is
//! gone (end-of-file on the pipe only the subagent holds), so it never
//! certifies a live subagent; and it names in `killed` only tasks whose
//! groups it saw empty of live processes. Its own process group, and deaf to terminal
//! signals, so a Ctrl-C meant for the subagent does not take it away before
//! it has done its job. Until the subagent dies it is synchronous and idle;
//! only then does it start a runtime and connect.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use tracing::{info, warn};

use super::groups;
use crate::bus::{Bus, BusError};
use crate::config::Config;
use crate::protocol::{CertificateAccepted, DeathCertificate, ResultAck, TaskResult};
use crate::time::now_ms;

/// The first argument that makes `baton` act as a reaper.
pub const ARG: &str = "__reaper";
/// How long killed groups may take to empty before they count as survivors.
const GONE_WAIT: Duration = Duration::from_secs(2);
/// How long a task told of but not found may still be in its `exec`.
const IN_EXEC_WAIT: Duration = Duration::from_millis(500);
/// Between two attempts to reach a broker.
const RETRY: Duration = Duration::from_millis(200);
/// How long one request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the subagent tells its reaper first: whose death to certify, and how
/// to reach the broker (the subagent's own settings and credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub subagent_id: String,
    pub instance_id: String,
    pub config: Config,
}

/// One instruction from the subagent.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Line {
    /// `?TASK`: about to spawn this task; find it by its marks if the
    /// subagent dies before telling its group.
    Intend(String),
    /// `!TASK`: the task did not start.
    Abandon(String),
    /// `+PGID TASK`: kill this group if the subagent dies.
    Hold { pgid: i32, task_id: String },
    /// `-PGID`: the group ended.
    Release(i32),
    /// `=JSON`: a task's result, not yet acknowledged by a broker; held as
    /// it came (read in full only if the subagent dies, [`Held::results`]).
    Result { task_id: String, json: String },
    /// `~TASK`: the broker acknowledged the task's result.
    Acked(String),
    /// `.`: the subagent stops normally; nothing to certify.
    Clean,
}

pub(super) fn parse(line: &str) -> Option<Line> {
    let (op, rest) = line.split_at(line.len().min(1));
    match op {
        "?" => Some(Line::Intend(rest.trim().to_string())),
        "!" => Some(Line::Abandon(rest.trim().to_string())),
        "+" => {
            let (pgid, task) = rest.split_once(' ').unwrap_or((rest, ""));
            let pgid = pgid.trim().parse::<i32>().ok().filter(|p| *p > 1)?;
            Some(Line::Hold {
                pgid,
                task_id: task.trim().to_string(),
            })
        }
        "-" => rest.trim().parse().ok().map(Line::Release),
        "=" => {
            // only its task id now: most results are acknowledged soon
            #[derive(Deserialize)]
            struct Id {
                task_id: String,
            }
            let id: Id = serde_json::from_str(rest).ok()?;
            Some(Line::Result {
                task_id: id.task_id,
                json: rest.to_string(),
            })
        }
        "~" => Some(Line::Acked(rest.trim().to_string())),
        "." => Some(Line::Clean),
        _ => None,
    }
}

/// What the reaper holds for its subagent.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Process group -> the task running in it.
    pub(super) groups: BTreeMap<i32, String>,
    /// Tasks being spawned, whose group is not known yet.
    pub(super) spawning: BTreeSet<String>,
    /// Task id -> its result (JSON), until acknowledged.
    results: BTreeMap<String, String>,
    pub(super) clean: bool,
}

impl Held {
    /// The results held, read in full (one that cannot be is left out).
    pub(super) fn results(&self) -> Vec<TaskResult> {
        let read = |json: &String| match serde_json::from_str(json) {
            Ok(result) => Some(result),
            Err(e) => {
                warn!(error = %e, "reaper: a result it was told cannot be read");
                None
            }
        };
        self.results.values().filter_map(read).collect()
    }

    /// What it holds, as the lines that tell another reaper the same.
    pub(super) fn replay(&self) -> Vec<String> {
        let spawning = self.spawning.iter().map(|t| format!("?{t}"));
        let holds = self.groups.iter().map(|(g, t)| format!("+{g} {t}"));
        let results = self.results.values().map(|json| format!("={json}"));
        let clean = self.clean.then(|| ".".to_string());
        spawning.chain(holds).chain(results).chain(clean).collect()
    }

    pub(super) fn apply(&mut self, line: Line) {
        match line {
            Line::Intend(task_id) => {
                self.spawning.insert(task_id);
            }
            Line::Abandon(task_id) => {
                self.spawning.remove(&task_id);
            }
            Line::Hold { pgid, task_id } => {
                self.spawning.remove(&task_id);
                self.groups.insert(pgid, task_id);
            }
            Line::Release(pgid) => {
                self.groups.remove(&pgid);
            }
            Line::Result { task_id, json } => {
                self.results.insert(task_id, json);
            }
            Line::Acked(task_id) => {
                self.results.remove(&task_id);
            }
            Line::Clean => self.clean = true,
        }
    }
}

/// Deaf to terminal signals: a Ctrl-C meant for the subagent must not take
/// its reaper away.
pub(super) fn ignore_terminal_signals() {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Runs the reaper on stdin; never returns.
pub fn main() -> ! {
    ignore_terminal_signals();
    let mut lines = super::batched::stdin_lines();
    let hello: Option<Hello> = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| serde_json::from_str(&l).ok());
    let mut held = Held::default();
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(line) = parse(&line) {
            held.apply(line);
        }
    }
    // end of file: the subagent is gone, and every task it was spawning runs
    let died_at_ms = now_ms();
    if let Some(hello) = &hello {
        for (pgid, task) in groups::marked(&hello.instance_id, &held.spawning, IN_EXEC_WAIT) {
            held.groups.entry(pgid).or_insert(task);
        }
    }
    for pgid in held.groups.keys() {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    if held.clean && held.groups.is_empty() {
        std::process::exit(0);
    }
    let (killed, survivors) = groups::wait_gone(&held.groups, GONE_WAIT);
    let Some(hello) = hello else {
        std::process::exit(0)
    };
    crate::daemon::init_logging(crate::daemon::DAEMON_LOG);
    let certificate = DeathCertificate {
        subagent_id: hello.subagent_id.clone(),
        instance_id: hello.instance_id.clone(),
        killed,
        survivors,
        died_at_ms,
        certified_at_ms: now_ms(),
    };
    let results = held.results();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            // bounded as a whole: a flush or request on a connection whose
            // server is gone must not keep the reaper alive
            let sub = &hello.config.subagent;
            let limit = sub.orphan_timeout + sub.kill_grace * 2 + LAST_WORDS;
            let certified = certify(hello.config.clone(), results, certificate);
            if runtime
                .block_on(async { tokio::time::timeout(limit, certified).await })
                .is_err()
            {
                warn!(subagent = %hello.subagent_id, "reaper gave up: no broker answered in time");
            }
        }
        Err(e) => warn!(error = %e, "reaper: no runtime; no death certificate"),
    }
    std::process::exit(0)
}

/// Hands the broker the unacknowledged results, then the certificate,
/// retrying until a broker answers or the subagent's own orphan timeout
/// (plus grace) has long passed: by then the broker runs the tasks again
/// without it.
async fn certify(config: Config, results: Vec<TaskResult>, certificate: DeathCertificate) {
    let patience = config.subagent.orphan_timeout + config.subagent.kill_grace * 2;
    let deadline = tokio::time::Instant::now() + patience;
    let id = certificate.subagent_id.clone();
    let connect = crate::daemon::connect(&config, "baton-reaper");
    let bus = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(bus)) => bus,
        Ok(Err(e)) => {
            return warn!(subagent = %id, error = %e, "reaper cannot reach NATS; no death certificate")
        }
        Err(_) => {
            return warn!(subagent = %id, "reaper cannot reach NATS in time; no death certificate")
        }
    };
    for result in &results {
        let subject = bus.subjects().result();
        let sent = ask::<_, ResultAck>(&bus, subject, result, deadline).await;
        if let Err(e) = sent {
            warn!(subagent = %id, task = %result.task_id, error = %e, "reaper could not hand over a result");
        }
    }
    let subject = bus.subjects().certificate();
    match ask::<_, CertificateAccepted>(&bus, subject, &certificate, deadline).await {
        Ok(accepted) => info!(
            subagent = %id,
            instance = %certificate.instance_id,
            killed = certificate.killed.len(),
            survivors = certificate.survivors.len(),
            results = results.len(),
            orders = accepted.orders,
            "subagent died; its reaper killed its tasks and the broker accepted the death certificate"
        ),
        Err(e) => warn!(subagent = %id, error = %e, "death certificate not accepted"),
    }
    let _ = tokio::time::timeout(LAST_WORDS, bus.flush()).await;
}

/// How long the reaper waits for its last messages to leave, at most.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// A request repeated until answered or refused, or until `deadline`.
async fn ask<T, R>(
    bus: &Bus,
    subject: String,
    body: &T,
    deadline: tokio::time::Instant,
) -> Result<R, BusError>
where
    T: Serialize,
    R: serde::de::DeserializeOwned,
{
    loop {
        match bus
            .request::<T, R>(subject.clone(), body, REQUEST_TIMEOUT)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(e @ (BusError::Remote(_) | BusError::Denied { .. })) => return Err(e),
            Err(e) if tokio::time::Instant::now() + RETRY >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// The subagent's end of the pipe to its reaper. It mirrors what it told the
/// reaper, so that a reaper that died is replaced and told again.
pub struct Reaper {
    exe: PathBuf,
    hello: String,
    stdin: ChildStdin,
    pid: u32,
    /// Cleared when the reaper process exits.
    /// Waited for without blocking at each check (no thread of its own).
    child: Child,
    groups: BTreeMap<u32, String>,
    spawning: BTreeSet<String>,
    results: BTreeMap<String, String>,
}

impl Reaper {
    /// Starts `exe __reaper` in its own process group and introduces itself.
    pub fn start(exe: &Path, hello: &Hello) -> std::io::Result<Reaper> {
        let hello = serde_json::to_string(hello).map_err(std::io::Error::other)?;
        let (stdin, pid, child) = spawn(exe, &hello)?;
        Ok(Reaper {
            exe: exe.to_path_buf(),
            hello,
            stdin,
            pid,
            child,
            groups: BTreeMap::new(),
            spawning: BTreeSet::new(),
            results: BTreeMap::new(),
        })
    }

    /// The reaper's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A task about to be spawned: marked as this subagent's
    /// ([`super::process::spawn`]), it is found and killed if the subagent
    /// dies before [`Reaper::hold`] names its group.
    pub fn intend(&mut self, task_id: &str) {
        self.spawning.insert(task_id.to_string());
        self.send(format!("?{task_id}"));
    }

    /// The task announced by [`Reaper::intend`] did not start.
    pub fn abandon(&mut self, task_id: &str) {
        self.spawning.remove(task_id);
        self.send(format!("!{task_id}"));
    }

    /// A task's process group to kill if the subagent dies.
    pub fn hold(&mut self, pgid: u32, task_id: &str) {
        self.spawning.remove(task_id);
        self.groups.insert(pgid, task_id.to_string());
        self.send(format!("+{pgid} {task_id}"));
    }

    /// A task ended: its result to hand the broker if the subagent dies
    /// before the broker acknowledges it, then (when it had one) its group
    /// to forget, in one write: a death between the two cannot come, and
    /// the reaper wakes once.
    pub fn finished(&mut self, result: &TaskResult, pgid: Option<u32>) {
        let mut lines = String::new();
        if let Ok(json) = serde_json::to_string(result) {
            let line = format!("={json}");
            lines.push_str(&line);
            self.results.insert(result.task_id.clone(), line);
        }
        if let Some(pgid) = pgid {
            self.groups.remove(&pgid);
            if !lines.is_empty() {
                lines.push('\n');
            }
            lines.push_str(&format!("-{pgid}"));
        }
        if !lines.is_empty() {
            self.send(lines);
        }
    }

    /// The broker acknowledged the task's result.
    pub fn forget_result(&mut self, task_id: &str) {
        if self.results.remove(task_id).is_some() {
            self.send(format!("~{task_id}"));
        }
    }

    /// The subagent stops normally: no certificate.
    pub fn clean_exit(&mut self) {
        self.send(".".into());
    }

    /// Replaces a reaper that exited (checked on every heartbeat), so the
    /// subagent is never without one for long.
    pub fn check(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            self.replace();
        }
    }

    /// Writes one line (or several, joined by newlines), in one write (the
    /// pipe is unbuffered); a reaper that is gone is replaced and told
    /// everything again.
    fn send(&mut self, mut line: String) {
        line.push('\n');
        if self.stdin.write_all(line.as_bytes()).is_err() {
            self.replace();
        }
    }

    fn replace(&mut self) {
        warn!(pid = self.pid, "the reaper is gone; starting a new one");
        match spawn(&self.exe, &self.hello) {
            Ok((stdin, pid, child)) => {
                self.stdin = stdin;
                self.pid = pid;
                self.child = child;
                let spawning = self.spawning.iter().map(|t| format!("?{t}"));
                let holds = self.groups.iter().map(|(g, t)| format!("+{g} {t}"));
                let all: Vec<String> = spawning
                    .chain(holds)
                    .chain(self.results.values().cloned())
                    .collect();
                for line in all {
                    let _ = writeln!(self.stdin, "{line}");
                }
                info!(pid, "new reaper started");
            }
            Err(e) => warn!(error = %e, "cannot start a new reaper"),
        }
    }
}

fn spawn(exe: &Path, hello: &str) -> std::io::Result<(ChildStdin, u32, Child)> {
    // the lean reaper when it is there (subagent/relay.rs), else this binary
    let mut command = match super::relay::beside(exe) {
        Some(relay) => {
            let mut command = Command::new(relay);
            command.arg(ARG).arg(exe);
            command
        }
        None => {
            let mut command = Command::new(exe);
            command.arg(ARG);
            command
        }
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "{hello}")?;
    // the reaper outlives us by design; only whether it still runs matters
    Ok((stdin, pid, child))
}

#[cfg(test)]
mod tests {
    use super::super::tasks;
    use super::*;

    #[test]
    fn instructions_hold_and_release_groups_and_results() {
        let mut held = Held::default();
        let result = TaskResult {
            pid: Some(7),
            ..tasks::result("t2")
        };
        let json = format!("={}", serde_json::to_string(&result).unwrap());
        let acked = TaskResult {
            task_id: "t3".into(),
            ..result.clone()
        };
        let acked = format!("={}", serde_json::to_string(&acked).unwrap());
        for line in [
            "?t1",
            "?t2",
            "?t4",
            "?t5",
            "!t5",
            "+100 t1",
            "+200 t2",
            "-100",
            "+1 x",
            "+0 y",
            "garbage",
            "",
            "+x",
            "-999",
            &json,
            &acked,
            "~t3",
            "=not json",
        ] {
            if let Some(line) = parse(line) {
                held.apply(line);
            }
        }
        assert_eq!(held.groups, BTreeMap::from([(200, "t2".to_string())]));
        assert_eq!(held.spawning, BTreeSet::from(["t4".to_string()]));
        assert_eq!(held.results(), vec![result]);
        assert!(!held.clean);
        held.apply(parse(".").unwrap());
        assert!(held.clean);
    }
}
