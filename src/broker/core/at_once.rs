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
//! as it was not by a dispatch already written.
//!
//! The gate is fairness: a new order never takes room an earlier order
//! could have. It goes at once only if no earlier order is being created
//! to be queued (a submit that found no room, a workflow's step, a spread
//! order's member), and, with orders queued, only if the last dispatch
//! pass left them all in the queue ([`LeftQueued`]), no order joined the
//! queue since, and none of them could run on the subagent chosen (of a
//! job with no cluster or one the subagent is a member of, or pinned to
//! it). So an order no subagent can take (its cluster not deployed, every
//! member away) does not send every other order through the queue, with a
//! journal write more each, for as long as it waits.
//!
//! Architecture invariant (`journal.rs`): a `run` is sent only for a
//! dispatch already in the journal; here the create is that write.

use foldhash::HashSet;

use super::super::order_book::{Order, OrderEvent, Phase};
use super::super::registry::Subagent;
use super::plan::{self, Decision, Deployed, Queued};
use super::submit::Pending;
use super::Core;
use crate::protocol::*;

/// What the last dispatch pass left in the queue, as of the book's count
/// of orders that joined it ([`OrderBook::joined`]): the jobs of the orders
/// it did not place (no room, no member, or behind one of those), and the
/// members pinned ones wait for.
///
/// [`OrderBook::joined`]: super::super::order_book::OrderBook::joined
#[derive(Debug, Default)]
pub(super) struct LeftQueued {
    joined: Option<u64>,
    jobs: HashSet<String>,
    pins: HashSet<String>,
}

impl LeftQueued {
    /// A dispatch pass, planned when `joined` orders had joined the queue,
    /// left `left` in it.
    pub(super) fn set(&mut self, joined: u64, left: plan::Left<'_>) {
        self.joined = Some(joined);
        let same = |held: &HashSet<String>, now: &HashSet<&str>| {
            held.len() == now.len() && now.iter().all(|n| held.contains(*n))
        };
        if !same(&self.jobs, &left.jobs) {
            self.jobs = left.jobs.into_iter().map(str::to_string).collect();
        }
        if !same(&self.pins, &left.pins) {
            self.pins = left.pins.into_iter().map(str::to_string).collect();
        }
    }

    /// Whether no queued order could run on `subagent`: all were left by
    /// the last pass (none joined the queue since, `joined` now), none is
    /// pinned there, and none is of a job that could run there.
    fn none_could_run_on(&self, joined: u64, subagent: &Subagent, deployed: &Deployed) -> bool {
        self.joined == Some(joined)
            && !self.pins.contains(&subagent.id)
            && !self
                .jobs
                .iter()
                .any(|job| plan::could_run_on(job, subagent, deployed))
    }
}

impl<R> Pending<R> {
    /// The order being created joins the queue once stored (not placed at
    /// once, nor a workflow order).
    fn joins_the_queue(&self) -> bool {
        match self {
            Pending::Job { placed, .. } => placed.is_none(),
            Pending::Step(_) | Pending::Member(_) => true,
            Pending::Flow { .. } => false,
        }
    }
}

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
    /// Places a new job order now, if the planner finds a subagent with
    /// room that no queued order could take (see the module's docs): that
    /// room is held, and the record to create says dispatched there.
    pub(super) fn place_at_once(&mut self, order: &Order) -> Option<(Placed, Box<OrderInfo>)> {
        if order.spread.is_some() || order.pin.is_some() {
            return None;
        }
        let queue_empty = self.book.next_queued().is_none();
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
        if !queue_empty {
            let subagent = self.registry.get(&subagent_id)?;
            let joined = self.book.joined();
            if !self
                .left_queued
                .none_could_run_on(joined, subagent, &deployed)
            {
                return None;
            }
        }
        if self.creating.values().any(Pending::joins_the_queue) {
            // an earlier order, not queued yet, may want this room
            return None;
        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::broker::placement::fixtures::{cluster, registry};

    fn job(name: &str, cluster: Option<&str>) -> JobSpec {
        let spec = serde_json::json!({"name": name, "program": "true", "cluster": cluster});
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn a_queued_order_that_could_run_there_or_one_not_seen_by_a_pass_keeps_new_orders_queued() {
        let r = registry(&[("s1", 1, 0, "a"), ("s2", 1, 0, "a")]);
        let jobs: HashMap<String, JobSpec> = [
            ("any".to_string(), job("any", None)),
            ("on-s2".to_string(), job("on-s2", Some("c2"))),
            ("nowhere".to_string(), job("nowhere", Some("gone"))),
        ]
        .into();
        let mode = SchedulingMode::RoundRobin;
        let clusters = [("c2".to_string(), cluster("c2", mode, &[("s2", 0)]))].into();
        let deployed = Deployed {
            jobs: &jobs,
            clusters: &clusters,
        };
        let (s1, s2) = (r.get("s1").unwrap(), r.get("s2").unwrap());
        let left = |jobs: &[&'static str], pins: &[&'static str]| {
            let mut held = LeftQueued::default();
            let left = plan::Left {
                jobs: jobs.iter().copied().collect(),
                pins: pins.iter().copied().collect(),
            };
            held.set(7, left);
            held
        };
        // nothing left that could run there: a new order may go at once
        let stuck = left(&["nowhere", "on-s2"], &["s2"]);
        assert!(stuck.none_could_run_on(7, s1, &deployed));
        // ... but not once an order joined the queue since that pass
        assert!(!stuck.none_could_run_on(8, s1, &deployed));
        // ... nor where a queued order's cluster or pin could take it
        assert!(!stuck.none_could_run_on(7, s2, &deployed));
        assert!(!left(&[], &["s2"]).none_could_run_on(7, s2, &deployed));
        // a job with no cluster could run anywhere
        assert!(!left(&["any"], &[]).none_could_run_on(7, s1, &deployed));
        // no pass yet: nothing is known of the queue
        assert!(!LeftQueued::default().none_could_run_on(0, s1, &deployed));
        // a pass that leaves the same again keeps what it held
        let mut held = left(&["nowhere"], &[]);
        let again = plan::Left {
            jobs: ["nowhere"].into_iter().collect(),
            pins: Default::default(),
        };
        held.set(9, again);
        assert!(held.none_could_run_on(9, s2, &deployed));
        assert!(!held.none_could_run_on(7, s2, &deployed));
    }
}
