//! A session: one per process, opened on connect, kept alive by a background heartbeat,
//! closed when the last handle to it ([`Client`] or [`Seat`]) is dropped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tally_proto::v1 as pb;
use tally_proto::v1::licensing_client::LicensingClient;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{CheckoutOptions, ClientOptions, Cluster, ConnectOptions, Error, Seat, Wait};

/// Longest one queued checkout attempt may take: the server's long poll plus margin.
const LONG_POLL_BOUND: Duration = Duration::from_secs(30);

/// A lease the cluster took back from this session: a license file was unloaded or
/// reloaded with fewer seats, or a license's term ended (expiry plus grace). The seat is
/// gone at once, without linger. [`Seat::revoked`] tells the seat's holder, and
/// [`Seat::checkin`] of it is refused with [`Error::Revoked`] without asking the cluster.
///
/// ```no_run
/// # async fn demo(client: tally_client::Client) {
/// let mut state = client.watch();
/// // Wakes on the first revocation (or right away if one is already known).
/// if state.wait_for(|s| !s.revoked().is_empty()).await.is_ok() {
///     for r in client.state().revoked() {
///         eprintln!("lease {} of {} taken back: {}", r.lease_id, r.feature, r.message);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The lease taken back ([`Seat::lease_id`]).
    pub lease_id: u64,
    /// Its feature.
    pub feature: String,
    /// Why, for programs to match on; `message` says it for people.
    pub cause: pb::RevocationCause,
    /// One sentence naming the cause (which license file, what term ended).
    pub message: String,
    /// When the cluster revoked it (Unix milliseconds, the leader's clock).
    pub at_ms: u64,
}

impl From<pb::Revocation> for Revoked {
    fn from(r: pb::Revocation) -> Self {
        Revoked {
            lease_id: r.lease_id,
            feature: r.feature,
            cause: pb::RevocationCause::try_from(r.cause)
                .unwrap_or(pb::RevocationCause::Unspecified),
            message: r.message,
            at_ms: r.at_ms,
        }
    }
}

/// How the session stands, as the heartbeat last found it.
///
/// The session is lost only on the cluster's word (a heartbeat answered that the
/// session is unknown, expired or has another secret; a checkout was denied for an
/// unknown session) or when the application closed or abandoned it. Heartbeats that do
/// not get through, however long, only put it in danger: the heartbeat keeps trying every
/// node, every TTL/3, for as long as it takes. That is what keeps the seats across a
/// full-cluster outage: the cluster restarts every session's TTL when it returns, so a
/// client whose heartbeat gets through within its TTL of the return keeps them.
///
/// ```no_run
/// # async fn demo(client: tally_client::Client) {
/// use tally_client::SessionState;
/// let mut state = client.watch();
/// let mut reported = 0;
/// while state.changed().await.is_ok() {
///     // A copy: the watch's value is locked while borrowed, and the heartbeat waits.
///     let now = state.borrow_and_update().clone();
///     // Revocations are cumulative, once each: report the new ones.
///     for r in now.revoked().iter().skip(reported) {
///         eprintln!("license revoked: {}", r.message);
///     }
///     reported = reported.max(now.revoked().len());
///     match now {
///         SessionState::Healthy { .. } => {}
///         SessionState::InDanger { error, .. } => eprintln!("license servers unreachable: {error}"),
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
    /// `deadline_ms` (Unix milliseconds, the leader's clock). `revoked`: every lease the
    /// cluster has taken back from this session so far, once each, oldest first.
    Healthy {
        deadline_ms: u64,
        revoked: Vec<Revoked>,
    },
    /// The last heartbeat round failed (no leader, nodes unreachable or down), with
    /// `error`; the heartbeat goes on trying. `deadline_ms` is the deadline last
    /// acknowledged: seats are held at least until then. Past it, they are still held if
    /// the whole cluster was down (it restarts every TTL at its return) and a heartbeat
    /// gets through within the TTL of the return; the session becomes `Lost` only when
    /// the cluster says it is gone. `revoked` as in `Healthy`.
    InDanger {
        deadline_ms: u64,
        error: String,
        revoked: Vec<Revoked>,
    },
    /// The session is gone and with it every seat; final.
    Lost { reason: String },
}

