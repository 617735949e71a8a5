//! JetStream's orders bucket as the simulation keeps it: records with
//! revisions, `create` (only when absent), `put`, compare-and-swap through
//! the broker's own [`write_over`], and the snapshot a standby takes over
//! from. Every change is checked: a record never goes back (a final state
//! never changes).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use futures::executor::block_on;

use super::super::core::{Created, Journal as Snapshot, Stored};
use super::super::recovery::{ended_for_good, write_over, Records};
use crate::bus::BusError;
use crate::protocol::{JobSpec, OrderInfo, WorkflowSpec};

#[derive(Default)]
pub struct Journal {
    records: RefCell<BTreeMap<String, (OrderInfo, u64)>>,
    last: RefCell<u64>,
    /// Changes that rolled an order back, for the checker.
    pub rollbacks: RefCell<Vec<String>>,
}

impl Journal {
    fn put_checked(&self, info: &OrderInfo) -> u64 {
        let mut records = self.records.borrow_mut();
        if let Some((old, _)) = records.get(&info.order_id) {
            if let Some(why) = rollback(old, info) {
                self.rollbacks.borrow_mut().push(why);
            }
        }
        let mut last = self.last.borrow_mut();
        *last += 1;
        records.insert(info.order_id.clone(), (info.clone(), *last));
        *last
    }

    /// Creates a new order's record (with a request id, only if absent).
    pub fn create(&self, info: &OrderInfo, idempotent: bool) -> Created {
        let existing = self.get(&info.order_id);
        match existing {
            Some((existing, revision)) if idempotent => {
                Created::Exists(Some((Box::new(existing), revision)))
            }
            _ => Created::At(self.put_checked(info)),
        }
    }

    /// The broker's compare-and-swap write, as it runs against JetStream
    /// (`holds`: whether its broker's lease surely holds).
    pub fn write(&self, info: &OrderInfo, revision: Option<u64>, holds: bool) -> Stored {
        match block_on(write_over(self, info, revision, || holds)) {
            Ok(revision) => Stored::At(revision),
            Err(e) => e.stored(),
        }
    }

    pub fn get(&self, order_id: &str) -> Option<(OrderInfo, u64)> {
        self.records.borrow().get(order_id).cloned()
    }

    pub fn all(&self) -> Vec<OrderInfo> {
        let records = self.records.borrow();
        records.values().map(|(info, _)| info.clone()).collect()
    }

    /// What a broker taking over reads.
    pub fn snapshot(&self, jobs: &[JobSpec], workflows: &[WorkflowSpec]) -> Snapshot {
        Snapshot {
            jobs: jobs.iter().map(|j| (j.name.clone(), j.clone())).collect(),
            clusters: HashMap::new(),
            workflows: (workflows.iter())
                .map(|w| (w.name.clone(), w.clone()))
                .collect(),
            orders: self.records.borrow().clone().into_iter().collect(),
        }
    }
}

/// Why writing `new` over `old` rolls the order back, if it does: an
/// order that ended never changes again. (An attempt may go back: a
/// dispatch that surely failed returns the order to the queue.)
fn rollback(old: &OrderInfo, new: &OrderInfo) -> Option<String> {
    (ended_for_good(old) && old != new).then(|| {
        format!(
            "order {}: final record ({:?}, attempt {}) overwritten by {:?} attempt {}",
            old.order_id, old.state, old.attempt, new.state, new.attempt
        )
    })
}

impl Records for Journal {
    async fn update(
        &self,
        key: &str,
        info: &OrderInfo,
        revision: u64,
    ) -> Result<Option<u64>, BusError> {
        match self.get(key) {
            Some((_, current)) if current == revision => Ok(Some(self.put_checked(info))),
            _ => Ok(None),
        }
    }

    async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError> {
        match self.get(key) {
            Some(_) => Ok(None),
            None => Ok(Some(self.put_checked(info))),
        }
    }

    async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError> {
        Ok(self.get(key))
    }
}
