//! The dispatch planner: which queued order goes to which subagent now.
//! Pure: given the queue, what is deployed, the registry and the member
//! each cluster chose last, it returns decisions; the broker carries them
//! out (journals the dispatch, then sends the task).
//!
//! Orders are planned oldest first. An order whose cluster has no room
//! waits without holding up other clusters' orders, and blocks the younger
//! orders of its own cluster (they would only overtake it). Each placement
//! counts against its subagent's room for the rest of the plan, and moves
//! its cluster's turn on.
//!
//! A spread order (`broker::spread`) is placed on every member that is up
//! (or `count` of them) at once, room or not; a member's order is bound to
//! its member (`pin`): it goes there when it has room, and meanwhile holds
//! up no other order.

use std::collections::HashMap;

use super::super::placement;
use super::super::registry::{Registry, Subagent};
use super::super::spread;
use crate::protocol::{ClusterSpec, JobSpec, SchedulingMode, SpreadPolicy};

/// An order waiting in the queue.
#[derive(Debug, Clone, Copy)]
pub struct Queued<'a> {
    pub order_id: &'a str,
    pub job: &'a str,
    /// A spread order: the policy it was accepted under.
    pub spread: Option<&'a SpreadPolicy>,
    /// A member's order: the only subagent it may run on.
    pub pin: Option<&'a str>,
}

/// What is deployed, as the planner reads it.
pub struct Deployed<'a> {
    pub jobs: &'a HashMap<String, JobSpec>,
    pub clusters: &'a HashMap<String, ClusterSpec>,
}

/// What to do with one queued order now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it on this subagent process; `cluster` is its turn's key ("" for
    /// jobs without a cluster), whose last choice is now `subagent_id`.
    Place {
        order_id: String,
        subagent_id: String,
        instance_id: String,
        cluster: String,
    },
    /// Place this spread order on these members (subagent ids); `cluster`
    /// is its turn's key, whose last choice is now the last of them.
    Spread {
        order_id: String,
        members: Vec<String>,
        cluster: String,
    },
    /// It can never run: its job is no longer deployed.
    Refuse { order_id: String, reason: String },
}

/// What a plan leaves in the queue: the jobs of the orders it did not
/// place (no room, no member, or behind one of those in their cluster),
/// and the members that pinned orders wait for.
#[derive(Debug, Default)]
pub struct Left<'a> {
    pub jobs: foldhash::HashSet<&'a str>,
    pub pins: foldhash::HashSet<&'a str>,
}

/// Plans the queue. `last_placed` holds each cluster's last choice;
/// `previous_step` names the subagent that ran the step before a workflow
/// step order (round-robin sends the next step to the member after it).
pub fn plan<'a>(
    queued: impl IntoIterator<Item = Queued<'a>>,
    deployed: &Deployed<'_>,
    registry: &Registry,
    last_placed: &HashMap<String, String>,
    previous_step: impl Fn(&str) -> Option<String>,
) -> Vec<Decision> {
    plan_leaving(queued, deployed, registry, last_placed, previous_step).0
}

