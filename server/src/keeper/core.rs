//! The keeper's decisions, as a pure state machine: it takes the time and a view of the
//! ledger and says what to answer a heartbeat and what to propose next. No clock, no
//! Raft, no locks: the shell in `mod.rs` supplies `now` (the leader's term clock) and
//! proposes what this returns, and the tests drive it on a fake clock.
//!
//! The rules (after etcd's lessor, with its bugs 9395/9888/8097 in mind):
//! - Only an established leader keeps deadlines. On establishing (and after a clock
//!   repair) every session starts from `fresh_start`: its heartbeat floor in the ledger
//!   (checkpoint, or the end of an outage) plus the election timeout plus the checkpoint
//!   lag, so a failover never cuts short a heartbeat the old leader acknowledged. The
//!   start is a fixed function of the ledger, so repeated elections extend nothing.
//! - After a full-cluster outage the ledger has not seen the outage until an entry ends
//!   it (the ledger restarts every TTL there). A new leader that finds the log silent for
//!   longer than the outage gap first writes that entry, then loads deadlines: loaded
//!   before, every deadline would be past and live clients would be told "expired". When
//!   the entry that ended the outage is its own term's, no leader can have acknowledged a
//!   heartbeat since, so sessions not heard of since get exactly their TTL from the
//!   return, without the failover allowance.
//! - A heartbeat moves a session's deadline to now + TTL in memory, but promises the
//!   client only what a successor would grant from the ledger (`durable`): until the
//!   beat is checkpointed, the promise is capped there.
//! - Checkpoints write beats that moved by more than TTL/4, every second, the stalest
//!   first, in entries of [`CHECKPOINT_BATCH`].
//! - Expiries, reclaims and queue service go out in bounded batches per tick; a clock
//!   tick goes out when the log was quiet for a second.

use std::collections::{BTreeSet, HashMap, HashSet};

use tally_core::ledger::{Ledger, Op, SecretDigest, SessionId, TimeMs, OUTAGE_GAP_MS};

/// Most sessions expired, or seats reclaimed, per proposed entry: a mass expiry becomes
/// many small entries instead of one that stalls the log (etcd 8097/12105).
pub const BATCH: usize = 1_000;
/// Expiry batches per tick at most: with [`BATCH`] and a 100 ms tick, 30,000 sessions a
/// second, so a million silent sessions are gone within a minute in small entries.
pub const EXPIRE_BATCHES_PER_TICK: usize = 3;
/// Queue entries per tick at most: each serves one waiter, so a burst of freed seats is
/// handed out within a few ticks without flooding the log.
pub const QUEUE_PER_TICK: usize = 64;
/// How often at most heartbeats are checkpointed into the log.
pub const CHECKPOINT_EVERY_MS: u64 = 1_000;
/// Most beats per checkpoint entry (about 25 bytes each in the log): 50 KB entries, so
/// an AppendEntries of [`crate::config::MAX_PAYLOAD_ENTRIES`] stays a few megabytes
/// that a loaded follower takes well within the transport's deadline. (With 10,000 a
/// 300-entry catch-up append at 100,000 sessions never finished within it, and the
/// follower never caught up.)
pub const CHECKPOINT_BATCH: usize = 2_000;
/// Most checkpoint entries per period: 80,000 beats a second, enough for 250,000
/// sessions at a 10 s TTL (a million at 40 s), while bounding the log a period writes.
pub const CHECKPOINT_ENTRIES: usize = 40;
/// Bound on how far a checkpoint lags an acknowledged heartbeat beyond the TTL/4 rule:
/// the checkpoint period plus a generous commit time.
pub const CHECKPOINT_LAG_MS: u64 = 2_000;
/// The longest the log goes without an entry while a leader is up: a silence longer
/// than the ledger's outage gap then means that no leader was.
pub const TICK_EVERY_MS: u64 = 1_000;

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Alive {
        deadline_ms: TimeMs,
        ttl_ms: u64,
    },
    Unknown,
    BadSecret,
    /// Its deadline passed: the expiry may not be committed yet, but the session is
    /// dead, and a late heartbeat must not be acknowledged as if it were alive.
    Expired,
    /// This node is not (or not surely) the leader.
    NotLeader,
}

/// Where a new leader starts a session's clock, from its heartbeat floor in the ledger.
/// The deadline is this plus the TTL.
pub fn fresh_start(floor_ms: TimeMs, ttl_ms: u64, election_max_ms: u64) -> TimeMs {
    floor_ms.saturating_add(election_max_ms + ttl_ms / 4 + CHECKPOINT_LAG_MS)
}

