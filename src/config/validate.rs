//! The load-time checks of a configuration ([`Config::load_from`] refuses
//! one that fails them): the prefix and ids, which become subject tokens,
//! the health thresholds, bounds of single settings, the checks of the
//! sections with files of their own, and pairs of durations that only work
//! one way round. Each refusal names the key.

use std::time::Duration;

use super::{Config, ConfigProblem};
use crate::protocol::subjects::is_valid_token;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigProblem> {
        if !is_valid_token(&self.prefix) {
            return Err(ConfigProblem::Invalid {
                key: "prefix",
                value: self.prefix.clone(),
                reason: "use letters, digits, '-' and '_' only (it becomes a subject token)".into(),
            });
        }
        if !self.subagent.id.is_empty() && !is_valid_token(&self.subagent.id) {
            return Err(ConfigProblem::Invalid {
                key: "subagent.id",
                value: self.subagent.id.clone(),
                reason: "use letters, digits, '-' and '_' only, at most 64".into(),
            });
        }
        if !self.agent.id.is_empty() && !is_valid_token(&self.agent.id) {
            return Err(ConfigProblem::Invalid {
                key: "agent.id",
                value: self.agent.id.clone(),
                reason: "use letters, digits, '-' and '_' only, at most 64".into(),
            });
        }
        if let Err(e) = self.scheduler.health.check() {
            return Err(ConfigProblem::Invalid {
                key: "scheduler.health",
                value: format!("{:?}", self.scheduler.health),
                reason: e.to_string(),
            });
        }
        if self.scheduler.lease <= self.agent.heartbeat_interval {
            return Err(ConfigProblem::Invalid {
                key: "scheduler.lease",
                value: humantime::format_duration(self.scheduler.lease).to_string(),
                reason: format!(
                    "must be longer than agent.heartbeat_interval ({}): raise scheduler.lease \
                     or lower agent.heartbeat_interval",
                    humantime::format_duration(self.agent.heartbeat_interval)
                ),
            });
        }
        if self.agent.max_in_flight == 0 {
            return Err(ConfigProblem::Invalid {
                key: "agent.max_in_flight",
                value: "0".into(),
                reason: "an agent must be able to submit at least one fire".into(),
            });
        }
        if self.subagent.capacity == 0 {
            return Err(ConfigProblem::Invalid {
                key: "subagent.capacity",
                value: "0".into(),
                reason: "a subagent must be able to run at least one task".into(),
            });
        }
        if self.nats.log_retention < Duration::from_secs(1) {
            return Err(ConfigProblem::Invalid {
                key: "nats.log_retention",
                value: humantime::format_duration(self.nats.log_retention).to_string(),
                reason: "keep logs at least 1s".into(),
            });
        }
        if self.nats.audit_retention < Duration::from_secs(1) {
            return Err(ConfigProblem::Invalid {
                key: "nats.audit_retention",
                value: humantime::format_duration(self.nats.audit_retention).to_string(),
                reason: "keep the audit trail at least 1s".into(),
            });
        }
        self.nats.validate()?;
        self.check_history()?;
        self.check_notify()?;
        self.check_timings()
    }

    /// Pairs of durations that only work one way round: each refusal names
    /// both settings and what to change.
    fn check_timings(&self) -> Result<(), ConfigProblem> {
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        let (b, s) = (&self.broker, &self.subagent);
        if b.renew_interval.is_zero() || b.renew_interval > b.lease / 2 {
            return Err(ConfigProblem::Invalid {
                key: "broker.renew_interval",
                value: shown(b.renew_interval),
                reason: format!(
                    "must be more than zero and at most half of broker.lease ({}), or the \
                     active broker loses its lease (and steps down) whenever one renewal is \
                     late: lower broker.renew_interval or raise broker.lease",
                    shown(b.lease)
                ),
            });
        }
        if s.idle_heartbeat_interval < s.heartbeat_interval {
            return Err(ConfigProblem::Invalid {
                key: "subagent.idle_heartbeat_interval",
                value: shown(s.idle_heartbeat_interval),
                reason: format!(
                    "must be at least subagent.heartbeat_interval ({}): raise \
                     subagent.idle_heartbeat_interval or lower subagent.heartbeat_interval",
                    shown(s.heartbeat_interval)
                ),
            });
        }
        let heard = [
            (
                "broker.subagent_timeout",
                b.subagent_timeout,
                "subagent.heartbeat_interval",
                s.heartbeat_interval,
                "a subagent would be declared lost between two heartbeats",
            ),
            (
                "scheduler.agent_timeout",
                self.scheduler.agent_timeout,
                "agent.heartbeat_interval",
                self.agent.heartbeat_interval,
                "an agent would be dropped between two heartbeats",
            ),
            (
                "subagent.orphan_timeout",
                s.orphan_timeout,
                "broker.heartbeat_interval",
                b.heartbeat_interval,
                "a subagent would kill its tasks between two broker heartbeats",
            ),
        ];
        for (key, timeout, interval_key, interval, why) in heard {
            if timeout <= interval {
                return Err(ConfigProblem::Invalid {
                    key,
                    value: shown(timeout),
                    reason: format!(
                        "must be longer than {interval_key} ({}), or {why}: raise {key} or \
                         lower {interval_key}",
                        shown(interval)
                    ),
                });
            }
        }
        Ok(())
    }
}
