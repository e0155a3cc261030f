//! The clock monitor: nodes compare wall clocks over the Raft service's `Clock` ping,
//! and a node whose clock is off a quorum of the voters' by more than
//! `max_clock_offset_ms` does not lead. Ledger time comes from the leader's clock, so
//! this is what keeps one node's wrong clock (five years ahead: every license expired;
//! a day behind: every lease stretched) out of the log.
//!
//! [`monitor`] holds the rules, pure and tested on made-up time (its verdict,
//! [`Health`], words itself for people); [`Clock`] is the
//! thread-safe handle the node shares (the `Clock` RPC answers from it, the write path
//! asks it before proposing, status and metrics read it); [`pinger`] is the task that
//! pings the peers and turns Raft's election and heartbeats off while the clock is bad.

mod health;
pub mod monitor;
pub(crate) mod pinger;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use monitor::{ClockMonitor, Estimate, Health, MonoMs, Observed, Recorded, Sample, WallMs};

/// What a peer last said about its own clock (in its pong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub problem: String,
}

/// One member's clock as this node sees it, for status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberClock {
    /// Its wall clock minus this node's; 0 for this node itself.
    pub offset_ms: Option<i64>,
    pub measured_ms_ago: u64,
    /// Its own verdict: this node's current one, or what the peer last reported.
    pub ok: bool,
    pub problem: String,
}

#[derive(Debug)]
struct State {
    monitor: ClockMonitor,
    voters: BTreeSet<u64>,
    reports: BTreeMap<u64, Report>,
}

#[derive(Debug)]
struct Inner {
    me: u64,
    origin: Instant,
    state: Mutex<State>,
}

/// A peer not heard answering a clock ping for longer than this (six missed pings) is
/// taken as down, for status displays and for checks that need the voters that answer.
pub const MEMBER_DOWN_AFTER_MS: u64 = 3_000;

/// The node's clock monitor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl Clock {
    pub fn new(me: u64, max_offset_ms: u64) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                me,
                origin: Instant::now(),
                state: Mutex::new(State {
                    monitor: ClockMonitor::new(me, max_offset_ms),
                    voters: BTreeSet::new(),
                    reports: BTreeMap::new(),
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's monotonic clock, in ms from the handle's creation.
    pub fn mono(&self) -> MonoMs {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// This node's wall and monotonic clocks, read back to back.
    pub fn read(&self) -> (WallMs, MonoMs) {
        (crate::shared::wall_ms(), self.mono())
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.lock().monitor.max_offset_ms()
    }

    /// The voters to judge against (from the Raft membership).
    pub fn set_voters(&self, voters: BTreeSet<u64>) {
        self.lock().voters = voters;
    }

    /// Records an answered ping of `peer` and what the peer said of its own clock.
    pub fn record(&self, peer: u64, sample: Sample, report: Report) -> Recorded {
        let mut st = self.lock();
        let r = st.monitor.record(peer, sample);
        if r.kept {
            st.reports.insert(peer, report);
        }
        drop(st);
        if let Some(by) = r.local_step {
            step_warning(by);
        }
        if let Some(by) = r.peer_step {
            tracing::warn!(
                peer,
                by_ms = by,
                "node {peer}'s wall clock was set by {by:+} ms (against this node's): its older clock measurements were dropped"
            );
        }
        r
    }

    /// This node's verdict now: a fresh reading of its clocks first, so a step of its
    /// wall clock since the last ping counts at once.
    pub fn health(&self) -> Health {
        let (wall, mono) = self.read();
        self.judge(wall, mono)
    }

    fn judge(&self, wall: WallMs, mono: MonoMs) -> Health {
        let mut st = self.lock();
        let observed = st.monitor.observe(wall, mono);
        let h = st.monitor.health(&st.voters, mono);
        drop(st);
        if let Observed::Stepped(by) = observed {
            step_warning(by);
        }
        h
    }

    /// `Err(why)` while this node's clock does not agree with a quorum: it must not
    /// lead or stamp entries with it. Cheap enough for every proposal.
    ///
    /// Judged against the voters last set; whoever decides to lead or stamp must use
    /// [`check_among`](Self::check_among) with the membership it just read instead.
    pub fn check(&self) -> Result<(), String> {
        self.checked_now().map(|_| ())
    }

    /// [`check`](Self::check) against `voters` as the caller just read them from Raft,
    /// which become the monitor's voters. Why not the pinger's copy: an empty voter set
    /// means "not in a cluster yet, nothing to compare with", and a restarted node has
    /// one until the pinger's first round, although Raft knows the membership from the
    /// log at once and restores a node that led as leader of its term at once. In that
    /// gap what it proposed was stamped with an unchecked wall clock (fault soak seed 37:
    /// a node restarted 40 s ahead put a checkout 40 s ahead in the log, and ledger time,
    /// which never goes back, delayed every expiry by 40 s).
    pub fn check_among(&self, voters: impl IntoIterator<Item = u64>) -> Result<(), String> {
        let voters: BTreeSet<u64> = voters.into_iter().collect();
        {
            let mut st = self.lock();
            if st.voters != voters {
                st.voters = voters;
            }
        }
        self.check()
    }

    /// This node's wall clock now, if it agrees with a quorum: the time to stamp an
    /// entry with. The reading that is checked is the one returned, so a step of the
    /// wall clock between a check and a stamp cannot slip into the log.
    pub fn checked_now(&self) -> Result<WallMs, String> {
        let (wall, mono) = self.read();
        match self.judge(wall, mono).problem() {
            None => Ok(wall),
            Some(p) => Err(p),
        }
    }

    /// Every measured peer's offset, for metrics.
    pub fn estimates(&self) -> Vec<(u64, Estimate)> {
        let now = self.mono();
        self.lock().monitor.estimates(now)
    }

    /// Whether `id` (this node, or a peer that answered a ping within
    /// [`MEMBER_DOWN_AFTER_MS`]) answers now.
    pub fn answers(&self, id: u64) -> bool {
        if id == self.inner.me {
            return true;
        }
        let c = self.member(id);
        c.offset_ms.is_some() && c.measured_ms_ago <= MEMBER_DOWN_AFTER_MS
    }

    /// One member's clock for status: this node's own verdict for itself, the last
    /// measurement and self-report for a peer.
    pub fn member(&self, id: u64) -> MemberClock {
        if id == self.inner.me {
            let h = self.health();
            return MemberClock {
                offset_ms: Some(0),
                measured_ms_ago: 0,
                ok: h.ok(),
                problem: h.problem().unwrap_or_default(),
            };
        }
        let now = self.mono();
        let st = self.lock();
        let e = st.monitor.estimate(id, now);
        let report = st.reports.get(&id);
        MemberClock {
            offset_ms: e.map(|e| e.offset_ms),
            measured_ms_ago: e.map_or(0, |e| e.age_ms),
            ok: report.is_some_and(|r| r.ok),
            problem: report.map(|r| r.problem.clone()).unwrap_or_default(),
        }
    }
}

fn step_warning(by: i64) {
    tracing::warn!(
        by_ms = by,
        "this node's wall clock was set by {by:+} ms: clock measurements taken before were dropped; it waits for fresh ones before it may lead again"
    );
}
