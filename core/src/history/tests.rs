//! The history as a site reads it: records of a ledger driven as the Raft shell drives
//! it, the under-licensing alert, a recorder restarted from a snapshot, and the reports.

use std::collections::BTreeMap;

use super::report::{self, Source, Step};
use super::{Record, Recorder, What};
use crate::ledger::tests::{line, H, SECRET, T0};
use crate::ledger::{Op, Outcome, ReleaseCause, Reply, SessionAuth, SessionId};
use crate::license::{FeatureLine, Metering, Zone};
use crate::usage::{MeterTerms, Span};

/// A ledger with a recorder beside it, as every node runs them: every entry the driver
/// applies is recorded, in order.
struct Hist {
    h: H,
    rec: Recorder,
    records: Vec<Record>,
    done: usize,
}

impl Hist {
    fn new(lines: Vec<FeatureLine>) -> Hist {
        let mut t = Hist {
            h: H::new(lines),
            rec: Recorder::default(),
            records: Vec::new(),
            done: 0,
        };
        t.sync();
        t
    }

    /// Records the entries applied since the last call.
    fn sync(&mut self) {
        while let Some((e, out)) = self.h.log.get(self.done) {
            let mut r = self.rec.record(e.index, e.at_ms, None, &out.events);
            self.rec.after(&self.h.l, &mut r);
            self.records.extend(r);
            self.done += 1;
        }
    }

    fn op(&mut self, op: Op) -> Outcome {
        let out = self.h.op(op);
        self.sync();
        out
    }

    fn open(&mut self, client: u8, user: &str) -> SessionId {
        let s = self.h.open(client, user, "ws");
        self.sync();
        s
    }

    fn checkout(&mut self, s: SessionId, feature: &str, count: u32) -> Reply {
        let op = self.h.checkout_req(s, feature, "1.0", count);
        self.op(op).reply
    }

    fn auth(s: SessionId) -> SessionAuth {
        SessionAuth {
            session: s,
            secret: SECRET,
        }
    }

    fn checkin(&mut self, s: SessionId, lease: u64) {
        let req = self.h.req_of(s, 0xC1);
        let auth = Hist::auth(s);
        self.op(Op::Checkin { req, auth, lease });
    }

    fn close(&mut self, s: SessionId) {
        let req = self.h.req_of(s, 0xC2);
        let auth = Hist::auth(s);
        self.op(Op::CloseSession { req, auth });
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.records.iter().map(|r| r.what.kind()).collect()
    }

    /// Moves ledger time by a tick a second, as a live leader does.
    fn tick_to(&mut self, t: u64) {
        while self.h.now + 1_000 < t {
            self.h.now += 1_000;
            self.op(Op::Tick);
        }
        self.h.now = t;
    }
}

fn overdrawn(name: &str, seats: u32, overdraft: u32, linger_secs: u32) -> FeatureLine {
    let mut l = line(name, "1.0", seats);
    l.overdraft = overdraft;
    l.linger_secs = linger_secs;
    l
}

#[test]
fn a_seat_is_recorded_from_grant_to_reclaim_naming_its_holder() {
    let mut t = Hist::new(vec![overdrawn("cad", 1, 0, 10)]);
    let s = t.open(1, "ann");
    let g = match t.checkout(s, "cad", 1) {
        Reply::Granted(g) => g,
        r => panic!("{r:?}"),
    };
    let granted_at = t.h.now;
    t.h.now += 5_000;
    t.checkin(s, g.lease);
    t.tick_to(t.h.now + 10_000);
    t.op(Op::ReclaimSeats {
        seats: vec![g.seat],
    });
    assert_eq!(
        t.kinds(),
        ["license_loaded", "licensed", "grant", "checkin", "reclaim"]
    );
    let r = &t.records[2..];
    assert_eq!((r[0].user.as_str(), r[0].host.as_str()), ("ann", "ws"));
    assert_eq!((r[1].user.as_str(), r[1].host.as_str()), ("ann", "ws"));
    assert!(matches!(
        r[1].what,
        What::Released {
            cause: ReleaseCause::Checkin,
            ..
        }
    ));
    // The span runs from the grant through the linger: the pool counted it all along.
    assert_eq!(
        r[2].what,
        What::Reclaimed {
            seat: g.seat,
            count: 1,
            charged_ms: granted_at
        }
    );
    assert_eq!(r[2].at_ms, granted_at + 15_000);
}

