//! The leader's lease keeper (after etcd's lessor): session deadlines in memory, renewed
//! by heartbeats that never touch Raft; expiries, reclaims and heartbeat checkpoints
//! proposed as log entries, in bounded batches.
//!
//! Only a leader keeps deadlines, and only once it has applied the first entry of its own
//! term: then every session gets a fresh deadline from its checkpointed last heartbeat plus
//! TTL plus the election timeout plus the checkpoint lag, so a failover never expires a
//! session before TTL after a heartbeat any leader acknowledged, while the
//! checkpoints (written at a bounded rate) keep repeated elections from keeping a dead
//! session alive forever.
//!
//! After a full-cluster outage (the log silent for longer than the ledger's outage gap),
//! a new leader first writes the entry that ends the outage, where the ledger restarts
//! every TTL, and loads deadlines only then: sessions not heard of since get exactly their
//! TTL from the return, so a live client that heartbeats within it keeps its seats and a
//! dead one is expired a TTL after the return.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tally_core::ledger::{Op, SecretDigest, SessionId, TimeMs, OUTAGE_GAP_MS};
use tokio::sync::broadcast;
use tracing::Instrument as _;

use crate::node::Shared;

/// Most sessions expired, or seats reclaimed, per proposed entry: a mass expiry becomes
/// many small entries instead of one that stalls the log (etcd 8097/12105).
pub const BATCH: usize = 1_000;
/// Expiry batches proposed per tick at most: with [`BATCH`] and [`TICK`], 30,000
/// sessions a second, so a million silent sessions are gone within a minute while the
/// log still sees small entries.
const EXPIRE_BATCHES_PER_TICK: usize = 3;
/// How often the keeper looks for due work.
const TICK: Duration = Duration::from_millis(100);
/// The longest the log goes without an entry while a leader is up (see `tick_if_idle`).
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How often at most heartbeats are checkpointed into the log.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bound on how far a checkpoint lags an acknowledged heartbeat beyond the TTL/4 rule:
/// the checkpoint period plus a generous commit time.
const CHECKPOINT_LAG_MS: u64 = 2_000;

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

#[derive(Debug, Default)]
struct State {
    /// The term whose deadlines are loaded; `None` while not an established leader.
    term: Option<u64>,
    /// Last heartbeat seen (or the derived fresh start) per session, with its TTL.
    beats: HashMap<SessionId, (TimeMs, u64)>,
    /// Every tracked session by deadline: what expires next is the front, so a tick
    /// costs O(log n) per due session instead of a scan of all of them.
    deadlines: BTreeSet<(TimeMs, SessionId)>,
    /// Sessions whose beat moved since the last checkpoint pass.
    dirty: HashSet<SessionId>,
    /// The highest session id tracked: session ids are log indexes, so sessions opened
    /// since are exactly those above it.
    tracked_up_to: SessionId,
}

