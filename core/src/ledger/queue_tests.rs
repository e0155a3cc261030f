//! The checkout queue, one behaviour per test.

use super::tests::{denied, line, v, H, SECRET};
use super::*;

impl H {
    fn wait(
        &mut self,
        s: SessionId,
        feature: &str,
        count: u32,
        wait_ms: u64,
    ) -> (RequestId, Reply) {
        let Op::Checkout {
            req,
            auth,
            feature,
            version,
            count,
            ..
        } = self.checkout_req(s, feature, "1.0", count)
        else {
            unreachable!()
        };
        let op = Op::Checkout {
            req,
            auth,
            feature,
            version,
            count,
            wait_ms: Some(wait_ms),
        };
        (req, self.op(op).reply)
    }

    fn serve(&mut self) -> Outcome {
        self.op(Op::ServeQueue)
    }
}

fn place(r: &Reply) -> (u64, u32) {
    match r {
        Reply::Queued { place, position } => (*place, *position),
        r => panic!("expected a queue place, got {r:?}"),
    }
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let (a, b, c, d) = (
        h.open(1, "ann", "h1"),
        h.open(2, "bob", "h2"),
        h.open(3, "cy", "h3"),
        h.open(4, "di", "h4"),
    );
    let l1 = h.grant(a, "cad", 1).lease;
    let l2 = h.grant(a, "cad", 1).lease;
    let (rb, qb) = h.wait(b, "cad", 1, 0);
    let (rc, qc) = h.wait(c, "cad", 1, 0);
    assert_eq!(place(&qb).1, 1);
    assert_eq!(place(&qc).1, 2);
    assert!(matches!(
        denied(&h.checkout(d, "cad", 1)),
        DenyReason::NoSeats { .. }
    ));
    assert!(!h.l.queue_due(h.now), "no seat is free: nothing to serve");

    h.checkin(a, l1);
    assert!(h.l.queue_due(h.now));
    h.serve();
    let Some(Reply::Granted(g)) = h.l.reply_for(rb).cloned() else {
        panic!("bob was first: {:?}", h.l.reply_for(rb));
    };
    assert_eq!(
        g.lease, h.index,
        "a queue grant's lease is its ServeQueue entry"
    );
    assert_eq!(h.l.lease(g.lease).unwrap().session, b);
    assert_eq!(h.l.queue_position(place(&qc).0), Some(1));
    assert!(!h.l.queue_due(h.now));

    h.checkin(a, l2);
    h.serve();
    assert!(matches!(h.l.reply_for(rc), Some(Reply::Granted(_))));
    assert_eq!(h.l.waiters().count(), 0);
    assert_eq!(h.in_use("cad"), 2);
}

/// First come, first served among servable requests: a waiter that does not fit now
/// holds nobody back, and one that does goes before anyone who came later.
#[test]
fn seats_go_to_the_earliest_request_that_can_use_them() {
    let mut h = H::new(vec![line("cad", "1.0", 2)]);
    let (a, b, c, d, e) = (
        h.open(1, "ann", "h1"),
        h.open(2, "bob", "h2"),
        h.open(3, "cy", "h3"),
        h.open(4, "dan", "h4"),
        h.open(5, "eve", "h5"),
    );
    let la = h.grant(a, "cad", 1).lease;
    // One seat is free and bob needs two: he waits, and the free seat goes to cy, who
    // can use it (it used to stay empty while bob waited).
    let (rb, _) = h.wait(b, "cad", 2, 0);
    let lc = h.grant(c, "cad", 1).lease;
    h.checkin(a, la);
    let ld = h.grant(d, "cad", 1).lease;
    assert!(!h.l.queue_due(h.now), "bob still does not fit");
    // Two seats free at once: bob fits, and eve, who came later, waits behind him.
    h.checkin(c, lc);
    h.checkin(d, ld);
    assert!(h.l.queue_due(h.now));
    // Eve is told why: seats are free, but a request queued before hers goes first.
    assert_eq!(
        *denied(&h.checkout(e, "cad", 1)),
        DenyReason::QueuedAhead {
            requested: 1,
            in_use: 0,
            available: 2,
            waiting: 1
        }
    );
    h.serve();
    match h.l.reply_for(rb) {
        Some(Reply::Granted(g)) => assert_eq!(g.count, 2),
        r => panic!("bob should hold two seats: {r:?}"),
    }
}

