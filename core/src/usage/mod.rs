//! Metered use: what a site used of a feature, and what it owes for using more than it
//! is licensed for. This is the arithmetic behind the history reports of issue 16, kept
//! pure (no clock, no I/O, no time zone database) so that the server, the CLI and the
//! tests compute the same bill from the same history.
//!
//! Two reports, one feature at a time:
//!
//! - [`overuse()`]: the vendor's metered overuse (Bentley SELECT's rules since Q2 2016).
//!   Use beyond the licensed count is metered in intervals (10 minutes; 1 hour before
//!   2016); a checkout shorter than the minimum (10 minutes; none before 2016) is not
//!   recorded; a day with any over-count interval is an overuse day; a quarter with
//!   more overuse days than its allowance (4) bills the days beyond it.
//! - [`trueup()`]: the Microsoft EA true-up: per month, the peak of seats in use at one
//!   instant against the licensed count.
//!
//! The inputs are [`Span`]s (one seat from its charge to its return, as a usage
//! history records it), the licensed count as a step function of time, and a calendar
//! that names the local day of an instant (the caller's cluster time zone; tests use
//! UTC through [`Date::of_ms`]).
//!
//! Both reports sort the spans' start and end events once and sweep them, so their cost
//! is O(n log n) in the spans plus the size of the report, never intervals × spans.
//! The size of a report is bounded by its window (an interval listed per over-count
//! interval, a month or quarter per calendar month or quarter the window touches), so
//! the caller bounds the window; instants from [`CALENDAR_END_MS`] on are outside every
//! report.

mod overuse;
pub(crate) mod sweep;
mod trueup;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod volume_tests;

pub use overuse::overuse;
pub use trueup::trueup;

use serde::{Deserialize, Serialize};

use crate::license::{Date, FeatureLine, Metering};

/// 10000-01-01 00:00 UTC. License dates end with the year 9999, and so do reports:
/// clamping windows here keeps every calendar walk bounded whatever the input.
pub const CALENDAR_END_MS: u64 = 253_402_300_800_000;

/// One seat (or `count` seats of one checkout) counted in the feature's pool, from its
/// charge to its return. Time a released seat lingers for its last user is use: the
/// pool counted it, so the span runs to the end of the linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start_ms: u64,
    /// `None`: still in use at the report's `now_ms`, so it runs to then.
    pub end_ms: Option<u64>,
    pub count: u32,
}

impl Span {
    /// Where the span ends: its end, or `now_ms` while it is open. An end before the
    /// start (a garbled record) is read as no time at all rather than as a huge span.
    fn end_at(&self, now_ms: u64) -> u64 {
        self.end_ms.unwrap_or(now_ms).max(self.start_ms)
    }
}

/// How overuse is metered, in milliseconds: [`Metering`] of a license line, or set
/// directly. The defaults are the 2016 rules (600 s, 600 s, 4 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterTerms {
    /// The metering interval. Intervals are aligned to the epoch (see [`overuse()`]).
    /// 0 is no interval at all; it is read as 1 ms so that no input divides by zero or
    /// loops forever (the license parser refuses `METER_INTERVAL=0`).
    pub interval_ms: u64,
    /// A span shorter than this is not recorded; a recorded span counts from this long
    /// after its start. 0: every span is recorded, from its start (the old rules).
    pub min_ms: u64,
    /// Overuse days a quarter that are not billed.
    pub overuse_days_per_quarter: u32,
}

impl Default for MeterTerms {
    fn default() -> Self {
        MeterTerms::from(Metering::DEFAULT)
    }
}

impl From<Metering> for MeterTerms {
    fn from(m: Metering) -> Self {
        MeterTerms {
            interval_ms: u64::from(m.interval_secs) * 1000,
            min_ms: u64::from(m.min_secs) * 1000,
            overuse_days_per_quarter: m.overuse_days,
        }
    }
}

