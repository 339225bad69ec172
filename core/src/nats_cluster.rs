//! A local nats-server cluster on loopback: `jobstream dev --nats-cluster 3`, the cluster
//! tests and `jobstream bench --nats-cluster 3`.
//!
//! Every node runs the same configuration file (the embedded `nats.conf`); what makes it
//! a node of the cluster is given on its command line: its name, its cluster port and the
//! routes of every node, its own included (nats-server skips the route to itself), so
//! all nodes hold the same list. Ports are picked free and below the kernel's ephemeral
//! range (32768–60999), where an outgoing connection could take them between the check
//! and the bind. Ready means every node's `/healthz?js-meta-only=true` answers 200:
//! `js-enabled-only` answers before a meta leader exists, and a stream cannot be created
//! until one does.

use std::path::PathBuf;
use std::time::Duration;

use crate::nats_server::{self, NatsServerError, NatsServerProcess, ServerOptions};

/// Name of the cluster (`cluster { name }`), the same on every node.
pub const CLUSTER_NAME: &str = "jobstream";

/// The kernel's ephemeral port range (Linux default), avoided for fixed ports.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;
/// Where fixed ports are picked from: above the well-known and common service ports.
const FIXED_PORTS: std::ops::Range<u16> = 20000..32768;

/// One node's place in the cluster, passed to nats-server as flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// `server_name` (unique in the cluster; JetStream needs it).
    pub name: String,
    /// Port of this node's cluster (route) listener.
    pub cluster_port: u16,
    /// Cluster ports of every node, this one included.
    pub routes: Vec<u16>,
}

impl ClusterNode {
    /// The nats-server flags that make a server this node.
    pub fn args(&self) -> Vec<String> {
        let routes = self
            .routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "--name".into(),
            self.name.clone(),
            "--cluster_name".into(),
            CLUSTER_NAME.into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", self.cluster_port),
            "--routes".into(),
            routes,
        ]
    }
}

/// A free loopback port outside the ephemeral range, not in `taken`.
pub fn free_port(taken: &[u16]) -> Result<u16, NatsServerError> {
    for _ in 0..200 {
        let port = rand::random_range(FIXED_PORTS);
        debug_assert!(!EPHEMERAL.contains(&port));
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(NatsServerError::Start(
        "no free port found outside the ephemeral range".into(),
    ))
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The nats-server binary.
    pub bin: PathBuf,
    /// The configuration file every node runs.
    pub config: PathBuf,
    /// Each node keeps its store, log and ports file in `base_dir/<node name>`.
    pub base_dir: PathBuf,
    /// Number of nodes (3 for R3 streams).
    pub size: usize,
}

/// A running local cluster; every node is killed when it is dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServerProcess>,
    options: Vec<ServerOptions>,
}

/// Start-up attempts with fresh ports when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

impl NatsCluster {
    /// Starts `size` nodes and waits until each reports its ports (not yet until the
    /// cluster has a meta leader: see [`wait_healthy`](Self::wait_healthy)).
    pub async fn start(opts: &ClusterOptions) -> Result<Self, NatsServerError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(opts).await {
                Ok(c) => return Ok(c),
                // A port picked free may be taken before the server binds it: pick again.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| NatsServerError::Start("no start attempt".into())))
    }

