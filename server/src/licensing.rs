//! The `Licensing` gRPC service: sessions, checkout, checkin through Raft; heartbeats
//! answered by the leader's lease keeper from memory. Every request is checked before it
//! is proposed, so malformed input is refused with a clear status and changes nothing.

use sha2::{Digest, Sha256};
use tally_core::ledger::{
    DenyReason, Holder, Ledger, Op, Origin, Reply, RequestId, SecretDigest, SessionAuth,
};
use tally_core::license::Version;
use tally_proto::v1 as pb;
use tally_proto::v1::licensing_server;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::config::Identity;
use crate::convert::{auth, denial_code, deny_message, refusal, request_id, unexpected};
use crate::keeper::Beat;
use crate::security::Caller;
use crate::security::RateLimiter;
use crate::shared::{Role as NodeRole, Shared};
use crate::stats::Refusal;
use crate::tarpit::{Culprit, Tarpit};
use std::sync::Arc;
use tally_pki::Role;

/// Largest request a client may send; real ones are a few hundred bytes.
pub const MAX_CLIENT_MESSAGE: usize = 1 << 20;
/// Longest user, host, display or feature name accepted.
const MAX_NAME: usize = 256;
/// Most sessions renewed by one heartbeat call.
const MAX_BATCH: usize = 10_000;

/// The service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Licensing {
    shared: Shared,
    /// Writes (checkout, checkin, close) per session: each is a log entry on every node,
    /// so one session in a loop must not crowd out everyone else's.
    per_session: Option<Arc<RateLimiter<u64>>>,
    /// Holds the refusals of callers that keep failing authentication.
    tarpit: Tarpit,
    /// True once the node is stopping. A long poll must see that even if it starts after
    /// the shutdown signal (a client retrying at once on its open connection, which a
    /// stopping server still serves): a receiver of the broadcast made then never gets
    /// it, and its poll would hold the node's stop up for the whole [`LONG_POLL`], while
    /// the node, still leading, refuses new connections.
    stopping: watch::Receiver<bool>,
}

impl Licensing {
    /// Needs a tokio runtime: a task turns the node's shutdown signal into `stopping`.
    pub fn new(shared: Shared) -> Self {
        let per_session = RateLimiter::new(shared.cfg.limits.per_session_rps);
        let (tx, stopping) = watch::channel(false);
        let mut shutdown = shared.shutdown.subscribe();
        tokio::spawn(async move {
            // A closed channel means the node is gone as well.
            let _ = shutdown.recv().await;
            let _ = tx.send(true);
        });
        Self {
            tarpit: Tarpit::new(&shared.cfg.limits),
            shared,
            per_session,
            stopping,
        }
    }

    /// Checks a session-scoped request against the applied state before anything is
    /// proposed, so a request with bogus credentials costs no log entry on any node. Only
    /// an established leader decides here (its state has everything committed before its
    /// term); elsewhere the proposal forwards or waits as usual. The ledger checks the
    /// same again (`Ledger::vet`): a request of a live session must prove its secret and
    /// carry its opener's client id even when its request id has a kept answer, which is
    /// the session's alone; of the requests of a session that is gone, only a retried
    /// close goes through, to get its first answer.
    fn authenticate(
        &self,
        req: RequestId,
        auth: &SessionAuth,
        closing: bool,
    ) -> Result<(), DenyReason> {
        if !matches!(
            self.shared.role(),
            NodeRole::Leader {
                established: true,
                ..
            }
        ) {
            return Ok(());
        }
        let sm = self.shared.sm.read();
        match sm.ledger.session(auth.session) {
            None if closing && Ledger::closed(sm.ledger.reply_for(req), auth.session) => Ok(()),
            None => Err(DenyReason::UnknownSession),
            Some(s) if s.secret != auth.secret => Err(DenyReason::BadSecret),
            Some(s) if s.client != req.client => Err(DenyReason::WrongClient),
            Some(_) => Ok(()),
        }
    }

