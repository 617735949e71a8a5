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
//! - [`triggers`]: cron, interval and at-time triggers; which slots are due,
//!   misfire and concurrency policies, and the timer queue of all schedules.

pub mod node;
pub mod outbox;
pub mod role;
pub mod triggers;

pub use node::{run_until_signal, start, Agent, Shutdown};
