//! An independent model of seats, written from the design brief (docs/DESIGN.md's
//! ledger concepts and the second phase's decisions), not from the ledger's code: it
//! never calls `Ledger::apply`, and shares only the vocabulary (the `Op` and `Event`
//! types it reads from the archives).
//!
//! It walks the committed history entry by entry, keeps its own sessions, leases, seats,
//! waiters and license pools, and judges every event by the entry that carried it:
//!
//! - **count**: after every entry, the seats charged to a feature (held or lingering)
//!   are at most what its loaded lines grant (seats + overdraft, a canonical line
//!   counting once however many files load it), also right after a reload lowered it;
//! - **grants**: only a checkout by the session itself, or the queue for a session that
//!   waits; lease id and fencing token are the granting entry's index; a request is
//!   granted once; a seat is reused only by its owner while it lingers, and shared only
//!   under `DUP_GROUP` by the same user (and host, for `UH`);
//! - **releases** each have a cause in their entry: a checkin of that lease by its
//!   session, the session's close, its expiry (only once TTL has passed since its last
//!   checkpointed heartbeat or the end of an outage), an admin removal, or a revocation
//!   by a license change; a seat that loses its last holder lingers exactly its LINGER
//!   or, with none (or after a removal or revocation), is freed at once; a lingering seat
//!   is reclaimed only once its linger is over (or revoked by a license change);
//! - **revocations** only when the pool is over its count, lingering seats first, then
//!   held ones newest grant first;
//! - **queue**: a waiter is granted at most once, first come first served among those
//!   that fit; no new checkout takes a fresh seat while a waiter fits; a wait ends only by
//!   its timeout, its session's end, an admin's cancel or the queue's answer;
//! - **liveness of the obvious kind**: a checkout is not refused or queued while seats are
//!   free and nobody waits; a due expiry, a due reclaim, a checkin or an admin removal
//!   proposed with valid credentials does what it says.
//!
//! Scope, on purpose: features whose lines are all permanent, started, floating and
//! without edition caps (what the fault harness loads). Features with term or named-user
//! lines are not judged on counts (`judged` is false): their rules (grace, demo seats,
//! fair-use windows) are out of this model's reach, and are tested in the ledger.

mod entry;
mod events;
mod queue;
mod releases;

use std::collections::{BTreeMap, BTreeSet};

use tally_core::ledger::{ClientId, RequestId, SecretDigest};
use tally_core::license::{
    canonical_line, Count, DupGroup, Expiry, FeatureLine, LicenseModel, LineKind,
};

/// A session as the model knows it.
#[derive(Debug, Clone)]
struct Sess {
    client: ClientId,
    secret: SecretDigest,
    owner: Owner,
    ttl_ms: u64,
    /// The latest checkpointed heartbeat (at least the open): where its TTL runs from.
    beat_ms: u64,
}

/// Who a seat belongs to: user, host, display.
type Owner = (String, String, String);

#[derive(Debug, Clone)]
struct LeaseM {
    seat: u64,
    session: u64,
    feature: String,
}

#[derive(Debug, Clone)]
struct SeatM {
    feature: String,
    count: u32,
    owner: Owner,
    holders: BTreeSet<u64>,
    linger_until: Option<u64>,
    /// The index of the latest grant on it: "newest grant first" revokes by this.
    token: u64,
}

#[derive(Debug, Clone)]
struct WaiterM {
    session: u64,
    feature: String,
    count: u32,
    deadline: Option<u64>,
    req: RequestId,
}

/// What the loaded lines of one feature grant.
#[derive(Debug, Clone)]
struct Pool {
    /// Seats plus overdraft; `None`: uncounted.
    cap: Option<u64>,
    linger_ms: u64,
    dup: DupGroup,
    /// Counts are judged (see the module docs).
    judged: bool,
    /// One version among the lines: then "fits" is a plain sum, and the queue's and
    /// denials' rules are judged too.
    single_version: bool,
}

