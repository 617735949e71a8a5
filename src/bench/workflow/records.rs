//! What `baton bench workflow` reads once its orders are done: every
//! workflow order's record and the task attempts of its step orders, and
//! the figures taken from them and from the steps' marker lines (hand-offs,
//! changes of subagent, steps run again, results lost with a subagent).

use std::collections::{HashMap, HashSet};

use super::REQUEST;
use crate::bus::Bus;
use crate::protocol::*;

/// The workflow orders' records and the task attempts of their step orders.
#[derive(Default)]
pub(super) struct Records {
    pub(super) orders: Vec<OrderInfo>,
    /// Step order id -> tasks it started (its `attempt`).
    pub(super) tasks: HashMap<String, u32>,
}

/// Reads every workflow order and each step order of its history, one at a
/// time (bounded: one request per order and step attempt).
pub(super) async fn read_records(bus: &Bus, order_ids: &[String]) -> Records {
    let get = |order_id: &str| {
        let request = GetOrder {
            order_id: order_id.to_string(),
        };
        async move {
            bus.request::<_, OrderInfo>(bus.subjects().order_get(), &request, REQUEST)
                .await
                .inspect_err(
                    |e| tracing::warn!(order = %request.order_id, error = %e, "cannot read order"),
                )
                .ok()
        }
    };
    let mut records = Records::default();
    for id in order_ids {
        let Some(info) = get(id).await else { continue };
        for h in &info.history {
            if let Some(step_order) = get(&h.order_id).await {
                records.tasks.insert(h.order_id.clone(), step_order.attempt);
            }
        }
        records.orders.push(info);
    }
    records
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct StepFigures {
    pub(super) handoffs_ms: Vec<f64>,
    pub(super) handoffs_skipped: usize,
    pub(super) pairs: usize,
    pub(super) other_subagent: usize,
    pub(super) run_again: usize,
}

/// Hand-offs, changes of subagent and steps run again, from the histories.
pub(super) fn step_figures(records: &Records, steps: &[String]) -> StepFigures {
    let mut f = StepFigures::default();
    let tasks = |h: &StepAttempt| records.tasks.get(&h.order_id).copied().unwrap_or(1);
    for info in &records.orders {
        let attempts = |step: &str| -> Vec<&StepAttempt> {
            info.history.iter().filter(|h| h.step == step).collect()
        };
        let done = |step: &str| {
            info.history
                .iter()
                .rev()
                .find(|h| h.step == step && h.state == OrderState::Succeeded)
        };
        for step in steps {
            if attempts(step).into_iter().map(tasks).sum::<u32>() > 1 {
                f.run_again += 1;
            }
        }
        for pair in steps.windows(2) {
            let (prev, next) = (done(&pair[0]), attempts(&pair[1]));
            if let (Some(p), Some(n)) = (prev, done(&pair[1])) {
                if let (Some(a), Some(b)) = (&p.subagent_id, &n.subagent_id) {
                    f.pairs += 1;
                    f.other_subagent += usize::from(a != b);
                }
            }
            let Some(first) = next.first() else { continue };
            if next.len() > 1 || tasks(first) > 1 {
                f.handoffs_skipped += 1;
                continue;
            }
            let ended = prev.and_then(|p| p.finished_at_ms);
            if let (Some(ended), Some(began)) = (ended, first.started_at_ms) {
                f.handoffs_ms.push(began as f64 - ended as f64);
            }
        }
    }
    f
}

/// For each marker line whose step order succeeded: the result's end time
/// (stamped when the subagent saw the process end) minus the marker's time.
pub(super) fn result_windows(markers: &str, records: &Records) -> Vec<f64> {
    let ended: HashMap<&str, u64> = records
        .orders
        .iter()
        .flat_map(|o| &o.history)
        .filter(|h| h.state == OrderState::Succeeded)
        .filter_map(|h| Some((h.order_id.as_str(), h.finished_at_ms?)))
        .collect();
    markers
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (step_order, at_ms) = (fields.get(3)?, fields.get(5)?.parse::<u64>().ok()?);
            Some(ended.get(step_order)?.saturating_sub(at_ms) as f64)
        })
        .collect()
}

/// Completed runs beyond one per (workflow order, step), for the orders read.
pub(super) fn ran_twice(markers: &str, records: &Records) -> usize {
    let mut lines: HashMap<(&str, &str), usize> = HashMap::new();
    for line in markers.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(order), Some(step)) = (fields.next(), fields.next()) {
            *lines.entry((order, step)).or_default() += 1;
        }
    }
    let read: HashSet<&str> = records.orders.iter().map(|o| o.order_id.as_str()).collect();
    lines
        .iter()
        .filter(|((order, _), _)| read.contains(order))
        .map(|(_, &n)| n.saturating_sub(1))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workflow::{step_names, JOB, WORKFLOW};

    fn attempt(step: &str, order: &str, sub: &str, start: u64, end: u64) -> StepAttempt {
        StepAttempt {
            placed_on: Vec::new(),
            tasks: 0,
            step: step.into(),
            job: JOB.into(),
            attempt: 1,
            order_id: order.into(),
            state: OrderState::Succeeded,
            subagent_id: Some(sub.into()),
            exit_code: Some(0),
            reason: None,
            started_at_ms: Some(start),
            finished_at_ms: Some(end),
        }
    }

    fn records(history: Vec<StepAttempt>, tasks: &[(&str, u32)]) -> Records {
        let info = OrderInfo {
            workflow: Some(WORKFLOW.into()),
            history,
            ..OrderInfo::new("w1".into(), WORKFLOW.into(), OrderState::Succeeded, 0)
        };
        Records {
            orders: vec![info],
            tasks: tasks.iter().map(|(o, n)| (o.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn handoffs_and_subagent_changes_come_from_the_history() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 100, 300),
                attempt("s2", "b", "sub-2", 310, 500),
                attempt("s3", "c", "sub-2", 530, 700),
            ],
            &[("a", 1), ("b", 1), ("c", 1)],
        );
        let f = step_figures(&r, &step_names(3));
        assert_eq!(f.handoffs_ms, vec![10.0, 30.0]);
        assert_eq!((f.pairs, f.other_subagent, f.run_again), (2, 1, 0));
    }

    #[test]
    fn a_rerun_step_is_no_handoff_and_runs_again() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 100, 300),
                attempt("s2", "b", "sub-3", 4000, 4200),
            ],
            &[("a", 1), ("b", 2)],
        );
        let f = step_figures(&r, &step_names(2));
        assert!(f.handoffs_ms.is_empty());
        assert_eq!((f.handoffs_skipped, f.run_again), (1, 1));
    }

    #[test]
    fn a_second_completed_run_of_a_step_ran_twice() {
        let r = records(
            vec![
                attempt("s1", "a", "sub-1", 0, 1),
                attempt("s2", "b", "sub-2", 2, 3),
            ],
            &[("a", 1), ("b", 2)],
        );
        let markers =
            "w1 s1 1 a 10\nw1 s1 1 a 11\nw1 s2 1 b 12\nw1 s2 1 b 13\nw9 s1 1 x 14\nw9 s1 1 x 15\n";
        // s1 and s2 each completed twice; w9 was not read
        assert_eq!(ran_twice(markers, &r), 2);
    }
}
