//! The registry of subagents, learned from registrations and heartbeats.
//!
//! Pure: the caller passes `now` in. The registry tracks liveness and the
//! tasks the broker has placed on each subagent; it does not decide placement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::protocol::{SubagentState, SubagentStatus};

/// What the registry knows of one subagent.
#[derive(Debug, Clone)]
pub struct Subagent {
    pub id: String,
    pub instance_id: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub state: SubagentState,
    pub last_seen: Instant,
    /// Tasks placed here that have not finished.
    pub tasks: BTreeSet<String>,
    pub tasks_finished: u64,
    /// Refused a dispatch because nothing listened: no new tasks until it heartbeats again.
    pub suspect: bool,
}

impl Subagent {
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.tasks.len() as u32)
    }

    pub fn takes_tasks(&self) -> bool {
        self.state == SubagentState::Available && !self.suspect && self.free() > 0
    }
}

/// What a heartbeat or registration told the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not known before.
    New,
    /// Known and alive.
    Alive,
    /// Was declared lost and is back (same process).
    Returned,
    /// Same id, new process: the old process's tasks are gone.
    Restarted { lost_tasks: Vec<String> },
}

/// The view of a subagent a heartbeat or registration gives.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    pub id: &'a str,
    pub instance_id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub capacity: u32,
}

#[derive(Debug, Default)]
pub struct Registry {
    subagents: BTreeMap<String, Subagent>,
}

impl Registry {
    /// Records that a subagent is alive.
    pub fn seen(&mut self, s: Sighting<'_>, now: Instant) -> Seen {
        let Some(entry) = self.subagents.get_mut(s.id) else {
            self.subagents.insert(
                s.id.to_string(),
                Subagent {
                    id: s.id.to_string(),
                    instance_id: s.instance_id.to_string(),
                    labels: s.labels.clone(),
                    capacity: s.capacity,
                    state: SubagentState::Available,
                    last_seen: now,
                    tasks: BTreeSet::new(),
                    tasks_finished: 0,
                    suspect: false,
                },
            );
            return Seen::New;
        };
        entry.last_seen = entry.last_seen.max(now);
        entry.labels = s.labels.clone();
        entry.capacity = s.capacity;
        entry.suspect = false;
        let was = entry.state;
        entry.state = SubagentState::Available;
        if entry.instance_id != s.instance_id {
            entry.instance_id = s.instance_id.to_string();
            let lost_tasks = std::mem::take(&mut entry.tasks).into_iter().collect();
            return Seen::Restarted { lost_tasks };
        }
        if was == SubagentState::Lost {
            Seen::Returned
        } else {
            Seen::Alive
        }
    }

    /// Declares lost every available subagent silent for longer than
    /// `timeout`; returns them with the tasks that were placed on them.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(String, Vec<String>)> {
        let mut lost = Vec::new();
        for entry in self.subagents.values_mut() {
            if entry.state == SubagentState::Available
                && now.saturating_duration_since(entry.last_seen) > timeout
            {
                entry.state = SubagentState::Lost;
                let tasks = std::mem::take(&mut entry.tasks).into_iter().collect();
                lost.push((entry.id.clone(), tasks));
            }
        }
        lost
    }

    /// Takes a subagent out of placement until it heartbeats again.
    pub fn suspect(&mut self, id: &str) {
        if let Some(entry) = self.subagents.get_mut(id) {
            entry.suspect = true;
        }
    }

    pub fn assign(&mut self, id: &str, task_id: &str) {
        if let Some(entry) = self.subagents.get_mut(id) {
            entry.tasks.insert(task_id.to_string());
        }
    }

    /// The task no longer occupies the subagent; `finished` counts it as done.
    pub fn release(&mut self, id: &str, task_id: &str, finished: bool) {
        if let Some(entry) = self.subagents.get_mut(id) {
            if entry.tasks.remove(task_id) && finished {
                entry.tasks_finished += 1;
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Subagent> {
        self.subagents.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subagent> + Clone {
        self.subagents.values()
    }

    pub fn status(&self, now: Instant) -> Vec<SubagentStatus> {
        self.subagents
            .values()
            .map(|s| SubagentStatus {
                id: s.id.clone(),
                state: s.state,
                labels: s.labels.clone(),
                capacity: s.capacity,
                running: s.tasks.len() as u32,
                heartbeat_age_ms: now.saturating_duration_since(s.last_seen).as_millis() as u64,
                tasks_finished: s.tasks_finished,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sight<'a>(
        id: &'a str,
        instance: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Sighting<'a> {
        Sighting {
            id,
            instance_id: instance,
            labels,
            capacity: 2,
        }
    }

    #[test]
    fn lifecycle_new_alive_lost_returned_restarted() {
        let labels = BTreeMap::new();
        let t0 = Instant::now();
        let mut r = Registry::default();
        assert_eq!(r.seen(sight("a", "i1", &labels), t0), Seen::New);
        assert_eq!(r.seen(sight("a", "i1", &labels), t0), Seen::Alive);
        r.assign("a", "t1");
        assert!(r
            .expire(t0 + Duration::from_secs(1), Duration::from_secs(3))
            .is_empty());
        let lost = r.expire(t0 + Duration::from_secs(4), Duration::from_secs(3));
        assert_eq!(lost, vec![("a".to_string(), vec!["t1".to_string()])]);
        assert!(!r.get("a").unwrap().takes_tasks());
        assert_eq!(
            r.seen(sight("a", "i1", &labels), t0 + Duration::from_secs(5)),
            Seen::Returned
        );
        r.assign("a", "t2");
        assert_eq!(
            r.seen(sight("a", "i2", &labels), t0 + Duration::from_secs(6)),
            Seen::Restarted {
                lost_tasks: vec!["t2".into()]
            }
        );
    }

    #[test]
    fn capacity_and_suspicion_gate_placement() {
        let labels = BTreeMap::new();
        let now = Instant::now();
        let mut r = Registry::default();
        r.seen(sight("a", "i", &labels), now);
        r.assign("a", "t1");
        assert!(r.get("a").unwrap().takes_tasks());
        r.assign("a", "t2");
        assert!(!r.get("a").unwrap().takes_tasks());
        r.release("a", "t1", true);
        assert!(r.get("a").unwrap().takes_tasks());
        assert_eq!(r.get("a").unwrap().tasks_finished, 1);
        r.suspect("a");
        assert!(!r.get("a").unwrap().takes_tasks());
        r.seen(sight("a", "i", &labels), now);
        assert!(r.get("a").unwrap().takes_tasks());
    }
}
