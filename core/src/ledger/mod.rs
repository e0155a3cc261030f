//! The ledger: Tally's seat table as a pure, deterministic state machine.
//!
//! Every node applies the same log entries in the same order with [`Ledger::apply`] and
//! ends in byte-identical state. The ledger reads no clock (time arrives in each
//! [`Entry`]), does no I/O and uses only ordered collections, so a test can replay any
//! history and a snapshot is the same bytes on every node. The async shell around it
//! (Raft, the lease keeper) decides *what* to propose; the ledger decides what it *means*.
//!
//! State kept here is the truth; everything in [`Index`] is derived from it and rebuilt
//! on restore, so a snapshot carries no redundant data that could disagree with itself.

mod clock;
mod index;
mod loads;
mod named;
mod policy;
mod pool;
mod queue;
mod revoke;
mod seats;
mod snapshot;
mod suite;
mod types;
mod zone;

#[cfg(test)]
mod flexnet_tests;
#[cfg(test)]
mod named_tests;
#[cfg(test)]
mod options_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod time_tests;
#[cfg(test)]
mod zone_tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::license::{ClusterId, DupGroup, LicenseFile, Version, Zone};
pub use clock::OUTAGE_GAP_MS;
use index::Index;
pub use named::{Assigned, NamedState, USERS_PER_ENTRY};
pub use pool::{TermState, EXPIRING_WITHIN_MS};
pub use queue::Waiter;
pub use types::*;

/// How long a client's last answers are kept after its last session ended, so that a
/// retried `OpenSession` or `CloseSession` still finds its first answer. An hour covers
/// any retry loop a client could reasonably be in.
pub const CLIENT_RETENTION_MS: u64 = 3_600_000;

/// How many recent answers are kept per client, so that a client may pipeline requests
/// (several in flight at once) and still have each retry answered exactly.
pub const REPLY_WINDOW: usize = 16;

/// At most this many idle clients are forgotten per entry, so one entry never does
/// unbounded work even after a mass disconnect.
const CLIENT_GC_PER_ENTRY: usize = 64;

/// A running client process and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client: ClientId,
    pub holder: Holder,
    pub ttl_ms: u64,
    pub opened_ms: TimeMs,
    /// The last heartbeat the leader checkpointed (at least the open time). A lower bound
    /// on the real last heartbeat, which only the leader's memory has.
    pub last_heartbeat_ms: TimeMs,
    pub secret: SecretDigest,
    pub leases: BTreeSet<LeaseId>,
    pub origin: Origin,
}

/// One session's claim on a seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub seat: SeatId,
    pub session: SessionId,
    pub feature: String,
    pub version: Version,
    pub count: u32,
    pub granted_ms: TimeMs,
    pub fencing_token: u64,
    /// For a suite's component: the suite's seat, which this lease holds too (see
    /// `suite.rs`).
    #[serde(default)]
    pub suite_seat: Option<SeatId>,
}

/// Who a seat belongs to for sharing and linger reuse, per the pool's `DUP_GROUP`: user
/// alone (`U`), user and host (`UH`), or user, host and display when there is no grouping
/// (a restarted process on the same workstation may take back its lingering seat, but
/// nobody shares a held one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DupKey {
    pub user: String,
    pub host: Option<String>,
    pub display: Option<String>,
}

/// What a pool counts: `count` seats charged at `version`, held by one or more leases
/// (more than one only under `DUP_GROUP`), or lingering for its last holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub feature: String,
    pub version: Version,
    pub count: u32,
    pub key: DupKey,
    pub holders: BTreeSet<LeaseId>,
    /// Set while no lease holds the seat: it stays counted until then.
    pub lingering_until: Option<TimeMs>,
    /// Token of the latest grant on this seat; grows with every new holder.
    pub fencing_token: u64,
    /// The grouping of the pool the seat counts in: a feature whose lines differ in
    /// `DUP_GROUP` has one pool per grouping (see `pool.rs`).
    #[serde(default)]
    pub group: DupGroup,
    /// When the pool began counting the seat: the start of its span of use in the
    /// usage history (which reports it when the seat goes back, `Event::Reclaimed`).
    #[serde(default)]
    pub charged_ms: TimeMs,
}