    async fn start_once(opts: &ClusterOptions) -> Result<Self, NatsServerError> {
        let mut taken = Vec::new();
        for _ in 0..opts.size * 2 {
            let p = free_port(&taken)?;
            taken.push(p);
        }
        let (client_ports, cluster_ports) = taken.split_at(opts.size);
        let options: Vec<ServerOptions> = (0..opts.size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let dir = opts.base_dir.join(&name);
                ServerOptions {
                    bin: opts.bin.clone(),
                    config: Some(opts.config.clone()),
                    store_dir: dir.join("jetstream"),
                    // Fixed, so a restarted node comes back where its clients and peers look.
                    port: Some(client_ports[i]),
                    log_file: Some(dir.join("nats-server.log")),
                    cluster: Some(ClusterNode {
                        name,
                        cluster_port: cluster_ports[i],
                        routes: cluster_ports.to_vec(),
                    }),
                }
            })
            .collect();
        let mut nodes = Vec::with_capacity(options.len());
        for o in &options {
            nodes.push(NatsServerProcess::start(o).await?);
        }
        Ok(NatsCluster { nodes, options })
    }

    /// Waits until every node answers `/healthz?js-meta-only=true` with 200, polling
    /// each until `within` has passed.
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), NatsServerError> {
        let deadline = tokio::time::Instant::now() + within;
        for node in &self.nodes {
            wait_node_healthy(node, deadline).await?;
        }
        Ok(())
    }

    /// Waits until node `i` answers `/healthz?js-meta-only=true` with 200.
    pub async fn wait_node_healthy(
        &self,
        i: usize,
        within: Duration,
    ) -> Result<(), NatsServerError> {
        wait_node_healthy(&self.nodes[i], tokio::time::Instant::now() + within).await
    }

    /// The client URLs of every node, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServerProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[NatsServerProcess] {
        &self.nodes
    }

    /// The index of the node named `name` (`n1`, `n2`, …).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.options
            .iter()
            .position(|o| o.cluster.as_ref().is_some_and(|c| c.name == name))
    }

    /// The name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        self.options[i]
            .cluster
            .as_ref()
            .map_or("", |c| c.name.as_str())
    }

    /// SIGKILL to node `i`: a crash.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Starts node `i` again on its ports and store (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)).
    pub async fn restart(&mut self, i: usize) -> Result<(), NatsServerError> {
        self.nodes[i] = NatsServerProcess::start(&self.options[i]).await?;
        Ok(())
    }

    /// Stops node `i` cleanly: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, i: usize, grace: Duration) {
        self.nodes[i].stop(grace).await;
    }

    /// Node `i` in lame duck mode until it exits (killed after `within`).
    pub async fn lame_duck(&mut self, i: usize, within: Duration) {
        self.nodes[i].lame_duck(within).await;
    }

    /// Stops every node cleanly.
    pub async fn stop_all(&mut self, grace: Duration) {
        for n in &mut self.nodes {
            n.stop(grace).await;
        }
    }
}

/// The nats-server children of a command (`dev`, `bench`): one server, or a local cluster.
#[derive(Debug)]
pub enum LocalNats {
    /// One server.
    Single(NatsServerProcess),
    /// A cluster.
    Cluster(NatsCluster),
}

impl LocalNats {
    /// The client URL, or every node's, comma-separated.
    pub fn urls(&self) -> String {
        match self {
            LocalNats::Single(s) => s.url(),
            LocalNats::Cluster(c) => c.urls(),
        }
    }

    /// Where the sync setting is checked (the first node's: they share the configuration).
    pub fn monitor_url(&self) -> Option<String> {
        match self {
            LocalNats::Single(s) => s.monitor_url().map(str::to_owned),
            LocalNats::Cluster(c) => c.nodes().first()?.monitor_url().map(str::to_owned),
        }
    }

    /// The process ids of every server (while they run).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            LocalNats::Single(s) => s.pid().into_iter().collect(),
            LocalNats::Cluster(c) => c
                .nodes()
                .iter()
                .filter_map(NatsServerProcess::pid)
                .collect(),
        }
    }

    /// Stops every server cleanly (SIGTERM, SIGKILL after `grace`).
    pub async fn stop(self, grace: Duration) {
        match self {
            LocalNats::Single(mut s) => s.stop(grace).await,
            LocalNats::Cluster(mut c) => c.stop_all(grace).await,
        }
    }
}

/// Polls one node's JetStream meta health until `deadline`.
async fn wait_node_healthy(
    node: &NatsServerProcess,
    deadline: tokio::time::Instant,
) -> Result<(), NatsServerError> {
    let monitor = node
        .monitor_url()
        .ok_or_else(|| NatsServerError::Start("a node reported no monitoring port".into()))?;
    loop {
        let answer = nats_server::monitor_get(monitor, "/healthz?js-meta-only=true").await;
        match answer {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(NatsServerError::Start(format!(
                    "cluster not healthy in time: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(HEALTH_POLL).await,
        }
    }
}

/// Pause between two health polls of one node.
const HEALTH_POLL: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_lists_every_route_including_its_own() {
        let node = ClusterNode {
            name: "n2".into(),
            cluster_port: 21002,
            routes: vec![21001, 21002, 21003],
        };
        let args = node.args();
        let routes = &args[args.iter().position(|a| a == "--routes").unwrap() + 1];
        assert_eq!(
            routes,
            "nats-route://127.0.0.1:21001,nats-route://127.0.0.1:21002,nats-route://127.0.0.1:21003"
        );
        assert!(args.windows(2).any(|w| w == ["--name", "n2"]));
    }

    #[test]
    fn ports_are_outside_the_ephemeral_range() {
        let mut taken = Vec::new();
        for _ in 0..20 {
            let p = free_port(&taken).unwrap();
            assert!(!EPHEMERAL.contains(&p) && !taken.contains(&p));
            taken.push(p);
        }
    }
}
