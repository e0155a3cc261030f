//! What every service and the lease keeper share, and the one place where they ask Raft
//! anything: proposing (with the entry's time), exact reads, who leads, and the clock a
//! leader runs its term on. Handlers and the keeper do not read Raft metrics themselves.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tally_core::ledger::{Op, Outcome, TimeMs};
use tally_proto::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use tokio::sync::broadcast;
use tonic::Status;

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::keeper::Keeper;
use crate::store::{self, StateMachine};
use crate::types::{Command, NodeId, Raft, TallyNode};

/// The longest a proposal waits for its entry to be applied (see `propose`).
const PROPOSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachine,
    /// Read-only use outside Raft: the admin log export.
    pub log: store::LogStore,
    pub cfg: Arc<NodeConfig>,
    pub keeper: Arc<Keeper>,
    /// Whether this node's wall clock agrees with its peers': it proposes nothing and
    /// does not lead while not.
    pub clock: Clock,
    /// Fires when the node stops, so long-running calls (queued checkouts) end at once
    /// instead of holding up a graceful shutdown.
    pub shutdown: broadcast::Sender<()>,
    /// The leader's clock for its term; see [`TermClock`].
    term_clock: Arc<TermClock>,
    /// Why heartbeats were refused, and the quorum-ack ages sampled (for `/metrics`).
    pub stats: Arc<crate::stats::Stats>,
    /// Peers' acknowledgements as the Raft transport saw them: the lease's clock.
    acks: Arc<crate::lease::Acks>,
    /// The term this process first saw itself lead, and its log's last index then: see
    /// [`Shared::role`].
    lead_from: Arc<Mutex<(u64, u64)>>,
    /// The bound on client writes in flight (`limits.max_pending_writes`).
    pub admission: crate::admission::Admission,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared(node {})", self.id)
    }
}

/// This node's wall clock, in milliseconds since the Unix epoch. Only [`TermClock`]
/// anchors on it; everything that decides uses [`Shared::now_ms`].
pub fn wall_ms() -> TimeMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A "not the leader" answer: `UNAVAILABLE`, with the leader's address and id in the
/// metadata when known, for the client to follow.
pub fn not_leader(leader: Option<(u64, &TallyNode)>) -> Status {
    let mut s = Status::unavailable(match leader {
        Some((id, n)) => format!("not the leader; the leader is node {id} at {}", n.addr),
        None => "not the leader, and no leader is known yet (election in progress): retry shortly"
            .into(),
    });
    if let Some((id, n)) = leader {
        if let Ok(v) = n.addr.parse() {
            s.metadata_mut().insert(LEADER_ADDR_METADATA, v);
        }
        if let Ok(v) = id.to_string().parse() {
            s.metadata_mut().insert(LEADER_ID_METADATA, v);
        }
    }
    s
}

/// Where this node stands in the cluster, from one look at Raft's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leader of `term`; `established` once its state machine holds everything committed
    /// before: it applied an entry of that term, and its log as far as it reached when
    /// this process first saw itself lead.
    Leader {
        term: u64,
        established: bool,
    },
    Other,
}

impl Shared {
    pub fn new(
        raft: Raft,
        sm: StateMachine,
        log: store::LogStore,
        cfg: Arc<NodeConfig>,
        clock: Clock,
        shutdown: broadcast::Sender<()>,
        // The transport, for what it records: peers' acknowledgements (the lease) and
        // append round trips (metrics).
        network: &crate::network::Network,
    ) -> Shared {
        let admission = crate::admission::Admission::new(cfg.limits.max_pending_writes);
        Shared {
            id: cfg.id,
            raft,
            sm,
            log,
            cfg,
            keeper: Arc::new(Keeper::default()),
            clock,
            shutdown,
            term_clock: Arc::new(TermClock::default()),
            stats: network.stats(),
            acks: network.acks(),
            lead_from: Arc::default(),
            admission,
        }
    }

