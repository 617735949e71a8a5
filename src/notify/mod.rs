//! Notifications of orders that ended: the active broker tells webhooks
//! (HTTP POST of a JSON [`Notification`]) and NATS subjects
//! (`{p}.notify.{subject}`) when an order fails for good, or succeeds,
//! as the broker's `[notify]` rules and the job's or workflow's own
//! `notify` table say.
//!
//! - **Source:** the orders journal. Every order's change is written to the
//!   `{p}_orders` bucket before anything waits for it; the notifier reads
//!   that bucket's stream through the durable JetStream consumer
//!   `baton_notify` (`Bus::kv_durable`), so it sees every record written
//!   since the consumer was made, whichever broker wrote it. The broker's
//!   core knows nothing of notifications.
//! - **At least once:** a record is acknowledged only once each of its
//!   notifications was delivered or given up (after `notify.retries`
//!   retries with backoff, or a 4xx refusal); while they are tried, the
//!   record is marked in progress every [`PROGRESS`]. A broker that dies
//!   meanwhile leaves it unacknowledged: [`ACK_WAIT`] later JetStream
//!   delivers it again, to the notifier of the broker that took over. So
//!   a notification may come twice (a POST the receiver took but whose
//!   answer never came back, or a delivery cut by a fail-over): receivers
//!   drop a repeated `id`.
//! - **Never slows dispatch:** the notifier runs on a thread of its own
//!   ([`Notifier`]), started and stopped with the Broker
//!   (`broker/leadership/`), so only the active broker notifies; each
//!   record's deliveries are a task of their own, at most
//!   `notify.concurrency` tries at once, each bounded by its target's
//!   timeout, so a dead webhook only delays its own notifications.
//! - **Cluster events** (`on_subagent_lost`, `on_no_scheduler`): the
//!   active broker's own `SubagentChanged` (lost) and `TriggersChanged`
//!   (not firing) events, heard as they are published: at most once (a
//!   broker dying before its notifier sent them loses them); retried like
//!   the others while the broker lives. **Missed slots** (`on_missed_slot`
//!   and a job's or workflow's `notify.missed`): the Scheduler's
//!   `SlotsMissed` events, one per schedule and gap, likewise at most once.
//! - **Secrets:** a target is logged by its name; its URL and headers
//!   ([`Secret`](crate::config::Secret)s) never.
//!
//! The pure parts: `rules.rs` (which records call for which targets),
//! `body.rs` (the body), `retry.rs` (backoff, when to give up), `url.rs`
//! (a webhook's URL checked, split and shown without secrets);
//! `webhook.rs` is the HTTP client.

mod body;
mod retry;
mod rules;
mod url;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, info, warn};

pub use url::{check_webhook_url, redacted};

use crate::bus::{Bus, DurableSettings, Kv, KvWrite, Received, WriteAck};
use crate::config::{Config, NotifyConfig, NotifyTarget};
use crate::protocol::{
    JobSpec, Notification, NotifyKind, NotifyRules, OrderInfo, SlotsMissed, SubagentChanged,
    TriggersChanged, WorkflowSpec,
};
use retry::{Next, Tried};
use webhook::Webhook;

/// The durable consumer's name on the orders bucket's stream.
pub const CONSUMER: &str = "baton_notify";
/// A record neither acknowledged nor marked in progress this long after
/// its delivery is delivered again (to whichever broker is active).
pub const ACK_WAIT: Duration = Duration::from_secs(6);
/// How often a record whose notifications are being tried is marked in
/// progress.
const PROGRESS: Duration = Duration::from_secs(2);
/// Most records delivered to the notifier and not yet acknowledged.
const MAX_ACK_PENDING: usize = 1000;

/// The notifier of the active broker; dropping it stops it (deliveries
/// under way are cut, and their records delivered again later).
pub struct Notifier {
    _stop: oneshot::Sender<()>,
}

