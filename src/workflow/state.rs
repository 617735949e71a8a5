//! The state machine of one workflow order: [`WorkflowRun::apply`] takes an
//! [`Event`] (a command, a step's progress, a retry timer) with the time, and
//! returns the [`Effect`]s to carry out, or a [`TransitionError`] that leaves
//! the run unchanged.
//!
//! The commands (suspend, resume, cancel) are carried out in
//! `state/commands.rs`; a step's end, what is dispatched, the order
//! settled once quiet, and a step's parameters in `state/steps.rs`. The
//! tests are in `workflow/tests.rs`.
//!
//! # Order states
//!
//! `pending` (created, not started), `running`, `suspending` and
//! `cancelling` (in between: a command waits for running steps), `suspended`
//! and `failed` (held: nothing runs; resumable; `failed` until cancelled),
//! `succeeded` and `cancelled` (terminal: never change again). *Quiet* means
//! no step is running. Held and terminal orders are always quiet.
//!
//! Commands (`-` = no change, no effect; `error` = [`TransitionError`]):
//!
//! ```text
//!  state       Start     Suspend{kill}        Resume{from,force}             Cancel{kill}
//!  pending     running   suspended            plain: -; from/force: error    cancelled
//!  running     -         suspending (+kill)   plain: -; from/force: error    cancelling (+kill)
//!  suspending  -         - (+kill)            plain: running;                cancelling (+kill)
//!                                             from/force: error
//!  suspended   -         -                    running (from, force applied)  cancelled
//!  failed      -         error                running (from, force applied)  cancelled
//!  cancelling  -         error                error                          - (+kill)
//!  succeeded   -         error                error                          error
//!  cancelled   -         error                error                          -
//! ```
//!
//! A plain resume of a `failed` order runs its failed steps again (see
//! resume below). The errors' reasons: `running` takes no `from`/`force`
//! (suspend first), `suspending` neither (wait until suspended), a `failed`
//! order is already held, a `cancelling` one ends cancelled. On the wire
//! the states are [`OrderState`](crate::protocol::OrderState)s (`pending`
//! is `accepted`), and an error is `invalid_state` with the reason, the
//! order unchanged.
//!
//! `(+kill)`: with `kill`, a [`Effect::Kill`] for each running step not yet
//! being killed (a repeated command kills nothing twice; cancel takes over a
//! suspend's kill). Then, whenever quiet, without any command:
//!
//! ```text
//!  running, suspending  every step done             -> succeeded
//!  running, suspending  a step failed and stops it  -> failed
//!  suspending           otherwise                   -> suspended
//!  cancelling                                       -> cancelled
//! ```
//!
//! A running order dispatches every ready step at once (fan-out) unless a
//! step has failed and stops it; then it dispatches nothing more and fails
//! once its other running steps end. Nothing else ever dispatches.
//!
//! # Step states
//!
//! ```text
//!  pending  -> running    dispatched: order running and not stopped by a
//!                         failure, every dependency done, no retry waiting
//!  running  -> succeeded  finished ok (even while being killed)
//!           -> cancelled  finished not ok, killed by cancel
//!           -> pending    finished not ok, killed by suspend: runs again
//!           -> pending    failed, `retry` with retries left, order not
//!                         cancelling: waits until `now + backoff` (a
//!                         zero backoff: dispatched again at once)
//!           -> failed     failed otherwise
//!  pending  -> cancelled  the order becomes cancelled
//! ```
//!
//! A dependency is *done* when it succeeded, was skipped, or failed with
//! `on_failure = continue`. A failed step *stops* its order otherwise.
//!
//! Resume of a held order: with `from = S`, S and every step after it
//! (transitively) become pending again (S runs again even if it succeeded),
//! and the steps S waits for (transitively) that are pending or failed become
//! `skipped`. Then every failed step that stops the order becomes
//! `succeeded` (`force_succeeded`, marked `forced`) or pending again, with a
//! fresh retry budget. Retries still waiting are announced again.
//!
//! Step events: `StepStarted` and `StepFinished` name the attempt the
//! [`Effect::Dispatch`] gave. For an earlier attempt, or a step no longer
//! running (a duplicate), they change nothing; an unknown step or an attempt
//! never dispatched is an error. `RetryDue` dispatches the retries due at
//! `now` when the order is running; early or stale timers change nothing.

mod commands;
mod steps;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::definition::{validate_workflow, WorkflowError};
use super::{Effect, Event, RunState, StepRun, StepState, TransitionError, WorkflowSpec};