#[test]
fn the_under_licensing_alert_is_said_once_and_again_after_use_came_back() {
    let mut t = Hist::new(vec![overdrawn("cad", 1, 2, 0)]);
    let (a, b, c) = (t.open(1, "ann"), t.open(2, "bob"), t.open(3, "cyd"));
    t.checkout(a, "cad", 1);
    assert!(!t.kinds().contains(&"short"), "within the count");
    t.checkout(b, "cad", 1);
    let short: Vec<&Record> = t
        .records
        .iter()
        .filter(|r| r.what.kind() == "short")
        .collect();
    assert_eq!(short.len(), 1, "{:?}", t.kinds());
    assert_eq!(
        short[0].what,
        What::Short {
            in_use: 2,
            licensed: 1
        }
    );
    assert_eq!(
        short[0].index, t.h.index,
        "raised by the entry that went over"
    );
    t.checkout(c, "cad", 1);
    let n = |t: &Hist| t.kinds().iter().filter(|k| **k == "short").count();
    assert_eq!(n(&t), 1, "still short: not said again");
    assert_eq!(t.rec.short_features().collect::<Vec<_>>(), ["cad"]);
    // Everyone but Ann leaves: back within the count, so the next overuse is news.
    t.close(b);
    t.close(c);
    assert_eq!(t.rec.short_features().count(), 0);
    let d = t.open(4, "dan");
    t.checkout(d, "cad", 1);
    assert_eq!(n(&t), 2);
}

#[test]
fn a_recorder_started_from_a_snapshot_records_what_the_first_one_does() {
    let mut t = Hist::new(vec![overdrawn("cad", 2, 1, 30)]);
    let a = t.open(1, "ann");
    let b = t.open(2, "bob");
    t.checkout(a, "cad", 1);
    t.checkout(b, "cad", 1);
    // A node rebuilt from a snapshot taken here starts its recorder from that ledger.
    let mut ledger = crate::ledger::Ledger::restore(&t.h.l.snapshot()).unwrap();
    let mut rec = Recorder::of(&ledger);
    let (from_entry, from_record) = (t.h.log.len(), t.records.len());
    t.checkout(a, "cad", 1); // over the count: the alert
    t.h.now += 2_000;
    t.close(b); // Bob's seat lingers, named as his
    t.tick_to(t.h.now + 31_000);
    let due = t.h.l.due_seats(t.h.now, 10);
    t.op(Op::ReclaimSeats { seats: due });
    let mut replayed = Vec::new();
    for (e, _) in &t.h.log[from_entry..] {
        let out = ledger.apply(e);
        let mut r = rec.record(e.index, e.at_ms, None, &out.events);
        rec.after(&ledger, &mut r);
        replayed.extend(r);
    }
    assert_eq!(replayed, t.records[from_record..].to_vec());
    let kinds: Vec<&str> = replayed.iter().map(|r| r.what.kind()).collect();
    assert_eq!(kinds, ["grant", "short", "checkin", "reclaim"]);
    assert_eq!(replayed[2].user, "bob");
}

/// What the server hands the reports beside the records: the seats counted now and the
/// named users (from the ledger) and the licensed steps (the `Licensed` records, which
/// it keeps apart).
struct Parts {
    open: Vec<(String, Span)>,
    steps: Vec<Step>,
    assigned: BTreeMap<String, u64>,
    now_ms: u64,
}

impl Parts {
    fn source<'a>(&'a self, t: &'a Hist) -> Source<'a> {
        Source {
            records: &t.records,
            open: &self.open,
            licensed: &self.steps,
            assigned_now: &self.assigned,
            now_ms: self.now_ms,
        }
    }
}

