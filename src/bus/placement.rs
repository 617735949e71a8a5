//! Where a stream's replicas are on a JetStream cluster: its leader and how
//! far each follower is behind (stream info's `cluster` block), for the
//! cluster test and `baton bench cluster` to find the node to kill and to
//! see a restarted one catch up; and, for the active broker's
//! `broker::colocate`, the durable consumers' groups and a leader moved to
//! a chosen node.

use async_nats::jetstream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

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

/// The cluster block of stream or consumer info, as a [`Placement`].
fn placement_of(cluster: Option<&jetstream::stream::ClusterInfo>) -> Placement {
    let Some(cluster) = cluster else {
        return Placement::default();
    };
    let followers = (cluster.replicas.iter())
        .map(|p| Follower {
            name: p.name.clone(),
            current: p.current,
            offline: p.offline,
            lag: p.lag.unwrap_or(0),
        })
        .collect();
    Placement {
        leader: cluster.leader.clone(),
        followers,
    }
}

/// A leader step-down request naming the node to prefer.
#[derive(Serialize)]
struct StepDown<'a> {
    placement: Preferred<'a>,
}

#[derive(Serialize)]
struct Preferred<'a> {
    preferred: &'a str,
}

#[derive(Deserialize)]
struct SteppedDown {
    #[serde(default)]
    success: bool,
}

impl Bus {
    /// The replicated durable consumers of `stream` (more than one
    /// replica), by name, with their Raft groups' placement. Ordered
    /// consumers (KV watches) live on one node and are left out.
    pub async fn consumer_placements(
        &self,
        stream: &str,
    ) -> Result<Vec<(String, Placement)>, BusError> {
        let js = jetstream::new(self.client.clone());
        let fail = |reason: String| BusError::Transport {
            subject: format!("$JS.API.CONSUMER.LIST.{stream}"),
            reason,
        };
        let handle = (js.get_stream_no_info(stream).await).map_err(|e| fail(e.to_string()))?;
        let mut consumers = handle.consumers();
        let mut found = Vec::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| fail(e.to_string()))?;
            if info.config.durable_name.is_some() && info.config.num_replicas != 1 {
                found.push((info.name.clone(), placement_of(info.cluster.as_ref())));
            }
        }
        Ok(found)
    }

    /// Asks the leader of `stream`'s Raft group (or of its durable
    /// `consumer`'s) to hand over to `to`, a current replica; JetStream
    /// elects `to` at once, without the election timeout a dead leader
    /// costs.
    pub async fn move_leader(
        &self,
        stream: &str,
        consumer: Option<&str>,
        to: &str,
    ) -> Result<(), BusError> {
        // the JetStream context puts `$JS.API.` before it
        let subject = match consumer {
            Some(consumer) => format!("CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"),
            None => format!("STREAM.LEADER.STEPDOWN.{stream}"),
        };
        let fail = |reason: String| BusError::Transport {
            subject: format!("$JS.API.{subject}"),
            reason,
        };
        let js = jetstream::new(self.client.clone());
        let request = StepDown {
            placement: Preferred { preferred: to },
        };
        let response: jetstream::response::Response<SteppedDown> =
            (js.request(subject.clone(), &request).await).map_err(|e| fail(e.to_string()))?;
        match response {
            jetstream::response::Response::Ok(done) if done.success => Ok(()),
            jetstream::response::Response::Ok(_) => Err(fail("not done".into())),
            jetstream::response::Response::Err { error } => Err(fail(error.to_string())),
        }
    }

    /// Stream info's cluster block for `stream` (a bucket's stream is
    /// `KV_<bucket>`).
    pub async fn placement(&self, stream: &str) -> Result<Placement, BusError> {
        let js = jetstream::new(self.client.clone());
        let fail = |reason: String| BusError::Transport {
            subject: format!("$JS.API.STREAM.INFO.{stream}"),
            reason,
        };
        let handle = (js.get_stream(stream).await).map_err(|e| fail(e.to_string()))?;
        Ok(placement_of(handle.cached_info().cluster.as_ref()))
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
