//! The actor carries out the core's effects: it replies, publishes,
//! writes the journal, sends tasks and probes, and sets timers, feeding
//! each outcome back into the core as an input. Nothing here decides.
//!
//! `step` hands an input to the core; `act` carries out each effect: a
//! journal write through `recovery::write_over`, a run request after
//! `posted()` (so `accepted` precedes `started`), a timer as a sleep. A
//! reply goes to a [`To`]: where to answer, and for a state-changing command
//! its audit record, which the reply completes.
//!
//! Each piece of IO and each timer runs as its own task in [`InFlight`]
//! and comes back to the core as an input through a channel the actor
//! reads as a stream: an actix context polls everything spawned on it at
//! every wake-up, which at a thousand orders a second in flight was a
//! fifth of the broker's CPU. The tasks are dropped with the broker, so
//! a broker that steps down leaves no IO of its own running.

use std::future::Future;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::mpsc;
use tokio::task::JoinSet;
use tracing::{error, warn};

use super::audit::Audited;
use super::core::{self, Created, Effect, Event, Input, Now, Probed, Reply, RunReply};
use super::metrics;
use super::recovery::write_over;
use super::Broker;
use crate::bus::{BusError, Replier};
use crate::protocol::*;
use crate::time::now_ms;

/// How long a liveness probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The time, for the core.
pub(super) fn now() -> Now {
    Now {
        at: Instant::now(),
        ms: now_ms(),
    }
}

/// Where the core's reply to a request goes, and, for a state-changing
/// command, its audit record: the reply is the command's outcome.
#[derive(Debug, Clone)]
pub(super) struct To {
    replier: Replier,
    audited: Option<Box<Audited>>,
}

impl To {
    /// Where to answer a request, and the audit record the answer
    /// completes (for a state-changing command).
    pub fn answering(audited: Option<Audited>) -> impl FnOnce(Replier) -> To {
        move |replier| To {
            replier,
            audited: audited.map(Box::new),
        }
    }
}

/// The core's IO and timers in flight, each its own task, and the channel
/// their outcomes come back on.
pub(super) struct InFlight {
    tasks: JoinSet<()>,
    done: mpsc::UnboundedSender<Input<To>>,
}

impl InFlight {
    /// The tasks, and the stream of their outcomes for the actor to read.
    pub fn new() -> (InFlight, mpsc::UnboundedReceiver<Input<To>>) {
        let (done, outcomes) = mpsc::unbounded();
        let tasks = JoinSet::new();
        (InFlight { tasks, done }, outcomes)
    }

    /// Runs `io`; its outcome, if any, goes back to the core.
    fn start(&mut self, io: impl Future<Output = Option<Input<To>>> + 'static) {
        self.reap();
        let done = self.done.clone();
        self.tasks.spawn_local(async move {
            if let Some(input) = io.await {
                // fails only once the broker is gone, and its tasks with it
                let _ = done.unbounded_send(input);
            }
        });
    }

    /// Frees the tasks that ended.
    fn reap(&mut self) {
        while let Some(ended) = self.tasks.try_join_next() {
            if let Err(e) = ended {
                if e.is_panic() {
                    error!(error = %e, "a broker IO task panicked");
                }
            }
        }
    }

    /// How many tasks have not ended yet (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }
}

/// The outcome of a piece of the core's IO, or a timer that came due.
impl StreamHandler<Input<To>> for Broker {
    fn handle(&mut self, input: Input<To>, _: &mut Self::Context) {
        if let Input::RunReply {
            run,
            reply: RunReply::Accepted,
            ..
        } = &input
        {
            self.dispatched(run);
        }
        self.step(input);
    }

    /// Never: the broker holds the sending side as long as it lives.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Broker {
    /// Hands an input to the core and carries out what it decides.
    pub(super) fn step(&mut self, input: Input<To>) {
        let effects = self.core.step(input, now());
        self.act(effects);
    }

    /// Carries out the effects the actor's own handlers left in the core.
    pub(super) fn flush(&mut self) {
        let effects = self.core.take_effects();
        self.act(effects);
    }

    fn act(&mut self, effects: Vec<Effect<To>>) {
        for effect in effects {
            match effect {
                Effect::Reply(to, reply) => self.send_reply(&to, reply),
                Effect::Publish(event) => self.publish(event),
                Effect::Write { info, revision } => self.write(info, revision),
                Effect::Create { info, idempotent } => self.create(info, idempotent),
                Effect::Kill { subagent_id, kill } => self.kill(subagent_id, kill),
                Effect::Run {
                    subagent_id,
                    run,
                    again,
                } => self.send_run(subagent_id, run, again),
                Effect::Probe { subagent_id } => self.probe(subagent_id),
                Effect::Later { after, timer } => self.in_flight.start(async move {
                    tokio::time::sleep(after).await;
                    Some(Input::Timer(timer))
                }),
                Effect::Deploy { to, deploy } => self.deploy(to, deploy),
                Effect::Stop {
                    to,
                    subagent_id,
                    stop,
                } => self.stop(to, subagent_id, stop),
                Effect::Switch { to, of, switch } => self.switch(to, of, switch),
            }
        }
    }

