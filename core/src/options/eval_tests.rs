//! The bounded settings (linger, overdraft, timeout, borrow hours), the load-time check
//! of reservations against pools, and the corners of the reservation count.

use std::collections::BTreeMap;

use super::*;
use crate::license::{DupGroup, Version};

fn opts(text: &str) -> Options {
    parse(text).unwrap()
}

fn who(user: &str) -> Who<'_> {
    Who {
        user,
        host: "h",
        ..Who::default()
    }
}

#[test]
fn linger_may_lengthen_never_shorten() {
    let o = opts("LINGER cad 600\nLINGER cad:VERSION=2.0 900");
    let cad = FeatureKey::named("cad");
    assert_eq!(o.linger_secs(&cad, 300), 600);
    assert_eq!(
        o.linger_secs(&cad, 1200),
        1200,
        "the vendor's longer linger stands"
    );
    assert_eq!(o.linger_secs(&FeatureKey::named("sim"), 30), 30);
    let v2 = Version::parse("2").unwrap();
    let cad2 = FeatureKey {
        version: Some(&v2),
        ..cad
    };
    assert_eq!(
        o.linger_secs(&cad2, 0),
        900,
        "a qualified line beats the plain one"
    );
}

#[test]
fn overdraft_may_lower_never_raise() {
    let o = opts("MAX_OVERDRAFT cad 2\nMAX_OVERDRAFT cad:DUP_GROUP=U 0");
    let cad = FeatureKey::named("cad");
    assert_eq!(o.overdraft(&cad, 5), 2);
    assert_eq!(
        o.overdraft(&cad, 1),
        1,
        "the options file cannot grant more overdraft"
    );
    let u = FeatureKey {
        dup_group: DupGroup::User,
        ..cad
    };
    assert_eq!(o.overdraft(&u, 5), 0);
}

#[test]
fn timeout_of_the_feature_over_timeoutall() {
    let o = opts("TIMEOUTALL 7200\nTIMEOUT cad 3600");
    assert_eq!(o.timeout_secs(&FeatureKey::named("cad")), Some(3600));
    assert_eq!(o.timeout_secs(&FeatureKey::named("sim")), Some(7200));
    assert_eq!(opts("").timeout_secs(&FeatureKey::named("sim")), None);
}

#[test]
fn borrow_hours_may_lower_the_vendors_never_allow_more() {
    let o = opts("MAX_BORROW_HOURS cad 24\nMAX_BORROW_HOURS sim 0");
    let cad = FeatureKey::named("cad");
    assert_eq!(o.borrow_hours(&cad, Some(168)), Some(24));
    assert_eq!(o.borrow_hours(&cad, Some(8)), Some(8));
    assert_eq!(
        o.borrow_hours(&cad, None),
        None,
        "no BORROW= on the line: no borrowing"
    );
    assert_eq!(
        o.borrow_hours(&FeatureKey::named("sim"), Some(8)),
        None,
        "a cap of 0 forbids"
    );
    assert_eq!(o.borrow_hours(&FeatureKey::named("cae"), Some(8)), Some(8));
}

#[test]
fn reservations_must_fit_in_the_pool() {
    let o = opts("GROUP eng a\nRESERVE 2 cad USER a\nRESERVE 2 cad:VERSION=2.0 GROUP eng\nRESERVE 3 cad HOST h\nRESERVE 9 sim USER a");
    let mut seats = BTreeMap::from([("cad".to_owned(), 4)]);
    let e = o.check_reservations(&seats).unwrap_err();
    assert_eq!(
        e,
        OptionsError::Overbooked {
            feature: "cad".into(),
            reserved: 7,
            seats: 4,
            lines: vec![4]
        }
    );
    assert_eq!(
        e.to_string(),
        "RESERVE on line 4 for cad reserves 7 seats in all, but the pool has 4"
    );
    seats.insert("cad".into(), 7);
    assert_eq!(
        o.check_reservations(&seats),
        Ok(()),
        "sim has no count given: unchecked"
    );
    seats.insert("sim".into(), 1);
    assert!(
        matches!(o.check_reservations(&seats), Err(OptionsError::Overbooked { lines, .. }) if lines == [5])
    );
}

