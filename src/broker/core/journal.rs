//! The journal of orders, as the core sees it: every write of an order goes
//! through [`Core::store`], which asks for the order's current state to be
//! written ([`Effect::Write`]) and only once it is stored
//! ([`Input::Written`]) does what waited for it: send the task, acknowledge
//! the result, publish `finished`, answer a command. Writes of one order go
//! out one at a time, so an older state never lands after a newer one; each
//! is a compare-and-swap on the revision this broker last read or wrote
//! (the actor's `recovery::write_over`): every attempt goes out only while
//! the lease surely holds (a compare-and-swap on a known revision too: a
//! standby may have taken over from that very record), so a broker that
//! stepped down writes over a newer record only while its lease surely held, and an end stored
//! by another broker is never written over but taken as the order's
//! ([`Stored::Ended`]).
//!
//! JetStream's orders bucket holds one [`OrderInfo`] per order, the latest
//! state only. An order is written:
//!
//! - on submit, before it is acknowledged (`submit.rs`: with a
//!   `request_id` the order id is a UUIDv5 of the prefix and the request id
//!   and the record is made with KV `create`, so of any number of identical
//!   submits, to any broker, exactly one creates it and the others get it
//!   back; one asking for another job or other parameters finds it too and
//!   is refused with `conflict`; without a request id it is a `put`);
//! - on dispatch, `accepted` with the new `task_id`, `subagent_id`,
//!   `subagent_instance_id` and `attempt`, before the `run` is sent (if the
//!   write fails, the order goes back to the queue). A new job order with
//!   a subagent free for it at its submit is created so at once, one write
//!   for both (`at_once.rs`);
//! - at the first liveness check (`broker.check_interval`) a second or more
//!   after the subagent confirmed the start, `running`, if the task still
//!   runs then (`orders.rs`: `store_started`; in the background: nothing
//!   waits for it). A task that ends sooner is written only final,
//!   so a short task costs two writes when placed at its submit, three
//!   when it waited in the queue. A step order's start is
//!   written at once (its workflow order follows the journal);
//! - when the order goes back to the queue (dispatch refused, task lost,
//!   abandoned or past its orphan deadline, a retry due), `accepted`
//!   without a task;
//! - when a failed task's order waits for its retry, `accepted` without a
//!   task and with `retry_at_ms`, before the result is acknowledged and
//!   the retry's timer armed (`retries.rs`; written until it is stored);
//! - on a cancel of a running order (`cancel_requested`);
//! - when final, before the subagent's result is acknowledged (the
//!   subagent repeats its result until the final state is stored; a final
//!   state not stored is written again every second, `JOURNAL_RETRY`).
//!
//! A write asked for while one of the same order is in flight writes the
//! newest state once the one in flight is done. [`Revisions`] holds the
//! revision of each record as this broker last read or wrote it: the
//! submit's write gives the first, a takeover reads each record's with it,
//! and each write that lands gives the next; those of orders the book
//! forgot are pruned. A write whose answer was lost may have landed: its
//! revision is forgotten, and the next write reads it first.
//!
//! Architecture invariant: a `run` is sent only for a dispatch already in
//! the journal, so a broker taking over knows every task that may run.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{debug, warn};

use super::super::order_book::{ById, Order, OrderEvent};
use super::{Core, Effect, Event, Refusal, Reply};
use crate::protocol::*;
use crate::workflow::FlowOrder;

/// Before writing again a final state that could not be stored.
const JOURNAL_RETRY: Duration = Duration::from_secs(1);
/// [`Revisions`] drops those of forgotten orders once it holds this many.
const PRUNE_MIN: usize = 1024;

/// What waits for an order's state to be stored.
#[derive(Debug)]
pub enum Then<R> {
    Nothing,
    /// The order was stored as dispatched: send its task.
    Run {
        subagent_id: String,
        run: Box<RunTask>,
    },
    /// The order was stored final: acknowledge its task's result.
    Ack {
        to: R,
        task_id: String,
    },
    /// A command changed the order: answer with it once stored.
    Reply {
        to: R,
    },
}