#[test]
fn a_wait_that_could_never_be_served_is_refused_not_queued() {
    let mut l = line("cad", "1.0", 10);
    l.overdraft = 1;
    let mut h = H::new(vec![l]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    let (_, r) = h.wait(a, "cad", 12, 0);
    assert_eq!(
        denied(&r),
        &DenyReason::NoSeats {
            requested: 12,
            in_use: 0,
            available: 11
        }
    );
    assert_eq!(h.l.waiters().count(), 0);
    // And nobody else is held back by it.
    h.grant(b, "cad", 1);
}

#[test]
fn waits_are_bounded_per_session() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    h.grant(a, "cad", 1);
    for _ in 0..super::queue::WAITERS_PER_SESSION {
        let (_, r) = h.wait(b, "cad", 1, 0);
        assert!(matches!(r, Reply::Queued { .. }), "{r:?}");
    }
    let (_, r) = h.wait(b, "cad", 1, 0);
    assert_eq!(
        denied(&r),
        &DenyReason::QueueFull {
            limit: super::queue::WAITERS_PER_SESSION as u32,
            per_session: true
        }
    );
}

#[test]
fn an_admin_cancels_a_wait_or_closes_a_session() {
    let mut l = line("cad", "1.0", 1);
    l.linger_secs = 300;
    let mut h = H::new(vec![l]);
    let (a, b, c) = (
        h.open(1, "ann", "h1"),
        h.open(2, "bob", "h2"),
        h.open(3, "cy", "h3"),
    );
    let g = h.grant(a, "cad", 1);
    let (rb, qb) = h.wait(b, "cad", 1, 0);
    let (rc, _) = h.wait(c, "cad", 1, 0);
    let out = h.op(Op::CancelWait {
        place: place(&qb).0,
    });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert_eq!(
        h.l.reply_for(rb),
        Some(&Reply::Denied(DenyReason::WaitCancelled))
    );
    assert_eq!(
        h.op(Op::CancelWait {
            place: place(&qb).0
        })
        .reply,
        Reply::Done { affected: 0 }
    );
    // Ann's client hangs: the admin closes her session. Her seat is freed at once (no
    // linger, as with a removal), and cy, next in line, gets it.
    let out = h.op(Op::CloseSessionByAdmin { session: a });
    assert_eq!(out.reply, Reply::Done { affected: 1 });
    assert!(out.events.contains(&Event::Removed {
        feature: "cad".into(),
        lease: g.lease
    }));
    assert!(out.events.contains(&Event::SessionClosed { session: a }));
    assert!(h.l.session(a).is_none());
    h.serve();
    assert!(matches!(h.l.reply_for(rc), Some(Reply::Granted(_))));
}

#[test]
fn a_wait_ends_with_a_timeout_at_its_deadline_and_not_before() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    h.grant(a, "cad", 1);
    let (rb, q) = h.wait(b, "cad", 1, 5_000);
    h.now += 4_999;
    assert!(!h.l.queue_due(h.now));
    h.serve();
    assert!(matches!(h.l.reply_for(rb), Some(Reply::Queued { .. })));
    h.now += 1;
    assert!(h.l.queue_due(h.now));
    let out = h.serve();
    assert_eq!(
        h.l.reply_for(rb),
        Some(&Reply::Denied(DenyReason::QueueTimeout {
            waited_ms: 5_000
        }))
    );
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Dequeued { place, reason: DenyReason::QueueTimeout { .. }, .. } if *place == place_of(&q))));
    assert_eq!(h.l.waiters().count(), 0);
}

fn place_of(r: &Reply) -> u64 {
    place(r).0
}

#[test]
fn a_session_that_ends_leaves_the_queue() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    h.grant(a, "cad", 1);
    let (rb, _) = h.wait(b, "cad", 1, 0);
    let req = h.req(2);
    h.op(Op::CloseSession {
        req,
        auth: SessionAuth {
            session: b,
            secret: SECRET,
        },
    });
    assert_eq!(h.l.waiters().count(), 0);
    assert_eq!(
        h.l.reply_for(rb),
        Some(&Reply::Denied(DenyReason::UnknownSession))
    );
}

#[test]
fn a_retried_wait_answers_what_the_queue_decided_and_takes_nothing_more() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    let la = h.grant(a, "cad", 1).lease;
    let req = h.req(2);
    let op = Op::Checkout {
        req,
        auth: SessionAuth {
            session: b,
            secret: SECRET,
        },
        feature: "cad".into(),
        version: v("1.0"),
        count: 1,
        wait_ms: Some(0),
    };
    let first = h.op(op.clone()).reply;
    assert_eq!(
        h.op(op.clone()).reply,
        first,
        "still queued: the same place"
    );
    h.checkin(a, la);
    h.serve();
    let granted = h.op(op.clone()).reply;
    assert!(matches!(granted, Reply::Granted(_)), "{granted:?}");
    assert_eq!(h.op(op).reply, granted);
    assert_eq!(h.l.leases().count(), 1);
}

