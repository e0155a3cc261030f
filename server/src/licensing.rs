//! The `Licensing` gRPC service: sessions, checkout, checkin through Raft; heartbeats
//! answered by the leader's lease keeper from memory. Every request is checked before it
//! is proposed, so malformed input is refused with a clear status and changes nothing.

use sha2::{Digest, Sha256};
use tally_core::ledger::{
    ClientId, DenyReason, Holder, Op, Reply, RequestId, SecretDigest, SessionAuth,
};
use tally_core::license::{Date, Version};
use tally_proto::v1 as pb;
use tally_proto::v1::licensing_server;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::keeper::{now_ms, Beat};
use crate::node::{not_leader, Shared};
use crate::security::RateLimiter;
use std::sync::Arc;

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
            shared,
            per_session,
            stopping,
        }
    }

    fn session_rate(&self, session: u64) -> Result<(), Status> {
        match &self.per_session {
            Some(l) if !l.allow(session) => Err(Status::resource_exhausted(format!(
                "rate limit: session {session} sent more than {} checkouts, checkins and closes per second; slow down (limits.per_session_rps)",
                l.rate
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a new session past `limits.sessions_per_client`; a retry of an open that
    /// was already applied is let through, to get its first answer.
    fn sessions_per_client(&self, req: RequestId) -> Result<(), Status> {
        let max = self.shared.cfg.limits.sessions_per_client;
        if max == 0 {
            return Ok(());
        }
        let sm = self.shared.sm.read();
        if sm.ledger.reply_for(req).is_some() || sm.ledger.live_sessions_of(&req.client) < max {
            return Ok(());
        }
        Err(Status::resource_exhausted(format!(
            "this client id already holds {max} live sessions (limits.sessions_per_client); close some first"
        )))
    }
}

/// The digest the ledger keeps of a session secret.
pub fn digest(secret: &[u8]) -> SecretDigest {
    Sha256::digest(secret).into()
}

fn request_id(r: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let r = r.ok_or_else(|| {
        Status::invalid_argument("missing `request` (client id and sequence number)")
    })?;
    let client: ClientId = r.client_id.as_slice().try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "request.client_id must be 16 bytes, got {}",
            r.client_id.len()
        ))
    })?;
    Ok(RequestId { client, seq: r.seq })
}

fn auth(a: Option<pb::SessionAuth>) -> Result<SessionAuth, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("missing `auth` (session id and secret)"))?;
    if a.secret.len() != 32 {
        return Err(Status::unauthenticated(format!(
            "the session secret must be 32 bytes, got {}",
            a.secret.len()
        )));
    }
    Ok(SessionAuth {
        session: a.session_id,
        secret: digest(&a.secret),
    })
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

/// One sentence naming what a denial means.
pub fn deny_message(reason: &DenyReason, feature: &str) -> String {
    match reason {
        DenyReason::UnknownFeature => format!("no license for feature \"{feature}\" is loaded"),
        DenyReason::VersionTooNew { requested, highest } => {
            format!("version {requested} of \"{feature}\" is not licensed (highest licensed: {highest})")
        }
        // Dates as the license file writes them (31-dec-2027), not milliseconds.
        DenyReason::NotYetStarted { start_ms } => format!(
            "the license for \"{feature}\" starts on {}",
            Date::of_ms(*start_ms)
        ),
        DenyReason::Expired { expired_ms } => format!(
            "the license for \"{feature}\" expired at the end of {}",
            Date::of_ms(expired_ms.saturating_sub(1))
        ),
        DenyReason::NoSeats {
            requested,
            available,
            ..
        } if u64::from(*requested) > *available => format!(
            "{requested} seat(s) of \"{feature}\" requested, but only {available} are licensed (overdraft included)"
        ),
        DenyReason::NoSeats {
            requested,
            in_use,
            available,
        } => format!(
            "{requested} seat(s) of \"{feature}\" requested, but {in_use} of {available} are in use"
        ),
        DenyReason::InvalidCount { requested } => format!("{requested} is not a valid seat count"),
        DenyReason::UnknownSession => {
            "unknown session: it expired or was closed; open a new one".into()
        }
        DenyReason::BadSecret => "the session secret does not match".into(),
        DenyReason::UnknownLease => "this session holds no such lease".into(),
        DenyReason::StaleRequest { last_seq } => {
            format!("request superseded: this client already sent request {last_seq}")
        }
        DenyReason::QueueTimeout { waited_ms } => {
            format!(
                "waited {waited_ms} ms in the queue for \"{feature}\" without a seat coming free"
            )
        }
    }
}

fn denial_code(reason: &DenyReason) -> pb::DenialReason {
    use pb::DenialReason as D;
    match reason {
        DenyReason::UnknownFeature => D::UnknownFeature,
        DenyReason::VersionTooNew { .. } => D::VersionTooNew,
        DenyReason::NotYetStarted { .. } => D::NotYetStarted,
        DenyReason::Expired { .. } => D::Expired,
        DenyReason::NoSeats { .. } => D::NoSeats,
        DenyReason::InvalidCount { .. } => D::InvalidCount,
        DenyReason::UnknownSession => D::UnknownSession,
        DenyReason::BadSecret => D::BadSecret,
        DenyReason::UnknownLease => D::UnknownLease,
        DenyReason::StaleRequest { .. } => D::StaleRequest,
        DenyReason::QueueTimeout { .. } => D::QueueTimeout,
    }
}

