//! Unit tests of the ledger's semantics, one behaviour each. The property tests over
//! random histories are in `core/tests/ledger_props.rs`.

use super::*;
use crate::license::{
    Count, Date, DupGroup, Expiry, FeatureLine, LicenseModel, LineKind, TermPolicy,
};

pub(crate) const SECRET: SecretDigest = [9; 32];
pub(crate) const T0: TimeMs = 1_780_000_000_000; // mid 2026

pub(crate) fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

pub(crate) fn line(name: &str, version: &str, seats: u32) -> FeatureLine {
    FeatureLine::new(
        LineKind::Feature,
        name.into(),
        "acme".into(),
        v(version),
        Expiry::Permanent,
        Count::Seats(seats),
        1,
    )
}

/// An `INCREMENT` line: it adds its seats to the feature's other lines.
pub(crate) fn incr(name: &str, version: &str, seats: u32) -> FeatureLine {
    FeatureLine {
        kind: LineKind::Increment,
        ..line(name, version, seats)
    }
}

/// A ledger driven the way the Raft shell drives it: consecutive indexes, explicit time.
pub(crate) struct H {
    pub(crate) l: Ledger,
    pub(crate) index: u64,
    pub(crate) now: TimeMs,
    seq: u64,
    /// Every entry applied, with what it did (the usage history's tests replay it).
    pub(crate) log: Vec<(Entry, Outcome)>,
}

impl H {
    pub(crate) fn new(lines: Vec<FeatureLine>) -> H {
        let mut h = H {
            l: Ledger::new(),
            index: 0,
            now: T0,
            seq: 0,
            log: Vec::new(),
        };
        let r = h.op(Op::LoadLicense {
            source: "site.lic".into(),
            license: LicenseFile {
                vendors: vec!["acme".into()],
                lines,
            },
        });
        assert!(matches!(r.reply, Reply::LicenseLoaded { .. }), "{r:?}");
        h
    }

    /// Another driver at the same point, for comparing two ledgers step by step.
    pub(crate) fn clone_for_test(&self) -> H {
        H {
            l: self.l.clone(),
            index: self.index,
            now: self.now,
            seq: self.seq,
            log: self.log.clone(),
        }
    }

    pub(crate) fn op(&mut self, op: Op) -> Outcome {
        self.index += 1;
        let entry = Entry {
            index: self.index,
            at_ms: self.now,
            op,
        };
        let out = self.l.apply(&entry);
        self.log.push((entry, out.clone()));
        out
    }

    /// Moves time to `t` the way a live leader does: a tick entry every second, so the
    /// ledger sees no outage (a jump of `now` alone, followed by an entry, is one).
    pub(crate) fn tick_to(&mut self, t: TimeMs) {
        while self.now + 1_000 < t {
            self.now += 1_000;
            self.op(Op::Tick);
        }
        self.now = t;
    }

    pub(crate) fn req(&mut self, client: u8) -> RequestId {
        self.seq += 1;
        RequestId {
            client: [client; 16],
            seq: self.seq,
        }
    }

    /// A request of session `s`: from the client id that opened it (a session's requests
    /// must be), or from `other` when there is no such session.
    pub(crate) fn req_of(&mut self, s: SessionId, other: u8) -> RequestId {
        self.seq += 1;
        RequestId {
            client: self.l.session(s).map_or([other; 16], |x| x.client),
            seq: self.seq,
        }
    }

    pub(crate) fn open(&mut self, client: u8, user: &str, host: &str) -> SessionId {
        self.open_on(client, (user, host, ":0"))
    }

    /// A session of `user` on `host` at `display`.
    pub(crate) fn open_on(
        &mut self,
        client: u8,
        (user, host, display): (&str, &str, &str),
    ) -> SessionId {
        let req = self.req(client);
        let holder = Holder {
            user: user.into(),
            host: host.into(),
            display: display.into(),
            pid: 1,
        };
        match self
            .op(Op::OpenSession {
                req,
                holder,
                ttl_ms: 30_000,
                secret: SECRET,
                origin: Default::default(),
            })
            .reply
        {
            Reply::SessionOpened { session, .. } => session,
            r => panic!("open: {r:?}"),
        }
    }

    pub(crate) fn checkout_req(
        &mut self,
        s: SessionId,
        feature: &str,
        version: &str,
        count: u32,
    ) -> Op {
        let req = self.req_of(s, 0xC0);
        let auth = SessionAuth {
            session: s,
            secret: SECRET,
        };
        Op::Checkout {
            req,
            auth,
            feature: feature.into(),
            version: v(version),
            count,
            wait_ms: None,
        }
    }

    pub(crate) fn checkout(&mut self, s: SessionId, feature: &str, count: u32) -> Reply {
        let op = self.checkout_req(s, feature, "1.0", count);
        self.op(op).reply
    }

    pub(crate) fn grant(&mut self, s: SessionId, feature: &str, count: u32) -> Grant {
        match self.checkout(s, feature, count) {
            Reply::Granted(g) => g,
            r => panic!("expected a grant, got {r:?}"),
        }
    }

    pub(crate) fn checkin(&mut self, s: SessionId, lease: LeaseId) -> Outcome {
        let req = self.req_of(s, 0xC1);
        self.op(Op::Checkin {
            req,
            auth: SessionAuth {
                session: s,
                secret: SECRET,
            },
            lease,
        })
    }

