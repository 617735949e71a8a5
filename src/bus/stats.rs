//! Counters of what one connection refused, dropped or could not store.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the bus refused or dropped.
#[derive(Debug)]
pub struct Stats {
    pub(super) malformed: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) reconnected_at_ms: AtomicU64,
    /// Operations the server refused by permissions.
    pub(super) denied: AtomicU64,
    /// Messages this process refused because of who sent them.
    pub(super) refused: AtomicU64,
    /// Messages for a stream ([`Bus::append`]) that JetStream did not store.
    pub(super) unstored: AtomicU64,
    /// Requests with a code for a session this process does not hold
    /// (answered "sign it again", `session.rs`).
    pub(super) unknown_sessions: AtomicU64,
    /// The server's permission violation messages, for requests waiting.
    pub(super) violations: tokio::sync::broadcast::Sender<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            malformed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            reconnected_at_ms: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            unstored: AtomicU64::new(0),
            unknown_sessions: AtomicU64::new(0),
            violations: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl Stats {
    /// Messages refused because of who sent them (see `auth::Sender`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts one refusal; true when it should be logged at warn (the 1st,
    /// 2nd, 4th, 8th...), so a flood of forgeries cannot flood the log.
    pub fn count_refused(&self) -> bool {
        (self.refused.fetch_add(1, Ordering::Relaxed) + 1).is_power_of_two()
    }

    /// Messages for a stream ([`Bus::append`]) that JetStream did not store.
    pub fn unstored(&self) -> u64 {
        self.unstored.load(Ordering::Relaxed)
    }

    /// Publishes and subscriptions the server refused to this identity.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Requests answered with `bad_request`/`too_large` plus publishes dropped.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// When this connection last reconnected (after losing the server), in
    /// ms since the epoch; 0 while it never had to.
    pub fn reconnected_at_ms(&self) -> u64 {
        self.reconnected_at_ms.load(Ordering::Relaxed)
    }

    /// Requests with a code for a session this process does not hold,
    /// which it asked to be signed and sent again.
    pub fn unknown_sessions(&self) -> u64 {
        self.unknown_sessions.load(Ordering::Relaxed)
    }

    pub(super) fn count_unknown_session(&self) {
        self.unknown_sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_ever_more_rarely() {
        let stats = Stats::default();
        let logged: Vec<u64> = (1..=20).filter(|_| stats.count_refused()).collect();
        assert_eq!(logged.len(), 5, "the 1st, 2nd, 4th, 8th and 16th");
        assert_eq!(stats.refused(), 20, "every one is counted");
    }
}
