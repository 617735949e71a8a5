//! What a workflow order tells the world: `changed` events for each step
//! that moved and for the order, `finished` when it ends.

use super::super::{Core, Event};
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A workflow order ended: its `finished` waits for the end to be
    /// stored; the oldest ended ones beyond `broker.keep_finished` are
    /// forgotten (they stay in the journal).
    pub(super) fn flow_finished(&mut self, flow_id: &str) {
        if let Some(info) = self.book.info(flow_id) {
            // published once the order's final state is stored (the
            // journal's `written`), as for any order
            let event = Event::finished(&info, self.now.ms);
            self.unannounced.insert(info.order_id, event);
        }
        self.forget_oldest_ended();
    }

    /// Forgets the oldest workflow orders that ended for good (succeeded,
    /// cancelled, or failed and expired) beyond `broker.keep_finished`,
    /// but none whose end is being stored.
    pub(super) fn forget_oldest_ended(&mut self) {
        let keep = self.config.broker.keep_finished;
        let ended = self.book.flows().filter(|f| f.is_ended()).count();
        for _ in keep..ended {
            let oldest = (self.book.flows())
                .filter(|f| f.is_ended())
                // not while its end is being stored
                .filter(|f| {
                    !self.writing.contains_key(&f.id) && !self.unannounced.contains_key(&f.id)
                })
                .min_by(|a, b| (a.ended_at_ms(), &a.id).cmp(&(b.ended_at_ms(), &b.id)))
                .map(|f| f.id.clone());
            match oldest {
                Some(oldest) => self.book.remove_flow(&oldest),
                None => break,
            }
        }
    }

    /// Publishes a `changed` event for each step that moved and for the
    /// order's own state.
    pub(super) fn announce_changes(&mut self, before: &OrderInfo, after: &OrderInfo) {
        let step_order_id = |step: &str, attempt: u32| {
            let id = crate::workflow::step_order_id;
            id(&self.config.prefix, &after.order_id, step, attempt)
        };
        let events = Event::changed(before, after, step_order_id, self.now.ms);
        for event in events {
            self.publish(event);
        }
    }
}
