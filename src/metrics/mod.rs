//! Prometheus metrics of the broker, the agent and the subagent, served on
//! `/metrics` (`--metrics-listen`, off by default) in the Prometheus text
//! format through `prometheus-client`.
//!
//! Each role records into its own set ([`broker`], [`agent`], [`subagent`]:
//! process-wide, so the actor and IO code that sees an event records it
//! where it happens, never the pure cores); [`serve`] registers the set of
//! the role the process plays, plus what every process has: the bus's
//! counters of messages refused and dropped, read at each scrape
//! ([`BusCounters`]). What is recorded where is listed in the README
//! (Metrics) and in ARCHITECTURE.md.
//!
//! Cardinality: `job` and `cluster` labels come from deployed names, at
//! most [`labels::MAX_NAMES`] distinct ones of each per process, later
//! ones counted as `_other` ([`labels::Bounded`]); every other label has a
//! fixed set of values.

mod http;
pub mod labels;

use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::bus::Stats;
pub use http::{serve, Served};
use labels::Bounded;

/// One label.
pub type Label = [(&'static str, String); 1];
/// Two labels.
pub type Labels2 = [(&'static str, String); 2];
/// A family of histograms, each made with the same buckets.
pub type Histograms = Family<Label, Histogram, fn() -> Histogram>;
/// A gauge of seconds (or any fraction).
pub type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;

/// One label `key="value"`.
pub fn label(key: &'static str, value: impl Into<String>) -> Label {
    [(key, value.into())]
}

/// Buckets for latencies from a millisecond to a minute (seconds).
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Buckets for task durations from 10 ms to 6 hours (seconds).
fn duration_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 21600.0,
    ])
}

/// The role a process plays: which set [`serve`] registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Broker,
    Agent,
    Subagent,
}

/// What the active broker records (`broker/act.rs`, `broker/mod.rs`,
/// `broker/leadership/`, `broker/elector.rs`).
#[derive(Debug)]
pub struct BrokerMetrics {
    pub orders_accepted: Family<Label, Counter>,
    pub orders_finished: Family<Labels2, Counter>,
    pub orders: Family<Label, Gauge>,
    pub queue_depth: Family<Label, Gauge>,
    pub queue_oldest_age: Family<Label, GaugeF>,
    pub cluster_available: Family<Label, Gauge>,
    pub dispatch_latency: Histogram,
    pub task_duration: Histogram,
    pub subagents: Family<Label, Gauge>,
    pub running_tasks: Gauge,
    pub role_changes: Family<Label, Counter>,
    pub leadership_changes: Family<Label, Counter>,
    pub epoch: Gauge,
    pub active: Gauge,
    pub dropped: Family<Label, Counter>,
    pub journal_write: Histograms,
    pub notifications: Family<Labels2, Counter>,
    jobs: Mutex<Option<Bounded>>,
    clusters: Mutex<Option<Bounded>>,
}

impl BrokerMetrics {
    fn new() -> BrokerMetrics {
        BrokerMetrics {
            orders_accepted: Family::default(),
            orders_finished: Family::default(),
            orders: Family::default(),
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            cluster_available: Family::default(),
            dispatch_latency: latency_buckets(),
            task_duration: duration_buckets(),
            subagents: Family::default(),
            running_tasks: Gauge::default(),
            role_changes: Family::default(),
            leadership_changes: Family::default(),
            epoch: Gauge::default(),
            active: Gauge::default(),
            dropped: Family::default(),
            journal_write: Family::new_with_constructor(latency_buckets),
            notifications: Family::default(),
            jobs: Mutex::new(None),
            clusters: Mutex::new(None),
        }
    }

    /// The `job` label of a job (or workflow) name, bounded.
    pub fn job(&self, name: &str) -> String {
        bounded(&self.jobs, name)
    }

    /// The `cluster` label of a cluster name, bounded.
    pub fn cluster(&self, name: &str) -> String {
        bounded(&self.clusters, name)
    }

