//! How a bus proves who it is on what it sends, and tells who sent what
//! arrives: signatures (`auth::trust`) and, between buses that know each
//! other, session codes (`auth::session`, the handshake in `session.rs`).

use async_nats::{HeaderMap, Message};
use tracing::debug;

use super::publish::Outgoing;
use super::sender::Claims;
use super::session::Proof;
use super::{Bus, Replier, SenderProof};
use crate::auth::{
    Sender, Signed, MAC_HEADER, RESIGN_HEADER, SESSION_HEADER, SIGNATURE_HEADER, SIGNER_HEADER,
};
use crate::protocol::{ErrorCode, ErrorReply, CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE};

/// How a request went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    /// With a session code for the session of this identity.
    Coded(crate::auth::Identity),
    /// Signed, with this bus's session key (an answer may introduce a session).
    Introducing,
    /// Signed without a session, or not at all.
    Plain,
}

/// What a request's reply asks of the requester.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Then {
    Done,
    /// The receiver held no session: send the request again, signed.
    SignAgain,
}

/// How an incoming message says who sent it.
pub(super) enum Arrived {
    /// Its sender's proof; `introduce`: a signed request with a session key
    /// whose signer this bus verified, so the reply introduces this bus.
    Proof {
        sender: SenderProof,
        introduce: bool,
    },
    /// A code for a session this bus does not hold.
    UnknownSession,
}

fn header(message: &Message, name: &str) -> Option<String> {
    (message.headers.as_ref())
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

impl Bus {
    /// The signature headers for `payload` on `subject` (added to `base`),
    /// covering this bus's session key when `session` (then sent too).
    pub(super) fn signature(
        &self,
        subject: &str,
        payload: &[u8],
        base: Option<HeaderMap>,
        session: bool,
    ) -> Option<HeaderMap> {
        let Some(key) = &self.signer else {
            return base;
        };
        let session = self.sessions.as_ref().filter(|_| session);
        let mut headers = base.unwrap_or_default();
        headers.insert(SIGNER_HEADER, key.public_key().as_str());
        let signed = Signed {
            subject,
            session: session.map(|s| s.public()),
            payload,
        };
        let signature = crate::auth::sign(key, signed);
        headers.insert(SIGNATURE_HEADER, signature.as_str());
        if let Some(session) = session {
            headers.insert(SESSION_HEADER, session.public());
        }
        Some(headers)
    }

    /// The headers for a request: a session code when a session answered
    /// `subject` last (and `coded`), else a signature with this bus's
    /// session key.
    pub(super) fn authenticate(
        &self,
        subject: &str,
        payload: &[u8],
        base: Option<HeaderMap>,
        coded: bool,
    ) -> (Option<HeaderMap>, Sent) {
        let Some(sessions) = &self.sessions else {
            return (self.signature(subject, payload, base, false), Sent::Plain);
        };
        if let Some((mac, to)) = coded.then(|| sessions.mac_for(subject, payload)).flatten() {
            let mut headers = base.unwrap_or_default();
            headers.insert(SESSION_HEADER, sessions.public());
            headers.insert(MAC_HEADER, mac.as_str());
            return (Some(headers), Sent::Coded(to));
        }
        (
            self.signature(subject, payload, base, true),
            Sent::Introducing,
        )
    }

    /// Who sent `message`: a session code is checked now (a hash), a
    /// signature when first asked, except one bringing a session key this
    /// bus does not know yet, checked now to learn the key.
    pub(super) fn arrived(&self, message: &Message) -> Arrived {
        let claims = Claims {
            signer: header(message, SIGNER_HEADER),
            signature: header(message, SIGNATURE_HEADER),
            session: header(message, SESSION_HEADER),
        };
        let proof = |claims| {
            SenderProof::new(
                self.trust.clone(),
                message.subject.to_string(),
                message.payload.clone(),
                claims,
            )
        };
        let (Some(sessions), Some(trust)) = (&self.sessions, &self.trust) else {
            return Arrived::Proof {
                sender: proof(claims),
                introduce: false,
            };
        };
        let mac = header(message, MAC_HEADER);
        let session = claims.session.clone();
        let learn = match sessions.proof(
            &message.subject,
            &message.payload,
            session.as_deref(),
            mac.as_deref(),
            |identity| trust.still_trusts(identity),
        ) {
            Proof::Coded(sender) => {
                return Arrived::Proof {
                    sender: SenderProof::decided(sender),
                    introduce: false,
                }
            }
            Proof::UnknownSession => return Arrived::UnknownSession,
            Proof::Signed { learn } => learn,
        };
        let signed = claims.signature.is_some();
        let sender = proof(claims);
        let introduce = match learn {
            Some(key) => match sender.get() {
                Sender::Verified(identity) => sessions.learn(&key, identity.clone()),
                _ => false,
            },
            None => signed && session.is_some(),
        };
        Arrived::Proof { sender, introduce }
    }

    /// The headers that introduce this bus on a reply to `reply_subject`.
    pub(super) fn introduction(&self, reply_subject: &str, payload: &[u8]) -> Option<HeaderMap> {
        self.sessions.as_ref()?;
        self.signature(reply_subject, payload, None, true)
    }

    /// Answers a coded request this bus holds no session for (it is not
    /// passed on): signed, so the requester knows it came from the identity
    /// it talked to, and sends the request again signed.
    pub(super) fn ask_to_sign_again(&self, replier: &Replier) {
        self.stats.count_unknown_session();
        let Some(reply) = &replier.reply else {
            return;
        };
        let error = ErrorReply::new(
            ErrorCode::Forbidden,
            "this receiver holds no session with the sender's key (it restarted or \
             took over): send the request again, signed",
        );
        let payload = bytes::Bytes::from(super::encode(replier.encoding, &error));
        let mut headers = self
            .signature(reply, &payload, None, true)
            .unwrap_or_default();
        headers.insert(RESIGN_HEADER, "1");
        if replier.encoding == super::Encoding::Json {
            headers.insert(CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE);
        }
        self.enqueue(Outgoing::Message {
            subject: reply.clone(),
            headers: Some(headers),
            payload,
        });
    }

    /// Learns from a request's reply: a session that introduced itself, or
    /// a receiver that holds no session and asks for a signature.
    pub(super) fn replied(&self, subject: &str, sent: &Sent, reply: &Message) -> Then {
        let (Some(sessions), Some(trust)) = (&self.sessions, &self.trust) else {
            return Then::Done;
        };
        let session = header(reply, SESSION_HEADER);
        let signer = || {
            let signed = Signed {
                subject: &reply.subject,
                session: session.as_deref(),
                payload: &reply.payload,
            };
            let signer = header(reply, SIGNER_HEADER);
            let signature = header(reply, SIGNATURE_HEADER);
            trust.check(signed, signer.as_deref(), signature.as_deref())
        };
        let resign = header(reply, RESIGN_HEADER).is_some();
        match read_reply(sent, resign, signer) {
            Reading::Nothing => Then::Done,
            Reading::SignAgain => {
                sessions.forget(subject);
                Then::SignAgain
            }
            Reading::Introduced(identity) => {
                if let Some(key) = session {
                    if sessions.knows(&key) || sessions.learn(&key, identity) {
                        sessions.answered(subject, &key);
                    }
                }
                Then::Done
            }
        }
    }
}

/// What a reply means to its requester.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    Nothing,
    /// Send the request again, signed.
    SignAgain,
    /// The receiver introduced its session, signed by this identity.
    Introduced(crate::auth::Identity),
}