impl SessionState {
    /// The leases revoked so far (none once lost: every seat is gone then anyway).
    ///
    /// ```
    /// use tally_client::SessionState;
    /// let s = SessionState::Lost { reason: "closed by the application".into() };
    /// assert!(s.revoked().is_empty());
    /// ```
    pub fn revoked(&self) -> &[Revoked] {
        match self {
            SessionState::Healthy { revoked, .. } | SessionState::InDanger { revoked, .. } => {
                revoked
            }
            SessionState::Lost { .. } => &[],
        }
    }
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
    /// Every lease revoked so far, once each, oldest first: kept here as well as in the
    /// state so that a seat still knows after the session is lost.
    revoked: Mutex<Vec<Revoked>>,
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

    fn revoked_list(&self) -> std::sync::MutexGuard<'_, Vec<Revoked>> {
        // Every update of the list is a single push; a panic elsewhere while holding the
        // lock cannot leave it half-done, so a poisoned lock is used as is.
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every lease revoked so far.
    pub fn revoked(&self) -> Vec<Revoked> {
        self.revoked_list().clone()
    }

    /// The revocation of `lease`, if the cluster reported one.
    pub fn revocation_of(&self, lease: u64) -> Option<Revoked> {
        self.revoked_list()
            .iter()
            .find(|r| r.lease_id == lease)
            .cloned()
    }

    /// Adds the revocations not known yet (every heartbeat answer repeats the cluster's
    /// latest few) and returns them all.
    fn note_revoked(&self, reported: Vec<pb::Revocation>) -> Vec<Revoked> {
        let mut all = self.revoked_list();
        for r in reported {
            if !all.iter().any(|k| k.lease_id == r.lease_id) {
                let r = Revoked::from(r);
                tracing::warn!(lease = r.lease_id, feature = %r.feature, "{}", r.message);
                all.push(r);
            }
        }
        all.clone()
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
        let r = cluster
            .call("open session", |ch| {
                let req = req.clone();
                async move { LicensingClient::new(ch).open_session(req).await }
            })
            .await?;
        let ttl = Duration::from_millis(r.ttl_ms.max(1));
        let deadline_ms = r.server_time_ms.saturating_add(r.ttl_ms);
        let (state, _) = watch::channel(SessionState::Healthy {
            deadline_ms,
            revoked: Vec::new(),
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
            revoked: Mutex::default(),
        });
        spawn_heartbeat(&core, deadline_ms);
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
        self.checkout_reporting(feature, opts, |_| {}).await
    }

