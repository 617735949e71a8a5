//! The broker's journal of orders in JetStream, and how a broker that
//! becomes active takes the orders over from it.
//!
//! Journal: every write of an order goes through [`Broker::store`], which
//! writes the order's current state and only then does what waited for it
//! (send the task, acknowledge the result). Writes of one order go out one
//! at a time, so an older state never lands after a newer one. Every write
//! after the submit's is a compare-and-swap on the record's revision as this
//! broker last read or wrote it ([`write_over`]): a write buffered by a
//! broker that has since stepped down is refused by JetStream once the
//! active broker has written the record, so it cannot roll the order back.
//!
//! Takeover: [`recover`] reads jobs, clusters and every order before the
//! broker serves anything, and rebuilds the order book
//! ([`OrderBook::restore`]). Tasks placed by an earlier broker are
//! inherited: the first heartbeat of their subagent reconciles them
//! (`OrderEvent::Reconciled`); a subagent not heard from within
//! `broker.subagent_timeout` is lost without proof of death, so its tasks
//! run again only after its orphan timeout.
//!
//! Size: over the ~500-line mark; issue 19 turns the journal writes into
//! effects of a pure core, which splits this module.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::order_book::{Applied, Order, OrderBook, OrderEvent, Phase};
use super::{Broker, ORPHAN_MARGIN};
use crate::bus::{BusError, Kv, Replier};
use crate::config::Config;
use crate::jobs;
use crate::protocol::*;
use crate::time::now_ms;
use crate::workflow::{validate_workflow, FlowOrder};

/// How many result resends of its subagent a task that ended is awaited for.
const RESULT_WAITS: u32 = 3;
/// Before writing again a final state that could not be stored.
const JOURNAL_RETRY: Duration = Duration::from_secs(1);
/// How many times one write puts this broker's state over a record someone
/// else changed before it counts as not stored.
const OVERWRITES: u32 = 3;
/// [`Revisions`] drops those of forgotten orders once it holds this many.
const PRUNE_MIN: usize = 1024;

/// What waits for an order's state to be stored.
pub(super) enum Then {
    Nothing,
    /// The order was stored as dispatched: send its task.
    Run {
        subagent_id: String,
        run: Box<RunTask>,
    },
    /// The order was stored final: acknowledge its task's result.
    Ack {
        replier: Replier,
        task_id: String,
    },
    /// A command changed the order: answer with it once stored.
    Reply {
        replier: Replier,
    },
}

/// What a broker taking over starts from.
pub(super) struct Recovered {
    pub jobs: HashMap<String, JobSpec>,
    pub clusters: HashMap<String, ClusterSpec>,
    pub workflows: HashMap<String, WorkflowSpec>,
    pub book: OrderBook,
    /// Workflow orders: every unfinished one, and the newest ended ones.
    pub flows: HashMap<String, FlowOrder>,
    /// The revision each kept order was read at.
    pub revisions: Revisions,
}

/// Why an order's state was not stored.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    /// Its fate is unknown: the write may have landed.
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the record changed under each of {0} writes")]
    Contended(u32),
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
pub(super) async fn write_over(
    records: &impl Records,
    info: &OrderInfo,
    revision: Option<u64>,
) -> Result<u64, StoreError> {
    let key = info.order_id.as_str();
    let mut expected = match revision {
        Some(revision) => Some(revision),
        None => records.current(key).await?.map(|(_, revision)| revision),
    };
    for _ in 0..=OVERWRITES {
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
            Some((_, revision)) => {
                warn!(order = %key, "order record changed by another writer; writing ours over it");
                expected = Some(revision);
            }
            None => expected = None,
        }
    }
    Err(StoreError::Contended(OVERWRITES + 1))
}

/// The journal revision of each order held in memory, as this broker last
/// read or wrote it. Those of orders the book has forgotten are dropped
/// whenever the map has doubled since the last pruning.
#[derive(Debug, Default)]
pub(super) struct Revisions {
    of: HashMap<String, u64>,
    prune_at: usize,
}

impl Revisions {
    pub fn new(of: HashMap<String, u64>) -> Revisions {
        let prune_at = (of.len() * 2).max(PRUNE_MIN);
        Revisions { of, prune_at }
    }

