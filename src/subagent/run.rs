//! A task's start: the `run` command answered as [`admission`] decides, and
//! an admitted task spawned, announced (`started`) and its output streamed
//! as `log` events until it ends ([`delivery`](super::delivery) takes over).

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::admission::{self, Admission, Ask, View};
use super::{process, Subagent};
use crate::auth::Role;
use crate::bus::{Replier, Request};
use crate::protocol::*;
use crate::time::now_ms;

/// Log lines posted before waiting for them to reach NATS.
const LOG_BATCH: u64 = 256;

impl Subagent {
    pub(super) fn on_run(&mut self, req: Request<RunTask>, ctx: &mut Context<Self>) {
        let task = req.body;
        let ask = Ask {
            task_id: &task.task_id,
            instance_id: task.instance_id.as_deref(),
            epoch: task.epoch,
            from_broker: req.sender.is(Role::Broker),
        };
        let view = View {
            instance_id: &self.instance_id,
            fence: self.fence,
            draining: self.draining,
            capacity: self.config.subagent.capacity,
            tasks: &self.tasks,
        };
        let admission = admission::admit(&ask, &view);
        if admission.obeyed() {
            self.fence.observe(task.epoch);
            self.heard_broker();
        }
        match admission {
            Admission::NotMine => {
                // Meant for another process under this id. No answer: if that
                // process is alive (a duplicate id), its answer is the one that counts.
                warn!(task = %task.task_id, "task meant for another process with this subagent id; ignored");
            }
            Admission::Refused(refusal) => self.refuse("run", refusal, &req.sender, &req.replier),
            Admission::Duplicate { pid } => {
                let reply = RunAccepted {
                    task_id: task.task_id,
                    duplicate: true,
                    pid,
                };
                self.bus.reply(&req.replier, &reply);
            }
            Admission::Draining | Admission::Full { .. } => {
                if let Some(error) = admission.busy(&self.id) {
                    self.bus.reply(&req.replier, &error);
                }
            }
            Admission::Start => self.start_task(task, &req.replier, ctx),
        }
    }

    /// Spawns an admitted task, answers the `run`, announces it and streams
    /// its output; a task that cannot be spawned ends at once with the error.
    fn start_task(&mut self, task: RunTask, replier: &Replier, ctx: &mut Context<Self>) {
        let started_at_ms = now_ms();
        // told before the spawn: a death right after it still takes the task
        if let Some(reaper) = &mut self.reaper {
            reaper.intend(&task.task_id);
        }
        let spawned = match process::spawn(&task, &self.instance_id) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(reaper) = &mut self.reaper {
                    reaper.abandon(&task.task_id);
                }
                let error = e.to_string();
                warn!(task = %task.task_id, %error, "task not started");
                let reply = RunAccepted {
                    task_id: task.task_id.clone(),
                    duplicate: false,
                    pid: None,
                };
                self.bus.reply(replier, &reply);
                let exit = process::Exit {
                    error: Some(error),
                    ..process::Exit::default()
                };
                return self.on_exit(task, None, exit, started_at_ms, ctx);
            }
        };
        let pid = spawned.pid;
        debug!(task = %task.task_id, pid, "task started");
        if let Some(reaper) = &mut self.reaper {
            reaper.hold(pid, &task.task_id);
        }
        let (kill, killed) = oneshot::channel();
        self.tasks.start(task.task_id.clone(), pid, kill);
        // busy: its clock at the busy pace, every broker heartbeat heard
        self.hurry(ctx);
        self.worked = true;
        let metrics = crate::metrics::subagent();
        metrics.tasks_started.inc();
        metrics.running_tasks.set(self.tasks.running_len() as i64);
        let reply = RunAccepted {
            task_id: task.task_id.clone(),
            duplicate: false,
            pid: Some(pid),
        };
        self.bus.reply(replier, &reply);
        self.publish_started(&task, pid, started_at_ms);

        let bus = self.bus.clone();
        // a workflow step's lines belong to the workflow order (and are
        // published under the workflow's name, like its other events)
        let (topic, log_order, step) = match &task.parent {
            Some(p) => (&p.workflow, p.order_id.clone(), Some(p.step.clone())),
            None => (&task.job, task.order_id.clone(), None),
        };
        let subject = bus
            .subjects()
            .task_event(topic, &log_order, EventKind::Log, &self.id);
        let mut log = TaskLog {
            order_id: log_order,
            step,
            job: task.job.clone(),
            task_id: task.task_id.clone(),
            subagent_id: self.id.clone(),
            stream: LogStream::Stdout,
            seq: 0,
            line: String::new(),
            at_ms: 0,
        };
        let on_line = move |stream, line| {
            log.seq += 1;
            log.stream = stream;
            log.line = line;
            log.at_ms = now_ms();
            bus.post(subject.clone(), &log);
            // back-pressure: a flood of output waits for NATS instead of
            // piling up in memory (the task blocks on its full pipe)
            let wait = (log.seq % LOG_BATCH == 0).then(|| bus.clone());
            async move {
                if let Some(bus) = wait {
                    bus.posted().await;
                }
            }
        };
        let supervised = process::supervise(
            spawned,
            task.timeout_ms.map(Duration::from_millis),
            self.config.subagent.kill_grace,
            self.config.subagent.max_line_bytes,
            killed,
            on_line,
        );
        ctx.spawn(
            supervised
                .into_actor(self)
                .map(move |exit, act, ctx| act.on_exit(task, Some(pid), exit, started_at_ms, ctx)),
        );
    }

    /// Posted before any log line of the task, through the same ordered queue.
    fn publish_started(&self, task: &RunTask, pid: u32, at_ms: u64) {
        let started = TaskStarted {
            order_id: task.order_id.clone(),
            job: task.job.clone(),
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            subagent_id: self.id.clone(),
            pid: Some(pid),
            at_ms,
        };
        let s = self.bus.subjects();
        self.bus.post(
            s.task_event(&task.job, &task.order_id, EventKind::Started, &self.id),
            &started,
        );
    }
}
