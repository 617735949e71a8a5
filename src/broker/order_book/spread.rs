//! A spread order in the book: placed on its members
//! ([`Order::spread_over`]), following their orders as the journal holds
//! them ([`Order::member_stood`]), and ending by its policy
//! (`broker::spread::verdict`) once they all ended.

use super::{Applied, ApplyError, Order, Outcome, Phase};
use crate::broker::spread::verdict;
use crate::protocol::{OrderInfo, OrderState, SpreadMember};

impl Order {
    /// Places a queued spread order on `members` (subagent id, the id of
    /// its order there) at `at_ms`; it never runs a task itself.
    pub fn spread_over(
        &mut self,
        members: Vec<(String, String)>,
        at_ms: u64,
    ) -> Result<Applied, ApplyError> {
        if self.phase != Phase::Queued || self.spread.is_none() || members.is_empty() {
            return Err(ApplyError::NotAllowed {
                order: self.id.clone(),
                phase: self.phase,
                event: "spread",
            });
        }
        self.members = members
            .into_iter()
            .map(|(subagent_id, order_id)| SpreadMember {
                subagent_id,
                order_id,
                state: OrderState::Accepted,
                exit_code: None,
                reason: None,
                started_at_ms: None,
                finished_at_ms: None,
                attempt: 0,
            })
            .collect();
        self.started_at_ms = Some(at_ms);
        self.phase = Phase::Spread;
        Ok(Applied::Moved {
            from: Phase::Queued,
            to: Phase::Spread,
        })
    }

    /// A member's order stands as `info` (its stored state): the member's
    /// line follows, and once every member's order ended the spread order
    /// ends by its policy. `Stale` when nothing changed.
    pub fn member_stood(&mut self, info: &OrderInfo, at_ms: u64) -> Applied {
        let (Phase::Spread, Some(policy)) = (self.phase, self.spread) else {
            return Applied::Stale;
        };
        let Some(member) = (self.members.iter_mut()).find(|m| m.order_id == info.order_id) else {
            return Applied::Stale;
        };
        let line = SpreadMember {
            subagent_id: member.subagent_id.clone(),
            order_id: info.order_id.clone(),
            state: info.state,
            exit_code: info.exit_code,
            reason: info.reason.clone().filter(|_| info.state.is_final()),
            started_at_ms: info.started_at_ms,
            finished_at_ms: info.finished_at_ms,
            attempt: info.attempt,
        };
        if *member == line || member.state.is_final() {
            return Applied::Stale;
        }
        *member = line;
        let Some((state, reason)) = verdict(&policy, &self.members, self.cancel_requested) else {
            return Applied::Stale;
        };
        self.phase = match state {
            OrderState::Succeeded => Phase::Succeeded,
            OrderState::Cancelled => Phase::Cancelled,
            _ => Phase::Failed,
        };
        self.outcome = Some(Outcome {
            error: reason,
            started_at_ms: self.started_at_ms,
            finished_at_ms: at_ms,
            ..Outcome::default()
        });
        Applied::Moved {
            from: Phase::Spread,
            to: self.phase,
        }
    }
}
