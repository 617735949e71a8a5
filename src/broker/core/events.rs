//! Every status event the broker publishes about an order is built here,
//! from the order's record ([`OrderInfo`]): `accepted`, `changed` (a
//! workflow order's step or state moved, an order waits for a subagent,
//! or a job order runs again) and `finished`.

use super::Event;
use crate::protocol::*;

impl Event {
    /// An order was stored and will run.
    pub fn accepted(info: &OrderInfo) -> Event {
        Event::Accepted(OrderAccepted {
            order_id: info.order_id.clone(),
            job: info.job.clone(),
            params: info.params.clone(),
            slot_ms: info.slot_ms,
            at_ms: info.accepted_at_ms,
        })
    }

    /// An order ended as `info` says (published once that is stored).
    pub fn finished(info: &OrderInfo, at_ms: u64) -> Event {
        let duration_ms = match (info.started_at_ms, info.finished_at_ms) {
            (Some(s), Some(f)) => Some(f.saturating_sub(s)),
            _ => None,
        };
        Event::Finished(OrderFinished {
            order_id: info.order_id.clone(),
            job: info.job.clone(),
            state: info.state,
            exit_code: info.exit_code,
            signal: info.signal,
            timed_out: info.timed_out,
            reason: info.reason.clone(),
            subagent_id: info.subagent_id.clone(),
            attempt: info.attempt,
            duration_ms,
            at_ms,
            workflow: info.workflow.clone(),
        })
    }

    /// A workflow order moved from `before` to `after`: one event for each
    /// step that moved, and one for the order's own state if it changed
    /// (after the steps', but for a resume: before them).
    /// `step_order_id` names the order of a step's attempt.
    pub fn changed(
        before: &OrderInfo,
        after: &OrderInfo,
        step_order_id: impl Fn(&str, u32) -> String,
        at_ms: u64,
    ) -> Vec<Event> {
        let change = |step: Option<&StepRun>, what: String| OrderChanged {
            order_id: after.order_id.clone(),
            workflow: after.job.clone(),
            state: after.state,
            step: step.map(|s| s.name.clone()),
            attempt: step.map(|s| s.attempt),
            step_state: step.map(|s| s.state),
            step_order_id: step
                .filter(|s| s.attempt > 0)
                .map(|s| step_order_id(&s.name, s.attempt)),
            what,
            waiting: None,
            at_ms,
        };
        let mut events = Vec::new();
        for (b, a) in before.steps.iter().zip(&after.steps) {
            if b.state == a.state && b.attempt == a.attempt {
                continue;
            }
            let mut what = format!("step {} {}", a.name, step_state_word(a.state));
            if a.state == StepState::Running && a.attempt > 1 {
                what.push_str(&format!(" (attempt {})", a.attempt));
            }
            if a.forced {
                what.push_str(" (failed, counted as succeeded)");
            }
            events.push(Event::Changed(change(Some(a), what)));
        }
        if before.state != after.state {
            let resumed = matches!(
                before.state,
                OrderState::Suspended | OrderState::Failed | OrderState::Suspending
            ) && after.state == OrderState::Running;
            match resumed {
                // the cause before its effects: resumed, then its steps dispatched
                true => events.insert(0, Event::Changed(change(None, "resumed".into()))),
                false => {
                    let what = after.state.as_str().to_string();
                    events.push(Event::Changed(change(None, what)));
                }
            }
        }
        if before.expired_at_ms.is_none() && after.expired_at_ms.is_some() {
            events.push(Event::Changed(change(None, "expired".to_string())));
        }
        events
    }
}

impl Event {
    /// A spread order was placed on its members, or one of its members'
    /// orders ended (`what` says which, for people; `member_order` names
    /// that member's order).
    pub fn spread_news(
        info: &OrderInfo,
        what: String,
        member_order: Option<String>,
        at_ms: u64,
    ) -> Event {
        Event::Changed(OrderChanged {
            order_id: info.order_id.clone(),
            workflow: info.job.clone(),
            state: info.state,
            step: None,
            attempt: None,
            step_state: None,
            step_order_id: member_order,
            what,
            waiting: None,
            at_ms,
        })
    }
}

