//! Baton: a high-availability distributed job scheduler over NATS.
//!
//! # Layout
//!
//! - [`protocol`]: wire types and subject names (serde + schemars only; no actix, no async_nats, nothing else of the crate).
//! - [`auth`]: roles and their NATS permissions (pure), credentials folders for nats-server.
//! - [`bus`]: the only importer of async_nats: connect, typed publish/request/serve, KV buckets.
//! - [`config`]: one `Config` tree, layered defaults < TOML file < `BATON_*` env < flags.
//! - [`daemon`]: what every long-running process shares: logging, the stop signal, connecting from its configuration.
//! - [`jobs`]: the deploy file format and job validation, and a job's
//!   retries (`jobs/retry.rs`) (pure).
//! - [`params`]: parameter declarations and values, the rules jobs and workflows share (pure).
//! - [`workflow`]: workflow definitions and validation, and the order/step state machine (pure).
//! - [`broker`]: the Broker and Elector actors and their pure parts (registry, placement, order book, health, election).
//! - [`subagent`]: the Subagent actor and process execution (spawn, stream output, kill).
//! - [`agent`]: the Agent actor (`baton agent`: holds the Scheduler role and fires triggers) and its pure parts (role and lease, outbox).
//! - [`triggers`]: cron, interval, at and file triggers, the misfire policy and the timer queue (pure); the Scheduler fires them, the broker's job inventory shows their next slots; subject triggers' syntax, message mapping and stream plan (`triggers/subject.rs`).
//! - [`cli`]: clap commands; client commands talk to the cluster over NATS.
//! - [`console`]: `baton console`, the web console: actix-web serving embedded pages, a JSON API and server-sent events over the cluster's NATS API.
//! - [`bench`]: `baton bench`, speed measured on a local cluster it starts itself; asserts nothing.
//! - [`natsd`]: a local `nats-server` child process for `baton dev`, `baton bench` and tests;
//!   `natsd::cluster`: a 3-node JetStream cluster of them.
//! - [`launch`]: a local cluster of `baton` child processes for `baton dev` and `baton bench`.
//! - [`notify`]: notifications of orders that ended, from the active broker to webhooks and NATS subjects, read from the orders journal through a durable consumer.
//! - [`metrics`]: Prometheus metrics of the broker, agent and subagent, served on `/metrics` (`--metrics-listen`).
//! - [`schema`]: generation of `schemas/` (JSON Schemas, AsyncAPI) from the wire types.
//! - [`time`]: wall-clock helpers (milliseconds since the epoch on the wire) and humantime durations.
//! - `testing`: helpers for unit tests (a seeded generator for property tests).

pub mod agent;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod bus;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod jobs;
pub mod launch;
pub mod metrics;
pub mod natsd;
pub mod notify;
pub mod params;
pub mod protocol;
pub mod schema;
pub mod subagent;
#[cfg(test)]
mod testing;
pub mod time;
pub mod triggers;
pub mod workflow;