    pub(crate) fn in_use(&self, feature: &str) -> u64 {
        self.l
            .features()
            .iter()
            .find(|f| f.name == feature)
            .map_or(0, |f| f.in_use)
    }
}

pub(crate) fn denied(r: &Reply) -> &DenyReason {
    match r {
        Reply::Denied(d) => d,
        r => panic!("expected a denial, got {r:?}"),
    }
}

#[test]
fn checkout_and_checkin_without_linger_frees_the_seat() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    let g = h.grant(s, "cad", 1);
    assert_eq!(h.in_use("cad"), 1);
    let out = h.checkin(s, g.lease);
    assert_eq!(
        out.reply,
        Reply::Released {
            lease: g.lease,
            lingering_until: None
        }
    );
    assert_eq!(h.in_use("cad"), 0);
    assert!(matches!(
        out.events.as_slice(),
        [Event::Released { .. }, Event::Reclaimed { .. }]
    ));
}

#[test]
fn checkout_is_all_or_nothing() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 1);
    let r = h.checkout(s, "cad", 2);
    assert_eq!(
        denied(&r),
        &DenyReason::NoSeats {
            requested: 2,
            in_use: 1,
            available: 2
        }
    );
    assert_eq!(h.in_use("cad"), 1, "a denied checkout takes nothing");
}

#[test]
fn denials_name_what_is_wrong() {
    let mut h = H::new(vec![line("cad", "2026.1", 5)]);
    let s = h.open(1, "ann", "ws1");
    assert_eq!(
        denied(&h.checkout(s, "cam", 1)),
        &DenyReason::UnknownFeature
    );
    assert_eq!(
        denied(&h.checkout(s, "cad", 0)),
        &DenyReason::InvalidCount { requested: 0 }
    );
    let too_new = h.checkout_req(s, "cad", "2027.1", 1);
    assert_eq!(
        denied(&h.op(too_new).reply),
        &DenyReason::VersionTooNew {
            requested: v("2027.1"),
            highest: v("2026.1")
        }
    );
    let req = h.req(2);
    let bad = Op::Checkout {
        req,
        auth: SessionAuth {
            session: s,
            secret: [0; 32],
        },
        feature: "cad".into(),
        version: v("1.0"),
        count: 1,
        wait_ms: None,
    };
    assert_eq!(denied(&h.op(bad).reply), &DenyReason::BadSecret);
    let req = h.req(2);
    let ghost = Op::Checkin {
        req,
        auth: SessionAuth {
            session: 999,
            secret: SECRET,
        },
        lease: 1,
    };
    assert_eq!(denied(&h.op(ghost).reply), &DenyReason::UnknownSession);
    assert_eq!(h.in_use("cad"), 0);
}

#[test]
fn versions_use_only_lines_at_least_as_new() {
    // 2 seats of 2025.1 and 1 of 2026.1: three 2025.1 checkouts fit, but only one of
    // 2026.1 ever does, and once it is taken the old lines still serve old versions.
    let mut h = H::new(vec![incr("cad", "2025.1", 2), incr("cad", "2026.1", 1)]);
    let s = h.open(1, "ann", "ws1");
    let new = h.checkout_req(s, "cad", "2026.1", 1);
    assert!(matches!(h.op(new).reply, Reply::Granted(_)));
    let new2 = h.checkout_req(s, "cad", "2026.1", 1);
    assert!(matches!(
        denied(&h.op(new2).reply),
        DenyReason::NoSeats { .. }
    ));
    let old = h.checkout_req(s, "cad", "2025.1", 2);
    assert!(matches!(h.op(old).reply, Reply::Granted(_)));
    let old2 = h.checkout_req(s, "cad", "2025.1", 1);
    assert!(matches!(
        denied(&h.op(old2).reply),
        DenyReason::NoSeats { .. }
    ));
}

#[test]
fn an_old_version_checkout_cannot_starve_the_new_line_accounting() {
    // 1 seat of 2025.1 and 1 of 2026.1. Two 2025.1 checkouts take both seats (one must
    // sit on the 2026.1 line), so a 2026.1 checkout is refused: nothing is over-granted.
    let mut h = H::new(vec![incr("cad", "2025.1", 1), incr("cad", "2026.1", 1)]);
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 2);
    let new = h.checkout_req(s, "cad", "2026.1", 1);
    assert!(matches!(
        denied(&h.op(new).reply),
        DenyReason::NoSeats { .. }
    ));
}

#[test]
fn increments_add_up() {
    let mut inc = line("cad", "1.0", 3);
    inc.kind = LineKind::Increment;
    let mut h = H::new(vec![line("cad", "1.0", 2), inc]);
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 5);
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
}

#[test]
fn overdraft_is_granted_and_counted_separately() {
    let mut l = line("cad", "1.0", 2);
    l.overdraft = 1;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    assert_eq!(h.grant(s, "cad", 2).overdraft, 0);
    assert_eq!(h.grant(s, "cad", 1).overdraft, 1);
    let r = h.checkout(s, "cad", 1);
    assert_eq!(
        denied(&r),
        &DenyReason::NoSeats {
            requested: 1,
            in_use: 3,
            available: 3
        }
    );
    let f = &h.l.features()[0];
    assert_eq!((f.issued, f.overdraft_limit, f.in_use), (2, 1, 3));
}

