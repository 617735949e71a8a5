//! Where a stream's replicas are on a JetStream cluster: its leader and how
//! far each follower is behind (stream info's `cluster` block), for the
//! cluster test and `baton bench cluster` to find the node to kill and to
//! see a restarted one catch up.

use async_nats::jetstream;

use super::{Bus, BusError};

/// A stream's Raft group as its leader reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The leader's server name; `None` while the group elects one (and on
    /// a single server, which reports no cluster).
    pub leader: Option<String>,
    /// The followers.
    pub followers: Vec<Follower>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub name: String,
    /// Up to date with the leader.
    pub current: bool,
    /// Not heard from: killed, or cut off.
    pub offline: bool,
    /// Operations behind the leader.
    pub lag: u64,
}

impl Placement {
    /// Whether `name` is the leader or a current, online follower.
    pub fn caught_up(&self, name: &str) -> bool {
        self.leader.as_deref() == Some(name)
            || (self.followers.iter()).any(|f| f.name == name && f.current && !f.offline)
    }
}

impl Bus {
    /// Stream info's cluster block for `stream` (a bucket's stream is
    /// `KV_<bucket>`).
    pub async fn placement(&self, stream: &str) -> Result<Placement, BusError> {
        let js = jetstream::new(self.client.clone());
        let fail = |reason: String| BusError::Transport {
            subject: format!("$JS.API.STREAM.INFO.{stream}"),
            reason,
        };
        let handle = (js.get_stream(stream).await).map_err(|e| fail(e.to_string()))?;
        let info = handle.cached_info();
        let Some(cluster) = &info.cluster else {
            return Ok(Placement::default());
        };
        let followers = (cluster.replicas.iter())
            .map(|p| Follower {
                name: p.name.clone(),
                current: p.current,
                offline: p.offline,
                lag: p.lag.unwrap_or(0),
            })
            .collect();
        Ok(Placement {
            leader: cluster.leader.clone(),
            followers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_means_leading_or_current_and_online() {
        let follower = |name: &str, current, offline| Follower {
            name: name.into(),
            current,
            offline,
            lag: 0,
        };
        let p = Placement {
            leader: Some("n1".into()),
            followers: vec![follower("n2", true, false), follower("n3", false, false)],
        };
        assert!(p.caught_up("n1") && p.caught_up("n2"));
        assert!(!p.caught_up("n3") && !p.caught_up("n4"));
        let offline = Placement {
            leader: None,
            followers: vec![follower("n2", true, true)],
        };
        assert!(!offline.caught_up("n2"));
    }
}
