//! Time, outages, clock repair, revocation and license integrity: one behaviour a test.

use super::tests::{denied, incr, line, H, SECRET, T0};
use super::*;
use crate::license::{ClusterId, Date, Expiry, FeatureLine, TermPolicy};

fn expire(h: &mut H, s: SessionId) -> u32 {
    match h.op(Op::ExpireSessions { sessions: vec![s] }).reply {
        Reply::Done { affected } => affected,
        r => panic!("{r:?}"),
    }
}

fn file(lines: Vec<crate::license::FeatureLine>) -> LicenseFile {
    LicenseFile {
        vendors: vec!["acme".into()],
        lines,
    }
}

fn load(h: &mut H, source: &str, lines: Vec<crate::license::FeatureLine>) -> Reply {
    h.op(Op::LoadLicense {
        source: source.into(),
        license: file(lines),
    })
    .reply
}

fn revoked(out: &Outcome) -> Vec<LeaseId> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::Revoked { lease, .. } => Some(*lease),
            _ => None,
        })
        .collect()
}

#[test]
fn time_never_runs_backwards() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    h.tick_to(T0 + 3_000);
    h.op(Op::Tick);
    h.now = T0 + 1_000;
    let out = h.op(Op::Tick);
    assert!(out.events.is_empty());
    assert_eq!(h.l.now_ms(), T0 + 3_000);
}

#[test]
fn a_silence_longer_than_the_gap_is_an_outage_and_ttls_restart_at_the_return() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1"); // TTL 30 s, heartbeat T0
    h.grant(s, "cad", 1);
    // The whole cluster is down for 60 s; the first entry after it ends the outage.
    h.now = T0 + 60_000;
    let out = h.op(Op::Tick);
    assert_eq!(out.events, vec![Event::Resumed { silent_ms: 60_000 }]);
    assert_eq!(h.l.resumed_ms(), T0 + 60_000);
    // A live client has its whole TTL from the return to heartbeat again...
    h.tick_to(T0 + 89_999);
    assert_eq!(expire(&mut h, s), 0);
    // ... and a dead one is expired TTL after the return.
    h.tick_to(T0 + 90_000);
    assert_eq!(expire(&mut h, s), 1);
}

#[test]
fn elections_alone_never_extend_a_session() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    // Leaders come and go, each writing within the gap: no outage, the TTL runs on.
    for step in 1..=30 {
        h.now = T0 + step * u64::from(OUTAGE_GAP_MS as u32) / 5;
        assert!(h.op(Op::Tick).events.is_empty());
    }
    h.tick_to(T0 + 30_000);
    assert_eq!(expire(&mut h, s), 1);
}

#[test]
fn a_gap_of_exactly_the_limit_is_not_an_outage() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    h.now = T0 + OUTAGE_GAP_MS;
    assert!(h.op(Op::Tick).events.is_empty());
    h.now += OUTAGE_GAP_MS + 1;
    assert!(matches!(
        h.op(Op::Tick).events.as_slice(),
        [Event::Resumed { .. }]
    ));
}

/// The probe the issue describes: one entry from a leader five years ahead poisons time.
/// The ledger cannot tell a wrong time from a right one (the server keeps such a leader
/// from leading); what it offers is the repair.
#[test]
fn a_bad_time_is_repaired_by_setting_the_clock_back() {
    let five_years = 5 * 365 * 86_400_000;
    let mut l = line("cad", "1.0", 2);
    l.expiry = Expiry::On(Date::from_ymd(2027, 12, 31).unwrap());
    l.linger_secs = 300;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    let g = h.grant(s, "cad", 1);
    h.now = T0 + five_years;
    let poisoned = h.op(Op::Tick);
    assert_eq!(revoked(&poisoned), vec![g.lease], "the term looked over");
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::Expired { .. }
    ));
    let late = h.open(2, "bob", "ws2");
    let g2 = {
        // Nothing to grant while time is wrong; a lingering seat shows the pull-back.
        let mut l2 = line("view", "1.0", 1);
        l2.linger_secs = 300;
        load(&mut h, "view.lic", vec![l2]);
        h.grant(late, "view", 1)
    };
    h.checkin(late, g2.lease);

    // Every clock is fixed; the admin repairs to the true time.
    let to = T0 + 10_000;
    h.now = T0 + five_years + 1_000; // the leader's stamp still runs from ledger time
    let out = h.op(Op::RepairClock { to_ms: to });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert!(out.events.contains(&Event::ClockRepaired {
        from_ms: T0 + five_years + 1_000,
        to_ms: to
    }));
    assert_eq!((h.l.now_ms(), h.l.clock_epoch()), (to, 1));
    assert_eq!(h.l.session(late).unwrap().last_heartbeat_ms, to);
    // The lingering seat keeps the 300 s it had left (it lingered from ledger time).
    let seat = h.l.seat(g2.seat).unwrap();
    assert_eq!(seat.lingering_until, Some(to + 300_000 - 1_000));
    h.now = to + 1_000;
    assert!(matches!(h.checkout(s, "cad", 1), Reply::Granted(_)));
    // A repair forward, or to the same time, changes nothing.
    assert_eq!(
        h.op(Op::RepairClock { to_ms: to + 5_000 }).reply,
        Reply::Done { affected: 0 }
    );
    // And every session's TTL restarts at the repair: none expires before it + TTL.
    h.tick_to(to + 29_999);
    assert_eq!(expire(&mut h, s), 0);
}

