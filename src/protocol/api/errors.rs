//! The reply to a request that failed: a stable [`ErrorCode`] and a message.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The reply to any request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

/// What went wrong: a stable code to match on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The payload could not be decoded as the subject's request type.
    BadRequest,
    /// The payload is larger than the broker accepts.
    TooLarge,
    /// No job of that name is deployed.
    UnknownJob,
    /// A parameter is not declared by the job or workflow, a required one is
    /// missing, or a value or their count is over the limit.
    InvalidParam,
    /// A job definition failed validation.
    InvalidJob,
    /// No such order.
    NotFound,
    /// The order (or subagent) is in a state that does not allow this.
    InvalidState,
    /// The receiver has no room for the request now; try again or elsewhere.
    Busy,
    /// A repeated `request_id` names another job or workflow, or other
    /// parameters, than its first order (which the message names).
    Conflict,
    /// The sender may not ask this (its signature names another role or
    /// subagent, or does not verify).
    Forbidden,
    /// Storage or another dependency failed; the request had no effect.
    Unavailable,
    /// A bug: please report it.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownJob => "unknown_job",
            ErrorCode::InvalidParam => "invalid_param",
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Busy => "busy",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error.message, self.error.code.as_str())
    }
}

impl std::error::Error for ErrorReply {}
