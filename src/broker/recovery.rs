//! The journal of orders in JetStream, as the actor reaches it: the
//! compare-and-swap write that carries out the core's `Effect::Write`
//! ([`write_over`]), and how a broker that becomes active takes the orders
//! over from the journal ([`recover`]).
//!
//! Every write after the submit's `create` (or `put`, for an order without
//! request id) is a compare-and-swap (`Kv::update`) on the record's
//! revision as this broker last read or wrote it: a write buffered by a
//! broker that has since stepped down is refused by JetStream once the
//! active broker has written the record, so it cannot roll the order back
//! (say, a `succeeded` to an older `running`). A broker cut off from NATS
//! stops acting, but writes its client had buffered may still reach
//! JetStream after it reconnects, after a new active broker wrote newer
//! states: that is what the revisions fence.
//!
//! When the active broker's own write is refused, someone else wrote the
//! record since (only a stale broker can have): [`write_over`] re-reads the
//! revision (`Kv::get_with_revision`), warns "order record changed by
//! another writer", and writes its own state over it, since the active
//! broker's state is authoritative (a stale write was never acknowledged
//! to anyone). When the overwrites are refused [`OVERWRITES`] times too,
//! the write counts as not stored, like a write that failed. A record that
//! already says what it would write counts as written; an end stored by
//! another broker is never written over (`StoreError::Ended`); and no
//! attempt goes out once the lease may have run out
//! (`StoreError::Superseded`).
//!
//! Takeover: [`recover`] reads jobs, clusters, workflows and every order
//! with its revision (`Kv::entries`, `Kv::entries_with_revisions`) before
//! the broker subscribes to anything, and rebuilds the order book
//! ([`OrderBook::restore`](crate::broker::order_book::OrderBook::restore));
//! then the broker watches the buckets. Tasks placed by an earlier broker
//! are inherited: the first heartbeat of their subagent reconciles them
//! (`core/inherited.rs`); a subagent not heard from within
//! `broker.subagent_timeout` is lost without proof of death, so its tasks
//! run again only after its orphan timeout. A subagent holding inherited
//! tasks takes them into its capacity as soon as it is seen, and results of
//! tasks dispatched by the old broker are accepted like any other. So the
//! takeover keeps the rule that a task runs again only once its old copy is
//! known dead (not running on a live process of its subagent, that
//! subagent restarted, or silent past its orphan timeout).

#[cfg(test)]
use std::cell::{Cell, RefCell};
#[cfg(test)]
use std::collections::BTreeMap;

use tracing::{info, warn};

use super::core::{Journal, Recovered, Stored};
use super::retention::ended_for_good;
use crate::bus::{BusError, Kv};
use crate::protocol::*;

/// How many times one write puts this broker's state over a record someone
/// else changed before it counts as not stored.
const OVERWRITES: u32 = 3;

/// Why an order's state was not stored.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    /// Its fate is unknown: the write may have landed.
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the record changed under each of {0} writes")]
    Contended(u32),
    /// This broker no longer surely holds the lease: the record may be
    /// another broker's now, and is not written.
    #[error("this broker's lease may have run out: not written")]
    Superseded,
    /// Another broker (one deposed, whose write landed late) stored an end
    /// of the order: an end is a fact, never written over.
    #[error("the order ended meanwhile, stored by another broker")]
    Ended(Box<OrderInfo>, u64),
}

impl StoreError {
    /// What the core is told of a write that failed.
    pub(super) fn stored(&self) -> Stored {
        match self {
            StoreError::Bus(e) => Stored::Unknown(e.to_string()),
            StoreError::Contended(_) | StoreError::Superseded => {
                Stored::Contended(self.to_string())
            }
            StoreError::Ended(info, revision) => Stored::Ended(info.clone(), *revision),
        }
    }
}

/// The journal's records as [`write_over`] needs them (JetStream, or a
/// stand-in in tests).
pub(super) trait Records {
    /// Compare-and-swap: the new revision, or `None` when the record is not at `revision`.
    async fn update(
        &self,
        key: &str,
        info: &OrderInfo,
        revision: u64,
    ) -> Result<Option<u64>, BusError>;
    /// The new revision, or `None` when the record exists.
    async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError>;
    async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError>;
}

