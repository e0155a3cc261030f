//! Fault tests: the checker catches forged bad histories (table-driven), and random
//! nemesis schedules against real processes end with zero violations. A failing
//! schedule prints its seed; rerun it with `TALLY_SEED=<seed> cargo test -p tally-tests
//! --test faults schedules`.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;

use tally_core::ledger::{Event, Grant, Holder, Op, ReleaseCause, RequestId, SessionAuth};
use tally_core::license::Version;
use tally_tests::archive::{merge, Record};
use tally_tests::checker::{check, Rules, Step};
use tally_tests::nemesis;
use tally_tests::workload::{History, Op as ClientOp, Outcome, SessionRecord};

const SECRET: [u8; 32] = [5; 32];

fn step(index: u64, at_ms: u64, op: Op, events: Vec<Event>) -> Step {
    Step {
        index,
        at_ms,
        op,
        events,
    }
}

fn req(session: u64, seq: u64) -> RequestId {
    RequestId {
        client: [session as u8; 16],
        seq,
    }
}

fn auth(session: u64) -> SessionAuth {
    SessionAuth {
        session,
        secret: SECRET,
    }
}

/// Loads `gamma` with `seats` seats and `linger` (e.g. " LINGER=1") as harness.lic.
fn load(index: u64, seats: u32, linger: &str) -> Step {
    let text = format!("VENDOR demo\nFEATURE gamma demo 1.0 permanent {seats}{linger}\n");
    let license = tally_core::license::parse(&text).unwrap();
    step(
        index,
        500,
        Op::LoadLicense {
            source: "harness.lic".into(),
            license,
        },
        vec![Event::LicenseLoaded {
            source: "harness.lic".into(),
            lines: 1,
        }],
    )
}

/// Session `index` opened by user u`index` on host h`index`, TTL 3 s.
fn open(index: u64, at: u64) -> Step {
    step(
        index,
        at,
        Op::OpenSession {
            req: req(index, 1),
            holder: Holder {
                user: format!("u{index}"),
                host: format!("h{index}"),
                display: String::new(),
                pid: 1,
            },
            ttl_ms: 3_000,
            secret: SECRET,
            origin: Default::default(),
        },
        vec![Event::SessionOpened {
            session: index,
            user: format!("u{index}"),
            host: format!("h{index}"),
        }],
    )
}

fn checkout_op(session: u64, seq: u64, wait_ms: Option<u64>) -> Op {
    Op::Checkout {
        req: req(session, seq),
        auth: auth(session),
        feature: "gamma".into(),
        version: Version::whole(1),
        count: 1,
        wait_ms,
    }
}

fn granted(index: u64, session: u64, seat: u64, token: u64) -> Event {
    Event::Granted {
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
            granted_ms: 0,
        },
    }
}

/// A checkout by `session` (request `seq`) granted a fresh seat.
fn grant(index: u64, at: u64, session: u64, seq: u64) -> Step {
    step(
        index,
        at,
        checkout_op(session, seq, None),
        vec![granted(index, session, index, index)],
    )
}

/// `session` checks `lease` (on seat `lease`) in; the seat lingers until `linger`, or is
/// freed at once.
fn checkin(index: u64, at: u64, session: u64, lease: u64, linger: Option<u64>) -> Step {
    let mut events = vec![Event::Released {
        feature: "gamma".into(),
        lease,
        seat: lease,
        cause: ReleaseCause::Checkin,
    }];
    events.push(match linger {
        Some(until) => Event::Lingering {
            feature: "gamma".into(),
            seat: lease,
            until,
        },
        // The checker does not read when a seat was charged (the usage history does).
        None => Event::Reclaimed {
            feature: "gamma".into(),
            seat: lease,
            count: 1,
            charged_ms: 0,
        },
    });
    step(
        index,
        at,
        Op::Checkin {
            req: req(session, index),
            auth: auth(session),
            lease,
        },
        events,
    )
}

