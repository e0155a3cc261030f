//! One `tallyd` node: storage, Raft, the lease keeper and the gRPC services on one port,
//! run until a shutdown signal.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tally_core::ledger::{Op, Outcome};
use tally_proto::v1::admin_server::AdminServer;
use tally_proto::v1::licensing_server::LicensingServer;
use tally_proto::v1::raft_server::RaftServer;
use tally_proto::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tonic::service::interceptor::InterceptedService;
use tonic::Status;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::keeper::{now_ms, Keeper};
use crate::network::{Network, RaftService, MAX_RAFT_MESSAGE};
use crate::security::{Guard, RateLimiter, Service, TlsMaterial};
use crate::store::{self, StateMachine};
use crate::types::{Command, Raft, TallyNode};

/// What every service and the keeper share. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachine,
    /// Read-only use outside Raft: the admin log export.
    pub log: store::LogStore,
    pub cfg: Arc<NodeConfig>,
    pub keeper: Arc<Keeper>,
    /// Whether this node's wall clock agrees with its peers': it proposes nothing and
    /// does not lead while not.
    pub clock: Clock,
    /// Fires when the node stops, so long-running calls (queued checkouts) end at once
    /// instead of holding up a graceful shutdown.
    pub shutdown: broadcast::Sender<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared(node {})", self.id)
    }
}

/// A "not the leader" answer: `UNAVAILABLE`, with the leader's address and id in the
/// metadata when known, for the client to follow.
pub fn not_leader(leader: Option<(u64, &TallyNode)>) -> Status {
    let mut s = Status::unavailable(match leader {
        Some((id, n)) => format!("not the leader; the leader is node {id} at {}", n.addr),
        None => "not the leader, and no leader is known yet (election in progress): retry shortly"
            .into(),
    });
    if let Some((id, n)) = leader {
        if let Ok(v) = n.addr.parse() {
            s.metadata_mut().insert(LEADER_ADDR_METADATA, v);
        }
        if let Ok(v) = id.to_string().parse() {
            s.metadata_mut().insert(LEADER_ID_METADATA, v);
        }
    }
    s
}

impl Shared {
    /// Proposes an op stamped with this leader's clock and waits for it to be applied.
    /// Refused (UNAVAILABLE, so clients try another node) while this node leads with a
    /// clock that disagrees with its peers': its time must not reach the log.
    pub async fn propose(&self, op: Op) -> Result<Outcome, Status> {
        let at_ms = match self.clock.checked_now() {
            Ok(now) => now,
            Err(why) => {
                let leader = self.raft.metrics().borrow().current_leader;
                if leader.is_none() || leader == Some(self.id) {
                    return Err(Status::unavailable(format!(
                        "node {} proposes nothing while its clock is off: {why}",
                        self.id
                    )));
                }
                // A follower: Raft refuses with the leader's address, for the client
                // to follow; the time is never used.
                now_ms()
            }
        };
        match self.raft.client_write(Command { at_ms, op }).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id.zip(f.leader_node.as_ref())))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(Status::internal(format!("raft stopped: {e}"))),
        }
    }

    /// Waits until this node may serve an exact read: it is leader and has applied
    /// everything committed before the read began (openraft's ReadIndex round).
    pub async fn linearizable(&self) -> Result<(), Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id.zip(f.leader_node.as_ref())))
            }
            Err(e) => Err(Status::unavailable(format!(
                "cannot confirm leadership: {e}"
            ))),
        }
    }
}

/// A running node. Dropping it does not stop it: call [`NodeHandle::stop`].
#[derive(Debug)]
pub struct NodeHandle {
    pub shared: Shared,
    pub addr: String,
    /// Where the HTTP port listens, if it is on.
    pub http_addr: Option<String>,
    http: Option<tokio::task::JoinHandle<()>>,
    shutdown: broadcast::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Awaited on stop: it holds the state machine, and so the database file's lock.
    keeper: tokio::task::JoinHandle<()>,
    /// The clock pinger.
    pinger: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Stops serving, the keeper and Raft, and waits for all three, so the data
    /// directory can be reopened as soon as this returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        if let Some(h) = self.http {
            let _ = h.await;
        }
        let _ = self.keeper.await;
        let _ = self.pinger.await;
        let _ = self.shared.raft.shutdown().await;
    }
}

