//! What the simulation checks: the guarantees, as violations noted while it
//! runs (at the moment an effect is carried out or a task starts) and at
//! its end. No accepted order lost; every order ended; no two copies of a
//! task at once; a non-restartable task never run twice; a task sent only
//! once its dispatch is journaled; a result acknowledged only once the end
//! it brought is journaled; `finished` published only once stored; no
//! final record changed (a failed workflow order may still be resumed or
//! cancelled until it expires); a failed workflow order expired once past
//! its hold (`broker.failed_hold`); a cancel once answered never lost (the
//! order ends cancelled); never two brokers acting. Of a job with retries:
//! a failed task's result acknowledged only once the retry's due time is
//! journaled; no retry started before its due time; an order failed only
//! once its retries are used up, after `times + 1` tasks that really ran
//! failed (so no due retry was lost across a takeover). No two tasks of one
//! order at once holds for retries as for any task. Of spread orders: a
//! member's task runs only on its member; each member's order in the
//! journal belongs to its spread order and member; a spread order ended as
//! its members' stored ends decide (`spread::verdict`).

use std::collections::{BTreeMap, BTreeSet};

use super::journal::Journal;
use crate::protocol::{AttemptOutcome, OrderInfo, OrderState};

/// A failed workflow order's expiry is stored within this long of its
/// deadline, once the run has settled.
const EXPIRY_SLACK_MS: u64 = 2_000;

/// A task run by a subagent process, from start to end.
#[derive(Debug, Clone)]
struct Run {
    order_id: String,
    subagent: String,
    end_ms: Option<u64>,
}

#[derive(Default)]
pub struct Checker {
    runs: BTreeMap<String, Run>,
    /// Tasks started per order.
    starts: BTreeMap<String, u32>,
    /// Orders whose job may not run twice.
    pub once: BTreeSet<String>,
    /// Orders a client was told are accepted.
    pub accepted: BTreeSet<String>,
    /// Orders an operator was told are being cancelled.
    pub cancelled: BTreeSet<String>,
    /// The job with retries, and how many it allows.
    pub retry_job: (String, u32),
    /// Tasks that ran and failed (see [`Checker::ended`]), per order.
    failed_runs: BTreeMap<String, u32>,
    /// The latest retry due time journaled per order (simulated ms).
    due: BTreeMap<String, u64>,
    pub violations: Vec<String>,
}

impl Checker {
    /// A checker of a run where job `retry_job.0` has `retry_job.1` retries.
    pub fn new(retry_job: (String, u32)) -> Checker {
        Checker {
            retry_job,
            ..Checker::default()
        }
    }

    /// An order of the job with retries that failed used them all: its
    /// record says so, and that many tasks really ran and failed.
    fn retries_used_up(&mut self, now_ms: u64, info: &OrderInfo) {
        let (job, times) = self.retry_job.clone();
        if info.job != job || info.state != OrderState::Failed {
            return;
        }
        let ran = self.failed_runs.get(&info.order_id).copied().unwrap_or(0);
        let counted = (info.attempts.iter())
            .filter(|a| {
                use AttemptOutcome::*;
                matches!(a.outcome, Some(Exited | Signalled | TimedOut))
            })
            .count();
        if info.retries != times || ran < times + 1 || counted != times as usize + 1 {
            let what = format!(
                "order {} failed with {} of {times} retries used, {ran} failed runs, {counted} failed tasks in its history",
                info.order_id, info.retries
            );
            self.violate(now_ms, what);
        }
    }

    fn violate(&mut self, now_ms: u64, what: String) {
        self.violations.push(format!("t={now_ms} {what}"));
    }

