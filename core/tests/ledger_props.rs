//! Property tests of the ledger over random histories: random sessions, checkouts,
//! checkins, closes, expiries, checkpoints, reclaims, removals, retries, bad secrets,
//! license loads and unloads, and time steps, against pools with versions, overdraft,
//! linger and every DUP_GROUP.
//!
//! Safety, after every entry: seats in use never exceed what the licenses allow (checked
//! per version threshold, which is the exact condition, against the capacity this file
//! computes itself), no seat is held across sessions against its grouping, every seat's
//! holders belong to the seat's owner group, and leases, seats and sessions point at
//! each other consistently. Liveness: a checkout that fits (by this file's own count of
//! free seats, with nobody queued for the feature) is granted, and a license change
//! that leaves the pool big enough revokes nobody.
//! Retries return the first answer and change nothing. Replaying the recorded log on a
//! fresh ledger, or on one restored from a snapshot taken midway, gives the same answers
//! and the same bytes.

use proptest::prelude::*;
use tally_core::ledger::*;
use tally_core::license::{Count, DupGroup, Expiry, FeatureLine, LicenseFile, LineKind, Version};

const T0: TimeMs = 1_780_000_000_000;
const USERS: [&str; 3] = ["ann", "bob", "cyd"];
const HOSTS: [&str; 2] = ["ws1", "ws2"];
const FEATURES: [&str; 2] = ["a", "b"];

fn ver(major: u32) -> Version {
    Version::whole(u64::from(major))
}

fn secret(session: SessionId) -> SecretDigest {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&session.to_le_bytes());
    s
}

/// The licensed capacity of one feature: a line of version 1.0 and one of 2.0.
#[derive(Debug, Clone)]
struct PoolSpec {
    v1: (u32, u32),
    v2: (u32, u32),
    linger_secs: u32,
    dup: DupGroup,
}

impl PoolSpec {
    fn lines(&self, name: &str) -> Vec<FeatureLine> {
        self.lines_from(name, 0)
    }

    /// The lines, numbered from `first_line` (a second file's lines differ from the
    /// first's in their number only, which is not signed: they are different lines
    /// because their counts differ, or the same line and then they count once).
    fn lines_from(&self, name: &str, first_line: u32) -> Vec<FeatureLine> {
        [(1, self.v1), (2, self.v2)]
            .into_iter()
            .filter(|(_, (seats, _))| *seats > 0)
            .map(|(major, (seats, overdraft))| FeatureLine {
                linger_secs: self.linger_secs,
                dup_group: self.dup,
                overdraft,
                // INCREMENT lines: each adds its seats (a second FEATURE line of a
                // feature would not; the ledger's table tests cover that rule).
                ..FeatureLine::new(
                    LineKind::Increment,
                    name.into(),
                    "acme".into(),
                    ver(major),
                    Expiry::Permanent,
                    Count::Seats(seats),
                    first_line + major,
                )
            })
            .collect()
    }

    /// (seats that need version 2, seats in all) that these lines grant, overdraft in.
    fn capacity(&self) -> (u64, u64) {
        let cap = |(seats, overdraft): (u32, u32)| {
            u64::from(seats + if seats > 0 { overdraft } else { 0 })
        };
        (cap(self.v2), cap(self.v1) + cap(self.v2))
    }
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (
        (0u32..4, 0u32..2),
        (0u32..3, 0u32..2),
        prop_oneof![Just(0u32), Just(5), Just(30)],
        prop_oneof![
            Just(DupGroup::None),
            Just(DupGroup::User),
            Just(DupGroup::UserHost)
        ],
    )
        .prop_map(|(v1, v2, linger_secs, dup)| PoolSpec {
            v1,
            v2,
            linger_secs,
            dup,
        })
}

