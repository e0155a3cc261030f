//! The cluster's time zone: license dates read in it, changes of it, and its place in
//! snapshots. One behaviour a test.

use super::tests::{line, H};
use super::*;
use crate::license::{Date, Expiry, FeatureLine, TermPolicy};

/// Unix ms of a UTC time written `2028-01-01T08:00:00.000`.
fn utc(s: &str) -> TimeMs {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f").unwrap();
    TimeMs::try_from(t.and_utc().timestamp_millis()).unwrap()
}

fn date(s: &str) -> Date {
    Date::parse_flexlm(s).unwrap()
}

fn set(h: &mut H, zone: &str) -> Outcome {
    h.op(Op::SetTimeZone {
        zone: zone.into(),
        only_if_unset: false,
    })
}

/// `cad`, 2 seats, with an expiry, a `START=` and a `GRACE=` as given.
fn cad(expiry: &str, start: Option<&str>, grace_days: u32) -> FeatureLine {
    let mut l = line("cad", "1.0", 2);
    l.expiry = Expiry::On(date(expiry));
    l.start = start.map(date);
    l.term = TermPolicy {
        grace_days,
        demo_seats: 0,
    };
    l
}

/// What a fresh checkout of `cad` gets at `at`: `Ok(())` for a grant.
type Verdict = Result<(), DenyReason>;