    pub fn get(&self, order_id: &str) -> Option<u64> {
        self.of.get(order_id).copied()
    }

    /// Records `revision`; `held` tells which orders are still in memory.
    pub fn set(&mut self, order_id: &str, revision: u64, held: impl Fn(&str) -> bool) {
        match self.of.get_mut(order_id) {
            Some(known) => *known = revision,
            None => {
                self.of.insert(order_id.to_string(), revision);
            }
        }
        if self.of.len() > self.prune_at {
            self.of.retain(|id, _| held(id));
            self.prune_at = (self.of.len() * 2).max(PRUNE_MIN);
        }
    }

    /// The record's revision is no longer known (a write's fate is unknown).
    pub fn forget(&mut self, order_id: &str) {
        self.of.remove(order_id);
    }
}

/// Reads the deployed jobs and clusters and every order, and rebuilds the
/// order book, keeping at most `keep_finished` final orders.
pub(super) async fn recover(
    jobs_kv: &Kv<JobSpec>,
    clusters_kv: &Kv<ClusterSpec>,
    workflows_kv: &Kv<WorkflowSpec>,
    orders_kv: &Kv<OrderInfo>,
    keep_finished: usize,
) -> Result<Recovered, BusError> {
    let jobs = jobs_kv.entries().await?.into_iter();
    let jobs: HashMap<String, JobSpec> = jobs
        .filter(|(key, spec)| jobs::validate_job(spec).is_ok() && spec.name == *key)
        .collect();
    let clusters = clusters_kv.entries().await?.into_iter();
    let clusters: HashMap<String, ClusterSpec> = clusters
        .filter(|(key, spec)| jobs::validate_cluster(spec).is_ok() && spec.name == *key)
        .collect();
    let workflows = workflows_kv.entries().await?.into_iter();
    let workflows: HashMap<String, WorkflowSpec> = workflows
        .filter(|(key, spec)| {
            // a step whose job is gone fails when it is dispatched, with the reason
            spec.name == *key && validate_workflow(spec, &|_| true).is_ok()
        })
        .collect();
    let mut orders = orders_kv.entries_with_revisions().await?;
    let mut flows: Vec<FlowOrder> = Vec::new();
    let mut flow_revisions: HashMap<String, u64> = HashMap::new();
    orders.retain(|id, (info, revision)| match FlowOrder::restore(info) {
        Some(flow) => {
            flows.push(flow);
            flow_revisions.insert(id.clone(), *revision);
            false
        }
        None => true,
    });
    // ended workflow orders beyond the limit stay in the journal only
    flows.sort_by_key(|f| std::cmp::Reverse(f.finished_at_ms));
    let mut ended = 0;
    flows.retain(|f| {
        ended += usize::from(f.state().is_terminal());
        !f.state().is_terminal() || ended <= keep_finished
    });
    let flows: HashMap<String, FlowOrder> = flows.into_iter().map(|f| (f.id.clone(), f)).collect();
    flow_revisions.retain(|id, _| flows.contains_key(id));
    let restored = orders.values().map(|(info, _)| {
        // a job removed since: its waiting orders fail at dispatch, and an
        // inherited task is never run twice
        let restartable = jobs.get(&info.job).is_some_and(|j| j.restartable);
        Order::restore(info, restartable)
    });
    let mut book = OrderBook::new(keep_finished);
    book.restore(restored);
    let kept = orders.iter().filter(|(id, _)| book.get(id).is_some());
    let mut revisions: HashMap<String, u64> =
        kept.map(|(id, (_, rev))| (id.clone(), *rev)).collect();
    revisions.extend(flow_revisions);
    let revisions = Revisions::new(revisions);
    let c = book.counts();
    info!(
        orders = orders.len(),
        accepted = c.accepted,
        running = c.running,
        inherited_on = book.inherited_subagents().len(),
        jobs = jobs.len(),
        workflow_orders = flows.len(),
        "orders recovered from the journal"
    );
    Ok(Recovered {
        jobs,
        clusters,
        workflows,
        book,
        flows,
        revisions,
    })
}