fn reclaim(index: u64, at: u64, seat: u64) -> Step {
    step(
        index,
        at,
        Op::ReclaimSeats { seats: vec![seat] },
        vec![Event::Reclaimed {
            feature: "gamma".into(),
            seat,
            count: 1,
            charged_ms: 0,
        }],
    )
}

fn expire(index: u64, at: u64, session: u64) -> Step {
    step(
        index,
        at,
        Op::ExpireSessions {
            sessions: vec![session],
        },
        vec![Event::SessionExpired { session }],
    )
}

fn rules() -> Rules {
    Rules {
        cleanup_bound_ms: 1_000,
        healed_ms: 0,
        end_ms: 100_000,
    }
}

fn granted_to_client(session: u64, lease: u64, token: u64) -> ClientOp {
    ClientOp {
        client: 0,
        session,
        what: "checkout".into(),
        start_ms: 0,
        end_ms: 0,
        outcome: Outcome::Granted { lease, token },
    }
}

fn session_record(acked_deadline_ms: u64, crashed_ms: Option<u64>) -> SessionRecord {
    SessionRecord {
        ttl_ms: 3_000,
        acked_deadline_ms,
        crashed_ms,
    }
}

/// Each case: a history and what the checker must say about it (None: nothing).
type Case = (&'static str, Vec<Step>, History, Option<&'static str>);

