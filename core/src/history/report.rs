//! The reports of `tallyctl report`, from history records: use per interval, metered
//! overuse, the monthly true-up and denials. Pure: the server reads the records of the
//! window from its store, and the seats counted now from the ledger, and calls these.
//!
//! A seat's span of use is known whole when it goes back to its pool (a
//! [`What::Reclaimed`] record carries its start), so a window's spans are the reclaims
//! from its start up to now plus the seats still counted now ([`Source::open`]): the
//! caller reads records from the window's start to now, not only to its end. That is
//! O(records since the start), which is what a report of a recent window wants.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Record, What};
use crate::license::{Date, Zone};
use crate::usage::{self, MeterTerms, Overuse, Span};

/// A change of a feature's licensed count (a [`What::Licensed`] record, kept apart by
/// the store because a report needs the count in force before its window began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub feature: String,
    pub at_ms: u64,
    pub issued: u64,
    pub overdraft_limit: u64,
}

/// What a report reads.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Every record from the window's start up to now, in log order.
    pub records: &'a [Record],
    /// The seats counted now, by feature, as spans still open.
    pub open: &'a [(String, Span)],
    /// Every change of a licensed count, in log order.
    pub licensed: &'a [Step],
    /// Named users assigned now, per named-user feature.
    pub assigned_now: &'a BTreeMap<String, u64>,
    /// Ledger time now.
    pub now_ms: u64,
}

impl Source<'_> {
    /// The feature's spans of use that may overlap a window starting at `from_ms`.
    pub fn spans(&self, feature: &str, from_ms: u64) -> Vec<Span> {
        let closed = self.records.iter().filter_map(|r| match r.what {
            What::Reclaimed {
                count, charged_ms, ..
            } if r.feature == feature && r.at_ms >= from_ms => Some(Span {
                start_ms: charged_ms,
                end_ms: Some(r.at_ms),
                count,
            }),
            _ => None,
        });
        let open = self
            .open
            .iter()
            .filter(|(f, _)| f == feature)
            .map(|(_, s)| *s);
        closed.chain(open).collect()
    }

    /// The feature's licensed count as a step function.
    pub fn licensed_steps(&self, feature: &str) -> Vec<(u64, u64)> {
        self.licensed
            .iter()
            .filter(|s| s.feature == feature)
            .map(|s| (s.at_ms, s.issued))
            .collect()
    }

    /// Named users assigned to `feature` from `from_ms` to now, as spans (one per
    /// stretch of a constant count). The count before the window's first assignment
    /// record is read off that record (what it assigned or unassigned, taken back).
    pub fn assignment_spans(&self, feature: &str, from_ms: u64) -> Vec<Span> {
        let changes: Vec<(u64, u64, u64)> = self
            .records
            .iter()
            .filter(|r| r.feature == feature && r.at_ms >= from_ms)
            .filter_map(|r| match &r.what {
                What::Assigned { users, assigned } => Some((
                    r.at_ms,
                    assigned.saturating_sub(users.len() as u64),
                    *assigned,
                )),
                What::Unassigned { users, assigned } => Some((
                    r.at_ms,
                    assigned.saturating_add(users.len() as u64),
                    *assigned,
                )),
                _ => None,
            })
            .collect();
        let now_count = self.assigned_now.get(feature).copied().unwrap_or(0);
        let mut level = changes.first().map_or(now_count, |c| c.1);
        let mut at = from_ms;
        let mut spans = Vec::new();
        let close = |at: u64, end: Option<u64>, level: u64, spans: &mut Vec<Span>| {
            if level > 0 && end.is_none_or(|e| e > at) {
                spans.push(Span {
                    start_ms: at,
                    end_ms: end,
                    count: u32::try_from(level).unwrap_or(u32::MAX),
                });
            }
        };
        for (t, _, after) in changes {
            close(at, Some(t), level, &mut spans);
            (at, level) = (t, after);
        }
        close(at, None, level, &mut spans);
        spans
    }

    /// Features the records, open seats or licensed counts name, in order.
    pub fn features(&self) -> Vec<String> {
        let all: std::collections::BTreeSet<&str> = self
            .records
            .iter()
            .map(|r| r.feature.as_str())
            .chain(self.open.iter().map(|(f, _)| f.as_str()))
            .chain(self.licensed.iter().map(|s| s.feature.as_str()))
            .filter(|f| !f.is_empty())
            .collect();
        all.into_iter().map(str::to_owned).collect()
    }

    /// [`Source::spans`] of every feature, in one pass over the records.
    pub fn spans_by_feature(&self, from_ms: u64) -> BTreeMap<&str, Vec<Span>> {
        let mut out: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
        for r in self.records {
            if let What::Reclaimed {
                count, charged_ms, ..
            } = r.what
            {
                if r.at_ms >= from_ms {
                    out.entry(r.feature.as_str()).or_default().push(Span {
                        start_ms: charged_ms,
                        end_ms: Some(r.at_ms),
                        count,
                    });
                }
            }
        }
        for (f, s) in self.open {
            out.entry(f.as_str()).or_default().push(*s);
        }
        out
    }
}

