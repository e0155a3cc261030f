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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tally_core::ledger::{Op, SecretDigest, SessionId, TimeMs};
use tokio::sync::broadcast;
use tracing::Instrument as _;

use crate::node::Shared;

/// Most sessions expired, or seats reclaimed, per proposed entry: a mass expiry becomes
/// many small entries instead of one that stalls the log (etcd 8097/12105).
pub const BATCH: usize = 1_000;
/// How often the keeper looks for due work.
const TICK: Duration = Duration::from_millis(100);
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
    /// This node is not (or not surely) the leader.
    NotLeader,
}

#[derive(Debug, Default)]
struct State {
    /// The term whose deadlines are loaded; `None` while not an established leader.
    term: Option<u64>,
    /// Last heartbeat seen (or the derived fresh start) per session.
    beats: HashMap<SessionId, TimeMs>,
}

/// The keeper. One per node; active only on the leader.
#[derive(Debug, Default)]
pub struct Keeper {
    state: Mutex<State>,
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

    /// Renews a session if this node is surely the leader: it is leader, its deadlines
    /// are loaded for its term, and a quorum acknowledged it within the minimum election
    /// timeout (so no other leader can have been elected since).
    pub fn heartbeat(&self, shared: &Shared, session: SessionId, secret: &SecretDigest) -> Beat {
        if !sure_leader(shared) {
            return Beat::NotLeader;
        }
        let ttl_ms = {
            let sm = shared.sm.read();
            match sm.ledger.session(session) {
                None => return Beat::Unknown,
                Some(s) if s.secret != *secret => return Beat::BadSecret,
                Some(s) => s.ttl_ms,
            }
        };
        let mut st = self.lock();
        if st.term.is_none() {
            return Beat::NotLeader;
        }
        let now = now_ms();
        st.beats.insert(session, now);
        Beat::Alive {
            deadline_ms: now + ttl_ms,
            ttl_ms,
        }
    }

    /// The keeper's loop: runs until shutdown, doing work only while leader.
    pub async fn run(self: Arc<Self>, shared: Shared, mut shutdown: broadcast::Receiver<()>) {
        let mut tick = tokio::time::interval(TICK);
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let Some(term) = self.establish(&shared) else {
                continue;
            };
            let checkpoint = last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            if checkpoint {
                last_checkpoint = tokio::time::Instant::now();
            }
            async {
                self.expire_due(&shared).await;
                reclaim_due(&shared).await;
                serve_queue(&shared).await;
                if checkpoint {
                    self.checkpoint(&shared).await;
                }
            }
            .instrument(tracing::info_span!("leader", term))
            .await;
        }
    }

    /// Loads fresh deadlines on promotion; drops them on demotion. The term while leading.
    fn establish(&self, shared: &Shared) -> Option<u64> {
        let m = shared.raft.metrics().borrow().clone();
        let mut st = self.lock();
        if m.state != ServerState::Leader {
            if st.term.is_some() {
                tracing::info!(term = st.term, "lease keeper idle: no longer the leader");
            }
            *st = State::default();
            return None;
        }
        if st.term == Some(m.current_term) {
            return st.term;
        }
        // Deadlines are valid only once this term's first entry is applied: before that
        // the state machine may lack sessions the previous leader committed.
        let applied_own_term = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
        if !applied_own_term {
            return None;
        }
        // A heartbeat the old leader acknowledged may postdate the last checkpoint by up
        // to the checkpoint lag (a beat is written once it moved by TTL/4, at most every
        // CHECKPOINT_EVERY, plus commit time). Start from checkpoint + lag + election
        // timeout, so no acknowledged heartbeat is cut short by a failover; the start is a
        // fixed function of the checkpoint, so repeated elections cannot keep a dead
        // session alive.
        let election = shared.cfg.election_max_ms;
        let sm = shared.sm.read();
        st.beats = sm
            .ledger
            .sessions()
            .map(|(id, s)| {
                let grace = election + s.ttl_ms / 4 + CHECKPOINT_LAG_MS;
                (id, s.last_heartbeat_ms.saturating_add(grace))
            })
            .collect();
        st.term = Some(m.current_term);
        tracing::info!(
            term = m.current_term,
            sessions = st.beats.len(),
            "lease keeper active: deadlines loaded"
        );
        st.term
    }

    async fn expire_due(&self, shared: &Shared) {
        let now = now_ms();
        let due: Vec<SessionId> = {
            let sm = shared.sm.read();
            let st = self.lock();
            sm.ledger
                .sessions()
                .filter(|(id, s)| {
                    let beat = st.beats.get(id).copied().unwrap_or(s.last_heartbeat_ms);
                    beat.max(s.last_heartbeat_ms).saturating_add(s.ttl_ms) <= now
                })
                .map(|(id, _)| id)
                .take(BATCH)
                .collect()
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
            st.beats.remove(&id);
        }
    }

    /// Writes heartbeats that moved since their last checkpoint, so a future leader's
    /// fresh deadlines start from a recent time.
    async fn checkpoint(&self, shared: &Shared) {
        let beats: Vec<(SessionId, TimeMs)> = {
            let sm = shared.sm.read();
            let st = self.lock();
            st.beats
                .iter()
                .filter(|(id, beat)| {
                    sm.ledger
                        .session(**id)
                        .is_some_and(|s| **beat > s.last_heartbeat_ms + s.ttl_ms / 4)
                })
                .map(|(id, beat)| (*id, (*beat).min(now_ms())))
                .take(BATCH * 10)
                .collect()
        };
        if !beats.is_empty() {
            if let Err(e) = shared.propose(Op::CheckpointHeartbeats { beats }).await {
                tracing::warn!("proposing heartbeat checkpoint: {}", e.message());
            }
        }
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

/// Leader, and acknowledged by a quorum more recently than any other node could have
/// started an election.
pub fn sure_leader(shared: &Shared) -> bool {
    let m = shared.raft.metrics().borrow().clone();
    m.state == ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms < shared.cfg.election_min_ms)
}
