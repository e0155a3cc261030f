//! The leader's lease keeper (after etcd's lessor): session deadlines in memory, renewed
//! by heartbeats that never touch Raft; expiries, reclaims, queue service, heartbeat
//! checkpoints and clock ticks proposed as log entries, in bounded batches.
//!
//! What to decide is in [`core`] (pure, tested on a fake clock); this shell only ticks,
//! reads the ledger and the leader's term clock through [`Shared`], and proposes.

pub mod core;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tally_core::ledger::{Op, SecretDigest, SessionId};
use tokio::sync::broadcast;
use tracing::Instrument as _;

pub use self::core::Beat;
use self::core::{Core, BATCH, EXPIRE_BATCHES_PER_TICK, QUEUE_PER_TICK};
use crate::shared::{Role, Shared};
use crate::stats::Refusal;

/// How often the keeper looks for due work.
const TICK: Duration = Duration::from_millis(100);

/// The keeper. One per node; active only on the leader.
#[derive(Debug, Default)]
pub struct Keeper {
    core: Mutex<Option<Core>>,
}

impl Keeper {
    fn lock(&self, shared: &Shared) -> MutexGuard<'_, Option<Core>> {
        let mut g = match self.core.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.is_none() {
            *g = Some(Core::new(shared.cfg.election_max_ms));
        }
        g
    }

    fn with<T>(&self, shared: &Shared, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut g = self.lock(shared);
        match g.as_mut() {
            Some(core) => f(core),
            None => unreachable!("lock() fills the core"),
        }
    }

    /// Renews sessions (id and secret digest each) if this node is surely the leader:
    /// it is leader, its deadlines are loaded, and it holds the lease (`Shared::lease`:
    /// a quorum acknowledged it recently enough that no other leader can have been
    /// elected since). A batch is checked for leadership once and takes each lock once.
    /// A refusal says why.
    pub fn heartbeat(
        &self,
        shared: &Shared,
        sessions: &[(SessionId, SecretDigest)],
    ) -> Result<Vec<Beat>, Refusal> {
        // The time is read before the lease is checked: a pause between the two then
        // only shortens the deadline promised, never stretches it past the lease.
        let now = shared.now_ms();
        shared.lease()?;
        // The ledger is locked before the keeper, in the order the loop takes them, so
        // the two can never wait on each other.
        let sm = shared.sm.read();
        let beats = self.with(shared, |core| core.heartbeat(&sm.ledger, now, sessions));
        if beats.first() == Some(&Beat::NotLeader) {
            return Err(Refusal::NotLoaded);
        }
        Ok(beats)
    }

    /// The keeper's loop: runs until shutdown, doing work only while leader.
    pub async fn run(self: Arc<Self>, shared: Shared, mut shutdown: broadcast::Receiver<()>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            if let Ok(Some(age)) = shared.quorum_ack_age_ms() {
                shared.stats.ack_age(age);
            }
            let Some(term) = self.establish(&shared).await else {
                continue;
            };
            self.lead(&shared)
                .instrument(tracing::info_span!("leader", term))
                .await;
        }
    }

    /// Loads fresh deadlines on promotion (and after a clock repair); drops them on
    /// demotion. The term while leading. After a full-cluster outage it first writes the
    /// entry that ends the outage (see `core`), and establishes on a later tick.
    async fn establish(&self, shared: &Shared) -> Option<u64> {
        let term = match shared.role() {
            Role::Leader {
                term,
                established: true,
            } => term,
            // Deadlines are valid only once this term's first entry is applied: before
            // that the state machine may lack sessions the previous leader committed.
            Role::Leader { .. } => return None,
            Role::Other => {
                self.with(shared, |core| {
                    if let Some((term, _)) = core.loaded {
                        tracing::info!(term, "lease keeper idle: no longer the leader");
                        core.step_down();
                    }
                });
                return None;
            }
        };
        let now = shared.now_ms();
        let outage = {
            let sm = shared.sm.read();
            self.with(shared, |core| {
                if core.is_loaded(term, sm.ledger.clock_epoch()) {
                    return false;
                }
                if core.outage_pending(term, &sm.ledger, now) {
                    return true;
                }
                core.establish(term, &sm.ledger);
                tracing::info!(
                    term,
                    sessions = core.beats.len(),
                    "lease keeper active: deadlines loaded"
                );
                zone_mismatch(shared, &sm.ledger);
                false
            })
        };
        if outage {
            tracing::info!(
                term,
                "the log was silent for longer than the outage gap: writing the entry that ends the outage before loading deadlines"
            );
            let _ = propose(shared, Op::Tick, "the entry that ends an outage").await;
            return None;
        }
        Some(term)
    }

    /// One tick of a leader's work, each kind bounded; a failed proposal ends the tick.
    async fn lead(&self, shared: &Shared) {
        if make_cluster_id(shared).await.is_err() {
            return;
        }
        {
            let sm = shared.sm.read();
            self.with(shared, |core| core.track_new(&sm.ledger));
        }
        for _ in 0..EXPIRE_BATCHES_PER_TICK {
            let now = shared.now_ms();
            let due = {
                let sm = shared.sm.read();
                self.with(shared, |core| core.due_expiries(&sm.ledger, now))
            };
            if due.is_empty() {
                break;
            }
            tracing::info!(
                count = due.len(),
                sessions = ?&due[..due.len().min(10)],
                "expiring sessions that missed their deadline"
            );
            if propose(
                shared,
                Op::ExpireSessions {
                    sessions: due.clone(),
                },
                "expiry",
            )
            .await
            .is_err()
            {
                return;
            }
            let sm = shared.sm.read();
            self.with(shared, |core| core.expired(&sm.ledger, &due));
        }
        // The time first: `now_ms` reads the state machine too, and a second read lock
        // taken while holding one can deadlock behind a waiting writer.
        let now = shared.now_ms();
        let seats = shared.sm.read().ledger.due_seats(now, BATCH);
        if !seats.is_empty() {
            tracing::info!(count = seats.len(), "reclaiming seats whose linger ended");
            if propose(shared, Op::ReclaimSeats { seats }, "reclaim")
                .await
                .is_err()
            {
                return;
            }
        }
        for _ in 0..QUEUE_PER_TICK {
            let now = shared.now_ms();
            if !shared.sm.read().ledger.queue_due(now) {
                break;
            }
            if propose(shared, Op::ServeQueue, "queue service")
                .await
                .is_err()
            {
                return;
            }
        }
        let now = shared.now_ms();
        let checkpoints = {
            let sm = shared.sm.read();
            self.with(shared, |core| core.checkpoint(&sm.ledger, now))
        };
        for op in checkpoints {
            if propose(shared, op, "heartbeat checkpoint").await.is_err() {
                return;
            }
        }
        let now = shared.now_ms();
        let tick = {
            let sm = shared.sm.read();
            self.with(shared, |core| core.tick(&sm.ledger, now))
        };
        if let Some(op) = tick {
            let _ = propose(shared, op, "clock tick").await;
        }
    }
}

