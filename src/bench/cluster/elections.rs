//! How long JetStream itself took to elect new leaders after a node kill,
//! so `baton bench cluster` can tell nats-server's Raft election (a
//! follower waits 4-9 s for a leader it no longer hears before it
//! campaigns: fixed in nats-server, not configurable) from the time Baton
//! adds after it.
//!
//! Before the kill the bench notes which of the streams that Baton's order
//! path and roles write to the victim leads; after it, it asks each of
//! them for its leader until another node leads it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::report::first_after;
use super::PREFIX;
use crate::bus::Bus;
use crate::time::now_ms;

/// The buckets whose streams the bench watches, as their names end: the
/// orders journal, the brokers' lease, the Scheduler lease, the fired
/// slots, then what a broker reads when it takes over.
pub(super) const WATCHED: [&str; 8] = [
    "orders",
    "leader",
    "scheduler",
    "fired",
    "jobs",
    "clusters",
    "workflows",
    "switches",
];

/// The buckets an order needs written before it is accepted: the journal,
/// and the lease of the broker that writes it.
const ORDER_PATH: [&str; 2] = ["orders", "leader"];

/// How long one ask for a stream's leader may take (a stream electing
/// does not answer).
const ASK: Duration = Duration::from_secs(1);

/// The server name leading `bucket`'s stream; `None` while it elects one,
/// or when no answer comes within [`ASK`].
pub(super) async fn leader_of(observer: &Bus, bucket: &str) -> Option<String> {
    let stream = format!("KV_{PREFIX}_{bucket}");
    let p = tokio::time::timeout(ASK, observer.placement(&stream)).await;
    p.ok()?.ok()?.leader
}

/// The streams a killed node led, and when each had a new leader.
#[derive(Default)]
pub(super) struct Elections {
    /// Bucket names (`orders`, ...) the node led when it was killed.
    pub(super) led: Vec<String>,
    /// Bucket names whose leader could not be read before the kill.
    pub(super) unknown: Vec<String>,
    /// Bucket name → ms from the kill until another node led its stream.
    pub(super) elected_ms: BTreeMap<String, u64>,
    /// When the node was killed (wall clock, ms).
    pub(super) killed_ms: u64,
    /// Set once the node runs again: then it may lead again too.
    pub(super) restarted: bool,
    /// The nodes killed.
    nodes: Vec<String>,
    observer: Option<Bus>,
}

impl Elections {
    /// Notes which watched buckets one of `nodes` leads now, just before
    /// the kill (then set [`Elections::killed_ms`]); `orders` when the
    /// victims are known to lead it.
    pub(super) async fn before_kill(
        observer: Bus,
        nodes: &[String],
        lead_orders: bool,
    ) -> Elections {
        let asks = WATCHED.map(|b| {
            let observer = &observer;
            async move { (b, leader_of(observer, b).await) }
        });
        let (mut led, mut unknown) = (Vec::new(), Vec::new());
        for (bucket, leader) in join_all(asks).await {
            match leader {
                Some(l) if nodes.contains(&l) => led.push(bucket.to_string()),
                Some(_) => {}
                None if bucket == "orders" && lead_orders => led.push(bucket.to_string()),
                None => unknown.push(bucket.to_string()),
            }
        }
        Elections {
            led,
            unknown,
            nodes: nodes.to_vec(),
            observer: Some(observer),
            ..Default::default()
        }
    }

    /// Asks each stream not yet re-elected for its leader; each answer is
    /// timed when it comes.
    pub(super) async fn poll(&mut self) {
        let Some(observer) = &self.observer else {
            return;
        };
        let (nodes, restarted, killed_ms) = (&self.nodes, self.restarted, self.killed_ms);
        let pending = (self.led.iter()).filter(|b| !self.elected_ms.contains_key(*b));
        let asks = pending.map(|b| async move {
            let leader = leader_of(observer, b).await;
            let elected = leader.is_some_and(|l| restarted || !nodes.contains(&l));
            elected.then(|| (b.clone(), now_ms().saturating_sub(killed_ms)))
        });
        let found: Vec<_> = join_all(asks).await.into_iter().flatten().collect();
        self.elected_ms.extend(found);
    }

    /// When (ms from the kill) the order path's streams the node led all
    /// had new leaders: 0 when it led none, `None` while one has not, or
    /// when one's leader could not be read before the kill.
    pub(super) fn order_path_ms(&self) -> Option<u64> {
        if (self.unknown.iter()).any(|b| ORDER_PATH.contains(&b.as_str())) {
            return None;
        }
        let on_path = self.led.iter().filter(|b| ORDER_PATH.contains(&b.as_str()));
        on_path
            .map(|b| self.elected_ms.get(b).copied())
            .try_fold(0, |max, ms| Some(max.max(ms?)))
    }

    /// The longest election among the streams the node led; `None` when it
    /// led none, or one had not elected by the end of the round.
    pub(super) fn longest_ms(&self) -> Option<u64> {
        let all = self.led.iter().map(|b| self.elected_ms.get(b).copied());
        all.collect::<Option<Vec<u64>>>()?.into_iter().max()
    }
}

/// The part of the stall Baton added after JetStream could store an order
/// again: from `elected_ms` (the end of the elections of the order path's
/// streams the node led, as ms from the kill: [`Elections::order_path_ms`])
/// to the first order accepted after it. `accepted_ms` are wall clock
/// times; `None` without such an order or such an end.
pub(super) fn baton_part(
    accepted_ms: &[u64],
    killed_ms: u64,
    elected_ms: Option<u64>,
) -> Option<u64> {
    first_after(accepted_ms, killed_ms + elected_ms?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn baton_part_runs_from_the_order_paths_elections_to_the_next_accepted() {
        let mut e = Elections {
            led: led(&["orders", "leader", "fired"]),
            ..Default::default()
        };
        e.elected_ms.insert("orders".into(), 5200);
        assert_eq!(e.order_path_ms(), None, "the lease's stream still elects");
        e.elected_ms.insert("leader".into(), 6100);
        // the fired bucket is not on an order's path
        assert_eq!(e.order_path_ms(), Some(6100));
        // killed at 1000; orders accepted until the lease ran out, then at 7400
        let accepted = [900, 1100, 2500, 7400, 7500];
        assert_eq!(baton_part(&accepted, 1000, e.order_path_ms()), Some(300));
        // a node leading none of them: from the kill
        let fired = Elections {
            led: led(&["fired"]),
            ..Default::default()
        };
        assert_eq!(fired.order_path_ms(), Some(0));
        assert_eq!(
            baton_part(&accepted, 1000, fired.order_path_ms()),
            Some(100)
        );
        // the lease's leader unread before the kill: unknown
        let unread = Elections {
            unknown: led(&["leader"]),
            ..Default::default()
        };
        assert_eq!(unread.order_path_ms(), None);
        // no election seen, or no order accepted after it: unknown
        assert_eq!(baton_part(&accepted, 1000, None), None);
        assert_eq!(baton_part(&accepted[..3], 1000, Some(6100)), None);
    }

    #[test]
    fn the_longest_election_needs_every_led_stream_elected() {
        let mut e = Elections {
            led: led(&["orders", "leader"]),
            ..Default::default()
        };
        e.elected_ms.insert("orders".into(), 4100);
        assert_eq!(e.longest_ms(), None);
        e.elected_ms.insert("leader".into(), 7300);
        assert_eq!(e.longest_ms(), Some(7300));
        assert_eq!(Elections::default().longest_ms(), None);
    }
}
