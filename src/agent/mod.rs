//! The Agent: a scheduler-capable node that will hold the Scheduler role and
//! fire triggers (cron, interval, at-time).
//!
//! Not built yet: the Scheduler role and triggers arrive with their own issue.
//! Until then this module only names the role, so the layout in `lib.rs`
//! and ARCHITECTURE.md stays true.

/// Whether an agent fires triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fires triggers; exactly one agent at a time.
    Scheduler,
    /// Waits to be given the Scheduler role.
    Spare,
}