impl Records for Kv<OrderInfo> {
    async fn update(
        &self,
        key: &str,
        info: &OrderInfo,
        revision: u64,
    ) -> Result<Option<u64>, BusError> {
        Kv::update(self, key, info, revision).await
    }

    async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError> {
        self.create_revision(key, info).await
    }

    async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError> {
        self.get_with_revision(key).await
    }
}

/// Writes `info` as its order's record, compare-and-swap on `revision`
/// (the record's as this broker last read or wrote it; `None` when not
/// known, and then read first), and returns the new revision. When the
/// record changed since, which only a broker that stepped down can have
/// done, this broker's state is written over it: the active broker's is
/// authoritative. Gives up after [`OVERWRITES`] such conflicts.
///
/// Every attempt goes out only while `holds()` (this broker's lease surely
/// holds): a broker paused mid-write and deposed meanwhile must not write
/// its older state over the new active broker's, nor over the record the
/// new one read when it took over (a compare-and-swap on a known revision
/// would still succeed then, as nobody has written since).
pub(super) async fn write_over(
    records: &impl Records,
    info: &OrderInfo,
    revision: Option<u64>,
    holds: impl Fn() -> bool,
) -> Result<u64, StoreError> {
    let key = info.order_id.as_str();
    let mut expected = match revision {
        Some(revision) => Some(revision),
        None => match records.current(key).await? {
            Some((current, revision)) if current == *info => return Ok(revision),
            Some((current, revision)) if ended_for_good(&current) => {
                return Err(StoreError::Ended(Box::new(current), revision));
            }
            current => current.map(|(_, revision)| revision),
        },
    };
    for _ in 0..=OVERWRITES {
        if !holds() {
            return Err(StoreError::Superseded);
        }
        let written = match expected {
            Some(revision) => records.update(key, info, revision).await?,
            None => records.create(key, info).await?,
        };
        if let Some(revision) = written {
            return Ok(revision);
        }
        match records.current(key).await? {
            // it already says what we would write
            Some((current, revision)) if current == *info => return Ok(revision),
            Some((current, revision)) if ended_for_good(&current) => {
                return Err(StoreError::Ended(Box::new(current), revision));
            }
            Some((_, revision)) => {
                warn!(order = %key, "order record changed by another writer; writing ours over it");
                expected = Some(revision);
            }
            None => expected = None,
        }
    }
    Err(StoreError::Contended(OVERWRITES + 1))
}

/// Reads the deployed jobs and clusters and every order, and rebuilds the
/// order book (see [`Recovered::from_journal`]).
pub(super) async fn recover(
    jobs_kv: &Kv<JobSpec>,
    clusters_kv: &Kv<ClusterSpec>,
    workflows_kv: &Kv<WorkflowSpec>,
    orders_kv: &Kv<OrderInfo>,
    switches_kv: &Kv<OperatorSwitch>,
    broker: &crate::config::BrokerConfig,
    now_ms: u64,
) -> Result<Recovered, BusError> {
    let began = std::time::Instant::now();
    let jobs = jobs_kv.entries().await?;
    let jobs_read = began.elapsed();
    let orders = orders_kv.entries_with_revisions().await?;
    let journal = Journal {
        jobs,
        clusters: clusters_kv.entries().await?,
        workflows: workflows_kv.entries().await?,
        orders,
        switches: switches_kv.entries().await?,
    };
    let (jobs, orders) = (journal.jobs.len(), journal.orders.len());
    let read = began.elapsed();
    let recovered = Recovered::from_journal(journal, broker, now_ms);
    info!(
        jobs,
        orders,
        jobs_read_ms = jobs_read.as_millis() as u64,
        read_ms = read.as_millis() as u64,
        restore_ms = (began.elapsed() - read).as_millis() as u64,
        "read the journal for the takeover"
    );
    Ok(recovered)
}

/// Order records kept in memory, with JetStream's revisions and
/// compare-and-swap: the records [`write_over`] writes in the tests and in
/// the simulation (`sim/journal.rs`).
#[cfg(test)]
#[derive(Default)]
pub(super) struct MemoryRecords {
    records: RefCell<BTreeMap<String, (OrderInfo, u64)>>,
    last: Cell<u64>,
}

#[cfg(test)]
impl MemoryRecords {
    /// The record of `key`, with its revision.
    pub(super) fn get(&self, key: &str) -> Option<(OrderInfo, u64)> {
        self.records.borrow().get(key).cloned()
    }

