//! Who sent a message, checked inside Baton without trusting the server's
//! configuration: a sender signs `subject` and payload with its identity's
//! nkey (ed25519; headers `Baton-Signer`, `Baton-Signature`), and a receiver looks the
//! signer's public key up in the identities it trusts (`identities.toml` of
//! the credentials folder, public keys only). The answer is a [`Sender`]: a
//! verified identity, unsigned, forged, or unchecked when a process runs
//! without identities.
//!
//! Pure but for [`Trust::load`]: the policies that use a [`Sender`] live
//! with the roles that decide (which commands a subagent obeys, whose
//! results the broker counts).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;

use super::dir::Identity;
use super::roles::Role;

/// Header naming the signer's public key.
pub const SIGNER_HEADER: &str = "Baton-Signer";
/// Header holding the signature (base64url, no padding).
pub const SIGNATURE_HEADER: &str = "Baton-Signature";

/// Who sent one message, as far as the receiver can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// Signed by a trusted identity.
    Verified(Identity),
    /// No signature (any NATS client; the server's permissions let it send this).
    Unsigned,
    /// A signature that does not verify, or by an unknown key.
    Forged(String),
    /// This receiver checks nothing (no identities to trust: `--insecure`).
    Unchecked,
}

impl Sender {
    /// The verified sender's role.
    pub fn role(&self) -> Option<Role> {
        match self {
            Sender::Verified(identity) => identity.role(),
            _ => None,
        }
    }

    /// True when the sender is a verified `role` (or nothing is checked).
    pub fn is(&self, role: Role) -> bool {
        matches!(self, Sender::Unchecked) || self.role() == Some(role)
    }

    /// True when the sender is the subagent `id` (or nothing is checked).
    pub fn is_subagent(&self, id: &str) -> bool {
        match self {
            Sender::Unchecked => true,
            Sender::Verified(identity) => {
                identity.role() == Some(Role::Subagent) && identity.id.as_deref() == Some(id)
            }
            _ => false,
        }
    }

    /// For logs and the audit trail: the identity's name, or why there is none.
    pub fn describe(&self) -> String {
        match self {
            Sender::Verified(identity) => identity.name.clone(),
            Sender::Unsigned => "unsigned".into(),
            Sender::Forged(why) => format!("forged ({why})"),
            Sender::Unchecked => "unchecked".into(),
        }
    }
}

/// The identities a process trusts, by public key (decoded once).
#[derive(Clone, Default)]
pub struct Trust {
    by_key: HashMap<String, (Identity, Arc<nkeys::KeyPair>)>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_key.values().map(|(i, _)| &i.name))
            .finish()
    }
}

impl Trust {
    /// The identities whose public keys decode.
    pub fn new(identities: impl IntoIterator<Item = Identity>) -> Trust {
        let by_key = identities
            .into_iter()
            .filter_map(|i| {
                let key = nkeys::KeyPair::from_public_key(&i.public_key).ok()?;
                Some((i.public_key.clone(), (i, Arc::new(key))))
            })
            .collect();
        Trust { by_key }
    }

    /// Reads a credentials folder's `identities.toml`.
    pub fn load(dir: &Path) -> anyhow::Result<Trust> {
        let auth = super::AuthDir::open(dir)?;
        Ok(Trust::new(auth.identities().iter().cloned()))
    }

    /// The identity holding `public_key`.
    pub fn identity(&self, public_key: &str) -> Option<&Identity> {
        self.by_key.get(public_key).map(|(identity, _)| identity)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Who signed `payload` sent on `subject` (with the session key
    /// `session`, when the message carries one), from the two header values.
    pub fn check(
        &self,
        signed: Signed<'_>,
        signer: Option<&str>,
        signature: Option<&str>,
    ) -> Sender {
        let (Some(signer), Some(signature)) = (signer, signature) else {
            return Sender::Unsigned;
        };
        let Some((identity, key)) = self.by_key.get(signer) else {
            return Sender::Forged(format!("unknown key {signer}"));
        };
        if verify_with(key, signed, signature) {
            Sender::Verified(identity.clone())
        } else {
            Sender::Forged(format!("bad signature claiming {}", identity.name))
        }
    }
}

/// What a signature covers: a message's subject and payload, the sender's
/// session key when it sends one (`auth::session`), and for a reply, the
/// request it answers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub subject: &'a str,
    pub session: Option<&'a str>,
    pub payload: &'a [u8],
    /// A reply's: the request it answers (an introduction: the request's
    /// `Baton-Signature`; a call to sign again: the coded request as its
    /// receiver saw it, `bus/authn.rs`). A reply's signature never verifies
    /// as a request's or a publish's, so a signed reply sent to a subject
    /// of the requester's choosing is no command there; and it answers that
    /// one request only.
    pub answering: Option<&'a str>,
}

impl<'a> Signed<'a> {
    /// A message without a session key.
    pub fn new(subject: &'a str, payload: &'a [u8]) -> Signed<'a> {
        Signed {
            subject,
            session: None,
            payload,
            answering: None,
        }
    }

