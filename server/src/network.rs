//! openraft's network over tonic: the client side ([`Network`], one cached channel per
//! peer, cloned per call) and the server side ([`RaftService`]). Payloads are serde_json
//! of openraft's own types; snapshots are streamed whole in one client-streaming call.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, Snapshot};
use tally_proto::v1::raft_client::RaftClient;
use tally_proto::v1::raft_server;
use tally_proto::v1::{RaftReply, RaftRequest, SnapshotChunk};
use tally_proto::{CLUSTER_METADATA, SENDER_METADATA};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::config::ConfigError;
use crate::lease::Acks;
use crate::stats::Stats;
use crate::types::{NodeId, Raft, SnapshotMeta, TallyNode, TypeConfig, Vote};

/// Snapshot data is sent in pieces of this size, so no single message nears gRPC limits.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Largest Raft message accepted: big appends and snapshot chunks, with headroom.
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;

/// Creates peer clients, sharing one lazily connected channel per peer address.
#[derive(Clone)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Peer id → address to dial instead of the advertised one (`dial` in the config).
    dial: Arc<std::collections::BTreeMap<NodeId, String>>,
    /// Set unless the cluster runs `insecure_plaintext`: peers are dialled over TLS,
    /// trusting only the site CA and presenting this node's certificate.
    tls: Option<ClientTlsConfig>,
    /// This node's cluster name, stamped on every outgoing call: a node of another
    /// cluster that now owns a peer's address refuses it instead of taking our entries.
    cluster: MetadataValue<Ascii>,
    /// This node's id, stamped on every outgoing call, so a call that loops back to its
    /// sender is refused there instead of reaching its Raft.
    me: MetadataValue<Ascii>,
    /// Where each peer's acknowledgements of our AppendEntries are recorded, for the
    /// leader's lease (see [`crate::lease`]).
    acks: Arc<Acks>,
    /// How long an AppendEntries may stay on the wire (see [`append_deadline`]).
    append_deadline: Duration,
    /// Where append round trips are counted, for `/metrics`.
    stats: Arc<Stats>,
}

/// How long one AppendEntries may stay on the wire before the transport gives up on it.
///
/// openraft 0.9 waits for an append only the heartbeat interval (50 ms), then drops the
/// call and sends the entries again. Under load a follower takes longer than that (an
/// fsync, a few thousand entries to decode, two cores shared with the clients): a resend
/// every 50 ms queues copies of the same entries behind it, and reporting the miss as
/// "unreachable" makes openraft send nothing for 500 ms, past the follower's election
/// timeout, so it campaigns (measured: BENCHMARKS.md, "Overload"). Instead the call runs
/// on in its own task, and the next append to that peer waits for it rather than
/// sending beside it (see [`Peer::append_entries`]). A follower that has not answered
/// within this deadline is treated as unreachable. Two election timeouts, and at least
/// 5 s: a follower catching up after a failover under load takes appends of up to
/// [`crate::config::MAX_PAYLOAD_ENTRIES`] entries, and one cut off before it finishes is
/// sent again whole (at 1.2 s a follower at 100,000 sessions never caught up); short
/// enough that a hung connection is redialled well within a client's TTL.
pub fn append_deadline(election_max_ms: u64) -> Duration {
    Duration::from_millis(election_max_ms.saturating_mul(2).max(5_000))
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Network")
    }
}

impl Network {
    /// `cluster` must be a checked cluster name (`config::check_cluster_name`), which is
    /// always a valid header value.
    pub fn new(
        me: NodeId,
        cluster: &str,
        dial: std::collections::BTreeMap<NodeId, String>,
        tls: Option<ClientTlsConfig>,
        acks: Arc<Acks>,
        append_deadline: Duration,
        stats: Arc<Stats>,
    ) -> Result<Network, ConfigError> {
        let cluster = cluster.parse().map_err(|_| ConfigError {
            key: "cluster_name",
            problem: format!("\"{}\" cannot travel in a header", cluster.escape_debug()),
        })?;
        Ok(Network {
            channels: Default::default(),
            dial: Arc::new(dial),
            tls,
            cluster,
            me: MetadataValue::from(me),
            acks,
            append_deadline,
            stats,
        })
    }

