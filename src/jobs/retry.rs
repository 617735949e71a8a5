//! A job's retries: the `retry` table of a `[[job]]` ([`RetryDef`]), its
//! validation, and when a failed task runs again ([`next_retry`], [`delay`]).
//!
//! ```toml
//! retry = { times = 3, backoff = "2s", max_backoff = "1m", jitter = true }
//! ```
//!
//! Retry `n` (1 for the first) waits `backoff × 2^(n-1)`, at most
//! `max_backoff`; with `jitter`, a wait drawn between half of that and all
//! of it. The draw is a hash of the order id and `n`, so it is the same on
//! every broker and in every replay of the simulation: pure, no randomness.
//! The due time is journaled with the order, so a broker taking over keeps
//! it rather than drawing again.

use std::time::Duration;

use serde::Deserialize;

use crate::protocol::RetryPolicy;

/// The most retries a job may ask for.
pub const MAX_TIMES: u32 = 100;
/// The longest `backoff` or `max_backoff`.
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// `max_backoff` when absent: this many times `backoff`, at most a day.
const DEFAULT_MAX_FACTOR: u64 = 100;
const DEFAULT_MAX_MS: u64 = 24 * 3600 * 1000;

/// The `retry` table as an operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryDef {
    times: u32,
    #[serde(with = "super::human")]
    backoff: Duration,
    #[serde(default, with = "super::human::option")]
    max_backoff: Option<Duration>,
    #[serde(default)]
    jitter: bool,
}

