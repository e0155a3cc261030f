//! A cluster of real `tallyd` processes for fault tests: temporary data, free ports, a
//! fault proxy on every node-to-node link and in front of every node for clients, and
//! the faults themselves: stop, kill -9, pause (SIGSTOP), restart, partitions, one-way
//! loss, delay. Every process is killed by its id when the harness is dropped.
//!
//! Wiring: node j listens on a private port; it advertises its client proxy `C_j`
//! (so clients, and leader redirects, always go through a proxy); node i reaches node j
//! through the link proxy `L_ij` (the `dial` config). Cutting `L_ij` and `L_ji` cuts the
//! pair both ways; cutting one of them is one-way loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::{ClusterStatusRequest, LoadLicenseRequest};
use tally_client::{Cluster, ConnectOptions};
use tally_core::license::{sign_file, VendorSigningKey};

use crate::bin;
use crate::proxy::{Fault, Proxy};

/// The license every harness cluster loads: small counts, so seats are contended.
pub const LICENSE: &str = "\
VENDOR demo
FEATURE alpha demo 1.0 permanent 3 LINGER=2
FEATURE beta demo 1.0 permanent 2
FEATURE gamma demo 1.0 permanent 1 LINGER=1
";

/// The longest LINGER in [`LICENSE`].
pub const MAX_LINGER_MS: u64 = 2_000;

/// Seats per feature in [`LICENSE`] (none has overdraft).
pub const SEATS: [(&str, u64); 3] = [("alpha", 3), ("beta", 2), ("gamma", 1)];

/// Extra environment variables for some nodes' processes, by node id (libfaketime's,
/// say), kept across restarts.
pub type NodeEnv = BTreeMap<u64, Vec<(String, String)>>;

/// One `tallyd` process and its proxies.
#[derive(Debug)]
struct Node {
    listen: String,
    client_proxy: Proxy,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// A running cluster. See the module docs.
#[derive(Debug)]
pub struct Harness {
    pub dir: PathBuf,
    nodes: BTreeMap<u64, Node>,
    links: BTreeMap<(u64, u64), Proxy>,
    /// The client proxies' addresses: what clients connect to.
    pub endpoints: Vec<String>,
    /// Signs licenses for [`Harness::load_license`]; its public half is the nodes'
    /// vendor key for vendor `demo`.
    key: VendorSigningKey,
}

/// Entries between snapshots: few, so that a node that was down or cut off catches up
/// by a snapshot install, under faults.
pub const SNAPSHOT_EVERY: u64 = 20;

/// What the nodes are told; fast timings so faults resolve within a test.
pub const ELECTION_MIN_MS: u64 = 300;
pub const ELECTION_MAX_MS: u64 = 600;

impl Harness {
    /// Starts `n` nodes with data under `dir`, forms the cluster, loads [`LICENSE`].
    pub async fn start(dir: &Path, n: u64) -> anyhow::Result<Harness> {
        Harness::start_with(dir, n, NodeEnv::new()).await
    }

    /// [`Harness::start`], with extra environment variables for some nodes.
    pub async fn start_with(dir: &Path, n: u64, env: NodeEnv) -> anyhow::Result<Harness> {
        // Other tests keep the whole log (no snapshot in their way unless they make one).
        Harness::start_inner(dir, n, env, 100_000_000).await
    }

    /// [`Harness::start`] for fault schedules: a snapshot every [`SNAPSHOT_EVERY`]
    /// entries, so that installs happen under faults.
    pub async fn start_for_faults(dir: &Path, n: u64, env: NodeEnv) -> anyhow::Result<Harness> {
        Harness::start_inner(dir, n, env, SNAPSHOT_EVERY).await
    }

