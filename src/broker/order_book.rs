//! The order state machine and the book of orders the broker holds.
//!
//! Pure: no clock reads (times come in with events), no IO. The broker actor
//! feeds it events and acts on the transitions it returns, so the same events
//! can later be journaled and replayed.
//!
//! ```text
//!            Dispatched            Started
//!  Queued ──────────────▶ Dispatching ──────▶ Running ──────┐
//!    ▲  ◀──────────────────────┘  │              │          │ SubagentLost
//!    │   DispatchFailed,          │ Finished     │ Finished │ (not known dead)
//!    │   SubagentLost (dead)      ▼              ▼          ▼
//!    │                   Succeeded | Failed  ◀────────── Orphaned
//!    │                                 Finished            │  │ SubagentReturned
//!    └──────────── OrphanDeadline, or SubagentLost (dead) ─┘  └─▶ Running
//!                  when restartable (else Failed)
//! ```
//!
//! A task is run again only once its old copy is known dead: its subagent
//! vanished at once (killed: its children died with it), or the subagent's
//! own orphan timeout has passed (it kills its tasks when it hears no broker).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::{OrderCounts, OrderInfo, OrderState};

/// Where an order is, with the in-between step the wire state hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Durable, waiting for a subagent with room.
    Queued,
    /// Handed to a subagent that has not yet confirmed.
    Dispatching,
    Running,
    /// Its subagent is unreachable but may still run the task: waiting for a
    /// late result, the subagent's return, or its orphan timeout.
    Orphaned,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn wire(self) -> OrderState {
        match self {
            Phase::Queued | Phase::Dispatching => OrderState::Accepted,
            Phase::Running | Phase::Orphaned => OrderState::Running,
            Phase::Succeeded => OrderState::Succeeded,
            Phase::Failed => OrderState::Failed,
            Phase::Cancelled => OrderState::Cancelled,
        }
    }

    pub fn is_final(self) -> bool {
        self.wire().is_final()
    }
}

/// How a task ended, as far as the order cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why it failed when the exit code does not tell.
    pub error: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: u64,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.timed_out
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Dispatched {
        task_id: String,
        subagent_id: String,
    },
    DispatchFailed {
        task_id: String,
    },
    Started {
        task_id: String,
        at_ms: u64,
    },
    Finished {
        task_id: String,
        outcome: Outcome,
    },
    /// The task's subagent is gone. `dead`: it vanished at once, so its task
    /// died with it; otherwise it may still run the task until `rerun_at_ms`.
    SubagentLost {
        subagent_id: String,
        at_ms: u64,
        dead: bool,
        rerun_at_ms: u64,
    },
    /// An unreachable subagent is back and still runs `running`.
    SubagentReturned {
        subagent_id: String,
        running: Vec<String>,
    },
    /// The orphan timeout of an unreachable subagent has passed: its task is dead.
    OrphanDeadline {
        at_ms: u64,
    },
    /// The subagent killed the task itself (orphan or drain timeout): it is
    /// dead, and did not fail on its own.
    Abandoned {
        task_id: String,
        reason: String,
        at_ms: u64,
    },
    /// An operator cancels the order: a waiting one at once; a running one
    /// ends cancelled when its task ends (the broker kills it with `kill`).
    Cancel {
        at_ms: u64,
    },
    /// A trigger's order is not run: its job's concurrency policy forbids
    /// a second run while one is active. It ends cancelled, with `reason`.
    Skipped {
        reason: String,
        at_ms: u64,
    },
    /// A queued order cannot run at all (its job was removed).
    Refused {
        reason: String,
        at_ms: u64,
    },
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order moved from one phase to another.
    Moved { from: Phase, to: Phase },
    /// The event was about another (older) task or is repeated: recorded, no change.
    Stale,
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no order {0}")]
    UnknownOrder(String),
    #[error("order {order} is {phase:?}; {event} does not apply")]
    NotAllowed {
        order: String,
        phase: Phase,
        event: &'static str,
    },
}

