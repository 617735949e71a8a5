//! `[notify]`: where the active broker sends notifications of orders that
//! ended (see `src/notify/`), read by brokers only.
//!
//! ```toml
//! [notify]
//! on_failure = ["ops"]          # every job's and workflow's failures
//! on_success = []
//! on_subagent_lost = ["ops"]    # the active broker declared a subagent lost
//! on_no_scheduler = ["ops"]     # no agent can be Scheduler: no trigger fires
//! on_missed_slot = ["ops"]      # slots passed over by a misfire policy
//!
//! [[notify.target]]
//! name = "ops"
//! webhook = "https://hooks.example.com/baton?token=..."
//! headers = { Authorization = "Bearer ..." }
//! timeout = "5s"
//!
//! [[notify.target]]
//! name = "bus"
//! subject = "alerts"            # published on {prefix}.notify.alerts
//! ```
//!
//! A webhook URL and header values are [`Secret`]s: they never print, and
//! the notifier logs a target by its name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigProblem, Secret};
use crate::protocol::subjects::is_valid_token;

/// `[notify]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The targets, by name (`[[notify.target]]`).
    #[serde(rename = "target")]
    pub targets: Vec<NotifyTarget>,
    /// Targets told of every order that fails for good.
    pub on_failure: Vec<String>,
    /// Targets told of every order that succeeds.
    pub on_success: Vec<String>,
    /// Targets told when the active broker declares a subagent lost.
    pub on_subagent_lost: Vec<String>,
    /// Targets told when no agent can hold the Scheduler role (no trigger
    /// fires).
    pub on_no_scheduler: Vec<String>,
    /// Targets told when the Scheduler passes over slots of any job or
    /// workflow (its misfire policy: missed while no Scheduler fired them).
    pub on_missed_slot: Vec<String>,
    /// Tries after the first before a notification is given up (counted
    /// and warned about).
    pub retries: u32,
    /// The wait before the first retry; doubled each retry up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Most orders whose notifications are being delivered at once.
    pub concurrency: usize,
}

/// One `[[notify.target]]`: a webhook or a NATS subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// What jobs, workflows and `[notify]` call it; one subject token.
    pub name: String,
    /// `http://` or `https://` URL the notification is POSTed to.
    #[serde(default)]
    pub webhook: Option<Secret>,
    /// Extra HTTP headers of each POST (values never logged).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// One or more subject tokens: published on `{prefix}.notify.{subject}`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Bound on one POST, connecting included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            targets: Vec::new(),
            on_failure: Vec::new(),
            on_success: Vec::new(),
            on_subagent_lost: Vec::new(),
            on_no_scheduler: Vec::new(),
            on_missed_slot: Vec::new(),
            retries: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            concurrency: 64,
        }
    }
}

impl NotifyConfig {
    pub fn target(&self, name: &str) -> Option<&NotifyTarget> {
        self.targets.iter().find(|t| t.name == name)
    }
}

fn invalid(
    key: &'static str,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigProblem {
    ConfigProblem::Invalid {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// The `[notify]` section: each refusal names the key and the fix.
    pub(super) fn check_notify(&self) -> Result<(), ConfigProblem> {
        let n = &self.notify;
        for (i, t) in n.targets.iter().enumerate() {
            if !is_valid_token(&t.name) {
                return Err(invalid(
                    "notify.target.name",
                    &t.name,
                    "use letters, digits, '-' and '_' only",
                ));
            }
            if n.targets[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(
                    "notify.target.name",
                    &t.name,
                    "defined twice: give each [[notify.target]] its own name",
                ));
            }
            match (&t.webhook, &t.subject) {
                (Some(url), None) => {
                    crate::notify::check_webhook_url(url.expose()).map_err(|reason| {
                        // the URL may hold a secret: named by its target only
                        invalid(
                            "notify.target.webhook",
                            format!("(of target {})", t.name),
                            reason,
                        )
                    })?
                }
                (None, Some(subject)) => {
                    if subject.is_empty() || !subject.split('.').all(is_valid_token) {
                        return Err(invalid(
                            "notify.target.subject",
                            subject,
                            "one or more tokens of letters, digits, '-' and '_' separated by \
                             '.' (published under {prefix}.notify.)",
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        "notify.target",
                        &t.name,
                        "give exactly one of webhook = \"https://...\" or subject = \"...\"",
                    ))
                }
            }
            if t.timeout.is_zero() {
                return Err(invalid(
                    "notify.target.timeout",
                    format!("0s (of target {})", t.name),
                    "must be more than zero",
                ));
            }
        }
        for (key, names) in [
            ("notify.on_failure", &n.on_failure),
            ("notify.on_success", &n.on_success),
            ("notify.on_subagent_lost", &n.on_subagent_lost),
            ("notify.on_no_scheduler", &n.on_no_scheduler),
            ("notify.on_missed_slot", &n.on_missed_slot),
        ] {
            if let Some(unknown) = names.iter().find(|name| n.target(name).is_none()) {
                return Err(invalid(
                    key,
                    unknown,
                    "names no [[notify.target]]: define it or remove the name",
                ));
            }
        }
        if n.backoff.is_zero() || n.max_backoff < n.backoff {
            return Err(invalid(
                "notify.backoff",
                humantime::format_duration(n.backoff).to_string(),
                "must be more than zero and at most notify.max_backoff",
            ));
        }
        if n.concurrency == 0 {
            return Err(invalid(
                "notify.concurrency",
                "0",
                "deliver at least one order's notifications at a time",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Config::load_from(Some(file.path()), Default::default(), &[]).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[notify]
on_failure = ["ops"]
[[notify.target]]
name = "ops"
webhook = "https://u:secret-pw@hooks.example.com/x?token=secret-token"
headers = { Authorization = "Bearer secret-header" }
[[notify.target]]
name = "bus"
subject = "alerts.baton"
timeout = "2s"
"#;

    #[test]
    fn targets_and_rules_load_and_secrets_never_print() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.notify.targets.len(), 2);
        assert_eq!(c.notify.on_failure, ["ops"]);
        assert_eq!(
            c.notify.target("ops").unwrap().timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            c.notify.target("bus").unwrap().timeout,
            Duration::from_secs(2)
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn mistakes_name_the_key_and_never_the_url() {
        for (text, key) in [
            (GOOD.replace("\"bus\"", "\"ops\""), "notify.target.name"),
            (
                GOOD.replace("on_failure = [\"ops\"]", "on_failure = [\"pager\"]"),
                "notify.on_failure",
            ),
            (
                GOOD.replace("https://u:", "ftp://u:"),
                "notify.target.webhook",
            ),
            (
                GOOD.replace("alerts.baton", "alerts..baton"),
                "notify.target.subject",
            ),
            (
                GOOD.replace("subject = \"alerts.baton\"", ""),
                "notify.target",
            ),
            (
                GOOD.replace("[notify]", "[notify]\nconcurrency = 0"),
                "notify.concurrency",
            ),
            (
                GOOD.replace("[notify]", "[notify]\nbackoff = \"2m\""),
                "notify.backoff",
            ),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
            assert!(!e.contains("secret"), "{key}: {e}");
        }
        assert!(load(&GOOD.replace("timeout = \"2s\"", "timout = \"2s\"")).is_err());
    }
}
