//! The subagent's clock: one timer, set again after each tick at the pace
//! [`pace::Pace::next_tick`] decides (the busy period while it works, its
//! next heartbeat while idle), and brought forward when work starts. A
//! tick heartbeats when one is due, replaces a dead reaper, registers
//! until answered, kills orphaned tasks, sends unacknowledged results
//! again every `result_retry`, listens to the broker's heartbeats
//! (`guard.rs`), and drops the code its tasks ran once idle a while
//! ([`memory::drop_again`]).

use std::time::Instant;

use actix::prelude::*;

use super::{memory, pace, Subagent};

impl Subagent {
    /// What the pace decisions look at.
    pub(super) fn work(&self) -> pace::Work {
        pace::Work {
            running: self.tasks.running_len(),
            draining: self.draining,
            unacked: self.tasks.unacked_len(),
            registered: self.registered,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.tick = None;
        self.heartbeat_if_due();
        if let Some(reaper) = &mut self.reaper {
            reaper.check();
        }
        if !self.registered {
            self.register(ctx);
        }
        self.check_orphaned();
        if self.last_retry.elapsed() >= self.config.subagent.result_retry {
            self.last_retry = Instant::now();
            for task_id in self.tasks.unacked_ids() {
                self.send_result(task_id, ctx);
            }
        }
        self.listen(ctx);
        self.give_back_memory();
        self.schedule_tick(ctx);
    }

    /// Idle a while after work, or idle a while longer: the code and data
    /// its tasks' spawns and supervision, and its upkeep, used leave its
    /// map again.
    fn give_back_memory(&mut self) {
        let idle = self.registered && self.tasks.is_idle() && !self.draining;
        self.idle_since = idle.then(|| self.idle_since.unwrap_or_else(Instant::now));
        let idle_for = self.idle_since.map(|since| since.elapsed());
        if memory::drop_again(self.worked, idle_for, self.last_drop.elapsed()) {
            self.worked = false;
            self.last_drop = Instant::now();
            let dropped = memory::drop_clean_pages();
            tracing::debug!(bytes = dropped, "idle: clean pages dropped from the map");
        }
    }

    /// Sets the next tick (replacing any set before).
    pub(super) fn schedule_tick(&mut self, ctx: &mut Context<Self>) {
        if let Some((handle, _)) = self.tick.take() {
            ctx.cancel_future(handle);
        }
        let (since, announced) = match self.last_heartbeat {
            Some((at, announced)) => (at.elapsed(), announced),
            None => (Default::default(), self.pace.busy),
        };
        let after = self.pace.next_tick(since, announced, self.work());
        let handle = ctx.run_later(after, |act, ctx| act.tick(ctx));
        self.tick = Some((handle, Instant::now() + after));
    }

    /// Work started (a task, a drain): the clock goes back to the busy
    /// pace now rather than at the idle tick, and it listens to every
    /// broker heartbeat. A tick already due sooner is left alone.
    pub(super) fn hurry(&mut self, ctx: &mut Context<Self>) {
        self.listen(ctx);
        let soon = Instant::now() + self.pace.busy;
        if self.tick.is_none_or(|(_, at)| at > soon) {
            self.schedule_tick(ctx);
        }
    }
}
