//! FlexNet's documented options-file examples (License Administration Guide: "Rules of
//! precedence in options files" and the RESERVE, MAX, INCLUDE, EXCLUDE, GROUP and
//! HOST_GROUP entries), written anew with our own names, each with the decision Tally
//! gives and the documented rule it follows.
//!
//! A case is: the options text; the pool's seats; who holds how many; who asks; and the
//! expected answer, `allow` or `CODE@line`. People are written `user@host`, followed by
//! `display=`, `ip=`, `project=`, `seats=` (asked, default 1), `version=`, `dup=` or
//! `borrow` as a case needs them.

// A failed unwrap in a test is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use tally_core::license::{DupGroup, Version};
use tally_core::options::{parse, Decision, FeatureKey, Holding, Request, UseTable, Who};

struct Case {
    /// The documented rule, in our words.
    rule: &'static str,
    options: &'static str,
    seats: u32,
    held: &'static [(&'static str, u32)],
    ask: &'static str,
    expect: &'static str,
}

const CASES: &[Case] = &[
    // --- Rules of precedence ---------------------------------------------------------
    Case { rule: "neither an INCLUDE nor an EXCLUDE list: everyone may use the feature",
        options: "LINGER cad 60", seats: 5, held: &[], ask: "ann@ws1", expect: "allow" },
    Case { rule: "only an EXCLUDE list: everyone not on it may use the feature",
        options: "EXCLUDE cad USER bob", seats: 5, held: &[], ask: "ann@ws1", expect: "allow" },
    Case { rule: "only an EXCLUDE list: those on it may not",
        options: "EXCLUDE cad USER bob", seats: 5, held: &[], ask: "bob@ws1", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "only an INCLUDE list: only those on it may use the feature",
        options: "INCLUDE cad USER ann", seats: 5, held: &[], ask: "bob@ws1", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "only an INCLUDE list: those on it may",
        options: "INCLUDE cad USER ann", seats: 5, held: &[], ask: "ann@ws1", expect: "allow" },
    Case { rule: "the EXCLUDE list is checked before the INCLUDE list: on both, not allowed",
        options: "INCLUDE cad USER bob\nEXCLUDE cad USER bob", seats: 5, held: &[], ask: "bob@ws1", expect: "EXCLUDED_BY_POLICY@2" },
    Case { rule: "EXCLUDE wins over INCLUDE through groups: included as a group member, excluded by host",
        options: "GROUP eng ann bob\nINCLUDE cad GROUP eng\nEXCLUDE cad HOST kiosk", seats: 5, held: &[], ask: "ann@kiosk", expect: "EXCLUDED_BY_POLICY@3" },
    Case { rule: "an INCLUDE list of one feature says nothing about another",
        options: "INCLUDE cad USER ann", seats: 5, held: &[], ask: "bob@ws1 feature=sim", expect: "allow" },
    // --- INCLUDEALL / EXCLUDEALL ----------------------------------------------------------
    Case { rule: "EXCLUDEALL: the user may use no feature of this vendor",
        options: "EXCLUDEALL USER bob", seats: 5, held: &[], ask: "bob@ws1 feature=sim", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "INCLUDEALL: an INCLUDE list for every feature, so others are out",
        options: "INCLUDEALL USER ann", seats: 5, held: &[], ask: "bob@ws1", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "INCLUDEALL and a feature's INCLUDE add up to one list",
        options: "INCLUDEALL USER ann\nINCLUDE cad USER bob", seats: 5, held: &[], ask: "bob@ws1", expect: "allow" },
    // --- TYPE: HOST, DISPLAY, INTERNET, PROJECT, HOST_GROUP ----------------------------------
    Case { rule: "INCLUDE by HOST: any user on that host",
        options: "INCLUDE cad HOST lab7", seats: 5, held: &[], ask: "zoe@lab7", expect: "allow" },
    Case { rule: "EXCLUDE by DISPLAY",
        options: "EXCLUDE cad DISPLAY kiosk:0", seats: 5, held: &[], ask: "ann@ws1 display=kiosk:0", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "INTERNET with wildcards: a subnet may use the feature",
        options: "INCLUDE cad INTERNET 192.168.*.*", seats: 5, held: &[], ask: "ann@ws1 ip=192.168.40.2", expect: "allow" },
    Case { rule: "INTERNET with wildcards: outside the subnet, not on the list",
        options: "INCLUDE cad INTERNET 192.168.*.*", seats: 5, held: &[], ask: "ann@ws1 ip=10.0.0.2", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "PROJECT (LM_PROJECT): include a project's work",
        options: "INCLUDE cad PROJECT apollo", seats: 5, held: &[], ask: "ann@ws1 project=gemini", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "HOST_GROUP: EXCLUDE a set of hosts",
        options: "HOST_GROUP kiosks k1 k2\nEXCLUDE cad HOST_GROUP kiosks", seats: 5, held: &[], ask: "ann@k2", expect: "EXCLUDED_BY_POLICY@2" },
    Case { rule: "GROUP lines of one name add up",
        options: "GROUP eng ann\nGROUP eng bob\nINCLUDE cad GROUP eng", seats: 5, held: &[], ask: "bob@ws1", expect: "allow" },
    Case { rule: "GROUPCASEINSENSITIVE ON: group members match whatever the case",
        options: "GROUPCASEINSENSITIVE ON\nGROUP eng Ann\nINCLUDE cad GROUP eng", seats: 5, held: &[], ask: "ANN@ws1", expect: "allow" },
    Case { rule: "without GROUPCASEINSENSITIVE, group members are case-sensitive",
        options: "GROUP eng Ann\nINCLUDE cad GROUP eng", seats: 5, held: &[], ask: "ann@ws1", expect: "EXCLUDED_BY_POLICY@2" },
    // --- feature:VERSION= and feature:DUP_GROUP= ---------------------------------------------
    Case { rule: "a qualified feature applies only to the lines it selects: version 2.0 excluded",
        options: "EXCLUDE \"cad:VERSION=2.0\" USER bob", seats: 5, held: &[], ask: "bob@ws1 version=2.0", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "a qualified feature applies only to the lines it selects: version 3.0 is not",
        options: "EXCLUDE cad:VERSION=2.0 USER bob", seats: 5, held: &[], ask: "bob@ws1 version=3.0", expect: "allow" },
    Case { rule: "DUP_GROUP qualifier selects lines by their duplicate grouping",
        options: "INCLUDE cad:DUP_GROUP=UH USER ann", seats: 5, held: &[], ask: "bob@ws1 dup=UH", expect: "EXCLUDED_BY_POLICY@1" },
    // --- MAX ------------------------------------------------------------------------------------
    Case { rule: "MAX n for a user: below the cap",
        options: "MAX 2 cad USER ann", seats: 10, held: &[("ann@ws1", 1)], ask: "ann@ws2", expect: "allow" },
    Case { rule: "MAX n for a user: at the cap, refused",
        options: "MAX 2 cad USER ann", seats: 10, held: &[("ann@ws1", 2)], ask: "ann@ws2", expect: "MAX_REACHED_BY_POLICY@1" },
    Case { rule: "MAX for a group caps the group's members together",
        options: "GROUP eng ann bob\nMAX 2 cad GROUP eng", seats: 10, held: &[("ann@ws1", 1), ("bob@ws2", 1)], ask: "ann@ws3", expect: "MAX_REACHED_BY_POLICY@2" },
    Case { rule: "MAX for a group does not cap those outside it",
        options: "GROUP eng ann bob\nMAX 2 cad GROUP eng", seats: 10, held: &[("ann@ws1", 1), ("bob@ws2", 1)], ask: "cy@ws3", expect: "allow" },
    Case { rule: "reusing a seat already held (duplicate grouping) takes no seat, so MAX does not apply",
        options: "MAX 1 cad USER ann", seats: 10, held: &[("ann@ws1", 1)], ask: "ann@ws1 seats=0", expect: "allow" },
    Case { rule: "EXCLUDE applies even when no seat is taken",
        options: "EXCLUDE cad USER ann", seats: 10, held: &[("ann@ws1", 1)], ask: "ann@ws1 seats=0", expect: "EXCLUDED_BY_POLICY@1" },
    // --- RESERVE --------------------------------------------------------------------------------
    Case { rule: "RESERVE for a user: the reserved seat is not available to others",
        options: "RESERVE 1 cad USER ann", seats: 2, held: &[("bob@ws1", 1)], ask: "cy@ws2", expect: "RESERVED_FOR_OTHERS@1" },
    Case { rule: "RESERVE for a user: the owner gets the reserved seat",
        options: "RESERVE 1 cad USER ann", seats: 2, held: &[("bob@ws1", 1)], ask: "ann@ws2", expect: "allow" },
    Case { rule: "RESERVE: seats beyond the reservation stay free for anyone",
        options: "RESERVE 1 cad USER ann", seats: 3, held: &[("bob@ws1", 1)], ask: "cy@ws2", expect: "allow" },
    Case { rule: "RESERVE: a reservation in use by its owner keeps nothing more back",
        options: "RESERVE 1 cad USER ann", seats: 2, held: &[("ann@ws1", 1)], ask: "cy@ws2", expect: "allow" },
    Case { rule: "RESERVE for a HOST: seats kept for whoever works on that host",
        options: "RESERVE 3 cad HOST lab7", seats: 4, held: &[], ask: "cy@ws2 seats=2", expect: "RESERVED_FOR_OTHERS@1" },
    Case { rule: "RESERVE for a GROUP: any member may take the group's seats",
        options: "GROUP eng ann bob\nRESERVE 2 cad GROUP eng", seats: 3, held: &[("ann@ws1", 1), ("cy@ws9", 1)], ask: "bob@ws2", expect: "allow" },
    Case { rule: "RESERVE for a GROUP: the last free seat is the group's, not an outsider's",
        options: "GROUP eng ann bob\nRESERVE 2 cad GROUP eng", seats: 3, held: &[("ann@ws1", 1), ("cy@ws9", 1)], ask: "dan@ws2", expect: "RESERVED_FOR_OTHERS@2" },
    Case { rule: "a requester's own reservation counts for them: ann may take the reserved seat and a free one",
        options: "RESERVE 1 cad USER ann\nRESERVE 1 cad USER bob", seats: 4, held: &[], ask: "ann@ws1 seats=2", expect: "allow" },
    Case { rule: "... but not the seat reserved for bob",
        options: "RESERVE 1 cad USER ann\nRESERVE 1 cad USER bob", seats: 4, held: &[("cy@ws3", 1)], ask: "ann@ws1 seats=3", expect: "RESERVED_FOR_OTHERS@2" },
    Case { rule: "a full pool is the ledger's refusal, not a reservation's",
        options: "RESERVE 1 cad USER ann", seats: 1, held: &[("bob@ws1", 1)], ask: "cy@ws2", expect: "allow" },
    Case { rule: "EXCLUDE is checked before MAX and RESERVE",
        options: "RESERVE 1 cad USER ann\nEXCLUDE cad USER ann", seats: 5, held: &[], ask: "ann@ws1", expect: "EXCLUDED_BY_POLICY@2" },
    // --- borrowing ------------------------------------------------------------------------------
    Case { rule: "EXCLUDE_BORROW: may check out, may not borrow",
        options: "EXCLUDE_BORROW cad USER ann", seats: 5, held: &[], ask: "ann@ws1 borrow", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "EXCLUDE_BORROW does not touch an ordinary checkout",
        options: "EXCLUDE_BORROW cad USER ann", seats: 5, held: &[], ask: "ann@ws1", expect: "allow" },
    Case { rule: "INCLUDE_BORROW: only those listed may borrow",
        options: "INCLUDE_BORROW cad USER ann", seats: 5, held: &[], ask: "bob@ws1 borrow", expect: "EXCLUDED_BY_POLICY@1" },
    Case { rule: "BORROW_LOWWATER: that many seats can never be borrowed",
        options: "BORROW_LOWWATER cad 4", seats: 5, held: &[("bob@ws1 borrow", 1)], ask: "ann@ws1 borrow", expect: "BORROW_LOWWATER_BY_POLICY@1" },
];

