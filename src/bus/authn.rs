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
use crate::protocol::{ErrorCode, ErrorReply};

/// How a request went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    /// With a session code for a session of the identity whose nkey is
    /// `to`; `binding`: what a call to sign it again must be signed over
    /// ([`binding`]).
    Coded { to: String, binding: String },
    /// Signed (`signature`), with this bus's session key: an answer may
    /// introduce a session.
    Introducing { signature: String },
    /// Signed without a session, or not at all.
    Plain,
}

/// What a request's reply asks of the requester.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Then {
    Done,
    /// The receiver held no session: send the request again, signed.
    SignAgain,
    /// A call to sign again not signed for this request by the identity it
    /// went to: the request fails.
    Refused,
}

/// How an incoming message says who sent it.
pub(super) enum Arrived {
    /// Its sender's proof; `introduce`: the signature of a verified request
    /// that brought a session key, which the reply answers introducing this
    /// bus.
    Proof {
        sender: SenderProof,
        introduce: Option<String>,
    },
    /// A code for a session this bus does not hold; `binding`: the coded
    /// request as this bus saw it ([`binding`]).
    UnknownSession { binding: String },
}

fn header(message: &Message, name: &str) -> Option<String> {
    (message.headers.as_ref())
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// A coded request as a call to sign it again names it: its subject,
/// signer, session key and code, each preceded by its length (so no two
/// requests read the same).
fn binding(subject: &str, signer: &str, session: &str, mac: &str) -> String {
    let parts = [subject, signer, session, mac];
    parts
        .iter()
        .map(|p| format!("{}:{p}", p.len()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Bus {
    /// The signature headers for `signed` (added to `base`), with this
    /// bus's session key when `signed` carries it.
    fn sign(&self, signed: Signed<'_>, base: Option<HeaderMap>) -> Option<HeaderMap> {
        let Some(key) = &self.signer else {
            return base;
        };
        let mut headers = base.unwrap_or_default();
        headers.insert(SIGNER_HEADER, key.public_key().as_str());
        let signature = crate::auth::sign(key, signed);
        headers.insert(SIGNATURE_HEADER, signature.as_str());
        if let Some(session) = signed.session {
            headers.insert(SESSION_HEADER, session);
        }
        Some(headers)
    }

    /// The signature headers for `payload` on `subject` (added to `base`),
    /// without a session key (publishes, and requests many may answer).
    pub(super) fn signature(
        &self,
        subject: &str,
        payload: &[u8],
        base: Option<HeaderMap>,
    ) -> Option<HeaderMap> {
        self.sign(Signed::new(subject, payload), base)
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
            return (self.signature(subject, payload, base), Sent::Plain);
        };
        if let Some((mac, to)) = coded.then(|| sessions.mac_for(subject, payload)).flatten() {
            let mut headers = base.unwrap_or_default();
            headers.insert(SIGNER_HEADER, sessions.me());
            headers.insert(SESSION_HEADER, sessions.public());
            headers.insert(MAC_HEADER, mac.as_str());
            let binding = binding(subject, sessions.me(), sessions.public(), &mac);
            return (Some(headers), Sent::Coded { to, binding });
        }
        let signed = Signed {
            session: Some(sessions.public()),
            ..Signed::new(subject, payload)
        };
        let headers = self.sign(signed, base);
        let signature = (headers.as_ref())
            .and_then(|h| h.get(SIGNATURE_HEADER))
            .map(|v| v.as_str().to_string());
        match signature {
            Some(signature) => (headers, Sent::Introducing { signature }),
            None => (headers, Sent::Plain),
        }
    }

    /// Who sent `message`: a session code is checked now (a hash); a
    /// signature when first asked, except one bringing a session key, checked
    /// now to learn the key and introduce this bus in the reply.
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
                introduce: None,
            };
        };
        let mac = header(message, MAC_HEADER);
        let learn = match sessions.proof(
            (&message.subject, &message.payload),
            claims.signer.as_deref(),
            claims.session.as_deref(),
            mac.as_deref(),
            |nkey| trust.identity(nkey),
        ) {
            Proof::Coded(sender) => {
                return Arrived::Proof {
                    sender: SenderProof::decided(sender),
                    introduce: None,
                }
            }
            Proof::UnknownSession => {
                let binding = binding(
                    &message.subject,
                    claims.signer.as_deref().unwrap_or_default(),
                    claims.session.as_deref().unwrap_or_default(),
                    mac.as_deref().unwrap_or_default(),
                );
                return Arrived::UnknownSession { binding };
            }
            Proof::Signed { learn } => learn,
        };
        if message.reply.is_none() {
            // a publish: nothing to introduce, nothing learned, checked lazily
            return Arrived::Proof {
                sender: proof(claims),
                introduce: None,
            };
        }
        let signature = claims.signature.clone();
        let brings_session = claims.session.is_some();
        let sender = proof(claims);
        // only a verified request's reply introduces this bus (a signature
        // costs; and a session is learned only from its signer)
        let introduce = match (brings_session, sender.get()) {
            (true, Sender::Verified(identity)) => {
                let usable = match &learn {
                    Some(key) => sessions.learn(key, identity),
                    None => true,
                };
                signature.filter(|_| usable)
            }
            _ => None,
        };
        Arrived::Proof { sender, introduce }
    }

    /// The headers (added to `base`) that introduce this bus on a reply to
    /// `reply_subject`, answering the request signed `request`.
    pub(super) fn introduction(
        &self,
        reply_subject: &str,
        payload: &[u8],
        request: &str,
        base: Option<HeaderMap>,
    ) -> Option<HeaderMap> {
        let Some(sessions) = &self.sessions else {
            return base;
        };
        let signed = Signed {
            session: Some(sessions.public()),
            answering: Some(request),
            ..Signed::new(reply_subject, payload)
        };
        self.sign(signed, base)
    }

    /// Who sent a publish (nothing to answer: a code for a session this bus
    /// does not hold is refused as forged).
    pub(super) fn published_by(&self, message: &Message) -> SenderProof {
        match self.arrived(message) {
            Arrived::Proof { sender, .. } => sender,
            Arrived::UnknownSession { .. } => SenderProof::decided(Sender::Forged(
                "a session this process does not hold".into(),
            )),
        }
    }

    /// Answers a coded request for a session this bus does not hold (it is
    /// not passed on): signed over the request as this bus saw it
    /// (`binding`: subject, signer, session key and code), so the requester
    /// knows that the identity it sent that very request to did not act on
    /// it, and sends it again signed.
    pub(super) fn ask_to_sign_again(&self, replier: &Replier, binding: &str) {
        self.stats.count_unknown_session();
        let error = ErrorReply::new(
            ErrorCode::Forbidden,
            "this receiver holds no session with the sender's key (it restarted or \
             took over): send the request again, signed",
        );
        if let Some(counted) = &replier.counted {
            counted.answered(Some(&error));
        }
        let Some(reply) = &replier.reply else {
            return;
        };
        let payload = bytes::Bytes::from(super::encode(replier.encoding, &error));
        let signed = Signed {
            answering: Some(binding),
            ..Signed::new(reply, &payload)
        };
        let json = (replier.encoding == super::Encoding::Json).then(super::inbound::json_headers);
        let mut headers = self.sign(signed, json).unwrap_or_default();
        headers.insert(RESIGN_HEADER, "1");
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
        let signer = |answering: &str| {
            let signed = Signed {
                subject: &reply.subject,
                session: session.as_deref(),
                payload: &reply.payload,
                answering: Some(answering),
            };
            let signer = header(reply, SIGNER_HEADER);
            let signature = header(reply, SIGNATURE_HEADER);
            trust.check(signed, signer.as_deref(), signature.as_deref())
        };
        let resign = header(reply, RESIGN_HEADER).is_some();
        let prefix = self.subjects.prefix();
        let serves = |identity: &crate::auth::Identity| may_serve(identity, prefix, subject);
        match read_reply(sent, resign, signer, serves) {
            Reading::Nothing => {
                if matches!(sent, Sent::Coded { .. }) && refused(reply) {
                    // a receiver that holds no sessions at all (an older
                    // build): the next request on the subject is signed
                    sessions.forget(subject);
                }
                Then::Done
            }
            Reading::NotTaken => {
                // the request fails; the next one on the subject is signed
                sessions.forget(subject);
                Then::Refused
            }
            Reading::SignAgain => {
                sessions.forget(subject);
                Then::SignAgain
            }
            Reading::Introduced(identity) => {
                if let Some(key) = session {
                    let nkey = &identity.public_key;
                    if sessions.knows(nkey, &key) || sessions.learn(&key, &identity) {
                        sessions.answered(subject, nkey, &key);
                    }
                }
                Then::Done
            }
        }
    }
}

