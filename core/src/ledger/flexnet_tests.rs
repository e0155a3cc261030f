//! FlexNet's documented rules for license lines, one test each, from license files written
//! the way FlexNet vendors write them. Each test cites the rule it checks (FNP License
//! Administration Guide and FLEXnet Licensing End User Guide, appendix "License File
//! Format").

use super::tests::{denied, v, H};
use super::*;
use crate::license::{parse, Ineffective};

/// The lines of a license text (signatures are the server's business, not the ledger's).
fn lines(text: &str) -> Vec<crate::license::FeatureLine> {
    parse(text).unwrap_or_else(|e| panic!("{e}")).lines
}

fn load(h: &mut H, source: &str, text: &str) -> Reply {
    h.op(Op::LoadLicense {
        source: source.into(),
        license: parse(text).unwrap_or_else(|e| panic!("{e}")),
    })
    .reply
}

fn issued(h: &H, feature: &str) -> Option<u64> {
    h.l.features()
        .iter()
        .find(|f| f.name == feature)
        .map(|f| f.issued)
}

fn at(h: &mut H, s: SessionId, feature: &str, version: &str) -> Reply {
    let op = h.checkout_req(s, feature, version, 1);
    h.op(op).reply
}

fn granted(r: &Reply) -> &Grant {
    match r {
        Reply::Granted(g) => g,
        r => panic!("expected a grant, got {r:?}"),
    }
}

/// "INCREMENT lines form license groups, or pools, based on the following fields: feature
/// name, version, DUP_GROUP, ... If two lines differ by any of these fields, a new group
/// of licenses, called a license pool, is created in the vendor daemon, and this group is
/// counted independently from other license pools with the same feature name."
#[test]
fn lines_that_differ_in_dup_group_form_pools_counted_independently() {
    let mut h = H::new(lines(
        "VENDOR acme
         INCREMENT cad acme 1.0 permanent 2 DUP_GROUP=U
         INCREMENT cad acme 1.0 permanent 3",
    ));
    assert_eq!(issued(&h, "cad"), Some(5));
    let alice1 = h.open(1, "alice", "h1");
    let alice2 = h.open(2, "alice", "h2");
    let bob = h.open(3, "bob", "h3");
    let carol = h.open(4, "carol", "h4");
    let erin = h.open(5, "erin", "h5");
    let a1 = h.grant(alice1, "cad", 1);
    // The U pool is tried first (loaded first): alice's second host shares her seat.
    let a2 = h.grant(alice2, "cad", 1);
    assert!(a2.shared && a2.seat == a1.seat, "{a2:?}");
    let b = h.grant(bob, "cad", 1);
    assert!(!b.shared);
    // The U pool's two users are taken: carol's checkouts count in the ungrouped pool,
    // one seat each.
    let c1 = h.grant(carol, "cad", 1);
    let c2 = h.grant(carol, "cad", 1);
    assert!(!c1.shared && !c2.shared && c1.seat != c2.seat);
    h.grant(erin, "cad", 1);
    assert_eq!(h.in_use("cad"), 5);
    let r = h.checkout(erin, "cad", 1);
    assert_eq!(
        denied(&r),
        &DenyReason::NoSeats {
            requested: 1,
            in_use: 5,
            available: 3
        }
    );
    // A full U pool still lets its users share their seat.
    let alice3 = h.open(6, "alice", "h9");
    assert!(h.grant(alice3, "cad", 1).shared);
    // A seat freed in the ungrouped pool is a seat of that pool again.
    h.checkin(carol, c1.lease);
    assert!(!h.grant(erin, "cad", 1).shared);
    assert_eq!(h.in_use("cad"), 5);
}

/// "SUPERSEDE: used in conjunction with ISSUED date. Replaces every FEATURE or INCREMENT
/// line for the feature names specified with an ISSUED date previous to [this line's]";
/// the date of a line is "taken from ISSUED= or START=".
#[test]
fn supersede_replaces_the_lines_issued_before_it_in_any_load_order() {
    let old = "VENDOR acme
        INCREMENT cad acme 1.0 permanent 5 ISSUED=1-jan-2025
        INCREMENT cad acme 1.0 permanent 4 START=1-feb-2025
        INCREMENT cam acme 1.0 permanent 3 ISSUED=1-jan-2025";
    let renewal = "VENDOR acme
        INCREMENT cad acme 1.0 permanent 8 ISSUED=1-jun-2026 SUPERSEDE
        INCREMENT cad acme 1.0 permanent 2 ISSUED=1-jul-2026 NOTICE=\"pack issued after\"
        INCREMENT cam acme 1.0 permanent 6 ISSUED=1-mar-2026 SUPERSEDE=\"cam\"";
    for order in [[old, renewal], [renewal, old]] {
        let mut h = H::new(lines(order[0]));
        assert!(matches!(
            load(&mut h, "second.lic", order[1]),
            Reply::LicenseLoaded { .. }
        ));
        // 8 + 2 (issued after the renewal), not 5 + 4 + 8 + 2; 6, not 3 + 6.
        assert_eq!(issued(&h, "cad"), Some(10));
        assert_eq!(issued(&h, "cam"), Some(6));
        let superseded =
            h.l.line_notes()
                .iter()
                .filter(|(_, n)| matches!(n, Ineffective::Superseded { .. }))
                .count();
        assert_eq!(superseded, 3);
    }
    // Unloading the renewal brings the old lines back.
    let mut h = H::new(lines(old));
    load(&mut h, "renewal.lic", renewal);
    h.op(Op::UnloadLicense {
        source: "renewal.lic".into(),
    });
    assert_eq!(issued(&h, "cad"), Some(9));
    assert_eq!(issued(&h, "cam"), Some(3));
}

