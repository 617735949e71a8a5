//! The state machine of one job order.
//!
//! Pure: no clock reads (times come in with events), no IO. The broker's
//! core (`core/`) feeds it events and acts on the transitions it returns.
//!
//! ```text
//!            Dispatched            Started
//!  Queued ──────────────▶ Dispatching ──────▶ Running ──────┐
//!    ▲  ◀──────────────────────┘  │              │          │ SubagentLost
//!    │   DispatchFailed,          │ Finished     │ Finished │ (suspicion only)
//!    │   Certified                ▼              ▼          ▼
//!    │                   Succeeded | Failed  ◀────────── Orphaned
//!    │                                 Finished            │  │ SubagentReturned
//!    └──────────── OrphanDeadline, or Certified ───────────┘  └─▶ Running
//!                  when restartable (else Failed)
//! ```
//!
//! A task is run again only once its old copy is proven dead: its
//! subagent's reaper certified that the process it was placed on died and
//! that its process group is gone (`Certified`), the subagent itself
//! reported it ended or killed it (`Finished`, `Abandoned`), or the
//! subagent's own orphan timeout plus kill grace has passed since it was
//! last heard (`OrphanDeadline`: it kills its tasks itself when it hears no
//! broker). Losing sight of a subagent (silence, late heartbeats, no
//! responders, a closed connection, a dispatch nobody received, another
//! process registering under its id) is suspicion, never proof: it makes
//! the subagent `suspect` (no new tasks) or `lost`, and nothing more.
//! Results of an older attempt are recorded and change nothing.
//!
//! The phases and the events that move them:
//!
//! | from | event | to |
//! |---|---|---|
//! | Queued | Dispatched (task id, subagent, its instance id; stored before the task is sent) | Dispatching |
//! | Queued | Refused (job no longer deployed) | Failed |
//! | Queued | Skipped (concurrency = forbid, a run is active; or a submit without a request id whose create JetStream did not confirm) | Cancelled, with the reason |
//! | Dispatching | Started (subagent accepted; stored in the background) | Running |
//! | Dispatching | DispatchFailed (the first send found no responders, or the subagent refused it) | Queued, attempt not counted (the same task id comes again) |
//! | Dispatching | a send again (after no answer) finds no responders | as SubagentLost: Orphaned until proven dead (it may run the task, cut off from NATS) |
//! | Dispatching, Running, Orphaned | Certified (the death certificate of the process it was placed on; not a survivor) | Queued, restartable (unconfirmed: not an attempt, the process that might know its task id is gone) or Failed "subagent lost" (not restartable) |
//! | Dispatching, Running | SubagentLost (silent past the subagent timeout, or restarted under its id) | Orphaned until the subagent's orphan timeout and kill grace have passed since it was last heard |
//! | Orphaned | OrphanDeadline | as Certified, but the attempt counts even unconfirmed: the process may live on and would answer its task id as a duplicate |
//! | Orphaned | SubagentReturned (still runs the task) | Running |
//! | Dispatching, Running, Orphaned | Finished (result of the current task) | Succeeded (exit 0) or Failed; Cancelled when a cancel was requested; Retrying when it failed (non-zero exit, signal, timeout) and its job's `retry` policy has retries left |
//! | Retrying | RetryDue (its `retry_at_ms` has come) | Queued: the next task is a new attempt, placed anew |
//! | Retrying | Cancel | Cancelled, at once |
//! | Dispatching, Running, Orphaned | Abandoned (its subagent killed it: orphan or drain timeout, or a cancel with kill) | as Certified |
//! | Queued | Cancel | Cancelled |
//! | Dispatching, Running, Orphaned, Spread | Cancel | unchanged, cancel requested: it ends Cancelled and never runs again |
//! | Queued, of a spread job | spread over its members (`spread.rs`) | Spread |
//! | Spread | a member's order moved (as stored) | Spread; once every member's order ended, Succeeded or Failed by the job's `spread.succeed`, Cancelled when a cancel was requested |
//! | Dispatching, Running, Orphaned, inherited | Reconciled: its subagent runs the task | Running |
//! | Dispatching, inherited | Reconciled: it does not run it (never confirmed) | Dispatching: the same task id is sent again (a subagent that has it answers `duplicate`) |
//! | Running, Orphaned, inherited | Reconciled: it does not run it (it started, so it ended) | Orphaned: its result is awaited for 3 × (`subagent.result_retry` + its request timeout), then as OrphanDeadline |
//! | Dispatching, Running, Orphaned, inherited | Reconciled: another process of that subagent id | Orphaned until now + `subagent.orphan_timeout` + kill grace + margin (or its certificate) |
//! | Dispatching, Running, inherited | SubagentLost, not known dead: not heard from within `broker.subagent_timeout` of the takeover | Orphaned until now + `subagent.orphan_timeout` + kill grace + margin; still reconciled if heard from |
//! | any | an event about another task, or a repeat | unchanged (Stale) |
//!
//! Final phases never change. On the wire Queued, Dispatching and Retrying
//! are all `accepted` (Retrying with `retry_at_ms`, and `reason` saying
//! which retry after what: "retry 2 of 3 after exit 1"). A retry's wait is
//! `jobs::retry::next_retry`'s, from the broker's time of the result.
//!
//! Every task placed is kept in the order's history (`attempts.rs`): where
//! it ran, how it ended (a lost task says whether it was known to run, was
//! never confirmed started, or had ended unreported), and why the order
//! ran again after it. A placement that surely never reached its subagent
//! (DispatchFailed) is no task and leaves none.
//!
//! A broker taking over rebuilds the book from the journal ([`Order::restore`],
//! [`super::OrderBook::restore`]): `accepted` without a task is Queued (in
//! acceptance order), or Retrying with its `retry_at_ms`; `accepted` with a task is Dispatching and `running` is
//! Running, both `inherited` (placed by an earlier broker, fate unknown)
//! until their subagent's first heartbeat or probe answer brings
//! `Reconciled`, or until that subagent counts as lost; a final order keeps
//! its phase (the newest `broker.keep_finished` stay in memory; all are counted).
//!
//! Size: over the ~500-line mark with the transition table above and the
//! one `apply` that carries it out, which read best side by side; the
//! journal record (`info`, `restore`) is in `record.rs`, the history of
//! tasks in `attempts.rs`.

