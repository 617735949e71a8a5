//! The audit stream: a JetStream stream keeping every [`AuditRecord`] the
//! broker publishes on `{p}.audit.>` for a retention time, and the reader
//! behind `baton audit`. Only the broker writes it (it appends with
//! [`Bus::append`]); of the other roles only `admin` may read it.
//!
//! The active broker creates the stream (file storage, `nats.replicas`,
//! kept for `nats.audit_retention`). `append` is `post` for a stream: sent
//! in order through the ordered publisher, JetStream's acknowledgement
//! awaited beside the queue, and a missing one counted in
//! `Stats::unstored`; the command whose record it is stands either way.

use async_nats::jetstream::consumer;
use futures::stream::LocalBoxStream;
use tracing::warn;

use super::logs::{transport, StreamLimits};
use super::{decode, Bus, BusError, Encoding, LogsError};
use crate::protocol::{AuditRecord, Subjects};

impl Bus {
    /// Creates the audit stream `name` keeping records within `limits`,
    /// or brings an existing one's subjects and limits up to date, like
    /// [`Bus::ensure_log_stream`].
    pub async fn ensure_audit_stream(
        &self,
        name: &str,
        limits: impl Into<StreamLimits>,
    ) -> Result<(), BusError> {
        let subjects = vec![self.subjects.all_audit()];
        self.ensure_stream_once(name, subjects, limits.into()).await
    }

    /// The audit records kept in `stream`, oldest first: those stored at or
    /// after `since_ms` (all without it), of `command` and the commands
    /// under it (`subagent` gives `subagent.disable`, ...) when given. The
    /// stream of records ends after the last one stored when it was opened.
    /// Records that cannot be decoded are skipped with a warning.
    pub async fn audit_records(
        &self,
        stream: &str,
        since_ms: Option<u64>,
        command: Option<&str>,
    ) -> Result<LocalBoxStream<'static, Result<AuditRecord, BusError>>, LogsError> {
        // a role that may not read it learns so at once, not by a timeout
        let info = format!("$JS.API.STREAM.INFO.{stream}");
        let handle = self
            .unless_denied(&info, self.open_stream(stream))
            .await??;
        let last = handle.cached_info().state.last_sequence;
        let deliver_policy = match since_ms {
            Some(ms) => consumer::DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000)
                    .map_err(|e| transport(stream, e))?,
            },
            None => consumer::DeliverPolicy::All,
        };
        let filter_subjects = match command {
            Some(c) => vec![
                self.subjects.audit(c),
                self.subjects.audit(&format!("{c}.>")),
            ],
            None => Vec::new(),
        };
        let config = consumer::pull::OrderedConfig {
            filter_subjects,
            deliver_policy,
            ..Default::default()
        };
        Ok(self
            .read(&handle, stream, config, Some(last), decode_record)
            .await?)
    }
}

fn decode_record(_: &Subjects, subject: &str, payload: &[u8]) -> Option<AuditRecord> {
    decode(Encoding::MessagePack, payload)
        .inspect_err(|e| warn!(%subject, error = %e, "undecodable audit record skipped"))
        .ok()
}