/// One step of a random history. Numbers pick among what exists when the step runs.
#[derive(Debug, Clone)]
enum Step {
    Open {
        client: u8,
        user: u8,
        host: u8,
        display: u8,
    },
    Checkout {
        session: u8,
        feature: u8,
        major: u8,
        /// 0 or 5: `major.minor`, so some requests fall between the lines' versions.
        minor: u8,
        count: u8,
        /// 0: no wait; 1: wait as long as the session lives; 2: wait 5 s.
        wait: u8,
    },
    ServeQueue,
    Checkin {
        lease: u8,
    },
    Close {
        session: u8,
    },
    Expire {
        session: u8,
    },
    Checkpoint {
        session: u8,
    },
    ReclaimDue,
    Remove {
        lease: u8,
    },
    Retry {
        back: u8,
    },
    BadSecret {
        session: u8,
        lease: u8,
    },
    Advance {
        ms: u32,
    },
    /// Load (or replace) a second file for a feature, with these seats at 1.0 and 2.0.
    LoadExtra {
        feature: u8,
        v1: u32,
        v2: u32,
    },
    UnloadExtra {
        feature: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let n = any::<u8>;
    prop_oneof![
        2 => (0u8..4, 0u8..3, 0u8..2, 0u8..2)
            .prop_map(|(client, user, host, display)| Step::Open { client, user, host, display }),
        6 => (n(), 0u8..2, 1u8..4, prop_oneof![Just(0u8), Just(5)], 1u8..4, 0u8..3)
            .prop_map(|(session, feature, major, minor, count, wait)| Step::Checkout { session, feature, major, minor, count, wait }),
        2 => Just(Step::ServeQueue),
        3 => n().prop_map(|lease| Step::Checkin { lease }),
        1 => n().prop_map(|session| Step::Close { session }),
        1 => n().prop_map(|session| Step::Expire { session }),
        1 => n().prop_map(|session| Step::Checkpoint { session }),
        1 => Just(Step::ReclaimDue),
        1 => n().prop_map(|lease| Step::Remove { lease }),
        2 => (0u8..8).prop_map(|back| Step::Retry { back }),
        1 => (n(), n()).prop_map(|(session, lease)| Step::BadSecret { session, lease }),
        2 => (0u32..40_000).prop_map(|ms| Step::Advance { ms }),
        1 => (0u8..2, 0u32..3, 0u32..2).prop_map(|(feature, v1, v2)| Step::LoadExtra { feature, v1, v2 }),
        1 => (0u8..2).prop_map(|feature| Step::UnloadExtra { feature }),
    ]
}

/// Sessions, leases and seats: everything a request could change.
type Observable = (
    Vec<(SessionId, Session)>,
    Vec<(LeaseId, Lease)>,
    Vec<(SeatId, Seat)>,
);

/// Drives a ledger from steps, records the log it produced, and checks invariants.
struct Run {
    ledger: Ledger,
    pools: Vec<PoolSpec>,
    /// The second file loaded per feature, if any (`extra0.lic`, `extra1.lic`).
    extra: Vec<Option<PoolSpec>>,
    index: u64,
    now: TimeMs,
    seq: u64,
    log: Vec<Entry>,
    outcomes: Vec<Outcome>,
    /// Client requests applied so far with their first answers, for retries.
    requests: Vec<(Op, Reply)>,
}

fn source(feature: usize) -> String {
    format!("extra{feature}.lic")
}

fn pick<T: Copy>(items: &[T], n: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(n) % items.len()])
}

impl Run {
    fn new(pools: Vec<PoolSpec>) -> Run {
        let mut run = Run {
            ledger: Ledger::new(),
            extra: vec![None; pools.len()],
            pools,
            index: 0,
            now: T0,
            seq: 0,
            log: Vec::new(),
            outcomes: Vec::new(),
            requests: Vec::new(),
        };
        let lines = FEATURES
            .iter()
            .zip(&run.pools)
            .flat_map(|(f, p)| p.lines(f))
            .collect();
        let license = LicenseFile {
            vendors: vec!["acme".into()],
            lines,
        };
        run.apply(Op::LoadLicense {
            source: "site.lic".into(),
            license,
        });
        run
    }

    fn apply(&mut self, op: Op) -> Outcome {
        self.index += 1;
        let entry = Entry {
            index: self.index,
            at_ms: self.now,
            op,
        };
        let out = self.ledger.apply(&entry);
        self.log.push(entry);
        self.outcomes.push(out.clone());
        out
    }

    fn req(&mut self, client: u8) -> RequestId {
        self.seq += 1;
        RequestId {
            client: [client; 16],
            seq: self.seq,
        }
    }

    /// A request of live session `s`, from the client id that opened it (a session's
    /// requests must be).
    fn req_of(&mut self, s: SessionId) -> RequestId {
        self.seq += 1;
        RequestId {
            client: self.ledger.session(s).map_or([s as u8; 16], |x| x.client),
            seq: self.seq,
        }
    }

