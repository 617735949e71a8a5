//! Why talking to NATS failed ([`BusError`]), each failure worded for the
//! person reading it.

use std::time::Duration;

use super::DecodeError;
use crate::protocol::ErrorReply;

/// Who should have answered on `subject`, as a question for the reader
/// of a no-responders error (pure).
fn who_answers(subject: &str) -> &'static str {
    let token = |t: &str| subject.split('.').any(|s| s == t);
    if token("api") || token("broker") {
        "is `baton broker` running against this NATS server and prefix?"
    } else if token("subagent") {
        "that subagent is not connected: stopped, or cut off from NATS"
    } else if token("agent") {
        "that agent is not connected: stopped, or cut off from NATS"
    } else {
        "is `baton broker` running against this NATS server and prefix?"
    }
}

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no one answers on {subject} ({})", who_answers(subject))]
    NoResponders { subject: String },
    #[error("no reply on {subject} within {timeout:?}")]
    TimedOut { subject: String, timeout: Duration },
    #[error("{0}")]
    Remote(ErrorReply),
    #[error("bad reply on {subject}: {source}")]
    Decode {
        subject: String,
        #[source]
        source: DecodeError,
    },
    #[error("NATS error on {subject}: {reason}")]
    Transport { subject: String, reason: String },
    #[error("NATS refused {subject} to these credentials ({reason}): {hint}")]
    Denied {
        subject: String,
        reason: String,
        /// Which roles may, and whose credentials these are.
        hint: String,
    },
}

#[cfg(test)]
mod who_answers_tests {
    #[test]
    fn a_no_responders_error_asks_about_whoever_serves_the_subject() {
        let e = |subject: &str| {
            super::BusError::NoResponders {
                subject: subject.into(),
            }
            .to_string()
        };
        assert!(e("baton.api.submit").contains("is `baton broker` running"));
        assert!(e("baton.api.subagent.control").contains("is `baton broker` running"));
        assert!(e("baton.subagent.sub-3.run").contains("that subagent is not connected"));
        assert!(e("baton.agent.a1.ping").contains("that agent is not connected"));
    }
}