/// Starts a node on an already bound listener (tests bind `127.0.0.1:0`).
pub async fn start(mut cfg: NodeConfig, listener: TcpListener) -> anyhow::Result<NodeHandle> {
    cfg.validate()?;
    let addr = listener.local_addr()?.to_string();
    if cfg.advertise.is_empty() {
        cfg.advertise = addr.clone();
    }
    let raft_config = Arc::new(cfg.raft_config()?);
    let tls = cfg.tls.as_ref().map(TlsMaterial::load).transpose()?;
    if tls.is_none() {
        tracing::warn!(
            node = cfg.id,
            "INSECURE: plaintext gRPC, no TLS, no roles (insecure_plaintext): anyone who reaches {} may do anything, including join the cluster",
            cfg.listen
        );
    }
    // Bound before anything is opened, so a taken port fails the start cleanly.
    let http_listener = if cfg.http.is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&cfg.http)
                .await
                .map_err(|e| crate::config::ConfigError {
                    key: "http",
                    problem: format!("binding {}: {e}", cfg.http),
                })?,
        )
    };
    let (log, sm) = store::open(&cfg.data_dir)?;
    if let Some(bound) = log.claim_cluster(&cfg.cluster_name)? {
        return Err(crate::config::ConfigError {
            key: "cluster_name",
            problem: format!(
                "the data in {} belongs to cluster \"{bound}\", not \"{}\": wrong data directory, or set cluster_name = \"{bound}\"",
                cfg.data_dir.display(),
                cfg.cluster_name
            ),
        }
        .into());
    }
    let network = Network::new(
        cfg.id,
        &cfg.cluster_name,
        cfg.dial.clone(),
        tls.as_ref().map(TlsMaterial::peer_client),
    )?;
    // The clock pinger reaches peers over Raft's own channels.
    let pinger_network = network.clone();
    let raft = Raft::new(cfg.id, raft_config, network, log.clone(), sm.clone()).await?;
    let (shutdown, _) = broadcast::channel(1);
    let shared = Shared {
        id: cfg.id,
        raft,
        sm,
        log,
        clock: Clock::new(cfg.id, cfg.max_clock_offset_ms),
        cfg: Arc::new(cfg),
        keeper: Arc::new(Keeper::default()),
        shutdown: shutdown.clone(),
    };

    // Every log line of this node carries its id: `tallyd dev` runs three in one process.
    let node_span = tracing::info_span!("node", id = shared.id);
    let keeper = tokio::spawn(
        shared
            .keeper
            .clone()
            .run(shared.clone(), shutdown.subscribe())
            .instrument(node_span.clone()),
    );
    let pinger = tokio::spawn(
        crate::clock::pinger::run(
            shared.id,
            shared.clock.clone(),
            shared.raft.clone(),
            pinger_network,
            shutdown.subscribe(),
        )
        .instrument(node_span.clone()),
    );

    let secure = tls.is_some();
    let require_cert = shared.cfg.require_client_cert;
    let whoami: (Arc<str>, u64) = (shared.cfg.cluster_name.as_str().into(), shared.id);
    let guard = |service| Guard::new(service, whoami.clone(), secure, require_cert, None);
    let raft_svc = InterceptedService::new(
        RaftServer::new(RaftService {
            raft: shared.raft.clone(),
            clock: shared.clock.clone(),
        })
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE),
        guard(Service::Raft),
    );
    let licensing = InterceptedService::new(
        LicensingServer::new(crate::licensing::Licensing::new(shared.clone()))
            .max_decoding_message_size(crate::licensing::MAX_CLIENT_MESSAGE),
        Guard::new(
            Service::Licensing,
            whoami.clone(),
            secure,
            require_cert,
            RateLimiter::new(shared.cfg.limits.per_address_rps),
        ),
    );
    let admin = InterceptedService::new(
        AdminServer::new(crate::admin::Admin::new(shared.clone()))
            .max_decoding_message_size(crate::admin::MAX_ADMIN_MESSAGE),
        guard(Service::Admin),
    );
    let mut rx = shutdown.subscribe();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let id = shared.id;
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = &tls {
        builder = builder.tls_config(t.server())?;
    }
    let server = tokio::spawn(
        builder
            // One span per request, naming the node and the call; handlers record the
            // session and lease they act on into it.
            .trace_fn(move |req| {
                tracing::info_span!(
                    "rpc",
                    node = id,
                    call = req.uri().path().rsplit('/').next().unwrap_or(""),
                    session = tracing::field::Empty,
                    lease = tracing::field::Empty,
                )
            })
            .add_service(raft_svc)
            .add_service(licensing)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.recv().await;
            })
            .instrument(node_span),
    );
    let mut http_addr = None;
    let http = match http_listener {
        None => None,
        Some(l) => {
            let a = l.local_addr()?.to_string();
            tracing::info!(node = shared.id, addr = %a, tls = secure, "http serving: /, /metrics, /healthz, /readyz");
            http_addr = Some(a);
            Some(tokio::spawn(
                crate::http::serve(
                    l,
                    shared.clone(),
                    tls.as_ref().map(TlsMaterial::http_server),
                    shutdown.subscribe(),
                )
                .instrument(tracing::info_span!("http", node = shared.id)),
            ))
        }
    };
    tracing::info!(node = shared.id, %addr, tls = secure, "tallyd node serving");
    Ok(NodeHandle {
        shared,
        addr,
        http_addr,
        http,
        shutdown,
        server,
        keeper,
        pinger,
    })
}

/// Makes a fresh cluster of `members` (id → node) with this node as its first leader
/// candidate. Only for brand-new data directories; a restarted node rejoins on its own.
pub async fn initialize(shared: &Shared, members: BTreeMap<u64, TallyNode>) -> anyhow::Result<()> {
    shared.raft.initialize(members).await?;
    Ok(())
}