    fn client_op(&mut self, op: Op) {
        let out = self.apply(op.clone());
        self.requests.push((op, out.reply));
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.ledger.sessions().map(|(id, _)| id).collect()
    }

    fn leases(&self) -> Vec<(LeaseId, SessionId)> {
        self.ledger
            .leases()
            .map(|(id, l)| (id, l.session))
            .collect()
    }

    /// (seats that need version 2, seats in all) the loaded files grant to feature `f`,
    /// computed here from what this run loaded, not by the ledger. A line loaded twice
    /// counts once: an extra file equal to the site file adds nothing.
    fn capacity(&self, f: usize) -> (u64, u64) {
        let base = self.pools[f].capacity();
        let extra = match &self.extra[f] {
            Some(e) => {
                let (v2, all) = e.capacity();
                let same = |a: (u32, u32), b: (u32, u32)| a.0 > 0 && a == b;
                let v1_dup = same(e.v1, self.pools[f].v1);
                let v2_dup = same(e.v2, self.pools[f].v2);
                let cap = |(seats, overdraft): (u32, u32)| {
                    u64::from(seats + if seats > 0 { overdraft } else { 0 })
                };
                let v2 = if v2_dup { 0 } else { v2 };
                let all =
                    all - if v1_dup { cap(e.v1) } else { 0 } - if v2_dup { cap(e.v2) } else { 0 };
                (v2, all)
            }
            None => (0, 0),
        };
        (base.0 + extra.0, base.1 + extra.1)
    }

    /// Whether a fresh checkout of `count` seats at `version` of feature `f` fits what is
    /// free now: seats are charged by the version they were taken at, and those above
    /// 1.0 can use the 2.0 lines only.
    fn fits(&self, f: usize, version: &Version, count: u32) -> bool {
        let (cap_v2, cap_all) = self.capacity(f);
        let seats: Vec<&Seat> = self
            .ledger
            .seats()
            .map(|(_, s)| s)
            .filter(|s| s.feature == FEATURES[f])
            .collect();
        let total: u64 = seats.iter().map(|s| u64::from(s.count)).sum();
        let need_v2: u64 = seats
            .iter()
            .filter(|s| s.version > ver(1))
            .map(|s| u64::from(s.count))
            .sum();
        let c = u64::from(count);
        let has_v2_line =
            self.pools[f].v2.0 > 0 || self.extra[f].as_ref().is_some_and(|e| e.v2.0 > 0);
        let has_line = has_v2_line
            || self.pools[f].v1.0 > 0
            || self.extra[f].as_ref().is_some_and(|e| e.v1.0 > 0);
        let top = if has_v2_line { ver(2) } else { ver(1) };
        has_line
            && *version <= top
            && total + c <= cap_all
            && (*version <= ver(1) || need_v2 + c <= cap_v2)
    }