    async fn start_inner(
        dir: &Path,
        n: u64,
        mut env: NodeEnv,
        snapshot_every: u64,
    ) -> anyhow::Result<Harness> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let key = VendorSigningKey::from_bytes(&secret);
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("vendor.pub"), key.public().to_text())?;

        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let listen: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Ok((i as u64 + 1, l.local_addr()?.to_string())))
            .collect::<std::io::Result<_>>()?;

        // A name of its own per cluster: a node of the previous schedule's cluster that
        // still dials a reused port is refused instead of mixing its log into this one.
        let mut cluster = format!("harness-{}-", std::process::id());
        cluster.extend(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(32),
        );
        let mut links = BTreeMap::new();
        for from in 1..=n {
            for to in 1..=n {
                if from != to {
                    links.insert((from, to), Proxy::start(&listen[&to]).await?);
                }
            }
        }
        let mut nodes = BTreeMap::new();
        for (id, addr) in &listen {
            let client_proxy = Proxy::start(addr).await?;
            let mut dial = String::new();
            for to in 1..=n {
                if to != *id {
                    dial.push_str(&format!("{to} = \"{}\"\n", links[&(*id, to)].addr));
                }
            }
            let config = dir.join(format!("node{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "cluster_name = \"{cluster}\"\nid = {id}\nlisten = \"{addr}\"\nadvertise = \"{adv}\"\n\
                     data_dir = \"node{id}\"\nelection_min_ms = {ELECTION_MIN_MS}\n\
                     election_max_ms = {ELECTION_MAX_MS}\nheartbeat_ms = 50\n\
                     min_ttl_ms = 1000\n\
                     # The fault harness tests consensus; TLS has its own tests (tls.rs).\n\
                     insecure_plaintext = true\n\
                     # No HTTP port: the checker reads the cluster over gRPC.\n\
                     http = \"\"\n\
                     # The checker reads the whole history from the nodes' archives, so\n\
                     # snapshots may purge the log.\n\
                     snapshot_every = {snapshot_every}\nkeep_log_after_snapshot = 5\n\
                     archive_log = true\n\n[vendors]\ndemo = \"vendor.pub\"\n\n[dial]\n{dial}",
                    adv = client_proxy.addr,
                ),
            )?;
            nodes.insert(
                *id,
                Node {
                    listen: addr.clone(),
                    client_proxy,
                    config,
                    log: dir.join(format!("node{id}.log")),
                    env: env.remove(id).unwrap_or_default(),
                    child: None,
                },
            );
        }
        // Released only now, after every proxy has its port: a proxy bound while a node's
        // port was free could take it, and then a link proxy listening on node 3's port
        // looped node 2's messages back to node 2 (soak seed 228). What is left is a
        // small race with other processes until the nodes bind them.
        drop(listeners);
        let endpoints = nodes
            .values()
            .map(|n| n.client_proxy.addr.clone())
            .collect();
        let mut h = Harness {
            dir: dir.to_owned(),
            nodes,
            links,
            endpoints,
            key: key.clone(),
        };
        let init = h
            .nodes
            .iter()
            .map(|(id, n)| format!("{id}={}", n.client_proxy.addr))
            .collect::<Vec<_>>()
            .join(",");
        for id in 1..=n {
            h.spawn(id, (id == 1).then_some(init.as_str()))?;
        }
        h.wait_leader(Duration::from_secs(20)).await?;
        h.load_license("harness.lic", LICENSE).await?;
        Ok(h)
    }

    /// Signs `text` (vendor `demo`) and loads it under `source` through the leader.
    pub async fn load_license(&self, source: &str, text: &str) -> anyhow::Result<()> {
        let text = sign_file(text, &self.key)?;
        self.cluster(Duration::from_secs(20))?
            .call("load license", |ch| {
                let req = LoadLicenseRequest {
                    source: source.into(),
                    text: text.clone(),
                };
                async move { AdminClient::new(ch).load_license(req).await }
            })
            .await?;
        Ok(())
    }

    fn spawn(&mut self, id: u64, init: Option<&str>) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(bin("tallyd"));
        cmd.arg("run").arg("--config").arg(&node.config);
        if let Some(init) = init {
            cmd.args(["--init", init]);
        }
        let child = cmd
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// A client connection to the cluster through the client proxies.
    pub fn cluster(&self, retry_for: Duration) -> anyhow::Result<Cluster> {
        Ok(Cluster::new(
            &self.endpoints,
            ConnectOptions {
                retry_for,
                request_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_millis(500),
                tls: None,
            },
        )?)
    }

    /// The leader as the nodes report it, once one is elected (asked directly, past the
    /// proxies, so client faults do not hide it).
    pub async fn wait_leader(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + within;
        let direct = Cluster::new(
            self.nodes.values().map(|n| n.listen.as_str()),
            ConnectOptions {
                retry_for: Duration::from_millis(200),
                request_timeout: Duration::from_millis(500),
                connect_timeout: Duration::from_millis(300),
                tls: None,
            },
        )?;
        loop {
            for n in self.nodes.values() {
                if n.child.is_none() {
                    continue;
                }
                let r = direct
                    .call_node(&n.listen, "status", |ch| async move {
                        AdminClient::new(ch)
                            .cluster_status(ClusterStatusRequest {})
                            .await
                    })
                    .await;
                if let Ok(s) = r {
                    if s.leader_id != 0 && self.running(s.leader_id) {
                        return Ok(s.leader_id);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no leader within {within:?}; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    fn pid(&self, id: u64) -> Option<String> {
        self.nodes
            .get(&id)
            .and_then(|n| n.child.as_ref())
            .map(|c| c.id().to_string())
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(pid) = self.pid(id) {
            let _ = Command::new("kill").args(["-s", sig, &pid]).status();
        }
    }

    /// kill -9.
    pub async fn kill(&mut self, id: u64) {
        self.signal(id, "CONT"); // a paused process must not stay a paused zombie
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (SIGKILL after 10 s).
    pub async fn stop(&mut self, id: u64) {
        self.signal(id, "CONT");
        self.signal(id, "TERM");
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, "STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "CONT");
    }

    /// Starts a stopped or killed node again on its data.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.running(id) {
            return Ok(());
        }
        self.spawn(id, None)
    }

    fn link(&self, from: u64, to: u64, f: Fault) {
        if let Some(p) = self.links.get(&(from, to)) {
            p.set(f);
        }
    }

    /// Cuts every link between the groups (both ways); links inside a group stay.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        for (a, g) in groups.iter().enumerate() {
            for (b, h) in groups.iter().enumerate() {
                if a != b {
                    for from in g {
                        for to in h {
                            self.link(*from, *to, Fault::Down);
                        }
                    }
                }
            }
        }
    }

    /// `id` neither hears nor is heard by anyone, clients included.
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|x| *x != id).collect();
        self.partition(&[vec![id], others]);
        if let Some(n) = self.nodes.get(&id) {
            n.client_proxy.set(Fault::Down);
        }
    }

    /// Messages from `from` to `to` are lost; the other direction works.
    pub fn one_way_loss(&self, from: u64, to: u64) {
        self.link(from, to, Fault::Down);
    }

    /// Every link, clients' too, delays each chunk by `d`.
    pub fn delay_all(&self, d: Duration) {
        for p in self.links.values() {
            p.set(Fault::Delay(d));
        }
        for n in self.nodes.values() {
            n.client_proxy.set(Fault::Delay(d));
        }
    }

    /// Every link and client proxy back to normal; paused nodes resumed.
    pub fn heal(&self) {
        for p in self.links.values() {
            p.set(Fault::None);
        }
        for (id, n) in &self.nodes {
            n.client_proxy.set(Fault::None);
            self.resume(*id);
        }
    }

    /// Node `id`'s data directory (its archive is there).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    /// The environment node `id` gets from its next (re)start on (libfaketime's, say).
    pub fn set_env(&mut self, id: u64, env: Vec<(String, String)>) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.env = env;
        }
    }

    /// The key that signs this cluster's licenses (vendor `demo`), for a workload that
    /// loads its own.
    pub fn signer(&self) -> VendorSigningKey {
        self.key.clone()
    }

    /// Directly (past the proxies) asks node `id`.
    pub fn direct(&self, id: u64) -> anyhow::Result<(String, Cluster)> {
        let n = self.nodes.get(&id).context("no such node")?;
        let c = Cluster::new(
            [n.listen.as_str()],
            ConnectOptions {
                retry_for: Duration::from_secs(2),
                request_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_millis(500),
                tls: None,
            },
        )?;
        Ok((n.listen.clone(), c))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = Command::new("kill")
                    .args(["-s", "CONT", &c.id().to_string()])
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
