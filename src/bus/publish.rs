//! The ordered publisher: one task drains a queue, so everything posted
//! through one `Bus` leaves in the order it was posted; messages for a
//! JetStream stream are acknowledged beside the queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::warn;

use super::Stats;

/// What the ordered publisher task takes: a message, or a barrier that
/// resolves once everything queued before it has been handed to NATS.
pub(super) enum Outgoing {
    Message {
        subject: String,
        headers: Option<HeaderMap>,
        payload: Bytes,
    },
    /// A message for a JetStream stream: sent in order, its acknowledgement
    /// awaited beside the queue.
    Stored {
        subject: String,
        payload: Bytes,
    },
    /// A service endpoint's answer, sent by its request's `respond`, which
    /// counts it in `$SRV.STATS` (`service.rs`).
    Answer {
        request: Box<async_nats::service::Request>,
        headers: Option<HeaderMap>,
        payload: Bytes,
    },
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Publishes queued messages one after another, so their order is kept.
pub(super) async fn publish_in_order(
    client: async_nats::Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    stats: Arc<Stats>,
) {
    let jetstream = async_nats::jetstream::new(client.clone());
    while let Some(outgoing) = queue.recv().await {
        let (subject, headers, payload) = match outgoing {
            Outgoing::Message {
                subject,
                headers,
                payload,
            } => (subject, headers, payload),
            Outgoing::Stored { subject, payload } => {
                store(&jetstream, subject, payload, &stats).await;
                continue;
            }
            Outgoing::Answer {
                request,
                headers,
                payload,
            } => {
                let answer = request.respond_with_headers(Ok(payload), headers.unwrap_or_default());
                if let Err(e) = answer.await {
                    let subject = request.message.reply.as_deref().unwrap_or_default();
                    warn!(%subject, error = %e, "publish failed");
                }
                continue;
            }
            Outgoing::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let result = match headers {
            Some(headers) => {
                client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
            }
            None => client.publish(subject.clone(), payload).await,
        };
        if let Err(e) = result {
            warn!(%subject, error = %e, "publish failed");
        }
    }
}

/// Sends one message to JetStream and awaits its acknowledgement in a task
/// of its own, counting it when it was not stored.
async fn store(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    payload: Bytes,
    stats: &Arc<Stats>,
) {
    let unstored = |stats: &Stats, subject: &str, error: String| {
        stats.unstored.fetch_add(1, Ordering::Relaxed);
        warn!(%subject, %error, "message for a stream not stored");
    };
    match jetstream.publish(subject.clone(), payload).await {
        Ok(ack) => {
            let stats = stats.clone();
            tokio::spawn(async move {
                if let Err(e) = ack.await {
                    unstored(&stats, &subject, e.to_string());
                }
            });
        }
        Err(e) => unstored(stats, &subject, e.to_string()),
    }
}