/// One client's kept answers by request sequence number, ascending. A sorted vector,
/// not a `BTreeMap`: most clients have one or two answers, and a map's first node holds
/// room for eleven (about 700 bytes with `Reply`), which was most of a session's memory
/// at a million sessions. It encodes exactly as that map did (a length, then the pairs
/// in order), so the snapshot format did not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Replies(Vec<(u64, Reply)>);

impl Replies {
    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&seq, |(s, _)| *s)
    }

    fn get(&self, seq: u64) -> Option<&Reply> {
        self.find(seq).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Reply> {
        self.find(seq).ok().map(|i| &mut self.0[i].1)
    }

    fn last_seq(&self) -> Option<u64> {
        self.0.last().map(|(s, _)| *s)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Keeps the vector exactly as long as its contents: growth by doubling would give
    /// back much of what leaving the map saved.
    fn insert(&mut self, seq: u64, reply: Reply) {
        match self.find(seq) {
            Ok(i) => self.0[i].1 = reply,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (seq, reply));
            }
        }
    }

    /// Drops the oldest answer that is not a queued checkout's; returns its sequence.
    fn forget_oldest_answered(&mut self) -> Option<u64> {
        let i = self
            .0
            .iter()
            .position(|(_, r)| !matches!(r, Reply::Queued { .. }))?;
        Some(self.0.remove(i).0)
    }
}

/// The recent answers of one client, for idempotent retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRecord {
    replies: Replies,
    /// Every sequence number below this was answered and forgotten: such a request is a
    /// stale duplicate. Absent numbers at or above it were never seen and are executed.
    floor: u64,
    live_sessions: u32,
    last_seen_ms: TimeMs,
}

/// The replicated state. Field order is the snapshot's byte order: keep it stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    last_applied: u64,
    /// The latest entry time seen. Leaders' clocks differ, so an entry from a new leader
    /// may carry an earlier time; the ledger never lets time run backwards.
    now_ms: TimeMs,
    sessions: BTreeMap<SessionId, Session>,
    leases: BTreeMap<LeaseId, Lease>,
    seats: BTreeMap<SeatId, Seat>,
    licenses: BTreeMap<String, LicenseFile>,
    clients: BTreeMap<ClientId, ClientRecord>,
    /// Queued checkouts by place (the index of the entry that queued them).
    queue: BTreeMap<u64, Waiter>,
    /// The time of the first entry after the latest outage (a silence longer than
    /// [`OUTAGE_GAP_MS`]): no session's TTL runs from before it.
    resumed_ms: TimeMs,
    /// The cluster's identity, once its first leader made it.
    cluster_id: Option<ClusterId>,
    /// Leases revoked from live sessions, newest last, a few per session, for their
    /// holders' heartbeat answers. Dropped with the session.
    revocations: BTreeMap<SessionId, Vec<Revocation>>,
    /// How many times an administrator repaired the clock: the leader's keeper reloads
    /// its deadlines when this changes.
    clock_epoch: u64,
    /// The index of the entry that loaded each source: of two copies of one line, the
    /// one loaded first is the one that counts.
    loaded_at: BTreeMap<String, u64>,
    /// Named users per feature (see `named.rs`).
    named: BTreeMap<String, BTreeMap<String, Assigned>>,
    /// Open fair-use windows: feature → when its over-assignment began.
    windows: BTreeMap<String, TimeMs>,
    /// The time zone license dates are read in, by its IANA name; `None`: never set,
    /// which reads as UTC. Only names this build knows get here (`SetTimeZone` refuses
    /// others, and so does restore). Last, so that a format-3 snapshot, which ends
    /// before it, is read by adding its `None` (see `snapshot.rs`); `default` for
    /// self-describing encodings (postcard needs that shim, not this).
    #[serde(default)]
    time_zone: Option<String>,
    /// The site's options file in force (see `policy.rs`); empty while none is loaded.
    /// Appended last (snapshot format 6).
    #[serde(default)]
    options: crate::options::Options,
}

