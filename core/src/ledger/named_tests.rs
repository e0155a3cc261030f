//! Named users, editions and term states: the licensing models, one behaviour a test.

use super::tests::{denied, line, H, T0};
use super::*;
use crate::license::{
    Count, Date, Edition, Expiry, FeatureLine, LicenseModel, LineKind, TermPolicy,
};

const DAY: u64 = 86_400_000;

fn named(count: u32, days: u32) -> FeatureLine {
    let mut l = line("pbx", "1.0", count);
    l.model = LicenseModel::NamedUser {
        fair_use_days: days,
    };
    l
}

fn assign(h: &mut H, users: &[&str]) -> Outcome {
    h.op(Op::AssignUsers {
        feature: "pbx".into(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
    })
}

fn unassign(h: &mut H, users: &[&str]) -> Outcome {
    h.op(Op::UnassignUsers {
        feature: "pbx".into(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
    })
}

fn state(h: &H, user: &str) -> Option<NamedState> {
    h.l.named_state("pbx", user)
}

#[test]
fn only_assigned_users_take_a_seat_and_one_user_takes_one_seat_on_any_host() {
    let mut h = H::new(vec![named(2, 30)]);
    assign(&mut h, &["ann", "bob"]);
    let ann1 = h.open(1, "ann", "desk");
    let ann2 = h.open(2, "ann", "phone");
    let cy = h.open(3, "cy", "desk");
    let g1 = h.grant(ann1, "pbx", 1);
    let g2 = h.grant(ann2, "pbx", 1);
    assert_eq!(g1.seat, g2.seat, "one user, one seat, however many devices");
    assert_eq!(h.in_use("pbx"), 1);
    assert_eq!(
        denied(&h.checkout(cy, "pbx", 1)),
        &DenyReason::NamedUserNotAssigned
    );
    assert!(matches!(
        denied(&h.checkout(ann1, "pbx", 2)),
        DenyReason::InvalidCount { .. }
    ));
    // Assigning to a floating feature is refused.
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let r = h.op(Op::AssignUsers {
        feature: "cad".into(),
        users: vec!["ann".into()],
    });
    assert_eq!(r.reply, Reply::Denied(DenyReason::NotNamedUser));
}

/// The fair-use window's whole life: opened by an over-assignment, first come first
/// served during it, the last assigned blocked after it (their seat revoked), healed by
/// an unassignment or by a pack.
#[test]
fn the_fair_use_window_opens_serves_first_come_and_then_blocks_the_last_assigned() {
    let mut h = H::new(vec![named(2, 30)]);
    assign(&mut h, &["ann", "bob"]);
    assert!(h.l.fair_use_window("pbx").is_none());
    h.tick_to(T0 + 1_000);
    let out = assign(&mut h, &["cy"]);
    let until = T0 + 1_000 + 30 * DAY;
    assert!(out.events.contains(&Event::FairUseOpened {
        feature: "pbx".into(),
        until_ms: until
    }));
    assert_eq!(state(&h, "ann"), Some(NamedState::Licensed));
    assert_eq!(
        state(&h, "cy"),
        Some(NamedState::FairUse { until_ms: until })
    );
    // During the window: never more than two at once, first come first served.
    let (ann, bob, cy) = (
        h.open(1, "ann", "a"),
        h.open(2, "bob", "b"),
        h.open(3, "cy", "c"),
    );
    let gc = h.grant(cy, "pbx", 1);
    let gb = h.grant(bob, "pbx", 1);
    assert!(matches!(
        denied(&h.checkout(ann, "pbx", 1)),
        DenyReason::NoSeats { .. }
    ));
    h.checkin(bob, gb.lease);
    h.grant(ann, "pbx", 1);
    // The millisecond before the window ends cy still works; at its end cy is blocked
    // and the seat cy holds is revoked.
    h.now = until - 1;
    assert!(h
        .op(Op::Tick)
        .events
        .iter()
        .all(|e| !matches!(e, Event::Revoked { .. })));
    h.now = until;
    let out = h.op(Op::Tick);
    assert!(out.events.contains(&Event::Revoked {
        feature: "pbx".into(),
        lease: gc.lease,
        seat: gc.seat,
        session: cy,
        reason: RevokeReason::FairUseEnded {
            window_ended_ms: until
        },
    }));
    assert_eq!(
        denied(&h.checkout(cy, "pbx", 1)),
        &DenyReason::NamedUserBlocked {
            window_ended_ms: until,
            count: 2
        }
    );
    // Healed by an unassignment: bob goes, cy is within the count again.
    let out = unassign(&mut h, &["bob"]);
    assert!(out.events.contains(&Event::FairUseClosed {
        feature: "pbx".into()
    }));
    assert_eq!(state(&h, "cy"), Some(NamedState::Licensed));
    h.grant(cy, "pbx", 1);
}

#[test]
fn a_pack_heals_an_over_assignment_and_unassigning_revokes_the_held_seat() {
    let mut h = H::new(vec![named(1, 0)]);
    assign(&mut h, &["ann"]);
    h.tick_to(T0 + 1_000);
    assign(&mut h, &["bob"]);
    // A zero-day window: bob is blocked at once.
    h.tick_to(T0 + 2_000);
    assert!(matches!(state(&h, "bob"), Some(NamedState::Blocked { .. })));
    let mut pack = named(1, 0);
    pack.kind = LineKind::Increment;
    let r = h.op(Op::LoadLicense {
        source: "pack.lic".into(),
        license: LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![pack],
        },
    });
    assert!(matches!(r.reply, Reply::LicenseLoaded { .. }));
    assert_eq!(state(&h, "bob"), Some(NamedState::Licensed));
    assert!(h.l.fair_use_window("pbx").is_none());
    let bob = h.open(2, "bob", "b");
    let g = h.grant(bob, "pbx", 1);
    let out = unassign(&mut h, &["bob"]);
    assert!(out.events.contains(&Event::Revoked {
        feature: "pbx".into(),
        lease: g.lease,
        seat: g.seat,
        session: bob,
        reason: RevokeReason::UserUnassigned,
    }));
    assert_eq!(h.l.revocations(bob)[0].reason, RevokeReason::UserUnassigned);
    let users: Vec<&str> =
        h.l.assigned_users("pbx")
            .iter()
            .map(|(u, _, _)| *u)
            .collect();
    assert_eq!(users, vec!["ann"]);
}

fn edition(name: &str, cap: Option<u32>, closed: bool) -> Option<Edition> {
    Some(Edition {
        name: name.into(),
        cap,
        closed,
    })
}

/// STARFACE's editions: a server license brings 1 user (3 with Compact), packs of 1 or 5
/// add up, Compact allows at most 20 users in all, Free has 3 and takes no packs and no
/// upgrade.
#[test]
fn editions_table() {
    let feature = |count: u32, kind: LineKind, ed: Option<Edition>, no: u32| FeatureLine {
        edition: ed,
        line_no: no,
        ..FeatureLine::new(
            kind,
            "pbx".into(),
            "acme".into(),
            Version::whole(1),
            Expiry::Permanent,
            Count::Seats(count),
            no,
        )
    };
    let standard = feature(1, LineKind::Feature, edition("Standard", None, false), 1);
    let compact = feature(3, LineKind::Feature, edition("Compact", Some(20), false), 1);
    let free = feature(3, LineKind::Feature, edition("Free", None, true), 1);
    // Each pack carries its order number: identical signed lines would be one line,
    // counted once (the vendor's serial number keeps packs apart).
    let pack = |n: u32, no: u32| FeatureLine {
        notice: Some(format!("order {no}")),
        ..feature(n, LineKind::Increment, None, no)
    };
    // (base, packs, loads?, seats after)
    let cases: Vec<(FeatureLine, Vec<FeatureLine>, bool, u64)> = vec![
        (standard.clone(), vec![pack(5, 2), pack(1, 3)], true, 7),
        (
            compact.clone(),
            vec![pack(5, 2), pack(5, 3), pack(5, 4)],
            true,
            18,
        ),
        (
            compact.clone(),
            vec![pack(5, 2), pack(5, 3), pack(5, 4), pack(5, 5)],
            false,
            0,
        ),
        (free.clone(), vec![pack(1, 2)], false, 0),
        (free.clone(), vec![], true, 3),
    ];
    for (i, (base, packs, ok, seats)) in cases.into_iter().enumerate() {
        let mut h = H::new(vec![base]);
        let r = h.op(Op::LoadLicense {
            source: "packs.lic".into(),
            license: LicenseFile {
                vendors: vec!["acme".into()],
                lines: packs,
            },
        });
        let loaded = matches!(r.reply, Reply::LicenseLoaded { .. });
        assert_eq!(loaded, ok, "case {i}: {r:?}");
        if ok {
            assert_eq!(h.l.features()[0].issued, seats, "case {i}");
        } else {
            assert!(
                matches!(&r.reply, Reply::LoadRefused(LoadError::Conflict { what, .. })
                    if what.contains("EDITION_CAP=20") || what.contains("takes no packs")),
                "case {i}: {r:?}"
            );
        }
    }
    // Free cannot be carried into a commercial license: loading one beside it is refused.
    let mut h = H::new(vec![free]);
    let r = h.op(Op::LoadLicense {
        source: "commercial.lic".into(),
        license: LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![standard],
        },
    });
    assert!(
        matches!(&r.reply, Reply::LoadRefused(LoadError::Conflict { what, .. })
            if what.contains("Free edition") && what.contains("unload site.lic first")),
        "{r:?}"
    );
}

