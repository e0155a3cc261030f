//! The metering rules, one table per rule, each with the rule it reproduces quoted.

use super::*;

pub(super) const MIN: u64 = 60_000;
pub(super) const HOUR: u64 = 60 * MIN;

/// The cluster's calendar in these tests: UTC.
pub(super) fn utc(ms: u64) -> Date {
    Date::of_ms(ms)
}

/// `y-m-d h:min` UTC.
pub(super) fn at(y: i32, m: u32, d: u32, h: u64, min: u64) -> u64 {
    Date::from_ymd(y, m, d).unwrap().start_ms() + h * HOUR + min * MIN
}

fn day(y: i32, m: u32, d: u32) -> (u64, u64) {
    let start = Date::from_ymd(y, m, d).unwrap().start_ms();
    (start, start + 24 * HOUR)
}

pub(super) fn span(start_ms: u64, end_ms: u64) -> Span {
    Span {
        start_ms,
        end_ms: Some(end_ms),
        count: 1,
    }
}

/// Before Q2 2016: 1-hour intervals, every checkout recorded.
fn old_rules() -> MeterTerms {
    MeterTerms {
        interval_ms: HOUR,
        min_ms: 0,
        overuse_days_per_quarter: 4,
    }
}

/// Since Q2 2016 (the defaults): 10-minute intervals, 10-minute minimum.
fn rules_2016() -> MeterTerms {
    MeterTerms::default()
}

fn interval(start_ms: u64, len: u64, counted: u64, over: u64) -> Interval {
    Interval {
        start_ms,
        end_ms: start_ms + len,
        counted,
        over,
    }
}

fn quarter(q: &str, days: u32, allowance: u32) -> Quarter {
    Quarter {
        quarter: q.into(),
        overuse_days: days,
        allowance,
        billable_days: days.saturating_sub(allowance),
    }
}

/// One feature's overuse over a whole UTC day.
fn on_day(spans: &[Span], licensed: &[(u64, u64)], terms: MeterTerms, d: (u64, u64)) -> Overuse {
    overuse(spans, licensed, terms, &utc, d.0, d.1, d.1)
}

#[test]
fn two_colleagues_one_after_the_other_on_one_license() {
    // Old rules: "two people who used one MicroStation license one after the other for
    // two minutes each in the same hour were counted as two licenses for that whole
    // hour". 2016 rules: "a checkout shorter than 10 minutes is not recorded at all".
    let one = [(0, 1)];
    let d = day(2026, 12, 2);
    let spans = [
        span(at(2026, 12, 2, 10, 5), at(2026, 12, 2, 10, 7)),
        span(at(2026, 12, 2, 10, 30), at(2026, 12, 2, 10, 32)),
    ];
    let old = on_day(&spans, &one, old_rules(), d);
    assert_eq!(
        old.intervals,
        [interval(at(2026, 12, 2, 10, 0), HOUR, 2, 1)]
    );
    assert_eq!(old.overuse_days, ["2026-12-02"]);
    assert_eq!(old.quarters, [quarter("2026-Q4", 1, 4)]);
    assert_eq!(old.licensed, 1);

    let new = on_day(&spans, &one, rules_2016(), d);
    assert_eq!(new.intervals, []);
    assert!(new.overuse_days.is_empty());
    assert_eq!(new.quarters, [quarter("2026-Q4", 0, 4)]);

    // They never used it at the same instant: the true-up sees one seat.
    let t = trueup(&spans, &one, &utc, d.0, d.1, d.1);
    assert_eq!(
        t.iter().map(|m| (m.peak, m.short)).collect::<Vec<_>>(),
        [(1, 0)]
    );
}