    /// [`checkout`](Self::checkout), calling `queued` with the request's 1-based place in
    /// the feature's queue each time the cluster reports it while the request waits
    /// (every 20 s, when a long poll ends without an answer), so a waiting application
    /// can say where it stands.
    ///
    /// ```no_run
    /// # async fn run(client: tally_client::Client) -> Result<(), tally_client::Error> {
    /// use tally_client::{CheckoutOptions, Wait};
    /// let opts = CheckoutOptions { wait: Wait::Forever, ..Default::default() };
    /// let seat = client
    ///     .checkout_reporting("solver", opts, |place| eprintln!("waiting: place {place}"))
    ///     .await?;
    /// # drop(seat);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn checkout_reporting(
        &self,
        feature: &str,
        opts: CheckoutOptions,
        mut queued: impl FnMut(u32) + Send,
    ) -> Result<Seat, Error> {
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
                    queued(q.position);
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

/// Starts the session's heartbeat on the current runtime: one round every TTL/3, while
/// any handle to the session lives and until it is lost.
fn spawn_heartbeat(core: &Arc<Core>, deadline_ms: u64) {
    // The cluster grants at least a second; a zero period would make no clock tick.
    let every = (core.ttl / 3).max(Duration::from_millis(1));
    let opts = core.cluster.options();
    // A round looks for a leader for half its period, each attempt at most half a
    // period, so that it ends with the call's own error (naming the node and what
    // failed) before the next round is due; `heartbeat` cuts off a round that overruns
    // anyway. Between sweeps of every node it pauses up to a tenth of the period. So a
    // client whose cluster is down tries each node a few times a period, however long
    // the outage, and rests the other half; while a failover during a round still
    // leaves it time to reach the new leader.
    let cluster = core
        .cluster
        .with_options(ConnectOptions {
            retry_for: every / 2,
            request_timeout: (every / 2).min(opts.request_timeout),
            ..opts.clone()
        })
        .with_max_pause(every / 10);
    let send = move |req: pb::HeartbeatRequest| {
        let cluster = cluster.clone();
        async move {
            cluster
                .call("heartbeat", |ch| {
                    let req = req.clone();
                    async move { LicensingClient::new(ch).heartbeat(req).await }
                })
                .await
        }
    };
    tokio::spawn(heartbeat(Arc::downgrade(core), every, deadline_ms, send));
}

/// What one heartbeat round came to.
#[derive(Debug)]
enum Round {
    /// Renewed until `deadline_ms`; `revoked` as the cluster reported it.
    Alive {
        deadline_ms: u64,
        revoked: Vec<pb::Revocation>,
    },
    /// The cluster says the session is gone: the session is lost, for this reason.
    Gone(String),
    /// No answer about the session (no leader, nodes down, a refusal, no answer in
    /// time): the session is in danger, and the next round tries again.
    Failed(String),
}

/// Reads one round's answer. Only an answer naming the session's state can end it.
fn judge(
    answer: Result<Result<pb::HeartbeatResponse, Error>, tokio::time::error::Elapsed>,
    session: u64,
    every: Duration,
) -> Round {
    let r = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Round::Failed(e.to_string()),
        Err(_) => {
            return Round::Failed(format!(
                "heartbeat: no leader answered within the round's {} ms",
                every.as_millis()
            ))
        }
    };
    let Some(s) = r.sessions.into_iter().find(|s| s.session_id == session) else {
        return Round::Failed("heartbeat: the cluster's answer left this session out".into());
    };
    let gone = |why: &str| Round::Gone(why.to_owned());
    match pb::SessionState::try_from(s.state) {
        Ok(pb::SessionState::Alive) => Round::Alive {
            deadline_ms: s.deadline_ms,
            revoked: s.revoked,
        },
        Ok(pb::SessionState::Expired) => {
            gone("the session expired: no heartbeat reached the cluster within its TTL")
        }
        Ok(pb::SessionState::Unknown) => gone(
            "the cluster no longer knows this session: it expired (no heartbeat within its TTL) or was closed",
        ),
        Ok(pb::SessionState::BadSecret) => gone("the cluster refused the session's secret"),
        Ok(pb::SessionState::Unspecified) | Err(_) => Round::Failed(format!(
            "heartbeat: the cluster answered with an unknown session state ({})",
            s.state
        )),
    }
}