fn source_parts(t: &Hist) -> Parts {
    let open =
        t.h.l
            .seats()
            .map(|(_, s)| {
                let span = Span {
                    start_ms: s.charged_ms,
                    end_ms: None,
                    count: s.count,
                };
                (s.feature.clone(), span)
            })
            .collect();
    let steps = t
        .records
        .iter()
        .filter_map(|r| match r.what {
            What::Licensed {
                issued,
                overdraft_limit,
            } => Some(Step {
                feature: r.feature.clone(),
                at_ms: r.at_ms,
                issued,
                overdraft_limit,
            }),
            _ => None,
        })
        .collect();
    let assigned =
        t.h.l
            .named_features()
            .map(|f| (f.to_owned(), t.h.l.assigned_count(f)))
            .collect();
    Parts {
        open,
        steps,
        assigned,
        now_ms: t.h.now,
    }
}

#[test]
fn the_licensed_count_is_recorded_when_a_license_loads() {
    let t = Hist::new(vec![overdrawn("cad", 3, 2, 0)]);
    assert_eq!(
        source_parts(&t).steps,
        [Step {
            feature: "cad".into(),
            at_ms: T0,
            issued: 3,
            overdraft_limit: 2
        }]
    );
}

/// The end-to-end scenario of issue 16, through the ledger: count 1 with an overdraft of
/// 2, metered every 2 s with a 2 s minimum. Two seats held for 6 s are over the count
/// in the intervals after the first 2 s; a third checkout of 1 s is not recorded.
#[test]
fn two_seats_for_six_seconds_are_metered_and_a_one_second_checkout_is_not() {
    let mut l = overdrawn("cad", 1, 2, 0);
    l.meter = Metering {
        interval_secs: 2,
        min_secs: 2,
        overuse_days: 4,
    };
    let mut t = Hist::new(vec![l.clone()]);
    // Start on an interval boundary, so the expected intervals read plainly.
    let start = (T0 / 2_000 + 1) * 2_000;
    t.tick_to(start);
    let (a, b, c) = (t.open(1, "ann"), t.open(2, "bob"), t.open(3, "cyd"));
    let ga = t.checkout(a, "cad", 1);
    let gb = t.checkout(b, "cad", 1);
    t.tick_to(start + 2_000);
    let gc = t.checkout(c, "cad", 1);
    t.tick_to(start + 3_000);
    let lease = |r: &Reply| match r {
        Reply::Granted(g) => g.lease,
        r => panic!("{r:?}"),
    };
    t.checkin(c, lease(&gc));
    t.tick_to(start + 6_000);
    t.checkin(a, lease(&ga));
    t.checkin(b, lease(&gb));
    t.tick_to(start + 10_000);
    t.op(Op::Tick);
    let parts = source_parts(&t);
    assert!(parts.open.is_empty(), "every seat went back (no linger)");
    let src = parts.source(&t);
    let terms = MeterTerms::from_line(&l);
    let rep = report::overuse(&src, "cad", terms, Zone::default(), start, start + 10_000);
    assert_eq!(rep.licensed, 1);
    // Recorded from 2 s after their start: [2 s, 6 s) is two intervals of two seats.
    // Cyd's 1 s (from 2 s to 3 s) is under the minimum: not counted.
    let got: Vec<(u64, u64, u64)> = rep
        .intervals
        .iter()
        .map(|i| (i.start_ms - start, i.counted, i.over))
        .collect();
    assert_eq!(got, [(2_000, 2, 1), (4_000, 2, 1)]);
    assert_eq!(rep.overuse_days.len(), 1);

    // Use per interval: the peak counts every seat, Cyd's too (use, not metering).
    let rows = report::usage(&src, &["cad".into()], start, start + 10_000, 2_000).unwrap();
    let peaks: Vec<(u64, u64, u64)> = rows
        .iter()
        .map(|r| (r.peak, r.licensed, r.overdraft_used))
        .collect();
    assert_eq!(
        peaks,
        [(2, 1, 1), (3, 1, 2), (2, 1, 1), (0, 1, 0), (0, 1, 0)]
    );
    // The true-up's peak is the three seats at once.
    let tu = report::trueup(
        &src,
        &["cad".into()],
        Zone::default(),
        start,
        start + 10_000,
    );
    assert_eq!(tu.len(), 1);
    assert_eq!((tu[0].peak, tu[0].licensed, tu[0].short), (3, 1, 2));
}