#[test]
fn a_holder_in_two_reservations_fills_only_one() {
    // ann is in eng and has her own reservation: her one seat fills hers (first in the
    // file), so eng's two seats are still kept for eng.
    let o = opts("GROUP eng ann bob\nRESERVE 1 cad USER ann\nRESERVE 2 cad GROUP eng");
    let holders = [Holding {
        who: who("ann"),
        seats: 1,
    }];
    let pool = UseTable {
        capacity: 3,
        borrowed: 0,
        holders: &holders,
    };
    let ask = |user| Request {
        feature: FeatureKey::named("cad"),
        who: who(user),
        seats: 1,
        borrow: false,
    };
    match o.evaluate(&ask("cy"), &pool) {
        Decision::Deny(d) => {
            assert_eq!((d.code, d.line), (DenialCode::ReservedForOthers, 3));
            assert_eq!(
                d.to_string(),
                "RESERVED_FOR_OTHERS (options line 3: RESERVE 2 cad GROUP eng): 2 of the 2 free seat(s) of cad are reserved for others"
            );
        }
        Decision::Allow => panic!("the group's seats were given away"),
    }
    assert_eq!(o.evaluate(&ask("bob"), &pool), Decision::Allow);
}

#[test]
fn an_over_reserved_pool_still_serves_the_owner() {
    // A policy change never revokes: eve kept her seat when ann's reservation arrived.
    // Ann may still take the one free seat, it is hers.
    let o = opts("RESERVE 2 cad USER ann");
    let holders = [Holding {
        who: who("eve"),
        seats: 1,
    }];
    let pool = UseTable {
        capacity: 2,
        borrowed: 0,
        holders: &holders,
    };
    let req = Request {
        feature: FeatureKey::named("cad"),
        who: who("ann"),
        seats: 1,
        borrow: false,
    };
    assert_eq!(o.evaluate(&req, &pool), Decision::Allow);
}

#[test]
fn max_names_the_first_cap_reached() {
    let o = opts("GROUP eng ann\nMAX 5 cad GROUP eng\nMAX 1 cad USER ann");
    let holders = [Holding {
        who: who("ann"),
        seats: 1,
    }];
    let pool = UseTable {
        capacity: 9,
        borrowed: 0,
        holders: &holders,
    };
    let req = Request {
        feature: FeatureKey::named("cad"),
        who: who("ann"),
        seats: 1,
        borrow: false,
    };
    let Decision::Deny(d) = o.evaluate(&req, &pool) else {
        panic!("allowed over MAX")
    };
    assert_eq!((d.code, d.line), (DenialCode::MaxReachedByPolicy, 3));
    assert_eq!(
        d.detail,
        "USER ann holds 1 seat(s) of cad, at most 1; 1 more asked"
    );
}

#[test]
fn internet_needs_an_address() {
    let o = opts("EXCLUDE cad INTERNET 0.0.0.0/0");
    let req = Request {
        feature: FeatureKey::named("cad"),
        who: who("ann"),
        seats: 1,
        borrow: false,
    };
    let pool = UseTable {
        capacity: 9,
        borrowed: 0,
        holders: &[],
    };
    assert_eq!(
        o.evaluate(&req, &pool),
        Decision::Allow,
        "no address seen: no INTERNET match"
    );
    let seen = Request {
        who: Who {
            ip: Some([10, 0, 0, 1].into()),
            ..who("ann")
        },
        ..req
    };
    assert!(matches!(o.evaluate(&seen, &pool), Decision::Deny(_)));
}

#[test]
fn about_lists_what_names_a_feature() {
    let o = opts(
        "RESERVE 1 cad USER a\nMAX 2 sim USER a\nMAX 3 cad:VERSION=2.0 USER a\nTIMEOUTALL 900",
    );
    let lines: Vec<u32> = o.about("cad").map(|l| l.line).collect();
    assert_eq!(lines, [1, 3]);
}
