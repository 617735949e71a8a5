//! The pure parts of the metrics: where `--metrics-listen` listens, how
//! many distinct job and cluster names get a label of their own, and the
//! broker's queue per cluster. No IO, no clock: time is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The label a name gets once [`Bounded`] has given out all its own.
pub const OTHER: &str = "_other";

/// The `cluster` label of orders whose job names no cluster (every
/// subagent takes turns).
pub const ANY_CLUSTER: &str = "*";

/// Distinct job names (and, apart, cluster names) that get a label of
/// their own in one process; later names are counted under [`OTHER`], so a
/// deploy of thousands of jobs cannot grow a scrape without bound.
pub const MAX_NAMES: usize = 1000;

/// Hands out label values for names: each of the first `max` distinct names
/// keeps its own, every later one is [`OTHER`]. A name once given out stays
/// its own for the life of the process (a counter never moves to another
/// series).
#[derive(Debug, Clone)]
pub struct Bounded {
    max: usize,
    known: BTreeSet<String>,
}

impl Bounded {
    pub fn new(max: usize) -> Bounded {
        Bounded {
            max,
            known: BTreeSet::new(),
        }
    }

    /// The label value for `name`.
    pub fn label(&mut self, name: &str) -> String {
        if self.known.contains(name) {
            return name.to_string();
        }
        if self.known.len() < self.max {
            self.known.insert(name.to_string());
            return name.to_string();
        }
        OTHER.to_string()
    }
}

/// Where `--metrics-listen` (`metrics.listen`) serves: `HOST:PORT`, or a
/// bare `PORT` on 127.0.0.1 (never every interface unless asked for by
/// address, such as `0.0.0.0:9464`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("metrics listen address {text:?} is neither HOST:PORT (127.0.0.1:9464, [::1]:9464) nor a port (9464)")
    })
}

/// One queue's figures: orders waiting for a subagent, and how long the
/// oldest has waited since it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Queue {
    pub depth: u64,
    pub oldest_age_seconds: f64,
}

/// The queue of each cluster from the waiting orders (each with its job's
/// cluster, `None` for none, and when it was accepted); every name in
/// `clusters` (the deployed ones) is present, at zero when nothing waits.
pub fn queues<'a>(
    waiting: impl IntoIterator<Item = (Option<&'a str>, u64)>,
    clusters: impl IntoIterator<Item = &'a str>,
    now_ms: u64,
) -> BTreeMap<String, Queue> {
    let mut out: BTreeMap<String, Queue> = clusters
        .into_iter()
        .map(|c| (c.to_string(), Queue::default()))
        .collect();
    out.entry(ANY_CLUSTER.to_string()).or_default();
    for (cluster, accepted_at_ms) in waiting {
        let queue = out
            .entry(cluster.unwrap_or(ANY_CLUSTER).to_string())
            .or_default();
        queue.depth += 1;
        let age = now_ms.saturating_sub(accepted_at_ms) as f64 / 1000.0;
        if age > queue.oldest_age_seconds {
            queue.oldest_age_seconds = age;
        }
    }
    out
}

/// A task's outcome as a subagent sees it: `error` (it could not run),
/// `timed_out`, `killed` (cancelled, orphaned or drained), `succeeded`
/// (exit 0) or `failed` (any other exit or a signal).
pub fn task_outcome(
    exit_code: Option<i32>,
    timed_out: bool,
    killed: bool,
    error: bool,
) -> &'static str {
    if error {
        "error"
    } else if timed_out {
        "timed_out"
    } else if killed {
        "killed"
    } else if exit_code == Some(0) {
        "succeeded"
    } else {
        "failed"
    }
}

/// A slot the broker answered, as `(outcome, reason)`: skipped as a
/// `duplicate` (its order already existed: another Scheduler, or an
/// earlier one, fired it), else fired `on_time` or `late` (more than
/// `agent.lateness_tolerance` after its slot: caught up under its misfire
/// policy, or the Scheduler fell behind).
pub fn fired(duplicate: bool, late: bool) -> (&'static str, &'static str) {
    match (duplicate, late) {
        (true, _) => ("skipped", "duplicate"),
        (false, false) => ("fired", "on_time"),
        (false, true) => ("fired", "late"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_slot_is_skipped_and_a_late_one_fired_late() {
        assert_eq!(fired(true, true), ("skipped", "duplicate"));
        assert_eq!(fired(false, false), ("fired", "on_time"));
        assert_eq!(fired(false, true), ("fired", "late"));
    }

    #[test]
    fn a_task_outcome_names_the_first_cause() {
        assert_eq!(task_outcome(Some(0), false, false, false), "succeeded");
        assert_eq!(task_outcome(Some(3), false, false, false), "failed");
        assert_eq!(task_outcome(None, false, false, false), "failed");
        assert_eq!(task_outcome(None, true, true, false), "timed_out");
        assert_eq!(task_outcome(None, false, true, false), "killed");
        assert_eq!(task_outcome(None, true, false, true), "error");
    }

    #[test]
    fn the_first_names_keep_their_label_and_later_ones_share_one() {
        let mut b = Bounded::new(2);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label("b"), "b");
        assert_eq!(b.label("c"), OTHER);
        assert_eq!(b.label("a"), "a", "a name given out stays its own");
        assert_eq!(b.label("d"), OTHER);
    }

    #[test]
    fn a_bare_port_listens_on_localhost_only() {
        assert_eq!(
            parse_listen("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        let e = parse_listen("localhost:x").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn queues_count_per_cluster_with_the_oldest_age() {
        let waiting = [
            (Some("primary"), 1_000),
            (Some("primary"), 4_000),
            (None, 9_000),
        ];
        let q = queues(waiting, ["primary", "idle"], 10_000);
        assert_eq!(
            q["primary"],
            Queue {
                depth: 2,
                oldest_age_seconds: 9.0
            }
        );
        assert_eq!(
            q[ANY_CLUSTER],
            Queue {
                depth: 1,
                oldest_age_seconds: 1.0
            }
        );
        assert_eq!(q["idle"], Queue::default(), "deployed and idle: zero");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn an_order_accepted_after_now_is_no_negative_age() {
        let q = queues([(None, 5_000)], [], 1_000);
        assert_eq!(q[ANY_CLUSTER].oldest_age_seconds, 0.0);
    }
}
