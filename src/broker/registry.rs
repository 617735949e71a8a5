//! The registry of subagents, learned from registrations and heartbeats.
//!
//! Pure: the caller passes `now` in. The registry tracks liveness, operator
//! switches (disabled) and the tasks the broker has placed on each subagent;
//! it does not decide placement.
//!
//! Liveness ([`Registry::check`]): a subagent whose heartbeat is late (two intervals) is probed
//! with a request; one that has no responders or does not answer becomes
//! suspect (no new tasks, its running ones left alone) until it is heard
//! again. Silence for the whole `subagent_timeout` (or four of the heartbeat
//! periods it announced, if longer: [`lost_after`]; an idle subagent
//! heartbeats slower, `subagent/pace.rs`) declares it lost, still
//! without proof of death: it may run its tasks until its orphan timeout.
//! Only its reaper's death certificate proves it dead (see
//! `core/certificate.rs`). A subagent that refused a task as `busy` is left
//! out of placement until its next heartbeat.
//!
//! Besides liveness it keeps suspicion (no new tasks until heard again),
//! operator switches (disabled), draining, restarts (a new `instance_id`
//! under a known id) and the tasks placed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::protocol::{Load, SubagentState, SubagentStatus};

/// What the registry knows of one subagent.
#[derive(Debug, Clone)]
pub struct Subagent {
    pub id: String,
    pub instance_id: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub last_seen: Instant,
    /// Tasks placed here that have not finished.
    pub tasks: BTreeSet<String>,
    pub tasks_finished: u64,
    /// Not heard as expected (a dispatch or probe with no responders, a
    /// probe unanswered): no new tasks until it is heard again.
    pub suspect: bool,
    /// Refused a task as busy: no new tasks until its next heartbeat says
    /// how many it runs (not suspicious: it answered).
    pub said_busy: bool,
    pub lost: bool,
    /// Switched off by an operator; survives heartbeats and returns.
    pub disabled: bool,
    pub draining: bool,
    pub load: Option<Load>,
    pub heartbeat_interval: Duration,
    pub orphan_timeout: Duration,
    /// Commands it refused for their sender (from its heartbeats).
    pub refused: u64,
    last_probe: Option<Instant>,
}

impl Subagent {
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.tasks.len() as u32)
    }

    pub fn state(&self) -> SubagentState {
        if self.lost {
            SubagentState::Lost
        } else if self.draining {
            SubagentState::Draining
        } else if self.disabled {
            SubagentState::Disabled
        } else if self.suspect {
            SubagentState::Suspect
        } else {
            SubagentState::Available
        }
    }

    /// Available and not suspect: a candidate for new tasks (capacity aside).
    pub fn is_up(&self) -> bool {
        self.state() == SubagentState::Available
    }

    pub fn takes_tasks(&self) -> bool {
        self.is_up() && !self.said_busy && self.free() > 0
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
    /// Same id, new process: the old process's tasks no longer occupy it,
    /// but are not proven dead; `doubt` says how long they may live.
    Restarted {
        lost_tasks: Vec<String>,
        doubt: Doubt,
    },
}

/// How long the tasks of a subagent process out of sight may still run:
/// until its own orphan timeout (with kill grace) has passed since it was
/// last heard, checked once per heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubt {
    pub last_seen: Instant,
    pub orphan_timeout: Duration,
    pub heartbeat_interval: Duration,
}

impl Subagent {
    /// The doubt over this process's tasks, were it lost now.
    pub fn doubt(&self) -> Doubt {
        Doubt {
            last_seen: self.last_seen,
            orphan_timeout: self.orphan_timeout,
            heartbeat_interval: self.heartbeat_interval,
        }
    }
}

/// The view of a subagent a heartbeat, registration or probe answer gives.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    pub id: &'a str,
    pub instance_id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub capacity: u32,
    pub load: Option<Load>,
    pub draining: bool,
    pub heartbeat_interval: Duration,
    pub orphan_timeout: Duration,
}

