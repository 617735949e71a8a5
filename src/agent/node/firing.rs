//! The Scheduler's work, as IO on the [`Agent`]: read how far each job has
//! fired (every `FiredSlot` in `baton_fired`), watch the deployed jobs and
//! workflows into the [`TimerQueue`] (each job's triggers starting after
//! its last fired slot, so missed slots meet the misfire policy), wake at
//! its next deadline (sleeping at most 1 s, `LONGEST_SLEEP`), submit the
//! due slots through the [`Outbox`] with `request_id = job@slot` and
//! `slot_ms` (a submit that fails for a transient reason is retried with
//! backoff while the agent is Scheduler), and record each fired slot in
//! the fired bucket through the [`FiredLedger`] (key: the job name;
//! written after the slot's order was accepted; a new Scheduler starts
//! from it).
//!
//! Subject triggers have no slots: only a job's clock triggers are queued
//! here, and its subject triggers go to their loop (`subjects.rs`), started
//! and stopped with the job's deploys and pauses.
//!
//! A workflow's triggers are scheduled as a job's, under its key
//! `workflow.NAME` ([`workflow_key`]); its slots are the same
//! [`SubmitOrder`] with the workflow's name as `job`.
//!
//! A job or workflow an operator paused (`job.NAME` in the switches bucket,
//! `watched.rs`) keeps its schedule out of the queue: its slots are not
//! fired and its cursor stays at its last fired slot, so on resume its
//! misfire policy decides about the slots skipped. (The broker refuses a
//! slot of a paused job too, should one be fired before the pause is seen.)
//!
//! Each spell as Scheduler is numbered (its term). Everything started here
//! carries the term it was started in; when the
//! role has ended (or ended and come back) since, its result is ignored. A
//! submit already sent may still create its order: a successor's submit of
//! the same slot carries the same idempotency key and finds it.
//!
//! Size: at the ~500-line mark; the event triggers live in `subjects.rs`
//! and `files.rs`, and the missed slots' events are one short method here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::files::FileTriggers;
use super::subjects::SubjectLoops;
use super::watched::{Source, Watched};
use super::Agent;
use crate::agent::outbox::{retry_delay, submit_failure, Fire, FiredLedger, Outbox, SubmitFailure};
use crate::bus::{BusError, Kv};
use crate::protocol::{FiredSlot, SubmitOrder, SubmitReply, TriggerSpec};
use crate::time::now_ms;
use crate::triggers::{submitted_name, workflow_key, Due, Schedule, TimerQueue, Trigger};

/// The timer wakes at least this often, so a wall clock that jumps is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(1);
/// After failing to read the buckets, how long to wait before trying again.
const RELOAD_DELAY: Duration = Duration::from_secs(1);
/// At most one warning about failing submits in this long; the rest go to debug.
const FAILURE_WARN_EVERY: Duration = Duration::from_secs(5);

/// The state of one spell as Scheduler.
pub(super) struct Firing {
    term: u64,
    queue: TimerQueue,
    outbox: Outbox,
    /// Set once the fired bucket has been read.
    ledger: Option<FiredLedger>,
    fired_kv: Option<Kv<FiredSlot>>,
    /// The deadline the timer is set for.
    timer: Option<(u64, SpawnHandle)>,
    /// The watches of the jobs, workflows and pauses.
    watches: HashMap<Source, SpawnHandle>,
    /// Every schedule deployed, paused or not, by schedule key.
    schedules: HashMap<String, Arc<Schedule>>,
    /// When each schedule was deployed (Unix ms, the jobs bucket's time).
    deployed: HashMap<String, u64>,
    /// The names (of jobs and workflows) an operator paused.
    pub(super) paused: HashSet<String>,
    due: Vec<Due>,
    last_failure_warning: Option<std::time::Instant>,
    /// The subject triggers' loops (`subjects.rs`).
    pub(super) subjects: SubjectLoops,
    /// The file triggers (`files.rs`).
    pub(super) files: FileTriggers,
}

impl Firing {
    /// Jobs and workflows with a schedule.
    pub(super) fn schedules(&self) -> usize {
        self.queue.len()
    }
}