impl State {
    /// Records a beat (never moving one back) and re-files the session's deadline.
    fn touch(&mut self, id: SessionId, beat: TimeMs, ttl: u64) -> bool {
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

    fn forget(&mut self, id: SessionId) {
        if let Some((beat, ttl)) = self.beats.remove(&id) {
            self.deadlines.remove(&(beat.saturating_add(ttl), id));
        }
        self.dirty.remove(&id);
    }
}

/// The keeper. One per node; active only on the leader.
#[derive(Debug, Default)]
pub struct Keeper {
    state: Mutex<State>,
    /// The term in which this node, leading, found the log silent for longer than the
    /// outage gap (0: none): the entry that ends that outage is then its own, so no
    /// leader can have acknowledged a heartbeat since, and TTLs run from it exactly.
    outage_term: AtomicU64,
}

/// What [`Keeper::establish`] found.
enum Standing {
    /// Not the leader, or not yet sure of its state.
    Idle,
    /// Leading, with deadlines loaded for this term.
    Leading(u64),
    /// Leading, but the log has been silent since before an outage: the outage must be
    /// in the log (an entry ending it) before deadlines can be loaded.
    AfterOutage,
}

pub fn now_ms() -> TimeMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Renews sessions (id and secret digest each) if this node is surely the leader: it
    /// is leader, its deadlines are loaded for its term, and a quorum acknowledged it
    /// within the minimum election timeout (so no other leader can have been elected
    /// since). One answer per session, in order. A batch is checked for leadership once
    /// and takes each lock once: per session, those were most of a heartbeat's cost.
    pub fn heartbeat(&self, shared: &Shared, sessions: &[(SessionId, SecretDigest)]) -> Vec<Beat> {
        if !sure_leader(shared) {
            return vec![Beat::NotLeader; sessions.len()];
        }
        let sm = shared.sm.read();
        let mut st = self.lock();
        if st.term.is_none() {
            return vec![Beat::NotLeader; sessions.len()];
        }
        let now = now_ms();
        sessions
            .iter()
            .map(|(session, secret)| {
                let (ttl_ms, durable_ms) = match sm.ledger.session(*session) {
                    None => return Beat::Unknown,
                    Some(s) if s.secret != *secret => return Beat::BadSecret,
                    Some(s) => (
                        s.ttl_ms,
                        fresh_start(sm.ledger.heartbeat_floor(s), s.ttl_ms, &shared.cfg)
                            .saturating_add(s.ttl_ms),
                    ),
                };
                if let Some(&(beat, ttl)) = st.beats.get(session) {
                    if beat.saturating_add(ttl) <= now {
                        return Beat::Expired;
                    }
                }
                if st.touch(*session, now, ttl_ms) {
                    st.dirty.insert(*session);
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

    /// The keeper's loop: runs until shutdown, doing work only while leader.
    pub async fn run(self: Arc<Self>, shared: Shared, mut shutdown: broadcast::Receiver<()>) {
        let mut tick = tokio::time::interval(TICK);
        // Checkpoint on the first tick of a leadership: the successor's clock starts from
        // checkpoints, so the sooner they are fresh, the fuller the promises (see
        // `heartbeat`).
        let start = tokio::time::Instant::now();
        let mut last_checkpoint = start.checked_sub(CHECKPOINT_EVERY).unwrap_or(start);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let term = match self.establish(&shared) {
                Standing::Leading(term) => term,
                Standing::Idle => continue,
                Standing::AfterOutage => {
                    end_outage(&shared).await;
                    continue;
                }
            };
            let checkpoint = last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            if checkpoint {
                last_checkpoint = tokio::time::Instant::now();
            }
            async {
                make_cluster_id(&shared).await;
                self.track_new(&shared);
                self.expire_due(&shared).await;
                reclaim_due(&shared).await;
                serve_queue(&shared).await;
                if checkpoint {
                    self.checkpoint(&shared).await;
                }
                tick_if_idle(&shared).await;
            }
            .instrument(tracing::info_span!("leader", term))
            .await;
        }
    }

    /// Loads fresh deadlines on promotion; drops them on demotion.
    fn establish(&self, shared: &Shared) -> Standing {
        let m = shared.raft.metrics().borrow().clone();
        let mut st = self.lock();
        if m.state != ServerState::Leader {
            if st.term.is_some() {
                tracing::info!(term = st.term, "lease keeper idle: no longer the leader");
            }
            *st = State::default();
            return Standing::Idle;
        }
        if let Some(term) = st.term.filter(|t| *t == m.current_term) {
            return Standing::Leading(term);
        }
        // Deadlines are valid only once this term's first entry is applied: before that
        // the state machine may lack sessions the previous leader committed.
        let applied_own_term = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
        if !applied_own_term {
            return Standing::Idle;
        }
        // A heartbeat the old leader acknowledged may postdate the last checkpoint by up
        // to the checkpoint lag (a beat is written once it moved by TTL/4, at most every
        // CHECKPOINT_EVERY, plus commit time). Start from checkpoint + lag + election
        // timeout, so no acknowledged heartbeat is cut short by a failover; the start is a
        // fixed function of the checkpoint, so repeated elections cannot keep a dead
        // session alive. The ledger is locked before the keeper, in the order heartbeats
        // take them, so the two can never wait on each other.
        drop(st);
        let sm = shared.sm.read();
        // After a full-cluster outage, the ledger has not seen it yet: its time stands
        // where the last entry left it, and every session's floor is from before the
        // outage. Deadlines loaded now would all be past: heartbeats would be answered
        // "expired", and expiries proposed that the ledger refuses (leaving those
        // sessions untracked, never to expire). The outage must first be in the log: the
        // ledger restarts every TTL at the entry that ends it (`end_outage` proposes one).
        if now_ms().saturating_sub(sm.ledger.now_ms()) > OUTAGE_GAP_MS {
            self.outage_term.store(m.current_term, Ordering::Relaxed);
            return Standing::AfterOutage;
        }
        // Whether the entry that ended the latest outage is this term's: then no other
        // leader has acknowledged a heartbeat since, and this one has not started to.
        let ended_outage = self.outage_term.load(Ordering::Relaxed) == m.current_term;
        let mut st = self.lock();
        *st = State::default();
        let resumed = sm.ledger.resumed_ms();
        for (id, s) in sm.ledger.sessions() {
            let floor = sm.ledger.heartbeat_floor(s);
            // A session last heard of before the outage this term ended has its TTL
            // from the return, no more (the ledger's rule; the design's "a dead one is
            // reclaimed within TTL + linger of the return"): no leader acknowledged a
            // heartbeat after it that a checkpoint could have missed, so the failover
            // allowance does not apply.
            let start = if ended_outage && floor == resumed {
                floor
            } else {
                fresh_start(floor, s.ttl_ms, &shared.cfg)
            };
            st.touch(id, start, s.ttl_ms);
            st.tracked_up_to = st.tracked_up_to.max(id);
        }
        st.term = Some(m.current_term);
        tracing::info!(
            term = m.current_term,
            sessions = st.beats.len(),
            after_outage = ended_outage,
            "lease keeper active: deadlines loaded"
        );
        Standing::Leading(m.current_term)
    }

    /// Starts tracking sessions opened since the last look (from their open time, which
    /// the ledger records as their first checkpoint).
    fn track_new(&self, shared: &Shared) {
        let sm = shared.sm.read();
        let mut st = self.lock();
        let from = st.tracked_up_to.saturating_add(1);
        let new: Vec<(SessionId, TimeMs, u64)> = sm
            .ledger
            .sessions_from(from)
            .map(|(id, s)| (id, s.last_heartbeat_ms, s.ttl_ms))
            .collect();
        for (id, beat, ttl) in new {
            st.touch(id, beat, ttl);
            st.tracked_up_to = st.tracked_up_to.max(id);
        }
    }

    /// Proposes the expiry of sessions past their deadline, a bounded number of batches
    /// per tick: a mass expiry becomes a steady stream of entries, not one huge one.
    async fn expire_due(&self, shared: &Shared) {
        for _ in 0..EXPIRE_BATCHES_PER_TICK {
            let now = now_ms();
            let due: Vec<SessionId> = {
                let sm = shared.sm.read();
                let mut st = self.lock();
                let front: Vec<SessionId> = st
                    .deadlines
                    .iter()
                    .take_while(|(d, _)| *d <= now)
                    .map(|(_, id)| *id)
                    .take(BATCH)
                    .collect();
                let mut due = Vec::with_capacity(front.len());
                for id in front {
                    match sm.ledger.session(id) {
                        // Closed or expired already: nothing to track.
                        None => st.forget(id),
                        // The ledger refuses an expiry before checkpoint + TTL (or the
                        // end of an outage + TTL); a newer checkpoint than our beat (a
                        // previous leader's), or an outage, wins.
                        Some(s) if sm.ledger.heartbeat_floor(s).saturating_add(s.ttl_ms) > now => {
                            st.touch(id, sm.ledger.heartbeat_floor(s), s.ttl_ms);
                        }
                        Some(_) => due.push(id),
                    }
                }
                due
            };
            if due.is_empty() {
                return;
            }
            tracing::info!(
                count = due.len(),
                sessions = ?&due[..due.len().min(10)],
                "expiring sessions that missed their deadline"
            );
            if let Err(e) = shared
                .propose(Op::ExpireSessions {
                    sessions: due.clone(),
                })
                .await
            {
                tracing::warn!("proposing expiry: {}", e.message());
                return;
            }
            let mut st = self.lock();
            for id in due {
                st.forget(id);
            }
        }
    }

    /// Writes heartbeats that moved by more than TTL/4 since their last checkpoint, so a
    /// future leader's fresh deadlines start from a recent time. Only sessions that beat
    /// since the last pass are looked at.
    async fn checkpoint(&self, shared: &Shared) {
        let beats: Vec<(SessionId, TimeMs)> = {
            let sm = shared.sm.read();
            let mut st = self.lock();
            let now = now_ms();
            let dirty: Vec<SessionId> = st.dirty.iter().copied().take(BATCH * 10).collect();
            let mut out = Vec::new();
            for id in dirty {
                st.dirty.remove(&id);
                let (Some(&(beat, _)), Some(s)) = (st.beats.get(&id), sm.ledger.session(id)) else {
                    continue;
                };
                if beat > s.last_heartbeat_ms + s.ttl_ms / 4 {
                    out.push((id, beat.min(now)));
                }
            }
            out
        };
        if !beats.is_empty() {
            if let Err(e) = shared.propose(Op::CheckpointHeartbeats { beats }).await {
                tracing::warn!("proposing heartbeat checkpoint: {}", e.message());
            }
        }
    }
}

/// The first leader makes the cluster's identity; the ledger keeps only the first one,
/// so two leaders racing to make it cannot give the cluster two.
async fn make_cluster_id(shared: &Shared) {
    if shared.sm.read().ledger.cluster_id().is_some() {
        return;
    }
    let mut id = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut id) {
        tracing::error!("no system randomness for the cluster id: {e}");
        return;
    }
    let id = tally_core::license::ClusterId(id);
    match shared.propose(Op::SetClusterId { id }).await {
        Ok(_) => tracing::info!(cluster_id = %id, "cluster identity made"),
        Err(e) => tracing::warn!("proposing the cluster id: {}", e.message()),
    }
}

/// Proposes a clock entry when the log has been quiet for [`TICK_EVERY`]: ledger time
/// then never lags by more than that while a leader is up, so a silence of more than
/// `OUTAGE_GAP_MS` between entries means no leader was (the ledger's outage rule), and a
/// license term that ends is acted on within a second.
async fn tick_if_idle(shared: &Shared) {
    let last = shared.sm.read().ledger.now_ms();
    if now_ms().saturating_sub(last) < TICK_EVERY.as_millis() as u64 {
        return;
    }
    if let Err(e) = shared.propose(Op::Tick).await {
        tracing::warn!("proposing a clock tick: {}", e.message());
    }
}

/// Ends an outage in the log: the first entry after the silence, a clock tick, makes the
/// ledger restart every session's TTL (see [`Keeper::establish`]). In a new cluster,
/// whose log has no time yet, it is simply the first tick.
async fn end_outage(shared: &Shared) {
    match shared.propose(Op::Tick).await {
        Ok(out) => {
            for e in &out.events {
                if let tally_core::ledger::Event::Resumed { silent_ms } = e {
                    tracing::info!(silent_ms, "the cluster is back after an outage");
                }
            }
        }
        Err(e) => tracing::warn!("proposing the entry that ends an outage: {}", e.message()),
    }
}

async fn reclaim_due(shared: &Shared) {
    let seats = shared.sm.read().ledger.due_seats(now_ms(), BATCH);
    if seats.is_empty() {
        return;
    }
    tracing::info!(count = seats.len(), "reclaiming seats whose linger ended");
    if let Err(e) = shared.propose(Op::ReclaimSeats { seats }).await {
        tracing::warn!("proposing reclaim: {}", e.message());
    }
}

/// Most queue entries proposed per tick: each serves one waiter, so a burst of freed
/// seats is handed out within a few ticks without flooding the log.
const QUEUE_PER_TICK: usize = 64;

async fn serve_queue(shared: &Shared) {
    for _ in 0..QUEUE_PER_TICK {
        if !shared.sm.read().ledger.queue_due(now_ms()) {
            return;
        }
        if let Err(e) = shared.propose(Op::ServeQueue).await {
            tracing::warn!("proposing queue service: {}", e.message());
            return;
        }
    }
}

/// Where a new leader starts a session's clock: its checkpointed heartbeat plus the
/// election timeout plus the checkpoint lag. The deadline is this plus the TTL.
fn fresh_start(checkpoint_ms: TimeMs, ttl_ms: u64, cfg: &crate::config::NodeConfig) -> TimeMs {
    checkpoint_ms.saturating_add(cfg.election_max_ms + ttl_ms / 4 + CHECKPOINT_LAG_MS)
}

/// Leader, and acknowledged by a quorum more recently than any other node could have
/// started an election.
pub fn sure_leader(shared: &Shared) -> bool {
    // Borrowed, not cloned: this runs for every heartbeat call, and the metrics hold the
    // membership and replication maps.
    let metrics = shared.raft.metrics();
    let m = metrics.borrow();
    m.state == ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms < shared.cfg.election_min_ms)
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn deadlines_follow_beats_forward_only_and_forget_cleans_up() {
        let mut st = State::default();
        assert!(st.touch(7, 1_000, 3_000));
        assert!(st.touch(8, 500, 3_000));
        // Earliest deadline first.
        assert_eq!(st.deadlines.first(), Some(&(3_500, 8)));
        assert!(st.touch(8, 2_000, 3_000));
        assert_eq!(st.deadlines.first(), Some(&(4_000, 7)));
        // A stale beat never moves a deadline back.
        assert!(!st.touch(8, 1_500, 3_000));
        assert_eq!(st.beats[&8], (2_000, 3_000));
        assert_eq!(st.deadlines.len(), 2, "one deadline per session");
        st.dirty.insert(7);
        st.forget(7);
        assert!(!st.beats.contains_key(&7) && st.dirty.is_empty());
        assert_eq!(
            st.deadlines.iter().copied().collect::<Vec<_>>(),
            vec![(5_000, 8)]
        );
    }
}
