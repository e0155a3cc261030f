//! The vocabulary of the ledger: what goes into the log ([`Entry`], [`Op`]), what comes
//! out of applying it ([`Outcome`]: the [`Reply`] for the caller and the [`Event`]s for
//! history, metering and metrics).

use serde::{Deserialize, Serialize};

use crate::license::{ClusterId, LicenseFile, Version};
use crate::options::{DenialCode, Options};

/// Milliseconds since the Unix epoch, as stamped by the leader that proposed an entry.
pub type TimeMs = u64;

/// A session's id: the log index of the entry that opened it, so it is unique for the
/// life of the cluster and never reused.
pub type SessionId = u64;

/// A lease's id: the log index of the entry that first granted it.
pub type LeaseId = u64;

/// A seat's id: the log index of the entry that first charged it to its pool. A seat is
/// what the pool counts; several leases can share one seat under `DUP_GROUP`.
pub type SeatId = u64;

/// A client process's random id. With `seq` it names one request for idempotency.
pub type ClientId = [u8; 16];

/// A digest of a session's secret. The ledger never sees the secret itself (it would end
/// up in every snapshot); the server hashes what the client presents and the ledger
/// compares digests, so the check is replicated like everything else.
pub type SecretDigest = [u8; 32];

/// Names one mutating request: a retry carries the same id and gets the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: ClientId,
    /// Grows by at least one per new request of this client; a retry repeats it.
    pub seq: u64,
}

/// One log entry as the ledger sees it: the Raft log index it sits at and the time at
/// which the leader proposed it. Time comes only from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub at_ms: TimeMs,
    pub op: Op,
}

/// Who is asking, as given when the session was opened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub display: String,
    pub pid: u32,
}

/// What the caller of an open proved about itself, as the server saw it: the client
/// certificate's name, if it presented one, and its network address. Unlike [`Holder`],
/// none of it is self-asserted.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub cert: Option<String>,
    pub addr: String,
}

impl Origin {
    /// What per-caller limits count by: the certificate if there is one (a workstation's
    /// identity survives an address change), else the address.
    pub fn identity(&self) -> String {
        match &self.cert {
            Some(c) => format!("cert {c}"),
            None => format!("addr {}", self.addr),
        }
    }
}

/// Authenticates a session-scoped request: the session and the digest of its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAuth {
    pub session: SessionId,
    pub secret: SecretDigest,
}

