//! A request many may answer: sent once, signed like any request, and
//! every answer that comes within a window collected (`baton status` asks
//! every broker, standbys included, this way).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tracing::debug;

use super::inbound::decode_reply;
use super::{encode, Bus, BusError, Encoding};

impl Bus {
    /// Sends a MessagePack request on `subject` and returns the decoded
    /// answers that came within `window` (none, when nobody answers);
    /// answers that do not decode are skipped.
    pub async fn gather<Req, Resp>(
        &self,
        subject: String,
        value: &Req,
        window: Duration,
    ) -> Result<Vec<Resp>, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = Bytes::from(encode(Encoding::MessagePack, value));
        let answers = self.gather_raw(subject.clone(), payload, window).await?;
        let mut out = Vec::new();
        for answer in answers {
            match decode_reply(&subject, Encoding::MessagePack, &answer) {
                Ok(answer) => out.push(answer),
                Err(e) => debug!(%subject, error = %e, "an answer skipped"),
            }
        }
        Ok(out)
    }

    /// Sends `payload` as a request on `subject` and returns every answer's
    /// payload that came within `window` (`$SRV.PING` is asked this way).
    pub async fn gather_raw(
        &self,
        subject: String,
        payload: Bytes,
        window: Duration,
    ) -> Result<Vec<Bytes>, BusError> {
        let inbox = self.client.new_inbox();
        let mut answers = self.subscribe(&inbox).await?;
        let headers = self.signature(&subject, &payload, None).unwrap_or_default();
        let sent =
            self.client
                .publish_with_reply_and_headers(subject.clone(), inbox, headers, payload);
        let transport = |e: &dyn std::fmt::Display| BusError::Transport {
            subject: subject.clone(),
            reason: e.to_string(),
        };
        sent.await.map_err(|e| transport(&e))?;
        self.client.flush().await.map_err(|e| transport(&e))?;
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
            out.push(message.payload);
        }
        Ok(out)
    }
}
