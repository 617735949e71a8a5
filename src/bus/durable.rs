//! A durable JetStream consumer over a KV bucket's stream: every value
//! written to the bucket from the consumer's creation on, at least once,
//! each acknowledged by its reader. Its position (the ack floor) lives in
//! JetStream, so a reader in another process (a broker taking over) goes
//! on where the last one acknowledged. Delete markers are acknowledged here
//! and never reach the reader; a value that cannot be decoded is
//! acknowledged, warned about and counted ([`Stats`](super::Stats)).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{decode, Bus, BusError, Encoding};

/// How the durable consumer redelivers.
#[derive(Debug, Clone, Copy)]
pub struct DurableSettings {
    /// A record not acknowledged (nor marked in progress) this long after
    /// its delivery is delivered again.
    pub ack_wait: Duration,
    /// Most records delivered and not yet acknowledged.
    pub max_ack_pending: usize,
}

/// One value written to the bucket, to acknowledge once handled.
pub struct KvWrite<T> {
    pub key: String,
    pub value: T,
    /// How many times this record was delivered (1 the first time).
    pub delivered: i64,
    pub ack: WriteAck,
}

/// Acknowledges one [`KvWrite`].
pub struct WriteAck(jetstream::message::Acker);

impl WriteAck {
    /// Handled: never delivered again.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.0.ack().await.map_err(|e| BusError::Transport {
            subject: "(ack)".into(),
            reason: e.to_string(),
        })
    }

    /// Still being handled: the redelivery clock starts again.
    pub async fn in_progress(&self) {
        let _ = self.0.ack_with(AckKind::Progress).await;
    }
}

impl Bus {
    /// The values written to `bucket` through the durable consumer
    /// `durable` (created, delivering only new writes, when missing).
    pub async fn kv_durable<T>(
        &self,
        bucket: &str,
        durable: &str,
        settings: DurableSettings,
    ) -> Result<impl Stream<Item = KvWrite<T>> + Unpin + Send + 'static, BusError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let stream_name = format!("KV_{bucket}");
        let failed = |e: &dyn std::fmt::Display| BusError::Transport {
            subject: format!("consumer {stream_name}/{durable}"),
            reason: e.to_string(),
        };
        let js = jetstream::new(self.client.clone());
        let stream = js.get_stream(&stream_name).await.map_err(|e| failed(&e))?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_ack_pending: settings.max_ack_pending as i64,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|e| failed(&e))?;
        let messages = consumer.messages().await.map_err(|e| failed(&e))?;
        let prefix = format!("$KV.{bucket}.");
        let stats = self.stats.clone();
        let bucket = bucket.to_string();
        Ok(messages
            .filter_map(move |message| {
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        warn!(%bucket, error = %e, "durable consumer error");
                        return futures::future::ready(None);
                    }
                };
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                let (message, acker) = message.split();
                let ack = WriteAck(acker);
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                let key = message.subject.as_str().strip_prefix(&prefix);
                let decoded = match key {
                    Some(_) if deleted => None,
                    Some(key) => match decode::<T>(Encoding::MessagePack, &message.payload) {
                        Ok(value) => Some((key.to_string(), value)),
                        Err(e) => {
                            stats.count_malformed();
                            warn!(%bucket, %key, error = %e, "undecodable record skipped by the durable consumer");
                            None
                        }
                    },
                    None => None,
                };
                let write = match decoded {
                    Some((key, value)) => Some(KvWrite {
                        key,
                        value,
                        delivered,
                        ack,
                    }),
                    None => {
                        tokio::spawn(async move { ack.ack().await });
                        None
                    }
                };
                futures::future::ready(write)
            })
            .boxed())
    }
}
