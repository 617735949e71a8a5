//! What the Scheduler does with due slots: the [`Outbox`] of fires waiting
//! to be submitted, the retry delay of a failed submit, and the
//! [`FiredLedger`] of how far each job has fired. Pure.
//!
//! A job's slots are submitted one at a time, oldest first, and a failed
//! submit is retried before the job's next slot goes out, so a job's orders
//! are created in slot order. Different jobs' fires go out side by side, up
//! to `agent.max_in_flight` at once.
//!
//! The ledger only moves forward: a job's record in the fired bucket is
//! written one write at a time, always with the newest slot fired, so a
//! slow write never overwrites a newer one.
//!
//! A workflow with triggers counts as a job here, named by its schedule key
//! `workflow.NAME` ([`workflow_key`](crate::triggers::workflow_key)).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::bus::BusError;
use crate::protocol::{ErrorCode, FiredSlot};
use crate::triggers::Due;

/// The first retry of a failed submit waits this long; each next one twice as long.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two submits of one slot.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long to wait before submitting a slot again after `attempt` failed
/// submits (1 for the first failure).
pub fn retry_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// What to do about a submit that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitFailure {
    /// The broker may take it later (no answer, no broker, busy, storage down).
    Retry,
    /// The broker refused the slot (the job is gone, or cannot run without
    /// parameters): submitting it again would be refused again.
    Drop,
}

/// Sorts a failed submit's error.
pub fn submit_failure(error: &BusError) -> SubmitFailure {
    match error {
        BusError::Connect { .. }
        | BusError::NoResponders { .. }
        | BusError::TimedOut { .. }
        | BusError::Transport { .. } => SubmitFailure::Retry,
        BusError::Remote(reply) => match reply.error.code {
            ErrorCode::Busy | ErrorCode::Unavailable => SubmitFailure::Retry,
            _ => SubmitFailure::Drop,
        },
        // a broker answered something we cannot read: it may have taken it
        BusError::Decode { .. } => SubmitFailure::Drop,
        // these credentials may not submit: asking again changes nothing
        BusError::Denied { .. } => SubmitFailure::Drop,
    }
}

/// One slot to submit; `attempt` counts its failed submits so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub due: Due,
    pub attempt: u32,
}

/// Fires waiting to be submitted: at most `max_in_flight` submits at once,
/// one per job at a time, each job's slots oldest first, jobs in the order
/// their slots came.
#[derive(Debug)]
pub struct Outbox {
    max_in_flight: usize,
    in_flight: usize,
    /// Per job, its waiting fires, oldest first.
    waiting: HashMap<String, VecDeque<Fire>>,
    waiting_count: usize,
    /// Jobs with a fire in flight or waiting for its retry.
    busy: HashSet<String>,
    /// Jobs with waiting fires and none busy, in the order they became ready.
    ready: VecDeque<String>,
}

impl Outbox {
    pub fn new(max_in_flight: usize) -> Self {
        Outbox {
            max_in_flight: max_in_flight.max(1),
            in_flight: 0,
            waiting: HashMap::new(),
            waiting_count: 0,
            busy: HashSet::new(),
            ready: VecDeque::new(),
        }
    }

    /// Adds a due slot behind the job's earlier ones.
    pub fn push(&mut self, due: Due) {
        let job = due.job.clone();
        let queue = self.waiting.entry(job.clone()).or_default();
        queue.push_back(Fire { due, attempt: 0 });
        self.waiting_count += 1;
        if queue.len() == 1 && !self.busy.contains(&job) {
            self.ready.push_back(job);
        }
    }

