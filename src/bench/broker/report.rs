//! The figures of `baton bench failover-broker` and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ledger::Tally;
use crate::bench::report::{Latency, SpreadTable};
use crate::bench::setup::{children_config, ms};

/// The leadership settings the brokers run with.
#[derive(Debug, Serialize)]
pub(super) struct Settings {
    pub(super) lease_ms: u64,
    pub(super) renew_interval_ms: u64,
    pub(super) heartbeat_ms: u64,
}

impl Settings {
    /// What the children load: they inherit this process's environment.
    pub(super) fn load() -> anyhow::Result<Settings> {
        let c = children_config()?;
        Ok(Settings {
            lease_ms: ms(c.broker.lease),
            renew_interval_ms: ms(c.broker.renew_interval),
            heartbeat_ms: ms(c.broker.heartbeat_interval),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "lease {} ms, renew every {} ms, broker heartbeat {} ms",
            self.lease_ms, self.renew_interval_ms, self.heartbeat_ms
        )
    }
}

/// Spread of one measurement over the rounds it was taken in.
#[derive(Debug, Default, Serialize)]
pub(super) struct Measured {
    #[serde(flatten)]
    pub(super) latency: Latency,
    pub(super) rounds: usize,
}

impl Measured {
    pub(super) fn of(mut values: Vec<f64>) -> Measured {
        Measured {
            rounds: values.len(),
            latency: Latency::of(&mut values),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) scenario: &'static str,
    pub(super) brokers: usize,
    pub(super) subagents: usize,
    pub(super) capacity: u32,
    /// Orders submitted per second.
    pub(super) rate: f64,
    pub(super) task_ms_min: u64,
    pub(super) task_ms_max: u64,
    pub(super) settings: Settings,
    /// Active brokers killed.
    pub(super) rounds: usize,
    /// Kill to another broker announcing itself active (`BrokerChanged`, or
    /// a heartbeat as active with a newer epoch).
    pub(super) new_active: Measured,
    /// Kill to the first accepted submit of an order first sent after it.
    pub(super) first_accepted: Measured,
    /// Kill to the first `started` event of an order first submitted after
    /// it: a dispatch by the new broker for certain.
    pub(super) first_dispatch: Measured,
    /// Kill to the first `started` event of any order (may be a task the
    /// killed broker dispatched just before it died).
    pub(super) first_started_any: Measured,
    #[serde(flatten)]
    pub(super) tally: Tally,
    /// Submits refused for good, by error.
    pub(super) rejected: BTreeMap<String, usize>,
    pub(super) elapsed_s: f64,
}

pub(super) fn print_table(r: &Report) {
    println!("baton bench failover-broker");
    println!(
        "  cluster           {} brokers, {} subagents x {} slots; {} orders/s of tasks sleeping {}-{} ms",
        r.brokers, r.subagents, r.capacity, r.rate, r.task_ms_min, r.task_ms_max
    );
    println!("  settings          {}", r.settings.describe());
    println!("  target            kill to new active p50 under 3000 ms; lost 0, executed twice 0, succeeded unexecuted 0");
    println!("  elapsed           {:.1} s", r.elapsed_s);
    let table = SpreadTable {
        label: 42,
        count: 8,
    };
    let rows = [
        ("new broker active", &r.new_active),
        ("first accept of an order sent after it", &r.first_accepted),
        (
            "first dispatch: started, order sent after",
            &r.first_dispatch,
        ),
        ("first started event, any order", &r.first_started_any),
    ];
    let rows = rows.map(|(label, m)| (label, &m.latency, m.rounds));
    table.print_kills(r.rounds, &rows);
    println!();
    let t = &r.tally;
    println!(
        "  orders submitted  {} ({} accepted; {} submits retried, {} answered duplicate)",
        t.submitted, t.accepted, t.retries, t.duplicate_replies
    );
    println!("  orders succeeded  {}", t.succeeded);
    println!("  orders failed     {}", t.failed);
    println!(
        "  orders lost       {} ({} never accepted, {} accepted but not final, {} of them unknown to the broker)",
        t.lost, t.never_accepted, t.unfinished, t.not_found
    );
    println!("  executed twice    {}", t.executed_twice);
    println!("  succeeded, never executed  {}", t.succeeded_unexecuted);
    if t.unknown_markers > 0 {
        println!(
            "  executed, never accepted   {} (order ids no submit returned)",
            t.unknown_markers
        );
    }
    for (error, n) in &r.rejected {
        println!("  refused           {n} x {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_counts_its_rounds() {
        let m = Measured::of(vec![300.0, 100.0, 200.0]);
        assert_eq!(m.rounds, 3);
        assert_eq!(m.latency.p50_ms, 200.0);
        assert_eq!(Measured::of(Vec::new()).rounds, 0);
    }
}