    pub(super) fn send_reply(&self, to: &To, reply: Reply) {
        if let Some(audited) = &to.audited {
            let outcome = match &reply {
                Reply::Error(e) => Err((e.error.code, e.error.message.as_str())),
                _ => Ok(()),
            };
            self.audit(audited, outcome);
        }
        let to = &to.replier;
        match reply {
            Reply::Submitted(r) => self.bus.reply(to, &r),
            Reply::Ack(r) => self.bus.reply(to, &r),
            Reply::Registered(r) => self.bus.reply(to, &r),
            Reply::Left(r) => self.bus.reply(to, &r),
            Reply::Certified(r) => self.bus.reply(to, &r),
            Reply::Order(r) => self.bus.reply(to, &*r),
            Reply::Deployed(r) => self.bus.reply(to, &r),
            Reply::Switched(r) => self.bus.reply(to, &r),
            Reply::JobSwitched(r) => self.bus.reply(to, &r),
            Reply::Error(r) => self.bus.reply(to, &r),
        }
    }

    fn publish(&self, event: Event) {
        let s = self.bus.subjects();
        match event {
            Event::Accepted(e) => {
                metrics::accepted(&e);
                let subject = s.event(&e.job, &e.order_id, EventKind::Accepted);
                self.bus.post(subject, &e);
            }
            Event::Finished(e) => {
                metrics::finished(&e);
                let subject = s.event(&e.job, &e.order_id, EventKind::Finished);
                self.bus.post(subject, &e);
            }
            Event::Subagent(e) => self.bus.post(s.subagent_changed(&e.subagent_id), &e),
            Event::Changed(e) => {
                let subject = s.event(&e.workflow, &e.order_id, EventKind::Changed);
                self.bus.post(subject, &e);
            }
        }
    }

    fn write(&mut self, info: Box<OrderInfo>, revision: Option<u64>) {
        let kv = self.orders_kv.clone();
        let tenure = self.tenure.clone();
        let write = async move {
            let holds = || tenure.holds(Instant::now());
            let began = Instant::now();
            let written = write_over(&kv, &info, revision, holds).await;
            metrics::journal_write("write", began);
            let stored = match written {
                Ok(revision) => core::Stored::At(revision),
                Err(e) => e.stored(),
            };
            Some(Input::Written { info, stored })
        };
        self.in_flight.start(write);
    }

    fn create(&mut self, info: Box<OrderInfo>, idempotent: bool) {
        let kv = self.orders_kv.clone();
        let create = async move {
            let key = info.order_id.as_str();
            // the revision each later write of the order compares and swaps on
            let began = Instant::now();
            let created = if idempotent {
                kv.create_revision(key, &*info).await
            } else {
                kv.put(key, &*info).await.map(Some)
            };
            metrics::journal_write("create", began);
            let created = match created {
                Ok(Some(revision)) => Created::At(revision),
                Ok(None) => match kv.get_with_revision(key).await {
                    Ok(existing) => Created::Exists(existing.map(|(i, r)| (Box::new(i), r))),
                    Err(e) => Created::Failed(e.to_string()),
                },
                Err(e) => Created::Failed(e.to_string()),
            };
            Some(Input::Created { info, created })
        };
        self.in_flight.start(create);
    }

    fn kill(&mut self, subagent_id: String, kill: KillTask) {
        let bus = self.bus.clone();
        let subject = bus.subjects().kill(&subagent_id);
        let timeout = self.config.broker.dispatch_timeout;
        let request = async move {
            if let Err(e) = bus
                .request::<_, KillAccepted>(subject, &kill, timeout)
                .await
            {
                warn!(error = %e, "kill of a cancelled task not delivered; it ends cancelled when it finishes");
            }
            None
        };
        self.in_flight.start(request);
    }

    fn send_run(&mut self, subagent_id: String, run: Box<RunTask>, again: bool) {
        let bus = self.bus.clone();
        let subject = bus.subjects().run(&subagent_id);
        let timeout = self.config.broker.dispatch_timeout;
        let request = async move {
            // the order's accepted event goes out before its task can start
            bus.posted().await;
            let reply = match bus.request::<_, RunAccepted>(subject, &*run, timeout).await {
                Ok(_) => RunReply::Accepted,
                Err(e @ BusError::NoResponders { .. }) => RunReply::NoResponders(e.to_string()),
                Err(e @ BusError::Remote(_)) => RunReply::Refused(e.to_string()),
                Err(e) => RunReply::Unknown(e.to_string()),
            };
            Some(Input::RunReply {
                subagent_id,
                run,
                again,
                reply,
            })
        };
        self.in_flight.start(request);
    }