#[test]
fn office_then_home_is_not_counted_twice() {
    // "A new checkout is recorded only after 10 minutes of use, so someone who stops at
    // 15:01 on one PC and starts at 15:59 at home is not counted twice." One license.
    let one = [(0, 1)];
    let d = day(2026, 12, 2);
    let office = span(at(2026, 12, 2, 8, 0), at(2026, 12, 2, 15, 1));
    let home = |h, m| span(at(2026, 12, 2, h, m), at(2026, 12, 2, 18, 30));
    for (home_start, old_hour) in [((15, 59), 15), ((15, 5), 15)] {
        let spans = [office, home(home_start.0, home_start.1)];
        let new = on_day(&spans, &one, rules_2016(), d);
        assert_eq!(new.intervals, [], "home from {home_start:?}");
        // The old rules count both in the 15:00 hour: two seats, one licensed.
        let old = on_day(&spans, &one, old_rules(), d);
        assert_eq!(
            old.intervals,
            [interval(at(2026, 12, 2, old_hour, 0), HOUR, 2, 1)],
            "home from {home_start:?}"
        );
    }
    // 15:05 is the case that decides when a recorded span starts to count: counted from
    // its start, the home checkout would share 15:00-15:10 with the office one and be
    // counted twice; counted from 10 minutes in (15:15), it is not.
}

#[test]
fn use_beyond_the_count_is_metered_in_intervals_from_ten_minutes_in() {
    // "Use beyond the licensed count is metered in 10-minute intervals ... a checkout
    // shorter than 10 minutes is not recorded at all."
    let one = [(0, 1)];
    let d = day(2026, 12, 2);
    let office = span(at(2026, 12, 2, 8, 0), at(2026, 12, 2, 17, 0));
    let colleague = |from: u64, to: u64| Span {
        start_ms: from,
        end_ms: Some(to),
        count: 1,
    };
    let t14 = at(2026, 12, 2, 14, 0);
    for (name, end, expected) in [
        (
            "half an hour: counted from 14:10",
            t14 + 30 * MIN,
            vec![14 * 60 + 10, 14 * 60 + 20],
        ),
        (
            "just under 10 minutes: not recorded",
            t14 + 10 * MIN - 1,
            vec![],
        ),
        // Recorded the moment it ends: it counts in the interval of that moment.
        (
            "exactly 10 minutes: recorded",
            t14 + 10 * MIN,
            vec![14 * 60 + 10],
        ),
        (
            "till 14:20 sharp: not in 14:20-14:30",
            t14 + 20 * MIN,
            vec![14 * 60 + 10],
        ),
    ] {
        let r = on_day(&[office, colleague(t14, end)], &one, rules_2016(), d);
        let starts: Vec<u64> = r
            .intervals
            .iter()
            .map(|i| (i.start_ms - d.0) / MIN)
            .collect();
        assert_eq!(starts, expected, "{name}");
        assert!(
            r.intervals.iter().all(|i| (i.counted, i.over) == (2, 1)),
            "{name}"
        );
    }
    // A checkout of 3 seats counts 3.
    let three = Span {
        count: 3,
        ..colleague(t14, t14 + 25 * MIN)
    };
    let r = on_day(&[office, three], &one, rules_2016(), d);
    assert_eq!(r.intervals[0], interval(t14 + 10 * MIN, 10 * MIN, 4, 3));
}

/// Two users on one license from 10:00 to 11:00 on each of `days`: an overuse day each.
fn overuse_on(days: &[(i32, u32, u32)], terms: MeterTerms) -> Overuse {
    let spans: Vec<Span> = days
        .iter()
        .flat_map(|&(y, m, d)| [span(at(y, m, d, 10, 0), at(y, m, d, 11, 0)); 2])
        .collect();
    let (from, to) = (at(2026, 7, 1, 0, 0), at(2027, 1, 1, 0, 0));
    overuse(&spans, &[(0, 1)], terms, &utc, from, to, to)
}

