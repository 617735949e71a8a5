//! The brokers' leadership lease: which broker acts. Pure: the caller passes
//! the time in and does the JetStream IO (see `leadership/`).
//!
//! The lease is one key in a KV bucket whose values expire `lease` after
//! they were written. A standby campaigns with KV `create`, which succeeds
//! for one broker only, and only when the key is empty (never written,
//! expired, or released); the revision it wins at is its epoch. The active
//! broker renews with a compare-and-swap on the revision it last wrote.
//! Among standbys, [`better_standby`] and [`may_campaign`] say which one
//! goes first. [`Tenure`] is the last good renewal by the holder's own
//! monotonic clock, which the core and the Elector check before any effect
//! leaves.
//!
//! Architecture invariant: an active broker stops acting
//! ([`must_step_down`]) before the server can let its lease expire: the
//! server counts `lease` from when it stored the last renewal, which is after
//! the broker sent it, and the broker counts from when it sent it, less a
//! margin. So two brokers never act at once, even cut off from NATS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{BrokerLease, BrokerRole, BrokerStatus};

/// How long before its lease can expire an active broker steps down.
pub fn margin(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_millis(500))
}

/// Whether an active broker whose last successful renewal was sent at
/// `last_ok_sent` must stop acting at `now`.
pub fn must_step_down(last_ok_sent: Instant, now: Instant, lease: Duration) -> bool {
    now >= last_ok_sent + lease.saturating_sub(margin(lease))
}

/// How long a renewal sent at `sent` may take, the last good one sent at
/// `last_ok`: until the broker must step down anyway, and at least
/// `renew_interval`. A slow server's late answer still renews, and the
/// tenure counts from when the renewal was sent.
pub fn renewal_bound(
    last_ok: Instant,
    sent: Instant,
    lease: Duration,
    renew_interval: Duration,
) -> Duration {
    let until = last_ok + lease.saturating_sub(margin(lease));
    until.saturating_duration_since(sent).max(renew_interval)
}

/// How long the active broker may act: until [`must_step_down`], by its own
/// monotonic clock, counted from the last good renewal. The leadership loop
/// records each renewal; the Broker and the Elector ask before they act, so
/// a broker paused past its lease (SIGSTOP, a VM frozen) acts on nothing
/// when it resumes, even before the loop has told it to step down.
///
/// Shared across threads: the lease keeper (its own thread, see
/// `leadership/`) records renewals and ends it; the Broker reads it.
#[derive(Debug, Clone)]
pub struct Tenure {
    last_ok_sent: Arc<Mutex<Instant>>,
    /// Set when the keeper stepped down: nothing is acted on from then,
    /// whatever the clock says.
    ended: Arc<AtomicBool>,
    lease: Duration,
}

impl Tenure {
    pub fn new(last_ok_sent: Instant, lease: Duration) -> Tenure {
        Tenure {
            last_ok_sent: Arc::new(Mutex::new(last_ok_sent)),
            ended: Arc::new(AtomicBool::new(false)),
            lease,
        }
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&self, sent: Instant) {
        if let Ok(mut last) = self.last_ok_sent.lock() {
            *last = (*last).max(sent);
        }
    }

    /// The keeper stepped down: the broker acts on nothing from now on,
    /// before it has even handled its `StepDown`.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Whether the broker may still act at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        !self.ended.load(Ordering::SeqCst)
            && self
                .last_ok_sent
                .lock()
                .map(|last| !must_step_down(*last, now, self.lease))
                .unwrap_or(false)
    }
}

/// When the broker's own thread last ran a timer: the lease keeper renews
/// only while it does ([`stalled`]). Touched on the broker's thread every
/// [`Liveness::EVERY`]; a thread wedged (or held by work that never
/// yields) stops touching it.
#[derive(Debug, Clone)]
pub struct Liveness {
    base: Instant,
    /// Milliseconds from `base` to the last touch.
    last_ms: Arc<AtomicU64>,
}

impl Liveness {
    /// How often the broker's thread touches it.
    pub const EVERY: Duration = Duration::from_millis(100);