    /// A subagent started a task: no other task of its order may run.
    pub fn started(&mut self, now_ms: u64, task_id: &str, order_id: &str, subagent: &str) {
        let overlapping: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.order_id == order_id && r.end_ms.is_none())
            .map(|(t, r)| format!("{t} on {}", r.subagent))
            .collect();
        if !overlapping.is_empty() {
            let what = format!(
                "order {order_id}: task {task_id} started on {subagent} while {} still runs",
                overlapping.join(", ")
            );
            self.violate(now_ms, what);
        }
        if let Some(&due) = self.due.get(order_id).filter(|&&due| due > now_ms) {
            let what = format!(
                "order {order_id}: task {task_id} started before its retry was due at {due}"
            );
            self.violate(now_ms, what);
        }
        let starts = self.starts.entry(order_id.to_string()).or_default();
        *starts += 1;
        if *starts > 1 && self.once.contains(order_id) {
            let what =
                format!("order {order_id} of a non-restartable job ran a second task {task_id}");
            self.violate(now_ms, what);
        }
        let run = Run {
            order_id: order_id.to_string(),
            subagent: subagent.to_string(),
            end_ms: None,
        };
        self.runs.insert(task_id.to_string(), run);
    }

    /// A task of `order_id` started on subagent `subagent`: a member's
    /// order runs only on its member.
    pub fn on_its_member(
        &mut self,
        now_ms: u64,
        journal: &Journal,
        order_id: &str,
        subagent: &str,
    ) {
        let pin = journal.get(order_id).and_then(|(info, _)| info.pin);
        if let Some(pin) = pin.filter(|p| p != subagent) {
            let what = format!("member order {order_id} of {pin} ran on {subagent}");
            self.violate(now_ms, what);
        }
    }

    /// A spread order in the journal: its members' orders are its own, and
    /// an end is the one its members' stored ends decide.
    fn spread_holds(&mut self, now_ms: u64, journal: &Journal, info: &OrderInfo) {
        let Some(policy) = info.spread else {
            return;
        };
        let mut members = info.members.clone();
        for m in &mut members {
            let Some((member, _)) = journal.get(&m.order_id) else {
                if info.state.is_final() {
                    let what = format!(
                        "spread order {}: member order {} not stored",
                        info.order_id, m.order_id
                    );
                    self.violate(now_ms, what);
                }
                continue;
            };
            if member.member_of.as_ref() != Some(&info.order_id)
                || member.pin.as_ref() != Some(&m.subagent_id)
            {
                let what = format!(
                    "spread order {}: member order {} is not its {}",
                    info.order_id, m.order_id, m.subagent_id
                );
                self.violate(now_ms, what);
            }
            m.state = member.state;
        }
        // (one never placed ends as any waiting order: cancelled, skipped, refused)
        if info.state.is_final() && !members.is_empty() {
            let verdict = crate::broker::spread::verdict(&policy, &members, info.cancel_requested);
            if verdict.as_ref().map(|v| v.0) != Some(info.state) {
                let what = format!(
                    "spread order {} ended {:?}, its members say {verdict:?}",
                    info.order_id, info.state
                );
                self.violate(now_ms, what);
            }
        }
    }

    /// A task ended; `failed`: its result says it failed (exited non-zero,
    /// or killed on a broker's request).
    pub fn ended(&mut self, now_ms: u64, task_id: &str, failed: bool) {
        if let Some(run) = self.runs.get_mut(task_id) {
            if run.end_ms.is_none() && failed {
                *self.failed_runs.entry(run.order_id.clone()).or_default() += 1;
            }
            run.end_ms.get_or_insert(now_ms);
        }
    }

    /// A journal write landed with a retry's due time (simulated ms).
    pub fn retry_stored(&mut self, order_id: &str, due_ms: u64) {
        let due = self.due.entry(order_id.to_string()).or_default();
        *due = (*due).max(due_ms);
    }

    /// A failed task's result is acknowledged while its order waits for a
    /// retry: the journal must hold the retry's due time.
    pub fn retry_acked(&mut self, now_ms: u64, journal: &Journal, order_id: &str, task_id: &str) {
        let stored = journal.get(order_id).map(|(info, _)| info);
        let waits = stored
            .as_ref()
            .is_some_and(|i| i.retry_at_ms.is_some() && i.task_id.is_none());
        if !waits {
            let what = format!(
                "result of task {task_id} acknowledged before its order's retry was journaled ({})",
                describe(stored.as_ref())
            );
            self.violate(now_ms, what);
        }
    }

    /// A run request is sent: its dispatch must be in the journal.
    pub fn run_sent(&mut self, now_ms: u64, journal: &Journal, order_id: &str, task_id: &str) {
        let stored = journal.get(order_id).map(|(info, _)| info);
        if stored.as_ref().and_then(|i| i.task_id.as_deref()) != Some(task_id) {
            let what = format!(
                "task {task_id} sent before its dispatch was journaled (journal holds {})",
                describe(stored.as_ref())
            );
            self.violate(now_ms, what);
        }
    }

    /// A result is acknowledged: when it ended its order (`ended`, as the
    /// broker holds it), the journal must hold that end. (A result the
    /// broker no longer counts, such as one arriving after the task was
    /// proven dead and its order queued again, changes nothing.)
    pub fn acked(&mut self, now_ms: u64, journal: &Journal, task_id: &str, ended: bool) {
        let Some(order_id) = self.runs.get(task_id).map(|r| r.order_id.clone()) else {
            return;
        };
        if !ended {
            return;
        }
        let stored = journal.get(&order_id).map(|(info, _)| info);
        let durable = stored
            .as_ref()
            .is_some_and(|i| i.state.is_final() || i.task_id.as_deref() != Some(task_id));
        if !durable {
            let what = format!(
                "result of task {task_id} acknowledged before its order's end was journaled ({})",
                describe(stored.as_ref())
            );
            self.violate(now_ms, what);
        }
    }

    /// A `finished` event is published: the journal must hold that end.
    pub fn finished(&mut self, now_ms: u64, journal: &Journal, order_id: &str, state: OrderState) {
        let stored = journal.get(order_id).map(|(info, _)| info);
        if stored.as_ref().map(|i| i.state) != Some(state) {
            let what = format!(
                "order {order_id}: finished ({state:?}) published before it was journaled ({})",
                describe(stored.as_ref())
            );
            self.violate(now_ms, what);
        }
    }

    /// After the faults: nothing accepted is lost, everything ended, and
    /// no write rolled an order back.
    pub fn at_end(&mut self, now_ms: u64, journal: &Journal) {
        for why in journal.rollbacks.borrow().iter() {
            self.violations.push(format!("rollback: {why}"));
        }
        let accepted: Vec<String> = self.accepted.iter().cloned().collect();
        for order_id in accepted {
            if journal.get(&order_id).is_none() {
                self.violate(
                    now_ms,
                    format!("accepted order {order_id} is not in the journal"),
                );
            }
        }
        for order_id in &self.cancelled {
            let stored = journal.get(order_id).map(|(info, _)| info);
            if stored.as_ref().map(|i| i.state) != Some(OrderState::Cancelled) {
                let what = format!(
                    "t={now_ms} order {order_id}: a cancel was answered, yet it ended {}",
                    describe(stored.as_ref())
                );
                self.violations.push(what);
            }
        }
        for info in journal.all() {
            self.retries_used_up(now_ms, &info);
            self.spread_holds(now_ms, journal, &info);
            let resumable = info.workflow.is_some()
                && info.state == OrderState::Failed
                && info.expired_at_ms.is_none();
            let overdue = info
                .resumable_until_ms
                .is_none_or(|until| until + EXPIRY_SLACK_MS <= now_ms);
            if resumable && overdue {
                let what = format!(
                    "failed workflow order {} not expired past its hold: {:?}",
                    info.order_id, info.resumable_until_ms
                );
                self.violate(now_ms, what);
            }
            if !info.state.is_final() {
                let what = format!(
                    "order {} never ended: {}",
                    info.order_id,
                    describe(Some(&info))
                );
                self.violate(now_ms, what);
            }
        }
    }
}

fn describe(info: Option<&OrderInfo>) -> String {
    match info {
        None => "no record".into(),
        Some(i) => format!(
            "{:?}, attempt {}, task {}, on {}",
            i.state,
            i.attempt,
            i.task_id.as_deref().unwrap_or("-"),
            i.subagent_id.as_deref().unwrap_or("-")
        ),
    }
}
