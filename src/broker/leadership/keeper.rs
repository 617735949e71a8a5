//! The lease keeper: campaigns, renews, steps down, on a thread of its own
//! with its own runtime and NATS connection (see `mod.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Active, Host, Leadership, LEASE_KEY};
use crate::broker::lease;
use crate::broker::StepDown;
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;

/// How many unanswered creates of the lease a standby remembers: it sends
/// none while its connection is down, so only those sent just before.
const UNANSWERED_KEPT: usize = 16;

/// Starts the keeper's thread; `done` says how it ended: after `release`
/// (SIGTERM on the host), or failing.
pub(super) fn spawn(
    config: Config,
    host: Host,
    release: oneshot::Receiver<()>,
    done: oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("lease-keeper".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(run(config, host, release)),
                Err(e) => Err(anyhow::anyhow!("cannot start the lease keeper: {e}")),
            };
            let _ = done.send(result);
        })?;
    Ok(())
}

async fn run(config: Config, host: Host, release: oneshot::Receiver<()>) -> anyhow::Result<()> {
    // its own connection: the Broker's reads and writes never queue before a renewal
    let stats = host.stats.clone();
    let bus = crate::daemon::connect_beside(&config, "baton-broker-lease", stats).await?;
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
        host,
        heard: BTreeMap::new(),
        active: None,
        free_since: None,
        last_heartbeat: None,
        active_seen_ms: now_ms(),
        stall_said: false,
        start_failed: None,
        start_failures: 0,
        unanswered: Default::default(),
        twin: None,
    };
    info!(broker = %me.id, precedence = me.config.broker.precedence, "broker started as a standby");
    let mut tick = tokio::time::interval(me.config.broker.renew_interval / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(release);
    loop {
        let stopped = async {
            match me.active.as_mut() {
                Some(a) => (&mut a.stopped).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut release => {
                me.release().await;
                return Ok(());
            }
            true = stopped => {
                me.step_down("its NATS subscriptions ended").await;
                anyhow::bail!("the broker lost its NATS subscriptions");
            }
            // only brokers' signed heartbeats decide who goes first
            Some(hb) = heartbeats.next() => if hb.sender.is(crate::auth::Role::Broker) {
                me.heard(hb.body);
                if let Some(reason) = me.twin.take() {
                    me.step_down("another broker process uses its id").await;
                    anyhow::bail!(reason);
                }
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
    /// How long the broker's thread has been silent, when past
    /// `broker.stall_timeout` ([`lease::stalled`]).
    pub(super) fn stall(&self, now: Instant) -> Option<Duration> {
        let last = self.host.liveness.last();
        let limit = (self.config.broker.stall_timeout).max(self.config.broker.lease);
        lease::stalled(last, now, limit).then(|| now.saturating_duration_since(last))
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let alive = self.config.broker.heartbeat_interval * 4;
        self.heard
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < alive * 10);
        let stall = self.stall(now);
        if stall.is_none() {
            self.tell_broker(now);
        }
        match (stall, self.stall_said) {
            (Some(silent), false) => {
                warn!(broker = %self.id, silent_ms = silent.as_millis() as u64, active = self.active.is_some(), "the broker thread has run no timer within broker.stall_timeout (wedged?): not renewing nor campaigning")
            }
            (None, true) => info!(broker = %self.id, "the broker thread runs again"),
            _ => {}
        }
        self.stall_said = stall.is_some();
        match &self.active {
            Some(_) if stall.is_some() => {
                self.step_down("the broker thread stalled past broker.stall_timeout")
                    .await
            }
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
            // a stalled standby neither heartbeats nor campaigns: it could
            // not start a Broker
            None if stall.is_some() => {}
            None => {
                self.standby_heartbeat(now);
                let peers = self.peers();
                let me = (self.id.as_str(), self.config.broker.precedence);
                let better = lease::better_standby(me, &peers, now, alive);
                let lease = self.config.broker.lease;
                let wait = lease::takeover_retry_after(self.start_failures, lease);
                if lease::holding_off(self.start_failed, wait, now) {
                    // its last takeover failed a moment ago: the others may try
                } else if lease::may_campaign(better, self.free_since, now, lease) {
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

    /// Tries to take the lease; on success has the host start the Broker.
    async fn campaign(&mut self) -> anyhow::Result<()> {
        // the client would hold the create until it reconnects, and send
        // it long after it timed out here
        if !self.bus.connected() {
            return Ok(());
        }
        let mut sent = Instant::now();
        let bound = self.config.broker.renew_interval;
        let value = self.lease_value(0);
        let created = tokio::time::timeout(bound, self.kv.create_revision(LEASE_KEY, &value));
        let (epoch, adopted) = match created.await {
            Ok(Ok(Some(revision))) => (revision, false),
            Ok(Ok(None)) => match self.late_create().await {
                Some(revision) => (revision, true),
                None => return Ok(()),
            },
            Ok(Err(e)) => {
                debug!(error = %e, "cannot reach the leader bucket; still a standby");
                return Ok(());
            }
            Err(_) => {
                // it may land after all: remembered, to take it then
                if self.unanswered.len() == UNANSWERED_KEPT {
                    self.unanswered.pop_front();
                }
                self.unanswered.push_back(value.renewed_at_ms);
                return Ok(());
            }
        };
        if adopted {
            // its time runs from our write below, not from the late create
            sent = Instant::now();
        }
        info!(broker = %self.id, epoch, adopted, "won the leadership lease; becoming active");
        // Write our epoch into the lease for anyone reading it.
        let revision = match self
            .kv
            .update(LEASE_KEY, &self.lease_value(epoch), epoch)
            .await
        {
            Ok(Some(revision)) => revision,
            // a lease we did not see created is ours only once we wrote it
            _ if adopted => {
                warn!(broker = %self.id, epoch, "could not take the lease a late create of ours made; still a standby");
                return Ok(());
            }
            _ => epoch,
        };
        self.unanswered.clear();
        let tenure = lease::Tenure::new(sent, self.config.broker.lease);
        let start = self.host.start(epoch, tenure.clone());
        // a takeover slowed by JetStream (a stream electing its leader) or
        // by a large inventory keeps the lease meanwhile, so no other
        // broker starts over it
        let (started, revision, last_ok) =
            self.renewing(start, epoch, revision, sent, &tenure).await;
        let started = match started {
            Some(Ok(started)) => started,
            Some(Err(e)) => {
                tenure.end();
                let bound = self.config.broker.renew_interval;
                let _ = tokio::time::timeout(bound, self.kv.delete_if(LEASE_KEY, revision)).await;
                // a standby still: JetStream may be unavailable or electing
                // a stream's leader, and the other brokers fare no better
                self.start_failures = self.start_failures.saturating_add(1);
                self.start_failed = Some(Instant::now());
                let failures = self.start_failures;
                let wait = lease::takeover_retry_after(failures, self.config.broker.lease);
                let retry_in = humantime::format_duration(wait);
                if failures.is_power_of_two() {
                    warn!(broker = %self.id, epoch, error = %e, failures, %retry_in, "cannot start the broker; gave the lease back and stays a standby, campaigning again after retry_in (said at the 1st, 2nd, 4th, 8th... failure in a row)");
                }
                self.announce(BrokerRole::Standby, epoch, "its takeover failed");
                return Ok(());
            }
            None => {
                // the host stops the Broker if it ever starts; the lease runs out
                tenure.end();
                warn!(broker = %self.id, epoch, "the broker thread stalled past broker.stall_timeout while taking over; giving the lease up");
                self.announce(
                    BrokerRole::Standby,
                    epoch,
                    "the broker thread stalled while taking over",
                );
                return Ok(());
            }
        };
        self.active = Some(Active {
            broker: started.broker,
            epoch,
            revision,
            tenure,
            last_ok,
            last_try: last_ok,
            stopped: started.stopped,
            _notifier: started.notifier,
        });
        self.free_since = None;
        self.start_failed = None;
        self.start_failures = 0;
        self.announce(BrokerRole::Active, epoch, "won the leadership lease");
        Ok(())
    }

    /// The revision of the lease at the key when one of our creates that
    /// got no answer made it after all ([`lease::ours_unanswered`]).
    async fn late_create(&mut self) -> Option<u64> {
        if self.unanswered.is_empty() {
            return None;
        }
        let bound = self.config.broker.renew_interval;
        let read = tokio::time::timeout(bound, self.kv.get_with_revision(LEASE_KEY));
        let (found, revision) = read.await.ok()?.ok()??;
        let unanswered = self.unanswered.make_contiguous();
        lease::ours_unanswered(&found, &self.id, unanswered).then_some(revision)
    }

    /// Awaits `start`, renewing the lease (at `revision`, last renewed at
    /// `last_ok`) every `renew_interval` meanwhile, while the broker's
    /// thread shows it is alive; returns what `start` gave (`None`: that
    /// thread stalled past `broker.stall_timeout`, and it is not awaited
    /// any longer) and the lease's revision and last good renewal then. A
    /// renewal refused (another broker holds the key) is left for the next
    /// [`Leadership::renew`] to find, which steps down.
    async fn renewing<F: std::future::Future>(
        &self,
        start: F,
        epoch: u64,
        mut revision: u64,
        mut last_ok: Instant,
        tenure: &lease::Tenure,
    ) -> (Option<F::Output>, u64, Instant) {
        let every = self.config.broker.renew_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let began = Instant::now();
        tokio::pin!(start);
        loop {
            tokio::select! {
                started = &mut start => return (Some(started), revision, last_ok),
                _ = tick.tick() => {
                    if self.stall(Instant::now()).is_some() {
                        return (None, revision, last_ok);
                    }
                    let sent = Instant::now();
                    let value = self.lease_value(epoch);
                    let update = self.kv.update(LEASE_KEY, &value, revision);
                    match tokio::time::timeout(self.renewal_bound(last_ok, sent), update).await {
                        Ok(Ok(Some(next))) => {
                            (revision, last_ok) = (next, sent);
                            tenure.renewed(sent);
                        }
                        _ => warn!(broker = %self.id, epoch, taking_over_ms = began.elapsed().as_millis() as u64, "lease renewal during the takeover failed or timed out"),
                    }
                }
            }
        }
    }

    /// How long a renewal sent at `sent` may take ([`lease::renewal_bound`]).
    fn renewal_bound(&self, last_ok: Instant, sent: Instant) -> Duration {
        let b = &self.config.broker;
        lease::renewal_bound(last_ok, sent, b.lease, b.renew_interval)
    }

    async fn renew(&mut self) -> anyhow::Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let sent = Instant::now();
        a.last_try = sent;
        let (epoch, revision, last_ok) = (a.epoch, a.revision, a.last_ok);
        let value = self.lease_value(epoch);
        let bound = self.renewal_bound(last_ok, sent);
        match tokio::time::timeout(bound, self.kv.update(LEASE_KEY, &value, revision)).await {
            Ok(Ok(Some(revision))) => {
                let took = sent.elapsed();
                if took > self.config.broker.renew_interval / 2 {
                    info!(broker = %self.id, took_ms = took.as_millis() as u64, "slow lease renewal");
                }
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

    /// Stops acting at once (the tenure ends before the Broker has even
    /// handled its `StepDown`); a standby again. A wedged broker thread
    /// handles the `StepDown` when it wakes, acting on nothing meanwhile.
    pub(super) async fn step_down(&mut self, reason: &str) {
        let Some(a) = self.active.take() else {
            return;
        };
        a.tenure.end();
        warn!(broker = %self.id, epoch = a.epoch, reason, "stepping down to standby");
        if !stop(&a, self.config.broker.renew_interval).await {
            warn!(broker = %self.id, epoch = a.epoch, "the Broker has not stopped yet (its thread is busy); it acts on nothing and stops when it gets to it");
        }
        self.announce(BrokerRole::Standby, a.epoch, reason);
    }

    /// On a normal stop: stop acting and hand the lease over at once, once
    /// the Broker has stopped (else the lease runs out by itself).
    async fn release(&mut self) {
        let Some(a) = self.active.take() else {
            info!(broker = %self.id, "standby broker stopping");
            self.farewell();
            self.announce(BrokerRole::Stopped, 0, "stopped normally");
            self.bus.posted().await;
            return;
        };
        info!(broker = %self.id, epoch = a.epoch, "broker stopping; handing the lease over");
        a.tenure.end();
        let bound = self.config.broker.renew_interval;
        let reason = if !stop(&a, self.config.broker.stall_timeout).await {
            warn!("the Broker did not stop in time; the lease expires by itself");
            "stopped normally; its lease runs out (the broker did not stop in time)"
        } else {
            match tokio::time::timeout(bound, self.kv.delete_if(LEASE_KEY, a.revision)).await {
                Ok(Ok(())) => "stopped normally; lease handed over",
                Ok(Err(e)) => {
                    warn!(error = %e, "lease not released; it expires by itself");
                    "stopped normally; its lease runs out (not released)"
                }
                Err(_) => {
                    warn!("lease release timed out; it expires by itself");
                    "stopped normally; its lease runs out (not released in time)"
                }
            }
        };
        // after the Broker's own last heartbeat (it stopped, or acts on nothing)
        self.farewell();
        self.announce(BrokerRole::Stopped, a.epoch, reason);
        self.bus.posted().await;
    }
}

/// Sends the Broker `StepDown` (queued whatever its mailbox holds, so a
/// busy thread gets to it) and waits up to `bound` for it to stop; whether
/// it did.
async fn stop(a: &Active, bound: Duration) -> bool {
    a.broker.do_send(StepDown);
    let stopped = async {
        while a.broker.connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(bound, stopped).await.is_ok()
}