    pub fn new(now: Instant) -> Liveness {
        Liveness {
            base: now,
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The broker's thread is alive at `now`.
    pub fn touch(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// When it was last touched.
    pub fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::SeqCst))
    }
}

/// Whether the broker's thread, last alive at `last_alive`, has stalled at
/// `now`: silent for `limit` or longer. Then the keeper neither renews nor
/// campaigns: a wedged broker must not hold the lease for ever.
pub fn stalled(last_alive: Instant, now: Instant, limit: Duration) -> bool {
    now.saturating_duration_since(last_alive) >= limit
}

/// Another broker as heard from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub precedence: u32,
    pub standby: bool,
    pub last_seen: Instant,
}

/// Whether a live standby ranks before `me` (lower precedence, then the
/// smaller id): then `me` waits its turn.
pub fn better_standby(me: (&str, u32), peers: &[Peer], now: Instant, alive: Duration) -> bool {
    let (my_id, my_precedence) = me;
    peers.iter().any(|p| {
        p.standby
            && p.id != my_id
            && now.saturating_duration_since(p.last_seen) < alive
            && (p.precedence, p.id.as_str()) < (my_precedence, my_id)
    })
}

/// The lease as a broker's view shows it: one not renewed yet still
/// carries the epoch 0 it was created with, while its epoch is the
/// revision it was created at, its `revision` until the first renewal.
pub fn as_shown(mut lease: BrokerLease, revision: u64) -> BrokerLease {
    if lease.epoch == 0 {
        lease.epoch = revision;
    }
    lease
}

/// Whether a standby answers a standby heartbeat at once with its own,
/// rather than at its next turn: when its sender was not heard within
/// `alive` (`last_heard`), it is new or back and knows none of the others
/// yet. Without the answer, a fail-over in its first heartbeat interval
/// would find it ranking itself before a better standby it never heard.
pub fn greets(last_heard: Option<Instant>, now: Instant, alive: Duration) -> bool {
    last_heard.is_none_or(|at| now.saturating_duration_since(at) >= alive)
}

/// Whether a standby should try to take the lease now: when no better
/// standby waits, or when the lease has stayed free for a whole `lease`
/// since this standby first found it free (`free_since`): then the better
/// one is taken to be absent.
pub fn may_campaign(
    better_standby: bool,
    free_since: Option<Instant>,
    now: Instant,
    lease: Duration,
) -> bool {
    !better_standby || free_since.is_some_and(|t| now.saturating_duration_since(t) >= lease)
}

/// The other brokers as the active one (at `epoch`) reports them: those
/// heard within `alive` (a killed or frozen one drops out at once, not when
/// the leadership loop forgets it), and none active but itself: a peer
/// whose last heartbeat still says active holds an older epoch, so its
/// lease is gone.
pub fn peers_seen_by_active(
    heard: impl IntoIterator<Item = (BrokerStatus, Instant)>,
    epoch: u64,
    now: Instant,
    alive: Duration,
) -> Vec<BrokerStatus> {
    let mut peers: Vec<BrokerStatus> = (heard.into_iter())
        .filter(|(_, at)| now.saturating_duration_since(*at) < alive)
        .map(|(mut peer, _)| {
            if peer.role == BrokerRole::Active && peer.epoch < epoch {
                peer.role = BrokerRole::Standby;
                peer.lease_age_ms = None;
            }
            peer
        })
        .collect();
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    peers
}

/// Whether a lease record read after a renewal was refused is still this
/// broker's own: its id and epoch. A renewal that timed out on a busy server
/// can land after all, moving the revision on without the holder knowing;
/// the next compare-and-swap on the old revision is then refused though
/// nobody else wrote. Any other broker taking the lease writes its own id
/// and epoch, so the record says which happened.
pub fn still_ours(record: Option<&BrokerLease>, broker_id: &str, epoch: u64) -> bool {
    record.is_some_and(|r| r.broker_id == broker_id && r.epoch == epoch)
}

