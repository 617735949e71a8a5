//! Whether a subagent starts a task it is handed: the decision, pure. The
//! actor asks, then acts on the answer (stays silent, replies, or spawns).
//!
//! In order, the first that applies:
//!
//! | the `run`                                  | decision        | reply                                  |
//! |--------------------------------------------|-----------------|----------------------------------------|
//! | names another process (`instance_id`)      | `NotMine`       | none: that process answers, if alive   |
//! | is not signed by a broker                  | `Forbidden`     | `forbidden`                            |
//! | comes from an older broker epoch           | `StaleEpoch`    | `invalid_state`                        |
//! | names a known task (running, unacknowledged, lately finished) | `Duplicate` | `duplicate: true` with the pid |
//! | arrives while draining                     | `Draining`      | `busy`                                 |
//! | finds `capacity` tasks running             | `Full`          | `busy`                                 |
//! | otherwise                                  | `Start`         | the pid once spawned                   |
//!
//! From `Duplicate` on, the command is the current broker's: the actor
//! observes its epoch and counts it as broker contact
//! ([`Admission::obeyed`]). `stop` and `kill` pass the same guard
//! ([`obey`]). The refusals and `busy` replies are mapped to wire errors
//! here, once.
//!
//! Architecture invariant: the decision is pure (no bus, no clock, no IO:
//! the signature is checked by the bus and passed in as a flag); the actor
//! only acts on it, and observes a command's epoch and counts it as broker
//! contact only when it was obeyed. A seeded property test runs random
//! sequences of runs, ends, acknowledgements, epochs and drains: never more
//! running than the capacity, never a known id started again, never a start
//! while draining.

use super::epoch::EpochFence;
use super::tasks::Tasks;
use crate::protocol::{ErrorCode, ErrorReply};

/// A `run` as the decision reads it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub task_id: &'a str,
    /// The subagent process it is meant for; none from older brokers.
    pub instance_id: Option<&'a str>,
    /// The sending broker's epoch; 0 when unknown.
    pub epoch: u64,
    /// Signed by a broker (checked by the bus, against the identities).
    pub from_broker: bool,
}

/// The subagent as the decision reads it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// This process's instance id.
    pub instance_id: &'a str,
    pub fence: EpochFence,
    pub draining: bool,
    pub capacity: u32,
    pub tasks: &'a Tasks,
}

/// Why a broker command is not obeyed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not signed by a broker.
    Forbidden,
    /// From a broker older than the newest active one seen.
    StaleEpoch { epoch: u64, newest: u64 },
}

/// What to do with a `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Meant for another process under this subagent id: stay silent.
    NotMine,
    Refused(Refusal),
    /// Already known: no second copy; `pid` while it runs.
    Duplicate {
        pid: Option<u32>,
    },
    /// Stopping: no new tasks.
    Draining,
    /// `running` tasks run, as many as the capacity.
    Full {
        running: usize,
    },
    Start,
}

/// Whether a broker command of `epoch` may be obeyed.
pub fn obey(from_broker: bool, epoch: u64, fence: &EpochFence) -> Result<(), Refusal> {
    if !from_broker {
        return Err(Refusal::Forbidden);
    }
    fence
        .check(epoch)
        .map_err(|newest| Refusal::StaleEpoch { epoch, newest })
}

/// Decides what to do with a `run`.
pub fn admit(ask: &Ask<'_>, view: &View<'_>) -> Admission {
    if ask.instance_id.is_some_and(|i| i != view.instance_id) {
        return Admission::NotMine;
    }
    if let Err(refusal) = obey(ask.from_broker, ask.epoch, &view.fence) {
        return Admission::Refused(refusal);
    }
    if view.tasks.knows(ask.task_id) {
        let pid = view.tasks.pid(ask.task_id);
        return Admission::Duplicate { pid };
    }
    if view.draining {
        return Admission::Draining;
    }
    let running = view.tasks.running_len();
    if running >= view.capacity as usize {
        return Admission::Full { running };
    }
    Admission::Start
}

