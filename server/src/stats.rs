//! Counters a node keeps about its own health under load, for `/metrics`: why heartbeats
//! were refused, how old the leader's quorum acknowledgement was when sampled, and how
//! long its AppendEntries took to be answered. Plain atomics: written on hot paths, read
//! by scrapes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the quorum-acknowledgement age histogram's buckets; the last
/// bucket is +Inf. Chosen around the heartbeat period (50 ms) and the election timeouts
/// (300-600 ms), where a leader stops being sure it leads.
pub const ACK_AGE_BUCKETS_MS: [u64; 9] = [25, 50, 100, 150, 200, 300, 450, 600, 1_000];

/// Upper bounds (ms) of the latency histograms (AppendEntries round trips, log writes,
/// runtime and thread lag): from a quiet LAN's or disk's few milliseconds, through
/// openraft's own append deadline (the heartbeat interval, 50 ms), to the election
/// timeouts (300-600 ms) where a stall costs the leader its followers.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [2, 5, 10, 25, 50, 100, 200, 300, 600, 1_000, 2_500];

/// A Prometheus-style histogram of milliseconds over fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Cumulative counts per bucket, plus +Inf last.
    counts: Vec<AtomicU64>,
    sum_ms: AtomicU64,
}

/// A copy of a [`Histogram`], for rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramView {
    pub bounds: &'static [u64],
    /// Per bucket of `bounds` then +Inf: how many samples fell at or below.
    pub cumulative: Vec<u64>,
    pub sum_ms: u64,
}

impl HistogramView {
    /// How many samples were over `ms`, counted at the first bound at or above it (so
    /// exactly when `ms` is a bound).
    pub fn over(&self, ms: u64) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let at = self.bounds.iter().position(|b| *b >= ms);
        total - at.map_or(total, |i| self.cumulative[i])
    }
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    pub fn record(&self, ms: u64) {
        for (i, bound) in self.bounds.iter().enumerate() {
            if ms <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counts[self.bounds.len()].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn view(&self) -> HistogramView {
        HistogramView {
            bounds: self.bounds,
            cumulative: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }
}

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

#[derive(Debug)]
pub struct Stats {
    refused_not_leader: AtomicU64,
    refused_unsure: AtomicU64,
    refused_not_loaded: AtomicU64,
    /// Heartbeat calls that waited for the lease or the deadlines before their answer
    /// (whatever it was), by the same reasons.
    waited_unsure: AtomicU64,
    waited_not_loaded: AtomicU64,
    ack_age: Histogram,
    /// Leader only: each answered AppendEntries' round trip, including the ones that
    /// outlived openraft's deadline (counted again in `appends_overran`).
    append_rtt: Histogram,
    appends_overran: AtomicU64,
    /// Client writes answered "busy" by admission control (`admission.rs`).
    writes_busy: AtomicU64,
    /// How late a 10 ms timer on the runtime, and a 10 ms sleep on an OS thread, woke
    /// (see `lag.rs`).
    runtime_lag: Histogram,
    thread_lag: Histogram,
    /// The same timer on the runtime Raft runs on (`node::RaftRuntime`): it stays low
    /// while client work holds the main runtime.
    raft_runtime_lag: Histogram,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            refused_not_leader: AtomicU64::new(0),
            refused_unsure: AtomicU64::new(0),
            refused_not_loaded: AtomicU64::new(0),
            waited_unsure: AtomicU64::new(0),
            waited_not_loaded: AtomicU64::new(0),
            ack_age: Histogram::new(&ACK_AGE_BUCKETS_MS),
            append_rtt: Histogram::new(&LATENCY_BUCKETS_MS),
            appends_overran: AtomicU64::new(0),
            writes_busy: AtomicU64::new(0),
            runtime_lag: Histogram::new(&LATENCY_BUCKETS_MS),
            thread_lag: Histogram::new(&LATENCY_BUCKETS_MS),
            raft_runtime_lag: Histogram::new(&LATENCY_BUCKETS_MS),
        }
    }
}

/// A copy of the counters, for rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsView {
    pub refused_not_leader: u64,
    pub refused_unsure: u64,
    pub refused_not_loaded: u64,
    pub waited_unsure: u64,
    pub waited_not_loaded: u64,
    pub ack_age: HistogramView,
    pub append_rtt: HistogramView,
    pub appends_overran: u64,
    pub writes_busy: u64,
    pub runtime_lag: HistogramView,
    pub thread_lag: HistogramView,
    pub raft_runtime_lag: HistogramView,
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
        self.ack_age.record(ms);
    }

    /// Records one answered AppendEntries' round trip; `overran` when openraft had
    /// stopped waiting for it (its deadline is the heartbeat interval).
    pub fn append_answered(&self, ms: u64, overran: bool) {
        self.append_rtt.record(ms);
        if overran {
            self.appends_overran.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn write_busy(&self) {
        self.writes_busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn runtime_lag(&self, ms: u64) {
        self.runtime_lag.record(ms);
    }

    pub fn thread_lag(&self, ms: u64) {
        self.thread_lag.record(ms);
    }

    pub fn raft_runtime_lag(&self, ms: u64) {
        self.raft_runtime_lag.record(ms);
    }

    pub fn view(&self) -> StatsView {
        StatsView {
            refused_not_leader: self.refused_not_leader.load(Ordering::Relaxed),
            refused_unsure: self.refused_unsure.load(Ordering::Relaxed),
            refused_not_loaded: self.refused_not_loaded.load(Ordering::Relaxed),
            waited_unsure: self.waited_unsure.load(Ordering::Relaxed),
            waited_not_loaded: self.waited_not_loaded.load(Ordering::Relaxed),
            ack_age: self.ack_age.view(),
            append_rtt: self.append_rtt.view(),
            appends_overran: self.appends_overran.load(Ordering::Relaxed),
            writes_busy: self.writes_busy.load(Ordering::Relaxed),
            runtime_lag: self.runtime_lag.view(),
            thread_lag: self.thread_lag.view(),
            raft_runtime_lag: self.raft_runtime_lag.view(),
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
        assert_eq!(v.ack_age.cumulative, vec![1, 1, 2, 2, 2, 2, 3, 3, 3, 4]);
        assert_eq!(v.ack_age.sum_ms, 5_470);
        // ACK_AGE_BUCKETS_MS: 25, 50, 100, 150, 200, 300, 450, 600, 1000.
        assert_eq!(
            [25, 60, 100, 400, 600, 5_000].map(|ms| v.ack_age.over(ms)),
            [3, 2, 2, 1, 1, 0]
        );
        s.append_answered(3, false);
        s.append_answered(70, true);
        let v = s.view();
        assert_eq!(
            v.append_rtt.cumulative,
            vec![0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
        );
        assert_eq!((v.append_rtt.sum_ms, v.appends_overran), (73, 1));
        assert_eq!(
            (v.refused_unsure, v.refused_not_leader, v.refused_not_loaded),
            (2, 1, 0)
        );
    }
}
