//! The pure bookkeeping of `baton bench failover-broker`: the orders the
//! client submitted and what became of them, the brokers as their
//! heartbeats tell, and the tally at the end. No IO and no clock reads: the
//! callers pass the time in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bus::BusError;
use crate::protocol::{BrokerRole, ErrorCode, OrderState};

/// One order as the client sees it: sent under `request_id` until accepted.
#[derive(Debug, Clone)]
pub(in crate::bench) struct Order {
    pub(in crate::bench) request_id: String,
    /// When its first submit was sent.
    pub(in crate::bench) first_sent: Instant,
    /// Submits sent after the first.
    pub(in crate::bench) retries: u32,
    pub(in crate::bench) order_id: Option<String>,
    /// The client gave up on it before any broker accepted it.
    pub(in crate::bench) gave_up: bool,
    /// A broker answered that it knows no such order.
    pub(in crate::bench) not_found: bool,
    pub(in crate::bench) state: Option<OrderState>,
}

/// Every order submitted, and which order id is which.
#[derive(Debug, Default)]
pub(in crate::bench) struct Ledger {
    pub(in crate::bench) orders: Vec<Order>,
    by_id: HashMap<String, usize>,
    /// Submits answered `duplicate`: a retry found the order made earlier.
    pub(in crate::bench) duplicates: usize,
}

impl Ledger {
    /// A new order; returns its index.
    pub(in crate::bench) fn add(&mut self, request_id: String, now: Instant) -> usize {
        self.orders.push(Order {
            request_id,
            first_sent: now,
            retries: 0,
            order_id: None,
            gave_up: false,
            not_found: false,
            state: None,
        });
        self.orders.len() - 1
    }

    pub(in crate::bench) fn accepted(&mut self, index: usize, order_id: String, duplicate: bool) {
        self.duplicates += usize::from(duplicate);
        self.by_id.insert(order_id.clone(), index);
        self.orders[index].order_id = Some(order_id);
    }

    pub(in crate::bench) fn index_of(&self, order_id: &str) -> Option<usize> {
        self.by_id.get(order_id).copied()
    }

    /// Records a final state; other states are ignored.
    pub(in crate::bench) fn finished(&mut self, order_id: &str, state: OrderState) {
        if let (Some(i), true) = (self.index_of(order_id), state.is_final()) {
            self.orders[i].state = Some(state);
        }
    }

    /// Accepted orders without a final state yet.
    pub(in crate::bench) fn unfinished(&self) -> Vec<String> {
        self.orders
            .iter()
            .filter(|o| o.state.is_none())
            .filter_map(|o| o.order_id.clone())
            .collect()
    }

    /// Orders neither accepted nor given up on.
    pub(in crate::bench) fn unaccepted(&self) -> usize {
        self.orders
            .iter()
            .filter(|o| o.order_id.is_none() && !o.gave_up)
            .count()
    }

    /// What became of the orders, judged against the marker counts.
    pub(in crate::bench) fn tally(&self, markers: &HashMap<String, usize>) -> Tally {
        let mut t = Tally {
            submitted: self.orders.len(),
            duplicate_replies: self.duplicates,
            ..Tally::default()
        };
        for o in &self.orders {
            t.retries += o.retries as usize;
            let Some(id) = &o.order_id else {
                t.never_accepted += 1;
                continue;
            };
            t.accepted += 1;
            let runs = markers.get(id).copied().unwrap_or(0);
            t.executed_twice += usize::from(runs > 1);
            match o.state {
                None => {
                    t.unfinished += 1;
                    t.not_found += usize::from(o.not_found);
                }
                Some(OrderState::Succeeded) => {
                    t.succeeded += 1;
                    t.succeeded_unexecuted += usize::from(runs == 0);
                }
                Some(_) => t.failed += 1,
            }
        }
        t.lost = t.never_accepted + t.unfinished;
        t.unknown_markers = markers
            .keys()
            .filter(|id| !self.by_id.contains_key(*id))
            .count();
        t
    }
}

/// What became of the orders.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(in crate::bench) struct Tally {
    pub(in crate::bench) submitted: usize,
    pub(in crate::bench) accepted: usize,
    /// Submits sent again (same request id) after a timeout, no responders
    /// or `unavailable`.
    pub(in crate::bench) retries: usize,
    pub(in crate::bench) duplicate_replies: usize,
    pub(in crate::bench) succeeded: usize,
    /// Failed or cancelled.
    pub(in crate::bench) failed: usize,
    /// Never accepted within the give-up time.
    pub(in crate::bench) never_accepted: usize,
    /// Accepted but not final by the end of the drain.
    pub(in crate::bench) unfinished: usize,
    /// Of those, unknown to the active broker.
    pub(in crate::bench) not_found: usize,
    /// `never_accepted + unfinished`.
    pub(in crate::bench) lost: usize,
    /// Orders whose task ran more than once.
    pub(in crate::bench) executed_twice: usize,
    /// Orders that succeeded with no run of their task on record.
    pub(in crate::bench) succeeded_unexecuted: usize,
    /// Order ids in the marker file that no accepted submit returned.
    pub(in crate::bench) unknown_markers: usize,
}

/// Counts the lines of the marker file: one `<order id>` per task run.
pub(in crate::bench) fn count_markers(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *counts.entry(id.to_string()).or_default() += 1;
    }
    counts
}

