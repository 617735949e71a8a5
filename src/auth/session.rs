//! Session keys: a message authentication code (HMAC-SHA256) in place of an
//! ed25519 signature once two Baton processes know each other (pure but for
//! [`SessionKey::generate`]).
//!
//! Each bus makes an X25519 key pair when it connects. A signed message may
//! carry the sender's session public key (header `Baton-Session`); the
//! signature then covers it too ([`super::trust::sign`]), so a receiver that
//! verifies the signature knows which identity holds that session key. From
//! then on the two sides share a secret (X25519), and each direction has its
//! own key derived from it, both session keys and both identities' nkeys: a
//! message from A to B is authenticated with `key(A → B)`, which only A and
//! B can compute, over the subject and payload exactly like a signature
//! (headers `Baton-Signer`, the sender's nkey, and
//! `Baton-Mac: <receiver's session key>.<tag>`). A few microseconds instead
//! of a signature's tens (verifying one costs the broker about 60 µs).
//!
//! What a code proves is what a signature proved: the identity that signed
//! the session key sent this payload on this subject. Someone who signs
//! another's session key as its own gains nothing: the keys it would need
//! are derived with its own nkey, which the key's holder never uses. Like
//! signatures, codes do not stop a replay of the same message on the same
//! subject (the payloads carry ids and epochs for that). A session key
//! lives as long as its process; a key pair whose shared secret is all
//! zeros (a low-order point) is refused.

use base64::Engine as _;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ring::hmac;

/// Header holding the sender's session public key (base64url, no padding).
pub const SESSION_HEADER: &str = "Baton-Session";
/// Header holding `<receiver's session public key>.<tag>` (base64url).
pub const MAC_HEADER: &str = "Baton-Mac";
/// Header of a reply saying "I hold no session with you: sign the request".
pub const RESIGN_HEADER: &str = "Baton-Resign";

const LABEL: &[u8] = b"baton session v1";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// This process's session key pair (one per bus).
pub struct SessionKey {
    secret: [u8; 32],
    public: String,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKey({})", self.public)
    }
}

impl SessionKey {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> SessionKey {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .expect("the system's random source works");
        SessionKey::from_secret(secret)
    }

    fn from_secret(secret: [u8; 32]) -> SessionKey {
        let public = b64().encode(MontgomeryPoint::mul_base_clamped(secret).to_bytes());
        SessionKey { secret, public }
    }

    /// The public key, as sent in `Baton-Session`.
    pub fn public(&self) -> &str {
        &self.public
    }

    /// The two keys this process, signing as `me` (its nkey), shares with
    /// the holder of the session key `peer` signing as `peer_id`; `None`
    /// when `peer` is no usable key.
    pub fn shared_with(&self, me: &str, peer: &str, peer_id: &str) -> Option<Shared> {
        let bytes: [u8; 32] = b64().decode(peer).ok()?.try_into().ok()?;
        let secret = MontgomeryPoint(bytes).mul_clamped(self.secret).to_bytes();
        if secret == [0u8; 32] {
            return None;
        }
        let direction = |from: [&str; 2], to: [&str; 2]| {
            let extract = hmac::Key::new(hmac::HMAC_SHA256, &secret);
            let mut context = hmac::Context::with_key(&extract);
            context.update(LABEL);
            for part in [from[0], " ", from[1], ">", to[0], " ", to[1]] {
                context.update(part.as_bytes());
            }
            hmac::Key::new(hmac::HMAC_SHA256, context.sign().as_ref())
        };
        let (own, theirs) = ([self.public.as_str(), me], [peer, peer_id]);
        Some(Shared {
            to_peer: direction(own, theirs),
            from_peer: direction(theirs, own),
        })
    }
}

/// The keys two session holders share: one per direction.
#[derive(Clone)]
pub struct Shared {
    to_peer: hmac::Key,
    from_peer: hmac::Key,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

fn tag(key: &hmac::Key, subject: &str, payload: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(subject.as_bytes());
    context.update(b"\n");
    context.update(payload);
    context.sign()
}

impl Shared {
    /// The `Baton-Mac` value for a message to the peer whose session key is
    /// `peer`.
    pub fn mac(&self, peer: &str, subject: &str, payload: &[u8]) -> String {
        let tag = tag(&self.to_peer, subject, payload);
        format!("{peer}.{}", b64().encode(tag.as_ref()))
    }

    /// True when `tag` (base64url) is the peer's code for this payload on
    /// this subject (compared in constant time).
    pub fn verify(&self, subject: &str, payload: &[u8], code: &str) -> bool {
        let Ok(code) = b64().decode(code) else {
            return false;
        };
        let expected = tag(&self.from_peer, subject, payload);
        subtle::ConstantTimeEq::ct_eq(expected.as_ref(), code.as_slice()).into()
    }
}

/// A `Baton-Mac` value split into the receiver's session key and the tag.
pub fn split_mac(value: &str) -> Option<(&str, &str)> {
    value.split_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_keys_one_per_direction() {
        let (a, b) = (SessionKey::generate(), SessionKey::generate());
        let ab = a.shared_with("UA", b.public(), "UB").expect("a usable key");
        let ba = b.shared_with("UB", a.public(), "UA").expect("a usable key");
        let (subject, payload) = ("baton.broker.result", b"result".as_slice());
        let mac = ab.mac(b.public(), subject, payload);
        let (to, tag) = split_mac(&mac).expect("two parts");
        assert_eq!(to, b.public(), "names its receiver");
        assert!(ba.verify(subject, payload, tag), "B checks A's code");
        // another payload or subject, or the code reflected back to A
        assert!(!ba.verify(subject, b"other", tag));
        assert!(!ba.verify("baton.broker.register", payload, tag));
        assert!(!ab.verify(subject, payload, tag), "reflected to its sender");
        // a third party's keys do not make it
        let c = SessionKey::generate();
        let cb = c.shared_with("UC", b.public(), "UB").expect("usable");
        let forged = cb.mac(b.public(), subject, payload);
        assert!(!ba.verify(subject, payload, split_mac(&forged).unwrap().1));
        assert!(!ba.verify(subject, payload, "not base64!"));
        // A's session key claimed by identity C: B's keys for (C, A's key)
        // verify nothing A sends
        let claimed = b.shared_with("UB", a.public(), "UC").expect("usable");
        assert!(!claimed.verify(subject, payload, tag));
    }

    #[test]
    fn keys_that_are_no_point_or_of_low_order_are_refused() {
        let a = SessionKey::generate();
        assert!(a.shared_with("UA", "short", "UB").is_none());
        assert!(a.shared_with("UA", "", "UB").is_none());
        // the identity and a point of order 8 give an all-zero secret
        let zero = b64().encode([0u8; 32]);
        assert!(a.shared_with("UA", &zero, "UB").is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(a.shared_with("UA", &b64().encode(one), "UB").is_none());
    }

    #[test]
    fn a_key_pair_is_stable_and_its_public_key_printable() {
        let k = SessionKey::from_secret([7u8; 32]);
        assert_eq!(k.public(), SessionKey::from_secret([7u8; 32]).public());
        assert_eq!(k.public().len(), 43);
        assert!(!format!("{k:?}").contains("secret"));
    }
}
