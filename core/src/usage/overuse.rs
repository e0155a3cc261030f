//! Metered overuse, the way SELECT-style vendors bill it.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    day_label, month_of, months_between, sweep, Interval, Licensed, MeterTerms, Overuse, Quarter,
    Span, CALENDAR_END_MS,
};
use crate::license::Date;

/// The metered overuse of one feature in the window `[from_ms, to_ms)`, its open spans
/// running to `now_ms`. `licensed` is the count as `(from_ms, count)` steps (0 before the
/// first); `calendar` names the local day of an instant.
///
/// The rules, as computed here:
///
/// - **Intervals** are `[k·I, (k+1)·I)` for whole `k`: aligned to the Unix epoch, not to
///   the caller's time zone, so that an instant lies in the same interval on every node
///   and in every report. They still start on the local clock's boundaries in every
///   zone whose UTC offset is a whole number of intervals: for 10-minute intervals every
///   zone but the :45 ones (Nepal, Chatham, Eucla), for 1-hour ones every whole-hour zone.
///   The report holds the intervals whose *start* lies in the window, so consecutive
///   windows share none and bill none twice; a window should start on a boundary (an
///   unaligned `from_ms` leaves its partial interval to the window before).
/// - **Recording**: a span shorter than `min_ms` (to its end, or to now while open) is
///   not recorded at all. A recorded span counts from `min_ms` after its start until its
///   end, and in every interval that this overlaps: "a new checkout is recorded only
///   after 10 minutes of use". So its first `min_ms` are never counted, which is what
///   keeps the user who stops at 15:01 in the office and starts at 15:59 at home (or at
///   15:05) from being counted twice; Bentley's own interval report likewise leaves out
///   a usage's first interval. A span counts in at least the interval holding the
///   instant it becomes recorded, even if it ends right then. With `min_ms = 0` (the
///   old rules) every span counts from its start, so two people who each used one
///   license for two minutes in the same hour count as two for that hour.
/// - **Over**: `counted` is the seats of the recorded spans overlapping the interval;
///   `over = counted - licensed`, with the count licensed at the interval's start.
/// - **Days and quarters**: an over interval makes its start's local day an overuse day
///   (the interval lies wholly in that day whenever it is aligned with the local clock);
///   a quarter bills its overuse days beyond `overuse_days_per_quarter`.
pub fn overuse(
    spans: &[Span],
    licensed: &[(u64, u64)],
    terms: MeterTerms,
    calendar: &dyn Fn(u64) -> Date,
    from_ms: u64,
    to_ms: u64,
    now_ms: u64,
) -> Overuse {
    let iv = terms.interval_ms.max(1);
    let lic = Licensed::new(licensed);
    let to_ms = to_ms.min(CALENDAR_END_MS);
    let mut report = Overuse {
        licensed: lic.at(if to_ms > from_ms { to_ms - 1 } else { from_ms }),
        intervals: Vec::new(),
        overuse_days: Vec::new(),
        quarters: Vec::new(),
    };
    if to_ms <= from_ms {
        return report;
    }
    // The window's intervals, by index: those starting in [from_ms, to_ms).
    let (first, end) = (from_ms.div_ceil(iv), to_ms.div_ceil(iv));
    let mut events = Vec::with_capacity(spans.len().saturating_mul(2));
    for s in spans {
        let Some((a, b)) = counted_range(s, terms.min_ms, now_ms) else {
            continue;
        };
        let (k0, k1) = ((a / iv).max(first), ((b - 1) / iv + 1).min(end));
        if k0 < k1 {
            events.push((k0, i64::from(s.count)));
            if k1 < end {
                events.push((k1, -i64::from(s.count)));
            }
        }
    }
    let mut days = BTreeSet::new();
    let mut last_day = None;
    sweep::runs(
        events,
        lic.changes().map(|t| t.div_ceil(iv)),
        first,
        end,
        |k| lic.at(k.saturating_mul(iv)),
        |a, b, counted, licensed| {
            if counted <= licensed {
                return;
            }
            for k in a..b {
                let start_ms = k.saturating_mul(iv);
                report.intervals.push(Interval {
                    start_ms,
                    end_ms: start_ms.saturating_add(iv),
                    counted,
                    over: counted - licensed,
                });
                let day = calendar(start_ms);
                if last_day != Some(day) {
                    days.insert(day);
                    last_day = Some(day);
                }
            }
        },
    );
    report.quarters = quarters(&days, terms, calendar, from_ms, to_ms);
    report.overuse_days = days.into_iter().map(day_label).collect();
    report
}

/// The instants over which a span counts, `[a, b)` with `b > a`, or `None` if it is not
/// recorded (no seats, or shorter than `min_ms`).
fn counted_range(s: &Span, min_ms: u64, now_ms: u64) -> Option<(u64, u64)> {
    let end = s.end_at(now_ms);
    if s.count == 0 || end - s.start_ms < min_ms {
        return None;
    }
    let a = s.start_ms.saturating_add(min_ms);
    // At least one instant: a span recorded the moment it ends still counts there.
    let b = end.max(a.saturating_add(1));
    (a < b).then_some((a, b))
}

/// Every quarter the window touches, with its overuse days and what they bill.
fn quarters(
    days: &BTreeSet<Date>,
    terms: MeterTerms,
    calendar: &dyn Fn(u64) -> Date,
    from_ms: u64,
    to_ms: u64,
) -> Vec<Quarter> {
    let quarter_of = |(y, m): (i64, u32)| (y, m.div_ceil(3));
    let mut per: BTreeMap<(i64, u32), u32> = BTreeMap::new();
    let (first, last) = (
        month_of(calendar(from_ms)),
        month_of(calendar(to_ms.saturating_sub(1))),
    );
    months_between(first, last, |m| {
        per.entry(quarter_of(m)).or_default();
    });
    for d in days {
        let n = per.entry(quarter_of(month_of(*d))).or_default();
        *n = n.saturating_add(1);
    }
    let allowance = terms.overuse_days_per_quarter;
    per.into_iter()
        .map(|((y, q), overuse_days)| Quarter {
            quarter: format!("{y:04}-Q{q}"),
            overuse_days,
            allowance,
            billable_days: overuse_days.saturating_sub(allowance),
        })
        .collect()
}
