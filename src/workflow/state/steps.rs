//! A workflow order's steps moving: a step's end ([`WorkflowRun::apply`]
//! on `StepFinished`, with its retry), the steps a step waits for or that
//! wait for it, what is ready and dispatched, the order settled once quiet,
//! and the parameters a step is dispatched with (`{{name}}` replaced).

use std::collections::BTreeMap;

use super::WorkflowRun;
use crate::workflow::definition::output_prefix;
use crate::workflow::{Effect, KillCause, OnFailure, RunState, StepRun, StepState};

impl WorkflowRun {
    pub(super) fn finish(
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

    /// `k` and the steps after it (`downstream`), or `k` and the steps it
    /// waits for, directly or not.
    pub(super) fn related(&self, k: usize, downstream: bool) -> Vec<usize> {
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
    pub(super) fn advance(&mut self, now_ms: u64, fx: &mut Vec<Effect>) {
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
    pub(super) fn params_for(&self, i: usize) -> BTreeMap<String, String> {
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
pub(super) fn stops(s: &StepRun) -> bool {
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