/// What waits for the write of one order in flight, and for the next one.
#[derive(Debug)]
pub struct Writes<R> {
    in_flight: Vec<Then<R>>,
    next: Vec<Then<R>>,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored; the record is now at this revision.
    At(u64),
    /// Not stored, and its fate is unknown: it may have landed.
    Unknown(String),
    /// Not stored: the record changed under every attempt.
    Contended(String),
    /// Not stored: the record holds an end another broker stored (at this
    /// revision), which this broker takes as the order's.
    Ended(Box<OrderInfo>, u64),
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Stores an order's current state, then does `then`. A write of the
    /// same order still in flight is followed by one more write (of the
    /// newest state), so writes land in order.
    pub(in crate::broker) fn store(&mut self, order_id: &str, then: Then<R>) {
        if let Some(writes) = self.writing.get_mut(order_id) {
            writes.next.push(then);
            return;
        }
        self.write(order_id.to_string(), vec![then]);
    }

    fn write(&mut self, order_id: String, thens: Vec<Then<R>>) {
        let Some(info) = self.info_of(&order_id) else {
            // forgotten: long final and stored
            self.unannounced.remove(&order_id);
            for then in thens {
                self.follow_up(&order_id, then, true);
            }
            return;
        };
        let writes = Writes {
            in_flight: thens,
            next: Vec::new(),
        };
        self.writing.insert(order_id.clone(), writes);
        let revision = self.revisions.get(&order_id);
        let info = Box::new(info);
        self.emit(Effect::Write { info, revision });
    }

    /// An order's write ended.
    pub(super) fn written(&mut self, info: OrderInfo, stored: Stored) {
        let order_id = info.order_id.clone();
        let Some(writes) = self.writing.remove(&order_id) else {
            return;
        };
        match &stored {
            Stored::At(revision) => {
                self.set_revision(&order_id, *revision);
                // the end this write stored: one that came after it (a
                // failed workflow order cancelled) waits for its own write
                let stored_end =
                    |e: &Event| matches!(e, Event::Finished(f) if f.state == info.state);
                if self.unannounced.get(&order_id).is_some_and(stored_end) {
                    if let Some(event) = self.unannounced.remove(&order_id) {
                        self.publish(event);
                    }
                }
                // a workflow order follows its step orders only as far as
                // the journal does: after a crash it is never ahead of them
                self.step_order_stored(&info);
                self.spread_stored(&info);
                self.retry_stored(&info);
            }
            Stored::Ended(ended, revision) => {
                warn!(order = %order_id, state = ?ended.state, "the order ended meanwhile, stored by another broker; taking that end");
                self.set_revision(&order_id, *revision);
                self.adopt_end((**ended).clone());
            }
            Stored::Unknown(e) | Stored::Contended(e) => {
                match self.unstored.failed(self.now.at) {
                    Some(0) => {
                        warn!(order = %order_id, error = %e, "order state not stored (JetStream may be electing a stream leader, or have no quorum)")
                    }
                    Some(held) => {
                        warn!(order = %order_id, error = %e, "order state not stored, nor {held} more writes in the last {}s (JetStream may be electing a stream leader, or have no quorum)", super::quiet::QUIET_FOR.as_secs())
                    }
                    None => debug!(order = %order_id, error = %e, "order state not stored"),
                }
                if matches!(stored, Stored::Unknown(_)) {
                    // it may have landed: the next write reads the revision
                    self.revisions.forget(&order_id);
                }
            }
        }
        let ok = matches!(stored, Stored::At(_) | Stored::Ended(..));
        for then in writes.in_flight {
            self.follow_up(&order_id, then, ok);
        }
        if !writes.next.is_empty() {
            return self.write(order_id, writes.next);
        }
        // a final state, a cancel, a retry's due time, any state of a
        // workflow order (a command it answered), or a spread order's
        // members (created once it is stored) is written until it is stored
        let must_land = !ok
            && self.info_of(&order_id).is_some_and(|o| {
                o.state.is_final()
                    || o.cancel_requested
                    || o.workflow.is_some()
                    || o.retry_at_ms.is_some()
                    || !o.members.is_empty()
            });
        if must_land {
            self.later(JOURNAL_RETRY, super::Timer::Rewrite { order_id });
        }
    }

