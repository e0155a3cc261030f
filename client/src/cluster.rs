//! A connection to every node of a cluster that sends each call to the leader: a node
//! that is not the leader answers `UNAVAILABLE` with the leader's address, which is
//! followed at once; an unreachable node or an election in progress is retried on the
//! next node with a growing pause, until a time budget runs out.
//!
//! Following is safe for writes because every write carries a request id chosen before
//! the first attempt: the ledger answers a repeated id with its first answer, so a write
//! that reached the leader just before the connection broke is not applied twice.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_proto::LEADER_ADDR_METADATA;
// Tokio's clock, not the system's: the same in production, and virtual in tests of the
// heartbeat that pause time.
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use crate::{Error, Tls};

/// How a [`Cluster`] connects and how long it keeps trying.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long one call keeps looking for a leader before giving up with
    /// [`Error::Unavailable`]. Longer than an election (about a second) so that a
    /// failover is invisible to the caller.
    pub retry_for: Duration,
    /// Longest wait for a TCP connection to one node.
    pub connect_timeout: Duration,
    /// Longest wait for one node's answer to one attempt.
    pub request_timeout: Duration,
    /// The cluster's CA and this caller's certificate, for a cluster that speaks TLS (the
    /// documented deployment does); `None` dials plaintext.
    pub tls: Option<Tls>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            retry_for: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// A tonic endpoint for one node (`host:port`, `http://host:port`...), over TLS when
    /// [`ConnectOptions::tls`] is set, with these options' connect timeout. For callers
    /// that manage their own channels, like load generators.
    ///
    /// ```
    /// let ep = tally_client::ConnectOptions::default().endpoint("127.0.0.1:27000").unwrap();
    /// assert_eq!(ep.uri().to_string(), "http://127.0.0.1:27000/");
    /// ```
    pub fn endpoint(&self, node: &str) -> Result<Endpoint, Error> {
        let uri = normalise(node)?;
        let dial = match &self.tls {
            Some(_) => uri.replacen("http://", "https://", 1),
            None => uri.clone(),
        };
        let mut ep = Endpoint::from_shared(dial)
            .map_err(|e| Error::Endpoint {
                endpoint: uri.clone(),
                problem: e.to_string(),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.client_config()).map_err(|e| Error::Tls {
                problem: format!("for {}: {e}", strip(&uri)),
            })?;
        }
        Ok(ep)
    }
}

/// The nodes of a cluster, one lazily opened channel each, and a guess of the leader.
/// Cheap to clone; clones share channels and the leader guess.
///
/// ```no_run
/// # async fn demo() -> Result<(), tally_client::Error> {
/// use tally_client::{Cluster, ConnectOptions};
/// use tally_client::proto::v1::{admin_client::AdminClient, ClusterStatusRequest};
///
/// let cluster = Cluster::new(["127.0.0.1:27000", "127.0.0.1:27001"], ConnectOptions::default())?;
/// let status = cluster
///     .call("cluster status", |ch| async move {
///         AdminClient::new(ch).cluster_status(ClusterStatusRequest {}).await
///     })
///     .await?;
/// println!("leader: node {}", status.leader_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: ConnectOptions,
    /// The longest pause between two sweeps of every node in [`Cluster::call`].
    max_pause: Duration,
    /// Shared with clones made by [`Cluster::with_options`]: one set of channels.
    nodes: Arc<Mutex<Nodes>>,
}

/// The default cap on the pause between sweeps: an election takes 0.3-0.6 s, and a pause
/// that grew past it would add itself to every failover the application sees.
const MAX_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Nodes {
    /// Normalised `http://host:port` URIs; grows when a leader is named that was not given.
    uris: Vec<String>,
    /// Opened on first use: a channel needs a running tokio runtime.
    channels: Vec<Option<Channel>>,
    /// Index into `uris` of the node believed to lead.
    leader: usize,
}