    fn auth(session: SessionId) -> SessionAuth {
        SessionAuth {
            session,
            secret: secret(session),
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Open {
                client,
                user,
                host,
                display,
            } => {
                let req = self.req(client);
                let holder = Holder {
                    user: USERS[usize::from(user)].into(),
                    host: HOSTS[usize::from(host)].into(),
                    display: format!(":{display}"),
                    pid: u32::from(client),
                };
                // The secret is derived from the session id the entry will get.
                let secret = secret(self.index + 1);
                self.client_op(Op::OpenSession {
                    req,
                    holder,
                    ttl_ms: 20_000,
                    secret,
                    origin: Default::default(),
                });
            }
            Step::Checkout {
                session,
                feature,
                major,
                minor,
                count,
                wait,
            } => {
                if let Some(s) = pick(&self.sessions(), session) {
                    let req = self.req_of(s);
                    let f = usize::from(feature);
                    let version = Version::parse(&format!("{major}.{minor}"))
                        .expect("a decimal version parses");
                    let fits = self.fits(f, &version, u32::from(count))
                        && self.ledger.waiters().all(|(_, w)| w.feature != FEATURES[f]);
                    let op = Op::Checkout {
                        req,
                        auth: Self::auth(s),
                        feature: FEATURES[f].into(),
                        version,
                        count: u32::from(count),
                        wait_ms: [None, Some(0), Some(5_000)][usize::from(wait)],
                    };
                    let out = self.apply(op.clone());
                    self.requests.push((op, out.reply.clone()));
                    // Liveness: a request that fits is granted, not denied or queued.
                    if fits {
                        prop_assert!(
                            matches!(out.reply, Reply::Granted(_)),
                            "a checkout that fits was answered {:?}",
                            out.reply
                        );
                    }
                }
            }
            Step::LoadExtra { feature, v1, v2 } => {
                let f = usize::from(feature);
                let spec = PoolSpec {
                    v1: (v1, 0),
                    v2: (v2, 0),
                    ..self.pools[f].clone()
                };
                let lines = spec.lines_from(FEATURES[f], 10);
                if lines.is_empty() {
                    return self.check_invariants();
                }
                let before = self.capacity(f);
                self.extra[f] = Some(spec);
                let after = self.capacity(f);
                let out = self.apply(Op::LoadLicense {
                    source: source(f),
                    license: LicenseFile {
                        vendors: vec!["acme".into()],
                        lines,
                    },
                });
                prop_assert!(
                    matches!(out.reply, Reply::LicenseLoaded { .. }),
                    "{:?}",
                    out.reply
                );
                // A load that grants at least what was granted revokes nobody.
                if after.0 >= before.0 && after.1 >= before.1 {
                    prop_assert!(
                        !out.events
                            .iter()
                            .any(|e| matches!(e, Event::Revoked { .. })),
                        "a load that shrank nothing revoked: {:?}",
                        out.events
                    );
                }
            }
            Step::UnloadExtra { feature } => {
                let f = usize::from(feature);
                let out = self.apply(Op::UnloadLicense { source: source(f) });
                let loaded = self.extra[f].take().is_some();
                prop_assert_eq!(
                    matches!(out.reply, Reply::Done { affected: 1 }),
                    loaded,
                    "{:?}",
                    out.reply
                );
            }
            Step::Checkin { lease } => {
                if let Some((l, s)) = pick(&self.leases(), lease) {
                    let req = self.req_of(s);
                    self.client_op(Op::Checkin {
                        req,
                        auth: Self::auth(s),
                        lease: l,
                    });
                }
            }
            Step::Close { session } => {
                if let Some(s) = pick(&self.sessions(), session) {
                    let req = self.req_of(s);
                    self.client_op(Op::CloseSession {
                        req,
                        auth: Self::auth(s),
                    });
                }
            }
            Step::Expire { session } => {
                if let Some(s) = pick(&self.sessions(), session) {
                    let before = self.ledger.session(s).cloned();
                    let out = self.apply(Op::ExpireSessions { sessions: vec![s] });
                    let floor = |b: &Session| b.last_heartbeat_ms.max(self.ledger.resumed_ms());
                    let due = before
                        .as_ref()
                        .is_some_and(|b| floor(b) + b.ttl_ms <= self.now);
                    prop_assert_eq!(
                        out.reply,
                        Reply::Done {
                            affected: u32::from(due)
                        }
                    );
                    prop_assert_eq!(self.ledger.session(s).is_none(), due);
                }
            }
            Step::Checkpoint { session } => {
                if let Some(s) = pick(&self.sessions(), session) {
                    self.apply(Op::CheckpointHeartbeats {
                        beats: vec![(s, self.now)],
                    });
                }
            }
            Step::ServeQueue => {
                let due = self.ledger.queue_due(self.now);
                let before = self.observable();
                let waiting = self.ledger.waiters().count();
                let out = self.apply(Op::ServeQueue);
                if !due {
                    prop_assert_eq!(out.reply, Reply::Done { affected: 0 });
                    prop_assert_eq!(before, self.observable());
                    prop_assert_eq!(waiting, self.ledger.waiters().count());
                }
            }
            Step::ReclaimDue => {
                let due = self.ledger.due_seats(self.now, 100);
                let out = self.apply(Op::ReclaimSeats { seats: due.clone() });
                prop_assert_eq!(
                    out.reply,
                    Reply::Done {
                        affected: due.len() as u32
                    }
                );
            }
            Step::Remove { lease } => {
                if let Some((l, _)) = pick(&self.leases(), lease) {
                    self.apply(Op::RemoveLease { lease: l });
                    prop_assert!(self.ledger.lease(l).is_none());
                }
            }
            Step::Retry { back } => {
                let n = self.requests.len();
                if n > 0 {
                    let (op, first) = self.requests[n - 1 - usize::from(back) % n.min(8)].clone();
                    // A queued checkout's answer is whatever the queue decided since.
                    let gone = |auth: &SessionAuth| self.ledger.session(auth.session).is_none();
                    let expected = match (&first, &op) {
                        // Of a session that is gone, only a close is answered as at first.
                        (Reply::SessionClosed { .. }, Op::CloseSession { .. }) => first,
                        (
                            _,
                            Op::Checkout { auth, .. }
                            | Op::Checkin { auth, .. }
                            | Op::CloseSession { auth, .. },
                        ) if gone(auth) => Reply::Denied(DenyReason::UnknownSession),
                        (Reply::Queued { .. }, Op::Checkout { req, .. }) => {
                            self.ledger.reply_for(*req).cloned().unwrap_or(first)
                        }
                        _ => first,
                    };
                    let before = self.observable();
                    let out = self.apply(op);
                    prop_assert_eq!(&out.reply, &expected, "a retry gets the kept answer");
                    prop_assert!(out.events.is_empty());
                    prop_assert!(before == self.observable(), "a retry changes nothing");
                }
            }
            Step::BadSecret { session, lease } => {
                if let Some(s) = pick(&self.sessions(), session) {
                    let before = self.observable();
                    let target = pick(&self.leases(), lease).map_or(0, |(l, _)| l);
                    let req = self.req_of(s);
                    let auth = SessionAuth {
                        session: s,
                        secret: [0xFF; 32],
                    };
                    let out = self.apply(Op::Checkin {
                        req,
                        auth,
                        lease: target,
                    });
                    prop_assert_eq!(out.reply, Reply::Denied(DenyReason::BadSecret));
                    prop_assert!(
                        before == self.observable(),
                        "a refused request changes nothing"
                    );
                }
            }
            Step::Advance { ms } => {
                // Time moves the way a leader moves it, with an entry; a step of more than
                // OUTAGE_GAP_MS is an outage, which restarts every session's TTL.
                self.now += u64::from(ms);
                let out = self.apply(Op::Tick);
                let outage = u64::from(ms) > OUTAGE_GAP_MS;
                prop_assert_eq!(
                    out.events
                        .iter()
                        .any(|e| matches!(e, Event::Resumed { .. })),
                    outage
                );
                if outage {
                    prop_assert_eq!(self.ledger.resumed_ms(), self.now);
                }
            }
        }
        self.check_invariants()
    }

