//! Whether the deployed triggers fire: when no agent can hold the Scheduler
//! role (none connected, all turned off, none under the broker's control,
//! all meeting the switch condition), nothing fires, and `status` and a
//! `TriggersChanged` event say why in plain words. Pure.

use crate::protocol::{AgentRole, AgentStatus};

/// Why no agent can be the Scheduler now; `None` while one is, or one may
/// still be elected.
pub fn not_firing(agents: &[AgentStatus]) -> Option<&'static str> {
    if agents.iter().any(|a| a.role == AgentRole::Scheduler) {
        return None;
    }
    let eligible = || agents.iter().filter(|a| a.controlled && !a.excluded);
    Some(if agents.is_empty() {
        "no agent is connected; start one with `baton agent`"
    } else if agents.iter().all(|a| a.excluded) {
        "every agent is turned off by an operator; `baton scheduler on AGENT` turns one on"
    } else if eligible().next().is_none() {
        "no agent may hold it: those not turned off by an operator run outside broker control"
    } else if eligible().all(|a| a.switch_condition_met) {
        "every agent that may hold it meets the switch condition (too unhealthy); `baton scheduler on AGENT` overrides it once"
    } else {
        return None;
    })
}
