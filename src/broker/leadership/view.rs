//! What the lease keeper hears and says: other brokers' heartbeats, its
//! own standby heartbeats, leadership events, the view it answers on
//! `{p}.api.status.brokers`, and the lease news it gives the active Broker.

use std::time::Instant;

use super::{Leadership, LEASE_KEY};
use crate::broker::lease::{self, Peer};
use crate::broker::LeaseNews;
use crate::bus::Request;
use crate::protocol::*;
use crate::time::now_ms;
use tracing::{error, warn};

impl Leadership {
    pub(super) fn heard(&mut self, hb: BrokerHeartbeat) {
        if hb.broker_id == self.id {
            self.heard_twin(&hb);
            return;
        }
        if hb.role == BrokerRole::Stopped {
            // gone for good: out of the view and the ranking now, not
            // when its heartbeats are missed
            self.heard.remove(&hb.broker_id);
            self.tell_broker(Instant::now());
            return;
        }
        if hb.role == BrokerRole::Active {
            self.active_seen_ms = now_ms();
        }
        let now = Instant::now();
        let alive = self.config.broker.heartbeat_interval * 4;
        let last_heard = self.heard.get(&hb.broker_id).map(|(_, at)| *at);
        let greet = hb.role == BrokerRole::Standby
            && self.active.is_none()
            && self.stall(now).is_none()
            && lease::greets(last_heard, now, alive);
        self.heard.insert(hb.broker_id.clone(), (hb, now));
        if greet {
            // a newcomer learns at once who goes before it
            self.last_heartbeat = None;
            self.standby_heartbeat(now);
        }
    }

    /// A heartbeat with its own id: its own, or another process's.
    fn heard_twin(&mut self, hb: &BrokerHeartbeat) {
        let mine = super::instance();
        if hb.role == BrokerRole::Stopped {
            // an earlier process with our id leaving (a restart): no clash
        } else if lease::twin_goes_first(&hb.instance, mine) {
            error!(broker = %self.id, other = %hb.instance, me = mine, "another broker process that started earlier uses this id; stopping");
            self.twin = Some(format!(
                "another running broker uses the id '{}' ({} in its last heartbeat); give each broker its own --id",
                self.id,
                hb.role.as_str()
            ));
        } else if !hb.instance.is_empty() && hb.instance != mine {
            // it stops at its first hearing of ours: said once or twice
            warn!(broker = %self.id, other = %hb.instance, me = mine, "a broker process started later uses this id; it stops itself (give each broker its own --id)");
        }
    }

    /// The other brokers as the lease rules see them.
    pub(super) fn peers(&self) -> Vec<Peer> {
        let peer = |(hb, at): &(BrokerHeartbeat, Instant)| Peer {
            id: hb.broker_id.clone(),
            precedence: hb.precedence,
            standby: hb.role == BrokerRole::Standby,
            last_seen: *at,
        };
        self.heard.values().map(peer).collect()
    }

    /// Tells the active Broker how its lease and its peers stand.
    pub(super) fn tell_broker(&self, now: Instant) {
        let Some(a) = &self.active else {
            return;
        };
        let heard = (self.heard.values()).map(|(hb, at)| (status_of(hb, *at, now), *at));
        let alive = self.config.broker.heartbeat_interval * 4;
        let peers = lease::peers_seen_by_active(heard, a.epoch, now, alive);
        a.broker.do_send(LeaseNews {
            renewed_at: Some(a.last_ok),
            peers,
        });
    }

    /// Answers `{p}.api.status.brokers` with this broker's view; the lease
    /// is read beside the loop, which goes on.
    pub(super) fn answer_view(&mut self, request: Request<StatusRequest>) {
        let now = Instant::now();
        if self.active.is_some() {
            self.active_seen_ms = now_ms();
        }
        let brokers = (self.heard.values())
            .map(|(hb, at)| status_of(hb, *at, now))
            .collect();
        let mut view = BrokerView {
            broker_id: self.id.clone(),
            role: match self.active {
                Some(_) => BrokerRole::Active,
                None => BrokerRole::Standby,
            },
            epoch: self.active.as_ref().map_or(0, |a| a.epoch),
            precedence: self.config.broker.precedence,
            protocol: PROTOCOL_VERSION,
            lease: None,
            lease_error: None,
            no_active_since_ms: None,
            brokers,
            at_ms: now_ms(),
        };
        let (kv, bus) = (self.kv.clone(), self.bus.clone());
        let active_seen_ms = self.active_seen_ms;
        let bound = self.config.broker.renew_interval;
        tokio::spawn(async move {
            match tokio::time::timeout(bound, kv.get_with_revision(LEASE_KEY)).await {
                Ok(Ok(Some((lease, revision)))) => {
                    view.lease = Some(lease::as_shown(lease, revision))
                }
                Ok(Ok(None)) => view.no_active_since_ms = Some(active_seen_ms),
                Ok(Err(e)) => view.lease_error = Some(e.to_string()),
                Err(_) => view.lease_error = Some("no answer from JetStream in time".into()),
            }
            if view.lease.is_none() && view.lease_error.is_some() {
                let active_heard = view.brokers.iter().any(|b| b.role == BrokerRole::Active);
                if !active_heard && view.role == BrokerRole::Standby {
                    view.no_active_since_ms = Some(active_seen_ms);
                }
            }
            bus.reply(&request.replier, &view);
        });
    }

    pub(super) fn standby_heartbeat(&mut self, now: Instant) {
        let due = self.last_heartbeat.is_none_or(|t| {
            now.saturating_duration_since(t) >= self.config.broker.heartbeat_interval
        });
        if !due {
            return;
        }
        self.last_heartbeat = Some(now);
        self.heartbeat(BrokerRole::Standby);
    }

    /// Its last heartbeat, on a normal stop: the others drop it at once.
    pub(super) fn farewell(&self) {
        self.heartbeat(BrokerRole::Stopped);
    }

    fn heartbeat(&self, role: BrokerRole) {
        let hb = BrokerHeartbeat {
            broker_id: self.id.clone(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
            epoch: 0,
            role,
            precedence: self.config.broker.precedence,
            lease_age_ms: None,
            instance: super::instance().to_string(),
        };
        self.bus
            .post_signed(self.bus.subjects().broker_heartbeat(), &hb);
    }

    pub(super) fn announce(&self, role: BrokerRole, epoch: u64, reason: &str) {
        crate::broker::metrics::leadership(role == BrokerRole::Active, epoch);
        let event = BrokerChanged {
            broker_id: self.id.clone(),
            role,
            epoch,
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.bus
            .post(self.bus.subjects().broker_changed(&self.id), &event);
    }
}

/// Another broker as its last heartbeat (heard at `at`) describes it.
fn status_of(hb: &BrokerHeartbeat, at: Instant, now: Instant) -> BrokerStatus {
    BrokerStatus {
        id: hb.broker_id.clone(),
        role: hb.role,
        epoch: hb.epoch,
        precedence: hb.precedence,
        lease_age_ms: hb.lease_age_ms,
        heartbeat_age_ms: now.saturating_duration_since(at).as_millis() as u64,
    }
}
