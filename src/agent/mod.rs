//! The Agent: a scheduler-capable node, run by `baton agent`. Exactly one
//! agent at a time holds the Scheduler role and fires the deployed triggers;
//! the others are spares. The broker elects the Scheduler from the agents'
//! heartbeats (health) and gives it the role with a lease it must keep
//! renewing; an agent started without role control is a Scheduler on its own.
//!
//! - [`node`]: the Agent actor: heartbeats, role commands, and, while
//!   Scheduler, firing (read the fired slots, watch the jobs and the
//!   workflows, submit each due slot with its idempotency key, record it).
//! - [`role`]: the agent's side of the role: epochs, leases, commands (pure).
//! - [`outbox`]: the fires waiting to be submitted, retry delays, and the
//!   ledger of how far each job has fired (pure).
//!
//! The triggers themselves (cron, interval, at; which slots are due, the
//! misfire policy, the timer queue) are pure and shared with the broker's
//! job inventory: [`crate::triggers`].

pub mod node;
pub mod outbox;
pub mod role;

pub use node::{run_until_signal, start, Agent, Shutdown};
