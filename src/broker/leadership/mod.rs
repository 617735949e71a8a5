//! What `baton broker` runs: a standby until it wins the leadership lease
//! (the lease key in the `baton_leader` bucket), then the [`Broker`] actor
//! and the Elector (with the lease revision as their epoch) for as long as
//! the lease is renewed.
//!
//! Two threads, two NATS connections. The lease keeper (`keeper.rs`) runs
//! on a thread of its own, with its own current-thread runtime and its own
//! connection (same credentials, named `baton-broker-lease`): it
//! campaigns, renews and decides to step down, and answers the brokers'
//! views (`view.rs`). The Broker, its recovery and everything it serves run
//! on the process's actix thread and connection ([`run_until_signal`], the
//! host). So a takeover reading a million jobs, or decoding that keeps the
//! actix thread busy, delays no renewal tick, and a bulk read on the
//! Broker's connection does not hold up a renewal's reply behind it.
//!
//! - Standby: heartbeats as a standby (`role: standby`), and every
//!   `renew_interval / 4` tries to create the lease key when
//!   [`lease::may_campaign`] lets it. The lease key's values expire
//!   `broker.lease` after they were written. Having won it at epoch E, it
//!   asks the host to start the Broker (renewing meanwhile).
//! - Active: renews every `broker.renew_interval` with a compare-and-swap;
//!   stops the Broker at once when another broker holds the key (a refused
//!   renewal reads the key again: one of its own that timed out may have
//!   landed, [`lease::still_ours`]), and when renewals keep failing, before
//!   the lease can expire ([`lease::must_step_down`]): it ends the shared
//!   [`lease::Tenure`] (the Broker and the Elector check it before any
//!   effect) and sends the Broker `StepDown`. A standby again, never a
//!   second active one.
//! - A wedged broker thread does not keep the lease: the host touches a
//!   [`lease::Liveness`] stamp every 100 ms on the actix thread; the keeper
//!   renews (and a standby campaigns) only while it is fresher than
//!   `broker.stall_timeout` ([`lease::stalled`]), and else steps down and
//!   says so. The lease then runs out by itself.
//! - While active it also runs the notifier (`crate::notify`, when
//!   `[notify]` names targets), dropped with the Broker when it steps down.
//! - SIGTERM: the host asks the keeper to release: it stops the Broker and
//!   deletes the lease key, so a standby takes over at its next try
//!   instead of after expiry.
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
//! The lease's rules are in `lease.rs`, the record it writes is
//! `protocol::BrokerLease`.

mod keeper;
mod view;

use std::collections::BTreeMap;
use std::time::Instant;

use actix::Addr;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::lease::{self, Liveness};
use super::{Broker, NotifyStop, StepDown};
use crate::bus::{Bus, BusError, Kv};
use crate::config::Config;
use crate::protocol::*;

/// This broker process, in its heartbeats (see [`lease::twin_goes_first`]).
pub(crate) fn instance() -> &'static str {
    static INSTANCE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| uuid::Uuid::now_v7().to_string());
    &INSTANCE
}

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

/// The lease keeper's state, on its own thread.
struct Leadership {
    config: Config,
    /// The keeper's own connection.
    bus: Bus,
    kv: Kv<BrokerLease>,
    id: String,
    /// The broker's thread: starts Brokers, shows it is alive.
    host: Host,
    /// The last heartbeat of each other broker, and when it came.
    heard: BTreeMap<String, (BrokerHeartbeat, Instant)>,
    active: Option<Active>,
    /// When the lease was first found free, while standby.
    free_since: Option<Instant>,
    last_heartbeat: Option<Instant>,
    /// When it last knew a broker active (heard one, or was one); its own
    /// start before that.
    active_seen_ms: u64,
    /// Whether the broker thread's stall was said (said once per stall).
    stall_said: bool,
    /// When its last takeover failed, and how many failed in a row: it
    /// campaigns again only after [`lease::takeover_retry_after`].
    start_failed: Option<Instant>,
    start_failures: u32,
    /// The stamps (`renewed_at_ms`) of its latest creates of the lease that
    /// got no answer: one may land after all ([`lease::ours_unanswered`]).
    unanswered: std::collections::VecDeque<u64>,
    /// Set when a broker process with its id that started earlier was
    /// heard: this one then stops, saying why.
    twin: Option<String>,
}

