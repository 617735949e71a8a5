//! The Scheduler's subject triggers, as IO on the [`Agent`]: while it holds
//! the role, one loop per job with subject triggers reads the job's
//! durable consumer of the trigger stream (both made by the broker,
//! `broker/trigger_stream.rs`) and turns each message into one order.
//!
//! For each message: map it to parameters (`triggers::subject`, pure);
//! submit `SubmitOrder { job, params, request_id: JOB@msg:CREATED:SEQ }`;
//! acknowledge once the broker accepted it (or found the order a previous
//! delivery made). A message that cannot be mapped, or whose order the
//! broker refuses for good (a parameter it refuses, the job gone), is
//! published to the dead-letter subject `{p}.triggers.dead.JOB` with its
//! payload, headers and the reason, counted and warned about, then
//! acknowledged: it never blocks the ones behind it. A transient failure
//! (no broker, a timeout, busy, a pause with `--all`) asks for the message
//! again later (`nak` with a delay growing with its deliveries).
//!
//! A paused job's loop stops: its messages wait in the stream and run on
//! resume. When the role ends, the loops are cancelled; a message read and
//! not acknowledged is delivered again after the consumer's ack wait, to
//! whichever agent holds the role then, and its request id finds the
//! order if one was made: each message starts exactly one order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use tracing::{debug, warn};

use super::Agent;
use crate::agent::outbox::{submit_failure, SubmitFailure};
use crate::bus::{Bus, BusError, LogsError, TriggerMessage};
use crate::protocol::{ErrorCode, SubmitOrder, SubmitReply, TriggerSpec};
use crate::triggers::subject::{self, Incoming};
use crate::triggers::submitted_name;

/// Messages of one job handled at once.
const CONCURRENCY: usize = 64;
/// After the consumer could not be read (not made yet, JetStream away).
const REOPEN_DELAY: Duration = Duration::from_secs(1);
/// A message asked for again waits this long per delivery so far, up to
/// [`MAX_RETRY_DELAY`].
const RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// One job's subject triggers: (subject, mapping) of each.
type Mappings = Vec<(String, BTreeMap<String, String>)>;

/// The subject triggers of one spell as Scheduler.
#[derive(Default)]
pub(super) struct SubjectLoops {
    /// Every job with subject triggers, paused or not.
    wanted: HashMap<String, Mappings>,
    /// The loops reading, and the mappings each was started with.
    running: HashMap<String, (Mappings, SpawnHandle)>,
}

impl SubjectLoops {
    /// Stops every loop.
    pub(super) fn stop(self, ctx: &mut Context<Agent>) {
        for (_, handle) in self.running.into_values() {
            ctx.cancel_future(handle);
        }
    }
}

impl Agent {
    /// `key`'s triggers are now `triggers` (`None`: removed): its loop is
    /// started, restarted with the new mappings, or stopped.
    pub(super) fn subjects_changed(
        &mut self,
        key: &str,
        triggers: Option<&[TriggerSpec]>,
        paused: &HashSet<String>,
        ctx: &mut Context<Self>,
    ) {
        // workflows have no subject triggers (refused at deploy)
        if submitted_name(key) != key {
            return;
        }
        let Some(firing) = self.firing.as_mut() else {
            return;
        };
        let mappings: Mappings = subject::subject_triggers(triggers.unwrap_or_default())
            .into_iter()
            .map(|(name, params)| (name.to_string(), params.clone()))
            .collect();
        let loops = &mut firing.subjects;
        if mappings.is_empty() {
            loops.wanted.remove(key);
        } else {
            loops.wanted.insert(key.to_string(), mappings);
        }
        self.sync_subjects(key, paused.contains(key), ctx);
    }

    /// Starts or stops `job`'s loop to match what is wanted and `paused`.
    pub(super) fn sync_subjects(&mut self, job: &str, paused: bool, ctx: &mut Context<Self>) {
        let Some(firing) = self.firing.as_mut() else {
            return;
        };
        let loops = &mut firing.subjects;
        let wanted = loops.wanted.get(job).filter(|_| !paused).cloned();
        let current = loops.running.get(job).map(|(m, _)| m);
        if wanted.as_ref() == current {
            return;
        }
        if let Some((_, handle)) = loops.running.remove(job) {
            ctx.cancel_future(handle);
            debug!(%job, "subject trigger loop stopped");
        }
        let Some(mappings) = wanted else {
            return;
        };
        let reader = Reader {
            bus: self.bus.clone(),
            stream: self.config.trigger_stream(),
            job: job.to_string(),
            mappings: mappings.clone(),
            timeout: self.config.nats.request_timeout,
        };
        let handle = ctx.spawn(reader.run().into_actor(self));
        debug!(%job, "subject trigger loop started");
        if let Some(firing) = self.firing.as_mut() {
            firing
                .subjects
                .running
                .insert(job.to_string(), (mappings, handle));
        }
    }
}

/// What one job's loop needs; it runs until cancelled.
struct Reader {
    bus: Bus,
    stream: String,
    job: String,
    mappings: Mappings,
    timeout: Duration,
}

/// What became of one message.
enum Handled {
    Ack,
    Retry,
}

