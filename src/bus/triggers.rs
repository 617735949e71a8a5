//! The trigger streams' IO (see `triggers::subject` for the rules): the
//! stream that captures the deployed subject triggers' subjects, one
//! durable pull consumer per job, the dead-letter stream, and the
//! messages the Scheduler reads and acknowledges.
//!
//! The broker reconciles the stream and consumers
//! ([`Bus::reconcile_trigger_stream`]); the agent only reads through a
//! consumer the broker made ([`Bus::trigger_messages`]), acknowledges, and
//! publishes dead letters ([`Bus::dead_letter`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::LocalBoxStream;
use futures::{StreamExt, TryStreamExt};
use tracing::info;

use super::logs::{transport, StreamLimits};
use super::{Bus, BusError, LogsError};

/// How a job's consumer hands out messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLimits {
    /// A message not acknowledged within this long is delivered again.
    pub ack_wait: Duration,
    /// At most this many messages delivered and not yet acknowledged.
    pub max_ack_pending: i64,
}

/// One message of a job's subject triggers, as read from the stream.
pub struct TriggerMessage {
    pub subject: String,
    /// Header names and values, in the order sent.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// Its sequence in the trigger stream.
    pub sequence: u64,
    /// How often it has been delivered, this time included.
    pub delivered: i64,
    message: jetstream::Message,
}

impl TriggerMessage {
    /// Acknowledges it: it is never delivered again.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acknowledge(AckKind::Ack).await
    }

    /// Asks for it again after `delay`.
    pub async fn retry_after(&self, delay: Duration) -> Result<(), BusError> {
        self.acknowledge(AckKind::Nak(Some(delay))).await
    }

    async fn acknowledge(&self, kind: AckKind) -> Result<(), BusError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|e| BusError::Transport {
                subject: self.subject.clone(),
                reason: e.to_string(),
            })
    }
}

impl Bus {
    /// Brings the trigger stream `stream` to capture `subjects` (none:
    /// the stream is deleted) within `limits`, and its consumers to
    /// `consumers` (durable name → filter subjects): missing ones made,
    /// changed ones updated, those named with `owned_prefix` and not
    /// wanted deleted. A consumer made now starts with the messages stored
    /// after it. Idempotent.
    pub async fn reconcile_trigger_stream(
        &self,
        stream: &str,
        subjects: Vec<String>,
        limits: StreamLimits,
        consumers: &BTreeMap<String, Vec<String>>,
        consumer_limits: ConsumerLimits,
        owned_prefix: &str,
    ) -> Result<(), BusError> {
        let js = jetstream::new(self.client.clone());
        if subjects.is_empty() {
            return match self.open_stream(stream).await {
                Ok(_) => {
                    js.delete_stream(stream)
                        .await
                        .map_err(|e| transport(stream, e))?;
                    info!(%stream, "no subject trigger is deployed; trigger stream deleted");
                    Ok(())
                }
                Err(LogsError::NoStream { .. }) => Ok(()),
                Err(LogsError::Bus(e)) => Err(e),
            };
        }
        self.ensure_stream(stream, subjects, limits).await?;
        let handle = js
            .get_stream(stream)
            .await
            .map_err(|e| transport(stream, e))?;
        let existing: Vec<String> = handle
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| transport(stream, e))?;
        for name in &existing {
            if name.starts_with(owned_prefix) && !consumers.contains_key(name) {
                handle
                    .delete_consumer(name)
                    .await
                    .map_err(|e| transport(stream, e))?;
                info!(%stream, consumer = %name, "trigger consumer deleted");
            }
        }
        for (name, filters) in consumers {
            let config = consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subjects: filters.clone(),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: consumer_limits.ack_wait,
                max_ack_pending: consumer_limits.max_ack_pending,
                ..Default::default()
            };
            if existing.contains(name) {
                let mut current: consumer::PullConsumer = handle
                    .get_consumer(name)
                    .await
                    .map_err(|e| transport(stream, e))?;
                let info = current.info().await.map_err(|e| transport(stream, e))?;
                let same_filters = info.config.filter_subjects == *filters
                    || (filters.len() == 1
                        && info.config.filter_subject == filters[0]
                        && info.config.filter_subjects.is_empty());
                if same_filters
                    && info.config.ack_wait == config.ack_wait
                    && info.config.max_ack_pending == config.max_ack_pending
                {
                    continue;
                }
                // the deliver policy of a consumer cannot change: keep it
                let config = consumer::pull::Config {
                    deliver_policy: info.config.deliver_policy,
                    ..config
                };
                handle
                    .update_consumer(config)
                    .await
                    .map_err(|e| transport(stream, e))?;
                info!(%stream, consumer = %name, ?filters, "trigger consumer updated");
            } else {
                handle
                    .create_consumer(config)
                    .await
                    .map_err(|e| transport(stream, e))?;
                info!(%stream, consumer = %name, ?filters, "trigger consumer created");
            }
        }
        Ok(())
    }

    /// Creates the dead-letter stream `name` capturing `subject` within
    /// `limits`, or brings an existing one up to date.
    pub async fn ensure_dead_letter_stream(
        &self,
        name: &str,
        subject: String,
        limits: StreamLimits,
    ) -> Result<(), BusError> {
        self.ensure_stream_once(name, vec![subject], limits).await
    }

    /// The messages of the durable consumer `consumer` of `stream` (made
    /// by the broker), and when the stream was created (ms since the Unix
    /// epoch: with a message's sequence, it names the message for good).
    pub async fn trigger_messages(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<
        (
            u64,
            LocalBoxStream<'static, Result<TriggerMessage, BusError>>,
        ),
        LogsError,
    > {
        let handle = self.open_stream(stream).await?;
        let created = handle.cached_info().created;
        let created_ms = u64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let pull: consumer::PullConsumer = handle
            .get_consumer(consumer)
            .await
            .map_err(|e| transport(stream, e))?;
        let messages = pull.messages().await.map_err(|e| transport(stream, e))?;
        let name = stream.to_string();
        let messages = messages.map(move |m| {
            let message = m.map_err(|e| transport(&name, e))?;
            let (sequence, delivered) = {
                let info = message.info().map_err(|e| transport(&name, e))?;
                (info.stream_sequence, info.delivered)
            };
            let headers = header_pairs(message.headers.as_ref());
            Ok(TriggerMessage {
                subject: message.subject.to_string(),
                headers,
                payload: message.payload.clone(),
                sequence,
                delivered,
                message,
            })
        });
        Ok((created_ms, messages.boxed_local()))
    }

    /// Publishes a dead letter on `subject` (captured by the dead-letter
    /// stream) and waits until JetStream stored it.
    pub async fn dead_letter(
        &self,
        subject: String,
        headers: &[(String, String)],
        payload: Bytes,
    ) -> Result<(), BusError> {
        let map = header_map(headers);
        let js = jetstream::new(self.client.clone());
        let stored = self
            .unless_denied(&subject, async {
                js.publish_with_headers(subject.clone(), map, payload)
                    .await?
                    .await
            })
            .await?;
        stored.map(drop).map_err(|e| BusError::Transport {
            subject,
            reason: e.to_string(),
        })
    }
}