/// A Broker the host started for the keeper.
struct Started {
    broker: Addr<Broker>,
    /// Fires when the Broker stopped by itself.
    stopped: oneshot::Receiver<()>,
    notifier: Option<crate::notify::Notifier>,
}

/// The keeper won the lease at `epoch`: start the Broker, and say how.
struct StartAsk {
    epoch: u64,
    tenure: lease::Tenure,
    started: oneshot::Sender<Result<Started, BusError>>,
}

/// How the keeper reaches the broker's (actix) thread.
struct Host {
    asks: mpsc::UnboundedSender<StartAsk>,
    liveness: Liveness,
    /// The process's counters (malformed messages, refusals...): the
    /// keeper's connection counts into them too.
    stats: std::sync::Arc<crate::bus::Stats>,
}

impl Host {
    /// Has the host start the Broker at `epoch`; what it gave.
    async fn start(&self, epoch: u64, tenure: lease::Tenure) -> Result<Started, BusError> {
        let gone = || BusError::Transport {
            subject: "broker thread".into(),
            reason: "the broker's thread is gone".into(),
        };
        let (started, answer) = oneshot::channel();
        let ask = StartAsk {
            epoch,
            tenure,
            started,
        };
        self.asks.send(ask).map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Runs a broker (standby until it wins the lease) until SIGINT or SIGTERM:
/// the lease keeper on its own thread and connection, and here, on the
/// actix thread, the Broker it asks for, on `bus`.
pub async fn run_until_signal(config: Config, bus: Bus) -> anyhow::Result<()> {
    let liveness = Liveness::new(Instant::now());
    liveness.touch(Instant::now());
    let (asks, mut starts) = mpsc::unbounded_channel();
    let (release, released) = oneshot::channel();
    let (done, mut ended) = oneshot::channel();
    let host = Host {
        asks,
        liveness: liveness.clone(),
        stats: bus.stats().clone(),
    };
    keeper::spawn(config.clone(), host, released, done)?;
    let mut release = Some(release);
    let mut touch = tokio::time::interval(Liveness::EVERY);
    touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = crate::daemon::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = touch.tick() => liveness.touch(Instant::now()),
            _ = &mut signal, if release.is_some() => {
                if let Some(release) = release.take() {
                    let _ = release.send(());
                }
            }
            result = &mut ended => {
                bus.posted().await;
                return result.unwrap_or_else(|_| Err(anyhow::anyhow!("the lease keeper's thread ended")));
            }
            Some(ask) = starts.recv() => {
                actix::spawn(start(config.clone(), bus.clone(), ask));
            }
        }
    }
}

/// Starts the Broker the keeper asked for (beside the host's loop, which
/// goes on touching the liveness stamp); when the keeper no longer waits
/// for it (it gave the lease up meanwhile), stops it again.
async fn start(config: Config, bus: Bus, ask: StartAsk) {
    let began = Instant::now();
    let StartAsk {
        epoch,
        tenure,
        started,
    } = ask;
    let broker = super::start(config.clone(), bus.clone(), epoch, tenure).await;
    let took_ms = began.elapsed().as_millis() as u64;
    let answer = broker.map(|broker| {
        info!(epoch, took_ms, "broker started");
        let (notify, stopped) = oneshot::channel();
        broker.do_send(NotifyStop(notify));
        Started {
            broker,
            stopped,
            notifier: crate::notify::start(&config, bus),
        }
    });
    if let Err(Ok(late)) = started.send(answer) {
        warn!(
            epoch,
            took_ms, "the lease keeper gave the lease up while the broker started; stopping it"
        );
        late.broker.do_send(StepDown);
    }
}