    /// This node's clock verdict against the voters of the membership in `m` (see
    /// [`Clock::check_among`]).
    fn clock_check(&self, m: &openraft::RaftMetrics<NodeId, TallyNode>) -> Result<(), String> {
        self.clock
            .check_among(m.membership_config.membership().voter_ids())
    }

    /// A copy of Raft's metrics, for status displays.
    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, TallyNode> {
        self.raft.metrics().borrow().clone()
    }

    /// A leader whose clock disagrees with its peers' is not acting as one: it is about
    /// to lose its lease (it stopped heartbeating), proposes nothing, and its keeper idles
    /// until it recovers (then reloads from the checkpoints).
    pub fn role(&self) -> Role {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader || self.clock_check(&m).is_err() {
            return Role::Other;
        }
        // openraft restores a restarted leader as leader of the same term at once, with
        // no new entry, and its state machine replays the log only as far as the (lazily
        // saved) commit mark: an entry of this term may be applied while checkpoints
        // committed before the restart are not yet, and a keeper loading then gave
        // sessions earlier deadlines than it had promised before the restart (fault seed
        // 1796234347935, rolling restart). Every committed entry is in a leader's log, so
        // applying the log as far as it reached when this process first saw itself lead
        // is enough, for a restart and for an election alike.
        let last_log = m.last_log_index.unwrap_or(0);
        let needed = {
            let mut from = self.lead_from.lock().unwrap_or_else(|p| p.into_inner());
            if from.0 != m.current_term {
                *from = (m.current_term, last_log);
            }
            from.1
        };
        Role::Leader {
            term: m.current_term,
            established: m
                .last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term && l.index >= needed),
        }
    }

    /// The leader as this node knows it, if it is another node.
    pub fn other_leader(&self) -> Option<(u64, TallyNode)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader.filter(|l| *l != self.id)?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// "Not the leader", naming the leader this node knows of.
    pub fn not_leader(&self) -> Status {
        let leader = self.other_leader();
        not_leader(leader.as_ref().map(|(id, n)| (*id, n)))
    }

    /// Leader, and acknowledged by a quorum more recently than any other node could have
    /// started an election: the condition for answering a heartbeat from memory.
    pub fn sure_leader(&self) -> bool {
        self.lease().is_ok()
    }

    /// Whether this node may answer a heartbeat from memory now, and why not. The lease
    /// is measured here and now from the transport's acknowledgements (see
    /// [`crate::lease`]), never from a published metric, which can be stale.
    pub fn lease(&self) -> Result<(), crate::stats::Refusal> {
        use crate::stats::Refusal;
        match self.quorum_ack_age_ms()? {
            Some(age) if age < self.lease_ms() => Ok(()),
            _ => Err(Refusal::Unsure),
        }
    }

    /// How long after the send time of the newest quorum-acknowledged append this node
    /// may still be sure it leads. openraft's followers refuse votes, and hold off their
    /// own elections, for `election_timeout_max` after receiving an append from their
    /// leader (its `leader_lease`), and the leader itself refuses votes for as long after
    /// a quorum acknowledged it; receipt is after the send, so a quorum blocks every
    /// other candidate for at least that long after it. Less a twentieth, for the rates
    /// of the nodes' monotonic clocks: NTP slews at most 500 ppm, a hundredth of that.
    /// (It used to be `election_min_ms`, chosen when the age came from metrics; under
    /// load, acknowledgements 300-600 ms old were refused for no safety gain.)
    pub fn lease_ms(&self) -> u64 {
        self.cfg.election_max_ms - self.cfg.election_max_ms / 20
    }

    /// How long ago (ms) the newest append a quorum acknowledged was sent, if this node
    /// leads with a clock its peers agree with (else `NotLeader`); `None` if no quorum
    /// has acknowledged it in this term yet.
    pub fn quorum_ack_age_ms(&self) -> Result<Option<u64>, crate::stats::Refusal> {
        // Borrowed, not cloned: this runs for every heartbeat call, and the metrics hold
        // the membership and replication maps.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        // Its deadlines run from a clock its peers must agree with: promise none while
        // they do not.
        if m.state != ServerState::Leader || self.clock_check(&m).is_err() {
            return Err(crate::stats::Refusal::NotLeader);
        }
        let now = Instant::now();
        let since = self.acks.quorum_since(
            &m.vote,
            m.membership_config.membership().get_joint_config(),
            self.id,
            now,
        );
        Ok(since.map(|t| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX)))
    }

    /// The cluster's time as this node should use it: while it leads, its term clock
    /// (see [`TermClock`]); otherwise its wall clock, which then decides nothing.
    pub fn now_ms(&self) -> TimeMs {
        match self.role() {
            Role::Leader { term, .. } => {
                let live = self.sm.read().live_entry;
                self.term_clock
                    .now(term, live, self.cfg.max_clock_offset_ms)
            }
            Role::Other => wall_ms(),
        }
    }

    /// [`Shared::propose`] for a client's write: refused "busy" at once, before anything
    /// is proposed, when `limits.max_pending_writes` are in flight (see `admission.rs`).
    pub async fn propose_client(&self, op: Op) -> Result<Outcome, Status> {
        let _slot = self.admission.try_enter().map_err(|busy| {
            self.stats.write_busy();
            Status::unavailable(format!("node {}: {busy}", self.id))
        })?;
        self.propose(op).await
    }

    /// Proposes an op stamped with this leader's term clock and waits for it to be
    /// applied. While this node's clock disagrees with its peers' (or is not yet
    /// measured) nothing it stamps is handed to Raft, whatever it believes about the
    /// leadership: the caller is sent to the leader it knows, else told UNAVAILABLE.
    /// Not "hand it to Raft, a follower refuses anyway": the metrics' leader can lag the
    /// Raft core, which may have restored this node as leader at start, and then the
    /// write went through stamped with the bad clock (fault soak seed 37: a node
    /// restarted 40 s ahead wrote a checkout 40 s ahead; ledger time, which never goes
    /// back, took it as the end of a 40 s outage, and every expiry came 40 s late).
    pub async fn propose(&self, op: Op) -> Result<Outcome, Status> {
        self.propose_by(op, None).await
    }

    /// [`Shared::propose`] for an administrator's request: `by` (the certificate's
    /// name) goes into the entry, for the usage history.
    pub async fn propose_by(&self, op: Op, by: Option<String>) -> Result<Outcome, Status> {
        let checked = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            self.clock_check(&m).map_err(|why| (why, m.current_leader))
        };
        if let Err((why, leader)) = checked {
            return Err(match leader {
                Some(l) if l != self.id => self.not_leader(),
                _ => Status::unavailable(format!(
                    "node {} proposes nothing while its clock is off: {why}",
                    self.id
                )),
            });
        }
        let cmd = Command {
            at_ms: self.now_ms(),
            op,
            by,
        };
        // openraft may never answer a write whose entry a snapshot install purged on a
        // node that lost leadership meanwhile; without a bound the caller (the lease
        // keeper, say) would wait forever, and a keeper stuck so expires nothing again
        // even after this node leads anew (soak seed 13 of the checker branch).
        let write = tokio::time::timeout(PROPOSAL_TIMEOUT, self.raft.client_write(cmd));
        let Ok(written) = write.await else {
            return Err(Status::unavailable(
                "proposal not answered in time; it may or may not have been applied",
            ));
        };
        match written {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id.zip(f.leader_node.as_ref())))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(stopped(&e)),
        }
    }

    /// Why this node's Raft stopped for good (a storage error, a full disk), if it did.
    /// The node is then neither healthy nor ready, answers everything UNAVAILABLE, and
    /// `tallyd` exits non-zero after a short drain so a supervisor restarts it.
    pub fn fatal(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Waits until this node may serve an exact read: it is leader and has applied
    /// everything committed before the read began (openraft's ReadIndex round).
    pub async fn linearizable(&self) -> Result<(), Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f.leader_id.zip(f.leader_node.as_ref())))
            }
            Err(RaftError::Fatal(e)) => Err(stopped(&e)),
            Err(e) => Err(Status::unavailable(format!(
                "cannot confirm leadership: {e}"
            ))),
        }
    }
}

