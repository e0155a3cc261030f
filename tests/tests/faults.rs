//! Fault tests: the checker catches forged bad histories (table-driven), and random
//! nemesis schedules against real processes end with zero violations. A failing
//! schedule prints its seed; rerun it with `TALLY_SEED=<seed> cargo test -p tally-tests
//! --test faults schedules`.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use tally_core::ledger::{Event, Grant, ReleaseCause, RequestId};
use tally_tests::checker::{check_events, Rules, Step};
use tally_tests::nemesis;
use tally_tests::workload::{History, Op, Outcome, SessionRecord};

fn grant(index: u64, at: u64, session: u64, seat: u64, token: u64, req: u64) -> Step {
    Step {
        index,
        at_ms: at,
        req: Some(RequestId {
            client: [session as u8; 16],
            seq: req,
        }),
        events: vec![Event::Granted {
            feature: "gamma".into(),
            session,
            grant: Grant {
                lease: index,
                seat,
                fencing_token: token,
                count: 1,
                overdraft: 0,
                reused: false,
                shared: false,
                granted_ms: at,
            },
        }],
    }
}

fn release(index: u64, at: u64, lease: u64, seat: u64, linger_until: Option<u64>) -> Step {
    let mut events = vec![Event::Released {
        feature: "gamma".into(),
        lease,
        seat,
        cause: ReleaseCause::Checkin,
    }];
    events.push(match linger_until {
        Some(until) => Event::Lingering {
            feature: "gamma".into(),
            seat,
            until,
        },
        None => Event::Reclaimed {
            feature: "gamma".into(),
            seat,
            count: 1,
        },
    });
    Step {
        index,
        at_ms: at,
        req: None,
        events,
    }
}

fn reclaim(index: u64, at: u64, seat: u64) -> Step {
    Step {
        index,
        at_ms: at,
        req: None,
        events: vec![Event::Reclaimed {
            feature: "gamma".into(),
            seat,
            count: 1,
        }],
    }
}

fn expire(index: u64, at: u64, session: u64) -> Step {
    Step {
        index,
        at_ms: at,
        req: None,
        events: vec![Event::SessionExpired { session }],
    }
}

/// A history that knows one session, 7: its TTL, the last deadline a heartbeat was
/// acknowledged with, and when its client crashed, if it did.
fn session_7(ttl_ms: u64, acked_deadline_ms: u64, crashed_ms: Option<u64>) -> History {
    History {
        sessions: BTreeMap::from([(
            7,
            SessionRecord {
                ttl_ms,
                acked_deadline_ms,
                crashed_ms,
            },
        )]),
        ..History::default()
    }
}

fn rules() -> Rules {
    Rules {
        seats: BTreeMap::from([("gamma".to_string(), 1)]),
        cleanup_bound_ms: 1_000,
        healed_ms: 0,
        end_ms: 100_000,
    }
}

fn granted_to_client(session: u64, lease: u64, token: u64) -> Op {
    Op {
        client: 0,
        session,
        what: "checkout".into(),
        start_ms: 0,
        end_ms: 0,
        outcome: Outcome::Granted { lease, token },
    }
}