/// What the liveness check wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Its heartbeat is late: ask it whether it lives.
    Probe(String),
    /// Silent for the whole timeout: lost, but not known dead.
    Unreachable(String),
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
                    last_seen: now,
                    tasks: BTreeSet::new(),
                    tasks_finished: 0,
                    suspect: false,
                    said_busy: false,
                    lost: false,
                    disabled: false,
                    draining: s.draining,
                    load: s.load,
                    heartbeat_interval: s.heartbeat_interval,
                    orphan_timeout: s.orphan_timeout,
                    refused: 0,
                    last_probe: None,
                },
            );
            return Seen::New;
        };
        let doubt = entry.doubt();
        entry.last_seen = entry.last_seen.max(now);
        entry.labels = s.labels.clone();
        entry.capacity = s.capacity;
        entry.load = s.load.or(entry.load);
        entry.draining = s.draining;
        entry.heartbeat_interval = s.heartbeat_interval;
        entry.orphan_timeout = s.orphan_timeout;
        entry.suspect = false;
        entry.said_busy = false;
        entry.last_probe = None;
        let was_lost = std::mem::replace(&mut entry.lost, false);
        if entry.instance_id != s.instance_id {
            entry.instance_id = s.instance_id.to_string();
            let lost_tasks = std::mem::take(&mut entry.tasks).into_iter().collect();
            return Seen::Restarted { lost_tasks, doubt };
        }
        if was_lost {
            Seen::Returned
        } else {
            Seen::Alive
        }
    }

    /// A probe answer: the process lives. Returns the previous state of a
    /// lost one that is back (same process), else `None`.
    pub fn touch(&mut self, id: &str, instance_id: &str, now: Instant) -> Option<Seen> {
        let entry = self.subagents.get_mut(id)?;
        if entry.instance_id != instance_id {
            return None;
        }
        entry.last_seen = entry.last_seen.max(now);
        entry.last_probe = None;
        entry.suspect = false;
        let was_lost = std::mem::replace(&mut entry.lost, false);
        Some(if was_lost {
            Seen::Returned
        } else {
            Seen::Alive
        })
    }

    /// Which subagents to probe, and which are lost to silence. A probe is
    /// repeated at most once per heartbeat interval.
    pub fn check(&mut self, now: Instant, timeout: Duration) -> Vec<Check> {
        let mut checks = Vec::new();
        for entry in self.subagents.values_mut().filter(|s| !s.lost) {
            let age = now.saturating_duration_since(entry.last_seen);
            if age > lost_after(timeout, entry.heartbeat_interval) {
                checks.push(Check::Unreachable(entry.id.clone()));
            } else if age > entry.heartbeat_interval * 2 {
                let due = entry
                    .last_probe
                    .is_none_or(|p| now.saturating_duration_since(p) >= entry.heartbeat_interval);
                if due {
                    entry.last_probe = Some(now);
                    checks.push(Check::Probe(entry.id.clone()));
                }
            }
        }
        checks
    }

    /// The broker itself was not looking for `paused` (its thread busy, see
    /// [`paused_for`]): silence meanwhile is held against no subagent,
    /// whose heartbeats may still wait unread behind the broker's work.
    pub fn forgive(&mut self, paused: Duration, now: Instant) {
        for entry in self.subagents.values_mut() {
            entry.last_seen = (entry.last_seen + paused).min(now);
        }
    }

    /// Declares a subagent lost; returns the tasks that were placed on it.
    /// `None` when it is unknown or already lost.
    pub fn declare_lost(&mut self, id: &str) -> Option<Vec<String>> {
        let entry = self.subagents.get_mut(id).filter(|s| !s.lost)?;
        entry.lost = true;
        Some(std::mem::take(&mut entry.tasks).into_iter().collect())
    }

    /// Takes a subagent out of placement until it is heard again; returns
    /// whether it was available before (so the change is worth announcing).
    pub fn suspect(&mut self, id: &str) -> bool {
        let Some(entry) = self.subagents.get_mut(id) else {
            return false;
        };
        let was = entry.suspect;
        entry.suspect = true;
        !was && entry.state() == SubagentState::Suspect
    }

    /// It refused a task as busy: no new tasks until its next heartbeat.
    pub fn said_busy(&mut self, id: &str) {
        if let Some(entry) = self.subagents.get_mut(id) {
            entry.said_busy = true;
        }
    }

    /// An operator's switch; `None` when the subagent is unknown.
    pub fn set_disabled(&mut self, id: &str, disabled: bool) -> Option<SubagentState> {
        let entry = self.subagents.get_mut(id)?;
        entry.disabled = disabled;
        Some(entry.state())
    }

    /// A drained subagent left normally; returns whether it was known.
    pub fn remove(&mut self, id: &str, instance_id: &str) -> bool {
        match self.subagents.get(id) {
            Some(s) if s.instance_id == instance_id => {
                self.subagents.remove(id);
                true
            }
            _ => false,
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
                state: s.state(),
                labels: s.labels.clone(),
                capacity: s.capacity,
                running: s.tasks.len() as u32,
                heartbeat_age_ms: now.saturating_duration_since(s.last_seen).as_millis() as u64,
                tasks_finished: s.tasks_finished,
                load: s.load,
                refused: s.refused,
                switched: None,
            })
            .collect()
    }

    /// Records how many commands a subagent has refused for their sender.
    pub fn note_refused(&mut self, id: &str, refused: u64) {
        if let Some(s) = self.subagents.get_mut(id) {
            s.refused = refused;
        }
    }
}