#[test]
fn one_line_counts_once_however_often_and_under_whatever_name_it_is_loaded() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    // The same line, laid out and signed differently, in another file and twice in a third.
    let mut again = line("cad", "1.0", 2);
    again.signature = Some(vec![1; 64]);
    again.line_no = 7;
    let r = load(&mut h, "b.lic", vec![again.clone()]);
    assert_eq!(
        r,
        Reply::LicenseLoaded {
            source: "b.lic".into(),
            lines: 1,
            duplicates: vec![Duplicate {
                line: 7,
                of_source: "site.lic".into(),
                of_line: 1
            }]
        }
    );
    let mut twice = again.clone();
    twice.line_no = 9;
    let r = load(&mut h, "c.lic", vec![again, twice]);
    assert!(matches!(&r, Reply::LicenseLoaded { duplicates, .. } if duplicates.len() == 2));
    assert_eq!(h.l.features()[0].issued, 2, "one line, one count");
    assert_eq!(h.l.duplicate_of("c.lic", 9), Some(("site.lic", 1)));
    // Unloading the copy that counts lets the next one count: still 2, nobody revoked.
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 2);
    let out = h.op(Op::UnloadLicense {
        source: "site.lic".into(),
    });
    assert!(revoked(&out).is_empty());
    assert_eq!(h.l.features()[0].issued, 2);
    assert_eq!(h.l.duplicate_of("c.lic", 7), Some(("b.lic", 7)));
    // A line that differs in anything signed is another line: packs still add up.
    let r = load(&mut h, "pack.lic", vec![incr("cad", "1.0", 3)]);
    assert!(matches!(&r, Reply::LicenseLoaded { duplicates, .. } if duplicates.is_empty()));
    assert_eq!(h.l.features()[0].issued, 5);
}

#[test]
fn a_line_locked_to_a_cluster_loads_only_there() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let ours = ClusterId([1; 8]);
    let theirs = ClusterId([2; 8]);
    let mut locked = line("cam", "1.0", 4);
    locked.cluster = Some(ours);
    let before = h.l.snapshot();
    // No identity yet: refused, naming that.
    assert_eq!(
        load(&mut h, "cam.lic", vec![locked.clone()]),
        Reply::LoadRefused(LoadError::WrongCluster {
            feature: "cam".into(),
            line: 1,
            locked_to: ours,
            this: None
        })
    );
    assert_eq!(
        h.op(Op::SetClusterId { id: ours }).reply,
        Reply::Done { affected: 1 }
    );
    // Only the first identity counts.
    assert_eq!(
        h.op(Op::SetClusterId { id: theirs }).reply,
        Reply::Done { affected: 0 }
    );
    assert_eq!(h.l.cluster_id(), Some(ours));
    let mut foreign = line("cam", "1.0", 4);
    foreign.cluster = Some(theirs);
    assert_eq!(
        load(&mut h, "cam.lic", vec![foreign]),
        Reply::LoadRefused(LoadError::WrongCluster {
            feature: "cam".into(),
            line: 1,
            locked_to: theirs,
            this: Some(ours)
        })
    );
    assert!(h.l.licenses().all(|(s, _)| s != "cam.lic"));
    assert_ne!(before, h.l.snapshot(), "the identity was set");
    assert!(matches!(
        load(&mut h, "cam.lic", vec![locked]),
        Reply::LicenseLoaded { .. }
    ));
}

#[test]
fn unloading_revokes_every_held_seat_and_the_holder_is_told() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    load(&mut h, "view.lic", vec![line("view", "1.0", 1)]);
    let s = h.open(1, "ann", "ws1");
    let a = h.grant(s, "cad", 1);
    let b = h.grant(s, "cad", 1);
    let v = h.grant(s, "view", 1);
    let out = h.op(Op::UnloadLicense {
        source: "site.lic".into(),
    });
    assert_eq!(revoked(&out), vec![b.lease, a.lease], "newest grant first");
    assert_eq!(h.in_use("cad"), 0);
    assert!(
        h.l.lease(v.lease).is_some(),
        "another feature's seats are untouched"
    );
    let notes = h.l.revocations(s);
    assert_eq!(notes.len(), 2);
    assert_eq!(
        notes[0].reason,
        RevokeReason::LicenseChanged {
            source: "site.lic".into()
        }
    );
    // The holder's later checkin finds no lease; a session's notes end with it.
    let r = h.checkin(s, a.lease).reply;
    assert_eq!(r, Reply::Denied(DenyReason::UnknownLease));
    let req = h.req(1);
    h.op(Op::CloseSession {
        req,
        auth: SessionAuth {
            session: s,
            secret: SECRET,
        },
    });
    assert!(h.l.revocations(s).is_empty());
}

