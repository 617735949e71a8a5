//! The transitions of a job order: [`Order::apply`] carries out the table
//! of phases and events in `order.rs`, with its helpers for a task known
//! dead, a cancel, and an order going back to the queue.

use super::super::attempts;
use super::{Applied, ApplyError, Order, OrderEvent, Outcome, Phase};
use crate::jobs::retry;

impl Order {
    /// Applies one event (the state machine).
    pub fn apply(&mut self, event: OrderEvent) -> Result<Applied, ApplyError> {
        let from = self.phase;
        let current = |task_id: &str| self.task_id.as_deref() == Some(task_id);
        let not_allowed = |event: &'static str| ApplyError::NotAllowed {
            order: self.id.clone(),
            phase: from,
            event,
        };
        match event {
            OrderEvent::Dispatched {
                task_id,
                subagent_id,
                instance_id,
            } => {
                if from != Phase::Queued {
                    return Err(not_allowed("dispatched"));
                }
                self.attempt += 1;
                self.attempts.placed(self.attempt, &task_id, &subagent_id);
                self.unreported = false;
                self.task_id = Some(task_id);
                self.subagent_id = Some(subagent_id);
                self.subagent_instance_id = Some(instance_id);
                self.confirmed = false;
                self.phase = Phase::Dispatching;
            }
            OrderEvent::DispatchFailed { task_id } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.attempts.unplaced(&task_id);
                self.back_to_queue(false);
            }
            OrderEvent::Started { task_id, at_ms } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.started_at_ms = Some(at_ms);
                self.attempts.started(&task_id, at_ms);
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Finished {
                task_id,
                outcome,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                // the subagent's own start time is the accurate one
                if outcome.started_at_ms.is_some() {
                    self.started_at_ms = outcome.started_at_ms;
                }
                self.attempts
                    .ended(&task_id, &outcome, self.cancel_requested);
                self.rerun_at_ms = None;
                let again = (!self.cancel_requested && outcome.retryable())
                    .then(|| retry::next_retry(self.retry.as_ref(), &self.id, self.retries, at_ms))
                    .flatten();
                if let Some(r) = again {
                    let why = format!(
                        "retry {} of {} after {}",
                        r.n,
                        r.of,
                        attempts::failure(&outcome)
                    );
                    self.attempts.rerun(why.clone());
                    self.back_to_queue(true);
                    self.retries = r.n;
                    self.retry_at_ms = Some(r.at_ms);
                    self.retry_reason = Some(why);
                    self.phase = Phase::Retrying;
                } else {
                    self.phase = if self.cancel_requested {
                        Phase::Cancelled
                    } else if outcome.succeeded() {
                        Phase::Succeeded
                    } else {
                        Phase::Failed
                    };
                    self.outcome = Some(outcome);
                }
            }
            OrderEvent::RetryDue { at_ms } => {
                if from != Phase::Retrying || self.retry_at_ms.is_some_and(|t| t > at_ms) {
                    return Ok(Applied::Stale);
                }
                self.back_to_queue(true);
            }
            OrderEvent::SubagentLost {
                subagent_id,
                at_ms: _,
                rerun_at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running);
                if !live || self.subagent_id.as_deref() != Some(subagent_id.as_str()) {
                    return Ok(Applied::Stale);
                }
                self.phase = Phase::Orphaned;
                self.rerun_at_ms = Some(rerun_at_ms);
            }
            OrderEvent::Certified {
                subagent_id,
                instance_id,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str())
                    && self.subagent_instance_id.as_deref() == Some(instance_id.as_str());
                if !live || !ours {
                    return Ok(Applied::Stale);
                }
                let why = "it died; its reaper killed the task and certified it";
                // the process is gone, and its memory of task ids with it:
                // an unconfirmed start is not an attempt
                let counted = self.confirmed;
                self.task_is_dead(&subagent_id, at_ms, why, counted);
            }
            OrderEvent::SubagentReturned {
                subagent_id,
                running,
            } => {
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str());
                let runs = self.task_id.as_ref().is_some_and(|t| running.contains(t));
                if from != Phase::Orphaned || !ours || !runs {
                    return Ok(Applied::Stale);
                }
                self.rerun_at_ms = None;
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Abandoned {
                task_id,
                reason,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                tracing::debug!(order = %self.id, %reason, "task abandoned by its subagent");
                // it ran: a restartable order runs again, another one fails
                self.confirmed = true;
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                if self.cancel_requested {
                    // killed for the cancel: the task was cancelled, not lost
                    self.cancelled(at_ms);
                } else {
                    self.task_is_dead(&subagent_id, at_ms, "it killed the task itself", true);
                }
            }
            OrderEvent::Reconciled {
                subagent_id,
                instance_id,
                running,
                result_by_ms,
                doubt_until_ms,
                at_ms: _,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str());
                if !self.inherited || !live || !ours {
                    return Ok(Applied::Stale);
                }
                self.inherited = false;
                let restarted = self
                    .subagent_instance_id
                    .as_ref()
                    .is_some_and(|i| *i != instance_id);
                let runs = self.task_id.as_ref().is_some_and(|t| running.contains(t));
                if restarted {
                    // the process it was sent to is out of sight; it may live
                    // on, and the task with it, until its orphan timeout
                    self.phase = Phase::Orphaned;
                    let by = self
                        .rerun_at_ms
                        .map_or(doubt_until_ms, |t| t.min(doubt_until_ms));
                    self.rerun_at_ms = Some(by);
                } else if runs {
                    self.rerun_at_ms = None;
                    self.confirmed = true;
                    self.phase = Phase::Running;
                } else if from == Phase::Dispatching {
                    // never confirmed: sent again with the same task id, which
                    // the subagent starts only if it never had it
                    self.subagent_instance_id = Some(instance_id);
                } else {
                    // it started and no longer runs: it ended, its result is on its way
                    self.unreported = true;
                    self.phase = Phase::Orphaned;
                    let by = self
                        .rerun_at_ms
                        .map_or(result_by_ms, |t| t.min(result_by_ms));
                    self.rerun_at_ms = Some(by);
                }
            }
            OrderEvent::OrphanDeadline { at_ms } => {
                if from != Phase::Orphaned || self.rerun_at_ms.is_some_and(|t| t > at_ms) {
                    return Ok(Applied::Stale);
                }
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                let why =
                    "its process was not heard from past its orphan timeout and left no death \
                           certificate; by then a process still running kills its task itself";
                // the process may live on and answer this task id as a
                // duplicate: the attempt counts, even unconfirmed
                self.task_is_dead(&subagent_id, at_ms, why, true);
            }
            OrderEvent::Cancel { at_ms } => match from {
                Phase::Queued | Phase::Retrying => self.cancelled(at_ms),
                Phase::Dispatching | Phase::Running | Phase::Orphaned | Phase::Spread => {
                    if self.cancel_requested {
                        return Ok(Applied::Stale);
                    }
                    self.cancel_requested = true;
                    return Ok(Applied::Stale);
                }
                Phase::Cancelled => return Ok(Applied::Stale),
                Phase::Succeeded | Phase::Failed => return Err(not_allowed("cancel")),
            },
            OrderEvent::Skipped { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("skipped"));
                }
                self.phase = Phase::Cancelled;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
            OrderEvent::Refused { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("refused"));
                }
                self.phase = Phase::Failed;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
        }
        if !matches!(
            self.phase,
            Phase::Dispatching | Phase::Running | Phase::Orphaned
        ) {
            self.inherited = false;
        }
        Ok(Applied::Moved {
            from,
            to: self.phase,
        })
    }

    /// The current task is known dead: it runs again when restartable (an
    /// unconfirmed one counts as an attempt unless its process is gone). A non-restartable
    /// one fails even when unconfirmed: it may have started before its
    /// subagent died, and it must never run twice.
    fn task_is_dead(&mut self, subagent_id: &str, at_ms: u64, why: &str, counted: bool) {
        if let Some(task_id) = self.task_id.clone() {
            let known = if self.unreported {
                "it had ended, and its result never came"
            } else if self.confirmed {
                "it was running"
            } else {
                "it was never confirmed started"
            };
            let reason = format!("{subagent_id} ({why}); {known}");
            self.attempts.lost(&task_id, at_ms, reason);
        }
        if self.cancel_requested {
            self.cancelled(at_ms);
        } else if self.restartable {
            // `counted`: the next attempt gets a new task id (a subagent
            // process that may still live answers one it has seen as a
            // duplicate)
            self.attempts.rerun(format!("{subagent_id} lost"));
            self.back_to_queue(counted);
        } else {
            self.phase = Phase::Failed;
            self.rerun_at_ms = None;
            self.outcome = Some(Outcome {
                error: Some(format!(
                    "subagent lost: {subagent_id} ({why}; the job is not restartable)"
                )),
                started_at_ms: self.started_at_ms,
                finished_at_ms: at_ms,
                ..Outcome::default()
            });
        }
    }

    fn cancelled(&mut self, at_ms: u64) {
        if let Some(task_id) = &self.task_id {
            self.attempts.cancelled(task_id, at_ms);
        }
        self.phase = Phase::Cancelled;
        self.cancel_requested = true;
        self.rerun_at_ms = None;
        self.retry_at_ms = None;
        let outcome = self.outcome.take().unwrap_or(Outcome {
            started_at_ms: self.started_at_ms,
            finished_at_ms: at_ms,
            ..Outcome::default()
        });
        self.outcome = Some(Outcome {
            error: outcome.error.or_else(|| Some("cancelled".into())),
            ..outcome
        });
    }

    /// Back to the queue; `counted` keeps the attempt (the task had started).
    fn back_to_queue(&mut self, counted: bool) {
        if !counted {
            self.attempt -= 1;
        }
        self.task_id = None;
        self.subagent_id = None;
        self.subagent_instance_id = None;
        self.confirmed = false;
        self.unreported = false;
        self.rerun_at_ms = None;
        self.retry_at_ms = None;
        self.retry_reason = None;
        self.phase = Phase::Queued;
    }
}
