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
    /// ends by its policy. `Moved` to `Spread` when only the member's line
    /// changed; `Stale` when nothing did.
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
            // its line changed: stored, so `order show` and a broker
            // taking over see it
            return Applied::Moved {
                from: Phase::Spread,
                to: Phase::Spread,
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SpreadPolicy;

    fn member(id: &str, state: OrderState) -> OrderInfo {
        OrderInfo::new(id.into(), "j".into(), state, 0)
    }

    #[test]
    fn a_spread_order_follows_its_members_and_ends_by_its_policy() {
        let mut o = Order::new("s".into(), "j".into(), Default::default(), None, 0);
        let members = vec![
            ("a".to_string(), "ma".to_string()),
            ("b".into(), "mb".into()),
        ];
        assert!(
            o.spread_over(members.clone(), 5).is_err(),
            "not a spread job"
        );
        o.spread = Some(SpreadPolicy {
            count: None,
            min_succeeded: None,
            rejoin_ms: 0,
        });
        assert!(o.spread_over(vec![], 5).is_err(), "no member");
        o.spread_over(members, 5).unwrap();
        assert_eq!((o.phase, o.started_at_ms), (Phase::Spread, Some(5)));
        let spread = Applied::Moved {
            from: Phase::Spread,
            to: Phase::Spread,
        };
        assert_eq!(
            o.member_stood(&member("ma", OrderState::Running), 6),
            spread
        );
        assert_eq!(
            o.member_stood(&member("ma", OrderState::Running), 6),
            Applied::Stale
        );
        assert_eq!(
            o.member_stood(&member("other", OrderState::Failed), 6),
            Applied::Stale
        );
        assert_eq!(
            o.member_stood(&member("ma", OrderState::Succeeded), 7),
            spread
        );
        assert_eq!(
            o.member_stood(&member("ma", OrderState::Failed), 7),
            Applied::Stale,
            "an end never changes"
        );
        let mut failed = member("mb", OrderState::Failed);
        failed.reason = Some("member lost: b did not come back within 1m".into());
        let ended = o.member_stood(&failed, 9);
        assert_eq!(
            ended,
            Applied::Moved {
                from: Phase::Spread,
                to: Phase::Failed
            }
        );
        let reason = o.info().reason.unwrap();
        assert!(
            reason.contains("1 of 2 members succeeded") && reason.contains("b: member lost"),
            "{reason}"
        );
        assert_eq!(o.info().finished_at_ms, Some(9));
    }
}
