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
            History {
                sessions: BTreeMap::from([(
                    7,
                    SessionRecord {
                        ttl_ms: 3_000,
                        acked_deadline_ms: 5_000,
                        crashed_ms: None,
                    },
                )]),
                ..History::default()
            },
            Some("before the deadline 5000"),
        ),
        (
            "a crashed session never cleaned up",
            vec![grant(1, 1_000, 7, 1, 1, 1)],
            History {
                sessions: BTreeMap::from([(
                    7,
                    SessionRecord {
                        ttl_ms: 3_000,
                        acked_deadline_ms: 4_000,
                        crashed_ms: Some(1_500),
                    },
                )]),
                ..History::default()
            },
            Some("never expired"),
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

/// Three bad histories the checker of issue 13 must catch, as this (old) checker sees
/// them: it judges events alone, never the entry that caused them, ignores release
/// causes and queues, and takes the licensed counts from the harness's first license. So
/// it passes all three; the independent model that replaces it must not.
#[test]
fn the_old_checker_passes_three_bad_histories() {
    let queued = Step {
        index: 1,
        at_ms: 900,
        req: None,
        events: vec![Event::Queued {
            feature: "gamma".into(),
            session: 7,
            place: 1,
        }],
    };
    let from_queue = |index, at| {
        let mut g = grant(index, at, 7, index, index, 0);
        g.req = None; // a ServeQueue entry carries no request
        g
    };
    let cases: Vec<(&str, Vec<Step>, u64)> = vec![
        (
            // Entry 2 is a Tick: nothing in it may end a lease.
            "a lease dropped without cause",
            vec![grant(1, 1_000, 7, 1, 1, 1), {
                let mut r = release(2, 1_500, 1, 1, None);
                r.events[0] = Event::Released {
                    feature: "gamma".into(),
                    lease: 1,
                    seat: 1,
                    cause: ReleaseCause::SessionExpired,
                };
                r
            }],
            1,
        ),
        (
            "a grant from a queue twice",
            vec![
                queued,
                from_queue(2, 1_000),
                release(3, 1_100, 2, 2, None),
                from_queue(4, 1_200),
            ],
            1,
        ),
        (
            // Entry 1 reloads the license with gamma down to 1 seat; a node installs a
            // snapshot up to 10 and grants a second seat at 11.
            "a seat over the count right after a snapshot install",
            vec![
                Step {
                    index: 1,
                    at_ms: 900,
                    req: None,
                    events: vec![Event::LicenseLoaded {
                        source: "harness.lic".into(),
                        lines: 3,
                    }],
                },
                grant(2, 1_000, 7, 2, 2, 1),
                grant(11, 2_000, 8, 11, 11, 1),
            ],
            2,
        ),
    ];
    for (name, steps, gamma) in cases {
        let r = Rules {
            seats: BTreeMap::from([("gamma".to_string(), gamma)]),
            ..rules()
        };
        let found = check_events(&steps, &History::default(), &r);
        assert!(found.is_empty(), "{name}: the old checker found {found:?}");
    }
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
            "seed {seed}: {} ops, {} entries, faults {:?}",
            report.ops, report.entries, report.faults
        );
        assert!(
            report.ops > 20,
            "seed {seed}: the workload did almost nothing"
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed} (rerun with TALLY_SEED={seed}): {:#?}\nlogs were in {}",
            report.violations,
            dir.keep().display()
        );
    }
}
