//! Who may do what on the bus.
//!
//! - `roles.rs`: Baton's roles and the subjects each may publish and
//!   subscribe to, as data (pure).
//! - `dir.rs`: a credentials folder made by `baton auth init`: an nkey seed
//!   per identity and the nats-server `authorization` block enforcing the
//!   roles.
//! - `trust.rs`: signatures of senders and the identities a process trusts,
//!   so a receiver knows who sent a message whatever the server allows.

mod dir;
mod roles;
mod trust;

pub use dir::{identity_name, render_server_conf, AuthDir, Identity};
pub use roles::{
    inbox_prefix, pattern_covers, permissions, subject_matches, Permissions, Role, BUCKETS, STREAMS,
};
pub use trust::{sign, verify, Sender, Trust, SIGNATURE_HEADER, SIGNER_HEADER};