#[test]
fn uncounted_lines_never_run_out() {
    let mut l = line("viewer", "1.0", 1);
    l.count = Count::Uncounted;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    for _ in 0..50 {
        h.grant(s, "viewer", 1000);
    }
}

#[test]
fn checkin_lingers_and_the_same_user_takes_the_seat_back() {
    let mut l = line("cad", "1.0", 1);
    l.linger_secs = 60;
    let mut h = H::new(vec![l]);
    let ann = h.open(1, "ann", "ws1");
    let bob = h.open(2, "bob", "ws2");
    let g = h.grant(ann, "cad", 1);
    let out = h.checkin(ann, g.lease);
    let until = T0 + 60_000;
    assert_eq!(
        out.reply,
        Reply::Released {
            lease: g.lease,
            lingering_until: Some(until)
        }
    );
    assert!(out.events.contains(&Event::Lingering {
        feature: "cad".into(),
        seat: g.seat,
        until
    }));
    // Still counted: bob cannot have it.
    assert!(matches!(
        denied(&h.checkout(bob, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
    // Ann, from a restarted process on the same workstation, gets the same seat back
    // with a newer fencing token.
    let ann2 = h.open(3, "ann", "ws1");
    let again = h.grant(ann2, "cad", 1);
    assert!(again.reused);
    assert_eq!(again.seat, g.seat);
    assert!(again.fencing_token > g.fencing_token);
    assert_eq!(h.in_use("cad"), 1);
}

/// One owner holding many seats of a feature (a build farm's service account): linger
/// reuse looks only among that owner's lingering seats, which the index keeps exactly
/// through linger, reuse and reclaim (and a restore rebuilds it the same).
#[test]
fn linger_reuse_among_many_held_seats_of_one_owner() {
    let mut l = line("cad", "1.0", 50);
    l.linger_secs = 60;
    let mut h = H::new(vec![l]);
    let ci = h.open(1, "ci", "farm");
    let grants: Vec<Grant> = (0..40).map(|_| h.grant(ci, "cad", 1)).collect();
    let key = |h: &H| {
        h.l.ix
            .lingering_by_key
            .values()
            .map(|s| s.len())
            .sum::<usize>()
    };
    assert_eq!(key(&h), 0, "held seats are not lingering");
    let last = grants.last().expect("40 grants");
    h.checkin(ci, last.lease);
    assert_eq!(key(&h), 1);
    let again = h.grant(ci, "cad", 1);
    assert!(
        again.reused,
        "the lingering seat is found among 39 held ones"
    );
    assert_eq!(again.seat, last.seat);
    assert_eq!(key(&h), 0);
    h.checkin(ci, grants[0].lease);
    h.checkin(ci, grants[1].lease);
    assert_eq!(key(&h), 2);
    let restored = Ledger::restore(&h.l.snapshot()).expect("restores");
    assert_eq!(restored.ix.lingering_by_key, h.l.ix.lingering_by_key);
    h.tick_to(T0 + 61_000);
    h.op(Op::ReclaimSeats {
        seats: vec![grants[0].seat, grants[1].seat],
    });
    assert_eq!(key(&h), 0, "reclaimed seats leave the index");
    assert_eq!(h.in_use("cad"), 38);
}

#[test]
fn lingering_seats_are_reclaimed_only_when_due() {
    let mut l = line("cad", "1.0", 1);
    l.linger_secs = 60;
    let mut h = H::new(vec![l]);
    let ann = h.open(1, "ann", "ws1");
    let g = h.grant(ann, "cad", 1);
    h.checkin(ann, g.lease);
    let lingering = |h: &H| {
        let f = h.l.features();
        f.iter()
            .map(|f| (f.name.clone(), f.lingering))
            .collect::<Vec<_>>()
    };
    assert_eq!(lingering(&h), vec![("cad".to_owned(), 1)]);
    assert_eq!(h.l.due_seats(T0 + 59_999, 10), Vec::<SeatId>::new());
    // A leader whose clock runs ahead proposes too early: the ledger's time says no.
    h.now = T0 + 59_999;
    assert_eq!(
        h.op(Op::ReclaimSeats {
            seats: vec![g.seat]
        })
        .reply,
        Reply::Done { affected: 0 }
    );
    assert_eq!(h.in_use("cad"), 1);
    h.now = T0 + 60_000;
    assert_eq!(h.l.due_seats(h.now, 10), vec![g.seat]);
    let out = h.op(Op::ReclaimSeats {
        seats: vec![g.seat],
    });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert_eq!(lingering(&h), vec![("cad".to_owned(), 0)]);
    assert_eq!(
        out.events,
        vec![Event::Reclaimed {
            feature: "cad".into(),
            seat: g.seat,
            count: 1,
            charged_ms: g.granted_ms,
        }]
    );
    assert_eq!(h.in_use("cad"), 0);
}

#[test]
fn dup_group_user_shares_one_seat_across_hosts() {
    let mut l = line("cad", "1.0", 1);
    l.dup_group = DupGroup::User;
    let mut h = H::new(vec![l]);
    let a1 = h.open(1, "ann", "ws1");
    let a2 = h.open(2, "ann", "laptop");
    let g1 = h.grant(a1, "cad", 1);
    let g2 = h.grant(a2, "cad", 1);
    assert!(g2.shared);
    assert_eq!(g2.seat, g1.seat);
    assert_eq!(h.in_use("cad"), 1);
    let bob = h.open(3, "bob", "ws1");
    assert!(matches!(
        denied(&h.checkout(bob, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
    // The seat stays while either of ann's leases holds it.
    h.checkin(a1, g1.lease);
    assert!(matches!(
        denied(&h.checkout(bob, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
    h.checkin(a2, g2.lease);
    h.grant(bob, "cad", 1);
}

#[test]
fn dup_group_user_host_takes_one_seat_per_host() {
    let mut l = line("cad", "1.0", 2);
    l.dup_group = DupGroup::UserHost;
    let mut h = H::new(vec![l]);
    let a1 = h.open(1, "ann", "ws1");
    let a1b = h.open(2, "ann", "ws1");
    let a2 = h.open(3, "ann", "ws2");
    h.grant(a1, "cad", 1);
    assert!(h.grant(a1b, "cad", 1).shared);
    assert!(!h.grant(a2, "cad", 1).shared);
    assert_eq!(h.in_use("cad"), 2);
}

#[test]
fn a_lingering_seat_is_reused_by_its_owner_group_only() {
    // (DUP_GROUP, who comes back, reuses?) Under U the same user on another host takes
    // the lingering seat back; under UH only the same host does; without grouping only
    // the same workstation display does; another user never does.
    let cases = [
        (DupGroup::User, ("ann", "laptop", ":0"), true),
        (DupGroup::User, ("bob", "ws1", ":0"), false),
        (DupGroup::UserHost, ("ann", "ws1", ":1"), true),
        (DupGroup::UserHost, ("ann", "laptop", ":0"), false),
        (DupGroup::None, ("ann", "ws1", ":0"), true),
        (DupGroup::None, ("ann", "ws1", ":1"), false),
        (DupGroup::None, ("ann", "laptop", ":0"), false),
    ];
    for (group, (user, host, display), reuses) in cases {
        let mut l = line("cad", "1.0", 2);
        l.dup_group = group;
        l.linger_secs = 60;
        let mut h = H::new(vec![l]);
        let ann = h.open(1, "ann", "ws1");
        let g = h.grant(ann, "cad", 1);
        h.checkin(ann, g.lease);
        let back = h.open_on(2, (user, host, display));
        let again = h.grant(back, "cad", 1);
        let case = format!("{group:?} {user}@{host}{display}");
        assert_eq!(again.reused, reuses, "{case}");
        assert_eq!(again.seat == g.seat, reuses, "{case}");
        assert_eq!(h.in_use("cad"), if reuses { 1 } else { 2 }, "{case}");
    }
}

#[test]
fn grouped_checkouts_share_a_seat_when_they_agree_on_every_part_named() {
    // FlexNet's DUP_GROUP: "any combination of UHDV is allowed ... DUP_GROUP=UHD means
    // the duplicate grouping is (DUP_USER|DUP_HOST|DUP_DISPLAY), so for a user on the
    // same host and display, additional uses of a feature do not consume additional
    // licenses"; SITE: everyone at the site shares. The first holder is ann@ws1 on
    // display ws1:0; (grouping, second holder, shares?).
    let cases = [
        (DupGroup::UserHostDisplay, ("ann", "ws1", "ws1:0"), true),
        (DupGroup::UserHostDisplay, ("ann", "ws1", "ws1:1"), false),
        (DupGroup::UserHostDisplay, ("bob", "ws1", "ws1:0"), false),
        (DupGroup::Host, ("bob", "ws1", "ws1:1"), true),
        (DupGroup::Host, ("ann", "ws2", "ws1:0"), false),
        (DupGroup::Display, ("bob", "ws2", "ws1:0"), true),
        (DupGroup::Display, ("ann", "ws1", "ws1:1"), false),
        (DupGroup::UserDisplay, ("ann", "ws2", "ws1:0"), true),
        (DupGroup::UserDisplay, ("bob", "ws1", "ws1:0"), false),
        (DupGroup::HostDisplay, ("bob", "ws1", "ws1:0"), true),
        (DupGroup::HostDisplay, ("ann", "ws1", "ws1:1"), false),
        (DupGroup::Site, ("bob", "ws9", "ws9:5"), true),
        (DupGroup::None, ("ann", "ws1", "ws1:0"), false),
    ];
    for (group, who, shares) in cases {
        let mut l = line("cad", "1.0", 2);
        l.dup_group = group;
        let mut h = H::new(vec![l]);
        let first = h.open_on(1, ("ann", "ws1", "ws1:0"));
        let g1 = h.grant(first, "cad", 1);
        let second = h.open_on(2, who);
        let g2 = h.grant(second, "cad", 1);
        let case = format!("{group:?} {who:?}");
        assert_eq!(g2.shared, shares, "{case}");
        assert_eq!(g2.seat == g1.seat, shares, "{case}");
        assert_eq!(h.in_use("cad"), if shares { 1 } else { 2 }, "{case}");
    }
}

#[test]
fn without_grouping_a_held_seat_is_never_shared() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let s1 = h.open(1, "ann", "ws1");
    let s2 = h.open(2, "ann", "ws1");
    let g1 = h.grant(s1, "cad", 1);
    let g2 = h.grant(s2, "cad", 1);
    assert_ne!(g1.seat, g2.seat);
    assert_eq!(h.in_use("cad"), 2);
}

#[test]
fn retries_return_the_first_answer_and_take_nothing() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    let op = h.checkout_req(s, "cad", "1.0", 1);
    let first = h.op(op.clone()).reply;
    assert!(matches!(first, Reply::Granted(_)));
    let again = h.op(op.clone());
    assert_eq!(again.reply, first);
    assert!(
        again.events.is_empty(),
        "a retry changes nothing, so reports nothing"
    );
    assert_eq!(h.in_use("cad"), 1);
    assert_eq!(h.l.leases().count(), 1);
}

#[test]
fn retries_of_pipelined_requests_are_answered_and_very_old_ones_are_stale() {
    let mut h = H::new(vec![line("cad", "1.0", 100)]);
    let s = h.open(1, "ann", "ws1");
    let ops: Vec<Op> = (0..REPLY_WINDOW + 2)
        .map(|_| h.checkout_req(s, "cad", "1.0", 1))
        .collect();
    let replies: Vec<Reply> = ops.iter().map(|op| h.op(op.clone()).reply).collect();
    // The most recent REPLY_WINDOW answers replay exactly...
    for i in 2..ops.len() {
        assert_eq!(h.op(ops[i].clone()).reply, replies[i]);
    }
    // ...older ones are refused as stale rather than executed a second time.
    assert!(matches!(
        denied(&h.op(ops[0].clone()).reply),
        DenyReason::StaleRequest { .. }
    ));
    assert_eq!(h.in_use("cad"), ops.len() as u64);
}

#[test]
fn a_retried_open_session_opens_one_session() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let req = h.req(7);
    let holder = Holder {
        user: "ann".into(),
        host: "ws1".into(),
        display: ":0".into(),
        pid: 4,
    };
    let op = Op::OpenSession {
        req,
        holder,
        ttl_ms: 30_000,
        secret: SECRET,
        origin: Default::default(),
    };
    let a = h.op(op.clone()).reply;
    let b = h.op(op).reply;
    assert_eq!(a, b);
    assert_eq!(h.l.sessions().count(), 1);
}

#[test]
fn expiry_before_the_checkpointed_deadline_is_refused() {
    let mut l = line("cad", "1.0", 1);
    l.linger_secs = 10;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    let g = h.grant(s, "cad", 1);
    h.tick_to(T0 + 20_000);
    h.op(Op::CheckpointHeartbeats {
        beats: vec![(s, T0 + 20_000)],
    });
    h.tick_to(T0 + 49_999);
    let early = h.op(Op::ExpireSessions { sessions: vec![s] });
    assert_eq!(early.reply, Reply::Done { affected: 0 });
    assert!(h.l.session(s).is_some());
    h.now = T0 + 50_000;
    let out = h.op(Op::ExpireSessions { sessions: vec![s] });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert!(out.events.contains(&Event::Released {
        feature: "cad".into(),
        lease: g.lease,
        seat: g.seat,
        cause: ReleaseCause::SessionExpired
    }));
    assert!(out.events.contains(&Event::SessionExpired { session: s }));
    assert!(h.l.session(s).is_none());
    // The seat lingers for the expired user.
    assert_eq!(h.in_use("cad"), 1);
    assert_eq!(h.l.seat(g.seat).unwrap().lingering_until, Some(T0 + 60_000));
}

#[test]
fn checkpoints_never_move_into_the_future_or_backwards() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    h.now = T0 + 5_000;
    h.op(Op::CheckpointHeartbeats {
        beats: vec![(s, T0 + 999_999)],
    });
    assert_eq!(h.l.session(s).unwrap().last_heartbeat_ms, T0 + 5_000);
    h.op(Op::CheckpointHeartbeats {
        beats: vec![(s, T0 + 1_000)],
    });
    assert_eq!(h.l.session(s).unwrap().last_heartbeat_ms, T0 + 5_000);
}

#[test]
fn close_session_releases_everything_it_holds() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 1);
    h.grant(s, "cad", 2);
    let req = h.req(1);
    let out = h.op(Op::CloseSession {
        req,
        auth: SessionAuth {
            session: s,
            secret: SECRET,
        },
    });
    assert_eq!(
        out.reply,
        Reply::SessionClosed {
            session: s,
            released: 2
        }
    );
    assert_eq!(h.in_use("cad"), 0);
    assert_eq!(h.l.leases().count(), 0);
}

#[test]
fn admin_removal_frees_the_seat_without_linger() {
    let mut l = line("cad", "1.0", 1);
    l.linger_secs = 300;
    let mut h = H::new(vec![l]);
    let ann = h.open(1, "ann", "ws1");
    let g = h.grant(ann, "cad", 1);
    let out = h.op(Op::RemoveLease { lease: g.lease });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert_eq!(h.in_use("cad"), 0);
    assert!(h.l.session(ann).unwrap().leases.is_empty());
    // The holder learns why on its next heartbeat.
    assert_eq!(
        h.l.revocations(ann),
        &[Revocation {
            lease: g.lease,
            feature: "cad".into(),
            reason: RevokeReason::RemovedByAdmin,
            at_ms: h.now,
        }]
    );
    // The holder's next checkin of the removed lease is refused, not double-counted.
    assert_eq!(
        denied(&h.checkin(ann, g.lease).reply),
        &DenyReason::UnknownLease
    );
    assert_eq!(
        h.op(Op::RemoveLease { lease: g.lease }).reply,
        Reply::Done { affected: 0 }
    );
}

#[test]
fn a_session_cannot_check_in_another_sessions_lease() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let ann = h.open(1, "ann", "ws1");
    let bob = h.open(2, "bob", "ws2");
    let g = h.grant(ann, "cad", 1);
    assert_eq!(
        denied(&h.checkin(bob, g.lease).reply),
        &DenyReason::UnknownLease
    );
    assert_eq!(h.in_use("cad"), 1);
}

#[test]
fn fencing_tokens_only_grow() {
    let mut h = H::new(vec![line("cad", "1.0", 10)]);
    let s = h.open(1, "ann", "ws1");
    let mut last = 0;
    for _ in 0..10 {
        let g = h.grant(s, "cad", 1);
        assert!(g.fencing_token > last);
        last = g.fencing_token;
    }
}

#[test]
fn lines_count_only_between_start_and_expiry() {
    let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
    let mut l = line("cad", "1.0", 1);
    l.start = Some(day(2026, 7, 1));
    l.expiry = Expiry::On(day(2026, 7, 31));
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    h.now = day(2026, 6, 30).start_ms();
    assert_eq!(
        denied(&h.checkout(s, "cad", 1)),
        &DenyReason::NotYetStarted {
            start_ms: day(2026, 7, 1).start_ms()
        }
    );
    h.now = day(2026, 7, 31).end_ms() - 1;
    let g = h.grant(s, "cad", 1);
    h.checkin(s, g.lease);
    h.now = day(2026, 7, 31).end_ms();
    assert_eq!(
        denied(&h.checkout(s, "cad", 1)),
        &DenyReason::Expired {
            expired_ms: day(2026, 8, 1).start_ms()
        }
    );
}

#[test]
fn term_licenses_keep_working_in_grace_then_fall_back_to_demo_seats() {
    let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
    let mut l = line("cad", "1.0", 10);
    l.expiry = Expiry::On(day(2026, 7, 31));
    l.term = TermPolicy {
        grace_days: 14,
        demo_seats: 2,
    };
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    h.now = day(2026, 8, 14).start_ms();
    let g = h.grant(s, "cad", 10);
    assert_eq!(g.overdraft, 0, "grace seats are licensed seats");
    h.checkin(s, g.lease);
    h.now = day(2026, 8, 15).start_ms();
    h.grant(s, "cad", 2);
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::NoSeats { available: 2, .. }
    ));
}

#[test]
fn a_reload_replaces_its_source_and_revokes_what_it_no_longer_grants() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    let s = h.open(1, "ann", "ws1");
    let older = h.grant(s, "cad", 1);
    let newer = h.grant(s, "cad", 1);
    let out = h.op(Op::LoadLicense {
        source: "site.lic".into(),
        license: LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![line("cad", "1.0", 1)],
        },
    });
    assert!(matches!(out.reply, Reply::LicenseLoaded { lines: 1, .. }));
    assert_eq!(
        h.in_use("cad"),
        1,
        "the newest grant beyond the new count goes"
    );
    assert!(out.events.contains(&Event::Revoked {
        feature: "cad".into(),
        lease: newer.lease,
        seat: newer.seat,
        session: s,
        reason: RevokeReason::LicenseChanged {
            source: "site.lic".into()
        },
    }));
    assert!(h.l.lease(older.lease).is_some());
    assert_eq!(h.l.revocations(s).len(), 1);
    assert_eq!(h.l.revocations(s)[0].lease, newer.lease);
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
    let pack = LicenseFile {
        vendors: vec!["acme".into()],
        lines: vec![incr("cad", "1.0", 5)],
    };
    h.op(Op::LoadLicense {
        source: "pack.lic".into(),
        license: pack,
    });
    assert_eq!(h.l.features()[0].issued, 6, "files add up");
    h.grant(s, "cad", 4);
    assert_eq!(
        h.op(Op::UnloadLicense {
            source: "pack.lic".into()
        })
        .reply,
        Reply::Done { affected: 1 }
    );
    assert_eq!(h.l.features()[0].issued, 1);
}

#[test]
fn inconsistent_loads_change_nothing() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let before = h.l.snapshot();
    let mut n = line("cad", "1.0", 1);
    n.model = LicenseModel::NamedUser { fair_use_days: 30 };
    n.line_no = 2;
    let out = h.op(Op::LoadLicense {
        source: "named.lic".into(),
        license: LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![n],
        },
    });
    assert_eq!(
        out.reply,
        Reply::LoadRefused(LoadError::Conflict {
            feature: "cad".into(),
            line: 2,
            what: "USER_BASED (named users) but site.lic line 1 is floating: one feature has one licensing model".into()
        })
    );
    let out = h.op(Op::UnloadLicense {
        source: "nope.lic".into(),
    });
    assert!(matches!(
        out.reply,
        Reply::LoadRefused(LoadError::NoSuchSource { .. })
    ));
    assert_eq!(h.l.licenses().count(), 1);
    // Only the applied index and time moved.
    let mut after = Ledger::restore(&h.l.snapshot()).unwrap();
    after.st.last_applied = 1;
    assert_eq!(after.snapshot(), before);
}