#[test]
fn the_owner_of_a_lingering_seat_takes_it_back_past_the_queue() {
    let mut cad = line("cad", "1.0", 1);
    cad.linger_secs = 60;
    let mut h = H::new(vec![cad]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    let la = h.grant(a, "cad", 1).lease;
    h.checkin(a, la);
    let (rb, _) = h.wait(b, "cad", 1, 0);
    // Her seat lingers for her: taking it back charges nothing new.
    assert!(h.grant(a, "cad", 1).reused);
    assert!(!h.l.queue_due(h.now));
    assert!(matches!(h.l.reply_for(rb), Some(Reply::Queued { .. })));
}

#[test]
fn an_unloaded_feature_answers_its_waiters() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b) = (h.open(1, "ann", "h1"), h.open(2, "bob", "h2"));
    h.grant(a, "cad", 1);
    let (rb, _) = h.wait(b, "cad", 1, 0);
    h.op(Op::UnloadLicense {
        source: "site.lic".into(),
    });
    assert!(h.l.queue_due(h.now));
    h.serve();
    assert_eq!(
        h.l.reply_for(rb),
        Some(&Reply::Denied(DenyReason::UnknownFeature))
    );
}

#[test]
fn a_snapshot_keeps_the_queue_and_its_order() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    let (a, b, c) = (
        h.open(1, "ann", "h1"),
        h.open(2, "bob", "h2"),
        h.open(3, "cy", "h3"),
    );
    let la = h.grant(a, "cad", 1).lease;
    let (_, qb) = h.wait(b, "cad", 1, 10_000);
    let (_, qc) = h.wait(c, "cad", 1, 0);
    let restored = Ledger::restore(&h.l.snapshot()).unwrap();
    assert!(restored.same_state(&h.l));
    assert_eq!(restored.queue_position(place_of(&qc)), Some(2));
    assert_eq!(restored.snapshot(), h.l.snapshot());
    // Both go on identically.
    let mut twin = h.clone_for_test();
    twin.l = restored;
    for x in [&mut h, &mut twin] {
        x.checkin(a, la);
        x.serve();
    }
    assert_eq!(h.l.snapshot(), twin.l.snapshot());
    assert_eq!(h.l.queue_position(place_of(&qb)), None, "bob was served");
}

/// A client's window full of queued checkouts, then a request numbered u64::MAX: the
/// window forgets that answer and moves its floor past it. That used to be `seq + 1`,
/// which overflows (a panic on every node in a debug build, on the same committed
/// entry, again at every replay).
#[test]
fn a_request_numbered_u64_max_after_a_full_window_of_waiters_is_safe() {
    let mut h = H::new(vec![line("cad", "1.0", 1)]);
    // The session's own client id (a session's requests must carry it), with numbers
    // past those its open and grant used.
    let s = h.open(0xAB, "ann", "ws1");
    h.grant(s, "cad", 1);
    let client = [0xAB; 16];
    let auth = SessionAuth {
        session: s,
        secret: SECRET,
    };
    for seq in 100..100 + REPLY_WINDOW as u64 {
        let r = h.op(Op::Checkout {
            req: RequestId { client, seq },
            auth,
            feature: "cad".into(),
            version: v("1.0"),
            count: 1,
            wait_ms: Some(0),
        });
        assert!(matches!(r.reply, Reply::Queued { .. }), "{r:?}");
    }
    let last = RequestId {
        client,
        seq: u64::MAX,
    };
    let r = h.op(Op::Checkin {
        req: last,
        auth,
        lease: 424_242,
    });
    assert_eq!(r.reply, Reply::Denied(DenyReason::UnknownLease));
    // Its answer was the one forgotten, and no number lies above it to mark it stale: a
    // retry runs again, to the same refusal, changing nothing.
    let again = h.op(Op::Checkin {
        req: last,
        auth,
        lease: 424_242,
    });
    assert_eq!(again.reply, Reply::Denied(DenyReason::UnknownLease));
    assert_eq!(h.l.waiters().count(), REPLY_WINDOW);
    assert_eq!(h.l.leases().len(), 1);
}
