//! A subagent as the simulation runs it: the real subagent's rules at the
//! scale the broker sees them. It registers until answered, heartbeats
//! the tasks it runs, takes a task only from its own process's dispatch at
//! the newest epoch it heard (answering a repeat as a duplicate, refusing
//! beyond its capacity), reports each result until acknowledged, and kills
//! its tasks after its orphan timeout without a broker. When it dies its
//! tasks die with it, and its reaper may certify the death.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::*;

/// A task it runs.
#[derive(Debug, Clone)]
struct Task {
    run: RunTask,
    started_at_ms: u64,
    /// What it exits with when it ends by itself.
    exit_code: i32,
}

/// What it tells the broker.
#[derive(Debug, Clone)]
pub enum Report {
    Register(Register),
    Result(TaskResult),
    Heartbeat(SubagentHeartbeat),
    Certificate(DeathCertificate),
}

/// Its answer to a broker's request.
#[derive(Debug, Clone)]
pub enum Answer {
    Accepted,
    Refused(String),
    Pong(Pong),
    Killed,
}

/// What it does, for the world to carry out.
#[derive(Debug)]
pub enum Out {
    Send(Report),
    Answer(Answer),
    /// A task started: it ends after `ms`.
    Started {
        task_id: String,
        order_id: String,
        job: String,
        ms: u64,
    },
    /// A task ended (exited, killed, or died with it).
    Ended {
        task_id: String,
        /// It failed and says so in its result (exited non-zero, or killed
        /// on a broker's request), which a job's retry policy retries.
        failed: bool,
    },
}

pub struct SimSubagent {
    pub id: String,
    pub instance: u64,
    pub alive: bool,
    pub registered: bool,
    capacity: u32,
    epoch: u64,
    last_contact_ms: u64,
    orphan_ms: u64,
    heartbeat_ms: u64,
    running: BTreeMap<String, Task>,
    unacked: BTreeMap<String, TaskResult>,
    finished: BTreeSet<String>,
}