/// Whether the lease `found` at the key is the one a campaign of this
/// broker created though its request timed out: sent while the connection
/// was away (the client holds it and sends it on reconnect) or answered
/// too late. It names `broker_id`, still has epoch 0 (nobody renewed it),
/// and carries the stamp of one of the creates that got no answer
/// (`unanswered`, their `renewed_at_ms`). Left alone, it would keep every
/// broker out until it expired; this broker takes it instead, by a
/// compare-and-swap on its revision.
pub fn ours_unanswered(found: &BrokerLease, broker_id: &str, unanswered: &[u64]) -> bool {
    found.broker_id == broker_id && found.epoch == 0 && unanswered.contains(&found.renewed_at_ms)
}

/// Whether this broker process (`mine`, a UUIDv7) stops because it heard
/// a heartbeat of its own id from another process (`theirs`) that started
/// before it: two brokers with one id would mix each other up in every
/// view and ranking, and the later one is the one just started by mistake.
/// A heartbeat that names no process (an older release) stops nothing.
pub fn twin_goes_first(theirs: &str, mine: &str) -> bool {
    !theirs.is_empty() && theirs < mine
}

/// How long a standby whose last `failures` takeovers in a row failed
/// (the Broker could not read its buckets: JetStream unavailable, a stream
/// electing its leader, a timeout) waits before it campaigns again: two
/// leases at first, so the lease key it could not give back has run out
/// and another standby has had its turn, then twice as long each time, up
/// to a minute (or two leases, if longer).
pub fn takeover_retry_after(failures: u32, lease: Duration) -> Duration {
    let first = lease * 2;
    let most = first.max(Duration::from_secs(60));
    let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(most)
}

/// Whether a standby whose takeover failed at `failed_at`, and would wait
/// `wait` after it, waits still.
pub fn holding_off(failed_at: Option<Instant>, wait: Duration, now: Instant) -> bool {
    failed_at.is_some_and(|at| now.saturating_duration_since(at) < wait)
}

#[cfg(test)]
mod tests {
    #[test]
    fn of_two_processes_with_one_id_the_later_stops() {
        use super::twin_goes_first;
        let earlier = uuid::Uuid::now_v7().to_string();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = uuid::Uuid::now_v7().to_string();
        assert!(twin_goes_first(&earlier, &later));
        assert!(!twin_goes_first(&later, &earlier));
        // its own heartbeat, and one from a release that names no process
        assert!(!twin_goes_first(&later, &later));
        assert!(!twin_goes_first("", &later));
    }

    #[test]
    fn only_a_lease_from_our_own_unanswered_create_is_ours_to_take() {
        use super::ours_unanswered;
        let lease = |broker: &str, epoch, stamp| crate::protocol::BrokerLease {
            broker_id: broker.into(),
            epoch,
            precedence: 100,
            renewed_at_ms: stamp,
        };
        let unanswered = [1_000, 1_400];
        assert!(ours_unanswered(&lease("b1", 0, 1_400), "b1", &unanswered));
        // another broker's, however stamped
        assert!(!ours_unanswered(&lease("b2", 0, 1_400), "b1", &unanswered));
        // renewed: someone acts under it (a process with our id, started twice)
        assert!(!ours_unanswered(&lease("b1", 7, 1_400), "b1", &unanswered));
        // a create of ours that was answered, or of another process with our id
        assert!(!ours_unanswered(&lease("b1", 0, 1_200), "b1", &unanswered));
        assert!(!ours_unanswered(&lease("b1", 0, 1_400), "b1", &[]));
    }

    use super::*;