/// [`plan`], with what it leaves in the queue.
pub fn plan_leaving<'a>(
    queued: impl IntoIterator<Item = Queued<'a>>,
    deployed: &Deployed<'_>,
    registry: &Registry,
    last_placed: &HashMap<String, String>,
    previous_step: impl Fn(&str) -> Option<String>,
) -> (Vec<Decision>, Left<'a>) {
    let mut decisions = Vec::new();
    // the plan's own sets and maps hash with foldhash: a pass looks up a
    // few of them per queued order, SipHash showed in the broker's profile
    let mut pins_left: foldhash::HashSet<&str> = Default::default();
    // cluster keys with no room; and their jobs, so that the many queued
    // orders behind a full cluster cost two lookups each (their job, then the set)
    let mut blocked: foldhash::HashSet<&str> = Default::default();
    let mut blocked_jobs: foldhash::HashSet<&str> = Default::default();
    let mut planned: foldhash::HashMap<String, u32> = Default::default();
    let mut last: foldhash::HashMap<&str, String> = Default::default();
    for order in queued {
        // a member's order too: one whose job is gone never runs
        let Some(spec) = deployed.jobs.get(order.job) else {
            decisions.push(Decision::Refuse {
                order_id: order.order_id.to_string(),
                reason: format!("job '{}' is no longer deployed", order.job),
            });
            continue;
        };
        if let Some(pin) = order.pin {
            let planned_here = planned.get(pin).copied().unwrap_or(0);
            let Some(subagent) = registry
                .get(pin)
                .filter(|s| s.takes_tasks() && s.free() > planned_here)
            else {
                pins_left.insert(pin);
                continue;
            };
            *planned.entry(subagent.id.clone()).or_default() += 1;
            decisions.push(Decision::Place {
                order_id: order.order_id.to_string(),
                subagent_id: subagent.id.clone(),
                instance_id: subagent.instance_id.clone(),
                cluster: String::new(),
            });
            continue;
        }
        if blocked_jobs.contains(order.job) {
            continue;
        }
        let key = spec.cluster.as_deref().unwrap_or_default();
        if blocked.contains(key) {
            blocked_jobs.insert(order.job);
            continue;
        }
        let cluster = spec.cluster.as_ref().and_then(|c| deployed.clusters.get(c));
        if let Some(policy) = order.spread {
            let members = if spec.cluster.is_some() && cluster.is_none() {
                Vec::new()
            } else {
                let mode = cluster.map_or(SchedulingMode::RoundRobin, |c| c.mode);
                let members = placement::members(cluster, registry.iter());
                let turn = last.get(key).or_else(|| last_placed.get(key));
                let chosen =
                    spread::choose_members(mode, &members, policy.count, turn.map(String::as_str));
                chosen.into_iter().map(|s| s.id.clone()).collect()
            };
            let Some(newest) = members.last() else {
                blocked.insert(key);
                blocked_jobs.insert(order.job);
                continue;
            };
            last.insert(key, newest.clone());
            decisions.push(Decision::Spread {
                order_id: order.order_id.to_string(),
                members,
                cluster: key.to_string(),
            });
            continue;
        }
        let chosen = if spec.cluster.is_some() && cluster.is_none() {
            None
        } else {
            let mode = cluster.map_or(SchedulingMode::RoundRobin, |c| c.mode);
            let mut members = placement::members(cluster, registry.iter());
            for m in &mut members {
                m.planned = planned.get(&m.subagent.id).copied().unwrap_or(0);
            }
            let previous = match mode {
                SchedulingMode::RoundRobin => previous_step(order.order_id),
                _ => None,
            };
            let turn = last.get(key).or_else(|| last_placed.get(key));
            let after = previous.as_deref().or(turn.map(String::as_str));
            placement::choose(mode, &members, after)
        };
        let Some(subagent) = chosen else {
            blocked.insert(key);
            blocked_jobs.insert(order.job);
            continue;
        };
        *planned.entry(subagent.id.clone()).or_default() += 1;
        last.insert(key, subagent.id.clone());
        decisions.push(Decision::Place {
            order_id: order.order_id.to_string(),
            subagent_id: subagent.id.clone(),
            instance_id: subagent.instance_id.clone(),
            cluster: key.to_string(),
        });
    }
    let left = Left {
        jobs: blocked_jobs,
        pins: pins_left,
    };
    (decisions, left)
}

/// Whether an order of `job` could run on `subagent`, as deployed now:
/// the job is deployed, and has no cluster or one `subagent` is a member of.
pub fn could_run_on(job: &str, subagent: &Subagent, deployed: &Deployed<'_>) -> bool {
    let Some(spec) = deployed.jobs.get(job) else {
        return false;
    };
    match &spec.cluster {
        None => true,
        Some(name) => (deployed.clusters.get(name))
            .is_some_and(|c| placement::priority_in(c, subagent).is_some()),
    }
}

