//! One `tallyd` node: storage, Raft, the lease keeper and the gRPC services on one port,
//! run until a shutdown signal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tally_proto::v1::admin_server::AdminServer;
use tally_proto::v1::licensing_server::LicensingServer;
use tally_proto::v1::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tonic::service::interceptor::InterceptedService;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::network::{Network, RaftService, MAX_RAFT_MESSAGE};
use crate::security::{Guard, RateLimiter, Service, TlsMaterial};
use crate::store;
use crate::types::{Raft, TallyNode};

pub use crate::shared::{not_leader, Shared};

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
    /// Where Raft runs (see `raft_runtime.rs`); shut down last.
    raft_rt: crate::raft_runtime::RaftRuntime,
    /// This node's readiness as `/readyz` and the gRPC health service report it, kept
    /// current (see `health.rs`): for systemd's status line.
    pub readiness: tokio::sync::watch::Receiver<crate::health::Readiness>,
    /// The task that keeps `readiness` current.
    watcher: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Resolves when this node's Raft stops for good (a storage error, a full disk),
    /// with the reason; never while it runs. `tallyd` then drains and exits non-zero.
    pub async fn failed(&self) -> String {
        let mut m = self.shared.raft.metrics();
        loop {
            if let Err(e) = &m.borrow_and_update().running_state {
                return e.to_string();
            }
            if m.changed().await.is_err() {
                return "raft stopped".into();
            }
        }
    }

    /// Stops serving, the keeper and Raft, and waits for all three, so the data
    /// directory can be reopened as soon as this returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        // First, so health watchers hear NOT_SERVING and their streams end, which the
        // server's graceful shutdown waits for.
        let _ = self.watcher.await;
        let _ = self.server.await;
        if let Some(h) = self.http {
            let _ = h.await;
        }
        let _ = self.keeper.await;
        let _ = self.pinger.await;
        let _ = self.shared.raft.shutdown().await;
        self.raft_rt.shut_down().await;
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
    let (log, mut sm) = store::open(&cfg.data_dir)?;
    sm.set_retention_ms(u64::from(cfg.history_retention_days) * 86_400_000);
    if cfg.archive_log {
        sm.archive_to(&cfg.data_dir.join("archive.jsonl"))?;
    }
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
        Arc::default(),
        crate::network::append_deadline(cfg.election_max_ms),
        Arc::default(),
    )?;
    // The clock pinger reaches peers over Raft's own channels.
    let pinger_network = network.clone();
    // Made on its own runtime, so that everything openraft spawns runs there.
    let raft_rt = crate::raft_runtime::RaftRuntime::new(cfg.id)?;
    let raft = {
        let (id, log, sm) = (cfg.id, log.clone(), sm.clone());
        raft_rt
            .handle()
            .spawn(async move { Raft::new(id, raft_config, network, log, sm).await })
            .await??
    };
    let (shutdown, _) = broadcast::channel(1);
    let clock = Clock::new(cfg.id, cfg.max_clock_offset_ms);
    let shared = Shared::new(
        raft,
        sm,
        log,
        Arc::new(cfg),
        clock,
        shutdown.clone(),
        &pinger_network,
    );

    // Every log line of this node carries its id: `tallyd dev` runs three in one process.
    let node_span = tracing::info_span!("node", id = shared.id);
    let keeper = tokio::spawn(
        shared
            .keeper
            .clone()
            .run(shared.clone(), shutdown.subscribe())
            .instrument(node_span.clone()),
    );
    tokio::spawn(crate::lag::runtime(
        shared.stats.clone(),
        crate::stats::Stats::runtime_lag,
        shutdown.subscribe(),
    ));
    raft_rt.handle().spawn(crate::lag::runtime(
        shared.stats.clone(),
        crate::stats::Stats::raft_runtime_lag,
        shutdown.subscribe(),
    ));
    crate::lag::thread(shared.stats.clone(), shutdown.subscribe())?;
    // Beside Raft: its pings are Raft calls on Raft's channels, and a late ping is a
    // wrong clock offset.
    let pinger = raft_rt.handle().spawn(
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
    let (ready_tx, readiness) = crate::health::channel();
    let watcher = tokio::spawn(
        crate::health::watch_readiness(shared.clone(), ready_tx, shutdown.subscribe())
            .instrument(node_span.clone()),
    );
    // Unguarded, like /readyz: a load balancer or kubelet asks without a certificate,
    // and the answer names nobody.
    let health = crate::health::HealthService::server(shared.clone(), readiness.clone());
    // Unguarded too: it tells what services and messages exist, which the open .proto
    // files say already, never anything of the ledger; every call it describes is still
    // guarded. So grpcurl can list and call the services without the .proto files.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tally_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    let mut rx = shutdown.subscribe();
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let incoming = limit(incoming, shared.cfg.limits.max_connections, "grpc");
    let id = shared.id;
    let mut builder = tonic::transport::Server::builder()
        // A peer that vanished (a dead workstation, a cut cable) is found by HTTP/2 pings
        // within 40 s instead of holding its connection until the OS gives up.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Bounds what one connection can ask at once; tally-client and Raft use a few.
        .max_concurrent_streams(1_024)
        .http2_max_header_list_size(64 << 10);
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
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
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
        raft_rt,
        readiness,
        watcher,
    })
}

/// The accepted connections, with connections beyond `max` (0: no cap) closed at once.
fn limit(
    incoming: tonic::transport::server::TcpIncoming,
    max: u32,
    what: &'static str,
) -> impl tonic::codegen::tokio_stream::Stream<
    Item = std::io::Result<crate::conns::Limited<tokio::net::TcpStream>>,
> {
    use tonic::codegen::tokio_stream::StreamExt as _;
    let slots = crate::conns::Slots::new(
        if max == 0 {
            usize::MAX >> 4
        } else {
            max as usize
        },
        what,
    );
    incoming.filter_map(move |r| match r {
        Ok(tcp) => slots.admit(tcp).map(Ok),
        Err(e) => Some(Err(e)),
    })
}

/// Makes a fresh cluster of `members` (id → node) with this node as its first leader
/// candidate. Only for brand-new data directories; a restarted node rejoins on its own.
pub async fn initialize(shared: &Shared, members: BTreeMap<u64, TallyNode>) -> anyhow::Result<()> {
    shared.raft.initialize(members).await?;
    Ok(())
}