/// Whether `reply` is a `forbidden` error.
fn refused(reply: &Message) -> bool {
    let encoding = super::inbound::encoding_of(reply);
    super::decode::<ErrorReply>(encoding, &reply.payload)
        .is_ok_and(|e| e.error.code == ErrorCode::Forbidden)
}

impl Bus {
    /// A request coded for `subject` got no answer: the next one is signed
    /// (its receiver may be gone, or hold no sessions).
    pub(super) fn unanswered(&self, subject: &str, sent: &Sent) {
        if let (Some(sessions), Sent::Coded { .. }) = (&self.sessions, sent) {
            sessions.forget(subject);
        }
    }
}

/// What a reply means to its requester.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    Nothing,
    /// A call to sign again not taken (not signed for this request's code
    /// by the identity it went to): the request fails.
    NotTaken,
    /// Send the request again, signed.
    SignAgain,
    /// The receiver introduced its session, signed by this identity.
    Introduced(crate::auth::Identity),
}

/// Whether `identity` is one that serves requests on `subject`: its role
/// may subscribe to it (`auth::permissions`, the table the server's
/// configuration comes from), so no other identity can introduce itself
/// as the one that answers there.
fn may_serve(identity: &crate::auth::Identity, prefix: &str, subject: &str) -> bool {
    identity.role().is_some_and(|role| {
        let id = identity.id.as_deref();
        crate::auth::permissions(role, prefix, id, &identity.public_key).may_subscribe(subject)
    })
}