/// The End User Guide's own example: `PACKAGE suite sampled 1.0 COMPONENTS="apple:1.5:2
/// orange:3.0:4"` enabled by `FEATURE suite sampled 1.0 1-jan-2005 3` "is equivalent to
/// FEATURE apple sampled 1.5 1-jan-2005 6 ... FEATURE orange sampled 3.0 1-jan-2005 12";
/// without OPTIONS=SUITE "the corresponding feature of the same name as the package is
/// removed once the package is enabled".
#[test]
fn a_package_licenses_its_components_with_the_enabling_lines_terms() {
    let mut h = H::new(lines(
        "VENDOR sampled
         PACKAGE suite sampled 1.0 COMPONENTS=\"apple:1.5:2 orange:3.0:4\"
         FEATURE suite sampled 1.0 1-jan-2030 3 NOTICE=\"order 123\"",
    ));
    assert_eq!(issued(&h, "apple"), Some(6));
    assert_eq!(issued(&h, "orange"), Some(12));
    assert_eq!(issued(&h, "suite"), None);
    let s = h.open(1, "alice", "h1");
    granted(&at(&mut h, s, "apple", "1.5"));
    assert!(matches!(
        denied(&at(&mut h, s, "apple", "1.6")),
        DenyReason::VersionTooNew { .. }
    ));
    assert_eq!(
        denied(&at(&mut h, s, "suite", "1.0")),
        &DenyReason::UnknownFeature
    );
    // A component without a version takes the enabling line's; two enabling INCREMENT
    // lines add up for every component; a package of another version is not enabled.
    load(
        &mut h,
        "bundle.lic",
        "VENDOR acme
         PACKAGE bundle acme COMPONENTS=\"a b:2.0\"
         INCREMENT bundle acme 1.5 permanent 4
         INCREMENT bundle acme 1.5 permanent 1 NOTICE=\"pack 2\"
         PACKAGE tools acme 2.0 COMPONENTS=\"t\"
         INCREMENT tools acme 1.0 permanent 9",
    );
    assert_eq!(issued(&h, "a"), Some(5));
    assert_eq!(issued(&h, "b"), Some(5));
    granted(&at(&mut h, s, "a", "1.5"));
    granted(&at(&mut h, s, "b", "2.0"));
    assert_eq!(issued(&h, "t"), None);
    assert_eq!(issued(&h, "tools"), Some(9));
    assert!(h
        .l
        .line_notes()
        .iter()
        .any(|((src, line), n)| src == "bundle.lic"
            && *line == 5
            && *n == Ineffective::PackageNotEnabled));
}

/// "An UPGRADE line removes up to the number of licenses specified from any old version
/// (>= from_feat_version) and creates a new version with that same number of licenses.
/// For example, the two lines INCREMENT f1 sampled 1.000 1-jan-2005 5 / UPGRADE f1 sampled
/// 1.000 2.000 1-jan-2005 2 provide three v1.0 licenses of f1 and two v2.0 licenses."
#[test]
fn an_upgrade_moves_seats_to_the_new_version() {
    let mut h = H::new(lines(
        "VENDOR sampled
         INCREMENT f1 sampled 1.000 1-jan-2030 5
         UPGRADE f1 sampled 1.000 2.000 1-jan-2030 2",
    ));
    assert_eq!(issued(&h, "f1"), Some(5));
    let s = h.open(1, "alice", "h1");
    granted(&at(&mut h, s, "f1", "2.0"));
    granted(&at(&mut h, s, "f1", "2.0"));
    assert!(matches!(
        denied(&at(&mut h, s, "f1", "2.0")),
        DenyReason::NoSeats { .. }
    ));
    for _ in 0..3 {
        granted(&at(&mut h, s, "f1", "1.0"));
    }
    assert!(matches!(
        denied(&at(&mut h, s, "f1", "1.0")),
        DenyReason::NoSeats { .. }
    ));
}

#[test]
fn an_upgrade_creates_no_more_seats_than_it_takes() {
    // More than the old line has: both of its seats move, none are made.
    let mut h = H::new(lines(
        "VENDOR acme
         INCREMENT g acme 1.0 permanent 2
         UPGRADE g acme 1.0 2.0 permanent 5
         INCREMENT k acme 3.0 permanent 1
         UPGRADE k acme 1.0 2.0 permanent 3",
    ));
    assert_eq!(issued(&h, "g"), Some(2));
    let s = h.open(1, "alice", "h1");
    granted(&at(&mut h, s, "g", "2.0"));
    granted(&at(&mut h, s, "g", "2.0"));
    assert!(matches!(
        denied(&at(&mut h, s, "g", "1.0")),
        DenyReason::NoSeats { .. }
    ));
    // No line of k is at least 1.0 and below 2.0: the upgrade has nothing to move.
    assert_eq!(issued(&h, "k"), Some(1));
    granted(&at(&mut h, s, "k", "2.0"));
    assert!(matches!(
        denied(&at(&mut h, s, "k", "1.0")),
        DenyReason::NoSeats { .. }
    ));
    assert_eq!(v("2.0"), v("2.000"));
}

