//! A steady stream of orders at a fixed rate, each retried under its request
//! id until a broker accepts it, and the events the bench follows: the
//! job's `started` and `finished` events and the brokers' heartbeats and
//! leadership changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use futures::stream::{self, FuturesUnordered, LocalBoxStream};
use futures::{FutureExt as _, StreamExt as _};

use super::ledger::{retryable, task_ms, Brokers, Ledger};
use crate::bench::client::listen;
use crate::bus::{Bus, BusError};
use crate::protocol::*;
use crate::time::now_ms;

/// How long one submit waits for its reply.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before a submit that found no broker is sent again.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// An order no broker accepted within this long of its first submit is lost.
pub(in crate::bench) const GIVE_UP: Duration = Duration::from_secs(30);
/// The range of the tasks' run times, in milliseconds.
pub(in crate::bench) const TASK_MS: (u64, u64) = (100, 500);

/// What the bench sees.
pub(in crate::bench) enum Seen {
    Started(TaskStarted),
    Finished(OrderFinished),
    Changed(BrokerChanged),
    Heartbeat(BrokerHeartbeat),
    /// A broker accepted the order of this index, at this wall-clock time.
    Accepted(usize, u64),
}

type Submit = LocalBoxFuture<'static, (usize, Result<SubmitReply, BusError>)>;

pub(in crate::bench) struct Traffic {
    bus: Bus,
    job: String,
    /// Whether new orders are submitted at the rate.
    feeding: bool,
    tick: tokio::time::Interval,
    events: LocalBoxStream<'static, Seen>,
    submits: FuturesUnordered<Submit>,
    pub(in crate::bench) ledger: Ledger,
    pub(in crate::bench) brokers: Brokers,
    /// Submits that failed for good (not retryable), by error.
    pub(in crate::bench) rejected: HashMap<String, usize>,
}

impl Traffic {
    /// Subscribes to the events; submits nothing until `feeding` is set.
    pub(in crate::bench) async fn start(
        bus: &Bus,
        job: &str,
        rate: f64,
    ) -> anyhow::Result<Traffic> {
        let s = bus.subjects();
        let events = stream::select_all([
            listen(
                bus,
                s.task_events(job, "*", EventKind::Started),
                Seen::Started,
            )
            .await?,
            listen(bus, s.event(job, "*", EventKind::Finished), Seen::Finished).await?,
            listen(bus, s.broker_changes(), Seen::Changed).await?,
            listen(bus, s.broker_heartbeat(), Seen::Heartbeat).await?,
        ])
        .boxed_local();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Ok(Traffic {
            bus: bus.clone(),
            job: job.to_string(),
            feeding: false,
            tick,
            events,
            submits: FuturesUnordered::new(),
            ledger: Ledger::default(),
            brokers: Brokers::default(),
            rejected: HashMap::new(),
        })
    }

    /// Submits due meanwhile, then the next event; `None` once `deadline`
    /// passes.
    pub(in crate::bench) async fn step(&mut self, deadline: tokio::time::Instant) -> Option<Seen> {
        loop {
            tokio::select! {
                Some((index, reply)) = self.submits.next(), if !self.submits.is_empty() => {
                    if let Some(seen) = self.replied(index, reply) {
                        return Some(seen);
                    }
                }
                event = self.events.next() => {
                    let event = event?;
                    self.note(&event);
                    return Some(event);
                }
                _ = self.tick.tick(), if self.feeding => self.submit_new(),
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Starts or stops submitting new orders (retries go on).
    pub(in crate::bench) fn feed(&mut self, on: bool) {
        if on && !self.feeding {
            self.tick.reset();
        }
        self.feeding = on;
    }

    /// Takes events until `until`.
    pub(in crate::bench) async fn idle(&mut self, until: tokio::time::Instant) {
        while self.step(until).await.is_some() {}
    }

    /// Submits still waiting for a broker to accept them.
    pub(in crate::bench) fn submitting(&self) -> usize {
        self.submits.len()
    }

    fn submit_new(&mut self) {
        let n = self.ledger.orders.len();
        let request_id = format!("bench-{}-{n}", std::process::id());
        let index = self.ledger.add(request_id, Instant::now());
        self.send(index, Duration::ZERO);
    }

    fn send(&mut self, index: usize, delay: Duration) {
        let (min, max) = TASK_MS;
        let secs = task_ms(index as u64, min, max) as f64 / 1000.0;
        let order = SubmitOrder {
            job: self.job.clone(),
            params: [("secs".to_string(), format!("{secs:.3}"))].into(),
            request_id: Some(self.ledger.orders[index].request_id.clone()),
            slot_ms: None,
        };
        let bus = self.bus.clone();
        self.submits.push(
            async move {
                tokio::time::sleep(delay).await;
                let reply = bus
                    .request(bus.subjects().submit(), &order, SUBMIT_TIMEOUT)
                    .await;
                (index, reply)
            }
            .boxed_local(),
        );
    }

    fn replied(&mut self, index: usize, reply: Result<SubmitReply, BusError>) -> Option<Seen> {
        let error = match reply {
            Ok(reply) => {
                self.ledger.accepted(index, reply.order_id, reply.duplicate);
                return Some(Seen::Accepted(index, now_ms()));
            }
            Err(e) => e,
        };
        let order = &mut self.ledger.orders[index];
        if !retryable(&error) {
            tracing::warn!(request = %order.request_id, error = %error, "submit refused");
            order.gave_up = true;
            *self.rejected.entry(error.to_string()).or_default() += 1;
        } else if order.first_sent.elapsed() >= GIVE_UP {
            tracing::warn!(request = %order.request_id, error = %error, "no broker accepted the order; giving up");
            order.gave_up = true;
        } else {
            order.retries += 1;
            let delay = match error {
                BusError::TimedOut { .. } => Duration::ZERO,
                _ => RETRY_DELAY,
            };
            self.send(index, delay);
        }
        None
    }

    fn note(&mut self, seen: &Seen) {
        match seen {
            Seen::Finished(f) => self.ledger.finished(&f.order_id, f.state),
            Seen::Heartbeat(hb) => {
                self.brokers
                    .heard(&hb.broker_id, hb.role, hb.epoch, Instant::now())
            }
            Seen::Changed(c) => self
                .brokers
                .heard(&c.broker_id, c.role, c.epoch, Instant::now()),
            Seen::Started(_) | Seen::Accepted(..) => {}
        }
    }

    /// Asks the active broker for the state of every accepted order not
    /// known to be final (events wait in their subscriptions meanwhile).
    pub(in crate::bench) async fn poll_unfinished(&mut self) {
        let ids = self.ledger.unfinished();
        let bus = self.bus.clone();
        let mut replies = stream::iter(ids)
            .map(|order_id| {
                let bus = bus.clone();
                async move {
                    let get = GetOrder {
                        order_id: order_id.clone(),
                    };
                    let reply: Result<OrderInfo, BusError> = bus
                        .request(bus.subjects().order_get(), &get, SUBMIT_TIMEOUT)
                        .await;
                    (order_id, reply)
                }
            })
            .buffer_unordered(32);
        while let Some((order_id, reply)) = replies.next().await {
            match reply {
                Ok(info) => self.ledger.finished(&order_id, info.state),
                Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound => {
                    if let Some(i) = self.ledger.index_of(&order_id) {
                        self.ledger.orders[i].not_found = true;
                    }
                }
                Err(_) => {}
            }
        }
    }
}
