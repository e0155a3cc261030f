//! The keeper's decisions on a fake clock, driving a real ledger the way Raft would. The
//! soak's keeper bugs (tests/README.md's bug table) each have a test here.

use tally_core::ledger::{
    Entry, Holder, Ledger, Op, Reply, RequestId, SecretDigest, SessionId, TimeMs, OUTAGE_GAP_MS,
};

use super::core::{fresh_start, Beat, Core, BATCH, CHECKPOINT_LAG_MS};

const T0: TimeMs = 1_780_000_000_000;
const TTL: u64 = 30_000;
const ELECTION_MAX: u64 = 600;
const SECRET: SecretDigest = [4; 32];

/// A ledger and the entries a leader would write to it.
struct Log {
    ledger: Ledger,
    index: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            ledger: Ledger::new(),
            index: 0,
        }
    }

    fn apply(&mut self, at_ms: TimeMs, op: Op) -> Reply {
        self.index += 1;
        self.ledger
            .apply(&Entry {
                index: self.index,
                at_ms,
                op,
            })
            .reply
    }

    fn open(&mut self, at_ms: TimeMs, client: u8) -> SessionId {
        let reply = self.apply(
            at_ms,
            Op::OpenSession {
                req: RequestId {
                    client: [client; 16],
                    seq: 1,
                },
                holder: Holder {
                    user: format!("u{client}"),
                    host: "ws".into(),
                    display: String::new(),
                    pid: 1,
                },
                ttl_ms: TTL,
                secret: SECRET,
                origin: Default::default(),
            },
        );
        match reply {
            Reply::SessionOpened { session, .. } => session,
            r => panic!("{r:?}"),
        }
    }

    /// Ticks every second from `from` to `to`, as an idle leader does.
    fn ticks(&mut self, from: TimeMs, to: TimeMs) {
        let mut t = from;
        while t < to {
            t = (t + 1_000).min(to);
            self.apply(t, Op::Tick);
        }
    }
}

fn beat(core: &mut Core, log: &Log, now: TimeMs, s: SessionId) -> Beat {
    core.heartbeat(&log.ledger, now, &[(s, SECRET)])[0]
}

#[test]
fn only_a_loaded_keeper_answers_heartbeats() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    assert_eq!(beat(&mut core, &log, T0, s), Beat::NotLeader);
    core.establish(2, &log.ledger);
    assert!(core.is_loaded(2, 0));
    assert!(matches!(beat(&mut core, &log, T0, s), Beat::Alive { .. }));
    assert_eq!(
        core.heartbeat(&log.ledger, T0, &[(s, [0; 32]), (999, SECRET)]),
        vec![Beat::BadSecret, Beat::Unknown]
    );
    core.step_down();
    assert_eq!(beat(&mut core, &log, T0, s), Beat::NotLeader);
}

/// Bug table, c093233: a failover could expire a session before TTL after a heartbeat
/// the old leader acknowledged, because fresh deadlines added only the election timeout
/// to the checkpoint, not the checkpoint's lag.
#[test]
fn a_new_leaders_deadlines_cover_the_checkpoint_lag() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(3, &log.ledger);
    // The old leader acknowledged a beat up to TTL/4 + a checkpoint period + commit time
    // after the checkpoint it wrote; its promise was beat + TTL.
    let acked = T0 + TTL / 4 + CHECKPOINT_LAG_MS;
    let (start, ttl) = core.beats[&s];
    assert!(
        start + ttl >= acked + TTL,
        "{start} + {ttl} < {acked} + {TTL}"
    );
    assert_eq!(start, fresh_start(T0, TTL, ELECTION_MAX));
}

