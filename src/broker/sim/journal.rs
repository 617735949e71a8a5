//! JetStream's orders bucket as the simulation keeps it: records with
//! revisions ([`MemoryRecords`]), `create` (only when absent), `put`,
//! compare-and-swap through the broker's own [`write_over`], and the
//! snapshot a standby takes over from. Every change is checked: a record
//! never goes back (a final state never changes).

use std::cell::RefCell;
use std::collections::HashMap;

use futures::executor::block_on;

use super::super::core::{Created, Journal as Snapshot, Stored};
use super::super::recovery::{write_over, MemoryRecords};
use super::super::retention::ended_for_good;
use crate::protocol::{JobSpec, OrderInfo, WorkflowSpec};

#[derive(Default)]
pub struct Journal {
    records: MemoryRecords,
    /// Changes that rolled an order back, for the checker.
    pub rollbacks: RefCell<Vec<String>>,
}

impl Journal {
    /// Creates a new order's record (with a request id, only if absent).
    pub fn create(&self, info: &OrderInfo, idempotent: bool) -> Created {
        let existing = self.get(&info.order_id);
        match existing {
            Some((existing, revision)) if idempotent => {
                Created::Exists(Some((Box::new(existing), revision)))
            }
            existing => {
                self.check(existing, info);
                Created::At(self.records.put(info))
            }
        }
    }

    /// The broker's compare-and-swap write, as it runs against JetStream
    /// (`holds`: whether its broker's lease surely holds). Nothing else
    /// writes meanwhile, so a write that lands replaces the record as it
    /// is now.
    pub fn write(&self, info: &OrderInfo, revision: Option<u64>, holds: bool) -> Stored {
        let replaced = self.get(&info.order_id);
        match block_on(write_over(&self.records, info, revision, || holds)) {
            Ok(revision) => {
                self.check(replaced, info);
                Stored::At(revision)
            }
            Err(e) => e.stored(),
        }
    }

    pub fn get(&self, order_id: &str) -> Option<(OrderInfo, u64)> {
        self.records.get(order_id)
    }

    pub fn all(&self) -> Vec<OrderInfo> {
        self.records
            .all()
            .into_values()
            .map(|(info, _)| info)
            .collect()
    }

    /// What a broker taking over reads.
    pub fn snapshot(&self, jobs: &[JobSpec], workflows: &[WorkflowSpec]) -> Snapshot {
        Snapshot {
            jobs: jobs.iter().map(|j| (j.name.clone(), j.clone())).collect(),
            clusters: HashMap::new(),
            workflows: (workflows.iter())
                .map(|w| (w.name.clone(), w.clone()))
                .collect(),
            orders: self.records.all().into_iter().collect(),
            switches: HashMap::new(),
        }
    }

    /// Notes a rollback if writing `new` over the `replaced` record is one.
    fn check(&self, replaced: Option<(OrderInfo, u64)>, new: &OrderInfo) {
        if let Some(why) = replaced.and_then(|(old, _)| rollback(&old, new)) {
            self.rollbacks.borrow_mut().push(why);
        }
    }
}

/// Why writing `new` over `old` rolls the order back, if it does: an
/// order that ended for good never changes again. (An attempt may go back: a
/// dispatch that surely failed returns the order to the queue.)
fn rollback(old: &OrderInfo, new: &OrderInfo) -> Option<String> {
    (ended_for_good(old) && old != new).then(|| {
        format!(
            "order {}: final record ({:?}, attempt {}) overwritten by {:?} attempt {}",
            old.order_id, old.state, old.attempt, new.state, new.attempt
        )
    })
}
