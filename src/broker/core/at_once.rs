//! A new job order placed as its submit arrives, when a subagent has room
//! and no order waits before it: its record is created already dispatched
//! there (one journal write where there were two: the create, then the
//! dispatch), and its task is sent once the record is stored.
//!
//! The subagent's room is held from the submit (`Registry::assign`), but
//! the book applies the dispatch only once the record is stored; until
//! then the order is held but not queued, as any order being created. If
//! the placement no longer holds by then (the subagent was lost or
//! restarted, the order cancelled), the room is given back, the order is
//! queued, and its queued state written over the dispatched one: no task
//! was sent, and a broker that took over in between finds a dispatch to
//! ask its subagent about, as after any dispatch whose run was not sent.
//! A create that fails or finds the request id's order gives the room
//! back first, and then goes on as it would have.
//!
//! The task is made at the submit, from the job as deployed then: a
//! redeploy within the create's round trip is not seen by this attempt,
//! as it was not by a dispatch already written. The gate is the whole
//! queue: while any order waits (even one no subagent can take), new
//! orders go through the queue.
//!
//! Architecture invariant (`journal.rs`): a `run` is sent only for a
//! dispatch already in the journal; here the create is that write.

use super::super::order_book::{Order, OrderEvent, Phase};
use super::plan::{self, Decision, Deployed, Queued};
use super::Core;
use crate::protocol::*;

/// Where a new order's task goes, chosen as its submit arrived; the
/// subagent's room is held for it.
#[derive(Debug)]
pub(super) struct Placed {
    pub subagent_id: String,
    pub run: Box<RunTask>,
}

impl Placed {
    fn dispatched(&self) -> OrderEvent {
        OrderEvent::Dispatched {
            task_id: self.run.task_id.clone(),
            subagent_id: self.subagent_id.clone(),
            instance_id: self.run.instance_id.clone().unwrap_or_default(),
        }
    }
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Places a new job order now, if no order waits before it and the
    /// planner finds a subagent with room: that room is held, and the
    /// record to create says dispatched there.
    pub(super) fn place_at_once(&mut self, order: &Order) -> Option<(Placed, Box<OrderInfo>)> {
        if order.spread.is_some() || order.pin.is_some() || self.book.next_queued().is_some() {
            return None;
        }
        let deployed = Deployed {
            jobs: &self.jobs,
            clusters: &self.clusters,
        };
        let queued = Queued {
            order_id: &order.id,
            job: &order.job,
            spread: None,
            pin: None,
        };
        let last_placed = &self.last_placed;
        let decisions = plan::plan([queued], &deployed, &self.registry, last_placed, |_| None);
        let Some(Decision::Place {
            subagent_id,
            instance_id,
            cluster,
            ..
        }) = decisions.into_iter().next()
        else {
            return None;
        };
        let to = (subagent_id.as_str(), instance_id);
        let run = self.run_task(order, order.next_task_id(), order.attempt + 1, to)?;
        let placed = Placed {
            subagent_id,
            run: Box::new(run),
        };
        let mut dispatched = order.clone();
        dispatched.apply(placed.dispatched()).ok()?;
        self.registry
            .assign(&placed.subagent_id, &placed.run.task_id);
        self.last_placed.insert(cluster, placed.subagent_id.clone());
        Some((placed, Box::new(dispatched.info())))
    }

    /// The order's record is stored dispatched as `placed` says: its task
    /// is sent if the placement still holds; else the room is given back,
    /// the order queued and its queued state written.
    pub(super) fn run_placed(&mut self, order_id: &str, placed: Placed) {
        let holds = self
            .book
            .get(order_id)
            .is_some_and(|o| o.phase == Phase::Queued)
            && self.registry.get(&placed.subagent_id).is_some_and(|s| {
                s.is_up()
                    && !s.said_busy
                    && placed.run.instance_id.as_ref() == Some(&s.instance_id)
                    && s.tasks.contains(&placed.run.task_id)
            });
        if holds && self.book.apply(order_id, placed.dispatched()).is_ok() {
            self.book.made_durable(order_id);
            self.placed(order_id);
            return self.send_run(placed.subagent_id, *placed.run, false);
        }
        self.unplace(Some(placed));
        if self
            .book
            .get(order_id)
            .is_some_and(|o| o.phase == Phase::Queued)
        {
            self.book.enqueue(order_id);
            // the record says dispatched, and nothing was sent
            self.store(order_id, super::Then::Nothing);
        }
    }

    /// Gives back the room held for a placement that will not run.
    pub(super) fn unplace(&mut self, placed: Option<Placed>) {
        if let Some(placed) = placed {
            (self.registry).release(&placed.subagent_id, &placed.run.task_id, false);
        }
    }
}
