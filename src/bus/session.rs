//! The sessions one bus holds (`auth::session`): which peers' session keys
//! it learned, from whose verified signature, and for each request subject
//! whose session answered it last.
//!
//! How a pair of buses comes to use codes instead of signatures, with no
//! message of its own:
//! 1. A request goes out signed, with this bus's session key in
//!    `Baton-Session` (covered by the signature).
//! 2. The receiving bus verifies the signature of a session key it does
//!    not know yet at once, learns the key with the signer's identity, and
//!    signs its reply with its own session key (it introduces itself).
//! 3. The requester verifies that reply's signature, learns the answering
//!    session and remembers it for the subject. Its next request on that
//!    subject carries `Baton-Mac` for that session instead of a signature.
//! 4. A receiver that holds no such session (a new broker after a
//!    fail-over, a restarted subagent, or the session evicted) does not
//!    pass the request on: it answers with a signed `Baton-Resign` reply,
//!    and the requester, once it has checked that the same identity signed
//!    it, sends the request again signed. Nothing is lost and the actor
//!    sees the request once.
//!
//! Publishes (heartbeats) stay signed: a publish has no reply to say a
//! session is unknown.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::auth::{split_mac, Identity, Sender, SessionKey, Shared};

/// At most this many peers' sessions are kept (each `baton` CLI run is a
/// new session): past it the oldest learned is forgotten, and that peer
/// signs again once.
const MAX_PEERS: usize = 4096;
/// At most this many request subjects remember whose session answered.
const MAX_SUBJECTS: usize = 8192;

/// A peer's session: who signed it, and the keys shared with it.
#[derive(Debug, Clone)]
struct Peer {
    identity: Identity,
    shared: Shared,
}

/// How an incoming message says who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Proof {
    /// A code from a session this bus holds: the sender is decided.
    Coded(Sender),
    /// A code for a session this bus does not hold: ask for a signature.
    UnknownSession,
    /// A signature (or nothing), checked as before; `learn` carries a
    /// session key this bus does not know yet.
    Signed { learn: Option<String> },
}

#[derive(Default)]
struct Table {
    peers: HashMap<String, Peer>,
    learned: VecDeque<String>,
    answered_by: HashMap<String, String>,
}

/// This bus's session key and what it learned.
pub(super) struct Sessions {
    own: SessionKey,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.own.public())
    }
}

impl Sessions {
    pub(super) fn new() -> Sessions {
        Sessions {
            own: SessionKey::generate(),
            table: Mutex::default(),
        }
    }

    /// This bus's session public key.
    pub(super) fn public(&self) -> &str {
        self.own.public()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("sessions lock")
    }

    /// Whether the session key `peer` was learned.
    pub(super) fn knows(&self, peer: &str) -> bool {
        self.table().peers.contains_key(peer)
    }

    /// Remembers `peer`'s session key, which `identity` signed; `false`
    /// when it is no usable key.
    pub(super) fn learn(&self, peer: &str, identity: Identity) -> bool {
        let Some(shared) = self.own.shared_with(peer) else {
            return false;
        };
        let mut table = self.table();
        let fresh = table
            .peers
            .insert(peer.to_string(), Peer { identity, shared })
            .is_none();
        if fresh {
            table.learned.push_back(peer.to_string());
        }
        while table.learned.len() > MAX_PEERS {
            if let Some(old) = table.learned.pop_front() {
                table.peers.remove(&old);
                table.answered_by.retain(|_, p| *p != old);
            }
        }
        true
    }

    /// Who sent a message carrying these headers: `session` (the sender's
    /// key), `mac`, and whether its signer still holds `trusted` (an
    /// identity removed from `identities.toml` loses its sessions too).
    pub(super) fn proof(
        &self,
        subject: &str,
        payload: &[u8],
        session: Option<&str>,
        mac: Option<&str>,
        trusted: impl Fn(&Identity) -> bool,
    ) -> Proof {
        let Some(mac) = mac else {
            let learn = session.filter(|k| !self.knows(k)).map(str::to_string);
            return Proof::Signed { learn };
        };
        let (Some(peer), Some((to, code))) = (session, split_mac(mac)) else {
            return Proof::Coded(Sender::Forged("a session code without its key".into()));
        };
        if to != self.public() {
            return Proof::UnknownSession;
        }
        let Some(known) = self.table().peers.get(peer).cloned() else {
            return Proof::UnknownSession;
        };
        if !trusted(&known.identity) {
            return Proof::UnknownSession;
        }
        Proof::Coded(if known.shared.verify(subject, payload, code) {
            Sender::Verified(known.identity)
        } else {
            Sender::Forged(format!("bad session code claiming {}", known.identity.name))
        })
    }