/// A person or request as the case writes it.
#[derive(Default)]
struct Person {
    user: String,
    host: String,
    display: String,
    ip: Option<IpAddr>,
    project: Option<String>,
    feature: Option<String>,
    version: Option<Version>,
    dup: DupGroup,
    seats: u32,
    borrow: bool,
}

fn person(s: &str) -> Person {
    let mut words = s.split(' ');
    let (user, host) = words.next().unwrap().split_once('@').unwrap();
    let mut p = Person {
        user: user.into(),
        host: host.into(),
        seats: 1,
        ..Person::default()
    };
    for w in words {
        match w.split_once('=') {
            Some(("display", v)) => p.display = v.into(),
            Some(("ip", v)) => p.ip = Some(v.parse().unwrap()),
            Some(("project", v)) => p.project = Some(v.into()),
            Some(("feature", v)) => p.feature = Some(v.into()),
            Some(("version", v)) => p.version = Some(Version::parse(v).unwrap()),
            Some(("dup", v)) => p.dup = DupGroup::parse(v).unwrap(),
            Some(("seats", v)) => p.seats = v.parse().unwrap(),
            None if w == "borrow" => p.borrow = true,
            _ => panic!("unknown word {w}"),
        }
    }
    p
}

fn who(p: &Person) -> Who<'_> {
    Who {
        user: &p.user,
        host: &p.host,
        display: &p.display,
        ip: p.ip,
        project: p.project.as_deref(),
    }
}