impl SimSubagent {
    pub fn new(id: String, instance: u64, capacity: u32, now_ms: u64) -> SimSubagent {
        SimSubagent {
            id,
            instance,
            alive: true,
            registered: false,
            capacity,
            epoch: 0,
            last_contact_ms: now_ms,
            orphan_ms: 3_000,
            heartbeat_ms: 250,
            running: BTreeMap::new(),
            unacked: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }

    pub fn instance_id(&self) -> String {
        format!("{}#{}", self.id, self.instance)
    }

    fn register(&self) -> Report {
        Report::Register(Register {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id(),
            labels: BTreeMap::new(),
            capacity: self.capacity,
            hostname: None,
            pid: None,
            protocol: PROTOCOL_VERSION,
            heartbeat_interval_ms: self.heartbeat_ms,
            orphan_timeout_ms: self.orphan_ms,
        })
    }

    /// Its heartbeat interval: registers until answered, heartbeats, sends
    /// unacknowledged results again, and kills its tasks once no broker
    /// was heard for its orphan timeout.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if !self.registered {
            out.push(Out::Send(self.register()));
        }
        out.push(Out::Send(Report::Heartbeat(SubagentHeartbeat {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id(),
            labels: BTreeMap::new(),
            capacity: self.capacity,
            running: self.running.keys().cloned().collect(),
            sent_at_ms: now_ms,
            protocol: PROTOCOL_VERSION,
            load: None,
            draining: false,
            heartbeat_interval_ms: self.heartbeat_ms,
            orphan_timeout_ms: self.orphan_ms,
            refused: 0,
        })));
        for result in self.unacked.values() {
            out.push(Out::Send(Report::Result(result.clone())));
        }
        if now_ms.saturating_sub(self.last_contact_ms) >= self.orphan_ms {
            let orphans: Vec<String> = self.running.keys().cloned().collect();
            for task_id in orphans {
                let why = "killed: no broker within the orphan timeout";
                out.extend(self.end(&task_id, now_ms, Some(9), Some(why)));
            }
        }
        out
    }

    fn heard_broker(&mut self, now_ms: u64) {
        self.last_contact_ms = now_ms;
    }

    /// A broker's heartbeat (signed: its epoch counts).
    pub fn broker_heartbeat(&mut self, epoch: u64, now_ms: u64) {
        if epoch >= self.epoch {
            self.epoch = epoch;
            self.heard_broker(now_ms);
        }
    }

    pub fn registered(&mut self, epoch: u64, now_ms: u64) {
        self.registered = true;
        self.broker_heartbeat(epoch, now_ms);
    }

    pub fn acked(&mut self, task_id: &str) {
        if self.unacked.remove(task_id).is_some() {
            self.finished.insert(task_id.to_string());
        }
    }

    /// A run request. `None`: it stays silent (meant for another process).
    /// A started task runs `ms` and then exits with `exit_code`.
    pub fn run(&mut self, run: RunTask, now_ms: u64, ms: u64, exit_code: i32) -> Option<Vec<Out>> {
        if run.instance_id.as_deref() != Some(self.instance_id().as_str()) {
            return None;
        }
        if run.epoch < self.epoch {
            let why = format!("epoch {} is older than {}", run.epoch, self.epoch);
            return Some(vec![Out::Answer(Answer::Refused(why))]);
        }
        self.broker_heartbeat(run.epoch, now_ms);
        let known = self.running.contains_key(&run.task_id)
            || self.unacked.contains_key(&run.task_id)
            || self.finished.contains(&run.task_id);
        if known {
            return Some(vec![Out::Answer(Answer::Accepted)]);
        }
        if self.running.len() >= self.capacity as usize {
            return Some(vec![Out::Answer(Answer::Refused("busy".into()))]);
        }
        let started = Out::Started {
            task_id: run.task_id.clone(),
            order_id: run.order_id.clone(),
            job: run.job.clone(),
            ms,
        };
        let task = Task {
            run,
            started_at_ms: now_ms,
            exit_code,
        };
        self.running.insert(task.run.task_id.clone(), task);
        Some(vec![Out::Answer(Answer::Accepted), started])
    }

    pub fn kill(&mut self, kill: KillTask, now_ms: u64) -> Vec<Out> {
        if kill.epoch < self.epoch {
            return vec![Out::Answer(Answer::Refused("stale epoch".into()))];
        }
        self.heard_broker(now_ms);
        let mut out = vec![Out::Answer(Answer::Killed)];
        out.extend(self.end(&kill.task_id, now_ms, Some(15), None));
        out
    }

    pub fn ping(&self) -> Vec<Out> {
        vec![Out::Answer(Answer::Pong(Pong {
            subagent_id: self.id.clone(),
            instance_id: self.instance_id(),
            running: self.running.keys().cloned().collect(),
        }))]
    }

    /// A task ends (by itself, or killed with `signal`): its result is
    /// kept and reported until acknowledged.
    pub fn end(
        &mut self,
        task_id: &str,
        now_ms: u64,
        signal: Option<i32>,
        abandoned: Option<&str>,
    ) -> Vec<Out> {
        let Some(task) = self.running.remove(task_id) else {
            return Vec::new();
        };
        let result = TaskResult {
            task_id: task.run.task_id.clone(),
            order_id: task.run.order_id.clone(),
            job: task.run.job.clone(),
            attempt: task.run.attempt,
            subagent_id: self.id.clone(),
            exit_code: signal.is_none().then_some(task.exit_code),
            signal,
            timed_out: false,
            error: None,
            abandoned: abandoned.map(String::from),
            outputs: BTreeMap::new(),
            pid: None,
            started_at_ms: task.started_at_ms,
            finished_at_ms: now_ms,
        };
        self.unacked.insert(task_id.to_string(), result.clone());
        vec![
            Out::Ended {
                task_id: task_id.to_string(),
                failed: abandoned.is_none() && result.exit_code != Some(0),
            },
            Out::Send(Report::Result(result)),
        ]
    }

    /// The process dies (SIGKILL): its tasks die with it. Its reaper, if
    /// it has one, takes over what it must tell the broker.
    pub fn die(&mut self, now_ms: u64) -> (Vec<Out>, Reaper) {
        self.alive = false;
        let killed: Vec<String> = self.running.keys().cloned().collect();
        let out: Vec<Out> = killed
            .iter()
            .map(|task_id| Out::Ended {
                failed: false,
                task_id: task_id.clone(),
            })
            .collect();
        self.running.clear();
        let reaper = Reaper {
            s_instance: self.instance,
            results: std::mem::take(&mut self.unacked),
            certificate: DeathCertificate {
                subagent_id: self.id.clone(),
                instance_id: self.instance_id(),
                killed,
                survivors: Vec::new(),
                died_at_ms: now_ms,
                certified_at_ms: now_ms,
            },
            done: false,
            until_ms: now_ms + self.orphan_ms + 1_000,
        };
        (out, reaper)
    }
}

/// A dead subagent's reaper: it hands over the results never
/// acknowledged, each until answered, then the death certificate, until
/// answered or its patience ends.
pub struct Reaper {
    pub s_instance: u64,
    results: BTreeMap<String, TaskResult>,
    certificate: DeathCertificate,
    done: bool,
    until_ms: u64,
}

impl Reaper {
    /// What it sends now, if anything.
    pub fn tick(&mut self, now_ms: u64) -> Option<Report> {
        if self.done || now_ms > self.until_ms {
            return None;
        }
        Some(match self.results.values().next() {
            Some(result) => Report::Result(result.clone()),
            None => Report::Certificate(self.certificate.clone()),
        })
    }

    pub fn acked(&mut self, task_id: &str) {
        self.results.remove(task_id);
    }

    pub fn certified(&mut self) {
        self.done = true;
    }
}
