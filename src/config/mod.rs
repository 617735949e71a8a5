//! One configuration tree for every role, layered: built-in defaults < TOML
//! file (`--config`) < `BATON_*` environment variables < command-line flags.
//!
//! Environment variables name a path with `__` between levels:
//! `BATON_NATS__URL=nats://10.0.0.5:4222`, `BATON_SUBAGENT__CAPACITY=8`,
//! `BATON_PREFIX=prod`. Durations are humantime strings (`250ms`, `15s`).
//! Unknown keys are errors, so a typo never passes silently.
//!
//! The built-in defaults are in `defaults.rs`; the load-time checks
//! (`validate`, `check_timings`) in `validate.rs`, which also runs the
//! checks of the sections with files of their own.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod defaults;
mod health;
mod history;
mod nats;
mod notify;
mod validate;
pub use health::{HealthThresholds, LevelBounds, SwitchCondition, ThresholdsError};
pub use nats::{NatsConfig, Secret};
pub use notify::{NotifyConfig, NotifyTarget};

/// Environment variables starting with `BATON_` that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["BATON_CONFIG", "BATON_LOG"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Every subject and bucket name starts with this, so several clusters can
    /// share one NATS account.
    pub prefix: String,
    pub nats: NatsConfig,
    pub broker: BrokerConfig,
    pub subagent: SubagentConfig,
    pub agent: AgentConfig,
    /// How the broker chooses the Scheduler agent.
    pub scheduler: SchedulerConfig,
    /// Prometheus metrics (`/metrics`) of a broker, agent or subagent.
    pub metrics: MetricsConfig,
    /// Notifications of orders that ended (`[notify]`, brokers only).
    pub notify: NotifyConfig,
}

/// `[metrics]`: off unless `listen` is set (`--metrics-listen`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`: `HOST:PORT`, or a port on 127.0.0.1;
    /// empty: no metrics served.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// This broker's id; `broker-<hostname>-<pid>` when empty.
    pub id: String,
    /// How often the broker publishes its heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often the broker checks subagents' heartbeats (and probes late ones).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// A subagent silent for this long (and answering no probe) is declared
    /// lost; one whose probe finds no responders is declared lost at once.
    #[serde(with = "humantime_serde")]
    pub subagent_timeout: Duration,
    /// How long to wait for a subagent to accept a task before trying again.
    #[serde(with = "humantime_serde")]
    pub dispatch_timeout: Duration,
    /// Among standby brokers, lower goes first: a standby waits while a live
    /// one with a lower precedence could take the lease.
    pub precedence: u32,
    /// How long the leadership lease lasts without renewal: an active broker
    /// killed with SIGKILL is replaced about this long after.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the active broker renews its lease (and a standby tries
    /// to take a free one).
    #[serde(with = "humantime_serde")]
    pub renew_interval: Duration,
    /// The active broker gives its lease up (and a standby does not take
    /// it) when its broker thread has run no timer for this long: wedged,
    /// or held by work that never yields. Longer than any takeover's
    /// longest step without a pause. Never less than `lease` (the longer
    /// of the two counts).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long a failed workflow order stays resumable; then it expires
    /// (stays failed, can no longer be resumed) and leaves memory like
    /// any ended order.
    #[serde(with = "humantime_serde")]
    pub failed_hold: Duration,
    /// How long an ended order's record stays in the orders journal after
    /// it ended (a failed workflow order's: after it expired).
    #[serde(with = "humantime_serde")]
    pub order_retention: Duration,
    /// Most ended orders held in memory, of each kind (job and step
    /// orders; workflow orders): older ones are read from the journal.
    pub keep_finished: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubagentConfig {
    /// This subagent's id; `<hostname>-<pid>` when empty. One subject token.
    pub id: String,
    /// Most tasks run at once.
    pub capacity: u32,
    pub labels: BTreeMap<String, String>,
    /// Heartbeat period while it runs tasks or drains.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Heartbeat period while idle (no task running, not draining), at most
    /// a quarter of `broker.subagent_timeout`: a killed idle subagent is
    /// certified dead by its reaper at once, so its heartbeats only need to
    /// say it lives; each heartbeat tells the broker the period to its next
    /// one.
    #[serde(with = "humantime_serde")]
    pub idle_heartbeat_interval: Duration,
    /// After SIGTERM, how long a task has before SIGKILL.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// Hearing no broker for this long, the subagent kills its running tasks
    /// (the broker then runs restartable ones elsewhere).
    #[serde(with = "humantime_serde")]
    pub orphan_timeout: Duration,
    /// On SIGTERM or `baton subagent stop`, how long running tasks may take
    /// to finish before they are killed.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often an unacknowledged result is sent again.
    #[serde(with = "humantime_serde")]
    pub result_retry: Duration,
    /// Longest log line published; longer lines are cut.
    pub max_line_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This agent's id; `agent-<hostname>-<pid>` when empty. One subject token.
    pub id: String,
    /// Let the broker control this agent's role (take part in elections).
    /// When false the agent is a Scheduler from its start and never a spare.
    pub role_control: bool,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A slot fired at most this late counts as on time; older ones are
    /// misfires and go through the job's misfire policy.
    #[serde(with = "humantime_serde")]
    pub lateness_tolerance: Duration,
    /// Most fires waiting for the broker's answer at once.
    pub max_in_flight: usize,
    /// For fail-over drills: report this CPU percentage instead of the
    /// measured one, so the broker sees the agent as unhealthy.
    pub simulate_cpu_percent: Option<f32>,
}

