//! Derived lookup structures: everything here can be recomputed from the replicated
//! state, and is, on restore. Keeping them out of the snapshot means a snapshot cannot
//! contain an index that disagrees with the data it indexes.

use std::collections::{BTreeMap, BTreeSet};

use super::pool::{Pool, PoolLine};
use super::{ClientId, DupKey, SeatId, State, TimeMs};

#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    /// One pool per feature name, from the loaded licenses, with the seats' demand.
    pub pools: BTreeMap<String, Pool>,
    /// Lingering seats by the time their linger ends: the reclaim queue, O(log n).
    pub lingering: BTreeSet<(TimeMs, SeatId)>,
    /// Seats by feature and owner, for `DUP_GROUP` sharing and linger reuse.
    pub by_key: BTreeMap<(String, DupKey), BTreeSet<SeatId>>,
    /// Clients with no live session, by when they were last heard of: the idempotency
    /// table's garbage-collection queue.
    pub idle_clients: BTreeSet<(TimeMs, ClientId)>,
    /// Queue places per feature, earliest first: each feature's head is its first.
    pub queues: BTreeMap<String, BTreeSet<u64>>,
    /// Places with a deadline, by deadline: the queue-timeout queue.
    pub queue_deadlines: BTreeSet<(TimeMs, u64)>,
}

impl Index {
    pub fn rebuild(st: &State) -> Index {
        let mut ix = Index {
            pools: pools_from(st),
            ..Index::default()
        };
        for (id, seat) in &st.seats {
            if let Some(pool) = ix.pools.get_mut(&seat.feature) {
                pool.charge(&seat.version, seat.count);
            }
            if let Some(until) = seat.lingering_until {
                ix.lingering.insert((until, *id));
            }
            ix.by_key
                .entry((seat.feature.clone(), seat.key.clone()))
                .or_default()
                .insert(*id);
        }
        for (place, w) in &st.queue {
            ix.queues
                .entry(w.feature.clone())
                .or_default()
                .insert(*place);
            if let Some(d) = w.deadline_ms {
                ix.queue_deadlines.insert((d, *place));
            }
        }
        for (client, rec) in &st.clients {
            if rec.live_sessions == 0 {
                ix.idle_clients.insert((rec.last_seen_ms, *client));
            }
        }
        ix
    }
}

/// Pools from all loaded lines, in source then file order. The load checks guarantee the
/// lines of one feature agree on grouping and model; linger is the longest any line asks.
pub(crate) fn pools_from(st: &State) -> BTreeMap<String, Pool> {
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    for file in st.licenses.values() {
        for line in &file.lines {
            let pool = pools.entry(line.name.clone()).or_default();
            if pool.lines.is_empty() {
                pool.dup_group = line.dup_group;
                pool.model = line.model;
            }
            pool.linger_ms = pool.linger_ms.max(u64::from(line.linger_secs) * 1000);
            pool.lines.push(PoolLine::from_line(line));
        }
    }
    pools
}
