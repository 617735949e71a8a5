//! Fencing off deposed brokers: the newest active broker epoch a subagent
//! has seen, and whether a command's epoch may still be obeyed. Pure.
//!
//! The epoch rises on an active broker's heartbeat, on a `Registered` reply
//! and on any admitted command that carries a newer one (a new broker's first
//! command may arrive before its first heartbeat). A command of an older
//! epoch comes from a broker that has since lost the lease and is refused.
//!
//! Epoch 0 means "unknown": older brokers and tools send no epoch, so 0 is
//! never fenced off, and never raises the newest epoch either.

/// The newest broker epoch seen, and the rule for admitting commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochFence {
    newest: u64,
}

impl EpochFence {
    /// The newest epoch seen; 0 before any.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Records that an active broker of `epoch` exists; true when it is newer
    /// than any seen before.
    pub fn observe(&mut self, epoch: u64) -> bool {
        let newer = epoch > self.newest;
        if newer {
            self.newest = epoch;
        }
        newer
    }

    /// Whether a command of `epoch` may be obeyed, changing nothing; a
    /// refusal yields the newest epoch seen. Epoch 0 (unknown: an old peer or
    /// tool) is always admitted.
    pub fn check(&self, epoch: u64) -> Result<(), u64> {
        if epoch != 0 && epoch < self.newest {
            return Err(self.newest);
        }
        Ok(())
    }

    /// [`check`](Self::check), then an admitted command's epoch is observed;
    /// a refused one changes nothing.
    pub fn admit(&mut self, epoch: u64) -> Result<(), u64> {
        self.check(epoch)?;
        self.observe(epoch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_knowing_no_epoch_and_admits_any() {
        let mut f = EpochFence::default();
        assert_eq!(f.newest(), 0);
        assert_eq!(f.admit(1), Ok(()));
        assert_eq!(f.newest(), 1);
    }

    #[test]
    fn observe_only_raises() {
        let mut f = EpochFence::default();
        assert!(f.observe(5));
        assert!(!f.observe(5));
        assert!(!f.observe(3));
        assert_eq!(f.newest(), 5);
        assert!(f.observe(9));
        assert_eq!(f.newest(), 9);
    }

    #[test]
    fn an_older_epoch_is_refused_and_changes_nothing() {
        let mut f = EpochFence::default();
        f.observe(7);
        assert_eq!(f.check(6), Err(7));
        assert_eq!(f.admit(6), Err(7));
        assert_eq!(f.admit(1), Err(7));
        assert_eq!(f.newest(), 7);
    }

    #[test]
    fn the_same_or_a_newer_epoch_is_admitted_and_a_newer_one_raises() {
        let mut f = EpochFence::default();
        f.observe(7);
        assert_eq!(f.admit(7), Ok(()));
        assert_eq!(f.newest(), 7);
        assert_eq!(f.check(8), Ok(()));
        assert_eq!(f.newest(), 7, "a check observes nothing");
        assert_eq!(f.admit(8), Ok(()));
        assert_eq!(f.newest(), 8);
        // the broker that was deposed by 8 is now fenced off
        assert_eq!(f.admit(7), Err(8));
    }

    #[test]
    fn epoch_zero_is_unknown_never_fenced_and_never_raises() {
        let mut f = EpochFence::default();
        f.observe(u64::MAX);
        assert_eq!(f.admit(0), Ok(()));
        assert_eq!(f.newest(), u64::MAX);
        let mut f = EpochFence::default();
        assert!(!f.observe(0));
        assert_eq!(f.admit(0), Ok(()));
        assert_eq!(f.newest(), 0);
    }

    #[test]
    fn any_sequence_keeps_the_maximum_and_refuses_only_below_it() {
        // a small exhaustive check over short sequences of epochs 0..4
        for a in 0..4u64 {
            for b in 0..4u64 {
                for c in 0..4u64 {
                    let mut f = EpochFence::default();
                    let mut max = 0;
                    for e in [a, b, c] {
                        let admitted = f.admit(e);
                        if e != 0 && e < max {
                            assert_eq!(admitted, Err(max));
                        } else {
                            assert_eq!(admitted, Ok(()));
                            max = max.max(e);
                        }
                        assert_eq!(f.newest(), max);
                    }
                }
            }
        }
    }
}
