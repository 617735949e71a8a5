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
//! | Dispatching, Running, Orphaned | Finished (result of the current task) | Succeeded (exit 0) or Failed; Cancelled when a cancel was requested |
//! | Dispatching, Running, Orphaned | Abandoned (its subagent killed it: orphan or drain timeout, or a cancel with kill) | as Certified |
//! | Queued | Cancel | Cancelled |
//! | Dispatching, Running, Orphaned | Cancel | unchanged, cancel requested: it ends Cancelled and never runs again |
//! | Dispatching, Running, Orphaned, inherited | Reconciled: its subagent runs the task | Running |
//! | Dispatching, inherited | Reconciled: it does not run it (never confirmed) | Dispatching: the same task id is sent again (a subagent that has it answers `duplicate`) |
//! | Running, Orphaned, inherited | Reconciled: it does not run it (it started, so it ended) | Orphaned: its result is awaited for 3 × (`subagent.result_retry` + its request timeout), then as OrphanDeadline |
//! | Dispatching, Running, Orphaned, inherited | Reconciled: another process of that subagent id | Orphaned until now + `subagent.orphan_timeout` + kill grace + margin (or its certificate) |
//! | Dispatching, Running, inherited | SubagentLost, not known dead: not heard from within `broker.subagent_timeout` of the takeover | Orphaned until now + `subagent.orphan_timeout` + kill grace + margin; still reconciled if heard from |
//! | any | an event about another task, or a repeat | unchanged (Stale) |
//!
//! Final phases never change. On the wire Queued and Dispatching are both
//! `accepted`.
//!
//! A broker taking over rebuilds the book from the journal ([`Order::restore`],
//! [`super::OrderBook::restore`]): `accepted` without a task is Queued (in
//! acceptance order); `accepted` with a task is Dispatching and `running` is
//! Running, both `inherited` (placed by an earlier broker, fate unknown)
//! until their subagent's first heartbeat or probe answer brings
//! `Reconciled`, or until that subagent counts as lost; a final order keeps
//! its phase (the newest `broker.keep_finished` stay in memory; all are counted).
//!
//! Size: over the ~500-line mark with the transition table above and the
//! one `apply` that carries it out, which read best side by side.

use std::collections::BTreeMap;

use crate::protocol::{OrderInfo, OrderState, ParentStep};

/// Where an order is, with the in-between step the wire state hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Durable, waiting for a subagent with room.
    Queued,
    /// Handed to a subagent that has not yet confirmed.
    Dispatching,
    Running,
    /// Its subagent is unreachable but may still run the task: waiting for a
    /// late result, the subagent's return, or its orphan timeout.
    Orphaned,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn wire(self) -> OrderState {
        match self {
            Phase::Queued | Phase::Dispatching => OrderState::Accepted,
            Phase::Running | Phase::Orphaned => OrderState::Running,
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
        }
    }

    /// An order as the journal stored it, for a broker taking over:
    /// `accepted` without a task waits in the queue; `accepted` with a task
    /// (dispatched, never confirmed) and `running` keep their task on its
    /// subagent, `inherited`; final orders stay as they ended. `restartable`
    /// comes from the order's job.
    pub fn restore(info: &OrderInfo, restartable: bool) -> Order {
        let mut order = Order::new(
            info.order_id.clone(),
            info.job.clone(),
            info.params.clone(),
            info.request_id.clone(),
            info.accepted_at_ms,
        );
        order.slot_ms = info.slot_ms;
        order.parent.clone_from(&info.parent);
        order.restartable = restartable;
        order.attempt = info.attempt;
        order.cancel_requested = info.cancel_requested;
        order.durable = true;
        order.started_at_ms = info.started_at_ms;
        order.task_id = info.task_id.clone();
        order.subagent_id = info.subagent_id.clone();
        order.subagent_instance_id = info.subagent_instance_id.clone();
        let placed = order.task_id.is_some() && order.subagent_id.is_some();
        order.phase = match info.state {
            OrderState::Accepted if placed => Phase::Dispatching,
            OrderState::Running if placed => {
                order.confirmed = true;
                Phase::Running
            }
            // a task never placed (a running one without a task is never
            // journaled) waits for a subagent; the workflow-only states
            // never describe a plain order
            OrderState::Accepted
            | OrderState::Running
            | OrderState::Suspending
            | OrderState::Suspended
            | OrderState::Cancelling => {
                order.task_id = None;
                order.subagent_id = None;
                order.subagent_instance_id = None;
                Phase::Queued
            }
            OrderState::Succeeded => Phase::Succeeded,
            OrderState::Failed => Phase::Failed,
            OrderState::Cancelled => Phase::Cancelled,
        };
        order.inherited = matches!(order.phase, Phase::Dispatching | Phase::Running);
        if order.phase.is_final() {
            order.outcome = Some(Outcome {
                exit_code: info.exit_code,
                signal: info.signal,
                timed_out: info.timed_out,
                error: info.reason.clone(),
                started_at_ms: info.started_at_ms,
                finished_at_ms: info.finished_at_ms.unwrap_or(info.accepted_at_ms),
                outputs: info.outputs.clone(),
            });
        }
        order
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
                self.back_to_queue(false);
            }
            OrderEvent::Started { task_id, at_ms } => {
                if from != Phase::Dispatching || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                self.started_at_ms = Some(at_ms);
                self.confirmed = true;
                self.phase = Phase::Running;
            }
            OrderEvent::Finished { task_id, outcome } => {
                let live = matches!(from, Phase::Dispatching | Phase::Running | Phase::Orphaned);
                if !live || !current(&task_id) {
                    return Ok(Applied::Stale);
                }
                // the subagent's own start time is the accurate one
                if outcome.started_at_ms.is_some() {
                    self.started_at_ms = outcome.started_at_ms;
                }
                self.phase = if self.cancel_requested {
                    Phase::Cancelled
                } else if outcome.succeeded() {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                self.rerun_at_ms = None;
                self.outcome = Some(outcome);
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
                Phase::Queued => self.cancelled(at_ms),
                Phase::Dispatching | Phase::Running | Phase::Orphaned => {
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
        if self.cancel_requested {
            self.cancelled(at_ms);
        } else if self.restartable {
            // `counted`: the next attempt gets a new task id (a subagent
            // process that may still live answers one it has seen as a
            // duplicate)
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
        self.phase = Phase::Cancelled;
        self.cancel_requested = true;
        self.rerun_at_ms = None;
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
        self.rerun_at_ms = None;
        self.phase = Phase::Queued;
    }

    /// The order as clients and the journal see it.
    pub fn info(&self) -> OrderInfo {
        let outcome = self.outcome.clone().unwrap_or_default();
        OrderInfo {
            params: self.params.clone(),
            attempt: self.attempt,
            subagent_id: self.subagent_id.clone(),
            task_id: self.task_id.clone(),
            subagent_instance_id: self.subagent_instance_id.clone(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            reason: outcome.error.or_else(|| {
                (self.phase == Phase::Orphaned).then(|| {
                    "task in doubt: waiting for its result or its subagent's orphan timeout"
                        .to_string()
                })
            }),
            request_id: self.request_id.clone(),
            slot_ms: self.slot_ms,
            cancel_requested: self.cancel_requested,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.outcome.as_ref().map(|o| o.finished_at_ms),
            outputs: outcome.outputs,
            parent: self.parent.clone(),
            ..OrderInfo::new(
                self.id.clone(),
                self.job.clone(),
                self.phase.wire(),
                self.accepted_at_ms,
            )
        }
    }
}