    /// The bytes signed: the subject, a newline, the payload (so a signed
    /// message cannot be replayed on another subject); with a session key,
    /// preceded by ` session KEY` and a newline; a reply, preceded by
    /// ` reply REQUEST` and a newline. Each prefix starts with a space,
    /// which no subject has, so no two forms sign the same bytes.
    fn bytes(&self) -> Vec<u8> {
        let session = self.session.map_or(0, |k| k.len() + 10);
        let answering = self.answering.map_or(0, |r| r.len() + 8);
        let mut bytes =
            Vec::with_capacity(answering + session + self.subject.len() + 1 + self.payload.len());
        if let Some(request) = self.answering {
            bytes.extend_from_slice(b" reply ");
            bytes.extend_from_slice(request.as_bytes());
            bytes.push(b'\n');
        }
        if let Some(key) = self.session {
            bytes.extend_from_slice(b" session ");
            bytes.extend_from_slice(key.as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(self.subject.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(self.payload);
        bytes
    }
}

/// The signature of `signed` by `key` (base64url).
pub fn sign(key: &nkeys::KeyPair, signed: Signed<'_>) -> String {
    let signature = key.sign(&signed.bytes()).expect("a seed key signs");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
}

/// True when `signature` is `public_key`'s over `signed`.
pub fn verify(public_key: &str, signed: Signed<'_>, signature: &str) -> bool {
    nkeys::KeyPair::from_public_key(public_key)
        .is_ok_and(|key| verify_with(&key, signed, signature))
}

fn verify_with(key: &nkeys::KeyPair, signed: Signed<'_>, signature: &str) -> bool {
    let Ok(signature) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    key.verify(&signed.bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(key: &nkeys::KeyPair, role: Role, id: Option<&str>) -> Identity {
        Identity {
            name: super::super::identity_name(role, id),
            role: role.as_str().into(),
            id: id.map(str::to_string),
            public_key: key.public_key(),
        }
    }

    #[test]
    fn only_a_trusted_key_s_signature_over_this_subject_and_payload_verifies() {
        let (broker, sub, stranger) = (
            nkeys::KeyPair::new_user(),
            nkeys::KeyPair::new_user(),
            nkeys::KeyPair::new_user(),
        );
        let trust = Trust::new([
            identity(&broker, Role::Broker, None),
            identity(&sub, Role::Subagent, Some("s1")),
        ]);
        let (subject, payload) = ("baton.subagent.s1.run", b"task".as_slice());
        let m = Signed::new(subject, payload);
        let sig = sign(&broker, m);
        let pk = broker.public_key();
        let sender = trust.check(m, Some(&pk), Some(&sig));
        assert!(sender.is(Role::Broker), "{sender:?}");
        assert!(!sender.is(Role::Subagent));
        assert_eq!(sender.describe(), "broker");

        // another payload, another subject, another key, no signature
        let other = trust.check(Signed::new(subject, b"other"), Some(&pk), Some(&sig));
        assert!(matches!(other, Sender::Forged(_)), "{other:?}");
        let moved = trust.check(
            Signed::new("baton.subagent.s2.run", payload),
            Some(&pk),
            Some(&sig),
        );
        assert!(matches!(moved, Sender::Forged(_)), "{moved:?}");
        let spk = stranger.public_key();
        let ssig = sign(&stranger, m);
        let unknown = trust.check(m, Some(&spk), Some(&ssig));
        assert!(matches!(unknown, Sender::Forged(_)) && !unknown.is(Role::Broker));
        // a trusted subagent's key claiming to be the broker's
        let claimed = trust.check(m, Some(&pk), Some(&sign(&sub, m)));
        assert!(!claimed.is(Role::Broker), "{claimed:?}");
        assert_eq!(trust.check(m, None, None), Sender::Unsigned);
        assert!(!Sender::Unsigned.is(Role::Broker));
        assert!(
            Sender::Unchecked.is(Role::Broker),
            "checks off: anything goes"
        );
        assert!(!verify(&pk, m, "not base64!"));

        let result = Signed::new("baton.broker.result", payload);
        let s1 = trust.check(result, Some(&sub.public_key()), Some(&sign(&sub, result)));
        assert!(s1.is_subagent("s1") && !s1.is_subagent("s2"));
    }

    #[test]
    fn a_signature_covers_the_session_key_it_carries() {
        let broker = nkeys::KeyPair::new_user();
        let trust = Trust::new([identity(&broker, Role::Broker, None)]);
        let pk = broker.public_key();
        let (subject, payload) = ("baton.broker.result", b"r".as_slice());
        let with = |session| Signed {
            subject,
            session,
            payload,
            answering: None,
        };
        let sig = sign(&broker, with(Some("KEY-A")));
        assert!(trust
            .check(with(Some("KEY-A")), Some(&pk), Some(&sig))
            .is(Role::Broker));
        // another key swapped in, or the key stripped off
        let swapped = trust.check(with(Some("KEY-B")), Some(&pk), Some(&sig));
        assert!(matches!(swapped, Sender::Forged(_)), "{swapped:?}");
        let stripped = trust.check(with(None), Some(&pk), Some(&sig));
        assert!(matches!(stripped, Sender::Forged(_)), "{stripped:?}");
        // nor does a sessionless signature gain a key
        let plain = sign(&broker, with(None));
        assert!(!trust
            .check(with(Some("KEY-A")), Some(&pk), Some(&plain))
            .is(Role::Broker));
        // a reply's signature is no request's, and answers one request only
        let reply = |answering| Signed {
            answering,
            ..with(Some("KEY-A"))
        };
        let sig = sign(&broker, reply(Some("REQ-1")));
        assert!(trust
            .check(reply(Some("REQ-1")), Some(&pk), Some(&sig))
            .is(Role::Broker));
        for other in [reply(Some("REQ-2")), reply(None), with(None)] {
            let got = trust.check(other, Some(&pk), Some(&sig));
            assert!(matches!(got, Sender::Forged(_)), "{other:?}: {got:?}");
        }
    }
}