#[test]
fn when_grace_ends_seats_beyond_the_demo_count_are_revoked_lingering_ones_first() {
    let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
    let mut l = line("cad", "1.0", 10);
    l.expiry = Expiry::On(day(2026, 7, 31));
    l.linger_secs = 600;
    l.term = TermPolicy {
        grace_days: 14,
        demo_seats: 2,
    };
    let mut h = H::new(vec![l]);
    let users = ["ann", "bob", "cyd", "dan", "eve"];
    let sessions: Vec<SessionId> = users
        .iter()
        .enumerate()
        .map(|(i, u)| h.open(i as u8 + 1, u, "ws"))
        .collect();
    let grants: Vec<Grant> = sessions.iter().map(|s| h.grant(*s, "cad", 1)).collect();
    // Eve checks in: her seat lingers, and goes first.
    h.checkin(sessions[4], grants[4].lease);
    let grace_end = day(2026, 8, 14).end_ms();
    h.tick_to(grace_end - 1);
    assert!(revoked(&h.op(Op::Tick)).is_empty(), "grace still counts");
    h.now = grace_end;
    let out = h.op(Op::Tick);
    assert_eq!(
        revoked(&out),
        vec![grants[3].lease, grants[2].lease],
        "the newest held grants beyond the demo count"
    );
    assert!(out.events.contains(&Event::Reclaimed {
        feature: "cad".into(),
        seat: grants[4].seat,
        count: 1,
        charged_ms: grants[4].granted_ms,
    }));
    assert_eq!(h.in_use("cad"), 2);
    assert_eq!(
        h.l.revocations(sessions[3])[0].reason,
        RevokeReason::TermEnded { remaining: 2 }
    );
    // The pool is now the demo count, and still grants what it holds.
    h.now += 1_000;
    assert!(revoked(&h.op(Op::Tick)).is_empty());
    assert!(matches!(
        denied(&h.checkout(sessions[2], "cad", 1)),
        DenyReason::NoSeats { available: 2, .. }
    ));
}

#[test]
fn a_pool_that_still_grants_what_is_held_is_never_touched() {
    let mut l = line("cad", "1.0", 2);
    l.overdraft = 1;
    let mut h = H::new(vec![l]);
    let s = h.open(1, "ann", "ws1");
    for _ in 0..3 {
        h.grant(s, "cad", 1);
    }
    // Three held on two seats plus one overdraft: within what the pool grants.
    let out = load(&mut h, "other.lic", vec![line("view", "1.0", 1)]);
    assert!(matches!(out, Reply::LicenseLoaded { .. }));
    assert_eq!(h.in_use("cad"), 3);
    let out = h.op(Op::UnloadLicense {
        source: "other.lic".into(),
    });
    assert!(revoked(&out).is_empty());
    assert_eq!(h.l.leases().len(), 3);
}

#[test]
fn a_version_no_longer_licensed_is_revoked_on_reload() {
    let mut h = H::new(vec![incr("cad", "1.0", 2), {
        let mut l = incr("cad", "2.0", 1);
        l.line_no = 2;
        l
    }]);
    let s = h.open(1, "ann", "ws1");
    let old = h.grant(s, "cad", 1);
    let new = match h
        .op(h.clone_for_test().checkout_req(s, "cad", "2.0", 1))
        .reply
    {
        Reply::Granted(g) => g,
        r => panic!("{r:?}"),
    };
    let out = load(&mut h, "site.lic", vec![line("cad", "1.0", 2)]);
    assert!(matches!(out, Reply::LicenseLoaded { .. }));
    assert!(
        h.l.lease(new.lease).is_none(),
        "version 2.0 is not licensed any more"
    );
    assert!(h.l.lease(old.lease).is_some());
}

#[test]
fn revocation_notes_are_bounded_per_session() {
    let mut h = H::new(vec![line("cad", "1.0", 40)]);
    let s = h.open(1, "ann", "ws1");
    for _ in 0..40 {
        h.grant(s, "cad", 1);
    }
    h.op(Op::UnloadLicense {
        source: "site.lic".into(),
    });
    assert_eq!(h.l.revocations(s).len(), 16);
    assert_eq!(h.l.leases().len(), 0);
}