    /// What a retry or a refused request must leave untouched.
    fn observable(&self) -> Observable {
        (
            self.ledger
                .sessions()
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            self.ledger.leases().map(|(i, l)| (i, l.clone())).collect(),
            self.ledger.seats().map(|(i, s)| (i, s.clone())).collect(),
        )
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let l = &self.ledger;
        for (f, name) in FEATURES.iter().enumerate() {
            // Exact capacity condition: all seats fit in all lines, and the seats that
            // need version 2 fit in the version-2 lines.
            let seats: Vec<&Seat> = l
                .seats()
                .map(|(_, s)| s)
                .filter(|s| s.feature == *name)
                .collect();
            let total: u64 = seats.iter().map(|s| u64::from(s.count)).sum();
            let need_v2: u64 = seats
                .iter()
                .filter(|s| s.version > ver(1))
                .map(|s| u64::from(s.count))
                .sum();
            let (cap_v2, cap_all) = self.capacity(f);
            prop_assert!(total <= cap_all, "{name}: {total} seats > {cap_all}");
            prop_assert!(need_v2 <= cap_v2, "{name}: {need_v2} v2 seats > {cap_v2}");
            prop_assert!(seats.iter().all(|s| s.version <= ver(2)));
        }
        for (id, seat) in l.seats() {
            prop_assert_eq!(seat.holders.is_empty(), seat.lingering_until.is_some());
            let holders: Vec<&Session> = seat
                .holders
                .iter()
                .map(|lid| {
                    let lease = l.lease(*lid).expect("a holder is a live lease");
                    assert_eq!(lease.seat, id);
                    l.session(lease.session).expect("a lease's session is live")
                })
                .collect();
            let dup = self.pools[FEATURES
                .iter()
                .position(|f| *f == seat.feature)
                .expect("known feature")]
            .dup;
            // Grouped checkouts share when they agree on every part the grouping names.
            let same = |a: &Session, b: &Session| match dup.parts() {
                None => false,
                Some((u, h, d)) => {
                    (!u || a.holder.user == b.holder.user)
                        && (!h || a.holder.host == b.holder.host)
                        && (!d || a.holder.display == b.holder.display)
                }
            };
            for pair in holders.windows(2) {
                prop_assert!(same(pair[0], pair[1]), "seat {} held across owners", id);
            }
            // A seat (held, or lingering and then reused) belongs to one owner group:
            // every holder matches the seat's key, so a lingering seat never went to
            // someone outside the group it lingers for.
            for h in &holders {
                let k = &seat.key;
                // Without grouping the owner is the whole holder (for linger reuse).
                let (u, hst, d) = dup.parts().unwrap_or((true, true, true));
                let owner = (!u || k.user == h.holder.user)
                    && (!hst || k.host.as_deref() == Some(h.holder.host.as_str()))
                    && (!d || k.display.as_deref() == Some(h.holder.display.as_str()));
                prop_assert!(owner, "seat {} ({:?}) held by {:?}", id, k, h.holder);
            }
        }
        for (id, lease) in l.leases() {
            let s = l.session(lease.session);
            prop_assert!(
                s.is_some_and(|s| s.leases.contains(&id)),
                "lease {} orphaned",
                id
            );
        }
        for (sid, s) in l.sessions() {
            for lid in &s.leases {
                prop_assert!(l.lease(*lid).is_some_and(|x| x.session == sid));
            }
        }
        for (place, w) in l.waiters() {
            prop_assert!(
                l.session(w.session).is_some(),
                "waiter {} of a dead session",
                place
            );
            let kept = matches!(l.reply_for(w.req), Some(Reply::Queued { .. }) | None);
            prop_assert!(kept, "waiter {} has an answer but still waits", place);
        }
        Ok(())
    }
}