/// Bug table, e79c801 (soak seeds 13 and 19): a leader promised now + TTL, died before
/// checkpointing, and its successor started from the older checkpoint.
#[test]
fn a_heartbeat_promises_only_what_a_successor_would_grant() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    let later = T0 + 20_000;
    log.ticks(T0, later);
    let Beat::Alive { deadline_ms, .. } = beat(&mut core, &log, later, s) else {
        panic!("alive");
    };
    let mut successor = Core::new(ELECTION_MAX);
    successor.establish(2, &log.ledger);
    let (start, ttl) = successor.beats[&s];
    assert!(
        deadline_ms <= start + ttl,
        "promised {deadline_ms}, a successor grants {}",
        start + ttl
    );
    assert!(
        deadline_ms < later + TTL,
        "capped below now + TTL until checkpointed"
    );
    // Once checkpointed, the full promise is honoured by a successor.
    let op = core
        .checkpoint(&log.ledger, later)
        .into_iter()
        .next()
        .expect("a checkpoint is due");
    log.apply(later, op);
    let Beat::Alive { deadline_ms, .. } = beat(&mut core, &log, later + 1, s) else {
        panic!("alive");
    };
    assert_eq!(deadline_ms, later + 1 + TTL);
}

/// Bug table, e79c801: a heartbeat after the deadline must not revive the session.
#[test]
fn a_heartbeat_after_the_deadline_answers_expired() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    let (start, ttl) = core.beats[&s];
    assert_eq!(beat(&mut core, &log, start + ttl, s), Beat::Expired);
}

/// Bug table, e79c801: checkpoints on a leadership's first tick.
#[test]
fn the_first_tick_of_a_leadership_checkpoints_then_once_a_second() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut old = Core::new(ELECTION_MAX);
    old.establish(1, &log.ledger);
    log.ticks(T0, T0 + 10_000);
    beat(&mut old, &log, T0 + 10_000, s);
    // A new leader that saw the beat (it had the dirty flag from its own heartbeats).
    let mut core = Core::new(ELECTION_MAX);
    core.establish(2, &log.ledger);
    log.ticks(T0 + 10_000, T0 + 12_000);
    beat(&mut core, &log, T0 + 12_000, s);
    assert!(
        !core.checkpoint(&log.ledger, T0 + 12_000).is_empty(),
        "first tick"
    );
    beat(&mut core, &log, T0 + 20_000, s);
    assert!(
        core.checkpoint(&log.ledger, T0 + 12_500).is_empty(),
        "within the second"
    );
    assert!(!core.checkpoint(&log.ledger, T0 + 21_000).is_empty());
}