/// Starts the notifier when `[notify]` names any target; `None` otherwise.
pub fn start(config: &Config, bus: Bus) -> Option<Notifier> {
    if config.notify.targets.is_empty() {
        return None;
    }
    let (stop, stopped) = oneshot::channel();
    let config = config.clone();
    let spawned = std::thread::Builder::new()
        .name("notifier".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return warn!(error = %e, "cannot start the notifier"),
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                tokio::select! {
                    _ = stopped => debug!("notifier stopped"),
                    _ = run(config, bus) => {}
                }
            });
        });
    match spawned {
        Ok(_) => Some(Notifier { _stop: stop }),
        Err(e) => {
            warn!(error = %e, "cannot start the notifier thread; no notifications are sent");
            None
        }
    }
}

/// How one target is reached.
enum Reach {
    Webhook(Webhook),
    Subject(String),
}

struct Target {
    name: String,
    reach: Reach,
}

/// What every delivery shares.
struct Shared {
    bus: Bus,
    policy: NotifyConfig,
    targets: HashMap<String, Arc<Target>>,
    tries: Semaphore,
}

/// The targets that can be used, each said once at start (by name).
fn targets(bus: &Bus, targets: &[NotifyTarget]) -> HashMap<String, Arc<Target>> {
    let mut usable = HashMap::new();
    for t in targets {
        let reach = match (&t.webhook, &t.subject) {
            (Some(url), _) => match Webhook::new(url, &t.headers, t.timeout) {
                Ok(hook) => {
                    info!(target = %t.name, url = %redacted(url.expose()), "notification target: webhook");
                    Reach::Webhook(hook)
                }
                Err(reason) => {
                    warn!(target = %t.name, %reason, "notification target unusable");
                    continue;
                }
            },
            (None, Some(subject)) => {
                let subject = bus.subjects().notify(subject);
                info!(target = %t.name, %subject, "notification target: NATS subject");
                Reach::Subject(subject)
            }
            (None, None) => continue,
        };
        let name = t.name.clone();
        usable.insert(name.clone(), Arc::new(Target { name, reach }));
    }
    usable
}

/// The notify rules of deployed jobs and workflows, as last seen.
#[derive(Default)]
struct Rules {
    jobs: HashMap<String, NotifyRules>,
    workflows: HashMap<String, NotifyRules>,
}

