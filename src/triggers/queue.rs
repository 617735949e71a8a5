//! [`TimerQueue`]: every schedule's next slot in one min-heap. Pure.
//!
//! The Scheduler sleeps until [`TimerQueue::next_deadline`], then calls
//! [`TimerQueue::pop_due`] with the time it woke and fires what comes out.
//! Inserting, replacing and removing a job cost O(log n): a replaced or
//! removed job's heap item stays behind and is dropped when it surfaces
//! (each item carries its schedule's generation), and the heap is rebuilt
//! when such leftovers outnumber the live items. It handles 100,000
//! schedules (a test drives that many through an hour).
//!
//! Each schedule remembers how far it has been decided (its *cursor*). A due
//! schedule goes through [`due_slots`] with its misfire policy, so a
//! Scheduler that falls behind, or takes over with the last slots fired
//! from the previous one, applies the same policy as after an outage.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::policy::{due_slots, idempotency_key, MisfirePolicy};
use super::Trigger;

/// A job's trigger with its misfire policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub trigger: Trigger,
    pub misfire: MisfirePolicy,
}

/// A slot to fire now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The schedule's key: the job's name, or a workflow's
    /// [`workflow_key`](super::workflow_key). The queue's `job` arguments
    /// are such keys too.
    pub job: String,
    /// When it fires (the slot, or for a jittered trigger a little after).
    pub slot_ms: u64,
    /// The slot it fires: what the order is keyed and labelled by.
    pub nominal_ms: u64,
}

impl Due {
    /// The request id to submit this slot with.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(&self.job, self.nominal_ms)
    }
}

#[derive(Debug)]
struct Entry {
    job: String,
    /// Shared with whoever keeps the schedule beside the queue (the
    /// Scheduler keeps paused ones too): one copy per job, not two.
    schedule: Arc<Schedule>,
    generation: u64,
    /// Every slot at or before this has been decided (fired or dropped).
    cursor: u64,
    next: Option<u64>,
}

/// A heap item: (slot, generation, entry index), smallest slot first.
type Item = Reverse<(u64, u64, usize)>;

/// The schedules of every deployed job, ordered by their next slot.
/// Most slots of one gap counted as missed (a longer gap counts this many).
pub const MISSED_COUNT_LIMIT: usize = 10_000;
/// Most gaps kept between two [`TimerQueue::take_gaps`].
pub const MAX_GAPS: usize = 1_000;

#[derive(Debug)]
pub struct TimerQueue {
    tolerance_ms: u64,
    heap: BinaryHeap<Item>,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_job: HashMap<String, usize>,
    armed: usize,
    generations: u64,
    /// Slots passed over by the misfire policy since [`take_missed`](Self::take_missed).
    missed: u64,
    /// The gaps of those slots, per schedule, since [`take_gaps`](Self::take_gaps).
    gaps: Vec<Gap>,
}

/// Slots of one schedule its misfire policy passed over: `count` of them
/// after `after_ms` (its cursor) up to `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub job: String,
    pub count: u64,
    pub after_ms: u64,
    pub until_ms: u64,
}

impl TimerQueue {
    /// An empty queue; a slot at most `tolerance_ms` late counts as on time.
    pub fn new(tolerance_ms: u64) -> Self {
        TimerQueue {
            tolerance_ms,
            heap: BinaryHeap::new(),
            entries: Vec::new(),
            free: Vec::new(),
            by_job: HashMap::new(),
            armed: 0,
            generations: 0,
            missed: 0,
            gaps: Vec::new(),
        }
    }

    /// Adds `job`, replacing its schedule if it has one.
    ///
    /// `last_fired_slot` is the last slot fired for the job (by this or an
    /// earlier Scheduler), or `None` for a job deployed now, whose first slot
    /// is the first after `now_ms`. With a last slot, the slots since then
    /// are due at the next [`pop_due`](Self::pop_due), under the misfire
    /// policy. To keep a redeployed job's progress, pass
    /// [`cursor`](Self::cursor).
    pub fn insert(
        &mut self,
        job: &str,
        schedule: impl Into<Arc<Schedule>>,
        last_fired_slot: Option<u64>,
        now_ms: u64,
    ) {
        self.remove(job);
        self.generations += 1;
        let schedule = schedule.into();
        let cursor = last_fired_slot.unwrap_or(now_ms);
        let entry = Entry {
            job: job.to_string(),
            next: schedule.trigger.next_after(cursor),
            schedule,
            generation: self.generations,
            cursor,
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        self.arm(index, &entry);
        self.entries[index] = Some(entry);
        self.by_job.insert(job.to_string(), index);
    }

    /// Removes `job`; false when it had no schedule.
    pub fn remove(&mut self, job: &str) -> bool {
        let Some(index) = self.by_job.remove(job) else {
            return false;
        };
        if let Some(entry) = self.entries[index].take() {
            if entry.next.is_some() {
                self.armed -= 1;
            }
        }
        self.free.push(index);
        self.tidy();
        true
    }

    /// The earliest next slot of all jobs: when to call `pop_due`.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((slot, _, _))| *slot)
    }

