//! The monitor's rules on made-up time: true time `t` (ms) is this node's monotonic
//! clock; every node's wall clock is `EPOCH + t + its error`.

use std::collections::BTreeSet;

use super::monitor::{ClockMonitor, Observed, Sample, HORIZON_MS};

const EPOCH: u64 = 1_790_000_000_000;
const MAX: u64 = 500;
/// Five years of milliseconds: the faketime node of the end-to-end test.
const YEARS_5: i64 = 5 * 365 * 86_400_000;

fn wall(t: u64, err: i64) -> u64 {
    EPOCH.saturating_add(t).saturating_add_signed(err)
}

/// A ping sent at `t` with round trip `rtt`, answered by a peer whose clock is off by
/// `peer_err` and which read it `reads_at` ms after the send (`rtt / 2`: symmetric).
fn ping(t: u64, my_err: i64, peer_err: i64, rtt: u64, reads_at: u64) -> Sample {
    Sample {
        sent_wall: wall(t, my_err),
        sent_mono: t,
        recv_mono: t + rtt,
        peer_wall: wall(t + reads_at, peer_err),
    }
}

fn quick(t: u64, my_err: i64, peer_err: i64) -> Sample {
    ping(t, my_err, peer_err, 2, 1)
}

fn voters(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn a_peer_agrees_within_the_bound_and_leniently_by_the_uncertainty() {
    // (my error, peer error, rtt, when the peer read its clock, agrees)
    let cases: [(i64, i64, u64, u64, bool); 9] = [
        (0, 0, 2, 1, true),
        (0, 500, 2, 1, true),
        (0, -500, 2, 1, true),
        (0, 502, 2, 1, false),
        (250, -250, 2, 1, true),
        (30_000, 0, 2, 1, false),
        (-30_000, 0, 2, 1, false),
        // 700 ms off give or take 250: it may be 450, so it is not called bad...
        (0, 700, 500, 250, true),
        // ...but 800 give or take 250 is at least 550: bad.
        (0, 800, 500, 250, false),
    ];
    for (mine, theirs, rtt, reads_at, agrees) in cases {
        let mut m = ClockMonitor::new(1, MAX);
        m.record(2, ping(1_000, mine, theirs, rtt, reads_at));
        let e = m.estimate(2, 1_000 + rtt).unwrap();
        assert_eq!(e.offset_ms, theirs - mine, "{mine} {theirs} {rtt}");
        assert_eq!(e.uncertainty_ms, rtt / 2);
        assert_eq!(
            m.agrees(&e),
            agrees,
            "me {mine:+}, peer {theirs:+}, rtt {rtt}"
        );
    }
}

#[test]
fn leading_takes_agreement_with_a_quorum_of_voters_counting_itself() {
    let bad = YEARS_5;
    // (my id, voters, my error, peers with their errors, ok)
    #[allow(
        clippy::type_complexity,
        reason = "a table: the tuple's fields are named in the comment above"
    )]
    let cases: Vec<(&str, u64, &[u64], i64, Vec<(u64, i64)>, bool)> = vec![
        ("one voter needs only itself", 1, &[1], 0, vec![], true),
        ("one voter, even a wrong one", 1, &[1], bad, vec![], true),
        (
            "no measurements: only itself",
            1,
            &[1, 2, 3],
            0,
            vec![],
            false,
        ),
        (
            "one good peer is a quorum of 3",
            1,
            &[1, 2, 3],
            0,
            vec![(2, 3)],
            true,
        ),
        (
            "a bad peer does not hurt a good node",
            1,
            &[1, 2, 3],
            0,
            vec![(2, 10), (3, bad)],
            true,
        ),
        (
            "the bad node agrees with nobody",
            3,
            &[1, 2, 3],
            bad,
            vec![(1, 0), (2, 10)],
            false,
        ),
        (
            "30 s behind is as bad",
            3,
            &[1, 2, 3],
            -30_000,
            vec![(1, 0), (2, 10)],
            false,
        ),
        (
            "five voters: itself and two",
            1,
            &[1, 2, 3, 4, 5],
            0,
            vec![(2, 0), (3, 0)],
            true,
        ),
        (
            "five voters: itself and one is not enough",
            1,
            &[1, 2, 3, 4, 5],
            0,
            vec![(2, 0), (3, bad), (4, bad)],
            false,
        ),
        (
            "a learner needs a majority of the voters without itself",
            4,
            &[1, 2, 3],
            0,
            vec![(1, 0)],
            false,
        ),
        (
            "a learner with two voters",
            4,
            &[1, 2, 3],
            0,
            vec![(1, 0), (2, 0)],
            true,
        ),
        (
            "learners' clocks do not count",
            1,
            &[1, 2, 3],
            0,
            vec![(4, 0), (5, 0)],
            false,
        ),
    ];
    for (what, me, vs, mine, peers, ok) in cases {
        let mut m = ClockMonitor::new(me, MAX);
        for (peer, err) in &peers {
            m.record(*peer, quick(1_000, mine, *err));
        }
        let h = m.health(&voters(vs), 2_000);
        assert_eq!(h.ok(), ok, "{what}: {h:?}");
        assert_eq!(h.problem().is_none(), ok, "{what}");
    }
}