#[test]
fn license_dates_begin_and_end_at_midnight_in_the_clusters_zone() {
    let expired = |at: &str| {
        Err(DenyReason::Expired {
            expired_ms: utc(at),
        })
    };
    let not_yet = |at: &str| Err(DenyReason::NotYetStarted { start_ms: utc(at) });
    // (zone set, the line, when the checkout comes, what it gets)
    let table: Vec<(Option<&str>, FeatureLine, &str, Verdict)> = vec![
        // No zone set reads as UTC, as before the setting existed.
        (
            None,
            cad("31-dec-2027", None, 0),
            "2027-12-31T23:59:59.999",
            Ok(()),
        ),
        (
            None,
            cad("31-dec-2027", None, 0),
            "2028-01-01T00:00:00.000",
            expired("2028-01-01T00:00:00.000"),
        ),
        // California: the day ends at 08:00 UTC (PST).
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", None, 0),
            "2028-01-01T07:59:59.999",
            Ok(()),
        ),
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", None, 0),
            "2028-01-01T08:00:00.000",
            expired("2028-01-01T08:00:00.000"),
        ),
        // East of UTC the day ends the evening before, in UTC.
        (
            Some("Europe/Berlin"),
            cad("31-dec-2027", None, 0),
            "2027-12-31T22:59:59.999",
            Ok(()),
        ),
        (
            Some("Europe/Berlin"),
            cad("31-dec-2027", None, 0),
            "2027-12-31T23:00:00.000",
            expired("2027-12-31T23:00:00.000"),
        ),
        // START= is a local midnight too (PDT in July: 07:00 UTC).
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", Some("1-jul-2026"), 0),
            "2026-07-01T06:59:59.999",
            not_yet("2026-07-01T07:00:00.000"),
        ),
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", Some("1-jul-2026"), 0),
            "2026-07-01T07:00:00.000",
            Ok(()),
        ),
        (
            Some("Europe/Berlin"),
            cad("31-dec-2027", Some("1-jul-2026"), 0),
            "2026-06-30T21:59:59.999",
            not_yet("2026-06-30T22:00:00.000"),
        ),
        (
            Some("Europe/Berlin"),
            cad("31-dec-2027", Some("1-jul-2026"), 0),
            "2026-06-30T22:00:00.000",
            Ok(()),
        ),
        // GRACE= runs whole local days past the expiry day.
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", None, 3),
            "2028-01-04T07:59:59.999",
            Ok(()),
        ),
        (
            Some("America/Los_Angeles"),
            cad("31-dec-2027", None, 3),
            "2028-01-04T08:00:00.000",
            expired("2028-01-04T08:00:00.000"),
        ),
        // A grace across the change to daylight saving ends at local midnight (PDT).
        (
            Some("America/Los_Angeles"),
            cad("1-mar-2027", None, 14),
            "2027-03-16T06:59:59.999",
            Ok(()),
        ),
        (
            Some("America/Los_Angeles"),
            cad("1-mar-2027", None, 14),
            "2027-03-16T07:00:00.000",
            expired("2027-03-16T07:00:00.000"),
        ),
    ];
    for (zone, l, at, want) in table {
        let case = format!("{zone:?} {at}");
        let mut h = H::new(vec![l]);
        if let Some(z) = zone {
            assert_eq!(set(&mut h, z).reply, Reply::Done { affected: 1 }, "{case}");
        }
        h.now = utc(at);
        let s = h.open(1, "ann", "ws1");
        let got = match h.checkout(s, "cad", 1) {
            Reply::Granted(_) => Ok(()),
            Reply::Denied(d) => Err(d),
            r => panic!("{case}: {r:?}"),
        };
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn a_zone_change_moves_the_boundary_and_ends_a_term_through_revocation() {
    let mut h = H::new(vec![cad("31-dec-2027", None, 0)]);
    set(&mut h, "America/Los_Angeles");
    // 04:00 UTC on 1 Jan 2028: the line ended in UTC, not yet in California.
    h.now = utc("2028-01-01T04:00:00.000");
    let s = h.open(1, "ann", "ws1");
    let g = h.grant(s, "cad", 1);
    // Back to UTC: the term has ended, so the seat is revoked in the same entry.
    let out = set(&mut h, "UTC");
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert_eq!(
        out.events,
        vec![
            Event::TimeZoneSet {
                zone: "UTC".into(),
                previous: Some("America/Los_Angeles".into()),
            },
            Event::TermChanged {
                feature: "cad".into(),
                state: TermState::Expired,
            },
            Event::Revoked {
                feature: "cad".into(),
                lease: g.lease,
                seat: g.seat,
                session: s,
                reason: RevokeReason::TermEnded { remaining: 0 },
            },
            Event::Reclaimed {
                feature: "cad".into(),
                seat: g.seat,
                count: 1,
                charged_ms: g.granted_ms,
            },
            // The usage history measures use against no seats from here on.
            Event::Licensed {
                feature: "cad".into(),
                issued: 0,
                overdraft_limit: 0,
            },
        ]
    );
    assert_eq!(h.l.revocations(s).len(), 1, "the holder is told");
    assert!(matches!(
        denied(&h.checkout(s, "cad", 1)),
        DenyReason::Expired { .. }
    ));
    // And California again: the line counts until 08:00 UTC.
    let out = set(&mut h, "America/Los_Angeles");
    assert!(out.events.contains(&Event::TermChanged {
        feature: "cad".into(),
        state: TermState::Expiring {
            ends_ms: utc("2028-01-01T08:00:00.000")
        },
    }));
    let g = h.grant(s, "cad", 1);
    // The next boundary was found anew: time crossing it ends the term there.
    h.now = utc("2028-01-01T07:59:59.999");
    assert!(h
        .op(Op::Tick)
        .events
        .iter()
        .all(|e| !matches!(e, Event::Revoked { .. })));
    h.now = utc("2028-01-01T08:00:00.000");
    let out = h.op(Op::Tick);
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::Revoked { lease, .. } if *lease == g.lease)));
}

fn denied(r: &Reply) -> &DenyReason {
    super::tests::denied(r)
}

#[test]
fn unknown_zones_and_repeats_change_nothing() {
    let mut h = H::new(vec![cad("31-dec-2027", None, 0)]);
    set(&mut h, "Europe/Berlin");
    let features = h.l.features();
    // (name asked for, the reply)
    let table: &[(&str, Reply)] = &[
        (
            "Mars/Olympus_Mons",
            Reply::UnknownTimeZone {
                zone: "Mars/Olympus_Mons".into(),
            },
        ),
        (
            "",
            Reply::UnknownTimeZone {
                zone: String::new(),
            },
        ),
        (
            "Europe/Berlin ",
            Reply::UnknownTimeZone {
                zone: "Europe/Berlin ".into(),
            },
        ),
        // The same zone, in any case, is no change.
        ("Europe/Berlin", Reply::Done { affected: 0 }),
        ("europe/berlin", Reply::Done { affected: 0 }),
    ];
    for (name, want) in table {
        let out = set(&mut h, name);
        assert_eq!(&out.reply, want, "{name:?}");
        assert!(out.events.is_empty(), "{name:?}: {:?}", out.events);
        assert_eq!(h.l.time_zone_name(), Some("Europe/Berlin"), "{name:?}");
        assert_eq!(h.l.features(), features, "{name:?}");
    }
    // A long name is echoed cut short.
    let long = "x".repeat(100_000);
    match set(&mut h, &long).reply {
        Reply::UnknownTimeZone { zone } => assert_eq!(zone.len(), 64),
        r => panic!("{r:?}"),
    }
}

