//! What a liveness probe's "no responders" proves of an agent. Pure: the
//! caller passes the times in.
//!
//! Of a subagent it proves nothing (see `core/subagents.rs`): a live subagent
//! whose connection was reset has no responders until it reconnects, and
//! its task must not run twice, so only a death certificate or its orphan
//! timeout proves it dead. An agent is judged here because a second
//! Scheduler for a moment does no harm (fires are idempotent per slot).
//!
//! NATS answers "no responders" at once when nothing subscribes to the
//! probed subject, which happens when the process is gone (its connection
//! closed with it). It counts as proof only when it holds twice, one
//! heartbeat interval apart, with no heartbeat in between (a live process
//! whose connection was dropped has reconnected and resubscribed by then),
//! and not shortly after our own reconnect (after a NATS restart the others
//! may not have reconnected yet).

use std::time::{Duration, Instant};

/// The verdict on one "no responders" answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// We only just reconnected ourselves: nothing is proven.
    NotProof,
    /// The first one: probe again one heartbeat interval later.
    AskAgain,
    /// The second one with silence in between: the process is gone.
    Gone,
    /// It was heard from between the two probes: it lives.
    Alive,
}

/// Judges a "no responders" answer. `first` is when the first of the two
/// probes was sent (`None` for the first one), `last_seen` when the process
/// was last heard from, `reconnected_at_ms` when our connection last
/// reconnected (0: never), and `guard` how long after that nothing counts.
pub fn judge(
    first: Option<Instant>,
    last_seen: Instant,
    reconnected_at_ms: u64,
    now_ms: u64,
    guard: Duration,
) -> Verdict {
    let guard_ms = u64::try_from(guard.as_millis()).unwrap_or(u64::MAX);
    if reconnected_at_ms > 0 && now_ms.saturating_sub(reconnected_at_ms) < guard_ms {
        return Verdict::NotProof;
    }
    match first {
        None => Verdict::AskAgain,
        Some(first) if last_seen < first => Verdict::Gone,
        Some(_) => Verdict::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = Duration::from_secs(3);

    #[test]
    fn twice_with_silence_between_is_proof() {
        let seen = Instant::now();
        let first = seen + Duration::from_millis(500);
        assert_eq!(judge(None, seen, 0, 10_000, GUARD), Verdict::AskAgain);
        assert_eq!(judge(Some(first), seen, 0, 10_000, GUARD), Verdict::Gone);
        let heard_between = first + Duration::from_millis(100);
        assert_eq!(
            judge(Some(first), heard_between, 0, 10_000, GUARD),
            Verdict::Alive
        );
    }

    #[test]
    fn nothing_counts_just_after_our_own_reconnect() {
        let seen = Instant::now();
        let first = Some(seen + Duration::from_millis(500));
        assert_eq!(judge(first, seen, 8_000, 10_000, GUARD), Verdict::NotProof);
        assert_eq!(judge(first, seen, 7_000, 10_000, GUARD), Verdict::Gone);
    }
}