/// Turns `host:port`, `http://host:port` or `grpc://host:port` into the URI tonic dials.
///
/// ```
/// assert_eq!(tally_client::normalise("grpc://tally1:27000").unwrap(), "http://tally1:27000");
/// assert!(tally_client::normalise("tally1").is_err());
/// ```
pub fn normalise(endpoint: &str) -> Result<String, Error> {
    let e = endpoint.trim();
    let rest = e
        .strip_prefix("grpc://")
        .or_else(|| e.strip_prefix("http://"))
        .unwrap_or(e)
        .trim_end_matches('/');
    let bad = |problem: &str| Error::Endpoint {
        endpoint: endpoint.to_owned(),
        problem: problem.to_owned(),
    };
    if rest.is_empty() {
        return Err(bad("empty; expected HOST:PORT"));
    }
    if rest.contains("://") {
        return Err(bad(
            "unsupported scheme; expected HOST:PORT or grpc://HOST:PORT",
        ));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(bad("expected HOST:PORT with a numeric port")),
    }
    let uri = format!("http://{rest}");
    Endpoint::from_shared(uri.clone()).map_err(|e| bad(&e.to_string()))?;
    Ok(uri)
}

impl Cluster {
    /// A cluster reached through `endpoints` (any of its nodes; more is better). Opens no
    /// connection yet: the first call does.
    pub fn new<I, S>(endpoints: I, opts: ConnectOptions) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut uris = Vec::new();
        for e in endpoints {
            let u = normalise(e.as_ref())?;
            if !uris.contains(&u) {
                uris.push(u);
            }
        }
        if uris.is_empty() {
            return Err(Error::Endpoint {
                endpoint: String::new(),
                problem: "no endpoints given (set --endpoints or TALLY_ENDPOINTS)".into(),
            });
        }
        let channels = vec![None; uris.len()];
        Ok(Cluster {
            inner: Arc::new(Inner {
                opts,
                max_pause: MAX_PAUSE,
                nodes: Arc::new(Mutex::new(Nodes {
                    uris,
                    channels,
                    leader: 0,
                })),
            }),
        })
    }

    /// The same nodes, channels and leader guess, with other timeouts (e.g. a heartbeat
    /// that must give up before the next one is due).
    pub fn with_options(&self, opts: ConnectOptions) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                opts,
                max_pause: self.inner.max_pause,
                nodes: self.inner.nodes.clone(),
            }),
        }
    }

    /// The same, with the pause between sweeps of every node allowed to grow to
    /// `max_pause` (never below the default): for background calls, like heartbeats,
    /// that can afford to notice a new leader later and must not hammer a cluster that is
    /// down.
    pub(crate) fn with_max_pause(&self, max_pause: Duration) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                opts: self.inner.opts.clone(),
                max_pause: max_pause.max(MAX_PAUSE),
                nodes: self.inner.nodes.clone(),
            }),
        }
    }

    /// The options this handle uses.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.opts
    }

    /// The endpoints known, as `http://host:port` URIs (including leaders learnt since).
    pub fn endpoints(&self) -> Vec<String> {
        self.lock().uris.clone()
    }

    /// The node currently believed to lead.
    pub fn leader_hint(&self) -> String {
        let n = self.lock();
        n.uris[n.leader].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Nodes> {
        // A panic while holding this lock cannot leave `Nodes` half-updated in a way
        // that matters (every field is a hint), so a poisoned lock is used as is.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn channel(&self, i: usize) -> Result<(String, Channel), Error> {
        let mut n = self.lock();
        let uri = n.uris[i].clone();
        if let Some(ch) = &n.channels[i] {
            return Ok((uri, ch.clone()));
        }
        let ch = self.inner.opts.endpoint(&uri)?.connect_lazy();
        n.channels[i] = Some(ch.clone());
        Ok((uri, ch))
    }

    /// Points the leader guess at `addr`, learning it if it is new.
    fn follow(&self, addr: &str) -> bool {
        let Ok(uri) = normalise(addr) else {
            return false;
        };
        let mut n = self.lock();
        let i = match n.uris.iter().position(|u| *u == uri) {
            Some(i) => i,
            None => {
                n.uris.push(uri);
                n.channels.push(None);
                n.uris.len() - 1
            }
        };
        let moved = n.leader != i;
        n.leader = i;
        moved
    }

    fn rotate(&self, from: usize) {
        let mut n = self.lock();
        if n.leader == from {
            n.leader = (from + 1) % n.uris.len();
        }
    }

    /// Sends one call to the leader, following redirects and retrying unreachable nodes
    /// until [`ConnectOptions::retry_for`] has passed. `f` is called once per attempt and
    /// must send the same request each time (same request id), so a retry is harmless.
    /// `what` names the call in errors.
    pub async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut pause = Duration::from_millis(10);
        let mut tried_since_pause = 0usize;
        loop {
            let i = self.lock().leader;
            let (uri, ch) = self.channel(i)?;
            attempts += 1;
            let last = match tokio::time::timeout(self.inner.opts.request_timeout, f(ch)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) if unreachable(&status) => {
                    let leader = status
                        .metadata()
                        .get(LEADER_ADDR_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if let Some(addr) = leader {
                        if self.follow(&addr) {
                            tracing::debug!(from = %uri, to = %addr, "following the leader");
                            // A redirect is an answer, not a failure: go straight there.
                            // It neither counts towards the sweep nor starts a new one: a
                            // follower names its old leader until its election timeout
                            // passes, and if that leader is gone, redirect, refusal and
                            // rotation back to the follower would go round without
                            // ever pausing (thousands of calls a second).
                            if start.elapsed() < self.inner.opts.retry_for {
                                continue;
                            }
                        }
                    } else {
                        self.rotate(i);
                    }
                    status.message().to_owned()
                }
                Ok(Err(status)) => return Err(self.refused(what, &uri, &status)),
                Err(_) => {
                    self.rotate(i);
                    format!(
                        "no answer within {} ms",
                        self.inner.opts.request_timeout.as_millis()
                    )
                }
            };
            let elapsed = start.elapsed();
            if elapsed >= self.inner.opts.retry_for {
                return Err(Error::Unavailable {
                    what: what.to_owned(),
                    attempts,
                    elapsed_ms: elapsed.as_millis() as u64,
                    endpoint: strip(&uri),
                    last,
                });
            }
            // Pause once every node has been tried: an election takes a few hundred ms.
            tried_since_pause += 1;
            if tried_since_pause >= self.lock().uris.len() {
                tried_since_pause = 0;
                let left = self.inner.opts.retry_for.saturating_sub(elapsed);
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(self.inner.max_pause);
            }
        }
    }

    /// A refusal, or, when a plaintext call met a TLS listener (the node hung up on what
    /// it took for a bad handshake), a TLS error saying so.
    fn refused(&self, what: &str, uri: &str, status: &Status) -> Error {
        if self.inner.opts.tls.is_none()
            && status.code() == Code::Internal
            && status.message().contains("h2 protocol error")
        {
            return Error::Tls {
                problem: format!(
                    "{} did not answer plaintext gRPC ({}); the cluster probably speaks TLS: give its CA (--ca / TALLY_CA)",
                    strip(uri),
                    status.message()
                ),
            };
        }
        Error::Refused {
            what: what.to_owned(),
            endpoint: strip(uri),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// One call to one node, no following (e.g. asking every node for its own view).
    pub async fn call_node<T, F, Fut>(&self, endpoint: &str, what: &str, f: F) -> Result<T, Error>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let uri = normalise(endpoint)?;
        let i = {
            let mut n = self.lock();
            match n.uris.iter().position(|u| *u == uri) {
                Some(i) => i,
                None => {
                    n.uris.push(uri.clone());
                    n.channels.push(None);
                    n.uris.len() - 1
                }
            }
        };
        let (uri, ch) = self.channel(i)?;
        match tokio::time::timeout(self.inner.opts.request_timeout, f(ch)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(s)) if unreachable(&s) => Err(Error::Unavailable {
                what: what.to_owned(),
                attempts: 1,
                elapsed_ms: 0,
                endpoint: strip(&uri),
                last: s.message().to_owned(),
            }),
            Ok(Err(s)) => Err(self.refused(what, &uri, &s)),
            Err(_) => Err(Error::Unavailable {
                what: what.to_owned(),
                attempts: 1,
                elapsed_ms: self.inner.opts.request_timeout.as_millis() as u64,
                endpoint: strip(&uri),
                last: "no answer".into(),
            }),
        }
    }
}