use std::collections::BTreeMap;

use super::attempts::{self, Attempts};
use crate::jobs::retry;
use crate::protocol::{OrderState, ParentStep, RetryPolicy, SpreadMember, SpreadPolicy};

/// Where an order is, with the in-between step the wire state hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Durable, waiting for a subagent with room.
    Queued,
    /// Handed to a subagent that has not yet confirmed.
    Dispatching,
    Running,
    /// Its task failed and its job's `retry` policy runs it again at
    /// `retry_at_ms` (stored before anything waits on it).
    Retrying,
    /// Its subagent is unreachable but may still run the task: waiting for a
    /// late result, the subagent's return, or its orphan timeout.
    Orphaned,
    /// A spread order placed on its members: each runs its task as an order
    /// of its own (`spread.rs`); it ends once they all have.
    Spread,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn wire(self) -> OrderState {
        match self {
            Phase::Queued | Phase::Dispatching | Phase::Retrying => OrderState::Accepted,
            Phase::Running | Phase::Orphaned | Phase::Spread => OrderState::Running,
            Phase::Succeeded => OrderState::Succeeded,
            Phase::Failed => OrderState::Failed,
            Phase::Cancelled => OrderState::Cancelled,
        }
    }

    pub fn is_final(self) -> bool {
        self.wire().is_final()
    }
}

