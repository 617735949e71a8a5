//! The figures of `baton bench cluster`, the pure arithmetic behind them
//! (gaps between times, slots run twice) and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scheduler::SchedulerMove;
use crate::bench::broker::ledger::Tally;

/// Which node of the orders bucket's stream a round kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(in crate::bench) enum Victim {
    /// The node leading `KV_<prefix>_orders`.
    Leader,
    /// A node following it.
    Follower,
    /// Its leader and a follower at once: JetStream has no quorum.
    Quorum,
}

impl Victim {
    /// Rounds alternate: the leader first, then a follower.
    pub(in crate::bench) fn of_round(round: usize) -> Victim {
        if round % 2 == 1 {
            Victim::Leader
        } else {
            Victim::Follower
        }
    }

    pub(in crate::bench) fn label(self) -> &'static str {
        match self {
            Victim::Leader => "leader",
            Victim::Follower => "follower",
            Victim::Quorum => "quorum",
        }
    }
}

/// What one node kill measured; times in ms from the kill.
#[derive(Debug, Clone, Serialize)]
pub(in crate::bench) struct Round {
    pub(in crate::bench) round: usize,
    pub(in crate::bench) victim: Victim,
    /// The killed node's server name (both, `+`-joined, for `quorum`).
    pub(in crate::bench) node: String,
    /// When the node was killed and started again (wall clock, ms).
    pub(in crate::bench) killed_at_ms: u64,
    pub(in crate::bench) restarted_at_ms: u64,
    /// The next order accepted after the kill.
    pub(in crate::bench) next_accepted_ms: Option<u64>,
    /// The next order finished after the kill.
    pub(in crate::bench) next_finished_ms: Option<u64>,
    /// Longest time no order was accepted, from a second before the kill
    /// until the restarted node had caught up.
    pub(in crate::bench) stall_ms: u64,
    /// Longest time between two runs of the 1 s trigger over the same span.
    pub(in crate::bench) trigger_gap_ms: Option<u64>,
    /// Whether the restarted node became a current replica of the orders
    /// stream, and how long after its restart.
    pub(in crate::bench) caught_up: bool,
    pub(in crate::bench) catch_up_ms: Option<u64>,
    /// The buckets (`orders`, `leader`, ...: `elections::WATCHED`) whose stream
    /// the killed node led, and for each the ms until another node led it.
    pub(in crate::bench) led: Vec<String>,
    pub(in crate::bench) elected_ms: BTreeMap<String, u64>,
    /// The longest of those elections: JetStream's own part of the stall.
    pub(in crate::bench) election_ms: Option<u64>,
    /// The next accepted order after the order path's streams elected
    /// their leaders: the part of the stall Baton adds.
    pub(in crate::bench) baton_ms: Option<u64>,
    /// Orders accepted while the node was down, from half a second after
    /// the kill (a write stored just before it may be confirmed after):
    /// none may be without quorum, as JetStream stores nothing then.
    pub(in crate::bench) accepted_while_down: usize,
    /// Follower rounds: the brokers' lease stream's leader was put on the
    /// victim before the kill (`scatter.rs`), and the ms until the active
    /// broker had moved every watched stream's leader off it again.
    pub(in crate::bench) scattered: bool,
    pub(in crate::bench) colocated_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(in crate::bench) struct Report {
    pub(in crate::bench) scenario: &'static str,
    pub(in crate::bench) nodes: usize,
    pub(in crate::bench) replicas: usize,
    pub(in crate::bench) brokers: usize,
    pub(in crate::bench) agents: usize,
    pub(in crate::bench) subagents: usize,
    pub(in crate::bench) rate: f64,
    pub(in crate::bench) down_ms: u64,
    pub(in crate::bench) rounds: Vec<Round>,
    /// The Scheduler agent's SIGKILLs, after the node rounds.
    pub(in crate::bench) scheduler_moves: Vec<SchedulerMove>,
    pub(in crate::bench) tally: Tally,
    /// Trigger slots run more than once, and slots run at all.
    pub(in crate::bench) slots_twice: usize,
    pub(in crate::bench) slots_run: usize,
    pub(in crate::bench) rejected: BTreeMap<String, usize>,
    pub(in crate::bench) elapsed_s: f64,
}

/// The longest gap between consecutive `times` (sorted or not) that falls
/// in `from..=to`, counting the edges of the span as times too.
pub(in crate::bench) fn longest_gap(times: &[u64], from: u64, to: u64) -> u64 {
    let mut inside: Vec<u64> = times
        .iter()
        .copied()
        .filter(|t| (from..=to).contains(t))
        .collect();
    inside.push(from);
    inside.push(to);
    inside.sort_unstable();
    inside.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// The first of `times` at or after `from`, as ms after it.
pub(in crate::bench) fn first_after(times: &[u64], from: u64) -> Option<u64> {
    times.iter().filter(|t| **t >= from).min().map(|t| t - from)
}

/// The trigger's evidence: one line `<slot ms> <run ms>` per run. Returns
/// the run times, slots run more than once, and distinct slots run.
pub(in crate::bench) fn read_slots(text: &str) -> (Vec<u64>, usize, usize) {
    let mut runs = Vec::new();
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(slot)), Some(Ok(at))) = (fields.next(), fields.next()) {
            *per_slot.entry(slot).or_default() += 1;
            runs.push(at);
        }
    }
    let twice = per_slot.values().filter(|n| **n > 1).count();
    (runs, twice, per_slot.len())
}

