//! openraft's network over tonic: the client side ([`Network`], one cached channel per
//! peer, cloned per call) and the server side ([`RaftService`]). Payloads are serde_json
//! of openraft's own types; snapshots are streamed whole in one client-streaming call.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

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
        })
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
            who: format!("node {target} at {}", node.addr),
            client,
            cluster: self.cluster.clone(),
            me: self.me.clone(),
            acks: self.acks.clone(),
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

    async fn call<Req, Resp>(
        &mut self,
        rpc: &Req,
        option: &RPCOption,
        vote: bool,
    ) -> Result<Resp, RPCError<NodeId, TallyNode, RaftError<NodeId>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let payload =
            serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = Request::new(RaftRequest { payload });
        req.set_timeout(option.hard_ttl());
        req.metadata_mut()
            .insert(CLUSTER_METADATA, self.cluster.clone());
        req.metadata_mut().insert(SENDER_METADATA, self.me.clone());
        let reply = if vote {
            client.vote(req).await
        } else {
            client.append_entries(req).await
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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, TallyNode, RaftError<NodeId>>> {
        // Taken before the request leaves: the follower's lease runs from when it
        // received it, which is later, so the leader's view errs on the safe side.
        let sent = std::time::Instant::now();
        let res: AppendEntriesResponse<NodeId> = self.call(&rpc, &option, false).await?;
        // Every answer but "higher vote" means the follower took our vote as its leader's
        // and refreshed its lease (a log conflict is answered after the vote check).
        if !matches!(res, AppendEntriesResponse::HigherVote(_)) {
            self.acks.record(self.target, &rpc.vote, sent);
        }
        Ok(res)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, TallyNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, true).await
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
