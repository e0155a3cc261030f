//! The clock monitor's decision logic: ping samples of the peers' wall clocks in, "may
//! this node lead?" out. Pure: every time it needs arrives as an argument (this node's
//! wall and monotonic clocks as read by the caller), so the rules are tested on made-up
//! time, table by table.
//!
//! The rules, and why:
//! - **Offset from a round trip.** A ping leaves at local wall time `w` (monotonic `s`);
//!   the pong carries the peer's wall time `p` and comes back at monotonic `r`. The peer
//!   read its clock somewhere inside the round trip, so its offset is `p - (w + rtt/2)`
//!   give or take `rtt/2` (the uncertainty), as in NTP.
//! - **Smallest round trip wins.** Of a peer's last few samples the one with the smallest
//!   RTT is used (NTP's clock filter): a loaded link or a busy peer delays one leg of a
//!   round trip, which skews that sample by up to half its RTT; the quickest round trip
//!   is the one least skewed, so a slow link does not look like a wrong clock.
//! - **Lenient by the uncertainty.** A peer disagrees only when even the most favourable
//!   reading of the sample is off by more than the bound: `|offset| - rtt/2 > max`.
//! - **Quorum, itself included.** A node may lead only if its clock agrees with a
//!   majority of the voters, counting itself. One bad peer then cannot stop a good node
//!   (it still agrees with the others), while the bad node agrees with nobody but itself.
//!   Leading takes a quorum anyway, so this asks no more of a cluster than Raft does.
//! - **Long horizon, but not across a step.** Measurements stay valid for
//!   [`HORIZON_MS`], so when the leader dies, a survivor that agreed with it still counts
//!   that agreement and can lead, while a node that disagreed with both cannot. Quartz
//!   drifts slowly (100 ppm is 60 ms in ten minutes), so an old measurement stays true
//!   unless a clock was *set*: a jump of this node's wall clock against its monotonic
//!   clock discards every older sample, and a peer's sample that contradicts that peer's
//!   earlier ones beyond both uncertainties discards those.
//! - **No measurement, no lead.** A node that has heard from no peer agrees only with
//!   itself, so a restarted node does not campaign before its first pongs (pings start
//!   at once and answer within milliseconds).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use super::health::Health;

/// Milliseconds since the Unix epoch on some node's wall clock.
pub type WallMs = u64;
/// Milliseconds on this node's monotonic clock, from an arbitrary origin.
pub type MonoMs = u64;

/// Samples kept per peer: at one ping every 500 ms, the last four seconds. Enough for
/// the RTT filter to find one quiet round trip among busy ones; short enough that a
/// change shows within seconds.
pub const WINDOW: usize = 8;

/// How long a measurement stays valid: ten minutes, in which clocks drifting apart at
/// 100 ppm move 60 ms, far inside the default 500 ms bound.
pub const HORIZON_MS: u64 = 600_000;

/// One answered ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// This node's wall clock when the ping left.
    pub sent_wall: WallMs,
    /// This node's monotonic clock when the ping left (read together with `sent_wall`).
    pub sent_mono: MonoMs,
    /// This node's monotonic clock when the pong arrived.
    pub recv_mono: MonoMs,
    /// The peer's wall clock in its pong.
    pub peer_wall: WallMs,
}

/// `a - b` in i64, saturating (wall times are far below i64::MAX; garbage from a peer
/// must not panic).
fn diff(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

impl Sample {
    pub fn rtt(&self) -> u64 {
        self.recv_mono.saturating_sub(self.sent_mono)
    }

    /// The peer's wall clock minus this node's, at the middle of the round trip.
    pub fn offset(&self) -> i64 {
        diff(
            self.peer_wall,
            self.sent_wall.saturating_add(self.rtt() / 2),
        )
    }

    /// How far the true offset may lie from [`Sample::offset`]: half the round trip.
    pub fn uncertainty(&self) -> u64 {
        self.rtt().div_ceil(2)
    }
}

/// What this node believes about one peer's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The peer's wall clock minus this node's.
    pub offset_ms: i64,
    pub uncertainty_ms: u64,
    /// Time since the sample's pong arrived.
    pub age_ms: u64,
}

