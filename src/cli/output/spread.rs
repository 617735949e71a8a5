//! A spread order for people: the `spread` line and `members:` table of
//! `order show`, and the line of a member's order naming its spread order.

use std::fmt::Write as _;

use super::{clock_s, table};
use crate::protocol::*;

/// The lines `order show` prints for a spread order or a member's order.
pub fn render(out: &mut String, o: &OrderInfo) {
    if let (Some(of), Some(pin)) = (&o.member_of, &o.pin) {
        let _ = writeln!(out, "member    on {pin} (only there) of spread order {of}");
    }
    let Some(policy) = &o.spread else {
        return;
    };
    let _ = writeln!(out, "spread    {}", words(policy));
    if o.members.is_empty() {
        if !o.state.is_final() {
            let _ = writeln!(
                out,
                "members   none yet: placed once a member of its cluster is up"
            );
        }
        return;
    }
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_string(), clock_s);
    let rows: Vec<Vec<String>> = (o.members.iter())
        .map(|m| {
            let outcome = match (&m.reason, m.exit_code) {
                (Some(r), _) => r.clone(),
                (None, Some(code)) => format!("exit {code}"),
                (None, None) => "-".to_string(),
            };
            vec![
                m.subagent_id.clone(),
                m.state.as_str().to_string(),
                m.attempt.to_string(),
                time(m.started_at_ms),
                time(m.finished_at_ms),
                m.order_id.clone(),
                outcome,
            ]
        })
        .collect();
    let done = o.members.iter().filter(|m| m.state.is_final()).count();
    let _ = writeln!(out, "members ({done} of {} ended):", o.members.len());
    table(
        out,
        "  ",
        &[
            "MEMBER", "STATE", "TASKS", "STARTED", "FINISHED", "ORDER", "OUTCOME",
        ],
        &rows,
    );
}

/// "every member that is up; all must succeed; a lost member has 1m to come back".
pub fn words(p: &SpreadPolicy) -> String {
    let on = match p.count {
        None => "every member that is up".to_string(),
        Some(n) => format!("up to {n} members"),
    };
    let succeed = match p.min_succeeded {
        None => "all must succeed".to_string(),
        Some(1) => "one success will do".to_string(),
        Some(k) => format!("at least {k} must succeed"),
    };
    let rejoin = std::time::Duration::from_millis(p.rejoin_ms);
    format!(
        "{on}; {succeed}; a lost member has {} to come back",
        humantime::format_duration(rejoin)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_order_shows_its_policy_and_members() {
        let mut o = OrderInfo::new("o1".into(), "backup".into(), OrderState::Failed, 0);
        o.spread = Some(SpreadPolicy {
            count: None,
            min_succeeded: None,
            rejoin_ms: 60_000,
        });
        o.members = vec![
            SpreadMember {
                subagent_id: "sub-1".into(),
                order_id: "m1".into(),
                state: OrderState::Succeeded,
                exit_code: Some(0),
                reason: None,
                started_at_ms: Some(1_000),
                finished_at_ms: Some(2_000),
                attempt: 1,
            },
            SpreadMember {
                subagent_id: "sub-2".into(),
                order_id: "m2".into(),
                state: OrderState::Failed,
                exit_code: None,
                reason: Some("member lost: sub-2 did not come back within 1m".into()),
                started_at_ms: Some(1_000),
                finished_at_ms: None,
                attempt: 1,
            },
        ];
        let mut out = String::new();
        render(&mut out, &o);
        assert!(out.contains("spread    every member that is up; all must succeed; a lost member has 1m to come back"), "{out}");
        assert!(out.contains("members (2 of 2 ended):"), "{out}");
        assert!(
            out.contains("sub-2") && out.contains("did not come back"),
            "{out}"
        );
        let mut member = OrderInfo::new("m1".into(), "backup".into(), OrderState::Running, 0);
        member.member_of = Some("o1".into());
        member.pin = Some("sub-1".into());
        let mut out = String::new();
        render(&mut out, &member);
        assert_eq!(out, "member    on sub-1 (only there) of spread order o1\n");
    }
}
