//! The options file in the ledger: loads (refused when reservations overbook a pool),
//! each directive's effect at checkout with the line it is cited by, precedence, the
//! queue, linger and overdraft, and that no policy change takes a held seat back.

use super::tests::{denied, line, H, SECRET, T0};
use super::*;
use crate::options::{parse, DenialCode};

fn load(h: &mut H, text: &str) -> Reply {
    let options = parse(text).expect("the test's options file parses");
    h.op(Op::LoadOptions { options }).reply
}

fn loaded(h: &mut H, text: &str) {
    let r = load(h, text);
    assert!(matches!(r, Reply::OptionsLoaded { .. }), "{r:?}");
}

/// The code and line of a policy denial.
fn policy(r: &Reply) -> (DenialCode, u32, String) {
    match denied(r) {
        DenyReason::Policy {
            code,
            line,
            directive,
            ..
        } => (*code, *line, directive.clone()),
        d => panic!("expected a policy denial, got {d:?}"),
    }
}

/// A session of `user` on `host` that came from `addr`.
fn open_from(h: &mut H, client: u8, user: &str, host: &str, addr: &str) -> SessionId {
    let req = h.req(client);
    let r = h.op(Op::OpenSession {
        req,
        holder: Holder {
            user: user.into(),
            host: host.into(),
            display: ":0".into(),
            pid: 1,
        },
        ttl_ms: 30_000,
        secret: SECRET,
        origin: Origin {
            cert: None,
            addr: addr.into(),
        },
    });
    match r.reply {
        Reply::SessionOpened { session, .. } => session,
        r => panic!("open: {r:?}"),
    }
}

/// One case of the table: a file, seats held before (user, count), and a request by
/// `user` for `count` seats of `cad` (5 seats), with the answer: `None` for a grant,
/// else the code and the line cited.
struct Case {
    name: &'static str,
    file: &'static str,
    held: &'static [(&'static str, u32)],
    user: &'static str,
    count: u32,
    want: Option<(DenialCode, u32)>,
}

#[test]
fn table_of_decisions_at_checkout() {
    use DenialCode::*;
    let cases = [
        Case {
            name: "no file",
            file: "",
            held: &[],
            user: "ann",
            count: 1,
            want: None,
        },
        Case {
            name: "excluded user",
            file: "# site\nEXCLUDE cad USER ann\n",
            held: &[],
            user: "ann",
            count: 1,
            want: Some((ExcludedByPolicy, 2)),
        },
        Case {
            name: "others unaffected by an exclude",
            file: "EXCLUDE cad USER ann\n",
            held: &[],
            user: "bob",
            count: 1,
            want: None,
        },
        Case {
            name: "include list admits its own",
            file: "INCLUDE cad USER ann\n",
            held: &[],
            user: "ann",
            count: 1,
            want: None,
        },
        Case {
            name: "include list keeps others out",
            file: "INCLUDE cad USER ann\n",
            held: &[],
            user: "bob",
            count: 1,
            want: Some((ExcludedByPolicy, 1)),
        },
        Case {
            name: "exclude wins over include",
            file: "INCLUDE cad USER ann\nEXCLUDE cad USER ann\n",
            held: &[],
            user: "ann",
            count: 1,
            want: Some((ExcludedByPolicy, 2)),
        },
        Case {
            name: "excludeall",
            file: "EXCLUDEALL USER eve\n",
            held: &[],
            user: "eve",
            count: 1,
            want: Some((ExcludedByPolicy, 1)),
        },
        Case {
            name: "group exclude",
            file: "GROUP eng ann bob\nEXCLUDE cad GROUP eng\n",
            held: &[],
            user: "bob",
            count: 1,
            want: Some((ExcludedByPolicy, 2)),
        },
        Case {
            name: "max per user reached",
            file: "MAX 2 cad USER ann\n",
            held: &[("ann", 2)],
            user: "ann",
            count: 1,
            want: Some((MaxReachedByPolicy, 1)),
        },
        Case {
            name: "max per user not yet reached",
            file: "MAX 2 cad USER ann\n",
            held: &[("ann", 1)],
            user: "ann",
            count: 1,
            want: None,
        },
        Case {
            name: "max of a group counts its members together",
            file: "GROUP eng ann bob\nMAX 2 cad GROUP eng\n",
            held: &[("ann", 1), ("bob", 1)],
            user: "ann",
            count: 1,
            want: Some((MaxReachedByPolicy, 2)),
        },
        Case {
            name: "reserved seats refused to others",
            file: "GROUP eng ann bob\n\nRESERVE 2 cad GROUP eng\n",
            held: &[("cy", 3)],
            user: "dan",
            count: 1,
            want: Some((ReservedForOthers, 3)),
        },
        Case {
            name: "reserved seats granted to the group",
            file: "GROUP eng ann bob\nRESERVE 2 cad GROUP eng\n",
            held: &[("cy", 3)],
            user: "ann",
            count: 1,
            want: None,
        },
        Case {
            name: "unreserved seats free for others",
            file: "RESERVE 2 cad USER ann\n",
            held: &[("cy", 2)],
            user: "dan",
            count: 1,
            want: None,
        },
        Case {
            name: "a reservation in use keeps nothing back",
            file: "RESERVE 1 cad USER ann\n",
            held: &[("ann", 1), ("cy", 3)],
            user: "dan",
            count: 1,
            want: None,
        },
        Case {
            name: "max before reserve",
            file: "MAX 1 cad USER dan\nRESERVE 4 cad USER ann\n",
            held: &[("dan", 1)],
            user: "dan",
            count: 1,
            want: Some((MaxReachedByPolicy, 1)),
        },
        Case {
            name: "another feature's lines do not apply",
            file: "EXCLUDE cam USER ann\nMAX 0 cam USER ann\n",
            held: &[],
            user: "ann",
            count: 1,
            want: None,
        },
    ];
    for c in cases {
        let mut h = H::new(vec![line("cad", "1.0", 5), line("cam", "1.0", 5)]);
        // Held seats were granted before the file, as a site's are when it loads one.
        for (i, (user, n)) in c.held.iter().enumerate() {
            let client = 100 + u8::try_from(i).expect("a short table");
            let s = h.open(client, user, &format!("ws-{user}"));
            h.grant(s, "cad", *n);
        }
        if !c.file.is_empty() {
            loaded(&mut h, c.file);
        }
        let s = h.open(1, c.user, "ws-asker");
        let r = h.checkout(s, "cad", c.count);
        match c.want {
            None => assert!(matches!(r, Reply::Granted(_)), "{}: {r:?}", c.name),
            Some((code, l)) => {
                let (got, got_line, _) = policy(&r);
                assert_eq!((got, got_line), (code, l), "{}: {r:?}", c.name);
            }
        }
    }
}