impl Firing {
    /// Puts `key`'s schedule in the queue, or takes it out when it has none
    /// or is paused. An update keeps its progress; a schedule queued anew
    /// starts after its last fired slot (so on resume the misfire policy
    /// decides about the slots skipped while paused), or, never fired,
    /// after its deploy: slots due while no Scheduler held the role (or
    /// before a new one had read the jobs) meet the misfire policy, as a
    /// fired job's do, instead of being passed over unseen.
    fn requeue(&mut self, key: &str) {
        let paused = self.paused.contains(submitted_name(key));
        match self.schedules.get(key).filter(|_| !paused) {
            Some(schedule) => {
                let now = now_ms();
                let last = (self.queue.cursor(key))
                    .or_else(|| self.ledger.as_ref().and_then(|l| l.last_fired(key)))
                    .or_else(|| self.deployed.get(key).map(|&at| at.min(now)));
                self.queue.insert(key, schedule.clone(), last, now);
                debug!(job = %key, last_fired_slot = ?last, next_slot = ?self.queue.next_slot(key), "schedule set");
            }
            None => {
                if self.queue.remove(key) {
                    debug!(job = %key, paused, "schedule removed");
                }
            }
        }
    }
}

impl Agent {
    pub(super) fn firing(&mut self, term: u64) -> Option<&mut Firing> {
        self.firing.as_mut().filter(|f| f.term == term)
    }

    pub(super) fn start_firing(&mut self, ctx: &mut Context<Self>) {
        self.stop_firing(ctx);
        self.term += 1;
        let tolerance_ms = self.config.agent.lateness_tolerance.as_millis() as u64;
        self.firing = Some(Firing {
            term: self.term,
            queue: TimerQueue::new(tolerance_ms),
            outbox: Outbox::new(self.config.agent.max_in_flight),
            ledger: None,
            fired_kv: None,
            timer: None,
            watches: HashMap::new(),
            schedules: HashMap::new(),
            deployed: HashMap::new(),
            paused: HashSet::new(),
            due: Vec::new(),
            last_failure_warning: None,
            subjects: SubjectLoops::default(),
            files: FileTriggers::default(),
        });
        self.load(self.term, ctx);
        self.load_files(self.term, ctx);
        crate::metrics::agent().scheduler.set(1);
    }

    /// Drops the schedules, the unsent fires and pending timers; submits
    /// already sent finish on their own.
    pub(super) fn stop_firing(&mut self, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing.take() else {
            return;
        };
        crate::metrics::agent().scheduler.set(0);
        firing.subjects.stop(ctx);
        let watches = firing.watches.into_values();
        for handle in firing.timer.map(|(_, h)| h).into_iter().chain(watches) {
            ctx.cancel_future(handle);
        }
        info!(
            schedules = firing.queue.len(),
            unsent = firing.outbox.waiting(),
            in_flight = firing.outbox.in_flight(),
            "stopped firing"
        );
        self.term += 1;
    }

