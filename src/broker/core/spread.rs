//! Spread orders on the core's side (`broker::spread` is the pure part):
//! placing one on its members, creating each member's order, following
//! them to the spread order's end, cancels, members that do not come back,
//! and picking them up after a takeover.
//!
//! Crash safety: the spread order is stored with its members before any
//! member's order is created ([`Core::spread_stored`] creates them once
//! that write landed), so a broker taking over finds the same members and
//! never places the order twice; a member's order has an id derived from
//! the spread order and the member (`member_order_id`), created with KV
//! `create`, so creating it again finds the one stored. The spread order
//! follows its members' orders only as the journal holds them (never
//! ahead of them), like a workflow order its step orders.
//!
//! A member's order is bound to its member (`pin`). While that member is
//! away (lost, leaving or left, or unknown) it waits in the queue, at most
//! the job's `spread.rejoin` from when this broker saw it away; then it
//! fails "member ... did not come back" (counted from the takeover for a
//! broker that took over).

use std::time::Duration;

use tracing::{debug, info, warn};

use super::super::order_book::{Applied, Order, OrderEvent, Phase};
use super::super::spread::{member_order_id, member_request_id};
use super::{submit::Pending, Core, Created, Event, Then, Timer};
use crate::protocol::*;

/// Before creating again a member's order whose record was not stored.
const MEMBER_RETRY: Duration = Duration::from_secs(1);

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Places a queued spread order on `members` (subagent ids): stored
    /// first; their orders are created once it is (see the module's docs).
    pub(super) fn spread_out(&mut self, order_id: &str, members: Vec<String>) {
        let prefix = self.config.prefix.clone();
        let pairs: Vec<(String, String)> = members
            .into_iter()
            .map(|s| {
                let id = member_order_id(&prefix, order_id, &s);
                (s, id)
            })
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
        info!(order = %order_id, members = %names.join(","), "spread order placed on its members");
        let what = format!("placed on its members {}", names.join(", "));
        match self.book.spread_over(order_id, pairs, self.now.ms) {
            Ok(_) => {
                self.placed(order_id);
                if let Some(info) = self.info_of(order_id) {
                    self.publish(Event::spread_news(&info, what, None, self.now.ms));
                }
                self.store(order_id, Then::Nothing);
            }
            Err(e) => warn!(order = %order_id, error = %e, "spread refused by the order book"),
        }
    }

    /// An order's state was stored as `info`: a spread order's members get
    /// their orders; a member's order is followed by its spread order.
    pub(super) fn spread_stored(&mut self, info: &OrderInfo) {
        if info.spread.is_some() && !info.members.is_empty() && !info.state.is_final() {
            self.place_members(&info.order_id);
        }
        let Some(spread_id) = info.member_of.clone() else {
            return;
        };
        let was_final = (self.book.get(&spread_id))
            .and_then(|s| s.members.iter().find(|m| m.order_id == info.order_id))
            .is_some_and(|m| m.state.is_final());
        let applied = self.book.member_stood(&spread_id, info, self.now.ms);
        if info.state.is_final() && !was_final && matches!(applied, Ok(Applied::Moved { .. })) {
            if let Some(spread) = self.info_of(&spread_id) {
                let on = info.pin.as_deref().unwrap_or("?");
                let mut what = format!("member {on} {}", info.state.as_str());
                let why = match (&info.reason, info.exit_code, info.signal) {
                    (Some(reason), _, _) => Some(reason.clone()),
                    (None, Some(code), _) => Some(format!("exit {code}")),
                    (None, None, Some(signal)) => Some(format!("signal {signal}")),
                    _ => None,
                };
                if let Some(why) = why.filter(|_| info.state != OrderState::Succeeded) {
                    what.push_str(&format!(": {why}"));
                }
                let event =
                    Event::spread_news(&spread, what, Some(info.order_id.clone()), self.now.ms);
                self.publish(event);
            }
        }
        match applied {
            Ok(Applied::Moved { to, .. }) if to.is_final() => {
                info!(order = %spread_id, state = to.wire().as_str(), "spread order ended");
                self.finish(&spread_id, Then::Nothing);
                self.dispatch();
            }
            Ok(Applied::Moved { .. }) => self.store(&spread_id, Then::Nothing),
            Ok(Applied::Stale) => {}
            Err(e) => {
                debug!(order = %spread_id, error = %e, "member's news for a spread order not held")
            }
        }
    }

    /// Creates the order of each member of a spread order that has none
    /// held (and has not ended).
    fn place_members(&mut self, spread_id: &str) {
        let Some(spread) = self
            .book
            .get(spread_id)
            .filter(|o| o.phase == Phase::Spread)
        else {
            return;
        };
        let missing: Vec<Order> = (spread.members.iter())
            .filter(|m| !m.state.is_final() && !self.book.holds(&m.order_id))
            .map(|m| {
                let mut order = Order::new(
                    m.order_id.clone(),
                    spread.job.clone(),
                    spread.params.clone(),
                    Some(member_request_id(spread_id, &m.subagent_id)),
                    self.now.ms,
                );
                order.restartable = spread.restartable;
                order.retry = spread.retry;
                order.slot_ms = spread.slot_ms;
                order.submitted_by.clone_from(&spread.submitted_by);
                order.member_of = Some(spread_id.to_string());
                order.pin = Some(m.subagent_id.clone());
                order
            })
            .collect();
        for order in missing {
            debug!(order = %spread_id, member = ?order.pin, member_order = %order.id, "creating a member's order");
            let pending = Pending::Member(spread_id.to_string());
            self.create(order, pending);
        }
    }

    /// A member's order was created, found, or not stored.
    pub(super) fn member_created(&mut self, spread_id: String, info: OrderInfo, created: Created) {
        match created {
            Created::At(revision) => {
                self.set_revision(&info.order_id, revision);
                self.book.enqueue(&info.order_id);
                self.publish(Event::accepted(&info));
                self.cancel_member_if_asked(&spread_id, &info.order_id);
                self.dispatch();
            }
            Created::Exists(Some((stored, revision)))
                if stored.member_of.as_ref() == Some(&spread_id) =>
            {
                // stored before (by us, or a broker before us), not held
                self.book.remove(&info.order_id);
                self.book.restore([self.restored(&stored)]);
                self.retry_stored(&stored);
                self.set_revision(&stored.order_id, revision);
                self.spread_stored(&stored);
                self.cancel_member_if_asked(&spread_id, &stored.order_id);
                self.dispatch();
            }
            Created::Exists(other) => {
                self.book.remove(&info.order_id);
                if let Some((stored, _)) = other {
                    // not expected: member order ids have their own namespace
                    warn!(order = %stored.order_id, "a member's order id holds another order");
                    return;
                }
                self.later(
                    MEMBER_RETRY,
                    Timer::PlaceMembers {
                        order_id: spread_id,
                    },
                );
            }
            Created::Failed(e) => {
                warn!(member_order = %info.order_id, error = %e, "member's order not stored; creating it again");
                self.book.remove(&info.order_id);
                self.later(
                    MEMBER_RETRY,
                    Timer::PlaceMembers {
                        order_id: spread_id,
                    },
                );
            }
        }
    }

    /// [`Timer::PlaceMembers`] came due.
    pub(super) fn place_members_again(&mut self, spread_id: &str) {
        self.place_members(spread_id);
    }

    /// Cancels a member's order whose spread order was cancelled.
    fn cancel_member_if_asked(&mut self, spread_id: &str, member_order: &str) {
        let asked = self
            .book
            .get(spread_id)
            .is_some_and(|s| s.cancel_requested && s.phase == Phase::Spread);
        if asked {
            let reason = "cancelled: its spread order was cancelled";
            if let Err(why) = self.cancel(member_order, true, reason) {
                debug!(member_order, %why, "member's cancel not needed");
            }
        }
    }

    /// The members' orders of a spread order that have not ended, held here.
    pub(super) fn unfinished_members(&self, spread_id: &str) -> Vec<String> {
        let Some(spread) = self.book.get(spread_id) else {
            return Vec::new();
        };
        (spread.members.iter())
            .filter(|m| !m.state.is_final())
            .map(|m| m.order_id.clone())
            .collect()
    }

    /// Cancels the members' orders of a cancelled spread order (`kill`:
    /// their running tasks are killed now).
    pub(super) fn cancel_members(&mut self, members: Vec<String>, kill: bool) {
        for member in members {
            let reason = "cancelled: its spread order was cancelled";
            if let Err(why) = self.cancel(&member, kill, reason) {
                debug!(member_order = %member, %why, "member's cancel not needed");
            }
        }
    }

    /// Why a member's order waits, if its member cannot take it now.
    pub(super) fn member_away(&self, pin: &str) -> Option<String> {
        match self.registry.get(pin).map(|s| s.state()) {
            None => Some(format!(
                "waiting for its member {pin}, which is not connected"
            )),
            Some(SubagentState::Available) => None,
            Some(state) => Some(format!("waiting for its member {pin} ({})", state.as_str())),
        }
    }

    /// Members' orders whose member stayed away past its spread's
    /// `rejoin` fail (checked with the liveness tick).
    pub(super) fn members_gone(&mut self) {
        let now = self.now.ms;
        let mut due = Vec::new();
        let mut away = Vec::new();
        for order in self.book.queued() {
            let Some(pin) = order.pin.as_deref() else {
                continue;
            };
            let gone = match self.registry.get(pin).map(|s| s.state()) {
                None => true,
                Some(s) => matches!(s, SubagentState::Lost | SubagentState::Draining),
            };
            if !gone {
                continue;
            }
            let since = self.away_since.get(&order.id).copied().unwrap_or(now);
            away.push((order.id.clone(), since));
            let rejoin = (order.member_of.as_ref())
                .and_then(|s| self.book.get(s))
                .and_then(|s| s.spread)
                .map_or(0, |p| p.rejoin_ms);
            if now.saturating_sub(since) >= rejoin {
                let secs = Duration::from_millis(rejoin);
                let reason = format!(
                    "member lost: {pin} did not come back within {} (spread.rejoin)",
                    humantime::format_duration(secs)
                );
                due.push((order.id.clone(), reason));
            }
        }
        self.away_since = away.into_iter().collect();
        for (order_id, reason) in due {
            warn!(order = %order_id, %reason, "member's order fails");
            self.away_since.remove(&order_id);
            self.apply_and_act(&order_id, OrderEvent::Refused { reason, at_ms: now });
        }
    }

    /// After a takeover: each spread order still running gets the orders
    /// of its members it has none held for, and follows those it holds.
    pub(super) fn resume_spreads(&mut self) {
        let mut spreads: Vec<String> = (self.book.iter())
            .filter(|o| o.phase == Phase::Spread)
            .map(|o| o.id.clone())
            .collect();
        spreads.sort();
        for spread_id in spreads {
            let held: Vec<OrderInfo> = (self.book.get(&spread_id).into_iter())
                .flat_map(|s| s.members.iter())
                .filter_map(|m| self.book.get(&m.order_id).filter(|o| o.durable))
                .map(Order::info)
                .collect();
            for member in held {
                self.spread_stored(&member);
            }
            self.place_members(&spread_id);
        }
    }
}