/// At scale every due beat is checkpointed each period, in bounded entries, the stalest
/// in the ledger first: a fixed 10,000 a period in hash order left the same sessions
/// behind until a new leader expired 46,901 live ones (BENCHMARKS.md, "Overload").
#[test]
fn checkpoints_keep_up_with_every_session_and_the_stalest_go_first() {
    use super::core::{CHECKPOINT_BATCH, CHECKPOINT_ENTRIES};
    let mut log = Log::new();
    let n = CHECKPOINT_BATCH * CHECKPOINT_ENTRIES + 5;
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            let mut client = [0u8; 16];
            client[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let open = Op::OpenSession {
                req: RequestId { client, seq: 1 },
                holder: Holder {
                    user: "ci".into(),
                    host: "farm".into(),
                    display: String::new(),
                    pid: 1,
                },
                ttl_ms: TTL,
                secret: SECRET,
                origin: Default::default(),
            };
            match log.apply(T0, open) {
                Reply::SessionOpened { session, .. } => session,
                r => panic!("{r:?}"),
            }
        })
        .collect();
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    let at = T0 + TTL / 2;
    log.ticks(T0, at);
    for &s in &ids {
        beat(&mut core, &log, at, s);
    }
    let ops = core.checkpoint(&log.ledger, at);
    assert_eq!(ops.len(), CHECKPOINT_ENTRIES, "bounded per period");
    let written: usize = ops
        .iter()
        .map(|op| match op {
            Op::CheckpointHeartbeats { beats } => {
                assert!(beats.len() <= CHECKPOINT_BATCH);
                beats.len()
            }
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(written, CHECKPOINT_BATCH * CHECKPOINT_ENTRIES);
    // The 5 left over lead the next period, however many others beat meanwhile.
    assert_eq!(core.dirty.len(), 5);
    let left: Vec<u64> = core.dirty.iter().copied().collect();
    for op in ops {
        log.apply(at, op);
    }
    let later = at + 1_000;
    log.ticks(at, later + TTL / 2);
    for &s in &ids[..100] {
        beat(&mut core, &log, later + TTL / 2, s);
    }
    let next = core.checkpoint(&log.ledger, later + TTL / 2);
    let Some(Op::CheckpointHeartbeats { beats }) = next.first() else {
        panic!("a checkpoint is due: {next:?}");
    };
    assert_eq!(beats.len(), 105);
    let first: Vec<u64> = beats[..5].iter().map(|&(id, _)| id).collect();
    let mut want = left;
    want.sort_unstable();
    let mut got = first;
    got.sort_unstable();
    assert_eq!(got, want, "the stalest (never checkpointed) go first");
}

#[test]
fn repeated_elections_never_extend_a_dead_session() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut now = T0;
    let mut deadline = None;
    // A new leader every 1.5 s, each loading from the same checkpoint: the deadline is
    // the same every time, and the session expires on schedule.
    for term in 1..=20 {
        let mut core = Core::new(ELECTION_MAX);
        core.establish(term, &log.ledger);
        let (start, ttl) = core.beats[&s];
        assert_eq!(*deadline.get_or_insert(start + ttl), start + ttl);
        log.ticks(now, now + 1_500);
        now += 1_500;
        if !core.due_expiries(&log.ledger, now).is_empty() {
            break;
        }
    }
    let d = deadline.unwrap_or(0);
    assert_eq!(d, fresh_start(T0, TTL, ELECTION_MAX) + TTL);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(99, &log.ledger);
    log.ticks(now, d);
    assert_eq!(core.due_expiries(&log.ledger, d), vec![s]);
    log.apply(d, Op::ExpireSessions { sessions: vec![s] });
    core.expired(&log.ledger, &[s]);
    assert!(log.ledger.session(s).is_none() && core.beats.is_empty());
}

#[test]
fn after_a_full_outage_deadlines_run_from_the_return() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    // Everything stops for a minute; the first entry after it ends the outage.
    let back = T0 + 60_000;
    assert!(back - T0 > OUTAGE_GAP_MS);
    log.apply(back, Op::Tick);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(5, &log.ledger);
    assert!(core.due_expiries(&log.ledger, back + TTL - 1).is_empty());
    // A live client heartbeats within its TTL of the return: kept.
    assert!(matches!(
        beat(&mut core, &log, back + TTL / 2, s),
        Beat::Alive { .. }
    ));
    // A dead one is due TTL (plus the failover allowance) after the return.
    let dead = log.open(back, 2);
    log.ticks(back, back + 40_000);
    core.track_new(&log.ledger);
    let due = core.due_expiries(&log.ledger, fresh_start(back, TTL, ELECTION_MAX) + TTL);
    assert_eq!(due, vec![dead]);
}

#[test]
fn a_keeper_whose_expiry_the_ledger_refused_keeps_tracking_the_session() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    let d = fresh_start(T0, TTL, ELECTION_MAX) + TTL;
    log.ticks(T0, d);
    let due = core.due_expiries(&log.ledger, d);
    assert_eq!(due, vec![s]);
    // Meanwhile an outage ended (a later leader's entry): the ledger refuses the expiry.
    log.apply(
        d + 10_000,
        Op::ExpireSessions {
            sessions: due.clone(),
        },
    );
    core.expired(&log.ledger, &due);
    assert!(log.ledger.session(s).is_some());
    assert!(
        core.beats.contains_key(&s),
        "still tracked, from the new floor"
    );
}