/// Renews the session every `every` (TTL/3) while any handle to it lives. A round that
/// gets no answer about the session makes it "in danger", however long that lasts; only
/// the cluster's word (unknown, expired, bad secret) makes it lost. Each round is cut off
/// when the next is due, so a round that hangs never delays the next one, and rounds
/// never pile up. `send` makes one round's call (following the leader, retrying across
/// nodes); `deadline_ms` is the deadline the session was opened with.
async fn heartbeat<F, Fut>(core: Weak<Core>, every: Duration, mut deadline_ms: u64, mut send: F)
where
    F: FnMut(pb::HeartbeatRequest) -> Fut,
    Fut: Future<Output = Result<pb::HeartbeatResponse, Error>>,
{
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        // No strong reference across the round: the last handle may go meanwhile, and
        // then the session is closed by its drop, not kept open by its heartbeat.
        let (req, session) = match core.upgrade() {
            Some(c) if !matches!(*c.state.borrow(), SessionState::Lost { .. }) => (
                pb::HeartbeatRequest {
                    sessions: vec![c.auth.clone()],
                },
                c.auth.session_id,
            ),
            _ => return,
        };
        let answer = tokio::time::timeout_at(due + every, send(req)).await;
        let Some(core) = core.upgrade() else { return };
        let was_healthy = matches!(*core.state.borrow(), SessionState::Healthy { .. });
        match judge(answer, session, every) {
            Round::Alive {
                deadline_ms: d,
                revoked,
            } => {
                if !was_healthy {
                    tracing::info!(session, "heartbeat acknowledged again");
                }
                deadline_ms = d;
                let revoked = core.note_revoked(revoked);
                core.set(SessionState::Healthy {
                    deadline_ms,
                    revoked,
                });
            }
            Round::Gone(reason) => {
                tracing::warn!(session, "session lost: {reason}");
                core.lose(reason);
                return;
            }
            Round::Failed(error) => {
                if was_healthy {
                    tracing::warn!(
                        session,
                        "heartbeat failed, retrying every {every:?}: {error}"
                    );
                } else {
                    tracing::debug!(session, "heartbeat failed again: {error}");
                }
                core.set(SessionState::InDanger {
                    deadline_ms,
                    error,
                    revoked: core.revoked(),
                });
            }
        }
    }
}

