//! Which subagent runs the next task. Pure.
//!
//! A job names a subagent cluster (or none: every subagent, round-robin).
//! [`members`] resolves the cluster against the registry (members by id or
//! by label selector, each with a priority); [`choose`] applies
//! the cluster's scheduling mode:
//!
//! - fixed-priority: only the highest-priority members that are up (available
//!   and not suspect) are considered; among several of equal priority, turns.
//!   When they are all full the task waits: it does not spill to a lower one.
//! - round-robin: the next member after the last one chosen that has room.
//! - least-loaded: the fewest running tasks for its capacity, then the lowest
//!   CPU use, then the id.

use std::cmp::Ordering;

use super::registry::Subagent;
use crate::protocol::{ClusterSpec, SchedulingMode};

/// A subagent that belongs to the cluster, with its priority there.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub subagent: &'a Subagent,
    pub priority: i32,
    /// Tasks a plan being made gives it on top of those it runs.
    pub planned: u32,
}

impl Member<'_> {
    fn running(&self) -> usize {
        self.subagent.tasks.len() + self.planned as usize
    }

    /// Up, not just refused a task as busy, and with room left.
    pub fn takes_tasks(&self) -> bool {
        let s = self.subagent;
        s.is_up() && !s.said_busy && self.running() < s.capacity as usize
    }
}

/// The subagents that belong to `cluster` (all of them when `None`), in id order.
pub fn members<'a>(
    cluster: Option<&ClusterSpec>,
    subagents: impl Iterator<Item = &'a Subagent>,
) -> Vec<Member<'a>> {
    subagents
        .filter_map(|subagent| {
            let priority = match cluster {
                None => Some(0),
                Some(c) => priority_in(c, subagent),
            }?;
            Some(Member {
                subagent,
                priority,
                planned: 0,
            })
        })
        .collect()
}

/// A subagent's priority in a cluster: the best of the entries it matches.
pub fn priority_in(cluster: &ClusterSpec, subagent: &Subagent) -> Option<i32> {
    cluster
        .members
        .iter()
        .filter(|m| {
            let id_ok = m.subagent.as_deref().is_none_or(|id| id == subagent.id);
            let labels_ok = m
                .labels
                .iter()
                .all(|(k, v)| subagent.labels.get(k) == Some(v));
            id_ok && labels_ok
        })
        .map(|m| m.priority)
        .max()
}

/// The member to run the next task, or `None` when the task must wait.
/// `last` is the member this cluster chose last time.
pub fn choose<'a>(
    mode: SchedulingMode,
    members: &[Member<'a>],
    last: Option<&str>,
) -> Option<&'a Subagent> {
    match mode {
        SchedulingMode::RoundRobin => next_after(members.iter(), last),
        SchedulingMode::FixedPriority => {
            let top = members
                .iter()
                .filter(|m| m.subagent.is_up())
                .map(|m| m.priority)
                .max()?;
            next_after(members.iter().filter(|m| m.priority == top), last)
        }
        SchedulingMode::LeastLoaded => members
            .iter()
            .filter(|m| m.takes_tasks())
            .min_by(|a, b| {
                let load = |m: &Member| m.running() as f64 / f64::from(m.subagent.capacity.max(1));
                let cpu = |m: &Member| m.subagent.load.map_or(0.0, |l| l.cpu_percent);
                load(a)
                    .total_cmp(&load(b))
                    .then(cpu(a).total_cmp(&cpu(b)))
                    .then(a.subagent.id.cmp(&b.subagent.id))
            })
            .map(|m| m.subagent),
    }
}

/// The first member after `last` (by id, wrapping) that takes tasks.
fn next_after<'a, 'm>(
    members: impl Iterator<Item = &'m Member<'a>> + Clone,
    last: Option<&str>,
) -> Option<&'a Subagent>
where
    'a: 'm,
{
    let mut eligible = members.filter(|m| m.takes_tasks()).map(|m| m.subagent);
    let after = last.and_then(|last| {
        eligible
            .clone()
            .find(|s| s.id.as_str().cmp(last) == Ordering::Greater)
    });
    after.or_else(|| eligible.next())
}