    /// Appends the slots to fire at `now_ms` to `out` (in order of each
    /// job's next slot, each job's slots oldest first) and re-arms each due
    /// job with its first slot after `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64, out: &mut Vec<Due>) {
        while let Some(&Reverse((slot, generation, index))) = self.heap.peek() {
            if slot > now_ms {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.entries[index].as_mut() else {
                continue;
            };
            if entry.generation != generation || entry.next != Some(slot) {
                continue;
            }
            let Schedule { trigger, misfire } = &*entry.schedule;
            let slots = due_slots(
                trigger,
                Some(entry.cursor),
                now_ms,
                misfire,
                self.tolerance_ms,
            );
            // the slots since the cursor the policy did not fire: one, the
            // popped slot, unless the job fell behind (counted up to a bound)
            let fell_behind = trigger.next_after(slot).is_some_and(|next| next <= now_ms);
            let passed = match fell_behind {
                false => 1,
                true => trigger
                    .slots_between(entry.cursor, now_ms, MISSED_COUNT_LIMIT)
                    .len(),
            };
            let missed = passed.saturating_sub(slots.len()) as u64;
            self.missed += missed;
            if missed > 0 && self.gaps.len() < MAX_GAPS {
                self.gaps.push(Gap {
                    job: entry.job.clone(),
                    count: missed,
                    after_ms: entry.cursor,
                    until_ms: now_ms,
                });
            }
            out.extend(slots.into_iter().map(|slot_ms| Due {
                job: entry.job.clone(),
                slot_ms,
                nominal_ms: trigger.slot_of(slot_ms),
            }));
            entry.cursor = entry.cursor.max(now_ms);
            entry.next = trigger.next_after(entry.cursor);
            match entry.next {
                Some(next) => self.heap.push(Reverse((next, generation, index))),
                None => self.armed -= 1,
            }
        }
        self.tidy();
    }

    /// The slots the misfire policy passed over (missed while no
    /// Scheduler ran or it fell behind, and not fired) since the last call.
    pub fn take_missed(&mut self) -> u64 {
        std::mem::take(&mut self.missed)
    }

    /// The gaps of the slots the misfire policy passed over, per schedule
    /// (at most [`MAX_GAPS`] between two calls), since the last call.
    pub fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.gaps)
    }

    /// The next slot of `job`, if it has one.
    pub fn next_slot(&self, job: &str) -> Option<u64> {
        self.entry(job)?.next
    }

    /// The time up to which `job`'s slots have been decided.
    pub fn cursor(&self, job: &str) -> Option<u64> {
        Some(self.entry(job)?.cursor)
    }

    /// Whether `job` has a schedule (possibly one with no slot left).
    pub fn contains(&self, job: &str) -> bool {
        self.by_job.contains_key(job)
    }

    /// The number of jobs with a schedule.
    pub fn len(&self) -> usize {
        self.by_job.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_job.is_empty()
    }

    fn entry(&self, job: &str) -> Option<&Entry> {
        self.entries[*self.by_job.get(job)?].as_ref()
    }

    fn arm(&mut self, index: usize, entry: &Entry) {
        if let Some(next) = entry.next {
            self.heap.push(Reverse((next, entry.generation, index)));
            self.armed += 1;
        }
    }

    /// Keeps the heap's top live, so `next_deadline` is exact, and rebuilds
    /// the heap when leftovers of replaced or removed jobs dominate it.
    fn tidy(&mut self) {
        if self.heap.len() > 2 * self.armed + 1024 {
            let live = self.entries.iter().enumerate().filter_map(|(index, e)| {
                let e = e.as_ref()?;
                Some(Reverse((e.next?, e.generation, index)))
            });
            self.heap = live.collect();
        }
        while let Some(&Reverse((slot, generation, index))) = self.heap.peek() {
            let live = self.entries[index]
                .as_ref()
                .is_some_and(|e| e.generation == generation && e.next == Some(slot));
            if live {
                break;
            }
            self.heap.pop();
        }
    }
}

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue::new(super::policy::DEFAULT_TOLERANCE_MS)
    }
}
