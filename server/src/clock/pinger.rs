//! The clock monitor's async shell: pings every other member about twice a second over
//! the Raft links, feeds the answers to the [`Clock`], and opens or closes Raft's
//! election and heartbeats as the verdict changes.
//!
//! Closing works like this (openraft 0.9 has no leadership transfer): a node whose
//! clock is bad never campaigns (`elect(false)`); if it leads, it stops sending
//! heartbeats (`heartbeat(false)`) and the write path refuses to propose, so its log
//! goes quiet, the followers' leader lease runs out, and they elect one of themselves;
//! the new leader's higher term then makes the old one a follower. Raft starts with both
//! closed (see `NodeConfig::raft_config`): a node opens them only once its clock agrees
//! with a quorum, so it never campaigns on an unchecked clock. The one exception is
//! `Raft::initialize`, which campaigns at once whatever `elect` says: a node with a bad
//! clock that forms a new cluster gives the leadership up like any bad leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tally_proto::v1::ClockPing;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Request;

use super::{Clock, Health, Report, Sample};
use crate::network::Network;
use crate::types::{Raft, TallyNode};

/// How often each peer is pinged.
const PING_EVERY: Duration = Duration::from_millis(500);
/// A pong later than this is no use (its uncertainty would be half of it): a second,
/// so a dead peer never holds up a round for long.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the guard stands, to log each change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not in a cluster yet (no membership): nothing to lead, nothing to compare.
    Alone,
    /// May lead.
    Agrees,
    /// Lacks measurements (fresh start, peers down, or its own clock was just set).
    Unmeasured,
    /// Measured against a quorum and found off.
    Disagrees,
}

impl Verdict {
    fn of(h: &Health) -> Verdict {
        if h.voters == 0 {
            Verdict::Alone
        } else if h.ok() {
            Verdict::Agrees
        } else if h.disagree.is_empty() {
            Verdict::Unmeasured
        } else {
            Verdict::Disagrees
        }
    }

    /// Whether Raft may campaign and heartbeat. Not while alone: a restarted node is
    /// "alone" only until Raft publishes the membership it read from its log, and a
    /// node that campaigned then would do so on an unchecked clock. A node with no
    /// membership has nobody to campaign against anyway (`Raft::initialize` campaigns
    /// whatever this says).
    fn open(self) -> bool {
        matches!(self, Verdict::Agrees)
    }
}

/// Opens and closes Raft's election and heartbeats.
#[derive(Debug, Default)]
struct Guard {
    /// `None` until the first verdict; Raft starts closed.
    last: Option<Verdict>,
    /// Whether the clock ever agreed with a quorum: until then, waiting for pings is
    /// the normal start, not a warning.
    agreed: bool,
}

impl Guard {
    fn apply(&mut self, raft: &Raft, h: &Health) {
        let now = Verdict::of(h);
        let was = self.last.replace(now);
        if was == Some(now) {
            return;
        }
        if was.map(Verdict::open) != Some(now.open()) {
            let rc = raft.runtime_config();
            rc.elect(now.open());
            rc.heartbeat(now.open());
        }
        let problem = h.problem().unwrap_or_default();
        match now {
            Verdict::Alone => tracing::debug!("no cluster membership yet: no clock to compare"),
            Verdict::Agrees if self.agreed => tracing::info!(
                "CLOCK OK: this node's clock agrees with a quorum again; it may lead ({})",
                h.summary()
            ),
            Verdict::Agrees => tracing::info!(
                "clock agrees with a quorum: this node may lead ({})",
                h.summary()
            ),
            Verdict::Unmeasured if !self.agreed => tracing::info!(
                "waiting for the first clock pings before this node may campaign: {problem}"
            ),
            Verdict::Unmeasured => tracing::warn!("CLOCK UNCHECKED: {problem}"),
            Verdict::Disagrees => tracing::error!("CLOCK BAD: {problem}"),
        }
        self.agreed |= now == Verdict::Agrees;
    }
}

/// Runs until shutdown. See the module docs.
pub(crate) async fn run(
    me: u64,
    clock: Clock,
    raft: Raft,
    net: Network,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut guard = Guard::default();
    let mut metrics = raft.metrics();
    loop {
        let round = Instant::now();
        let (voters, members) = {
            let m = metrics.borrow_and_update();
            let mem = m.membership_config.membership();
            let voters: BTreeSet<u64> = mem.voter_ids().collect();
            let members: BTreeMap<u64, TallyNode> = mem
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            (voters, members)
        };
        clock.set_voters(voters);
        guard.apply(&raft, &clock.health());
        let mut pings = JoinSet::new();
        for (id, node) in &members {
            pings.spawn(ping(clock.clone(), net.clone(), *id, node.clone()));
        }
        tokio::select! {
            _ = async { while pings.join_next().await.is_some() {} } => {}
            _ = shutdown.recv() => return,
        }
        guard.apply(&raft, &clock.health());
        // The next round in PING_EVERY, or at once when the membership changes (a new
        // cluster's first members, a node added), so a node never waits half a second
        // to measure a peer it has just learnt of.
        let next = round + PING_EVERY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = shutdown.recv() => return,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return; // Raft stopped.
                    }
                    let m = metrics.borrow_and_update();
                    let now: BTreeSet<u64> =
                        m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
                    if now.iter().any(|id| *id != me && !members.contains_key(id)) {
                        break;
                    }
                }
            }
        }
    }
}

/// One ping; a failure (the peer down, a timeout) records nothing: the peer's last
/// good measurement stays valid for the horizon.
async fn ping(clock: Clock, net: Network, id: u64, node: TallyNode) {
    let mut client = match net.raft_client(id, &node) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(peer = id, "clock ping: {e}");
            return;
        }
    };
    let (sent_wall, sent_mono) = clock.read();
    let mut req = Request::new(ClockPing {
        sent_wall_ms: sent_wall,
    });
    req.set_timeout(PING_TIMEOUT);
    net.stamp(&mut req);
    let pong = match tokio::time::timeout(PING_TIMEOUT, client.clock(req)).await {
        Ok(Ok(p)) => p.into_inner(),
        Ok(Err(s)) => {
            tracing::debug!(peer = id, "clock ping: {}: {}", s.code(), s.message());
            return;
        }
        Err(_) => {
            tracing::debug!(peer = id, "clock ping: no answer within {PING_TIMEOUT:?}");
            return;
        }
    };
    let recv_mono = clock.mono();
    clock.record(
        id,
        Sample {
            sent_wall,
            sent_mono,
            recv_mono,
            peer_wall: pong.wall_ms,
        },
        Report {
            ok: pong.clock_ok,
            problem: pong.clock_problem,
        },
    );
}
