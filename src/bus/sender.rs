//! Who sent a message: its signature headers checked against the identities
//! this process trusts, lazily (verifying costs tens of microseconds, and
//! most messages never need it: only what a receiver obeys or records).
//!
//! The bus signs its requests and `post_signed` messages (heartbeats), and
//! hands each decoded message's [`SenderProof`] to the actor, checked only
//! when asked.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use crate::auth::{Role, Sender, Signed, Trust};

/// The identities a bus trusts, read again (at most once a second) when a
/// message is signed by a key it does not know: a subagent added with
/// `baton auth init` is trusted without a restart.
#[derive(Debug)]
pub struct TrustSource {
    dir: PathBuf,
    trust: std::sync::RwLock<Trust>,
    read_at: std::sync::Mutex<std::time::Instant>,
}

impl TrustSource {
    pub(super) fn check(
        &self,
        signed: Signed<'_>,
        signer: Option<&str>,
        signature: Option<&str>,
    ) -> Sender {
        let sender = self
            .trust
            .read()
            .expect("trust lock")
            .check(signed, signer, signature);
        if !matches!(sender, Sender::Forged(_)) || !self.reread() {
            return sender;
        }
        self.trust
            .read()
            .expect("trust lock")
            .check(signed, signer, signature)
    }

    /// Reads the identities again unless that was done within a second.
    fn reread(&self) -> bool {
        let mut read_at = self.read_at.lock().expect("trust lock");
        if read_at.elapsed() < Duration::from_secs(1) {
            return false;
        }
        *read_at = std::time::Instant::now();
        match Trust::load(&self.dir) {
            Ok(trust) => {
                *self.trust.write().expect("trust lock") = trust;
                true
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read the identities again");
                false
            }
        }
    }
}

impl TrustSource {
    /// The trusted identity holding `public_key`.
    pub(super) fn identity(&self, public_key: &str) -> Option<crate::auth::Identity> {
        let trust = self.trust.read().expect("trust lock");
        trust.identity(public_key).cloned()
    }

    pub(super) fn new(dir: PathBuf, trust: Trust) -> TrustSource {
        TrustSource {
            dir,
            trust: std::sync::RwLock::new(trust),
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }
}

/// What a message carries to tell who sent it; [`SenderProof::get`] checks
/// it the first time it is asked.
#[derive(Clone)]
pub struct SenderProof(Arc<Proof>);

struct Proof {
    checked: OnceLock<Sender>,
    trust: Option<Arc<TrustSource>>,
    subject: String,
    payload: Bytes,
    signer: Option<String>,
    signature: Option<String>,
    /// The sender's session key, which the signature covers.
    session: Option<String>,
}

impl std::fmt::Debug for SenderProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.checked.get() {
            Some(sender) => write!(f, "{sender:?}"),
            None => f.write_str("(not checked yet)"),
        }
    }
}

/// The headers a message carries to say who sent it.
#[derive(Debug, Default)]
pub(super) struct Claims {
    pub signer: Option<String>,
    pub signature: Option<String>,
    pub session: Option<String>,
}

impl SenderProof {
    pub(super) fn new(
        trust: Option<Arc<TrustSource>>,
        subject: String,
        payload: Bytes,
        claims: Claims,
    ) -> SenderProof {
        SenderProof(Arc::new(Proof {
            checked: OnceLock::new(),
            trust,
            subject,
            payload,
            signer: claims.signer,
            signature: claims.signature,
            session: claims.session,
        }))
    }

    /// A sender already decided (a session code, checked on arrival).
    pub(super) fn decided(sender: Sender) -> SenderProof {
        let checked = OnceLock::new();
        let _ = checked.set(sender);
        SenderProof(Arc::new(Proof {
            checked,
            trust: None,
            subject: String::new(),
            payload: Bytes::new(),
            signer: None,
            signature: None,
            session: None,
        }))
    }

    /// Who sent it (checked once, then remembered).
    pub fn get(&self) -> &Sender {
        let p = &self.0;
        p.checked.get_or_init(|| match &p.trust {
            None => Sender::Unchecked,
            Some(trust) => trust.check(
                Signed {
                    subject: &p.subject,
                    session: p.session.as_deref(),
                    payload: &p.payload,
                    answering: None,
                },
                p.signer.as_deref(),
                p.signature.as_deref(),
            ),
        })
    }

    /// See [`Sender::is`].
    pub fn is(&self, role: Role) -> bool {
        self.get().is(role)
    }

    /// See [`Sender::describe`].
    pub fn describe(&self) -> String {
        self.get().describe()
    }

    /// True when signed by a trusted identity.
    pub fn verified(&self) -> bool {
        matches!(self.get(), Sender::Verified(_))
    }
}