impl State {
    /// The zone license dates are read in: UTC unless one was set.
    fn zone(&self) -> Zone {
        self.time_zone
            .as_deref()
            .and_then(|name| Zone::parse(name).ok())
            .unwrap_or_default()
    }
}

/// The seat ledger. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    st: State,
    ix: Index,
}

enum Dedup {
    Execute,
    Replay(Reply),
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the derived indexes from the state, and the next boundary with them.
    fn reindex(&mut self) {
        let licensed = std::mem::take(&mut self.ix.licensed);
        self.ix = Index::rebuild(&self.st);
        self.ix.licensed = licensed;
        self.ix.next_boundary = self.next_boundary();
    }

    /// Applies one entry and says what it did. Entries must come in log order; an index
    /// that does not follow the last applied one changes nothing.
    pub fn apply(&mut self, entry: &Entry) -> Outcome {
        if entry.index <= self.st.last_applied {
            let reply = Reply::OutOfOrder {
                last_applied: self.st.last_applied,
            };
            return Outcome {
                reply,
                events: Vec::new(),
            };
        }
        self.st.last_applied = entry.index;
        let mut events = Vec::new();
        // Whether a feature's licensed count may change in this entry: only a term
        // boundary or a change of the licenses, the zone or the clock moves it.
        let recount = self.ix.next_boundary.is_some_and(|b| b <= entry.at_ms)
            || matches!(
                entry.op,
                Op::LoadLicense { .. }
                    | Op::UnloadLicense { .. }
                    | Op::SetTimeZone { .. }
                    | Op::RepairClock { .. }
                    | Op::LoadOptions { .. }
                    | Op::ClearOptions
            );
        self.advance_clock(entry.at_ms, &mut events);
        let reply = match self.client_request(&entry.op) {
            Some(req) => match self.vet(req, &entry.op).map(|()| self.dedup(req)) {
                // Checked before the kept answers, which only their session's owner reads.
                // Like any failed authentication it leaves nothing behind, not even a
                // denial in the usage history: bogus credentials say nothing of demand.
                Err(reason) => Reply::Denied(reason),
                Ok(Dedup::Replay(reply)) => reply,
                Ok(Dedup::Execute) => {
                    let reply = self.execute(entry.index, &entry.op, &mut events);
                    // A request that failed authentication leaves nothing behind: no kept
                    // answer, no client record. A flood of bogus credentials must not
                    // grow the state (its retry fails the same way, by itself).
                    if !matches!(
                        reply,
                        Reply::Denied(DenyReason::UnknownSession | DenyReason::BadSecret)
                    ) {
                        self.remember(req, &reply);
                    }
                    reply
                }
            },
            None => self.execute(entry.index, &entry.op, &mut events),
        };
        if recount {
            self.recount_licensed(&mut events);
        }
        self.forget_idle_clients();
        Outcome { reply, events }
    }

    fn client_request(&self, op: &Op) -> Option<RequestId> {
        match op {
            Op::OpenSession { req, .. }
            | Op::Checkout { req, .. }
            | Op::Checkin { req, .. }
            | Op::CloseSession { req, .. } => Some(*req),
            _ => None,
        }
    }