/// A state change, proposed by a client request, an admin, or the leader's lease keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A client process starts a session. `ttl_ms` is already clamped by the server.
    OpenSession {
        req: RequestId,
        holder: Holder,
        ttl_ms: u64,
        secret: SecretDigest,
        #[serde(default)]
        origin: Origin,
    },
    /// Take `count` seats of `feature` at `version` or later, all or nothing. With
    /// `wait_ms`, a checkout that finds no free seats joins the feature's queue instead of
    /// being denied, for that long (`Some(0)`: for as long as the session lives).
    Checkout {
        req: RequestId,
        auth: SessionAuth,
        feature: String,
        version: Version,
        count: u32,
        wait_ms: Option<u64>,
    },
    /// Give back one lease; its seat lingers if the pool has a linger time.
    Checkin {
        req: RequestId,
        auth: SessionAuth,
        lease: LeaseId,
    },
    /// End a session on purpose: every lease is checked in (and lingers).
    CloseSession { req: RequestId, auth: SessionAuth },
    /// The leader's record of the last heartbeat it saw per session, written at a bounded
    /// rate so that a new leader can derive deadlines that a dead client cannot outlive.
    CheckpointHeartbeats { beats: Vec<(SessionId, TimeMs)> },
    /// The leader saw these sessions miss their deadline. Their seats linger.
    ExpireSessions { sessions: Vec<SessionId> },
    /// The leader saw these seats' linger end. Seats not yet due are left alone.
    ReclaimSeats { seats: Vec<SeatId> },
    /// An administrator takes a lease away; its seat is freed at once, without linger.
    RemoveLease { lease: LeaseId },
    /// An administrator ends a session (a stuck or abandoned client): its leases are
    /// removed as by `RemoveLease`, its waits end, and the session is gone.
    CloseSessionByAdmin { session: SessionId },
    /// An administrator cancels a queued checkout; its client hears `WaitCancelled`.
    CancelWait { place: u64 },
    /// Replace the lines loaded from `source` (a file name) by `license`'s. Signatures
    /// were verified by the server before proposing; the ledger checks consistency.
    LoadLicense {
        source: String,
        license: LicenseFile,
    },
    /// Forget the lines loaded from `source`.
    UnloadLicense { source: String },
    /// The leader saw queue work due: waiters whose wait ended are answered with a
    /// timeout, and the earliest-queued waiter that can be answered now is (with a grant,
    /// whose lease id is this entry's index, so one waiter is served per entry).
    ServeQueue,
    /// The leader's clock entry, proposed whenever nothing else was for a second: it
    /// carries time into the ledger while the cluster is idle, so term boundaries (a
    /// license's grace ending) are acted on promptly, and so a silence of more than
    /// [`OUTAGE_GAP_MS`](super::OUTAGE_GAP_MS) between entries reliably means that no
    /// leader was up (see [`Ledger::apply`](super::Ledger::apply)).
    Tick,
    /// The cluster's identity, made by its first leader. Only the first one counts.
    SetClusterId { id: ClusterId },
    /// An administrator's repair for the day a bad time got into the log (every clock of
    /// the site was wrong at once, say): ledger time is set back to `to_ms`, times that
    /// lie beyond it are pulled back with it, and every session's TTL starts afresh.
    RepairClock { to_ms: TimeMs },
    /// An administrator names users of a named-user feature (see `named.rs`).
    AssignUsers { feature: String, users: Vec<String> },
    /// An administrator takes users off a named-user feature; their seats are revoked.
    UnassignUsers { feature: String, users: Vec<String> },
    /// The time zone license dates are read in (an IANA name, see
    /// [`Zone`](crate::license::Zone)); UTC until one is set. A name this build does not
    /// know is refused and changes nothing. With `only_if_unset` (the first leader's
    /// default from its node config) it applies only while no zone was ever set, so
    /// a default that reaches the log after an administrator's choice never undoes it.
    /// Appended: postcard encodes variants by position.
    SetTimeZone { zone: String, only_if_unset: bool },
    /// An administrator's options file (see [`crate::options`]), replacing the one in
    /// force as a whole. It travels parsed, not as text: the entry then means the same to
    /// every node whatever parser its release has (a rolling upgrade that fixed a parser
    /// corner must not make nodes disagree on a policy already in the log), and the
    /// server has parsed it once anyway to tell the admin where a mistake is. A file
    /// whose RESERVE lines overbook a pool is refused and changes nothing
    /// ([`Reply::OptionsRefused`]). Appended: postcard encodes variants by position.
    LoadOptions { options: Options },
    /// Back to no options file: everyone may use everything. Appended.
    ClearOptions,
}

/// Why a checkout or a session-scoped request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    UnknownFeature,
    /// No line of the feature has a version at least the one asked for.
    VersionTooNew {
        requested: Version,
        highest: Version,
    },
    /// Every line of the feature starts later than now.
    NotYetStarted {
        start_ms: TimeMs,
    },
    /// Every line has expired (and its grace period, if any, ended) with no demo seats.
    Expired {
        expired_ms: TimeMs,
    },
    /// Not enough seats. `in_use` counts lingering seats too; `available` is what the
    /// eligible lines grant including overdraft.
    NoSeats {
        requested: u32,
        in_use: u64,
        available: u64,
    },
    /// Zero seats, or more than any pool could ever grant.
    InvalidCount {
        requested: u32,
    },
    UnknownSession,
    BadSecret,
    /// The session exists but does not hold this lease.
    UnknownLease,
    /// This client already made a request with a higher sequence number; this one is
    /// a late duplicate and its answer is gone.
    StaleRequest {
        last_seq: u64,
    },
    /// A queued checkout waited as long as it asked to without a seat coming free.
    QueueTimeout {
        waited_ms: u64,
    },
    /// The session (`per_session`) or the feature already has `limit` waiters.
    QueueFull {
        limit: u32,
        per_session: bool,
    },
    /// An administrator cancelled the wait.
    WaitCancelled,
    /// The feature is licensed to named users, and this user is not one of them.
    NamedUserNotAssigned,
    /// This user is assigned beyond the feature's `count`, and the fair-use window for
    /// that ended at `window_ended_ms`.
    NamedUserBlocked {
        window_ended_ms: TimeMs,
        count: u64,
    },
    /// Users can be assigned only to a feature whose license is `USER_BASED`.
    NotNamedUser,
    /// The request names a live session that another client id opened. A session's
    /// requests carry its opener's client id, whose window of kept answers is the
    /// session's own: another's request id would get the opener's answers, or put its
    /// answers into the opener's window.
    WrongClient,
    /// Seats are free, but `waiting` earlier queued requests that fit go first (first
    /// come, first served among servable requests): a fresh checkout does not jump the
    /// queue. Fields as in `NoSeats`. (Appended: the enum is in stored replies.)
    QueuedAhead {
        requested: u32,
        in_use: u64,
        available: u64,
        waiting: u32,
    },
    /// The feature is a component of `suite`, whose own seat every checkout of a
    /// component also takes, and the suite refused it for `reason`.
    SuiteDenied {
        suite: String,
        reason: Box<DenyReason>,
    },
    /// The site's options file refuses it: `code` says how, `line` and `directive` (its
    /// canonical text) which line of the file, `detail` the particulars. Appended: the
    /// enum is in stored replies.
    Policy {
        code: DenialCode,
        line: u32,
        directive: String,
        detail: String,
    },
}