/// Reads a reply to a request that went out as `sent` (pure): `resign`
/// whether it asks for a signature, `signer` who verifiably signed it
/// (checked only when it matters). Only the identity a coded request went
/// to may ask for it again, so no one else can make a request go twice; a
/// signed request is never sent again.
fn read_reply(sent: &Sent, resign: bool, signer: impl FnOnce() -> Sender) -> Reading {
    match (sent, resign) {
        (Sent::Coded(talked_to), true) => match signer() {
            Sender::Verified(identity) if identity.public_key == talked_to.public_key => {
                Reading::SignAgain
            }
            other => {
                debug!(sender = %other.describe(), to = %talked_to.name, "a call to sign again not taken");
                Reading::Nothing
            }
        },
        (Sent::Introducing, false) => match signer() {
            Sender::Verified(identity) => Reading::Introduced(identity),
            _ => Reading::Nothing,
        },
        _ => Reading::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn identity(name: &str) -> Identity {
        Identity {
            name: name.into(),
            role: "broker".into(),
            id: None,
            public_key: format!("U{name}"),
        }
    }

    #[test]
    fn only_the_identity_a_coded_request_went_to_can_have_it_sent_again() {
        let broker = identity("broker");
        let coded = Sent::Coded(broker.clone());
        let verified = |i: &Identity| {
            let i = i.clone();
            move || Sender::Verified(i)
        };
        assert_eq!(
            read_reply(&coded, true, verified(&broker)),
            Reading::SignAgain
        );
        // another identity, an unsigned or forged call: not taken
        let other = identity("subagent-s1");
        assert_eq!(read_reply(&coded, true, verified(&other)), Reading::Nothing);
        for sender in [Sender::Unsigned, Sender::Forged("x".into())] {
            assert_eq!(read_reply(&coded, true, || sender), Reading::Nothing);
        }
        // a signed request is never sent again, whoever asks
        let introducing = Sent::Introducing;
        assert_eq!(
            read_reply(&introducing, true, verified(&broker)),
            Reading::Nothing
        );
        assert_eq!(
            read_reply(&Sent::Plain, true, verified(&broker)),
            Reading::Nothing
        );
        // an ordinary answer to a coded request: nothing checked
        let unchecked = || -> Sender { panic!("no signature to check") };
        assert_eq!(read_reply(&coded, false, unchecked), Reading::Nothing);
    }

    #[test]
    fn a_session_is_taken_only_from_a_verified_reply_to_a_signed_request() {
        let broker = identity("broker");
        let introducing = Sent::Introducing;
        let b = broker.clone();
        assert_eq!(
            read_reply(&introducing, false, move || Sender::Verified(b)),
            Reading::Introduced(broker.clone())
        );
        for sender in [
            Sender::Unsigned,
            Sender::Forged("x".into()),
            Sender::Unchecked,
        ] {
            assert_eq!(read_reply(&introducing, false, || sender), Reading::Nothing);
        }
        let b = broker.clone();
        let plain = read_reply(&Sent::Plain, false, move || Sender::Verified(b));
        assert_eq!(plain, Reading::Nothing);
    }
}
