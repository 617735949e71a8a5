//! What `baton broker` runs: a loop that keeps this process a standby until
//! it wins the leadership lease (the lease key in the `baton_leader`
//! bucket), then runs the [`Broker`] actor and the Elector (with the lease
//! revision as their epoch) for as long as it renews the lease.
//!
//! - Standby: heartbeats as a standby (`role: standby`), and every
//!   `renew_interval / 2` tries to create the lease key when
//!   [`lease::may_campaign`] lets it. The lease key's values expire
//!   `broker.lease` after they were written.
//!
//! - Active: renews every `broker.renew_interval` with a compare-and-swap; stops the
//!   Broker at once when another broker holds the key (a refused renewal
//!   reads the key again: one of its own that timed out may have landed,
//!   [`lease::still_ours`]), and when renewals
//!   keep failing, before the lease can expire ([`lease::must_step_down`]),
//!   by sending it `StepDown`.
//!   After stepping down it is a standby again, never a second active one.
//! - While active it also runs the notifier (`crate::notify`, when
//!   `[notify]` names targets), dropped with the Broker when it steps down.
//! - SIGTERM: the active broker stops its Broker and deletes the lease key,
//!   so a standby takes over at its next try instead of after expiry.
//!
//! - Every broker process, standby or active, answers requests on
//!   `{p}.api.status.brokers` with its own view ([`BrokerView`]): its
//!   role, the lease as it reads it then, and since when no broker is
//!   active when none is; the active Broker alone answers `{p}.api.status`.
//!
//! Leadership changes are published as [`BrokerChanged`] events. Every
//! command a broker sends carries its epoch; subagents
//! (`subagent/epoch.rs`, where 0 means unknown and is not fenced) and
//! agents (`agent/role.rs`) refuse an older one than the newest they have
//! seen.
//!
//! Size: at the ~500-line mark; the lease's rules are in `lease.rs`, the
//! record it writes is `protocol::BrokerLease`. The next split: the
//! standby's campaign and the active's renewal into a `leadership/` folder.

use std::collections::BTreeMap;
use std::time::Instant;

use actix::Addr;
use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::lease::{self, Peer};
use super::{Broker, LeaseNews, NotifyStop, StepDown};
use crate::bus::{Bus, Kv, Request};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

/// The key of the lease in the leader bucket.
const LEASE_KEY: &str = "broker";

struct Active {
    broker: Addr<Broker>,
    epoch: u64,
    /// The revision of our last write of the key.
    revision: u64,
    /// When the last successful renewal was sent.
    last_ok: Instant,
    /// The same, as the Broker and the Elector check it before acting.
    tenure: lease::Tenure,
    last_try: Instant,
    /// Fires when the Broker stopped by itself.
    stopped: oneshot::Receiver<()>,
    /// Notifications of ended orders, sent while active (dropped: stopped).
    _notifier: Option<crate::notify::Notifier>,
}

struct Leadership {
    config: Config,
    bus: Bus,
    kv: Kv<BrokerLease>,
    id: String,
    /// The last heartbeat of each other broker, and when it came.
    heard: BTreeMap<String, (BrokerHeartbeat, Instant)>,
    active: Option<Active>,
    /// When the lease was first found free, while standby.
    free_since: Option<Instant>,
    last_heartbeat: Option<Instant>,
    /// When it last knew a broker active (heard one, or was one); its own
    /// start before that.
    active_seen_ms: u64,
}