#[test]
fn a_denial_names_the_directive_and_its_line() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    loaded(&mut h, "# the site's policy\n\nRESERVE 2 cad USER ann\n");
    let cy = h.open(1, "cy", "ws1");
    h.grant(cy, "cad", 1);
    let r = h.checkout(cy, "cad", 1);
    let (code, l, directive) = policy(&r);
    assert_eq!(code, DenialCode::ReservedForOthers);
    assert_eq!(l, 3);
    assert_eq!(directive, "RESERVE 2 cad USER ann");
    // The denial is an event too (the usage history counts denials by reason).
    let last = h
        .log
        .last()
        .map(|(_, o)| o.events.clone())
        .unwrap_or_default();
    assert!(
        last.iter().any(|e| matches!(
            e,
            Event::Denied {
                reason: DenyReason::Policy { .. },
                ..
            }
        )),
        "{last:?}"
    );
    // The reserved user gets the seats.
    let ann = h.open(2, "ann", "ws2");
    h.grant(ann, "cad", 2);
}

#[test]
fn an_overbooking_load_is_refused_naming_its_lines_and_changes_nothing() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    loaded(&mut h, "EXCLUDE cad USER eve\n");
    let before = h.l.options().clone();
    let r = load(
        &mut h,
        "RESERVE 2 cad USER ann\nRESERVE 1 cad USER bob\nRESERVE 1 cad USER cy\n",
    );
    match r {
        Reply::OptionsRefused {
            feature,
            reserved,
            seats,
            lines,
        } => {
            assert_eq!(feature, "cad");
            assert_eq!((reserved, seats), (4, 3));
            assert_eq!(lines, vec![3]);
        }
        r => panic!("expected a refusal, got {r:?}"),
    }
    assert_eq!(h.l.options(), &before);
    let eve = h.open(1, "eve", "ws1");
    assert_eq!(
        policy(&h.checkout(eve, "cad", 1)).0,
        DenialCode::ExcludedByPolicy
    );
}

