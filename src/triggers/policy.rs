//! The misfire policy and the idempotency key of a slot. Pure. (The
//! concurrency policy is met by the broker at submit: `jobs::on_slot`.)
//!
//! A slot is *on time* when it is at most the lateness tolerance before now,
//! and *missed* when it is older: the Scheduler was down, the cluster was
//! down, or the Scheduler fell behind. The misfire policy decides which of
//! the slots since the last one fired are fired now:
//!
//! | policy      | fires                                                                   |
//! |-------------|-------------------------------------------------------------------------|
//! | `fire-once` | the latest slot, if it is within `window` (or on time); at most one     |
//! | `fire-all`  | every slot, oldest first; over `max`, only the most recent `max`; none older than `max_lateness` |
//! | `skip`      | the on-time slots only                                                  |
//!
//! `fire-once` counts an on-time slot as its catch-up run: when the latest
//! slot is on time, only it fires. `fire-all` keeps the most recent slots
//! when it must drop some, since those are the runs whose data is still
//! current, and the dropped ones never come back: the next call starts after
//! the newest slot fired.

use super::{Trigger, TriggerError};
pub use crate::protocol::MisfirePolicy;

/// How late a slot may be and still count as on time, by default.
pub const DEFAULT_TOLERANCE_MS: u64 = 1_000;
pub use crate::protocol::schedule::{DEFAULT_FIRE_ALL_MAX, DEFAULT_MISFIRE_WINDOW};
/// The largest `fire-all` bound accepted; also caps the on-time slots of one call.
pub const MAX_FIRE_ALL: u32 = 10_000;

impl MisfirePolicy {
    /// Checks the policy's bound.
    pub fn validate(&self) -> Result<(), TriggerError> {
        match *self {
            MisfirePolicy::FireAll { max, .. } if !(1..=MAX_FIRE_ALL).contains(&max) => {
                Err(TriggerError::FireAllMax { max })
            }
            _ => Ok(()),
        }
    }
}

/// The slots to fire at `now_ms`, oldest first, given the last slot fired.
///
/// `last_fired_slot` is `None` for a job deployed now: nothing in the past is
/// caught up, and the job's first slot is `trigger.next_after(now_ms)`.
/// Every slot returned is after `last_fired_slot` and at or before `now_ms`,
/// so a caller that records the newest slot it fired never fires a slot
/// twice, even when its clock is behind the previous Scheduler's. A slot at
/// most `tolerance_ms` old is on time and fires under every policy.
pub fn due_slots(
    trigger: &Trigger,
    last_fired_slot: Option<u64>,
    now_ms: u64,
    policy: &MisfirePolicy,
    tolerance_ms: u64,
) -> Vec<u64> {
    let Some(last) = last_fired_slot else {
        return Vec::new();
    };
    if last >= now_ms {
        return Vec::new();
    }
    let after_last = last + 1;
    let not_older_than = |age_ms: u64| after_last.max(now_ms.saturating_sub(age_ms));
    match *policy {
        MisfirePolicy::FireOnce { window } => {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let from = not_older_than(window_ms.max(tolerance_ms));
            trigger.latest_slots(from, now_ms, 1)
        }
        MisfirePolicy::FireAll { max, max_lateness } => {
            let from = match max_lateness {
                Some(lateness) => {
                    let lateness_ms = u64::try_from(lateness.as_millis()).unwrap_or(u64::MAX);
                    not_older_than(lateness_ms.max(tolerance_ms))
                }
                None => after_last,
            };
            trigger.latest_slots(from, now_ms, max.clamp(1, MAX_FIRE_ALL) as usize)
        }
        MisfirePolicy::Skip => {
            trigger.latest_slots(not_older_than(tolerance_ms), now_ms, MAX_FIRE_ALL as usize)
        }
    }
}

/// The request id a slot's fire is submitted with, so a slot becomes one
/// order even when two agents fire it: the schedule's key (see
/// [`workflow_key`]) and the slot. Names are subject tokens, so the `@`
/// cannot be part of one.
pub fn idempotency_key(key: &str, slot_ms: u64) -> String {
    format!("{key}@{slot_ms}")
}

/// What a workflow's schedule key starts with.
const WORKFLOW_KEY_PREFIX: &str = "workflow.";

/// The key of a workflow's schedule: `workflow.NAME`. A job's schedule goes
/// by the job's name. The key names the schedule in the [`TimerQueue`]
/// (super::TimerQueue), the outbox and the fired bucket (a [`FiredSlot`]'s
/// `job`), and begins its slots' idempotency keys. Names are subject tokens,
/// without `.`, so a workflow's key is never a job's name, even when a job
/// and a workflow share a name.
///
/// [`FiredSlot`]: crate::protocol::FiredSlot
pub fn workflow_key(workflow: &str) -> String {
    format!("{WORKFLOW_KEY_PREFIX}{workflow}")
}

/// The name a schedule's slots are submitted under (`SubmitOrder::job`):
/// the job's, or the workflow's.
pub fn submitted_name(key: &str) -> &str {
    key.strip_prefix(WORKFLOW_KEY_PREFIX).unwrap_or(key)
}
