//! The job inventory (`job.list`, `job.get`): every deployed job and
//! workflow with its pause, its next slots and its newest orders, read from
//! the core's state. Pure: the caller passes the time.
//!
//! Next slots come from the same compiled triggers the Scheduler fires
//! (`triggers`), each with its trigger's time zone so that a client
//! shows it on that wall clock. A paused job's skipped slots are counted
//! from its triggers between the pause and now (at most
//! [`SKIPPED_COUNTED`]).

use super::core::Core;
use crate::protocol::*;
use crate::triggers::Trigger;

/// How many next slots `job show` gets, by default and at most.
pub const NEXT_FIRES: usize = 10;
pub const MOST_NEXT_FIRES: usize = 1000;
/// How many of its newest orders `job show` gets.
pub const RECENT_ORDERS: u32 = 10;
/// Skipped slots are counted up to this many.
pub const SKIPPED_COUNTED: usize = 10_000;

/// The first `n` slots of `triggers` after `after_ms`, oldest first, each
/// with its trigger's zone; a slot two triggers share is listed once.
pub fn next_fires(triggers: &[TriggerSpec], key: &str, after_ms: u64, n: usize) -> Vec<FireTime> {
    let mut fires: Vec<FireTime> = Vec::new();
    for spec in triggers {
        let Ok(trigger) = Trigger::compile(spec, key) else {
            continue;
        };
        let time_zone = match spec {
            TriggerSpec::Cron { time_zone, .. } => time_zone.clone(),
            _ => None,
        };
        let slots = trigger.slots_between(after_ms, u64::MAX, n);
        fires.extend(slots.into_iter().map(|at_ms| FireTime {
            at_ms,
            time_zone: time_zone.clone(),
            note: trigger.note(at_ms),
        }));
    }
    fires.sort_by_key(|f| f.at_ms);
    fires.dedup_by_key(|f| f.at_ms);
    fires.truncate(n);
    fires
}

/// How many slots of `triggers` fell in `(from_ms, to_ms]`, counted up to
/// [`SKIPPED_COUNTED`].
pub fn slots_in(triggers: &[TriggerSpec], key: &str, from_ms: u64, to_ms: u64) -> u64 {
    Trigger::compile_all(triggers, key)
        .map(|t| t.slots_between(from_ms, to_ms, SKIPPED_COUNTED).len() as u64)
        .unwrap_or(0)
}

/// A name's triggers, cluster and kind, when it is deployed.
fn definition<R>(
    core: &Core<R>,
    name: &str,
) -> Option<(JobKind, String, Vec<TriggerSpec>, Option<String>)> {
    if let Some(job) = core.jobs.get(name) {
        let key = name.to_string();
        return Some((JobKind::Job, key, job.triggers.clone(), job.cluster.clone()));
    }
    let workflow = core.workflows.get(name)?;
    let key = crate::triggers::workflow_key(name);
    Some((JobKind::Workflow, key, workflow.triggers.clone(), None))
}

/// `baton job list`: every job and workflow by name.
pub fn job_list<R: Clone + std::fmt::Debug>(core: &Core<R>, now_ms: u64) -> JobList {
    let all = ListOrders {
        limit: Some(u32::MAX),
        ..ListOrders::default()
    };
    // newest first: the first of each name is its last order
    let mut last: std::collections::HashMap<String, OrderSummary> = Default::default();
    for order in core.book.list(&all).orders {
        last.entry(order.job.clone()).or_insert(order);
    }
    let mut names: Vec<&String> = core.jobs.keys().chain(core.workflows.keys()).collect();
    names.sort();
    let jobs = names
        .into_iter()
        .filter_map(|name| {
            let (kind, key, triggers, cluster) = definition(core, name)?;
            let paused = core.paused(name).cloned();
            let next_fire = next_fires(&triggers, &key, now_ms, 1).pop();
            Some(JobSummary {
                name: name.clone(),
                kind,
                cluster,
                triggers,
                paused,
                next_fire,
                last_order: last.remove(name),
            })
        })
        .collect();
    JobList { jobs }
}

/// `baton job show NAME`.
pub fn job_info<R: Clone + std::fmt::Debug>(
    core: &Core<R>,
    get: &GetJob,
    now_ms: u64,
) -> Option<JobInfo> {
    let name = get.name.as_str();
    let next = get
        .next
        .map_or(NEXT_FIRES, |n| (n as usize).clamp(1, MOST_NEXT_FIRES));
    let (kind, key, triggers, _) = definition(core, name)?;
    let paused = core.paused(name).cloned();
    let skipped_slots = paused
        .as_ref()
        .map_or(0, |p| slots_in(&triggers, &key, p.at_ms, now_ms));
    let recent = ListOrders {
        job: Some(name.to_string()),
        limit: Some(RECENT_ORDERS),
        ..ListOrders::default()
    };
    let mut used_by: Vec<String> = (core.workflows.values())
        .filter(|w| w.steps.iter().any(|s| s.job == name))
        .map(|w| w.name.clone())
        .collect();
    used_by.sort();
    Some(JobInfo {
        name: name.to_string(),
        kind,
        job: core.jobs.get(name).cloned(),
        workflow: core.workflows.get(name).cloned(),
        paused,
        skipped_slots,
        next_fires: next_fires(&triggers, &key, now_ms, next),
        recent_orders: core.book.list(&recent).orders,
        used_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn every(secs: u64) -> TriggerSpec {
        TriggerSpec::Interval {
            every: Duration::from_secs(secs),
            start: None,
            jitter: None,
        }
    }

    #[test]
    fn next_fires_merge_triggers_in_order_with_their_zones() {
        let cron = TriggerSpec::Cron {
            expr: "0 0 * * * *".into(),
            time_zone: Some("Europe/Berlin".into()),
            dst: Default::default(),
            calendar: None,
            jitter: None,
        };
        // 10:00:30 UTC: the 20-minute interval fires at 10:20, 10:40, 11:00,
        // 11:20; cron at 11:00 too (listed once, with the first trigger's zone)
        let now = 1_767_261_630_000 - 1_767_261_630_000 % 3_600_000 + 30_000;
        let fires = next_fires(&[cron, every(1200)], "j", now, 4);
        let at: Vec<u64> = fires
            .iter()
            .map(|f| (f.at_ms - now + 30_000) / 60_000)
            .collect();
        assert_eq!(at, [20, 40, 60, 80]);
        assert_eq!(
            fires[2].time_zone.as_deref(),
            Some("Europe/Berlin"),
            "{fires:?}"
        );
        assert_eq!(fires[1].time_zone, None);
    }

    #[test]
    fn a_slot_two_triggers_share_is_listed_once() {
        let fires = next_fires(&[every(10), every(20)], "j", 0, 3);
        let at: Vec<u64> = fires.iter().map(|f| f.at_ms).collect();
        assert_eq!(at, [10_000, 20_000, 30_000]);
    }

    #[test]
    fn skipped_slots_are_counted_between_the_pause_and_now_and_capped() {
        assert_eq!(slots_in(&[every(10)], "j", 5_000, 65_000), 6);
        assert_eq!(slots_in(&[], "j", 0, 1_000_000), 0);
        let many = slots_in(&[every(1)], "j", 0, 100_000_000);
        assert_eq!(many, SKIPPED_COUNTED as u64);
    }
}