#[test]
fn entries_out_of_order_change_nothing() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let before = h.l.snapshot();
    let out = h.l.apply(&Entry {
        index: 1,
        at_ms: T0,
        op: Op::RemoveLease { lease: 1 },
    });
    assert_eq!(out.reply, Reply::OutOfOrder { last_applied: 1 });
    assert_eq!(h.l.snapshot(), before);
}

#[test]
fn time_never_runs_backwards() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    h.now = T0 - 10_000;
    h.open(1, "ann", "ws1");
    assert_eq!(h.l.now_ms(), T0);
}

#[test]
fn idle_clients_are_forgotten_after_the_retention() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    let req = h.req(1);
    h.op(Op::CloseSession {
        req,
        auth: SessionAuth {
            session: s,
            secret: SECRET,
        },
    });
    assert_eq!(h.l.st.clients.len(), 1);
    h.now = T0 + CLIENT_RETENTION_MS - 1;
    h.op(Op::ReclaimSeats { seats: vec![] });
    assert_eq!(h.l.st.clients.len(), 1, "kept within the retention");
    h.now = T0 + CLIENT_RETENTION_MS;
    h.op(Op::ReclaimSeats { seats: vec![] });
    assert!(h.l.st.clients.is_empty());
}

#[test]
fn snapshot_restore_is_exact_and_garbage_is_refused() {
    let mut l = line("cad", "1.0", 2);
    l.linger_secs = 30;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    let g = h.grant(s, "cad", 1);
    h.checkin(s, g.lease);
    let bytes = h.l.snapshot();
    let r = Ledger::restore(&bytes).unwrap();
    assert_eq!(r.snapshot(), bytes);
    assert!(r.same_state(&h.l));
    assert_eq!(
        r.due_seats(T0 + 30_000, 10),
        vec![g.seat],
        "indexes are rebuilt"
    );
    assert!(matches!(
        Ledger::restore(b"nonsense"),
        Err(crate::Error::Snapshot(_))
    ));
    assert!(matches!(
        Ledger::restore(&bytes[..bytes.len() - 3]),
        Err(crate::Error::Snapshot(_))
    ));
    let mut future = bytes.clone();
    future[8] = 99;
    assert_eq!(
        Ledger::restore(&future).unwrap_err().to_string(),
        "ledger snapshot: format 99 is not supported (this build reads format 6): make the data directory anew"
    );
}

