//! On a JetStream cluster, the active broker keeps the leaders of Baton's
//! streams and of their durable consumers on the node that leads the orders
//! bucket's stream.
//!
//! Every stream and durable consumer is a Raft group of its own, and
//! JetStream elects their leaders independently, so they end up spread over
//! the nodes. A write to a group whose leader was SIGKILLed waits for its
//! election: the followers wait 4-9 s for a leader that died before they
//! campaign (nats-server's fixed election timeouts). With leaders spread,
//! killing a node that is only a follower of the orders stream can still
//! stall Baton that long: when it led the brokers' lease bucket the active
//! broker cannot renew, steps down, and no broker acts until the election
//! is over. Kept together, a node that does not lead the orders stream
//! leads nothing of Baton's: killing it costs no election at all, and
//! killing the one that does costs one election round, which every write
//! waited for anyway. A leader is moved with a step-down naming the node
//! to prefer: the handover is immediate, without an election timeout.
//!
//! [`moves`] decides (pure); [`start`] runs the loop on the active broker.
//! Architecture invariant: only the active broker moves leaders, only to a
//! current, online replica, and never the orders stream's own; on one
//! server (`nats.replicas` 1) nothing runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::auth::{BUCKETS, STREAMS};
use crate::bus::{Bus, Placement};
use crate::config::Config;

/// How often the leaders are compared.
pub const EVERY: Duration = Duration::from_secs(3);
/// How long after asking to move a group's leader it is not asked again.
pub const HOLD: Duration = Duration::from_secs(15);
/// The bound on each JetStream request of a pass.
const ASK: Duration = Duration::from_secs(2);

/// A Raft group of Baton's: a stream, or a durable consumer of one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Group {
    pub stream: String,
    pub consumer: Option<String>,
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.consumer {
            Some(consumer) => write!(f, "consumer {consumer} of stream {}", self.stream),
            None => write!(f, "stream {}", self.stream),
        }
    }
}

/// The groups to move, each with its current leader, to `anchor` (the
/// orders stream's leader): those led by another node of which `anchor` is
/// a current, online replica. A group electing (no leader) waits for its
/// election; a group `anchor` does not hold, or holds behind, stays.
pub fn moves<'a>(anchor: &str, groups: &'a [(Group, Placement)]) -> Vec<(&'a Group, &'a str)> {
    groups
        .iter()
        .filter_map(|(group, placement)| {
            let leader = placement.leader.as_deref()?;
            (leader != anchor && placement.caught_up(anchor)).then_some((group, leader))
        })
        .collect()
}

/// Whether a group last asked to move at `asked` may be asked again at `now`.
pub fn may_ask(asked: Option<Instant>, now: Instant, hold: Duration) -> bool {
    asked.is_none_or(|at| now.saturating_duration_since(at) >= hold)
}

/// Baton's streams under `config`'s prefix: the orders bucket's first (the
/// anchor), then every other bucket's and the plain streams.
pub fn streams(config: &Config) -> Vec<String> {
    let orders = format!("KV_{}", config.orders_bucket());
    let buckets = (BUCKETS.iter()).map(|b| format!("KV_{}_{b}", config.prefix));
    let plain = (STREAMS.iter()).map(|s| format!("{}_{s}", config.prefix));
    let mut all = vec![orders.clone()];
    all.extend(buckets.chain(plain).filter(|s| *s != orders));
    all
}

/// The loop, aborted when dropped (the broker stops acting).
pub struct Colocate(tokio::task::JoinHandle<()>);

impl Drop for Colocate {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the loop on the current actix System, on a cluster only.
pub fn start(bus: Bus, config: &Config) -> Option<Colocate> {
    (config.nats.replicas > 1).then(|| Colocate(actix::spawn(keep(bus, streams(config)))))
}

async fn keep(bus: Bus, streams: Vec<String>) {
    let mut asked: BTreeMap<Group, Instant> = BTreeMap::new();
    let mut failures = 0u64;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((anchor, groups)) = look(&bus, &streams).await else {
            continue;
        };
        let now = Instant::now();
        let mut moved = Vec::new();
        for (group, from) in moves(&anchor, &groups) {
            if !may_ask(asked.get(group).copied(), now, HOLD) {
                continue;
            }
            let consumer = group.consumer.as_deref();
            let ask = tokio::time::timeout(ASK, bus.move_leader(&group.stream, consumer, &anchor));
            match ask.await {
                Ok(Ok(())) => {
                    asked.remove(group);
                    moved.push(format!("{group} (from {from})"));
                }
                Ok(Err(e)) => {
                    asked.insert(group.clone(), now);
                    failures += 1;
                    if failures.is_power_of_two() {
                        warn!(%group, to = %anchor, error = %e, failures, "cannot move a leader beside the orders stream's leader; trying again in 15 s (logged at the 1st, 2nd, 4th... failure)");
                    }
                }
                Err(_) => {
                    asked.insert(group.clone(), now);
                    debug!(%group, "no answer to moving its leader in time");
                }
            }
        }
        if !moved.is_empty() {
            info!(to = %anchor, moved = %moved.join(", "), "moved leaders beside the orders stream's leader, so losing another node costs no election");
        }
    }
}