    fn execute(&mut self, index: u64, op: &Op, ev: &mut Vec<Event>) -> Reply {
        match op {
            Op::OpenSession {
                req,
                holder,
                ttl_ms,
                secret,
                origin,
            } => self.open_session(index, req.client, holder, origin, *ttl_ms, *secret, ev),
            Op::Checkout {
                req,
                auth,
                feature,
                version,
                count,
                wait_ms,
            } => match self.authorize(auth) {
                Err(reason) => {
                    ev.push(Event::Denied {
                        feature: feature.clone(),
                        session: auth.session,
                        reason: reason.clone(),
                    });
                    Reply::Denied(reason)
                }
                Ok(()) => self.checkout(
                    index,
                    *req,
                    auth.session,
                    feature,
                    version,
                    *count,
                    *wait_ms,
                    ev,
                ),
            },
            Op::Checkin { auth, lease, .. } => match self.authorize(auth) {
                Err(reason) => Reply::Denied(reason),
                Ok(()) => self.checkin(auth.session, *lease, ev),
            },
            Op::CloseSession { auth, .. } => match self.authorize(auth) {
                Err(reason) => Reply::Denied(reason),
                Ok(()) => {
                    let released = self.end_session(auth.session, ReleaseCause::SessionClosed, ev);
                    ev.push(Event::SessionClosed {
                        session: auth.session,
                    });
                    Reply::SessionClosed {
                        session: auth.session,
                        released,
                    }
                }
            },
            Op::CheckpointHeartbeats { beats } => {
                let now = self.st.now_ms;
                let mut affected = 0;
                for (id, at) in beats {
                    if let Some(s) = self.st.sessions.get_mut(id) {
                        // Never in the future: a checkpoint must stay a lower bound.
                        s.last_heartbeat_ms = s.last_heartbeat_ms.max((*at).min(now));
                        affected += 1;
                    }
                }
                Reply::Done { affected }
            }
            Op::ExpireSessions { sessions } => {
                let mut affected = 0;
                for id in sessions {
                    if self.expiry_due(*id) {
                        self.end_session(*id, ReleaseCause::SessionExpired, ev);
                        ev.push(Event::SessionExpired { session: *id });
                        affected += 1;
                    }
                }
                Reply::Done { affected }
            }
            Op::ReclaimSeats { seats } => Reply::Done {
                affected: self.reclaim(seats, ev),
            },
            Op::RemoveLease { lease } => Reply::Done {
                affected: u32::from(self.remove_lease(*lease, ev)),
            },
            Op::CloseSessionByAdmin { session } => {
                let Some(leases) = self.st.sessions.get(session).map(|s| s.leases.clone()) else {
                    return Reply::Done { affected: 0 };
                };
                for lease in leases {
                    self.remove_lease(lease, ev);
                }
                self.end_session(*session, ReleaseCause::SessionClosed, ev);
                ev.push(Event::SessionClosed { session: *session });
                Reply::Done { affected: 1 }
            }
            Op::CancelWait { place } => Reply::Done {
                affected: u32::from(self.cancel_wait(*place, ev)),
            },
            Op::LoadLicense { source, license } => self.load_license(index, source, license, ev),
            Op::UnloadLicense { source } => self.unload_license(source, ev),
            Op::ServeQueue => self.serve_queue(index, ev),
            Op::Tick => Reply::Done { affected: 0 },
            Op::SetClusterId { id } => {
                if self.st.cluster_id.is_some() {
                    return Reply::Done { affected: 0 };
                }
                self.st.cluster_id = Some(*id);
                ev.push(Event::ClusterIdSet { id: *id });
                Reply::Done { affected: 1 }
            }
            Op::RepairClock { to_ms } => self.repair_clock(*to_ms, ev),
            Op::AssignUsers { feature, users } => self.assign_users(index, feature, users, ev),
            Op::UnassignUsers { feature, users } => self.unassign_users(feature, users, ev),
            Op::SetTimeZone {
                zone,
                only_if_unset,
            } => self.set_time_zone(zone, *only_if_unset, ev),
            Op::LoadOptions { options } => self.load_options(options, ev),
            Op::ClearOptions => self.load_options(&crate::options::Options::empty(), ev),
        }
    }

