//! A session: one per process, opened on connect, kept alive by a background heartbeat,
//! closed when the last handle to it ([`Client`] or [`Seat`]) is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tally_proto::v1 as pb;
use tally_proto::v1::licensing_client::LicensingClient;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{CheckoutOptions, ClientOptions, Cluster, ConnectOptions, Error, Seat, Wait};

/// Longest one queued checkout attempt may take: the server's long poll plus margin.
const LONG_POLL_BOUND: Duration = Duration::from_secs(30);

/// How the session stands, as the heartbeat last found it.
///
/// ```no_run
/// # async fn demo(client: tally_client::Client) {
/// use tally_client::SessionState;
/// let mut state = client.watch();
/// while state.changed().await.is_ok() {
///     match &*state.borrow_and_update() {
///         SessionState::Healthy { .. } => {}
///         SessionState::InDanger { error, .. } => eprintln!("license server unreachable: {error}"),
///         SessionState::Lost { reason } => {
///             eprintln!("license lost: {reason}; save your work");
///             break;
///         }
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// The last heartbeat was acknowledged; the cluster keeps the session at least until
    /// `deadline_ms` (Unix milliseconds, the leader's clock).
    Healthy { deadline_ms: u64 },
    /// Heartbeats are failing (no leader, unreachable nodes). Seats are still held, until
    /// about `deadline_ms`, if a heartbeat gets through before then.
    InDanger { deadline_ms: u64, error: String },
    /// The session is gone and with it every seat; final.
    Lost { reason: String },
}

/// What a client's handles share: the cluster, the session's credentials, the request
/// counter and the state the heartbeat publishes.
#[derive(Debug)]
pub(crate) struct Core {
    pub cluster: Cluster,
    pub client_id: [u8; 16],
    /// The next request's sequence number; a retry reuses its request's number.
    seq: AtomicU64,
    pub auth: pb::SessionAuth,
    pub ttl: Duration,
    pub state: watch::Sender<SessionState>,
}