/// Runs a broker (standby until it wins the lease) until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let kv = bus
        .kv_expiring::<BrokerLease>(&config.leader_bucket(), config.broker.lease)
        .await?;
    let mut heartbeats = bus
        .listen::<BrokerHeartbeat>(bus.subjects().broker_heartbeat())
        .await?;
    let mut views = bus
        .serve::<StatusRequest>(bus.subjects().status_brokers())
        .await?;
    let mut me = Leadership {
        id: config.broker_id(),
        config,
        bus,
        kv,
        heard: BTreeMap::new(),
        active: None,
        free_since: None,
        last_heartbeat: None,
        active_seen_ms: now_ms(),
    };
    info!(broker = %me.id, precedence = me.config.broker.precedence, "broker started as a standby");
    let mut tick = tokio::time::interval(me.config.broker.renew_interval / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = crate::daemon::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let stopped = async {
            match me.active.as_mut() {
                Some(a) => (&mut a.stopped).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut signal => {
                me.release().await;
                return Ok(());
            }
            true = stopped => {
                me.step_down("its NATS subscriptions ended").await;
                anyhow::bail!("the broker lost its NATS subscriptions");
            }
            // only brokers' signed heartbeats decide who goes first
            Some(hb) = heartbeats.next() => if hb.sender.is(crate::auth::Role::Broker) {
                me.heard(hb.body)
            } else {
                if me.bus.stats().count_refused() {
                    warn!(sender = %hb.sender.describe(), "broker heartbeat not signed by a broker ignored (logged at the 1st, 2nd, 4th, 8th... refusal)");
                }
            },
            Some(request) = views.next() => me.answer_view(request),
            _ = tick.tick() => me.tick().await?,
        }
    }
}

impl Leadership {
    fn heard(&mut self, hb: BrokerHeartbeat) {
        if hb.broker_id == self.id {
            return;
        }
        if hb.role == BrokerRole::Active {
            self.active_seen_ms = now_ms();
        }
        self.heard
            .insert(hb.broker_id.clone(), (hb, Instant::now()));
    }

    /// The other brokers as the lease rules see them.
    fn peers(&self) -> Vec<Peer> {
        let peer = |(hb, at): &(BrokerHeartbeat, Instant)| Peer {
            id: hb.broker_id.clone(),
            precedence: hb.precedence,
            standby: hb.role == BrokerRole::Standby,
            last_seen: *at,
        };
        self.heard.values().map(peer).collect()
    }