/// The broker's side of the Scheduler role (see `broker::election`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// With no Scheduler, how long to wait before electing one (the
    /// Scheduler may only be reconnecting). A Scheduler known dead (its
    /// connection is gone) is replaced without this wait.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// How long an agent has to answer a role command before it is sent again.
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// How long a Scheduler keeps the role without hearing the broker.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Added to the lease on the broker's side, to cover message delay.
    #[serde(with = "humantime_serde")]
    pub lease_grace: Duration,
    /// An agent silent this long (and answering no probe) is dropped.
    #[serde(with = "humantime_serde")]
    pub agent_timeout: Duration,
    /// When the Scheduler hands its role to a healthier spare.
    pub switch_condition: SwitchCondition,
    /// CPU and memory percentages for each health level.
    pub health: HealthThresholds,
}

/// Why the configuration could not be loaded, and from which layer.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (`--config`) cannot be read or holds the mistake.
    #[error("configuration file {}: {problem}", path.display())]
    File {
        path: std::path::PathBuf,
        problem: ConfigProblem,
    },
    /// A `BATON_*` variable or a flag holds the mistake.
    #[error("configuration from BATON_* variables or flags: {0}")]
    Settings(ConfigProblem),
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// Not readable, not TOML, an unknown key, a value of the wrong type.
    #[error("{0}")]
    Load(String),
    #[error("{key} = {value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl From<config::ConfigError> for ConfigProblem {
    fn from(e: config::ConfigError) -> Self {
        ConfigProblem::Load(e.to_string())
    }
}

impl Config {
    /// Loads defaults < `file` < `BATON_*` environment < `overrides`
    /// (dotted keys such as `nats.url`, from command-line flags).
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Config, ConfigError> {
        let env: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BATON_") && !NON_CONFIG_ENV.contains(&k.as_str()))
            .collect();
        Config::load_from(file, env, overrides)
    }

