//! The order state machine and the book of orders the broker holds.
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
//! broker). Losing sight of a subagent (silence, no responders, a closed
//! connection, a restart under its id) is suspicion, never proof.
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
//! A broker taking over rebuilds the book from the journal ([`Order::restore`],
//! [`OrderBook::restore`]). A task an earlier broker placed is `inherited`:
//! its fate is unknown until its subagent is heard from (`Reconciled`), or
//! until that subagent counts as lost.
//!
//! Size: over the ~500-line mark with the state machine's transition table
//! and the book beside it; issue 19 (one order store for job and workflow
//! orders) splits the book from the machine.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::{OrderCounts, OrderInfo, OrderState, ParentStep};

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

/// Ids by id order: what the book returns from its maps, so the same
/// inputs always give the same effects (the simulation replays a seed).
fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids
}

/// Every order the broker holds, the queue of those waiting for a subagent,
/// and a bounded memory of finished ones.
#[derive(Debug, Default)]
pub struct OrderBook {
    orders: HashMap<String, Order>,
    queue: VecDeque<String>,
    by_request: HashMap<String, String>,
    finished: VecDeque<String>,
    counts: OrderCounts,
    keep_finished: usize,
}

impl OrderBook {
    /// A book that remembers at most `keep_finished` final orders.
    pub fn new(keep_finished: usize) -> OrderBook {
        OrderBook {
            keep_finished,
            ..OrderBook::default()
        }
    }

    /// Adds a new order; it is not dispatched until [`OrderBook::enqueue`].
    pub fn insert(&mut self, order: Order) {
        if let Some(request_id) = &order.request_id {
            self.by_request.insert(request_id.clone(), order.id.clone());
        }
        self.counts.accepted += 1;
        self.orders.insert(order.id.clone(), order);
    }

    /// Takes over the orders read from the journal, into an empty book:
    /// waiting ones queue in acceptance order, placed ones stay on their
    /// subagents, and of the final ones only the newest `keep_finished` are
    /// remembered (all are counted). Idempotency keys of every order kept are
    /// known again.
    pub fn restore(&mut self, orders: impl IntoIterator<Item = Order>) {
        let (mut done, mut open): (Vec<Order>, Vec<Order>) =
            orders.into_iter().partition(|o| o.phase.is_final());
        let finished_at = |o: &Order| o.outcome.as_ref().map_or(0, |f| f.finished_at_ms);
        done.sort_by(|a, b| finished_at(a).cmp(&finished_at(b)).then(a.id.cmp(&b.id)));
        open.sort_by(|a, b| (a.accepted_at_ms, &a.id).cmp(&(b.accepted_at_ms, &b.id)));
        for order in done.into_iter().chain(open) {
            if self.orders.contains_key(&order.id) {
                continue;
            }
            count(&mut self.counts, order.phase, 1);
            if order.phase == Phase::Queued {
                self.queue.push_back(order.id.clone());
            }
            if order.phase.is_final() {
                self.finished.push_back(order.id.clone());
            }
            if let Some(request_id) = &order.request_id {
                self.by_request.insert(request_id.clone(), order.id.clone());
            }
            self.orders.insert(order.id.clone(), order);
            self.forget_oldest_finished();
        }
    }

    /// Subagents holding inherited tasks not yet reconciled.
    pub fn inherited_subagents(&self) -> std::collections::BTreeSet<String> {
        let inherited = self.orders.values().filter(|o| o.inherited);
        inherited.filter_map(|o| o.subagent_id.clone()).collect()
    }

    /// Inherited orders whose task is on `subagent_id`, not yet reconciled.
    pub fn inherited_on(&self, subagent_id: &str) -> Vec<&Order> {
        let on = self.orders.values().filter(|o| o.inherited);
        let mut on: Vec<&Order> = on
            .filter(|o| o.subagent_id.as_deref() == Some(subagent_id))
            .collect();
        // by id, so the same inputs always give the same effects
        on.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        on
    }

    /// Forgets an order that never became durable.
    pub fn remove(&mut self, order_id: &str) {
        if let Some(order) = self.orders.remove(order_id) {
            self.counts.accepted -= 1;
            if let Some(request_id) = order.request_id {
                self.by_request.remove(&request_id);
            }
        }
    }

    /// Replaces a held order with the end another broker stored for it
    /// (the journal's end is the order's, whatever this broker thought).
    pub fn adopt(&mut self, ended: Order) {
        let Some(held) = self.orders.get_mut(&ended.id) else {
            return;
        };
        if !ended.phase.is_final() {
            return;
        }
        let was_final = held.phase.is_final();
        count(&mut self.counts, held.phase, -1);
        count(&mut self.counts, ended.phase, 1);
        let id = ended.id.clone();
        *held = ended;
        if !was_final {
            self.finished.push_back(id);
            self.forget_oldest_finished();
        }
    }

