//! The monthly true-up (Microsoft EA style): the peak of use against the licensed count.

use std::collections::BTreeMap;

use super::{month_of, months_between, sweep, Licensed, Month, Span, TrueUp, CALENDAR_END_MS};
use crate::license::Date;

/// One line per calendar month that the window `[from_ms, to_ms)` touches, in order:
/// the peak of seats in use at one instant, the count licensed then, and the shortfall.
/// Open spans run to `now_ms`; `licensed` is the count as `(from_ms, count)` steps (0
/// before the first); `calendar` names the local day of an instant.
///
/// Unlike [`overuse()`](super::overuse()), every span counts here, however short: a
/// true-up asks how many copies were in use at once. A span occupies `[start, end)`,
/// and at least the millisecond it starts in, so a seat returned at the instant another
/// is taken counts once.
///
/// `licensed` is the count in force at the instant of the peak. It is not the month's
/// lowest count: a site that bought seats mid-month and peaked after that was never
/// short. Where the peak was reached more than once, it is the lowest count in force at
/// any of those instants, so a shortfall at the peak level is never hidden by a later
/// purchase.
pub fn trueup(
    spans: &[Span],
    licensed: &[(u64, u64)],
    calendar: &dyn Fn(u64) -> Date,
    from_ms: u64,
    to_ms: u64,
    now_ms: u64,
) -> Vec<TrueUp> {
    let lic = Licensed::new(licensed);
    let to_ms = to_ms.min(CALENDAR_END_MS);
    if to_ms <= from_ms {
        return Vec::new();
    }
    let mut events = Vec::with_capacity(spans.len().saturating_mul(2));
    for s in spans {
        let a = s.start_ms.max(from_ms);
        let b = s
            .end_at(now_ms)
            .max(s.start_ms.saturating_add(1))
            .min(to_ms);
        if s.count > 0 && a < b {
            events.push((a, i64::from(s.count)));
            if b < to_ms {
                events.push((b, -i64::from(s.count)));
            }
        }
    }
    // (peak, count licensed at the peak) per month.
    let mut months: BTreeMap<Month, (u64, u64)> = BTreeMap::new();
    sweep::runs(
        events,
        lic.changes(),
        from_ms,
        to_ms,
        |t| lic.at(t),
        |a, b, level, licensed| {
            // The run's level holds in every month it reaches into, including months
            // it spans whole (a checkout held over a month end).
            let (first, last) = (month_of(calendar(a)), month_of(calendar(b - 1)));
            months_between(first, last, |m| {
                let e = months.entry(m).or_insert((level, licensed));
                if level > e.0 {
                    *e = (level, licensed);
                } else if level == e.0 {
                    e.1 = e.1.min(licensed);
                }
            });
        },
    );
    months
        .into_iter()
        .map(|((y, m), (peak, licensed))| TrueUp {
            month: format!("{y:04}-{m:02}"),
            peak,
            licensed,
            short: peak.saturating_sub(licensed),
        })
        .collect()
}