#[test]
fn denials_and_waits_are_counted_in_their_interval_and_listed() {
    let mut t = Hist::new(vec![overdrawn("cad", 1, 0, 0)]);
    let start = (T0 / 60_000 + 1) * 60_000;
    t.tick_to(start);
    let (a, b) = (t.open(1, "ann"), t.open(2, "bob"));
    t.checkout(a, "cad", 1);
    t.tick_to(start + 61_000);
    assert!(matches!(t.checkout(b, "cad", 1), Reply::Denied(_)));
    let parts = source_parts(&t);
    let src = parts.source(&t);
    let rows = report::usage(&src, &["cad".into()], start, start + 120_000, 60_000).unwrap();
    let got: Vec<(u64, u64)> = rows.iter().map(|r| (r.peak, r.denials)).collect();
    assert_eq!(got, [(1, 0), (1, 1)], "the open seat counts up to now");
    let d = report::denials(&src, Some("cad"), start, start + 120_000);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].user, "bob");
    assert!(report::denials(&src, Some("other"), start, start + 120_000).is_empty());
}

#[test]
fn a_usage_report_refuses_windows_it_cannot_give() {
    let t = Hist::new(vec![overdrawn("cad", 1, 0, 0)]);
    let parts = source_parts(&t);
    let src = parts.source(&t);
    let f = ["cad".to_owned()];
    use report::ReportError as E;
    assert!(matches!(
        report::usage(&src, &f, 10, 10, 1),
        Err(E::EmptyWindow { .. })
    ));
    assert!(matches!(
        report::usage(&src, &f, 0, 10, 0),
        Err(E::ZeroInterval)
    ));
    assert!(matches!(
        report::usage(&src, &f, 0, u64::MAX / 2, 1_000),
        Err(E::TooLong { .. })
    ));
}

#[test]
fn a_named_user_true_up_counts_assignments_not_checkouts() {
    use crate::license::LicenseModel;
    let mut l = line("sim", "1.0", 2);
    l.model = LicenseModel::NamedUser { fair_use_days: 30 };
    let mut t = Hist::new(vec![l]);
    let users = |v: &[&str]| v.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
    t.op(Op::AssignUsers {
        feature: "sim".into(),
        users: users(&["ann", "bob"]),
    });
    t.h.now += 1_000;
    t.op(Op::AssignUsers {
        feature: "sim".into(),
        users: users(&["cyd"]),
    });
    t.h.now += 1_000;
    t.op(Op::UnassignUsers {
        feature: "sim".into(),
        users: users(&["ann", "cyd"]),
    });
    t.h.now += 1_000;
    t.op(Op::Tick);
    assert!(t.kinds().contains(&"short"), "three assigned to two seats");
    let parts = source_parts(&t);
    let src = parts.source(&t);
    let tu = report::trueup(&src, &["sim".into()], Zone::default(), T0, t.h.now);
    assert_eq!(tu.len(), 1);
    assert_eq!((tu[0].peak, tu[0].licensed, tu[0].short), (3, 2, 1));
}

#[test]
fn an_options_file_taking_effect_is_recorded_and_a_policy_denial_names_its_line() {
    let mut t = Hist::new(vec![overdrawn("cad", 2, 0, 0)]);
    let options = crate::options::parse("# site policy\nEXCLUDE cad USER bob\n").unwrap();
    t.op(Op::LoadOptions { options });
    let s = t.open(2, "bob");
    assert!(matches!(t.checkout(s, "cad", 1), Reply::Denied(_)));
    let tail: Vec<&Record> = t.records.iter().rev().take(2).collect();
    assert_eq!(tail[1].what, What::OptionsLoaded { directives: 1 });
    match &tail[0].what {
        What::Denied {
            reason: crate::ledger::DenyReason::Policy { line, .. },
        } => assert_eq!(*line, 2),
        w => panic!("{w:?}"),
    }
    assert_eq!(tail[0].user, "bob");
}
