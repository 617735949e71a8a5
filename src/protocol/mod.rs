//! Wire protocol v1: the messages Baton's processes and its clients exchange, and
//! the subjects they travel on.
//!
//! Architecture invariant: this module knows serde and schemars only. It never
//! imports actix or async_nats, so a client can depend on these types alone.
//!
//! Encoding: every payload is a MessagePack map with named fields (what
//! `rmp_serde::to_vec_named` writes). Client-facing request subjects also take
//! JSON when the request carries `Content-Type: application/json`, and then
//! reply in JSON. Readers ignore fields they do not know, so peers can add
//! fields without a version bump.

pub mod agent;
pub mod api;
pub mod audit;
pub mod calendar;
pub mod cluster;
pub mod events;
pub mod inventory;
pub mod notify;
pub mod retry;
pub mod schedule;
pub mod spread;
pub mod subjects;
pub mod workflow;

pub use agent::*;
pub use api::*;
pub use audit::*;
pub use calendar::{CalendarSpec, CalendarUse, DstRule, GapRule, OnHoliday, OverlapRule};
pub use cluster::*;
pub use events::*;
pub use inventory::*;
pub use notify::{Notification, NotifyKind, NotifyRules};
pub use retry::{AttemptOutcome, RetryPolicy, TaskAttempt};
pub use schedule::{
    ConcurrencyPolicy, FileRecord, FileState, FiredBy, FiredSlot, MisfirePolicy, TriggerSpec,
};
pub use spread::{SpreadMember, SpreadPolicy};
pub use subjects::{EventKind, Subjects};

/// The protocol version carried in heartbeats and status replies.
pub const PROTOCOL_VERSION: u32 = 1;

/// The header that selects JSON instead of MessagePack on client-facing requests.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// The header value for JSON payloads.
pub const JSON_CONTENT_TYPE: &str = "application/json";
