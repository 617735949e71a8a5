//! Who may do what on the bus.
//!
//! - `roles.rs`: Baton's roles and the subjects each may publish and
//!   subscribe to, as data (pure).
//! - `dir.rs`: a credentials folder made by `baton auth init`: an nkey seed
//!   per identity and the nats-server `authorization` block enforcing the
//!   roles.
//! - `trust.rs`: signatures of senders and the identities a process trusts,
//!   so a receiver knows who sent a message whatever the server allows.
//! - `session.rs`: session keys, so two processes that know each other
//!   authenticate their messages with a code (HMAC) instead of a signature.
//!
//! The policies that use a sender live with the roles that obey:
//! `subagent` (broker-signed commands and heartbeats only, so no forged
//! epoch is ever adopted, `subagent/guard.rs`), `agent/node.rs`
//! (broker-signed role commands), `broker/gate.rs` (a subagent's reports
//! only from that subagent; deploy and switch-over only from an admin).
//!
//! Why nkey users in the server configuration (and not operator/account
//! JWTs): it needs nothing but a nats-server config file (no resolver, no
//! `nsc`, no account server), reloads with `nats-server --signal reload`,
//! works unchanged on a 3-node cluster (each node includes the same
//! `auth.conf`), and still gives each identity its own key and its own
//! subject permissions, which is what least privilege by role needs. Baton
//! also connects with `.creds` files, so an operator already running
//! operator mode can give Baton's roles the same permissions as JWTs.

mod dir;
mod roles;
mod session;
mod trust;

pub use dir::{identity_name, render_server_conf, AuthDir, Identity, Made};
pub use roles::{
    inbox_prefix, pattern_covers, permissions, subject_matches, Permissions, Role, BUCKETS, STREAMS,
};
pub use session::{split_mac, SessionKey, Shared, MAC_HEADER, RESIGN_HEADER, SESSION_HEADER};
pub use trust::{sign, verify, Sender, Signed, Trust, SIGNATURE_HEADER, SIGNER_HEADER};
