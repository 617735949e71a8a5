//! The steady stream of orders of `bench scale`, and what their events
//! tell: each order's dispatch latency (its `accepted` to its first
//! `started`, both the broker's and subagent's wall-clock milliseconds on
//! one host), which subagent runs what, the subagents declared lost (the
//! ones not killed on purpose are false losses), and when a killed one's
//! task started again elsewhere.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::{self, FuturesUnordered, LocalBoxStream};
use futures::{FutureExt as _, StreamExt as _};

use crate::bench::client::{listen, order_of};
use crate::bus::{Bus, BusError};
use crate::protocol::*;

pub(super) enum Event {
    Accepted(OrderAccepted),
    Started(TaskStarted),
    Finished(OrderFinished),
    Changed(SubagentChanged),
}

pub(super) struct Stream {
    bus: Bus,
    job: String,
    target: usize,
    /// Whether finished orders are replaced by new ones.
    pub feeding: bool,
    /// Whether dispatch latencies are recorded now.
    pub measuring: bool,
    events: LocalBoxStream<'static, Event>,
    submits: FuturesUnordered<LocalBoxFuture<'static, Result<SubmitReply, BusError>>>,
    in_flight: usize,
    pub submit_errors: usize,
    pub finished: usize,
    pub failed: usize,
    accepted_ms: HashMap<String, u64>,
    pub dispatch_ms: Vec<f64>,
    /// Order -> (subagent, attempt) of its latest task, until it finishes.
    running: HashMap<String, (String, u32)>,
    /// Order -> when a second or later attempt of it started, and where.
    pub reruns: HashMap<String, (String, u64)>,
    /// Subagent -> when it was declared lost.
    pub lost_at: HashMap<String, u64>,
    /// Killed on purpose.
    pub killed: HashSet<String>,
    /// Declared lost without being killed.
    pub false_losses: Vec<String>,
}

impl Stream {
    /// Subscribes to the job's events and to subagent changes; submits
    /// nothing until `feeding` is set, then keeps `target` orders in flight.
    pub async fn start(bus: &Bus, job: &str, target: usize) -> anyhow::Result<Stream> {
        let s = bus.subjects();
        let events = stream::select_all([
            listen(bus, s.event(job, "*", EventKind::Accepted), Event::Accepted).await?,
            listen(
                bus,
                s.task_events(job, "*", EventKind::Started),
                Event::Started,
            )
            .await?,
            listen(bus, s.event(job, "*", EventKind::Finished), Event::Finished).await?,
            listen(bus, s.subagent_changes(), Event::Changed).await?,
        ])
        .boxed_local();
        Ok(Stream {
            bus: bus.clone(),
            job: job.to_string(),
            target,
            feeding: false,
            measuring: false,
            events,
            submits: FuturesUnordered::new(),
            in_flight: 0,
            submit_errors: 0,
            finished: 0,
            failed: 0,
            accepted_ms: HashMap::new(),
            dispatch_ms: Vec::new(),
            running: HashMap::new(),
            reruns: HashMap::new(),
            lost_at: HashMap::new(),
            killed: HashSet::new(),
            false_losses: Vec::new(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A subagent running a task, not killed before, if any.
    pub fn busy_subagent(&self) -> Option<String> {
        (self.running.values())
            .map(|(subagent, _)| subagent)
            .find(|s| !self.killed.contains(*s) && !self.lost_at.contains_key(*s))
            .cloned()
    }

    /// The orders `subagent` runs, with their attempts.
    pub fn running_on(&self, subagent: &str) -> HashMap<String, u32> {
        (self.running.iter())
            .filter(|(_, (s, _))| s == subagent)
            .map(|(order, (_, attempt))| (order.clone(), *attempt))
            .collect()
    }

    /// Tops the stream up, then handles events until `deadline`.
    pub async fn run_until(&mut self, deadline: tokio::time::Instant) {
        while self.step(deadline).await {}
    }

    /// Tops the stream up, then handles the next event (submit replies are
    /// taken in passing); false once `deadline` passes or the events end.
    pub async fn step(&mut self, deadline: tokio::time::Instant) -> bool {
        loop {
            self.top_up();
            tokio::select! {
                Some(reply) = self.submits.next(), if !self.submits.is_empty() => {
                    if let Err(e) = reply {
                        tracing::warn!(error = %e, "submit failed");
                        self.submit_errors += 1;
                        self.in_flight = self.in_flight.saturating_sub(1);
                    }
                }
                event = self.events.next() => {
                    let Some(event) = event else { return false };
                    self.note(event);
                    return true;
                }
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    fn top_up(&mut self) {
        while self.feeding && self.in_flight < self.target {
            let bus = self.bus.clone();
            let order = order_of(&self.job);
            self.submits.push(
                async move {
                    bus.request(bus.subjects().submit(), &order, Duration::from_secs(10))
                        .await
                }
                .boxed_local(),
            );
            self.in_flight += 1;
        }
    }

    fn note(&mut self, event: Event) {
        match event {
            Event::Accepted(e) => {
                self.accepted_ms.insert(e.order_id, e.at_ms);
            }
            Event::Started(e) => {
                if e.attempt <= 1 {
                    let accepted = self.accepted_ms.get(&e.order_id);
                    if let (true, Some(accepted)) = (self.measuring, accepted) {
                        self.dispatch_ms
                            .push(e.at_ms.saturating_sub(*accepted) as f64);
                    }
                } else {
                    let rerun = (e.subagent_id.clone(), e.at_ms);
                    self.reruns.entry(e.order_id.clone()).or_insert(rerun);
                }
                self.running.insert(e.order_id, (e.subagent_id, e.attempt));
            }
            Event::Finished(e) => {
                self.running.remove(&e.order_id);
                self.accepted_ms.remove(&e.order_id);
                self.finished += 1;
                if e.state != OrderState::Succeeded {
                    self.failed += 1;
                }
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            Event::Changed(e) if e.state == SubagentState::Lost => {
                if !self.killed.contains(&e.subagent_id) {
                    tracing::warn!(subagent = %e.subagent_id, reason = %e.reason, "a subagent not killed was declared lost");
                    self.false_losses.push(e.subagent_id.clone());
                }
                self.lost_at.entry(e.subagent_id).or_insert(e.at_ms);
            }
            Event::Changed(_) => {}
        }
    }
}
