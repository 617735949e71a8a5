//! The sessions one bus holds (`auth::session`): which peers' session keys
//! it learned, from whose verified signature, and for each request subject
//! whose session answered it last.
//!
//! How a pair of buses comes to use codes instead of signatures, with no
//! message of its own:
//! 1. A request goes out signed, with this bus's session key in
//!    `Baton-Session` (covered by the signature).
//! 2. The receiving bus verifies the signature at once, learns the key
//!    with the signer's identity (keyed by both: signing someone else's key
//!    as one's own binds nothing of theirs), and signs its reply with its
//!    own session key (it introduces itself). A reply's signature covers
//!    the request's signature (`auth::trust::Signed::answering`): it is no
//!    command anywhere, and introduces this one requester only.
//! 3. The requester verifies that reply's signature and, when the signer's
//!    role serves the subject (`auth::permissions`: only the broker answers
//!    `baton.broker.*`, only subagent `ID` and the broker
//!    `baton.subagent.ID.*`), learns the answering session and remembers it
//!    for the subject. Its next request on that subject carries
//!    `Baton-Signer` and `Baton-Mac` for that session instead of a
//!    signature.
//! 4. A receiver that holds no such session (a new broker after a
//!    fail-over, a restarted subagent, or the session evicted) does not act
//!    on the request: it answers with a `Baton-Resign` reply signed over
//!    the request as it saw it (subject, signer, session key, code), and the
//!    requester, once it has checked that the identity it sent the code to
//!    signed it for this very request, sends the request again signed. Any
//!    other call to sign again is not taken (the request fails,
//!    `forbidden`, and the subject's session is forgotten).
//!
//! Only requests teach session keys (a publish with one is checked lazily,
//! like any other).
//! Each identity keeps at most [`PER_IDENTITY`] sessions (the oldest go
//! first), so no credential can push out another's.
//!
//! Publishes (heartbeats) stay signed: a publish has no reply to say a
//! session is unknown.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::auth::{split_mac, Identity, Sender, SessionKey, Shared};

/// Sessions kept per identity (each `baton` CLI run is a new session): past
/// it that identity's oldest is forgotten, and its holder signs once more.
const PER_IDENTITY: usize = 64;
/// Sessions kept in all: past it the identity holding the most loses its
/// oldest.
const MAX_PEERS: usize = 4096;
/// At most this many request subjects remember whose session answered.
const MAX_SUBJECTS: usize = 8192;

/// A session: the signer's nkey and its session key.
type PeerKey = (String, String);

/// How an incoming message says who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Proof {
    /// A code from a session this bus holds: the sender is decided.
    Coded(Sender),
    /// A code for a session this bus does not hold: ask for a signature.
    UnknownSession,
    /// A signature (or nothing), checked as before; `learn` carries a
    /// session key this bus does not know yet for its signer.
    Signed { learn: Option<String> },
}

#[derive(Default)]
struct Table {
    peers: HashMap<PeerKey, Shared>,
    /// Each identity's sessions, oldest first.
    by_identity: HashMap<String, VecDeque<String>>,
    answered_by: HashMap<String, PeerKey>,
}

impl Table {
    fn remove(&mut self, nkey: &str, oldest: bool) {
        let Some(keys) = self.by_identity.get_mut(nkey) else {
            return;
        };
        let gone = if oldest { keys.pop_front() } else { None };
        if keys.is_empty() {
            self.by_identity.remove(nkey);
        }
        if let Some(session) = gone {
            let peer = (nkey.to_string(), session);
            self.peers.remove(&peer);
            self.answered_by.retain(|_, p| *p != peer);
        }
    }
}

/// This bus's session key and what it learned.
pub(super) struct Sessions {
    own: SessionKey,
    /// This bus's identity (its nkey's public key).
    me: String,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.own.public())
    }
}

impl Sessions {
    /// The sessions of a bus signing as `me` (its nkey's public key).
    pub(super) fn new(me: String) -> Sessions {
        Sessions {
            own: SessionKey::generate(),
            me,
            table: Mutex::default(),
        }
    }

    /// This bus's session public key.
    pub(super) fn public(&self) -> &str {
        self.own.public()
    }

    /// This bus's identity (its nkey's public key).
    pub(super) fn me(&self) -> &str {
        &self.me
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("sessions lock")
    }

    /// Whether `signer` was learned holding the session key `peer`.
    pub(super) fn knows(&self, signer: &str, peer: &str) -> bool {
        let key = (signer.to_string(), peer.to_string());
        self.table().peers.contains_key(&key)
    }