    /// Tells the active Broker how its lease and its peers stand.
    fn tell_broker(&self, now: Instant) {
        let Some(a) = &self.active else {
            return;
        };
        let heard = self.heard.values().map(|(hb, at)| {
            let peer = BrokerStatus {
                id: hb.broker_id.clone(),
                role: hb.role,
                epoch: hb.epoch,
                precedence: hb.precedence,
                lease_age_ms: hb.lease_age_ms,
                heartbeat_age_ms: now.saturating_duration_since(*at).as_millis() as u64,
            };
            (peer, *at)
        });
        let alive = self.config.broker.heartbeat_interval * 4;
        let peers = lease::peers_seen_by_active(heard, a.epoch, now, alive);
        a.broker.do_send(LeaseNews {
            renewed_at: Some(a.last_ok),
            peers,
        });
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let alive = self.config.broker.heartbeat_interval * 4;
        self.heard
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < alive * 10);
        self.tell_broker(now);
        match &self.active {
            Some(a)
                if now.saturating_duration_since(a.last_try)
                    >= self.config.broker.renew_interval =>
            {
                self.renew().await?
            }
            Some(a) if lease::must_step_down(a.last_ok, now, self.config.broker.lease) => {
                self.step_down("could not renew the lease in time").await
            }
            Some(_) => {}
            None => {
                self.standby_heartbeat(now);
                let peers = self.peers();
                let me = (self.id.as_str(), self.config.broker.precedence);
                let better = lease::better_standby(me, &peers, now, alive);
                if lease::may_campaign(better, self.free_since, now, self.config.broker.lease) {
                    self.campaign().await?;
                } else {
                    self.watch_free(now).await;
                }
            }
        }
        Ok(())
    }

    /// While a better standby goes first: notes since when the lease is free.
    async fn watch_free(&mut self, now: Instant) {
        let bound = self.config.broker.renew_interval;
        match tokio::time::timeout(bound, self.kv.get(LEASE_KEY)).await {
            Ok(Ok(None)) => {
                self.free_since.get_or_insert(now);
            }
            Ok(Ok(Some(_))) => self.free_since = None,
            _ => {}
        }
    }

    fn lease_value(&self, epoch: u64) -> BrokerLease {
        BrokerLease {
            broker_id: self.id.clone(),
            epoch,
            precedence: self.config.broker.precedence,
            renewed_at_ms: now_ms(),
        }
    }

    /// Tries to take the lease; on success starts the Broker.
    async fn campaign(&mut self) -> anyhow::Result<()> {
        let sent = Instant::now();
        let bound = self.config.broker.renew_interval;
        let value = self.lease_value(0);
        let created = tokio::time::timeout(bound, self.kv.create_revision(LEASE_KEY, &value));
        let epoch = match created.await {
            Ok(Ok(Some(revision))) => revision,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "cannot reach the leader bucket; still a standby");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        info!(broker = %self.id, epoch, "won the leadership lease; becoming active");
        // Write our epoch into the lease for anyone reading it.
        let revision = match self
            .kv
            .update(LEASE_KEY, &self.lease_value(epoch), epoch)
            .await
        {
            Ok(Some(revision)) => revision,
            _ => epoch,
        };
        let tenure = lease::Tenure::new(sent, self.config.broker.lease);
        let start = super::start(self.config.clone(), self.bus.clone(), epoch, tenure.clone());
        // a start slowed by JetStream (a stream electing its leader) keeps
        // the lease meanwhile, so no other broker starts over it
        let (revision, last_ok) = (revision, sent);
        let (started, revision, last_ok) = self
            .renewing(start, epoch, revision, last_ok, &tenure)
            .await;
        let broker = match started {
            Ok(broker) => broker,
            Err(e) => {
                warn!(error = %e, "cannot start the broker; giving the lease back");
                let _ = self.kv.delete_if(LEASE_KEY, revision).await;
                return Err(e.into());
            }
        };
        let (notify, stopped) = oneshot::channel();
        broker.do_send(NotifyStop(notify));
        self.active = Some(Active {
            broker,
            epoch,
            revision,
            tenure,
            last_ok,
            last_try: last_ok,
            stopped,
            _notifier: crate::notify::start(&self.config, self.bus.clone()),
        });
        self.free_since = None;
        self.announce(BrokerRole::Active, epoch, "won the leadership lease");
        Ok(())
    }

    /// Awaits `start`, renewing the lease (at `revision`, last renewed at
    /// `last_ok`) every `renew_interval` meanwhile; returns what `start`
    /// gave and the lease's revision and last good renewal then. A renewal
    /// refused (another broker holds the key) is left for the next
    /// [`Leadership::renew`] to find, which steps down.
    async fn renewing<F: std::future::Future>(
        &self,
        start: F,
        epoch: u64,
        mut revision: u64,
        mut last_ok: Instant,
        tenure: &lease::Tenure,
    ) -> (F::Output, u64, Instant) {
        let every = self.config.broker.renew_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(start);
        loop {
            tokio::select! {
                started = &mut start => return (started, revision, last_ok),
                _ = tick.tick() => {
                    let sent = Instant::now();
                    let value = self.lease_value(epoch);
                    let update = self.kv.update(LEASE_KEY, &value, revision);
                    if let Ok(Ok(Some(next))) = tokio::time::timeout(every, update).await {
                        (revision, last_ok) = (next, sent);
                        tenure.renewed(sent);
                    }
                }
            }
        }
    }

    async fn renew(&mut self) -> anyhow::Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let sent = Instant::now();
        a.last_try = sent;
        let (epoch, revision) = (a.epoch, a.revision);
        let value = self.lease_value(epoch);
        let bound = self.config.broker.renew_interval;
        match tokio::time::timeout(bound, self.kv.update(LEASE_KEY, &value, revision)).await {
            Ok(Ok(Some(revision))) => {
                if let Some(a) = self.active.as_mut() {
                    a.revision = revision;
                    a.last_ok = sent;
                    a.tenure.renewed(sent);
                }
            }
            Ok(Ok(None)) => self.refused_renewal(epoch).await,
            Ok(Err(e)) => warn!(broker = %self.id, error = %e, "lease renewal failed"),
            Err(_) => warn!(broker = %self.id, "lease renewal timed out"),
        }
        if let Some(a) = &self.active {
            if lease::must_step_down(a.last_ok, Instant::now(), self.config.broker.lease) {
                self.step_down("could not renew the lease in time").await;
            }
        }
        Ok(())
    }

    /// A renewal refused: the lease moved on since the revision held. Read
    /// again, it may still be this broker's own (an earlier renewal that
    /// timed out landed after all, [`lease::still_ours`]): then the next
    /// renewal goes on from its revision, and the tenure is still counted
    /// from the last renewal known to be stored. Else another broker holds
    /// it, or nobody does: step down.
    async fn refused_renewal(&mut self, epoch: u64) {
        let bound = self.config.broker.renew_interval;
        let read = tokio::time::timeout(bound, self.kv.get_with_revision(LEASE_KEY)).await;
        if let Ok(Ok(record)) = read {
            let ours = record.as_ref().map(|(lease, _)| lease);
            if let (true, Some((_, revision))) =
                (lease::still_ours(ours, &self.id, epoch), record.as_ref())
            {
                info!(broker = %self.id, epoch, revision, "a late renewal of ours was stored; renewing from it");
                if let Some(a) = self.active.as_mut() {
                    a.revision = *revision;
                }
                return;
            }
            warn!(broker = %self.id, epoch, "another broker holds the lease");
            self.step_down("another broker holds the lease").await;
            return;
        }
        // unread: keep trying; must_step_down ends the tenure in time
        warn!(broker = %self.id, epoch, "lease renewal refused and the lease could not be read");
    }

    /// Stops acting at once; a standby again.
    async fn step_down(&mut self, reason: &str) {
        let Some(a) = self.active.take() else {
            return;
        };
        warn!(broker = %self.id, epoch = a.epoch, reason, "stepping down to standby");
        let _ = a.broker.send(StepDown).await;
        self.announce(BrokerRole::Standby, a.epoch, reason);
    }

    /// On a normal stop: stop acting and hand the lease over at once.
    async fn release(&mut self) {
        let Some(a) = self.active.take() else {
            info!(broker = %self.id, "standby broker stopping");
            return;
        };
        info!(broker = %self.id, epoch = a.epoch, "broker stopping; handing the lease over");
        let _ = a.broker.send(StepDown).await;
        let bound = self.config.broker.renew_interval;
        match tokio::time::timeout(bound, self.kv.delete_if(LEASE_KEY, a.revision)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "lease not released; it expires by itself"),
            Err(_) => warn!("lease release timed out; it expires by itself"),
        }
        self.announce(
            BrokerRole::Standby,
            a.epoch,
            "stopped normally; lease released",
        );
        self.bus.posted().await;
    }

    /// Answers `{p}.api.status.brokers` with this broker's view; the lease
    /// is read beside the loop, which goes on.
    fn answer_view(&mut self, request: Request<StatusRequest>) {
        let now = Instant::now();
        if self.active.is_some() {
            self.active_seen_ms = now_ms();
        }
        let brokers = (self.heard.values())
            .map(|(hb, at)| BrokerStatus {
                id: hb.broker_id.clone(),
                role: hb.role,
                epoch: hb.epoch,
                precedence: hb.precedence,
                lease_age_ms: hb.lease_age_ms,
                heartbeat_age_ms: now.saturating_duration_since(*at).as_millis() as u64,
            })
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
            match tokio::time::timeout(bound, kv.get(LEASE_KEY)).await {
                Ok(Ok(Some(lease))) => view.lease = Some(lease),
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

    fn standby_heartbeat(&mut self, now: Instant) {
        let due = self.last_heartbeat.is_none_or(|t| {
            now.saturating_duration_since(t) >= self.config.broker.heartbeat_interval
        });
        if !due {
            return;
        }
        self.last_heartbeat = Some(now);
        let hb = BrokerHeartbeat {
            broker_id: self.id.clone(),
            sent_at_ms: now_ms(),
            protocol: PROTOCOL_VERSION,
            epoch: 0,
            role: BrokerRole::Standby,
            precedence: self.config.broker.precedence,
            lease_age_ms: None,
        };
        self.bus
            .post_signed(self.bus.subjects().broker_heartbeat(), &hb);
    }

    fn announce(&self, role: BrokerRole, epoch: u64, reason: &str) {
        super::metrics::leadership(role == BrokerRole::Active, epoch);
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