    #[test]
    fn a_failed_takeover_is_tried_again_after_the_key_ran_out_then_ever_later() {
        // LEASE is 2 s: the first wait outlasts the key's expiry
        assert_eq!(takeover_retry_after(1, LEASE), LEASE * 2);
        assert_eq!(takeover_retry_after(2, LEASE), LEASE * 4);
        assert_eq!(takeover_retry_after(3, LEASE), LEASE * 8);
        assert_eq!(takeover_retry_after(9, LEASE), Duration::from_secs(60));
        assert_eq!(
            takeover_retry_after(u32::MAX, LEASE),
            Duration::from_secs(60)
        );
        let long = Duration::from_secs(45);
        assert_eq!(takeover_retry_after(5, long), long * 2);
        let t0 = Instant::now();
        let wait = takeover_retry_after(1, LEASE);
        assert!(!holding_off(None, wait, t0));
        assert!(holding_off(Some(t0), wait, t0 + LEASE));
        assert!(!holding_off(Some(t0), wait, t0 + wait));
    }

    const LEASE: Duration = Duration::from_secs(2);
    const ALIVE: Duration = Duration::from_secs(1);

    fn peer(id: &str, precedence: u32, standby: bool, last_seen: Instant) -> Peer {
        Peer {
            id: id.into(),
            precedence,
            standby,
            last_seen,
        }
    }

    #[test]
    fn an_active_broker_steps_down_before_its_lease_can_expire() {
        let sent = Instant::now();
        assert_eq!(margin(LEASE), Duration::from_millis(500));
        assert_eq!(
            margin(Duration::from_millis(800)),
            Duration::from_millis(200)
        );
        assert!(!must_step_down(
            sent,
            sent + Duration::from_millis(1_499),
            LEASE
        ));
        assert!(must_step_down(
            sent,
            sent + Duration::from_millis(1_500),
            LEASE
        ));
        // The server's expiry counts from later than `sent`: always after.
        for lease_ms in [100, 800, 2_000, 10_000] {
            let lease = Duration::from_millis(lease_ms);
            assert!(lease.saturating_sub(margin(lease)) < lease);
        }
    }

    #[test]
    fn a_lease_not_renewed_yet_is_shown_with_the_revision_it_was_created_at() {
        let lease = |epoch| BrokerLease {
            broker_id: "b1".into(),
            epoch,
            precedence: 100,
            renewed_at_ms: 1,
        };
        assert_eq!(as_shown(lease(0), 42).epoch, 42);
        // renewed: its epoch stays that of its creation, not the revision
        assert_eq!(as_shown(lease(42), 45).epoch, 42);
    }

    #[test]
    fn a_standby_greets_a_newcomer_or_one_back_but_not_each_heartbeat() {
        let t = Instant::now();
        assert!(greets(None, t, ALIVE));
        assert!(!greets(Some(t), t + ALIVE / 4, ALIVE));
        assert!(greets(Some(t), t + ALIVE, ALIVE));
    }

    #[test]
    fn a_standby_waits_for_a_live_better_one_but_not_for_ever() {
        let t = Instant::now();
        let better = [peer("b-1", 10, true, t)];
        assert!(better_standby(("b-2", 20), &better, t, ALIVE));
        // Equal precedence: the smaller id first.
        assert!(better_standby(("b-2", 10), &better, t, ALIVE));
        assert!(!better_standby(("b-0", 10), &better, t, ALIVE));
        // Silent, active (not waiting), or itself: not in the way.
        assert!(!better_standby(("b-2", 20), &better, t + ALIVE, ALIVE));
        let active = [peer("b-1", 10, false, t)];
        assert!(!better_standby(("b-2", 20), &active, t, ALIVE));
        assert!(!better_standby(("b-1", 10), &better, t, ALIVE));

        assert!(may_campaign(false, None, t, LEASE));
        assert!(!may_campaign(true, None, t, LEASE));
        assert!(!may_campaign(true, Some(t), t + LEASE / 2, LEASE));
        // Free for a whole lease: the better one is not taking it.
        assert!(may_campaign(true, Some(t), t + LEASE, LEASE));
    }