#[test]
fn the_checker_catches_forged_bad_histories() {
    let linger = " LINGER=1";
    let cases: Vec<Case> = vec![
        (
            "a correct history",
            vec![
                load(1, 1, linger),
                open(2, 900),
                grant(3, 1_000, 2, 2),
                checkin(4, 2_000, 2, 3, Some(3_000)),
                reclaim(5, 3_000, 3),
                open(6, 3_100),
                grant(7, 3_500, 6, 2),
            ],
            History {
                ops: vec![granted_to_client(2, 3, 3), granted_to_client(6, 7, 7)],
                ..History::default()
            },
            None,
        ),
        (
            "the injected bug: a reclaim before the linger ends",
            vec![
                load(1, 1, linger),
                open(2, 900),
                grant(3, 1_000, 2, 2),
                checkin(4, 2_000, 2, 3, Some(3_000)),
                reclaim(5, 2_500, 3),
            ],
            History::default(),
            Some("reclaimed at 2500 before its linger ended at 3000"),
        ),
        (
            "over-granting a one-seat feature",
            vec![
                load(1, 1, ""),
                open(2, 900),
                open(3, 900),
                grant(4, 1_000, 2, 2),
                grant(5, 1_100, 3, 2),
            ],
            History::default(),
            Some("2 seats of gamma in use, 1 licensed"),
        ),
        (
            "one seat held by two sessions without DUP_GROUP",
            vec![load(1, 2, ""), open(2, 900), open(3, 900), grant(4, 1_000, 2, 2), {
                step(5, 1_100, checkout_op(3, 2, None), vec![granted(5, 3, 4, 5)])
            }],
            History::default(),
            Some("but gamma has no DUP_GROUP"),
        ),
        (
            "a fencing token that is not the grant's index",
            vec![load(1, 2, ""), open(2, 900), {
                step(3, 1_000, checkout_op(2, 2, None), vec![granted(3, 2, 3, 2)])
            }],
            History::default(),
            Some("both must be the granting entry's index"),
        ),
        (
            "a retried request granted twice",
            vec![
                load(1, 2, ""),
                open(2, 900),
                grant(3, 1_000, 2, 9),
                grant(4, 1_200, 2, 9),
            ],
            History::default(),
            Some("granted a second time"),
        ),
        (
            "an acknowledged grant missing from the log",
            vec![load(1, 1, ""), open(2, 900), grant(3, 1_000, 2, 2)],
            History {
                ops: vec![granted_to_client(2, 99, 99)],
                ..History::default()
            },
            Some("was granted lease 99"),
        ),
        (
            "an expiry before the acknowledged deadline",
            vec![open(1, 1_000), expire(2, 4_000, 1)],
            History {
                sessions: BTreeMap::from([(1, session_record(5_000, None))]),
                ..History::default()
            },
            Some("before the deadline 5000"),
        ),
        (
            "an expiry before the TTL ran out",
            vec![open(1, 1_000), expire(2, 3_500, 1)],
            History::default(),
            Some("expired at 3500 though its TTL"),
        ),
        (
            "a crashed session never cleaned up",
            vec![load(1, 1, ""), open(2, 900), grant(3, 1_000, 2, 2)],
            History {
                sessions: BTreeMap::from([(2, session_record(4_000, Some(1_500)))]),
                ..History::default()
            },
            Some("never expired"),
        ),
        (
            "a crashed session expired long after its TTL",
            vec![open(1, 900), expire(2, 6_000, 1)],
            History {
                sessions: BTreeMap::from([(1, session_record(4_000, Some(1_500)))]),
                ..History::default()
            },
            Some("expired 4500 ms after crash/heal"),
        ),
        (
            "a seat reclaimed while held",
            vec![
                load(1, 1, ""),
                open(2, 900),
                grant(3, 1_000, 2, 2),
                reclaim(4, 2_000, 3),
            ],
            History::default(),
            Some("seat 3 reclaimed while held"),
        ),
        (
            "a crashed session still holding its lease at the end",
            vec![load(1, 1, ""), open(2, 900), grant(3, 1_000, 2, 2)],
            History {
                sessions: BTreeMap::from([(2, session_record(4_000, Some(1_500)))]),
                ..History::default()
            },
            Some("crashed session 2 still holds lease 3 at the end"),
        ),
        (
            "a seat reclaimed that was never granted",
            vec![load(1, 1, ""), reclaim(2, 1_000, 9)],
            History::default(),
            Some("unknown seat 9 reclaimed"),
        ),
        (
            "a seat left lingering forever",
            vec![
                load(1, 1, linger),
                open(2, 900),
                grant(3, 1_000, 2, 2),
                checkin(4, 2_000, 2, 3, Some(3_000)),
            ],
            History::default(),
            Some("still lingers"),
        ),
        // The three the old checker (events alone, fixed counts) passed: see
        // `the_old_checker_passes_three_bad_histories` in commit 9ecbd54.
        (
            "a lease dropped without cause",
            vec![load(1, 1, ""), open(2, 900), grant(3, 1_000, 2, 2), {
                step(
                    4,
                    1_500,
                    Op::Tick,
                    vec![
                        Event::Released {
                            feature: "gamma".into(),
                            lease: 3,
                            seat: 3,
                            cause: ReleaseCause::SessionExpired,
                        },
                        Event::Reclaimed {
                            feature: "gamma".into(),
                            seat: 3,
                            count: 1,
                            charged_ms: 1_000,
                        },
                    ],
                )
            }],
            History::default(),
            Some("lease 3 of session 2 dropped as SessionExpired by Tick: nothing in this entry is such a cause"),
        ),
        (
            "a grant from a queue twice",
            vec![
                load(1, 1, ""),
                open(2, 900),
                open(3, 900),
                grant(4, 1_000, 3, 2),
                step(
                    5,
                    1_100,
                    checkout_op(2, 2, Some(0)),
                    vec![Event::Queued {
                        feature: "gamma".into(),
                        session: 2,
                        place: 5,
                    }],
                ),
                checkin(6, 1_200, 3, 4, None),
                step(7, 1_300, Op::ServeQueue, vec![granted(7, 2, 7, 7)]),
                checkin(8, 1_400, 2, 7, None),
                step(9, 1_500, Op::ServeQueue, vec![granted(9, 2, 9, 9)]),
            ],
            History::default(),
            Some("the queue granted gamma to session 2, which does not wait for it"),
        ),
    ];
    for (name, steps, history, expected) in cases {
        let found = check(&steps, &history, &rules()).violations;
        match expected {
            None => assert!(found.is_empty(), "{name}: {found:?}"),
            Some(text) => assert!(
                found.iter().any(|v| v.contains(text)),
                "{name}: expected a violation containing {text:?}, got {found:?}"
            ),
        }
    }
}

