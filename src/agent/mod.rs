//! The Agent: a scheduler-capable node. Exactly one agent at a time holds the
//! Scheduler role and fires triggers; the others are spares.
//!
//! Not wired yet: the agent actor, the broker's control of the role and the
//! `baton agent` command arrive with their own issue. What is here are the
//! pure parts they will call:
//!
//! - [`health`]: health levels from CPU and memory figures and thresholds.
//! - [`election`]: the broker's decision on who holds the Scheduler role.
//! - [`triggers`]: cron, interval and at-time triggers; which slots are due,
//!   misfire and concurrency policies, and the timer queue of all schedules.

pub mod election;
pub mod health;
pub mod triggers;

/// Whether an agent fires triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fires triggers; exactly one agent at a time.
    Scheduler,
    /// Waits to be given the Scheduler role.
    Spare,
}
