//! Which subagent runs the next task. Pure.
//!
//! Round-robin over the subagents that take tasks (available, not suspect,
//! with free capacity), in id order, starting after the last one chosen.

use super::registry::Subagent;

/// The next subagent after `last` (by id, wrapping) that takes tasks.
pub fn round_robin<'a>(
    subagents: impl Iterator<Item = &'a Subagent> + Clone,
    last: Option<&str>,
) -> Option<&'a Subagent> {
    let mut eligible = subagents.filter(|s| s.takes_tasks());
    let after = last.and_then(|last| eligible.clone().find(|s| s.id.as_str() > last));
    after.or_else(|| eligible.next())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Instant;

    use super::*;
    use crate::protocol::SubagentState;

    fn sub(id: &str, capacity: u32, busy: usize) -> Subagent {
        Subagent {
            id: id.into(),
            instance_id: "i".into(),
            labels: BTreeMap::new(),
            capacity,
            state: SubagentState::Available,
            last_seen: Instant::now(),
            tasks: (0..busy).map(|i| format!("t{i}")).collect::<BTreeSet<_>>(),
            tasks_finished: 0,
            suspect: false,
        }
    }

    #[test]
    fn visits_every_member_in_turn() {
        let subs = [sub("a", 1, 0), sub("b", 1, 0), sub("c", 1, 0)];
        let mut last: Option<String> = None;
        let mut picks = Vec::new();
        for _ in 0..6 {
            let pick = round_robin(subs.iter(), last.as_deref()).unwrap();
            picks.push(pick.id.clone());
            last = Some(pick.id.clone());
        }
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn skips_full_lost_and_suspect_members() {
        let mut subs = [
            sub("a", 1, 1),
            sub("b", 2, 0),
            sub("c", 1, 0),
            sub("d", 1, 0),
        ];
        subs[2].state = SubagentState::Lost;
        subs[3].suspect = true;
        assert_eq!(round_robin(subs.iter(), None).unwrap().id, "b");
        assert_eq!(round_robin(subs.iter(), Some("b")).unwrap().id, "b");
        assert_eq!(round_robin(subs.iter(), Some("zzz")).unwrap().id, "b");
        subs[1].tasks.insert("x".into());
        subs[1].tasks.insert("y".into());
        assert!(round_robin(subs.iter(), None).is_none());
    }

    #[test]
    fn every_eligible_member_is_reached_within_one_round() {
        // for any mix of eligible members and any starting point, n picks cover all
        for mask in 1u32..64 {
            let subs: Vec<_> = (0..6)
                .map(|i| {
                    let mut s = sub(&format!("s{i}"), 1, 0);
                    s.suspect = mask & (1 << i) == 0;
                    s
                })
                .collect();
            let eligible = mask.count_ones() as usize;
            for start in 0..6 {
                let mut last = Some(format!("s{start}"));
                let mut seen = BTreeSet::new();
                for _ in 0..eligible {
                    let pick = round_robin(subs.iter(), last.as_deref()).unwrap();
                    seen.insert(pick.id.clone());
                    last = Some(pick.id.clone());
                }
                assert_eq!(seen.len(), eligible, "mask {mask:b} start {start}");
            }
        }
    }
}