    /// Where the transport records peers' acknowledgements, for the leader's lease.
    pub(crate) fn acks(&self) -> Arc<Acks> {
        self.acks.clone()
    }

    /// Where the transport counts append round trips, shared with the node's metrics.
    pub(crate) fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut map = match self.channels.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr}: {e}"))?
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for peer {addr}: {e}"))?;
        }
        let ch = ep.connect_lazy();
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// A Raft client for a peer over its cached channel (dialled at its `dial` override
    /// if there is one), for calls outside openraft's replication (the clock pinger).
    /// Stamp each request with [`Network::stamp`].
    pub(crate) fn raft_client(
        &self,
        target: NodeId,
        node: &TallyNode,
    ) -> Result<RaftClient<Channel>, String> {
        let addr = self.dial.get(&target).unwrap_or(&node.addr);
        self.channel(addr).map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        })
    }

    /// Adds the metadata every Raft call carries: this node's cluster name and id, which
    /// the peer's guard checks.
    pub(crate) fn stamp<T>(&self, req: &mut Request<T>) {
        req.metadata_mut()
            .insert(CLUSTER_METADATA, self.cluster.clone());
        req.metadata_mut().insert(SENDER_METADATA, self.me.clone());
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &TallyNode) -> Peer {
        let client = self.raft_client(target, node);
        Peer {
            target,
            // Errors name the address actually dialled when `dial` overrides the
            // advertised one (Compose: advertised 127.0.0.1:27002, dialled node3:27000).
            who: match self.dial.get(&target) {
                Some(d) if *d != node.addr => {
                    format!("node {target} at {} (dialled at {d})", node.addr)
                }
                _ => format!("node {target} at {}", node.addr),
            },
            client,
            cluster: self.cluster.clone(),
            me: self.me.clone(),
            acks: self.acks.clone(),
            append_deadline: self.append_deadline,
            stats: self.stats.clone(),
            in_flight: None,
        }
    }
}

/// One peer, as openraft's replication task sees it.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    /// "node 3 at host:port", at the head of every error about this peer: openraft logs
    /// replication errors without naming the target, and "Unreachable node" twice a
    /// second does not tell an admin which one.
    who: String,
    client: Result<RaftClient<Channel>, String>,
    cluster: MetadataValue<Ascii>,
    me: MetadataValue<Ascii>,
    acks: Arc<Acks>,
    append_deadline: Duration,
    stats: Arc<Stats>,
    /// The AppendEntries still on the wire to this peer, if openraft stopped waiting for
    /// it: the next append waits for it instead of sending beside it.
    in_flight: Option<InFlight>,
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, TallyNode, RaftError<NodeId>>>;

/// An AppendEntries running in its own task; aborted if the peer's replication stream
/// ends (a new term, a removed member), whose late answer nobody would read.
struct InFlight(tokio::task::JoinHandle<AppendResult>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable {
    Unreachable::new(&AnyError::error(e.to_string()))
}

/// Connection-level failures are "unreachable" (openraft then sends the peer nothing for
/// 500 ms); the rest are network errors. A missed deadline (tonic's `Cancelled` "Timeout
/// expired") stays "unreachable" on purpose, though openraft 0.9 gives an AppendEntries
/// only the heartbeat interval (50 ms): mapped to a network error (retried at once), the
/// leader resent big batches every round to a follower already behind, and under `bench
/// scale` leadership changed more often, not less (4e8fae6, reverted). The backoff is
/// the only flow control this transport has; the real fix is a longer append deadline.
fn status_error<E: std::error::Error>(who: &str, s: Status) -> RPCError<NodeId, TallyNode, E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            RPCError::Unreachable(unreachable(format!("{who}: {}", s.message())))
        }
        _ => RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "{who}: {}: {}",
            s.code(),
            s.message()
        )))),
    }
}