/// How a task ended, as far as the order cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why it failed when the exit code does not tell.
    pub error: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: u64,
    /// The task's `::baton-result` values.
    pub outputs: BTreeMap<String, String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.timed_out
    }

    /// A failure a job's `retry` policy runs again: a non-zero exit, a
    /// signal, a timeout (not a task that could not run at all).
    pub fn retryable(&self) -> bool {
        use crate::protocol::AttemptOutcome::*;
        matches!(attempts::classify(self), Exited | Signalled | TimedOut)
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Dispatched {
        task_id: String,
        subagent_id: String,
        /// The subagent's process the task is sent to.
        instance_id: String,
    },
    DispatchFailed {
        task_id: String,
    },
    Started {
        task_id: String,
        at_ms: u64,
    },
    Finished {
        task_id: String,
        outcome: Outcome,
        /// When the broker took the result (a retry waits from then).
        at_ms: u64,
    },
    /// A retry's due time came: the order waits for a subagent again.
    RetryDue {
        at_ms: u64,
    },
    /// The task's subagent is out of sight (silent, or another process took
    /// its id): it may still run the task until `rerun_at_ms`, when its own
    /// orphan timeout and kill grace have passed.
    SubagentLost {
        subagent_id: String,
        at_ms: u64,
        rerun_at_ms: u64,
    },
    /// The reaper of subagent process `instance_id` certified its death and
    /// that the task's process group is gone: proof, so the task runs again
    /// at once (or fails, when not restartable).
    Certified {
        subagent_id: String,
        instance_id: String,
        at_ms: u64,
    },
    /// An unreachable subagent is back and still runs `running`.
    SubagentReturned {
        subagent_id: String,
        running: Vec<String>,
    },
    /// A broker that took over hears for the first time from the subagent
    /// an inherited task was placed on: it is process `instance_id` and runs
    /// `running`. A started task it no longer runs has ended; its result,
    /// repeated until acknowledged, is awaited until `result_by_ms`. A task
    /// placed on an earlier process of that id is in doubt until
    /// `doubt_until_ms` (that process's orphan timeout), unless certified.
    Reconciled {
        subagent_id: String,
        instance_id: String,
        running: Vec<String>,
        result_by_ms: u64,
        doubt_until_ms: u64,
        at_ms: u64,
    },
    /// The orphan timeout of an unreachable subagent has passed: its task is dead.
    OrphanDeadline {
        at_ms: u64,
    },
    /// The subagent killed the task itself (orphan or drain timeout): it is
    /// dead, and did not fail on its own.
    Abandoned {
        task_id: String,
        reason: String,
        at_ms: u64,
    },
    /// An operator cancels the order: a waiting one at once; a running one
    /// ends cancelled when its task ends (the broker kills it with `kill`).
    Cancel {
        at_ms: u64,
    },
    /// A trigger's order is not run: its job's concurrency policy forbids
    /// a second run while one is active. It ends cancelled, with `reason`.
    Skipped {
        reason: String,
        at_ms: u64,
    },
    /// A queued order cannot run at all (its job was removed).
    Refused {
        reason: String,
        at_ms: u64,
    },
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order moved from one phase to another.
    Moved { from: Phase, to: Phase },
    /// The event was about another (older) task or is repeated: recorded, no change.
    Stale,
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("no order {0}")]
    UnknownOrder(String),
    #[error("order {order} is {phase:?}; {event} does not apply")]
    NotAllowed {
        order: String,
        phase: Phase,
        event: &'static str,
    },
}

/// One order and everything the broker knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub job: String,
    pub params: BTreeMap<String, String>,
    pub request_id: Option<String>,
    /// The trigger slot this order fires, when a Scheduler submitted it.
    pub slot_ms: Option<u64>,
    pub phase: Phase,
    /// Whether a task lost with its subagent runs again elsewhere.
    pub restartable: bool,
    /// Tasks started so far; the current task is attempt number `attempt`.
    pub attempt: u32,
    /// The current task was confirmed started by its subagent.
    pub confirmed: bool,
    /// When an orphaned task is known dead.
    pub rerun_at_ms: Option<u64>,
    /// Cancelled while its task runs: it ends cancelled, and never runs again.
    pub cancel_requested: bool,
    /// Stored in JetStream (and so acknowledged to its submitter).
    pub durable: bool,
    pub task_id: Option<String>,
    pub subagent_id: Option<String>,
    /// The subagent process the current task was sent to, when known.
    pub subagent_instance_id: Option<String>,
    /// Placed by an earlier broker: the task's fate is unknown until its
    /// subagent is heard from (`Reconciled`).
    pub inherited: bool,
    pub accepted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
    /// It runs a step of this workflow order.
    pub parent: Option<ParentStep>,
    /// The verified identity that submitted it.
    pub submitted_by: Option<String>,
    /// Its job's retry policy (as deployed when it was accepted or restored).
    pub retry: Option<RetryPolicy>,
    /// Retries used so far.
    pub retries: u32,
    /// While `Retrying`: when it runs again.
    pub retry_at_ms: Option<u64>,
    /// While `Retrying`: which retry, after what.
    pub retry_reason: Option<String>,
    /// Its current task started, then ended without a result (found by a
    /// broker taking over).
    pub unreported: bool,
    /// Its tasks, oldest first.
    pub attempts: Attempts,
    /// Its job spreads over its cluster's members (as deployed when it was
    /// accepted): the policy it is placed and ends under.
    pub spread: Option<SpreadPolicy>,
    /// A spread order's members, once placed.
    pub members: Vec<SpreadMember>,
    /// A member's order: the spread order it runs a task of.
    pub member_of: Option<String>,
    /// A member's order: the only subagent it runs on.
    pub pin: Option<String>,
}

