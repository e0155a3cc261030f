//! Derived lookup structures: everything here can be recomputed from the replicated
//! state, and is, on restore. Keeping them out of the snapshot means a snapshot cannot
//! contain an index that disagrees with the data it indexes.

use std::collections::{BTreeMap, BTreeSet};

use super::pool::{Pool, PoolLine};
use super::{ClientId, DupKey, SeatId, State, TimeMs};
use crate::license::{
    canonical_line, effective, DupGroup, Effective, EffectiveLine, FeatureLine, Ineffective,
    LicenseFile, LicenseModel,
};

#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    /// The pools of each feature (one per grouping, in the order a checkout tries them),
    /// from the loaded licenses, with the seats' demand.
    pub pools: BTreeMap<String, Vec<Pool>>,
    /// Lingering seats by the time their linger ends: the reclaim queue, O(log n).
    pub lingering: BTreeSet<(TimeMs, SeatId)>,
    /// Seats by feature and owner, for `DUP_GROUP` sharing.
    pub by_key: BTreeMap<(String, DupKey), BTreeSet<SeatId>>,
    /// The lingering ones among them, for linger reuse without grouping. Kept apart
    /// because an owner may hold thousands of seats of one feature (a build farm's one
    /// service account, or a hostile client): searching all of them on every checkout
    /// made applying n checkouts O(n²), which stalled a leader for seconds with 20,000
    /// seats of one owner (BENCHMARKS.md, "Overload").
    pub lingering_by_key: BTreeMap<(String, DupKey), BTreeSet<SeatId>>,
    /// Clients with no live session, by when they were last heard of: the idempotency
    /// table's garbage-collection queue.
    pub idle_clients: BTreeSet<(TimeMs, ClientId)>,
    /// Queue places per feature, earliest first: each feature's head is its first.
    pub queues: BTreeMap<String, BTreeSet<u64>>,
    /// Places with a deadline, by deadline: the queue-timeout queue.
    pub queue_deadlines: BTreeSet<(TimeMs, u64)>,
    /// Loaded lines that repeat an earlier one ((source, line) → the one that counts).
    pub duplicates: BTreeMap<(String, u32), (String, u32)>,
    /// Loaded lines that count otherwise than as themselves (superseded, packages).
    pub notes: Notes,
    /// The lines as they count (see `license/effective.rs`), in load order.
    pub effective: Vec<EffectiveLine>,
    /// The next instant a line's term ends, when the pools must be checked again.
    pub next_boundary: Option<TimeMs>,
    /// Live sessions per caller identity (certificate, else address).
    pub per_identity: BTreeMap<String, u32>,
    /// Each feature's licensed count and overdraft limit as last reported in
    /// `Event::Licensed` (they change only at term boundaries and with the licenses).
    /// Not rebuilt with the rest (a rebuild after a load must still see the counts from
    /// before it, to report the change): `Ledger::reindex` carries it over, and restore
    /// computes it, as the counts in force at the snapshot's time.
    pub licensed: BTreeMap<String, (u64, u64)>,
}

/// Each feature's licensed seats and overdraft limit at `now`, summed over its pools.
pub(crate) fn licensed_counts(
    pools: &BTreeMap<String, Vec<Pool>>,
    now: TimeMs,
) -> BTreeMap<String, (u64, u64)> {
    pools
        .iter()
        .map(|(name, pools)| {
            let sum = pools.iter().fold((0u64, 0u64), |(i, o), p| {
                let (pi, po) = p.issued(now);
                (i.saturating_add(pi), o.saturating_add(po))
            });
            (name.clone(), sum)
        })
        .collect()
}