/// Why a license load was refused. Nothing of the load is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadError {
    /// Lines of one feature disagree on something a pool can have only one of.
    Conflict {
        feature: String,
        line: u32,
        what: String,
    },
    NoSuchSource {
        source: String,
    },
    /// The line is locked to another cluster (`CLUSTER=`), or this cluster has no
    /// identity yet (`this` is `None`: its first leader has not made it).
    WrongCluster {
        feature: String,
        line: u32,
        locked_to: ClusterId,
        this: Option<ClusterId>,
    },
}

/// A line of a loaded file whose canonical form is already loaded (from this file or
/// another): it is kept, but counts once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub line: u32,
    pub of_source: String,
    pub of_line: u32,
}

/// Why the cluster took a held seat away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeReason {
    /// Loading or unloading `source` left the feature fewer seats than were held.
    LicenseChanged { source: String },
    /// Lines of the feature reached the end of their term (expiry plus grace); `remaining`
    /// seats still count (the demo count, once every line has ended).
    TermEnded { remaining: u64 },
    /// An administrator unassigned the user from the named-user feature.
    UserUnassigned,
    /// The user is assigned beyond the count, and the fair-use window ended.
    FairUseEnded { window_ended_ms: TimeMs },
    /// An administrator removed the lease (`tallyctl remove`, FlexNet's lmremove).
    RemovedByAdmin,
}

/// A lease the cluster revoked, kept with its session so the holder's next heartbeat
/// answer can say so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub lease: LeaseId,
    pub feature: String,
    pub reason: RevokeReason,
    pub at_ms: TimeMs,
}

/// The answer to the proposer of an entry. Retries of a client request get the stored
/// reply of the first attempt, bit for bit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    SessionOpened {
        session: SessionId,
        ttl_ms: u64,
    },
    Granted(Grant),
    Denied(DenyReason),
    /// The checkout waits in its feature's queue at `position` (1 = next). `place` names
    /// the wait; once served, a retry of the same request answers the grant or denial.
    Queued {
        place: u64,
        position: u32,
    },
    /// `lingering_until` is set when the seat stays counted for its last user.
    Released {
        lease: LeaseId,
        lingering_until: Option<TimeMs>,
    },
    SessionClosed {
        session: SessionId,
        released: u32,
    },
    /// For leader and admin entries: how many of the named things were acted upon.
    Done {
        affected: u32,
    },
    LicenseLoaded {
        source: String,
        lines: u32,
        /// Lines of this file that were loaded already: they count once.
        duplicates: Vec<Duplicate>,
    },
    LoadRefused(LoadError),
    /// The entry's index did not follow the last applied one; nothing was changed. A
    /// correct Raft shell never causes this.
    OutOfOrder {
        last_applied: u64,
    },
    /// `SetTimeZone` named no zone this build knows (`zone`: the name, cut short);
    /// nothing was changed. Appended: the enum is in stored replies.
    UnknownTimeZone {
        zone: String,
    },
    /// `LoadOptions` took effect; `lines`: its directives. Appended.
    OptionsLoaded {
        lines: u32,
    },
    /// `LoadOptions` was refused, nothing changed: the RESERVE lines of `feature` (from
    /// the first that does not fit, `lines`) reserve `reserved` seats of a pool of
    /// `seats`. Appended.
    OptionsRefused {
        feature: String,
        reserved: u64,
        seats: u32,
        lines: Vec<u32>,
    },
}