    /// The `Baton-Mac` value for a request on `subject`, when a session
    /// answered it last, with the identity that holds that session.
    pub(super) fn mac_for(&self, subject: &str, payload: &[u8]) -> Option<(String, Identity)> {
        let table = self.table();
        let peer = table.answered_by.get(subject)?;
        let known = table.peers.get(peer)?;
        let mac = known.shared.mac(peer, subject, payload);
        Some((mac, known.identity.clone()))
    }

    /// Requests on `subject` go to `peer`'s session from now on.
    pub(super) fn answered(&self, subject: &str, peer: &str) {
        let mut table = self.table();
        if !table.peers.contains_key(peer) {
            return;
        }
        if table.answered_by.len() >= MAX_SUBJECTS && !table.answered_by.contains_key(subject) {
            table.answered_by.clear();
        }
        table
            .answered_by
            .insert(subject.to_string(), peer.to_string());
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

    /// Two buses that learned each other's session keys.
    fn pair() -> (Sessions, Sessions) {
        let (a, b) = (Sessions::new(), Sessions::new());
        assert!(a.learn(b.public(), identity("b")));
        assert!(b.learn(a.public(), identity("a")));
        (a, b)
    }

    #[test]
    fn a_learned_session_s_code_names_its_signer_and_nothing_else_verifies() {
        let (a, b) = pair();
        let subject = "baton.broker.result";
        a.answered(subject, b.public());
        let (mac, to) = a.mac_for(subject, b"r").expect("a session answered");
        assert_eq!(to, identity("b"));
        let ok = |_: &Identity| true;
        assert_eq!(
            b.proof(subject, b"r", Some(a.public()), Some(&mac), ok),
            Proof::Coded(Sender::Verified(identity("a")))
        );
        for (subject, payload) in [(subject, b"x".as_slice()), ("baton.other", b"r")] {
            let got = b.proof(subject, payload, Some(a.public()), Some(&mac), ok);
            assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
        }
        // claimed by another known session, or without its key
        let c = Sessions::new();
        assert!(b.learn(c.public(), identity("c")));
        let got = b.proof(subject, b"r", Some(c.public()), Some(&mac), ok);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
        let got = b.proof(subject, b"r", None, Some(&mac), ok);
        assert!(matches!(got, Proof::Coded(Sender::Forged(_))), "{got:?}");
    }

    #[test]
    fn a_code_for_a_session_this_bus_does_not_hold_asks_for_a_signature() {
        let (a, b) = pair();
        let subject = "baton.broker.result";
        a.answered(subject, b.public());
        let (mac, _) = a.mac_for(subject, b"r").unwrap();
        let ok = |_: &Identity| true;
        // a new broker: never learned a, and the code names another key
        let fresh = Sessions::new();
        let got = fresh.proof(subject, b"r", Some(a.public()), Some(&mac), ok);
        assert_eq!(got, Proof::UnknownSession);
        // a stranger's key this bus never learned
        let stranger = Sessions::new();
        let got = b.proof(subject, b"r", Some(stranger.public()), Some(&mac), ok);
        assert_eq!(got, Proof::UnknownSession);
        // a signer no longer trusted
        let got = b.proof(subject, b"r", Some(a.public()), Some(&mac), |_| false);
        assert_eq!(got, Proof::UnknownSession);
        // a signed message teaches a key once
        assert_eq!(
            fresh.proof(subject, b"r", Some(a.public()), None, ok),
            Proof::Signed {
                learn: Some(a.public().into())
            }
        );
        assert_eq!(
            b.proof(subject, b"r", Some(a.public()), None, ok),
            Proof::Signed { learn: None }
        );
        // forgetting the subject's session: sign again
        a.forget(subject);
        assert!(a.mac_for(subject, b"r").is_none());
    }

    #[test]
    fn the_oldest_sessions_are_forgotten_past_the_limit() {
        let a = Sessions::new();
        let first = Sessions::new();
        assert!(a.learn(first.public(), identity("first")));
        a.answered("s.first", first.public());
        for i in 0..MAX_PEERS {
            let other = SessionKey::generate();
            assert!(a.learn(other.public(), identity(&format!("p{i}"))));
        }
        assert!(!a.knows(first.public()), "evicted");
        assert!(a.mac_for("s.first", b"x").is_none(), "its subject too");
        assert_eq!(a.table().peers.len(), MAX_PEERS);
        // an unusable key is not learned
        assert!(!a.learn("nope", identity("x")));
        a.answered("s.nope", "nope");
        assert!(a.mac_for("s.nope", b"x").is_none());
    }
}