/// Why an order of `job` waits in the queue, in words for its operator,
/// when nothing can take it now: its cluster is not deployed, no subagent
/// matches it, or no member has room (and how its members stand). `None`
/// when a member has room (it waits only for its turn) or the job is gone.
pub fn why_waiting(job: &str, deployed: &Deployed<'_>, registry: &Registry) -> Option<String> {
    match assess(job, deployed, registry, true)? {
        Wait::ForRoom(words) => words,
        Wait::Stuck(reason) => Some(reason),
    }
}

/// Why an order waits: only for room (a member is available, and full:
/// queueing under load, it runs once one has room), or stuck (nothing can
/// place it), in [`why_waiting`]'s words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The words, only when asked for ([`why_waiting`]).
    ForRoom(Option<String>),
    Stuck(String),
}

/// [`why_waiting`], for the pass that tells stuck orders why after each
/// dispatch: an order that waits only for room costs no words.
pub fn waiting(job: &str, deployed: &Deployed<'_>, registry: &Registry) -> Option<Wait> {
    assess(job, deployed, registry, false)
}

fn assess(
    job: &str,
    deployed: &Deployed<'_>,
    registry: &Registry,
    words_for_room: bool,
) -> Option<Wait> {
    let spec = deployed.jobs.get(job)?;
    let cluster = spec.cluster.as_ref().map(|c| (c, deployed.clusters.get(c)));
    if let Some((name, None)) = cluster {
        return Some(Wait::Stuck(format!(
            "waiting: subagent cluster '{name}' is not deployed; deploy it in a [[cluster]] table"
        )));
    }
    let members = placement::members(cluster.and_then(|(_, c)| c), registry.iter());
    if members.iter().any(|m| m.takes_tasks()) {
        return None;
    }
    if members.is_empty() {
        return Some(Wait::Stuck(match cluster {
            Some((name, _)) => format!(
                "waiting: no known subagent matches cluster '{name}' (compare its members with `baton status`)"
            ),
            None => "waiting: no subagent is connected; start one with `baton subagent`".into(),
        }));
    }
    let full =
        |m: &placement::Member<'_>| m.subagent.state() == crate::protocol::SubagentState::Available;
    let for_room = members.iter().any(full);
    if for_room && !words_for_room {
        return Some(Wait::ForRoom(None));
    }
    let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &members {
        let state = if full(m) {
            "full"
        } else {
            m.subagent.state().as_str()
        };
        *states.entry(state).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let whom = match cluster {
        Some((name, _)) => format!("no member of cluster '{name}'"),
        None => "no subagent".to_string(),
    };
    // full members free up by themselves; lost or disabled ones do not
    let what = if for_room { "has room" } else { "takes tasks" };
    let reason = format!("waiting: {whom} {what} ({})", states.join(", "));
    Some(match for_room {
        true => Wait::ForRoom(Some(reason)),
        false => Wait::Stuck(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::placement::fixtures::{self, cluster};
    use crate::testing::Rng;

    fn registry(subs: &[(&str, u32, usize)]) -> Registry {
        let subs: Vec<_> = subs.iter().map(|&(id, c, b)| (id, c, b, "x")).collect();
        fixtures::registry(&subs)
    }

    fn job(name: &str, cluster: Option<&str>) -> JobSpec {
        let spec = serde_json::json!({"name": name, "program": "true", "cluster": cluster});
        serde_json::from_value(spec).unwrap()
    }

    struct World {
        jobs: HashMap<String, JobSpec>,
        clusters: HashMap<String, ClusterSpec>,
    }

    impl World {
        fn new(jobs: Vec<JobSpec>, clusters: Vec<ClusterSpec>) -> World {
            World {
                jobs: jobs.into_iter().map(|j| (j.name.clone(), j)).collect(),
                clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
            }
        }

        fn plan(&self, queue: &[(&str, &str)], r: &Registry) -> Vec<Decision> {
            let deployed = Deployed {
                jobs: &self.jobs,
                clusters: &self.clusters,
            };
            let queued = queue.iter().map(|(order_id, job)| Queued {
                order_id,
                job,
                spread: None,
                pin: None,
            });
            plan(queued, &deployed, r, &HashMap::new(), |_| None)
        }
    }

    fn placed(decisions: &[Decision]) -> Vec<(&str, &str)> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Place {
                    order_id,
                    subagent_id,
                    ..
                } => Some((order_id.as_str(), subagent_id.as_str())),
                Decision::Refuse { .. } | Decision::Spread { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_plan_leaves_the_jobs_and_pins_of_every_order_it_does_not_place() {
        let c = cluster("c", SchedulingMode::RoundRobin, &[("a", 0)]);
        let jobs = vec![
            job("any", None),
            job("in-c", Some("c")),
            job("in-gone", Some("gone")),
        ];
        let world = World::new(jobs, vec![c]);
        // a has room for one, b for none
        let r = registry(&[("a", 1, 0), ("b", 1, 1)]);
        let deployed = Deployed {
            jobs: &world.jobs,
            clusters: &world.clusters,
        };
        let q = |order_id, job, pin| Queued {
            order_id,
            job,
            spread: None,
            pin,
        };
        let queue = [
            q("1", "in-c", None),
            q("2", "in-c", None),
            q("3", "in-gone", None),
            q("4", "any", None),
            q("5", "any", Some("b")),
            q("6", "undeployed", Some("a")),
        ];
        let (decisions, left) = plan_leaving(queue, &deployed, &r, &HashMap::new(), |_| None);
        assert_eq!(placed(&decisions), [("1", "a")]);
        let refused: Vec<&str> = (decisions.iter())
            .filter_map(|d| match d {
                Decision::Refuse { order_id, .. } => Some(order_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            ["6"],
            "a pinned order whose job is gone is refused"
        );
        let mut jobs: Vec<&str> = left.jobs.into_iter().collect();
        jobs.sort();
        assert_eq!(jobs, ["any", "in-c", "in-gone"]);
        assert_eq!(left.pins.into_iter().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_spread_order_takes_every_member_up_and_a_member_order_only_its_own() {
        let world = World::new(vec![job("j", None)], vec![]);
        let mut r = registry(&[("a", 1, 1), ("b", 1, 0), ("c", 2, 0)]);
        let policy = SpreadPolicy {
            count: None,
            min_succeeded: None,
            rejoin_ms: 0,
        };
        let deployed = Deployed {
            jobs: &world.jobs,
            clusters: &world.clusters,
        };
        let q = |order_id, spread, pin| Queued {
            order_id,
            job: "j",
            spread,
            pin,
        };
        let queue = [
            q("s", Some(&policy), None),
            q("m-a", None, Some("a")),
            q("m-b", None, Some("b")),
            q("o", None, None),
        ];
        let decisions = plan(queue, &deployed, &r, &HashMap::new(), |_| None);
        assert_eq!(
            decisions[0],
            Decision::Spread {
                order_id: "s".into(),
                members: vec!["a".into(), "b".into(), "c".into()],
                cluster: String::new(),
            },
            "a full member counts: its order waits for room"
        );
        // a's member order waits for a (full) without holding up the others
        assert_eq!(placed(&decisions), [("m-b", "b"), ("o", "c")]);
        r.release("a", "a-t0", true);
        let two = SpreadPolicy {
            count: Some(2),
            ..policy
        };
        let queue = [q("s2", Some(&two), None), q("m-a", None, Some("a"))];
        let last = HashMap::from([(String::new(), "a".to_string())]);
        let decisions = plan(queue, &deployed, &r, &last, |_| None);
        assert!(
            matches!(&decisions[0], Decision::Spread { members, .. } if members == &["b", "c"]),
            "round-robin: after the last one chosen: {decisions:?}"
        );
        assert_eq!(placed(&decisions), [("m-a", "a")]);
    }

    #[test]
    fn each_placement_counts_against_the_room_left() {
        let world = World::new(vec![job("j", None)], vec![]);
        let r = registry(&[("a", 2, 1), ("b", 1, 0)]);
        let queue = [("o1", "j"), ("o2", "j"), ("o3", "j")];
        let decisions = world.plan(&queue, &r);
        assert_eq!(placed(&decisions), [("o1", "a"), ("o2", "b")]);
    }

    #[test]
    fn a_full_cluster_waits_without_holding_up_another() {
        let world = World::new(
            vec![job("x", Some("cx")), job("y", Some("cy"))],
            vec![
                cluster("cx", SchedulingMode::RoundRobin, &[("a", 0)]),
                cluster("cy", SchedulingMode::RoundRobin, &[("b", 0)]),
            ],
        );
        let r = registry(&[("a", 1, 1), ("b", 1, 0)]);
        let decisions = world.plan(&[("o1", "x"), ("o2", "y"), ("o3", "x")], &r);
        assert_eq!(placed(&decisions), [("o2", "b")]);
    }

    #[test]
    fn an_order_of_a_job_gone_is_refused_and_one_of_a_cluster_gone_waits() {
        let world = World::new(vec![job("x", Some("gone"))], vec![]);
        let r = registry(&[("a", 1, 0)]);
        let decisions = world.plan(&[("o1", "undeployed"), ("o2", "x")], &r);
        assert_eq!(
            decisions,
            [Decision::Refuse {
                order_id: "o1".into(),
                reason: "job 'undeployed' is no longer deployed".into()
            }]
        );
    }

    #[test]
    fn round_robin_turns_within_one_plan_and_from_the_last_choice() {
        let world = World::new(vec![job("j", None)], vec![]);
        let r = registry(&[("a", 9, 0), ("b", 9, 0), ("c", 9, 0)]);
        let deployed = Deployed {
            jobs: &world.jobs,
            clusters: &world.clusters,
        };
        let last = HashMap::from([(String::new(), "a".to_string())]);
        let queue = [("o1", "j"), ("o2", "j"), ("o3", "j")];
        let queued = queue.iter().map(|(order_id, job)| Queued {
            order_id,
            job,
            spread: None,
            pin: None,
        });
        let decisions = plan(queued, &deployed, &r, &last, |_| None);
        assert_eq!(placed(&decisions), [("o1", "b"), ("o2", "c"), ("o3", "a")]);
        let queued = queue.iter().map(|(order_id, job)| Queued {
            order_id,
            job,
            spread: None,
            pin: None,
        });
        let after_c = |id: &str| (id == "o1").then(|| "c".to_string());
        let decisions = plan(queued, &deployed, &r, &last, after_c);
        assert_eq!(
            placed(&decisions)[0],
            ("o1", "a"),
            "after the previous step"
        );
    }

    /// Whatever the registry and queue: no subagent gets more than its
    /// room, every order is decided at most once, an order of an
    /// undeployed cluster never runs, and an order waits only when no room
    /// is left for it.
    #[test]
    fn a_plan_never_overfills_and_never_leaves_room_unused() {
        for seed in 0..2_000 {
            let mut rng = Rng::new(seed);
            let n = 1 + rng.below(5) as usize;
            let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let spec: Vec<(&str, u32, usize)> = ids
                .iter()
                .map(|id| {
                    let capacity = 1 + rng.below(3) as u32;
                    (
                        id.as_str(),
                        capacity,
                        rng.below(u64::from(capacity) + 1) as usize,
                    )
                })
                .collect();
            let mut r = registry(&spec);
            for id in &ids {
                if rng.percent(30) {
                    r.suspect(id);
                }
            }
            let mode = rng.pick(&[
                SchedulingMode::RoundRobin,
                SchedulingMode::FixedPriority,
                SchedulingMode::LeastLoaded,
            ]);
            let members: Vec<(&str, i32)> = ids.iter().map(|id| (id.as_str(), 0)).collect();
            let world = World::new(
                vec![
                    job("j0", None),
                    job("j1", Some("c")),
                    job("j2", Some("gone")),
                ],
                vec![cluster("c", mode, &members)],
            );
            let names: Vec<(String, String)> = (0..rng.below(20))
                .map(|i| (format!("o{i}"), format!("j{}", rng.below(3))))
                .collect();
            let queue: Vec<(&str, &str)> = names
                .iter()
                .map(|(o, j)| (o.as_str(), j.as_str()))
                .collect();
            let decisions = world.plan(&queue, &r);
            let mut given: HashMap<&str, u32> = HashMap::new();
            let mut decided = std::collections::HashSet::new();
            for (order, subagent) in placed(&decisions) {
                assert!(decided.insert(order), "seed {seed}: {order} decided twice");
                *given.entry(subagent).or_default() += 1;
            }
            let mut room = 0;
            for s in r.iter() {
                let extra = given.get(s.id.as_str()).copied().unwrap_or(0);
                assert!(extra <= s.free(), "seed {seed}: {} overfilled", s.id);
                if s.is_up() {
                    room += s.free() - extra;
                }
            }
            let waiting = queue
                .iter()
                .filter(|(o, j)| *j != "j2" && !decided.contains(o))
                .count();
            assert!(
                waiting == 0 || room == 0,
                "seed {seed}: {waiting} wait while {room} slots are free"
            );
            assert!(queue
                .iter()
                .all(|(o, j)| *j != "j2" || !decided.contains(o)));
        }
    }

    #[test]
    fn a_waiting_order_says_why() {
        let world = World::new(
            vec![
                job("x", Some("cx")),
                job("gone", Some("nowhere")),
                job("j", None),
            ],
            vec![cluster(
                "cx",
                SchedulingMode::RoundRobin,
                &[("a", 0), ("b", 0)],
            )],
        );
        let deployed = Deployed {
            jobs: &world.jobs,
            clusters: &world.clusters,
        };
        let why = |job: &str, r: &Registry| why_waiting(job, &deployed, r);
        let r = registry(&[("a", 1, 1), ("b", 2, 2), ("c", 1, 0)]);
        assert_eq!(
            why("x", &r).as_deref(),
            Some("waiting: no member of cluster 'cx' has room (2 full)")
        );
        assert!(why("gone", &r).is_some_and(|w| w.contains("'nowhere' is not deployed")));
        assert_eq!(why("j", &r), None, "c has room: it only waits its turn");
        let mut all_full = registry(&[("a", 1, 1), ("c", 1, 0)]);
        all_full.set_disabled("c", true);
        assert_eq!(
            why("j", &all_full).as_deref(),
            Some("waiting: no subagent has room (1 disabled, 1 full)")
        );
        all_full.declare_lost("a");
        assert_eq!(
            why("j", &all_full).as_deref(),
            Some("waiting: no subagent takes tasks (1 disabled, 1 lost)")
        );
        assert_eq!(why("undeployed", &r), None);
        let nobody = registry(&[("c", 1, 0)]);
        assert!(why("x", &nobody).is_some_and(|w| w.contains("no known subagent matches")));
        assert!(why("j", &registry(&[])).is_some_and(|w| w.contains("no subagent is connected")));
        let wait = |job: &str, r: &Registry| waiting(job, &deployed, r);
        assert_eq!(wait("x", &r), Some(Wait::ForRoom(None)), "full: no words");
        assert!(matches!(wait("x", &nobody), Some(Wait::Stuck(_))));
        assert!(matches!(wait("gone", &r), Some(Wait::Stuck(_))));
        assert_eq!(wait("j", &r), None);
    }
}