    /// Every record with its revision, by key.
    pub(super) fn all(&self) -> BTreeMap<String, (OrderInfo, u64)> {
        self.records.borrow().clone()
    }

    /// Writes `info` as its order's record, whatever the record held;
    /// returns the new revision.
    pub(super) fn put(&self, info: &OrderInfo) -> u64 {
        let revision = self.last.get() + 1;
        self.last.set(revision);
        let record = (info.clone(), revision);
        self.records
            .borrow_mut()
            .insert(info.order_id.clone(), record);
        revision
    }

    /// Puts `info` as the record of `key` only while that record is at
    /// `expected` (`None`: absent), as JetStream's compare-and-swap does:
    /// the new revision, or `None`.
    fn put_at(&self, key: &str, info: &OrderInfo, expected: Option<u64>) -> Option<u64> {
        let current = self.get(key).map(|(_, revision)| revision);
        (current == expected).then(|| self.put(info))
    }
}

#[cfg(test)]
impl Records for MemoryRecords {
    async fn update(
        &self,
        key: &str,
        info: &OrderInfo,
        revision: u64,
    ) -> Result<Option<u64>, BusError> {
        Ok(self.put_at(key, info, Some(revision)))
    }

    async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError> {
        Ok(self.put_at(key, info, None))
    }

