//! Client-facing requests and replies: submit, deploy, order lookup, status.
//!
//! Every reply is either the success type named by the request or an
//! [`ErrorReply`]; a client tells them apart by the `error` key, which only
//! error replies carry.
//!
//! - `jobs.rs`: job definitions, subagent clusters, and deploy.
//! - `orders.rs`: submit, an order's state, its lookup and the order list.
//! - `control.rs`: an order's suspend, resume and cancel; a subagent's
//!   switch-over; the operators' switches.
//! - `status.rs`: the cluster's state, subagents and brokers included.
//! - `errors.rs`: the error reply and its codes.

mod control;
mod errors;
mod jobs;
mod orders;
mod status;

pub use super::workflow::{KillCause, OnFailure, StepRun, StepSpec, StepState, WorkflowSpec};
pub use control::*;
pub use errors::*;
pub use jobs::*;
pub use orders::*;
pub use status::*;

// The parts name the protocol's other types as `super::X`, as this module
// did when it was one file; so do their doc links, which go into `schemas/`
// word for word.
use super::{
    AgentStatus, BrokerRole, ConcurrencyPolicy, DeployPlan, FiredBy, MisfirePolicy, NotifyRules,
    RetryPolicy, SpreadMember, SpreadPolicy, TaskAttempt, TriggerSpec,
};
