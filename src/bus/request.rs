//! Requests: sent signed or coded for a session (`authn.rs`), their
//! replies decoded, and a request the receiver cannot match to a session
//! sent once more, signed.

use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tracing::debug;

use super::inbound::{decode_reply, json_headers};
use super::{authn, encode, Bus, BusError, Encoding};
use crate::protocol::{ErrorCode, ErrorReply};

impl Bus {
    /// Sends a MessagePack request and decodes the reply (or its [`ErrorReply`]).
    pub async fn request<Req, Resp>(
        &self,
        subject: String,
        value: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.request_encoded(subject, Encoding::MessagePack, value, timeout)
            .await
    }

    /// Like [`Bus::request`] in a chosen encoding (tests use JSON as a plain client would).
    pub async fn request_encoded<Req, Resp>(
        &self,
        subject: String,
        encoding: Encoding,
        value: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = Bytes::from(encode(encoding, value));
        let reply = self
            .request_raw(&subject, encoding, payload, timeout)
            .await?;
        decode_reply(&subject, encoding, &reply)
    }

    /// Sends raw bytes as a request and returns the raw reply payload. A
    /// session code the receiver no longer knows costs one more round, signed.
    pub async fn request_raw(
        &self,
        subject: &str,
        encoding: Encoding,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let (reply, then) = self
            .request_once(subject, encoding, payload.clone(), timeout, true)
            .await?;
        match then {
            authn::Then::Done => Ok(reply),
            authn::Then::SignAgain => {
                debug!(%subject, "the receiver holds no session with this process: signing again");
                let (reply, _) = self
                    .request_once(subject, encoding, payload, timeout, false)
                    .await?;
                Ok(reply)
            }
            authn::Then::Refused => Err(BusError::Remote(ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "on {subject}: a call to sign the request again that its receiver did not \
                     sign for it; not sent again"
                ),
            ))),
        }
    }

    /// One request: its reply, and whether the receiver asks to sign it again.
    async fn request_once(
        &self,
        subject: &str,
        encoding: Encoding,
        payload: Bytes,
        timeout: Duration,
        coded: bool,
    ) -> Result<(Bytes, authn::Then), BusError> {
        // the server would close the connection's publish with a bare
        // "maximum payload exceeded": say what to do instead
        let max = self.client.max_payload();
        if max > 0 && payload.len() > max {
            return Err(BusError::Transport {
                subject: subject.to_string(),
                reason: too_large(payload.len(), max),
            });
        }
        let headers = (encoding == Encoding::Json).then(json_headers);
        let (headers, sent) = self.authenticate(subject, &payload, headers, coded);
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let sent_request = self
            .unless_denied(
                subject,
                self.client.send_request(subject.to_string(), request),
            )
            .await?;
        match sent_request {
            Ok(message) => {
                let then = self.replied(subject, &sent, &message);
                Ok((message.payload, then))
            }
            Err(e) => {
                self.unanswered(subject, &sent);
                Err(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                        subject: subject.to_string(),
                    },
                    async_nats::RequestErrorKind::TimedOut => BusError::TimedOut {
                        subject: subject.to_string(),
                        timeout,
                    },
                    _ => BusError::Transport {
                        subject: subject.to_string(),
                        reason: e.to_string(),
                    },
                })
            }
        }
    }
}

/// Why a request larger than the server takes is not sent (pure).
fn too_large(bytes: usize, max: usize) -> String {
    format!(
        "the request is {bytes} bytes, more than this NATS server takes ({max} bytes, its \
         max_payload): send less at once (a deploy: its files in several deploys), or raise \
         max_payload in nats-server's configuration and nats.max_message_bytes with it"
    )
}