/// The node did not answer, as opposed to answering with a refusal: `UNAVAILABLE` from
/// it (not the leader, no leader yet), or a failure of the connection itself, which
/// tonic reports as `UNKNOWN` or `CANCELLED` with the transport error as its source (a
/// status a server sent has no source). A broken connection may have carried a write
/// that was applied; retrying it is safe because its request id is the same.
fn unreachable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Cancelled => std::error::Error::source(s).is_some(),
        _ => false,
    }
}

/// `http://h:p` → `h:p`, for messages people read.
fn strip(uri: &str) -> String {
    uri.trim_start_matches("http://").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_or_refused_by_name() {
        for (given, want) in [
            ("127.0.0.1:27000", "http://127.0.0.1:27000"),
            ("grpc://h1.example.com:27000", "http://h1.example.com:27000"),
            (" http://[::1]:9/ ", "http://[::1]:9"),
        ] {
            assert_eq!(normalise(given).unwrap(), want, "{given}");
        }
        for bad in ["", "h1", "h1:port", ":27000", "https://h:1", "h:99999"] {
            let e = normalise(bad).unwrap_err().to_string();
            assert!(e.contains("bad endpoint"), "{bad}: {e}");
        }
        assert!(
            Cluster::new(Vec::<String>::new(), ConnectOptions::default())
                .unwrap_err()
                .to_string()
                .contains("TALLY_ENDPOINTS")
        );
    }

    #[tokio::test]
    async fn gives_up_on_a_dead_cluster_naming_the_node() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = ConnectOptions {
            retry_for: Duration::from_millis(300),
            ..Default::default()
        };
        let c = Cluster::new([format!("127.0.0.1:{port}")], opts).unwrap();
        let e = c
            .call("status", |ch| async move {
                tally_proto::v1::admin_client::AdminClient::new(ch)
                    .cluster_status(tally_proto::v1::ClusterStatusRequest {})
                    .await
            })
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        let text = e.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.starts_with("status: no leader answered"), "{text}");
    }

    /// A follower that still names a leader that is gone, as every follower does until
    /// its election timeout passes after the leader stopped.
    #[derive(Debug)]
    struct StaleFollower {
        calls: Arc<std::sync::atomic::AtomicU64>,
        /// Where nothing listens any more.
        gone: String,
    }

    #[tonic::async_trait]
    impl tally_proto::v1::licensing_server::Licensing for StaleFollower {
        async fn heartbeat(
            &self,
            _: tonic::Request<tally_proto::v1::HeartbeatRequest>,
        ) -> Result<Response<tally_proto::v1::HeartbeatResponse>, Status> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut s = Status::unavailable(format!(
                "not the leader; the leader is node 1 at {}",
                self.gone
            ));
            s.metadata_mut()
                .insert(LEADER_ADDR_METADATA, self.gone.parse().unwrap());
            Err(s)
        }

        async fn open_session(
            &self,
            _: tonic::Request<tally_proto::v1::OpenSessionRequest>,
        ) -> Result<Response<tally_proto::v1::OpenSessionResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn checkout(
            &self,
            _: tonic::Request<tally_proto::v1::CheckoutRequest>,
        ) -> Result<Response<tally_proto::v1::CheckoutResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn checkin(
            &self,
            _: tonic::Request<tally_proto::v1::CheckinRequest>,
        ) -> Result<Response<tally_proto::v1::CheckinResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn close_session(
            &self,
            _: tonic::Request<tally_proto::v1::CloseSessionRequest>,
        ) -> Result<Response<tally_proto::v1::CloseSessionResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    #[tokio::test]
    async fn a_redirect_to_a_leader_that_is_gone_does_not_spin() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(tally_proto::v1::licensing_server::LicensingServer::new(
                    StaleFollower {
                        calls: calls.clone(),
                        gone: gone.clone(),
                    },
                ))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let budget = Duration::from_millis(500);
        let c = Cluster::new(
            [addr.as_str()],
            ConnectOptions {
                retry_for: budget,
                ..Default::default()
            },
        )
        .unwrap();
        let e = c
            .call("heartbeat", |ch| async move {
                tally_proto::v1::licensing_client::LicensingClient::new(ch)
                    .heartbeat(tally_proto::v1::HeartbeatRequest::default())
                    .await
            })
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        server.abort();
        // Follower, then the node it names, then a pause that grows to 100 ms: a score
        // of calls in half a second. Without the pauses it was thousands.
        let n = calls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=40).contains(&n),
            "{n} calls to the follower in {budget:?}"
        );
    }
}