    /// The order's record as it stands, of a job or a workflow.
    pub(in crate::broker) fn info_of(&self, order_id: &str) -> Option<OrderInfo> {
        self.book.info(order_id)
    }

    /// Records the journal revision an order's record is now at.
    pub(in crate::broker) fn set_revision(&mut self, order_id: &str, revision: u64) {
        let book = &self.book;
        self.revisions.set(order_id, revision, |id| book.holds(id));
    }

    pub(super) fn follow_up(&mut self, order_id: &str, then: Then<R>, stored: bool) {
        match then {
            Then::Nothing => {}
            // not acknowledged: the subagent sends the result again
            Then::Ack { .. } if !stored => {}
            Then::Ack { to, task_id } => self.reply(&to, Reply::Ack(ResultAck { task_id })),
            Then::Reply { to } if stored => match self.info_of(order_id) {
                Some(info) => self.reply(&to, Reply::Order(Box::new(info))),
                None => self.refuse(&to, Refusal::NoOrder(order_id.to_string())),
            },
            Then::Reply { to } => self.refuse(&to, Refusal::StateNotStored(order_id.to_string())),
            Then::Run { subagent_id, run } => {
                if !self.dispatched_as(&subagent_id, &run) {
                    return;
                }
                if stored {
                    return self.send_run(subagent_id, *run, false);
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

    /// Takes the end another broker stored for an order held here with an
    /// older view: the order ends so, its task no longer occupies its
    /// subagent, and its end is announced.
    fn adopt_end(&mut self, ended: OrderInfo) {
        if let Some(flow) = FlowOrder::restore(&ended) {
            // a workflow order: its stored end replaces what is held, and
            // its steps still running stop
            if self.book.flow(&ended.order_id).is_some() {
                self.book.insert_flow(flow);
                self.unannounced.remove(&ended.order_id);
                self.publish(Event::finished(&ended, self.now.ms));
                self.stop_unwanted_steps(Some(&ended.order_id));
            }
            return;
        }
        let Some(order) = self.book.get(&ended.order_id) else {
            return;
        };
        if !order.phase.is_final() {
            if let (Some(s), Some(t)) = (order.subagent_id.clone(), order.task_id.clone()) {
                self.registry.release(&s, &t, true);
            }
        }
        let restored = Order::restore(&ended, order.restartable).with_retry(order.retry);
        self.book.adopt(restored);
        self.unannounced.remove(&ended.order_id);
        self.publish(Event::finished(&ended, self.now.ms));
        self.step_order_stored(&ended);
        self.spread_stored(&ended);
    }

    /// Stores an order's final state, then publishes it and does `then`
    /// (acknowledges the result, answers the command).
    pub(in crate::broker) fn finish(&mut self, order_id: &str, then: Then<R>) {
        let Some(order) = self.book.get(order_id) else {
            return;
        };
        let event = Event::finished(&order.info(), self.now.ms);
        // announced once stored (see `written`): a subscriber never hears
        // of an end a broker taking over would not know
        self.unannounced.insert(order_id.to_string(), event);
        self.store(order_id, then);
    }
}

/// The journal revision of each order held in memory, as this broker last
/// read or wrote it. Those of orders the book has forgotten are dropped
/// whenever the map has doubled since the last pruning.
#[derive(Debug, Default)]
pub struct Revisions {
    of: ById<u64>,
    prune_at: usize,
}

impl Revisions {
    pub fn new(of: HashMap<String, u64>) -> Revisions {
        let of: ById<u64> = of.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