    fn register(&'static self, r: &mut Registry) {
        r.register(
            "baton_orders_accepted",
            "Orders accepted (stored and acknowledged), by job or workflow",
            self.orders_accepted.clone(),
        );
        r.register(
            "baton_orders_finished",
            "Orders ended, by job or workflow and outcome (succeeded, failed, cancelled)",
            self.orders_finished.clone(),
        );
        r.register(
            "baton_orders",
            "Orders the active broker holds, by state (accepted: waiting or placed; running; succeeded, failed, cancelled: kept ended ones)",
            self.orders.clone(),
        );
        r.register(
            "baton_queue_depth",
            "Orders waiting for a subagent, by the cluster of their job (* for none)",
            self.queue_depth.clone(),
        );
        r.register(
            "baton_queue_oldest_age_seconds",
            "Time since the oldest order waiting for a subagent was accepted, by cluster (0 when none waits)",
            self.queue_oldest_age.clone(),
        );
        r.register(
            "baton_cluster_available_members",
            "Members of each cluster that take tasks now (available, not suspect, disabled or draining; * for every subagent)",
            self.cluster_available.clone(),
        );
        r.register(
            "baton_dispatch_latency_seconds",
            "From an order accepted to its first task accepted by a subagent",
            self.dispatch_latency.clone(),
        );
        r.register(
            "baton_task_duration_seconds",
            "Run time of the last task of each ended job order",
            self.task_duration.clone(),
        );
        r.register(
            "baton_subagents",
            "Subagents the active broker knows, by state (available, suspect, lost, disabled, draining)",
            self.subagents.clone(),
        );
        r.register(
            "baton_running_tasks",
            "Tasks placed on subagents and not yet finished, as the active broker counts them",
            self.running_tasks.clone(),
        );
        r.register(
            "baton_scheduler_role_changes",
            "Scheduler role commands the Elector sent, by change (on, off)",
            self.role_changes.clone(),
        );
        r.register(
            "baton_broker_leadership_changes",
            "This broker became active or stepped down (change: active, standby)",
            self.leadership_changes.clone(),
        );
        r.register(
            "baton_broker_epoch",
            "The epoch (leadership lease revision) this broker acts with, or last acted with",
            self.epoch.clone(),
        );
        r.register(
            "baton_broker_active",
            "1 while this broker is the active one, else 0",
            self.active.clone(),
        );
        r.register(
            "baton_broker_requests_dropped",
            "Requests and heartbeats the broker dropped unanswered, by reason (not_acting: its lease may have run out)",
            self.dropped.clone(),
        );
        r.register(
            "baton_journal_write_seconds",
            "Journal (baton_orders) writes, from sending to stored, by op (create, write)",
            self.journal_write.clone(),
        );
        r.register(
            "baton_notifications",
            "Notification tries of the active broker, by target and outcome (delivered, retried, failed: given up; unknown_target: a job names no configured target, counted as target _unknown)",
            self.notifications.clone(),
        );
    }

    /// Counts one notification try to `target` that ended `outcome`.
    pub fn notification(&self, target: &str, outcome: &'static str) {
        let labels = [
            ("target", target.to_string()),
            ("outcome", outcome.to_string()),
        ];
        self.notifications.get_or_create(&labels).inc();
    }
}

/// What the agent records (`agent/node/firing.rs`, `agent/node.rs`).
#[derive(Debug)]
pub struct AgentMetrics {
    pub slots: Family<Labels2, Counter>,
    pub fire_lateness: Histogram,
    pub scheduler: Gauge,
    /// Subject triggers' messages handled, by outcome.
    pub trigger_messages: Family<Label, Counter>,
    /// Directories of file triggers that cannot be listed now.
    pub file_watch_problems: Gauge,
}

impl AgentMetrics {
    /// Counts one slot: `outcome` (fired, skipped) for `reason`.
    pub fn slot(&self, outcome: &'static str, reason: &'static str) {
        let labels = [
            ("outcome", outcome.to_string()),
            ("reason", reason.to_string()),
        ];
        self.slots.get_or_create(&labels).inc();
    }

    /// Counts `n` slots the misfire policy passed over (`missed`, reason
    /// `misfire_policy`).
    pub fn missed(&self, n: u64) {
        if n > 0 {
            let labels = [
                ("outcome", "missed".to_string()),
                ("reason", "misfire_policy".to_string()),
            ];
            self.slots.get_or_create(&labels).inc_by(n);
        }
    }

    /// Counts a subject trigger's message: `started`, `duplicate`,
    /// `dead_letter` or `retried`.
    pub fn trigger_message(&self, outcome: &'static str) {
        let labels = [("outcome", outcome.to_string())];
        self.trigger_messages.get_or_create(&labels).inc();
    }

    /// Counts a slot the broker answered: fired, or skipped as a duplicate.
    pub fn fired(&self, duplicate: bool, late: bool) {
        let (outcome, reason) = labels::fired(duplicate, late);
        self.slot(outcome, reason);
    }