impl Peer {
    fn client(&self) -> Result<RaftClient<Channel>, Unreachable> {
        self.client
            .clone()
            .map_err(|e| unreachable(format!("{}: {e}", self.who)))
    }

    /// What one call needs, owned, so it can run in its own task.
    fn wire(&self) -> Result<Wire, Unreachable> {
        Ok(Wire {
            client: self.client()?,
            who: self.who.clone(),
            target: self.target,
            cluster: self.cluster.clone(),
            me: self.me.clone(),
        })
    }

    /// openraft's error for an append it will no longer wait for.
    fn overdue(
        &self,
        vote: &Vote,
        waited: Duration,
    ) -> RPCError<NodeId, TallyNode, RaftError<NodeId>> {
        RPCError::Timeout(openraft::error::Timeout {
            action: openraft::RPCTypes::AppendEntries,
            id: vote.leader_id().voted_for().unwrap_or_default(),
            target: self.target,
            timeout: waited,
        })
    }
}

/// One Raft call's connection and stamps, owned.
struct Wire {
    client: RaftClient<Channel>,
    who: String,
    target: NodeId,
    cluster: MetadataValue<Ascii>,
    me: MetadataValue<Ascii>,
}

impl Wire {
    async fn call<Req, Resp>(
        mut self,
        rpc: &Req,
        deadline: Duration,
        vote: bool,
    ) -> Result<Resp, RPCError<NodeId, TallyNode, RaftError<NodeId>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let payload =
            serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = Request::new(RaftRequest { payload });
        req.set_timeout(deadline);
        req.metadata_mut().insert(CLUSTER_METADATA, self.cluster);
        req.metadata_mut().insert(SENDER_METADATA, self.me);
        let reply = if vote {
            self.client.vote(req).await
        } else {
            self.client.append_entries(req).await
        }
        .map_err(|s| status_error(&self.who, s))?
        .into_inner();
        if !reply.error.is_empty() {
            return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                reply.error,
            ))));
        }
        let res: Result<Resp, RaftError<NodeId>> = serde_json::from_slice(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// At most one append is on the wire to a peer. openraft stops waiting at its
    /// deadline (the heartbeat interval); the call runs on (see [`append_deadline`]),
    /// and the next append first waits for it: a late answer still counts for the
    /// leader's lease, and openraft, told "timeout", simply sends again what the
    /// follower has not yet confirmed (the follower keeps the entries it already took).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, TallyNode, RaftError<NodeId>>> {
        // Answer before openraft's own timer drops this future: same outcome, but ours
        // says which peer.
        let patience = option.soft_ttl();
        let start = Instant::now();
        if let Some(earlier) = self.in_flight.as_mut() {
            if tokio::time::timeout(patience, &mut earlier.0)
                .await
                .is_err()
            {
                return Err(self.overdue(&rpc.vote, patience));
            }
            self.in_flight = None;
        }
        let wire = self.wire().map_err(RPCError::Unreachable)?;
        let (acks, stats, target) = (self.acks.clone(), self.stats.clone(), self.target);
        let (deadline, vote) = (self.append_deadline, rpc.vote);
        let task = tokio::spawn(async move {
            // Taken before the request leaves: the follower's lease runs from when it
            // received it, which is later, so the leader's view errs on the safe side.
            let sent = Instant::now();
            let res: AppendEntriesResponse<NodeId> = wire.call(&rpc, deadline, false).await?;
            let took = sent.elapsed();
            stats.append_answered(
                u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                took >= patience,
            );
            // Every answer but "higher vote" means the follower took our vote as its
            // leader's and refreshed its lease (a log conflict is answered after the
            // vote check).
            if !matches!(res, AppendEntriesResponse::HigherVote(_)) {
                acks.record(target, &vote, sent);
            }
            Ok(res)
        });
        let call = self.in_flight.insert(InFlight(task));
        match tokio::time::timeout(patience.saturating_sub(start.elapsed()), &mut call.0).await {
            Err(_) => Err(self.overdue(&vote, patience)),
            Ok(joined) => {
                self.in_flight = None;
                match joined {
                    Ok(answer) => answer,
                    Err(e) => Err(RPCError::Network(NetworkError::new(&AnyError::error(
                        format!("{}: the append's task ended: {e}", self.who),
                    )))),
                }
            }
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, TallyNode, RaftError<NodeId>>> {
        let wire = self.wire().map_err(RPCError::Unreachable)?;
        wire.call(&rpc, option.hard_ttl(), true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let net = |e: &dyn std::fmt::Display| {
            StreamingError::Network(NetworkError::new(&AnyError::error(e.to_string())))
        };
        let vote = serde_json::to_vec(&vote).map_err(|e| net(&e))?;
        let meta = serde_json::to_vec(&snapshot.meta).map_err(|e| net(&e))?;
        let data = snapshot.snapshot.into_inner();
        let mut chunks = vec![SnapshotChunk {
            vote,
            meta,
            data: Vec::new(),
        }];
        chunks.extend(data.chunks(SNAPSHOT_CHUNK).map(|c| SnapshotChunk {
            data: c.to_vec(),
            ..Default::default()
        }));
        let mut req = Request::new(tokio_stream_iter(chunks));
        req.set_timeout(option.hard_ttl().max(std::time::Duration::from_secs(30)));
        req.metadata_mut()
            .insert(CLUSTER_METADATA, self.cluster.clone());
        req.metadata_mut().insert(SENDER_METADATA, self.me.clone());
        let reply = tokio::select! {
            r = client.install_full_snapshot(req) => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => StreamingError::Unreachable(unreachable(format!(
                    "{}: {}",
                    self.who,
                    s.message()
                ))),
                _ => net(&s),
            })?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(net(&reply.error));
        }
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            serde_json::from_slice(&reply.payload).map_err(|e| net(&e))?;
        res.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A stream over already-built chunks (tonic takes any `Stream` for client streaming).
fn tokio_stream_iter(
    chunks: Vec<SnapshotChunk>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = SnapshotChunk> {
    tonic::codegen::tokio_stream::iter(chunks)
}

/// The server side of the Raft service: decodes, hands to openraft, encodes the result;
/// and answers clock pings from the node's clock monitor.
pub struct RaftService {
    pub raft: Raft,
    pub clock: crate::clock::Clock,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftService")
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftReply>, Status> {
    serde_json::to_vec(v)
        .map(|payload| {
            Response::new(RaftReply {
                payload,
                error: String::new(),
            })
        })
        .map_err(|e| Status::internal(format!("encoding a Raft reply: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&req.into_inner().payload, "AppendEntries")?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<NodeId> = decode(&req.into_inner().payload, "Vote")?;
        encode(&self.raft.vote(rpc).await)
    }

    /// This node's wall time, read as late as possible (the caller brackets it with its
    /// round trip), and its own verdict on its clock, for the caller's status.
    async fn clock(
        &self,
        req: Request<tally_proto::v1::ClockPing>,
    ) -> Result<Response<tally_proto::v1::ClockPong>, Status> {
        let h = self.clock.health();
        let wall_ms = crate::shared::wall_ms();
        tracing::trace!(
            caller_wall_ms = req.into_inner().sent_wall_ms,
            wall_ms,
            "clock ping"
        );
        Ok(Response::new(tally_proto::v1::ClockPong {
            wall_ms,
            clock_ok: h.ok(),
            clock_problem: h.problem().unwrap_or_default(),
        }))
    }

    async fn install_full_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let vote: Vote = decode(&first.vote, "snapshot vote")?;
        let meta: SnapshotMeta = decode(&first.meta, "snapshot meta")?;
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        encode(&self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
