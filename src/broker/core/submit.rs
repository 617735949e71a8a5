//! Submitting an order of a job, and cancelling one.
//!
//! A submit is answered only once its order is durable: the core asks for
//! the record to be created ([`Effect::Create`]; with a request id only if
//! that id's order is new in JetStream, so a repeat, even to another
//! broker, finds the first order) and answers, announces and queues the
//! order when [`Input::Created`](super::Input::Created) says it is stored
//! (one a subagent has room for at once is created already dispatched
//! there, and its task sent then: `at_once.rs`). A trigger's slot (a
//! submit with a `slot_ms`) meets its job's concurrency policy at the
//! submit (`jobs::on_slot` over the job's active orders): `forbid` makes
//! the new order `Skipped`, `replace` cancels and kills the active ones;
//! the decision is carried out once the order is durable. Repeats are answered as `idempotency.rs`
//! decides.

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use super::super::idempotency::{check_repeat, FirstOrder};
use super::super::order_book::{Applied, ApplyError, Held, Order, OrderEvent, Phase};
use super::at_once::Placed;
use super::{Core, Effect, Event, Refusal, Reply, Then};
use crate::jobs;
use crate::jobs::{on_slot, SlotDecision};
use crate::protocol::*;

/// What a trigger's new order does to the job's runs still active.
#[derive(Debug, Clone)]
pub(super) enum Overlap {
    None,
    /// Not run (concurrency = forbid): ends cancelled with this reason.
    Skip(String),
    /// These orders are cancelled and their tasks killed (concurrency = replace).
    Replace(Vec<String>),
}

/// What waits for an order's record to be created.
#[derive(Debug)]
pub(super) enum Pending<R> {
    /// The submit of a job's order; `placed` when its task was placed at
    /// once (`at_once.rs`), its record created dispatched.
    Job {
        to: R,
        overlap: Overlap,
        placed: Option<Placed>,
    },
    /// The submit of a workflow order.
    Flow { to: R },
    /// The step attempt the order runs.
    Step(ParentStep),
    /// A member's order of this spread order.
    Member(String),
}

