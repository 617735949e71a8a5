//! The figures of `baton bench failover-subagent`: what it reports, how it
//! reads the tasks' marker files, and the table it prints.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::SUBAGENTS;
use crate::bench::report::{ms_or_na, Latency};
use crate::bench::setup::{children_config, ms};

/// The failure-detection settings the cluster's processes run with.
#[derive(Debug, Serialize)]
pub(super) struct Settings {
    pub(super) subagent_heartbeat_ms: u64,
    pub(super) broker_check_ms: u64,
    pub(super) subagent_timeout_ms: u64,
    pub(super) orphan_timeout_ms: u64,
    pub(super) kill_grace_ms: u64,
}

impl Settings {
    /// What the children load: they inherit this process's environment.
    pub(super) fn load() -> anyhow::Result<Settings> {
        let c = children_config()?;
        Ok(Settings {
            subagent_heartbeat_ms: ms(c.subagent.heartbeat_interval),
            broker_check_ms: ms(c.broker.check_interval),
            subagent_timeout_ms: ms(c.broker.subagent_timeout),
            orphan_timeout_ms: ms(c.subagent.orphan_timeout),
            kill_grace_ms: ms(c.subagent.kill_grace),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "subagent heartbeat {} ms, broker check {} ms, subagent timeout {} ms, \
             orphan timeout {} ms, kill grace {} ms",
            self.subagent_heartbeat_ms,
            self.broker_check_ms,
            self.subagent_timeout_ms,
            self.orphan_timeout_ms,
            self.kill_grace_ms
        )
    }
}

#[derive(Debug, Serialize)]
pub(super) struct FailoverReport {
    pub(super) scenario: &'static str,
    pub(super) subagents: usize,
    pub(super) capacity: u32,
    pub(super) task_duration_ms: u64,
    pub(super) settings: Settings,
    pub(super) modes: Vec<ModeReport>,
    pub(super) elapsed_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct ModeReport {
    pub(super) mode: &'static str,
    /// How the deaths became known: `certificate` (the reaper certified
    /// them) or `fallback` (reaper killed too: the orphan timeout).
    pub(super) path: &'static str,
    /// Orders in flight at once.
    pub(super) concurrency: usize,
    /// Subagents killed.
    pub(super) rounds: usize,
    /// Kill to the broker's `lost` announcement, over the rounds it came.
    pub(super) lost_declared: Latency,
    pub(super) lost_declared_rounds: usize,
    /// Kill to the last of the victim's tasks starting on another subagent,
    /// over the rounds where all of them did.
    pub(super) rerun_started: Latency,
    pub(super) rerun_started_rounds: usize,
    /// The broker's reasons for the losses, counted.
    pub(super) lost_reasons: BTreeMap<String, usize>,
    /// Tasks the victims ran when killed.
    pub(super) lost_tasks: usize,
    /// Of those, started again on another subagent.
    pub(super) rerun_elsewhere: usize,
    /// Of those, not started again within the round's limit, or failed.
    pub(super) not_rerun: usize,
    /// `lost` announcements for subagents that were not killed.
    pub(super) other_lost: usize,
    pub(super) submitted: usize,
    pub(super) submit_errors: usize,
    pub(super) succeeded: usize,
    pub(super) failed: usize,
    /// Accepted but never finished.
    pub(super) unfinished: usize,
    /// Orders that ran to the end more than once, or overlapped a live copy.
    pub(super) ran_twice: usize,
    /// Copies that started while the task process of a previous copy of the
    /// order was alive.
    pub(super) overlaps: usize,
    /// Copies that started while processes of a previous copy's process
    /// group were alive (children of a killed task that outlived it).
    pub(super) stray_copies: usize,
    /// Orders started more than once: the victims' tasks, expected.
    pub(super) restarted_orders: usize,
    /// `started` events per subagent.
    pub(super) tasks_started: BTreeMap<String, usize>,
}

/// What the tasks' own markers say.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Markers {
    pub(super) ran_twice: usize,
    pub(super) overlaps: usize,
    pub(super) strays: usize,
    pub(super) restarted: usize,
}

/// Reads the `markers` file (`start|end <order> <pid> <ms>` lines), the
/// `overlaps` file (`<order> <old pid> <new pid>` lines) and the `strays`
/// file (`<order> <old pid> <new pid> <processes>` lines).
pub(super) fn judge(markers: &str, overlaps: &str, strays: &str) -> Markers {
    let (mut starts, mut ends) = (HashMap::<&str, usize>::new(), HashMap::<&str, usize>::new());
    for line in markers.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("start"), Some(order)) => *starts.entry(order).or_default() += 1,
            (Some("end"), Some(order)) => *ends.entry(order).or_default() += 1,
            _ => {}
        }
    }
    let overlapping: Vec<&str> = overlaps
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let twice: HashSet<&str> = ends
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&o, _)| o)
        .chain(overlapping.iter().copied())
        .collect();
    Markers {
        ran_twice: twice.len(),
        overlaps: overlapping.len(),
        strays: strays.lines().filter(|l| !l.trim().is_empty()).count(),
        restarted: starts.values().filter(|&&n| n > 1).count(),
    }
}

