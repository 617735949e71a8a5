//! Orders waiting for a subagent say why: after each dispatch pass, an
//! order left in the queue that nothing can place ([`plan::why_waiting`]:
//! its cluster is not deployed, no subagent matches it, no member is
//! available: disabled, draining or out of sight) gets one `changed` event
//! with the reason, and another only when the reason changes. A workflow
//! step's order is told on its workflow order.
//!
//! An order that waits only for room (a member is available, and full)
//! gets no event: that is queueing under load, where an event per order
//! would cost most when the broker is busiest; `order show` and `submit
//! --wait` (which asks every two seconds) still say it.
//!
//! What was told is held per order until it is placed (an order that waits
//! again after a failed dispatch is told again) or leaves the queue; a
//! broker taking over has told nothing yet, and tells once more. Orders
//! placed at once cost nothing here: with nothing queued and nothing told,
//! the pass ends at its first check.

use std::collections::HashMap;

use super::super::order_book::Phase;
use super::events::Waiting;
use super::plan::{self, Deployed};
use super::{Core, Event};

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Tells of each order left waiting why, once per reason (see the
    /// module's docs).
    pub(super) fn tell_waiting(&mut self) {
        if self.told_waiting.is_empty() && self.book.queued().next().is_none() {
            return;
        }
        let deployed = Deployed {
            jobs: &self.jobs,
            clusters: &self.clusters,
        };
        // one reason per job and pass: the registry is the same for all
        let mut reasons: HashMap<&str, Option<plan::Wait>, foldhash::fast::RandomState> =
            HashMap::default();
        let mut news: Vec<Event> = Vec::new();
        let mut told: Vec<(String, String)> = Vec::new();
        let mut queued = 0;
        for order in self.book.queued() {
            queued += 1;
            if let Some(pin) = &order.pin {
                let Some(reason) = self.member_away(pin) else {
                    continue;
                };
                if self.told_waiting.get(&order.id) != Some(&reason) {
                    let waiting = Waiting {
                        order_id: &order.id,
                        job: &order.job,
                        step: None,
                        reason: &reason,
                    };
                    news.push(Event::waiting(&waiting, self.now.ms));
                    told.push((order.id.clone(), reason));
                }
                continue;
            }
            let reason = reasons
                .entry(order.job.as_str())
                .or_insert_with(|| plan::waiting(&order.job, &deployed, &self.registry));
            let Some(plan::Wait::Stuck(reason)) = reason else {
                continue;
            };
            let reason = reason.as_str();
            if self.told_waiting.get(&order.id).map(String::as_str) == Some(reason) {
                continue;
            }
            let step = order.parent.as_ref().map(|p| {
                let state = self.book.flow(&p.order_id).map(|f| f.state().wire());
                (p, state.unwrap_or(crate::protocol::OrderState::Running))
            });
            let waiting = Waiting {
                order_id: &order.id,
                job: &order.job,
                step,
                reason,
            };
            news.push(Event::waiting(&waiting, self.now.ms));
            told.push((order.id.clone(), reason.to_string()));
        }
        self.told_waiting.extend(told);
        if self.told_waiting.len() > queued {
            // some left the queue otherwise than by being placed
            let book = &self.book;
            self.told_waiting
                .retain(|id, _| book.get(id).is_some_and(|o| o.phase == Phase::Queued));
        }
        for event in news {
            self.publish(event);
        }
    }

    /// An order leaves the queue for a subagent: it waits no more.
    pub(super) fn placed(&mut self, order_id: &str) {
        if !self.told_waiting.is_empty() {
            self.told_waiting.remove(order_id);
        }
    }
}