    #[test]
    fn a_tenure_holds_until_the_step_down_point_and_moves_with_renewals() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let tenure = Tenure::new(t0, lease);
        assert!(tenure.holds(t0 + Duration::from_millis(1400)));
        assert!(
            !tenure.holds(t0 + lease),
            "not once the lease may have run out"
        );
        tenure.renewed(t0 + Duration::from_secs(1));
        assert!(tenure.holds(t0 + lease));
        tenure.renewed(t0);
        assert!(tenure.holds(t0 + lease), "an older renewal changes nothing");
        let shared = tenure.clone();
        assert!(!shared.holds(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_renewal_may_take_until_the_step_down_point_but_never_less_than_an_interval() {
        let t0 = Instant::now();
        let every = Duration::from_millis(400);
        // sent with the last good renewal: until the step-down point, 1.5 s
        assert_eq!(
            renewal_bound(t0, t0, LEASE, every),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            renewal_bound(t0, t0 + Duration::from_millis(1_000), LEASE, every),
            Duration::from_millis(500)
        );
        // past it (the step-down follows), or nearly: one interval
        assert_eq!(renewal_bound(t0, t0 + LEASE, LEASE, every), every);
        assert_eq!(
            renewal_bound(t0, t0 + Duration::from_millis(1_400), LEASE, every),
            every
        );
    }

    #[test]
    fn an_ended_tenure_holds_no_more_whatever_the_renewals() {
        let t0 = Instant::now();
        let tenure = Tenure::new(t0, LEASE);
        let shared = tenure.clone();
        assert!(shared.holds(t0));
        tenure.end();
        assert!(!shared.holds(t0), "ended at once, on every copy");
        tenure.renewed(t0 + Duration::from_secs(1));
        assert!(!shared.holds(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_broker_thread_silent_past_the_limit_has_stalled() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(15);
        let alive = Liveness::new(t0);
        assert_eq!(alive.last(), t0);
        assert!(!stalled(alive.last(), t0 + limit / 2, limit));
        assert!(stalled(alive.last(), t0 + limit, limit));
        alive.touch(t0 + Duration::from_secs(10));
        assert!(!stalled(alive.last(), t0 + limit, limit), "touched since");
        // a late touch with an older time does not move it back
        alive.touch(t0 + Duration::from_secs(1));
        assert_eq!(alive.last(), t0 + Duration::from_secs(10));
        let shared = alive.clone();
        assert!(stalled(shared.last(), t0 + Duration::from_secs(25), limit));
        // a clock read before the last touch is not a stall
        assert!(!stalled(alive.last(), t0, limit));
    }

    #[test]
    fn the_active_broker_shows_no_other_active_and_no_silent_peer() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let alive = Duration::from_secs(1);
        let peer = |id: &str, role, epoch| BrokerStatus {
            id: id.into(),
            role,
            epoch,
            precedence: 100,
            lease_age_ms: Some(50),
            heartbeat_age_ms: 0,
        };
        let heard = [
            // killed: its last heartbeat said active, long ago
            (peer("killed", BrokerRole::Active, 3), t0),
            // deposed but still heard: its lease is gone
            (peer("deposed", BrokerRole::Active, 3), now),
            (peer("standby", BrokerRole::Standby, 0), now),
        ];
        let peers = peers_seen_by_active(heard, 4, now, alive);
        let roles: Vec<(&str, BrokerRole)> =
            peers.iter().map(|p| (p.id.as_str(), p.role)).collect();
        assert_eq!(
            roles,
            [
                ("deposed", BrokerRole::Standby),
                ("standby", BrokerRole::Standby)
            ]
        );
        assert_eq!(peers[0].lease_age_ms, None);
    }

    #[test]
    fn a_refused_renewal_is_ours_only_when_the_record_names_us_at_our_epoch() {
        let record = |id: &str, epoch| BrokerLease {
            broker_id: id.into(),
            epoch,
            precedence: 0,
            renewed_at_ms: 1,
        };
        assert!(still_ours(Some(&record("b1", 7)), "b1", 7));
        assert!(!still_ours(Some(&record("b2", 9)), "b1", 7), "taken");
        assert!(
            !still_ours(Some(&record("b1", 9)), "b1", 7),
            "won again since: a new epoch, not this tenure"
        );
        assert!(!still_ours(None, "b1", 7), "expired or released");
    }
}
