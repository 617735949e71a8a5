//! The Scheduler role's move on a JetStream cluster, measured on its own:
//! `baton bench cluster --scheduler-kills N` SIGKILLs the agent that is the
//! Scheduler N times (after the node rounds), while the orders and the 1 s
//! trigger go on, and notes when another agent took the role and when the
//! trigger ran next; the killed agent is started again after `--down`.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use super::report::{first_after, longest_gap};
use super::{Watch, LIMIT};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;

/// How often the broker's status is asked for.
const POLL: Duration = Duration::from_millis(200);

/// One SIGKILL of the Scheduler agent; times in ms from the kill.
#[derive(Debug, Clone, Serialize)]
pub(in crate::bench) struct SchedulerMove {
    /// The agent killed, and the one that took the role.
    pub(in crate::bench) killed: String,
    pub(in crate::bench) successor: Option<String>,
    /// When the broker reported another agent as the Scheduler.
    pub(in crate::bench) moved_ms: Option<u64>,
    /// When the 1 s trigger's job ran next, for a slot due after the kill
    /// (not one the killed agent fired just before).
    pub(in crate::bench) next_fire_ms: Option<u64>,
    /// The longest time between two runs of the trigger, from a second
    /// before the kill until the agent was back.
    pub(in crate::bench) trigger_gap_ms: Option<u64>,
}

/// The agent the broker reports as the Scheduler, if one.
async fn scheduler(bus: &Bus) -> Option<String> {
    let status: StatusReply = bus
        .request(
            bus.subjects().status(),
            &StatusRequest::default(),
            Duration::from_secs(1),
        )
        .await
        .ok()?;
    let mut agents = status.agents.into_iter();
    agents
        .find(|a| a.role == AgentRole::Scheduler)
        .map(|a| a.id)
}

/// Kills the Scheduler agent, follows the traffic until another agent has
/// the role and the trigger ran (or [`LIMIT`] passed), and starts the
/// killed agent again after `down`.
pub(super) async fn kill_scheduler(
    w: &mut Watch,
    cluster: &mut LocalCluster,
    bus: &Bus,
    down: Duration,
) -> anyhow::Result<SchedulerMove> {
    let deadline = Instant::now() + LIMIT;
    let victim = loop {
        if let Some(id) = w.while_following(scheduler(bus)).await {
            break id;
        }
        if Instant::now() > deadline {
            anyhow::bail!("no agent was the Scheduler within {LIMIT:?}");
        }
        w.follow(Instant::now() + POLL).await;
    };
    let killed_ms = now_ms();
    cluster
        .signal(&victim, Signal::SIGKILL)
        .with_context(|| format!("killing the Scheduler {victim}"))?;
    let back = Instant::now() + down;
    let (mut successor, mut moved_ms) = (None, None);
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if Instant::now() >= back && cluster.pid(&victim).is_none() {
            let urls = cluster.urls_from(0);
            cluster.spawn_via(&victim, &["agent", "--id", &victim], &urls)?;
        }
        let fired = first_after(&w.fires_of_slots_from(killed_ms), killed_ms).is_some();
        if successor.is_some() && fired && cluster.pid(&victim).is_some() {
            break;
        }
        w.follow(Instant::now() + POLL).await;
        if successor.is_none() {
            let asked = w.while_following(scheduler(bus)).await;
            if let Some(id) = asked.filter(|id| *id != victim) {
                moved_ms = Some(now_ms() - killed_ms);
                successor = Some(id);
            }
        }
    }
    let fires = w.fires();
    Ok(SchedulerMove {
        killed: victim,
        successor,
        moved_ms,
        next_fire_ms: first_after(&w.fires_of_slots_from(killed_ms), killed_ms),
        trigger_gap_ms: (!fires.is_empty())
            .then(|| longest_gap(&fires, killed_ms.saturating_sub(1000), now_ms())),
    })
}