impl MeterTerms {
    /// The terms a license line signs (`METER_INTERVAL`, `METER_MIN`, `OVERUSE_DAYS`,
    /// each at its default when the line does not give it). Which line of a feature
    /// governs its metering is the caller's choice.
    pub fn from_line(line: &FeatureLine) -> MeterTerms {
        MeterTerms::from(line.meter)
    }
}

/// One metering interval in which more seats were counted than licensed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Seats of the recorded spans that overlap the interval.
    pub counted: u64,
    /// `counted` beyond the count licensed at the interval's start (always above 0).
    pub over: u64,
}

/// Overuse days of one calendar quarter and what they bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarter {
    /// `2026-Q4`.
    pub quarter: String,
    pub overuse_days: u32,
    /// Overuse days the terms leave unbilled.
    pub allowance: u32,
    /// `overuse_days` beyond the allowance.
    pub billable_days: u32,
}

/// The metered overuse of a feature over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overuse {
    /// The count licensed at the window's last instant: what the site holds as the
    /// report ends. (Each interval was measured against the count at its own start,
    /// which is `counted - over`.)
    pub licensed: u64,
    /// The over-count intervals, in time order.
    pub intervals: Vec<Interval>,
    /// Local days (`2026-12-02`) with at least one over-count interval, in order.
    pub overuse_days: Vec<String>,
    /// Every calendar quarter the window touches, in order, with its overuse days.
    pub quarters: Vec<Quarter>,
}

/// A month's true-up line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrueUp {
    /// `2026-12`.
    pub month: String,
    /// The most seats in use at one instant in the month.
    pub peak: u64,
    /// The count licensed when the peak was reached (the lowest such count, where the
    /// peak was reached more than once).
    pub licensed: u64,
    /// `peak` beyond `licensed`.
    pub short: u64,
}

/// The licensed count as a step function: each `(from_ms, count)` holds from `from_ms`
/// until the next. Sorted here (stably, so of two steps at one instant the later one
/// given wins) so that an unsorted input cannot give a wrong answer.
struct Licensed(Vec<(u64, u64)>);

impl Licensed {
    fn new(steps: &[(u64, u64)]) -> Licensed {
        let mut v = steps.to_vec();
        v.sort_by_key(|s| s.0);
        Licensed(v)
    }

    /// The count in force at `t`: 0 before the first step (nothing was licensed yet).
    fn at(&self, t: u64) -> u64 {
        match self.0.partition_point(|s| s.0 <= t) {
            0 => 0,
            i => self.0[i - 1].1,
        }
    }

    /// The instants where the count may change.
    fn changes(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|s| s.0)
    }
}

/// `2026-12-02`.
fn day_label(d: Date) -> String {
    let (y, m, day) = d.ymd();
    format!("{y:04}-{m:02}-{day:02}")
}

/// A calendar month as (year, month 1-12).
type Month = (i64, u32);

fn month_of(d: Date) -> Month {
    let (y, m, _) = d.ymd();
    (y, m)
}

fn next_month((y, m): Month) -> Month {
    if m >= 12 {
        (y.saturating_add(1), 1)
    } else {
        (y, m + 1)
    }
}

/// Years a calendar walk may step through: the calendar is the caller's, so a walk
/// between two of its answers is clamped to where Tally's dates live (the endpoints
/// themselves are always kept), and no calendar can make a walk run for millions of
/// years.
const WALK_YEARS: std::ops::RangeInclusive<i64> = 1969..=10_000;

/// Every month from `first` to `last` inclusive: both ends, and the months between them
/// that lie in [`WALK_YEARS`]. A `last` before `first` (a calendar that runs backwards)
/// gives both ends only.
fn months_between(first: Month, last: Month, mut each: impl FnMut(Month)) {
    each(first);
    if last <= first {
        return;
    }
    let lowest = (*WALK_YEARS.start(), 1);
    let mut m = if first < lowest {
        lowest
    } else {
        next_month(first)
    };
    let stop = last.min((*WALK_YEARS.end(), 12));
    while m < last && m <= stop {
        each(m);
        m = next_month(m);
    }
    each(last);
}