    /// Remembers the session key `peer`, which `identity` signed; `false`
    /// when it is no usable key.
    pub(super) fn learn(&self, peer: &str, identity: &Identity) -> bool {
        let nkey = &identity.public_key;
        let Some(shared) = self.own.shared_with(&self.me, peer, nkey) else {
            return false;
        };
        let mut table = self.table();
        let fresh = table
            .peers
            .insert((nkey.clone(), peer.to_string()), shared)
            .is_none();
        if !fresh {
            return true;
        }
        let keys = table.by_identity.entry(nkey.clone()).or_default();
        keys.push_back(peer.to_string());
        if keys.len() > PER_IDENTITY {
            table.remove(nkey, true);
        }
        if table.peers.len() > MAX_PEERS {
            let most = (table.by_identity.iter())
                .max_by_key(|(_, keys)| keys.len())
                .map(|(nkey, _)| nkey.clone());
            if let Some(most) = most {
                table.remove(&most, true);
            }
        }
        true
    }

    /// Who sent a message carrying these headers: `signer` (an nkey),
    /// `session` (the sender's session key) and `mac`; `identity_of` gives
    /// an nkey's identity while it is trusted (an identity removed from
    /// `identities.toml` loses its sessions too, a changed one is current).
    pub(super) fn proof(
        &self,
        message: (&str, &[u8]),
        signer: Option<&str>,
        session: Option<&str>,
        mac: Option<&str>,
        identity_of: impl Fn(&str) -> Option<Identity>,
    ) -> Proof {
        let (subject, payload) = message;
        let Some(mac) = mac else {
            let learn = match (signer, session) {
                (Some(signer), Some(key)) if !self.knows(signer, key) => Some(key.to_string()),
                _ => None,
            };
            return Proof::Signed { learn };
        };
        let (Some(signer), Some(peer), Some((to, code))) = (signer, session, split_mac(mac)) else {
            return Proof::Coded(Sender::Forged(
                "a session code without its signer or session key".into(),
            ));
        };
        let Some(identity) = identity_of(signer) else {
            return Proof::Coded(Sender::Forged(format!(
                "a session code from {signer}, a key not trusted"
            )));
        };
        if to != self.public() {
            return Proof::UnknownSession;
        }
        let key = (signer.to_string(), peer.to_string());
        let Some(shared) = self.table().peers.get(&key).cloned() else {
            return Proof::UnknownSession;
        };
        Proof::Coded(if shared.verify(subject, payload, code) {
            Sender::Verified(identity)
        } else {
            Sender::Forged(format!("bad session code claiming {}", identity.name))
        })
    }

    /// The `Baton-Mac` value for a request on `subject`, when a session
    /// answered it last, with the nkey of the identity holding it.
    pub(super) fn mac_for(&self, subject: &str, payload: &[u8]) -> Option<(String, String)> {
        let (peer, shared) = {
            let table = self.table();
            let peer = table.answered_by.get(subject)?;
            (peer.clone(), table.peers.get(peer)?.clone())
        };
        let (nkey, session) = peer;
        Some((shared.mac(&session, subject, payload), nkey))
    }

    /// Requests on `subject` go to the session `peer` of `signer` from now on.
    pub(super) fn answered(&self, subject: &str, signer: &str, peer: &str) {
        let mut table = self.table();
        let key = (signer.to_string(), peer.to_string());
        if !table.peers.contains_key(&key) {
            return;
        }
        if table.answered_by.len() >= MAX_SUBJECTS && !table.answered_by.contains_key(subject) {
            let any = table.answered_by.keys().next().cloned();
            if let Some(any) = any {
                table.answered_by.remove(&any);
            }
        }
        table.answered_by.insert(subject.to_string(), key);
    }

