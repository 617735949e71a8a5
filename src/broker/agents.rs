//! The agents the broker knows, learned from their heartbeats, with their
//! health history. Pure: the caller passes the time in.
//!
//! Liveness works like the subagent registry's: a late heartbeat (two
//! intervals) asks for a probe; silence for `agent_timeout` drops the agent
//! without proof that its process is gone (a Scheduler's lease still holds
//! the role back); proof (no responders, twice) is the caller's to find. A role answer wins
//! over heartbeats sent before it. The book gives the views the election
//! and `baton status` need.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::election::AgentView;
use super::health::{level, millis, HealthHistory, HealthThresholds, SwitchCondition};
use crate::protocol::{AgentHealth, AgentHeartbeat, AgentRole, AgentStatus, HealthLevel};

/// What the broker knows of one agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub instance_id: String,
    pub controlled: bool,
    pub role: AgentRole,
    pub health: AgentHealth,
    pub level: HealthLevel,
    pub history: HealthHistory,
    pub schedules: u32,
    /// What keeps its file triggers from watching, as it last said.
    pub watch_problems: Vec<String>,
    pub heartbeat_interval: Duration,
    pub last_seen: Instant,
    /// When (ms) the role was last set from an answer; older heartbeats do
    /// not overwrite it.
    role_set_at_ms: u64,
    last_probe: Option<Instant>,
}

/// What a heartbeat told the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Not known before.
    New,
    /// Same id, a new process: the old one is gone.
    Restarted,
    /// Known; `role_changed` when it reports another role than before.
    Alive { role_changed: bool },
}

/// What a periodic check asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Heartbeats are late: ask it whether it lives.
    Probe(String),
    /// Silent for `agent_timeout`: dropped, its process not proven gone.
    Silent(String),
}

/// Every connected agent.
#[derive(Debug, Default)]
pub struct AgentBook {
    agents: BTreeMap<String, Agent>,
}

impl AgentBook {
    /// Records a heartbeat received at `now`/`now_ms`.
    pub fn heard(
        &mut self,
        hb: &AgentHeartbeat,
        thresholds: &HealthThresholds,
        keep: Duration,
        now: Instant,
        now_ms: u64,
    ) -> Heard {
        let lvl = level(hb.health.cpu_percent, hb.health.memory_percent, thresholds);
        let interval = match hb.heartbeat_interval_ms {
            0 => Duration::from_millis(250),
            ms => Duration::from_millis(ms),
        };
        let heard = match self.agents.get(&hb.agent_id) {
            None => Heard::New,
            Some(a) if a.instance_id != hb.instance_id => Heard::Restarted,
            Some(a) => Heard::Alive {
                role_changed: a.role != hb.role && hb.sent_at_ms >= a.role_set_at_ms,
            },
        };
        if !matches!(heard, Heard::Alive { .. }) {
            self.agents.insert(
                hb.agent_id.clone(),
                Agent {
                    id: hb.agent_id.clone(),
                    instance_id: hb.instance_id.clone(),
                    controlled: hb.controlled,
                    role: hb.role,
                    health: hb.health,
                    level: lvl,
                    history: HealthHistory::new(),
                    schedules: hb.schedules,
                    watch_problems: Vec::new(),
                    heartbeat_interval: interval,
                    last_seen: now,
                    role_set_at_ms: 0,
                    last_probe: None,
                },
            );
        }
        let a = self.agents.get_mut(&hb.agent_id).expect("inserted above");
        if hb.sent_at_ms >= a.role_set_at_ms {
            a.role = hb.role;
        }
        a.controlled = hb.controlled;
        a.health = hb.health;
        a.level = lvl;
        a.history.record(now_ms, lvl);
        a.history.forget_before(now_ms.saturating_sub(millis(keep)));
        a.schedules = hb.schedules;
        a.watch_problems.clone_from(&hb.watch_problems);
        a.heartbeat_interval = interval;
        a.last_seen = now;
        a.last_probe = None;
        heard
    }

