//! The `[nats]` section: where the server is, how to prove who we are
//! (nkey, `.creds`, user and password, token, TLS), and the secrets among
//! them, which never print.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigProblem;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a client command waits for an answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest message payload accepted from others, in bytes.
    pub max_message_bytes: usize,
    /// JetStream replicas for Baton's buckets: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// On a cluster, the active broker keeps the leaders of Baton's streams
    /// and durable consumers beside the orders stream's (`broker::colocate`).
    pub colocate_leaders: bool,
    /// How long tasks' output lines are kept in the log stream.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// How long the audit trail (state-changing commands) is kept.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// Most bytes the log stream keeps (oldest messages go first); no
    /// limit but `log_retention` when unset.
    pub log_max_bytes: Option<u64>,
    /// Most bytes the audit stream keeps (oldest records go first); no
    /// limit but `audit_retention` when unset.
    pub audit_max_bytes: Option<u64>,
    /// nkey seed file: the identity `baton auth init` makes per role.
    pub nkey: Option<PathBuf>,
    /// `.creds` file (user JWT and nkey seed), for servers in operator mode.
    pub credentials: Option<PathBuf>,
    /// User name, with `password` (a `nats://user:pass@host` URL works too).
    pub user: String,
    pub password: Secret,
    /// Token authentication.
    pub token: Secret,
    /// CA certificate(s) (PEM) to trust for the server's TLS certificate;
    /// setting it (or a `tls://` URL) requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Let a broker or subagent run on a NATS server that asks for no
    /// credentials (anyone reaching it could run programs): experiments only.
    pub insecure: bool,
    /// The credentials folder whose `identities.toml` (public keys only) says
    /// whose signed commands and reports count; by default the folder of
    /// `nats.nkey` when it holds one.
    pub identities: Option<PathBuf>,
}

/// A secret setting: printed as `<redacted>`, never in full.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_message_bytes: 1024 * 1024,
            replicas: 1,
            colocate_leaders: true,
            log_retention: Duration::from_secs(7 * 24 * 60 * 60),
            audit_retention: Duration::from_secs(90 * 24 * 60 * 60),
            log_max_bytes: None,
            audit_max_bytes: None,
            nkey: None,
            credentials: None,
            user: String::new(),
            password: Secret::default(),
            token: Secret::default(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            identities: None,
        }
    }
}

impl NatsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigProblem> {
        let set = [
            ("nats.nkey", self.nkey.is_some()),
            ("nats.credentials", self.credentials.is_some()),
            ("nats.user", !self.user.is_empty()),
            ("nats.token", !self.token.is_empty()),
        ];
        let chosen: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
        if chosen.len() > 1 {
            return Err(ConfigProblem::Invalid {
                key: "nats",
                value: chosen.join(" + "),
                reason:
                    "set one way to authenticate: nkey, credentials, user (+ password) or token"
                        .into(),
            });
        }
        if !self.password.is_empty() && self.user.is_empty() {
            return Err(ConfigProblem::Invalid {
                key: "nats.password",
                value: "<redacted>".into(),
                reason: "a password needs nats.user".into(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigProblem::Invalid {
                key: "nats.tls_cert",
                value: format!("{:?} / {:?}", self.tls_cert, self.tls_key),
                reason: "set nats.tls_cert and nats.tls_key together".into(),
            });
        }
        Ok(())
    }

    /// True when some credentials are set (in the URL too).
    pub fn has_credentials(&self) -> bool {
        self.nkey.is_some()
            || self.credentials.is_some()
            || !self.user.is_empty()
            || !self.token.is_empty()
            || self.url.contains('@')
    }
}