    /// [`Config::load`] with the environment given (for tests). A mistake
    /// is reported once, against the file when the file alone holds it.
    pub fn load_from(
        file: Option<&Path>,
        env: config::Map<String, String>,
        overrides: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let in_file = |problem| ConfigError::File {
            path: file.unwrap_or(Path::new("")).to_path_buf(),
            problem,
        };
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|e| ConfigError::Settings(e.into()))?;
        let file_source = match file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| in_file(ConfigProblem::Load(format!("cannot read it: {e}"))))?;
                Some(config::File::from_str(&text, config::FileFormat::Toml))
            }
        };
        // the file over the defaults alone: its own mistakes are named against it
        let file_only = match &file_source {
            None => None,
            Some(source) => Some(
                Config::build(
                    config::Config::builder()
                        .add_source(defaults.clone())
                        .add_source(source.clone()),
                )
                .map_err(in_file)?,
            ),
        };
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(source) = file_source {
            builder = builder.add_source(source);
        }
        builder = builder.add_source(
            config::Environment::with_prefix("BATON")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        for (key, value) in overrides {
            builder = builder
                .set_override(*key, value.clone())
                .map_err(|e| ConfigError::Settings(e.into()))?;
        }
        let config = Config::build(builder).map_err(ConfigError::Settings)?;
        match config.validate() {
            Ok(()) => Ok(config),
            Err(problem) => match file_only.map(|c| c.validate()) {
                Some(Err(in_the_file)) => Err(in_file(in_the_file)),
                _ => Err(ConfigError::Settings(problem)),
            },
        }
    }

    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<Config, ConfigProblem> {
        Ok(builder.build()?.try_deserialize()?)
    }

    /// The broker id, or one made from the host name and process id.
    pub fn broker_id(&self) -> String {
        if self.broker.id.is_empty() {
            format!("broker-{}", default_node_id())
        } else {
            self.broker.id.clone()
        }
    }

    /// The subagent id, or one made from the host name and process id.
    pub fn subagent_id(&self) -> String {
        if self.subagent.id.is_empty() {
            default_node_id()
        } else {
            self.subagent.id.clone()
        }
    }

    /// The agent id, or one made from the host name and process id.
    pub fn agent_id(&self) -> String {
        if self.agent.id.is_empty() {
            format!("agent-{}", default_node_id())
        } else {
            self.agent.id.clone()
        }
    }

    /// Name of the KV bucket holding, per job, the last trigger slot fired.
    pub fn fired_bucket(&self) -> String {
        format!("{}_fired", self.prefix)
    }

    /// Name of the KV bucket holding the file triggers' records of the
    /// files they have seen (see `triggers::files`).
    pub fn files_bucket(&self) -> String {
        format!("{}_files", self.prefix)
    }

    /// Name of the KV bucket holding the Scheduler lease the active broker
    /// granted last (see `broker::scheduler_lease`).
    pub fn scheduler_bucket(&self) -> String {
        format!("{}_scheduler", self.prefix)
    }

    /// Name of the KV bucket holding operators' switches (subagents
    /// disabled), which every broker taking over honours.
    pub fn switches_bucket(&self) -> String {
        format!("{}_switches", self.prefix)
    }

    /// Name of the KV bucket holding the brokers' leadership lease.
    pub fn leader_bucket(&self) -> String {
        format!("{}_leader", self.prefix)
    }

    /// Name of the KV bucket holding deployed jobs.
    pub fn jobs_bucket(&self) -> String {
        format!("{}_jobs", self.prefix)
    }

    /// Name of the KV bucket holding subagent clusters.
    pub fn clusters_bucket(&self) -> String {
        format!("{}_clusters", self.prefix)
    }

    /// Deployed workflows, by name.
    pub fn workflows_bucket(&self) -> String {
        format!("{}_workflows", self.prefix)
    }

    /// Name of the KV bucket holding orders.
    pub fn orders_bucket(&self) -> String {
        format!("{}_orders", self.prefix)
    }

    /// Name of the JetStream stream keeping tasks' output lines.
    pub fn log_stream(&self) -> String {
        format!("{}_logs", self.prefix)
    }

    /// Name of the JetStream stream keeping the audit trail.
    pub fn audit_stream(&self) -> String {
        format!("{}_audit", self.prefix)
    }

    /// The stream capturing the subject triggers' subjects.
    pub fn trigger_stream(&self) -> String {
        format!("{}_triggers", self.prefix)
    }

    /// The stream keeping subject triggers' dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_triggers_dead", self.prefix)
    }
}

