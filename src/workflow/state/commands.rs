//! The commands a workflow order takes, as [`WorkflowRun::apply`] carries
//! them out: suspend and cancel (killing its running steps when asked
//! to), and resume of a held order (from a step, or with its failed steps
//! treated as succeeded); see the table in `state.rs`.

use super::steps::stops;
use super::WorkflowRun;
use crate::workflow::{Effect, KillCause, RunState, StepState, TransitionError};

fn not_allowed(state: RunState, command: &'static str, hint: &'static str) -> TransitionError {
    TransitionError::NotAllowed {
        state,
        command,
        hint,
    }
}

impl WorkflowRun {
    pub(super) fn suspend(
        &mut self,
        kill: bool,
        fx: &mut Vec<Effect>,
    ) -> Result<(), TransitionError> {
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

    pub(super) fn cancel(
        &mut self,
        kill: bool,
        fx: &mut Vec<Effect>,
    ) -> Result<(), TransitionError> {
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

    pub(super) fn resume(
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
}
