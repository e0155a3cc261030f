//! Counters a node keeps about its own health under load, for `/metrics`: why heartbeats
//! were refused, and how old the leader's quorum acknowledgement was when sampled. Plain
//! atomics: written on hot paths, read by scrapes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the quorum-acknowledgement age histogram's buckets; the last
/// bucket is +Inf. Chosen around the heartbeat period (50 ms) and the election timeouts
/// (300-600 ms), where a leader stops being sure it leads.
pub const ACK_AGE_BUCKETS_MS: [u64; 9] = [25, 50, 100, 150, 200, 300, 450, 600, 1_000];

/// Why a heartbeat call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This node is not the leader.
    NotLeader,
    /// It leads, but no quorum acknowledged it within the lease: another node could be
    /// leading by now, so it must not promise anything.
    Unsure,
    /// It leads, but its keeper has not loaded deadlines for its term yet.
    NotLoaded,
}

#[derive(Debug, Default)]
pub struct Stats {
    refused_not_leader: AtomicU64,
    refused_unsure: AtomicU64,
    refused_not_loaded: AtomicU64,
    /// Heartbeat calls that waited for the lease or the deadlines before their answer
    /// (whatever it was), by the same reasons.
    waited_unsure: AtomicU64,
    waited_not_loaded: AtomicU64,
    /// Cumulative counts per bucket (Prometheus histogram style), plus +Inf.
    ack_age: [AtomicU64; ACK_AGE_BUCKETS_MS.len() + 1],
    ack_age_sum_ms: AtomicU64,
}

/// A copy of the counters, for rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsView {
    pub refused_not_leader: u64,
    pub refused_unsure: u64,
    pub refused_not_loaded: u64,
    pub waited_unsure: u64,
    pub waited_not_loaded: u64,
    /// Per bucket of [`ACK_AGE_BUCKETS_MS`] then +Inf: how many samples fell at or below.
    pub ack_age_cumulative: Vec<u64>,
    pub ack_age_sum_ms: u64,
}

impl Stats {
    pub fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::NotLeader => &self.refused_not_leader,
            Refusal::Unsure => &self.refused_unsure,
            Refusal::NotLoaded => &self.refused_not_loaded,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat call waits for the lease (`Unsure`) or the deadlines (`NotLoaded`).
    pub fn waited(&self, why: Refusal) {
        match why {
            Refusal::Unsure => &self.waited_unsure,
            Refusal::NotLoaded => &self.waited_not_loaded,
            Refusal::NotLeader => return,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Records one sample of the leader's quorum-acknowledgement age.
    pub fn ack_age(&self, ms: u64) {
        for (i, bound) in ACK_AGE_BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.ack_age[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ack_age[ACK_AGE_BUCKETS_MS.len()].fetch_add(1, Ordering::Relaxed);
        self.ack_age_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn view(&self) -> StatsView {
        StatsView {
            refused_not_leader: self.refused_not_leader.load(Ordering::Relaxed),
            refused_unsure: self.refused_unsure.load(Ordering::Relaxed),
            refused_not_loaded: self.refused_not_loaded.load(Ordering::Relaxed),
            waited_unsure: self.waited_unsure.load(Ordering::Relaxed),
            waited_not_loaded: self.waited_not_loaded.load(Ordering::Relaxed),
            ack_age_cumulative: self
                .ack_age
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            ack_age_sum_ms: self.ack_age_sum_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_refusals_count_apart() {
        let s = Stats::default();
        for ms in [10, 60, 400, 5_000] {
            s.ack_age(ms);
        }
        s.refused(Refusal::Unsure);
        s.refused(Refusal::Unsure);
        s.refused(Refusal::NotLeader);
        let v = s.view();
        assert_eq!(v.ack_age_cumulative, vec![1, 1, 2, 2, 2, 2, 3, 3, 3, 4]);
        assert_eq!(v.ack_age_sum_ms, 5_470);
        assert_eq!(
            (v.refused_unsure, v.refused_not_leader, v.refused_not_loaded),
            (2, 1, 0)
        );
    }
}