    /// Whether a client request may see or add to its client's kept answers: a request of
    /// a live session must prove the session's secret and come from the client id that
    /// opened it, and a retried open must carry the secret its session was opened with.
    /// Without this, anyone who learnt a request id got its answer (another session's
    /// lease, say) and a session could write into another client's window, so that the
    /// owner's next request was answered with the intruder's grant. A request whose
    /// session is gone is refused as such (whatever its first answer was, the session's
    /// seats are gone now), except a retried close, which gets its first answer.
    fn vet(&self, req: RequestId, op: &Op) -> Result<(), DenyReason> {
        let auth = match op {
            Op::Checkout { auth, .. }
            | Op::Checkin { auth, .. }
            | Op::CloseSession { auth, .. } => auth,
            Op::OpenSession { secret, .. } => {
                return match self.reply_for(req) {
                    Some(Reply::SessionOpened { session, .. }) => {
                        match self.st.sessions.get(session) {
                            Some(s) if s.secret != *secret => Err(DenyReason::BadSecret),
                            _ => Ok(()),
                        }
                    }
                    _ => Ok(()),
                };
            }
            _ => return Ok(()),
        };
        match self.st.sessions.get(&auth.session) {
            None if matches!(op, Op::CloseSession { .. })
                && Self::closed(self.reply_for(req), auth.session) =>
            {
                Ok(())
            }
            None => Err(DenyReason::UnknownSession),
            Some(s) if s.secret != auth.secret => Err(DenyReason::BadSecret),
            Some(s) if s.client != req.client => Err(DenyReason::WrongClient),
            Some(_) => Ok(()),
        }
    }

    /// Whether `kept` answered a close of `session`: what a retried close may read after
    /// its session is gone.
    pub fn closed(kept: Option<&Reply>, session: SessionId) -> bool {
        matches!(kept, Some(Reply::SessionClosed { session: s, .. }) if *s == session)
    }

    fn dedup(&self, req: RequestId) -> Dedup {
        let Some(rec) = self.st.clients.get(&req.client) else {
            return Dedup::Execute;
        };
        if let Some(reply) = rec.replies.get(req.seq) {
            return Dedup::Replay(reply.clone());
        }
        if req.seq < rec.floor {
            let last_seq = rec.replies.last_seq().unwrap_or(rec.floor);
            return Dedup::Replay(Reply::Denied(DenyReason::StaleRequest { last_seq }));
        }
        Dedup::Execute
    }

    fn remember(&mut self, req: RequestId, reply: &Reply) {
        let now = self.st.now_ms;
        let rec = self
            .st
            .clients
            .entry(req.client)
            .or_insert_with(|| ClientRecord {
                replies: Replies::default(),
                floor: 0,
                live_sessions: 0,
                last_seen_ms: now,
            });
        if let Reply::SessionOpened { .. } = reply {
            rec.live_sessions += 1;
        }
        rec.replies.insert(req.seq, reply.clone());
        // A queued checkout's reply stays until the queue answers it: the answer replaces
        // it there, and the client's retry must find it however much it did meanwhile.
        while rec.replies.len() > REPLY_WINDOW {
            let Some(seq) = rec.replies.forget_oldest_answered() else {
                break;
            };
            rec.floor = rec.floor.max(seq.saturating_add(1));
        }
        self.ix.idle_clients.remove(&(rec.last_seen_ms, req.client));
        rec.last_seen_ms = now;
        if rec.live_sessions == 0 {
            self.ix.idle_clients.insert((now, req.client));
        }
    }

    /// Drops the answers of clients with no session that have been quiet for
    /// [`CLIENT_RETENTION_MS`], a bounded number per entry.
    fn forget_idle_clients(&mut self) {
        let now = self.st.now_ms;
        for _ in 0..CLIENT_GC_PER_ENTRY {
            let Some(&(seen, client)) = self.ix.idle_clients.first() else {
                break;
            };
            if seen.saturating_add(CLIENT_RETENTION_MS) > now {
                break;
            }
            self.ix.idle_clients.pop_first();
            self.st.clients.remove(&client);
        }
    }