/// The model. Feed it entries with [`Model::step`]; read the verdicts in `violations`.
#[derive(Debug, Default)]
pub struct Model {
    now: u64,
    resumed: u64,
    /// Source → (index that loaded it, its lines).
    licenses: BTreeMap<String, (u64, Vec<FeatureLine>)>,
    sessions: BTreeMap<u64, Sess>,
    leases: BTreeMap<u64, LeaseM>,
    seats: BTreeMap<u64, SeatM>,
    waiters: BTreeMap<u64, WaiterM>,
    /// Place → the index that answered it.
    served: BTreeMap<u64, u64>,
    /// Highest request sequence seen per client: a higher one is new to the cluster.
    max_seq: BTreeMap<ClientId, u64>,
    granted_reqs: BTreeMap<RequestId, u64>,
    /// Lease → (session, token) of every grant ever.
    pub grants: BTreeMap<u64, (u64, u64)>,
    /// Session → entry time of its expiry / close.
    pub expired_at: BTreeMap<u64, u64>,
    pub closed_at: BTreeMap<u64, u64>,
    /// Sessions an administrator closed: a crashed client's session may end so.
    pub closed_by_admin: std::collections::BTreeSet<u64>,
    /// What was seen, for the soak's summary (grants from the queue, shared seats, ...).
    pub seen: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
    cur: entry::Scratch,
}

fn owner_matches(dup: DupGroup, a: &Owner, b: &Owner) -> bool {
    // The brief's rule, spelled out here rather than taken from the ledger: grouped
    // checkouts share when they agree on every part the grouping names (none under
    // SITE). Without grouping a lingering seat comes back to the same user on the same
    // host (the brief: "the same user, per the duplicate grouping"); the ledger may ask
    // for more (the display too), never less.
    let (user, host, display) = match dup {
        DupGroup::None => (true, true, false),
        DupGroup::User => (true, false, false),
        DupGroup::UserHost => (true, true, false),
        DupGroup::Host => (false, true, false),
        DupGroup::Display => (false, false, true),
        DupGroup::UserDisplay => (true, false, true),
        DupGroup::HostDisplay => (false, true, true),
        DupGroup::UserHostDisplay => (true, true, true),
        DupGroup::Site => (false, false, false),
    };
    (!user || a.0 == b.0) && (!host || a.1 == b.1) && (!display || a.2 == b.2)
}