/// What [`ClockMonitor::observe`] made of a reading of this node's two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Consistent with the readings before it.
    Steady,
    /// This node's wall clock jumped by this much against its monotonic clock since the
    /// last reading: every sample taken before was dropped.
    Stepped(i64),
    /// A reading older than the newest one, taken before a step (a ping in flight while
    /// the clock was set): its sample is worthless.
    Stale,
}

/// What [`ClockMonitor::record`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Whether the sample was kept (not stale, and not from this node itself).
    pub kept: bool,
    /// This node's wall clock stepped by this much: older samples were dropped.
    pub local_step: Option<i64>,
    /// The peer's offset moved by this much beyond what the samples' uncertainties
    /// allow (its clock was set): its older samples were dropped.
    pub peer_step: Option<i64>,
}

/// The last reading of this node's clocks, to notice its wall clock being set.
#[derive(Debug, Clone, Copy)]
struct Base {
    /// Wall minus monotonic at the newest reading.
    skew: i64,
    /// Monotonic time of the newest reading.
    mono: MonoMs,
    /// The last step: when (monotonic) and by how much.
    step: Option<(MonoMs, i64)>,
}

/// A sample fit to judge by: valid at `now` and not so vague that it could say nothing
/// either way.
fn usable(s: &Sample, now: MonoMs, max_offset_ms: u64) -> bool {
    now.saturating_sub(s.recv_mono) <= HORIZON_MS && s.uncertainty() <= max_offset_ms
}

/// The sample to judge a peer by: the usable one with the smallest round trip (of
/// equals, the newest).
fn best(q: &VecDeque<Sample>, now: MonoMs, max_offset_ms: u64) -> Option<Sample> {
    q.iter()
        .filter(|s| usable(s, now, max_offset_ms))
        .min_by_key(|s| (s.rtt(), std::cmp::Reverse(s.recv_mono)))
        .copied()
}

/// The samples and the rules. One per node; see the module docs.
#[derive(Debug, Clone)]
pub struct ClockMonitor {
    me: u64,
    max_offset_ms: u64,
    peers: BTreeMap<u64, VecDeque<Sample>>,
    base: Option<Base>,
}

impl ClockMonitor {
    pub fn new(me: u64, max_offset_ms: u64) -> ClockMonitor {
        ClockMonitor {
            me,
            max_offset_ms,
            peers: BTreeMap::new(),
            base: None,
        }
    }

    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// A jump of wall against monotonic time larger than this is a step. Half the bound:
    /// a smaller jump moves this node's offsets too little to matter before the next
    /// pings (half a second later) measure them afresh, while drift or NTP slewing
    /// between two readings half a second apart is well under a millisecond.
    fn step_threshold(&self) -> u64 {
        (self.max_offset_ms / 2).max(1)
    }

    /// Takes note of this node's wall and monotonic clocks, read together. If the wall
    /// clock jumped since the last reading, every sample taken before now is dropped:
    /// they were measured against a clock that no longer reads that way.
    pub fn observe(&mut self, wall: WallMs, mono: MonoMs) -> Observed {
        let skew = diff(wall, mono);
        let threshold = self.step_threshold();
        let Some(base) = self.base.as_mut() else {
            self.base = Some(Base {
                skew,
                mono,
                step: None,
            });
            return Observed::Steady;
        };
        let moved = skew.saturating_sub(base.skew);
        let jumped = moved.unsigned_abs() > threshold;
        if mono < base.mono {
            // Read before the newest reading but reported after it (pings run in
            // parallel). It cannot move the baseline; it is stale if it disagrees with
            // it or predates the last step.
            let before_step = base.step.is_some_and(|(at, _)| mono < at);
            return if jumped || before_step {
                Observed::Stale
            } else {
                Observed::Steady
            };
        }
        if !jumped {
            // Follow slow drift and slewing, so only a jump counts as a step.
            base.skew = skew;
            base.mono = mono;
            return Observed::Steady;
        }
        *base = Base {
            skew,
            mono,
            step: Some((mono, moved)),
        };
        for q in self.peers.values_mut() {
            q.retain(|s| s.sent_mono >= mono);
        }
        Observed::Stepped(moved)
    }