async fn run(config: Config, bus: Bus) {
    let shared = Arc::new(Shared {
        targets: targets(&bus, &config.notify.targets),
        tries: Semaphore::new(config.notify.concurrency),
        policy: config.notify.clone(),
        bus: bus.clone(),
    });
    let sender = body::Sender {
        broker_id: config.broker_id(),
        prefix: config.prefix.clone(),
    };
    let mut rules = Rules::default();
    let mut outages = rules::Outages::default();
    let settings = DurableSettings {
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
    };
    loop {
        let opened = open(&bus, &config, settings).await;
        let (
            jobs_kv,
            flows_kv,
            mut jobs,
            mut flows,
            mut records,
            mut lost,
            mut triggers,
            mut missed,
        ) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                warn!(error = %e, "cannot read the orders journal for notifications; trying again in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        info!(consumer = CONSUMER, "notifier reading the orders journal");
        // any stream ending (a lost connection's subscription) opens them all again
        loop {
            tokio::select! {
                change = jobs.next() => match change {
                    Some(change) => match change.value {
                        Some(spec) => { rules.jobs.insert(change.key, spec.notify); }
                        None => { rules.jobs.remove(&change.key); }
                    },
                    None => break,
                },
                change = flows.next() => match change {
                    Some(change) => match change.value {
                        Some(spec) => { rules.workflows.insert(change.key, spec.notify); }
                        None => { rules.workflows.remove(&change.key); }
                    },
                    None => break,
                },
                record = records.next() => match record {
                    Some(write) => {
                        let own = own_rules(&mut rules, &jobs_kv, &flows_kv, &write.value).await;
                        handle(&shared, &sender, own, write).await;
                    }
                    None => break,
                },
                event = lost.next() => match event {
                    Some(event) => if let Some(kind) = outages.subagent(&event.body) {
                        tell(&shared, kind, body::of_subagent(&event.body, kind, &sender), None);
                    },
                    None => break,
                },
                event = triggers.next() => match event {
                    Some(event) => if let Some(kind) = outages.triggers(&event.body) {
                        tell(&shared, kind, body::of_triggers(&event.body, kind, &sender), None);
                    },
                    None => break,
                },
                event = missed.next() => match event {
                    Some(event) => {
                        let gap = &event.body;
                        let own = match gap.workflow {
                            true => rules.workflows.get(&gap.job),
                            false => rules.jobs.get(&gap.job),
                        };
                        let own = own.cloned().unwrap_or_default();
                        let notification = body::of_missed_slots(gap, &sender);
                        let _ = tell_own(&shared, NotifyKind::MissedSlot, &own, notification, None);
                    }
                    None => break,
                },
            }
        }
        warn!("a stream of the notifier ended; opening them again in 1s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn open(
    bus: &Bus,
    config: &Config,
    settings: DurableSettings,
) -> Result<
    (
        Kv<JobSpec>,
        Kv<WorkflowSpec>,
        futures::stream::LocalBoxStream<'static, crate::bus::KvChange<JobSpec>>,
        futures::stream::LocalBoxStream<'static, crate::bus::KvChange<WorkflowSpec>>,
        futures::stream::BoxStream<'static, KvWrite<OrderInfo>>,
        futures::stream::LocalBoxStream<'static, Received<SubagentChanged>>,
        futures::stream::LocalBoxStream<'static, Received<TriggersChanged>>,
        futures::stream::LocalBoxStream<'static, Received<SlotsMissed>>,
    ),
    crate::bus::BusError,
> {
    let jobs_kv: Kv<JobSpec> = bus.kv(&config.jobs_bucket()).await?;
    let flows_kv: Kv<WorkflowSpec> = bus.kv(&config.workflows_bucket()).await?;
    let jobs = jobs_kv.watch().await?.boxed_local();
    let flows = flows_kv.watch().await?.boxed_local();
    let records = bus
        .kv_durable::<OrderInfo>(&config.orders_bucket(), CONSUMER, settings)
        .await?
        .boxed();
    // the active broker's own events, heard once: at most once
    let subjects = bus.subjects();
    let lost = bus.listen(subjects.subagent_changes()).await?.boxed_local();
    let triggers = bus.listen(subjects.triggers_changed()).await?.boxed_local();
    let missed = bus.listen(subjects.slots_missed()).await?.boxed_local();
    Ok((
        jobs_kv, flows_kv, jobs, flows, records, lost, triggers, missed,
    ))
}

/// The job's or workflow's own rules; read from its bucket when the watch
/// has not brought it yet (deployed a moment ago).
async fn own_rules(
    rules: &mut Rules,
    jobs_kv: &Kv<JobSpec>,
    flows_kv: &Kv<WorkflowSpec>,
    record: &OrderInfo,
) -> NotifyRules {
    if rules::kind_of(record).is_none() {
        return NotifyRules::default();
    }
    match &record.workflow {
        Some(name) => match rules.workflows.get(name) {
            Some(own) => own.clone(),
            None => match flows_kv.get(name).await {
                Ok(Some(spec)) => spec.notify,
                _ => NotifyRules::default(),
            },
        },
        None => match rules.jobs.get(&record.job) {
            Some(own) => own.clone(),
            None => match jobs_kv.get(&record.job).await {
                Ok(Some(spec)) => spec.notify,
                _ => NotifyRules::default(),
            },
        },
    }
}

/// Acknowledges a record that calls for nothing; hands the others to a
/// task of their own.
async fn handle(
    shared: &Arc<Shared>,
    sender: &body::Sender,
    own: NotifyRules,
    write: KvWrite<OrderInfo>,
) {
    let record = &write.value;
    let Some(kind) = rules::kind_of(record) else {
        let _ = write.ack.ack().await;
        return;
    };
    let notification = body::of_order(record, kind, sender);
    if write.delivered > 1 {
        debug!(notification = %notification.id, delivered = write.delivered, "record delivered again; its notifications may repeat");
    }
    if let Some(ack) = tell_own(shared, kind, &own, notification, Some(write.ack)) {
        let _ = ack.ack().await;
    }
}

/// Hands `notification` to a task that delivers it to the targets of
/// `kind` (and acknowledges `ack` at the end).
fn tell(shared: &Arc<Shared>, kind: NotifyKind, notification: Notification, ack: Option<WriteAck>) {
    if let Some(ack) = tell_own(shared, kind, &NotifyRules::default(), notification, ack) {
        tokio::task::spawn_local(async move { ack.ack().await });
    }
}

/// Like [`tell`] with a job's own rules; gives `ack` back when no target
/// is to be told.
fn tell_own(
    shared: &Arc<Shared>,
    kind: NotifyKind,
    own: &NotifyRules,
    notification: Notification,
    ack: Option<WriteAck>,
) -> Option<WriteAck> {
    let mut chosen = Vec::new();
    for name in rules::targets(&shared.policy, own, kind) {
        match shared.targets.get(&name) {
            Some(target) => chosen.push(target.clone()),
            None => {
                crate::metrics::broker().notification("_unknown", "unknown_target");
                warn!(target = %name, notification = %notification.id, "notification target not configured on this broker; add it to [[notify.target]]");
            }
        }
    }
    if chosen.is_empty() {
        return ack;
    }
    let shared = shared.clone();
    tokio::task::spawn_local(deliver_all(shared, chosen, notification, ack));
    None
}

/// Delivers one notification to each of its targets, marking the record
/// in progress meanwhile, then acknowledges it.
async fn deliver_all(
    shared: Arc<Shared>,
    targets: Vec<Arc<Target>>,
    notification: Notification,
    ack: Option<WriteAck>,
) {
    let body = Bytes::from(serde_json::to_vec(&notification).unwrap_or_default());
    let id = notification.id.as_str();
    let work = futures::future::join_all(
        targets
            .iter()
            .map(|t| deliver(&shared, t, id, body.clone())),
    );
    tokio::pin!(work);
    let mut progress = tokio::time::interval(PROGRESS);
    progress.tick().await;
    loop {
        tokio::select! {
            _ = &mut work => break,
            _ = progress.tick() => if let Some(ack) = &ack {
                ack.in_progress().await
            },
        }
    }
    let Some(ack) = ack else {
        return;
    };
    if let Err(e) = ack.ack().await {
        warn!(notification = %id, error = %e, "notification record not acknowledged; it will be delivered again");
    }
}

/// Tries `target` until delivered or given up.
async fn deliver(shared: &Shared, target: &Target, id: &str, body: Bytes) {
    let policy = &shared.policy;
    let metrics = crate::metrics::broker();
    let mut tried = 0;
    loop {
        let how = {
            let Ok(_permit) = shared.tries.acquire().await else {
                return;
            };
            send(&shared.bus, target, body.clone()).await
        };
        match retry::next(
            &how,
            tried,
            policy.retries,
            policy.backoff,
            policy.max_backoff,
        ) {
            Next::Done => {
                metrics.notification(&target.name, "delivered");
                debug!(target = %target.name, notification = %id, "notification delivered");
                return;
            }
            Next::Retry(wait) => {
                metrics.notification(&target.name, "retried");
                debug!(target = %target.name, notification = %id, why = %why(&how), "notification not delivered; trying again");
                tokio::time::sleep(wait).await;
                tried += 1;
            }
            Next::GiveUp => {
                metrics.notification(&target.name, "failed");
                warn!(target = %target.name, notification = %id, tries = tried + 1, why = %why(&how), "notification given up");
                return;
            }
        }
    }
}

async fn send(bus: &Bus, target: &Target, body: Bytes) -> Tried {
    match &target.reach {
        Reach::Webhook(hook) => hook.post(body).await,
        Reach::Subject(subject) => {
            let sent = bus.publish_raw(subject.clone(), body).await;
            match sent.and(bus.flush().await) {
                Ok(()) => Tried::Delivered,
                Err(e) => Tried::NoAnswer(e.to_string()),
            }
        }
    }
}

fn why(how: &Tried) -> String {
    match how {
        Tried::Delivered => "delivered".into(),
        Tried::Status(code) => format!("HTTP status {code}"),
        Tried::NoAnswer(reason) => reason.clone(),
    }
}
