//! What a subagent knows of its tasks: those running (with their process
//! group and the handle that kills them), the results the broker has not
//! acknowledged yet, and the ids of the tasks finished lately. Plain data:
//! no clock, no IO; the actor spawns, sends and kills.
//!
//! A task id in any of the three is known ([`Tasks::knows`]): a repeated
//! `run` for it is a duplicate and never starts a second copy. Finished ids
//! are remembered up to a bound ([`REMEMBER_FINISHED`], 10,000), oldest
//! forgotten first; a result still unacknowledged (in flight or not) is
//! known however old. [`Tasks::start`] and [`Tasks::finish`] move a task
//! along; [`Tasks::send`], [`Tasks::unsent`] and [`Tasks::acked`] follow its
//! result to the broker.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tokio::sync::oneshot;

use crate::protocol::TaskResult;

/// Finished task ids remembered to recognise a repeated dispatch.
pub const REMEMBER_FINISHED: usize = 10_000;

/// A task whose process runs.
#[derive(Debug)]
pub struct Running {
    /// Its process (and process group) id.
    pub pid: u32,
    /// Sends the reason to kill the task; taken once used.
    kill: Option<oneshot::Sender<String>>,
}

impl Running {
    /// The handle that kills the task, unless it was used already.
    pub fn take_kill(&mut self) -> Option<oneshot::Sender<String>> {
        self.kill.take()
    }
}

/// A result waiting for the broker's acknowledgement.
#[derive(Debug)]
struct Unacked {
    result: TaskResult,
    /// A request carrying it is under way: no second one until it fails.
    in_flight: bool,
}

/// The subagent's task table.
#[derive(Debug)]
pub struct Tasks {
    running: HashMap<String, Running>,
    unacked: BTreeMap<String, Unacked>,
    /// Finished ids, oldest first, and the same ids for lookups.
    finished: VecDeque<String>,
    finished_set: HashSet<String>,
    remember: usize,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::remembering(REMEMBER_FINISHED)
    }
}

impl Tasks {
    /// A table that remembers the last `remember` finished ids.
    pub fn remembering(remember: usize) -> Self {
        Tasks {
            running: HashMap::new(),
            unacked: BTreeMap::new(),
            finished: VecDeque::new(),
            finished_set: HashSet::new(),
            remember,
        }
    }