/// Registries and clusters for the placement and planner tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use crate::broker::registry::{Registry, Sighting};
    use crate::protocol::{ClusterMember, ClusterSpec, SchedulingMode};

    /// A registry with subagents `(id, capacity, busy, zone)`.
    pub(crate) fn registry(subs: &[(&str, u32, usize, &str)]) -> Registry {
        let mut r = Registry::default();
        let now = Instant::now();
        for (id, capacity, busy, zone) in subs {
            let labels = BTreeMap::from([("zone".to_string(), zone.to_string())]);
            r.seen(
                Sighting {
                    id,
                    instance_id: "i",
                    labels: &labels,
                    capacity: *capacity,
                    load: None,
                    draining: false,
                    heartbeat_interval: Duration::from_millis(250),
                    orphan_timeout: Duration::from_secs(10),
                },
                now,
            );
            for t in 0..*busy {
                r.assign(id, &format!("{id}-t{t}"));
            }
        }
        r
    }

    /// A cluster `name` of the subagents `(id, priority)`.
    pub(crate) fn cluster(
        name: &str,
        mode: SchedulingMode,
        members: &[(&str, i32)],
    ) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            mode,
            members: members
                .iter()
                .map(|(id, priority)| ClusterMember {
                    subagent: Some(id.to_string()),
                    labels: BTreeMap::new(),
                    priority: *priority,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use super::fixtures::registry;
    use super::*;
    use crate::broker::registry::{Registry, Sighting};
    use crate::protocol::{ClusterMember, Load};

    fn cluster(mode: SchedulingMode, members: &[(&str, i32)]) -> ClusterSpec {
        super::fixtures::cluster("c", mode, members)
    }

    fn pick(r: &Registry, c: Option<&ClusterSpec>, last: Option<&str>) -> Option<String> {
        let mode = c.map_or(SchedulingMode::RoundRobin, |c| c.mode);
        let m = members(c, r.iter());
        choose(mode, &m, last).map(|s| s.id.clone())
    }

    fn rounds(r: &Registry, c: Option<&ClusterSpec>, n: usize) -> Vec<String> {
        let mut last: Option<String> = None;
        (0..n)
            .map(|_| {
                let p = pick(r, c, last.as_deref()).unwrap();
                last = Some(p.clone());
                p
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_member_in_turn() {
        let r = registry(&[("a", 1, 0, "x"), ("b", 1, 0, "x"), ("c", 1, 0, "x")]);
        assert_eq!(rounds(&r, None, 6), ["a", "b", "c", "a", "b", "c"]);
        let only_ac = cluster(SchedulingMode::RoundRobin, &[("a", 0), ("c", 0)]);
        assert_eq!(rounds(&r, Some(&only_ac), 4), ["a", "c", "a", "c"]);
    }

    #[test]
    fn round_robin_skips_full_lost_disabled_and_suspect_members() {
        let mut r = registry(&[
            ("a", 1, 1, "x"),
            ("b", 2, 0, "x"),
            ("c", 1, 0, "x"),
            ("d", 1, 0, "x"),
        ]);
        r.declare_lost("c");
        r.suspect("d");
        assert_eq!(pick(&r, None, None).as_deref(), Some("b"));
        assert_eq!(pick(&r, None, Some("b")).as_deref(), Some("b"));
        assert_eq!(pick(&r, None, Some("zzz")).as_deref(), Some("b"));
        r.set_disabled("b", true);
        assert_eq!(pick(&r, None, None), None);
    }

    #[test]
    fn fixed_priority_uses_the_best_available_and_falls_back_and_returns() {
        let mut r = registry(&[("a", 2, 0, "x"), ("b", 2, 0, "x"), ("c", 2, 0, "x")]);
        let c = cluster(
            SchedulingMode::FixedPriority,
            &[("a", 3), ("b", 2), ("c", 1)],
        );
        assert_eq!(rounds(&r, Some(&c), 3), ["a", "a", "a"]);
        r.declare_lost("a");
        assert_eq!(rounds(&r, Some(&c), 2), ["b", "b"]);
        r.set_disabled("b", true);
        assert_eq!(pick(&r, Some(&c), None).as_deref(), Some("c"));
        r.set_disabled("b", false);
        let labels = BTreeMap::new();
        r.seen(
            Sighting {
                id: "a",
                instance_id: "i",
                labels: &labels,
                capacity: 2,
                load: None,
                draining: false,
                heartbeat_interval: Duration::from_millis(250),
                orphan_timeout: Duration::from_secs(10),
            },
            Instant::now(),
        );
        assert_eq!(
            pick(&r, Some(&c), None).as_deref(),
            Some("a"),
            "the first takes over again"
        );
    }

    #[test]
    fn fixed_priority_waits_rather_than_spill_when_the_best_is_full() {
        let r = registry(&[("a", 1, 1, "x"), ("b", 1, 0, "x")]);
        let c = cluster(SchedulingMode::FixedPriority, &[("a", 2), ("b", 1)]);
        assert_eq!(pick(&r, Some(&c), None), None);
    }

    #[test]
    fn fixed_priority_shares_equal_priorities_in_turn() {
        let r = registry(&[("a", 1, 0, "x"), ("b", 1, 0, "x"), ("c", 1, 0, "x")]);
        let c = cluster(
            SchedulingMode::FixedPriority,
            &[("a", 1), ("b", 1), ("c", 0)],
        );
        assert_eq!(rounds(&r, Some(&c), 4), ["a", "b", "a", "b"]);
    }

    #[test]
    fn labels_select_members_and_the_best_entry_gives_the_priority() {
        let r = registry(&[
            ("a", 1, 0, "east"),
            ("b", 1, 0, "west"),
            ("c", 1, 0, "east"),
        ]);
        let c = ClusterSpec {
            name: "c".into(),
            mode: SchedulingMode::FixedPriority,
            members: vec![
                ClusterMember {
                    subagent: None,
                    labels: BTreeMap::from([("zone".to_string(), "east".to_string())]),
                    priority: 1,
                },
                ClusterMember {
                    subagent: Some("c".into()),
                    labels: BTreeMap::new(),
                    priority: 5,
                },
            ],
        };
        let m = members(Some(&c), r.iter());
        let ids: BTreeSet<_> = m
            .iter()
            .map(|m| (m.subagent.id.as_str(), m.priority))
            .collect();
        assert_eq!(ids, BTreeSet::from([("a", 1), ("c", 5)]));
        assert_eq!(pick(&r, Some(&c), None).as_deref(), Some("c"));
    }

    #[test]
    fn least_loaded_prefers_free_capacity_then_cpu() {
        let mut r = registry(&[("a", 4, 2, "x"), ("b", 2, 0, "x"), ("c", 2, 0, "x")]);
        let c = cluster(SchedulingMode::LeastLoaded, &[("a", 0), ("b", 0), ("c", 0)]);
        assert_eq!(pick(&r, Some(&c), None).as_deref(), Some("b"));
        let labels = BTreeMap::new();
        r.seen(
            Sighting {
                id: "b",
                instance_id: "i",
                labels: &labels,
                capacity: 2,
                load: Some(Load {
                    cpu_percent: 90.0,
                    memory_percent: 10.0,
                    running: 0,
                }),
                draining: false,
                heartbeat_interval: Duration::from_millis(250),
                orphan_timeout: Duration::from_secs(10),
            },
            Instant::now(),
        );
        assert_eq!(pick(&r, Some(&c), None).as_deref(), Some("c"));
    }

    #[test]
    fn every_eligible_member_is_reached_within_one_round() {
        // for any mix of eligible members and any starting point, n picks cover all
        for mask in 1u32..64 {
            let subs: Vec<(String, u32, usize, &str)> =
                (0..6).map(|i| (format!("s{i}"), 1, 0, "x")).collect();
            let refs: Vec<(&str, u32, usize, &str)> = subs
                .iter()
                .map(|(a, b, c, d)| (a.as_str(), *b, *c, *d))
                .collect();
            let mut r = registry(&refs);
            for i in 0..6 {
                if mask & (1 << i) == 0 {
                    r.suspect(&format!("s{i}"));
                }
            }
            let eligible = mask.count_ones() as usize;
            for start in 0..6 {
                let mut last = Some(format!("s{start}"));
                let mut seen = BTreeSet::new();
                for _ in 0..eligible {
                    let p = pick(&r, None, last.as_deref()).unwrap();
                    seen.insert(p.clone());
                    last = Some(p);
                }
                assert_eq!(seen.len(), eligible, "mask {mask:b} start {start}");
            }
        }
    }
}
