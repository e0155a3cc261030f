//! Three in-process nodes on 127.0.0.1 over real gRPC and real redb files: replication,
//! leader failover with heartbeating sessions, expiry then linger then reclaim, and a
//! restart of the whole cluster from disk.

// Helpers of a test file are test code: a failed unwrap is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tally_core::ledger::Op;
use tally_core::license::{parse, LicenseFile};
use tally_proto::v1 as pb;
use tally_proto::v1::licensing_client::LicensingClient;
use tally_server::config::NodeConfig;
use tally_server::node::{self, NodeHandle};
use tally_server::types::TallyNode;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const LICENSE: &str = "VENDOR acme\nFEATURE cad acme 2026.1 permanent 2 LINGER=2\nFEATURE bulk acme 1.0 permanent uncounted\n";

fn license() -> LicenseFile {
    parse(LICENSE).unwrap()
}

fn cfg(id: u64, dir: PathBuf) -> NodeConfig {
    NodeConfig {
        id,
        data_dir: dir,
        // Small, so the tests below exercise snapshots and log purging.
        snapshot_every: 20,
        keep_log_after_snapshot: 5,
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        min_ttl_ms: 900,
        default_ttl_ms: 1_500,
        // These tests are about consensus and the ledger; TLS has its own (tests/tls.rs).
        insecure_plaintext: true,
        http: "127.0.0.1:0".into(),
        ..NodeConfig::default()
    }
}

