//! The actor carries out the core's effects: it replies, publishes,
//! writes the journal, sends tasks and probes, and sets timers, feeding
//! each outcome back into the core as an input. Nothing here decides.
//!
//! `step` hands an input to the core; `act` carries out each effect: a
//! journal write through `recovery::write_over`, a run request after
//! `posted()` (so `accepted` precedes `started`), a timer as `run_later`. A
//! reply goes to a [`To`]: where to answer, and for a state-changing command
//! its audit record, which the reply completes.

use std::time::{Duration, Instant};

use actix::prelude::*;

use tracing::warn;

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

impl Broker {
    /// Hands an input to the core and carries out what it decides.
    pub(super) fn step(&mut self, input: Input<To>, ctx: &mut Context<Self>) {
        let effects = self.core.step(input, now());
        self.act(effects, ctx);
    }

    /// Carries out the effects the actor's own handlers left in the core.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        let effects = self.core.take_effects();
        self.act(effects, ctx);
    }

    fn act(&mut self, effects: Vec<Effect<To>>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Reply(to, reply) => self.send_reply(&to, reply),
                Effect::Publish(event) => self.publish(event),
                Effect::Write { info, revision } => self.write(info, revision, ctx),
                Effect::Create { info, idempotent } => self.create(info, idempotent, ctx),
                Effect::Kill { subagent_id, kill } => self.kill(subagent_id, kill, ctx),
                Effect::Run {
                    subagent_id,
                    run,
                    again,
                } => self.send_run(subagent_id, run, again, ctx),
                Effect::Probe { subagent_id } => self.probe(subagent_id, ctx),
                Effect::Later { after, timer } => {
                    ctx.run_later(after, move |act, ctx| act.step(Input::Timer(timer), ctx));
                }
                Effect::Deploy { to, deploy } => self.deploy(to, deploy, ctx),
                Effect::Stop {
                    to,
                    subagent_id,
                    stop,
                } => self.stop(to, subagent_id, stop, ctx),
                Effect::Switch { to, of, switch } => self.switch(to, of, switch, ctx),
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

    fn write(&mut self, info: Box<OrderInfo>, revision: Option<u64>, ctx: &mut Context<Self>) {
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
            Input::Written { info, stored }
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(|written, act, ctx| act.step(written, ctx)),
        );
    }

    fn create(&mut self, info: Box<OrderInfo>, idempotent: bool, ctx: &mut Context<Self>) {
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
            Input::Created { info, created }
        };
        ctx.spawn(
            create
                .into_actor(self)
                .map(|created, act, ctx| act.step(created, ctx)),
        );
    }

    fn kill(&mut self, subagent_id: String, kill: KillTask, ctx: &mut Context<Self>) {
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
        };
        ctx.spawn(request.into_actor(self));
    }

    fn send_run(
        &mut self,
        subagent_id: String,
        run: Box<RunTask>,
        again: bool,
        ctx: &mut Context<Self>,
    ) {
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
            Input::RunReply {
                subagent_id,
                run,
                again,
                reply,
            }
        };
        ctx.spawn(request.into_actor(self).map(|reply, act, ctx| {
            if let Input::RunReply {
                run,
                reply: RunReply::Accepted,
                ..
            } = &reply
            {
                act.dispatched(run);
            }
            act.step(reply, ctx)
        }));
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

    fn probe(&mut self, subagent_id: String, ctx: &mut Context<Self>) {
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
            Input::Probed { subagent_id, reply }
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(|probed, act, ctx| act.step(probed, ctx)),
        );
    }

    /// Writes a deploy: clusters, then jobs, then workflows; then removes
    /// what it undeploys in the other order (workflows first), with their
    /// pauses.
    fn deploy(&mut self, to: To, deploy: Box<core::Deploying>, ctx: &mut Context<Self>) {
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
            Input::Deployed {
                to,
                deploy,
                written,
            }
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(|deployed, act, ctx| act.step(deployed, ctx)),
        );
    }

    fn switch(
        &mut self,
        to: To,
        of: core::SwitchOf,
        switch: OperatorSwitch,
        ctx: &mut Context<Self>,
    ) {
        let kv = self.switches_kv.clone();
        let write = async move {
            let stored = kv.put(&of.key(), &switch).await;
            Input::Switched {
                to,
                of,
                switch,
                stored: stored.map(|_| ()).map_err(|e| e.to_string()),
            }
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(|switched, act, ctx| act.step(switched, ctx)),
        );
    }

    fn stop(&mut self, to: To, subagent_id: String, stop: StopSubagent, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let subject = bus.subjects().stop(&subagent_id);
        let timeout = self.config.broker.dispatch_timeout;
        let request = async move {
            let taken = bus.request::<_, Stopping>(subject, &stop, timeout).await;
            Input::Stopped {
                to,
                subagent_id,
                taken: taken.map(|_| ()).map_err(|e| e.to_string()),
            }
        };
        ctx.spawn(
            request
                .into_actor(self)
                .map(|stopped, act, ctx| act.step(stopped, ctx)),
        );
    }
}