/// When all of a never-seen subagent's tasks are surely dead: its orphan
/// timeout (the default one), kill grace, a heartbeat and a margin from now.
fn unseen_rerun_at(config: &Config, now_ms: u64) -> u64 {
    let s = &config.subagent;
    let limit = s.orphan_timeout + s.kill_grace + s.heartbeat_interval + ORPHAN_MARGIN;
    now_ms + limit.as_millis() as u64
}

impl Broker {
    /// Stores an order's current state, then does `then`. A write of the
    /// same order still in flight is followed by one more write (of the
    /// newest state), so writes land in order.
    pub(super) fn store(&mut self, order_id: &str, then: Then, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.writing.get_mut(order_id) {
            waiting.push(then);
            return;
        }
        self.writing.insert(order_id.to_string(), Vec::new());
        self.write(order_id.to_string(), vec![then], ctx);
    }

    fn write(&mut self, order_id: String, thens: Vec<Then>, ctx: &mut Context<Self>) {
        let info = self.info_of(&order_id);
        let revision = self.revisions.get(&order_id);
        let kv = self.orders_kv.clone();
        let write = async move {
            let stored = match &info {
                Some(info) => write_over(&kv, info, revision).await.map(Some),
                // forgotten: long final and stored
                None => Ok(None),
            };
            (info, stored)
        };
        ctx.spawn(
            write.into_actor(self).map(move |(info, stored), act, ctx| {
                act.written(order_id, thens, info, stored, ctx)
            }),
        );
    }

    fn written(
        &mut self,
        order_id: String,
        thens: Vec<Then>,
        info: Option<OrderInfo>,
        stored: Result<Option<u64>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if !self.acting() {
            // no event, acknowledgement or run after the lease may have run out
            return;
        }
        match &stored {
            Ok(Some(revision)) => {
                self.set_revision(&order_id, *revision);
                let is_final = info.as_ref().is_some_and(|i| i.state.is_final());
                if let Some(event) = is_final
                    .then(|| self.unannounced.remove(&order_id))
                    .flatten()
                {
                    let s = self.bus.subjects();
                    self.bus.post(
                        s.event(&event.job, &event.order_id, EventKind::Finished),
                        &event,
                    );
                }
                // a workflow order follows its step orders only as far as
                // the journal does: after a crash it is never ahead of them
                if let Some(info) = info.filter(|i| i.parent.is_some()) {
                    self.step_order_stored(&info, ctx);
                }
            }
            Ok(None) => {
                self.unannounced.remove(&order_id);
            }
            Err(e) => {
                warn!(order = %order_id, error = %e, "order state not stored");
                if matches!(e, StoreError::Bus(_)) {
                    // it may have landed: the next write reads the revision
                    self.revisions.forget(&order_id);
                }
            }
        }
        for then in thens {
            self.follow_up(&order_id, then, stored.is_ok(), ctx);
        }
        let next = self.writing.get_mut(&order_id).map(std::mem::take);
        match next {
            Some(next) if !next.is_empty() => self.write(order_id, next, ctx),
            _ => {
                self.writing.remove(&order_id);
                // a final state, or any state of a workflow order (a
                // command it answered), is written until it is stored
                let must_land = stored.is_err()
                    && self
                        .info_of(&order_id)
                        .is_some_and(|o| o.state.is_final() || o.workflow.is_some());
                if must_land {
                    ctx.run_later(JOURNAL_RETRY, move |act, ctx| {
                        act.store(&order_id, Then::Nothing, ctx)
                    });
                }
            }
        }
    }

    /// The order as stored: one of the book, or a workflow order.
    fn info_of(&self, order_id: &str) -> Option<OrderInfo> {
        match self.book.get(order_id) {
            Some(order) => Some(order.info()),
            None => self.flows.get(order_id).map(FlowOrder::info),
        }
    }

    /// Records the journal revision an order's record is now at.
    pub(super) fn set_revision(&mut self, order_id: &str, revision: u64) {
        let (book, flows) = (&self.book, &self.flows);
        let held = |id: &str| book.get(id).is_some() || flows.contains_key(id);
        self.revisions.set(order_id, revision, held);
    }