    /// Makes a durable order eligible for dispatch.
    pub fn enqueue(&mut self, order_id: &str) {
        if let Some(order) = self.orders.get_mut(order_id) {
            order.durable = true;
        }
        self.queue.push_back(order_id.to_string());
    }

    /// The orders of `job` that have not reached a final state.
    pub fn active_of_job(&self, job: &str) -> Vec<String> {
        let active = self.orders.values();
        let active = active.filter(|o| o.job == job && !o.phase.is_final());
        sorted(active.map(|o| o.id.clone()).collect())
    }

    /// Every order held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Order> {
        self.orders.values()
    }

    pub fn get(&self, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id)
    }

    pub fn by_request_id(&self, request_id: &str) -> Option<&Order> {
        self.orders.get(self.by_request.get(request_id)?)
    }

    /// The first queued order still waiting, dropping entries that moved on.
    pub fn next_queued(&mut self) -> Option<&Order> {
        while let Some(id) = self.queue.front() {
            match self.orders.get(id) {
                Some(order) if order.phase == Phase::Queued => break,
                _ => {
                    self.queue.pop_front();
                }
            }
        }
        let id = self.queue.front()?;
        self.orders.get(id)
    }

    /// Number of entries in the dispatch queue (some may be stale).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Applies an event to one order, keeping the queue and counts in step.
    pub fn apply(&mut self, order_id: &str, event: OrderEvent) -> Result<Applied, ApplyError> {
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| ApplyError::UnknownOrder(order_id.to_string()))?;
        let applied = order.apply(event)?;
        if let Applied::Moved { from, to } = applied {
            count(&mut self.counts, from, -1);
            count(&mut self.counts, to, 1);
            if to == Phase::Queued {
                // back to the front: it has waited longest
                self.queue.push_front(order_id.to_string());
            } else if from == Phase::Queued
                && self.queue.front().map(String::as_str) == Some(order_id)
            {
                self.queue.pop_front();
            }
            if to.is_final() {
                self.finished.push_back(order_id.to_string());
                self.forget_oldest_finished();
            }
        }
        Ok(applied)
    }

    /// Orders whose current task is on `subagent_id`.
    pub fn on_subagent(&self, subagent_id: &str) -> Vec<String> {
        let on = self
            .orders
            .values()
            .filter(|o| {
                matches!(
                    o.phase,
                    Phase::Dispatching | Phase::Running | Phase::Orphaned
                ) && o.subagent_id.as_deref() == Some(subagent_id)
            })
            .map(|o| o.id.clone());
        sorted(on.collect())
    }

    /// Orphaned orders whose rerun time has come.
    pub fn orphans_due(&self, now_ms: u64) -> Vec<String> {
        let due = self
            .orders
            .values()
            .filter(|o| o.phase == Phase::Orphaned && o.rerun_at_ms.is_some_and(|t| t <= now_ms))
            .map(|o| o.id.clone());
        sorted(due.collect())
    }

    /// Queued orders, oldest first (entries that moved on are skipped).
    pub fn queued(&self) -> impl Iterator<Item = &Order> {
        self.queue
            .iter()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.phase == Phase::Queued)
    }

    /// Drops queue entries of orders that are no longer queued.
    pub fn compact_queue(&mut self) {
        let orders = &self.orders;
        let mut seen = std::collections::HashSet::new();
        self.queue.retain(|id| {
            orders.get(id).is_some_and(|o| o.phase == Phase::Queued) && seen.insert(id.clone())
        });
    }

    #[cfg(test)]
    fn get_mut_for_test(&mut self, order_id: &str) -> &mut Order {
        self.orders.get_mut(order_id).unwrap()
    }

    pub fn counts(&self) -> OrderCounts {
        self.counts.clone()
    }

    fn forget_oldest_finished(&mut self) {
        while self.finished.len() > self.keep_finished {
            if let Some(id) = self.finished.pop_front() {
                if let Some(order) = self.orders.remove(&id) {
                    if let Some(request_id) = order.request_id {
                        self.by_request.remove(&request_id);
                    }
                }
            }
        }
    }
}