impl Order {
    pub fn new(
        id: String,
        job: String,
        params: BTreeMap<String, String>,
        request_id: Option<String>,
        accepted_at_ms: u64,
    ) -> Order {
        Order {
            id,
            job,
            params,
            request_id,
            slot_ms: None,
            phase: Phase::Queued,
            restartable: true,
            attempt: 0,
            confirmed: false,
            rerun_at_ms: None,
            cancel_requested: false,
            durable: false,
            task_id: None,
            subagent_id: None,
            subagent_instance_id: None,
            inherited: false,
            accepted_at_ms,
            started_at_ms: None,
            outcome: None,
            parent: None,
            submitted_by: None,
            retry: None,
            retries: 0,
            retry_at_ms: None,
            retry_reason: None,
            unreported: false,
            attempts: Attempts::default(),
            spread: None,
            members: Vec::new(),
            member_of: None,
            pin: None,
        }
    }

    /// The order with its job's retry policy.
    pub fn with_retry(mut self, retry: Option<RetryPolicy>) -> Order {
        self.retry = retry;
        self
    }

    /// The id the next task of this order gets.
    pub fn next_task_id(&self) -> String {
        format!("{}-{}", self.id, self.attempt + 1)
    }

    /// Applies one event (the state machine).
    pub fn apply(&mut self, event: OrderEvent) -> Result<Applied, ApplyError> {
        let from = self.phase;
        let current = |task_id: &str| self.task_id.as_deref() == Some(task_id);
        let not_allowed = |event: &'static str| ApplyError::NotAllowed {
            order: self.id.clone(),
            phase: from,
            event,
        };
        match event {
            OrderEvent::Dispatched {
                task_id,
                subagent_id,
                instance_id,
            } => {
                if from != Phase::Queued {
                    return Err(not_allowed("dispatched"));
                }
                self.attempt += 1;
                self.attempts.placed(self.attempt, &task_id, &subagent_id);
                self.unreported = false;
                self.task_id = Some(task_id);
                self.subagent_id = Some(subagent_id);
                self.subagent_instance_id = Some(instance_id);
                self.confirmed = false;
                self.phase = Phase::Dispatching;
            }
            OrderEvent::DispatchFailed { task_id } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.attempts.unplaced(&task_id);
                self.back_to_queue(false);
            }
            OrderEvent::Started { task_id, at_ms } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.started_at_ms = Some(at_ms);
                self.attempts.started(&task_id, at_ms);
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Finished {
                task_id,
                outcome,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                // the subagent's own start time is the accurate one
                if outcome.started_at_ms.is_some() {
                    self.started_at_ms = outcome.started_at_ms;
                }
                self.attempts
                    .ended(&task_id, &outcome, self.cancel_requested);
                self.rerun_at_ms = None;
                let again = (!self.cancel_requested && outcome.retryable())
                    .then(|| retry::next_retry(self.retry.as_ref(), &self.id, self.retries, at_ms))
                    .flatten();
                if let Some(r) = again {
                    let why = format!(
                        "retry {} of {} after {}",
                        r.n,
                        r.of,
                        attempts::failure(&outcome)
                    );
                    self.attempts.rerun(why.clone());
                    self.back_to_queue(true);
                    self.retries = r.n;
                    self.retry_at_ms = Some(r.at_ms);
                    self.retry_reason = Some(why);
                    self.phase = Phase::Retrying;
                } else {
                    self.phase = if self.cancel_requested {
                        Phase::Cancelled
                    } else if outcome.succeeded() {
                        Phase::Succeeded
                    } else {
                        Phase::Failed
                    };
                    self.outcome = Some(outcome);
                }
            }
            OrderEvent::RetryDue { at_ms } => {
                if from != Phase::Retrying || self.retry_at_ms.is_some_and(|t| t > at_ms) {
                    return Ok(Applied::Stale);
                }
                self.back_to_queue(true);
            }
            OrderEvent::SubagentLost {
                subagent_id,
                at_ms: _,
                rerun_at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running);
                if !live || self.subagent_id.as_deref() != Some(subagent_id.as_str()) {
                    return Ok(Applied::Stale);
                }
                self.phase = Phase::Orphaned;
                self.rerun_at_ms = Some(rerun_at_ms);
            }
            OrderEvent::Certified {
                subagent_id,
                instance_id,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str())
                    && self.subagent_instance_id.as_deref() == Some(instance_id.as_str());
                if !live || !ours {
                    return Ok(Applied::Stale);
                }
                let why = "it died; its reaper killed the task and certified it";
                // the process is gone, and its memory of task ids with it:
                // an unconfirmed start is not an attempt
                let counted = self.confirmed;
                self.task_is_dead(&subagent_id, at_ms, why, counted);
            }
            OrderEvent::SubagentReturned {
                subagent_id,
                running,
            } => {
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str());
                let runs = self.task_id.as_ref().is_some_and(|t| running.contains(t));
                if from != Phase::Orphaned || !ours || !runs {
                    return Ok(Applied::Stale);
                }
                self.rerun_at_ms = None;
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Abandoned {
                task_id,
                reason,
                at_ms,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                tracing::debug!(order = %self.id, %reason, "task abandoned by its subagent");
                // it ran: a restartable order runs again, another one fails
                self.confirmed = true;
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                self.task_is_dead(&subagent_id, at_ms, "it killed the task itself", true);
            }
            OrderEvent::Reconciled {
                subagent_id,
                instance_id,
                running,
                result_by_ms,
                doubt_until_ms,
                at_ms: _,
            } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                let ours = self.subagent_id.as_deref() == Some(subagent_id.as_str());
                if !self.inherited || !live || !ours {
                    return Ok(Applied::Stale);
                }
                self.inherited = false;
                let restarted = self
                    .subagent_instance_id
                    .as_ref()
                    .is_some_and(|i| *i != instance_id);
                let runs = self.task_id.as_ref().is_some_and(|t| running.contains(t));
                if restarted {
                    // the process it was sent to is out of sight; it may live
                    // on, and the task with it, until its orphan timeout
                    self.phase = Phase::Orphaned;
                    let by = self
                        .rerun_at_ms
                        .map_or(doubt_until_ms, |t| t.min(doubt_until_ms));
                    self.rerun_at_ms = Some(by);
                } else if runs {
                    self.rerun_at_ms = None;
                    self.confirmed = true;
                    self.phase = Phase::Running;
                } else if from == Phase::Dispatching {
                    // never confirmed: sent again with the same task id, which
                    // the subagent starts only if it never had it
                    self.subagent_instance_id = Some(instance_id);
                } else {
                    // it started and no longer runs: it ended, its result is on its way
                    self.unreported = true;
                    self.phase = Phase::Orphaned;
                    let by = self
                        .rerun_at_ms
                        .map_or(result_by_ms, |t| t.min(result_by_ms));
                    self.rerun_at_ms = Some(by);
                }
            }
            OrderEvent::OrphanDeadline { at_ms } => {
                if from != Phase::Orphaned || self.rerun_at_ms.is_some_and(|t| t > at_ms) {
                    return Ok(Applied::Stale);
                }
                let subagent_id = self.subagent_id.clone().unwrap_or_default();
                let why = "out of sight past its orphan timeout, which killed the task";
                // the process may live on and answer this task id as a
                // duplicate: the attempt counts, even unconfirmed
                self.task_is_dead(&subagent_id, at_ms, why, true);
            }
            OrderEvent::Cancel { at_ms } => match from {
                Phase::Queued | Phase::Retrying => self.cancelled(at_ms),
                Phase::Dispatching | Phase::Running | Phase::Orphaned | Phase::Spread => {
                    if self.cancel_requested {
                        return Ok(Applied::Stale);
                    }
                    self.cancel_requested = true;
                    return Ok(Applied::Stale);
                }
                Phase::Cancelled => return Ok(Applied::Stale),
                Phase::Succeeded | Phase::Failed => return Err(not_allowed("cancel")),
            },
            OrderEvent::Skipped { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("skipped"));
                }
                self.phase = Phase::Cancelled;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
            OrderEvent::Refused { reason, at_ms } => {
                if from != Phase::Queued {
                    return Err(not_allowed("refused"));
                }
                self.phase = Phase::Failed;
                self.outcome = Some(Outcome {
                    error: Some(reason),
                    finished_at_ms: at_ms,
                    ..Outcome::default()
                });
            }
        }
        if !matches!(
            self.phase,
            Phase::Dispatching | Phase::Running | Phase::Orphaned
        ) {
            self.inherited = false;
        }
        Ok(Applied::Moved {
            from,
            to: self.phase,
        })
    }

    /// The current task is known dead: it runs again when restartable (an
    /// unconfirmed one counts as an attempt unless its process is gone). A non-restartable
    /// one fails even when unconfirmed: it may have started before its
    /// subagent died, and it must never run twice.
    fn task_is_dead(&mut self, subagent_id: &str, at_ms: u64, why: &str, counted: bool) {
        if let Some(task_id) = self.task_id.clone() {
            let known = if self.unreported {
                "it had ended, and its result never came"
            } else if self.confirmed {
                "it was running"
            } else {
                "it was never confirmed started"
            };
            let reason = format!("{subagent_id} ({why}); {known}");
            self.attempts.lost(&task_id, at_ms, reason);
        }
        if self.cancel_requested {
            self.cancelled(at_ms);
        } else if self.restartable {
            // `counted`: the next attempt gets a new task id (a subagent
            // process that may still live answers one it has seen as a
            // duplicate)
            self.attempts.rerun(format!("{subagent_id} lost"));
            self.back_to_queue(counted);
        } else {
            self.phase = Phase::Failed;
            self.rerun_at_ms = None;
            self.outcome = Some(Outcome {
                error: Some(format!(
                    "subagent lost: {subagent_id} ({why}; the job is not restartable)"
                )),
                started_at_ms: self.started_at_ms,
                finished_at_ms: at_ms,
                ..Outcome::default()
            });
        }
    }

    fn cancelled(&mut self, at_ms: u64) {
        if let Some(task_id) = &self.task_id {
            self.attempts.cancelled(task_id, at_ms);
        }
        self.phase = Phase::Cancelled;
        self.cancel_requested = true;
        self.rerun_at_ms = None;
        self.retry_at_ms = None;
        let outcome = self.outcome.take().unwrap_or(Outcome {
            started_at_ms: self.started_at_ms,
            finished_at_ms: at_ms,
            ..Outcome::default()
        });
        self.outcome = Some(Outcome {
            error: outcome.error.or_else(|| Some("cancelled".into())),
            ..outcome
        });
    }

    /// Back to the queue; `counted` keeps the attempt (the task had started).
    fn back_to_queue(&mut self, counted: bool) {
        if !counted {
            self.attempt -= 1;
        }
        self.task_id = None;
        self.subagent_id = None;
        self.subagent_instance_id = None;
        self.confirmed = false;
        self.unreported = false;
        self.rerun_at_ms = None;
        self.retry_at_ms = None;
        self.retry_reason = None;
        self.phase = Phase::Queued;
    }
}