fn suite_of(h: &H, feature: &str) -> u64 {
    h.in_use(feature)
}

/// "OPTIONS=SUITE: ... the corresponding feature of the same name as the package is
/// checked out in addition to the component feature being checked out", with the guide's
/// example: "two features, comp1 and comp2, ... each with five licenses available. When
/// comp1 or comp2 is checked out, suite is also checked out." Two seats here, so the
/// suite's bound shows.
#[test]
fn a_suite_checkout_takes_the_suite_seat_too_all_or_nothing() {
    let mut h = H::new(lines(
        "VENDOR sampled
         PACKAGE suite sampled 1.0 COMPONENTS=\"comp1 comp2\" OPTIONS=SUITE
         FEATURE suite sampled 1.0 permanent 2",
    ));
    assert_eq!(issued(&h, "comp1"), Some(2));
    assert_eq!(issued(&h, "comp2"), Some(2));
    assert_eq!(issued(&h, "suite"), Some(2));
    let alice = h.open(1, "alice", "h1");
    let bob = h.open(2, "bob", "h2");
    let carol = h.open(3, "carol", "h3");
    let a1 = h.grant(alice, "comp1", 1);
    // One process using two components takes one suite seat, as one FlexNet job does.
    let a2 = h.grant(alice, "comp2", 1);
    assert_eq!(suite_of(&h, "suite"), 1);
    let b1 = h.grant(bob, "comp1", 1);
    assert_eq!(suite_of(&h, "suite"), 2);
    // comp2 has a seat free, the suite has none: nothing is taken.
    let before = h.in_use("comp2");
    match denied(&h.checkout(carol, "comp2", 1)) {
        DenyReason::SuiteDenied { suite, reason } => {
            assert_eq!(suite, "suite");
            assert!(matches!(**reason, DenyReason::NoSeats { .. }), "{reason:?}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(h.in_use("comp2"), before);
    // Alice's suite seat stays while one of her components holds it.
    h.checkin(alice, a1.lease);
    assert_eq!(suite_of(&h, "suite"), 2);
    h.checkin(alice, a2.lease);
    assert_eq!(suite_of(&h, "suite"), 1);
    h.grant(carol, "comp2", 1);
    // An admin's removal of bob's component frees his suite seat with it.
    h.op(Op::RemoveLease { lease: b1.lease });
    assert_eq!(suite_of(&h, "suite"), 1);
    assert_eq!(h.in_use("comp1"), 0);
}

/// "SUITE_DUP_GROUP: ... limits the total number of users of the package to the number of
/// licenses, and allows the package to be shared among the users that have the SUITE
/// checked out."
#[test]
fn suite_dup_group_shares_the_suite_seat_per_user_and_revocation_takes_both_seats() {
    let mut h = H::new(lines(
        "VENDOR sampled
         PACKAGE suite sampled 1.0 COMPONENTS=\"comp1 comp2 comp3\" OPTIONS=SUITE
         FEATURE suite sampled 1.0 permanent 1 SUITE_DUP_GROUP=U",
    ));
    let a1 = h.open(1, "alice", "h1");
    let a2 = h.open(2, "alice", "h2");
    let bob = h.open(3, "bob", "h3");
    h.grant(a1, "comp1", 1);
    h.grant(a2, "comp2", 1);
    assert_eq!(suite_of(&h, "suite"), 1);
    assert!(matches!(
        denied(&h.checkout(bob, "comp3", 1)),
        DenyReason::SuiteDenied { .. }
    ));
    // Unloading the suite takes back every seat of it and of its components.
    let out = h.op(Op::UnloadLicense {
        source: "site.lic".into(),
    });
    let revoked = out
        .events
        .iter()
        .filter(|e| matches!(e, Event::Revoked { .. }))
        .count();
    assert_eq!(revoked, 2);
    assert_eq!(h.l.leases().count(), 0);
    assert_eq!(h.l.seats().count(), 0);
}

#[test]
fn a_component_licensed_apart_from_its_suite_in_the_same_pool_is_refused() {
    let mut h = H::new(lines(
        "VENDOR sampled
         PACKAGE suite sampled 1.0 COMPONENTS=\"comp1\" OPTIONS=SUITE
         FEATURE suite sampled 1.0 permanent 2",
    ));
    let r = load(
        &mut h,
        "direct.lic",
        "VENDOR sampled
         INCREMENT comp1 sampled 1.0 permanent 3",
    );
    assert!(
        matches!(&r, Reply::LoadRefused(LoadError::Conflict { what, .. }) if what.contains("component of the suite suite")),
        "{r:?}"
    );
}