    /// Records an answered ping of `peer`.
    pub fn record(&mut self, peer: u64, s: Sample) -> Recorded {
        let mut out = Recorded {
            kept: false,
            local_step: None,
            peer_step: None,
        };
        match self.observe(s.sent_wall, s.sent_mono) {
            Observed::Stale => return out,
            Observed::Stepped(by) => out.local_step = Some(by),
            Observed::Steady => {}
        }
        if peer == self.me {
            return out;
        }
        let (threshold, max) = (self.step_threshold(), self.max_offset_ms);
        let q = self.peers.entry(peer).or_default();
        // A usable sample that contradicts the peer's best one beyond both their
        // uncertainties means the peer's clock was set: the old samples are wrong now.
        let before = best(q, s.recv_mono, max);
        if let Some(best) = before.filter(|_| s.uncertainty() <= max) {
            let moved = s.offset().saturating_sub(best.offset());
            let slack = s.uncertainty() + best.uncertainty() + threshold;
            if moved.unsigned_abs() > slack {
                q.clear();
                out.peer_step = Some(moved);
            }
        }
        q.push_back(s);
        while q.len() > WINDOW {
            q.pop_front();
        }
        out.kept = true;
        out
    }

    /// The current estimate of `peer`'s clock, if a valid measurement exists.
    pub fn estimate(&self, peer: u64, now: MonoMs) -> Option<Estimate> {
        let s = best(self.peers.get(&peer)?, now, self.max_offset_ms)?;
        Some(Estimate {
            offset_ms: s.offset(),
            uncertainty_ms: s.uncertainty(),
            age_ms: now.saturating_sub(s.recv_mono),
        })
    }

    /// Every peer with a valid measurement.
    pub fn estimates(&self, now: MonoMs) -> Vec<(u64, Estimate)> {
        self.peers
            .keys()
            .filter_map(|id| Some((*id, self.estimate(*id, now)?)))
            .collect()
    }

    /// Whether a peer's clock, as estimated, agrees with this node's.
    pub fn agrees(&self, e: &Estimate) -> bool {
        e.offset_ms.unsigned_abs().saturating_sub(e.uncertainty_ms) <= self.max_offset_ms
    }

    /// The verdict against `voters` at monotonic time `now` (call [`Self::observe`] with
    /// a fresh reading first, so a step since the last sample is seen).
    pub fn health(&self, voters: &BTreeSet<u64>, now: MonoMs) -> Health {
        let mut h = Health {
            max_offset_ms: self.max_offset_ms,
            voters: voters.len(),
            me_voter: voters.contains(&self.me),
            needed: voters.len() / 2 + 1,
            agree: Vec::new(),
            disagree: Vec::new(),
            unmeasured: Vec::new(),
            stepped: self
                .base
                .and_then(|b| b.step)
                .filter(|(at, _)| now.saturating_sub(*at) <= HORIZON_MS)
                .map(|(_, by)| by),
        };
        if voters.is_empty() {
            // Not part of a cluster yet: nothing to lead, nothing to compare with.
            h.needed = 0;
            return h;
        }
        for id in voters.iter().filter(|id| **id != self.me) {
            match self.estimate(*id, now) {
                Some(e) if self.agrees(&e) => h.agree.push((*id, e)),
                Some(e) => h.disagree.push((*id, e)),
                None => h.unmeasured.push(*id),
            }
        }
        h
    }
}
