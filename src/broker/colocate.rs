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
//! current, online replica, never the orders stream's own, and a group at
//! most once per [`HOLD_MOVED`]; on one server (`nats.replicas` 1), or
//! with `nats.colocate_leaders` off, nothing runs. What it cannot do is
//! logged (at most once a minute), and so is a loop that cannot see the
//! orders stream's leader for 30 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::auth::{BUCKETS, STREAMS};
use crate::bus::{Bus, Placement};
use crate::config::Config;

/// How often the leaders are compared.
pub const EVERY: Duration = Duration::from_secs(3);
/// How long after moving a group's leader it is not moved again (should
/// the node named not win, it is not asked every pass).
pub const HOLD_MOVED: Duration = Duration::from_secs(6);
/// How long after a refused or unanswered move it is not asked again.
pub const HOLD_FAILED: Duration = Duration::from_secs(15);
/// How long the loop may be unable to read the orders stream's leader
/// before it says so.
const BLIND: Duration = Duration::from_secs(30);
/// How often failures are logged at most.
const SAY_EVERY: Duration = Duration::from_secs(60);
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

/// Whether a group held until `until` may be asked to move at `now`.
pub fn may_ask(until: Option<Instant>, now: Instant) -> bool {
    until.is_none_or(|until| now >= until)
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

/// Starts the loop on the current actix System, on a cluster only and
/// unless `nats.colocate_leaders` is off.
pub fn start(bus: Bus, config: &Config) -> Option<Colocate> {
    let on = config.nats.replicas > 1 && config.nats.colocate_leaders;
    on.then(|| Colocate(actix::spawn(keep(bus, streams(config)))))
}

async fn keep(bus: Bus, streams: Vec<String>) {
    let mut held: BTreeMap<Group, Instant> = BTreeMap::new();
    let mut blind_since: Option<Instant> = None;
    let mut said_failed: Option<Instant> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let Some((anchor, groups)) = look(&bus, &streams).await else {
            let since = *blind_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= BLIND {
                warn!(streams = %streams[0], "cannot read which node leads the orders stream for 30 s: Baton's stream leaders are not kept together meanwhile");
                blind_since = Some(now);
            }
            continue;
        };
        blind_since = None;
        held.retain(|_, until| *until > now);
        let mut moved = Vec::new();
        let mut failed = Vec::new();
        for (group, from) in moves(&anchor, &groups) {
            if !may_ask(held.get(group).copied(), now) {
                continue;
            }
            let consumer = group.consumer.as_deref();
            let ask = tokio::time::timeout(ASK, bus.move_leader(&group.stream, consumer, &anchor));
            let (hold, outcome) = match ask.await {
                Ok(Ok(())) => (HOLD_MOVED, Ok(())),
                Ok(Err(e)) => (HOLD_FAILED, Err(e.to_string())),
                Err(_) => (HOLD_FAILED, Err(format!("no answer within {ASK:?}"))),
            };
            held.insert(group.clone(), now + hold);
            match outcome {
                Ok(()) => moved.push(format!("{group} (from {from})")),
                Err(why) => failed.push(format!("{group}: {why}")),
            }
        }
        if !moved.is_empty() {
            info!(to = %anchor, moved = %moved.join(", "), "moved leaders beside the orders stream's leader, so losing another node costs them no election");
        }
        let quiet = said_failed.is_some_and(|at| now.saturating_duration_since(at) < SAY_EVERY);
        if !failed.is_empty() && !quiet {
            said_failed = Some(now);
            warn!(to = %anchor, failed = %failed.join("; "), "cannot move leaders beside the orders stream's leader; trying again in 15 s (said at most once a minute)");
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
        match tokio::time::timeout(ASK, bus.consumer_placements(stream)).await {
            Ok(Ok(consumers)) => {
                let found = consumers.into_iter();
                groups.extend(found.map(|(name, p)| (group(stream, Some(name)), p)));
            }
            Ok(Err(e)) => debug!(%stream, error = %e, "cannot list the stream's consumers"),
            Err(_) => debug!(%stream, "no list of the stream's consumers in time"),
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
    fn a_group_is_asked_again_only_after_its_hold() {
        let t0 = Instant::now();
        let until = t0 + HOLD_FAILED;
        assert!(may_ask(None, t0));
        assert!(!may_ask(Some(until), t0 + Duration::from_secs(14)));
        assert!(may_ask(Some(until), until));
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