    /// The next fire to submit now, if one may go: it counts as in flight
    /// until [`answered`](Self::answered) or [`failed`](Self::failed).
    pub fn take(&mut self) -> Option<Fire> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let job = self.ready.pop_front()?;
        let queue = self.waiting.get_mut(&job)?;
        let fire = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&job);
        }
        self.waiting_count -= 1;
        self.busy.insert(job);
        self.in_flight += 1;
        Some(fire)
    }

    /// The submit of `job`'s fire is over (taken or dropped): its next slot may go.
    pub fn answered(&mut self, job: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.busy.remove(job);
        if self.waiting.contains_key(job) {
            self.ready.push_back(job.to_string());
        }
    }

    /// A submit failed: it is no longer in flight, but its job waits for
    /// the fire's [`retry`](Self::retry).
    pub fn failed(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Puts a failed fire back, ahead of every other, with its attempt counted.
    pub fn retry(&mut self, mut fire: Fire) {
        fire.attempt += 1;
        let job = fire.due.job.clone();
        self.busy.remove(&job);
        self.waiting
            .entry(job.clone())
            .or_default()
            .push_front(fire);
        self.waiting_count += 1;
        self.ready.push_front(job);
    }

    /// Submits under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Fires waiting to be submitted (retries included).
    pub fn waiting(&self) -> usize {
        self.waiting_count
    }
}

#[derive(Debug, Default)]
struct Progress {
    /// The newest slot fired, as it should be recorded.
    newest: Option<FiredSlot>,
    /// The newest slot known to be in the bucket.
    written: Option<u64>,
    writing: bool,
}

/// How far each job has fired, and which record to write to the fired
/// bucket next (one write per job at a time, only forward).
#[derive(Debug, Default)]
pub struct FiredLedger {
    jobs: HashMap<String, Progress>,
}

impl FiredLedger {
    /// Starts from the records read from the fired bucket.
    pub fn new(records: impl IntoIterator<Item = FiredSlot>) -> Self {
        let jobs = records
            .into_iter()
            .map(|record| {
                let progress = Progress {
                    written: Some(record.slot_ms),
                    newest: Some(record.clone()),
                    writing: false,
                };
                (record.job, progress)
            })
            .collect();
        FiredLedger { jobs }
    }

    /// The newest slot fired for `job`, by this Scheduler or as recorded.
    pub fn last_fired(&self, job: &str) -> Option<u64> {
        Some(self.jobs.get(job)?.newest.as_ref()?.slot_ms)
    }

    /// Notes a slot fired; returns the record to write now, if any (none
    /// while a write for the job is under way, or when it is not newer).
    pub fn fired(&mut self, record: FiredSlot) -> Option<FiredSlot> {
        let progress = self.jobs.entry(record.job.clone()).or_default();
        if progress
            .newest
            .as_ref()
            .is_none_or(|newest| record.slot_ms > newest.slot_ms)
        {
            let job = record.job.clone();
            progress.newest = Some(record);
            return self.next_write(&job);
        }
        None
    }

    /// A write of `job`'s record with `slot_ms` ended (`ok` when stored);
    /// returns the next record to write, when a newer slot fired meanwhile.
    /// A failed write is not retried at once: the job's next fire writes again.
    pub fn wrote(&mut self, job: &str, slot_ms: u64, ok: bool) -> Option<FiredSlot> {
        let progress = self.jobs.get_mut(job)?;
        progress.writing = false;
        if !ok {
            return None;
        }
        progress.written = progress.written.max(Some(slot_ms));
        self.next_write(job)
    }