/// Reads a reply to a request that went out as `sent` (pure): `resign`
/// whether it asks for a signature, `signer(answering)` who verifiably
/// signed it as a reply to the request named `answering` (checked only
/// when it matters), `serves` whether an identity serves the request's
/// subject. Only the identity a coded request went to, answering that very
/// request, may ask for it again, so no one else can make a request go
/// twice; a signed request is never sent again; only an identity that
/// serves the subject may introduce itself.
fn read_reply(
    sent: &Sent,
    resign: bool,
    signer: impl FnOnce(&str) -> Sender,
    serves: impl FnOnce(&crate::auth::Identity) -> bool,
) -> Reading {
    match (sent, resign) {
        (Sent::Coded { to, binding }, true) => match signer(binding) {
            Sender::Verified(identity) if identity.public_key == *to => Reading::SignAgain,
            other => {
                debug!(sender = %other.describe(), %to, "a call to sign again not taken");
                Reading::NotTaken
            }
        },
        (Sent::Introducing { signature }, false) => match signer(signature) {
            Sender::Verified(identity) if serves(&identity) => Reading::Introduced(identity),
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

    /// A signer check: `who` signed a reply answering `request`.
    fn signed_by(who: &Identity, request: &str) -> impl FnOnce(&str) -> Sender {
        let (who, request) = (who.clone(), request.to_string());
        move |answering| {
            if answering == request {
                Sender::Verified(who)
            } else {
                Sender::Forged("answers another request".into())
            }
        }
    }

    fn anyone(_: &Identity) -> bool {
        true
    }

    #[test]
    fn only_the_identity_a_coded_request_went_to_can_have_that_request_sent_again() {
        let broker = identity("broker");
        let sent = binding("baton.broker.result", "Us1", "KEY-S1", "KEY-B.code-1");
        let coded = Sent::Coded {
            to: broker.public_key.clone(),
            binding: sent.clone(),
        };
        let again = read_reply(&coded, true, signed_by(&broker, &sent), anyone);
        assert_eq!(again, Reading::SignAgain);
        // the same code sent with another session key, signer or subject
        // (a copy the receiver cannot match): not this request
        for copy in [
            binding("baton.broker.result", "Us1", "KEY-X", "KEY-B.code-1"),
            binding("baton.broker.result", "Ux", "KEY-S1", "KEY-B.code-1"),
            binding("baton.api.status.brokers", "Us1", "KEY-S1", "KEY-B.code-1"),
        ] {
            let other = read_reply(&coded, true, signed_by(&broker, &copy), anyone);
            assert_eq!(other, Reading::NotTaken, "{copy}");
        }
        // by another identity, unsigned or forged: not taken
        let subagent = identity("subagent-s1");
        let other = read_reply(&coded, true, signed_by(&subagent, &sent), anyone);
        assert_eq!(other, Reading::NotTaken);
        for sender in [Sender::Unsigned, Sender::Forged("x".into())] {
            assert_eq!(
                read_reply(&coded, true, |_| sender, anyone),
                Reading::NotTaken
            );
        }
        // a signed request is never sent again, whoever asks
        let introducing = Sent::Introducing {
            signature: "sig-1".into(),
        };
        let asked = read_reply(&introducing, true, signed_by(&broker, "sig-1"), anyone);
        assert_eq!(asked, Reading::Nothing);
        let plain = read_reply(&Sent::Plain, true, signed_by(&broker, "sig-1"), anyone);
        assert_eq!(plain, Reading::Nothing);
        // an ordinary answer to a coded request: nothing checked
        let unchecked = |_: &str| -> Sender { panic!("no signature to check") };
        assert_eq!(
            read_reply(&coded, false, unchecked, anyone),
            Reading::Nothing
        );
    }

    #[test]
    fn bindings_of_different_requests_differ() {
        let a = binding("s", "U1", "K", "M.t");
        assert_ne!(a, binding("s", "U1", "K", "M.u"));
        assert_ne!(
            binding("s", "U1 K", "", "M.t"),
            binding("s", "U1", " K", "M.t")
        );
        assert_eq!(a, binding("s", "U1", "K", "M.t"));
    }

    #[test]
    fn a_session_is_taken_only_from_a_verified_reply_to_this_request_by_whom_serves_it() {
        let broker = identity("broker");
        let introducing = Sent::Introducing {
            signature: "sig-1".into(),
        };
        let got = read_reply(&introducing, false, signed_by(&broker, "sig-1"), anyone);
        assert_eq!(got, Reading::Introduced(broker.clone()));
        let other = read_reply(&introducing, false, signed_by(&broker, "sig-2"), anyone);
        assert_eq!(
            other,
            Reading::Nothing,
            "an introduction to another request"
        );
        for sender in [
            Sender::Unsigned,
            Sender::Forged("x".into()),
            Sender::Unchecked,
        ] {
            let got = read_reply(&introducing, false, |_| sender, anyone);
            assert_eq!(got, Reading::Nothing);
        }
        let plain = read_reply(&Sent::Plain, false, signed_by(&broker, "sig-1"), anyone);
        assert_eq!(plain, Reading::Nothing);
        // an identity that does not serve the subject
        let none = |_: &Identity| false;
        let got = read_reply(&introducing, false, signed_by(&broker, "sig-1"), none);
        assert_eq!(got, Reading::Nothing);
    }

    #[test]
    fn who_serves_a_subject_comes_from_the_roles_table() {
        let role = |role: &str, id: Option<&str>| Identity {
            name: role.into(),
            role: role.into(),
            id: id.map(str::to_string),
            public_key: "UKEY".into(),
        };
        let broker = role("broker", None);
        let s1 = role("subagent", Some("s1"));
        let monitor = role("monitor", None);
        for subject in [
            "baton.broker.result",
            "baton.api.submit",
            "baton.subagent.s1.run",
        ] {
            assert!(may_serve(&broker, "baton", subject), "{subject}");
        }
        assert!(may_serve(&s1, "baton", "baton.subagent.s1.run"));
        assert!(!may_serve(&s1, "baton", "baton.subagent.s2.run"));
        assert!(!may_serve(&s1, "baton", "baton.broker.result"));
        assert!(!may_serve(&monitor, "baton", "baton.broker.result"));
        assert!(!may_serve(&monitor, "baton", "baton.api.submit"));
    }
}
