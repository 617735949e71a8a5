//! What `baton bench failover-scheduler` follows: the orders accepted for
//! its job and the agents' role changes, and the broker's view of who is
//! Scheduler.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use futures::stream::{self, LocalBoxStream, StreamExt as _};

use super::failover::{JOB, ROUND_LIMIT};
use crate::bench::client::listen;
use crate::bus::Bus;
use crate::protocol::*;

/// An order accepted for [`JOB`], or an agent's role change.
pub(super) enum Seen {
    Accepted(OrderAccepted),
    Changed(AgentChanged),
}

/// The events the bench follows, and what they add up to.
pub(super) struct Watch {
    events: LocalBoxStream<'static, Seen>,
    /// Orders accepted per slot.
    pub(super) orders: BTreeMap<u64, usize>,
    /// The agent last known as Scheduler.
    pub(super) scheduler: Option<String>,
    /// A kill is being watched: the role is expected to move.
    pub(super) expecting_move: bool,
    pub(super) unprompted_moves: usize,
}

impl Watch {
    pub(super) async fn start(bus: &Bus) -> anyhow::Result<Watch> {
        let s = bus.subjects();
        let accepted = listen(bus, s.event(JOB, "*", EventKind::Accepted), Seen::Accepted);
        let changed = listen(bus, s.agent_changes(), Seen::Changed);
        Ok(Watch {
            events: stream::select(accepted.await?, changed.await?).boxed_local(),
            orders: BTreeMap::new(),
            scheduler: None,
            expecting_move: false,
            unprompted_moves: 0,
        })
    }

    /// The next event; `None` once `deadline` passes.
    pub(super) async fn step(&mut self, deadline: tokio::time::Instant) -> Option<Seen> {
        let seen = tokio::select! {
            seen = self.events.next() => seen?,
            _ = tokio::time::sleep_until(deadline) => return None,
        };
        match &seen {
            Seen::Accepted(a) => {
                *self.orders.entry(a.slot_ms.unwrap_or(0)).or_default() += 1;
            }
            Seen::Changed(c) if c.role == AgentRole::Scheduler => {
                if self.scheduler.as_deref() != Some(c.agent_id.as_str()) {
                    if !self.expecting_move && self.scheduler.is_some() {
                        tracing::warn!(agent = %c.agent_id, reason = %c.reason, "the Scheduler role moved without a kill");
                        self.unprompted_moves += 1;
                    }
                    self.scheduler = Some(c.agent_id.clone());
                }
            }
            Seen::Changed(_) => {}
        }
        Some(seen)
    }

    /// Takes events until `until`.
    pub(super) async fn idle(&mut self, until: tokio::time::Instant) {
        while self.step(until).await.is_some() {}
    }
}

/// The cluster as the bench needs it before a kill.
pub(super) struct Ready {
    /// The only agent in the Scheduler role.
    pub(super) scheduler: String,
    /// The broker that answered: the active one.
    pub(super) broker: String,
}

/// Asks the broker for its status every 50 ms (taking events meanwhile)
/// until every agent is there, exactly one is Scheduler and every broker of
/// `standbys` is heard as a standby; returns the Scheduler and the broker.
pub(super) async fn current_scheduler(
    watch: &mut Watch,
    bus: &Bus,
    agents: &[String],
    standbys: &[String],
) -> anyhow::Result<Ready> {
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        let status: Result<StatusReply, _> = bus
            .request(
                bus.subjects().status(),
                &StatusRequest::default(),
                Duration::from_secs(1),
            )
            .await;
        if let Ok(status) = &status {
            let present = agents
                .iter()
                .all(|id| status.agents.iter().any(|a| &a.id == id));
            let standing_by = |id: &String| {
                let b = status.brokers.iter().find(|b| &b.id == id);
                b.is_some_and(|b| b.role == BrokerRole::Standby)
            };
            let standbys_ready = standbys
                .iter()
                .filter(|id| **id != status.broker_id)
                .all(standing_by);
            let mut schedulers = status
                .agents
                .iter()
                .filter(|a| a.role == AgentRole::Scheduler);
            if let (true, true, Some(one), None) = (
                present,
                standbys_ready,
                schedulers.next(),
                schedulers.next(),
            ) {
                return Ok(Ready {
                    scheduler: one.id.clone(),
                    broker: status.broker_id.clone(),
                });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let seen = match &status {
                Ok(s) => format!(
                    "{:?}, brokers {:?}",
                    s.agents
                        .iter()
                        .map(|a| format!("{} {}", a.id, a.role.as_str()))
                        .collect::<Vec<_>>(),
                    s.brokers
                        .iter()
                        .map(|b| format!("{} {:?}", b.id, b.role))
                        .collect::<Vec<_>>()
                ),
                Err(e) => e.to_string(),
            };
            bail!("no single Scheduler among {agents:?} (with standbys among {standbys:?}) within {ROUND_LIMIT:?}; last seen: {seen}");
        }
        watch
            .idle(tokio::time::Instant::now() + Duration::from_millis(50))
            .await;
    }
}
