//! The broker's decisions, free of IO: what the actor in `broker/mod.rs`
//! asks before it acts. Imports neither actix, nor the bus, nor the clock.
//!
//! - [`plan`]: which queued order goes to which subagent now.

pub mod plan;