impl Index {
    pub fn rebuild(st: &State) -> Index {
        let (pools, duplicates, eff) = pools_from(st);
        let mut ix = Index {
            pools,
            duplicates,
            notes: eff.ineffective,
            effective: eff.lines,
            ..Index::default()
        };
        ix.next_boundary = ix.boundary_after(st.now_ms);
        for (id, seat) in &st.seats {
            if let Some(pool) = ix.pool_mut(&seat.feature, seat.group) {
                pool.charge(&seat.version, seat.count);
            }
            if let Some(until) = seat.lingering_until {
                ix.lingering.insert((until, *id));
                ix.lingering_by_key
                    .entry((seat.feature.clone(), seat.key.clone()))
                    .or_default()
                    .insert(*id);
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
        for s in st.sessions.values() {
            *ix.per_identity.entry(s.origin.identity()).or_default() += 1;
        }
        for (client, rec) in &st.clients {
            if rec.live_sessions == 0 {
                ix.idle_clients.insert((rec.last_seen_ms, *client));
            }
        }
        ix
    }

    /// Files or unfiles a seat under its owner's lingering seats.
    pub fn set_lingering(&mut self, feature: &str, key: &DupKey, seat: SeatId, lingering: bool) {
        let k = (feature.to_owned(), key.clone());
        if lingering {
            self.lingering_by_key.entry(k).or_default().insert(seat);
        } else if let Some(set) = self.lingering_by_key.get_mut(&k) {
            set.remove(&seat);
            if set.is_empty() {
                self.lingering_by_key.remove(&k);
            }
        }
    }

    /// The first instant after `now` at which any pool's term state may change.
    pub fn boundary_after(&self, now: TimeMs) -> Option<TimeMs> {
        self.pools
            .values()
            .flatten()
            .filter_map(|p| p.term_boundary_after(now))
            .min()
    }

    /// A feature's pools, in the order a checkout tries them (none if it has no line).
    pub fn pools_of(&self, feature: &str) -> &[Pool] {
        self.pools.get(feature).map_or(&[], Vec::as_slice)
    }

    /// The pool of `feature` with grouping `group`: where a seat of that grouping counts.
    pub fn pool(&self, feature: &str, group: DupGroup) -> Option<&Pool> {
        self.pools_of(feature).iter().find(|p| p.dup_group == group)
    }

    pub fn pool_mut(&mut self, feature: &str, group: DupGroup) -> Option<&mut Pool> {
        self.pools
            .get_mut(feature)?
            .iter_mut()
            .find(|p| p.dup_group == group)
    }
}

/// Loaded lines that repeat an earlier one, each with the line that counts instead.
type Duplicates = BTreeMap<(String, u32), (String, u32)>;

/// The pools of every feature, from all loaded lines in load order then file order. A
/// line whose canonical form (everything it was signed for) was loaded before, from any
/// source, counts once: the same signed line loaded under two names, or pasted twice,
/// must not add seats. Then `SUPERSEDE` and `PACKAGE` decide which lines count (see
/// `license/effective.rs`), and the lines of each feature form one pool per grouping, in
/// the order their first line was loaded (the order a checkout tries them). The load
/// checks guarantee a feature's lines agree on the model; linger is the longest any line
/// of the pool asks.
pub(crate) fn pools_from(st: &State) -> (BTreeMap<String, Vec<Pool>>, Duplicates, Effective) {
    let mut first: BTreeMap<String, (&str, u32)> = BTreeMap::new();
    let mut duplicates = Duplicates::new();
    let zone = st.zone();
    let mut files: Vec<(&String, &LicenseFile)> = st.licenses.iter().collect();
    files.sort_by_key(|(source, _)| (st.loaded_at.get(*source).copied().unwrap_or(0), *source));
    let mut distinct: Vec<(&str, &FeatureLine)> = Vec::new();
    for (source, file) in files {
        for line in &file.lines {
            let canonical = canonical_line(line);
            if let Some((s, l)) = first.get(&canonical) {
                duplicates.insert((source.clone(), line.line_no), ((*s).to_owned(), *l));
                continue;
            }
            first.insert(canonical, (source.as_str(), line.line_no));
            distinct.push((source.as_str(), line));
        }
    }
    let eff = effective(&distinct);
    let mut pools: BTreeMap<String, Vec<Pool>> = BTreeMap::new();
    for e in &eff.lines {
        let line = &e.line;
        // A named user is one seat however many hosts and processes they use.
        let group = match line.model {
            LicenseModel::NamedUser { .. } => DupGroup::User,
            LicenseModel::Floating => e.group,
        };
        let of_feature = pools.entry(line.name.clone()).or_default();
        let at = match of_feature.iter().position(|p| p.dup_group == group) {
            Some(i) => i,
            None => {
                of_feature.push(Pool {
                    dup_group: group,
                    model: line.model,
                    ..Pool::default()
                });
                of_feature.len() - 1
            }
        };
        let pool = &mut of_feature[at];
        if let LicenseModel::NamedUser { fair_use_days } = line.model {
            let days = match pool.model {
                LicenseModel::NamedUser { fair_use_days: d } => d,
                LicenseModel::Floating => 0,
            };
            pool.model = LicenseModel::NamedUser {
                fair_use_days: days.max(fair_use_days),
            };
        }
        if let Some(cap) = line.edition.as_ref().and_then(|e| e.cap) {
            pool.cap = Some(pool.cap.map_or(u64::from(cap), |c| c.min(u64::from(cap))));
        }
        if e.suite.is_some() {
            pool.suite.clone_from(&e.suite);
        }
        pool.linger_ms = pool.linger_ms.max(u64::from(line.linger_secs) * 1000);
        pool.lines.push(PoolLine::from_line(line, zone));
    }
    for (name, of_feature) in &mut pools {
        for pool in of_feature {
            let versions = pool.lines.iter().map(|l| l.version.clone());
            pool.overdraft_cap =
                super::policy::overdraft_cap(&st.options, name, pool.dup_group, versions);
        }
    }
    (pools, duplicates, eff)
}

/// Loaded lines that do not count as themselves, and why (superseded, enabling a package).
pub(crate) type Notes = Vec<((String, u32), Ineffective)>;
