//! A workflow order as the broker holds it: its run ([`WorkflowRun`]), the
//! history of its step attempts (one `StepAttempt` per step attempt
//! dispatched), and the journal record ([`OrderInfo`], with `workflow`,
//! `steps` and `history` set) it is stored as (`info()`) and rebuilt from
//! (`restore(info)` rebuilds the same order).
//!
//! Each attempt of a step runs as an order of its own, a *step order*, placed
//! by its job's subagent cluster like any order (so it survives subagent and
//! broker fail-over the same way). Its id is derived from the workflow order,
//! the step and the attempt ([`step_order_id`]): placing the same attempt
//! twice (a broker taking over) finds the first one.
//!
//! Pure: times arrive with the calls.

use std::collections::BTreeMap;

use super::{
    Effect, Event, KillCause, RunState, StepState, TransitionError, WorkflowError, WorkflowRun,
};
use super::{OnFailure, WorkflowSpec};
use crate::protocol::{OrderInfo, OrderState, ParentStep, StepAttempt};

/// The request id of a step order: one per workflow order, step and attempt.
pub fn step_request_id(flow: &str, step: &str, attempt: u32) -> String {
    format!("{flow}/{step}/{attempt}")
}

/// The id of the order running `attempt` of `step` of workflow order `flow`.
/// Its UUID namespace differs from the one of ids derived from clients'
/// request ids, so no submit can take it.
pub fn step_order_id(prefix: &str, flow: &str, step: &str, attempt: u32) -> String {
    let name = format!("{prefix}/{}", step_request_id(flow, step, attempt));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// One order through a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowOrder {
    pub id: String,
    pub request_id: Option<String>,
    pub slot_ms: Option<u64>,
    pub accepted_at_ms: u64,
    /// When it last became succeeded, failed or cancelled.
    pub finished_at_ms: Option<u64>,
    pub run: WorkflowRun,
    /// Every step attempt dispatched, oldest first.
    pub history: Vec<StepAttempt>,
    /// Stored in the journal: its submit can be answered.
    pub durable: bool,
    /// The verified identity that submitted it.
    pub submitted_by: Option<String>,
    /// Failed: until when it can be resumed or cancelled ([`FlowOrder::hold`]).
    pub resumable_until_ms: Option<u64>,
    /// Failed and held past its deadline: when it expired
    /// ([`FlowOrder::expire`]); it never changes again.
    pub expired_at_ms: Option<u64>,
}

impl FlowOrder {
    /// A pending order through `spec`.
    pub fn new(
        id: String,
        spec: &WorkflowSpec,
        params: BTreeMap<String, String>,
        request_id: Option<String>,
        slot_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<FlowOrder, WorkflowError> {
        Ok(FlowOrder {
            id,
            request_id,
            slot_ms,
            accepted_at_ms: now_ms,
            finished_at_ms: None,
            run: WorkflowRun::new(spec, params)?,
            history: Vec::new(),
            durable: false,
            submitted_by: None,
            resumable_until_ms: None,
            expired_at_ms: None,
        })
    }

    /// The order a journal record describes; `None` for a plain order.
    pub fn restore(info: &OrderInfo) -> Option<FlowOrder> {
        let workflow = info.workflow.clone()?;
        let run = WorkflowRun::restore(
            workflow,
            info.params.clone(),
            RunState::from_wire(info.state),
            info.steps.clone(),
        );
        Some(FlowOrder {
            id: info.order_id.clone(),
            request_id: info.request_id.clone(),
            slot_ms: info.slot_ms,
            accepted_at_ms: info.accepted_at_ms,
            finished_at_ms: info.finished_at_ms,
            run,
            history: info.history.clone(),
            durable: true,
            submitted_by: info.submitted_by.clone(),
            resumable_until_ms: info.resumable_until_ms,
            expired_at_ms: info.expired_at_ms,
        })
    }

    pub fn state(&self) -> RunState {
        self.run.state()
    }

    /// Applies an event (see [`WorkflowRun::apply`]) and keeps the times.
    pub fn apply(&mut self, event: Event, now_ms: u64) -> Result<Vec<Effect>, TransitionError> {
        let fx = self.run.apply(event, now_ms)?;
        if self.state().is_final() {
            if fx.iter().any(|e| matches!(e, Effect::Finished(_))) {
                self.finished_at_ms = Some(now_ms);
            }
        } else {
            // resumed after it failed
            self.finished_at_ms = None;
        }
        if self.state() != RunState::Failed {
            self.resumable_until_ms = None;
        }
        Ok(fx)
    }

    /// Succeeded, cancelled, or failed and expired: it never changes again.
    pub fn is_ended(&self) -> bool {
        self.state().is_terminal() || self.expired_at_ms.is_some()
    }

    /// When it ended for good (see [`FlowOrder::is_ended`]).
    pub fn ended_at_ms(&self) -> Option<u64> {
        self.expired_at_ms
            .or(self.finished_at_ms)
            .filter(|_| self.is_ended())
    }

    /// A failed order is held resumable for `hold_ms` after it failed: the
    /// deadline, when it is not already the one set.
    pub fn hold(&mut self, hold_ms: u64) -> Option<u64> {
        if self.state() != RunState::Failed || self.expired_at_ms.is_some() {
            return None;
        }
        let until = self.finished_at_ms?.saturating_add(hold_ms);
        if self.resumable_until_ms == Some(until) {
            return None;
        }
        self.resumable_until_ms = Some(until);
        Some(until)
    }

    /// A failed order whose deadline has passed expires: whether it did now.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let due = self.resumable_until_ms.is_some_and(|until| until <= now_ms);
        if self.state() != RunState::Failed || self.expired_at_ms.is_some() || !due {
            return false;
        }
        self.resumable_until_ms = None;
        self.expired_at_ms = Some(now_ms);
        true
    }

