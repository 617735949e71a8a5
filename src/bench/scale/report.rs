//! The figures of `bench scale` and its table.

use serde::Serialize;

use super::procs::{Spread, SubagentMemory};
use crate::bench::report::{print_spread, Latency, SpreadTable};

/// What one window (idle, or the steady stream) cost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    pub seconds: f64,
    /// Subagent heartbeats published (and handled by the broker) per second.
    pub heartbeats_per_s: f64,
    /// Percent of one core.
    pub broker_cpu_percent: f64,
    pub broker_rss_mib: f64,
    pub nats_cpu_percent: f64,
    pub nats_rss_mib: f64,
    pub orders_per_s: f64,
    /// All subagents together (their tasks not included), percent of one core.
    pub subagents_cpu_percent: f64,
    /// Times each subagent (its threads) went to sleep and woke, per second.
    pub subagent_wakeups_per_s: f64,
}

/// Subagents killed with SIGKILL and the times from each kill.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Kills {
    pub killed: usize,
    pub lost_measured: usize,
    pub rerun_measured: usize,
    /// To the broker declaring it lost.
    pub to_lost: Latency,
    /// To its task starting on another subagent.
    pub to_rerun: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub subagents: usize,
    pub heartbeat_interval_ms: u64,
    pub idle_heartbeat_interval_ms: u64,
    pub in_flight: usize,
    pub task_ms: u64,
    /// From the first subagent spawned to the last one available.
    pub startup_s: f64,
    pub idle: Window,
    pub steady: Window,
    pub orders_finished: usize,
    pub orders_failed: usize,
    pub submit_errors: usize,
    pub unfinished: usize,
    /// From `accepted` to the first `started`, during the steady stream.
    pub dispatch: Latency,
    pub dispatch_measured: usize,
    /// Subagents declared lost that were not killed: must be 0.
    pub false_losses: usize,
    /// Per subagent with its reaper, before the stream (idle).
    pub idle_memory: SubagentMemory,
    /// Per subagent with its reaper, at the end of the stream.
    pub busy_memory: SubagentMemory,
    /// Peak memory in use on the machine during the stream.
    pub machine_used_mib: f64,
    pub kills: Kills,
    pub load_average: Option<f64>,
    pub elapsed_s: f64,
}

/// A row of the windows' table: label, figure, unit.
type WindowRow = (&'static str, fn(&Window) -> f64, &'static str);
/// A row of the memory table: label, figure.
type MemoryRow = (&'static str, fn(&SubagentMemory) -> Spread);

pub fn print_table(r: &ScaleReport) {
    println!(
        "bench scale: {} subagents (capacity 1), heartbeat {} ms ({} ms idle), {} in flight, tasks of {} ms",
        r.subagents, r.heartbeat_interval_ms, r.idle_heartbeat_interval_ms, r.in_flight, r.task_ms
    );
    println!("  startup           {:.1} s (all available)", r.startup_s);
    println!();
    println!("  {:<26}{:>12}{:>12}", "", "idle", "stream");
    let rows: [WindowRow; 8] = [
        ("heartbeats/s", |w| w.heartbeats_per_s, ""),
        ("broker CPU", |w| w.broker_cpu_percent, "%"),
        ("broker RSS", |w| w.broker_rss_mib, "MiB"),
        ("nats-server CPU", |w| w.nats_cpu_percent, "%"),
        ("nats-server RSS", |w| w.nats_rss_mib, "MiB"),
        ("all subagents CPU", |w| w.subagents_cpu_percent, "%"),
        ("wakeups/s per subagent", |w| w.subagent_wakeups_per_s, ""),
        ("orders/s", |w| w.orders_per_s, ""),
    ];
    for (label, value, unit) in rows {
        let label = format!("{label} {unit}");
        println!(
            "  {label:<26}{:>12.1}{:>12.1}",
            value(&r.idle),
            value(&r.steady)
        );
    }
    println!();
    println!(
        "  orders            {} finished, {} failed, {} unfinished, {} submit errors",
        r.orders_finished, r.orders_failed, r.unfinished, r.submit_errors
    );
    println!("  false losses      {} (must be 0)", r.false_losses);
    println!(
        "  machine memory    {:.0} MiB in use (peak during the stream)",
        r.machine_used_mib
    );
    println!();
    println!(
        "  per subagent with its reaper ({} measured idle, {} busy)",
        r.idle_memory.measured, r.busy_memory.measured
    );
    println!("  {:<26}{:>12}{:>12}", "MiB, mean / max", "idle", "stream");
    let memory: [MemoryRow; 5] = [
        ("subagent RSS", |m| m.subagent_rss),
        ("reaper RSS", |m| m.reaper_rss),
        ("both RSS", |m| m.total_rss),
        ("both PSS", |m| m.total_pss),
        ("both private (RssAnon)", |m| m.total_anon),
    ];
    let shown = |s: Spread| {
        format!(
            "{:.1}/{:.1}",
            s.mean_kib / 1024.0,
            s.max_kib as f64 / 1024.0
        )
    };
    for (label, of) in memory {
        println!(
            "  {label:<26}{:>12}{:>12}",
            shown(of(&r.idle_memory)),
            shown(of(&r.busy_memory))
        );
    }
    println!();
    let table = SpreadTable {
        label: 24,
        count: 10,
    };
    table.print_kills(
        r.kills.killed,
        &[
            ("lost declared", &r.kills.to_lost, r.kills.lost_measured),
            (
                "task running elsewhere",
                &r.kills.to_rerun,
                r.kills.rerun_measured,
            ),
        ],
    );
    println!();
    println!(
        "  dispatch, accepted to started ({} orders)",
        r.dispatch_measured
    );
    print_spread("dispatch", &r.dispatch, 0);
    match r.load_average {
        Some(load) => println!("  load average      {load:.2} (1 min, at the end)"),
        None => println!("  load average      n/a"),
    }
    println!("  bench took        {:.1} s", r.elapsed_s);
}