/// One order and everything the broker knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub job: String,
    pub params: BTreeMap<String, String>,
    pub request_id: Option<String>,
    /// The trigger slot this order fires, when a Scheduler submitted it.
    pub slot_ms: Option<u64>,
    pub phase: Phase,
    /// Whether a task lost with its subagent runs again elsewhere.
    pub restartable: bool,
    /// Tasks started so far; the current task is attempt number `attempt`.
    pub attempt: u32,
    /// The current task was confirmed started by its subagent.
    pub confirmed: bool,
    /// When an orphaned task is known dead.
    pub rerun_at_ms: Option<u64>,
    /// Cancelled while its task runs: it ends cancelled, and never runs again.
    pub cancel_requested: bool,
    /// Stored in JetStream (and so acknowledged to its submitter).
    pub durable: bool,
    pub task_id: Option<String>,
    pub subagent_id: Option<String>,
    pub accepted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

impl Order {
    pub fn new(
        id: String,
        job: String,
        params: BTreeMap<String, String>,
        request_id: Option<String>,
        accepted_at_ms: u64,
    ) -> Order {
        Order {
            id,
            job,
            params,
            request_id,
            slot_ms: None,
            phase: Phase::Queued,
            restartable: true,
            attempt: 0,
            confirmed: false,
            rerun_at_ms: None,
            cancel_requested: false,
            durable: false,
            task_id: None,
            subagent_id: None,
            accepted_at_ms,
            started_at_ms: None,
            outcome: None,
        }
    }

    /// The id the next task of this order gets.
    pub fn next_task_id(&self) -> String {
        format!("{}-{}", self.id, self.attempt + 1)
    }