/// A node whose Raft stopped answers UNAVAILABLE, not INTERNAL: the call may well work
/// on another node, and clients retry UNAVAILABLE there.
fn stopped(e: &impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "this node's consensus stopped ({e}): its disk or storage failed, and it is shutting down; retry on another node"
    ))
}

/// The last entry this node applied while it was live: the entry's time and when (on
/// this node's monotonic clock) it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveEntry {
    pub at_ms: TimeMs,
    pub applied: Instant,
}

/// An entry applied within this much (by this node's wall clock) of its own time was
/// applied live, as it happened; one applied long after (replayed at start after an
/// outage) says nothing about how much time has passed since.
pub const LIVE_WINDOW_MS: u64 = tally_core::ledger::OUTAGE_GAP_MS;

/// The leader's clock for a term: entries are stamped with it and deadlines run on it.
///
/// It is anchored once per term, then advances with the monotonic clock only, so a step
/// of the wall clock during the term (an admin's `date -s`, a bad NTP server) moves no
/// entry time and no deadline. The anchor is the wall clock, which the clock monitor
/// vouches for (a node whose clock disagrees with its peers' does not lead), capped by
/// the last entry this node applied live plus the monotonic time since plus
/// `max_clock_offset`: a new leader's first stamp never runs ahead of the time it saw
/// its predecessor write by more than the time it measured passing, plus that bound.
/// After a process restart there is no live entry and the wall clock alone anchors.
#[derive(Debug, Default)]
pub struct TermClock {
    anchor: Mutex<Option<Anchor>>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    term: u64,
    base_ms: TimeMs,
    at: Instant,
}