#[test]
fn a_quarter_bills_the_overuse_days_beyond_four() {
    // "A day with any over-count interval is an overuse day; a quarter with more than 4
    // overuse days is billed (5 overuse days in a quarter -> 1 billable day)."
    let dec = |d| (2026, 12, d);
    let five = overuse_on(&[dec(1), dec(2), dec(3), dec(7), dec(8)], rules_2016());
    assert_eq!(
        five.quarters,
        [quarter("2026-Q3", 0, 4), quarter("2026-Q4", 5, 4)]
    );
    assert_eq!(five.quarters[1].billable_days, 1);
    assert_eq!(five.overuse_days[0], "2026-12-01");
    // 10:10 to 11:00 each day: five intervals a day.
    assert_eq!(five.intervals.len(), 25);

    let four = overuse_on(&[dec(1), dec(2), dec(3), dec(7)], rules_2016());
    assert_eq!(four.quarters[1], quarter("2026-Q4", 4, 4));
    assert_eq!(four.quarters[1].billable_days, 0);

    // Six days over two quarters are three in each: nothing billed, where six in one
    // quarter would bill two.
    let spread = [
        (2026, 9, 28),
        (2026, 9, 29),
        (2026, 9, 30),
        dec(1),
        dec(2),
        dec(3),
    ];
    let r = overuse_on(&spread, rules_2016());
    assert_eq!(r.overuse_days.len(), 6);
    assert_eq!(
        r.quarters,
        [quarter("2026-Q3", 3, 4), quarter("2026-Q4", 3, 4)]
    );
    assert!(r.quarters.iter().all(|q| q.billable_days == 0));

    // Several intervals on one day make one overuse day; OVERUSE_DAYS=0 bills each day.
    let strict = MeterTerms {
        overuse_days_per_quarter: 0,
        ..rules_2016()
    };
    let r = overuse_on(&[dec(1), dec(1), dec(2)], strict);
    assert_eq!(r.overuse_days, ["2026-12-01", "2026-12-02"]);
    assert_eq!(r.quarters[1], quarter("2026-Q4", 2, 0));
    assert_eq!(r.quarters[1].billable_days, 2);
}

#[test]
fn overuse_days_are_local_days() {
    // The caller's calendar decides the day: 23:30 UTC on 31 December is 00:30 on
    // 1 January in UTC+1, a day (and quarter) of the next year.
    let plus_one = |ms: u64| Date::of_ms(ms + HOUR);
    let (a, b) = (at(2026, 12, 31, 23, 10), at(2026, 12, 31, 23, 50));
    let spans = [span(a, b), span(a, b)];
    let (from, to) = (at(2026, 12, 31, 23, 0), at(2027, 1, 1, 23, 0));
    let r = overuse(&spans, &[(0, 1)], rules_2016(), &plus_one, from, to, to);
    assert_eq!(r.overuse_days, ["2027-01-01"]);
    assert_eq!(r.quarters, [quarter("2027-Q1", 1, 4)]);
    let r = overuse(&spans, &[(0, 1)], rules_2016(), &utc, from, to, to);
    assert_eq!(r.overuse_days, ["2026-12-31"]);
    assert_eq!(
        r.quarters,
        [quarter("2026-Q4", 1, 4), quarter("2027-Q1", 0, 4)]
    );
}

#[test]
fn trueup_compares_each_months_peak_with_the_count() {
    // True-up: "per product and month, the peak use against the licensed count;
    // short = max(0, peak - licensed)". Three seats licensed.
    let three = [(at(2026, 11, 1, 0, 0), 3)];
    let mut spans = Vec::new();
    // November: five at once for an hour (and a sixth that starts the instant one of
    // them returns its seat, which makes no sixth seat in use).
    for i in 0..5 {
        spans.push(span(at(2026, 11, 10, 10, i), at(2026, 11, 10, 11, 0)));
    }
    spans.push(span(at(2026, 11, 10, 11, 0), at(2026, 11, 10, 12, 0)));
    // December: three at once, and a one-second checkout elsewhere: a true-up counts
    // every copy in use, however short.
    for i in 0..3 {
        spans.push(span(at(2026, 12, 3, 9, i), at(2026, 12, 3, 17, 0)));
    }
    spans.push(span(at(2026, 12, 20, 9, 0), at(2026, 12, 20, 9, 0) + 1000));
    let (from, to) = (at(2026, 11, 1, 0, 0), at(2027, 1, 1, 0, 0));
    let t = trueup(&spans, &three, &utc, from, to, to);
    assert_eq!(
        t,
        [
            TrueUp {
                month: "2026-11".into(),
                peak: 5,
                licensed: 3,
                short: 2
            },
            TrueUp {
                month: "2026-12".into(),
                peak: 3,
                licensed: 3,
                short: 0
            },
        ]
    );
    // A month without use is still reported, with a peak of 0.
    let t = trueup(&spans, &three, &utc, from, at(2027, 2, 1, 0, 0), to);
    assert_eq!(
        (t[2].month.as_str(), t[2].peak, t[2].short),
        ("2027-01", 0, 0)
    );
}

