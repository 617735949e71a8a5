//! A task's end: its result recorded (and handed to the reaper, so it
//! outlives the subagent), sent to the broker, and repeated until
//! acknowledged; the task id remembered so it never starts again.

use std::time::Duration;

use actix::prelude::*;
use tracing::debug;

use super::{process, Subagent};
use crate::protocol::*;
use crate::time::now_ms;

impl Subagent {
    pub(super) fn on_exit(
        &mut self,
        task: RunTask,
        pid: Option<u32>,
        exit: process::Exit,
        started_at_ms: u64,
        ctx: &mut Context<Self>,
    ) {
        debug!(task = %task.task_id, ?exit, "task ended");
        let result = TaskResult {
            task_id: task.task_id.clone(),
            order_id: task.order_id,
            job: task.job,
            attempt: task.attempt,
            subagent_id: self.id.clone(),
            exit_code: exit.exit_code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            error: exit.error,
            abandoned: exit.killed,
            outputs: exit.outputs,
            pid,
            started_at_ms,
            finished_at_ms: now_ms(),
        };
        // from here on the result outlives us: if we die before the broker
        // has it, our reaper hands it over
        if let Some(reaper) = &mut self.reaper {
            reaper.finished(&result, pid);
        }
        let metrics = crate::metrics::subagent();
        let outcome = crate::metrics::labels::task_outcome(
            result.exit_code,
            result.timed_out,
            result.abandoned.is_some(),
            result.error.is_some(),
        );
        metrics
            .tasks_finished
            .get_or_create(&crate::metrics::label("outcome", outcome))
            .inc();
        self.tasks.finish(result);
        metrics.running_tasks.set(self.tasks.running_len() as i64);
        self.send_result(task.task_id, ctx);
    }

    /// Sends a result to the broker; it stays buffered until acknowledged.
    pub(super) fn send_result(&mut self, task_id: String, ctx: &mut Context<Self>) {
        let Some(result) = self.tasks.send(&task_id) else {
            return;
        };
        let bus = self.bus.clone();
        let subject = bus.subjects().result();
        let timeout = self
            .config
            .subagent
            .result_retry
            .max(Duration::from_secs(1));
        let request = async move {
            // started and log lines first: the result must not overtake them
            bus.posted().await;
            bus.request::<_, ResultAck>(subject, &result, timeout).await
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |reply, act, ctx| match reply {
                    Ok(_) => {
                        act.heard_broker();
                        if let Some(done) = act.tasks.acked(&task_id) {
                            let after_ms = now_ms().saturating_sub(done.finished_at_ms);
                            debug!(task = %task_id, after_ms, "result acknowledged");
                        }
                        if let Some(reaper) = &mut act.reaper {
                            reaper.forget_result(&task_id);
                        }
                        act.leave_if_drained(ctx);
                    }
                    Err(e) => {
                        debug!(task = %task_id, error = %e, "result not acknowledged; will retry");
                        act.tasks.unsent(&task_id);
                    }
                }),
        );
    }
}