fn applied(st: Step) -> Record {
    Record::Applied {
        index: st.index,
        at_ms: st.at_ms,
        op: st.op,
        events: st.events,
    }
}

/// The third of the old checker's misses, through the archives as a run reads them: the
/// license went down to one seat of gamma (index 4) while one was held; node 2 was away,
/// installed a snapshot up to 10, and granted a second seat at 11.
#[test]
fn a_seat_over_the_count_right_after_a_snapshot_install_is_caught() {
    let first: Vec<Step> = vec![
        load(1, 2, ""),
        open(2, 900),
        grant(3, 1_000, 2, 2),
        load(4, 1, ""),
        open(5, 1_100),
    ];
    let ticks = (6..=10).map(|i| step(i, 1_200, Op::Tick, vec![]));
    let node1: Vec<Record> = std::iter::once(Record::Restored { index: 0 })
        .chain(first.iter().cloned().chain(ticks).map(applied))
        .collect();
    let node2 = vec![
        Record::Restored { index: 0 },
        applied(first[0].clone()),
        applied(first[1].clone()),
        Record::Installed { index: 10 },
        applied(grant(11, 2_000, 5, 2)),
    ];
    let merged = merge(&BTreeMap::from([(1, node1), (2, node2)]));
    assert!(merged.violations.is_empty(), "{:?}", merged.violations);
    assert_eq!(
        (merged.last_index, merged.installs.clone()),
        (11, vec![(2, 10)])
    );
    let found = check(&merged.steps, &History::default(), &rules()).violations;
    assert!(
        found
            .iter()
            .any(|v| v == "index 11: 2 seats of gamma in use, 1 licensed"),
        "{found:?}"
    );
}

/// Merging finds nodes that disagree, entries applied twice or skipped in one run of a
/// process, and holes no archive covers.
#[test]
fn merging_archives_finds_disagreement_gaps_and_holes() {
    let a = applied(open(1, 900));
    let b = applied(open(1, 901));
    let tick = |i| applied(step(i, 1_000, Op::Tick, vec![]));
    let cases: Vec<(&str, Vec<Record>, Vec<Record>, &str)> = vec![
        (
            "two nodes, two entries at one index",
            vec![Record::Restored { index: 0 }, a.clone()],
            vec![Record::Restored { index: 0 }, b],
            "applied index 1 differently",
        ),
        (
            "an index skipped within one run",
            vec![Record::Restored { index: 0 }, a.clone(), tick(3)],
            vec![Record::Restored { index: 0 }, a.clone(), tick(2), tick(3)],
            "applied index 3 where 2 was next",
        ),
        (
            "an index nobody archived",
            vec![
                Record::Restored { index: 0 },
                a.clone(),
                Record::Installed { index: 2 },
                tick(3),
            ],
            vec![Record::Restored { index: 0 }, a.clone()],
            "no node archived indexes [2]",
        ),
        (
            "a restart on a snapshot from nowhere",
            vec![
                Record::Restored { index: 0 },
                a.clone(),
                Record::Restored { index: 5 },
            ],
            vec![Record::Restored { index: 0 }, a],
            "beyond anything it had applied",
        ),
    ];
    for (name, n1, n2, expected) in cases {
        let m = merge(&BTreeMap::from([(1, n1), (2, n2)]));
        assert!(
            m.violations.iter().any(|v| v.contains(expected)),
            "{name}: expected {expected:?}, got {:?}",
            m.violations
        );
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
            "seed {seed}: {} ops ({} grants and {} checkins after the heal), {} entries, {} snapshot installs, seen {:?}, faults {:?}",
            report.ops,
            report.granted_after_heal,
            report.checked_in_after_heal,
            report.entries,
            report.installs,
            report.seen,
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