/// How long a subagent may be silent before it is declared lost: the
/// broker's `subagent_timeout`, or four of the heartbeat periods it
/// announced if that is longer (one configured with a longer idle period
/// than this broker expects is not declared lost for keeping to it). O(1):
/// the liveness tick calls it for every subagent.
pub fn lost_after(subagent_timeout: Duration, announced: Duration) -> Duration {
    subagent_timeout.max(announced * 4)
}

/// How long the broker was not looking, when its liveness check comes at
/// `now`, the last one at `last` and one due every `every`: the gap less
/// one interval when it exceeds ten intervals (its thread was busy: the
/// lease keeper holds its lease through that, see `leadership/`), else
/// `None`.
pub fn paused_for(last: Option<Instant>, now: Instant, every: Duration) -> Option<Duration> {
    let gap = now.saturating_duration_since(last?);
    (gap > every * 10).then(|| gap - every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_allowed_is_the_timeout_or_four_announced_periods() {
        let ms = Duration::from_millis;
        assert_eq!(lost_after(TIMEOUT, HB), TIMEOUT);
        assert_eq!(lost_after(TIMEOUT, ms(750)), TIMEOUT);
        assert_eq!(lost_after(TIMEOUT, ms(2000)), ms(8000));
    }

    #[test]
    fn a_subagent_announcing_a_long_period_is_probed_not_lost_within_four() {
        let labels = BTreeMap::new();
        let mut r = Registry::default();
        let t0 = Instant::now();
        let slow = Sighting {
            heartbeat_interval: Duration::from_secs(2),
            ..sight("a", "i1", &labels)
        };
        r.seen(slow, t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(r.check(at(3500), TIMEOUT).is_empty());
        assert_eq!(r.check(at(4500), TIMEOUT), vec![Check::Probe("a".into())]);
        assert_eq!(
            r.check(at(8100), TIMEOUT),
            vec![Check::Unreachable("a".into())]
        );
    }

    const HB: Duration = Duration::from_millis(250);
    const TIMEOUT: Duration = Duration::from_secs(3);

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
            load: None,
            draining: false,
            heartbeat_interval: HB,
            orphan_timeout: Duration::from_secs(10),
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
        assert_eq!(r.declare_lost("a"), Some(vec!["t1".to_string()]));
        assert_eq!(r.declare_lost("a"), None, "lost once");
        assert!(!r.get("a").unwrap().takes_tasks());
        assert_eq!(r.get("a").unwrap().state(), SubagentState::Lost);
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(r.seen(sight("a", "i1", &labels), t5), Seen::Returned);
        r.assign("a", "t2");
        assert_eq!(
            r.seen(sight("a", "i2", &labels), t5 + HB),
            Seen::Restarted {
                lost_tasks: vec!["t2".into()],
                doubt: Doubt {
                    last_seen: t5,
                    orphan_timeout: Duration::from_secs(10),
                    heartbeat_interval: HB,
                },
            }
        );
    }

    #[test]
    fn silence_while_the_broker_was_busy_is_forgiven() {
        let labels = BTreeMap::new();
        let t0 = Instant::now();
        let every = Duration::from_millis(100);
        assert_eq!(paused_for(None, t0, every), None);
        assert_eq!(paused_for(Some(t0), t0 + every, every), None);
        assert_eq!(paused_for(Some(t0), t0 + every * 10, every), None);
        let t5 = t0 + Duration::from_secs(5);
        let paused = paused_for(Some(t0), t5, every).expect("a pause");
        assert_eq!(paused, Duration::from_secs(5) - every);
        let mut r = Registry::default();
        r.seen(sight("a", "i", &labels), t0);
        assert!(
            matches!(r.check(t5, TIMEOUT)[..], [Check::Unreachable(_)]),
            "unforgiven, five silent seconds are a loss"
        );
        let mut r = Registry::default();
        r.seen(sight("a", "i", &labels), t0);
        r.forgive(paused, t5);
        assert!(r.check(t5, TIMEOUT).is_empty(), "forgiven: just heard");
        // silence after the pause counts again
        let later = t5 + TIMEOUT * 2;
        assert!(matches!(
            r.check(later, TIMEOUT)[..],
            [Check::Unreachable(_)]
        ));
    }

    #[test]
    fn late_heartbeats_are_probed_then_silence_is_unreachable() {
        let labels = BTreeMap::new();
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.seen(sight("a", "i", &labels), t0);
        assert!(
            r.check(t0 + HB, TIMEOUT).is_empty(),
            "one interval late is normal"
        );
        let late = t0 + HB * 2 + Duration::from_millis(1);
        assert_eq!(r.check(late, TIMEOUT), vec![Check::Probe("a".into())]);
        assert!(
            r.check(late + HB / 2, TIMEOUT).is_empty(),
            "not probed twice at once"
        );
        assert_eq!(r.check(late + HB, TIMEOUT), vec![Check::Probe("a".into())]);
        let silent = t0 + TIMEOUT + Duration::from_millis(1);
        assert_eq!(
            r.check(silent, TIMEOUT),
            vec![Check::Unreachable("a".into())]
        );
        r.declare_lost("a");
        assert!(
            r.check(silent, TIMEOUT).is_empty(),
            "a lost subagent is not checked"
        );
    }

    #[test]
    fn capacity_suspicion_disabling_and_draining_gate_placement() {
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
        assert!(r.suspect("a"), "newly suspect");
        assert!(!r.suspect("a"), "already suspect");
        assert_eq!(r.get("a").unwrap().state(), SubagentState::Suspect);
        assert!(!r.get("a").unwrap().takes_tasks());
        r.seen(sight("a", "i", &labels), now);
        assert!(r.get("a").unwrap().takes_tasks());
        r.suspect("a");
        assert_eq!(r.touch("a", "other-process", now), None);
        assert!(
            !r.get("a").unwrap().takes_tasks(),
            "another process's answer clears nothing"
        );
        assert_eq!(r.touch("a", "i", now), Some(Seen::Alive));
        assert!(
            r.get("a").unwrap().takes_tasks(),
            "a probe answer clears suspicion"
        );

        assert_eq!(r.set_disabled("a", true), Some(SubagentState::Disabled));
        r.seen(sight("a", "i", &labels), now);
        assert!(
            !r.get("a").unwrap().takes_tasks(),
            "disabled survives heartbeats"
        );
        assert_eq!(r.set_disabled("a", false), Some(SubagentState::Available));

        let mut draining = sight("a", "i", &labels);
        draining.draining = true;
        r.seen(draining, now);
        assert_eq!(r.get("a").unwrap().state(), SubagentState::Draining);
        assert!(!r.remove("a", "other-instance"));
        assert!(r.remove("a", "i"));
        assert!(r.get("a").is_none());
    }
}