#[test]
fn a_new_file_replaces_the_old_and_clear_removes_it() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    loaded(&mut h, "EXCLUDE cad USER ann\n");
    let ann = h.open(1, "ann", "ws1");
    assert_eq!(policy(&h.checkout(ann, "cad", 1)).1, 1);
    loaded(&mut h, "EXCLUDE cad USER bob\n");
    h.grant(ann, "cad", 1);
    let bob = h.open(2, "bob", "ws2");
    assert_eq!(policy(&h.checkout(bob, "cad", 1)).1, 1);
    h.op(Op::ClearOptions);
    assert!(h.l.options().lines().is_empty());
    h.grant(bob, "cad", 1);
    // An empty file is the same as none.
    loaded(&mut h, "# nothing yet\n");
    h.grant(bob, "cad", 1);
}

#[test]
fn held_seats_survive_a_policy_change() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    let ann = h.open(1, "ann", "ws1");
    let g = h.grant(ann, "cad", 2);
    loaded(&mut h, "EXCLUDE cad USER ann\nMAX 0 cad USER ann\n");
    assert!(h.l.lease(g.lease).is_some());
    assert_eq!(h.in_use("cad"), 2);
    assert!(h.l.revocations(ann).is_empty());
    // Checking it in works; taking a new one does not.
    let out = h.checkin(ann, g.lease);
    assert!(matches!(out.reply, Reply::Released { .. }), "{out:?}");
    assert_eq!(
        policy(&h.checkout(ann, "cad", 2)).0,
        DenialCode::ExcludedByPolicy
    );
}

#[test]
fn an_excluded_user_cannot_take_back_a_lingering_seat() {
    let mut l = line("cad", "1.0", 2);
    l.linger_secs = 60;
    let mut h = H::new(vec![l]);
    let ann = h.open(1, "ann", "ws1");
    let g = h.grant(ann, "cad", 1);
    h.checkin(ann, g.lease);
    loaded(&mut h, "EXCLUDE cad USER ann\n");
    assert_eq!(
        policy(&h.checkout(ann, "cad", 1)).0,
        DenialCode::ExcludedByPolicy
    );
}

#[test]
fn linger_from_the_options_file_lengthens_never_shortens() {
    let mut l = line("cad", "1.0", 2);
    l.linger_secs = 10;
    let mut h = H::new(vec![l]);
    let ann = h.open(1, "ann", "ws1");
    loaded(&mut h, "LINGER cad 300\n");
    let g = h.grant(ann, "cad", 1);
    match h.checkin(ann, g.lease).reply {
        Reply::Released {
            lingering_until, ..
        } => assert_eq!(lingering_until, Some(h.now + 300_000)),
        r => panic!("{r:?}"),
    }
    loaded(&mut h, "LINGER cad 1\n");
    let g = h.grant(ann, "cad", 1);
    match h.checkin(ann, g.lease).reply {
        Reply::Released {
            lingering_until, ..
        } => assert_eq!(lingering_until, Some(h.now + 10_000)),
        r => panic!("{r:?}"),
    }
}

#[test]
fn max_overdraft_lowers_the_overdraft() {
    let mut l = line("cad", "1.0", 2);
    l.overdraft = 3;
    let mut h = H::new(vec![l]);
    loaded(&mut h, "MAX_OVERDRAFT cad 1\n");
    assert_eq!(h.l.licensed().get("cad"), Some(&(2, 1)));
    let ann = h.open(1, "ann", "ws1");
    h.grant(ann, "cad", 3);
    assert!(matches!(
        denied(&h.checkout(ann, "cad", 1)),
        DenyReason::NoSeats { available: 3, .. }
    ));
    // A cap above the vendor's changes nothing; clearing restores the vendor's.
    loaded(&mut h, "MAX_OVERDRAFT cad 9\n");
    assert_eq!(h.l.licensed().get("cad"), Some(&(2, 3)));
    h.op(Op::ClearOptions);
    h.grant(ann, "cad", 2);
}

#[test]
fn internet_targets_match_the_address_a_session_came_from() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    loaded(&mut h, "EXCLUDE cad INTERNET 10.1.*.*\n");
    let inside = open_from(&mut h, 1, "ann", "ws1", "10.1.2.3");
    let mapped = open_from(&mut h, 2, "bob", "ws2", "::ffff:10.1.9.9");
    let outside = open_from(&mut h, 3, "cy", "ws3", "192.168.0.7");
    let unknown = open_from(&mut h, 4, "dan", "ws4", "");
    assert_eq!(policy(&h.checkout(inside, "cad", 1)).1, 1);
    assert_eq!(policy(&h.checkout(mapped, "cad", 1)).1, 1);
    h.grant(outside, "cad", 1);
    h.grant(unknown, "cad", 1);
}