    /// Records that `attempt` of `step` is placed as order `order_id`.
    pub fn dispatched(&mut self, step: &str, attempt: u32, job: &str, order_id: &str) {
        if self.history.iter().any(|h| h.order_id == order_id) {
            return;
        }
        self.history.push(StepAttempt {
            placed_on: Vec::new(),
            tasks: 0,
            step: step.to_string(),
            job: job.to_string(),
            attempt,
            order_id: order_id.to_string(),
            state: OrderState::Accepted,
            subagent_id: None,
            exit_code: None,
            reason: None,
            started_at_ms: None,
            finished_at_ms: None,
        });
    }

    /// A step order could not even be placed (its job is gone, a required
    /// parameter is missing): the attempt failed with `reason`.
    pub fn refused(
        &mut self,
        parent: &ParentStep,
        order_id: &str,
        reason: String,
        now_ms: u64,
    ) -> Event {
        if let Some(h) = self.history.iter_mut().find(|h| h.order_id == order_id) {
            h.state = OrderState::Failed;
            h.reason = Some(reason);
            h.finished_at_ms = Some(now_ms);
        }
        Event::StepFinished {
            step: parent.step.clone(),
            attempt: parent.attempt,
            succeeded: false,
            exit_code: None,
            outputs: BTreeMap::new(),
        }
    }

    /// A step order moved: its history entry follows it, and the event the
    /// run needs is returned (started, or finished), if any.
    pub fn step_order_moved(&mut self, step_order: &OrderInfo) -> Option<Event> {
        let parent = step_order.parent.as_ref()?;
        let h = self
            .history
            .iter_mut()
            .find(|h| h.order_id == step_order.order_id)?;
        if h.state.is_final() && h.state == step_order.state {
            // a repeat (its result came again): its end was taken already,
            // and the record of an ended order does not change
            return None;
        }
        h.state = step_order.state;
        h.subagent_id.clone_from(&step_order.subagent_id);
        if let Some(sub) = &step_order.subagent_id {
            if h.placed_on.last() != Some(sub) {
                h.placed_on.push(sub.clone());
            }
        }
        h.tasks = step_order.attempt;
        h.exit_code = step_order.exit_code;
        h.reason.clone_from(&step_order.reason);
        let step = self.run.step(&parent.step);
        let killed_by = step
            .filter(|s| s.attempt == parent.attempt)
            .and_then(|s| s.kill);
        if step_order.state == OrderState::Cancelled {
            h.reason = match killed_by {
                Some(KillCause::Suspend) => Some(
                    "killed by suspend --kill; the step runs again when the order is resumed"
                        .into(),
                ),
                Some(KillCause::Cancel) => Some("killed by cancel --kill".into()),
                None => h.reason.take(),
            };
        }
        h.started_at_ms = step_order.started_at_ms;
        h.finished_at_ms = step_order.finished_at_ms;
        if step_order.state.is_final() {
            return Some(Event::StepFinished {
                step: parent.step.clone(),
                attempt: parent.attempt,
                succeeded: step_order.state == OrderState::Succeeded,
                exit_code: step_order.exit_code,
                outputs: step_order.outputs.clone(),
            });
        }
        match (&step_order.task_id, step_order.state) {
            (Some(task), OrderState::Running) => Some(Event::StepStarted {
                step: parent.step.clone(),
                attempt: parent.attempt,
                task: task.clone(),
            }),
            _ => None,
        }
    }