#[test]
fn only_the_first_feature_line_counts_and_increment_lines_add() {
    // FNP License Administration Guide, "FEATURE and INCREMENT Lines": "Only the first
    // FEATURE line for a given feature name is processed by the vendor daemon ... A
    // FEATURE line does not give an additional number of licenses, whereas an INCREMENT
    // line always gives an additional number of licenses." Lines are sorted when
    // processed ("Order of Lines in the License File"): a higher version first, then a
    // newer ISSUED date; Tally then takes the one loaded first. And the rule applies
    // among the lines that count now: an expired FEATURE line gives way to the next.
    const DAY: u64 = 86_400_000;
    let issued = |mut l: FeatureLine, days_ago: u64| {
        l.issued = Some(Date::of_ms(T0 - days_ago * DAY));
        l
    };
    let ended = |mut l: FeatureLine| {
        l.expiry = Expiry::On(Date::of_ms(T0 - 2 * DAY));
        l
    };
    let numbered = |lines: Vec<FeatureLine>| -> Vec<FeatureLine> {
        lines
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                l.line_no = i as u32 + 1;
                l
            })
            .collect()
    };
    let cases: Vec<(&str, Vec<FeatureLine>, u64)> = vec![
        ("one FEATURE line", vec![line("cad", "1.0", 10)], 10),
        (
            "a renewal FEATURE line (newer ISSUED) replaces the old one, it does not add",
            vec![
                issued(line("cad", "1.0", 10), 400),
                issued(line("cad", "1.0", 12), 30),
            ],
            12,
        ),
        (
            "the same, renewal first in the file",
            vec![
                issued(line("cad", "1.0", 12), 30),
                issued(line("cad", "1.0", 10), 400),
            ],
            12,
        ),
        (
            "no ISSUED: the first FEATURE line loaded",
            vec![line("cad", "1.0", 10), line("cad", "1.0", 12)],
            10,
        ),
        (
            "a higher version first",
            vec![line("cad", "1.0", 5), line("cad", "2.0", 3)],
            3,
        ),
        (
            "INCREMENT lines add to the FEATURE line",
            vec![
                line("cad", "1.0", 10),
                incr("cad", "1.0", 5),
                incr("cad", "1.0", 3),
            ],
            18,
        ),
        (
            "INCREMENT lines alone add",
            vec![incr("cad", "1.0", 4), incr("cad", "1.0", 6)],
            10,
        ),
        (
            "an ended FEATURE line gives way to the next valid one",
            vec![ended(line("cad", "1.0", 10)), line("cad", "1.0", 7)],
            7,
        ),
        (
            "an ended FEATURE line and a pack",
            vec![
                ended(line("cad", "1.0", 10)),
                line("cad", "1.0", 7),
                incr("cad", "1.0", 2),
            ],
            9,
        ),
    ];
    for (why, lines, seats) in cases {
        let h = H::new(numbered(lines));
        let f = h.l.features();
        assert_eq!(f[0].issued, seats, "{why}");
    }
    // Also as a second file: a renewal FEATURE file loaded beside the old one.
    let mut h = H::new(vec![issued(line("cad", "1.0", 10), 400)]);
    let out = load(
        &mut h,
        "renewal.lic",
        vec![issued(line("cad", "1.0", 12), 30)],
    );
    assert!(matches!(out, Reply::LicenseLoaded { .. }), "{out:?}");
    assert_eq!(h.l.features()[0].issued, 12);
    // The renewal counts, so 12 checkouts are granted and the 13th is not.
    let s = h.open(1, "ann", "ws1");
    h.grant(s, "cad", 12);
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
}

#[test]
fn when_the_counting_feature_line_ends_the_next_one_takes_over() {
    // The old FEATURE line (10 seats, no ISSUED) ends the day after T0; the renewal (7
    // seats, loaded second) is the next one: no gap, no doubling.
    let day = 86_400_000;
    let mut old = line("cad", "1.0", 10);
    old.expiry = Expiry::On(Date::of_ms(T0 + day));
    let mut renewal = line("cad", "1.0", 7);
    renewal.line_no = 2;
    let mut h = H::new(vec![old, renewal]);
    assert_eq!(h.l.features()[0].issued, 10);
    let s = h.open(1, "ann", "ws1");
    let a = h.grant(s, "cad", 4);
    let b = h.grant(s, "cad", 5);
    // Past the old line's end: 7 seats count, so 9 held are 2 over; the newest goes.
    h.tick_to(T0 + 3 * day);
    assert_eq!(h.l.features()[0].issued, 7);
    assert!(h.l.lease(a.lease).is_some());
    assert!(h.l.lease(b.lease).is_none(), "the newest grant is revoked");
}