/// `<hostname>-<pid>`, reduced to subject-token characters.
pub fn default_node_id() -> String {
    let host = hostname();
    let id = format!("{host}-{}", std::process::id());
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// This machine's host name, or `localhost`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> config::Map<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_load_from_env_and_never_print() {
        let c = Config::load_from(
            None,
            env(&[
                ("BATON_NATS__USER", "ann"),
                ("BATON_NATS__PASSWORD", "hunter2"),
                ("BATON_NATS__TLS_CA", "/etc/ca.pem"),
            ]),
            &[("nats.insecure", "true".into())],
        )
        .unwrap();
        assert_eq!(c.nats.password.expose(), "hunter2");
        assert_eq!(c.nats.tls_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(c.nats.insecure && c.nats.has_credentials());
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        let nkey =
            Config::load_from(None, env(&[("BATON_NATS__NKEY", "/a/client.nk")]), &[]).unwrap();
        assert_eq!(nkey.nats.nkey.as_deref(), Some(Path::new("/a/client.nk")));
    }

    #[test]
    fn defaults_load() {
        let c = Config::load_from(None, env(&[]), &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "prefix = \"fromfile\"\n[nats]\nurl = \"nats://file:1\"\n[subagent]\ncapacity = 2\nkill_grace = \"250ms\"\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("BATON_NATS__URL", "nats://env:2"),
                ("BATON_SUBAGENT__CAPACITY", "3"),
            ]),
            &[("subagent.capacity", "7".into())],
        )
        .unwrap();
        assert_eq!(c.prefix, "fromfile");
        assert_eq!(c.nats.url, "nats://env:2");
        assert_eq!(c.subagent.capacity, 7);
        assert_eq!(c.subagent.kill_grace, Duration::from_millis(250));
    }

    #[test]
    fn scheduler_and_agent_sections_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(
            &file,
            "[scheduler]\nlease = \"2s\"\nswitch_condition = { at_or_below = \"bad\", for = \"3s\" }\n\
             [scheduler.health.cpu]\nexcellent = 10\ngood = 20\nok = 30\nbad = 40\n\
             [agent]\nrole_control = false\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[("BATON_AGENT__SIMULATE_CPU_PERCENT", "99")]),
            &[],
        )
        .unwrap();
        assert_eq!(c.scheduler.lease, Duration::from_secs(2));
        assert_eq!(c.scheduler.switch_condition.for_, Duration::from_secs(3));
        assert_eq!(c.scheduler.health.cpu.bad, 40.0);
        assert!(!c.agent.role_control);
        assert_eq!(c.agent.simulate_cpu_percent, Some(99.0));
        let e = Config::load_from(None, env(&[("BATON_AGENT__ID", "a.b")]), &[]).unwrap_err();
        assert!(e.to_string().contains("agent.id"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "[nats]\nulr = \"x\"\n").unwrap();
        let e = Config::load_from(Some(&file), env(&[]), &[]).unwrap_err();
        assert!(e.to_string().contains("ulr"), "{e}");

        let e = Config::load_from(None, env(&[("BATON_PREFIX", "a.b")]), &[]).unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");

        let e = Config::load_from(
            None,
            env(&[("BATON_NATS__USER", "u"), ("BATON_NATS__TOKEN", "t")]),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("one way"), "{e}");
        let e =
            Config::load_from(None, env(&[("BATON_NATS__TLS_CERT", "c.pem")]), &[]).unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");

        let e = Config::load_from(
            None,
            env(&[("BATON_BROKER__SUBAGENT_TIMEOUT", "soon")]),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("soon") || e.to_string().contains("subagent_timeout"),
            "{e}"
        );
    }

    /// What `baton` prints for a configuration error (`error: {:#}`).
    fn printed(e: ConfigError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    #[test]
    fn errors_print_once_and_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        let path = file.display().to_string();
        let cases = [
            ("[nats]\nulr = \"x\"\n", "unknown field `ulr`"),
            ("[broker]\nlease = \"soon\"\n", "soon"),
            ("[broker\n", "TOML parse error"),
            ("prefix = \"a.b\"\n", "prefix = \"a.b\" is invalid"),
        ];
        for (text, problem) in cases {
            std::fs::write(&file, text).unwrap();
            let e = printed(Config::load_from(Some(&file), env(&[]), &[]).unwrap_err());
            assert!(
                e.starts_with(&format!("configuration file {path}: ")),
                "{e}"
            );
            assert_eq!(e.matches(problem).count(), 1, "{e}");
        }
        let missing = dir.path().join("missing.toml");
        let e = printed(Config::load_from(Some(&missing), env(&[]), &[]).unwrap_err());
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("cannot read it"),
            "{e}"
        );

        // a mistake of the environment is not blamed on a good file
        std::fs::write(&file, "[subagent]\ncapacity = 2\n").unwrap();
        let e = Config::load_from(Some(&file), env(&[("BATON_PREFIX", "a.b")]), &[]).unwrap_err();
        let e = printed(e);
        assert!(
            e.starts_with("configuration from BATON_* variables or flags: prefix"),
            "{e}"
        );
        let e = Config::load_from(None, env(&[("BATON_NATS__ULR", "x")]), &[]).unwrap_err();
        assert_eq!(printed(e).matches("ulr").count(), 1);
    }

    #[test]
    fn durations_that_only_work_one_way_round_are_refused() {
        let refused = [
            (
                "BATON_BROKER__RENEW_INTERVAL",
                "2s",
                "broker.renew_interval = \"2s\"",
            ),
            (
                "BATON_BROKER__RENEW_INTERVAL",
                "5s",
                "half of broker.lease (2s)",
            ),
            (
                "BATON_BROKER__RENEW_INTERVAL",
                "1001ms",
                "raise broker.lease",
            ),
            ("BATON_BROKER__RENEW_INTERVAL", "0s", "more than zero"),
            (
                "BATON_BROKER__SUBAGENT_TIMEOUT",
                "250ms",
                "subagent.heartbeat_interval",
            ),
            (
                "BATON_SUBAGENT__IDLE_HEARTBEAT_INTERVAL",
                "100ms",
                "at least subagent.heartbeat_interval",
            ),
            (
                "BATON_SCHEDULER__AGENT_TIMEOUT",
                "200ms",
                "lower agent.heartbeat_interval",
            ),
            (
                "BATON_SUBAGENT__ORPHAN_TIMEOUT",
                "250ms",
                "broker.heartbeat_interval (250ms)",
            ),
            ("BATON_SCHEDULER__LEASE", "250ms", "raise scheduler.lease"),
        ];
        for (key, value, says) in refused {
            let e = Config::load_from(None, env(&[(key, value)]), &[]).unwrap_err();
            assert!(e.to_string().contains(says), "{key}={value}: {e}");
        }
        let fine = env(&[
            ("BATON_BROKER__RENEW_INTERVAL", "1s"),
            ("BATON_BROKER__SUBAGENT_TIMEOUT", "300ms"),
            ("BATON_SUBAGENT__ORPHAN_TIMEOUT", "1s"),
        ]);
        Config::load_from(None, fine, &[]).unwrap();
    }
}
