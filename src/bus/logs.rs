//! The log stream: a JetStream stream that keeps every task's output lines
//! (`{p}.events.*.*.log`) and every order's `finished` event for a retention
//! time, and the reader behind `baton order logs`.
//!
//! Subagents publish log lines as plain events; the stream captures them in
//! passing, so no publisher knows about it. The `finished` event is kept
//! too: the broker publishes it after the subagent's last line reached the
//! server, so it is stored after that line and tells a follower that the
//! order's output is complete.
//!
//! The active broker creates the stream, kept for `nats.log_retention`. A
//! workflow step's lines are stored under its workflow order, with the step
//! (`TaskLog.step`). Lines published while NATS was unreachable are not in
//! it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::GetStreamErrorKind, stream};
use futures::stream::LocalBoxStream;
use futures::StreamExt;
use tracing::{info, warn};

use super::{decode, Bus, BusError, Encoding};
use crate::protocol::{EventKind, OrderFinished, Subjects, TaskLog};

/// JetStream's default duplicate window; never longer than the retention.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What [`Bus::order_logs`] yields, in the order the stream stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderLog {
    Line(TaskLog),
    Finished(OrderFinished),
}

/// Why a stream (an order's logs, the audit trail) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no stream {stream} in JetStream (a broker creates it when it starts)")]
    NoStream { stream: String },
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What a stream keeps: messages younger than `max_age`, and (when set)
/// at most `max_bytes` of them; the oldest go first (JetStream's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_age: Duration,
    pub max_bytes: Option<u64>,
}

impl From<Duration> for StreamLimits {
    fn from(max_age: Duration) -> StreamLimits {
        StreamLimits {
            max_age,
            max_bytes: None,
        }
    }
}

impl Bus {
    /// Creates the log stream `name`, keeping messages within `limits`, or
    /// brings an existing one's subjects and limits up to date (its
    /// replica count stays as created). Idempotent, and safe when several
    /// brokers start at once.
    pub async fn ensure_log_stream(
        &self,
        name: &str,
        limits: impl Into<StreamLimits>,
    ) -> Result<(), BusError> {
        self.ensure_stream_once(name, log_subjects(&self.subjects), limits.into())
            .await
    }

    /// [`Bus::ensure_stream`] for a stream whose settings stay the same for
    /// the life of the process, and which nothing deletes: once per
    /// connection.
    pub(super) async fn ensure_stream_once(
        &self,
        name: &str,
        subjects: Vec<String>,
        limits: StreamLimits,
    ) -> Result<(), BusError> {
        let ensured = || self.ensured.lock().unwrap_or_else(|e| e.into_inner());
        if ensured().contains(name) {
            return Ok(());
        }
        self.ensure_stream(name, subjects, limits).await?;
        ensured().insert(name.to_string());
        Ok(())
    }

    /// Creates the stream `name` capturing `subjects` within `limits` (file
    /// storage, this bus's replica count), or brings an existing one's
    /// subjects and limits up to date.
    pub(super) async fn ensure_stream(
        &self,
        name: &str,
        subjects: Vec<String>,
        limits: StreamLimits,
    ) -> Result<(), BusError> {
        let js = jetstream::new(self.client.clone());
        let retention = limits.max_age;
        // JetStream's "no limit" is -1
        let max_bytes = limits
            .max_bytes
            .map_or(-1, |b| b.min(i64::MAX as u64) as i64);
        let wanted = stream::Config {
            name: name.to_string(),
            subjects: subjects.clone(),
            storage: stream::StorageType::File,
            max_age: retention,
            max_bytes,
            duplicate_window: retention.min(DUPLICATE_WINDOW),
            num_replicas: self.replicas.max(1),
            ..Default::default()
        };
        let existing = match js.get_or_create_stream(wanted).await {
            Ok(existing) => existing,
            // another broker may have created it in between
            Err(create) => js
                .get_stream(name)
                .await
                .map_err(|_| transport(name, create))?,
        };
        let current = &existing.cached_info().config;
        let same_bytes =
            current.max_bytes == max_bytes || (max_bytes < 0 && current.max_bytes <= 0);
        if current.max_age == retention && current.subjects == subjects && same_bytes {
            return Ok(());
        }
        let config = stream::Config {
            subjects,
            max_age: retention,
            max_bytes,
            duplicate_window: retention.min(DUPLICATE_WINDOW),
            ..current.clone()
        };
        js.update_stream(config)
            .await
            .map_err(|e| transport(name, e))?;
        info!(stream = %name, retention = %humantime::format_duration(retention), max_bytes, "stream updated");
        Ok(())
    }