#[test]
fn project_targets_match_nobody_while_sessions_carry_no_project() {
    let mut h = H::new(vec![line("cad", "1.0", 3)]);
    loaded(&mut h, "EXCLUDE cad PROJECT apollo\n");
    let ann = h.open(1, "ann", "ws1");
    h.grant(ann, "cad", 1);
    loaded(&mut h, "INCLUDE cad PROJECT apollo\n");
    assert_eq!(
        policy(&h.checkout(ann, "cad", 1)).0,
        DenialCode::ExcludedByPolicy
    );
}

#[test]
fn a_waiter_held_back_by_a_reservation_waits_on() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let cy = h.open(1, "cy", "ws1");
    let g1 = h.grant(cy, "cad", 1);
    h.grant(cy, "cad", 1);
    loaded(&mut h, "RESERVE 1 cad USER ann\n");
    let dan = h.open(2, "dan", "ws2");
    let mut op = h.checkout_req(dan, "cad", "1.0", 1);
    if let Op::Checkout { wait_ms, .. } = &mut op {
        *wait_ms = Some(0);
    }
    let r = h.op(op).reply;
    assert!(matches!(r, Reply::Queued { .. }), "{r:?}");
    // One seat comes back, but it is ann's: dan's wait goes on, and a new checkout of
    // ann's is not held back by him.
    h.checkin(cy, g1.lease);
    assert!(!h.l.queue_due(h.now));
    let ann = h.open(3, "ann", "ws3");
    h.grant(ann, "cad", 1);
}

#[test]
fn a_snapshot_keeps_the_options_and_restores_the_caps() {
    let mut l = line("cad", "1.0", 2);
    l.overdraft = 3;
    let mut h = H::new(vec![l]);
    loaded(
        &mut h,
        "MAX_OVERDRAFT cad 0\nEXCLUDE cad USER eve\nTIMEOUTALL 3600\n",
    );
    let bytes = h.l.snapshot();
    let back = Ledger::restore(&bytes).expect("restores");
    assert!(back.same_state(&h.l));
    assert_eq!(back.options(), h.l.options());
    assert_eq!(back.licensed().get("cad"), Some(&(2, 0)));
    assert_eq!(back.idle_timeout_secs("cad"), Some(3600));
    assert_eq!(bytes, back.snapshot());
}

#[test]
fn timeouts_are_answered_for_the_keeper() {
    let mut h = H::new(vec![line("cad", "1.0", 2), line("cam", "1.0", 2)]);
    assert_eq!(h.l.idle_timeout_secs("cad"), None);
    loaded(&mut h, "TIMEOUT cad 1800\nTIMEOUTALL 7200\n");
    assert_eq!(h.l.idle_timeout_secs("cad"), Some(1800));
    assert_eq!(h.l.idle_timeout_secs("cam"), Some(7200));
    assert_eq!(h.now, T0);
}

#[test]
fn two_ledgers_applying_the_same_log_agree() {
    let mut h = H::new(vec![line("cad", "1.0", 4)]);
    loaded(
        &mut h,
        "GROUP eng ann bob\nRESERVE 2 cad GROUP eng\nMAX 1 cad USER cy\n",
    );
    let mut replay = Ledger::new();
    let cy = h.open(1, "cy", "ws1");
    h.grant(cy, "cad", 1);
    let _ = h.checkout(cy, "cad", 1);
    for (entry, out) in &h.log {
        assert_eq!(&replay.apply(entry), out);
    }
    assert!(replay.same_state(&h.l));
}

#[test]
fn a_lowered_overdraft_never_revokes_seats_held_in_it_later() {
    let mut l = line("cad", "1.0", 2);
    l.overdraft = 3;
    let mut h = H::new(vec![l.clone()]);
    let ann = h.open(1, "ann", "ws1");
    let g = h.grant(ann, "cad", 4);
    loaded(&mut h, "MAX_OVERDRAFT cad 0\n");
    // A later license load re-checks every pool against what it grants: the options
    // file's cap is not part of that test, so the seats held in overdraft stay.
    let r = h.op(Op::LoadLicense {
        source: "more.lic".into(),
        license: crate::license::LicenseFile {
            vendors: vec!["acme".into()],
            lines: vec![super::tests::incr("cam", "1.0", 1)],
        },
    });
    assert!(matches!(r.reply, Reply::LicenseLoaded { .. }), "{r:?}");
    assert!(h.l.lease(g.lease).is_some());
    assert!(h.l.revocations(ann).is_empty());
    assert_eq!(h.in_use("cad"), 4);
    // New seats are refused until use is back under the capped count.
    assert!(matches!(
        denied(&h.checkout(ann, "cad", 1)),
        DenyReason::NoSeats { available: 2, .. }
    ));
}