/// What the keeper remembers while leading.
#[derive(Debug, Default)]
pub struct Core {
    /// The (term, clock epoch) whose deadlines are loaded; `None` while not leading.
    pub(super) loaded: Option<(u64, u64)>,
    /// The term in which this node, leading, found the log silent for longer than the
    /// outage gap and wrote the entry that ends the outage.
    outage_term: Option<u64>,
    /// Last heartbeat seen (or the derived fresh start) per session, with its TTL.
    pub(super) beats: HashMap<SessionId, (TimeMs, u64)>,
    /// Every tracked session by deadline: what expires next is the front, so a tick
    /// costs O(log n) per due session instead of a scan of all of them.
    pub(super) deadlines: BTreeSet<(TimeMs, SessionId)>,
    /// Sessions whose beat moved since the last checkpoint pass.
    pub(super) dirty: HashSet<SessionId>,
    /// The highest session id tracked: session ids are log indexes, so sessions opened
    /// since are exactly those above it.
    tracked_up_to: SessionId,
    /// When the last checkpoint pass ran (`None`: not this term, so the first tick runs
    /// one: the successor's clock starts from checkpoints, so the sooner they are fresh,
    /// the fuller the promises).
    last_checkpoint_ms: Option<TimeMs>,
    election_max_ms: u64,
}

impl Core {
    pub fn new(election_max_ms: u64) -> Core {
        Core {
            election_max_ms,
            ..Core::default()
        }
    }

    /// Whether deadlines are loaded for this term and clock epoch.
    pub fn is_loaded(&self, term: u64, epoch: u64) -> bool {
        self.loaded == Some((term, epoch))
    }

    /// Not leading any more: forget everything.
    pub fn step_down(&mut self) {
        *self = Core::new(self.election_max_ms);
    }

    /// Whether the log has been silent for longer than the outage gap at `now`: then the
    /// leader of `term` must first write the entry that ends the outage (a clock tick),
    /// and establish only once it is applied.
    pub fn outage_pending(&mut self, term: u64, ledger: &Ledger, now: TimeMs) -> bool {
        let silent = now.saturating_sub(ledger.now_ms()) > OUTAGE_GAP_MS;
        if silent {
            self.outage_term = Some(term);
        }
        silent
    }

    /// Loads fresh deadlines for a term (or after a clock repair): see the module docs.
    pub fn establish(&mut self, term: u64, ledger: &Ledger) {
        let ended_outage = self.outage_term == Some(term);
        self.step_down();
        self.outage_term = ended_outage.then_some(term);
        let resumed = ledger.resumed_ms();
        for (id, s) in ledger.sessions() {
            let floor = ledger.heartbeat_floor(s);
            let start = if ended_outage && floor == resumed && s.last_heartbeat_ms < resumed {
                floor
            } else {
                fresh_start(floor, s.ttl_ms, self.election_max_ms)
            };
            self.touch(id, start, s.ttl_ms);
            self.tracked_up_to = self.tracked_up_to.max(id);
        }
        self.loaded = Some((term, ledger.clock_epoch()));
    }

    /// Records a beat (never moving one back) and re-files the session's deadline.
    pub(super) fn touch(&mut self, id: SessionId, beat: TimeMs, ttl: u64) -> bool {
        if let Some(&(old, old_ttl)) = self.beats.get(&id) {
            if old >= beat {
                return false;
            }
            self.deadlines.remove(&(old.saturating_add(old_ttl), id));
        }
        self.beats.insert(id, (beat, ttl));
        self.deadlines.insert((beat.saturating_add(ttl), id));
        true
    }

    pub(super) fn forget(&mut self, id: SessionId) {
        if let Some((beat, ttl)) = self.beats.remove(&id) {
            self.deadlines.remove(&(beat.saturating_add(ttl), id));
        }
        self.dirty.remove(&id);
    }

    /// Renews sessions (id and secret digest each) at `now`; one answer per session, in
    /// order. The caller has checked that this node surely leads.
    pub fn heartbeat(
        &mut self,
        ledger: &Ledger,
        now: TimeMs,
        sessions: &[(SessionId, SecretDigest)],
    ) -> Vec<Beat> {
        if self.loaded.is_none() {
            return vec![Beat::NotLeader; sessions.len()];
        }
        sessions
            .iter()
            .map(|(session, secret)| {
                let (ttl_ms, durable_ms) = match ledger.session(*session) {
                    None => return Beat::Unknown,
                    Some(s) if s.secret != *secret => return Beat::BadSecret,
                    Some(s) => (
                        s.ttl_ms,
                        fresh_start(ledger.heartbeat_floor(s), s.ttl_ms, self.election_max_ms)
                            .saturating_add(s.ttl_ms),
                    ),
                };
                if let Some(&(beat, ttl)) = self.beats.get(session) {
                    if beat.saturating_add(ttl) <= now {
                        return Beat::Expired;
                    }
                }
                if self.touch(*session, now, ttl_ms) {
                    self.dirty.insert(*session);
                }
                // Promise only what a successor would honour: a new leader starts from
                // the checkpoint, so until this beat is checkpointed (within a second or
                // so) the promise is capped there. This node itself keeps the session
                // until now + TTL.
                Beat::Alive {
                    deadline_ms: now.saturating_add(ttl_ms).min(durable_ms),
                    ttl_ms,
                }
            })
            .collect()
    }

