//! One warning for many of a kind: while JetStream cannot store (a stream
//! electing its leader, no quorum), every order's write fails, and a
//! warning per write would bury the log (thousands in seconds). The first
//! failure is warned of at once; those that follow within
//! [`QUIET_FOR`] are counted, and said in one warning when the next one
//! comes after it, with the newest error. Pure: time comes in.

use std::time::{Duration, Instant};

/// How long failures of one kind are counted before being warned of again.
pub const QUIET_FOR: Duration = Duration::from_secs(5);

/// Failures of one kind since the last warning.
#[derive(Debug, Default)]
pub struct Quiet {
    warned_at: Option<Instant>,
    /// Failures since `warned_at` not warned of.
    held: u64,
}

impl Quiet {
    /// Whether to warn of a failure at `now`, and how many went unsaid
    /// before it (0: this is the first in a while).
    pub fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.warned_at {
            Some(at) if now.saturating_duration_since(at) < QUIET_FOR => {
                self.held += 1;
                None
            }
            _ => {
                self.warned_at = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_within_the_quiet_time_are_counted_and_said_once() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert_eq!(q.failed(t0), Some(0), "the first is warned of at once");
        for i in 1..1_000 {
            assert_eq!(q.failed(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(q.failed(t0 + QUIET_FOR), Some(999));
        assert_eq!(q.failed(t0 + QUIET_FOR * 3), Some(0));
    }
}
