//! Spread orders, pure: which members an order of a spread job runs on
//! ([`choose_members`]), the id of each member's order ([`member_order_id`]),
//! and how the members' ends decide the spread order's ([`verdict`]).
//!
//! A spread order is placed once: when its turn comes and at least one
//! member of its job's cluster is up, it takes every member that is up
//! (or `count` of them, in the order the cluster's mode prefers) and is
//! never placed again. Each member gets its own order, bound to that
//! subagent (`pin`): it waits for that member's room, runs again there
//! after a loss (restartable jobs, within `rejoin`), and never moves to
//! another member. Members that join later are not added; a member that
//! leaves or is lost fails its task unless it comes back within `rejoin`.

use std::cmp::Ordering;

use super::placement::Member;
use super::registry::Subagent;
use crate::protocol::{OrderState, SchedulingMode, SpreadMember, SpreadPolicy};

/// The request id of the member order of `spread_order` on `subagent_id`.
pub fn member_request_id(spread_order: &str, subagent_id: &str) -> String {
    format!("{spread_order}/on/{subagent_id}")
}

/// The id of the order running `spread_order`'s task on `subagent_id`; in
/// a namespace of its own (like step orders), so no client's submit can
/// take it.
pub fn member_order_id(prefix: &str, spread_order: &str, subagent_id: &str) -> String {
    let name = format!("{prefix}/{}", member_request_id(spread_order, subagent_id));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// The members a spread order runs on: those up now (available, not
/// suspect, disabled, draining or lost), room or not, all of them or the
/// first `count` in the order the mode prefers: fixed-priority by priority
/// (then id), round-robin from the member after `last`, least-loaded by
/// running tasks for capacity (then CPU, then id). Empty: it waits.
pub fn choose_members<'a>(
    mode: SchedulingMode,
    members: &[Member<'a>],
    count: Option<u32>,
    last: Option<&str>,
) -> Vec<&'a Subagent> {
    let mut up: Vec<&Member<'a>> = members.iter().filter(|m| m.subagent.is_up()).collect();
    up.sort_by(|a, b| a.subagent.id.cmp(&b.subagent.id));
    match mode {
        SchedulingMode::FixedPriority => up.sort_by_key(|m| std::cmp::Reverse(m.priority)),
        SchedulingMode::RoundRobin => {
            if let Some(last) = last {
                let first = up
                    .iter()
                    .position(|m| m.subagent.id.as_str().cmp(last) == Ordering::Greater)
                    .unwrap_or(0);
                up.rotate_left(first);
            }
        }
        SchedulingMode::LeastLoaded => {
            let load = |m: &Member| {
                (m.subagent.tasks.len() as f64 + f64::from(m.planned))
                    / f64::from(m.subagent.capacity.max(1))
            };
            let cpu = |m: &Member| m.subagent.load.map_or(0.0, |l| l.cpu_percent);
            up.sort_by(|a, b| load(a).total_cmp(&load(b)).then(cpu(a).total_cmp(&cpu(b))));
        }
    }
    let n = count.map_or(up.len(), |c| (c as usize).min(up.len()));
    up.into_iter().take(n).map(|m| m.subagent).collect()
}