    /// Applies one event (the state machine).
    pub fn apply(&mut self, event: OrderEvent) -> Result<Applied, ApplyError> {
        let from = self.phase;
        let current = |task_id: &str| self.task_id.as_deref() == Some(task_id);
        let not_allowed = |event: &'static str| ApplyError::NotAllowed {
            order: self.id.clone(),
            phase: from,
            event,
        };
        match event {
            OrderEvent::Dispatched {
                task_id,
                subagent_id,
            } => {
                if from != Phase::Queued {
                    return Err(not_allowed("dispatched"));
                }
                self.attempt += 1;
                self.task_id = Some(task_id);
                self.subagent_id = Some(subagent_id);
                self.confirmed = false;
                self.phase = Phase::Dispatching;
            }
            OrderEvent::DispatchFailed { task_id } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.back_to_queue(false);
            }
            OrderEvent::Started { task_id, at_ms } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.started_at_ms = Some(at_ms);
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Finished { task_id, outcome } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                // the subagent's own start time is the accurate one
                if outcome.started_at_ms.is_some() {
                    self.started_at_ms = outcome.started_at_ms;
                }
                self.phase = if self.cancel_requested {
                    Phase::Cancelled
                } else if outcome.succeeded() {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                self.rerun_at_ms = None;
                self.outcome = Some(outcome);
            }
            OrderEvent::SubagentLost {
                subagent_id,
                at_ms,
                dead,
                rerun_at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || self.subagent_id.as_deref() != Some(subagent_id.as_str()) {
                    return Ok(Applied::Stale);
                }
                if !dead {
                    if from == Phase::Orphaned {
                        return Ok(Applied::Stale);
                    }
                    self.phase = Phase::Orphaned;
                    self.rerun_at_ms = Some(rerun_at_ms);
                } else {
                    self.task_is_dead(&subagent_id, at_ms);
                }
            }
            OrderEvent::SubagentReturned {
                subagent_id,
                running,
            } => {
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str());
                let runs = self.task_id.as_ref().is_some_and(|t| running.contains(t));
                if from != Phase::Orphaned || !ours || !runs {
                    return Ok(Applied::Stale);
                }
                self.rerun_at_ms = None;
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Abandoned {
                task_id,
                reason,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                tracing::debug!(order = %self.id, %reason, "task abandoned by its subagent");
                // it ran: a restartable order runs again, another one fails
                self.confirmed = true;
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                self.task_is_dead(&subagent_id, at_ms);
            }
            OrderEvent::OrphanDeadline { at_ms } => {
                if from != Phase::Orphaned || self.rerun_at_ms.is_some_and(|t| t > at_ms) {
                    return Ok(Applied::Stale);
                }
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                self.task_is_dead(&subagent_id, at_ms);
            }
            OrderEvent::Cancel { at_ms } => match from {
                Phase::Queued => self.cancelled(at_ms),
                Phase::Dispatching | Phase::Running | Phase::Orphaned => {
                    if self.cancel_requested {
                        return Ok(Applied::Stale);
                    }
                    self.cancel_requested = true;
                    return Ok(Applied::Stale);
                }
                Phase::Cancelled => return Ok(Applied::Stale),
                Phase::Succeeded | Phase::Failed => return Err(not_allowed("cancel")),
            },
            OrderEvent::Skipped { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("skipped"));
                }
                self.phase = Phase::Cancelled;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
            OrderEvent::Refused { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("refused"));
                }
                self.phase = Phase::Failed;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
        }
        Ok(Applied::Moved {
            from,
            to: self.phase,
        })
    }

    /// The current task is known dead: it runs again when restartable (an
    /// unconfirmed one without counting as an attempt). A non-restartable
    /// one fails even when unconfirmed: it may have started before its
    /// subagent died, and it must never run twice.
    fn task_is_dead(&mut self, subagent_id: &str, at_ms: u64) {
        if self.cancel_requested {
            self.cancelled(at_ms);
        } else if self.restartable {
            self.back_to_queue(self.confirmed);
        } else {
            self.phase = Phase::Failed;
            self.rerun_at_ms = None;
            self.outcome = Some(Outcome {
                error: Some(format!(
                    "subagent lost: {subagent_id} (the job is not restartable)"
                )),
                started_at_ms: self.started_at_ms,
                finished_at_ms: at_ms,
                ..Outcome::default()
            });
        }
    }

    fn cancelled(&mut self, at_ms: u64) {
        self.phase = Phase::Cancelled;
        self.cancel_requested = true;
        self.rerun_at_ms = None;
        let outcome = self.outcome.take().unwrap_or(Outcome {
            started_at_ms: self.started_at_ms,
            finished_at_ms: at_ms,
            ..Outcome::default()
        });
        self.outcome = Some(Outcome {
            error: outcome.error.or_else(|| Some("cancelled".into())),
            ..outcome
        });
    }

    /// Back to the queue; `counted` keeps the attempt (the task had started).
    fn back_to_queue(&mut self, counted: bool) {
        if !counted {
            self.attempt -= 1;
        }
        self.task_id = None;
        self.subagent_id = None;
        self.confirmed = false;
        self.rerun_at_ms = None;
        self.phase = Phase::Queued;
    }

    /// The order as clients and the journal see it.
    pub fn info(&self) -> OrderInfo {
        let outcome = self.outcome.clone().unwrap_or_default();
        OrderInfo {
            order_id: self.id.clone(),
            job: self.job.clone(),
            params: self.params.clone(),
            state: self.phase.wire(),
            attempt: self.attempt,
            subagent_id: self.subagent_id.clone(),
            task_id: self.task_id.clone(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            reason: outcome.error.or_else(|| {
                (self.phase == Phase::Orphaned)
                    .then(|| "subagent unreachable; waiting for its orphan timeout".to_string())
            }),
            request_id: self.request_id.clone(),
            slot_ms: self.slot_ms,
            cancel_requested: self.cancel_requested,
            accepted_at_ms: self.accepted_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.outcome.as_ref().map(|o| o.finished_at_ms),
        }
    }
}

/// Every order the broker holds, the queue of those waiting for a subagent,
/// and a bounded memory of finished ones.
#[derive(Debug, Default)]
pub struct OrderBook {
    orders: HashMap<String, Order>,
    queue: VecDeque<String>,
    by_request: HashMap<String, String>,
    finished: VecDeque<String>,
    counts: OrderCounts,
    keep_finished: usize,
}

impl OrderBook {
    /// A book that remembers at most `keep_finished` final orders.
    pub fn new(keep_finished: usize) -> OrderBook {
        OrderBook {
            keep_finished,
            ..OrderBook::default()
        }
    }

    /// Adds a new order; it is not dispatched until [`OrderBook::enqueue`].
    pub fn insert(&mut self, order: Order) {
        if let Some(request_id) = &order.request_id {
            self.by_request.insert(request_id.clone(), order.id.clone());
        }
        self.counts.accepted += 1;
        self.orders.insert(order.id.clone(), order);
    }

    /// Forgets an order that never became durable.
    pub fn remove(&mut self, order_id: &str) {
        if let Some(order) = self.orders.remove(order_id) {
            self.counts.accepted -= 1;
            if let Some(request_id) = order.request_id {
                self.by_request.remove(&request_id);
            }
        }
    }