/// One order through a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    workflow: String,
    params: BTreeMap<String, String>,
    state: RunState,
    steps: Vec<StepRun>,
}

impl WorkflowRun {
    /// A pending order through `spec` with the order's parameters.
    pub fn new(
        spec: &WorkflowSpec,
        params: BTreeMap<String, String>,
    ) -> Result<WorkflowRun, WorkflowError> {
        validate_workflow(spec, &|_| true)?;
        let steps = spec
            .steps
            .iter()
            .zip(spec.dependencies())
            .map(|(s, deps)| StepRun {
                name: s.name.clone(),
                job: s.job.clone(),
                params: s.params.clone(),
                on_failure: s.on_failure,
                deps,
                ..StepRun::default()
            })
            .collect();
        Ok(WorkflowRun {
            workflow: spec.name.clone(),
            params,
            state: RunState::Pending,
            steps,
        })
    }

    /// Rebuilds an order from the parts its journal record keeps.
    pub fn restore(
        workflow: String,
        params: BTreeMap<String, String>,
        state: RunState,
        steps: Vec<StepRun>,
    ) -> WorkflowRun {
        WorkflowRun {
            workflow,
            params,
            state,
            steps,
        }
    }

    /// Notes that `attempt` of `step` was placed, by a broker that crashed
    /// before this run recorded it: the step's next dispatch takes the next
    /// number (a step attempt has one order id, which that one holds).
    /// Nothing changes for a running step or an attempt already counted.
    pub fn note_attempt(&mut self, step: &str, attempt: u32) {
        if let Some(s) = self.steps.iter_mut().find(|s| s.name == step) {
            if s.state != StepState::Running && s.attempt < attempt {
                s.attempt = attempt;
            }
        }
    }

    /// The parameters a running step's current attempt was dispatched with
    /// (computed again: the steps it waits for have not changed since).
    pub fn params_of(&self, step: &str) -> Option<BTreeMap<String, String>> {
        let i = self.steps.iter().position(|s| s.name == step)?;
        Some(self.params_for(i))
    }

    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    pub fn steps(&self) -> &[StepRun] {
        &self.steps
    }

    pub fn step(&self, name: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The earliest retry waiting, for a caller that keeps one timer.
    pub fn next_retry_at(&self) -> Option<u64> {
        self.steps.iter().filter_map(|s| s.retry_at_ms).min()
    }

    /// Applies one event at `now_ms`; see the module documentation.
    pub fn apply(&mut self, event: Event, now_ms: u64) -> Result<Vec<Effect>, TransitionError> {
        let mut fx = Vec::new();
        match event {
            Event::Start => {
                if self.state == RunState::Pending {
                    self.state = RunState::Running;
                }
            }
            Event::StepStarted {
                step,
                attempt,
                task,
            } => {
                if let Some(i) = self.current(&step, attempt)? {
                    let s = &mut self.steps[i];
                    if s.task.is_none() {
                        s.task = Some(task);
                        s.started_at_ms = Some(now_ms);
                    }
                }
                return Ok(fx);
            }
            Event::StepFinished {
                step,
                attempt,
                succeeded,
                exit_code,
                outputs,
            } => match self.current(&step, attempt)? {
                Some(i) => self.finish(i, succeeded, exit_code, outputs, now_ms, &mut fx),
                None => return Ok(fx),
            },
            Event::Suspend { kill } => self.suspend(kill, &mut fx)?,
            Event::Resume {
                from,
                force_succeeded,
            } => self.resume(from.as_deref(), force_succeeded, now_ms, &mut fx)?,
            Event::Cancel { kill } => self.cancel(kill, &mut fx)?,
            Event::RetryDue { step } => {
                self.index(&step)?;
            }
        }
        self.advance(now_ms, &mut fx);
        Ok(fx)
    }

    fn index(&self, step: &str) -> Result<usize, TransitionError> {
        self.steps
            .iter()
            .position(|s| s.name == step)
            .ok_or_else(|| TransitionError::UnknownStep {
                workflow: self.workflow.clone(),
                step: step.to_string(),
                steps: self.steps.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// The step, if `attempt` is its running attempt; None for an earlier
    /// attempt or one that has already finished.
    fn current(&self, step: &str, attempt: u32) -> Result<Option<usize>, TransitionError> {
        let i = self.index(step)?;
        let s = &self.steps[i];
        if attempt == 0 || attempt > s.attempt {
            return Err(TransitionError::UnknownAttempt {
                step: step.to_string(),
                attempt,
                dispatched: s.attempt,
            });
        }
        Ok((attempt == s.attempt && s.state == StepState::Running).then_some(i))
    }
}
