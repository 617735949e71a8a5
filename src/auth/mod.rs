//! Who may do what on the bus.
//!
//! - `roles.rs`: Baton's roles and the subjects each may publish and
//!   subscribe to, as data (pure).
//! - `dir.rs`: a credentials folder made by `baton auth init`: an nkey seed
//!   per identity and the nats-server `authorization` block enforcing the
//!   roles.

mod dir;
mod roles;

pub use dir::{identity_name, render_server_conf, AuthDir, Identity};
pub use roles::{
    inbox_prefix, pattern_covers, permissions, subject_matches, Permissions, Role, BUCKETS, STREAMS,
};