/// The heartbeat's state machine against a scripted cluster, in virtual time.
#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    /// A session as `connect` makes it, with a TTL of three heartbeat periods, on a
    /// cluster nobody dials (the heartbeat under test gets its answers from a script).
    fn core() -> Arc<Core> {
        let (state, _) = watch::channel(SessionState::Healthy {
            deadline_ms: 5_000,
            revoked: Vec::new(),
        });
        Arc::new(Core {
            cluster: Cluster::new(["127.0.0.1:9"], ConnectOptions::default()).unwrap(),
            client_id: [7; 16],
            seq: AtomicU64::new(2),
            auth: pb::SessionAuth {
                session_id: 42,
                secret: vec![1; 32],
            },
            ttl: EVERY * 3,
            state,
            revoked: Mutex::default(),
        })
    }

    /// What the scripted cluster does with one round.
    enum Reply {
        Alive(u64, Vec<pb::Revocation>),
        State(pb::SessionState),
        /// An answer about some other session only.
        Missing,
        /// Every node down: what `Cluster::call` returns once its budget is spent.
        Down,
        Refused,
        /// No answer at all, ever.
        Hang,
    }

    /// Runs the heartbeat with one scripted reply per round, then `Down` for ever.
    /// Returns when each round was sent.
    fn run(core: &Arc<Core>, replies: Vec<Reply>) -> Arc<Mutex<Vec<Instant>>> {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let replies = Mutex::new(VecDeque::from(replies));
        let log = sent.clone();
        let send = move |req: pb::HeartbeatRequest| {
            log.lock().unwrap().push(Instant::now());
            let next = replies.lock().unwrap().pop_front().unwrap_or(Reply::Down);
            let id = req.sessions[0].session_id;
            async move {
                let status = |state: pb::SessionState, deadline_ms, revoked| {
                    Ok(pb::HeartbeatResponse {
                        sessions: vec![pb::SessionStatus {
                            session_id: id,
                            state: state as i32,
                            deadline_ms,
                            ttl_ms: 3_000,
                            revoked,
                        }],
                    })
                };
                match next {
                    Reply::Alive(deadline_ms, revoked) => {
                        status(pb::SessionState::Alive, deadline_ms, revoked)
                    }
                    Reply::State(s) => status(s, 0, Vec::new()),
                    Reply::Missing => Ok(pb::HeartbeatResponse {
                        sessions: vec![pb::SessionStatus {
                            session_id: id + 1,
                            state: pb::SessionState::Alive as i32,
                            ..Default::default()
                        }],
                    }),
                    Reply::Down => Err(Error::Unavailable {
                        what: "heartbeat".into(),
                        attempts: 30,
                        elapsed_ms: 1_000,
                        endpoint: "tally1:27000".into(),
                        last: "connection refused".into(),
                    }),
                    Reply::Refused => Err(Error::Refused {
                        what: "heartbeat".into(),
                        endpoint: "tally1:27000".into(),
                        code: tonic::Code::ResourceExhausted,
                        message: "rate limit".into(),
                    }),
                    Reply::Hang => std::future::pending().await,
                }
            }
        };
        tokio::spawn(heartbeat(Arc::downgrade(core), EVERY, 5_000, send));
        sent
    }

    /// Every state published, in order.
    fn record(core: &Core) -> Arc<Mutex<Vec<SessionState>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut rx, out) = (core.state.subscribe(), seen.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                out.lock().unwrap().push(rx.borrow_and_update().clone());
            }
        });
        seen
    }

    /// Sleeps until `at` after `t0` (virtual time: returns at once, the clock jumps).
    async fn at(t0: Instant, ms: u64) {
        tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
    }

    fn rounds_since(t0: Instant, sent: &Mutex<Vec<Instant>>) -> Vec<u128> {
        sent.lock()
            .unwrap()
            .iter()
            .map(|t| (*t - t0).as_millis())
            .collect()
    }

    fn revocation(lease_id: u64) -> pb::Revocation {
        pb::Revocation {
            lease_id,
            feature: "cad".into(),
            cause: pb::RevocationCause::LicenseChanged as i32,
            message: format!("seat of \"cad\" revoked ({lease_id})"),
            at_ms: 1_000 + lease_id,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn danger_outlasts_the_ttl_until_the_cluster_answers() {
        let core = core();
        let seen = record(&core);
        let t0 = Instant::now();
        // One acknowledged round, then 30 s (ten TTLs) of a cluster that is down, then
        // the cluster is back and acknowledges again.
        let mut script = vec![Reply::Alive(9_000, Vec::new())];
        script.extend((0..30).map(|_| Reply::Down));
        script.push(Reply::Alive(60_000, Vec::new()));
        let sent = run(&core, script);

        at(t0, 1_500).await;
        assert_eq!(
            *core.state.borrow(),
            SessionState::Healthy {
                deadline_ms: 9_000,
                revoked: Vec::new()
            }
        );
        at(t0, 31_500).await;
        match &*core.state.borrow() {
            SessionState::InDanger {
                deadline_ms, error, ..
            } => {
                assert_eq!(*deadline_ms, 9_000, "the deadline last acknowledged");
                assert!(error.contains("connection refused"), "{error}");
            }
            other => panic!("expected danger ten TTLs into the outage, got {other:?}"),
        }
        at(t0, 32_500).await;
        assert_eq!(
            *core.state.borrow(),
            SessionState::Healthy {
                deadline_ms: 60_000,
                revoked: Vec::new()
            }
        );
        // One round a period, on the period, failed or not: no hammering, no gaps.
        let want: Vec<u128> = (1..=32).map(|i| i * 1_000).collect();
        assert_eq!(rounds_since(t0, &sent), want);
        let seen = seen.lock().unwrap();
        assert!(
            !seen.iter().any(|s| matches!(s, SessionState::Lost { .. })),
            "{seen:?}"
        );
        assert!(seen
            .iter()
            .any(|s| matches!(s, SessionState::InDanger { .. })));
        core.lose("test over".into());
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_hangs_does_not_delay_the_next() {
        let core = core();
        let t0 = Instant::now();
        let sent = run(
            &core,
            vec![Reply::Hang, Reply::Hang, Reply::Alive(9_000, Vec::new())],
        );
        at(t0, 2_500).await;
        match &*core.state.borrow() {
            SessionState::InDanger { error, .. } => {
                assert!(error.contains("within the round's 1000 ms"), "{error}")
            }
            other => panic!("expected danger, got {other:?}"),
        }
        at(t0, 3_500).await;
        assert!(matches!(
            *core.state.borrow(),
            SessionState::Healthy {
                deadline_ms: 9_000,
                ..
            }
        ));
        assert_eq!(rounds_since(t0, &sent), vec![1_000, 2_000, 3_000]);
        core.lose("test over".into());
    }

    #[tokio::test(start_paused = true)]
    async fn lost_only_on_the_clusters_word() {
        for (word, why) in [
            (pb::SessionState::Unknown, "no longer knows this session"),
            (pb::SessionState::Expired, "the session expired"),
            (pb::SessionState::BadSecret, "refused the session's secret"),
        ] {
            let core = core();
            let t0 = Instant::now();
            // Nodes down, a refusal, an answer that does not name the session and one
            // with a state this client does not know: none of them is the cluster's
            // word on the session.
            let sent = run(
                &core,
                vec![
                    Reply::Down,
                    Reply::Refused,
                    Reply::Missing,
                    Reply::State(pb::SessionState::Unspecified),
                    Reply::State(word),
                ],
            );
            at(t0, 4_500).await;
            assert!(
                matches!(*core.state.borrow(), SessionState::InDanger { .. }),
                "{word:?}: {:?}",
                core.state.borrow()
            );
            at(t0, 5_500).await;
            match &*core.state.borrow() {
                SessionState::Lost { reason } => assert!(reason.contains(why), "{reason}"),
                other => panic!("{word:?}: expected lost, got {other:?}"),
            }
            // Lost is final: the heartbeat stops.
            at(t0, 20_000).await;
            assert_eq!(sent.lock().unwrap().len(), 5, "{word:?}");
            assert!(matches!(core.check_alive(), Err(Error::SessionLost { .. })));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn revocations_are_reported_once_each_and_the_seat_knows() {
        let core = core();
        let t0 = Instant::now();
        let seat = |lease_id| {
            crate::Seat::new(
                core.clone(),
                pb::Grant {
                    lease_id,
                    feature: "cad".into(),
                    count: 1,
                    ..Default::default()
                },
            )
        };
        let (a, b, c) = (seat(7), seat(8), seat(9));
        // The cluster repeats its latest notes on every answer, and may drop old ones.
        run(
            &core,
            vec![
                Reply::Alive(9_000, vec![revocation(7)]),
                Reply::Alive(10_000, vec![revocation(7), revocation(8)]),
                Reply::Alive(11_000, vec![revocation(8)]),
            ],
        );
        at(t0, 1_500).await;
        assert_eq!(
            core.state.borrow().revoked(),
            [Revoked::from(revocation(7))]
        );
        at(t0, 4_500).await;
        let want = [Revoked::from(revocation(7)), Revoked::from(revocation(8))];
        match &*core.state.borrow() {
            SessionState::InDanger { revoked, .. } => assert_eq!(revoked, &want),
            other => panic!("expected danger with the revocations, got {other:?}"),
        }
        assert_eq!(
            a.revoked().map(|r| r.message),
            Some("seat of \"cad\" revoked (7)".to_owned())
        );
        assert_eq!(c.revoked(), None);

        // Neither a dropped nor a checked-in revoked seat asks the cluster anything
        // (each request would take a sequence number).
        let seq = core.seq.load(Ordering::Relaxed);
        drop(a);
        match b.checkin().await {
            Err(Error::Revoked {
                lease_id: 8,
                message,
                ..
            }) => assert!(message.contains("revoked (8)"), "{message}"),
            other => panic!("expected the revocation, got {other:?}"),
        }
        assert_eq!(core.seq.load(Ordering::Relaxed), seq);
        core.lose("test over".into());
        drop(c);
    }
}
