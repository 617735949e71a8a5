//! The figures of `baton bench workflow` and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bench::report::{print_spread, Latency};

#[derive(Debug, Serialize)]
pub(super) struct WorkflowReport {
    pub(super) scenario: &'static str,
    pub(super) orders: usize,
    pub(super) concurrency: usize,
    pub(super) steps: usize,
    pub(super) step_ms: u64,
    pub(super) subagents: usize,
    pub(super) capacity: u32,
    pub(super) finished: usize,
    pub(super) succeeded: usize,
    pub(super) failed: usize,
    pub(super) unfinished: usize,
    pub(super) submit_errors: usize,
    /// Orders whose record could not be read afterwards.
    pub(super) unread: usize,
    pub(super) elapsed_s: f64,
    pub(super) orders_per_s: f64,
    /// Submit to the order's `finished` event.
    pub(super) duration: Latency,
    /// Pairs of consecutive steps measured for the hand-off.
    pub(super) handoffs: usize,
    /// Pairs left out because the later step ran more than once (its start
    /// is the rerun's, not the hand-off's).
    pub(super) handoffs_skipped: usize,
    /// Start of step k+1 minus the end of step k.
    pub(super) handoff: Latency,
    /// Pairs of consecutive succeeded steps with both subagents known.
    pub(super) step_pairs: usize,
    /// Of those, the pairs that ran on different subagents.
    pub(super) other_subagent: usize,
    pub(super) other_subagent_pct: f64,
    /// Step tasks started per subagent, from the step job's events.
    pub(super) step_tasks: BTreeMap<String, usize>,
    /// From a step's last act (its marker line) to its subagent holding the
    /// result (and handing it to its reaper): a subagent killed within this
    /// window loses the result, and the step runs again.
    pub(super) result_window: Latency,
    pub(super) kill: Option<KillReport>,
}

#[derive(Debug, Serialize)]
pub(super) struct KillReport {
    pub(super) victim: String,
    /// Orders submitted when it was killed.
    pub(super) after_submitted: usize,
    /// Step tasks it ran when it was killed (as its events told).
    pub(super) steps_running: usize,
    /// (order, step) pairs that started more than one task: another step
    /// attempt, or a task run again by its step order.
    pub(super) steps_run_again: usize,
    /// Orders not succeeded within the timeout.
    pub(super) orders_lost: usize,
    /// Completed runs beyond one, over all (order, step) pairs. A step whose
    /// subagent is killed after the step's process ended but before its
    /// result reached the broker runs again (its result died with the
    /// subagent), so this can be non-zero without any fault.
    pub(super) ran_twice: usize,
}

pub(super) fn print_table(r: &WorkflowReport) {
    println!("baton bench workflow");
    println!(
        "  orders            {} ({} in flight, {} steps of {} ms, {} subagents x {} slots, round-robin)",
        r.orders, r.concurrency, r.steps, r.step_ms, r.subagents, r.capacity
    );
    println!(
        "  finished          {} ({} succeeded, {} failed, {} unfinished, {} submit errors)",
        r.finished, r.succeeded, r.failed, r.unfinished, r.submit_errors
    );
    println!("  elapsed           {:.2} s", r.elapsed_s);
    println!(
        "  throughput        {:.2} workflow orders/s",
        r.orders_per_s
    );
    print_spread("duration", &r.duration, 1);
    println!(
        "  hand-off          {} step pairs ({} skipped: next step ran again)",
        r.handoffs, r.handoffs_skipped
    );
    print_spread("hand-off", &r.handoff, 1);
    println!(
        "  result window     p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (a step's last act to its subagent holding the result)",
        r.result_window.p50_ms, r.result_window.p99_ms, r.result_window.max_ms
    );
    println!(
        "  other subagent    {:.1}% ({} of {} consecutive steps)",
        r.other_subagent_pct, r.other_subagent, r.step_pairs
    );
    let tasks: Vec<String> = r
        .step_tasks
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    println!("  step tasks        {}", tasks.join(", "));
    if r.unread > 0 {
        println!("  unread records    {}", r.unread);
    }
    if let Some(k) = &r.kill {
        println!(
            "  killed            {} ({} steps running, {} orders submitted)",
            k.victim, k.steps_running, k.after_submitted
        );
        println!("  steps run again   {}", k.steps_run_again);
        println!("  orders lost       {}", k.orders_lost);
        println!(
            "  completed twice   {} (a step ended just before its subagent was killed, result lost with it)",
            k.ran_twice
        );
    }
}
