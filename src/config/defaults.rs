//! The built-in defaults of the configuration tree: the bottom layer,
//! under the file, the `BATON_*` environment and the flags. The history
//! settings' defaults are in `history.rs`, those of `[nats]`, `[notify]`
//! and the health thresholds beside their sections.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    history, AgentConfig, BrokerConfig, Config, HealthThresholds, MetricsConfig, NatsConfig,
    NotifyConfig, SchedulerConfig, SubagentConfig, SwitchCondition,
};

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            id: String::new(),
            role_control: true,
            heartbeat_interval: Duration::from_millis(250),
            lateness_tolerance: Duration::from_secs(1),
            max_in_flight: 256,
            simulate_cpu_percent: None,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            connection_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(6),
            lease_grace: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(3),
            switch_condition: SwitchCondition {
                at_or_below: crate::protocol::HealthLevel::VeryBad,
                for_: Duration::from_secs(300),
            },
            health: HealthThresholds::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: "baton".into(),
            nats: NatsConfig::default(),
            broker: BrokerConfig::default(),
            subagent: SubagentConfig::default(),
            agent: AgentConfig::default(),
            scheduler: SchedulerConfig::default(),
            metrics: MetricsConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            id: String::new(),
            heartbeat_interval: Duration::from_millis(250),
            check_interval: Duration::from_millis(100),
            subagent_timeout: Duration::from_secs(3),
            dispatch_timeout: Duration::from_secs(2),
            precedence: 100,
            lease: Duration::from_secs(2),
            renew_interval: Duration::from_millis(400),
            stall_timeout: Duration::from_secs(20),
            failed_hold: history::FAILED_HOLD,
            order_retention: history::ORDER_RETENTION,
            keep_finished: history::KEEP_FINISHED,
        }
    }
}

impl Default for SubagentConfig {
    fn default() -> Self {
        SubagentConfig {
            id: String::new(),
            capacity: 4,
            labels: BTreeMap::new(),
            heartbeat_interval: Duration::from_millis(250),
            idle_heartbeat_interval: Duration::from_millis(750),
            kill_grace: Duration::from_secs(5),
            orphan_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(60),
            result_retry: Duration::from_secs(1),
            max_line_bytes: 16 * 1024,
        }
    }
}