/// Says so when this node's configured `time_zone` is not the cluster's: the ledger's
/// rules (see `make_cluster_id`), and an admin who edited the config expecting a change
/// should learn why nothing changed.
fn zone_mismatch(shared: &Shared, ledger: &tally_core::ledger::Ledger) {
    let Some(configured) = shared.cfg.time_zone else {
        return;
    };
    if ledger.cluster_id().is_none() || ledger.time_zone() == configured {
        return;
    }
    tracing::warn!(
        configured = configured.name(),
        cluster = ledger.time_zone().name(),
        "this node's time_zone is not the cluster's: license dates are read in the cluster's zone, which only `tallyctl cluster time-zone` changes"
    );
}

async fn propose(shared: &Shared, op: Op, what: &str) -> Result<(), ()> {
    shared.propose(op).await.map(drop).map_err(|e| {
        tracing::warn!("proposing {what}: {}", e.message());
    })
}

/// The first leader makes the cluster's identity; the ledger keeps only the first one,
/// so two leaders racing to make it cannot give the cluster two.
///
/// Before it, the same leader writes the time zone of its configuration (if any) as the
/// cluster's: a setting of the new cluster, made once. Only while the cluster has no
/// identity yet, and as `only_if_unset`, so that afterwards the ledger's zone rules: a
/// node's configuration never overrides it (an edited or differing config on one node
/// must not move every license's end; `tallyctl cluster time-zone` is how it changes).
/// Written first, so a leader that fails between the two leaves no cluster without it.
async fn make_cluster_id(shared: &Shared) -> Result<(), ()> {
    let (has_id, has_zone) = {
        let sm = shared.sm.read();
        (
            sm.ledger.cluster_id().is_some(),
            sm.ledger.time_zone_name().is_some(),
        )
    };
    if has_id {
        return Ok(());
    }
    if let (Some(zone), false) = (shared.cfg.time_zone, has_zone) {
        let op = Op::SetTimeZone {
            zone: zone.name().to_owned(),
            only_if_unset: true,
        };
        propose(shared, op, "the configured time zone").await?;
        tracing::info!(
            time_zone = zone.name(),
            "license dates are read in the configured time zone"
        );
    }
    let mut id = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut id) {
        tracing::error!("no system randomness for the cluster id: {e}");
        return Err(());
    }
    let id = tally_core::license::ClusterId(id);
    propose(shared, Op::SetClusterId { id }, "the cluster id").await?;
    tracing::info!(cluster_id = %id, "cluster identity made");
    Ok(())
}
