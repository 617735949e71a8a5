//! The state machine of one workflow order: [`WorkflowRun::apply`] takes an
//! [`Event`] (a command, a step's progress, a retry timer) with the time, and
//! returns the [`Effect`]s to carry out, or a [`TransitionError`] that leaves
//! the run unchanged.
//!
//! # Order states
//!
//! `pending` (created, not started), `running`, `suspending` and
//! `cancelling` (in between: a command waits for running steps), `suspended`
//! and `failed` (held: nothing runs; resumable; `failed` until cancelled),
//! `succeeded` and `cancelled` (terminal: never change again). *Quiet* means
//! no step is running. Held and terminal orders are always quiet.
//!
//! Size: over the ~500-line mark because the whole state machine (every
//! state's answer to every event) reads best in one place; its tests are
//! in `workflow/tests.rs`.
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::definition::{output_prefix, validate_workflow, WorkflowError};
use super::{
    Effect, Event, KillCause, OnFailure, RunState, StepRun, StepState, TransitionError,
    WorkflowSpec,
};

fn not_allowed(state: RunState, command: &'static str, hint: &'static str) -> TransitionError {
    TransitionError::NotAllowed {
        state,
        command,
        hint,
    }
}

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

    fn finish(
        &mut self,
        i: usize,
        succeeded: bool,
        exit_code: Option<i32>,
        outputs: BTreeMap<String, String>,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let cancelling = self.state == RunState::Cancelling;
        let s = &mut self.steps[i];
        s.exit_code = exit_code;
        s.outputs = outputs;
        s.finished_at_ms = Some(now_ms);
        s.state = match (succeeded, s.kill.take(), s.on_failure) {
            (true, _, _) => StepState::Succeeded,
            (false, Some(KillCause::Cancel), _) => StepState::Cancelled,
            (false, Some(KillCause::Suspend), _) => StepState::Pending,
            (false, None, OnFailure::Retry { times, backoff })
                if s.retries < times && !cancelling =>
            {
                s.retries += 1;
                if !backoff.is_zero() {
                    let at_ms = now_ms.saturating_add(backoff.as_millis() as u64);
                    s.retry_at_ms = Some(at_ms);
                    fx.push(Effect::ScheduleRetry {
                        step: s.name.clone(),
                        at_ms,
                    });
                }
                StepState::Pending
            }
            (false, None, _) => StepState::Failed,
        };
    }

    fn suspend(&mut self, kill: bool, fx: &mut Vec<Effect>) -> Result<(), TransitionError> {
        match self.state {
            RunState::Pending => {
                self.state = RunState::Suspended;
                fx.push(Effect::Suspended);
            }
            RunState::Running | RunState::Suspending => {
                self.state = RunState::Suspending;
                if kill {
                    self.kill_running(KillCause::Suspend, fx);
                }
            }
            RunState::Suspended => {}
            RunState::Failed => {
                return Err(not_allowed(
                    self.state,
                    "suspended",
                    ": it is held already; resume or cancel it",
                ))
            }
            RunState::Cancelling | RunState::Succeeded | RunState::Cancelled => {
                return Err(not_allowed(self.state, "suspended", ""))
            }
        }
        Ok(())
    }

    fn cancel(&mut self, kill: bool, fx: &mut Vec<Effect>) -> Result<(), TransitionError> {
        match self.state {
            RunState::Succeeded => return Err(not_allowed(self.state, "cancelled", "")),
            RunState::Cancelled => {}
            _ => {
                self.state = RunState::Cancelling;
                if kill {
                    self.kill_running(KillCause::Cancel, fx);
                }
            }
        }
        Ok(())
    }

    fn kill_running(&mut self, cause: KillCause, fx: &mut Vec<Effect>) {
        for s in self.steps.iter_mut() {
            if s.state != StepState::Running {
                continue;
            }
            match s.kill {
                None => {
                    s.kill = Some(cause);
                    fx.push(Effect::Kill {
                        step: s.name.clone(),
                        attempt: s.attempt,
                        task: s.task.clone(),
                    });
                }
                Some(KillCause::Suspend) => s.kill = Some(cause),
                Some(KillCause::Cancel) => {}
            }
        }
    }

    fn resume(
        &mut self,
        from: Option<&str>,
        force: bool,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), TransitionError> {
        let command = match (from, force) {
            (Some(_), _) => "resumed from a step",
            (None, true) => "resumed with failed steps treated as succeeded",
            (None, false) => "resumed",
        };
        let plain = from.is_none() && !force;
        match self.state {
            RunState::Pending | RunState::Running if plain => return Ok(()),
            RunState::Suspending if plain => {
                self.state = RunState::Running;
                return Ok(());
            }
            RunState::Suspended | RunState::Failed => {}
            RunState::Pending => return Err(not_allowed(self.state, command, ": start it first")),
            RunState::Running => {
                return Err(not_allowed(self.state, command, ": suspend it first"))
            }
            RunState::Suspending => {
                return Err(not_allowed(
                    self.state,
                    command,
                    ": wait until it is suspended",
                ))
            }
            RunState::Cancelling => {
                return Err(not_allowed(
                    self.state,
                    command,
                    ": it ends cancelled once its running steps end",
                ))
            }
            RunState::Cancelled | RunState::Succeeded => {
                return Err(not_allowed(self.state, command, ""))
            }
        }
        let from = from.map(|name| self.index(name)).transpose()?;
        if let Some(k) = from {
            for i in self.related(k, true) {
                self.reset(i);
            }
            for i in self.related(k, false).into_iter().filter(|&i| i != k) {
                let s = &mut self.steps[i];
                if s.state == StepState::Pending || s.state == StepState::Failed && stops(s) {
                    s.state = StepState::Skipped;
                    s.retry_at_ms = None;
                }
            }
        }
        for i in 0..self.steps.len() {
            let s = &mut self.steps[i];
            if s.state == StepState::Failed && stops(s) {
                if force {
                    s.state = StepState::Succeeded;
                    s.forced = true;
                } else {
                    self.reset(i);
                }
            }
        }
        self.state = RunState::Running;
        for s in &self.steps {
            if let Some(at_ms) = s.retry_at_ms.filter(|&at| at > now_ms) {
                fx.push(Effect::ScheduleRetry {
                    step: s.name.clone(),
                    at_ms,
                });
            }
        }
        Ok(())
    }

    /// Makes a step of a held order pending again, with a fresh retry budget.
    fn reset(&mut self, i: usize) {
        let s = &mut self.steps[i];
        debug_assert_ne!(s.state, StepState::Running);
        s.state = StepState::Pending;
        s.retries = 0;
        s.retry_at_ms = None;
        s.forced = false;
    }

    /// `k` and the steps after it (`downstream`), or `k` and the steps it
    /// waits for, directly or not.
    fn related(&self, k: usize, downstream: bool) -> Vec<usize> {
        let mut seen = vec![false; self.steps.len()];
        seen[k] = true;
        let mut stack = vec![k];
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            out.push(i);
            let next: Vec<usize> = if downstream {
                (0..self.steps.len())
                    .filter(|&j| self.steps[j].deps.contains(&i))
                    .collect()
            } else {
                self.steps[i].deps.clone()
            };
            for j in next {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn stopped(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.state == StepState::Failed && stops(s))
    }

    fn ready(&self, i: usize) -> bool {
        let s = &self.steps[i];
        s.state == StepState::Pending
            && s.retry_at_ms.is_none()
            && s.deps.iter().all(|&d| done(&self.steps[d]))
    }

    /// Dispatches what is ready and settles the order once quiet.
    fn advance(&mut self, now_ms: u64, fx: &mut Vec<Effect>) {
        if self.state == RunState::Running && !self.stopped() {
            for s in self.steps.iter_mut() {
                if s.state == StepState::Pending && s.retry_at_ms.is_some_and(|at| at <= now_ms) {
                    s.retry_at_ms = None;
                }
            }
            for i in 0..self.steps.len() {
                if self.ready(i) {
                    self.dispatch(i, fx);
                }
            }
        }
        if self.steps.iter().any(|s| s.state == StepState::Running) {
            return;
        }
        let next = match self.state {
            RunState::Cancelling => RunState::Cancelled,
            RunState::Running | RunState::Suspending if self.steps.iter().all(done) => {
                RunState::Succeeded
            }
            RunState::Running | RunState::Suspending if self.stopped() => RunState::Failed,
            RunState::Suspending => RunState::Suspended,
            _ => return,
        };
        self.state = next;
        match next {
            RunState::Suspended => fx.push(Effect::Suspended),
            RunState::Cancelled => {
                for s in self.steps.iter_mut() {
                    if s.state == StepState::Pending {
                        s.state = StepState::Cancelled;
                    }
                    s.retry_at_ms = None;
                }
                fx.push(Effect::Finished(next));
            }
            _ => fx.push(Effect::Finished(next)),
        }
    }

    fn dispatch(&mut self, i: usize, fx: &mut Vec<Effect>) {
        let params = self.params_for(i);
        let s = &mut self.steps[i];
        s.attempt += 1;
        s.state = StepState::Running;
        s.task = None;
        s.started_at_ms = None;
        s.finished_at_ms = None;
        s.exit_code = None;
        s.outputs.clear();
        s.kill = None;
        s.forced = false;
        fx.push(Effect::Dispatch {
            step: s.name.clone(),
            attempt: s.attempt,
            job: s.job.clone(),
            params,
        });
    }

    /// A step's parameters, later ones winning: the order's; the results of
    /// the steps it waits for (directly or not) that ran, as
    /// `<prefix>_<key>` and `<prefix>_exit_code`; its own, with `{{name}}`
    /// replaced by the value of `name` among the former (empty if none).
    fn params_for(&self, i: usize) -> BTreeMap<String, String> {
        let mut params = self.params.clone();
        for a in self.related(i, false).into_iter().filter(|&a| a != i) {
            let s = &self.steps[a];
            if !matches!(s.state, StepState::Succeeded | StepState::Failed) {
                continue;
            }
            let prefix = output_prefix(&s.name);
            for (key, value) in &s.outputs {
                params.insert(format!("{prefix}_{key}"), value.clone());
            }
            if let Some(code) = s.exit_code {
                params.insert(format!("{prefix}_exit_code"), code.to_string());
            }
        }
        let own: Vec<(String, String)> = self.steps[i]
            .params
            .iter()
            .map(|(k, v)| (k.clone(), substitute(v, &params)))
            .collect();
        params.extend(own);
        params
    }
}

/// Whether later steps may run after this one.
fn done(s: &StepRun) -> bool {
    match s.state {
        StepState::Succeeded | StepState::Skipped => true,
        StepState::Failed => !stops(s),
        _ => false,
    }
}

/// Whether this step, when failed, stops its order.
fn stops(s: &StepRun) -> bool {
    s.on_failure != OnFailure::Continue
}

/// `text` with each `{{name}}` replaced by its value in `values` (empty when
/// absent); an unclosed `{{` is kept as it is.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        if let Some(value) = values.get(rest[start + 2..start + 2 + len].trim()) {
            out.push_str(value);
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}
