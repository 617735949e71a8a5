//! How much history is kept, and for how long: the bounds on the broker's
//! memory and on what JetStream keeps (issue 18, item 7).
//!
//! | setting | default | bounds |
//! |---|---|---|
//! | `broker.failed_hold` | 7 days | how long a failed workflow order stays resumable, then expires |
//! | `broker.order_retention` | 30 days | an ended order's record in the orders journal, after it ended |
//! | `broker.keep_finished` | 10,000 | ended orders of each kind held in memory |
//! | `nats.log_retention`, `nats.log_max_bytes` | 7 days, none | the log stream (`max_age`, `max_bytes`) |
//! | `nats.audit_retention`, `nats.audit_max_bytes` | 90 days, none | the audit stream |
//!
//! The streams' limits are JetStream's own (the oldest messages go first).
//! The orders journal takes no `max_age`: a waiting order's record is not
//! rewritten while it waits, and must never go; the broker removes ended
//! records itself (`broker/retention.rs`).

use std::time::Duration;

use super::{Config, ConfigProblem};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
pub(super) const FAILED_HOLD: Duration = Duration::from_secs(7 * 24 * 60 * 60);
pub(super) const ORDER_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
pub(super) const KEEP_FINISHED: usize = 10_000;
/// The least a stream may be limited to: one message of the largest size
/// must fit, and then some.
const LEAST_STREAM_BYTES: u64 = 1024 * 1024;

impl Config {
    /// The history settings: each refusal names the key and the fix.
    pub(super) fn check_history(&self) -> Result<(), ConfigProblem> {
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        let b = &self.broker;
        if b.failed_hold < Duration::from_secs(1) {
            return Err(ConfigProblem::Invalid {
                key: "broker.failed_hold",
                value: shown(b.failed_hold),
                reason:
                    "keep a failed workflow order resumable at least 1s (the default is 7 days)"
                        .into(),
            });
        }
        if b.failed_hold > 100 * 365 * DAY {
            return Err(ConfigProblem::Invalid {
                key: "broker.failed_hold",
                value: shown(b.failed_hold),
                reason: "at most 100 years".into(),
            });
        }
        if b.order_retention < Duration::from_secs(1) {
            return Err(ConfigProblem::Invalid {
                key: "broker.order_retention",
                value: shown(b.order_retention),
                reason: "keep an ended order's record at least 1s (the default is 30 days); \
                         a repeated submit finds its first order only while it is kept"
                    .into(),
            });
        }
        if b.order_retention > 100 * 365 * DAY {
            return Err(ConfigProblem::Invalid {
                key: "broker.order_retention",
                value: shown(b.order_retention),
                reason: "at most 100 years".into(),
            });
        }
        if b.keep_finished == 0 {
            return Err(ConfigProblem::Invalid {
                key: "broker.keep_finished",
                value: "0".into(),
                reason: "keep at least 1 ended order in memory (the default is 10000)".into(),
            });
        }
        let n = &self.nats;
        let streams = [
            ("nats.log_max_bytes", n.log_max_bytes),
            ("nats.audit_max_bytes", n.audit_max_bytes),
        ];
        for (key, limit) in streams {
            let Some(bytes) = limit else { continue };
            let least = LEAST_STREAM_BYTES.max(n.max_message_bytes as u64);
            if bytes < least || bytes > i64::MAX as u64 {
                return Err(ConfigProblem::Invalid {
                    key,
                    value: bytes.to_string(),
                    reason: format!(
                        "must be at least {least} bytes (1 MiB, and at least \
                         nats.max_message_bytes) so a message fits; leave it unset for no \
                         limit but the retention time"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, String> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(None, env, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_bound_history() {
        let c = load(&[]).unwrap();
        assert_eq!(c.broker.failed_hold, 7 * DAY);
        assert_eq!(c.broker.order_retention, 30 * DAY);
        assert_eq!(c.broker.keep_finished, 10_000);
        assert_eq!(c.nats.log_max_bytes, None);
        assert_eq!(c.nats.audit_max_bytes, None);
    }

    #[test]
    fn settings_are_read_from_the_environment() {
        let c = load(&[
            ("BATON_BROKER__FAILED_HOLD", "3s"),
            ("BATON_BROKER__ORDER_RETENTION", "1h"),
            ("BATON_BROKER__KEEP_FINISHED", "50"),
            ("BATON_NATS__LOG_MAX_BYTES", "10000000"),
        ])
        .unwrap();
        assert_eq!(c.broker.failed_hold, Duration::from_secs(3));
        assert_eq!(c.broker.order_retention, Duration::from_secs(3600));
        assert_eq!(c.broker.keep_finished, 50);
        assert_eq!(c.nats.log_max_bytes, Some(10_000_000));
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let cases = [
            (
                "BATON_BROKER__FAILED_HOLD",
                "0s",
                "broker.failed_hold",
                "at least 1s",
            ),
            (
                "BATON_BROKER__ORDER_RETENTION",
                "0s",
                "broker.order_retention",
                "at least 1s",
            ),
            (
                "BATON_BROKER__KEEP_FINISHED",
                "0",
                "broker.keep_finished",
                "at least 1",
            ),
            (
                "BATON_NATS__LOG_MAX_BYTES",
                "100",
                "nats.log_max_bytes",
                "so a message fits",
            ),
            (
                "BATON_NATS__AUDIT_MAX_BYTES",
                "5",
                "nats.audit_max_bytes",
                "unset for no",
            ),
        ];
        for (var, value, key, fix) in cases {
            let e = load(&[(var, value)]).unwrap_err();
            assert!(e.contains(key) && e.contains(fix), "{var}={value}: {e}");
        }
    }
}
