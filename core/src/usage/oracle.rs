//! Brute-force oracles: the rules computed the slow, obvious way (every interval against
//! every span, every millisecond of the window), and a property test that the sweeps
//! agree with them on small random histories. The tables in `tests.rs` pin the rules;
//! this pins the sweep machinery to them.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// The count in force at `t`: the step with the latest `from_ms` at or before `t` (of
/// equal ones, the last given), 0 before any.
pub(super) fn licensed_at(steps: &[(u64, u64)], t: u64) -> u64 {
    let mut best: Option<(u64, u64)> = None;
    for &(from, n) in steps {
        if from <= t && best.is_none_or(|(b, _)| from >= b) {
            best = Some((from, n));
        }
    }
    best.map_or(0, |b| b.1)
}

/// Whether a recorded span counts at any instant of `[start, end)`.
fn counts_in(s: &Span, min_ms: u64, now: u64, start: u64, end: u64) -> bool {
    let e = s.end_ms.unwrap_or(now).max(s.start_ms);
    if s.count == 0 || e - s.start_ms < min_ms {
        return false;
    }
    let a = s.start_ms.saturating_add(min_ms);
    let b = e.max(a.saturating_add(1));
    a < end && start < b
}

/// Over intervals and overuse days, interval by interval.
pub(super) fn overuse_oracle(
    spans: &[Span],
    licensed: &[(u64, u64)],
    terms: MeterTerms,
    calendar: &dyn Fn(u64) -> Date,
    (from, to, now): (u64, u64, u64),
) -> (Vec<Interval>, Vec<String>) {
    let iv = terms.interval_ms.max(1);
    let to = to.min(CALENDAR_END_MS);
    let (mut out, mut days) = (Vec::new(), Vec::new());
    for k in from.div_ceil(iv)..to.div_ceil(iv) {
        let (start, end) = (k * iv, k * iv + iv);
        let counted: u64 = spans
            .iter()
            .filter(|s| counts_in(s, terms.min_ms, now, start, end))
            .map(|s| u64::from(s.count))
            .sum();
        let lic = licensed_at(licensed, start);
        if counted > lic {
            out.push(Interval {
                start_ms: start,
                end_ms: end,
                counted,
                over: counted - lic,
            });
            days.push(day_label(calendar(start)));
        }
    }
    days.sort();
    days.dedup();
    (out, days)
}

/// Every quarter that some millisecond of the window falls in, with its overuse days.
fn quarters_oracle(
    days: &[String],
    allowance: u32,
    calendar: &dyn Fn(u64) -> Date,
    (from, to): (u64, u64),
) -> Vec<Quarter> {
    let mut per: BTreeMap<String, u32> = BTreeMap::new();
    let label = |y: i64, m: u32| format!("{y:04}-Q{}", m.div_ceil(3));
    for t in from..to {
        let (y, m, _) = calendar(t).ymd();
        per.entry(label(y, m)).or_default();
    }
    for d in days {
        let (y, m) = (d[..4].parse().unwrap(), d[5..7].parse().unwrap());
        *per.entry(label(y, m)).or_default() += 1;
    }
    per.into_iter()
        .map(|(quarter, n)| Quarter {
            quarter,
            overuse_days: n,
            allowance,
            billable_days: n.saturating_sub(allowance),
        })
        .collect()
}

/// The seats in use at instant `t`.
pub(super) fn level_at(spans: &[Span], now: u64, t: u64) -> u64 {
    spans
        .iter()
        .filter(|s| {
            let end = s.end_ms.unwrap_or(now).max(s.start_ms);
            s.start_ms <= t && t < end.max(s.start_ms + 1)
        })
        .map(|s| u64::from(s.count))
        .sum()
}

/// The true-up, millisecond by millisecond (small windows only).
fn trueup_oracle(
    spans: &[Span],
    licensed: &[(u64, u64)],
    calendar: &dyn Fn(u64) -> Date,
    (from, to, now): (u64, u64, u64),
) -> Vec<TrueUp> {
    let mut months: BTreeMap<(i64, u32), (u64, u64)> = BTreeMap::new();
    for t in from..to {
        let (level, lic) = (level_at(spans, now, t), licensed_at(licensed, t));
        let (y, m, _) = calendar(t).ymd();
        let e = months.entry((y, m)).or_insert((level, lic));
        if level > e.0 {
            *e = (level, lic);
        } else if level == e.0 {
            e.1 = e.1.min(lic);
        }
    }
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

fn arb_span() -> impl Strategy<Value = Span> {
    (0u64..3000, 0u64..600, 0u8..8, 0u32..3).prop_map(|(start_ms, len, open, count)| Span {
        start_ms,
        // One in eight still open; a few end before they start (garbled records).
        end_ms: match open {
            0 => None,
            1 => Some(start_ms.saturating_sub(len)),
            _ => Some(start_ms + len),
        },
        count,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_sweeps_agree_with_brute_force(
        spans in vec(arb_span(), 0..12),
        licensed in vec((0u64..3000, 0u64..4), 0..4),
        (interval_ms, min_ms, allowance) in (0u64..150, 0u64..80, 0u32..3),
        (from, len, now) in (0u64..3000, 0u64..1500, 0u64..3500),
    ) {
        // A day every 10 ms: small windows cross days, months and quarters.
        let calendar = |ms: u64| Date::of_ms(ms * 8_640_000);
        let terms = MeterTerms { interval_ms, min_ms, overuse_days_per_quarter: allowance };
        let to = from + len;
        let r = overuse(&spans, &licensed, terms, &calendar, from, to, now);
        let (intervals, days) = overuse_oracle(&spans, &licensed, terms, &calendar, (from, to, now));
        prop_assert_eq!(&r.intervals, &intervals);
        prop_assert_eq!(&r.overuse_days, &days);
        prop_assert_eq!(r.quarters, quarters_oracle(&days, allowance, &calendar, (from, to)));
        prop_assert_eq!(r.licensed, licensed_at(&licensed, if to > from { to - 1 } else { from }));
        prop_assert_eq!(
            trueup(&spans, &licensed, &calendar, from, to, now),
            trueup_oracle(&spans, &licensed, &calendar, (from, to, now))
        );
    }
}
