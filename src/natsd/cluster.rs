//! A local JetStream cluster of nats-server child processes (three by
//! default), for the cluster test and `baton bench cluster`: what
//! `nats/cluster/` describes, on random ports.
//!
//! Each node gets its own folder (configuration, store, log) under the
//! options' folder, the `server_name` `baton-nN`, a random client port
//! (`-p -1`) and a route port chosen free just before the start; every node
//! lists all the routes (its own is ignored), as `nats/cluster/n1.conf`
//! does. The authorization block (`baton auth init`'s `auth.conf`) is
//! inlined into each node's configuration. All nodes start at once; each is
//! ready only once a client has connected to it and JetStream has answered,
//! which in a cluster needs an elected meta leader: no fixed sleeps.
//! [`NatsCluster::kill`] SIGKILLs one node and [`NatsCluster::start_again`]
//! starts it on the same ports and store.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{io_err, NatsServer, NatsServerOptions, NatsdError};
use crate::bus::Credentials;

/// How long a whole cluster (or a restarted node) may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Starts tried when a reserved route port was taken in between.
const ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct NatsClusterOptions {
    /// Nodes; 3 when 0.
    pub nodes: usize,
    /// Holds a folder per node (`n1`, `n2`, ...): configuration, store, log.
    pub dir: PathBuf,
    /// An `authorization` block (`auth.conf`) every node enforces.
    pub authorization: Option<PathBuf>,
    /// What the readiness probes connect with.
    pub probe_credentials: Credentials,
    /// More server settings for every node (for example `max_pending: 65536`).
    pub settings: String,
}

/// The running nodes; dropping it kills them all.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start(opts: NatsClusterOptions) -> Result<NatsCluster, NatsdError> {
        let mut attempt = 1;
        loop {
            match start_once(&opts).await {
                // another process took a reserved route port in between
                Err(NatsdError::Exited { log_tail, .. })
                    if attempt < ATTEMPTS && log_tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Every node's client URL, comma separated, as `nats.url` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// The URLs starting with node `first`'s, then the others in turn: a
    /// process given these prefers that node and fails over to the others.
    pub fn urls_from(&self, first: usize) -> String {
        let n = self.nodes.len();
        let urls: Vec<String> = (0..n).map(|i| self.nodes[(first + i) % n].url()).collect();
        urls.join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// The nodes, in order, for an owner that keeps them itself.
    pub fn into_nodes(self) -> Vec<NatsServer> {
        self.nodes
    }

    /// The JetStream server name of node `index` (`baton-n1` for 0).
    pub fn server_name(index: usize) -> String {
        format!("baton-n{}", index + 1)
    }

    /// The index of the node named `server_name`.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|i| Self::server_name(*i) == server_name)
    }

    /// SIGKILLs node `index`; the others carry on.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts the killed node `index` again (same ports, store, config);
    /// ready once JetStream answers through it.
    pub async fn start_again(&mut self, index: usize) -> Result<(), NatsdError> {
        self.nodes[index].start_again().await
    }
}

async fn start_once(opts: &NatsClusterOptions) -> Result<NatsCluster, NatsdError> {
    let n = if opts.nodes == 0 { 3 } else { opts.nodes };
    let routes = free_ports(n)?;
    let auth = match &opts.authorization {
        Some(path) => {
            std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?
        }
        None => String::new(),
    };
    let mut starts = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let dir = opts.dir.join(format!("n{}", index + 1));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let node = Node {
            name: &NatsCluster::server_name(index),
            route: *route,
            routes: &routes,
            store: &dir.join("store"),
        };
        let text = node_config(&node, &opts.settings, &auth);
        let config = dir.join("nats-server.conf");
        std::fs::write(&config, text).map_err(io_err(format!("writing {}", config.display())))?;
        starts.push(NatsServer::start(NatsServerOptions {
            port: None,
            config_file: Some(config),
            log_file: Some(dir.join("nats-server.log")),
            probe_credentials: opts.probe_credentials.clone(),
            ready_within: Some(READY_WITHIN),
            ..Default::default()
        }));
    }
    // together: no node is ready before the cluster has a meta leader
    let nodes = futures::future::join_all(starts).await;
    let nodes = nodes.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(NatsCluster { nodes })
}

/// One node's place in the cluster.
struct Node<'a> {
    name: &'a str,
    route: u16,
    routes: &'a [u16],
    store: &'a Path,
}

/// A node's configuration: `nats/cluster/n1.conf` with these names, ports
/// and store, and the authorization block inline. The client port comes
/// from the command line (`-p -1`).
fn node_config(node: &Node, settings: &str, authorization: &str) -> String {
    let routes: Vec<String> = (node.routes.iter())
        .map(|port| format!("    nats-route://127.0.0.1:{port}"))
        .collect();
    format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:-1\n\
         jetstream {{ store_dir: {store:?} }}\n\
         max_payload: 1MB\n\
         cluster {{\n  name: baton\n  listen: 127.0.0.1:{route}\n  routes: [\n{routes}\n  ]\n}}\n\
         {settings}\n{authorization}\n",
        name = node.name,
        store = node.store,
        route = node.route,
        routes = routes.join("\n"),
    )
}

/// `n` ports free on the loopback now (all held until all are chosen, so
/// they differ); another process may still take one before a node binds it.
fn free_ports(n: usize) -> Result<Vec<u16>, NatsdError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("choosing free route ports"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("choosing free route ports"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_lists_every_route_and_its_own_name_and_store() {
        let node = Node {
            name: "baton-n2",
            route: 6223,
            routes: &[6222, 6223, 6224],
            store: Path::new("/tmp/x/n2/store"),
        };
        let text = node_config(&node, "max_pending: 1", "authorization { users: [] }");
        assert!(text.contains("server_name: baton-n2\n"), "{text}");
        assert!(text.contains("listen: 127.0.0.1:6223\n"), "{text}");
        for port in [6222, 6223, 6224] {
            assert!(text.contains(&format!("nats-route://127.0.0.1:{port}")));
        }
        assert!(text.contains("store_dir: \"/tmp/x/n2/store\""), "{text}");
        assert!(text.contains("max_pending: 1\n"));
        assert!(text.contains("authorization { users: [] }"));
    }

    #[test]
    fn free_ports_differ() {
        let ports = free_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    #[test]
    fn urls_from_rotates_and_names_follow_indexes() {
        assert_eq!(NatsCluster::server_name(0), "baton-n1");
        let cluster = NatsCluster { nodes: Vec::new() };
        assert_eq!(cluster.urls_from(0), "");
    }

    #[tokio::test]
    async fn three_nodes_elect_a_leader_and_a_killed_node_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let opts = NatsClusterOptions {
            dir: dir.path().into(),
            ..Default::default()
        };
        let limit = Duration::from_secs(60);
        let mut cluster = tokio::time::timeout(limit, NatsCluster::start(opts))
            .await
            .expect("start timed out")
            .expect("start");
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.urls().split(',').count(), 3);
        let first = cluster.node(1).url();
        assert!(cluster.urls_from(1).starts_with(&first));
        assert_eq!(cluster.index_of("baton-n3"), Some(2));
        let pid = cluster.node(0).pid();
        cluster.kill(0);
        assert!(!cluster.node(0).is_running());
        tokio::time::timeout(limit, cluster.start_again(0))
            .await
            .expect("restart timed out")
            .expect("restart");
        assert_ne!(cluster.node(0).pid(), pid);
        assert!(dir.path().join("n1/store/jetstream").is_dir());
    }
}