    /// The output lines of order `order_id` kept in the log stream `stream`
    /// (every task and attempt, in the order stored), and its `finished`
    /// event once stored. Without `follow` the stream ends after the last
    /// message stored when it was opened (at once when there is none); with
    /// `follow` it waits for more and never ends by itself. Messages that
    /// cannot be decoded are skipped with a warning.
    pub async fn order_logs(
        &self,
        stream: &str,
        order_id: &str,
        follow: bool,
    ) -> Result<LocalBoxStream<'static, Result<OrderLog, BusError>>, LogsError> {
        let handle = self.open_stream(stream).await?;
        // without `follow`, reading ends at the last message stored now
        let last = handle.cached_info().state.last_sequence;
        let config = consumer::pull::OrderedConfig {
            // the stream holds only `log` and `finished` events
            filter_subject: self.subjects.order_events(order_id),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let last = (!follow).then_some(last);
        Ok(self.read(&handle, stream, config, last, decode_log).await?)
    }

    /// Reads `stream` through an ordered consumer made with `config`,
    /// decoding each message, until sequence `last` (or, with `None`,
    /// following it); nothing pending and a `last` ends it at once.
    pub(super) async fn read<T: 'static>(
        &self,
        handle: &async_nats::jetstream::stream::Stream,
        stream: &str,
        config: consumer::pull::OrderedConfig,
        last: Option<u64>,
        decode: fn(&Subjects, &str, &[u8]) -> Option<T>,
    ) -> Result<LocalBoxStream<'static, Result<T, BusError>>, BusError> {
        let consumer = handle
            .create_consumer(config)
            .await
            .map_err(|e| transport(stream, e))?;
        if last.is_some() && consumer.cached_info().num_pending == 0 {
            return Ok(futures::stream::empty().boxed_local());
        }
        let messages = consumer
            .messages()
            .await
            .map_err(|e| transport(stream, e))?;
        let reading = Reading {
            messages,
            stream: stream.to_string(),
            subjects: self.subjects.clone(),
            last,
            done: false,
            decode,
        };
        Ok(futures::stream::unfold(reading, Reading::next).boxed_local())
    }

    /// The stream `stream`, or [`LogsError::NoStream`].
    pub(super) async fn open_stream(
        &self,
        stream: &str,
    ) -> Result<jetstream::stream::Stream, LogsError> {
        let js = jetstream::new(self.client.clone());
        match js.get_stream(stream).await {
            Ok(handle) => Ok(handle),
            Err(e) => Err(match e.kind() {
                GetStreamErrorKind::JetStream(error)
                    if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    LogsError::NoStream {
                        stream: stream.to_string(),
                    }
                }
                _ => transport(stream, e).into(),
            }),
        }
    }
}

/// The state of one read of a stream through an ordered consumer.
pub(super) struct Reading<T> {
    pub messages: consumer::pull::Ordered,
    pub stream: String,
    pub subjects: Subjects,
    /// Stop after this stream sequence (or when nothing more is pending);
    /// `None` follows.
    pub last: Option<u64>,
    pub done: bool,
    /// What a stored message is; `None` skips it.
    pub decode: fn(&Subjects, &str, &[u8]) -> Option<T>,
}

impl<T> Reading<T> {
    pub async fn next(mut self) -> Option<(Result<T, BusError>, Reading<T>)> {
        while !self.done {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(e) => {
                    self.done = true;
                    return Some((Err(transport(&self.stream, e)), self));
                }
            };
            let (sequence, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => {
                    self.done = true;
                    return Some((Err(transport(&self.stream, e)), self));
                }
            };
            self.done = self
                .last
                .is_some_and(|last| pending == 0 || sequence >= last);
            if let Some(item) = (self.decode)(&self.subjects, &message.subject, &message.payload) {
                return Some((Ok(item), self));
            }
        }
        None
    }
}

/// The subjects the log stream captures.
fn log_subjects(subjects: &Subjects) -> Vec<String> {
    vec![
        subjects.task_events("*", "*", EventKind::Log),
        // lines of subagents older than publisher-named subjects
        subjects.event("*", "*", EventKind::Log),
        subjects.event("*", "*", EventKind::Finished),
    ]
}

fn decode_log(subjects: &Subjects, subject: &str, payload: &[u8]) -> Option<OrderLog> {
    let decoded = match subjects.parse_event(subject)?.2 {
        EventKind::Log => match decode::<TaskLog>(Encoding::MessagePack, payload) {
            // a line another subagent wrote in this one's name
            Ok(line) if !subjects.publisher_matches(subject, &line.subagent_id) => {
                warn!(%subject, claimed = %line.subagent_id, "stored log line from another publisher skipped");
                return None;
            }
            line => line.map(OrderLog::Line),
        },
        EventKind::Finished => decode(Encoding::MessagePack, payload).map(OrderLog::Finished),
        EventKind::Accepted | EventKind::Started | EventKind::Changed => return None,
    };
    decoded
        .inspect_err(|e| warn!(%subject, error = %e, "undecodable stored log skipped"))
        .ok()
}

pub(super) fn transport(stream: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Transport {
        subject: format!("stream {stream}"),
        reason: e.to_string(),
    }
}