#[test]
fn kept_answers_encode_as_the_map_they_replaced_and_stay_sorted() {
    let answers = [
        (
            9,
            Reply::Queued {
                place: 40,
                position: 2,
            },
        ),
        (
            3,
            Reply::SessionOpened {
                session: 5,
                ttl_ms: 30_000,
            },
        ),
        (7, Reply::Denied(DenyReason::UnknownLease)),
    ];
    let mut kept = Replies::default();
    let mut map = BTreeMap::new();
    for (seq, r) in answers.iter().cloned() {
        kept.insert(seq, r.clone());
        map.insert(seq, r);
    }
    // Snapshot format 2 was written with a BTreeMap here: the bytes must not change.
    assert_eq!(
        postcard::to_stdvec(&kept).unwrap(),
        postcard::to_stdvec(&map).unwrap()
    );
    let back: Replies = postcard::from_bytes(&postcard::to_stdvec(&map).unwrap()).unwrap();
    assert_eq!(back, kept);
    assert_eq!(kept.last_seq(), Some(9));
    assert_eq!(kept.get(7), Some(&Reply::Denied(DenyReason::UnknownLease)));
    assert_eq!(kept.get(8), None);
    // The oldest answered one goes first; a queued checkout's answer is kept.
    assert_eq!(kept.forget_oldest_answered(), Some(3));
    assert_eq!(kept.forget_oldest_answered(), Some(7));
    assert_eq!(kept.forget_oldest_answered(), None);
    assert_eq!(kept.len(), 1);
}

