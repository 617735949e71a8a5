//! Payload encodings: MessagePack maps with named fields (the default) and JSON
//! (client-facing requests that carry `Content-Type: application/json`).

use serde::{de::DeserializeOwned, Serialize};

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    MessagePack,
    Json,
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {encoding:?} payload: {reason}")]
pub struct DecodeError {
    pub encoding: Encoding,
    pub reason: String,
}

/// The encoding of a payload: JSON when its `Content-Type` says so, or when
/// it has none and the payload is a JSON object (its first byte other than
/// white space is `{`: in MessagePack such a byte is a small integer, never
/// a request); else MessagePack.
pub fn encoding_for(content_type: Option<&str>, payload: &[u8]) -> Encoding {
    let declared_json =
        content_type.is_some_and(|c| c.starts_with(crate::protocol::JSON_CONTENT_TYPE));
    let looks_json = content_type.is_none()
        && (payload.iter())
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .is_some_and(|b| *b == b'{');
    if declared_json || looks_json {
        Encoding::Json
    } else {
        Encoding::MessagePack
    }
}

/// Encodes `value` as a MessagePack map (named fields) or as JSON.
pub fn encode<T: Serialize>(encoding: Encoding, value: &T) -> Vec<u8> {
    match encoding {
        // Both encoders only fail on types serde cannot describe (maps with
        // non-string keys in JSON); our wire types have none.
        Encoding::MessagePack => rmp_serde::to_vec_named(value).expect("wire types encode"),
        Encoding::Json => serde_json::to_vec(value).expect("wire types encode"),
    }
}

/// Decodes a payload; unknown fields are ignored. An empty payload is an
/// empty map (so `nats req baton.api.status ""` works). A MessagePack array is
/// refused: the protocol is maps with named fields, never positional.
pub fn decode<T: DeserializeOwned>(encoding: Encoding, payload: &[u8]) -> Result<T, DecodeError> {
    let payload = match (payload.is_empty(), encoding) {
        (true, Encoding::MessagePack) => &[0x80][..],
        (true, Encoding::Json) => &b"{}"[..],
        (false, _) => payload,
    };
    if encoding == Encoding::MessagePack && matches!(payload[0], 0x90..=0x9f | 0xdc | 0xdd) {
        return Err(DecodeError {
            encoding,
            reason: "expected a map with named fields, got an array".into(),
        });
    }
    let result = match encoding {
        Encoding::MessagePack => rmp_serde::from_slice(payload).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
    };
    result.map_err(|reason| DecodeError { encoding, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GetOrder, SubmitOrder};

    #[test]
    fn json_is_told_by_its_header_or_by_its_first_byte() {
        let json = Some("application/json");
        assert_eq!(encoding_for(json, b"{}"), Encoding::Json);
        assert_eq!(encoding_for(None, b" \n{\"job\":\"a\"}"), Encoding::Json);
        assert_eq!(encoding_for(None, b""), Encoding::MessagePack);
        let packed = encode(
            Encoding::MessagePack,
            &GetOrder {
                order_id: "x".into(),
            },
        );
        assert_eq!(encoding_for(None, &packed), Encoding::MessagePack);
        // a declared type other than JSON is believed
        assert_eq!(
            encoding_for(Some("application/msgpack"), b"{}"),
            Encoding::MessagePack
        );
    }

    #[test]
    fn messagepack_is_a_map_with_named_fields() {
        let bytes = encode(
            Encoding::MessagePack,
            &GetOrder {
                order_id: "x".into(),
            },
        );
        // fixmap of one entry, then the key as a string
        assert_eq!(bytes[0], 0x81);
        assert_eq!(&bytes[2..10], b"order_id");
    }

    #[test]
    fn unknown_fields_are_ignored_in_both_encodings() {
        let json = br#"{"job":"a","params":{},"later_field":[1,2]}"#;
        let order: SubmitOrder = decode(Encoding::Json, json).unwrap();
        assert_eq!(order.job, "a");
        let value: serde_json::Value = serde_json::from_slice(json).unwrap();
        let packed = rmp_serde::to_vec_named(&value).unwrap();
        let order: SubmitOrder = decode(Encoding::MessagePack, &packed).unwrap();
        assert_eq!(order.job, "a");
    }

    #[test]
    fn empty_payload_is_an_empty_map() {
        use crate::protocol::StatusRequest;
        assert!(decode::<StatusRequest>(Encoding::MessagePack, b"").is_ok());
        assert!(decode::<StatusRequest>(Encoding::Json, b"").is_ok());
        assert!(
            decode::<SubmitOrder>(Encoding::Json, b"").is_err(),
            "job is required"
        );
    }

    #[test]
    fn positional_arrays_are_refused() {
        let packed = rmp_serde::to_vec(&("hello",)).unwrap();
        let e = decode::<SubmitOrder>(Encoding::MessagePack, &packed).unwrap_err();
        assert!(e.reason.contains("map"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b"\xc1"[..], b"\xff\xff", b"{", b"[1,2,3]", b"\x91\xa1a"] {
            assert!(decode::<SubmitOrder>(Encoding::MessagePack, bytes).is_err());
            assert!(decode::<SubmitOrder>(Encoding::Json, bytes).is_err());
        }
    }
}