/// Every term state and the millisecond on each side of each boundary.
#[test]
fn term_states_change_exactly_at_their_boundaries() {
    let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
    let mut l = line("cad", "1.0", 5);
    l.start = Some(day(2026, 8, 1));
    l.expiry = Expiry::On(day(2026, 12, 31));
    l.term = TermPolicy {
        grace_days: 14,
        demo_seats: 2,
    };
    let start = day(2026, 8, 1).start_ms();
    let end = day(2026, 12, 31).end_ms();
    let grace = end + 14 * DAY;
    let expiring = end - EXPIRING_WITHIN_MS;
    let mut h = H::new(vec![l]);
    let at = |h: &mut H, t: TimeMs| {
        h.now = t;
        h.op(Op::Tick);
        h.l.term_state("cad")
    };
    let cases = [
        (start - 1, TermState::NotStarted { starts_ms: start }),
        (start, TermState::Active { ends_ms: Some(end) }),
        (expiring - 1, TermState::Active { ends_ms: Some(end) }),
        (expiring, TermState::Expiring { ends_ms: end }),
        (end - 1, TermState::Expiring { ends_ms: end }),
        (end, TermState::Grace { until_ms: grace }),
        (grace - 1, TermState::Grace { until_ms: grace }),
        (grace, TermState::Demo { seats: 2 }),
    ];
    for (t, want) in cases {
        assert_eq!(at(&mut h, t), Some(want), "at {t}");
    }
    // Each change was an event, in the entry that crossed it.
    let mut h = H::new(vec![{
        let mut l = line("cad", "1.0", 5);
        l.expiry = Expiry::On(day(2026, 12, 31));
        l
    }]);
    h.now = end;
    let out = h.op(Op::Tick);
    assert!(out.events.contains(&Event::TermChanged {
        feature: "cad".into(),
        state: TermState::Expired
    }));
    // A renewal lifts it at once, without touching anything held.
    let mut renewal = line("cad", "1.0", 5);
    renewal.expiry = Expiry::On(day(2027, 12, 31));
    renewal.line_no = 2;
    h.op(Op::LoadLicense {
        source: "renewal.lic".into(),
        license: LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![renewal],
        },
    });
    assert_eq!(
        h.l.term_state("cad"),
        Some(TermState::Active {
            ends_ms: Some(day(2027, 12, 31).end_ms())
        })
    );
}