/// A granted checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub lease: LeaseId,
    pub seat: SeatId,
    /// The log index of this grant. Strictly greater than every earlier grant's token,
    /// so a resource can refuse a holder whose token is older than one it has seen.
    pub fencing_token: u64,
    pub count: u32,
    /// Seats of this grant beyond the licensed count (metered as overuse).
    pub overdraft: u32,
    /// The grant took over a seat lingering for the same user.
    pub reused: bool,
    /// The grant shares a seat already held by the same user (`DUP_GROUP`).
    pub shared: bool,
    /// The ledger time of the grant, so a retry's answer is identical to the first.
    pub granted_ms: TimeMs,
}

/// Why a lease stopped being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseCause {
    Checkin,
    SessionClosed,
    SessionExpired,
}

/// What happened, in order, while applying one entry. The history checker, usage
/// reports and metrics are all built from these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    SessionOpened {
        session: SessionId,
        user: String,
        host: String,
    },
    Granted {
        feature: String,
        session: SessionId,
        grant: Grant,
    },
    Denied {
        feature: String,
        session: SessionId,
        reason: DenyReason,
    },
    Released {
        feature: String,
        lease: LeaseId,
        seat: SeatId,
        cause: ReleaseCause,
    },
    /// A seat's last lease was released; it stays counted until `until`.
    Lingering {
        feature: String,
        seat: SeatId,
        until: TimeMs,
    },
    /// A seat went back to its pool: its linger ended, or it was released with none.
    Reclaimed {
        feature: String,
        seat: SeatId,
        count: u32,
        /// When the pool began counting it: with this entry's time, its span of use.
        charged_ms: TimeMs,
    },
    SessionExpired {
        session: SessionId,
    },
    SessionClosed {
        session: SessionId,
    },
    Removed {
        feature: String,
        lease: LeaseId,
    },
    Queued {
        feature: String,
        session: SessionId,
        place: u64,
    },
    /// A wait ended without a grant (timeout, session gone, feature gone).
    Dequeued {
        feature: String,
        place: u64,
        reason: DenyReason,
    },
    LicenseLoaded {
        source: String,
        lines: u32,
    },
    LicenseUnloaded {
        source: String,
    },
    /// The cluster took a held lease away; its seat is freed at once (no linger).
    Revoked {
        feature: String,
        lease: LeaseId,
        seat: SeatId,
        session: SessionId,
        reason: RevokeReason,
    },
    /// This entry came more than [`OUTAGE_GAP_MS`](super::OUTAGE_GAP_MS) after the one
    /// before: nobody could heartbeat for `silent_ms`, so every session's TTL restarts now.
    Resumed {
        silent_ms: u64,
    },
    ClusterIdSet {
        id: ClusterId,
    },
    ClockRepaired {
        from_ms: TimeMs,
        to_ms: TimeMs,
    },
    UsersAssigned {
        feature: String,
        users: Vec<String>,
    },
    UsersUnassigned {
        feature: String,
        users: Vec<String>,
    },
    /// A named-user feature became over-assigned: users beyond its count work until
    /// `until_ms`, then are blocked.
    FairUseOpened {
        feature: String,
        until_ms: TimeMs,
    },
    /// The count covers every assigned user again.
    FairUseClosed {
        feature: String,
    },
    /// A pool's term state changed as ledger time passed, or as a change of the time
    /// zone moved its boundaries (see [`TermState`](super::TermState)).
    TermChanged {
        feature: String,
        state: super::TermState,
    },
    /// License dates are read in `zone` from now on (`previous`: the zone before; `None`
    /// for none set, which reads as UTC). Appended: postcard encodes variants by position.
    TimeZoneSet {
        zone: String,
        previous: Option<String>,
    },
    /// A feature's licensed count or overdraft limit changed (a license loaded or
    /// unloaded, a term began or ended, the zone or the clock moved): what use is
    /// measured against from this entry on. Appended, like `TimeZoneSet`.
    Licensed {
        feature: String,
        issued: u64,
        overdraft_limit: u64,
    },
    /// A site options file took effect (`directives`: 0 when the policy was cleared).
    /// Appended.
    OptionsLoaded {
        directives: u32,
    },
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub reply: Reply,
    pub events: Vec<Event>,
}