impl Reader {
    async fn run(self) {
        let consumer = subject::consumer_name(&self.job);
        let mut warned = false;
        loop {
            match self.bus.trigger_messages(&self.stream, &consumer).await {
                Ok((created_ms, messages)) => {
                    warned = false;
                    let this = &self;
                    // an error (the consumer deleted, the connection lost)
                    // ends this read; the consumer is opened again
                    let messages = messages.take_while(|m| {
                        if let Err(e) = m {
                            debug!(job = %this.job, error = %e, "cannot read trigger messages");
                        }
                        std::future::ready(m.is_ok())
                    });
                    messages
                        .filter_map(|m| std::future::ready(m.ok()))
                        .for_each_concurrent(CONCURRENCY, |message| {
                            this.handle(created_ms, message)
                        })
                        .await;
                    debug!(job = %self.job, "trigger messages ended; reading again");
                }
                Err(e) if !warned => {
                    warned = true;
                    let hint = match e {
                        LogsError::NoStream { .. } => " (the active broker makes it)",
                        LogsError::Bus(_) => "",
                    };
                    warn!(job = %self.job, %consumer, error = %e, "cannot read the subject trigger's consumer{hint}; trying again");
                }
                Err(e) => debug!(job = %self.job, error = %e, "cannot read the consumer"),
            }
            tokio::time::sleep(REOPEN_DELAY).await;
        }
    }

    async fn handle(&self, created_ms: u64, message: TriggerMessage) {
        let handled = match self.order(created_ms, &message).await {
            Ok(handled) => handled,
            Err(reason) => self.dead_letter(&message, &reason).await,
        };
        let sent = match handled {
            Handled::Ack => message.ack().await,
            Handled::Retry => {
                crate::metrics::agent().trigger_message("retried");
                let times = u32::try_from(message.delivered.max(1)).unwrap_or(u32::MAX);
                let delay = RETRY_DELAY.saturating_mul(times).min(MAX_RETRY_DELAY);
                message.retry_after(delay).await
            }
        };
        if let Err(e) = sent {
            // not acknowledged: it comes again after the ack wait
            debug!(job = %self.job, sequence = message.sequence, error = %e, "cannot acknowledge");
        }
    }

    /// Submits the message's order: `Err` is why it is a dead letter.
    async fn order(&self, created_ms: u64, message: &TriggerMessage) -> Result<Handled, String> {
        let triggers: Vec<(&str, &BTreeMap<String, String>)> =
            self.mappings.iter().map(|(s, p)| (s.as_str(), p)).collect();
        let incoming = Incoming {
            subject: &message.subject,
            headers: &message.headers,
            payload: &message.payload,
        };
        let params = subject::map_message(&triggers, incoming).map_err(|e| e.to_string())?;
        let order = SubmitOrder {
            job: self.job.clone(),
            params,
            request_id: Some(subject::request_id(&self.job, created_ms, message.sequence)),
            slot_ms: None,
        };
        let submit = self.bus.subjects().submit();
        let reply = (self.bus)
            .request::<_, SubmitReply>(submit, &order, self.timeout)
            .await;
        match reply {
            Ok(reply) => {
                let outcome = if reply.duplicate {
                    "duplicate"
                } else {
                    "started"
                };
                crate::metrics::agent().trigger_message(outcome);
                debug!(job = %self.job, sequence = message.sequence, order = %reply.order_id, duplicate = reply.duplicate, "trigger message submitted");
                Ok(Handled::Ack)
            }
            Err(e) if retried(&e) => {
                debug!(job = %self.job, sequence = message.sequence, error = %e, "submit failed; the message comes again");
                Ok(Handled::Retry)
            }
            Err(e) => Err(format!("the broker refused the order: {e}")),
        }
    }

    /// Publishes the message on the dead-letter subject with `reason`;
    /// acknowledged once stored, asked for again when it was not.
    async fn dead_letter(&self, message: &TriggerMessage, reason: &str) -> Handled {
        let mut headers = message.headers.clone();
        headers.push((subject::REASON_HEADER.into(), reason.into()));
        headers.push((subject::SUBJECT_HEADER.into(), message.subject.clone()));
        headers.push((
            subject::SEQUENCE_HEADER.into(),
            message.sequence.to_string(),
        ));
        let to = self.bus.subjects().trigger_dead(&self.job);
        match (self.bus)
            .dead_letter(to.clone(), &headers, message.payload.clone())
            .await
        {
            Ok(()) => {
                crate::metrics::agent().trigger_message("dead_letter");
                warn!(job = %self.job, subject = %message.subject, sequence = message.sequence, %reason, dead_letter = %to, "trigger message starts no order; kept on the dead-letter subject");
                Handled::Ack
            }
            Err(e) => {
                warn!(job = %self.job, sequence = message.sequence, error = %e, %reason, "cannot store the dead letter; the message comes again");
                Handled::Retry
            }
        }
    }
}

/// Whether a failed submit of a message is worth asking again: what a
/// fire retries, and a pause (`--all`) refusing it until resumed.
fn retried(error: &BusError) -> bool {
    match error {
        BusError::Remote(reply) if reply.error.code == ErrorCode::InvalidState => true,
        e => submit_failure(e) == SubmitFailure::Retry,
    }
}
