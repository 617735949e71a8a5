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

/// Agents this broker dropped as silent (id and when), until heard again:
/// so "no agent" can name them instead of asking for a new one.
#[derive(Debug, Default)]
pub struct Silent(std::collections::BTreeMap<String, u64>);

/// Most silent agents remembered (the longest silent go first).
const SILENT_KEPT: usize = 16;

impl Silent {
    pub fn dropped(&mut self, id: &str, at_ms: u64) {
        self.0.insert(id.to_string(), at_ms);
        while self.0.len() > SILENT_KEPT {
            let oldest = self.0.iter().min_by_key(|(_, at)| **at);
            let Some(oldest) = oldest.map(|(id, _)| id.clone()) else {
                break;
            };
            self.0.remove(&oldest);
        }
    }

    pub fn heard(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// [`not_firing`], naming the silent agents when none is heard.
    pub fn not_firing(&self, agents: &[AgentStatus]) -> Option<String> {
        let why = not_firing(agents)?;
        if !agents.is_empty() || self.0.is_empty() {
            return Some(why.to_string());
        }
        let mut silent: Vec<(&String, &u64)> = self.0.iter().collect();
        silent.sort_by_key(|(_, at)| **at);
        let names: Vec<&str> = silent.iter().map(|(id, _)| id.as_str()).collect();
        let since = crate::time::utc_time_of_day(*silent[0].1);
        Some(format!(
            "no agent is heard from: {} silent since {since} (stopped, frozen or cut off from \
             NATS: see why, or start another with `baton agent`)",
            names.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_agents_are_named_while_none_is_heard_and_forgotten_when_heard() {
        let mut silent = Silent::default();
        assert_eq!(
            silent.not_firing(&[]).as_deref(),
            Some("no agent is connected; start one with `baton agent`")
        );
        silent.dropped("a2", 61_000);
        silent.dropped("a1", 60_000);
        let why = silent.not_firing(&[]).unwrap();
        assert!(
            why.starts_with("no agent is heard from: a1, a2 silent since 00:01:00 UTC"),
            "{why}"
        );
        silent.heard("a1");
        silent.heard("a2");
        assert!(silent
            .not_firing(&[])
            .unwrap()
            .starts_with("no agent is connected"));
        for i in 0..(SILENT_KEPT as u64 + 5) {
            silent.dropped(&format!("x{i}"), i);
        }
        let why = silent.not_firing(&[]).unwrap();
        assert!(
            !why.contains("x0,") && why.contains("x20"),
            "the oldest go: {why}"
        );
    }
}