impl Core {
    pub fn request_id(&self) -> pb::RequestId {
        pb::RequestId {
            client_id: self.client_id.to_vec(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn check_alive(&self) -> Result<(), Error> {
        match &*self.state.borrow() {
            SessionState::Lost { reason } => Err(Error::SessionLost {
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Lost is final: the first reason stays.
    pub fn lose(&self, reason: String) {
        self.set(SessionState::Lost { reason });
    }

    /// Publishes a new state unless the session is already lost. A heartbeat answer
    /// arriving after `abandon` or `close` must not revive it: a revived state would make
    /// the last handle's drop close a session the application walked away from.
    pub fn set(&self, new: SessionState) {
        self.state.send_if_modified(|st| {
            if matches!(st, SessionState::Lost { .. }) || *st == new {
                return false;
            }
            *st = new;
            true
        });
    }
}

impl Drop for Core {
    /// The last handle is gone: close the session now rather than letting it time out,
    /// if a runtime is still there to send it (at process exit it is not, and the
    /// session simply expires after its TTL).
    fn drop(&mut self) {
        if matches!(*self.state.borrow(), SessionState::Lost { .. }) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let req = pb::CloseSessionRequest {
            request: Some(self.request_id()),
            auth: Some(self.auth.clone()),
        };
        let cluster = self.cluster.with_options(ConnectOptions {
            retry_for: Duration::from_secs(2),
            ..self.cluster.options().clone()
        });
        rt.spawn(async move {
            let _ = cluster
                .call("close session", |ch| {
                    let req = req.clone();
                    async move { LicensingClient::new(ch).close_session(req).await }
                })
                .await;
        });
    }
}

/// A connection to a Tally cluster with one open session: what an application holds for
/// as long as it may want seats.
///
/// ```no_run
/// # async fn demo() -> Result<(), tally_client::Error> {
/// use tally_client::{CheckoutOptions, Client, ClientOptions};
///
/// let client = Client::connect(["tally1:27000", "tally2:27000", "tally3:27000"],
///                              ClientOptions::default()).await?;
/// let seat = client.checkout("solid_modeler", CheckoutOptions::default()).await?;
/// println!("working under lease {} (token {})", seat.lease_id(), seat.fencing_token());
/// seat.checkin().await?;
/// client.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    core: Arc<Core>,
}

impl Client {
    /// Opens a session on the cluster reached through `endpoints` and starts its
    /// heartbeat (every TTL/3, in the background, on the current tokio runtime).
    pub async fn connect<I, S>(endpoints: I, opts: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cluster = Cluster::new(endpoints, opts.connect.clone())?;
        let mut client_id = [0u8; 16];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut client_id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| Error::SessionLost {
                reason: format!("no system randomness for the session secret: {e}"),
            })?;
        let req = pb::OpenSessionRequest {
            request: Some(pb::RequestId {
                client_id: client_id.to_vec(),
                seq: 1,
            }),
            user: opts.user,
            host: opts.host,
            display: opts.display,
            pid: opts.pid,
            ttl_ms: u64::try_from(opts.ttl.as_millis()).unwrap_or(u64::MAX),
            client_info: opts.client_info,
            secret: secret.to_vec(),
        };
        let sent = Instant::now();
        let r = cluster
            .call("open session", |ch| {
                let req = req.clone();
                async move { LicensingClient::new(ch).open_session(req).await }
            })
            .await?;
        let ttl = Duration::from_millis(r.ttl_ms.max(1));
        let (state, _) = watch::channel(SessionState::Healthy {
            deadline_ms: r.server_time_ms.saturating_add(r.ttl_ms),
        });
        let core = Arc::new(Core {
            cluster,
            client_id,
            seq: AtomicU64::new(2),
            auth: pb::SessionAuth {
                session_id: r.session_id,
                secret: secret.to_vec(),
            },
            ttl,
            state,
        });
        tokio::spawn(heartbeat(Arc::downgrade(&core), sent + ttl));
        Ok(Client { core })
    }

    /// The session's id on the cluster (what `tallyctl leases` shows).
    pub fn session_id(&self) -> u64 {
        self.core.auth.session_id
    }

    /// The TTL the cluster granted.
    pub fn ttl(&self) -> Duration {
        self.core.ttl
    }

    /// The session's state now.
    pub fn state(&self) -> SessionState {
        self.core.state.borrow().clone()
    }

    /// A receiver that wakes on every change of the session's state, to `select!` on
    /// alongside the application's work.
    pub fn watch(&self) -> watch::Receiver<SessionState> {
        self.core.state.subscribe()
    }

    /// Takes seats of `feature`, all or none. A retry after a lost connection or a leader
    /// change reuses the request's id, so it never takes a second seat.
    pub async fn checkout(&self, feature: &str, opts: CheckoutOptions) -> Result<Seat, Error> {
        self.core.check_alive()?;
        let (wait, wait_timeout_ms) = match opts.wait {
            Wait::No => (false, 0),
            // Zero would mean "forever" on the wire; a zero wait is one millisecond.
            Wait::For(d) => (
                true,
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            ),
            Wait::Forever => (true, 0),
        };
        let req = pb::CheckoutRequest {
            request: Some(self.core.request_id()),
            auth: Some(self.core.auth.clone()),
            feature: feature.to_owned(),
            version: opts.version,
            count: opts.count,
            wait,
            wait_timeout_ms,
        };
        // A queued call is answered "still queued" after a server-side long poll (20 s);
        // each attempt must be allowed to last that long.
        let cluster = if wait {
            self.core.cluster.with_options(ConnectOptions {
                request_timeout: LONG_POLL_BOUND,
                ..self.core.cluster.options().clone()
            })
        } else {
            self.core.cluster.clone()
        };
        let r = loop {
            self.core.check_alive()?;
            let r = cluster
                .call("checkout", |ch| {
                    let req = req.clone();
                    async move { LicensingClient::new(ch).checkout(req).await }
                })
                .await?;
            match r.result {
                // Still waiting: ask again with the same request id, which finds the
                // same place (or its answer) on whichever node leads now.
                Some(pb::checkout_response::Result::Queued(q)) => {
                    tracing::debug!(feature, position = q.position, "queued for a seat");
                }
                other => break other,
            }
        };
        match r {
            Some(pb::checkout_response::Result::Granted(g)) => Ok(Seat::new(self.core.clone(), g)),
            Some(pb::checkout_response::Result::Denied(d)) => {
                let reason =
                    pb::DenialReason::try_from(d.reason).unwrap_or(pb::DenialReason::Unspecified);
                if matches!(
                    reason,
                    pb::DenialReason::UnknownSession | pb::DenialReason::BadSecret
                ) {
                    self.core.lose(d.message.clone());
                }
                Err(Error::Denied {
                    feature: feature.to_owned(),
                    reason,
                    message: d.message,
                    in_use: d.in_use,
                    available: d.available,
                })
            }
            Some(pb::checkout_response::Result::Queued(_)) | None => Err(Error::Refused {
                what: "checkout".into(),
                endpoint: self.core.cluster.leader_hint(),
                code: tonic::Code::Internal,
                message: "the cluster answered neither a grant nor a denial".into(),
            }),
        }
    }

    /// Stops heartbeating and walks away without closing the session, as a crashed
    /// process would: the cluster expires the session after its TTL and its seats come
    /// back after their linger. Seats of an abandoned session are not checked in when
    /// dropped. For tests of crash recovery, and for a process about to `exec`.
    pub fn abandon(self) {
        self.core.lose("abandoned by the application".into());
    }

    /// Closes the session: every seat it holds is released (lingering where the license
    /// says so) and the heartbeat stops. Returns how many leases were released.
    pub async fn close(self) -> Result<u32, Error> {
        self.core.check_alive()?;
        let req = pb::CloseSessionRequest {
            request: Some(self.core.request_id()),
            auth: Some(self.core.auth.clone()),
        };
        let r = self
            .core
            .cluster
            .call("close session", |ch| {
                let req = req.clone();
                async move { LicensingClient::new(ch).close_session(req).await }
            })
            .await?;
        self.core.lose("closed by the application".into());
        Ok(r.released)
    }
}

/// Renews the session every TTL/3 while any handle to it lives. A failed round makes the
/// session "in danger"; no acknowledged heartbeat for a whole TTL, or the cluster saying
/// it does not know the session, makes it lost.
async fn heartbeat(core: Weak<Core>, mut deadline: Instant) {
    let (ttl, cluster) = match core.upgrade() {
        Some(c) => (c.ttl, c.cluster.clone()),
        None => return,
    };
    let every = ttl / 3;
    // A round gives up before the next is due, so rounds never pile up.
    let cluster = cluster.with_options(ConnectOptions {
        retry_for: every,
        request_timeout: every.min(cluster.options().request_timeout),
        ..cluster.options().clone()
    });
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else { return };
        if matches!(*core.state.borrow(), SessionState::Lost { .. }) {
            return;
        }
        let req = pb::HeartbeatRequest {
            sessions: vec![core.auth.clone()],
        };
        let sent = Instant::now();
        let r = cluster
            .call("heartbeat", |ch| {
                let req = req.clone();
                async move { LicensingClient::new(ch).heartbeat(req).await }
            })
            .await;
        let status = r.map(|r| r.sessions.into_iter().next());
        match status {
            Ok(Some(s)) if s.state == pb::SessionState::Alive as i32 => {
                // Measured from the send: the cluster renewed it no earlier than that.
                deadline = sent + ttl;
                core.set(SessionState::Healthy {
                    deadline_ms: s.deadline_ms,
                });
            }
            Ok(Some(s)) => {
                let why = match pb::SessionState::try_from(s.state) {
                    Ok(pb::SessionState::BadSecret) => "the cluster refused the session's secret",
                    Ok(pb::SessionState::Expired) => {
                        "the session expired: no heartbeat reached the cluster within its TTL"
                    }
                    _ => "the cluster no longer knows this session: it expired (no heartbeat within its TTL) or was closed",
                };
                core.lose(why.into());
                return;
            }
            Ok(None) => core.lose("the cluster answered a heartbeat without the session".into()),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                let deadline_ms = match &*core.state.borrow() {
                    SessionState::Healthy { deadline_ms }
                    | SessionState::InDanger { deadline_ms, .. } => *deadline_ms,
                    SessionState::Lost { .. } => 0,
                };
                tracing::warn!("heartbeat failed: {e}");
                core.set(SessionState::InDanger {
                    deadline_ms,
                    error: e.to_string(),
                });
            }
            Err(e) => {
                core.lose(format!(
                    "no heartbeat acknowledged within the TTL ({} ms); last error: {e}",
                    ttl.as_millis()
                ));
                return;
            }
        }
    }
}