impl Event {
    /// A job order of its own (not a workflow's step) that will run again:
    /// waiting for its retry, or back in the queue after its task was lost
    /// (`None` otherwise). `now_ms` tells how long until the retry.
    pub fn again(info: &OrderInfo, now_ms: u64) -> Option<Event> {
        if info.parent.is_some() || info.member_of.is_some() {
            return None;
        }
        if info.state != OrderState::Accepted {
            return None;
        }
        let what = match info.retry_at_ms {
            Some(at) => {
                let mut what = info.reason.clone().unwrap_or_else(|| "retrying".into());
                let wait = std::time::Duration::from_millis(at.saturating_sub(now_ms) / 100 * 100);
                what.push_str(&format!(", in {}", humantime::format_duration(wait)));
                what
            }
            None => {
                // back in the queue after its last task was lost; not after
                // a dispatch that surely failed (no task ran)
                let last = info.attempts.last().filter(|a| a.rerun.is_some())?;
                match (last.outcome, &last.reason) {
                    (Some(AttemptOutcome::Lost), Some(how)) => {
                        format!("runs again: attempt {} was lost on {how}", last.attempt)
                    }
                    _ => return None,
                }
            }
        };
        Some(Event::Changed(OrderChanged {
            order_id: info.order_id.clone(),
            workflow: info.job.clone(),
            state: info.state,
            step: None,
            attempt: Some(info.attempt),
            step_state: None,
            step_order_id: None,
            what,
            waiting: None,
            at_ms: now_ms,
        }))
    }
}

/// A job order that waits for a subagent, and why (`reason`, as
/// [`super::plan::why_waiting`] words it).
pub struct Waiting<'a> {
    pub order_id: &'a str,
    pub job: &'a str,
    /// For a workflow step's order: the step, and its workflow order's
    /// state. The event goes to the workflow order, where `submit --wait`
    /// and `watch --order` follow it.
    pub step: Option<(&'a ParentStep, OrderState)>,
    pub reason: &'a str,
}

impl Event {
    /// An order started waiting for a subagent, or waits for another
    /// reason now.
    pub fn waiting(w: &Waiting<'_>, at_ms: u64) -> Event {
        let reason = w.reason.to_string();
        Event::Changed(match w.step {
            None => OrderChanged {
                order_id: w.order_id.to_string(),
                workflow: w.job.to_string(),
                state: OrderState::Accepted,
                step: None,
                attempt: None,
                step_state: None,
                step_order_id: None,
                what: reason.clone(),
                waiting: Some(reason),
                at_ms,
            },
            Some((parent, state)) => OrderChanged {
                order_id: parent.order_id.clone(),
                workflow: parent.workflow.clone(),
                state,
                step: Some(parent.step.clone()),
                attempt: Some(parent.attempt),
                step_state: Some(StepState::Running),
                step_order_id: Some(w.order_id.to_string()),
                what: format!("step {} {reason}", parent.step),
                waiting: Some(reason),
                at_ms,
            },
        })
    }
}

fn step_state_word(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running => "dispatched",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: OrderState) -> OrderInfo {
        let order = crate::broker::order_book::Order::new(
            "o".into(),
            "j".into(),
            Default::default(),
            None,
            1,
        );
        OrderInfo {
            state,
            ..order.info()
        }
    }

    #[test]
    fn finished_carries_the_exit_and_the_duration() {
        let mut i = info(OrderState::Failed);
        i.exit_code = Some(3);
        i.started_at_ms = Some(10);
        i.finished_at_ms = Some(25);
        let Event::Finished(f) = Event::finished(&i, 30) else {
            panic!("a finished event")
        };
        assert_eq!(
            (f.exit_code, f.duration_ms, f.at_ms),
            (Some(3), Some(15), 30)
        );
        i.started_at_ms = None;
        let Event::Finished(f) = Event::finished(&i, 30) else {
            panic!("a finished event")
        };
        assert_eq!(f.duration_ms, None, "never started");
    }

    #[test]
    fn changed_names_each_moved_step_and_a_resume() {
        let step = |state, attempt| StepRun {
            name: "a".into(),
            job: "j".into(),
            state,
            attempt,
            ..StepRun::default()
        };
        let mut before = info(OrderState::Suspended);
        before.steps = vec![step(StepState::Failed, 1)];
        let mut after = info(OrderState::Running);
        after.steps = vec![step(StepState::Running, 2)];
        let events = Event::changed(&before, &after, |s, a| format!("{s}#{a}"), 7);
        let what: Vec<String> = (events.iter())
            .map(|e| match e {
                Event::Changed(c) => format!("{} {:?}", c.what, c.step_order_id),
                _ => panic!("changed events only"),
            })
            .collect();
        assert_eq!(
            what,
            [
                "resumed None",
                "step a dispatched (attempt 2) Some(\"a#2\")"
            ]
        );
        assert!(Event::changed(&after, &after, |_, _| String::new(), 7).is_empty());
    }
}