#[test]
fn names_are_stored_as_the_database_spells_them() {
    let mut h = H::new(vec![cad("31-dec-2027", None, 0)]);
    assert_eq!(h.l.time_zone_name(), None);
    assert_eq!(h.l.time_zone(), crate::license::Zone::UTC);
    set(&mut h, "america/los_angeles");
    assert_eq!(h.l.time_zone_name(), Some("America/Los_Angeles"));
    // Setting UTC by name is a setting (it is no longer unset), though it reads as before.
    set(&mut h, "UTC");
    assert_eq!(h.l.time_zone_name(), Some("UTC"));
    assert_eq!(h.l.time_zone(), crate::license::Zone::UTC);
}

#[test]
fn a_configured_default_applies_only_while_no_zone_was_set() {
    let default = |h: &mut H, zone: &str| {
        h.op(Op::SetTimeZone {
            zone: zone.into(),
            only_if_unset: true,
        })
        .reply
    };
    let mut h = H::new(vec![cad("31-dec-2027", None, 0)]);
    assert_eq!(
        default(&mut h, "Europe/Berlin"),
        Reply::Done { affected: 1 }
    );
    assert_eq!(h.l.time_zone_name(), Some("Europe/Berlin"));
    // A second default (another leader's, or a late copy) does not override it...
    assert_eq!(default(&mut h, "Asia/Tokyo"), Reply::Done { affected: 0 });
    // ... nor an administrator's choice.
    set(&mut h, "America/Los_Angeles");
    assert_eq!(
        default(&mut h, "Europe/Berlin"),
        Reply::Done { affected: 0 }
    );
    assert_eq!(h.l.time_zone_name(), Some("America/Los_Angeles"));
    // An unknown default is refused as such, never taken for UTC.
    let mut fresh = H::new(vec![]);
    assert_eq!(
        default(&mut fresh, "Nowhere/Land"),
        Reply::UnknownTimeZone {
            zone: "Nowhere/Land".into()
        }
    );
    assert_eq!(fresh.l.time_zone_name(), None);
}

#[test]
fn snapshots_keep_the_zone_and_older_formats_are_refused_by_number() {
    let mut h = H::new(vec![cad("31-dec-2027", None, 0)]);
    let unset = h.l.snapshot();
    set(&mut h, "America/Los_Angeles");
    let bytes = h.l.snapshot();
    let r = Ledger::restore(&bytes).unwrap();
    assert!(r.same_state(&h.l));
    assert_eq!(r.time_zone_name(), Some("America/Los_Angeles"));
    assert_eq!(r.snapshot(), bytes);
    // The pools are rebuilt in the zone: the term ends at 08:00 UTC.
    assert_eq!(r.features(), h.l.features());
    assert_eq!(
        r.term_state("cad"),
        Some(TermState::Active {
            ends_ms: Some(utc("2028-01-01T08:00:00.000"))
        })
    );

    // Format 3 (before the zone, the pools per grouping and the line vocabulary) is
    // refused by number rather than misread.
    let mut v3 = unset.clone();
    v3[8] = 3;
    let e = Ledger::restore(&v3).unwrap_err().to_string();
    assert!(e.contains("format 3 is not supported"), "{e}");

    // A zone this build does not know (a newer release's) is refused, not read as UTC.
    let mut foreign = h.clone_for_test();
    foreign.l.st.time_zone = Some("Mars/Olympus_Mons".into());
    let e = Ledger::restore(&foreign.l.snapshot())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Mars/Olympus_Mons") && e.contains("same tallyd release"),
        "{e}"
    );
}
