//! One round of `baton bench failover-broker`: wait for a single active
//! broker, SIGKILL it, measure until a standby is active and has dispatched,
//! start the killed one again.

use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::Signal;

use super::traffic::{Seen, Traffic};
use super::ROUND_LIMIT;
use crate::bench::setup::spawn_broker;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;

/// Takes events until every broker of `ids` is heard and exactly one is
/// active; returns it with its epoch.
pub(super) async fn ready(
    traffic: &mut Traffic,
    ids: &[String],
    alive: Duration,
) -> anyhow::Result<(String, u64)> {
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        if let Some(active) = traffic.brokers.single_active(ids, Instant::now(), alive) {
            return Ok(active);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!(
                "not every broker of {ids:?} heard with exactly one active within {ROUND_LIMIT:?}"
            );
        }
        traffic.idle(now + Duration::from_millis(50)).await;
    }
}

/// What one kill measured, in ms from the kill.
#[derive(Default)]
pub(super) struct Kill {
    new_active: Option<f64>,
    successor: Option<(String, u64)>,
    first_accepted: Option<f64>,
    first_dispatch: Option<f64>,
    first_started_any: Option<f64>,
}

impl Kill {
    pub(super) fn describe(&self, victim: &str, epoch: u64) -> String {
        let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} ms"));
        let who = self
            .successor
            .as_ref()
            .map_or("no broker".to_string(), |(id, e)| {
                format!("{id} (epoch {e})")
            });
        format!(
            "killed {victim} (epoch {epoch}); {who} active after {}, first accept {}, \
             first dispatch {}, first started event {}",
            ms(self.new_active),
            ms(self.first_accepted),
            ms(self.first_dispatch),
            ms(self.first_started_any)
        )
    }
}

#[derive(Default)]
pub(super) struct Measurements {
    pub(super) new_active: Vec<f64>,
    pub(super) first_accepted: Vec<f64>,
    pub(super) first_dispatch: Vec<f64>,
    pub(super) first_started_any: Vec<f64>,
}

impl Measurements {
    pub(super) fn add(&mut self, k: &Kill) {
        self.new_active.extend(k.new_active);
        self.first_accepted.extend(k.first_accepted);
        self.first_dispatch.extend(k.first_dispatch);
        self.first_started_any.extend(k.first_started_any);
    }
}

/// SIGKILLs `victim` and follows events until another broker is active and
/// has dispatched an order submitted after the kill (or [`ROUND_LIMIT`]
/// passes).
pub(super) async fn kill_and_watch(
    traffic: &mut Traffic,
    cluster: &mut LocalCluster,
    victim: &str,
    epoch: u64,
) -> anyhow::Result<Kill> {
    // orders from this index on are first submitted after the kill
    let first_new = traffic.ledger.orders.len();
    let killed_at = now_ms();
    cluster.signal(victim, Signal::SIGKILL)?;
    let since = |at_ms: u64| at_ms.saturating_sub(killed_at) as f64;
    let mut kill = Kill::default();
    // `started` events after the kill: their orders may be accepted later
    let mut starts: Vec<(String, u64)> = Vec::new();
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    while kill.new_active.is_none() || kill.first_dispatch.is_none() {
        let Some(seen) = traffic.step(deadline).await else {
            break;
        };
        let became_active = match seen {
            Seen::Changed(c) if c.role == BrokerRole::Active && c.at_ms >= killed_at => {
                Some((c.broker_id, c.epoch, c.at_ms))
            }
            Seen::Heartbeat(hb) if hb.role == BrokerRole::Active => {
                Some((hb.broker_id, hb.epoch, hb.sent_at_ms))
            }
            Seen::Accepted(index, at_ms) if index >= first_new => {
                kill.first_accepted.get_or_insert(since(at_ms));
                None
            }
            Seen::Started(s) if s.at_ms >= killed_at => {
                kill.first_started_any.get_or_insert(since(s.at_ms));
                starts.push((s.order_id, s.at_ms));
                None
            }
            _ => None,
        };
        if let Some((id, new_epoch, at_ms)) = became_active {
            if id != victim && new_epoch > epoch && kill.new_active.is_none() {
                kill.new_active = Some(since(at_ms));
                kill.successor = Some((id, new_epoch));
            }
        }
        let ledger = &traffic.ledger;
        kill.first_dispatch = starts
            .iter()
            .filter(|(order, _)| ledger.index_of(order).is_some_and(|i| i >= first_new))
            .map(|&(_, at_ms)| since(at_ms))
            .reduce(f64::min);
    }
    Ok(kill)
}

/// Starts `victim` again under its name and waits until it heartbeats.
pub(super) async fn restart(
    traffic: &mut Traffic,
    cluster: &mut LocalCluster,
    victim: &str,
) -> anyhow::Result<()> {
    let restarted_at = now_ms();
    spawn_broker(cluster, victim)?;
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        match traffic.step(deadline).await {
            Some(Seen::Heartbeat(hb))
                if hb.broker_id == victim && hb.sent_at_ms >= restarted_at =>
            {
                return Ok(())
            }
            Some(_) => {}
            None => bail!("{victim} did not heartbeat within {ROUND_LIMIT:?} of its restart"),
        }
    }
}
