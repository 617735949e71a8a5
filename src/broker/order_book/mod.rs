//! The book of orders the broker holds: job orders (each an [`Order`],
//! the state machine of `order.rs`) and workflow orders ([`FlowOrder`]),
//! one request-id index over both, the queue of job orders waiting for a
//! subagent, the order counts, the order list ([`OrderBook::list`], for the
//! broker's queries), and a bounded memory of ended job orders (the core
//! keeps the newest `broker.keep_finished` ended workflow orders,
//! `core/flows/news.rs`).
//!
//! Pure: no clock reads, no IO. The broker's core (`core/`) feeds it
//! events and acts on the transitions it returns.

mod attempts;
mod order;
mod record;
mod spread;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use crate::protocol::{ListOrders, OrderCounts, OrderInfo, OrderList, OrderState, OrderSummary};
pub use attempts::{Attempts, KEEP_ATTEMPTS};
pub use order::*;

/// Default and largest `limit` of an order list.
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 10_000;
use crate::workflow::FlowOrder;

/// An order held for a request id.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    Job(&'a Order),
    Flow(&'a FlowOrder),
}

/// Ids by id order: what the book returns from its maps, so the same
/// inputs always give the same effects (the simulation replays a seed).
fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids
}

/// A map by order id (or request id) with a fast hash: the book's maps are
/// read several times per order, and SipHash was a visible share of the
/// broker's CPU. Seeded per process, as the standard one is.
pub type ById<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Every order the broker holds, the queue of those waiting for a subagent,
/// and a bounded memory of finished ones.
#[derive(Debug, Default)]
pub struct OrderBook {
    /// Boxed: the map rehashes as it grows, and in place as finished orders
    /// leave it; moving a pointer there costs less than moving an order.
    orders: ById<Box<Order>>,
    /// Orders through workflows: every unfinished one, and the newest ended.
    flows: ById<FlowOrder>,
    queue: VecDeque<String>,
    /// How many times an order joined the queue (see [`OrderBook::joined`]).
    joined: u64,
    /// The order (job or workflow) of each request id.
    by_request: ById<String>,
    finished: VecDeque<String>,
    counts: OrderCounts,
    /// How many orders are orphaned: none most of the time, when the
    /// liveness check's look for orphans due costs nothing.
    orphaned: usize,
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
        self.orders.insert(order.id.clone(), Box::new(order));
    }

    /// Takes over the orders read from the journal, into an empty book:
    /// waiting ones queue in acceptance order, placed ones stay on their
    /// subagents, and of the final ones only the newest `keep_finished` are
    /// remembered (all are counted). Idempotency keys of every order kept are
    /// known again.
    pub fn restore(&mut self, orders: impl IntoIterator<Item = Order>) {
        let (mut done, mut open): (Vec<Order>, Vec<Order>) =
            orders.into_iter().partition(|o| o.phase.is_final());
        let finished_at = |o: &Order| o.outcome.as_ref().map_or(0, |f| f.finished_at_ms);
        done.sort_by(|a, b| finished_at(a).cmp(&finished_at(b)).then(a.id.cmp(&b.id)));
        open.sort_by(|a, b| (a.accepted_at_ms, &a.id).cmp(&(b.accepted_at_ms, &b.id)));
        for order in done.into_iter().chain(open) {
            if self.orders.contains_key(&order.id) {
                continue;
            }
            self.tally(order.phase, 1);
            if order.phase == Phase::Queued {
                self.joined += 1;
                self.queue.push_back(order.id.clone());
            }
            if order.phase.is_final() {
                self.finished.push_back(order.id.clone());
            }
            if let Some(request_id) = &order.request_id {
                self.by_request.insert(request_id.clone(), order.id.clone());
            }
            self.orders.insert(order.id.clone(), Box::new(order));
            self.forget_oldest_finished();
        }
    }

    /// Subagents holding inherited tasks not yet reconciled.
    pub fn inherited_subagents(&self) -> std::collections::BTreeSet<String> {
        let inherited = self.orders.values().filter(|o| o.inherited);
        inherited.filter_map(|o| o.subagent_id.clone()).collect()
    }

    /// Inherited orders whose task is on `subagent_id`, not yet reconciled.
    pub fn inherited_on(&self, subagent_id: &str) -> Vec<&Order> {
        let on = self.orders.values().map(|o| &**o).filter(|o| o.inherited);
        let mut on: Vec<&Order> = on
            .filter(|o| o.subagent_id.as_deref() == Some(subagent_id))
            .collect();
        // by id, so the same inputs always give the same effects
        on.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        on
    }

    /// Forgets an order that never became durable.
    pub fn remove(&mut self, order_id: &str) {
        if let Some(order) = self.orders.remove(order_id) {
            self.counts.accepted -= 1;
            if order.phase == Phase::Orphaned {
                self.orphaned -= 1;
            }
            if let Some(request_id) = order.request_id {
                self.unindex(&request_id, order_id);
            }
        }
    }

    /// Replaces a held order with the end another broker stored for it
    /// (the journal's end is the order's, whatever this broker thought).
    pub fn adopt(&mut self, ended: Order) {
        let Some(held) = self.orders.get_mut(&ended.id) else {
            return;
        };
        if !ended.phase.is_final() {
            return;
        }
        let was = held.phase;
        let now = ended.phase;
        let id = ended.id.clone();
        **held = ended;
        self.tally(was, -1);
        self.tally(now, 1);
        let was_final = was.is_final();
        if !was_final {
            self.finished.push_back(id);
            self.forget_oldest_finished();
        }
    }

    /// Makes a durable order eligible for dispatch.
    pub fn enqueue(&mut self, order_id: &str) {
        self.made_durable(order_id);
        self.joined += 1;
        self.queue.push_back(order_id.to_string());
    }

    /// A new order's record is stored.
    pub fn made_durable(&mut self, order_id: &str) {
        if let Some(order) = self.orders.get_mut(order_id) {
            order.durable = true;
        }
    }

    /// The orders of `job` that have not reached a final state.
    pub fn active_of_job(&self, job: &str) -> Vec<String> {
        let active = self.orders.values();
        // a spread order's members run as part of it, not as runs of their own
        let active =
            active.filter(|o| o.job == job && !o.phase.is_final() && o.member_of.is_none());
        sorted(active.map(|o| o.id.clone()).collect())
    }

    /// Every order held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Order> {
        self.orders.values().map(|o| &**o)
    }

    pub fn get(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id).map(|o| &**o)
    }

    /// The order, of a job or a workflow, submitted with `request_id`.
    pub fn by_request_id(&self, request_id: &str) -> Option<Held<'_>> {
        let id = self.by_request.get(request_id)?;
        match self.orders.get(id) {
            Some(order) => Some(Held::Job(order)),
            None => self.flows.get(id).map(Held::Flow),
        }
    }

    /// An order's record as it stands, of a job or a workflow.
    pub fn info(&self, order_id: &str) -> Option<OrderInfo> {
        match self.orders.get(order_id) {
            Some(order) => Some(order.info()),
            None => self.flows.get(order_id).map(FlowOrder::info),
        }
    }

    /// Whether an order of a job or a workflow is held under this id.
    pub fn holds(&self, order_id: &str) -> bool {
        self.orders.contains_key(order_id) || self.flows.contains_key(order_id)
    }

    /// Holds a workflow order, findable by its request id.
    pub fn insert_flow(&mut self, flow: FlowOrder) {
        if let Some(request_id) = &flow.request_id {
            self.by_request.insert(request_id.clone(), flow.id.clone());
        }
        self.flows.insert(flow.id.clone(), flow);
    }

    /// Forgets a workflow order (not stored, or ended long ago).
    pub fn remove_flow(&mut self, flow_id: &str) {
        let flow = self.flows.remove(flow_id);
        if let Some(request_id) = flow.and_then(|f| f.request_id) {
            self.unindex(&request_id, flow_id);
        }
    }

    pub fn flow(&self, flow_id: &str) -> Option<&FlowOrder> {
        self.flows.get(flow_id)
    }

    pub fn flow_mut(&mut self, flow_id: &str) -> Option<&mut FlowOrder> {
        self.flows.get_mut(flow_id)
    }

    /// Every workflow order held, in no particular order.
    pub fn flows(&self) -> impl Iterator<Item = &FlowOrder> {
        self.flows.values()
    }

    /// Every workflow order's id, sorted (the same inputs give the same
    /// effects).
    pub fn flow_ids(&self) -> Vec<String> {
        sorted(self.flows.keys().cloned().collect())
    }

    /// `baton order list`: held orders, newest first, filtered.
    pub fn list(&self, q: &ListOrders) -> OrderList {
        let limit = q.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX) as usize;
        let keep = |o: &OrderSummary| {
            (q.steps || q.job.is_some() || o.parent.is_none())
                && (q.steps || o.member_of.is_none())
                && q.workflow.as_ref().is_none_or(|w| {
                    o.workflow.as_ref() == Some(w)
                        || o.parent
                            .as_ref()
                            .is_some_and(|p| &p.workflow == w && q.steps)
                })
                && q.job.as_ref().is_none_or(|j| &o.job == j)
                && q.state.is_none_or(|s| o.state == s)
                && q.since_ms.is_none_or(|t| o.accepted_at_ms >= t)
                && q.until_ms.is_none_or(|t| o.accepted_at_ms < t)
        };
        let mut orders: Vec<OrderSummary> = (self.orders.values())
            .map(|o| o.info().summary())
            .chain(self.flows.values().map(|f| f.info().summary()))
            .filter(keep)
            .collect();
        orders.sort_by(|a, b| {
            b.accepted_at_ms
                .cmp(&a.accepted_at_ms)
                .then_with(|| b.order_id.cmp(&a.order_id))
        });
        let truncated = orders.len() > limit;
        orders.truncate(limit);
        OrderList { orders, truncated }
    }

    /// The ids of held orders (of jobs and workflows) that start or end
    /// with `fragment` (`baton watch` prints an id's last 12 characters,
    /// `job list` its first), sorted; at most `most` of them.
    pub fn matching(&self, fragment: &str, most: usize) -> Vec<String> {
        let ids = (self.orders.keys()).chain(self.flows.keys());
        let matches = |id: &&String| id.starts_with(fragment) || id.ends_with(fragment);
        let mut found: Vec<String> = ids.filter(matches).cloned().collect();
        found.sort_unstable();
        found.truncate(most);
        found
    }

    fn unindex(&mut self, request_id: &str, order_id: &str) {
        if self.by_request.get(request_id).map(String::as_str) == Some(order_id) {
            self.by_request.remove(request_id);
        }
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
        self.orders.get(id).map(|o| &**o)
    }

    /// How many times an order joined the queue so far: while it stands,
    /// the queued orders are those queued when it was read, or fewer (an
    /// order being created is not queued yet).
    pub fn joined(&self) -> u64 {
        self.joined
    }

    /// Number of entries in the dispatch queue (some may be stale).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Applies an event to one order, keeping the queue and counts in step.
    pub fn apply(&mut self, order_id: &str, event: OrderEvent) -> Result<Applied, ApplyError> {
        self.change(order_id, |order| order.apply(event))
    }

    /// Places a queued spread order on its members (`Order::spread_over`).
    pub fn spread_over(
        &mut self,
        order_id: &str,
        members: Vec<(String, String)>,
        at_ms: u64,
    ) -> Result<Applied, ApplyError> {
        self.change(order_id, |order| order.spread_over(members, at_ms))
    }

    /// A spread order hears how one of its members' orders stands
    /// (`Order::member_stood`).
    pub fn member_stood(
        &mut self,
        order_id: &str,
        member: &OrderInfo,
        at_ms: u64,
    ) -> Result<Applied, ApplyError> {
        self.change(order_id, |order| Ok(order.member_stood(member, at_ms)))
    }

    /// Changes one order, keeping the queue and counts in step.
    fn change(
        &mut self,
        order_id: &str,
        f: impl FnOnce(&mut Order) -> Result<Applied, ApplyError>,
    ) -> Result<Applied, ApplyError> {
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| ApplyError::UnknownOrder(order_id.to_string()))?;
        let applied = f(order)?;
        if let Applied::Moved { from, to } = applied {
            self.tally(from, -1);
            self.tally(to, 1);
            if to == Phase::Queued {
                // back to the front: it has waited longest
                self.joined += 1;
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
        let on = self
            .orders
            .values()
            .filter(|o| {
                matches!(
                    o.phase,
                    Phase::Dispatching | Phase::Running | Phase::Orphaned
                ) && o.subagent_id.as_deref() == Some(subagent_id)
            })
            .map(|o| o.id.clone());
        sorted(on.collect())
    }

    /// Orphaned orders whose rerun time has come.
    pub fn orphans_due(&self, now_ms: u64) -> Vec<String> {
        if self.orphaned == 0 {
            return Vec::new();
        }
        let due = self
            .orders
            .values()
            .filter(|o| o.phase == Phase::Orphaned && o.rerun_at_ms.is_some_and(|t| t <= now_ms))
            .map(|o| o.id.clone());
        sorted(due.collect())
    }

    /// Queued orders, oldest first (entries that moved on are skipped).
    pub fn queued(&self) -> impl Iterator<Item = &Order> {
        self.queue
            .iter()
            .filter_map(|id| self.orders.get(id).map(|o| &**o))
            .filter(|o| o.phase == Phase::Queued)
    }

    /// Counts an order into (`delta` 1) or out of (-1) `phase`.
    fn tally(&mut self, phase: Phase, delta: i64) {
        count(&mut self.counts, phase, delta);
        if phase == Phase::Orphaned {
            self.orphaned = self.orphaned.saturating_add_signed(delta as isize);
        }
    }

    /// Drops the queue's stale entries (orders placed, cancelled or gone)
    /// as they gather, so a pass over the queue costs about what is
    /// accepted, not what went through: those at its front at once (the
    /// planner takes the oldest first, so most gather there), and every one
    /// once the entries outnumber twice the accepted orders (queued,
    /// dispatching, retrying or being created) plus 64; a compaction drops
    /// at least half the entries, so its cost is amortised.
    pub fn tidy_queue(&mut self) {
        while let Some(id) = self.queue.front() {
            match self.orders.get(id) {
                Some(order) if order.phase == Phase::Queued => break,
                _ => {
                    self.queue.pop_front();
                }
            }
        }
        let accepted = usize::try_from(self.counts.accepted).unwrap_or(usize::MAX);
        if self.queue.len() > accepted.saturating_mul(2).saturating_add(64) {
            self.compact_queue();
        }
    }

    /// Drops queue entries of orders that are no longer queued.
    fn compact_queue(&mut self) {
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
                        self.unindex(&request_id, &id);
                    }
                }
            }
        }
    }
}

fn count(counts: &mut OrderCounts, phase: Phase, delta: i64) {
    let slot = match phase.wire() {
        OrderState::Accepted => &mut counts.accepted,
        OrderState::Running
        | OrderState::Suspending
        | OrderState::Suspended
        | OrderState::Cancelling => &mut counts.running,
        OrderState::Succeeded => &mut counts.succeeded,
        OrderState::Failed => &mut counts.failed,
        OrderState::Cancelled => &mut counts.cancelled,
    };
    *slot = slot.saturating_add_signed(delta);
}
