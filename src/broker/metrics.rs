//! What the broker records in its Prometheus metrics (`crate::metrics`),
//! on the actor's side: events as `act.rs` publishes them, journal writes
//! as they are stored, and the gauges read from the core's state once a
//! second (`Broker::refresh_gauges`). The core knows nothing of metrics.

use std::time::Instant;

use super::Broker;
use crate::metrics::{broker, label, labels, outcome};
use crate::protocol::{OrderAccepted, OrderFinished, OrderState, SubagentState};
use crate::time::now_ms;

/// An order accepted (its `accepted` event goes out).
pub(super) fn accepted(e: &OrderAccepted) {
    let m = broker();
    m.orders_accepted
        .get_or_create(&label("job", m.job(&e.job)))
        .inc();
}

/// An order ended (its `finished` event goes out).
pub(super) fn finished(e: &OrderFinished) {
    let m = broker();
    let labels = [
        ("job", m.job(&e.job)),
        ("outcome", outcome(e.state).to_string()),
    ];
    m.orders_finished.get_or_create(&labels).inc();
    if let Some(seconds) = task_seconds(e) {
        m.task_duration.observe(seconds);
    }
}

/// The run time of the task that ended `e`'s order (pure); none for a
/// workflow order, whose steps' tasks are counted as their orders end.
fn task_seconds(e: &OrderFinished) -> Option<f64> {
    let ms = e.duration_ms.filter(|_| e.workflow.is_none())?;
    Some(ms as f64 / 1000.0)
}

/// A journal write (`op`: create, write) that began at `began` is done.
pub(super) fn journal_write(op: &str, began: Instant) {
    broker()
        .journal_write
        .get_or_create(&label("op", op))
        .observe(began.elapsed().as_secs_f64());
}

/// A request or heartbeat dropped unanswered.
pub(super) fn dropped(reason: &str) {
    broker()
        .dropped
        .get_or_create(&label("reason", reason))
        .inc();
}

/// The Elector sent a Scheduler role command (`change`: on, off).
pub(super) fn role_change(change: &str) {
    broker()
        .role_changes
        .get_or_create(&label("change", change))
        .inc();
}

/// The broker's lease changed hands: it became `role` with `epoch`.
pub(super) fn leadership(active: bool, epoch: u64) {
    let m = broker();
    let change = if active { "active" } else { "standby" };
    m.leadership_changes
        .get_or_create(&label("change", change))
        .inc();
    m.epoch.set(epoch as i64);
    m.active.set(active as i64);
    if !active {
        // a standby holds no orders: its gauges say nothing
        m.orders.clear();
        m.queue_depth.clear();
        m.queue_oldest_age.clear();
        m.cluster_available.clear();
        m.subagents.clear();
        m.running_tasks.set(0);
    }
}

/// The state's label value, as it reads on the wire.
fn state_name(state: SubagentState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}").to_lowercase())
}

impl Broker {
    /// Sets the gauges from what the core holds now: orders by state, the
    /// queue of each cluster, subagents by state, running tasks.
    pub(super) fn refresh_gauges(&self) {
        let m = broker();
        let counts = self.core.book.counts();
        for (state, n) in [
            (OrderState::Accepted, counts.accepted),
            (OrderState::Running, counts.running),
            (OrderState::Succeeded, counts.succeeded),
            (OrderState::Failed, counts.failed),
            (OrderState::Cancelled, counts.cancelled),
        ] {
            m.orders
                .get_or_create(&label("state", outcome(state)))
                .set(n as i64);
        }
        let jobs = &self.core.jobs;
        let waiting = self.core.book.queued().map(|o| {
            let cluster = jobs.get(&o.job).and_then(|j| j.cluster.as_deref());
            (cluster, o.accepted_at_ms)
        });
        let clusters = self.core.clusters.keys().map(String::as_str);
        let queues = labels::queues(waiting, clusters, now_ms());
        m.queue_depth.clear();
        m.queue_oldest_age.clear();
        for (cluster, queue) in queues {
            let cluster = label("cluster", m.cluster(&cluster));
            m.queue_depth
                .get_or_create(&cluster)
                .inc_by(queue.depth as i64);
            m.queue_oldest_age
                .get_or_create(&cluster)
                .set(queue.oldest_age_seconds);
        }
        // members that take tasks now, per cluster (`*`: every subagent)
        m.cluster_available.clear();
        let registry = &self.core.registry;
        let clusters = self
            .core
            .clusters
            .values()
            .map(|c| (c.name.as_str(), Some(c)));
        for (name, spec) in std::iter::once((labels::ANY_CLUSTER, None)).chain(clusters) {
            let members = super::placement::members(spec, registry.iter());
            let up = members.iter().filter(|m| m.subagent.is_up()).count();
            let cluster = label("cluster", m.cluster(name));
            m.cluster_available.get_or_create(&cluster).set(up as i64);
        }
        m.subagents.clear();
        let mut running = 0i64;
        for s in self.core.registry.iter() {
            let state = label("state", state_name(s.state()));
            m.subagents.get_or_create(&state).inc();
            running += s.tasks.len() as i64;
        }
        m.running_tasks.set(running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_order_adds_no_task_duration() {
        let mut e = OrderFinished {
            order_id: "o1".into(),
            job: "nightly".into(),
            state: crate::protocol::OrderState::Succeeded,
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            reason: None,
            subagent_id: None,
            attempt: 2,
            duration_ms: Some(1500),
            at_ms: 0,
            workflow: None,
        };
        assert_eq!(task_seconds(&e), Some(1.5));
        e.workflow = Some("nightly".into());
        assert_eq!(task_seconds(&e), None, "its steps' tasks are counted");
    }
}