    fn follow_up(&mut self, order_id: &str, then: Then, stored: bool, ctx: &mut Context<Self>) {
        match then {
            Then::Nothing => {}
            // not acknowledged: the subagent sends the result again
            Then::Ack { .. } if !stored => {}
            Then::Ack { replier, task_id } => self.bus.reply(&replier, &ResultAck { task_id }),
            Then::Reply { replier } if stored => match self.info_of(order_id) {
                Some(info) => self.bus.reply(&replier, &info),
                None => self.error(&replier, ErrorCode::NotFound, format!("no order {order_id}")),
            },
            Then::Reply { replier } => self.error(
                &replier,
                ErrorCode::Unavailable,
                format!(
                    "order {order_id}: its new state could not be stored in JetStream yet (it is retried); send the command again to learn the outcome"
                ),
            ),
            Then::Run { subagent_id, run } => {
                let still_ours = self.book.get(order_id).is_some_and(|o| {
                    o.phase == Phase::Dispatching && o.task_id.as_ref() == Some(&run.task_id)
                });
                if !still_ours {
                    return;
                }
                if stored {
                    return self.send_run(subagent_id, *run, ctx);
                }
                // never sent: back to the queue, tried again at the next dispatch
                self.registry.release(&subagent_id, &run.task_id, false);
                let event = OrderEvent::DispatchFailed {
                    task_id: run.task_id,
                };
                let _ = self.book.apply(order_id, event);
            }
        }
    }

    /// Stores an order's final state, then publishes it and acknowledges the
    /// result (if any).
    pub(super) fn finish(
        &mut self,
        order_id: &str,
        ack: Option<(Replier, String)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(order) = self.book.get(order_id) else {
            return;
        };
        let info = order.info();
        let duration_ms = match (info.started_at_ms, info.finished_at_ms) {
            (Some(s), Some(f)) => Some(f.saturating_sub(s)),
            _ => None,
        };
        let event = OrderFinished {
            order_id: info.order_id.clone(),
            job: info.job.clone(),
            state: info.state,
            exit_code: info.exit_code,
            signal: info.signal,
            timed_out: info.timed_out,
            reason: info.reason.clone(),
            subagent_id: info.subagent_id.clone(),
            attempt: info.attempt,
            duration_ms,
            at_ms: now_ms(),
        };
        // announced once stored (see `written`): a subscriber never hears of
        // an end a broker taking over would not know
        self.unannounced.insert(order_id.to_string(), event);
        let then = match ack {
            Some((replier, task_id)) => Then::Ack { replier, task_id },
            None => Then::Nothing,
        };
        self.store(order_id, then, ctx);
    }

    /// A subagent was heard from. Its inherited tasks take their room on it
    /// at once; with the tasks it runs (a heartbeat or probe answer), they
    /// are reconciled: running ones are confirmed, unconfirmed ones sent
    /// again, started ones it no longer runs await their result, and those
    /// of an earlier process of it are dead.
    pub(super) fn on_sighting(
        &mut self,
        id: &str,
        running: Option<&[String]>,
        ctx: &mut Context<Self>,
    ) {
        if !self.unreconciled.contains(id) {
            return;
        }
        let inherited: Vec<(String, String)> = self
            .book
            .inherited_on(id)
            .into_iter()
            .filter_map(|o| Some((o.id.clone(), o.task_id.clone()?)))
            .collect();
        for (_, task_id) in &inherited {
            self.registry.assign(id, task_id);
        }
        let (Some(running), Some(subagent)) = (running, self.registry.get(id)) else {
            return;
        };
        self.unreconciled.remove(id);
        let retry = self.config.subagent.result_retry;
        let wait = (retry + retry.max(Duration::from_secs(1))) * RESULT_WAITS;
        let now = now_ms();
        let instance_id = subagent.instance_id.clone();
        for (order_id, task_id) in inherited {
            let event = OrderEvent::Reconciled {
                subagent_id: id.to_string(),
                instance_id: instance_id.clone(),
                running: running.to_vec(),
                result_by_ms: now + wait.as_millis() as u64,
                doubt_until_ms: unseen_rerun_at(&self.config, now),
                at_ms: now,
            };
            let Ok(Applied::Moved { from, to }) = self.book.apply(&order_id, event) else {
                continue;
            };
            match to {
                Phase::Running => {
                    info!(order = %order_id, subagent = %id, "inherited task runs");
                    if from != Phase::Running {
                        self.store(&order_id, Then::Nothing, ctx);
                    }
                }
                Phase::Dispatching => {
                    info!(order = %order_id, subagent = %id, "inherited task unconfirmed; sending it again");
                    self.resend(&order_id, id, instance_id.clone(), ctx);
                }
                Phase::Orphaned => {
                    info!(order = %order_id, subagent = %id, "inherited task no longer runs there; awaiting its result or proof of its death");
                    self.registry.release(id, &task_id, false);
                }
                _ => {
                    warn!(order = %order_id, subagent = %id, "inherited task died with its subagent's restart");
                    self.registry.release(id, &task_id, false);
                    self.after_move(&order_id, to, ctx);
                }
            }
        }
    }