#[test]
fn the_bad_nodes_reason_names_each_peer_and_its_offset() {
    let mut m = ClockMonitor::new(3, MAX);
    m.record(1, quick(1_000, YEARS_5, 0));
    m.record(2, quick(1_000, YEARS_5, 30));
    let h = m.health(&voters(&[1, 2, 3, 4, 5]), 1_500);
    let p = h.problem().unwrap();
    for part in [
        "this node's clock is 157680000000 ms ahead of node 1 (±1 ms)",
        "157679999970 ms ahead of node 2",
        "nodes 4 and 5 answered no clock ping yet",
        "it agrees with 1 of 5 voters counting itself, and a quorum is 3",
        "it does not lead (max_clock_offset_ms = 500)",
    ] {
        assert!(p.contains(part), "{part:?} missing from {p:?}");
    }
    let mut behind = ClockMonitor::new(3, MAX);
    behind.record(1, quick(1_000, -30_000, 0));
    let p = behind.health(&voters(&[1, 3]), 1_500).problem().unwrap();
    assert!(p.contains("30000 ms behind node 1"), "{p}");
}

#[test]
fn the_quickest_round_trip_is_believed_over_slow_ones() {
    // A peer 900 ms off: one quick sample shows it, then slow round trips whose pongs
    // were held up on the way out would, alone, look like an agreeing clock (400 ± 500).
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, quick(1_000, 0, 900));
    for i in 0..5 {
        m.record(2, ping(2_000 + i * 500, 0, 900, 1_000, 0));
    }
    let e = m.estimate(2, 5_000).unwrap();
    assert_eq!((e.offset_ms, e.uncertainty_ms), (900, 1));
    assert!(!m.agrees(&e));
    // A good peer behind a slow link keeps its accurate estimate too.
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, ping(1_000, 0, 20, 4, 2));
    m.record(2, ping(1_500, 0, 20, 800, 790));
    assert_eq!(m.estimate(2, 2_400).unwrap().offset_ms, 20);
    // Samples too vague to say anything (rtt/2 above the bound) are not used at all.
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, ping(1_000, 0, 0, 1_200, 600));
    assert_eq!(m.estimate(2, 2_300), None);
}