impl TermClock {
    /// The term's time now, anchoring it on the first call of a term.
    pub fn now(&self, term: u64, live: Option<LiveEntry>, bound_ms: u64) -> TimeMs {
        let mut anchor = match self.anchor.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let a = match *anchor {
            Some(a) if a.term == term => a,
            _ => {
                let at = Instant::now();
                let since_live = live.map(|l| {
                    (
                        l.at_ms,
                        u64::try_from(at.duration_since(l.applied).as_millis()).unwrap_or(u64::MAX),
                    )
                });
                let a = Anchor {
                    term,
                    base_ms: anchor_ms(wall_ms(), since_live, bound_ms),
                    at,
                };
                *anchor = Some(a);
                a
            }
        };
        let elapsed = u64::try_from(a.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.base_ms.saturating_add(elapsed)
    }
}

/// A term's starting time: the wall clock, but no later than the last live entry's time
/// plus the monotonic time since it was applied plus `bound_ms`.
pub fn anchor_ms(wall_ms: TimeMs, live: Option<(TimeMs, u64)>, bound_ms: u64) -> TimeMs {
    match live {
        Some((at_ms, elapsed_ms)) => {
            wall_ms.min(at_ms.saturating_add(elapsed_ms).saturating_add(bound_ms))
        }
        None => wall_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::anchor_ms;

    #[test]
    fn a_term_starts_at_the_wall_clock_but_never_ahead_of_what_was_seen_passing() {
        let bound = 500;
        let cases = [
            // (wall, live entry (time, ms since applied), expected start, why)
            (
                10_000,
                None,
                10_000,
                "no live entry: the vouched-for wall clock",
            ),
            (10_000, Some((9_000, 800)), 10_000, "wall within the bound"),
            (10_000, Some((9_000, 100)), 9_600, "wall ahead: capped"),
            (
                10_000 + 157_680_000_000,
                Some((10_000, 2_000)),
                12_500,
                "five years ahead: capped at what passed",
            ),
            (
                8_000,
                Some((9_000, 100)),
                8_000,
                "behind: the ledger keeps max()",
            ),
        ];
        for (wall, live, want, why) in cases {
            assert_eq!(anchor_ms(wall, live, bound), want, "{why}");
        }
    }
}