    /// Makes a durable order eligible for dispatch.
    pub fn enqueue(&mut self, order_id: &str) {
        if let Some(order) = self.orders.get_mut(order_id) {
            order.durable = true;
        }
        self.queue.push_back(order_id.to_string());
    }

    /// The orders of `job` that have not reached a final state.
    pub fn active_of_job(&self, job: &str) -> Vec<String> {
        let active = self.orders.values();
        let active = active.filter(|o| o.job == job && !o.phase.is_final());
        active.map(|o| o.id.clone()).collect()
    }

    pub fn get(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id)
    }

    pub fn by_request_id(&self, request_id: &str) -> Option<&Order> {
        self.orders.get(self.by_request.get(request_id)?)
    }

    /// The first queued order still waiting, dropping entries that moved on.
    pub fn next_queued(&mut self) -> Option<&Order> {
        while let Some(id) = self.queue.front() {
            match self.orders.get(id) {
                Some(order) if order.phase == Phase::Queued => break,
                _ => {
                    self.queue.pop_front();
                }
            }
        }
        let id = self.queue.front()?;
        self.orders.get(id)
    }

    /// Number of entries in the dispatch queue (some may be stale).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Applies an event to one order, keeping the queue and counts in step.
    pub fn apply(&mut self, order_id: &str, event: OrderEvent) -> Result<Applied, ApplyError> {
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| ApplyError::UnknownOrder(order_id.to_string()))?;
        let applied = order.apply(event)?;
        if let Applied::Moved { from, to } = applied {
            count(&mut self.counts, from, -1);
            count(&mut self.counts, to, 1);
            if to == Phase::Queued {
                // back to the front: it has waited longest
                self.queue.push_front(order_id.to_string());
            } else if from == Phase::Queued
                && self.queue.front().map(String::as_str) == Some(order_id)
            {
                self.queue.pop_front();
            }
            if to.is_final() {
                self.finished.push_back(order_id.to_string());
                self.forget_oldest_finished();
            }
        }
        Ok(applied)
    }

    /// Orders whose current task is on `subagent_id`.
    pub fn on_subagent(&self, subagent_id: &str) -> Vec<String> {
        self.orders
            .values()
            .filter(|o| {
                matches!(
                    o.phase,
                    Phase::Dispatching | Phase::Running | Phase::Orphaned
                ) && o.subagent_id.as_deref() == Some(subagent_id)
            })
            .map(|o| o.id.clone())
            .collect()
    }

    /// Orphaned orders whose rerun time has come.
    pub fn orphans_due(&self, now_ms: u64) -> Vec<String> {
        self.orders
            .values()
            .filter(|o| o.phase == Phase::Orphaned && o.rerun_at_ms.is_some_and(|t| t <= now_ms))
            .map(|o| o.id.clone())
            .collect()
    }

    /// Queued orders, oldest first (entries that moved on are skipped).
    pub fn queued(&self) -> impl Iterator<Item = &Order> {
        self.queue
            .iter()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.phase == Phase::Queued)
    }

    /// Drops queue entries of orders that are no longer queued.
    pub fn compact_queue(&mut self) {
        let orders = &self.orders;
        let mut seen = std::collections::HashSet::new();
        self.queue.retain(|id| {
            orders.get(id).is_some_and(|o| o.phase == Phase::Queued) && seen.insert(id.clone())
        });
    }

    #[cfg(test)]
    fn get_mut_for_test(&mut self, order_id: &str) -> &mut Order {
        self.orders.get_mut(order_id).unwrap()
    }

    pub fn counts(&self) -> OrderCounts {
        self.counts.clone()
    }

    fn forget_oldest_finished(&mut self) {
        while self.finished.len() > self.keep_finished {
            if let Some(id) = self.finished.pop_front() {
                if let Some(order) = self.orders.remove(&id) {
                    if let Some(request_id) = order.request_id {
                        self.by_request.remove(&request_id);
                    }
                }
            }
        }
    }
}

