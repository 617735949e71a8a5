//! Tasks inherited at a takeover, reconciled with what their subagent
//! says it runs when it is first heard from: running ones are confirmed,
//! unconfirmed ones sent again, ended ones await their result, and those
//! of a subagent never heard from are in doubt until its orphan timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{info, warn};

use super::super::order_book::{Applied, OrderEvent, Phase};
use super::{Core, Then, ORPHAN_MARGIN};
use crate::config::Config;

/// How many result resends of its subagent a task that ended is awaited for.
const RESULT_WAITS: u32 = 3;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A subagent was heard from. Its inherited tasks take their room on it
    /// at once; with the tasks it runs (a heartbeat or probe answer), they
    /// are reconciled: running ones are confirmed, unconfirmed ones sent
    /// again, started ones it no longer runs await their result, and those
    /// of an earlier process of it are dead.
    pub(in crate::broker) fn on_sighting(&mut self, id: &str, running: Option<&[String]>) {
        if !self.unreconciled.contains(id) {
            return;
        }
        let inherited: Vec<(String, String)> = self
            .book
            .inherited_on(id)
            .into_iter()
            .filter_map(|o| Some((o.id.clone(), o.task_id.clone()?)))
            .collect();
        for (_, task_id) in &inherited {
            self.registry.assign(id, task_id);
        }
        let (Some(running), Some(subagent)) = (running, self.registry.get(id)) else {
            return;
        };
        self.unreconciled.remove(id);
        let retry = self.config.subagent.result_retry;
        let wait = (retry + retry.max(Duration::from_secs(1))) * RESULT_WAITS;
        let now = self.now.ms;
        let instance_id = subagent.instance_id.clone();
        for (order_id, task_id) in inherited {
            let event = OrderEvent::Reconciled {
                subagent_id: id.to_string(),
                instance_id: instance_id.clone(),
                running: running.to_vec(),
                result_by_ms: now + wait.as_millis() as u64,
                doubt_until_ms: unseen_rerun_at(&self.config, now),
                at_ms: now,
            };
            let Ok(Applied::Moved { from, to }) = self.book.apply(&order_id, event) else {
                continue;
            };
            match to {
                Phase::Running => {
                    info!(order = %order_id, subagent = %id, "inherited task runs");
                    if from != Phase::Running {
                        self.store(&order_id, Then::Nothing);
                    }
                }
                Phase::Dispatching => {
                    info!(order = %order_id, subagent = %id, "inherited task unconfirmed; sending it again");
                    self.resend(&order_id, id, instance_id.clone());
                }
                Phase::Orphaned => {
                    info!(order = %order_id, subagent = %id, "inherited task no longer runs there; awaiting its result or proof of its death");
                    self.registry.release(id, &task_id, false);
                }
                _ => {
                    warn!(order = %order_id, subagent = %id, "inherited task died with its subagent's restart");
                    self.registry.release(id, &task_id, false);
                    self.after_move(&order_id, to);
                }
            }
        }
    }

    /// Sends an inherited, unconfirmed task again under its own id (the
    /// subagent answers `duplicate` if it has it).
    fn resend(&mut self, order_id: &str, subagent_id: &str, instance_id: String) {
        let run = self.book.get(order_id).and_then(|order| {
            let task_id = order.task_id.clone()?;
            self.run_task(order, task_id, order.attempt, (subagent_id, instance_id))
        });
        match run {
            Some(run) => self.send_run(subagent_id.to_string(), run, true),
            None => {
                // its job is gone: back to the queue, where it is refused
                let task_id = self.book.get(order_id).and_then(|o| o.task_id.clone());
                let task_id = task_id.unwrap_or_default();
                self.registry.release(subagent_id, &task_id, false);
                let _ = self
                    .book
                    .apply(order_id, OrderEvent::DispatchFailed { task_id });
            }
        }
    }

    /// `broker.subagent_timeout` after becoming active: inherited tasks of
    /// subagents never heard from are in doubt until their orphan timeout.
    pub(in crate::broker) fn unseen_deadline(&mut self) {
        let unseen: BTreeSet<String> = self
            .unreconciled
            .iter()
            .filter(|id| self.registry.get(id).is_none())
            .cloned()
            .collect();
        let now = self.now.ms;
        let rerun_at_ms = unseen_rerun_at(&self.config, now);
        for id in unseen {
            let orders: Vec<String> = self
                .book
                .inherited_on(&id)
                .into_iter()
                .map(|o| o.id.clone())
                .collect();
            warn!(subagent = %id, tasks = orders.len(), "subagent of inherited tasks never heard from");
            for order_id in orders {
                let event = OrderEvent::SubagentLost {
                    subagent_id: id.clone(),
                    at_ms: now,
                    rerun_at_ms,
                };
                self.apply_and_act(&order_id, event);
            }
        }
    }
}

/// When all of a never-seen subagent's tasks are surely dead: its orphan
/// timeout (the default one), kill grace, a heartbeat and a margin from now.
fn unseen_rerun_at(config: &Config, now_ms: u64) -> u64 {
    let s = &config.subagent;
    let limit = s.orphan_timeout + s.kill_grace + s.heartbeat_interval + ORPHAN_MARGIN;
    now_ms + limit.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_never_seen_subagents_tasks_wait_past_its_default_orphan_limit() {
        let config = Config::default();
        let s = &config.subagent;
        let at = unseen_rerun_at(&config, 1_000);
        let limit = (s.orphan_timeout + s.kill_grace).as_millis() as u64;
        assert!(at > 1_000 + limit);
    }
}
