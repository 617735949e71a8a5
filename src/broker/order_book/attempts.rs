//! The history of a job order's tasks ([`Attempts`]): one [`TaskAttempt`]
//! per task placed, how it ended, and why the order ran again after it.
//! Bounded: the newest [`KEEP_ATTEMPTS`], with a count of those dropped.
//!
//! Pure; `order.rs` feeds it as its events move the order.

use crate::protocol::{AttemptOutcome, OrderInfo, TaskAttempt};

use super::Outcome;

/// Tasks kept in an order's history; older ones are counted only.
pub const KEEP_ATTEMPTS: usize = 20;

/// An order's tasks, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    pub kept: Vec<TaskAttempt>,
    /// Older tasks no longer kept.
    pub dropped: u32,
}

/// How a task's outcome reads in its history.
pub fn classify(outcome: &Outcome) -> AttemptOutcome {
    if outcome.timed_out {
        AttemptOutcome::TimedOut
    } else if outcome.signal.is_some() {
        AttemptOutcome::Signalled
    } else if outcome.succeeded() {
        AttemptOutcome::Succeeded
    } else if outcome.exit_code.is_some() && outcome.error.is_none() {
        AttemptOutcome::Exited
    } else {
        AttemptOutcome::Error
    }
}

/// A failure in a few words: "exit 1", "signal 9", "timeout".
pub fn failure(outcome: &Outcome) -> String {
    match classify(outcome) {
        AttemptOutcome::TimedOut => "timeout".into(),
        AttemptOutcome::Signalled => format!("signal {}", outcome.signal.unwrap_or_default()),
        AttemptOutcome::Exited => format!("exit {}", outcome.exit_code.unwrap_or_default()),
        other => outcome
            .error
            .clone()
            .unwrap_or_else(|| other.as_str().to_string()),
    }
}

impl Attempts {
    /// The history a journal record carries.
    pub fn restore(info: &OrderInfo) -> Attempts {
        Attempts {
            kept: info.attempts.clone(),
            dropped: info.attempts_dropped,
        }
    }

    /// A task is placed on a subagent.
    pub fn placed(&mut self, attempt: u32, task_id: &str, subagent_id: &str) {
        self.kept
            .push(TaskAttempt::placed(attempt, task_id, subagent_id));
        if self.kept.len() > KEEP_ATTEMPTS {
            let over = self.kept.len() - KEEP_ATTEMPTS;
            self.kept.drain(..over);
            self.dropped = self.dropped.saturating_add(over as u32);
        }
    }

    /// A placement that surely never reached a subagent: it is not a task.
    pub fn unplaced(&mut self, task_id: &str) {
        if self.open(task_id).is_some() {
            self.kept.pop();
        }
    }

    pub fn started(&mut self, task_id: &str, at_ms: u64) {
        if let Some(a) = self.open(task_id) {
            a.started_at_ms.get_or_insert(at_ms);
        }
    }

    /// The task ended with `outcome`; `cancelled` when a cancel ended it.
    pub fn ended(&mut self, task_id: &str, outcome: &Outcome, cancelled: bool) {
        let Some(a) = self.open(task_id) else {
            return;
        };
        if outcome.started_at_ms.is_some() {
            a.started_at_ms = outcome.started_at_ms;
        }
        a.finished_at_ms = Some(outcome.finished_at_ms);
        a.outcome = Some(classify(outcome));
        a.exit_code = outcome.exit_code;
        a.signal = outcome.signal;
        a.reason = if cancelled {
            Some("cancelled".into())
        } else {
            outcome.error.clone()
        };
    }

    /// The task is dead with its subagent (or killed by it), as `reason` says.
    pub fn lost(&mut self, task_id: &str, at_ms: u64, reason: String) {
        if let Some(a) = self.open(task_id) {
            a.finished_at_ms = Some(at_ms);
            a.outcome = Some(AttemptOutcome::Lost);
            a.reason = Some(reason);
        }
    }

    /// The order is cancelled while the task runs or is in doubt, and the
    /// task will never be heard of again.
    pub fn cancelled(&mut self, task_id: &str, at_ms: u64) {
        if let Some(a) = self.open(task_id) {
            a.finished_at_ms = Some(at_ms);
            a.outcome = Some(AttemptOutcome::Cancelled);
        }
    }

    /// Why the order runs again after its newest task.
    pub fn rerun(&mut self, why: String) {
        if let Some(a) = self.kept.last_mut() {
            a.rerun = Some(why);
        }
    }

    /// Tasks that failed on their own (exit, signal, timeout), of those kept.
    pub fn failed(&self) -> usize {
        let failed = |a: &&TaskAttempt| {
            matches!(
                a.outcome,
                Some(AttemptOutcome::Exited | AttemptOutcome::Signalled | AttemptOutcome::TimedOut)
            )
        };
        self.kept.iter().filter(failed).count()
    }

    /// The newest task, if it is `task_id` and has not ended.
    fn open(&mut self, task_id: &str) -> Option<&mut TaskAttempt> {
        self.kept
            .last_mut()
            .filter(|a| a.task_id == task_id && a.outcome.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> Outcome {
        Outcome {
            exit_code: Some(code),
            finished_at_ms: 9,
            ..Outcome::default()
        }
    }

    #[test]
    fn outcomes_read_as_their_kind() {
        assert_eq!(classify(&exit(0)), AttemptOutcome::Succeeded);
        assert_eq!(classify(&exit(1)), AttemptOutcome::Exited);
        let killed = Outcome {
            signal: Some(9),
            ..exit(0)
        };
        assert_eq!(classify(&killed), AttemptOutcome::Signalled);
        let late = Outcome {
            timed_out: true,
            signal: Some(15),
            ..Outcome::default()
        };
        assert_eq!(classify(&late), AttemptOutcome::TimedOut);
        let unrun = Outcome {
            error: Some("no such program".into()),
            ..Outcome::default()
        };
        assert_eq!(classify(&unrun), AttemptOutcome::Error);
        assert_eq!(failure(&exit(3)), "exit 3");
        assert_eq!(failure(&killed), "signal 9");
        assert_eq!(failure(&late), "timeout");
        assert_eq!(failure(&unrun), "no such program");
    }

    #[test]
    fn the_history_keeps_the_newest_and_counts_the_rest() {
        let mut h = Attempts::default();
        for n in 1..=(KEEP_ATTEMPTS as u32 + 5) {
            let task = format!("o-{n}");
            h.placed(n, &task, "sub-1");
            h.started(&task, u64::from(n));
            h.ended(&task, &exit(1), false);
            h.rerun(format!("retry {n}"));
        }
        assert_eq!(h.kept.len(), KEEP_ATTEMPTS);
        assert_eq!(h.dropped, 5);
        assert_eq!(h.kept[0].attempt, 6);
        assert_eq!(h.failed(), KEEP_ATTEMPTS);
        // a placement that never left is no task
        h.placed(99, "o-99", "sub-2");
        h.unplaced("o-99");
        assert_eq!(
            h.kept.last().unwrap().task_id,
            format!("o-{}", KEEP_ATTEMPTS + 5)
        );
        // an ended task is not ended again
        h.lost(&format!("o-{}", KEEP_ATTEMPTS + 5), 1, "lost".into());
        assert_eq!(h.kept.last().unwrap().outcome, Some(AttemptOutcome::Exited));
    }
}