/// A dead letter as the dead-letter stream keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

/// A job's consumer as JetStream counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Stored and not yet delivered.
    pub pending: u64,
    /// Delivered and not yet acknowledged.
    pub unacknowledged: u64,
}

impl Bus {
    /// How far `consumer` of `stream` is behind.
    pub async fn trigger_backlog(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Backlog, LogsError> {
        let handle = self.open_stream(stream).await?;
        let info = handle
            .consumer_info(consumer)
            .await
            .map_err(|e| transport(stream, e))?;
        Ok(Backlog {
            pending: info.num_pending,
            unacknowledged: u64::try_from(info.num_ack_pending).unwrap_or(0),
        })
    }

    /// The dead letters kept in `stream` on `subject` (wildcards allowed),
    /// oldest first, at most `max`.
    pub async fn dead_letters(
        &self,
        stream: &str,
        subject: String,
        max: usize,
    ) -> Result<Vec<DeadLetter>, LogsError> {
        let info = format!("$JS.API.STREAM.INFO.{stream}");
        let handle = self
            .unless_denied(&info, self.open_stream(stream))
            .await??;
        let config = consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let ordered = handle
            .create_consumer(config)
            .await
            .map_err(|e| transport(stream, e))?;
        let pending = usize::try_from(ordered.cached_info().num_pending).unwrap_or(usize::MAX);
        let wanted = pending.min(max);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let mut messages = ordered.messages().await.map_err(|e| transport(stream, e))?;
        let mut out = Vec::with_capacity(wanted);
        while out.len() < wanted {
            let Some(message) = messages.next().await else {
                break;
            };
            let message = message.map_err(|e| transport(stream, e))?;
            let headers = header_pairs(message.headers.as_ref());
            out.push(DeadLetter {
                subject: message.subject.to_string(),
                headers,
                payload: message.payload.clone(),
            });
        }
        Ok(out)
    }

    /// Publishes `payload` with `headers` on `subject`, as a program
    /// publishing a subject trigger's message would (tests, bench).
    pub async fn publish_with_headers(
        &self,
        subject: String,
        headers: &[(String, String)],
        payload: Bytes,
    ) -> Result<(), BusError> {
        let map = header_map(headers);
        self.client
            .publish_with_headers(subject.clone(), map, payload)
            .await
            .map_err(|e| BusError::Transport {
                subject,
                reason: e.to_string(),
            })
    }
}

fn header_pairs(headers: Option<&HeaderMap>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| {
                    vs.iter()
                        .map(move |v| (k.to_string(), v.as_str().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// NATS headers from name-value pairs, repeated names kept.
fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.as_str(), value.as_str());
    }
    map
}