/// Whether a submit that failed so should be sent again with the same
/// request id: the broker may be changing hands.
pub(in crate::bench) fn retryable(error: &BusError) -> bool {
    match error {
        BusError::NoResponders { .. } | BusError::TimedOut { .. } => true,
        BusError::Transport { .. } => true,
        BusError::Remote(reply) => {
            matches!(reply.error.code, ErrorCode::Unavailable | ErrorCode::Busy)
        }
        BusError::Connect { .. } | BusError::Decode { .. } | BusError::Denied { .. } => false,
    }
}

/// How long order `n`'s task sleeps: spread over `min..=max` milliseconds
/// by a fixed hash of `n` (splitmix64), so runs are repeatable.
pub(in crate::bench) fn task_ms(n: u64, min: u64, max: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    min + z % (max.saturating_sub(min) + 1)
}

/// One broker as its latest heartbeat tells.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heard {
    role: BrokerRole,
    epoch: u64,
    at: Instant,
}

/// The brokers as their heartbeats tell.
#[derive(Debug, Default)]
pub(in crate::bench) struct Brokers {
    heard: BTreeMap<String, Heard>,
}

impl Brokers {
    pub(in crate::bench) fn heard(&mut self, id: &str, role: BrokerRole, epoch: u64, now: Instant) {
        let heard = Heard {
            role,
            epoch,
            at: now,
        };
        self.heard.insert(id.to_string(), heard);
    }

    /// The one broker heard as active within `alive`, with its epoch, when
    /// every broker of `ids` was heard within `alive` and exactly one of them
    /// is active.
    pub(in crate::bench) fn single_active(
        &self,
        ids: &[String],
        now: Instant,
        alive: Duration,
    ) -> Option<(String, u64)> {
        let live = |h: &&Heard| now.saturating_duration_since(h.at) < alive;
        if !ids
            .iter()
            .all(|id| self.heard.get(id).filter(live).is_some())
        {
            return None;
        }
        let mut active = self
            .heard
            .iter()
            .filter(|(_, h)| live(h) && h.role == BrokerRole::Active);
        match (active.next(), active.next()) {
            (Some((id, h)), None) => Some((id.clone(), h.epoch)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorReply;

    #[test]
    fn markers_count_runs_per_order() {
        let m = count_markers("a\nb\n\na\n c \n");
        assert_eq!(m.get("a"), Some(&2));
        assert_eq!(m.get("b"), Some(&1));
        assert_eq!(m.get("c"), Some(&1));
        assert!(count_markers("").is_empty());
    }

    #[test]
    fn the_tally_names_lost_doubled_and_unexecuted_orders() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for i in 0..6 {
            l.add(format!("r{i}"), now);
        }
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            l.accepted(i, id.to_string(), i == 1);
        }
        l.orders[0].retries = 2;
        l.finished("a", OrderState::Succeeded);
        l.finished("b", OrderState::Succeeded);
        l.finished("c", OrderState::Failed);
        l.finished("d", OrderState::Running);
        l.orders[3].not_found = true;
        l.orders[4].gave_up = true;
        assert_eq!(l.unfinished(), vec!["d".to_string()]);
        assert_eq!(l.unaccepted(), 1);
        let t = l.tally(&count_markers("a\na\nc\nzz\n"));
        assert_eq!(
            t,
            Tally {
                submitted: 6,
                accepted: 4,
                retries: 2,
                duplicate_replies: 1,
                succeeded: 2,
                failed: 1,
                never_accepted: 2,
                unfinished: 1,
                not_found: 1,
                lost: 3,
                executed_twice: 1,
                succeeded_unexecuted: 1,
                unknown_markers: 1,
            }
        );
    }

    #[test]
    fn submits_are_retried_only_while_the_broker_may_change_hands() {
        let subject = "p.api.submit".to_string();
        assert!(retryable(&BusError::NoResponders {
            subject: subject.clone()
        }));
        assert!(retryable(&BusError::TimedOut {
            subject,
            timeout: Duration::from_secs(1)
        }));
        let remote = |code| BusError::Remote(ErrorReply::new(code, "x"));
        assert!(retryable(&remote(ErrorCode::Unavailable)));
        assert!(!retryable(&remote(ErrorCode::UnknownJob)));
    }

    #[test]
    fn task_times_stay_in_range_and_spread() {
        let v: Vec<u64> = (0..1000).map(|n| task_ms(n, 100, 500)).collect();
        assert!(v.iter().all(|&ms| (100..=500).contains(&ms)));
        assert!(v.iter().any(|&ms| ms < 150) && v.iter().any(|&ms| ms > 450));
        assert_eq!(task_ms(7, 100, 500), task_ms(7, 100, 500));
        assert_eq!(task_ms(7, 300, 300), 300);
    }

    #[test]
    fn one_active_broker_among_live_ones() {
        let t0 = Instant::now();
        let alive = Duration::from_secs(1);
        let ids = vec!["b1".to_string(), "b2".to_string()];
        let mut b = Brokers::default();
        b.heard("b1", BrokerRole::Active, 3, t0);
        assert_eq!(b.single_active(&ids, t0, alive), None, "b2 unheard");
        b.heard("b2", BrokerRole::Standby, 0, t0);
        assert_eq!(b.single_active(&ids, t0, alive), Some(("b1".into(), 3)));
        // b1 falls silent; b2 takes over
        let t1 = t0 + Duration::from_secs(3);
        b.heard("b2", BrokerRole::Active, 9, t1);
        assert_eq!(b.single_active(&ids, t1, alive), None, "b1 silent");
        b.heard("b1", BrokerRole::Standby, 0, t1);
        assert_eq!(b.single_active(&ids, t1, alive), Some(("b2".into(), 9)));
        b.heard("b1", BrokerRole::Active, 10, t1);
        assert_eq!(b.single_active(&ids, t1, alive), None, "two active");
    }
}