    fn authorize(&self, auth: &SessionAuth) -> Result<(), DenyReason> {
        match self.st.sessions.get(&auth.session) {
            None => Err(DenyReason::UnknownSession),
            // Not constant-time: both sides are digests, and the log is not an oracle
            // anyone outside the cluster can time.
            Some(s) if s.secret != auth.secret => Err(DenyReason::BadSecret),
            Some(_) => Ok(()),
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one Op::OpenSession, passed from its one call site"
    )]
    fn open_session(
        &mut self,
        index: u64,
        client: ClientId,
        holder: &Holder,
        origin: &Origin,
        ttl_ms: u64,
        secret: SecretDigest,
        ev: &mut Vec<Event>,
    ) -> Reply {
        let now = self.st.now_ms;
        self.st.sessions.insert(
            index,
            Session {
                client,
                holder: holder.clone(),
                ttl_ms,
                opened_ms: now,
                last_heartbeat_ms: now,
                secret,
                leases: BTreeSet::new(),
                origin: origin.clone(),
            },
        );
        *self.ix.per_identity.entry(origin.identity()).or_default() += 1;
        ev.push(Event::SessionOpened {
            session: index,
            user: holder.user.clone(),
            host: holder.host.clone(),
        });
        Reply::SessionOpened {
            session: index,
            ttl_ms,
        }
    }

    /// A leader asks to expire a session. The checkpointed heartbeat (or the end of the
    /// latest outage, if later) is a lower bound on the real one, so an expiry before it
    /// plus the TTL is certainly wrong (a stale or confused leader) and is ignored.
    fn expiry_due(&self, id: SessionId) -> bool {
        self.st
            .sessions
            .get(&id)
            .is_some_and(|s| self.heartbeat_floor(s).saturating_add(s.ttl_ms) <= self.st.now_ms)
    }