    /// Why a failed order failed: its first failed step that stops it.
    pub fn reason(&self) -> Option<String> {
        if self.state() != RunState::Failed {
            return None;
        }
        let s = self
            .run
            .steps()
            .iter()
            .find(|s| s.state == StepState::Failed && s.on_failure != OnFailure::Continue)?;
        let how = match s.exit_code {
            Some(code) => format!("exit code {code}"),
            None => self
                .history
                .iter()
                .rev()
                .find(|h| h.step == s.name)
                .and_then(|h| h.reason.clone())
                .unwrap_or_else(|| "no exit code".into()),
        };
        if self.expired_at_ms.is_some() {
            return Some(format!(
                "step '{}' failed ({how}); the order expired (broker.failed_hold after it \
                 failed) and can no longer be resumed",
                s.name
            ));
        }
        Some(format!(
            "step '{}' failed ({how}); `baton order resume {id}` runs it again \
             (`--from STEP` from another step, `--force-succeeded` counts it as succeeded), \
             `baton order cancel {id}` ends the order",
            s.name,
            id = self.id
        ))
    }

    /// The journal record, and what clients see.
    pub fn info(&self) -> OrderInfo {
        let running = self.state() != RunState::Pending;
        OrderInfo {
            params: self.run.params().clone(),
            attempt: self.history.len() as u32,
            reason: self.reason(),
            request_id: self.request_id.clone(),
            slot_ms: self.slot_ms,
            cancel_requested: self.state() == RunState::Cancelling,
            started_at_ms: self
                .history
                .iter()
                .filter_map(|h| h.started_at_ms)
                .min()
                .filter(|_| running),
            finished_at_ms: self.finished_at_ms,
            workflow: Some(self.run.workflow().to_string()),
            steps: self.run.steps().to_vec(),
            history: self.history.clone(),
            submitted_by: self.submitted_by.clone(),
            resumable_until_ms: self.resumable_until_ms,
            expired_at_ms: self.expired_at_ms,
            ..OrderInfo::new(
                self.id.clone(),
                self.run.workflow().to_string(),
                self.state().wire(),
                self.accepted_at_ms,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::StepSpec;

    fn spec() -> WorkflowSpec {
        let step = |name: &str| StepSpec {
            name: name.into(),
            job: "j".into(),
            params: BTreeMap::new(),
            after: None,
            on_failure: OnFailure::Stop,
        };
        WorkflowSpec {
            name: "wf".into(),
            description: None,
            params: Default::default(),
            steps: vec![step("a"), step("b")],
            triggers: Vec::new(),
            misfire: Default::default(),
            notify: Default::default(),
        }
    }

    fn step_order(flow: &FlowOrder, step: &str, attempt: u32, state: OrderState) -> OrderInfo {
        let mut info = FlowOrder::new("x".into(), &spec(), BTreeMap::new(), None, None, 0)
            .unwrap()
            .info();
        info.order_id = step_order_id("baton", &flow.id, step, attempt);
        info.job = "j".into();
        info.workflow = None;
        info.steps.clear();
        info.state = state;
        info.task_id = Some("t1".into());
        info.subagent_id = Some("sub-1".into());
        info.exit_code = (state == OrderState::Failed).then_some(3);
        info.parent = Some(ParentStep {
            order_id: flow.id.clone(),
            workflow: "wf".into(),
            step: step.into(),
            attempt,
        });
        info
    }

    #[test]
    fn step_order_ids_differ_per_step_and_attempt_and_repeat() {
        let a = step_order_id("baton", "o1", "a", 1);
        assert_eq!(a, step_order_id("baton", "o1", "a", 1));
        assert_ne!(a, step_order_id("baton", "o1", "a", 2));
        assert_ne!(a, step_order_id("baton", "o1", "b", 1));
        assert_ne!(a, step_order_id("other", "o1", "a", 1));
    }

    #[test]
    fn the_record_rebuilds_the_same_order() {
        let mut flow = FlowOrder::new(
            "o1".into(),
            &spec(),
            BTreeMap::new(),
            Some("r".into()),
            None,
            5,
        )
        .unwrap();
        flow.durable = true;
        let fx = flow.apply(Event::Start, 10).unwrap();
        assert!(matches!(&fx[..], [Effect::Dispatch { step, .. }] if step == "a"));
        let id = step_order_id("baton", "o1", "a", 1);
        flow.dispatched("a", 1, "j", &id);
        let started = flow.step_order_moved(&step_order(&flow, "a", 1, OrderState::Running));
        assert!(matches!(started, Some(Event::StepStarted { .. })));
        flow.apply(started.unwrap(), 20).unwrap();
        let info = flow.info();
        assert_eq!(info.state, OrderState::Running);
        assert_eq!(info.history[0].subagent_id.as_deref(), Some("sub-1"));
        assert_eq!(FlowOrder::restore(&info), Some(flow));
    }

    #[test]
    fn a_failed_step_order_fails_the_order_with_a_reason() {
        let mut flow =
            FlowOrder::new("o1".into(), &spec(), BTreeMap::new(), None, None, 0).unwrap();
        flow.apply(Event::Start, 1).unwrap();
        flow.dispatched("a", 1, "j", &step_order_id("baton", "o1", "a", 1));
        let finished = flow
            .step_order_moved(&step_order(&flow, "a", 1, OrderState::Failed))
            .unwrap();
        let fx = flow.apply(finished, 9).unwrap();
        assert_eq!(fx, vec![Effect::Finished(RunState::Failed)]);
        assert_eq!(flow.finished_at_ms, Some(9));
        let reason = flow.info().reason.unwrap();
        assert!(reason.contains("step 'a' failed (exit code 3)"), "{reason}");
        // resumable: a resume clears the end time
        flow.apply(
            Event::Resume {
                from: None,
                force_succeeded: false,
            },
            12,
        )
        .unwrap();
        assert_eq!(flow.finished_at_ms, None);
        assert_eq!(flow.state(), RunState::Running);
    }

    #[test]
    fn a_step_orders_end_reported_again_changes_nothing() {
        let mut flow =
            FlowOrder::new("o1".into(), &spec(), BTreeMap::new(), None, None, 0).unwrap();
        flow.apply(Event::Start, 1).unwrap();
        flow.dispatched("a", 1, "j", &step_order_id("baton", "o1", "a", 1));
        let mut ended = step_order(&flow, "a", 1, OrderState::Failed);
        let finished = flow.step_order_moved(&ended).unwrap();
        flow.apply(finished, 9).unwrap();
        let before = flow.info();
        ended.reason = Some("another reason".into());
        assert_eq!(flow.step_order_moved(&ended), None);
        assert_eq!(flow.info(), before);
    }

    #[test]
    fn an_attempt_placed_before_a_crash_is_not_reused() {
        let mut flow =
            FlowOrder::new("o1".into(), &spec(), BTreeMap::new(), None, None, 0).unwrap();
        flow.apply(Event::Suspend { kill: false }, 1).unwrap();
        flow.run.note_attempt("a", 2);
        let fx = flow
            .apply(
                Event::Resume {
                    from: None,
                    force_succeeded: false,
                },
                2,
            )
            .unwrap();
        let fx = [fx, flow.apply(Event::Start, 3).unwrap()].concat();
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Dispatch { step, attempt: 3, .. } if step == "a")),
            "{fx:?}"
        );
        // a running step's attempt is left alone
        flow.run.note_attempt("a", 9);
        assert_eq!(flow.run.step("a").unwrap().attempt, 3);
    }

    #[test]
    fn a_refused_step_fails_its_attempt() {
        let mut flow =
            FlowOrder::new("o1".into(), &spec(), BTreeMap::new(), None, None, 0).unwrap();
        flow.apply(Event::Start, 1).unwrap();
        let id = step_order_id("baton", "o1", "a", 1);
        flow.dispatched("a", 1, "j", &id);
        let parent = ParentStep {
            order_id: "o1".into(),
            workflow: "wf".into(),
            step: "a".into(),
            attempt: 1,
        };
        let event = flow.refused(&parent, &id, "job 'j' is not deployed".into(), 3);
        flow.apply(event, 3).unwrap();
        assert_eq!(flow.state(), RunState::Failed);
        assert!(flow
            .info()
            .reason
            .unwrap()
            .contains("job 'j' is not deployed"));
    }
}