fn count(counts: &mut OrderCounts, phase: Phase, delta: i64) {
    let slot = match phase.wire() {
        OrderState::Accepted => &mut counts.accepted,
        OrderState::Running => &mut counts.running,
        OrderState::Succeeded => &mut counts.succeeded,
        OrderState::Failed => &mut counts.failed,
        OrderState::Cancelled => &mut counts.cancelled,
    };
    *slot = slot.saturating_add_signed(delta);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> Order {
        Order::new(id.into(), "job".into(), BTreeMap::new(), None, 1)
    }

    fn ok_outcome() -> Outcome {
        Outcome {
            exit_code: Some(0),
            finished_at_ms: 5,
            ..Outcome::default()
        }
    }

    fn dispatched(book: &mut OrderBook, id: &str, sub: &str) -> String {
        let task = book.get(id).unwrap().next_task_id();
        book.apply(
            id,
            OrderEvent::Dispatched {
                task_id: task.clone(),
                subagent_id: sub.into(),
            },
        )
        .unwrap();
        task
    }

    #[test]
    fn happy_path_counts_and_queue() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        assert_eq!(book.next_queued().unwrap().id, "a");
        let task = dispatched(&mut book, "a", "s1");
        assert!(book.next_queued().is_none());
        book.apply(
            "a",
            OrderEvent::Started {
                task_id: task.clone(),
                at_ms: 2,
            },
        )
        .unwrap();
        assert_eq!(book.counts().running, 1);
        let r = book
            .apply(
                "a",
                OrderEvent::Finished {
                    task_id: task,
                    outcome: ok_outcome(),
                },
            )
            .unwrap();
        assert_eq!(
            r,
            Applied::Moved {
                from: Phase::Running,
                to: Phase::Succeeded
            }
        );
        let c = book.counts();
        assert_eq!((c.accepted, c.running, c.succeeded), (0, 0, 1));
        assert_eq!(book.get("a").unwrap().info().exit_code, Some(0));
    }

    #[test]
    fn result_before_start_confirmation_finishes_the_order() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let task = dispatched(&mut book, "a", "s1");
        let mut outcome = ok_outcome();
        outcome.exit_code = Some(3);
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: task.clone(),
                outcome,
            },
        )
        .unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
        // the late confirmation changes nothing
        let r = book
            .apply(
                "a",
                OrderEvent::Started {
                    task_id: task,
                    at_ms: 9,
                },
            )
            .unwrap();
        assert_eq!(r, Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
    }

    #[test]
    fn stale_and_repeated_results_change_nothing() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let first = dispatched(&mut book, "a", "s1");
        book.apply(
            "a",
            OrderEvent::DispatchFailed {
                task_id: first.clone(),
            },
        )
        .unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        let second = dispatched(&mut book, "a", "s2");
        assert_eq!(
            second, first,
            "a dispatch that never started is not an attempt"
        );
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: second.clone(),
                outcome: ok_outcome(),
            },
        )
        .unwrap();
        let again = book
            .apply(
                "a",
                OrderEvent::Finished {
                    task_id: second,
                    outcome: Outcome::default(),
                },
            )
            .unwrap();
        assert_eq!(again, Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        assert_eq!(book.counts().succeeded, 1);
    }

    #[test]
    fn lost_subagent_requeues_unconfirmed_and_fails_running() {
        let mut book = OrderBook::new(10);
        for id in ["a", "b"] {
            book.insert(order(id));
            book.enqueue(id);
        }
        dispatched(&mut book, "a", "s1");
        let tb = dispatched(&mut book, "b", "s1");
        book.apply(
            "b",
            OrderEvent::Started {
                task_id: tb,
                at_ms: 2,
            },
        )
        .unwrap();
        let mut on = book.on_subagent("s1");
        on.sort();
        assert_eq!(on, vec!["a", "b"]);
        book.get_mut_for_test("b").restartable = false;
        for id in on {
            book.apply(&id, lost("s1", true, 0)).unwrap();
        }
        assert_eq!(book.get("a").unwrap().phase, Phase::Queued);
        assert_eq!(
            book.get("a").unwrap().attempt,
            0,
            "never confirmed: not an attempt"
        );
        assert_eq!(book.next_queued().unwrap().id, "a");
        let b = book.get("b").unwrap().info();
        assert_eq!(b.state, OrderState::Failed);
        assert!(b.reason.unwrap().contains("subagent lost"));
    }

    fn lost(sub: &str, dead: bool, rerun_at_ms: u64) -> OrderEvent {
        OrderEvent::SubagentLost {
            subagent_id: sub.into(),
            at_ms: 3,
            dead,
            rerun_at_ms,
        }
    }

    fn running(book: &mut OrderBook, id: &str, sub: &str) -> String {
        book.insert(order(id));
        book.enqueue(id);
        let task = dispatched(book, id, sub);
        let started = OrderEvent::Started {
            task_id: task.clone(),
            at_ms: 2,
        };
        book.apply(id, started).unwrap();
        task
    }

    #[test]
    fn a_skipped_order_ends_cancelled_with_its_reason_and_is_never_dispatched() {
        let mut book = OrderBook::new(10);
        running(&mut book, "r", "sub-1");
        book.insert(order("s"));
        book.enqueue("s");
        let mut active = book.active_of_job("job");
        active.sort();
        assert_eq!(active, ["r", "s"]);
        let skipped = OrderEvent::Skipped {
            reason: "skipped".into(),
            at_ms: 3,
        };
        book.apply("s", skipped.clone()).unwrap();
        let info = book.get("s").unwrap().info();
        assert_eq!(info.state, OrderState::Cancelled);
        assert_eq!(info.reason.as_deref(), Some("skipped"));
        assert_eq!(book.queued().count(), 0);
        assert_eq!(book.active_of_job("job"), ["r"]);
        // Only a waiting order can be skipped.
        assert!(book.apply("r", skipped).is_err());
    }

    #[test]
    fn cancel_ends_a_waiting_order_at_once_and_a_running_one_when_its_task_ends() {
        let mut book = OrderBook::new(10);
        book.insert(order("w"));
        book.enqueue("w");
        book.apply("w", OrderEvent::Cancel { at_ms: 5 }).unwrap();
        assert_eq!(book.get("w").unwrap().phase, Phase::Cancelled);
        assert!(
            book.next_queued().is_none(),
            "a cancelled order is never dispatched"
        );
        assert_eq!(
            book.apply("w", OrderEvent::Cancel { at_ms: 6 }).unwrap(),
            Applied::Stale,
            "cancel is idempotent"
        );
        assert_eq!(book.counts().cancelled, 1);

        let task = running(&mut book, "r", "s1");
        assert_eq!(
            book.apply("r", OrderEvent::Cancel { at_ms: 7 }).unwrap(),
            Applied::Stale
        );
        assert!(book.get("r").unwrap().cancel_requested);
        let done = OrderEvent::Finished {
            task_id: task,
            outcome: ok_outcome(),
        };
        book.apply("r", done).unwrap();
        assert_eq!(book.get("r").unwrap().phase, Phase::Cancelled);

        // a cancelled order lost with its subagent does not run again
        let task = running(&mut book, "l", "s1");
        book.apply("l", OrderEvent::Cancel { at_ms: 8 }).unwrap();
        book.apply("l", lost("s1", true, 0)).unwrap();
        assert_eq!(book.get("l").unwrap().phase, Phase::Cancelled);
        let _ = task;

        // a finished order cannot be cancelled
        let t = running(&mut book, "f", "s1");
        let done = OrderEvent::Finished {
            task_id: t,
            outcome: ok_outcome(),
        };
        book.apply("f", done).unwrap();
        assert!(book.apply("f", OrderEvent::Cancel { at_ms: 9 }).is_err());
    }

    #[test]
    fn a_non_restartable_task_lost_before_its_start_was_confirmed_fails() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.get_mut_for_test("a").restartable = false;
        book.enqueue("a");
        dispatched(&mut book, "a", "s1");
        book.apply("a", lost("s1", true, 0)).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
        assert!(book.next_queued().is_none());
    }

    #[test]
    fn a_dead_subagents_restartable_task_runs_again_as_the_next_attempt() {
        let mut book = OrderBook::new(10);
        let first = running(&mut book, "a", "s1");
        book.apply("a", lost("s1", true, 0)).unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        let second = dispatched(&mut book, "a", "s2");
        assert_ne!(first, second);
        assert_eq!(book.get("a").unwrap().attempt, 2);
        // the first copy's late result is recorded, never changes the order
        let late = OrderEvent::Finished {
            task_id: first,
            outcome: ok_outcome(),
        };
        assert_eq!(book.apply("a", late).unwrap(), Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Dispatching);
    }

    #[test]
    fn an_unreachable_subagents_task_waits_for_its_orphan_deadline() {
        let mut book = OrderBook::new(10);
        let task = running(&mut book, "a", "s1");
        book.apply("a", lost("s1", false, 100)).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Orphaned);
        assert!(
            book.next_queued().is_none(),
            "not rerun while it may still run"
        );
        assert!(book.orphans_due(99).is_empty());
        assert_eq!(book.orphans_due(100), vec!["a"]);
        let early = OrderEvent::OrphanDeadline { at_ms: 99 };
        assert_eq!(book.apply("a", early).unwrap(), Applied::Stale);
        book.apply("a", OrderEvent::OrphanDeadline { at_ms: 100 })
            .unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        assert_eq!(book.get("a").unwrap().attempt, 1);
        let _ = task;
    }

    #[test]
    fn a_task_its_subagent_killed_runs_again_or_fails_as_lost() {
        let mut book = OrderBook::new(10);
        let ta = running(&mut book, "a", "s1");
        let tb = running(&mut book, "b", "s1");
        book.get_mut_for_test("b").restartable = false;
        for (id, task) in [("a", ta), ("b", tb)] {
            book.apply(id, lost("s1", false, 100)).unwrap();
            let event = OrderEvent::Abandoned {
                task_id: task,
                reason: "no broker heard for 10s".into(),
                at_ms: 50,
            };
            book.apply(id, event).unwrap();
        }
        assert_eq!(book.next_queued().unwrap().id, "a");
        assert_eq!(book.get("a").unwrap().attempt, 1);
        let b = book.get("b").unwrap().info();
        assert_eq!(b.state, OrderState::Failed);
        assert!(b.reason.unwrap().contains("subagent lost"));
    }

    #[test]
    fn an_orphaned_task_can_still_finish_or_be_found_running() {
        let mut book = OrderBook::new(10);
        let ta = running(&mut book, "a", "s1");
        let tb = running(&mut book, "b", "s1");
        book.apply("a", lost("s1", false, 100)).unwrap();
        book.apply("b", lost("s1", false, 100)).unwrap();
        // a's late result is accepted
        let late = OrderEvent::Finished {
            task_id: ta,
            outcome: ok_outcome(),
        };
        book.apply("a", late).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        // b's subagent is back and still runs it
        let back = OrderEvent::SubagentReturned {
            subagent_id: "s1".into(),
            running: vec![tb],
        };
        book.apply("b", back).unwrap();
        assert_eq!(book.get("b").unwrap().phase, Phase::Running);
        assert!(book.orphans_due(1000).is_empty());
    }

    #[test]
    fn finished_orders_are_forgotten_beyond_the_limit() {
        let mut book = OrderBook::new(2);
        for i in 0..5 {
            let id = format!("o{i}");
            let mut o = order(&id);
            o.request_id = Some(format!("r{i}"));
            book.insert(o);
            book.enqueue(&id);
            let t = dispatched(&mut book, &id, "s");
            book.apply(
                &id,
                OrderEvent::Finished {
                    task_id: t,
                    outcome: ok_outcome(),
                },
            )
            .unwrap();
        }
        assert!(book.get("o0").is_none() && book.by_request_id("r0").is_none());
        assert!(book.get("o4").is_some() && book.by_request_id("r4").is_some());
        assert_eq!(book.counts().succeeded, 5);
    }

    #[test]
    fn no_event_sequence_leaves_a_final_order() {
        // every event applied to a final order is stale or refused
        let events = [
            OrderEvent::Dispatched {
                task_id: "x-1".into(),
                subagent_id: "s".into(),
            },
            OrderEvent::DispatchFailed {
                task_id: "a-1".into(),
            },
            OrderEvent::Started {
                task_id: "a-1".into(),
                at_ms: 1,
            },
            OrderEvent::Finished {
                task_id: "a-1".into(),
                outcome: Outcome::default(),
            },
            lost("s1", true, 0),
            lost("s1", false, 0),
            OrderEvent::OrphanDeadline { at_ms: 9 },
            OrderEvent::SubagentReturned {
                subagent_id: "s1".into(),
                running: vec!["a-1".into()],
            },
        ];
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let t = dispatched(&mut book, "a", "s1");
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: t,
                outcome: ok_outcome(),
            },
        )
        .unwrap();
        for e in events {
            let _ = book.apply("a", e);
            assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        }
    }
}
