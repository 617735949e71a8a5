//! A [`LocalCluster`] over a JetStream cluster of nats-servers
//! (`natsd::cluster`): `nats` is the first node and `peers` the others, and
//! every process is given all the nodes' URLs.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{LocalCluster, Logs};
use crate::auth::{AuthDir, Role};
use crate::bus::Credentials;
use crate::natsd::{NatsCluster, NatsClusterOptions, NatsServer};

impl LocalCluster {
    /// Starts a JetStream cluster of nats-servers enforcing the credentials
    /// folder `auth` (`AuthDir::init` it first with every subagent's id: a
    /// new id later is not reloaded into the peers); add processes with
    /// [`LocalCluster::spawn`], which gives each every node's URL.
    pub async fn start_cluster(
        mut nats: NatsClusterOptions,
        baton: PathBuf,
        prefix: &str,
        logs: Logs,
        auth: PathBuf,
    ) -> anyhow::Result<LocalCluster> {
        let dir = logs.dir();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log folder {}", dir.display()))?;
        let auth = AuthDir::init(&auth, prefix, &[])?;
        nats.authorization = Some(auth.server_conf_path());
        nats.probe_credentials = Credentials::NkeyFile(auth.seed_path(Role::Admin, None));
        let mut nodes = NatsCluster::start(nats).await?.into_nodes().into_iter();
        let first = nodes.next().context("a cluster of no nodes")?;
        Ok(LocalCluster {
            nats: first,
            peers: nodes.collect(),
            auth: Some(auth),
            baton,
            prefix: prefix.to_string(),
            logs,
            env: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// The NATS nodes: `nats`, then the `peers`.
    pub fn nodes(&self) -> impl Iterator<Item = &NatsServer> {
        std::iter::once(&self.nats).chain(&self.peers)
    }

    /// Every node, to change several at once.
    pub fn nodes_mut(&mut self) -> Vec<&mut NatsServer> {
        std::iter::once(&mut self.nats)
            .chain(&mut self.peers)
            .collect()
    }

    /// Node `index` of [`LocalCluster::nodes`].
    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        match index {
            0 => &mut self.nats,
            i => &mut self.peers[i - 1],
        }
    }

    /// Every node's URL, comma separated, starting with node `first`'s.
    pub fn urls_from(&self, first: usize) -> String {
        let urls: Vec<String> = self.nodes().map(NatsServer::url).collect();
        let n = urls.len();
        let rotated: Vec<&str> = (0..n).map(|i| urls[(first + i) % n].as_str()).collect();
        rotated.join(",")
    }
}