/// One interval of one feature in `report usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub feature: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The most seats counted at one instant of the interval.
    pub peak: u64,
    /// The count licensed at the interval's start.
    pub licensed: u64,
    /// `peak` beyond `licensed`: overdraft seats in use at the peak.
    pub overdraft_used: u64,
    /// Checkouts refused in the interval.
    pub denials: u64,
    /// Checkouts that began to wait in the interval.
    pub queued: u64,
}

/// Why a usage report cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the window is empty: --from ({from_ms}) must be before --to ({to_ms})")]
    EmptyWindow { from_ms: u64, to_ms: u64 },
    #[error("an interval of 0 ms: give one of at least a second")]
    ZeroInterval,
    #[error(
        "{rows} rows (features x intervals) is more than a report gives ({max}): narrow the window, pick a feature, or lengthen the interval"
    )]
    TooLong { rows: u64, max: u64 },
}

/// At most this many rows in one usage report, so that a request cannot make a node
/// build a report of unbounded size (a century of minutes, say).
pub const MAX_USAGE_ROWS: u64 = 1_000_000;

/// `report usage`: per feature and interval (aligned to the epoch, so intervals of a
/// day are UTC days), the peak in use, the licensed count, the overdraft used, the
/// denials and the checkouts queued. Every interval of the window is listed, used or
/// not, so that a chart of it has no gaps.
pub fn usage(
    src: &Source<'_>,
    features: &[String],
    from_ms: u64,
    to_ms: u64,
    interval_ms: u64,
) -> Result<Vec<UsageRow>, ReportError> {
    if interval_ms == 0 {
        return Err(ReportError::ZeroInterval);
    }
    if to_ms <= from_ms {
        return Err(ReportError::EmptyWindow { from_ms, to_ms });
    }
    let (first, end) = (from_ms / interval_ms, to_ms.div_ceil(interval_ms));
    let rows = (end - first).saturating_mul(features.len() as u64);
    if rows > MAX_USAGE_ROWS {
        return Err(ReportError::TooLong {
            rows,
            max: MAX_USAGE_ROWS,
        });
    }
    // One pass over the records for every feature (a month is a million records, and
    // a report of every feature must not read them once per feature).
    let (lo, hi) = (first * interval_ms, end.saturating_mul(interval_ms));
    let mut of: BTreeMap<&str, Seen> = features
        .iter()
        .map(|f| (f.as_str(), Seen::default()))
        .collect();
    for r in src.records {
        let Some(seen) = of.get_mut(r.feature.as_str()) else {
            continue;
        };
        match r.what {
            What::Reclaimed {
                count, charged_ms, ..
            } if r.at_ms >= lo => seen.spans.push(Span {
                start_ms: charged_ms,
                end_ms: Some(r.at_ms),
                count,
            }),
            What::Denied { .. } if (lo..hi).contains(&r.at_ms) => seen.denied.push(r.at_ms),
            What::Queued { .. } if (lo..hi).contains(&r.at_ms) => seen.queued.push(r.at_ms),
            _ => {}
        }
    }
    for (f, span) in src.open {
        if let Some(seen) = of.get_mut(f.as_str()) {
            seen.spans.push(*span);
        }
    }
    for s in src.licensed {
        if let Some(seen) = of.get_mut(s.feature.as_str()) {
            seen.steps.push((s.at_ms, s.issued));
        }
    }
    let mut out = Vec::new();
    for feature in features {
        let Some(seen) = of.remove(feature.as_str()) else {
            continue;
        };
        let base = out.len();
        for k in first..end {
            let start_ms = k * interval_ms;
            out.push(UsageRow {
                feature: feature.clone(),
                start_ms,
                end_ms: start_ms.saturating_add(interval_ms),
                peak: 0,
                licensed: 0,
                overdraft_used: 0,
                denials: 0,
                queued: 0,
            });
        }
        let row = |t: u64| base + usize::try_from(t / interval_ms - first).unwrap_or(usize::MAX);
        let steps = &seen.steps;
        let lic = |t: u64| match steps.partition_point(|s| s.0 <= t) {
            0 => 0,
            i => steps[i - 1].1,
        };
        let mut events = Vec::with_capacity(seen.spans.len() * 2);
        for s in &seen.spans {
            // A span holds at least the millisecond it starts in (see usage::trueup).
            let end = s.end_ms.unwrap_or(src.now_ms).max(s.start_ms + 1);
            if end <= lo || s.start_ms >= hi {
                continue;
            }
            events.push((s.start_ms.max(lo), i64::from(s.count)));
            if end < hi {
                events.push((end, -i64::from(s.count)));
            }
        }
        let changes = steps.iter().map(|s| s.0);
        usage::sweep::runs(events, changes, lo, hi, lic, |a, b, level, _| {
            for r in &mut out[row(a)..=row(b - 1)] {
                r.peak = r.peak.max(level);
            }
        });
        for r in &mut out[base..] {
            r.licensed = lic(r.start_ms);
            r.overdraft_used = r.peak.saturating_sub(r.licensed);
        }
        for t in seen.denied {
            out[row(t)].denials += 1;
        }
        for t in seen.queued {
            out[row(t)].queued += 1;
        }
    }
    Ok(out)
}

