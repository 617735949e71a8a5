//! When a delivery is tried again (pure): exponential backoff with a cap,
//! and which failures are worth another try.

use std::time::Duration;

/// How one try of a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// The receiver took it (HTTP 2xx; a NATS publish flushed).
    Delivered,
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: cannot connect, TLS, timeout, NATS unreachable.
    NoAnswer(String),
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Try again after this long.
    Retry(Duration),
    /// Give up: retries spent, or the receiver refused it for good.
    GiveUp,
}

/// The wait before retry number `retry` (1 = the first retry): `base`
/// doubled each time, at most `cap`.
pub fn backoff(retry: u32, base: Duration, cap: Duration) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(cap)
}

/// After try `tried` (0 = the first) ended `how`, with `retries` allowed.
/// A 4xx answer other than 408 (timeout) and 429 (too many requests) is a
/// refusal another try would get again: given up at once.
pub fn next(how: &Tried, tried: u32, retries: u32, base: Duration, cap: Duration) -> Next {
    let worth_retrying = match how {
        Tried::Delivered => return Next::Done,
        Tried::Status(code) => !(400..500).contains(code) || *code == 408 || *code == 429,
        Tried::NoAnswer(_) => true,
    };
    if worth_retrying && tried < retries {
        Next::Retry(backoff(tried + 1, base, cap))
    } else {
        Next::GiveUp
    }
}