#[test]
fn flexnet_examples_decide_as_documented() {
    let mut failures = Vec::new();
    for c in CASES {
        let options = parse(c.options).unwrap_or_else(|e| panic!("{}: {e}", c.rule));
        let held: Vec<(Person, u32)> = c.held.iter().map(|(p, n)| (person(p), *n)).collect();
        let holders: Vec<Holding<'_>> = held
            .iter()
            .map(|(p, n)| Holding {
                who: who(p),
                seats: *n,
            })
            .collect();
        let borrowed = held.iter().filter(|(p, _)| p.borrow).map(|(_, n)| n).sum();
        let pool = UseTable {
            capacity: c.seats,
            borrowed,
            holders: &holders,
        };
        let asker = person(c.ask);
        let req = Request {
            feature: FeatureKey {
                name: asker.feature.as_deref().unwrap_or("cad"),
                version: asker.version.as_ref(),
                dup_group: asker.dup,
            },
            who: who(&asker),
            seats: asker.seats,
            borrow: asker.borrow,
        };
        let got = match options.evaluate(&req, &pool) {
            Decision::Allow => "allow".to_owned(),
            Decision::Deny(d) => {
                assert!(
                    d.to_string()
                        .contains(&format!("options line {}: ", d.line)),
                    "{d}"
                );
                format!("{}@{}", d.code.as_str(), d.line)
            }
        };
        if got != c.expect {
            failures.push(format!("{}: expected {}, got {got}", c.rule, c.expect));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