impl From<RetryDef> for RetryPolicy {
    fn from(def: RetryDef) -> RetryPolicy {
        RetryPolicy {
            times: def.times,
            backoff_ms: millis(def.backoff),
            max_backoff_ms: def.max_backoff.map(millis),
            jitter: def.jitter,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What is wrong with a policy: the field (as in the deploy file) and why.
pub fn validate(policy: &RetryPolicy) -> Result<(), (&'static str, String)> {
    if policy.times == 0 || policy.times > MAX_TIMES {
        let why = format!("must be 1 to {MAX_TIMES} (leave `retry` out for none)");
        return Err(("retry.times", why));
    }
    let most = millis(MAX_WAIT);
    if policy.backoff_ms == 0 {
        return Err(("retry.backoff", "must be longer than zero".into()));
    }
    if policy.backoff_ms > most {
        return Err(("retry.backoff", "must be at most 7 days".into()));
    }
    match policy.max_backoff_ms {
        Some(max) if max < policy.backoff_ms => Err((
            "retry.max_backoff",
            "must be at least `backoff`".to_string(),
        )),
        Some(max) if max > most => Err(("retry.max_backoff", "must be at most 7 days".into())),
        _ => Ok(()),
    }
}

/// The longest wait of a policy, in milliseconds.
pub fn max_backoff_ms(policy: &RetryPolicy) -> u64 {
    policy.max_backoff_ms.unwrap_or_else(|| {
        let default = policy.backoff_ms.saturating_mul(DEFAULT_MAX_FACTOR);
        default.min(DEFAULT_MAX_MS).max(policy.backoff_ms)
    })
}

/// The wait before retry `n` (1 for the first) of order `order_id`.
pub fn delay(policy: &RetryPolicy, order_id: &str, n: u32) -> Duration {
    let max = max_backoff_ms(policy);
    let doublings = n.saturating_sub(1).min(63);
    let full = policy.backoff_ms.saturating_mul(1u64 << doublings).min(max);
    if !policy.jitter {
        return Duration::from_millis(full);
    }
    let half = full / 2;
    let span = full - half + 1;
    Duration::from_millis(half + draw(order_id, n) % span)
}

/// A retry an order is to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Which retry (1 for the first).
    pub n: u32,
    /// Of how many the policy allows.
    pub of: u32,
    /// When it is due (ms since the epoch).
    pub at_ms: u64,
}

/// Whether an order that failed at `now_ms`, with `used` retries behind it,
/// runs again, and when: `None` once the policy's retries are used up (or
/// without a policy).
pub fn next_retry(
    policy: Option<&RetryPolicy>,
    order_id: &str,
    used: u32,
    now_ms: u64,
) -> Option<Retry> {
    let policy = policy?;
    if used >= policy.times {
        return None;
    }
    let n = used + 1;
    let wait = millis(delay(policy, order_id, n));
    Some(Retry {
        n,
        of: policy.times,
        at_ms: now_ms.saturating_add(wait),
    })
}

/// A well-mixed number from an order id and a retry number (FNV-1a, then
/// splitmix64's finaliser): stable across builds and platforms.
fn draw(order_id: &str, n: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in order_id.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn policy(times: u32, backoff_ms: u64, max: Option<u64>, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            times,
            backoff_ms,
            max_backoff_ms: max,
            jitter,
        }
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let p = policy(10, 2_000, Some(60_000), false);
        let waits: Vec<u64> = (1..=7).map(|n| millis(delay(&p, "o", n))).collect();
        assert_eq!(waits, [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
        // far past the cap, and past u64's doublings: still the cap
        assert_eq!(millis(delay(&p, "o", 1_000)), 60_000);
        // no cap given: 100 × backoff, at most a day
        assert_eq!(max_backoff_ms(&policy(1, 2_000, None, false)), 200_000);
        assert_eq!(
            max_backoff_ms(&policy(1, 3_600_000, None, false)),
            86_400_000
        );
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_wait_and_is_the_same_each_time() {
        let mut rng = Rng::new(18);
        for _ in 0..2_000 {
            let backoff = 1 + rng.below(10_000);
            let max = backoff + rng.below(1_000_000);
            let p = policy(MAX_TIMES, backoff, Some(max), true);
            let plain = RetryPolicy { jitter: false, ..p };
            let order_id = format!("order-{}", rng.below(1_000_000));
            let n = 1 + rng.below(40) as u32;
            let full = millis(delay(&plain, &order_id, n));
            let jittered = millis(delay(&p, &order_id, n));
            assert!(full <= max && full >= backoff.min(max), "{full}");
            assert!(
                jittered >= full / 2 && jittered <= full,
                "{jittered} of {full}"
            );
            assert_eq!(jittered, millis(delay(&p, &order_id, n)), "deterministic");
        }
        // it does vary between orders
        let p = policy(3, 10_000, None, true);
        let waits: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| millis(delay(&p, &format!("o{i}"), 1)))
            .collect();
        assert!(waits.len() > 40, "{waits:?}");
    }

    #[test]
    fn retries_run_out_after_times() {
        let p = policy(2, 1_000, None, false);
        let first = next_retry(Some(&p), "o", 0, 50_000).unwrap();
        assert_eq!(
            first,
            Retry {
                n: 1,
                of: 2,
                at_ms: 51_000
            }
        );
        assert_eq!(next_retry(Some(&p), "o", 1, 50_000).unwrap().at_ms, 52_000);
        assert_eq!(next_retry(Some(&p), "o", 2, 50_000), None);
        assert_eq!(next_retry(None, "o", 0, 50_000), None);
    }

    #[test]
    fn validation_names_the_field() {
        let field = |p: RetryPolicy| validate(&p).err().map(|(f, _)| f);
        assert_eq!(field(policy(3, 2_000, Some(60_000), true)), None);
        assert_eq!(field(policy(3, 2_000, None, false)), None);
        assert_eq!(field(policy(0, 2_000, None, false)), Some("retry.times"));
        assert_eq!(field(policy(101, 2_000, None, false)), Some("retry.times"));
        assert_eq!(field(policy(3, 0, None, false)), Some("retry.backoff"));
        let week = millis(MAX_WAIT);
        assert_eq!(
            field(policy(3, week + 1, None, false)),
            Some("retry.backoff")
        );
        assert_eq!(
            field(policy(3, 2_000, Some(1_000), false)),
            Some("retry.max_backoff")
        );
        assert_eq!(
            field(policy(3, 2_000, Some(week + 1), false)),
            Some("retry.max_backoff")
        );
    }
}