    /// Running, awaiting acknowledgement, or among the last finished.
    pub fn knows(&self, task_id: &str) -> bool {
        self.running.contains_key(task_id)
            || self.unacked.contains_key(task_id)
            || self.finished_set.contains(task_id)
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// The running tasks' ids, for heartbeats and pongs.
    pub fn running_ids(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// The running task's process id, if it runs and has one.
    pub fn pid(&self, task_id: &str) -> Option<u32> {
        self.running.get(task_id).map(|r| r.pid)
    }

    /// The running task, to kill it.
    pub fn running_mut(&mut self, task_id: &str) -> Option<&mut Running> {
        self.running.get_mut(task_id)
    }

    /// Every running task, to kill them all.
    pub fn all_running_mut(&mut self) -> impl Iterator<Item = (&String, &mut Running)> {
        self.running.iter_mut()
    }

    /// Records a task whose process was spawned. The admission decision
    /// starts only unknown ids; a known one here is a bug.
    pub fn start(&mut self, task_id: String, pid: u32, kill: oneshot::Sender<String>) {
        debug_assert!(!self.knows(&task_id), "task {task_id} started twice");
        let running = Running {
            pid,
            kill: Some(kill),
        };
        self.running.insert(task_id, running);
    }

    /// A task ended (or never started): it stops running, its id is
    /// remembered, and its result waits for acknowledgement.
    pub fn finish(&mut self, result: TaskResult) {
        let task_id = result.task_id.clone();
        self.running.remove(&task_id);
        self.remember_finished(&task_id);
        let unacked = Unacked {
            result,
            in_flight: false,
        };
        self.unacked.insert(task_id, unacked);
    }

    fn remember_finished(&mut self, task_id: &str) {
        if self.finished_set.insert(task_id.to_string()) {
            self.finished.push_back(task_id.to_string());
        }
        while self.finished.len() > self.remember {
            if let Some(old) = self.finished.pop_front() {
                self.finished_set.remove(&old);
            }
        }
    }

    /// The ids of the results not yet acknowledged, in order.
    pub fn unacked_ids(&self) -> Vec<String> {
        self.unacked.keys().cloned().collect()
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// The result to send now, marked in flight; none when it is
    /// acknowledged already or a request carrying it is under way.
    pub fn send(&mut self, task_id: &str) -> Option<TaskResult> {
        let entry = self.unacked.get_mut(task_id)?;
        if entry.in_flight {
            return None;
        }
        entry.in_flight = true;
        Some(entry.result.clone())
    }

    /// Sending the result failed: it may be sent again.
    pub fn unsent(&mut self, task_id: &str) {
        if let Some(entry) = self.unacked.get_mut(task_id) {
            entry.in_flight = false;
        }
    }

    /// The broker has the result: it is dropped (the id stays remembered
    /// among the finished). Returns it, unless it was dropped before.
    pub fn acked(&mut self, task_id: &str) -> Option<TaskResult> {
        self.unacked.remove(task_id).map(|u| u.result)
    }

    /// Nothing runs and every result is acknowledged.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.unacked.is_empty()
    }
}

#[cfg(test)]
pub(super) fn result(task_id: &str) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        order_id: format!("o-{task_id}"),
        job: "job".into(),
        attempt: 1,
        subagent_id: "s".into(),
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        error: None,
        abandoned: None,
        outputs: Default::default(),
        pid: None,
        started_at_ms: 0,
        finished_at_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(tasks: &mut Tasks, task_id: &str, pid: u32) -> oneshot::Receiver<String> {
        let (kill, killed) = oneshot::channel();
        tasks.start(task_id.into(), pid, kill);
        killed
    }

    #[test]
    fn a_task_is_known_while_running_unacknowledged_and_finished() {
        let mut t = Tasks::default();
        assert!(!t.knows("a"));
        let _killed = start(&mut t, "a", 7);
        assert!(t.knows("a"));
        assert_eq!((t.running_len(), t.pid("a")), (1, Some(7)));
        assert_eq!(t.running_ids(), vec!["a".to_string()]);
        t.finish(result("a"));
        assert!(t.knows("a"));
        assert_eq!((t.running_len(), t.pid("a"), t.unacked_len()), (0, None, 1));
        assert!(!t.is_idle());
        assert_eq!(t.acked("a").map(|r| r.task_id), Some("a".into()));
        assert!(t.knows("a"), "still remembered among the finished");
        assert!(t.is_idle());
        assert_eq!(t.acked("a"), None);
    }

    #[test]
    fn a_task_that_never_started_is_finished_and_known() {
        let mut t = Tasks::default();
        t.finish(result("a"));
        assert!(t.knows("a"));
        assert_eq!(t.unacked_ids(), vec!["a".to_string()]);
    }

    #[test]
    fn a_result_is_sent_once_at_a_time_until_acknowledged() {
        let mut t = Tasks::default();
        t.finish(result("a"));
        assert_eq!(t.send("a").map(|r| r.task_id), Some("a".into()));
        assert_eq!(t.send("a"), None, "in flight");
        t.unsent("a");
        assert!(t.send("a").is_some(), "may go again after a failure");
        t.acked("a");
        assert_eq!(t.send("a"), None);
        assert_eq!(t.send("unknown"), None);
    }

    #[test]
    fn the_kill_handle_is_used_once() {
        let mut t = Tasks::default();
        let mut killed = start(&mut t, "a", 7);
        let kill = t.running_mut("a").and_then(Running::take_kill);
        kill.expect("a kill handle").send("why".into()).unwrap();
        assert_eq!(killed.try_recv().as_deref(), Ok("why"));
        assert!(t.running_mut("a").and_then(Running::take_kill).is_none());
        assert!(t.running_mut("b").is_none());
        let all: Vec<_> = t
            .all_running_mut()
            .map(|(id, r)| (id.clone(), r.pid))
            .collect();
        assert_eq!(all, vec![("a".to_string(), 7)]);
    }

    #[test]
    fn finished_ids_are_forgotten_oldest_first_but_not_unacknowledged_results() {
        let mut t = Tasks::remembering(2);
        for id in ["a", "b", "c"] {
            t.finish(result(id));
        }
        t.acked("b");
        t.acked("c");
        assert!(t.knows("a"), "unacknowledged: known however old");
        assert!(t.knows("b") && t.knows("c"));
        t.finish(result("d"));
        assert!(!t.knows("b"), "the oldest acknowledged id is forgotten");
        assert!(t.knows("a") && t.knows("c") && t.knows("d"));
    }
}