impl Model {
    /// What the loaded lines grant `feature` now; `None` if no line of it is loaded.
    fn pool(&self, feature: &str) -> Option<Pool> {
        let mut by_load: Vec<&(u64, Vec<FeatureLine>)> = self.licenses.values().collect();
        by_load.sort_by_key(|(at, _)| *at);
        let mut canon = BTreeSet::new();
        let mut pool: Option<Pool> = None;
        let mut versions = BTreeSet::new();
        let lines: Vec<&FeatureLine> = by_load
            .iter()
            .flat_map(|(_, ls)| ls)
            .filter(|l| l.name == feature && canon.insert(canonical_line(l)))
            .collect(); // a line loaded already counts once
                        // FlexNet: only the first FEATURE line of a feature counts (higher version, then
                        // newer ISSUED, then the one loaded first); INCREMENT lines add. Among the lines
                        // that count now: the judged ones are permanent and started.
        let counts_now = |l: &FeatureLine| {
            l.start.is_none_or(|d| d.start_ms() <= self.now)
                && match l.expiry {
                    Expiry::Permanent => true,
                    Expiry::On(d) => self.now < d.end_ms(),
                }
        };
        let first_feature = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kind == LineKind::Feature && counts_now(l))
            .min_by(|(i, a), (j, b)| {
                b.version
                    .cmp(&a.version)
                    .then_with(|| {
                        b.issued
                            .map(|d| d.start_ms())
                            .cmp(&a.issued.map(|d| d.start_ms()))
                    })
                    .then_with(|| i.cmp(j))
            })
            .map(|(i, _)| i);
        for (i, line) in lines.iter().enumerate() {
            if line.kind == LineKind::Feature && counts_now(line) && Some(i) != first_feature {
                continue;
            }
            versions.insert(line.version.clone());
            let judged = line.expiry == Expiry::Permanent
                && line.start.is_none_or(|d| d.start_ms() <= self.now)
                && line.model == LicenseModel::Floating
                && line.edition.is_none();
            let seats = match line.count {
                Count::Seats(n) => Some(u64::from(n) + u64::from(line.overdraft)),
                Count::Uncounted => None,
            };
            let p = pool.get_or_insert(Pool {
                cap: Some(0),
                linger_ms: 0,
                dup: line.dup_group,
                judged: true,
                single_version: true,
            });
            p.cap = p.cap.zip(seats).map(|(a, b)| a + b);
            p.linger_ms = p.linger_ms.max(u64::from(line.linger_secs) * 1_000);
            p.judged &= judged;
        }
        if let Some(p) = &mut pool {
            p.single_version = versions.len() == 1;
        }
        pool
    }

    /// Seats charged to `feature`: held or lingering.
    fn charged(&self, feature: &str) -> u64 {
        self.seats
            .values()
            .filter(|s| s.feature == feature)
            .map(|s| u64::from(s.count))
            .sum()
    }

    /// The count to judge `feature` by, if it is judged and counted; `Some(0)` when no
    /// line of it is loaded (nothing grants any seat).
    fn judged_cap(&self, feature: &str) -> Option<u64> {
        match self.pool(feature) {
            None => Some(0),
            Some(p) if p.judged => p.cap,
            Some(_) => None,
        }
    }

    /// The earliest waiter of `feature` that fresh seats could serve now.
    fn waiter_that_fits(&self, feature: &str) -> Option<u64> {
        let p = self.pool(feature)?;
        let cap = p.cap.filter(|_| p.judged && p.single_version)?;
        let charged = self.charged(feature);
        self.waiters
            .iter()
            .find(|(_, w)| w.feature == feature && charged + u64::from(w.count) <= cap)
            .map(|(place, _)| *place)
    }

    /// Whether `count` fresh seats of `feature` were certainly free for a new checkout:
    /// they fit, and no waiter could take them first.
    fn certainly_free(&self, feature: &str, count: u32) -> Option<u64> {
        let p = self.pool(feature)?;
        let cap = p.cap.filter(|_| p.judged && p.single_version)?;
        let charged = self.charged(feature);
        (charged + u64::from(count) <= cap && self.waiter_that_fits(feature).is_none())
            .then(|| cap - charged)
    }

    fn bad(&mut self, what: String) {
        self.violations
            .push(format!("index {}: {what}", self.cur.index));
    }

    fn count(&mut self, what: &'static str) {
        *self.seen.entry(what).or_default() += 1;
    }

    /// Drops a lease from its seat; notes the seat if it lost its last holder.
    fn drop_lease(&mut self, lease: u64) -> Option<LeaseM> {
        let l = self.leases.remove(&lease)?;
        self.cur.released.insert(lease);
        if let Some(s) = self.seats.get_mut(&l.seat) {
            s.holders.remove(&lease);
            if s.holders.is_empty() {
                self.cur.emptied.insert(l.seat);
            }
        }
        Some(l)
    }

    /// Seats still lingering at the end, with their linger end: (seat, feature, until).
    pub fn lingering(&self) -> Vec<(u64, String, u64)> {
        self.seats
            .iter()
            .filter_map(|(id, s)| s.linger_until.map(|u| (*id, s.feature.clone(), u)))
            .collect()
    }

    /// Leases still held at the end: lease → session.
    pub fn held(&self) -> BTreeMap<u64, u64> {
        self.leases.iter().map(|(id, l)| (*id, l.session)).collect()
    }
}