/// The run times of the slots due at or after `from_ms`, from the same
/// lines as [`read_slots`].
pub(in crate::bench) fn runs_of_slots_from(text: &str, from_ms: u64) -> Vec<u64> {
    let lines = text.lines().map(|l| {
        let mut fields = l.split_whitespace().map(str::parse::<u64>);
        (fields.next(), fields.next())
    });
    let runs = lines.filter_map(|fields| match fields {
        (Some(Ok(slot)), Some(Ok(at))) if slot >= from_ms => Some(at),
        _ => None,
    });
    runs.collect()
}

fn opt(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |v| v.to_string())
}

pub(in crate::bench) fn print_table(r: &Report) {
    println!(
        "baton bench cluster: {} nodes, replicas {}, {} brokers, {} agents, {} subagents, {} orders/s, node down {} ms",
        r.nodes, r.replicas, r.brokers, r.agents, r.subagents, r.rate, r.down_ms
    );
    println!(
        "{:>5} {:>8} {:>17} {:>10} {:>10} {:>8} {:>11} {:>9} {:>10} {:>9} {:>22} {:>9} {:>9} {:>9}",
        "round",
        "killed",
        "node",
        "accept ms",
        "finish ms",
        "stall ms",
        "trig gap ms",
        "caught up",
        "catch ms",
        "moved ms",
        "it led",
        "elect ms",
        "baton ms",
        "acc down"
    );
    for x in &r.rounds {
        println!(
            "{:>5} {:>8} {:>17} {:>10} {:>10} {:>8} {:>11} {:>9} {:>10} {:>9} {:>22} {:>9} {:>9} {:>9}",
            x.round,
            x.victim.label(),
            x.node,
            opt(x.next_accepted_ms),
            opt(x.next_finished_ms),
            x.stall_ms,
            opt(x.trigger_gap_ms),
            if x.caught_up { "yes" } else { "NO" },
            opt(x.catch_up_ms),
            if x.scattered {
                (x.colocated_ms).map_or("NO".into(), |v| v.to_string())
            } else {
                "-".into()
            },
            if x.led.is_empty() {
                "-".into()
            } else {
                x.led.join(",")
            },
            opt(x.election_ms),
            opt(x.baton_ms),
            x.accepted_while_down,
        );
    }
    println!("moved ms: follower rounds put the brokers' lease stream's leader on the victim first; ms until the active broker had moved it back beside the orders stream's leader (NO: never)");
    println!("it led: the buckets whose stream the node led; elect ms: until all had a new leader (nats-server's Raft, 4-9 s after a leader dies; for quorum from the kill, as none starts before the nodes are back); baton ms: from the end of the orders and leader streams' elections (or the kill) to the next accepted order; acc down: orders accepted from 0.5 s after the kill until the restart");
    for m in &r.scheduler_moves {
        println!(
            "Scheduler {} killed: {} took the role after {} ms; the trigger ran {} ms after the kill (longest gap {} ms)",
            m.killed,
            m.successor.as_deref().unwrap_or("no agent"),
            opt(m.moved_ms),
            opt(m.next_fire_ms),
            opt(m.trigger_gap_ms)
        );
    }
    let t = &r.tally;
    println!(
        "orders: {} submitted, {} accepted, {} succeeded, {} lost, {} executed twice, {} never accepted",
        t.submitted, t.accepted, t.succeeded, t.lost, t.executed_twice, t.never_accepted
    );
    println!(
        "trigger: {} slots run, {} run twice",
        r.slots_run, r.slots_twice
    );
    for (error, n) in &r.rejected {
        println!("refused {n}x: {error}");
    }
    println!("elapsed {:.1} s", r.elapsed_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_span_edges() {
        assert_eq!(longest_gap(&[10, 20, 50], 0, 60), 30);
        assert_eq!(longest_gap(&[], 0, 60), 60);
        assert_eq!(longest_gap(&[5, 100], 10, 40), 30);
    }

    #[test]
    fn first_after_is_relative_to_the_kill() {
        assert_eq!(first_after(&[5, 30, 12], 10), Some(2));
        assert_eq!(first_after(&[5], 10), None);
    }

    #[test]
    fn slots_run_twice_are_counted_and_bad_lines_skipped() {
        let (runs, twice, slots) = read_slots("1000 1005\n2000 2010\n2000 2600\nnoise\n");
        assert_eq!(runs, vec![1005, 2010, 2600]);
        assert_eq!((twice, slots), (1, 2));
    }

    #[test]
    fn runs_of_later_slots_leave_out_earlier_slots_run_late() {
        let text = "1000 1005\n2000 2900\n3000 3010\nnoise\n";
        assert_eq!(runs_of_slots_from(text, 2500), vec![3010]);
        assert_eq!(runs_of_slots_from(text, 2000), vec![2900, 3010]);
    }

    #[test]
    fn rounds_alternate_leader_and_follower() {
        assert_eq!(Victim::of_round(1), Victim::Leader);
        assert_eq!(Victim::of_round(2), Victim::Follower);
    }
}