#[test]
fn a_mass_expiry_goes_out_in_batches() {
    let mut log = Log::new();
    for c in 0..=255u8 {
        for k in 0..10 {
            log.apply(
                T0,
                Op::OpenSession {
                    req: RequestId {
                        client: [c; 16],
                        seq: k,
                    },
                    holder: Holder {
                        user: "u".into(),
                        host: "h".into(),
                        display: String::new(),
                        pid: 1,
                    },
                    ttl_ms: TTL,
                    secret: SECRET,
                    origin: Default::default(),
                },
            );
        }
    }
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    let late = T0 + 120_000;
    log.ticks(T0, late);
    assert_eq!(core.due_expiries(&log.ledger, late).len(), BATCH);
}

#[test]
fn a_clock_repair_reloads_the_deadlines() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let mut core = Core::new(ELECTION_MAX);
    core.establish(1, &log.ledger);
    // A bad time got in; the admin repairs it. The keeper must reload, from the repair.
    let bad = T0 + 5 * 365 * 86_400_000;
    log.apply(bad, Op::Tick);
    log.apply(bad, Op::RepairClock { to_ms: T0 + 2_000 });
    assert!(!core.is_loaded(1, log.ledger.clock_epoch()));
    core.establish(1, &log.ledger);
    assert_eq!(core.beats[&s].0, fresh_start(T0 + 2_000, TTL, ELECTION_MAX));
}

#[test]
fn a_quiet_log_gets_a_tick_each_second() {
    let mut log = Log::new();
    log.apply(T0, Op::Tick);
    let core = Core::new(ELECTION_MAX);
    assert_eq!(core.tick(&log.ledger, T0 + 999), None);
    assert_eq!(core.tick(&log.ledger, T0 + 1_000), Some(Op::Tick));
}

#[test]
fn deadlines_follow_beats_forward_only_and_forget_cleans_up() {
    let mut core = Core::new(ELECTION_MAX);
    assert!(core.touch(7, 1_000, 3_000));
    assert!(core.touch(8, 500, 3_000));
    // Earliest deadline first.
    assert_eq!(core.deadlines.first(), Some(&(3_500, 8)));
    assert!(core.touch(8, 2_000, 3_000));
    assert_eq!(core.deadlines.first(), Some(&(4_000, 7)));
    // A stale beat never moves a deadline back.
    assert!(!core.touch(8, 1_500, 3_000));
    assert_eq!(core.beats[&8], (2_000, 3_000));
    assert_eq!(core.deadlines.len(), 2, "one deadline per session");
    core.dirty.insert(7);
    core.forget(7);
    assert!(!core.beats.contains_key(&7) && core.dirty.is_empty());
    assert_eq!(
        core.deadlines.iter().copied().collect::<Vec<_>>(),
        vec![(5_000, 8)]
    );
}

/// Helper-found bug (outage test): a leader elected after a full-cluster outage loaded
/// deadlines before any entry recorded the outage, so every deadline was past and the
/// first heartbeat of a live client was answered "expired". It must first write the entry
/// that ends the outage; then sessions not heard of since get exactly TTL from the return.
#[test]
fn after_an_outage_the_leader_ends_it_in_the_log_before_loading_deadlines() {
    let mut log = Log::new();
    let s = log.open(T0, 1);
    let back = T0 + 60_000;
    let mut core = Core::new(ELECTION_MAX);
    assert!(
        core.outage_pending(4, &log.ledger, back),
        "the log is silent"
    );
    // Loaded now, the session would already be due: exactly the bug.
    let d = fresh_start(T0, TTL, ELECTION_MAX) + TTL;
    assert!(d < back);
    // The keeper writes a tick (its own term's), then loads.
    log.apply(back, Op::Tick);
    assert!(!core.outage_pending(4, &log.ledger, back));
    core.establish(4, &log.ledger);
    assert_eq!(core.beats[&s], (back, TTL), "exactly TTL from the return");
    assert!(matches!(
        beat(&mut core, &log, back + TTL / 2, s),
        Beat::Alive { .. }
    ));
    // A leader of a later term did not end the outage itself: it keeps the allowance.
    let mut later = Core::new(ELECTION_MAX);
    later.establish(5, &log.ledger);
    assert_eq!(later.beats[&s].0, fresh_start(back, TTL, ELECTION_MAX));
}