/// A flood of requests with bogus credentials (unknown sessions, wrong secrets) from
/// fresh client ids leaves no state behind: the snapshot does not grow. It used to keep
/// a client record per request for an hour (10,000 grew it from 17 bytes to 280 KB).
#[test]
fn requests_that_fail_authentication_leave_nothing_behind() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    let before = h.l.snapshot().len();
    for i in 0..10_000u32 {
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&i.to_le_bytes());
        let req = RequestId { client, seq: 1 };
        let (session, secret) = if i % 2 == 0 {
            (999_999, SECRET)
        } else {
            (s, [0xEE; 32])
        };
        let r = h.op(Op::Checkin {
            req,
            auth: SessionAuth { session, secret },
            lease: 1,
        });
        assert!(matches!(
            r.reply,
            Reply::Denied(DenyReason::UnknownSession | DenyReason::BadSecret)
        ));
    }
    // Only the last applied index grew (a varint: a byte or two).
    assert!(
        h.l.snapshot().len() <= before + 2,
        "{} -> {}",
        before,
        h.l.snapshot().len()
    );
}

/// A kept answer belongs to the session that earned it. Another session (or anyone who
/// learnt a request id) used to get it by sending the same client id and number: bob got
/// ann's lease in his grant; a forged secret got it too; and bob's request under ann's
/// client id was kept in ann's window, so ann's next request was answered with bob's
/// lease and never ran. Each is refused now, changes nothing, and keeps nothing.
#[test]
fn a_request_id_of_another_session_gets_neither_its_answer_nor_its_window() {
    let mut h = H::new(vec![line("cad", "1.0", 5)]);
    let (ann, bob) = (h.open(1, "ann", "ws1"), h.open(2, "bob", "ws2"));
    let op = h.checkout_req(ann, "cad", "1.0", 1);
    let Reply::Granted(first) = h.op(op.clone()).reply else {
        panic!("ann's checkout was not granted")
    };
    let Op::Checkout { req, .. } = op.clone() else {
        unreachable!()
    };
    let with_auth = |session, secret| match op.clone() {
        Op::Checkout {
            req,
            feature,
            version,
            count,
            wait_ms,
            ..
        } => Op::Checkout {
            req,
            auth: SessionAuth { session, secret },
            feature,
            version,
            count,
            wait_ms,
        },
        _ => unreachable!(),
    };
    let before = h.l.snapshot();
    let r = h.op(with_auth(bob, SECRET));
    assert_eq!(denied(&r.reply), &DenyReason::WrongClient, "bob got {r:?}");
    let r = h.op(with_auth(ann, [0xEE; 32]));
    assert_eq!(
        denied(&r.reply),
        &DenyReason::BadSecret,
        "a forger got {r:?}"
    );
    let r = h.op(with_auth(999_999, SECRET));
    assert_eq!(denied(&r.reply), &DenyReason::UnknownSession, "got {r:?}");
    // Only the applied index moved (a varint: a byte or two).
    assert!(h.l.snapshot().len() <= before.len() + 2);
    assert_eq!(h.l.leases().count(), 1);
    // Ann's own retry still gets her first answer.
    assert_eq!(h.op(op).reply, Reply::Granted(first.clone()));

    // Bob's new request under ann's client id is refused and kept nowhere, so ann's
    // request with that number runs, for her.
    let next = RequestId {
        client: req.client,
        seq: req.seq + 100,
    };
    let bobs = Op::Checkout {
        req: next,
        auth: SessionAuth {
            session: bob,
            secret: SECRET,
        },
        feature: "cad".into(),
        version: v("1.0"),
        count: 1,
        wait_ms: None,
    };
    assert_eq!(denied(&h.op(bobs).reply), &DenyReason::WrongClient);
    let anns = Op::Checkout {
        req: next,
        auth: SessionAuth {
            session: ann,
            secret: SECRET,
        },
        feature: "cad".into(),
        version: v("1.0"),
        count: 1,
        wait_ms: None,
    };
    let Reply::Granted(second) = h.op(anns).reply else {
        panic!("ann's own request was not run")
    };
    assert_eq!(h.l.lease(second.lease).unwrap().session, ann);
    assert_eq!(h.in_use("cad"), 2);

    // A retried open must carry the secret its session was opened with.
    let open = |secret| Op::OpenSession {
        req: RequestId {
            client: [1; 16],
            seq: 1,
        },
        holder: Holder {
            user: "ann".into(),
            host: "ws1".into(),
            display: ":0".into(),
            pid: 1,
        },
        ttl_ms: 30_000,
        secret,
        origin: Default::default(),
    };
    assert_eq!(
        denied(&h.op(open([0xEE; 32])).reply),
        &DenyReason::BadSecret
    );
    assert!(matches!(
        h.op(open(SECRET)).reply,
        Reply::SessionOpened { session, .. } if session == ann
    ));

    // A retried close after its session ended still gets its first answer.
    let close = Op::CloseSession {
        req: RequestId {
            client: [2; 16],
            seq: 1_000,
        },
        auth: SessionAuth {
            session: bob,
            secret: SECRET,
        },
    };
    let closed = h.op(close.clone()).reply;
    assert!(matches!(closed, Reply::SessionClosed { .. }), "{closed:?}");
    assert_eq!(h.op(close).reply, closed);
}

/// Versions compare as decimal numbers, as FlexNet documents: a `2025.1` line serves a
/// request for `2025.0506`, and a `2023.9` line one for `2023.10` (which is 2023.1).
#[test]
fn a_line_serves_every_request_of_a_decimally_lower_version() {
    let mut h = H::new(vec![line("cad", "2025.1", 1), {
        let mut l = line("cam", "2023.9", 1);
        l.line_no = 2;
        l
    }]);
    let s = h.open(1, "ann", "ws1");
    for (feature, asked) in [("cad", "2025.0506"), ("cam", "2023.10")] {
        let op = h.checkout_req(s, feature, asked, 1);
        assert!(
            matches!(h.op(op).reply, Reply::Granted(_)),
            "{feature} {asked}"
        );
    }
    let op = h.checkout_req(s, "cad", "2025.2", 1);
    assert!(matches!(
        denied(&h.op(op).reply),
        DenyReason::VersionTooNew { .. }
    ));
}
