//! Taking over: what a broker that becomes active starts from, rebuilt
//! from what the journal holds (read by `recovery::recover`). Pure. An
//! order waiting for its retry is restored waiting, with its due time;
//! `Core::new` arms its timer (`retries.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracing::info;

use super::super::order_book::{Order, OrderBook};
use super::super::retention::{self, ended_for_good};
use super::Revisions;
use crate::config::BrokerConfig;
use crate::jobs;
use crate::protocol::*;
use crate::workflow::{validate_workflow, FlowOrder};

/// What the journal holds: the buckets' entries, and every order with its
/// record's revision.
#[derive(Debug, Default, Clone)]
pub struct Journal {
    pub jobs: HashMap<String, JobSpec>,
    pub clusters: HashMap<String, ClusterSpec>,
    pub workflows: HashMap<String, WorkflowSpec>,
    pub orders: HashMap<String, (OrderInfo, u64)>,
    /// Operators' switches, by key (`subagent.{id}`, `job.{name}`, ...).
    pub switches: HashMap<String, OperatorSwitch>,
}

/// What a broker taking over starts from.
pub(in crate::broker) struct Recovered {
    pub jobs: HashMap<String, JobSpec>,
    pub clusters: HashMap<String, ClusterSpec>,
    pub workflows: HashMap<String, WorkflowSpec>,
    /// Job orders, and workflow orders: every unfinished one, and the
    /// newest ended ones.
    pub book: OrderBook,
    /// The revision each kept order was read at.
    pub revisions: Revisions,
    /// Operators' switches of subagents, by subagent id.
    pub switches: BTreeMap<String, OperatorSwitch>,
    /// Records kept `broker.order_retention` since their order ended for
    /// good, with the revision they were read at: not held, to be deleted
    /// (`broker/retention.rs`).
    pub expired: Vec<(String, u64)>,
    /// Operators' pauses of jobs and workflows, by name.
    pub pauses: BTreeMap<String, OperatorSwitch>,
}

impl Recovered {
    /// Keeps the valid jobs, clusters and workflows, and rebuilds the order
    /// book from every order, keeping at most `broker.keep_finished` final
    /// orders; records past `broker.order_retention` at `now_ms` are set
    /// aside to be deleted.
    pub fn from_journal(journal: Journal, broker: &BrokerConfig, now_ms: u64) -> Recovered {
        let keep_finished = broker.keep_finished;
        let jobs = journal.jobs.into_iter();
        let jobs: HashMap<String, JobSpec> = jobs
            .filter(|(key, spec)| jobs::validate_job(spec).is_ok() && spec.name == *key)
            .collect();
        let clusters = journal.clusters.into_iter();
        let clusters: HashMap<String, ClusterSpec> = clusters
            .filter(|(key, spec)| jobs::validate_cluster(spec).is_ok() && spec.name == *key)
            .collect();
        let workflows = journal.workflows.into_iter();
        let workflows: HashMap<String, WorkflowSpec> = workflows
            .filter(|(key, spec)| {
                // a step whose job is gone fails when it is dispatched, with the reason
                spec.name == *key && validate_workflow(spec, &|_| true).is_ok()
            })
            .collect();
        let mut orders = journal.orders;
        let expired = past_retention(&orders, broker.order_retention, now_ms);
        for (id, _) in &expired {
            orders.remove(id);
        }
        let mut flows: Vec<FlowOrder> = Vec::new();
        let mut flow_revisions: HashMap<String, u64> = HashMap::new();
        orders.retain(|id, (info, revision)| match FlowOrder::restore(info) {
            Some(flow) => {
                flows.push(flow);
                flow_revisions.insert(id.clone(), *revision);
                false
            }
            None => true,
        });
        // ended workflow orders beyond the limit stay in the journal only
        flows.sort_by_key(|f| std::cmp::Reverse(f.ended_at_ms()));
        let mut ended = 0;
        flows.retain(|f| {
            ended += usize::from(f.is_ended());
            !f.is_ended() || ended <= keep_finished
        });
        let restored = orders.values().map(|(info, _)| {
            // a job removed since: its waiting orders fail at dispatch, and an
            // inherited task is never run twice
            let job = jobs.get(&info.job);
            let restartable = job.is_some_and(|j| j.restartable);
            Order::restore(info, restartable).with_retry(job.and_then(|j| j.retry))
        });
        let mut book = OrderBook::new(keep_finished);
        book.restore(restored);
        let workflow_orders = flows.len();
        for flow in flows {
            book.insert_flow(flow);
        }
        flow_revisions.retain(|id, _| book.flow(id).is_some());
        let kept = orders.iter().filter(|(id, _)| book.get(id).is_some());
        let mut revisions: HashMap<String, u64> =
            kept.map(|(id, (_, rev))| (id.clone(), *rev)).collect();
        revisions.extend(flow_revisions);
        let revisions = Revisions::new(revisions);
        let c = book.counts();
        info!(
            orders = orders.len(),
            accepted = c.accepted,
            running = c.running,
            inherited_on = book.inherited_subagents().len(),
            jobs = jobs.len(),
            workflow_orders,
            past_retention = expired.len(),
            "orders recovered from the journal"
        );
        let of = |prefix: &str| -> BTreeMap<String, OperatorSwitch> {
            (journal.switches.iter())
                .filter_map(|(key, s)| Some((key.strip_prefix(prefix)?.to_string(), s.clone())))
                .collect()
        };
        let (switches, pauses) = (of(SUBAGENT_SWITCH), of(JOB_SWITCH));
        Recovered {
            jobs,
            clusters,
            workflows,
            book,
            revisions,
            switches,
            expired,
            pauses,
        }
    }
}

/// The records kept `retention` since their order ended for good, at
/// `now_ms`, with their revisions, by id (see `broker/retention.rs`).
fn past_retention(
    orders: &HashMap<String, (OrderInfo, u64)>,
    retention: Duration,
    now_ms: u64,
) -> Vec<(String, u64)> {
    let keep_ms = retention.as_millis() as u64;
    let open = |flow_id: &str| {
        (orders.get(flow_id))
            .is_some_and(|(info, _)| info.workflow.is_some() && !ended_for_good(info))
    };
    let mut expired: Vec<(String, u64)> = (orders.iter())
        .filter(|(_, (info, _))| retention::expired(info, now_ms, keep_ms, open))
        .map(|(id, (_, revision))| (id.clone(), *revision))
        .collect();
    expired.sort();
    expired
}