/// How a spread order ends once every member's order has ended: `None`
/// while one still runs. Cancelled when a cancel was asked; else succeeded
/// when enough members succeeded (`min_succeeded`, or all), else failed
/// with a reason naming the members that did not succeed.
pub fn verdict(
    policy: &SpreadPolicy,
    members: &[SpreadMember],
    cancel_requested: bool,
) -> Option<(OrderState, Option<String>)> {
    if members.iter().any(|m| !m.state.is_final()) {
        return None;
    }
    if cancel_requested {
        return Some((OrderState::Cancelled, Some("cancelled".into())));
    }
    let succeeded = (members.iter())
        .filter(|m| m.state == OrderState::Succeeded)
        .count();
    let needed = policy
        .min_succeeded
        .map_or(members.len(), |k| k as usize)
        .max(1);
    if succeeded >= needed {
        return Some((OrderState::Succeeded, None));
    }
    let failed: Vec<String> = (members.iter())
        .filter(|m| m.state != OrderState::Succeeded)
        .map(|m| {
            let how = match (&m.reason, m.exit_code) {
                (Some(r), _) => r.clone(),
                (None, Some(code)) => format!("exit {code}"),
                (None, None) => m.state.as_str().to_string(),
            };
            format!("{}: {how}", m.subagent_id)
        })
        .collect();
    let of = members.len();
    let want = match policy.min_succeeded {
        None => "all".to_string(),
        Some(k) => format!("at least {k}"),
    };
    let mut reason = format!("{succeeded} of {of} members succeeded ({want} needed)");
    if !failed.is_empty() {
        reason.push_str(&format!("; {}", failed.join("; ")));
    }
    Some((OrderState::Failed, Some(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::placement::{self, fixtures};

    fn member(id: &str, state: OrderState) -> SpreadMember {
        SpreadMember {
            subagent_id: id.into(),
            order_id: format!("o-{id}"),
            state,
            exit_code: (state == OrderState::Failed).then_some(3),
            reason: None,
            started_at_ms: None,
            finished_at_ms: None,
            attempt: 1,
        }
    }

    fn policy(min: Option<u32>) -> SpreadPolicy {
        SpreadPolicy {
            count: None,
            min_succeeded: min,
            rejoin_ms: 0,
        }
    }

    #[test]
    fn the_verdict_waits_for_every_member_then_counts_successes() {
        use OrderState::*;
        let running = [member("a", Succeeded), member("b", Running)];
        assert_eq!(verdict(&policy(None), &running, false), None);
        let all_ok = [member("a", Succeeded), member("b", Succeeded)];
        assert_eq!(
            verdict(&policy(None), &all_ok, false),
            Some((Succeeded, None))
        );
        let one_failed = [member("a", Succeeded), member("b", Failed)];
        let (state, reason) = verdict(&policy(None), &one_failed, false).unwrap();
        assert_eq!(state, Failed);
        let reason = reason.unwrap();
        assert!(
            reason.contains("1 of 2") && reason.contains("b: exit 3"),
            "{reason}"
        );
        assert_eq!(
            verdict(&policy(Some(1)), &one_failed, false),
            Some((Succeeded, None))
        );
        let cancelled = verdict(&policy(Some(1)), &one_failed, true).unwrap();
        assert_eq!(cancelled.0, Cancelled);
        assert_eq!(
            verdict(&policy(None), &[], false).unwrap().0,
            Failed,
            "no member"
        );
    }

    #[test]
    fn members_are_those_up_in_the_order_the_mode_prefers() {
        let registry =
            fixtures::registry(&[("s1", 2, 2, "x"), ("s2", 2, 0, "x"), ("s3", 2, 1, "x")]);
        let members = placement::members(None, registry.iter());
        let ids = |v: Vec<&Subagent>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        let all = choose_members(SchedulingMode::RoundRobin, &members, None, None);
        assert_eq!(
            ids(all),
            ["s1", "s2", "s3"],
            "full members count: room is waited for"
        );
        let rr = choose_members(SchedulingMode::RoundRobin, &members, Some(2), Some("s2"));
        assert_eq!(ids(rr), ["s3", "s1"]);
        let ll = choose_members(SchedulingMode::LeastLoaded, &members, Some(2), None);
        assert_eq!(ids(ll), ["s2", "s3"]);
        let over = choose_members(SchedulingMode::FixedPriority, &members, Some(9), None);
        assert_eq!(over.len(), 3, "count is at most");
    }

    #[test]
    fn member_order_ids_are_stable_and_distinct() {
        let a = member_order_id("baton", "o1", "s1");
        assert_eq!(a, member_order_id("baton", "o1", "s1"));
        assert_ne!(a, member_order_id("baton", "o1", "s2"));
        assert_ne!(a, member_order_id("baton", "o2", "s1"));
    }
}