#[test]
fn the_checker_catches_forged_bad_histories() {
    let linger = |until| Some(until);
    // Each case: a history and what the checker must say about it (None: nothing).
    let cases: Vec<(&str, Vec<Step>, History, Option<&str>)> = vec![
        (
            "a correct history",
            vec![
                grant(1, 1_000, 7, 1, 1, 1),
                release(2, 2_000, 1, 1, linger(3_000)),
                reclaim(3, 3_000, 1),
                grant(4, 3_500, 8, 4, 4, 1),
            ],
            History {
                ops: vec![granted_to_client(7, 1, 1), granted_to_client(8, 4, 4)],
                ..History::default()
            },
            None,
        ),
        (
            "the injected bug: a reclaim before the linger ends",
            vec![
                grant(1, 1_000, 7, 1, 1, 1),
                release(2, 2_000, 1, 1, linger(3_000)),
                reclaim(3, 2_500, 1),
            ],
            History::default(),
            Some("reclaimed at 2500 before its linger ended at 3000"),
        ),
        (
            "over-granting a one-seat feature",
            vec![grant(1, 1_000, 7, 1, 1, 1), grant(2, 1_100, 8, 2, 2, 1)],
            History::default(),
            Some("2 seats of gamma in use, 1 licensed"),
        ),
        (
            "one seat held by two sessions",
            vec![grant(1, 1_000, 7, 1, 1, 1), grant(2, 1_100, 8, 1, 2, 1)],
            History::default(),
            Some("held by sessions"),
        ),
        (
            "a fencing token going backwards",
            vec![
                grant(5, 1_000, 7, 5, 5, 1),
                release(6, 1_100, 5, 5, linger(9_000)),
                grant(7, 1_200, 7, 5, 4, 2),
            ],
            History::default(),
            Some("token went from 5 to 4"),
        ),
        (
            "a retried request granted twice",
            vec![
                grant(1, 1_000, 7, 1, 1, 9),
                release(2, 1_100, 1, 1, None),
                grant(3, 1_200, 7, 3, 3, 9),
            ],
            History::default(),
            Some("granted a second time"),
        ),
        (
            "an acknowledged grant missing from the log",
            vec![grant(1, 1_000, 7, 1, 1, 1)],
            History {
                ops: vec![granted_to_client(7, 2, 2)],
                ..History::default()
            },
            Some("was granted lease 2"),
        ),
        (
            "an expiry before the acknowledged deadline",
            vec![expire(1, 4_000, 7)],
            session_7(3_000, 5_000, None),
            Some("before the deadline 5000"),
        ),
        (
            "a crashed session never cleaned up",
            vec![grant(1, 1_000, 7, 1, 1, 1)],
            session_7(3_000, 4_000, Some(1_500)),
            Some("never expired"),
        ),
        (
            "a crashed session expired long after its TTL",
            vec![expire(1, 6_000, 7)],
            session_7(3_000, 4_000, Some(1_500)),
            Some("expired 4500 ms after crash/heal"),
        ),
        (
            "a seat reclaimed while held",
            vec![grant(1, 1_000, 7, 1, 1, 1), reclaim(2, 2_000, 1)],
            History::default(),
            Some("reclaimed while held"),
        ),
        (
            "an expired crashed session still holding its lease",
            vec![grant(1, 1_000, 7, 1, 1, 1), expire(2, 4_500, 7)],
            session_7(3_000, 4_000, Some(1_500)),
            Some("still holds lease 1 at the end"),
        ),
        (
            "a seat reclaimed that was never granted",
            vec![reclaim(1, 1_000, 9)],
            History::default(),
            Some("unknown seat 9 reclaimed"),
        ),
        (
            "a seat left lingering forever",
            vec![
                grant(1, 1_000, 7, 1, 1, 1),
                release(2, 2_000, 1, 1, linger(3_000)),
            ],
            History::default(),
            Some("still lingers"),
        ),
    ];
    for (name, steps, history, expected) in cases {
        let found = check_events(&steps, &history, &rules());
        match expected {
            None => assert!(found.is_empty(), "{name}: {found:?}"),
            Some(text) => assert!(
                found.iter().any(|v| v.contains(text)),
                "{name}: expected a violation containing {text:?}, got {found:?}"
            ),
        }
    }
}

#[test]
fn a_node_whose_ledger_differs_from_the_replayed_log_is_named() {
    let replayed = BTreeMap::from([(10, vec![1u8; 32]), (12, vec![2u8; 32])]);
    let digests = BTreeMap::from([
        (1, (10, vec![1u8; 32])),
        (2, (12, vec![3u8; 32])),
        // An index the replay has no digest for is a mismatch too.
        (3, (11, vec![1u8; 32])),
    ]);
    assert_eq!(
        nemesis::digest_mismatches(&digests, &replayed),
        vec![
            "node 2's ledger at index 12 differs from the replayed log".to_string(),
            "node 3's ledger at index 11 differs from the replayed log".to_string(),
        ]
    );
}

/// A bounded set of random schedules for CI. `TALLY_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_of_random_faults_keep_every_promise() {
    let seeds: Vec<u64> = match std::env::var("TALLY_SEED") {
        Ok(s) => vec![s.parse().expect("TALLY_SEED is a number")],
        Err(_) => {
            let base = tally_tests::workload::now_ms();
            (0..3).map(|i| base.wrapping_add(i * 7919)).collect()
        }
    };
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("schedule seed {seed}: {:?}", nemesis::schedule(seed, 4));
        let report = nemesis::run(seed, dir.path(), 4, 6)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the run failed: {e:#}"));
        eprintln!(
            "seed {seed}: {} ops ({} grants and {} checkins after the heal), {} entries, faults {:?}",
            report.ops,
            report.granted_after_heal,
            report.checked_in_after_heal,
            report.entries,
            report.faults
        );
        // Liveness, not just safety: a cluster that denies everything breaks no promise
        // about seats, so the healed cluster must be seen granting and taking back.
        assert!(
            report.granted_after_heal > 0 && report.checked_in_after_heal > 0,
            "seed {seed}: the healed cluster granted {} checkouts and answered {} checkins",
            report.granted_after_heal,
            report.checked_in_after_heal
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed} (rerun with TALLY_SEED={seed}): {:#?}\nlogs were in {}",
            report.violations,
            dir.keep().display()
        );
    }
}
