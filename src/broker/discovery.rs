//! How the active broker presents its client API to NATS service
//! discovery (`nats micro`): the service `baton` is registered by
//! `broker::start` (`bus/service.rs` does the registering), one endpoint
//! per client request subject the Broker or the Elector serves.

use crate::bus::ServiceInfo;
use crate::config::Config;

/// What the service `baton` says of itself: Baton's version, and which
/// cluster (prefix), broker and epoch serve it.
pub(super) fn service_info(config: &Config, epoch: u64) -> ServiceInfo {
    ServiceInfo {
        description: "Baton, a distributed job scheduler: the active broker's client API".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        metadata: [
            ("prefix", config.prefix.clone()),
            ("broker", config.broker_id()),
            ("epoch", epoch.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        queue_group: queue_group(epoch),
    }
}

/// The API endpoints' queue group: the broker's term's own (see
/// `bus/service.rs`).
fn queue_group(epoch: u64) -> String {
    format!("baton-e{epoch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_names_its_version_cluster_broker_and_epoch() {
        let mut config = Config::default();
        config.broker.id = "b1".into();
        let info = service_info(&config, 7);
        let parts: Vec<&str> = info.version.split('.').collect();
        assert_eq!(parts.len(), 3, "SemVer: {}", info.version);
        assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()));
        assert_eq!(info.metadata["prefix"], "baton");
        assert_eq!(info.metadata["broker"], "b1");
        assert_eq!(info.metadata["epoch"], "7");
    }
}