fn replay(log: &[Entry]) -> (Ledger, Vec<Outcome>) {
    let mut l = Ledger::new();
    let outs = log.iter().map(|e| l.apply(e)).collect();
    (l, outs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(
        pools in prop::collection::vec(pool_spec(), 2),
        steps in prop::collection::vec(step(), 1..150),
    ) {
        let mut run = Run::new(pools);
        for s in &steps {
            run.step(s)?;
        }
    }

    #[test]
    fn replaying_the_log_gives_identical_answers_and_bytes(
        pools in prop::collection::vec(pool_spec(), 2),
        steps in prop::collection::vec(step(), 1..150),
    ) {
        let mut run = Run::new(pools);
        for s in &steps {
            run.step(s)?;
        }
        let (other, outs) = replay(&run.log);
        prop_assert_eq!(&outs, &run.outcomes);
        prop_assert_eq!(other.snapshot(), run.ledger.snapshot());
    }

    #[test]
    fn a_restored_snapshot_behaves_like_the_original(
        pools in prop::collection::vec(pool_spec(), 2),
        steps in prop::collection::vec(step(), 1..150),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut run = Run::new(pools);
        for s in &steps {
            run.step(s)?;
        }
        let cut = cut.index(run.log.len());
        let (mut head, _) = replay(&run.log[..cut]);
        let bytes = head.snapshot();
        let mut restored = Ledger::restore(&bytes).expect("own snapshot restores");
        prop_assert_eq!(restored.snapshot(), bytes, "restore is exact");
        for (entry, expected) in run.log[cut..].iter().zip(&run.outcomes[cut..]) {
            prop_assert_eq!(&restored.apply(entry), expected);
            head.apply(entry);
        }
        prop_assert_eq!(restored.snapshot(), run.ledger.snapshot());
        prop_assert_eq!(head.snapshot(), run.ledger.snapshot());
    }

    #[test]
    fn garbled_snapshots_are_refused_without_panicking(
        pools in prop::collection::vec(pool_spec(), 2),
        steps in prop::collection::vec(step(), 1..40),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut run = Run::new(pools);
        for s in &steps {
            run.step(s)?;
        }
        let mut bytes = run.ledger.snapshot();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        // Either refused with an error, or (if the flip hit a value) a valid ledger.
        if let Ok(l) = Ledger::restore(&bytes) {
            let _ = l.snapshot();
        }
    }
}