/// A spread a mode measured, with the rounds it was taken over.
type Spread = fn(&ModeReport) -> (&Latency, usize);

/// The spreads the table prints, by name.
const SPREADS: [(&str, Spread); 2] = [
    ("lost declared", |m| {
        (&m.lost_declared, m.lost_declared_rounds)
    }),
    ("rerun started", |m| {
        (&m.rerun_started, m.rerun_started_rounds)
    }),
];

pub(super) fn print_table(r: &FailoverReport) {
    let s = &r.settings;
    println!("baton bench failover-subagent");
    println!(
        "  cluster           {} subagents x {} slots, tasks of {} ms",
        r.subagents, r.capacity, r.task_duration_ms
    );
    println!("  settings          {}", s.describe());
    println!(
        "  target            certificate: rerun p50 under 100 ms; fallback: rerun after \
         orphan timeout + kill grace ({} ms) + heartbeat + 1 s margin; ran twice 0, overlaps 0",
        s.orphan_timeout_ms + s.kill_grace_ms
    );
    println!("  elapsed           {:.1} s", r.elapsed_s);
    let row = |label: &str, value: &dyn Fn(&ModeReport) -> String| {
        let cells: String = r
            .modes
            .iter()
            .map(|m| format!("{:>18}", value(m)))
            .collect();
        println!("  {label:<24}{cells}");
    };
    println!();
    row("mode", &|m| m.mode.to_string());
    row("proof of death", &|m| m.path.to_string());
    row("orders in flight", &|m| m.concurrency.to_string());
    row("rounds (kills)", &|m| m.rounds.to_string());
    for (what, spread) in SPREADS {
        for (i, name) in Latency::NAMES.into_iter().enumerate() {
            row(&format!("{what} {name}"), &|m| {
                let (latency, rounds) = spread(m);
                ms_or_na(latency.values()[i], rounds)
            });
        }
    }
    row("rounds measured", &|m| {
        format!("{} / {}", m.lost_declared_rounds, m.rerun_started_rounds)
    });
    row("tasks lost / rerun", &|m| {
        format!("{} / {}", m.lost_tasks, m.rerun_elsewhere)
    });
    row("tasks not rerun", &|m| m.not_rerun.to_string());
    row("ran twice", &|m| m.ran_twice.to_string());
    row("overlaps", &|m| m.overlaps.to_string());
    row("reruns with strays", &|m| m.stray_copies.to_string());
    row("orders submitted", &|m| m.submitted.to_string());
    row("orders succeeded", &|m| m.succeeded.to_string());
    row("orders failed", &|m| m.failed.to_string());
    row("orders unfinished", &|m| m.unfinished.to_string());
    row("submit errors", &|m| m.submit_errors.to_string());
    row("others declared lost", &|m| m.other_lost.to_string());
    for id in SUBAGENTS {
        row(&format!("tasks started {id}"), &|m| {
            m.tasks_started.get(id).copied().unwrap_or(0).to_string()
        });
    }
    let reasons: BTreeMap<&str, usize> = r
        .modes
        .iter()
        .flat_map(|m| m.lost_reasons.iter().map(|(k, v)| (k.as_str(), *v)))
        .fold(BTreeMap::new(), |mut acc, (k, v)| {
            *acc.entry(k).or_default() += v;
            acc
        });
    for (reason, n) in reasons {
        println!("  lost reason       {n} x {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_count_orders_that_ran_twice() {
        let markers = "start a 1 10\nend a 1 20\n\
                       start b 2 10\nstart b 3 30\nend b 3 40\n\
                       start c 4 10\nend c 4 20\nstart c 5 30\nend c 5 40\n\
                       start d 6 10\nstart d 7 15\nend d 6 20\nend d 7 25\n";
        let overlaps = "d 6 7\n";
        let strays = "b 2 3 1\nd 6 7 2\n";
        let m = judge(markers, overlaps, strays);
        assert_eq!(
            m,
            Markers {
                ran_twice: 2,
                overlaps: 1,
                strays: 2,
                restarted: 3
            }
        );
        assert_eq!(judge("", "", ""), Markers::default());
    }
}