/// Session-level refusals of non-checkout calls become gRPC statuses.
fn refusal(reason: &DenyReason) -> Status {
    let msg = deny_message(reason, "");
    match reason {
        DenyReason::BadSecret => Status::permission_denied(msg),
        DenyReason::UnknownSession | DenyReason::UnknownLease => Status::not_found(msg),
        _ => Status::failed_precondition(msg),
    }
}

fn unexpected(reply: &Reply) -> Status {
    Status::internal(format!("unexpected ledger reply: {reply:?}"))
}

/// How long one checkout call waits in the queue before answering "still queued"; the
/// client then asks again with the same request id. Short enough that no proxy or load
/// balancer times the call out, long enough that a waiter costs one log entry per 20 s.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);

impl Licensing {
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
        self.sessions_per_client(req_id)?;
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
        };
        match self.shared.propose(op).await?.reply {
            Reply::SessionOpened { session, ttl_ms } => {
                tracing::Span::current().record("session", session);
                tracing::debug!(ttl_ms, "session opened");
                Ok(Response::new(pb::OpenSessionResponse {
                    session_id: session,
                    secret: r.secret,
                    ttl_ms,
                    heartbeat_interval_ms: ttl_ms / 3,
                    server_time_ms: now_ms(),
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
        let mut beats = self
            .shared
            .keeper
            .heartbeat(&self.shared, &wanted)
            .into_iter();
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
                Some(Beat::NotLeader) => {
                    let m = self.shared.raft.metrics().borrow().clone();
                    let leader = m.current_leader.filter(|l| *l != self.shared.id);
                    let node =
                        leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                    return Err(not_leader(leader.zip(node.as_ref())));
                }
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
        Ok(Response::new(pb::HeartbeatResponse { sessions: out }))
    }

    async fn checkout(
        &self,
        req: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutResponse>, Status> {
        let r = req.into_inner();
        let req_id = request_id(r.request)?;
        let auth = auth(r.auth)?;
        tracing::Span::current().record("session", auth.session);
        self.session_rate(auth.session)?;
        name("feature", &r.feature, true)?;
        let version = if r.version.is_empty() {
            Version(vec![0])
        } else {
            Version::parse(&r.version).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`version` must look like 2026.1, got {:?}",
                    r.version
                ))
            })?
        };
        let op = Op::Checkout {
            req: req_id,
            auth,
            feature: r.feature.clone(),
            version: version.clone(),
            count: r.count,
            wait_ms: r.wait.then_some(r.wait_timeout_ms),
        };
        let mut reply = self.shared.propose(op).await?.reply;
        if let Reply::Queued { place, .. } = reply {
            reply = self.await_queue(req_id, place).await;
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
                    } => (*in_use, *available),
                    _ => (0, 0),
                };
                pb::checkout_response::Result::Denied(pb::Denial {
                    reason: denial_code(&d) as i32,
                    message: deny_message(&d, &r.feature),
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
        let r = req.into_inner();
        let auth = auth(r.auth)?;
        self.session_rate(auth.session)?;
        let span = tracing::Span::current();
        span.record("session", auth.session);
        span.record("lease", r.lease_id);
        let op = Op::Checkin {
            req: request_id(r.request)?,
            auth,
            lease: r.lease_id,
        };
        match self.shared.propose(op).await?.reply {
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
        let r = req.into_inner();
        let auth = auth(r.auth)?;
        let session = auth.session;
        self.session_rate(session)?;
        let op = Op::CloseSession {
            req: request_id(r.request)?,
            auth,
        };
        match self.shared.propose(op).await?.reply {
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
    use super::*;

    #[test]
    fn denials_read_like_a_sentence_with_dates_not_milliseconds() {
        let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
        let cases = [
            (
                DenyReason::NotYetStarted {
                    start_ms: day(2026, 1, 1).start_ms(),
                },
                "the license for \"cad\" starts on 1-jan-2026",
            ),
            (
                DenyReason::Expired {
                    expired_ms: day(2027, 12, 31).end_ms(),
                },
                "the license for \"cad\" expired at the end of 31-dec-2027",
            ),
            (
                DenyReason::NoSeats {
                    requested: 3,
                    in_use: 0,
                    available: 2,
                },
                "3 seat(s) of \"cad\" requested, but only 2 are licensed (overdraft included)",
            ),
            (
                DenyReason::NoSeats {
                    requested: 2,
                    in_use: 1,
                    available: 2,
                },
                "2 seat(s) of \"cad\" requested, but 1 of 2 are in use",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(deny_message(&reason, "cad"), want);
        }
    }
}
