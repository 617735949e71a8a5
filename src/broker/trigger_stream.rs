//! The active broker keeps the subject triggers' stream and consumers in
//! step with the deployed jobs: a loop beside the Broker actor (it lives
//! exactly as long as the actor) that watches the jobs bucket and, once
//! the changes pause, applies `triggers::subject::stream_plan` through
//! `Bus::reconcile_trigger_stream`. It applies the plan again every
//! [`RECHECK`] (a consumer someone deleted comes back, a failure is
//! retried), and after [`RETRY`] when it failed.
//!
//! The stream and consumers exist from a moment after a deploy (the
//! watch's delay plus a few JetStream calls, milliseconds) until the
//! trigger is removed, whether or not any agent holds the Scheduler role,
//! so messages wait in the stream for the next Scheduler. While JetStream
//! cannot be reached (or refuses, say a subject another stream captures),
//! the loop warns and retries; messages published meanwhile are not kept.
//!
//! Architecture invariant: decides nothing itself (the plan is pure, in
//! `triggers::subject`) and never touches the broker core.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use tracing::{debug, warn};

use crate::bus::{Bus, ConsumerLimits, Kv, StreamLimits};
use crate::config::Config;
use crate::protocol::{JobSpec, TriggerSpec};
use crate::triggers::subject::{self, StreamPlan};

/// How long the jobs bucket stays quiet before the plan is applied.
const QUIET: Duration = Duration::from_millis(50);
/// How often the plan is applied when nothing changed.
const RECHECK: Duration = Duration::from_secs(30);
/// After a failure, how long before trying again.
const RETRY: Duration = Duration::from_secs(2);

/// What the trigger stream keeps: a week, at most 1 GiB.
pub const TRIGGER_LIMITS: StreamLimits = StreamLimits {
    max_age: Duration::from_secs(7 * 24 * 3600),
    max_bytes: Some(1 << 30),
};
/// What the dead-letter stream keeps: 30 days, at most 256 MiB.
pub const DEAD_LETTER_LIMITS: StreamLimits = StreamLimits {
    max_age: Duration::from_secs(30 * 24 * 3600),
    max_bytes: Some(256 << 20),
};
/// Each job's consumer: a message unacknowledged for 30 s is delivered
/// again; at most 1,000 in flight.
pub const CONSUMER_LIMITS: ConsumerLimits = ConsumerLimits {
    ack_wait: Duration::from_secs(30),
    max_ack_pending: 1000,
};

/// The loop; it stops when dropped.
pub struct TriggerStream(tokio::task::JoinHandle<()>);

impl Drop for TriggerStream {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the loop on the current actix System.
pub fn start(bus: Bus, config: &Config) -> TriggerStream {
    let stream = config.trigger_stream();
    let bucket = config.jobs_bucket();
    TriggerStream(actix::spawn(keep(bus, bucket, stream)))
}

async fn keep(bus: Bus, bucket: String, stream: String) {
    loop {
        let watch = async {
            let kv: Kv<JobSpec> = bus.kv(&bucket).await?;
            kv.watch().await
        };
        let mut watch = match watch.await {
            Ok(watch) => watch,
            Err(e) => {
                warn!(error = %e, "cannot watch the jobs for subject triggers; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut jobs: BTreeMap<String, Vec<TriggerSpec>> = BTreeMap::new();
        let mut applied: Option<StreamPlan> = None;
        let mut wait = QUIET;
        loop {
            match tokio::time::timeout(wait, watch.next()).await {
                Ok(Some(change)) => {
                    // only jobs with subject triggers are held: the plan
                    // skips the others, and a million schedules cost nothing here
                    let triggers = change.value.map(|job| job.triggers).unwrap_or_default();
                    if subject::subject_triggers(&triggers).is_empty() {
                        jobs.remove(&change.key);
                    } else {
                        jobs.insert(change.key, triggers);
                    }
                    wait = QUIET;
                }
                Ok(None) => {
                    warn!("the jobs watch ended; watching again");
                    break;
                }
                Err(_) => {
                    let plan = subject::stream_plan(
                        bus.subjects().prefix(),
                        jobs.iter().map(|(name, t)| (name.as_str(), t.as_slice())),
                    );
                    let fresh = applied.as_ref() != Some(&plan);
                    match apply(&bus, &stream, &plan).await {
                        Ok(()) => {
                            if fresh {
                                debug!(%stream, subjects = ?plan.subjects, consumers = plan.consumers.len(), "trigger stream in step with the jobs");
                            }
                            applied = Some(plan);
                            wait = RECHECK;
                        }
                        Err(e) => {
                            warn!(%stream, error = %e, "cannot bring the trigger stream in step with the jobs; trying again");
                            applied = None;
                            wait = RETRY;
                        }
                    }
                }
            }
        }
    }
}

async fn apply(bus: &Bus, stream: &str, plan: &StreamPlan) -> Result<(), crate::bus::BusError> {
    bus.reconcile_trigger_stream(
        stream,
        plan.subjects.clone(),
        TRIGGER_LIMITS,
        &plan.consumers,
        CONSUMER_LIMITS,
        subject::CONSUMER_PREFIX,
    )
    .await
}
