//! Orders on their way through subagents: dispatch as the planner decides,
//! the subagent's answer to a run request, and its result.

use tracing::{debug, info, warn};

use super::super::order_book::{Applied, Order, OrderEvent, Outcome, Phase};
use super::plan::{self, Decision, Deployed, Queued};
use super::{Core, Effect, Event, Reply, RunReply, Then, Timer, RESEND_DELAY, STARTED_WRITE_DELAY};
use crate::jobs;
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// Hands queued orders to subagents as the planner decides.
    pub(in crate::broker) fn dispatch(&mut self) {
        let deployed = Deployed {
            jobs: &self.jobs,
            clusters: &self.clusters,
        };
        let queued = self.book.queued().map(|o| Queued {
            order_id: &o.id,
            job: &o.job,
            spread: o.spread.as_ref().filter(|_| o.pin.is_none()),
            pin: o.pin.as_deref(),
        });
        let previous = |order_id: &str| self.previous_step_subagent(order_id);
        let joined = self.book.joined();
        let (decisions, left) = plan::plan_leaving(
            queued,
            &deployed,
            &self.registry,
            &self.last_placed,
            previous,
        );
        self.left_queued.set(joined, left);
        for decision in decisions {
            match decision {
                Decision::Refuse { order_id, reason } => {
                    let at_ms = self.now.ms;
                    self.apply_and_act(&order_id, OrderEvent::Refused { reason, at_ms });
                }
                Decision::Place {
                    order_id,
                    subagent_id,
                    instance_id,
                    cluster,
                } => {
                    if self.book.get(&order_id).is_some_and(|o| o.pin.is_none()) {
                        self.last_placed.insert(cluster, subagent_id.clone());
                    }
                    self.dispatch_one(&order_id, subagent_id, instance_id);
                }
                Decision::Spread {
                    order_id,
                    members,
                    cluster,
                } => {
                    if let Some(last) = members.last() {
                        self.last_placed.insert(cluster, last.clone());
                    }
                    self.spread_out(&order_id, members);
                }
            }
        }
        self.book.tidy_queue();
        self.tell_waiting();
    }

    /// Why a queued order waits, if nothing can take it now (see
    /// [`plan::why_waiting`]); asked by `order show`, never stored (its
    /// `changed` event: `waiting.rs`).
    pub(in crate::broker) fn why_waiting(&self, order_id: &str) -> Option<String> {
        let order = self
            .book
            .get(order_id)
            .filter(|o| o.phase == Phase::Queued)?;
        if let Some(pin) = &order.pin {
            return self.member_away(pin);
        }
        let deployed = Deployed {
            jobs: &self.jobs,
            clusters: &self.clusters,
        };
        plan::why_waiting(&order.job, &deployed, &self.registry)
    }

    fn dispatch_one(&mut self, order_id: &str, subagent_id: String, instance_id: String) {
        let run = self.book.get(order_id).and_then(|order| {
            let to = (subagent_id.as_str(), instance_id);
            self.run_task(order, order.next_task_id(), order.attempt + 1, to)
        });
        let Some(run) = run else {
            return;
        };
        let event = OrderEvent::Dispatched {
            task_id: run.task_id.clone(),
            subagent_id: subagent_id.clone(),
            instance_id: run.instance_id.clone().unwrap_or_default(),
        };
        if let Err(e) = self.book.apply(order_id, event) {
            warn!(order = %order_id, error = %e, "dispatch refused by the order book");
            return;
        }
        self.registry.assign(&subagent_id, &run.task_id);
        self.placed(order_id);
        debug!(order = %order_id, subagent = %subagent_id, attempt = run.attempt, "dispatching");
        // journaled before it is sent: a broker taking over knows where it went
        let run = Box::new(run);
        self.store(order_id, Then::Run { subagent_id, run });
    }

    /// The task running `order` as `task_id`; `None` when its job is gone.
    /// The run request of `order`'s task `task_id` (its `attempt`) for a
    /// subagent process (`to`: its id and instance id); `None` if its job
    /// is gone. The task's environment names the task, attempt and
    /// subagent (`BATON_TASK_ID`, `BATON_ATTEMPT`, `BATON_SUBAGENT`).
    pub(super) fn run_task(
        &self,
        order: &Order,
        task_id: String,
        attempt: u32,
        to: (&str, String),
    ) -> Option<RunTask> {
        let (subagent_id, instance_id) = to;
        let spec = self.jobs.get(&order.job)?;
        let (args, mut env) = jobs::command_for(spec, &order.id, &order.params);
        env.insert("BATON_TASK_ID".into(), task_id.clone());
        env.insert("BATON_ATTEMPT".into(), attempt.to_string());
        env.insert("BATON_SUBAGENT".into(), subagent_id.to_string());
        if let Some(slot_ms) = order.slot_ms {
            env.insert("BATON_SLOT_MS".into(), slot_ms.to_string());
        }
        if let Some(spread) = &order.member_of {
            env.insert("BATON_SPREAD_ORDER_ID".into(), spread.clone());
        }
        if let Some(parent) = &order.parent {
            env.insert("BATON_WORKFLOW".into(), parent.workflow.clone());
            env.insert("BATON_WORKFLOW_ORDER_ID".into(), parent.order_id.clone());
            env.insert("BATON_STEP".into(), parent.step.clone());
            env.insert("BATON_STEP_ATTEMPT".into(), parent.attempt.to_string());
        }
        Some(RunTask {
            task_id,
            order_id: order.id.clone(),
            job: order.job.clone(),
            attempt,
            program: spec.program.clone(),
            args,
            env,
            working_dir: spec.working_dir.clone(),
            timeout_ms: spec.timeout_ms,
            instance_id: Some(instance_id),
            epoch: self.epoch,
            parent: order.parent.clone(),
        })
    }

    /// Sends a task; `again` when it was sent before without an answer.
    pub(super) fn send_run(&mut self, subagent_id: String, run: RunTask, again: bool) {
        if self.runs_sent.len() > 4096 {
            let book = &self.book;
            (self.runs_sent)
                .retain(|id, _| book.get(id).is_some_and(|o| o.phase == Phase::Dispatching));
        }
        self.runs_sent.insert(run.order_id.clone(), self.now.ms);
        let run = Box::new(run);
        self.emit(Effect::Run {
            subagent_id,
            run,
            again,
        });
    }

    /// A confirmed start is stored [`STARTED_WRITE_DELAY`] later, if the
    /// order still runs that task then: most tasks of a busy scheduler end
    /// sooner, and their final state is the one write left (a broker taking
    /// over before it finds the order dispatched, as it always could, and
    /// asks the subagent). A workflow's step order is stored at once: its
    /// workflow order follows only what the journal holds.
    fn store_started(&mut self, run: &RunTask) {
        if run.parent.is_some() {
            self.store(&run.order_id, Then::Nothing);
            return;
        }
        let due = self.now.at + STARTED_WRITE_DELAY;
        let started = (due, run.order_id.clone(), run.task_id.clone());
        self.started.push_back(started);
    }

    /// Stores the starts whose delay has passed (on each liveness check):
    /// those of orders still running the task they started.
    pub(super) fn store_started_due(&mut self) {
        while let Some((due, _, _)) = self.started.front() {
            if *due > self.now.at {
                break;
            }
            let Some((_, order_id, task_id)) = self.started.pop_front() else {
                break;
            };
            let runs = self.book.get(&order_id).is_some_and(|o| {
                o.phase == Phase::Running && o.task_id.as_deref() == Some(task_id.as_str())
            });
            if runs {
                self.store(&order_id, Then::Nothing);
            }
        }
    }

    pub(super) fn on_run_reply(
        &mut self,
        subagent_id: String,
        run: RunTask,
        again: bool,
        reply: RunReply,
    ) {
        if !self.dispatched_as(&subagent_id, &run) {
            return;
        }
        match reply {
            RunReply::Accepted => {
                self.runs_sent.remove(&run.order_id);
                let event = OrderEvent::Started {
                    task_id: run.task_id.clone(),
                    at_ms: self.now.ms,
                };
                match self.book.apply(&run.order_id, event) {
                    Ok(Applied::Moved { .. }) => self.store_started(&run),
                    Ok(Applied::Stale) => {}
                    Err(e) => warn!(task = %run.task_id, error = %e, "start not recorded"),
                }
            }
            RunReply::NoResponders(e) if again => {
                // an earlier send may have reached it, and the task may run
                // there still (a process cut off from NATS has no
                // responders): in doubt until proven dead, never re-queued
                warn!(task = %run.task_id, subagent = %subagent_id, error = %e, "a dispatch sent again found no responders; the task is in doubt");
                self.suspect(&subagent_id, "a dispatch sent again found no responders");
                self.registry.release(&subagent_id, &run.task_id, false);
                let doubt = self.registry.get(&subagent_id).map(|s| s.doubt());
                self.put_in_doubt(&subagent_id, &[run.order_id], doubt);
            }
            RunReply::NoResponders(ref e) | RunReply::Refused(ref e) => {
                // definite: it did not take the task (nobody listened, or it refused)
                warn!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch failed; task goes back to the queue");
                if matches!(reply, RunReply::NoResponders(_)) {
                    self.suspect(&subagent_id, "a dispatch found no responders");
                } else {
                    // it answered: alive, but out of placement until it heartbeats again
                    self.registry.said_busy(&subagent_id);
                }
                self.registry.release(&subagent_id, &run.task_id, false);
                let event = OrderEvent::DispatchFailed {
                    task_id: run.task_id,
                };
                if let Ok(Applied::Moved { .. }) = self.book.apply(&run.order_id, event) {
                    self.store(&run.order_id, Then::Nothing);
                }
                self.dispatch();
            }
            RunReply::Unknown(e) => {
                // it may have the task already; the same task id is safe to
                // send again, and its loss, if it is lost, is handled there
                debug!(task = %run.task_id, subagent = %subagent_id, error = %e, "dispatch unconfirmed; sending again");
                let run = Box::new(run);
                self.later(RESEND_DELAY, Timer::Resend { subagent_id, run });
            }
        }
    }

    /// Whether `run` is still the order's dispatch in flight to
    /// `subagent_id`. A dispatch that surely failed does not use up an
    /// attempt, so its task id comes again on the next one: the subagent
    /// process tells them apart.
    pub(super) fn dispatched_as(&self, subagent_id: &str, run: &RunTask) -> bool {
        self.book.get(&run.order_id).is_some_and(|o| {
            o.phase == Phase::Dispatching
                && o.task_id.as_deref() == Some(run.task_id.as_str())
                && o.subagent_id.as_deref() == Some(subagent_id)
                && o.subagent_instance_id == run.instance_id
        })
    }

    pub(super) fn on_result(&mut self, to: R, r: TaskResult) {
        self.registry.release(&r.subagent_id, &r.task_id, true);
        if let Some(reason) = r.abandoned.clone() {
            let event = OrderEvent::Abandoned {
                task_id: r.task_id.clone(),
                reason,
                at_ms: r.finished_at_ms,
            };
            let applied = self.book.apply(&r.order_id, event);
            let ack = Then::Ack {
                to,
                task_id: r.task_id,
            };
            match applied {
                Ok(Applied::Moved { to, .. }) if to.is_final() => self.finish(&r.order_id, ack),
                // back in the queue: stored so before the subagent forgets it
                Ok(Applied::Moved { .. }) => {
                    info!(order = %r.order_id, "order back in the queue");
                    self.store(&r.order_id, ack);
                    self.say_again(&r.order_id);
                }
                _ => self.ack_stale(&r.order_id, ack),
            }
            return self.dispatch();
        }
        let outcome = Outcome {
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            error: r.error.clone(),
            started_at_ms: Some(r.started_at_ms),
            finished_at_ms: r.finished_at_ms,
            outputs: r.outputs.clone(),
        };
        let event = OrderEvent::Finished {
            task_id: r.task_id.clone(),
            outcome,
            at_ms: self.now.ms,
        };
        match self.book.apply(&r.order_id, event) {
            Ok(Applied::Moved { to: phase, .. }) => {
                let ack = Then::Ack {
                    to,
                    task_id: r.task_id,
                };
                if phase == Phase::Retrying {
                    // its due time is stored before the result is
                    // acknowledged, and its timer armed once stored
                    info!(order = %r.order_id, "task failed; the order waits for its retry");
                    self.store(&r.order_id, ack);
                    self.say_again(&r.order_id);
                } else {
                    self.finish(&r.order_id, ack);
                }
                self.dispatch();
            }
            Ok(Applied::Stale) => {
                debug!(task = %r.task_id, "stale or repeated result recorded");
                let ack = Then::Ack {
                    to,
                    task_id: r.task_id,
                };
                self.ack_stale(&r.order_id, ack);
            }
            Err(e) => {
                debug!(task = %r.task_id, error = %e, "result for an order not held here");
                let ack = ResultAck { task_id: r.task_id };
                self.reply(&to, Reply::Ack(ack));
            }
        }
    }

    /// Acknowledges a result that changed nothing; for a final order, or
    /// one waiting for its retry, only once its state is stored (a repeated
    /// result may follow a failed write, or overtake one in flight).
    fn ack_stale(&mut self, order_id: &str, ack: Then<R>) {
        let stored_first = |o: &Order| o.phase.is_final() || o.phase == Phase::Retrying;
        if self.book.get(order_id).is_some_and(stored_first) {
            self.store(order_id, ack);
        } else {
            self.follow_up(order_id, ack, true);
        }
    }

    /// Applies an event and follows up on where the order moved.
    pub(in crate::broker) fn apply_and_act(&mut self, order_id: &str, event: OrderEvent) {
        if let Ok(Applied::Moved { to, .. }) = self.book.apply(order_id, event) {
            self.after_move(order_id, to);
        }
    }

    /// Tells those following a job order that it will run again, and why
    /// ([`Event::again`]).
    fn say_again(&mut self, order_id: &str) {
        let info = self.book.get(order_id).map(|o| o.info());
        if let Some(event) = info.and_then(|i| Event::again(&i, self.now.ms)) {
            self.publish(event);
        }
    }

    /// Follows up on an order that moved to `to`.
    pub(super) fn after_move(&mut self, order_id: &str, to: Phase) {
        match to {
            _ if to.is_final() => self.finish(order_id, Then::Nothing),
            Phase::Queued => {
                info!(order = %order_id, "order back in the queue");
                self.store(order_id, Then::Nothing);
                self.say_again(order_id);
            }
            Phase::Orphaned => {
                info!(order = %order_id, "task in doubt until its subagent's orphan timeout");
            }
            _ => {}
        }
    }

    /// For a step order: the subagent its workflow order placed a step on
    /// last (the step before it, in a chain; a sibling, in a fan-out), so
    /// round-robin moves each order to the next member step by step.
    pub(in crate::broker) fn previous_step_subagent(&self, order_id: &str) -> Option<String> {
        let parent = self.book.get(order_id)?.parent.as_ref()?;
        let flow = self.book.flow(&parent.order_id)?;
        flow.history
            .iter()
            .rev()
            .filter(|h| h.order_id != order_id)
            .find_map(|h| {
                let placed = self
                    .book
                    .get(&h.order_id)
                    .and_then(|o| o.subagent_id.clone());
                placed.or_else(|| h.subagent_id.clone())
            })
    }
}