#[test]
fn a_span_still_open_counts_up_to_now() {
    let one = [(0, 1)];
    let d = day(2026, 12, 2);
    let closed = span(at(2026, 12, 2, 9, 0), at(2026, 12, 2, 12, 0));
    let open = Span {
        start_ms: at(2026, 12, 2, 10, 0),
        end_ms: None,
        count: 1,
    };
    let now = at(2026, 12, 2, 10, 25);
    let r = overuse(&[closed, open], &one, rules_2016(), &utc, d.0, d.1, now);
    assert_eq!(
        r.intervals,
        [
            interval(at(2026, 12, 2, 10, 10), 10 * MIN, 2, 1),
            interval(at(2026, 12, 2, 10, 20), 10 * MIN, 2, 1),
        ]
    );
    // Nine minutes in, it is not recorded yet; the true-up counts it all the same.
    let now = at(2026, 12, 2, 10, 9);
    let r = overuse(&[closed, open], &one, rules_2016(), &utc, d.0, d.1, now);
    assert_eq!(r.intervals, []);
    let t = trueup(&[closed, open], &one, &utc, d.0, d.1, now);
    assert_eq!((t[0].peak, t[0].short), (2, 1));
    // Once now is past, the open span does not reach beyond it.
    let t = trueup(&[open, open], &one, &utc, now, d.1, now);
    assert_eq!(t[0].peak, 0);
}

#[test]
fn a_licensed_count_that_changes_mid_window() {
    // One seat until 12:05, two from then on; two users 11:00-13:00.
    let noon_5 = at(2026, 12, 2, 12, 5);
    let licensed = [(0, 1), (noon_5, 2)];
    let d = day(2026, 12, 2);
    let both = [span(at(2026, 12, 2, 11, 0), at(2026, 12, 2, 13, 0)); 2];
    let r = on_day(&both, &licensed, rules_2016(), d);
    // 11:10 to 12:10: the 12:00 interval is measured by the count at its start.
    let starts: Vec<u64> = r
        .intervals
        .iter()
        .map(|i| (i.start_ms - d.0) / MIN)
        .collect();
    assert_eq!(starts, [670, 680, 690, 700, 710, 720]);
    assert!(r.intervals.iter().all(|i| (i.counted, i.over) == (2, 1)));
    assert_eq!(r.licensed, 2, "the count at the window's end");
    let r = overuse(&both, &licensed, rules_2016(), &utc, d.0, noon_5, d.1);
    assert_eq!(r.licensed, 1);

    // The peak of 2 was reached under one seat and under two: the lower count counts.
    let t = trueup(&both, &licensed, &utc, d.0, d.1, d.1);
    assert_eq!((t[0].peak, t[0].licensed, t[0].short), (2, 1, 1));
    // Seats bought before the peak: never short, though the month began with one.
    let bought = [(0, 1), (at(2026, 12, 2, 10, 0), 3)];
    let t = trueup(&both, &bought, &utc, d.0, d.1, d.1);
    assert_eq!((t[0].peak, t[0].licensed, t[0].short), (2, 3, 0));
    // Steps given out of order mean the same.
    let r = on_day(&both, &[(noon_5, 2), (0, 1)], rules_2016(), d);
    assert_eq!(r.intervals.len(), 6);
    // Before the first step nothing is licensed.
    let r = on_day(&both, &[(noon_5, 2)], rules_2016(), d);
    assert_eq!(r.intervals.len(), 6);
    assert!(r.intervals.iter().all(|i| (i.counted, i.over) == (2, 2)));
}