    /// Starts tracking sessions opened since the last look (from their open time, which
    /// the ledger records as their first checkpoint).
    pub fn track_new(&mut self, ledger: &Ledger) {
        let from = self.tracked_up_to.saturating_add(1);
        let new: Vec<(SessionId, TimeMs, u64)> = ledger
            .sessions_from(from)
            .map(|(id, s)| (id, ledger.heartbeat_floor(s), s.ttl_ms))
            .collect();
        for (id, beat, ttl) in new {
            self.touch(id, beat, ttl);
            self.tracked_up_to = self.tracked_up_to.max(id);
        }
    }

    /// Sessions past their deadline at `now` that the ledger agrees are due, at most
    /// [`BATCH`]. Sessions the ledger no longer has are forgotten; sessions whose floor
    /// in the ledger moved past our beat (a previous leader's checkpoint, an outage) are
    /// re-filed from it.
    pub fn due_expiries(&mut self, ledger: &Ledger, now: TimeMs) -> Vec<SessionId> {
        let front: Vec<SessionId> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .take(BATCH)
            .collect();
        let mut due = Vec::with_capacity(front.len());
        for id in front {
            match ledger.session(id) {
                None => self.forget(id),
                Some(s) if ledger.heartbeat_floor(s).saturating_add(s.ttl_ms) > now => {
                    self.touch(id, ledger.heartbeat_floor(s), s.ttl_ms);
                }
                Some(_) => due.push(id),
            }
        }
        due
    }

    /// After an expiry entry was applied: expired sessions are forgotten; any the ledger
    /// kept (its own rule found them not due) stay tracked from the ledger's floor, so no
    /// session is ever left untracked.
    pub fn expired(&mut self, ledger: &Ledger, sessions: &[SessionId]) {
        for id in sessions {
            match ledger.session(*id) {
                None => self.forget(*id),
                Some(s) => {
                    let floor = ledger.heartbeat_floor(s);
                    self.forget(*id);
                    self.touch(*id, floor, s.ttl_ms);
                }
            }
        }
    }

    /// A checkpoint to propose, if one is due at `now`: beats that moved by more than
    /// TTL/4 since the ledger's checkpoint of them. Only sessions that beat since the last
    /// pass are looked at.
    pub fn checkpoint(&mut self, ledger: &Ledger, now: TimeMs) -> Vec<Op> {
        if self
            .last_checkpoint_ms
            .is_some_and(|t| now < t.saturating_add(CHECKPOINT_EVERY_MS))
        {
            return Vec::new();
        }
        self.last_checkpoint_ms = Some(now);
        // Every beat that moved enough, the stalest in the ledger first. The beats to
        // write grow with sessions/TTL (each heartbeat, at TTL/3, moves past TTL/4):
        // 30,000 a second at 100,000 sessions and a 10 s TTL. A fixed 10,000 a period,
        // taken in the hash set's order, left the same sessions behind every second
        // until their checkpoints were older than a TTL, and the next leader expired
        // 46,901 live sessions on promotion (BENCHMARKS.md, "Overload").
        let mut due: Vec<(TimeMs, SessionId, TimeMs)> = Vec::new();
        for id in self.dirty.drain() {
            let (Some(&(beat, _)), Some(s)) = (self.beats.get(&id), ledger.session(id)) else {
                continue;
            };
            if beat > s.last_heartbeat_ms + s.ttl_ms / 4 {
                due.push((s.last_heartbeat_ms, id, beat.min(now)));
            }
        }
        due.sort_unstable();
        let mut chunks = due.chunks(CHECKPOINT_BATCH);
        let ops: Vec<Op> = chunks
            .by_ref()
            .take(CHECKPOINT_ENTRIES)
            .map(|c| Op::CheckpointHeartbeats {
                beats: c.iter().map(|&(_, id, beat)| (id, beat)).collect(),
            })
            .collect();
        // Beyond the bound, the rest wait for the next period, first in line then.
        for c in chunks {
            self.dirty.extend(c.iter().map(|&(_, id, _)| id));
        }
        ops
    }

    /// A clock tick to propose, if the log was quiet for [`TICK_EVERY_MS`] at `now`.
    pub fn tick(&self, ledger: &Ledger, now: TimeMs) -> Option<Op> {
        (now.saturating_sub(ledger.now_ms()) >= TICK_EVERY_MS).then_some(Op::Tick)
    }
}
