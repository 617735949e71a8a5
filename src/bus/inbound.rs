//! Decoding what arrives: the encoding a message says it uses, publishes
//! (oversized or malformed ones dropped with a warning) and replies (the
//! expected type, or the peer's `ErrorReply`).

use async_nats::{HeaderMap, Message};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{decode, BusError, Encoding, Received, SenderProof};
use crate::protocol::{ErrorReply, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE};

pub(super) fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE);
    headers
}

pub(super) fn encoding_of(message: &Message) -> Encoding {
    let content_type = (message.headers.as_ref())
        .and_then(|h| h.get(CONTENT_TYPE_HEADER))
        .map(|v| v.as_str());
    super::codec::encoding_for(content_type, &message.payload)
}

pub(super) fn decode_publish<T: DeserializeOwned>(
    message: &Message,
    max: usize,
    sender: impl FnOnce() -> SenderProof,
) -> Option<Received<T>> {
    if message.payload.len() > max {
        warn!(subject = %message.subject, bytes = message.payload.len(), "oversized message dropped");
        return None;
    }
    match decode::<T>(encoding_of(message), &message.payload) {
        Ok(body) => Some(Received {
            subject: message.subject.to_string(),
            body,
            sender: sender(),
        }),
        Err(e) => {
            warn!(subject = %message.subject, error = %e, "malformed message dropped");
            None
        }
    }
}

/// Decodes a reply: the expected type, or the [`ErrorReply`] a peer sent instead.
pub(super) fn decode_reply<T: DeserializeOwned>(
    subject: &str,
    encoding: Encoding,
    payload: &[u8],
) -> Result<T, BusError> {
    if let Ok(error) = decode::<ErrorReply>(encoding, payload) {
        return Err(BusError::Remote(error));
    }
    decode(encoding, payload).map_err(|source| BusError::Decode {
        subject: subject.to_string(),
        source,
    })
}
