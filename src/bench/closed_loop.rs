//! A closed loop of orders of one job: at most `concurrency` of them
//! submitted and not yet finished, each timed from its submit to its
//! `finished` event (which may come before the submit's reply).
//! `baton bench throughput` just runs it; `baton bench workflow` turns it one
//! step at a time, beside its own events and its kill.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, LocalBoxStream};
use futures::{FutureExt as _, StreamExt as _};

use super::client::order_of;
use crate::bus::{Bus, BusError, Received};
use crate::protocol::*;

/// What a closed loop measured.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The orders accepted, in the order of their replies.
    pub order_ids: Vec<String>,
    /// The final state of each order whose `finished` event came.
    pub states: HashMap<String, OrderState>,
    /// Submit to `finished` event, in milliseconds, one per finished order.
    pub latencies_ms: Vec<f64>,
    /// Submits that got no reply.
    pub submit_errors: usize,
    /// From the start of the loop to its end.
    pub elapsed_s: f64,
}

impl Outcome {
    /// The finished orders that succeeded.
    pub fn succeeded(&self) -> usize {
        self.states
            .values()
            .filter(|&&s| s == OrderState::Succeeded)
            .count()
    }
}

type Submit = BoxFuture<'static, (Instant, Result<SubmitReply, BusError>)>;

pub(super) struct ClosedLoop {
    bus: Bus,
    job: String,
    orders: usize,
    concurrency: usize,
    /// Longest wait for a submit's reply.
    request: Duration,
    timeout: Duration,
    started: Instant,
    deadline: tokio::time::Instant,
    finished_events: LocalBoxStream<'static, Received<OrderFinished>>,
    submits: FuturesUnordered<Submit>,
    /// Accepted orders whose `finished` event has not come: their submit time.
    sent_at: HashMap<String, Instant>,
    /// Orders finished before their submit's reply came: when, and how.
    early: HashMap<String, (Instant, OrderState)>,
    submitted: usize,
    in_flight: usize,
    /// Orders finished or whose submit failed.
    done: usize,
    timed_out: bool,
    outcome: Outcome,
}

impl ClosedLoop {
    /// Listens for the `finished` events of `job` and starts the clock: the
    /// loop submits `orders` orders, waits `request` at most for each
    /// submit's reply and gives up `timeout` from now.
    pub async fn start(
        bus: &Bus,
        job: &str,
        orders: usize,
        concurrency: usize,
        request: Duration,
        timeout: Duration,
    ) -> anyhow::Result<ClosedLoop> {
        let finished_events = bus
            .listen::<OrderFinished>(bus.subjects().event(job, "*", EventKind::Finished))
            .await?
            .boxed_local();
        Ok(ClosedLoop {
            bus: bus.clone(),
            job: job.to_string(),
            orders,
            concurrency,
            request,
            timeout,
            started: Instant::now(),
            deadline: tokio::time::Instant::now() + timeout,
            finished_events,
            submits: FuturesUnordered::new(),
            sent_at: HashMap::new(),
            early: HashMap::new(),
            submitted: 0,
            in_flight: 0,
            done: 0,
            timed_out: false,
            outcome: Outcome {
                latencies_ms: Vec::with_capacity(orders),
                order_ids: Vec::with_capacity(orders),
                ..Outcome::default()
            },
        })
    }

    /// Runs the loop to its end.
    pub async fn run(mut self) -> Outcome {
        while !self.is_over() {
            self.turn().await;
        }
        self.finish()
    }

    /// Every order finished (or its submit failed), or the timeout passed.
    pub fn is_over(&self) -> bool {
        self.done >= self.orders || self.timed_out
    }

    /// The orders accepted so far.
    pub fn accepted(&self) -> usize {
        self.outcome.order_ids.len()
    }

    /// Submits orders until `concurrency` are in flight, then waits for one
    /// submit's reply, one `finished` event or the timeout. Cancel-safe: a
    /// turn dropped while it waits loses nothing.
    pub async fn turn(&mut self) {
        while self.in_flight < self.concurrency && self.submitted < self.orders {
            let bus = self.bus.clone();
            let subject = bus.subjects().submit();
            let order = order_of(&self.job);
            let request = self.request;
            self.submits.push(
                async move {
                    let t0 = Instant::now();
                    let reply = bus.request(subject, &order, request).await;
                    (t0, reply)
                }
                .boxed(),
            );
            self.submitted += 1;
            self.in_flight += 1;
        }
        tokio::select! {
            Some((t0, reply)) = self.submits.next() => match reply {
                Ok(reply) => {
                    self.outcome.order_ids.push(reply.order_id.clone());
                    match self.early.remove(&reply.order_id) {
                        Some((t1, state)) => self.finished(reply.order_id, state, t0, t1),
                        None => {
                            self.sent_at.insert(reply.order_id, t0);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "submit failed");
                    self.outcome.submit_errors += 1;
                    self.in_flight -= 1;
                    self.done += 1;
                }
            },
            Some(event) = self.finished_events.next() => {
                let t1 = Instant::now();
                let e = event.body;
                match self.sent_at.remove(&e.order_id) {
                    Some(t0) => self.finished(e.order_id, e.state, t0, t1),
                    None => {
                        self.early.insert(e.order_id, (t1, e.state));
                    }
                }
            }
            _ = tokio::time::sleep_until(self.deadline) => {
                eprintln!(
                    "timed out after {:?} with {} of {} orders finished",
                    self.timeout, self.done, self.orders
                );
                self.timed_out = true;
            }
        }
    }

    /// Ends the loop and takes its figures.
    pub fn finish(mut self) -> Outcome {
        self.outcome.elapsed_s = self.started.elapsed().as_secs_f64();
        self.outcome
    }

    /// Order `order_id`, submitted at `t0`, finished in `state` at `t1`.
    fn finished(&mut self, order_id: String, state: OrderState, t0: Instant, t1: Instant) {
        self.outcome
            .latencies_ms
            .push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        self.outcome.states.insert(order_id, state);
        self.in_flight -= 1;
        self.done += 1;
    }
}