    fn next_write(&mut self, job: &str) -> Option<FiredSlot> {
        let progress = self.jobs.get_mut(job)?;
        let newest = progress.newest.as_ref()?;
        if progress.writing || progress.written >= Some(newest.slot_ms) {
            return None;
        }
        progress.writing = true;
        Some(newest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorReply;

    fn due(job: &str, slot_ms: u64) -> Due {
        Due {
            job: job.into(),
            slot_ms,
            nominal_ms: slot_ms,
        }
    }

    fn slot(fire: Option<Fire>) -> Option<(String, u64)> {
        fire.map(|f| (f.due.job, f.due.slot_ms))
    }

    fn record(job: &str, slot_ms: u64) -> FiredSlot {
        FiredSlot {
            job: job.into(),
            slot_ms,
            order_id: format!("o-{slot_ms}"),
            agent_id: "a".into(),
            at_ms: slot_ms + 5,
        }
    }

    #[test]
    fn retry_delay_doubles_from_100ms_to_2s() {
        let ms = |n| Duration::from_millis(n);
        let delays: Vec<Duration> = (1..=7).map(retry_delay).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        assert_eq!(retry_delay(0), ms(100));
        assert_eq!(retry_delay(u32::MAX), ms(2000));
    }

    #[test]
    fn failures_are_retried_or_dropped_by_kind() {
        let remote = |code| BusError::Remote(ErrorReply::new(code, "x"));
        let subject = || "s".to_string();
        for retried in [
            BusError::NoResponders { subject: subject() },
            BusError::TimedOut {
                subject: subject(),
                timeout: Duration::from_secs(1),
            },
            remote(ErrorCode::Busy),
            remote(ErrorCode::Unavailable),
        ] {
            assert_eq!(submit_failure(&retried), SubmitFailure::Retry, "{retried}");
        }
        for dropped in [
            remote(ErrorCode::UnknownJob),
            remote(ErrorCode::InvalidParam),
        ] {
            assert_eq!(submit_failure(&dropped), SubmitFailure::Drop, "{dropped}");
        }
    }

    #[test]
    fn one_submit_per_job_at_a_time_oldest_first() {
        let mut o = Outbox::new(10);
        o.push(due("a", 1));
        o.push(due("a", 2));
        o.push(due("b", 1));
        assert_eq!(o.waiting(), 3);
        assert_eq!(slot(o.take()), Some(("a".into(), 1)));
        assert_eq!(slot(o.take()), Some(("b".into(), 1)));
        // a's second slot waits for its first
        assert_eq!(slot(o.take()), None);
        assert_eq!(o.in_flight(), 2);
        o.answered("a");
        assert_eq!(slot(o.take()), Some(("a".into(), 2)));
        o.answered("a");
        o.answered("b");
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.waiting(), 0);
        assert_eq!(slot(o.take()), None);
    }

    #[test]
    fn at_most_max_in_flight() {
        let mut o = Outbox::new(2);
        for job in ["a", "b", "c"] {
            o.push(due(job, 1));
        }
        assert!(o.take().is_some());
        assert!(o.take().is_some());
        assert!(o.take().is_none());
        o.answered("a");
        assert_eq!(slot(o.take()), Some(("c".into(), 1)));
    }

    #[test]
    fn a_failed_fire_is_retried_before_the_jobs_later_slots() {
        let mut o = Outbox::new(10);
        o.push(due("a", 1));
        let first = o.take().unwrap();
        o.push(due("a", 2));
        o.push(due("b", 1));
        o.failed();
        assert_eq!(o.in_flight(), 0);
        // while a waits for its retry only b may go
        assert_eq!(slot(o.take()), Some(("b".into(), 1)));
        assert_eq!(slot(o.take()), None);
        o.retry(first);
        let again = o.take().unwrap();
        assert_eq!((again.due.slot_ms, again.attempt), (1, 1));
        o.answered("a");
        assert_eq!(slot(o.take()), Some(("a".into(), 2)));
    }

    #[test]
    fn ledger_writes_one_at_a_time_and_only_forward() {
        let mut l = FiredLedger::new([record("a", 100)]);
        assert_eq!(l.last_fired("a"), Some(100));
        assert_eq!(l.last_fired("b"), None);
        // not newer than the record read: nothing to write
        assert_eq!(l.fired(record("a", 100)), None);
        assert_eq!(l.fired(record("a", 200)), Some(record("a", 200)));
        // a write is under way: the newer slot waits for it
        assert_eq!(l.fired(record("a", 300)), None);
        assert_eq!(l.fired(record("a", 250)), None);
        assert_eq!(l.last_fired("a"), Some(300));
        assert_eq!(l.wrote("a", 200, true), Some(record("a", 300)));
        assert_eq!(l.wrote("a", 300, true), None);
        // an older slot firing late never goes backwards
        assert_eq!(l.fired(record("a", 150)), None);
        assert_eq!(l.last_fired("a"), Some(300));
    }

    #[test]
    fn ledger_failed_write_is_written_with_the_next_fire() {
        let mut l = FiredLedger::new([]);
        assert_eq!(l.fired(record("a", 1)), Some(record("a", 1)));
        assert_eq!(l.wrote("a", 1, false), None);
        assert_eq!(l.fired(record("a", 2)), Some(record("a", 2)));
        assert_eq!(l.wrote("a", 2, true), None);
        assert_eq!(l.wrote("unknown", 2, true), None);
    }
}