#[test]
fn a_dead_peers_last_measurement_counts_for_the_horizon() {
    // Nodes 1 (the leader, which dies) and 2 agree; node 3 is bad. After the leader's
    // death node 2 still counts its agreement with node 1; node 3 never could.
    let mut good = ClockMonitor::new(2, MAX);
    let mut bad = ClockMonitor::new(3, MAX);
    good.record(1, quick(1_000, 0, 0));
    good.record(3, quick(1_000, 0, YEARS_5));
    bad.record(1, quick(1_000, YEARS_5, 0));
    bad.record(2, quick(1_000, YEARS_5, 0));
    let vs = voters(&[1, 2, 3]);
    for later in [60_000, HORIZON_MS] {
        let now = 1_002 + later;
        // Keep observing the (steady) local clocks, as the handle does.
        assert_eq!(good.observe(wall(now, 0), now), Observed::Steady);
        assert!(good.health(&vs, now).ok(), "{later} ms after the death");
        assert!(!bad.health(&vs, now).ok());
    }
    let expired = 1_003 + HORIZON_MS;
    let h = good.health(&vs, expired);
    assert!(!h.ok() && h.unmeasured == vec![1, 3], "{h:?}");
}

#[test]
fn setting_this_nodes_wall_clock_drops_older_measurements() {
    let vs = voters(&[1, 2, 3]);
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, quick(1_000, 0, 0));
    m.record(3, quick(1_000, 0, 0));
    assert!(m.health(&vs, 1_500).ok());
    // Slow drift and slewing (100 ms over a minute) are no step.
    assert_eq!(m.observe(wall(61_000, 100), 61_000), Observed::Steady);
    assert!(m.health(&vs, 61_000).ok());
    // Someone sets the clock 30 s ahead: older samples were taken against the old one.
    assert_eq!(
        m.observe(wall(62_000, 30_100), 62_000),
        Observed::Stepped(30_000)
    );
    let h = m.health(&vs, 62_000);
    assert!(!h.ok() && h.unmeasured == vec![2, 3], "{h:?}");
    assert!(
        h.problem()
            .unwrap()
            .contains("since this node's wall clock was set by +30000 ms"),
        "{h:?}"
    );
    // A ping that left before the step but is answered after it is worthless.
    let in_flight = quick(61_990, 100, 0);
    assert!(!m.record(2, in_flight).kept);
    // Fresh pings now show the truth: this node is 30 s ahead.
    let r = m.record(2, quick(62_500, 30_100, 0));
    assert!(r.kept && r.local_step.is_none());
    m.record(3, quick(62_500, 30_100, 0));
    let h = m.health(&vs, 63_000);
    assert_eq!(h.disagree.len(), 2, "{h:?}");
    assert!(!h.ok());
}

#[test]
fn a_peer_whose_clock_was_set_is_judged_by_its_new_clock() {
    // Its old quick samples would otherwise win the RTT filter for four seconds.
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, quick(1_000, 0, 0));
    m.record(2, quick(1_500, 0, 0));
    let r = m.record(2, ping(2_000, 0, 30_000, 10, 5));
    assert_eq!(r.peer_step, Some(30_000));
    let e = m.estimate(2, 2_010).unwrap();
    assert_eq!(e.offset_ms, 30_000);
    assert!(!m.agrees(&e));
    // Jitter within the uncertainties is no step.
    let mut m = ClockMonitor::new(1, MAX);
    m.record(2, quick(1_000, 0, 0));
    assert_eq!(m.record(2, ping(1_500, 0, 0, 600, 600)).peer_step, None);
}

#[test]
fn no_membership_means_nothing_to_judge() {
    let m = ClockMonitor::new(1, MAX);
    let h = m.health(&BTreeSet::new(), 0);
    assert!(h.ok());
    assert_eq!(h.summary(), "no cluster membership yet");
}

#[test]
fn a_member_judges_against_the_voters_raft_knows_not_an_empty_set() {
    let c = super::Clock::new(1, MAX);
    // The pinger has not run: an empty voter set reads as "not in a cluster yet".
    assert!(c.check().is_ok());
    // Raft knows the membership (a restarted node reads it from its log at once): with
    // no peer measured, this node may not stamp or lead.
    let why = c.check_among([1, 2, 3]).unwrap_err();
    assert!(
        why.contains("nodes 2 and 3 answered no clock ping yet"),
        "{why}"
    );
    // The voters stick for the callers that read no membership themselves.
    assert!(c.check().is_err());
    // Alone in a one-node cluster: nothing to compare with, it agrees with itself.
    assert!(c.check_among([1]).is_ok());
}
