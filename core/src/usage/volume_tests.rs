//! A month of history at the scale the issue names: 100 features × 2,000 users, 500,000
//! spans. This asserts correctness only (one feature against the brute-force oracles,
//! invariants for every feature, and one pool of all 500,000 spans); how fast it runs
//! is a benchmark's business, never a timed unit test's.

use super::oracle::{level_at, licensed_at, overuse_oracle};
use super::tests::{at, utc, HOUR, MIN};
use super::*;

const FEATURES: u64 = 100;
const USERS: u64 = 2_000;

/// SplitMix64: a fixed, dependency-free stream, so the history is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// December 2026: each user holds each feature two or three times (5,000 spans a
/// feature), for a minute to eight hours; one in a hundred is still open at the end.
fn december() -> (Vec<Vec<Span>>, u64, u64) {
    let (from, to) = (at(2026, 12, 1, 0, 0), at(2027, 1, 1, 0, 0));
    let mut rng = Rng(16);
    let features = (0..FEATURES)
        .map(|f| {
            let mut spans = Vec::new();
            for u in 0..USERS {
                for _ in 0..2 + (u + f) % 2 {
                    let start_ms = from + rng.next(to - from);
                    let end = start_ms + MIN + rng.next(8 * HOUR);
                    spans.push(Span {
                        start_ms,
                        end_ms: (rng.next(100) != 0).then_some(end),
                        count: 1,
                    });
                }
            }
            spans
        })
        .collect();
    (features, from, to)
}

fn licensed_for(f: u64, from: u64) -> Vec<(u64, u64)> {
    vec![(from, 20 + f % 10), (at(2026, 12, 15, 12, 0), 30 + f % 10)]
}

/// The month's true-up by brute force at every instant where the level or the count can
/// change (the level is constant between them, so the maximum is among them).
fn trueup_at_instants(spans: &[Span], licensed: &[(u64, u64)], from: u64, to: u64) -> (u64, u64) {
    let mut instants: Vec<u64> = spans
        .iter()
        .flat_map(|s| [s.start_ms, s.end_ms.unwrap_or(to)])
        .chain(licensed.iter().map(|l| l.0))
        .chain([from])
        .filter(|t| (from..to).contains(t))
        .collect();
    instants.sort_unstable();
    instants.dedup();
    let mut best: Option<(u64, u64)> = None;
    for t in instants {
        let (level, lic) = (level_at(spans, to, t), licensed_at(licensed, t));
        best = match best {
            Some((p, l)) if p > level || (p == level && l <= lic) => Some((p, l)),
            _ => Some((level, lic)),
        };
    }
    best.unwrap_or((0, 0))
}

#[test]
fn a_month_of_a_hundred_features_and_two_thousand_users() {
    let (features, from, to) = december();
    assert_eq!(features.iter().map(Vec::len).sum::<usize>(), 500_000);
    let terms = MeterTerms::default();
    let (mut peaks, mut any_over) = (Vec::new(), false);
    for (f, spans) in (0u64..).zip(&features) {
        let licensed = licensed_for(f, from);
        let r = overuse(spans, &licensed, terms, &utc, from, to, to);
        let t = trueup(spans, &licensed, &utc, from, to, to);
        if f == 0 {
            let (intervals, days) = overuse_oracle(spans, &licensed, terms, &utc, (from, to, to));
            assert_eq!(r.intervals, intervals, "feature {f}");
            assert_eq!(r.overuse_days, days, "feature {f}");
            let (peak, lic) = trueup_at_instants(spans, &licensed, from, to);
            assert_eq!((t[0].peak, t[0].licensed), (peak, lic), "feature {f}");
        }
        // Every feature: the report is consistent with itself.
        for w in r.intervals.windows(2) {
            assert!(w[0].end_ms <= w[1].start_ms, "feature {f}: in order");
        }
        for i in &r.intervals {
            assert_eq!(i.end_ms - i.start_ms, terms.interval_ms);
            assert!(i.over > 0);
            assert_eq!(i.counted - i.over, licensed_at(&licensed, i.start_ms));
        }
        assert!(r.overuse_days.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.quarters.len(), 1);
        assert_eq!(r.quarters[0].overuse_days as usize, r.overuse_days.len());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].short, t[0].peak.saturating_sub(t[0].licensed));
        any_over |= !r.intervals.is_empty();
        peaks.push(t[0].peak);
    }
    assert!(any_over, "the history should exercise overuse");

    // All 500,000 spans as one pool: its peak lies between the largest feature's and
    // the sum of them all.
    let all: Vec<Span> = features.concat();
    let t = trueup(&all, &[(from, 1_000)], &utc, from, to, to);
    let (max, sum) = (peaks.iter().max().copied(), peaks.iter().sum::<u64>());
    assert!(Some(t[0].peak) >= max && t[0].peak <= sum, "{t:?}");
    let r = overuse(&all, &[(from, 1_000)], terms, &utc, from, to, to);
    assert!(r.intervals.iter().all(|i| i.counted > 1_000));
}