    fn register(&'static self, r: &mut Registry) {
        r.register(
            "baton_scheduler_slots",
            "Trigger slots the Scheduler handled, by outcome (fired, skipped, missed) and reason",
            self.slots.clone(),
        );
        r.register(
            "baton_scheduler_fire_lateness_seconds",
            "From a slot to the Scheduler submitting its order",
            self.fire_lateness.clone(),
        );
        r.register(
            "baton_agent_scheduler",
            "1 while this agent holds the Scheduler role, else 0",
            self.scheduler.clone(),
        );
        r.register(
            "baton_scheduler_trigger_messages",
            "Subject triggers' messages the Scheduler handled, by outcome (started, duplicate, dead_letter, retried)",
            self.trigger_messages.clone(),
        );
        r.register(
            "baton_scheduler_file_watch_problems",
            "Directories of file triggers the Scheduler cannot list now (see `baton status`)",
            self.file_watch_problems.clone(),
        );
    }
}

/// What the subagent records (`subagent/run.rs`, `subagent/delivery.rs`).
#[derive(Debug, Default)]
pub struct SubagentMetrics {
    pub running_tasks: Gauge,
    pub tasks_started: Counter,
    pub tasks_finished: Family<Label, Counter>,
}

impl SubagentMetrics {
    fn register(&'static self, r: &mut Registry) {
        r.register(
            "baton_subagent_running_tasks",
            "Tasks this subagent runs now",
            self.running_tasks.clone(),
        );
        r.register(
            "baton_subagent_tasks_started",
            "Tasks this subagent started",
            self.tasks_started.clone(),
        );
        r.register(
            "baton_subagent_tasks_finished",
            "Tasks of this subagent that ended, by outcome (succeeded, failed, timed_out, killed, error)",
            self.tasks_finished.clone(),
        );
    }
}

static BROKER: LazyLock<BrokerMetrics> = LazyLock::new(BrokerMetrics::new);
static AGENT: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    slots: Family::default(),
    fire_lateness: latency_buckets(),
    scheduler: Gauge::default(),
    trigger_messages: Family::default(),
    file_watch_problems: Gauge::default(),
});
static SUBAGENT: LazyLock<SubagentMetrics> = LazyLock::new(SubagentMetrics::default);

/// The broker's metrics (recording is cheap whether served or not).
pub fn broker() -> &'static BrokerMetrics {
    &BROKER
}

/// The agent's metrics.
pub fn agent() -> &'static AgentMetrics {
    &AGENT
}

/// The subagent's metrics.
pub fn subagent() -> &'static SubagentMetrics {
    &SUBAGENT
}

fn bounded(names: &Mutex<Option<Bounded>>, name: &str) -> String {
    let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
    names
        .get_or_insert_with(|| Bounded::new(labels::MAX_NAMES))
        .label(name)
}

/// The registry a process of `role` serves: its role's metrics and the
/// bus's counters.
pub fn registry(role: Role, bus: Arc<Stats>) -> Registry {
    let mut r = Registry::default();
    match role {
        Role::Broker => broker().register(&mut r),
        Role::Agent => agent().register(&mut r),
        Role::Subagent => subagent().register(&mut r),
    }
    r.register_collector(Box::new(BusCounters(bus)));
    r
}

/// The bus's own counters, read at each scrape: messages refused (for
/// their sender, undecodable or too large, or by the server's permissions)
/// and records a stream did not store.
#[derive(Debug)]
pub struct BusCounters(pub Arc<Stats>);

impl Collector for BusCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "baton_messages_refused",
            "Messages this process refused, by reason (sender: not who may send it; malformed: undecodable or too large; denied: the NATS server refused our publish or subscription; session: a request coded for a session this process does not hold, answered \"sign it again\")",
            None,
            counter.metric_type(),
        )?;
        for (reason, value) in [
            ("sender", s.refused()),
            ("malformed", s.malformed()),
            ("denied", s.denied()),
            ("session", s.unknown_sessions()),
        ] {
            let labels = label("reason", reason);
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "baton_messages_dropped",
            "Messages this process dropped, by reason (unstored: a stream record such as an audit record JetStream did not store)",
            None,
            counter.metric_type(),
        )?;
        let labels = label("reason", "unstored");
        ConstCounter::new(s.unstored()).encode(family.encode_family(&labels)?)?;
        Ok(())
    }
}

/// An order's outcome as a label value.
pub fn outcome(state: crate::protocol::OrderState) -> &'static str {
    use crate::protocol::OrderState as S;
    match state {
        S::Succeeded => "succeeded",
        S::Failed => "failed",
        S::Cancelled => "cancelled",
        S::Accepted => "accepted",
        S::Running => "running",
        S::Suspending => "suspending",
        S::Suspended => "suspended",
        S::Cancelling => "cancelling",
    }
}

#[cfg(test)]
mod tests;