    /// Reads every fired record, then watches the jobs and the workflows.
    fn load(&mut self, term: u64, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let bucket = self.config.fired_bucket();
        let load = async move {
            let began = std::time::Instant::now();
            let kv: Kv<FiredSlot> = bus.kv(&bucket).await?;
            let records = kv.entries().await?;
            let took_ms = began.elapsed().as_millis() as u64;
            info!(records = records.len(), took_ms, "read the fired slots");
            Ok::<_, BusError>((kv, records))
        };
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            if act.firing(term).is_none() {
                return;
            }
            match loaded {
                Ok((kv, records)) => act.on_loaded(term, kv, records, ctx),
                Err(e) => {
                    warn!(error = %e, "cannot read the fired slots; trying again");
                    ctx.run_later(RELOAD_DELAY, move |act, ctx| {
                        if act.firing(term).is_some() {
                            act.load(term, ctx);
                        }
                    });
                }
            }
        }));
    }

    fn on_loaded(
        &mut self,
        term: u64,
        kv: Kv<FiredSlot>,
        records: HashMap<String, FiredSlot>,
        ctx: &mut Context<Self>,
    ) {
        let Some(firing) = self.firing(term) else {
            return;
        };
        info!(
            records = records.len(),
            "read the fired slots; watching jobs and workflows"
        );
        firing.ledger = Some(FiredLedger::new(records.into_values()));
        firing.fired_kv = Some(kv);
        for source in Source::ALL {
            self.watch(term, source, ctx);
        }
    }

    fn watch(&mut self, term: u64, source: Source, ctx: &mut Context<Self>) {
        let open = source.watch(self.bus.clone(), source.bucket(&self.config));
        ctx.spawn(open.into_actor(self).map(move |watch, act, ctx| {
            if act.firing(term).is_none() {
                return;
            }
            match watch {
                Ok(watch) => {
                    let handle = ctx.spawn(
                        watch
                            .into_actor(act)
                            .map(move |change, act: &mut Agent, ctx| {
                                act.on_watched(term, change, ctx)
                            })
                            .finish()
                            .map(move |_, act: &mut Agent, ctx| {
                                if act.firing(term).is_some() {
                                    warn!(watch = source.name(), "watch ended; watching again");
                                    act.rewatch(term, source, ctx);
                                }
                            }),
                    );
                    if let Some(firing) = act.firing(term) {
                        firing.watches.insert(source, handle);
                    }
                }
                Err(e) => {
                    warn!(watch = source.name(), error = %e, "cannot watch; trying again");
                    act.rewatch(term, source, ctx);
                }
            }
        }));
    }

    fn rewatch(&mut self, term: u64, source: Source, ctx: &mut Context<Self>) {
        if let Some(firing) = self.firing(term) {
            firing.watches.remove(&source);
        }
        ctx.run_later(RELOAD_DELAY, move |act, ctx| {
            if act.firing(term).is_some() {
                act.watch(term, source, ctx);
            }
        });
    }

    /// A job or workflow was deployed, changed or removed, or paused or
    /// resumed: its schedule is kept, and queued while not paused.
    fn on_watched(&mut self, term: u64, change: Watched, ctx: &mut Context<Self>) {
        self.files_watched(term, &change, ctx);
        let Some(firing) = self.firing(term) else {
            return;
        };
        match change {
            Watched::Schedule {
                key,
                schedule,
                deployed_ms,
            } => {
                let triggers = schedule.as_ref().map(|(t, _)| t.as_slice());
                let paused = firing.paused.clone();
                self.subjects_changed(&key, triggers, &paused, ctx);
                let Some(firing) = self.firing(term) else {
                    return;
                };
                // subject triggers fire on messages, not on the clock
                let schedule = schedule
                    .map(|(t, m)| (t.into_iter().filter(TriggerSpec::is_clock).collect::<Vec<_>>(), m))
                    .filter(|(triggers, _)| !triggers.is_empty())
                    .and_then(|(triggers, misfire)| {
                        match Trigger::compile_all(&triggers, &key) {
                            Ok(trigger) => Some(Arc::new(Schedule { trigger, misfire })),
                            Err(e) => {
                                warn!(job = %key, error = %e, "the triggers do not compile; not firing them");
                                None
                            }
                        }
                    });
                match schedule {
                    Some(schedule) => {
                        firing.deployed.insert(key.clone(), deployed_ms);
                        firing.schedules.insert(key.clone(), schedule)
                    }
                    None => {
                        firing.deployed.remove(&key);
                        firing.schedules.remove(&key)
                    }
                };
                firing.requeue(&key);
            }
            Watched::Pause { name, paused } => {
                let changed = match paused {
                    true => firing.paused.insert(name.clone()),
                    false => firing.paused.remove(&name),
                };
                if changed {
                    info!(job = %name, paused, "pause switched");
                    firing.requeue(&name);
                    firing.requeue(&workflow_key(&name));
                    self.sync_subjects(&name, paused, ctx);
                }
            }
            Watched::Other => {}
        }
        self.arm_timer(ctx);
    }

    /// Sets the one timer for the queue's next deadline, when it changed.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing.as_mut() else {
            return;
        };
        let next = firing.queue.next_deadline();
        if firing.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = firing.timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(at) = next else {
            return;
        };
        let delay = Duration::from_millis(at.saturating_sub(now_ms())).min(LONGEST_SLEEP);
        let term = firing.term;
        let handle = ctx.run_later(delay, move |act, ctx| act.on_timer(term, ctx));
        firing.timer = Some((at, handle));
    }

    fn on_timer(&mut self, term: u64, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing(term) else {
            return;
        };
        firing.timer = None;
        let mut due = std::mem::take(&mut firing.due);
        firing.queue.pop_due(now_ms(), &mut due);
        crate::metrics::agent().missed(firing.queue.take_missed());
        let gaps = firing.queue.take_gaps();
        for slot in due.drain(..) {
            firing.outbox.push(slot);
        }
        firing.due = due;
        self.tell_missed(gaps);
        self.send_fires(ctx);
        self.arm_timer(ctx);
    }

    /// Submits what the outbox lets go now.
    fn send_fires(&mut self, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing.as_mut() else {
            return;
        };
        let term = firing.term;
        let mut fires = Vec::new();
        while let Some(fire) = firing.outbox.take() {
            fires.push(fire);
        }
        for fire in fires {
            self.submit(term, fire, ctx);
        }
    }

    fn submit(&mut self, term: u64, fire: Fire, ctx: &mut Context<Self>) {
        let Due {
            job,
            slot_ms,
            nominal_ms,
        } = &fire.due;
        let late_ms = now_ms().saturating_sub(*slot_ms);
        debug!(%job, slot_ms, late_ms, attempt = fire.attempt, "firing");
        if fire.attempt == 0 {
            crate::metrics::agent()
                .fire_lateness
                .observe(late_ms as f64 / 1000.0);
        }
        let order = SubmitOrder {
            job: submitted_name(job).to_string(),
            params: BTreeMap::new(),
            request_id: Some(fire.due.idempotency_key()),
            // the slot, not the jittered fire: a changed jitter keeps the key
            slot_ms: Some(*nominal_ms),
        };
        self.submitting += 1;
        let bus = self.bus.clone();
        let subject = bus.subjects().submit();
        let timeout = self.config.nats.request_timeout;
        let request = async move {
            bus.request::<_, SubmitReply>(subject, &order, timeout)
                .await
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |reply, act, ctx| act.on_submitted(term, fire, reply, ctx)),
        );
    }

    fn on_submitted(
        &mut self,
        term: u64,
        fire: Fire,
        reply: Result<SubmitReply, BusError>,
        ctx: &mut Context<Self>,
    ) {
        self.submitting = self.submitting.saturating_sub(1);
        let tolerance_ms = self.config.agent.lateness_tolerance.as_millis() as u64;
        let agent_id = self.id.clone();
        let Some(firing) = self.firing(term) else {
            return;
        };
        let Due { job, slot_ms, .. } = &fire.due;
        match reply {
            Ok(reply) => {
                firing.outbox.answered(job);
                let late = now_ms().saturating_sub(*slot_ms) > tolerance_ms;
                crate::metrics::agent().fired(reply.duplicate, late);
                debug!(%job, slot_ms, order = %reply.order_id, duplicate = reply.duplicate, "slot fired");
                let record = FiredSlot {
                    job: job.clone(),
                    slot_ms: *slot_ms,
                    order_id: reply.order_id,
                    agent_id,
                    at_ms: now_ms(),
                };
                if let Some(write) = firing.ledger.as_mut().and_then(|l| l.fired(record)) {
                    self.record(term, write, ctx);
                }
            }
            Err(e) => match submit_failure(&e) {
                SubmitFailure::Drop => {
                    firing.outbox.answered(job);
                    crate::metrics::agent().slot("skipped", "refused");
                    warn!(%job, slot_ms, error = %e, "slot not fired: the broker refused it");
                }
                SubmitFailure::Retry => {
                    firing.outbox.failed();
                    let attempt = fire.attempt + 1;
                    let delay = retry_delay(attempt);
                    let now = std::time::Instant::now();
                    let quiet = firing
                        .last_failure_warning
                        .is_some_and(|at| now.duration_since(at) < FAILURE_WARN_EVERY);
                    if quiet {
                        debug!(%job, slot_ms, attempt, error = %e, "submit failed; will retry");
                    } else {
                        firing.last_failure_warning = Some(now);
                        warn!(%job, slot_ms, attempt, error = %e, "submit failed; will retry");
                    }
                    ctx.run_later(delay, move |act, ctx| {
                        if let Some(firing) = act.firing(term) {
                            firing.outbox.retry(fire);
                            act.send_fires(ctx);
                        }
                    });
                }
            },
        }
        self.send_fires(ctx);
    }

    /// Writes a job's fired record; the ledger says when to write the next.
    fn record(&mut self, term: u64, record: FiredSlot, ctx: &mut Context<Self>) {
        let Some(kv) = self.firing(term).and_then(|f| f.fired_kv.clone()) else {
            return;
        };
        let write = async move {
            let written = kv.put(&record.job, &record).await;
            (record, written)
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |(record, written), act, ctx| {
                    let Some(firing) = act.firing(term) else {
                        return;
                    };
                    if let Err(e) = &written {
                        warn!(job = %record.job, slot_ms = record.slot_ms, error = %e, "cannot record the fired slot");
                    }
                    let ledger = firing.ledger.as_mut();
                    let next = ledger.and_then(|l| l.wrote(&record.job, record.slot_ms, written.is_ok()));
                    if let Some(next) = next {
                        act.record(term, next, ctx);
                    }
                }),
        );
    }
}

impl Agent {
    /// Tells of slots the misfire policy passed over (one event per
    /// schedule and gap, for the active broker's notifier; at most once).
    fn tell_missed(&self, gaps: Vec<crate::triggers::Gap>) {
        let subject = self.bus.subjects().slots_missed();
        for gap in gaps {
            let name = submitted_name(&gap.job);
            info!(job = %name, missed = gap.count, "slots passed over by the misfire policy");
            let event = crate::protocol::SlotsMissed {
                job: name.to_string(),
                workflow: name != gap.job,
                scheduler: self.id.clone(),
                count: gap.count,
                after_ms: gap.after_ms,
                until_ms: gap.until_ms,
                at_ms: now_ms(),
            };
            self.bus.post(subject.clone(), &event);
        }
    }
}