/// The orders stream's leader and every other group's placement; `None`
/// while the orders stream has no leader or cannot be asked.
async fn look(bus: &Bus, streams: &[String]) -> Option<(String, Vec<(Group, Placement)>)> {
    let (orders, others) = streams.split_first()?;
    let mut groups = Vec::new();
    let anchor = match tokio::time::timeout(ASK, bus.placement(orders)).await {
        Ok(Ok(placement)) => placement.leader?,
        _ => return None,
    };
    for stream in std::iter::once(orders).chain(others) {
        if stream != orders {
            // a stream not made yet (no subject triggers) is skipped
            match tokio::time::timeout(ASK, bus.placement(stream)).await {
                Ok(Ok(placement)) => groups.push((group(stream, None), placement)),
                _ => continue,
            }
        }
        if let Ok(Ok(consumers)) = tokio::time::timeout(ASK, bus.consumer_placements(stream)).await
        {
            let found = consumers.into_iter();
            groups.extend(found.map(|(name, p)| (group(stream, Some(name)), p)));
        }
    }
    Some((anchor, groups))
}

fn group(stream: &str, consumer: Option<String>) -> Group {
    Group {
        stream: stream.to_string(),
        consumer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Follower;

    fn placement(leader: Option<&str>, followers: &[(&str, bool, bool)]) -> Placement {
        Placement {
            leader: leader.map(str::to_string),
            followers: (followers.iter())
                .map(|(name, current, offline)| Follower {
                    name: name.to_string(),
                    current: *current,
                    offline: *offline,
                    lag: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn only_groups_led_elsewhere_with_the_anchor_current_move() {
        let s = |name: &str| group(name, None);
        let groups = vec![
            // led by the anchor already
            (s("a"), placement(Some("n1"), &[("n2", true, false)])),
            // led elsewhere, the anchor current: moves
            (s("b"), placement(Some("n2"), &[("n1", true, false)])),
            // electing: waits
            (s("c"), placement(None, &[("n1", true, false)])),
            // the anchor behind, or offline, or not a replica: stays
            (s("d"), placement(Some("n3"), &[("n1", false, false)])),
            (s("e"), placement(Some("n3"), &[("n1", true, true)])),
            (s("f"), placement(Some("n3"), &[("n2", true, false)])),
            // a consumer too
            (
                group("a", Some("notify".into())),
                placement(Some("n3"), &[("n1", true, false)]),
            ),
        ];
        let moved: Vec<String> = (moves("n1", &groups).iter())
            .map(|(g, from)| format!("{g} from {from}"))
            .collect();
        assert_eq!(
            moved,
            ["stream b from n2", "consumer notify of stream a from n3"]
        );
    }

    #[test]
    fn a_group_is_asked_again_only_after_the_hold() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(15);
        assert!(may_ask(None, t0, hold));
        assert!(!may_ask(Some(t0), t0 + Duration::from_secs(14), hold));
        assert!(may_ask(Some(t0), t0 + hold, hold));
    }

    #[test]
    fn the_orders_stream_comes_first_and_once() {
        let config = Config::default();
        let all = streams(&config);
        assert_eq!(all[0], format!("KV_{}_orders", config.prefix));
        assert_eq!(all.iter().filter(|s| s.ends_with("_orders")).count(), 1);
        assert_eq!(all.len(), BUCKETS.len() + STREAMS.len());
        assert!(all.contains(&format!("KV_{}_leader", config.prefix)));
        assert!(all.contains(&format!("{}_audit", config.prefix)));
    }
}