    async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError> {
        Ok(self.get(key))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures::executor::block_on;

    use crate::broker::order_book::{Order, Phase};

    use super::*;

    /// JetStream's records as [`write_over`] sees them, with another writer
    /// that can write before each update, and a transport that can be down.
    #[derive(Default)]
    struct Journal {
        records: MemoryRecords,
        /// Updates still to be preceded by another writer's put.
        meddle: Cell<u32>,
        down: Cell<bool>,
        updates: Cell<u32>,
    }

    impl Journal {
        /// A journal holding order `o` running, and that record's revision.
        fn running() -> (Journal, u64) {
            let journal = Journal::default();
            let revision = journal.records.put(&order("o", Phase::Running));
            (journal, revision)
        }

        /// [`write_over`] on this journal, by a broker whose lease surely
        /// `holds` or not.
        fn write(
            &self,
            info: &OrderInfo,
            revision: Option<u64>,
            holds: bool,
        ) -> Result<u64, StoreError> {
            block_on(write_over(self, info, revision, || holds))
        }

        fn check(&self) -> Result<(), BusError> {
            match self.down.get() {
                true => Err(BusError::Transport {
                    subject: "kv test".into(),
                    reason: "down".into(),
                }),
                false => Ok(()),
            }
        }
    }

    impl Records for Journal {
        async fn update(
            &self,
            key: &str,
            info: &OrderInfo,
            revision: u64,
        ) -> Result<Option<u64>, BusError> {
            self.check()?;
            self.updates.set(self.updates.get() + 1);
            if self.meddle.get() > 0 {
                self.meddle.set(self.meddle.get() - 1);
                self.records.put(&stale(key));
            }
            self.records.update(key, info, revision).await
        }

        async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError> {
            self.check()?;
            self.records.create(key, info).await
        }

        async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError> {
            self.check()?;
            self.records.current(key).await
        }
    }

    fn order(id: &str, phase: Phase) -> OrderInfo {
        let mut order = Order::new(id.into(), "job".into(), Default::default(), None, 1);
        order.phase = phase;
        order.info()
    }

    /// What a broker that stepped down had buffered: an older state.
    fn stale(id: &str) -> OrderInfo {
        let mut info = order(id, Phase::Running);
        info.subagent_id = Some("stale".into());
        info
    }

    #[test]
    fn a_write_swaps_the_revision_it_knows() {
        let journal = Journal::default();
        let first = journal.records.put(&order("o", Phase::Queued));
        let done = order("o", Phase::Succeeded);
        let revision = journal.write(&done, Some(first), true).unwrap();
        assert_eq!(journal.records.get("o"), Some((done, revision)));
        assert!(revision > first);
        assert_eq!(journal.updates.get(), 1);
    }

    #[test]
    fn a_record_changed_by_another_writer_is_written_over() {
        let (journal, ours) = Journal::running();
        journal.records.put(&stale("o"));
        let done = order("o", Phase::Succeeded);
        let revision = journal.write(&done, Some(ours), true).unwrap();
        assert_eq!(journal.records.get("o"), Some((done, revision)));
        assert_eq!(journal.updates.get(), 2);
    }

    #[test]
    fn an_unknown_revision_is_read_first_and_an_absent_record_created() {
        let journal = Journal::default();
        let queued = order("o", Phase::Queued);
        let created = journal.write(&queued, None, true).unwrap();
        assert_eq!(journal.records.get("o"), Some((queued, created)));
        let done = order("o", Phase::Succeeded);
        let revision = journal.write(&done, None, true).unwrap();
        assert_eq!(journal.records.get("o"), Some((done, revision)));
        assert_eq!(
            journal.updates.get(),
            1,
            "no conflict when the revision was read"
        );
    }

    #[test]
    fn a_record_already_holding_our_state_is_not_written_again() {
        let (journal, old) = Journal::running();
        let done = order("o", Phase::Succeeded);
        // our earlier write landed, but its answer was lost
        let landed = journal.records.put(&done);
        let revision = journal.write(&done, Some(old), true).unwrap();
        assert_eq!(revision, landed);
        assert_eq!(journal.records.get("o"), Some((done, landed)));
    }

    #[test]
    fn a_record_changing_under_every_write_is_not_stored() {
        let (journal, ours) = Journal::running();
        journal.meddle.set(u32::MAX);
        let done = order("o", Phase::Succeeded);
        let err = journal.write(&done, Some(ours), true).unwrap_err();
        assert!(matches!(err, StoreError::Contended(n) if n == OVERWRITES + 1));
        assert_eq!(journal.updates.get(), OVERWRITES + 1);
        // a few conflicts are overcome
        journal.meddle.set(OVERWRITES);
        let (_, current) = journal.records.get("o").unwrap();
        let revision = journal.write(&done, Some(current), true).unwrap();
        assert_eq!(journal.records.get("o"), Some((done, revision)));
    }

    #[test]
    fn a_broker_whose_lease_may_have_run_out_writes_over_nothing() {
        let (journal, ours) = Journal::running();
        // the new active broker wrote the record meanwhile
        let mut theirs = order("o", Phase::Running);
        theirs.subagent_id = Some("s2".into());
        journal.records.put(&theirs);
        let stale = order("o", Phase::Queued);
        let err = journal.write(&stale, Some(ours), false).unwrap_err();
        assert!(matches!(err, StoreError::Superseded));
        let err = journal.write(&stale, None, false).unwrap_err();
        assert!(
            matches!(err, StoreError::Superseded),
            "a revision just read is not ours"
        );
        assert_eq!(
            journal.records.get("o").unwrap().0,
            theirs,
            "never rolled back"
        );
        // nor on a revision it knows, though nobody wrote since: a new
        // active broker may have taken over from that very record
        let known = journal.records.get("o").unwrap().1;
        let done = order("o", Phase::Failed);
        let err = journal.write(&done, Some(known), false).unwrap_err();
        assert!(matches!(err, StoreError::Superseded));
        assert_eq!(journal.records.get("o").unwrap().0, theirs);
        assert!(journal.write(&done, Some(known), true).is_ok());
    }

    #[test]
    fn an_end_another_broker_stored_is_never_written_over() {
        let (journal, ours) = Journal::running();
        // a deposed broker's write of the task's end landed late
        let ended = order("o", Phase::Succeeded);
        let landed = journal.records.put(&ended);
        let requeued = order("o", Phase::Queued);
        let err = journal.write(&requeued, Some(ours), true).unwrap_err();
        assert!(
            matches!(err, StoreError::Ended(ref info, rev) if **info == ended && rev == landed)
        );
        assert_eq!(journal.records.get("o"), Some((ended.clone(), landed)));
        // nor when the revision is not known (after a write of unknown fate)
        let err = journal.write(&requeued, None, true).unwrap_err();
        assert!(matches!(err, StoreError::Ended(..)));
        assert_eq!(journal.records.get("o"), Some((ended, landed)));
    }

    #[test]
    fn a_transport_error_is_an_unknown_fate() {
        let journal = Journal::default();
        journal.down.set(true);
        let done = order("o", Phase::Succeeded);
        let err = journal.write(&done, Some(1), true).unwrap_err();
        assert!(matches!(err, StoreError::Bus(_)));
    }
}
