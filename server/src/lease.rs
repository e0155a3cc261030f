//! The leader's lease, measured by this node's own Raft transport.
//!
//! A leader may answer a heartbeat from memory only while no other node can have been
//! elected: while a quorum acknowledged an AppendEntries it *sent* less than a lease ago
//! (each acknowledging follower refused votes, and held off its own election, for at
//! least `election_timeout_max` after receiving it, so after it was sent).
//!
//! Why not openraft's `millis_since_quorum_ack` metric: it is the age computed when the
//! metrics were last *published*, and they are published only when something changes. A
//! leader that was paused (SIGSTOP, a long GC-like stall, a VM freeze) reads a small age
//! that is seconds old, and promised deadlines while another node already led. The fault
//! schedule "SIGSTOP the leader, then rolling restart" caught exactly that: sessions
//! expired by the new leader ~500 ms before a deadline the old one had acknowledged.
//! Here the age is `now - sent` at the moment of asking, so a pause only makes the lease
//! look older, never younger.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use crate::types::{NodeId, Vote};

/// The send time of the newest acknowledged AppendEntries per peer, with the leader vote
/// it carried. Written by the replication tasks, read by every heartbeat call.
#[derive(Debug, Default)]
pub struct Acks {
    by_peer: Mutex<HashMap<NodeId, (Vote, Instant)>>,
}

impl Acks {
    /// A peer accepted (as its leader) an AppendEntries carrying `vote`, sent at `sent`.
    /// Late answers to an older vote, or to an older send, change nothing.
    pub fn record(&self, peer: NodeId, vote: &Vote, sent: Instant) {
        let mut map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&peer) {
            Some((v, t)) if v.leader_id() == vote.leader_id() => *t = (*t).max(sent),
            Some((v, _)) if v.leader_id() > vote.leader_id() => {}
            _ => {
                map.insert(peer, (*vote, sent));
            }
        }
    }

    /// The latest instant such that, in every config of `joint`, a majority of voters
    /// acknowledged `vote` with an AppendEntries sent at or after it (this node, `me`,
    /// counts as acknowledging at `now`). `None` when some config has no such majority.
    pub fn quorum_since(
        &self,
        vote: &Vote,
        joint: &[BTreeSet<NodeId>],
        me: NodeId,
        now: Instant,
    ) -> Option<Instant> {
        let map = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        quorum_since(joint, |id| {
            if id == me {
                return Some(now);
            }
            map.get(&id)
                .filter(|(v, _)| v.leader_id() == vote.leader_id())
                .map(|(_, t)| *t)
        })
    }
}

/// Pure core of [`Acks::quorum_since`]: `acked(id)` is when voter `id` last acknowledged.
pub fn quorum_since(
    joint: &[BTreeSet<NodeId>],
    acked: impl Fn(NodeId) -> Option<Instant>,
) -> Option<Instant> {
    let mut since: Option<Instant> = None;
    for config in joint {
        if config.is_empty() {
            continue;
        }
        let mut times: Vec<Instant> = config.iter().filter_map(|id| acked(*id)).collect();
        let majority = config.len() / 2 + 1;
        if times.len() < majority {
            return None;
        }
        // Newest first: the majority-th newest is the latest time a majority reached.
        times.sort_unstable_by(|a, b| b.cmp(a));
        let t = times[majority - 1];
        since = Some(since.map_or(t, |s| s.min(t)));
    }
    since
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn vote(term: u64, node: NodeId) -> Vote {
        let mut v = Vote::new(term, node);
        v.commit();
        v
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_is_counted_per_config_and_the_oldest_needed_ack_decides() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // (voter configs, (node, ack ms) pairs, the quorum time wanted)
        type Row = (
            &'static [&'static [NodeId]],
            &'static [(NodeId, u64)],
            Option<u64>,
        );
        let table: &[Row] = &[
            // Leader 1 (acks at 100 as "now"), node 2 at 40, node 3 at 70: the 2nd newest.
            (&[&[1, 2, 3]], &[(1, 100), (2, 40), (3, 70)], Some(70)),
            // Only the leader: no majority of three.
            (&[&[1, 2, 3]], &[(1, 100)], None),
            (&[&[1, 2, 3]], &[(1, 100), (3, 10)], Some(10)),
            // Five voters need three.
            (
                &[&[1, 2, 3, 4, 5]],
                &[(1, 100), (2, 90), (3, 20), (4, 50)],
                Some(50),
            ),
            // Joint: the older of the two configs' quorum times.
            (
                &[&[1, 2, 3], &[1, 4, 5]],
                &[(1, 100), (2, 90), (4, 30)],
                Some(30),
            ),
            (&[&[1, 2, 3], &[1, 4, 5]], &[(1, 100), (2, 90)], None),
            // A single voter is its own quorum.
            (&[&[1]], &[(1, 100)], Some(100)),
        ];
        for (joint, acks, want) in table {
            let joint: Vec<_> = joint.iter().map(|c| set(c)).collect();
            let got = quorum_since(&joint, |id| {
                acks.iter().find(|(n, _)| *n == id).map(|(_, ms)| at(*ms))
            });
            assert_eq!(got, want.map(at), "{joint:?} {acks:?}");
        }
    }

    #[test]
    fn acks_of_another_term_do_not_count_and_late_answers_never_go_back() {
        let acks = Acks::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let joint = [set(&[1, 2, 3])];
        acks.record(2, &vote(4, 2), at(50));
        // Node 1 leads term 5: node 2's ack was for term 4's leader.
        assert_eq!(acks.quorum_since(&vote(5, 1), &joint, 1, at(100)), None);
        acks.record(2, &vote(5, 1), at(60));
        acks.record(2, &vote(5, 1), at(20)); // a slow answer to an older send
        acks.record(2, &vote(4, 2), at(90)); // a late answer from the older term
        assert_eq!(
            acks.quorum_since(&vote(5, 1), &joint, 1, at(100)),
            Some(at(60))
        );
    }
}