/// What one pass over the records found of one feature, for [`usage`].
#[derive(Default)]
struct Seen {
    spans: Vec<Span>,
    /// Licensed-count changes, in log order (so sorted by time).
    steps: Vec<(u64, u64)>,
    denied: Vec<u64>,
    queued: Vec<u64>,
}

fn calendar(zone: Zone) -> impl Fn(u64) -> Date {
    move |ms| zone.date_of_ms(ms)
}

/// `report overuse`: the feature's metered overuse over the window, by its terms.
pub fn overuse(
    src: &Source<'_>,
    feature: &str,
    terms: MeterTerms,
    zone: Zone,
    from_ms: u64,
    to_ms: u64,
) -> Overuse {
    let spans = src.spans(feature, from_ms);
    let steps = src.licensed_steps(feature);
    usage::overuse(
        &spans,
        &steps,
        terms,
        &calendar(zone),
        from_ms,
        to_ms,
        src.now_ms,
    )
}

/// One month of one feature in `report trueup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrueUpRow {
    pub feature: String,
    pub month: String,
    pub peak: u64,
    pub licensed: u64,
    pub short: u64,
}

/// `report trueup`: per feature and month, the peak against the licensed count. A
/// named-user feature's peak is of its assignments, not its checkouts.
pub fn trueup(
    src: &Source<'_>,
    features: &[String],
    zone: Zone,
    from_ms: u64,
    to_ms: u64,
) -> Vec<TrueUpRow> {
    let mut out = Vec::new();
    let mut seats = src.spans_by_feature(from_ms);
    for feature in features {
        let spans = if src.assigned_now.contains_key(feature) {
            src.assignment_spans(feature, from_ms)
        } else {
            seats.remove(feature.as_str()).unwrap_or_default()
        };
        let steps = src.licensed_steps(feature);
        let months = usage::trueup(&spans, &steps, &calendar(zone), from_ms, to_ms, src.now_ms);
        out.extend(months.into_iter().map(|m| TrueUpRow {
            feature: feature.clone(),
            month: m.month,
            peak: m.peak,
            licensed: m.licensed,
            short: m.short,
        }));
    }
    out
}

/// `report denials`: the refusals (and waits that ended unserved) in the window.
pub fn denials<'a>(
    src: &Source<'a>,
    feature: Option<&str>,
    from_ms: u64,
    to_ms: u64,
) -> Vec<&'a Record> {
    src.records
        .iter()
        .filter(|r| r.at_ms >= from_ms && r.at_ms < to_ms)
        .filter(|r| feature.is_none_or(|f| r.feature == f))
        .filter(|r| matches!(r.what, What::Denied { .. } | What::Dequeued { .. }))
        .collect()
}