    /// Requests on `subject` are signed again (its session is gone).
    pub(super) fn forget(&self, subject: &str) {
        self.table().answered_by.remove(subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> Identity {
        Identity {
            name: name.into(),
            role: "subagent".into(),
            id: Some(name.into()),
            public_key: format!("U{name}"),
        }
    }

    fn trusted(nkey: &str) -> Option<Identity> {
        Some(identity(nkey.strip_prefix('U').unwrap_or(nkey)))
    }

    /// Two buses that learned each other's session keys.
    fn pair() -> (Sessions, Sessions) {
        let (a, b) = (Sessions::new("Ua".into()), Sessions::new("Ub".into()));
        assert!(a.learn(b.public(), &identity("b")));
        assert!(b.learn(a.public(), &identity("a")));
        (a, b)
    }

    #[test]
    fn a_learned_session_s_code_names_its_signer_and_nothing_else_verifies() {
        let (a, b) = pair();
        let subject = "baton.broker.result";
        a.answered(subject, "Ub", b.public());
        let (mac, to) = a.mac_for(subject, b"r").expect("a session answered");
        assert_eq!(to, "Ub");
        let from_a =
            |m: (&str, &[u8])| b.proof(m, Some("Ua"), Some(a.public()), Some(&mac), trusted);
        assert_eq!(
            from_a((subject, b"r")),
            Proof::Coded(Sender::Verified(identity("a")))
        );
        for m in [(subject, b"x".as_slice()), ("baton.other", b"r")] {
            assert!(
                matches!(from_a(m), Proof::Coded(Sender::Forged(_))),
                "{m:?}"
            );
        }
        // claimed by another identity, or by another known session
        let c = Sessions::new("Uc".into());
        assert!(b.learn(c.public(), &identity("c")));
        let m = (subject, b"r".as_slice());
        let got = b.proof(m, Some("Uc"), Some(a.public()), Some(&mac), trusted);
        assert_eq!(got, Proof::UnknownSession, "c never signed a's key");
        let got = b.proof(m, Some("Uc"), Some(c.public()), Some(&mac), trusted);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
        let got = b.proof(m, None, Some(a.public()), Some(&mac), trusted);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
    }

    #[test]
    fn another_identity_signing_a_session_key_as_its_own_takes_nothing_from_its_holder() {
        let (a, b) = pair();
        // the monitor signs a's session key as its own, and b learns it
        assert!(b.learn(a.public(), &identity("monitor")));
        let subject = "baton.broker.result";
        a.answered(subject, "Ub", b.public());
        let (mac, _) = a.mac_for(subject, b"r").unwrap();
        let m = (subject, b"r".as_slice());
        assert_eq!(
            b.proof(m, Some("Ua"), Some(a.public()), Some(&mac), trusted),
            Proof::Coded(Sender::Verified(identity("a"))),
            "a's codes still name a"
        );
        let got = b.proof(m, Some("Umonitor"), Some(a.public()), Some(&mac), trusted);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
    }

    #[test]
    fn a_code_for_a_session_this_bus_does_not_hold_asks_for_a_signature() {
        let (a, b) = pair();
        let subject = "baton.broker.result";
        a.answered(subject, "Ub", b.public());
        let (mac, _) = a.mac_for(subject, b"r").unwrap();
        let m = (subject, b"r".as_slice());
        // a new broker: never learned a, and the code names another key
        let fresh = Sessions::new("Ub".into());
        let got = fresh.proof(m, Some("Ua"), Some(a.public()), Some(&mac), trusted);
        assert_eq!(got, Proof::UnknownSession);
        // a stranger's key this bus never learned
        let stranger = SessionKey::generate();
        let got = b.proof(m, Some("Ua"), Some(stranger.public()), Some(&mac), trusted);
        assert_eq!(got, Proof::UnknownSession);
        // a signer no longer (or never) trusted: refused, not asked again
        let got = b.proof(m, Some("Ua"), Some(a.public()), Some(&mac), |_| None);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
        // a signed message teaches a key once
        let learn = fresh.proof(m, Some("Ua"), Some(a.public()), None, trusted);
        assert_eq!(
            learn,
            Proof::Signed {
                learn: Some(a.public().into())
            }
        );
        let known = b.proof(m, Some("Ua"), Some(a.public()), None, trusted);
        assert_eq!(known, Proof::Signed { learn: None });
        // forgetting the subject's session: sign again
        a.forget(subject);
        assert!(a.mac_for(subject, b"r").is_none());
    }

    #[test]
    fn an_identity_keeps_its_newest_sessions_and_cannot_push_out_another_s() {
        let (a, b) = pair();
        a.answered("s.b", "Ub", b.public());
        for _ in 0..PER_IDENTITY * 3 {
            let other = SessionKey::generate();
            assert!(a.learn(other.public(), &identity("client")));
        }
        let table = a.table();
        assert_eq!(table.by_identity["Uclient"].len(), PER_IDENTITY);
        assert_eq!(table.peers.len(), PER_IDENTITY + 1);
        drop(table);
        assert!(a.knows("Ub", b.public()), "b's session stays");
        assert!(a.mac_for("s.b", b"x").is_some());
        // the oldest of the identity holding the most goes past MAX_PEERS
        for i in 0..MAX_PEERS {
            let other = SessionKey::generate();
            assert!(a.learn(other.public(), &identity(&format!("p{}", i % 100))));
        }
        assert!(a.table().peers.len() <= MAX_PEERS);
        // an unusable key is not learned
        assert!(!a.learn("nope", &identity("x")));
        a.answered("s.nope", "Ux", "nope");
        assert!(a.mac_for("s.nope", b"x").is_none());
    }
}
