//! Whether the deployed triggers fire: the Elector publishes a
//! [`TriggersChanged`] when no agent can hold the Scheduler role (and why,
//! from the pure `election::Silent::not_firing`), and again when one holds it.

use tracing::{info, warn};

use super::Elector;
use crate::protocol::*;
use crate::time::now_ms;

impl Elector {
    /// Publishes a [`TriggersChanged`] when the triggers stop firing
    /// because no agent can hold the Scheduler role (and say why), and when
    /// they fire again. Not before the agents had time to be heard
    /// (`scheduler.agent_timeout` after this broker started electing).
    pub(super) fn announce_firing(&mut self) {
        if self.electing_since.elapsed() < self.config.scheduler.agent_timeout {
            return;
        }
        let agents = self.agents_now();
        let why = self.silent.not_firing(&agents);
        let scheduler = (agents.iter())
            .find(|a| a.role == AgentRole::Scheduler)
            .map(|a| a.id.clone());
        if why.is_none() && scheduler.is_none() {
            return; // electing one: no news yet
        }
        if self.not_firing.as_ref() == Some(&why) {
            return;
        }
        let first = self.not_firing.is_none();
        self.not_firing = Some(why.clone());
        let firing = why.is_none();
        let reason = match (why, &scheduler) {
            (Some(why), _) => {
                warn!(%why, "the triggers are NOT firing: no agent can hold the Scheduler role");
                format!("triggers are NOT firing: {why}")
            }
            // firing from the start is no news
            (None, _) if first => return,
            (None, Some(agent)) => {
                info!(%agent, "the triggers fire again");
                format!("triggers fire again: agent {agent} is the Scheduler")
            }
            (None, None) => return,
        };
        let event = TriggersChanged {
            firing,
            scheduler,
            reason,
            at_ms: now_ms(),
        };
        self.bus
            .post(self.bus.subjects().triggers_changed(), &event);
    }
}
