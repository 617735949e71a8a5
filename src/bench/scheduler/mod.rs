//! The Scheduler agent's benches.
//!
//! - `failover.rs`: `baton bench failover-scheduler`, how fast a SIGKILLed
//!   Scheduler is replaced and its triggers fire again, and whether any slot
//!   ran twice or never.
//! - `schedules.rs`: `baton bench schedules`, how late a Scheduler holding
//!   many interval triggers fires them.
//! - `watch.rs`: the events the fail-over bench follows.
//! - `slots.rs`: the pure slot arithmetic both use.
//! - `window.rs`: what `schedules` waits for and measures (a window of
//!   fires; with `--kill`, a second agent taking over).

mod failover;
mod schedules;
mod slots;
mod watch;
mod window;

use serde::Serialize;

pub(super) use failover::failover_scheduler;
pub use failover::FailoverSchedulerArgs;
pub(super) use schedules::schedules;
pub use schedules::SchedulesArgs;

use super::setup::{children_config, ms};
use crate::launch::LocalCluster;

/// The role and timing settings the cluster's processes run with.
#[derive(Debug, Serialize)]
struct Settings {
    lease_ms: u64,
    lease_grace_ms: u64,
    connection_timeout_ms: u64,
    agent_timeout_ms: u64,
    agent_heartbeat_ms: u64,
    lateness_tolerance_ms: u64,
}

impl Settings {
    /// What the children load: they inherit this process's environment.
    fn load() -> anyhow::Result<Settings> {
        let c = children_config()?;
        Ok(Settings {
            lease_ms: ms(c.scheduler.lease),
            lease_grace_ms: ms(c.scheduler.lease_grace),
            connection_timeout_ms: ms(c.scheduler.connection_timeout),
            agent_timeout_ms: ms(c.scheduler.agent_timeout),
            agent_heartbeat_ms: ms(c.agent.heartbeat_interval),
            lateness_tolerance_ms: ms(c.agent.lateness_tolerance),
        })
    }

    fn describe(&self) -> String {
        format!(
            "lease {} ms + grace {} ms, connection timeout {} ms, agent timeout {} ms, \
             agent heartbeat {} ms, lateness tolerance {} ms",
            self.lease_ms,
            self.lease_grace_ms,
            self.connection_timeout_ms,
            self.agent_timeout_ms,
            self.agent_heartbeat_ms,
            self.lateness_tolerance_ms
        )
    }
}

/// Starts `baton agent --id <id>` named `id`, taking part in elections.
fn spawn_agent(cluster: &mut LocalCluster, id: &str) -> anyhow::Result<u32> {
    cluster.spawn_agent(id, &[])
}