/// How creating an order's record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored; the record is at this revision.
    At(u64),
    /// Its request id's record exists already: this one, at this revision
    /// (`None` if it vanished since).
    Exists(Option<(Box<OrderInfo>, u64)>),
    /// Not stored.
    Failed(String),
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// A submit of a job's order, or of a workflow's (`flows/submit.rs`).
    pub(super) fn on_submit(&mut self, to: R, submit: SubmitOrder, by: Option<String>) {
        if let Some(refusal) = self.refused_for_pause(&submit) {
            return self.refuse(&to, refusal);
        }
        if let Some(spec) = self.workflows.get(&submit.job).cloned() {
            return self.submit_workflow(to, &spec, submit, by);
        }
        let SubmitOrder {
            job,
            params,
            request_id,
            slot_ms,
        } = submit;
        let Some(spec) = self.jobs.get(&job) else {
            return self.refuse(&to, self.unknown_job(job));
        };
        let (concurrency, restartable, retry) = (spec.concurrency, spec.restartable, spec.retry);
        let spread = spec.spread;
        let params = match jobs::resolve_params(spec, &params) {
            Ok(params) => params,
            Err(e) => return self.refuse(&to, Refusal::InvalidParam(e.to_string())),
        };
        if self.answer_repeat(&to, request_id.as_deref(), &job, &params) {
            return;
        }
        let order_id = self.new_order_id(request_id.as_deref());
        // (`allow` needs no look at the active runs: the book is not scanned)
        let overlap = match slot_ms {
            Some(_) if concurrency != ConcurrencyPolicy::Allow => {
                let active = self.book.active_of_job(&job);
                match on_slot(concurrency, active.len()) {
                    SlotDecision::Fire => Overlap::None,
                    SlotDecision::Skip => Overlap::Skip(format!(
                        "skipped: {} earlier run(s) of '{job}' still active (concurrency = forbid)",
                        active.len()
                    )),
                    SlotDecision::CancelRunningAndFire => Overlap::Replace(active),
                }
            }
            _ => Overlap::None,
        };
        let mut order = Order::new(order_id, job, params, request_id, self.now.ms);
        order.restartable = restartable;
        order.retry = retry;
        order.slot_ms = slot_ms;
        order.submitted_by = by;
        order.spread = spread;
        let at_once = match overlap {
            Overlap::None => self.place_at_once(&order),
            _ => None,
        };
        let (placed, info) = match at_once {
            Some((placed, info)) => (Some(placed), info),
            None => (None, Box::new(order.info())),
        };
        let pending = Pending::Job {
            to,
            overlap,
            placed,
        };
        self.create_as(order, info, pending);
    }

    /// Holds a new job order and asks for its record to be created (with
    /// a request id, only if that id's order is new); `pending` waits.
    pub(super) fn create(&mut self, order: Order, pending: Pending<R>) {
        let info = Box::new(order.info());
        self.create_as(order, info, pending);
    }

    /// [`Core::create`], the record saying `info`.
    fn create_as(&mut self, order: Order, info: Box<OrderInfo>, pending: Pending<R>) {
        let idempotent = order.request_id.is_some();
        self.book.insert(order);
        self.creating(&info.order_id, pending);
        self.emit(Effect::Create { info, idempotent });
    }

    pub(super) fn creating(&mut self, order_id: &str, pending: Pending<R>) {
        self.creating.insert(order_id.to_string(), pending);
    }

    /// An order's record was created, found, or not stored.
    pub(super) fn on_created(&mut self, info: OrderInfo, created: Created) {
        match self.creating.remove(&info.order_id) {
            Some(Pending::Job {
                to,
                overlap,
                placed,
            }) => self.job_created(to, overlap, placed, info, created),
            Some(Pending::Flow { to }) => self.flow_created(to, info, created),
            Some(Pending::Step(parent)) => self.step_created(parent, info, created),
            Some(Pending::Member(spread)) => self.member_created(spread, info, created),
            None => {}
        }
    }

    /// A job order's record was created, found, or not stored.
    fn job_created(
        &mut self,
        to: R,
        overlap: Overlap,
        placed: Option<Placed>,
        info: OrderInfo,
        created: Created,
    ) {
        if let Created::At(revision) = created {
            self.set_revision(&info.order_id, revision);
            return self.accepted(info, &to, overlap, placed);
        }
        // not run here: the room held for it is free again
        if placed.is_some() {
            self.unplace(placed);
            self.dispatch();
        }
        match created {
            Created::At(_) => {} // taken above
            Created::Exists(existing) => {
                self.book.remove(&info.order_id);
                let stored = existing.map(|(stored, revision)| (*stored, revision));
                self.answer_stored(&to, &info, stored.as_ref().map(|(s, _)| s));
                if let Some((stored, revision)) = stored {
                    self.take_up(&info, stored, revision);
                }
            }
            Created::Failed(e) if info.request_id.is_none() => {
                // its write may have landed, and no repeat can find it: the
                // record is made to say it never runs (written until stored)
                warn!(order = %info.order_id, error = %e, "order not confirmed stored; submit refused, and the order cancelled in case it was");
                let reason = format!(
                    "not run: JetStream did not confirm storing it ({e}), so its submit was refused"
                );
                let at_ms = self.now.ms;
                let skipped = OrderEvent::Skipped { reason, at_ms };
                if self.book.apply(&info.order_id, skipped).is_ok() {
                    self.finish(&info.order_id, Then::Nothing);
                }
                self.refuse(&to, Refusal::NotStored(e));
            }
            Created::Failed(e) => {
                match self.refused_unstored.failed(self.now.at) {
                    Some(0) => {
                        warn!(error = %e, "order not stored; submit refused (JetStream may be electing a stream leader, or have no quorum; the client may send it again)")
                    }
                    Some(held) => {
                        warn!(error = %e, "order not stored; submit refused, and {held} more in the last {}s (JetStream may be electing a stream leader, or have no quorum; clients may send them again)", super::quiet::QUIET_FOR.as_secs())
                    }
                    None => debug!(error = %e, "order not stored; submit refused"),
                }
                self.book.remove(&info.order_id);
                self.refuse(&to, Refusal::NotStored(e));
            }
        }
    }

    /// An order an earlier try of this submit stored, though its answer
    /// was lost (the submit was refused as not stored): no broker holds it,
    /// so this one takes it up, if the repeat asks for it.
    ///
    /// Its record may say dispatched with attempt 1: the earlier try placed
    /// it at once (`at_once.rs`), and its task was never sent. A run goes
    /// out only once its create is confirmed within the broker's tenure,
    /// so before any takeover could read the journal: a record that no
    /// book holds was never sent. It is taken up queued, and written so
    /// unless placed again at once.
    fn take_up(&mut self, ours: &OrderInfo, stored: OrderInfo, revision: u64) {
        let request_id = ours.request_id.as_deref().unwrap_or_default();
        let repeat = check_repeat(request_id, FirstOrder::of(&stored), &ours.job, &ours.params);
        let placed_at_once = stored.task_id.is_some() && stored.attempt == 1;
        let waiting =
            stored.state == OrderState::Accepted && (stored.task_id.is_none() || placed_at_once);
        if repeat.is_err() || !waiting || self.book.get(&stored.order_id).is_some() {
            return;
        }
        info!(order = %stored.order_id, "order stored by an earlier try of its submit taken up");
        let mut order = self.restored(&stored);
        if let Some(task_id) = stored.task_id.clone() {
            // never sent: back to the queue, the attempt not used up
            let _ = order.apply(OrderEvent::DispatchFailed { task_id });
        }
        self.book.restore([order]);
        self.set_revision(&stored.order_id, revision);
        self.retry_stored(&stored);
        self.dispatch();
        let queued = |o: &Order| o.phase == Phase::Queued;
        if stored.task_id.is_some() && self.book.get(&stored.order_id).is_some_and(queued) {
            // the record says dispatched: a broker taking over would wait
            // for a subagent that never had it
            self.store(&stored.order_id, Then::Nothing);
        }
    }

    /// The id of a new order: derived from its request id when it has one,
    /// so that a repeat finds the first order; else time-ordered and unique.
    pub(in crate::broker) fn new_order_id(&mut self, request_id: Option<&str>) -> String {
        match request_id {
            Some(r) => {
                let name = format!("{}/{r}", self.config.prefix);
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
            }
            None => {
                self.ids = self.ids.wrapping_add(1);
                let mut random = [0u8; 10];
                random[..8].copy_from_slice(&self.id_seed.to_le_bytes());
                random[8..].copy_from_slice(&(self.ids as u16).to_le_bytes());
                let seq = self.ids.to_le_bytes();
                for (r, s) in random.iter_mut().zip(seq.iter()) {
                    *r ^= s.rotate_left(3);
                }
                uuid::Builder::from_unix_timestamp_millis(self.now.ms, &random)
                    .into_uuid()
                    .to_string()
            }
        }
    }

    /// A new order is durable: answer, announce, and place it (or skip it,
    /// or cancel the runs it replaces, as its job's concurrency policy
    /// says); one placed at once sends its task (after its `accepted`).
    fn accepted(&mut self, info: OrderInfo, to: &R, overlap: Overlap, placed: Option<Placed>) {
        let order_id = info.order_id.clone();
        if placed.is_none() {
            self.book.enqueue(&order_id);
        }
        let reply = SubmitReply {
            order_id: info.order_id.clone(),
            job: info.job.clone(),
            state: OrderState::Accepted,
            duplicate: false,
        };
        self.reply(to, Reply::Submitted(reply));
        self.publish(Event::accepted(&info));
        if let Some(placed) = placed {
            self.run_placed(&order_id, placed);
        }
        match overlap {
            Overlap::None => {}
            Overlap::Skip(reason) => {
                info!(order = %order_id, %reason, "trigger slot skipped");
                let at_ms = self.now.ms;
                if self
                    .book
                    .apply(&order_id, OrderEvent::Skipped { reason, at_ms })
                    .is_ok()
                {
                    self.finish(&order_id, Then::Nothing);
                }
            }
            Overlap::Replace(active) => {
                for old in active {
                    info!(order = %old, by = %order_id, "run replaced by a new trigger slot (concurrency = replace)");
                    let reason = "replaced by a newer slot (concurrency = replace)";
                    let _ = self.cancel(&old, true, reason);
                }
            }
        }
        self.dispatch();
    }

    /// Answers a submit whose `request_id` this broker holds an order for:
    /// that order (a repeat), `busy` (it is being stored right now) or
    /// `conflict`. False when it holds none: the submit goes on.
    pub(in crate::broker) fn answer_repeat(
        &mut self,
        to: &R,
        request_id: Option<&str>,
        job: &str,
        params: &BTreeMap<String, String>,
    ) -> bool {
        let Some(request_id) = request_id else {
            return false;
        };
        let (first, durable, state) = match self.book.by_request_id(request_id) {
            Some(Held::Job(order)) => {
                let first = FirstOrder {
                    order_id: &order.id,
                    job: &order.job,
                    params: &order.params,
                };
                (first, order.durable, order.phase.wire())
            }
            Some(Held::Flow(flow)) => {
                let first = FirstOrder {
                    order_id: &flow.id,
                    job: flow.run.workflow(),
                    params: flow.run.params(),
                };
                (first, flow.durable, flow.state().wire())
            }
            None => return false,
        };
        let answer = if let Err(conflict) = check_repeat(request_id, first, job, params) {
            Reply::Error(Refusal::from(conflict).reply())
        } else if !durable {
            Reply::Error(Refusal::SubmitBeingStored.reply())
        } else {
            Reply::Submitted(SubmitReply {
                order_id: first.order_id.to_string(),
                job: first.job.to_string(),
                state,
                duplicate: true,
            })
        };
        self.reply(to, answer);
        true
    }

    /// Answers a submit whose order (`ours`) JetStream already held: the
    /// stored one (`stored`: `None` if it vanished since) when `ours`
    /// repeats it, `conflict` otherwise.
    pub(in crate::broker) fn answer_stored(
        &mut self,
        to: &R,
        ours: &OrderInfo,
        stored: Option<&OrderInfo>,
    ) {
        let request_id = ours.request_id.as_deref().unwrap_or_default();
        let first = stored.map(FirstOrder::of);
        if let Some(Err(conflict)) =
            first.map(|f| check_repeat(request_id, f, &ours.job, &ours.params))
        {
            return self.refuse(to, conflict.into());
        }
        let reply = SubmitReply {
            order_id: ours.order_id.clone(),
            job: ours.job.clone(),
            state: stored.map_or(OrderState::Accepted, |s| s.state),
            duplicate: true,
        };
        self.reply(to, Reply::Submitted(reply));
    }

    /// `baton order cancel`: answered with the order once the cancel is
    /// stored (a running order ends cancelled when its task ends).
    pub(super) fn on_cancel(&mut self, to: R, req: CancelOrder) {
        let CancelOrder { order_id, kill } = req;
        if self.book.flow(&order_id).is_some() {
            return self.command_flow(&to, &order_id, crate::workflow::Event::Cancel { kill });
        }
        let then = Then::Reply { to: to.clone() };
        if let Err(refusal) = self.cancel_then(&order_id, kill, "cancelled with --kill", then) {
            self.refuse(&to, refusal);
        }
    }

    /// Cancels an order: a waiting one at once, a running one when its task
    /// ends, which `kill` makes happen now (`reason` goes to the subagent).
    pub(in crate::broker) fn cancel(
        &mut self,
        order_id: &str,
        kill: bool,
        reason: &str,
    ) -> Result<(), Refusal> {
        self.cancel_then(order_id, kill, reason, Then::Nothing)
    }

    /// [`Core::cancel`], then `then` once the cancel is stored.
    pub(in crate::broker) fn cancel_then(
        &mut self,
        order_id: &str,
        kill: bool,
        reason: &str,
        then: Then<R>,
    ) -> Result<(), Refusal> {
        if self.book.get(order_id).is_some_and(|o| !o.durable) {
            return Err(Refusal::CancelWhileStoring(order_id.to_string()));
        }
        let at_ms = self.now.ms;
        match self.book.apply(order_id, OrderEvent::Cancel { at_ms }) {
            Ok(Applied::Moved { .. }) => {
                info!(order = %order_id, "order cancelled while waiting");
                self.finish(order_id, then);
            }
            Ok(Applied::Stale) => {
                let Some(order) = self.book.get(order_id) else {
                    self.store(order_id, then);
                    return Ok(());
                };
                if order.phase == Phase::Spread {
                    info!(order = %order_id, "cancelling a spread order's members");
                    let members = self.unfinished_members(order_id);
                    self.store(order_id, then);
                    self.cancel_members(members, kill);
                    return Ok(());
                }
                let running = order.task_id.clone().zip(order.subagent_id.clone());
                if let (true, false, Some((task_id, subagent_id))) =
                    (kill, order.phase.is_final(), running)
                {
                    info!(order = %order_id, task = %task_id, "killing a cancelled order's task");
                    let kill = KillTask {
                        task_id,
                        reason: reason.into(),
                        epoch: self.epoch,
                    };
                    self.emit(Effect::Kill { subagent_id, kill });
                }
                self.store(order_id, then);
            }
            Err(ApplyError::UnknownOrder(_)) => {
                return Err(Refusal::NotHeld(order_id.to_string()));
            }
            Err(ApplyError::NotAllowed { phase, .. }) => {
                return Err(Refusal::AlreadyEnded {
                    order: order_id.to_string(),
                    state: phase.wire().as_str().to_string(),
                });
            }
        }
        Ok(())
    }
}