#[test]
fn consecutive_windows_share_no_interval() {
    // An interval belongs to the window its start lies in, so a report per day (or a
    // window that starts off a boundary) never bills an interval twice.
    let spans = [span(at(2026, 12, 2, 20, 0), at(2026, 12, 3, 2, 0)); 2];
    let cut = at(2026, 12, 3, 0, 0) + 7 * MIN;
    let (from, to) = (at(2026, 12, 2, 0, 0), at(2026, 12, 4, 0, 0));
    let whole = overuse(&spans, &[(0, 1)], rules_2016(), &utc, from, to, to);
    let a = overuse(&spans, &[(0, 1)], rules_2016(), &utc, from, cut, to);
    let b = overuse(&spans, &[(0, 1)], rules_2016(), &utc, cut, to, to);
    assert_eq!([a.intervals, b.intervals].concat(), whole.intervals);
    assert_eq!(whole.overuse_days, ["2026-12-02", "2026-12-03"]);
}

#[test]
fn terms_come_from_the_license_line() {
    let file = crate::license::parse(
        "VENDOR acme\n\
         FEATURE old acme 1.0 permanent 1 METER_INTERVAL=3600 METER_MIN=0 OVERUSE_DAYS=9\n\
         FEATURE new acme 1.0 permanent 1\n",
    )
    .unwrap();
    assert_eq!(
        MeterTerms::from_line(&file.lines[0]),
        MeterTerms {
            overuse_days_per_quarter: 9,
            ..old_rules()
        }
    );
    assert_eq!(MeterTerms::from_line(&file.lines[1]), rules_2016());
    assert_eq!(
        rules_2016(),
        MeterTerms {
            interval_ms: 600_000,
            min_ms: 600_000,
            overuse_days_per_quarter: 4
        }
    );
}

#[test]
fn no_input_panics_or_runs_away() {
    let max = u64::MAX;
    let spans = [
        span(0, max),
        span(max, max),
        span(max, 0), // ends before it starts: no time at all
        Span {
            start_ms: max - 1,
            end_ms: None,
            count: u32::MAX,
        },
        Span {
            start_ms: 5,
            end_ms: Some(10),
            count: 0,
        },
    ];
    let calendars: [&dyn Fn(u64) -> Date; 3] = [
        &utc,
        &|ms| Date::of_ms(max - ms), // runs backwards
        &|_| Date::of_ms(max),       // the last day there is
    ];
    let terms = [
        MeterTerms {
            interval_ms: 0,
            min_ms: 0,
            overuse_days_per_quarter: 0,
        },
        MeterTerms {
            interval_ms: max,
            min_ms: max,
            overuse_days_per_quarter: u32::MAX,
        },
        rules_2016(),
    ];
    let licensed = [(max, max), (0, max), (max, 0)];
    for cal in calendars {
        for t in terms {
            for (from, to, now) in [(0, max, max), (max, 0, 0), (max - 5, max, 0), (0, 0, max)] {
                let r = overuse(&spans, &licensed, t, cal, from, to, now);
                assert!(r.intervals.is_empty());
                let _ = trueup(&spans, &licensed, cal, from, to, now);
            }
        }
    }
    // Over everywhere near the end of the calendar; a 0 interval meters per millisecond.
    let zero = terms[0];
    let end = CALENDAR_END_MS;
    let r = overuse(&spans, &[], zero, &utc, end - 1000, max, max);
    assert_eq!(r.intervals.len(), 1000);
    assert_eq!(r.intervals[999].end_ms, end);
    assert_eq!(r.overuse_days, ["9999-12-31"]);
    let t = trueup(&spans, &[], &utc, end - 1000, max, max);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].month, "9999-12");
    // A calendar that jumps millions of years still gives a bounded walk.
    let far = |ms: u64| Date::of_ms(if ms < 1000 { 0 } else { max });
    assert!(trueup(&spans, &[], &far, 0, 2000, max).len() < 100_000);
}