    /// A retried open must carry the secret its session was opened with (the ledger
    /// checks it again): checked here too, on an established leader, so that replaying
    /// someone's open with another secret costs no log entry.
    fn retried_open(&self, req: RequestId, secret: &SecretDigest) -> Result<(), DenyReason> {
        if !matches!(
            self.shared.role(),
            NodeRole::Leader {
                established: true,
                ..
            }
        ) {
            return Ok(());
        }
        let sm = self.shared.sm.read();
        match sm.ledger.reply_for(req) {
            Some(Reply::SessionOpened { session, .. }) => match sm.ledger.session(*session) {
                Some(s) if s.secret != *secret => Err(DenyReason::BadSecret),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Renews `sessions` through the keeper. A leader that is not sure it still leads
    /// (no quorum acknowledgement within the lease: followers slow to fsync under load)
    /// or has not loaded its deadlines yet holds the call up to [`Licensing::hold_ms`]
    /// and tries again, instead of refusing at once: under overload a renewal should
    /// come late, not fail, and a refused client can only retry (here or, worse, at
    /// every other node). Nothing is promised while unsure: the lease and the time are
    /// checked again, whole, on each try. Past the hold a real loss of quorum has had
    /// time for an election, and the refusal sends the client on.
    async fn renew(&self, sessions: &[(u64, SecretDigest)]) -> Result<Vec<Beat>, Refusal> {
        let give_up =
            tokio::time::Instant::now() + std::time::Duration::from_millis(self.hold_ms());
        let mut waited = false;
        loop {
            match self.shared.keeper.heartbeat(&self.shared, sessions) {
                Err(why @ (Refusal::Unsure | Refusal::NotLoaded))
                    if tokio::time::Instant::now() < give_up && !*self.stopping.borrow() =>
                {
                    if !waited {
                        self.shared.stats.waited(why);
                        waited = true;
                    }
                    // A Raft heartbeat goes out every heartbeat_ms; its acknowledgement
                    // is what renews the lease.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// How long a heartbeat call may wait for the lease: two of the longest election
    /// timeouts, by when a leader that really lost its quorum has been replaced.
    fn hold_ms(&self) -> u64 {
        self.shared.cfg.election_max_ms * 2
    }

    /// `verdict` of an authentication check, passed on; a failure (a malformed or wrong
    /// secret, an unknown session, another client's request id) is charged to the caller
    /// first, and held once it is past its budget.
    async fn charged<T, E>(&self, who: &Culprit, verdict: Result<T, E>) -> Result<T, E> {
        if verdict.is_err() {
            self.tarpit.hold(who).await;
        }
        verdict
    }

    /// Charged only after [`Licensing::authenticate`]: a caller who cannot prove the
    /// session's secret must not use up its owner's budget (the ids are sequential).
    fn session_rate(&self, session: u64) -> Result<(), Status> {
        match &self.per_session {
            Some(l) if !l.allow(session) => Err(Status::resource_exhausted(format!(
                "rate limit: session {session} sent more than {} checkouts, checkins and closes per second; slow down (limits.per_session_rps)",
                l.rate
            ))),
            _ => Ok(()),
        }
    }

    /// Under `[security] identity = "certificate"`, the user a session names must be its
    /// client certificate's common name and the host one of the certificate's host
    /// names; administrators may open sessions in any name.
    fn check_identity(&self, caller: &Caller, user: &str, host: &str) -> Result<(), Status> {
        if self.shared.cfg.identity != Identity::Certificate || caller.role == Some(Role::Admin) {
            return Ok(());
        }
        let Some(cn) = caller.cert_name.as_deref() else {
            return Err(Status::unauthenticated(
                "this cluster takes identities from client certificates (security.identity = \"certificate\"): present your certificate (--cert/--key, TALLY_CERT/TALLY_KEY)",
            ));
        };
        if user != cn {
            return Err(Status::permission_denied(format!(
                "the session names user \"{user}\", but your certificate is \"{cn}\" (security.identity = \"certificate\")"
            )));
        }
        if !caller
            .cert_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(Status::permission_denied(format!(
                "the session names host \"{host}\", which certificate \"{cn}\" does not vouch for (it names: {})",
                if caller.cert_hosts.is_empty() {
                    "no host".to_owned()
                } else {
                    caller.cert_hosts.join(", ")
                }
            )));
        }
        Ok(())
    }

    /// Refuses a new session past `limits.sessions_per_identity` for the caller's proved
    /// identity (administrators are not counted); a retry of an open that was already
    /// applied is let through, to get its first answer.
    fn sessions_per_identity(
        &self,
        req: RequestId,
        origin: &Origin,
        admin: bool,
    ) -> Result<(), Status> {
        let max = self.shared.cfg.limits.sessions_per_identity;
        if max == 0 || admin {
            return Ok(());
        }
        let sm = self.shared.sm.read();
        let identity = origin.identity();
        if sm.ledger.reply_for(req).is_some()
            || sm.ledger.live_sessions_of_identity(&identity) < max
        {
            return Ok(());
        }
        Err(Status::resource_exhausted(format!(
            "{identity} already holds {max} live sessions (limits.sessions_per_identity); close some first"
        )))
    }
}

/// The digest the ledger keeps of a session secret.
pub fn digest(secret: &[u8]) -> SecretDigest {
    Sha256::digest(secret).into()
}

fn name(field: &str, value: &str, required: bool) -> Result<(), Status> {
    if required && value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "`{field}` must be at most {MAX_NAME} bytes of printable text"
        )));
    }
    Ok(())
}

/// Longest piece of a caller's input quoted back in a refusal.
const MAX_SHOWN: usize = 64;

/// `value` quoted for a refusal, cut to [`MAX_SHOWN`] characters with its length: the
/// message travels as an HTTP/2 header, and a client refuses headers over 16 KiB or so,
/// so echoing a request's megabyte whole made the refusal itself fail (gRPC clients saw
/// RESOURCE_EXHAUSTED "metadata size exceeds" instead of the reason).
fn shown(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// Takes a waiter out of the queue when its checkout call ends before the queue answered
/// it: the client gave up, was killed or lost its connection, and tonic dropped the
/// handler. Without this its place held everyone behind it until its session's TTL ran
/// out. Not while the node stops: the client then asks another node with the same
/// request id and must find its place kept. A call that ended normally ("still queued"
/// after the long poll) is disarmed: the client asks again at once.
struct LeaveOnDrop {
    shared: Shared,
    stopping: watch::Receiver<bool>,
    /// The place to cancel; `None` once disarmed.
    place: Option<u64>,
}

impl LeaveOnDrop {
    fn disarm(mut self) {
        self.place = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let Some(place) = self.place.take() else {
            return;
        };
        if *self.stopping.borrow() {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match shared.propose(Op::CancelWait { place }).await {
                Ok(_) => tracing::info!(place, "a waiter's call ended: its place left the queue"),
                Err(e) => tracing::warn!(place, "a waiter's call ended, but its place could not be cancelled (it leaves with its session): {e}"),
            }
        });
    }
}

/// How long one checkout call waits in the queue before answering "still queued"; the
/// client then asks again with the same request id. Short enough that no proxy or load
/// balancer times the call out, long enough that a waiter costs one log entry per 20 s.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);

impl Licensing {
    /// The cluster's time zone for license dates, for the dates in denials. Takes the
    /// state machine's read lock briefly: never call it while holding that lock.
    fn zone(&self) -> tally_core::license::Zone {
        self.shared.sm.read().ledger.time_zone()
    }

    /// Waits until the queue answers `req` (a grant or a denial) or [`LONG_POLL`] passes,
    /// watching this node's applied state: the answer replaces the request's kept reply.
    async fn await_queue(&self, req: RequestId, place: u64) -> Reply {
        let mut applied = self.shared.sm.applied_index();
        let mut stopping = self.stopping.clone();
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            {
                let sm = self.shared.sm.read();
                match sm.ledger.reply_for(req) {
                    Some(Reply::Queued { .. }) => {}
                    Some(answer) => return answer.clone(),
                    // Out of the client's reply window: its retry will say so.
                    None => return Reply::Denied(DenyReason::StaleRequest { last_seq: req.seq }),
                }
                if let Some(position) = sm.ledger.queue_position(place) {
                    tracing::trace!(place, position, "waiting in the queue");
                }
            }
            let more = tokio::select! {
                r = tokio::time::timeout_at(deadline, applied.changed()) => matches!(r, Ok(Ok(()))),
                _ = stopping.wait_for(|s| *s) => false,
            };
            if !more {
                // Time is up, or the node is stopping: report the place as it stands, and
                // the client asks again (elsewhere, if this node is gone).
                let sm = self.shared.sm.read();
                let position = sm.ledger.queue_position(place).unwrap_or(1);
                return match sm.ledger.reply_for(req) {
                    Some(Reply::Queued { .. }) | None => Reply::Queued { place, position },
                    Some(answer) => answer.clone(),
                };
            }
        }
    }
}

#[tonic::async_trait]
impl licensing_server::Licensing for Licensing {
    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default();
        let who = Culprit::of(&req);
        let origin = Origin {
            cert: caller.cert_name.as_deref().map(str::to_owned),
            addr: req
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        };
        let r = req.into_inner();
        let req_id = request_id(r.request)?;
        name("user", &r.user, true)?;
        name("host", &r.host, true)?;
        name("display", &r.display, false)?;
        // The client chooses its secret, so a retried open carries the same one and the
        // first answer stays valid; a server-chosen secret could not survive a retry.
        if r.secret.len() != 32 {
            return Err(Status::invalid_argument(format!(
                "`secret` must be 32 random bytes chosen by the client, got {}",
                r.secret.len()
            )));
        }
        self.check_identity(&caller, &r.user, &r.host)?;
        self.charged(&who, self.retried_open(req_id, &digest(&r.secret)))
            .await
            .map_err(|d| refusal(&d))?;
        self.sessions_per_identity(req_id, &origin, caller.role == Some(Role::Admin))?;
        let ttl_ms = self.shared.cfg.clamp_ttl(r.ttl_ms);
        let holder = Holder {
            user: r.user,
            host: r.host,
            display: r.display,
            pid: r.pid,
        };
        let op = Op::OpenSession {
            req: req_id,
            holder,
            ttl_ms,
            secret: digest(&r.secret),
            origin,
        };
        match self.shared.propose_client(op).await?.reply {
            Reply::SessionOpened { session, ttl_ms } => {
                tracing::Span::current().record("session", session);
                tracing::debug!(ttl_ms, "session opened");
                Ok(Response::new(pb::OpenSessionResponse {
                    session_id: session,
                    secret: r.secret,
                    ttl_ms,
                    heartbeat_interval_ms: ttl_ms / 3,
                    server_time_ms: self.shared.now_ms(),
                }))
            }
            Reply::Denied(d) => Err(refusal(&d)),
            other => Err(unexpected(&other)),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let who = Culprit::of(&req);
        let r = req.into_inner();
        if r.sessions.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} sessions per heartbeat"
            )));
        }
        // Well-formed entries are renewed together; a malformed secret is answered
        // BadSecret in its place.
        let ids: Vec<u64> = r.sessions.iter().map(|a| a.session_id).collect();
        let parsed: Vec<Option<(u64, SecretDigest)>> = r
            .sessions
            .into_iter()
            .map(|a| auth(Some(a)).ok().map(|a| (a.session, a.secret)))
            .collect();
        let wanted: Vec<(u64, SecretDigest)> = parsed.iter().flatten().copied().collect();
        let mut beats = match self.renew(&wanted).await {
            Ok(b) => b.into_iter(),
            Err(why) => {
                self.shared.stats.refused(why);
                return Err(match why {
                    Refusal::NotLeader => self.shared.not_leader(),
                    Refusal::Unsure => Status::unavailable(format!(
                        "node {} leads but is not sure it still does: no quorum acknowledged it within {} ms (last {} ms ago); retry in a moment",
                        self.shared.id,
                        self.shared.lease_ms(),
                        self.shared.quorum_ack_age_ms().ok().flatten().map_or("never".into(), |a| a.to_string()),
                    )),
                    Refusal::NotLoaded => Status::unavailable(format!(
                        "node {} has just become the leader and is loading session deadlines; retry in a moment",
                        self.shared.id
                    )),
                });
            }
        };
        // The read lock is released before any hold below (the block ends it).
        let out = {
            let mut out = Vec::with_capacity(ids.len());
            let sm = self.shared.sm.read();
            for (id, p) in ids.into_iter().zip(&parsed) {
                let beat = match p {
                    None => None,
                    Some(_) => beats.next(),
                };
                let state = match beat {
                    None | Some(Beat::BadSecret) => (pb::SessionState::BadSecret, 0, 0),
                    Some(Beat::Alive {
                        deadline_ms,
                        ttl_ms,
                    }) => (pb::SessionState::Alive, deadline_ms, ttl_ms),
                    Some(Beat::Unknown) => (pb::SessionState::Unknown, 0, 0),
                    Some(Beat::Expired) => (pb::SessionState::Expired, 0, 0),
                    Some(Beat::NotLeader) => return Err(self.shared.not_leader()),
                };
                let revoked = if state.0 == pb::SessionState::Alive {
                    sm.ledger
                        .revocations(id)
                        .iter()
                        .map(crate::convert::revocation)
                        .collect()
                } else {
                    Vec::new()
                };
                out.push(pb::SessionStatus {
                    session_id: id,
                    state: state.0 as i32,
                    deadline_ms: state.1,
                    ttl_ms: state.2,
                    revoked,
                });
            }
            out
        };
        // One charge per call, however many of its sessions failed (a batch is one
        // caller's one request). A wrong secret only: after a long outage every client
        // behind one address learns at once that its session is gone, and a held
        // "unknown" would outlast a short-TTL client's heartbeat round, which then says
        // "in danger" where the truth is "lost".
        if out
            .iter()
            .any(|s| s.state == pb::SessionState::BadSecret as i32)
        {
            self.tarpit.hold(&who).await;
        }
        Ok(Response::new(pb::HeartbeatResponse { sessions: out }))
    }

    async fn checkout(
        &self,
        req: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutResponse>, Status> {
        let who = Culprit::of(&req);
        let r = req.into_inner();
        let req_id = request_id(r.request)?;
        let auth = self.charged(&who, auth(r.auth)).await?;
        tracing::Span::current().record("session", auth.session);
        name("feature", &r.feature, true)?;
        if let Err(d) = self
            .charged(&who, self.authenticate(req_id, &auth, false))
            .await
        {
            return Ok(Response::new(pb::CheckoutResponse {
                result: Some(pb::checkout_response::Result::Denied(pb::Denial {
                    reason: denial_code(&d) as i32,
                    message: deny_message(&d, &r.feature, self.zone()),
                    in_use: 0,
                    available: 0,
                })),
            }));
        }
        self.session_rate(auth.session)?;
        let version = if r.version.is_empty() {
            Version::whole(0)
        } else {
            Version::parse(&r.version).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`version` must look like 2026.1, got {}",
                    shown(&r.version)
                ))
            })?
        };
        let op = Op::Checkout {
            req: req_id,
            auth,
            feature: r.feature.clone(),
            version: version.clone(),
            count: r.count,
            // No wait is forever by accident: "as long as it takes" (0), or longer, is
            // the server's maximum.
            wait_ms: r.wait.then(|| {
                let max = self.shared.cfg.max_queue_wait_ms;
                if r.wait_timeout_ms == 0 {
                    max
                } else {
                    r.wait_timeout_ms.min(max)
                }
            }),
        };
        // A queued call long-polls for its answer, and says "still queued" with its place
        // after LONG_POLL; the client asks again with the same request id. (Answering the
        // call that joins the queue at once was tried: clients written to the first
        // behaviour, like the hostile suite's, took the early "queued" for a final answer.)
        let mut reply = self.shared.propose_client(op).await?.reply;
        if let Reply::Queued { place, .. } = reply {
            let leave = LeaveOnDrop {
                shared: self.shared.clone(),
                stopping: self.stopping.clone(),
                place: Some(place),
            };
            reply = self.await_queue(req_id, place).await;
            leave.disarm();
        }
        let result = match reply {
            Reply::Queued { position, .. } => {
                pb::checkout_response::Result::Queued(pb::Queued { position })
            }
            Reply::Granted(g) => {
                tracing::Span::current().record("lease", g.lease);
                tracing::debug!(feature = %r.feature, count = g.count, token = g.fencing_token, "seat granted");
                pb::checkout_response::Result::Granted(pb::Grant {
                    lease_id: g.lease,
                    fencing_token: g.fencing_token,
                    feature: r.feature,
                    version: version.to_string(),
                    count: g.count,
                    overdraft_seats: g.overdraft,
                    reused_lingering: g.reused,
                    shared: g.shared,
                    granted_at_ms: g.granted_ms,
                    seat_id: g.seat,
                })
            }
            Reply::Denied(d) => {
                tracing::debug!(feature = %r.feature, reason = ?d, "checkout denied");
                let (in_use, available) = match &d {
                    DenyReason::NoSeats {
                        in_use, available, ..
                    }
                    | DenyReason::QueuedAhead {
                        in_use, available, ..
                    } => (*in_use, *available),
                    _ => (0, 0),
                };
                pb::checkout_response::Result::Denied(pb::Denial {
                    reason: denial_code(&d) as i32,
                    message: deny_message(&d, &r.feature, self.zone()),
                    in_use,
                    available,
                })
            }
            other => return Err(unexpected(&other)),
        };
        Ok(Response::new(pb::CheckoutResponse {
            result: Some(result),
        }))
    }

    async fn checkin(
        &self,
        req: Request<pb::CheckinRequest>,
    ) -> Result<Response<pb::CheckinResponse>, Status> {
        let who = Culprit::of(&req);
        let r = req.into_inner();
        let auth = self.charged(&who, auth(r.auth)).await?;
        let req_id = request_id(r.request)?;
        let span = tracing::Span::current();
        span.record("session", auth.session);
        span.record("lease", r.lease_id);
        self.charged(&who, self.authenticate(req_id, &auth, false))
            .await
            .map_err(|d| refusal(&d))?;
        self.session_rate(auth.session)?;
        let op = Op::Checkin {
            req: req_id,
            auth,
            lease: r.lease_id,
        };
        match self.shared.propose_client(op).await?.reply {
            Reply::Released {
                lease,
                lingering_until,
            } => Ok(Response::new(pb::CheckinResponse {
                lease_id: lease,
                lingering_until_ms: lingering_until,
            })),
            Reply::Denied(d) => Err(refusal(&d)),
            other => Err(unexpected(&other)),
        }
    }

    async fn close_session(
        &self,
        req: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let who = Culprit::of(&req);
        let r = req.into_inner();
        let auth = self.charged(&who, auth(r.auth)).await?;
        let req_id = request_id(r.request)?;
        let session = auth.session;
        self.charged(&who, self.authenticate(req_id, &auth, true))
            .await
            .map_err(|d| refusal(&d))?;
        self.session_rate(session)?;
        let op = Op::CloseSession { req: req_id, auth };
        match self.shared.propose_client(op).await?.reply {
            Reply::SessionClosed { released, .. } => {
                if let Some(l) = &self.per_session {
                    l.forget(&session);
                }
                Ok(Response::new(pb::CloseSessionResponse { released }))
            }
            Reply::Denied(d) => Err(refusal(&d)),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_quote_at_most_a_short_piece_of_the_input() {
        assert_eq!(super::shown("2026.x"), "\"2026.x\"");
        let huge = "1.".repeat(500_000);
        let s = super::shown(&huge);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("... (1000000 bytes)"), "{s}");
        // Cut on a character boundary, never inside one.
        assert!(super::shown(&"é".repeat(100)).ends_with("(200 bytes)"));
    }
}