    /// An answer to a role command said `role`, received at `now_ms`.
    /// Returns whether the role changed.
    pub fn answered(&mut self, id: &str, instance_id: &str, role: AgentRole, now_ms: u64) -> bool {
        let Some(a) = self
            .agents
            .get_mut(id)
            .filter(|a| a.instance_id == instance_id)
        else {
            return false;
        };
        a.role_set_at_ms = now_ms;
        std::mem::replace(&mut a.role, role) != role
    }

    /// A probe was answered: the agent lives.
    pub fn touch(&mut self, id: &str, instance_id: &str, now: Instant) {
        if let Some(a) = self
            .agents
            .get_mut(id)
            .filter(|a| a.instance_id == instance_id)
        {
            a.last_seen = now;
            a.last_probe = None;
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Agent> {
        self.agents.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    /// Agents to probe (late) or to drop (silent too long); the silent ones
    /// are removed.
    pub fn check(&mut self, now: Instant, agent_timeout: Duration) -> Vec<Check> {
        let mut out = Vec::new();
        for a in self.agents.values_mut() {
            let quiet = now.saturating_duration_since(a.last_seen);
            if quiet >= agent_timeout {
                out.push(Check::Silent(a.id.clone()));
            } else if quiet >= a.heartbeat_interval * 2 {
                let due = a
                    .last_probe
                    .is_none_or(|p| now.saturating_duration_since(p) >= a.heartbeat_interval * 2);
                if due {
                    a.last_probe = Some(now);
                    out.push(Check::Probe(a.id.clone()));
                }
            }
        }
        for c in &out {
            if let Check::Silent(id) = c {
                self.agents.remove(id);
            }
        }
        out
    }

    /// The election's view of every agent at `now_ms`.
    pub fn views(&self, condition: &SwitchCondition, now_ms: u64) -> Vec<AgentView> {
        let view = |a: &Agent| AgentView {
            id: a.id.clone(),
            controlled: a.controlled,
            reported_on: a.role == AgentRole::Scheduler,
            health: a.level,
            switch_condition_met: a.history.condition_met(condition, now_ms),
        };
        self.agents.values().map(view).collect()
    }

    /// Every agent as `baton status` shows it; `lease` gives the broker's
    /// lease end (ms) and exclusion of an agent.
    pub fn status(
        &self,
        condition: &SwitchCondition,
        lease: impl Fn(&str) -> (Option<u64>, bool),
        now: Instant,
        now_ms: u64,
    ) -> Vec<AgentStatus> {
        let status = |a: &Agent| {
            let (lease_end, excluded) = lease(&a.id);
            AgentStatus {
                id: a.id.clone(),
                role: a.role,
                controlled: a.controlled,
                excluded,
                health_level: a.level,
                health: a.health,
                switch_condition_met: a.history.condition_met(condition, now_ms),
                schedules: a.schedules,
                watch_problems: a.watch_problems.clone(),
                heartbeat_age_ms: millis(now.saturating_duration_since(a.last_seen)),
                lease_left_ms: lease_end.map(|end| end.saturating_sub(now_ms)),
                switched: None,
            }
        };
        self.agents.values().map(status).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, instance: &str, role: AgentRole, cpu: f32, sent_at_ms: u64) -> AgentHeartbeat {
        AgentHeartbeat {
            agent_id: id.into(),
            instance_id: instance.into(),
            controlled: true,
            role,
            health: AgentHealth {
                cpu_percent: cpu,
                memory_percent: 10.0,
                load_average: 0.5,
                running: 0,
            },
            schedules: 0,
            broker_epoch: 1,
            sent_at_ms,
            heartbeat_interval_ms: 100,
            protocol: 1,
            watch_problems: Vec::new(),
        }
    }

    const KEEP: Duration = Duration::from_secs(60);

    #[test]
    fn heartbeats_track_role_health_and_restarts() {
        let (t, th) = (Instant::now(), HealthThresholds::default());
        let mut book = AgentBook::default();
        let spare = hb("a", "i1", AgentRole::Spare, 5.0, 1_000);
        assert_eq!(book.heard(&spare, &th, KEEP, t, 1_000), Heard::New);
        assert_eq!(book.get("a").unwrap().level, HealthLevel::Excellent);
        let on = hb("a", "i1", AgentRole::Scheduler, 99.0, 1_100);
        assert_eq!(
            book.heard(&on, &th, KEEP, t, 1_100),
            Heard::Alive { role_changed: true }
        );
        assert_eq!(book.get("a").unwrap().level, HealthLevel::VeryBad);
        let again = hb("a", "i2", AgentRole::Spare, 5.0, 1_200);
        assert_eq!(book.heard(&again, &th, KEEP, t, 1_200), Heard::Restarted);
        assert_eq!(book.get("a").unwrap().role, AgentRole::Spare);
    }

    #[test]
    fn a_heartbeat_older_than_an_answer_does_not_undo_it() {
        let (t, th) = (Instant::now(), HealthThresholds::default());
        let mut book = AgentBook::default();
        book.heard(
            &hb("a", "i", AgentRole::Spare, 5.0, 1_000),
            &th,
            KEEP,
            t,
            1_000,
        );
        assert!(book.answered("a", "i", AgentRole::Scheduler, 1_500));
        let late = hb("a", "i", AgentRole::Spare, 5.0, 1_400);
        book.heard(&late, &th, KEEP, t, 1_600);
        assert_eq!(book.get("a").unwrap().role, AgentRole::Scheduler);
        let fresh = hb("a", "i", AgentRole::Spare, 5.0, 1_700);
        book.heard(&fresh, &th, KEEP, t, 1_700);
        assert_eq!(book.get("a").unwrap().role, AgentRole::Spare);
        // An answer from another process of the same id counts for nothing.
        assert!(!book.answered("a", "other", AgentRole::Scheduler, 1_800));
    }

    #[test]
    fn late_agents_are_probed_then_dropped_when_silent() {
        let (t, th) = (Instant::now(), HealthThresholds::default());
        let mut book = AgentBook::default();
        book.heard(&hb("a", "i", AgentRole::Spare, 5.0, 0), &th, KEEP, t, 0);
        let timeout = Duration::from_secs(3);
        assert!(book
            .check(t + Duration::from_millis(150), timeout)
            .is_empty());
        let late = t + Duration::from_millis(250);
        assert_eq!(book.check(late, timeout), [Check::Probe("a".into())]);
        assert!(book
            .check(late + Duration::from_millis(50), timeout)
            .is_empty());
        assert_eq!(
            book.check(t + timeout, timeout),
            [Check::Silent("a".into())]
        );
        assert!(book.get("a").is_none());
    }

    #[test]
    fn views_show_the_switch_condition() {
        let (t, th) = (Instant::now(), HealthThresholds::default());
        let mut book = AgentBook::default();
        let cond = SwitchCondition {
            at_or_below: HealthLevel::VeryBad,
            for_: Duration::from_secs(5),
        };
        book.heard(
            &hb("a", "i", AgentRole::Scheduler, 99.0, 0),
            &th,
            KEEP,
            t,
            0,
        );
        book.heard(
            &hb("a", "i", AgentRole::Scheduler, 99.0, 4_000),
            &th,
            KEEP,
            t,
            4_000,
        );
        assert!(!book.views(&cond, 4_000)[0].switch_condition_met);
        book.heard(
            &hb("a", "i", AgentRole::Scheduler, 99.0, 5_000),
            &th,
            KEEP,
            t,
            5_000,
        );
        let view = &book.views(&cond, 5_000)[0];
        assert!(view.switch_condition_met && view.reported_on);
        let status = book.status(&cond, |_| (Some(6_000), false), t, 5_000);
        assert_eq!(status[0].lease_left_ms, Some(1_000));
    }
}
