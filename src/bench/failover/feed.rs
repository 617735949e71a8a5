//! A steady stream of orders for one job, and what its events tell: which
//! orders run where, which finished, which subagents are down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use futures::stream::{self, FuturesUnordered, LocalBoxStream};
use futures::{FutureExt as _, StreamExt as _};

use crate::bench::client::{listen, order_of};
use crate::bus::{Bus, BusError};
use crate::protocol::*;

/// An event of the job's orders or of a subagent.
pub(super) enum Event {
    Started(TaskStarted),
    Finished(OrderFinished),
    Changed(SubagentChanged),
}

/// The latest task of an order that has not finished.
struct Task {
    subagent: String,
    attempt: u32,
    seen: Instant,
}

/// Totals once the stream has run.
pub(super) struct Outcome {
    pub submitted: usize,
    pub submit_errors: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub other_lost: usize,
    pub tasks_started: BTreeMap<String, usize>,
}

pub(super) struct Feed {
    bus: Bus,
    job: String,
    concurrency: usize,
    /// Whether finished orders are replaced by new ones.
    pub feeding: bool,
    /// The subagent killed on purpose and not yet back.
    pub killed: Option<String>,
    events: LocalBoxStream<'static, Event>,
    submits: FuturesUnordered<LocalBoxFuture<'static, Result<SubmitReply, BusError>>>,
    /// Submitted (or being submitted) and not finished.
    in_flight: usize,
    submitted: HashSet<String>,
    submit_errors: usize,
    running: HashMap<String, Task>,
    finished: HashMap<String, OrderState>,
    down: HashSet<String>,
    other_lost: usize,
    tasks_started: BTreeMap<String, usize>,
}

impl Feed {
    /// Subscribes to the job's `started` and `finished` events and to
    /// subagent changes; submits nothing until `feeding` is set.
    pub async fn start(bus: &Bus, job: &str, concurrency: usize) -> anyhow::Result<Feed> {
        let s = bus.subjects();
        let events = stream::select_all([
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
        Ok(Feed {
            bus: bus.clone(),
            job: job.to_string(),
            concurrency,
            feeding: false,
            killed: None,
            events,
            submits: FuturesUnordered::new(),
            in_flight: 0,
            submitted: HashSet::new(),
            submit_errors: 0,
            running: HashMap::new(),
            finished: HashMap::new(),
            down: HashSet::new(),
            other_lost: 0,
            tasks_started: BTreeMap::new(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// No subagent is known to be lost.
    pub fn all_up(&self) -> bool {
        self.down.is_empty()
    }

    /// Whether `subagent` runs a task that started after `since`, an age
    /// within `ages` ago.
    pub fn busy(&self, subagent: &str, since: Instant, ages: &RangeInclusive<Duration>) -> bool {
        self.running
            .values()
            .any(|t| t.subagent == subagent && t.seen >= since && ages.contains(&t.seen.elapsed()))
    }

    /// The orders `subagent` runs, with their attempt numbers.
    pub fn running_on(&self, subagent: &str) -> HashMap<String, u32> {
        self.running
            .iter()
            .filter(|(_, t)| t.subagent == subagent)
            .map(|(order, t)| (order.clone(), t.attempt))
            .collect()
    }

    /// Tops the stream up, then waits for the next event (submit replies are
    /// taken in passing); `None` once `deadline` passes.
    pub async fn step(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        loop {
            self.top_up();
            tokio::select! {
                Some(reply) = self.submits.next(), if !self.submits.is_empty() => {
                    match reply {
                        Ok(reply) => {
                            self.submitted.insert(reply.order_id);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "submit failed");
                            self.submit_errors += 1;
                            self.in_flight = self.in_flight.saturating_sub(1);
                        }
                    }
                }
                event = self.events.next() => {
                    let event = event?;
                    self.note(&event);
                    return Some(event);
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    fn top_up(&mut self) {
        while self.feeding && self.in_flight < self.concurrency {
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

    fn note(&mut self, event: &Event) {
        match event {
            Event::Started(e) => {
                *self.tasks_started.entry(e.subagent_id.clone()).or_default() += 1;
                let task = Task {
                    subagent: e.subagent_id.clone(),
                    attempt: e.attempt,
                    seen: Instant::now(),
                };
                self.running.insert(e.order_id.clone(), task);
            }
            Event::Finished(e) => {
                self.running.remove(&e.order_id);
                if self.finished.insert(e.order_id.clone(), e.state).is_none() {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
            Event::Changed(e) => match e.state {
                SubagentState::Lost => {
                    if self.killed.as_deref() != Some(e.subagent_id.as_str()) {
                        tracing::warn!(subagent = %e.subagent_id, reason = %e.reason, "a subagent not killed was declared lost");
                        self.other_lost += 1;
                    }
                    self.down.insert(e.subagent_id.clone());
                }
                SubagentState::Available => {
                    self.down.remove(&e.subagent_id);
                }
                _ => {}
            },
        }
    }

    pub fn outcome(&self) -> Outcome {
        let count = |state: OrderState| self.finished.values().filter(|&&s| s == state).count();
        let succeeded = count(OrderState::Succeeded);
        Outcome {
            submitted: self.submitted.len() + self.submit_errors,
            submit_errors: self.submit_errors,
            succeeded,
            failed: self.finished.len() - succeeded,
            unfinished: self
                .submitted
                .iter()
                .filter(|o| !self.finished.contains_key(*o))
                .count(),
            other_lost: self.other_lost,
            tasks_started: self.tasks_started.clone(),
        }
    }
}
