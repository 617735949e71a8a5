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
//! The phases, outcomes and events are in `order/events.rs`, the
//! transitions ([`Order::apply`]) in `order/transitions.rs`; the journal
//! record (`info`, `restore`) is in `record.rs`, the history of tasks in
//! `attempts.rs`.

mod events;
mod transitions;

use std::collections::BTreeMap;

use super::attempts::Attempts;
use crate::protocol::{ParentStep, RetryPolicy, SpreadMember, SpreadPolicy};
pub use events::{Applied, ApplyError, OrderEvent, Outcome, Phase};

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
}