struct Cluster {
    nodes: BTreeMap<u64, NodeHandle>,
    addrs: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(|_, _| {}).await
    }

    /// [`Cluster::start`], with `prepare(id, dir)` run on each node's data directory
    /// before the node starts (to mount a small filesystem there, say).
    async fn start_with(prepare: impl Fn(u64, &std::path::Path)) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let dirs: BTreeMap<u64, PathBuf> = (1..=3)
            .map(|id| (id, tmp.path().join(format!("n{id}"))))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, l) in listeners {
            std::fs::create_dir_all(&dirs[&id]).unwrap();
            prepare(id, &dirs[&id]);
            nodes.insert(
                id,
                node::start(cfg(id, dirs[&id].clone()), l).await.unwrap(),
            );
        }
        let members = addrs
            .iter()
            .map(|(id, a)| {
                (
                    *id,
                    TallyNode {
                        addr: a.clone(),
                        http: String::new(),
                    },
                )
            })
            .collect();
        node::initialize(&nodes[&1].shared, members).await.unwrap();
        let c = Cluster {
            nodes,
            addrs,
            dirs,
            _tmp: tmp,
        };
        let leader = c.leader().await;
        c.nodes[&leader]
            .shared
            .propose(Op::LoadLicense {
                source: "t.lic".into(),
                license: license(),
            })
            .await
            .unwrap();
        c
    }

    /// Starts node `id` on its data dir and old address (a new node gets fresh ones).
    async fn restart(&mut self, id: u64) {
        let l = match self.addrs.get(&id) {
            Some(a) => TcpListener::bind(a).await.unwrap(),
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        self.addrs.insert(id, l.local_addr().unwrap().to_string());
        let tmp = self._tmp.path();
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tmp.join(format!("n{id}")))
            .clone();
        self.nodes
            .insert(id, node::start(cfg(id, dir), l).await.unwrap());
    }

    async fn leader(&self) -> u64 {
        for _ in 0..200 {
            for (id, n) in &self.nodes {
                let m = n.shared.raft.metrics().borrow().clone();
                if m.current_leader == Some(*id) && m.state == openraft::ServerState::Leader {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader elected");
    }

    async fn client(&self, id: u64) -> LicensingClient<Channel> {
        LicensingClient::connect(format!("http://{}", self.addrs[&id]))
            .await
            .unwrap()
    }

    /// Waits until every running node has applied at least `index`.
    async fn converge(&self, index: u64) {
        for n in self.nodes.values() {
            let mut rx = n.shared.sm.applied_index();
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| *i >= index))
                .await
                .unwrap()
                .unwrap();
        }
    }

    async fn stop(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.stop().await;
        }
    }

    async fn stop_all(&mut self) {
        for id in self.addrs.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

struct Session {
    id: u64,
    secret: Vec<u8>,
    client: [u8; 16],
    seq: u64,
}

impl Session {
    fn req(&mut self) -> Option<pb::RequestId> {
        self.seq += 1;
        Some(pb::RequestId {
            client_id: self.client.to_vec(),
            seq: self.seq,
        })
    }
    fn auth(&self) -> Option<pb::SessionAuth> {
        Some(pb::SessionAuth {
            session_id: self.id,
            secret: self.secret.clone(),
        })
    }
}

async fn open(c: &mut LicensingClient<Channel>, user: &str, tag: u8) -> Session {
    open_ttl(c, user, tag, 1_000).await
}

async fn open_ttl(c: &mut LicensingClient<Channel>, user: &str, tag: u8, ttl_ms: u64) -> Session {
    let secret = vec![tag; 32];
    let r = c
        .open_session(pb::OpenSessionRequest {
            request: Some(pb::RequestId {
                client_id: vec![tag; 16],
                seq: 1,
            }),
            user: user.into(),
            host: "ws1".into(),
            display: ":0".into(),
            pid: 1,
            ttl_ms,
            client_info: String::new(),
            secret: secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ttl_ms, ttl_ms);
    Session {
        id: r.session_id,
        secret,
        client: [tag; 16],
        seq: 1,
    }
}

async fn checkout(
    c: &mut LicensingClient<Channel>,
    s: &mut Session,
) -> pb::checkout_response::Result {
    c.checkout(pb::CheckoutRequest {
        request: s.req(),
        auth: s.auth(),
        feature: "cad".into(),
        version: "2026.1".into(),
        count: 1,
        wait: false,
        wait_timeout_ms: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .result
    .unwrap()
}

/// One seat of the uncounted `bulk` feature, any version: never denied for seats.
fn bulk_checkout(s: &mut Session) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        request: s.req(),
        auth: s.auth(),
        feature: "bulk".into(),
        version: String::new(),
        count: 1,
        wait: false,
        wait_timeout_ms: 0,
    }
}

fn granted(r: pb::checkout_response::Result) -> pb::Grant {
    match r {
        pb::checkout_response::Result::Granted(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn heartbeat(
    c: &mut LicensingClient<Channel>,
    s: &Session,
) -> Result<pb::SessionState, tonic::Status> {
    let r = c
        .heartbeat(pb::HeartbeatRequest {
            sessions: vec![s.auth().unwrap()],
        })
        .await?
        .into_inner();
    Ok(r.sessions[0].state())
}

fn leases_on(n: &NodeHandle) -> Vec<u64> {
    n.shared
        .sm
        .read()
        .ledger
        .leases()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_is_on_every_node_and_survives_leader_failover() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    // Short, but long enough that a loaded CI machine gets the failover done within it.
    let mut s = open_ttl(&mut c, "ann", 1, 3_000).await;
    let g = granted(checkout(&mut c, &mut s).await);
    cluster.converge(g.lease_id).await;
    for n in cluster.nodes.values() {
        assert_eq!(
            leases_on(n),
            vec![g.lease_id],
            "node {} has the lease",
            n.shared.id
        );
    }

    // A follower refuses writes and heartbeats, pointing at the leader.
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let mut fc = cluster.client(follower).await;
    let err = heartbeat(&mut fc, &s).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata()
            .get(tally_proto::LEADER_ADDR_METADATA)
            .unwrap()
            .to_str()
            .unwrap(),
        cluster.addrs[&leader]
    );

    // Stop the leader; keep heartbeating to whoever leads next.
    cluster.stop(leader).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        let l = cluster.leader().await;
        let mut c = cluster.client(l).await;
        if heartbeat(&mut c, &s).await.is_ok() {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader answered heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader, leader);
    // Well past the TTL, heartbeating every 300 ms to whoever leads (a loaded machine may
    // see another election): every answer is "alive", and the seat stays.
    let until = tokio::time::Instant::now() + Duration::from_millis(4_200);
    let mut answered = 0;
    while tokio::time::Instant::now() < until {
        let l = cluster.leader().await;
        let mut c = cluster.client(l).await;
        match heartbeat(&mut c, &s).await {
            Ok(state) => {
                assert_eq!(state, pb::SessionState::Alive);
                answered += 1;
            }
            Err(e) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(answered >= 5, "only {answered} heartbeats answered");
    let new_leader = cluster.leader().await;
    let mut c = cluster.client(new_leader).await;
    assert_eq!(leases_on(&cluster.nodes[&new_leader]), vec![g.lease_id]);
    // The seat is still counted: one more checkout fits (2 seats), a third does not.
    let mut s2 = open(&mut c, "bob", 2).await;
    granted(checkout(&mut c, &mut s2).await);
    let mut s3 = open(&mut c, "cyd", 3).await;
    assert!(matches!(
        checkout(&mut c, &mut s3).await,
        pb::checkout_response::Result::Denied(_)
    ));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_session_expires_lingers_and_its_seat_returns() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    // The clock starts before the open: the TTL runs from the open entry's time, which
    // is no earlier than this, and the leader's entry times advance at the rate of its
    // monotonic clock, so a lower bound measured from here is sound.
    let started = tokio::time::Instant::now();
    let mut ann = open(&mut c, "ann", 1).await;
    let g = granted(checkout(&mut c, &mut ann).await);
    // Ann stops heartbeating. Her session expires after its TTL (1 s), then the seat
    // lingers 2 s for her, then returns.
    let sm = cluster.nodes[&leader].shared.sm.clone();
    while sm.read().ledger.session(ann.id).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "session never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "expired before its TTL"
    );
    assert!(sm
        .read()
        .ledger
        .seat(g.seat_id)
        .unwrap()
        .lingering_until
        .is_some());

    // Ann comes back within the linger on the same workstation and gets the same seat.
    // (The clock for the second bound starts before this open, as above.)
    let t = tokio::time::Instant::now();
    let mut ann2 = open(&mut c, "ann", 4).await;
    let again = granted(checkout(&mut c, &mut ann2).await);
    assert!(again.reused_lingering);
    assert_eq!(again.seat_id, g.seat_id);
    assert!(again.fencing_token > g.fencing_token);

    // Now she goes silent for good: expiry, linger, then the seat is back in the pool.
    while sm.read().ledger.seat(g.seat_id).is_some() {
        assert!(t.elapsed() < Duration::from_secs(8), "seat never reclaimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(3_000),
        "reclaimed before TTL + linger"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cluster_restart_keeps_every_seat() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let mut s = open_ttl(&mut c, "ann", 1, 30_000).await;
    let g = granted(checkout(&mut c, &mut s).await);
    cluster.converge(g.lease_id).await;
    cluster.stop_all().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    let leader = cluster.leader().await;
    cluster.nodes[&leader].shared.linearizable().await.unwrap();
    for n in cluster.nodes.values() {
        let mut rx = n.shared.sm.applied_index();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| *i >= g.lease_id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            leases_on(n),
            vec![g.lease_id],
            "node {} after restart",
            n.shared.id
        );
    }
    cluster.stop_all().await;
}

/// Checks out and checks in `n` times, so the log grows well past a snapshot.
async fn churn(c: &mut LicensingClient<Channel>, s: &mut Session, n: usize) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        let g = granted(checkout(c, s).await);
        let r = c
            .checkin(pb::CheckinRequest {
                request: s.req(),
                auth: s.auth(),
                lease_id: g.lease_id,
            })
            .await
            .unwrap()
            .into_inner();
        last = r.lease_id.max(last);
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_follower_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.stop(follower).await;
    std::fs::remove_dir_all(&cluster.dirs[&follower]).unwrap();

    let mut c = cluster.client(leader).await;
    // No heartbeats during the churn: the TTL must outlast it on a loaded CI machine.
    let mut s = open_ttl(&mut c, "ann", 1, 120_000).await;
    churn(&mut c, &mut s, 60).await;
    let held = granted(checkout(&mut c, &mut s).await);
    // The leader snapshots and purges in the background, and openraft postpones a purge
    // while a replication stream still reads those entries (here: retries to the down
    // node). Wait for it, so the wiped node can only catch up from a snapshot.
    let mut metrics = cluster.nodes[&leader].shared.raft.metrics();
    tokio::time::timeout(
        Duration::from_secs(30),
        metrics.wait_for(|m| m.purged.is_some_and(|p| p.index > 0)),
    )
    .await
    .expect("the leader purged its log after snapshots")
    .unwrap();

    cluster.restart(follower).await;
    cluster.converge(held.lease_id).await;
    let leader_sm = cluster.nodes[&leader].shared.sm.clone();
    let follower_sm = cluster.nodes[&follower].shared.sm.clone();
    let mut rx = follower_sm.applied_index();
    let target = *leader_sm.applied_index().borrow();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| *i >= target))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leases_on(&cluster.nodes[&follower]), vec![held.lease_id]);
    assert_eq!(
        follower_sm.read().ledger.seats().count(),
        leader_sm.read().ledger.seats().count(),
        "the rebuilt follower holds the same seats"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_at_runtime_catches_up_and_votes() {
    use tally_proto::v1::admin_client::AdminClient;
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let mut s = open_ttl(&mut c, "ann", 1, 30_000).await;
    churn(&mut c, &mut s, 30).await;
    let held = granted(checkout(&mut c, &mut s).await);

    cluster.restart(4).await;
    let mut admin = AdminClient::connect(format!("http://{}", cluster.addrs[&leader]))
        .await
        .unwrap();
    let r = admin
        .add_learner(pb::AddLearnerRequest {
            node_id: 4,
            grpc_addr: cluster.addrs[&4].clone(),
            http_addr: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.learners, vec![4]);
    let r = admin
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![1, 2, 3, 4],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.voters, vec![1, 2, 3, 4]);
    assert!(r.learners.is_empty());
    cluster.converge(held.lease_id).await;
    assert_eq!(leases_on(&cluster.nodes[&4]), vec![held.lease_id]);

    // It votes: with four voters a quorum is three, so once the leader stops, a new
    // leader can only be elected with node 4's vote.
    let status = admin
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.voters, vec![1, 2, 3, 4]);
    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let m = cluster.nodes[&4].shared.raft.metrics().borrow().clone();
    assert!(m.membership_config.membership().voter_ids().any(|v| v == 4));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_checkout_gets_the_identical_grant_and_no_second_seat() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let mut s = open_ttl(&mut c, "ann", 1, 30_000).await;
    let req = pb::CheckoutRequest {
        request: s.req(),
        auth: s.auth(),
        feature: "cad".into(),
        version: "2026.1".into(),
        count: 1,
        wait: false,
        wait_timeout_ms: 0,
    };
    let first = c.checkout(req.clone()).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retry = c.checkout(req).await.unwrap().into_inner();
    assert_eq!(
        first, retry,
        "a retry is answered exactly as the first attempt"
    );
    assert_eq!(
        leases_on(&cluster.nodes[&leader]).len(),
        1,
        "and takes no second seat"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_is_never_fed_this_clusters_log() {
    use tally_proto::v1::raft_client::RaftClient;
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;

    // A node of cluster "green" sits at an address the "tally" cluster is told to
    // replicate to: a decommissioned node's address reused, or a wrong peer list.
    let green_dir = cluster._tmp.path().join("green");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let green_addr = l.local_addr().unwrap().to_string();
    let green_cfg = NodeConfig {
        cluster_name: "green".into(),
        ..cfg(9, green_dir.clone())
    };
    let green = node::start(green_cfg, l).await.unwrap();
    cluster.nodes[&leader]
        .shared
        .raft
        .add_learner(
            9,
            TallyNode {
                addr: green_addr.clone(),
                http: String::new(),
            },
            false,
        )
        .await
        .unwrap();
    // Seats go on being granted in "tally" while its leader keeps trying node 9.
    let mut c = cluster.client(leader).await;
    let mut s = open_ttl(&mut c, "ann", 1, 30_000).await;
    churn(&mut c, &mut s, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = green.shared.raft.metrics().borrow().clone();
    assert_eq!(
        m.last_log_index, None,
        "green took entries of another cluster"
    );
    assert_eq!(m.current_leader, None);
    let lm = cluster.nodes[&leader]
        .shared
        .raft
        .metrics()
        .borrow()
        .clone();
    let matched = lm.replication.as_ref().and_then(|r| r.get(&9).cloned());
    assert_eq!(matched, Some(None), "the leader saw node 9 accept entries");

    // On the wire: a Raft call naming another cluster, or none, is refused naming both.
    let mut raw = RaftClient::connect(format!("http://{green_addr}"))
        .await
        .unwrap();
    let call = |name: Option<&str>| {
        let mut req = tonic::Request::new(pb::RaftRequest {
            payload: b"{}".to_vec(),
        });
        if let Some(n) = name {
            req.metadata_mut()
                .insert(tally_proto::CLUSTER_METADATA, n.parse().unwrap());
        }
        req.metadata_mut()
            .insert(tally_proto::SENDER_METADATA, "1".parse().unwrap());
        req
    };
    let e = raw.vote(call(Some("tally"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("\"green\"") && e.message().contains("\"tally\""),
        "{e}"
    );
    let e = raw.vote(call(None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("names no cluster"), "{e}");
    let e = raw.vote(call(Some("green"))).await.unwrap_err();
    assert_ne!(
        e.code(),
        tonic::Code::FailedPrecondition,
        "its own cluster's calls pass the check (and this payload is garbage): {e}"
    );
    // A call claiming to come from the node itself looped back: refused (soak seed 228:
    // a leader fed its own AppendEntries trips an openraft assertion).
    let mut looped = call(Some("green"));
    looped
        .metadata_mut()
        .insert(tally_proto::SENDER_METADATA, "9".parse().unwrap());
    let e = raw.vote(looped).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("this very node (9)"), "{e}");

    // Its data directory is green's now: starting it as a node of "tally" is refused.
    green.stop().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = node::start(cfg(9, green_dir), l).await.unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("cluster_name") && e.contains("\"green\"") && e.contains("\"tally\""),
        "{e}"
    );
    cluster.stop_all().await;
}

/// A raw HTTP/1.1 GET (or another method): the status code and the body.
async fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let code = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_serves_health_readiness_metrics_and_a_dashboard() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let mut s = open_ttl(&mut c, "ann", 1, 30_000).await;
    let held = granted(checkout(&mut c, &mut s).await);
    cluster.converge(held.lease_id).await;
    let web: BTreeMap<u64, String> = cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.http_addr.clone().unwrap()))
        .collect();
    for (id, addr) in &web {
        assert_eq!(http(addr, "GET", "/healthz").await, (200, "ok\n".into()));
        let (code, body) = http(addr, "GET", "/readyz").await;
        assert_eq!(code, 200, "node {id}: {body}");
        assert!(body.contains(&format!("leader {leader}")), "{body}");
        let (code, m) = http(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        // Each node reports its own applied ledger: the checkout is on all three.
        assert!(
            m.contains("tally_feature_seats_in_use{feature=\"cad\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("tally_feature_seats_issued{feature=\"cad\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("tally_leases 1\n") && m.contains("tally_sessions 1\n"),
            "{m}"
        );
        let is_leader = u8::from(*id == leader);
        assert!(
            m.contains(&format!("tally_raft_is_leader {is_leader}\n")),
            "{m}"
        );
        let (code, page) = http(addr, "GET", "/").await;
        assert_eq!(code, 200);
        assert!(page.contains("<td>cad</td><td>1</td><td>2</td>"), "{page}");
    }
    let any = &web[&leader];
    let (code, body) = http(any, "GET", "/nope").await;
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    assert_eq!(http(any, "POST", "/metrics").await.0, 405);

    // A node left alone knows no leader (or no longer hears a quorum): not ready.
    let alone = *web.keys().find(|id| **id != leader).unwrap();
    for id in web
        .keys()
        .copied()
        .filter(|id| *id != alone)
        .collect::<Vec<_>>()
    {
        cluster.stop(id).await;
    }
    let mut last = (0, String::new());
    for _ in 0..60 {
        last = http(&web[&alone], "GET", "/readyz").await;
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(
        last.1.contains("leader") || last.1.contains("quorum"),
        "{}",
        last.1
    );
    assert_eq!(
        http(&web[&alone], "GET", "/healthz").await.0,
        200,
        "alive though"
    );
    cluster.stop_all().await;
}

/// The metrics and the dashboard render a real ledger's state (not a hand-built view):
/// seats held within the count and in overdraft, a lingering seat, a queued checkout, and
/// every member's matched log index on the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_dashboard_show_the_real_ledger() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let shared = cluster.nodes[&leader].shared.clone();
    let od = parse("VENDOR acme\nFEATURE od acme 1.0 permanent 1 OVERDRAFT=1 LINGER=60\n").unwrap();
    let r = shared
        .propose(tally_core::ledger::Op::LoadLicense {
            source: "od.lic".into(),
            license: od,
        })
        .await
        .unwrap();
    assert!(matches!(
        r.reply,
        tally_core::ledger::Reply::LicenseLoaded { .. }
    ));
    let mut c = cluster.client(leader).await;
    let take = |s: &mut Session, wait: bool| pb::CheckoutRequest {
        request: s.req(),
        auth: s.auth(),
        feature: "od".into(),
        version: "1.0".into(),
        count: 1,
        wait,
        wait_timeout_ms: 0,
    };
    let mut ann = open_ttl(&mut c, "ann", 1, 30_000).await;
    let mut bob = open_ttl(&mut c, "bob", 2, 30_000).await;
    let mut cyd = open_ttl(&mut c, "cyd", 3, 30_000).await;
    let a = c
        .checkout(take(&mut ann, false))
        .await
        .unwrap()
        .into_inner();
    let a = granted(a.result.unwrap());
    let b = c
        .checkout(take(&mut bob, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted(b.result.unwrap()).overdraft_seats, 1);
    // Ann checks in: her seat lingers (still counted), so cyd has to queue.
    c.checkin(pb::CheckinRequest {
        request: ann.req(),
        auth: ann.auth(),
        lease_id: a.lease_id,
    })
    .await
    .unwrap();
    let mut waiter = cluster.client(leader).await;
    let queued = take(&mut cyd, true);
    let wait = tokio::spawn(async move { waiter.checkout(queued).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shared.sm.read().ledger.waiters().count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "cyd never queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = cluster.nodes[&leader].http_addr.clone().unwrap();
    let (code, m) = http(&addr, "GET", "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "tally_feature_seats_issued{feature=\"od\"} 1\n",
        "tally_feature_seats_in_use{feature=\"od\"} 2\n",
        "tally_feature_seats_lingering{feature=\"od\"} 1\n",
        "tally_feature_overdraft_limit{feature=\"od\"} 1\n",
        "tally_feature_overdraft_in_use{feature=\"od\"} 1\n",
        "tally_feature_queued{feature=\"od\"} 1\n",
        "tally_raft_is_leader 1\n",
        "tally_sessions 3\n",
    ] {
        assert!(m.contains(want), "missing {want:?} in\n{m}");
    }
    // The audit log's counters: the grants and the wait this test made.
    let counter = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    assert!(counter("tally_seat_events_total{event=\"out\"}") >= 2);
    assert_eq!(counter("tally_seat_events_total{event=\"queued\"}"), 1);
    // The leader knows every member's matched index, and it is a real log index.
    let applied = shared.sm.read().ledger.last_applied();
    for id in 1..=3u64 {
        let prefix = format!("tally_raft_member_matched_index{{member=\"{id}\"}} ");
        let line = m
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no matched index of node {id} in\n{m}"));
        let v: u64 = line[prefix.len()..].parse().unwrap();
        assert!(v > 0 && v <= applied + 1, "{line} (applied {applied})");
    }
    let (code, html) = http(&addr, "GET", "/").await;
    assert_eq!(code, 200);
    assert!(html.contains("<td>od</td>"), "{html}");
    wait.abort();
    cluster.stop_all().await;
}

/// Requests with bogus credentials are refused before anything is proposed: a flood of
/// them costs no log entry (it used to cost one replicated, fsynced entry each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bogus_credentials_cost_no_log_entry() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let mut ann = open_ttl(&mut c, "ann", 1, 30_000).await;
    granted(checkout(&mut c, &mut ann).await);
    let shared = cluster.nodes[&leader].shared.clone();
    let before = shared.metrics().last_log_index.unwrap_or(0);
    let t0 = std::time::Instant::now();
    for i in 0..200u64 {
        let (session, secret) = if i % 2 == 0 {
            (999_999, vec![1; 32])
        } else {
            (ann.id, vec![0xEE; 32])
        };
        let mut client = vec![0u8; 16];
        client[..8].copy_from_slice(&i.to_le_bytes());
        let r = c
            .checkin(pb::CheckinRequest {
                request: Some(pb::RequestId {
                    client_id: client,
                    seq: 1,
                }),
                auth: Some(pb::SessionAuth {
                    session_id: session,
                    secret,
                }),
                lease_id: 1,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                r.code(),
                tonic::Code::NotFound | tonic::Code::PermissionDenied
            ),
            "{r:?}"
        );
    }
    // The keeper may write its idle clock ticks (about one a second) and a checkpoint
    // meanwhile; 200 entries it may not. The flood takes seconds, not a moment: past the
    // caller's failure budget its refusals are held (limits.failed_auth_rps).
    let after = shared.metrics().last_log_index.unwrap_or(0);
    let bound = 5 + 2 * t0.elapsed().as_secs();
    assert!(
        after - before <= bound,
        "{before} -> {after} in {:?} (bound {bound})",
        t0.elapsed()
    );
    cluster.stop_all().await;
}

/// Slowloris on the HTTP port: hundreds of idle connections and one that sends half a
/// request. The port caps its connections and times out unfinished headers, so within
/// seconds the dashboard answers again, and the gRPC port (checkouts) and Raft (the
/// leader) never noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_slow_http_connections_do_not_stop_the_node() {
    use tokio::io::AsyncWriteExt as _;
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let addr = cluster.nodes[&leader].http_addr.clone().unwrap();
    let mut hogs = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            hogs.push(s);
        }
    }
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Meanwhile the gRPC port serves checkouts and the leader keeps leading.
    let mut c = cluster.client(leader).await;
    let mut ann = open_ttl(&mut c, "ann", 1, 30_000).await;
    granted(checkout(&mut c, &mut ann).await);
    assert_eq!(cluster.leader().await, leader);
    // The dashboard answers again once the idle ones' header time is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(2), async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut raw = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut raw)
                .await
                .ok()?;
            raw.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        if matches!(ok, Ok(Some(()))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboard never answered again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The half-sent request was cut off, not served.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut rest),
    )
    .await
    .expect("the slow connection was closed")
    .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&rest[..n]).contains("200 OK"),
        "a request whose headers never ended was served"
    );
    drop(hogs);
    cluster.stop_all().await;
}

/// A tmpfs of `mib` MiB mounted at `dir`; unmounted when dropped. The test needs root
/// (CI and the project machines run as root); it fails, naming why, where mounting is
/// not allowed, rather than pass without a full disk.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mib: u32) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} for the disk-full test failed (it needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A node whose disk fills up stops with UNAVAILABLE answers and says it is not healthy;
/// the other two keep serving; no acknowledged seat is lost; after the disk is freed, a
/// restart brings the node back with its data and it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_one_node_and_loses_no_seat() {
    let mounts = std::sync::Mutex::new(Vec::new());
    let mut cluster = Cluster::start_with(|id, dir| {
        if id == 3 {
            mounts.lock().unwrap().push(Tmpfs::mount(dir, 48));
        }
    })
    .await;
    let dir3 = cluster.dirs[&3].clone();
    // Fill node 3's disk with ballast, leaving a sliver the next appends will exhaust.
    let ballast = dir3.join("ballast");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let block = vec![0xAB; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // Keep taking seats until node 3 gives up (its appends fail), every grant counted.
    let mut granted_leases = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tag = 10u8;
    while cluster.nodes[&3].shared.fatal().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 never noticed its full disk"
        );
        let leader = cluster.leader().await;
        let mut c = cluster.client(leader).await;
        tag = tag.wrapping_add(1);
        let mut s = open_ttl(&mut c, "ann", tag, 60_000).await;
        if let Ok(r) = c.checkout(bulk_checkout(&mut s)).await {
            if let Some(pb::checkout_response::Result::Granted(g)) = r.into_inner().result {
                granted_leases.push(g.lease_id);
            }
        }
    }
    let why = cluster.nodes[&3].shared.fatal().unwrap();
    // Node 3 says so: not healthy, not ready, and writes answer UNAVAILABLE.
    let http3 = cluster.nodes[&3].http_addr.clone().unwrap();
    let (code, body) = http(&http3, "GET", "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("consensus stopped"), "{body}");
    assert_eq!(http(&http3, "GET", "/readyz").await.0, 503);
    let e = cluster.nodes[&3]
        .shared
        .propose(Op::Tick)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?} ({why})");
    // The other two elect a leader (if node 3 led) and keep granting.
    let mut leader = cluster.leader().await;
    while leader == 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leader = cluster.leader().await;
    }
    let mut c = cluster.client(leader).await;
    let mut bob = open_ttl(&mut c, "bob", 200, 60_000).await;
    let more = c
        .checkout(pb::CheckoutRequest {
            request: bob.req(),
            auth: bob.auth(),
            feature: "bulk".into(),
            version: String::new(),
            count: 1,
            wait: false,
            wait_timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    granted_leases.push(granted(more.result.unwrap()).lease_id);
    assert!(granted_leases.len() >= 2, "{granted_leases:?}");
    // Free the disk, restart node 3 on its data: it comes back and has every seat.
    cluster.stop(3).await;
    std::fs::remove_file(&ballast).unwrap();
    cluster.restart(3).await;
    let last = *granted_leases.iter().max().unwrap();
    cluster.converge(last).await;
    for n in cluster.nodes.values() {
        let sm = n.shared.sm.read();
        for l in &granted_leases {
            assert!(
                sm.ledger.lease(*l).is_some(),
                "node {} lost acknowledged lease {l}",
                n.shared.id
            );
        }
    }
    assert!(cluster.nodes[&3].shared.fatal().is_none());
    cluster.stop_all().await;
    drop(mounts);
}

/// Client work that holds the leader's client runtime, every worker of it, for 1.5 s at a
/// time (far past the 300-600 ms election timeout) costs the leader nothing: Raft runs
/// on a runtime of its own (`raft_runtime.rs`), so its heartbeats go out on time and no
/// follower campaigns. Each node here runs on its own runtime, as in its own process
/// (in one runtime, blocking it would silence the followers' inbound service too). With
/// Raft on the client runtime, the followers campaigned during the first hold.
#[test]
fn client_work_that_holds_the_leaders_runtime_costs_no_election() {
    let tmp = tempfile::tempdir().unwrap();
    let rts: Vec<tokio::runtime::Runtime> = (0..3)
        .map(|_| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    let mut nodes = BTreeMap::new();
    let mut members = BTreeMap::new();
    for (i, rt) in rts.iter().enumerate() {
        let id = i as u64 + 1;
        let dir = tmp.path().join(format!("n{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let node = rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            node::start(cfg(id, dir), l).await.unwrap()
        });
        let addr = node.addr.clone();
        members.insert(
            id,
            TallyNode {
                addr,
                http: String::new(),
            },
        );
        nodes.insert(id, node);
    }
    rts[0]
        .block_on(node::initialize(&nodes[&1].shared, members))
        .unwrap();
    let metrics = |id: u64| nodes[&id].shared.raft.metrics().borrow().clone();
    let mut leader = None;
    for _ in 0..200 {
        leader = (1..=3).find(|id| metrics(*id).state == openraft::ServerState::Leader);
        if leader.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let leader = leader.expect("a leader");
    let terms = || {
        (1..=3)
            .map(|id| metrics(id).current_term)
            .collect::<Vec<_>>()
    };
    let before = terms();
    let rt = &rts[leader as usize - 1];
    for _ in 0..3 {
        // Two tasks that block the leader runtime's two workers: all of it, held.
        let hogs: Vec<_> = (0..2)
            .map(|_| rt.spawn(async { std::thread::sleep(Duration::from_millis(1_500)) }))
            .collect();
        for h in hogs {
            rt.block_on(h).unwrap();
        }
        // Time for a campaign that started to show in the terms.
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(
        terms(),
        before,
        "an election while the leader's runtime was held"
    );
    let stats = nodes[&leader].shared.stats.view();
    assert!(
        stats.runtime_lag.over(1_000) >= 3,
        "the client runtime was held (the control): {:?}",
        stats.runtime_lag
    );
    assert_eq!(
        stats.raft_runtime_lag.over(100),
        0,
        "the Raft runtime never waited: {:?}",
        stats.raft_runtime_lag
    );
    for (id, n) in nodes {
        rts[id as usize - 1].block_on(n.stop());
    }
}

/// Admission control: with `limits.max_pending_writes = 1`, of 64 checkouts sent at once
/// some are answered "busy" (`UNAVAILABLE`, nothing proposed, counted for `/metrics`),
/// every one admitted is answered on its merits, and a busy one retried is granted:
/// overload is answered by slowing, not by a queue in front of Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_beyond_the_pending_bound_are_answered_busy_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(1, tmp.path().join("n1"));
    c.limits.max_pending_writes = 1;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = node::start(c, l).await.unwrap();
    let me = TallyNode {
        addr: node.addr.clone(),
        http: String::new(),
    };
    node::initialize(&node.shared, [(1, me)].into())
        .await
        .unwrap();
    for _ in 0..200 {
        if node.shared.raft.metrics().borrow().state == openraft::ServerState::Leader {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    node.shared
        .propose(Op::LoadLicense {
            source: "t.lic".into(),
            license: license(),
        })
        .await
        .unwrap();
    let mut client = LicensingClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for tag in 0..64u8 {
        sessions.push(open_ttl(&mut client, &format!("u{tag}"), tag, 60_000).await);
    }
    let attempt = |s: &mut Session| {
        let mut c = client.clone();
        let req = bulk_checkout(s);
        async move { c.checkout(req).await }
    };
    let calls: Vec<_> = sessions
        .iter_mut()
        .map(|s| tokio::spawn(attempt(s)))
        .collect();
    let mut busy = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Ok(r) => {
                granted(r.into_inner().result.unwrap());
            }
            Err(s) => {
                assert!(
                    s.code() == tonic::Code::Unavailable
                        && s.message().contains("busy: 1 client writes")
                        && s.message().contains("limits.max_pending_writes"),
                    "{s:?}"
                );
                busy.push(i);
            }
        }
    }
    assert!(
        !busy.is_empty(),
        "64 checkouts at once, one slot: none was busy"
    );
    assert_eq!(node.shared.stats.view().writes_busy, busy.len() as u64);
    assert_eq!(node.shared.admission.in_flight(), 0);
    // Nothing of the busy ones was written; retried one at a time, each is granted.
    let held = node.shared.sm.read().ledger.leases().count();
    assert_eq!(held, 64 - busy.len());
    for i in busy {
        let r = attempt(&mut sessions[i]).await.unwrap().into_inner();
        granted(r.result.unwrap());
    }
    assert_eq!(node.shared.sm.read().ledger.leases().count(), 64);
    node.stop().await;
}