fn count(counts: &mut OrderCounts, phase: Phase, delta: i64) {
    let slot = match phase.wire() {
        OrderState::Accepted => &mut counts.accepted,
        OrderState::Running
        | OrderState::Suspending
        | OrderState::Suspended
        | OrderState::Cancelling => &mut counts.running,
        OrderState::Succeeded => &mut counts.succeeded,
        OrderState::Failed => &mut counts.failed,
        OrderState::Cancelled => &mut counts.cancelled,
    };
    *slot = slot.saturating_add_signed(delta);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> Order {
        Order::new(id.into(), "job".into(), BTreeMap::new(), None, 1)
    }

    fn ok_outcome() -> Outcome {
        Outcome {
            exit_code: Some(0),
            finished_at_ms: 5,
            ..Outcome::default()
        }
    }

    fn dispatched(book: &mut OrderBook, id: &str, sub: &str) -> String {
        let task = book.get(id).unwrap().next_task_id();
        book.apply(
            id,
            OrderEvent::Dispatched {
                task_id: task.clone(),
                subagent_id: sub.into(),
                instance_id: format!("{sub}-i1"),
            },
        )
        .unwrap();
        task
    }

    #[test]
    fn happy_path_counts_and_queue() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        assert_eq!(book.next_queued().unwrap().id, "a");
        let task = dispatched(&mut book, "a", "s1");
        assert!(book.next_queued().is_none());
        book.apply(
            "a",
            OrderEvent::Started {
                task_id: task.clone(),
                at_ms: 2,
            },
        )
        .unwrap();
        assert_eq!(book.counts().running, 1);
        let r = book
            .apply(
                "a",
                OrderEvent::Finished {
                    task_id: task,
                    outcome: ok_outcome(),
                },
            )
            .unwrap();
        assert_eq!(
            r,
            Applied::Moved {
                from: Phase::Running,
                to: Phase::Succeeded
            }
        );
        let c = book.counts();
        assert_eq!((c.accepted, c.running, c.succeeded), (0, 0, 1));
        assert_eq!(book.get("a").unwrap().info().exit_code, Some(0));
    }

    #[test]
    fn result_before_start_confirmation_finishes_the_order() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let task = dispatched(&mut book, "a", "s1");
        let mut outcome = ok_outcome();
        outcome.exit_code = Some(3);
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: task.clone(),
                outcome,
            },
        )
        .unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
        // the late confirmation changes nothing
        let r = book
            .apply(
                "a",
                OrderEvent::Started {
                    task_id: task,
                    at_ms: 9,
                },
            )
            .unwrap();
        assert_eq!(r, Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
    }

    #[test]
    fn stale_and_repeated_results_change_nothing() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let first = dispatched(&mut book, "a", "s1");
        book.apply(
            "a",
            OrderEvent::DispatchFailed {
                task_id: first.clone(),
            },
        )
        .unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        let second = dispatched(&mut book, "a", "s2");
        assert_eq!(
            second, first,
            "a dispatch that never started is not an attempt"
        );
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: second.clone(),
                outcome: ok_outcome(),
            },
        )
        .unwrap();
        let again = book
            .apply(
                "a",
                OrderEvent::Finished {
                    task_id: second,
                    outcome: Outcome::default(),
                },
            )
            .unwrap();
        assert_eq!(again, Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        assert_eq!(book.counts().succeeded, 1);
    }

    #[test]
    fn lost_subagent_requeues_unconfirmed_and_fails_running() {
        let mut book = OrderBook::new(10);
        for id in ["a", "b"] {
            book.insert(order(id));
            book.enqueue(id);
        }
        dispatched(&mut book, "a", "s1");
        let tb = dispatched(&mut book, "b", "s1");
        book.apply(
            "b",
            OrderEvent::Started {
                task_id: tb,
                at_ms: 2,
            },
        )
        .unwrap();
        let mut on = book.on_subagent("s1");
        on.sort();
        assert_eq!(on, vec!["a", "b"]);
        book.get_mut_for_test("b").restartable = false;
        for id in on {
            book.apply(&id, lost("s1", true, 0)).unwrap();
        }
        assert_eq!(book.get("a").unwrap().phase, Phase::Queued);
        assert_eq!(
            book.get("a").unwrap().attempt,
            0,
            "never confirmed, and its process is gone: not an attempt"
        );
        assert_eq!(book.next_queued().unwrap().id, "a");
        let b = book.get("b").unwrap().info();
        assert_eq!(b.state, OrderState::Failed);
        assert!(b.reason.unwrap().contains("subagent lost"));
    }

    /// `dead`: its reaper certified the death of the process the tasks
    /// were placed on; otherwise it is only out of sight.
    fn lost(sub: &str, dead: bool, rerun_at_ms: u64) -> OrderEvent {
        if dead {
            OrderEvent::Certified {
                subagent_id: sub.into(),
                instance_id: format!("{sub}-i1"),
                at_ms: 3,
            }
        } else {
            OrderEvent::SubagentLost {
                subagent_id: sub.into(),
                at_ms: 3,
                rerun_at_ms,
            }
        }
    }

    fn running(book: &mut OrderBook, id: &str, sub: &str) -> String {
        book.insert(order(id));
        book.enqueue(id);
        let task = dispatched(book, id, sub);
        let started = OrderEvent::Started {
            task_id: task.clone(),
            at_ms: 2,
        };
        book.apply(id, started).unwrap();
        task
    }

    #[test]
    fn only_the_current_tasks_results_are_kept() {
        let mut book = OrderBook::new(10);
        let first = running(&mut book, "r", "sub-1");
        let lost = lost("sub-1", true, 3);
        book.apply("r", lost).unwrap();
        let second = dispatched(&mut book, "r", "sub-2");
        let with = |value: &str| Outcome {
            outputs: [("k".to_string(), value.to_string())].into(),
            ..ok_outcome()
        };
        let stale = OrderEvent::Finished {
            task_id: first,
            outcome: with("stale"),
        };
        assert!(matches!(book.apply("r", stale), Ok(Applied::Stale)));
        assert!(book.get("r").unwrap().info().outputs.is_empty());
        let done = OrderEvent::Finished {
            task_id: second,
            outcome: with("current"),
        };
        book.apply("r", done).unwrap();
        assert_eq!(book.get("r").unwrap().info().outputs["k"], "current");
    }

    #[test]
    fn a_skipped_order_ends_cancelled_with_its_reason_and_is_never_dispatched() {
        let mut book = OrderBook::new(10);
        running(&mut book, "r", "sub-1");
        book.insert(order("s"));
        book.enqueue("s");
        let mut active = book.active_of_job("job");
        active.sort();
        assert_eq!(active, ["r", "s"]);
        let skipped = OrderEvent::Skipped {
            reason: "skipped".into(),
            at_ms: 3,
        };
        book.apply("s", skipped.clone()).unwrap();
        let info = book.get("s").unwrap().info();
        assert_eq!(info.state, OrderState::Cancelled);
        assert_eq!(info.reason.as_deref(), Some("skipped"));
        assert_eq!(book.queued().count(), 0);
        assert_eq!(book.active_of_job("job"), ["r"]);
        // Only a waiting order can be skipped.
        assert!(book.apply("r", skipped).is_err());
    }

    #[test]
    fn cancel_ends_a_waiting_order_at_once_and_a_running_one_when_its_task_ends() {
        let mut book = OrderBook::new(10);
        book.insert(order("w"));
        book.enqueue("w");
        book.apply("w", OrderEvent::Cancel { at_ms: 5 }).unwrap();
        assert_eq!(book.get("w").unwrap().phase, Phase::Cancelled);
        assert!(
            book.next_queued().is_none(),
            "a cancelled order is never dispatched"
        );
        assert_eq!(
            book.apply("w", OrderEvent::Cancel { at_ms: 6 }).unwrap(),
            Applied::Stale,
            "cancel is idempotent"
        );
        assert_eq!(book.counts().cancelled, 1);

        let task = running(&mut book, "r", "s1");
        assert_eq!(
            book.apply("r", OrderEvent::Cancel { at_ms: 7 }).unwrap(),
            Applied::Stale
        );
        assert!(book.get("r").unwrap().cancel_requested);
        let done = OrderEvent::Finished {
            task_id: task,
            outcome: ok_outcome(),
        };
        book.apply("r", done).unwrap();
        assert_eq!(book.get("r").unwrap().phase, Phase::Cancelled);

        // a cancelled order lost with its subagent does not run again
        let task = running(&mut book, "l", "s1");
        book.apply("l", OrderEvent::Cancel { at_ms: 8 }).unwrap();
        book.apply("l", lost("s1", true, 0)).unwrap();
        assert_eq!(book.get("l").unwrap().phase, Phase::Cancelled);
        let _ = task;

        // a finished order cannot be cancelled
        let t = running(&mut book, "f", "s1");
        let done = OrderEvent::Finished {
            task_id: t,
            outcome: ok_outcome(),
        };
        book.apply("f", done).unwrap();
        assert!(book.apply("f", OrderEvent::Cancel { at_ms: 9 }).is_err());
    }

    #[test]
    fn a_non_restartable_task_lost_before_its_start_was_confirmed_fails() {
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.get_mut_for_test("a").restartable = false;
        book.enqueue("a");
        dispatched(&mut book, "a", "s1");
        book.apply("a", lost("s1", true, 0)).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
        assert!(book.next_queued().is_none());
    }

    #[test]
    fn a_dead_subagents_restartable_task_runs_again_as_the_next_attempt() {
        let mut book = OrderBook::new(10);
        let first = running(&mut book, "a", "s1");
        book.apply("a", lost("s1", true, 0)).unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        let second = dispatched(&mut book, "a", "s2");
        assert_ne!(first, second);
        assert_eq!(book.get("a").unwrap().attempt, 2);
        // the first copy's late result is recorded, never changes the order
        let late = OrderEvent::Finished {
            task_id: first,
            outcome: ok_outcome(),
        };
        assert_eq!(book.apply("a", late).unwrap(), Applied::Stale);
        assert_eq!(book.get("a").unwrap().phase, Phase::Dispatching);
    }

    #[test]
    fn an_unreachable_subagents_task_waits_for_its_orphan_deadline() {
        let mut book = OrderBook::new(10);
        let task = running(&mut book, "a", "s1");
        book.apply("a", lost("s1", false, 100)).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Orphaned);
        assert!(
            book.next_queued().is_none(),
            "not rerun while it may still run"
        );
        assert!(book.orphans_due(99).is_empty());
        assert_eq!(book.orphans_due(100), vec!["a"]);
        let early = OrderEvent::OrphanDeadline { at_ms: 99 };
        assert_eq!(book.apply("a", early).unwrap(), Applied::Stale);
        book.apply("a", OrderEvent::OrphanDeadline { at_ms: 100 })
            .unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        assert_eq!(book.get("a").unwrap().attempt, 1);
        let _ = task;
    }

    #[test]
    fn a_task_its_subagent_killed_runs_again_or_fails_as_lost() {
        let mut book = OrderBook::new(10);
        let ta = running(&mut book, "a", "s1");
        let tb = running(&mut book, "b", "s1");
        book.get_mut_for_test("b").restartable = false;
        for (id, task) in [("a", ta), ("b", tb)] {
            book.apply(id, lost("s1", false, 100)).unwrap();
            let event = OrderEvent::Abandoned {
                task_id: task,
                reason: "no broker heard for 10s".into(),
                at_ms: 50,
            };
            book.apply(id, event).unwrap();
        }
        assert_eq!(book.next_queued().unwrap().id, "a");
        assert_eq!(book.get("a").unwrap().attempt, 1);
        let b = book.get("b").unwrap().info();
        assert_eq!(b.state, OrderState::Failed);
        assert!(b.reason.unwrap().contains("subagent lost"));
    }

    #[test]
    fn an_orphaned_task_can_still_finish_or_be_found_running() {
        let mut book = OrderBook::new(10);
        let ta = running(&mut book, "a", "s1");
        let tb = running(&mut book, "b", "s1");
        book.apply("a", lost("s1", false, 100)).unwrap();
        book.apply("b", lost("s1", false, 100)).unwrap();
        // a's late result is accepted
        let late = OrderEvent::Finished {
            task_id: ta,
            outcome: ok_outcome(),
        };
        book.apply("a", late).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        // b's subagent is back and still runs it
        let back = OrderEvent::SubagentReturned {
            subagent_id: "s1".into(),
            running: vec![tb],
        };
        book.apply("b", back).unwrap();
        assert_eq!(book.get("b").unwrap().phase, Phase::Running);
        assert!(book.orphans_due(1000).is_empty());
    }

    #[test]
    fn finished_orders_are_forgotten_beyond_the_limit() {
        let mut book = OrderBook::new(2);
        for i in 0..5 {
            let id = format!("o{i}");
            let mut o = order(&id);
            o.request_id = Some(format!("r{i}"));
            book.insert(o);
            book.enqueue(&id);
            let t = dispatched(&mut book, &id, "s");
            book.apply(
                &id,
                OrderEvent::Finished {
                    task_id: t,
                    outcome: ok_outcome(),
                },
            )
            .unwrap();
        }
        assert!(book.get("o0").is_none() && book.by_request_id("r0").is_none());
        assert!(book.get("o4").is_some() && book.by_request_id("r4").is_some());
        assert_eq!(book.counts().succeeded, 5);
    }

    fn journaled(id: &str, state: OrderState, task: Option<(&str, &str)>) -> OrderInfo {
        let mut o = order(id);
        o.request_id = Some(format!("req-{id}"));
        let mut info = o.info();
        info.state = state;
        if let Some((task, sub)) = task {
            info.task_id = Some(task.into());
            info.subagent_id = Some(sub.into());
            info.subagent_instance_id = Some(format!("{sub}-i1"));
            info.attempt = 1;
        }
        info
    }

    fn reconciled(sub: &str, instance: &str, running: &[&str]) -> OrderEvent {
        OrderEvent::Reconciled {
            subagent_id: sub.into(),
            instance_id: instance.into(),
            running: running.iter().map(|t| t.to_string()).collect(),
            result_by_ms: 500,
            doubt_until_ms: 900,
            at_ms: 100,
        }
    }

    #[test]
    fn a_journaled_order_restores_to_the_same_info() {
        let mut book = OrderBook::new(10);
        for id in ["q", "d", "f"] {
            book.insert(order(id));
            book.enqueue(id);
        }
        dispatched(&mut book, "d", "s1");
        running(&mut book, "r2", "s1");
        let t = dispatched(&mut book, "f", "s1");
        book.apply("f", OrderEvent::Cancel { at_ms: 3 }).unwrap();
        let outputs: BTreeMap<String, String> = [("rows".into(), "42".into())].into();
        let done = OrderEvent::Finished {
            task_id: t,
            outcome: Outcome {
                outputs: outputs.clone(),
                ..ok_outcome()
            },
        };
        book.apply("f", done).unwrap();
        assert_eq!(book.get("f").unwrap().info().outputs, outputs);
        for id in ["q", "d", "r2", "f"] {
            let info = book.get(id).unwrap().info();
            let restored = Order::restore(&info, true);
            assert_eq!(restored.info(), info, "{id}");
            assert!(restored.durable);
        }
    }

    #[test]
    fn restore_queues_waiting_orders_in_order_and_keeps_placed_ones_on_their_subagent() {
        let mut infos = [
            journaled("late", OrderState::Accepted, None),
            journaled("early", OrderState::Accepted, None),
            journaled("sent", OrderState::Accepted, Some(("sent-1", "s1"))),
            journaled("runs", OrderState::Running, Some(("runs-1", "s2"))),
        ];
        infos[0].accepted_at_ms = 20;
        infos[1].accepted_at_ms = 10;
        let mut book = OrderBook::new(10);
        book.restore(infos.iter().map(|i| Order::restore(i, true)));
        let queued: Vec<&str> = book.queued().map(|o| o.id.as_str()).collect();
        assert_eq!(queued, ["early", "late"]);
        assert_eq!(book.get("sent").unwrap().phase, Phase::Dispatching);
        assert_eq!(book.get("runs").unwrap().phase, Phase::Running);
        assert!(book.get("runs").unwrap().confirmed);
        assert_eq!(
            book.inherited_subagents().into_iter().collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        assert_eq!(book.inherited_on("s1")[0].id, "sent");
        let c = book.counts();
        assert_eq!((c.accepted, c.running), (3, 1));
        assert_eq!(book.by_request_id("req-runs").unwrap().id, "runs");
        // the next attempt of a requeued order gets a new task id
        assert_eq!(book.get("runs").unwrap().next_task_id(), "runs-2");
    }

    #[test]
    fn restore_remembers_only_the_newest_final_orders_but_counts_all() {
        let infos: Vec<OrderInfo> = (0..5)
            .map(|i| {
                let mut info = journaled(&format!("o{i}"), OrderState::Succeeded, None);
                info.finished_at_ms = Some(100 - i);
                info.exit_code = Some(0);
                info
            })
            .collect();
        let mut book = OrderBook::new(2);
        book.restore(infos.iter().map(|i| Order::restore(i, true)));
        // finished last: o0 and o1
        assert!(book.get("o0").is_some() && book.by_request_id("req-o1").is_some());
        assert!(book.get("o4").is_none() && book.by_request_id("req-o4").is_none());
        assert_eq!(book.counts().succeeded, 5);
        assert_eq!(book.get("o0").unwrap().info(), infos[0]);
        assert!(book.inherited_subagents().is_empty());
        assert!(book.queued().next().is_none());
    }

    #[test]
    fn reconciling_an_inherited_task_confirms_resends_awaits_or_buries_it() {
        let mut book = OrderBook::new(10);
        let infos = [
            journaled("listed", OrderState::Accepted, Some(("listed-1", "s1"))),
            journaled("unsent", OrderState::Accepted, Some(("unsent-1", "s1"))),
            journaled("ended", OrderState::Running, Some(("ended-1", "s1"))),
            journaled("moved", OrderState::Running, Some(("moved-1", "s2"))),
        ];
        book.restore(infos.iter().map(|i| Order::restore(i, true)));
        for id in ["listed", "unsent", "ended"] {
            book.apply(id, reconciled("s1", "s1-i1", &["listed-1"]))
                .unwrap();
        }
        let phase = |book: &OrderBook, id: &str| book.get(id).unwrap().phase;
        assert_eq!(phase(&book, "listed"), Phase::Running);
        assert_eq!(
            phase(&book, "unsent"),
            Phase::Dispatching,
            "sent again, same task"
        );
        assert_eq!(phase(&book, "ended"), Phase::Orphaned);
        assert_eq!(book.get("ended").unwrap().rerun_at_ms, Some(500));
        assert!(book.inherited_on("s1").is_empty());
        // reconciled once: a later heartbeat changes nothing
        let again = book.apply("unsent", reconciled("s1", "s1-i1", &[]));
        assert_eq!(again.unwrap(), Applied::Stale);
        // the ended task's result is still accepted
        let late = OrderEvent::Finished {
            task_id: "ended-1".into(),
            outcome: ok_outcome(),
        };
        book.apply("ended", late).unwrap();
        assert_eq!(phase(&book, "ended"), Phase::Succeeded);
        // s2 restarted since: the old process is out of sight, not proven
        // dead, so its task is in doubt until its orphan deadline...
        book.apply("moved", reconciled("s2", "s2-i2", &[])).unwrap();
        assert_eq!(phase(&book, "moved"), Phase::Orphaned);
        assert_eq!(book.get("moved").unwrap().rerun_at_ms, Some(900));
        assert!(book.next_queued().is_none(), "never run again on suspicion");
        // ...or until that process's certificate, which proves it
        let other = OrderEvent::Certified {
            subagent_id: "s2".into(),
            instance_id: "s2-i2".into(),
            at_ms: 200,
        };
        assert_eq!(
            book.apply("moved", other).unwrap(),
            Applied::Stale,
            "another process's death proves nothing"
        );
        book.apply("moved", lost("s2", true, 0)).unwrap();
        assert_eq!(phase(&book, "moved"), Phase::Queued);
        assert_eq!(book.get("moved").unwrap().next_task_id(), "moved-2");
        assert_eq!(book.next_queued().unwrap().id, "moved");
    }

    #[test]
    fn an_ended_inherited_task_without_result_runs_again_only_after_its_deadline() {
        let mut book = OrderBook::new(10);
        let info = journaled("a", OrderState::Running, Some(("a-1", "s1")));
        book.restore([Order::restore(&info, true)]);
        // a result of another task is stale
        let other = OrderEvent::Finished {
            task_id: "a-0".into(),
            outcome: ok_outcome(),
        };
        assert_eq!(book.apply("a", other).unwrap(), Applied::Stale);
        book.apply("a", reconciled("s1", "s1-i1", &[])).unwrap();
        assert!(book.orphans_due(499).is_empty());
        assert!(book.next_queued().is_none());
        book.apply("a", OrderEvent::OrphanDeadline { at_ms: 500 })
            .unwrap();
        assert_eq!(book.next_queued().unwrap().id, "a");
        assert_eq!(book.get("a").unwrap().attempt, 1, "it started: counted");
    }

    #[test]
    fn an_inherited_task_of_a_silent_subagent_waits_and_can_still_be_found_running() {
        let mut book = OrderBook::new(10);
        let infos = [
            journaled("a", OrderState::Running, Some(("a-1", "s1"))),
            journaled("b", OrderState::Accepted, Some(("b-1", "s1"))),
        ];
        book.restore(infos.iter().map(|i| Order::restore(i, false)));
        for id in ["a", "b"] {
            book.apply(id, lost("s1", false, 900)).unwrap();
            assert_eq!(book.get(id).unwrap().phase, Phase::Orphaned);
        }
        assert_eq!(
            book.inherited_on("s1").len(),
            2,
            "reconciled when heard from"
        );
        // heard from late: a still runs; b is not there and waits at most
        // for its result
        book.apply("a", reconciled("s1", "s1-i1", &["a-1"]))
            .unwrap();
        book.apply("b", reconciled("s1", "s1-i1", &["a-1"]))
            .unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Running);
        assert_eq!(book.get("b").unwrap().rerun_at_ms, Some(500));
        // not restartable: never run twice
        book.apply("b", OrderEvent::OrphanDeadline { at_ms: 500 })
            .unwrap();
        assert_eq!(book.get("b").unwrap().phase, Phase::Failed);
        assert!(book.next_queued().is_none());
    }

    #[test]
    fn a_cancel_requested_before_the_takeover_still_ends_the_order_cancelled() {
        let mut info = journaled("a", OrderState::Running, Some(("a-1", "s1")));
        info.cancel_requested = true;
        let mut book = OrderBook::new(10);
        book.restore([Order::restore(&info, true)]);
        book.apply("a", reconciled("s1", "s1-i2", &[])).unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Orphaned);
        book.apply("a", OrderEvent::OrphanDeadline { at_ms: 900 })
            .unwrap();
        assert_eq!(book.get("a").unwrap().phase, Phase::Cancelled);
        assert!(book.next_queued().is_none());
    }

    #[test]
    fn no_event_sequence_leaves_a_final_order() {
        // every event applied to a final order is stale or refused
        let events = [
            OrderEvent::Dispatched {
                task_id: "x-1".into(),
                subagent_id: "s".into(),
                instance_id: "s-i1".into(),
            },
            OrderEvent::DispatchFailed {
                task_id: "a-1".into(),
            },
            OrderEvent::Started {
                task_id: "a-1".into(),
                at_ms: 1,
            },
            OrderEvent::Finished {
                task_id: "a-1".into(),
                outcome: Outcome::default(),
            },
            lost("s1", true, 0),
            lost("s1", false, 0),
            OrderEvent::OrphanDeadline { at_ms: 9 },
            OrderEvent::SubagentReturned {
                subagent_id: "s1".into(),
                running: vec!["a-1".into()],
            },
            reconciled("s1", "s1-i2", &[]),
            reconciled("s1", "s1-i1", &["a-1"]),
        ];
        let mut book = OrderBook::new(10);
        book.insert(order("a"));
        book.enqueue("a");
        let t = dispatched(&mut book, "a", "s1");
        book.apply(
            "a",
            OrderEvent::Finished {
                task_id: t,
                outcome: ok_outcome(),
            },
        )
        .unwrap();
        for e in events {
            let _ = book.apply("a", e);
            assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
        }
    }

    /// Property: whatever mix of suspicion a running task's subagent draws
    /// (silence, a return without the task, a restart under its id seen at
    /// a takeover, certificates of other processes, deadlines not yet due),
    /// the task is never run again nor failed: only proof moves it.
    #[test]
    fn suspicion_alone_never_runs_a_task_again() {
        for seed in 0..2_000u64 {
            let mut rng = crate::testing::Rng::new(seed);
            let mut book = OrderBook::new(10);
            let restartable = rng.percent(50);
            let mut o = order("a");
            o.restartable = restartable;
            book.insert(o);
            book.enqueue("a");
            let task = dispatched(&mut book, "a", "s1");
            if rng.percent(70) {
                let started = OrderEvent::Started {
                    task_id: task.clone(),
                    at_ms: 1,
                };
                book.apply("a", started).unwrap();
            }
            for step in 0..rng.below(12) {
                let now = 10 + step;
                let rerun_at = book.get("a").unwrap().rerun_at_ms;
                let event = match rng.below(6) {
                    0 => lost("s1", false, now + 100 + rng.below(100)),
                    1 => OrderEvent::SubagentReturned {
                        subagent_id: "s1".into(),
                        running: if rng.percent(50) {
                            vec![task.clone()]
                        } else {
                            vec![]
                        },
                    },
                    2 => OrderEvent::Certified {
                        subagent_id: rng.pick(&["s1", "s2"]).into(),
                        instance_id: "s1-i2".into(),
                        at_ms: now,
                    },
                    3 => OrderEvent::Certified {
                        subagent_id: "s2".into(),
                        instance_id: "s1-i1".into(),
                        at_ms: now,
                    },
                    4 => OrderEvent::OrphanDeadline {
                        at_ms: rerun_at.map_or(now, |t| t.saturating_sub(1)),
                    },
                    _ => OrderEvent::DispatchFailed {
                        task_id: "a-9".into(),
                    },
                };
                let _ = book.apply("a", event.clone());
                let a = book.get("a").unwrap();
                assert!(
                    matches!(
                        a.phase,
                        Phase::Dispatching | Phase::Running | Phase::Orphaned
                    ),
                    "seed {seed}: {event:?} moved the order to {:?}",
                    a.phase
                );
                assert_eq!(a.task_id.as_deref(), Some(task.as_str()), "seed {seed}");
                assert_eq!(a.attempt, 1, "seed {seed}");
            }
            // proof of the right process's death releases it
            book.apply("a", lost("s1", true, 0)).unwrap();
            let a = book.get("a").unwrap();
            if restartable {
                assert_eq!(a.phase, Phase::Queued, "seed {seed}");
            } else {
                assert_eq!(a.phase, Phase::Failed, "seed {seed}");
            }
        }
    }
}