    /// Sends an inherited, unconfirmed task again under its own id (the
    /// subagent answers `duplicate` if it has it).
    fn resend(
        &mut self,
        order_id: &str,
        subagent_id: &str,
        instance_id: String,
        ctx: &mut Context<Self>,
    ) {
        let run = self.book.get(order_id).and_then(|order| {
            let task_id = order.task_id.clone()?;
            self.run_task(order, task_id, order.attempt, instance_id)
        });
        match run {
            Some(run) => self.send_run(subagent_id.to_string(), run, ctx),
            None => {
                // its job is gone: back to the queue, where it is refused
                let task_id = self.book.get(order_id).and_then(|o| o.task_id.clone());
                let task_id = task_id.unwrap_or_default();
                self.registry.release(subagent_id, &task_id, false);
                let _ = self
                    .book
                    .apply(order_id, OrderEvent::DispatchFailed { task_id });
            }
        }
    }

    /// `broker.subagent_timeout` after becoming active: inherited tasks of
    /// subagents never heard from are in doubt until their orphan timeout.
    pub(super) fn unseen_deadline(&mut self, ctx: &mut Context<Self>) {
        let unseen: BTreeSet<String> = self
            .unreconciled
            .iter()
            .filter(|id| self.registry.get(id).is_none())
            .cloned()
            .collect();
        let now = now_ms();
        let rerun_at_ms = unseen_rerun_at(&self.config, now);
        for id in unseen {
            let orders: Vec<String> = self
                .book
                .inherited_on(&id)
                .into_iter()
                .map(|o| o.id.clone())
                .collect();
            warn!(subagent = %id, tasks = orders.len(), "subagent of inherited tasks never heard from");
            for order_id in orders {
                let event = OrderEvent::SubagentLost {
                    subagent_id: id.clone(),
                    at_ms: now,
                    rerun_at_ms,
                };
                self.apply_and_act(&order_id, event, ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use futures::executor::block_on;

    use super::*;

    /// JetStream's records as [`write_over`] sees them, with another writer
    /// that can write before each update.
    #[derive(Default)]
    struct Journal {
        records: RefCell<HashMap<String, (OrderInfo, u64)>>,
        last: Cell<u64>,
        /// Updates still to be preceded by another writer's put.
        meddle: Cell<u32>,
        down: Cell<bool>,
        updates: Cell<u32>,
    }

    impl Journal {
        fn put(&self, info: &OrderInfo) -> u64 {
            self.last.set(self.last.get() + 1);
            let record = (info.clone(), self.last.get());
            self.records
                .borrow_mut()
                .insert(info.order_id.clone(), record);
            self.last.get()
        }

        fn record(&self, key: &str) -> Option<(OrderInfo, u64)> {
            self.records.borrow().get(key).cloned()
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
                self.put(&stale(key));
            }
            match self.record(key) {
                Some((_, current)) if current == revision => Ok(Some(self.put(info))),
                _ => Ok(None),
            }
        }

        async fn create(&self, key: &str, info: &OrderInfo) -> Result<Option<u64>, BusError> {
            self.check()?;
            match self.record(key) {
                Some(_) => Ok(None),
                None => Ok(Some(self.put(info))),
            }
        }

        async fn current(&self, key: &str) -> Result<Option<(OrderInfo, u64)>, BusError> {
            self.check()?;
            Ok(self.record(key))
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
        let first = journal.put(&order("o", Phase::Queued));
        let done = order("o", Phase::Succeeded);
        let revision = block_on(write_over(&journal, &done, Some(first))).unwrap();
        assert_eq!(journal.record("o"), Some((done, revision)));
        assert!(revision > first);
        assert_eq!(journal.updates.get(), 1);
    }

    #[test]
    fn a_record_changed_by_another_writer_is_written_over() {
        let journal = Journal::default();
        let ours = journal.put(&order("o", Phase::Running));
        journal.put(&stale("o"));
        let done = order("o", Phase::Succeeded);
        let revision = block_on(write_over(&journal, &done, Some(ours))).unwrap();
        assert_eq!(journal.record("o"), Some((done, revision)));
        assert_eq!(journal.updates.get(), 2);
    }

    #[test]
    fn an_unknown_revision_is_read_first_and_an_absent_record_created() {
        let journal = Journal::default();
        let queued = order("o", Phase::Queued);
        let created = block_on(write_over(&journal, &queued, None)).unwrap();
        assert_eq!(journal.record("o"), Some((queued, created)));
        let done = order("o", Phase::Succeeded);
        let revision = block_on(write_over(&journal, &done, None)).unwrap();
        assert_eq!(journal.record("o"), Some((done, revision)));
        assert_eq!(
            journal.updates.get(),
            1,
            "no conflict when the revision was read"
        );
    }

    #[test]
    fn a_record_already_holding_our_state_is_not_written_again() {
        let journal = Journal::default();
        let old = journal.put(&order("o", Phase::Running));
        let done = order("o", Phase::Succeeded);
        // our earlier write landed, but its answer was lost
        let landed = journal.put(&done);
        let revision = block_on(write_over(&journal, &done, Some(old))).unwrap();
        assert_eq!(revision, landed);
        assert_eq!(journal.last.get(), landed);
    }

    #[test]
    fn a_record_changing_under_every_write_is_not_stored() {
        let journal = Journal::default();
        let ours = journal.put(&order("o", Phase::Running));
        journal.meddle.set(u32::MAX);
        let done = order("o", Phase::Succeeded);
        let err = block_on(write_over(&journal, &done, Some(ours))).unwrap_err();
        assert!(matches!(err, StoreError::Contended(n) if n == OVERWRITES + 1));
        assert_eq!(journal.updates.get(), OVERWRITES + 1);
        // a few conflicts are overcome
        journal.meddle.set(OVERWRITES);
        let (_, current) = journal.record("o").unwrap();
        let revision = block_on(write_over(&journal, &done, Some(current))).unwrap();
        assert_eq!(journal.record("o"), Some((done, revision)));
    }

    #[test]
    fn a_transport_error_is_an_unknown_fate() {
        let journal = Journal::default();
        journal.down.set(true);
        let done = order("o", Phase::Succeeded);
        let err = block_on(write_over(&journal, &done, Some(1))).unwrap_err();
        assert!(matches!(err, StoreError::Bus(_)));
    }

    #[test]
    fn revisions_of_forgotten_orders_are_dropped() {
        let mut revisions = Revisions::new(HashMap::new());
        let held = |id: &str| id.ends_with('0');
        for i in 0..=PRUNE_MIN {
            revisions.set(&format!("o{i}"), i as u64, held);
        }
        assert_eq!(revisions.get("o1"), None, "forgotten");
        assert_eq!(revisions.get("o10"), Some(10));
        assert_eq!(revisions.get(&format!("o{PRUNE_MIN}")), None);
        revisions.set("o10", 99, held);
        assert_eq!(revisions.get("o10"), Some(99));
        revisions.forget("o10");
        assert_eq!(revisions.get("o10"), None);
        assert!(revisions.of.len() <= PRUNE_MIN / 10 + 1);
    }

    #[test]
    fn a_never_seen_subagents_tasks_wait_past_its_default_orphan_limit() {
        let config = Config::default();
        let s = &config.subagent;
        let at = unseen_rerun_at(&config, 1_000);
        let limit = (s.orphan_timeout + s.kill_grace).as_millis() as u64;
        assert!(at > 1_000 + limit);
    }
}