    /// Releases every lease of a session and removes it. Returns the leases released.
    fn end_session(&mut self, id: SessionId, cause: ReleaseCause, ev: &mut Vec<Event>) -> u32 {
        if !self.st.sessions.contains_key(&id) {
            return 0;
        }
        self.drop_waiters_of(id, ev);
        self.st.revocations.remove(&id);
        let Some(session) = self.st.sessions.remove(&id) else {
            return 0;
        };
        let identity = session.origin.identity();
        if let Some(n) = self.ix.per_identity.get_mut(&identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.ix.per_identity.remove(&identity);
            }
        }
        let mut released = 0;
        for lease in &session.leases {
            if self.release(*lease, cause, ev) {
                released += 1;
            }
        }
        let now = self.st.now_ms;
        if let Some(rec) = self.st.clients.get_mut(&session.client) {
            rec.live_sessions = rec.live_sessions.saturating_sub(1);
            if rec.live_sessions == 0 {
                self.ix
                    .idle_clients
                    .remove(&(rec.last_seen_ms, session.client));
                rec.last_seen_ms = rec.last_seen_ms.max(now);
                self.ix
                    .idle_clients
                    .insert((rec.last_seen_ms, session.client));
            }
        }
        released
    }

    // ---- Queries, for the server's services and the leader's lease keeper. ----

    /// The index of the last applied entry.
    pub fn last_applied(&self) -> u64 {
        self.st.last_applied
    }

    /// The ledger's time: the latest entry time applied.
    pub fn now_ms(&self) -> TimeMs {
        self.st.now_ms
    }

    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.st.sessions.get(&id)
    }

    /// Where a session's TTL runs from as far as the log knows: its checkpointed
    /// heartbeat, or the end of the latest outage if that is later.
    pub fn heartbeat_floor(&self, s: &Session) -> TimeMs {
        s.last_heartbeat_ms.max(self.st.resumed_ms)
    }

    /// The end of the latest outage (0: none yet).
    pub fn resumed_ms(&self) -> TimeMs {
        self.st.resumed_ms
    }

    /// Leases revoked from a live session, oldest first.
    pub fn revocations(&self, session: SessionId) -> &[Revocation] {
        self.st.revocations.get(&session).map_or(&[], Vec::as_slice)
    }

    /// The cluster's identity, once its first leader made it.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.st.cluster_id
    }

    /// Live sessions opened by one caller identity ([`Origin::identity`]): what the
    /// server's per-caller session limit counts.
    pub fn live_sessions_of_identity(&self, identity: &str) -> u32 {
        self.ix.per_identity.get(identity).copied().unwrap_or(0)
    }

    /// The time zone license dates are read in (UTC unless one was set).
    pub fn time_zone(&self) -> Zone {
        self.st.zone()
    }

    /// The zone's name as set; `None` while none was ever set (dates read in UTC).
    pub fn time_zone_name(&self) -> Option<&str> {
        self.st.time_zone.as_deref()
    }

    /// Grows by one with every clock repair.
    pub fn clock_epoch(&self) -> u64 {
        self.st.clock_epoch
    }

    /// For a loaded line that is a duplicate, the loaded line that counts in its place.
    pub fn duplicate_of(&self, source: &str, line: u32) -> Option<(&str, u32)> {
        self.ix
            .duplicates
            .get(&(source.to_owned(), line))
            .map(|(s, l)| (s.as_str(), *l))
    }

    /// Every session in id order; `.len()` is O(1) (metrics count them on every scrape).
    pub fn sessions(&self) -> impl ExactSizeIterator<Item = (SessionId, &Session)> {
        self.st.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// Sessions with an id of at least `from`, in id order. Ids are log indexes, so this
    /// is "sessions opened since": what the leader's keeper starts tracking each tick.
    pub fn sessions_from(&self, from: SessionId) -> impl Iterator<Item = (SessionId, &Session)> {
        self.st.sessions.range(from..).map(|(id, s)| (*id, s))
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.st.leases.get(&id)
    }

    /// Every lease in id order; `.len()` is O(1).
    pub fn leases(&self) -> impl ExactSizeIterator<Item = (LeaseId, &Lease)> {
        self.st.leases.iter().map(|(id, l)| (*id, l))
    }

    pub fn seat(&self, id: SeatId) -> Option<&Seat> {
        self.st.seats.get(&id)
    }

    pub fn seats(&self) -> impl Iterator<Item = (SeatId, &Seat)> {
        self.st.seats.iter().map(|(id, s)| (*id, s))
    }

    /// Loaded license files by source name.
    pub fn licenses(&self) -> impl Iterator<Item = (&str, &LicenseFile)> {
        self.st.licenses.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Lingering seats whose time is up at `now`, oldest first, at most `limit`: what the
    /// leader proposes to reclaim next.
    pub fn due_seats(&self, now: TimeMs, limit: usize) -> Vec<SeatId> {
        self.ix
            .lingering
            .iter()
            .take_while(|(until, _)| *until <= now)
            .take(limit)
            .map(|(_, seat)| *seat)
            .collect()
    }

    /// Loaded lines that do not count as themselves (superseded, enabling a package, a
    /// package not enabled), by (source, line), for listings.
    pub fn line_notes(&self) -> &[((String, u32), crate::license::Ineffective)] {
        &self.ix.notes
    }

    /// The loaded lines as they count: superseded lines left out, each package's
    /// components as lines of their own. What feature listings describe.
    pub fn effective_lines(&self) -> &[crate::license::EffectiveLine] {
        &self.ix.effective
    }

    /// A feature's term state at ledger time; `None` if no line of it is loaded.
    pub fn term_state(&self, feature: &str) -> Option<TermState> {
        pool::term_of(self.ix.pools_of(feature), self.st.now_ms)
    }

    /// Seats of `feature` its pools count now (held or lingering).
    pub fn in_use(&self, feature: &str) -> u64 {
        self.ix
            .pools_of(feature)
            .iter()
            .map(pool::Pool::charged)
            .sum()
    }

    /// Named users assigned to `feature`.
    pub fn assigned_count(&self, feature: &str) -> u64 {
        self.st.named.get(feature).map_or(0, |a| a.len() as u64)
    }

    /// Each feature's licensed count and overdraft at ledger time, as
    /// [`Event::Licensed`] last reported them.
    pub fn licensed(&self) -> &BTreeMap<String, (u64, u64)> {
        &self.ix.licensed
    }

    /// Says, in [`Event::Licensed`], which features' licensed counts differ from the
    /// last ones said: what the usage history measures use against.
    fn recount_licensed(&mut self, ev: &mut Vec<Event>) {
        let now = self.st.now_ms;
        let counts = index::licensed_counts(&self.ix.pools, now);
        for (feature, &(issued, overdraft_limit)) in &counts {
            if self.ix.licensed.get(feature) != Some(&(issued, overdraft_limit)) {
                ev.push(Event::Licensed {
                    feature: feature.clone(),
                    issued,
                    overdraft_limit,
                });
            }
        }
        for feature in self.ix.licensed.keys() {
            if !counts.contains_key(feature) {
                ev.push(Event::Licensed {
                    feature: feature.clone(),
                    issued: 0,
                    overdraft_limit: 0,
                });
            }
        }
        self.ix.licensed = counts;
    }

    /// Per-feature counts at the ledger's current time.
    pub fn features(&self) -> Vec<FeatureStatus> {
        let now = self.st.now_ms;
        // One pass over the seats for every feature, not one per feature: the dashboard
        // and metrics call this on every scrape, under the state machine's read lock.
        let mut lingering_of: BTreeMap<&str, u64> = BTreeMap::new();
        for s in self.st.seats.values() {
            if s.lingering_until.is_some() {
                *lingering_of.entry(s.feature.as_str()).or_default() += u64::from(s.count);
            }
        }
        self.ix
            .pools
            .iter()
            .map(|(name, pools)| {
                // A feature with pools of several groupings shows their sums.
                let (issued, overdraft_limit) = pools.iter().fold((0u64, 0u64), |(i, o), p| {
                    let (pi, po) = p.issued(now);
                    (i.saturating_add(pi), o.saturating_add(po))
                });
                let lingering = lingering_of.get(name.as_str()).copied().unwrap_or(0);
                FeatureStatus {
                    name: name.clone(),
                    issued,
                    overdraft_limit,
                    in_use: pools.iter().map(pool::Pool::charged).sum(),
                    lingering,
                    linger_ms: pools.iter().map(|p| p.linger_ms).max().unwrap_or(0),
                    term: pool::term_of(pools, now).unwrap_or(TermState::Expired),
                    model: pools.first().map(|p| p.model).unwrap_or_default(),
                    assigned: self.st.named.get(name).map_or(0, |a| a.len() as u64),
                    window_ends_ms: self.fair_use_window(name).map(|(_, end)| end),
                }
            })
            .collect()
    }
}

/// A feature's counts, for status listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureStatus {
    pub name: String,
    /// Licensed seats counting now (including grace and demo seats).
    pub issued: u64,
    pub overdraft_limit: u64,
    /// Seats charged, held or lingering.
    pub in_use: u64,
    /// Of `in_use`, seats lingering after release.
    pub lingering: u64,
    pub linger_ms: u64,
    pub term: TermState,
    pub model: crate::license::LicenseModel,
    /// Named users assigned (named-user features only).
    pub assigned: u64,
    /// When the open fair-use window ends, if one is open.
    pub window_ends_ms: Option<TimeMs>,
}
