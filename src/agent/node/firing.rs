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
//! A workflow's triggers are scheduled as a job's, under its key
//! `workflow.NAME` ([`workflow_key`]); its slots are the same
//! [`SubmitOrder`] with the workflow's name as `job`.
//!
//! Each spell as Scheduler is numbered (its term). Everything started here
//! carries the term it was started in; when the
//! role has ended (or ended and come back) since, its result is ignored. A
//! submit already sent may still create its order: a successor's submit of
//! the same slot carries the same idempotency key and finds it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use futures::stream::{LocalBoxStream, StreamExt};
use tracing::{debug, info, warn};

use super::Agent;
use crate::agent::outbox::{retry_delay, submit_failure, Fire, FiredLedger, Outbox, SubmitFailure};
use crate::agent::triggers::{submitted_name, workflow_key, Due, Schedule, TimerQueue, Trigger};
use crate::bus::{Bus, BusError, Kv};
use crate::config::Config;
use crate::protocol::{
    FiredSlot, JobSpec, MisfirePolicy, SubmitOrder, SubmitReply, TriggerSpec, WorkflowSpec,
};
use crate::time::now_ms;

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
    jobs_watch: Option<SpawnHandle>,
    workflows_watch: Option<SpawnHandle>,
    due: Vec<Due>,
    last_failure_warning: Option<std::time::Instant>,
}

impl Firing {
    /// Jobs and workflows with a schedule.
    pub(super) fn schedules(&self) -> usize {
        self.queue.len()
    }

    fn watch_mut(&mut self, source: Source) -> &mut Option<SpawnHandle> {
        match source {
            Source::Jobs => &mut self.jobs_watch,
            Source::Workflows => &mut self.workflows_watch,
        }
    }
}

/// A bucket of deployed things with triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Jobs,
    Workflows,
}

/// A job or workflow deployed, changed (`Some`: its triggers and misfire
/// policy) or removed (`None`), under its schedule key.
struct Deployed {
    key: String,
    schedule: Option<(Vec<TriggerSpec>, MisfirePolicy)>,
}

type DeployedWatch = LocalBoxStream<'static, Deployed>;

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Jobs => "jobs",
            Source::Workflows => "workflows",
        }
    }

    fn bucket(self, config: &Config) -> String {
        match self {
            Source::Jobs => config.jobs_bucket(),
            Source::Workflows => config.workflows_bucket(),
        }
    }

    /// Every deployed one's triggers, then every change.
    async fn watch(self, bus: Bus, bucket: String) -> Result<DeployedWatch, BusError> {
        Ok(match self {
            Source::Jobs => {
                let kv: Kv<JobSpec> = bus.kv(&bucket).await?;
                let watch = kv.watch().await?.map(|change| Deployed {
                    key: change.key,
                    schedule: change.value.map(|spec| (spec.triggers, spec.misfire)),
                });
                watch.boxed_local()
            }
            Source::Workflows => {
                let kv: Kv<WorkflowSpec> = bus.kv(&bucket).await?;
                let watch = kv.watch().await?.map(|change| Deployed {
                    key: workflow_key(&change.key),
                    schedule: change.value.map(|spec| (spec.triggers, spec.misfire)),
                });
                watch.boxed_local()
            }
        })
    }
}

impl Agent {
    fn firing(&mut self, term: u64) -> Option<&mut Firing> {
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
            jobs_watch: None,
            workflows_watch: None,
            due: Vec::new(),
            last_failure_warning: None,
        });
        self.load(self.term, ctx);
    }

    /// Drops the schedules, the unsent fires and pending timers; submits
    /// already sent finish on their own.
    pub(super) fn stop_firing(&mut self, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing.take() else {
            return;
        };
        let handles = [
            firing.timer.map(|(_, h)| h),
            firing.jobs_watch,
            firing.workflows_watch,
        ];
        for handle in handles.into_iter().flatten() {
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
            let kv: Kv<FiredSlot> = bus.kv(&bucket).await?;
            let records = kv.entries().await?;
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
        self.watch(term, Source::Jobs, ctx);
        self.watch(term, Source::Workflows, ctx);
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
                                act.on_deployed(term, change, ctx)
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
                        *firing.watch_mut(source) = Some(handle);
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
            *firing.watch_mut(source) = None;
        }
        ctx.run_later(RELOAD_DELAY, move |act, ctx| {
            if act.firing(term).is_some() {
                act.watch(term, source, ctx);
            }
        });
    }

    /// A job or workflow was deployed, changed or removed: set or drop its
    /// schedule (`job` is its key in what follows).
    fn on_deployed(&mut self, term: u64, change: Deployed, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing(term) else {
            return;
        };
        let job = change.key;
        let schedule = change
            .schedule
            .filter(|(triggers, _)| !triggers.is_empty())
            .and_then(
                |(triggers, misfire)| match Trigger::compile_all(&triggers) {
                    Ok(trigger) => Some(Schedule { trigger, misfire }),
                    Err(e) => {
                        warn!(%job, error = %e, "the triggers do not compile; not firing them");
                        None
                    }
                },
            );
        match schedule {
            Some(schedule) => {
                // an update keeps the job's progress; a new one starts from its record
                let last = firing.queue.cursor(&job).or_else(|| {
                    firing
                        .ledger
                        .as_ref()
                        .and_then(|ledger| ledger.last_fired(&job))
                });
                firing.queue.insert(&job, schedule, last, now_ms());
                debug!(%job, last_fired_slot = ?last, next_slot = ?firing.queue.next_slot(&job), "schedule set");
            }
            None => {
                if firing.queue.remove(&job) {
                    debug!(%job, "schedule removed");
                }
            }
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
        for slot in due.drain(..) {
            firing.outbox.push(slot);
        }
        firing.due = due;
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
        let Due { job, slot_ms } = &fire.due;
        let late_ms = now_ms().saturating_sub(*slot_ms);
        debug!(%job, slot_ms, late_ms, attempt = fire.attempt, "firing");
        let order = SubmitOrder {
            job: submitted_name(job).to_string(),
            params: BTreeMap::new(),
            request_id: Some(fire.due.idempotency_key()),
            slot_ms: Some(*slot_ms),
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
        let agent_id = self.id.clone();
        let Some(firing) = self.firing(term) else {
            return;
        };
        let Due { job, slot_ms } = &fire.due;
        match reply {
            Ok(reply) => {
                firing.outbox.answered(job);
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