    /// A job order's first task was accepted: the dispatch latency, from
    /// the order accepted (as the book holds it) to now.
    fn dispatched(&self, run: &RunTask) {
        if run.attempt != 1 {
            return;
        }
        if let Some(order) = self.core.book.get(&run.order_id) {
            let waited_ms = now_ms().saturating_sub(order.accepted_at_ms);
            crate::metrics::broker()
                .dispatch_latency
                .observe(waited_ms as f64 / 1000.0);
        }
    }

    fn probe(&mut self, subagent_id: String) {
        let bus = self.bus.clone();
        let subject = bus.subjects().ping(&subagent_id);
        let request = async move {
            let reply = match bus
                .request::<_, Pong>(subject, &Ping {}, PROBE_TIMEOUT)
                .await
            {
                Ok(pong) => Probed::Answered(pong),
                Err(BusError::NoResponders { .. }) => Probed::NoResponders,
                Err(e) => Probed::Unanswered(e.to_string()),
            };
            Some(Input::Probed { subagent_id, reply })
        };
        self.in_flight.start(request);
    }

    /// Writes a deploy: clusters, then jobs, then workflows; then removes
    /// what it undeploys in the other order (workflows first), with their
    /// pauses.
    fn deploy(&mut self, to: To, deploy: Box<core::Deploying>) {
        let (jobs, clusters) = (self.jobs_kv.clone(), self.clusters_kv.clone());
        let (workflows, switches) = (self.workflows_kv.clone(), self.switches_kv.clone());
        let write = async move {
            let written = async {
                let request = &deploy.request;
                for cluster in &request.clusters {
                    clusters.put(&cluster.name, cluster).await?;
                }
                for spec in &request.jobs {
                    jobs.put(&spec.name, spec).await?;
                }
                for spec in &request.workflows {
                    workflows.put(&spec.name, spec).await?;
                }
                for Named { kind, name } in deploy.plan.removed.iter().rev() {
                    match kind {
                        SpecKind::Workflow => workflows.delete(name).await?,
                        SpecKind::Job => jobs.delete(name).await?,
                        SpecKind::Cluster => clusters.delete(name).await?,
                    }
                    if *kind != SpecKind::Cluster {
                        let of = core::SwitchOf::Job(name.clone());
                        switches.delete(&of.key()).await?;
                    }
                }
                Ok::<_, BusError>(())
            };
            let written = written.await.map_err(|e| e.to_string());
            Some(Input::Deployed {
                to,
                deploy,
                written,
            })
        };
        self.in_flight.start(write);
    }

    fn switch(&mut self, to: To, of: core::SwitchOf, switch: OperatorSwitch) {
        let kv = self.switches_kv.clone();
        let write = async move {
            let stored = kv.put(&of.key(), &switch).await;
            Some(Input::Switched {
                to,
                of,
                switch,
                stored: stored.map(|_| ()).map_err(|e| e.to_string()),
            })
        };
        self.in_flight.start(write);
    }

    fn stop(&mut self, to: To, subagent_id: String, stop: StopSubagent) {
        let bus = self.bus.clone();
        let subject = bus.subjects().stop(&subagent_id);
        let timeout = self.config.broker.dispatch_timeout;
        let request = async move {
            let taken = bus.request::<_, Stopping>(subject, &stop, timeout).await;
            Some(Input::Stopped {
                to,
                subagent_id,
                taken: taken.map(|_| ()).map_err(|e| e.to_string()),
            })
        };
        self.in_flight.start(request);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use futures::StreamExt;

    use super::*;

    /// Sets its flag when dropped.
    struct Dropped(Rc<Cell<bool>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    /// Yields until `done` holds, for at most 5 s.
    async fn until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "condition not met in 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn outcomes_come_back_and_unfinished_io_is_dropped_with_the_broker() {
        actix::System::new().block_on(async {
            let (mut in_flight, mut outcomes) = InFlight::new();
            in_flight.start(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some(Input::Timer(core::Timer::Unseen))
            });
            let wait = Duration::from_secs(5);
            let first = tokio::time::timeout(wait, outcomes.next()).await;
            assert!(matches!(first, Ok(Some(Input::Timer(core::Timer::Unseen)))));
            // IO without an outcome (a kill) sends nothing back
            in_flight.start(async { None });
            // IO still under way when the broker goes
            let dropped = Rc::new(Cell::new(false));
            let guard = Dropped(dropped.clone());
            in_flight.start(async move {
                let _guard = guard;
                std::future::pending::<Option<Input<To>>>().await
            });
            // ended tasks are freed as new ones start
            until(|| {
                in_flight.start(async { None });
                in_flight.len() <= 2
            })
            .await;
            assert!(!dropped.get());
            drop(in_flight);
            until(|| dropped.get()).await;
            // every sender is gone with the tasks: the stream ends
            let rest = tokio::time::timeout(wait, outcomes.next()).await;
            assert!(matches!(rest, Ok(None)));
        });
    }
}