impl Admission {
    /// From the current broker: its epoch is observed and it is broker
    /// contact, whatever the answer.
    pub fn obeyed(&self) -> bool {
        !matches!(self, Admission::NotMine | Admission::Refused(_))
    }

    /// The `busy` reply of subagent `id`, when it is too busy to start it.
    pub fn busy(&self, id: &str) -> Option<ErrorReply> {
        let message = match self {
            Admission::Draining => format!("subagent {id} is draining"),
            Admission::Full { running } => {
                format!("subagent {id} runs {running} tasks, its capacity")
            }
            _ => return None,
        };
        Some(ErrorReply::new(ErrorCode::Busy, message))
    }
}

impl Refusal {
    /// The reply to the refused `command`; `sender` describes who sent it.
    pub fn reply(&self, command: &str, sender: &str) -> ErrorReply {
        match *self {
            Refusal::Forbidden => ErrorReply::new(
                ErrorCode::Forbidden,
                format!("{command} refused: not signed by a broker (sender: {sender})"),
            ),
            Refusal::StaleEpoch { epoch, newest } => ErrorReply::new(
                ErrorCode::InvalidState,
                format!("stale broker epoch {epoch}: the newest active broker has epoch {newest}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::sync::oneshot;

    use super::super::tasks::result;
    use super::*;
    use crate::testing::Rng;

    const ME: &str = "instance-b";

    fn ask(task_id: &str) -> Ask<'_> {
        Ask {
            task_id,
            instance_id: Some(ME),
            epoch: 3,
            from_broker: true,
        }
    }

    fn fence(newest: u64) -> EpochFence {
        let mut f = EpochFence::default();
        f.observe(newest);
        f
    }

    fn view(tasks: &Tasks) -> View<'_> {
        View {
            instance_id: ME,
            fence: fence(3),
            draining: false,
            capacity: 2,
            tasks,
        }
    }

    fn start(tasks: &mut Tasks, task_id: &str, pid: u32) {
        let (kill, _) = oneshot::channel();
        tasks.start(task_id.into(), pid, kill);
    }

    #[test]
    fn a_task_for_another_process_gets_no_answer_whoever_sends_it() {
        let tasks = Tasks::default();
        for from_broker in [true, false] {
            let other = Ask {
                instance_id: Some("instance-a"),
                epoch: 1,
                from_broker,
                ..ask("t")
            };
            assert_eq!(admit(&other, &view(&tasks)), Admission::NotMine);
        }
        let unnamed = Ask {
            instance_id: None,
            ..ask("t")
        };
        assert_eq!(admit(&unnamed, &view(&tasks)), Admission::Start);
    }

    #[test]
    fn a_task_not_signed_by_a_broker_is_forbidden() {
        let tasks = Tasks::default();
        let unsigned = Ask {
            from_broker: false,
            ..ask("t")
        };
        let decided = admit(&unsigned, &view(&tasks));
        assert_eq!(decided, Admission::Refused(Refusal::Forbidden));
        assert!(!decided.obeyed());
    }

    #[test]
    fn a_task_from_an_older_epoch_is_stale_and_epoch_zero_is_not() {
        let mut tasks = Tasks::default();
        start(&mut tasks, "t", 7);
        let old = Ask {
            epoch: 2,
            ..ask("t")
        };
        let decided = admit(&old, &view(&tasks));
        let stale = Refusal::StaleEpoch {
            epoch: 2,
            newest: 3,
        };
        assert_eq!(decided, Admission::Refused(stale), "even for a known task");
        assert!(!decided.obeyed());
        for epoch in [0, 3, 4] {
            let a = Ask { epoch, ..ask("u") };
            assert_eq!(admit(&a, &view(&tasks)), Admission::Start);
        }
    }

    #[test]
    fn a_known_task_is_a_duplicate_even_when_draining_or_full() {
        let mut tasks = Tasks::default();
        start(&mut tasks, "running", 7);
        start(&mut tasks, "other", 8);
        tasks.finish(result("unacked"));
        tasks.finish(result("acked"));
        tasks.acked("acked");
        let mut v = view(&tasks);
        v.draining = true;
        let expected = [("running", Some(7)), ("unacked", None), ("acked", None)];
        for (task_id, pid) in expected {
            let decided = admit(&ask(task_id), &v);
            assert_eq!(decided, Admission::Duplicate { pid }, "{task_id}");
            assert!(decided.obeyed());
            assert_eq!(decided.busy("s1"), None);
        }
    }

    #[test]
    fn draining_refuses_a_new_task_even_with_room() {
        let tasks = Tasks::default();
        let mut v = view(&tasks);
        v.draining = true;
        let decided = admit(&ask("t"), &v);
        assert_eq!(decided, Admission::Draining);
        assert!(decided.obeyed());
        let reply = decided.busy("s1").unwrap();
        assert_eq!(reply.error.code, ErrorCode::Busy);
        assert_eq!(reply.error.message, "subagent s1 is draining");
    }

    #[test]
    fn a_full_subagent_refuses_a_new_task() {
        let mut tasks = Tasks::default();
        start(&mut tasks, "a", 7);
        start(&mut tasks, "b", 8);
        let decided = admit(&ask("t"), &view(&tasks));
        assert_eq!(decided, Admission::Full { running: 2 });
        assert!(decided.obeyed());
        let reply = decided.busy("s1").unwrap();
        assert_eq!(reply.error.code, ErrorCode::Busy);
        assert_eq!(
            reply.error.message,
            "subagent s1 runs 2 tasks, its capacity"
        );
    }

    #[test]
    fn a_new_task_with_room_starts() {
        let mut tasks = Tasks::default();
        start(&mut tasks, "a", 7);
        tasks.finish(result("b"));
        let decided = admit(&ask("t"), &view(&tasks));
        assert_eq!(decided, Admission::Start);
        assert!(decided.obeyed());
        assert_eq!(decided.busy("s1"), None);
    }

    #[test]
    fn refusals_reply_as_before() {
        let forbidden = Refusal::Forbidden.reply("kill", "unsigned");
        assert_eq!(forbidden.error.code, ErrorCode::Forbidden);
        assert_eq!(
            forbidden.error.message,
            "kill refused: not signed by a broker (sender: unsigned)"
        );
        let stale = Refusal::StaleEpoch {
            epoch: 2,
            newest: 5,
        };
        let stale = stale.reply("run", "broker");
        assert_eq!(stale.error.code, ErrorCode::InvalidState);
        assert_eq!(
            stale.error.message,
            "stale broker epoch 2: the newest active broker has epoch 5"
        );
        assert_eq!(obey(true, 0, &fence(5)), Ok(()));
        assert_eq!(obey(false, 9, &fence(5)), Err(Refusal::Forbidden));
    }

    /// A subagent as the actor keeps it, and what the property checks.
    struct Sim {
        tasks: Tasks,
        fence: EpochFence,
        draining: bool,
        capacity: u32,
        /// Every id ever started, while no finished id was forgotten.
        started: Option<HashSet<String>>,
        finished: usize,
        remember: usize,
        seen: HashSet<&'static str>,
    }

    impl Sim {
        /// A random `run` decided, and acted on as the actor does; panics
        /// when a start breaks a rule.
        fn run(&mut self, rng: &mut Rng, at: &str) {
            let task_id = format!("t{}", rng.below(12));
            let instance_id = match rng.below(10) {
                0 => Some("instance-a"),
                1 => None,
                _ => Some(ME),
            };
            let newest = self.fence.newest();
            let epoch = match rng.below(10) {
                0 => 0,
                1 => newest.saturating_sub(1),
                2 => newest + 1,
                _ => newest,
            };
            let ask = Ask {
                task_id: &task_id,
                instance_id,
                epoch,
                from_broker: !rng.percent(5),
            };
            let view = View {
                instance_id: ME,
                fence: self.fence,
                draining: self.draining,
                capacity: self.capacity,
                tasks: &self.tasks,
            };
            let known = self.tasks.knows(&task_id);
            let decided = admit(&ask, &view);
            self.seen.insert(match decided {
                Admission::NotMine => "not mine",
                Admission::Refused(Refusal::Forbidden) => "forbidden",
                Admission::Refused(Refusal::StaleEpoch { .. }) => "stale",
                Admission::Duplicate { .. } => "duplicate",
                Admission::Draining => "draining",
                Admission::Full { .. } => "full",
                Admission::Start => "start",
            });
            if decided.obeyed() {
                self.fence.observe(epoch);
                assert!(
                    !known || matches!(decided, Admission::Duplicate { .. }),
                    "a known task not answered as a duplicate, {at}"
                );
            }
            if decided != Admission::Start {
                return;
            }
            assert!(!self.draining, "started while draining, {at}");
            assert!(!known, "started a known task, {at}");
            assert!(self.tasks.running_len() < self.capacity as usize, "{at}");
            if self.finished >= self.remember {
                self.started = None;
            }
            if let Some(started) = &mut self.started {
                assert!(started.insert(task_id.clone()), "started twice, {at}");
            }
            if rng.percent(10) {
                // the spawn failed: it ends at once
                self.end(&task_id);
            } else {
                let (kill, _) = oneshot::channel();
                self.tasks.start(task_id, 1, kill);
            }
        }

        fn end(&mut self, task_id: &str) {
            self.tasks.finish(result(task_id));
            self.finished += 1;
        }
    }

    /// A subagent driven the way the actor drives it, by random runs
    /// (some for another instance, unsigned or stale), spawn failures,
    /// task ends, result sends and acknowledgements, broker epochs and a
    /// drain: it never runs more than its capacity, never starts a task id
    /// twice (nor one it knows), and never starts one while draining.
    #[test]
    fn no_sequence_overfills_starts_twice_or_starts_while_draining() {
        let mut seen = HashSet::new();
        for seed in 0..2_000 {
            let mut rng = Rng::new(seed);
            // a tiny memory of finished ids shows that what is running or
            // unacknowledged stays known however old
            let remember = if rng.percent(50) { 10_000 } else { 2 };
            let mut sim = Sim {
                tasks: Tasks::remembering(remember),
                fence: EpochFence::default(),
                draining: false,
                capacity: 1 + rng.below(4) as u32,
                started: Some(HashSet::new()),
                finished: 0,
                remember,
                seen: HashSet::new(),
            };
            for step in 0..200 {
                let at = format!("seed {seed} step {step}");
                match rng.below(100) {
                    0..=44 => sim.run(&mut rng, &at),
                    45..=64 => {
                        let mut running = sim.tasks.running_ids();
                        running.sort();
                        if !running.is_empty() {
                            let task_id = &running[rng.below(running.len() as u64) as usize];
                            sim.end(task_id);
                        }
                    }
                    65..=89 => {
                        let unacked = sim.tasks.unacked_ids();
                        if !unacked.is_empty() {
                            let task_id = &unacked[rng.below(unacked.len() as u64) as usize];
                            if sim.tasks.send(task_id).is_some() {
                                if rng.percent(70) {
                                    sim.tasks.acked(task_id);
                                } else {
                                    sim.tasks.unsent(task_id);
                                }
                            }
                        }
                    }
                    90..=96 => {
                        let newer = sim.fence.newest() + rng.below(2);
                        sim.fence.observe(newer);
                    }
                    _ => sim.draining = true,
                }
                assert!(sim.tasks.running_len() <= sim.capacity as usize, "{at}");
            }
            seen.extend(sim.seen);
        }
        // the sequences reach every outcome
        assert_eq!(seen.len(), 7, "outcomes reached: {seen:?}");
    }
}
