//! A feature pool: the seats that all loaded lines of one feature grant at a given time,
//! and the exact test of whether a checkout still fits.
//!
//! Versions make this subtle: a checkout of version `v` may use any line whose version is
//! at least `v`, so 20 seats of 2025.1 and 5 of 2026.1 can hold 25 checkouts of 2025.1
//! but only 5 of 2026.1. The sets of usable lines are suffixes of the lines sorted by
//! version, and for such nested sets a valid assignment of seats to lines exists iff, for
//! every line version `w`, the seats that need at least `w` fit in the lines of version at
//! least `w` (Hall's condition). We check exactly that, so seats never need to be pinned
//! to a line and a reload of the license never has to move them. `UPGRADE` lines only move
//! seats from one version to a higher one before the check (see [`with_upgrades`]): the
//! seats per version change, the nesting of the usable sets does not, so the condition
//! stays exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{DenyReason, TimeMs};
use crate::license::{Count, DupGroup, Expiry, FeatureLine, LicenseModel, Version, Zone};

const DAY_MS: u64 = 86_400_000;

/// Stands for "no limit" (an `uncounted` line). Far above any real count, far below
/// overflow when a few are added together.
const UNLIMITED: u64 = u64::MAX / 4;

/// One line as the pool uses it, reduced to what counting needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolLine {
    pub version: Version,
    pub start_ms: TimeMs,
    /// First instant the line no longer counts (end of its expiry day); `None`: permanent.
    pub end_ms: Option<TimeMs>,
    pub grace_ms: u64,
    pub demo_seats: u32,
    /// `None` for `uncounted`.
    pub seats: Option<u32>,
    pub overdraft: u32,
    /// A `FEATURE` line (only the first one that counts is used), not an `INCREMENT`.
    #[serde(default)]
    pub feature_line: bool,
    /// `ISSUED` (the start of that day), to order `FEATURE` lines; 0 without one.
    #[serde(default)]
    pub issued_ms: TimeMs,
    /// An `UPGRADE` line: moves up to `seats` seats of lines of at least this version
    /// (and below the line's own) that precede it to the line's version.
    #[serde(default)]
    pub upgrade_from: Option<Version>,
}

/// FlexNet's rule for several `FEATURE` lines of one feature: "only the first FEATURE
/// line for a given feature name is processed ... A FEATURE line does not give an
/// additional number of licenses, whereas an INCREMENT line always gives an additional
/// number of licenses" (FNP License Administration Guide, "FEATURE and INCREMENT
/// Lines"), the lines sorted when processed: a higher version first, then a newer
/// `ISSUED` date, then the one loaded first. So a renewal `FEATURE` line added beside
/// the old one does not double the count. Tally applies the rule at `now` among the
/// lines that count then, so when the first line ends the next valid one takes over
/// instead of the feature going dark until someone reloads. Returns the position in
/// `lines` of the `FEATURE` line that counts, if any.
fn first_feature_line(lines: &[&PoolLine]) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.feature_line)
        .min_by(|(i, a), (j, b)| {
            b.version
                .cmp(&a.version)
                .then_with(|| b.issued_ms.cmp(&a.issued_ms))
                .then_with(|| i.cmp(j))
        })
        .map(|(i, _)| i)
}

/// The seats the counting lines grant, as (version, seats, overdraft), after FlexNet's
/// `UPGRADE` rule: "an UPGRADE line removes up to the number of licenses specified from
/// any old version (>= from_feat_version) and creates a new version with that same number
/// of licenses ... [it] operates on the closest preceding FEATURE or INCREMENT line with a
/// version number that is >= from_feat_version, and < to_feat_version" (FLEXnet End User
/// Guide, "UPGRADE Lines"). It takes from the closest preceding such line first, then the
/// ones before it, and grants as many seats at its version as it took: an upgrade of seats
/// the site does not have creates none. An upgrade of an `uncounted` line takes its count
/// and leaves the line unlimited. An upgrade that is not counting (expired, not started)
/// moves nothing, so the old seats count as before.
fn with_upgrades(counting: &[&PoolLine]) -> Vec<(Version, u64, u64)> {
    let mut out: Vec<(Version, u64, u64)> = Vec::with_capacity(counting.len());
    for l in counting {
        let seats = l.seats.map_or(UNLIMITED, u64::from);
        let Some(from) = &l.upgrade_from else {
            out.push((l.version.clone(), seats, u64::from(l.overdraft)));
            continue;
        };
        let mut wanted = seats;
        let mut moved = 0u64;
        for (v, n, _) in out.iter_mut().rev() {
            if wanted == 0 {
                break;
            }
            if *v < *from || *v >= l.version {
                continue;
            }
            let take = wanted.min(*n);
            if *n < UNLIMITED {
                *n -= take;
            }
            wanted -= take;
            moved += take;
        }
        out.push((l.version.clone(), moved, u64::from(l.overdraft)));
    }
    out
}

impl PoolLine {
    /// The line's dates as instants, read in the cluster's time zone `zone`: a day
    /// begins at its local midnight, and grace is whole local days after the expiry day.
    pub fn from_line(line: &FeatureLine, zone: Zone) -> Self {
        let grace_days = line.term.grace_days;
        PoolLine {
            feature_line: line.kind == crate::license::LineKind::Feature,
            issued_ms: line.issued.map_or(0, |d| zone.day_start_ms(d)),
            version: line.version.clone(),
            start_ms: line.start.map_or(0, |d| zone.day_start_ms(d)),
            end_ms: match line.expiry {
                Expiry::Permanent => None,
                Expiry::On(d) => Some(zone.day_end_ms(d)),
            },
            grace_ms: match line.expiry {
                Expiry::Permanent => u64::from(grace_days) * DAY_MS,
                Expiry::On(d) => zone
                    .grace_end_ms(d, grace_days)
                    .saturating_sub(zone.day_end_ms(d)),
            },
            demo_seats: line.term.demo_seats,
            seats: match line.count {
                Count::Uncounted => None,
                Count::Seats(n) => Some(n),
            },
            overdraft: line.overdraft,
            upgrade_from: line.upgrade_from.clone(),
        }
    }

    fn state(&self, now: TimeMs) -> LineState {
        if now < self.start_ms {
            return LineState::NotStarted;
        }
        match self.end_ms {
            None => LineState::Active,
            Some(end) if now < end => LineState::Active,
            Some(end) if now < end.saturating_add(self.grace_ms) => LineState::Grace,
            Some(_) => LineState::Expired,
        }
    }
}

/// Where a line stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineState {
    NotStarted,
    Active,
    /// Past expiry, inside `GRACE`: still counts (reports warn about it).
    Grace,
    Expired,
}

/// The lines of one feature that share one grouping, plus the demand of the seats charged
/// to them. A feature has one pool per `DUP_GROUP` its lines use, as in FlexNet ("if two
/// lines differ by any of these fields, a new group of licenses, called a license pool,
/// is created ... counted independently"); lines that differ only in version share one
/// pool, counted exactly as the module docs say. The pool is derived state: rebuilt from
/// the loaded licenses and the seats on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pool {
    pub lines: Vec<PoolLine>,
    /// The pool's grouping, which is also its identity among the feature's pools.
    pub dup_group: DupGroup,
    /// For a suite's component: the suite whose seat a checkout here also takes.
    pub suite: Option<String>,
    pub linger_ms: u64,
    pub model: LicenseModel,
    /// The smallest `EDITION_CAP` among the lines: the most seats the pool grants in all.
    pub cap: Option<u64>,
    /// Seats charged (held or lingering), by the version they were checked out at.
    pub demand: BTreeMap<Version, u64>,
    /// The options file's `MAX_OVERDRAFT` for the pool: at most this many seats beyond
    /// the licensed count, whatever the lines allow (see `policy.rs`).
    pub overdraft_cap: Option<u64>,
}

/// How long before a term's end a pool is "expiring": the renewal is usually issued four
/// weeks before the end, and an admin should notice by then.
pub const EXPIRING_WITHIN_MS: u64 = 28 * DAY_MS;

/// Where a pool's license term stands, from its signed dates and ledger time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TermState {
    /// No line has started yet.
    NotStarted { starts_ms: TimeMs },
    /// Valid, and not ending within [`EXPIRING_WITHIN_MS`] (`ends_ms`: `None` for a
    /// permanent line).
    Active { ends_ms: Option<TimeMs> },
    /// Valid, and ending within [`EXPIRING_WITHIN_MS`]: time to load the renewal.
    Expiring { ends_ms: TimeMs },
    /// Past its end, inside `GRACE`: still counts, with warnings, until `until_ms`.
    Grace { until_ms: TimeMs },
    /// Past its grace: only `seats` demo seats count until a renewal is loaded.
    Demo { seats: u32 },
    /// Past its end and grace, with no demo seats.
    Expired,
}

/// The seats a pool can grant right now, per threshold version.
struct Capacity {
    /// Distinct versions of counting lines, ascending, each with the seats of all counting
    /// lines of at least that version: (licensed, licensed + overdraft).
    thresholds: Vec<(Version, u64, u64)>,
}

impl Pool {
    pub fn charged(&self) -> u64 {
        self.demand.values().sum()
    }

    pub fn charge(&mut self, version: &Version, count: u32) {
        *self.demand.entry(version.clone()).or_default() += u64::from(count);
    }

    pub fn uncharge(&mut self, version: &Version, count: u32) {
        if let Some(d) = self.demand.get_mut(version) {
            *d = d.saturating_sub(u64::from(count));
            if *d == 0 {
                self.demand.remove(version);
            }
        }
    }

    /// Seats the counting lines grant at `now`, licensed and with overdraft. Lines past
    /// their grace fall back to the largest demo count among them when nothing else counts.
    /// With `site`, the options file's `MAX_OVERDRAFT` lowers the overdraft: for new
    /// grants and listings, never for the tests that revoke held seats (a policy change
    /// takes no seat back, not even at a later license load or term boundary).
    fn capacity(&self, now: TimeMs, site: bool) -> Capacity {
        let live: Vec<&PoolLine> = self
            .lines
            .iter()
            .filter(|l| matches!(l.state(now), LineState::Active | LineState::Grace))
            .collect();
        let first = first_feature_line(&live);
        let counting: Vec<&PoolLine> = live
            .iter()
            .enumerate()
            .filter(|(i, l)| !l.feature_line || Some(*i) == first)
            .map(|(_, l)| *l)
            .collect();
        let mut versions: Vec<Version> = self.lines.iter().map(|l| l.version.clone()).collect();
        versions.sort();
        versions.dedup();
        let demo = if counting.is_empty() {
            self.lines
                .iter()
                .filter(|l| l.state(now) == LineState::Expired)
                .map(|l| (l.version.clone(), l.demo_seats))
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        } else {
            None
        };
        let seats = with_upgrades(&counting);
        let thresholds = versions
            .into_iter()
            .map(|w| {
                let (mut licensed, mut with_overdraft) = (0u64, 0u64);
                for (_, n, over) in seats.iter().filter(|(v, _, _)| *v >= w) {
                    licensed = licensed.saturating_add(*n).min(UNLIMITED);
                    with_overdraft = with_overdraft
                        .saturating_add(*n)
                        .saturating_add(*over)
                        .min(UNLIMITED);
                }
                if let Some((v, seats)) = &demo {
                    if *v >= w {
                        licensed += u64::from(*seats);
                        with_overdraft += u64::from(*seats);
                    }
                }
                // The site may use less overdraft than the vendor allows, never more.
                if let Some(od) = self.overdraft_cap.filter(|_| site) {
                    with_overdraft = with_overdraft.min(licensed.saturating_add(od));
                }
                // An edition's cap bounds everything, overdraft included.
                if let Some(cap) = self.cap {
                    licensed = licensed.min(cap);
                    with_overdraft = with_overdraft.min(cap);
                }
                (w, licensed, with_overdraft)
            })
            .collect();
        Capacity { thresholds }
    }

    /// Demand of seats that need at least threshold `i`: those whose version is above the
    /// previous threshold's. Seats needing more than the highest line (possible only after
    /// a reload removed a line) cannot be matched to any line and are left out, so they
    /// never block others.
    fn demand_from(&self, cap: &Capacity, i: usize, extra: Option<(&Version, u64)>) -> u64 {
        let top = cap.thresholds.last().map(|t| &t.0);
        let lower = if i == 0 {
            None
        } else {
            cap.thresholds.get(i - 1).map(|t| &t.0)
        };
        let fits = |v: &Version| lower.is_none_or(|l| v > l) && top.is_some_and(|t| v <= t);
        let mut sum: u64 = self
            .demand
            .iter()
            .filter(|(v, _)| fits(v))
            .map(|(_, n)| *n)
            .sum();
        if let Some((v, n)) = extra {
            if fits(v) {
                sum += n;
            }
        }
        sum
    }

    /// Seats in use beyond the licensed count (the worst threshold), with `extra` added.
    fn overdraft_used(&self, cap: &Capacity, extra: Option<(&Version, u64)>) -> u64 {
        (0..cap.thresholds.len())
            .map(|i| {
                self.demand_from(cap, i, extra)
                    .saturating_sub(cap.thresholds[i].1)
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether `count` fresh seats at `version` can be charged at `now`. On success,
    /// returns how many of them are overdraft seats.
    pub fn admit(&self, now: TimeMs, version: &Version, count: u32) -> Result<u32, DenyReason> {
        let highest = self.lines.iter().map(|l| &l.version).max();
        if highest.is_none_or(|h| h < version) {
            return Err(DenyReason::VersionTooNew {
                requested: version.clone(),
                highest: highest.cloned().unwrap_or(Version::whole(0)),
            });
        }
        let eligible: Vec<&PoolLine> = self
            .lines
            .iter()
            .filter(|l| l.version >= *version)
            .collect();
        if eligible
            .iter()
            .all(|l| l.state(now) == LineState::NotStarted)
        {
            let start_ms = eligible.iter().map(|l| l.start_ms).min().unwrap_or(0);
            return Err(DenyReason::NotYetStarted { start_ms });
        }
        let cap = self.capacity(now, true);
        let first = cap
            .thresholds
            .iter()
            .position(|t| t.0 >= *version)
            .unwrap_or(0);
        let available = cap.thresholds.get(first).map_or(0, |t| t.2);
        if available == 0 {
            let expired_ms = eligible
                .iter()
                .filter_map(|l| l.end_ms.map(|e| e.saturating_add(l.grace_ms)))
                .max()
                .unwrap_or(0);
            if eligible.iter().all(|l| l.state(now) != LineState::Active) {
                return Err(DenyReason::Expired { expired_ms });
            }
        }
        let extra = Some((version, u64::from(count)));
        let fits = (0..cap.thresholds.len())
            .all(|i| self.demand_from(&cap, i, extra) <= cap.thresholds[i].2);
        if !fits {
            return Err(DenyReason::NoSeats {
                requested: count,
                in_use: self.charged(),
                available,
            });
        }
        let before = self.overdraft_used(&cap, None);
        let after = self.overdraft_used(&cap, extra);
        Ok(u32::try_from(after.saturating_sub(before))
            .unwrap_or(count)
            .min(count))
    }

    /// Whether the seats charged fit what the lines grant at `now`, overdraft included:
    /// Hall's condition at every threshold, and no seat charged at a version above every
    /// line (possible after a reload removed the line that granted it).
    pub fn fits(&self, now: TimeMs) -> bool {
        let cap = self.capacity(now, false);
        let top = cap.thresholds.last().map(|t| &t.0);
        if self.demand.keys().any(|v| top.is_none_or(|t| v > t)) {
            return false;
        }
        (0..cap.thresholds.len()).all(|i| self.demand_from(&cap, i, None) <= cap.thresholds[i].2)
    }

    /// Whether a seat charged at `version` counts against a threshold that is over at
    /// `now`, or needs a version no line has: taking such a seat away helps the pool fit.
    pub fn over_for(&self, now: TimeMs, version: &Version) -> bool {
        let cap = self.capacity(now, false);
        let Some(top) = cap.thresholds.last().map(|t| &t.0) else {
            return true;
        };
        if version > top {
            return true;
        }
        (0..cap.thresholds.len()).any(|i| {
            let counted = i == 0 || cap.thresholds.get(i - 1).is_some_and(|t| *version > t.0);
            counted && self.demand_from(&cap, i, None) > cap.thresholds[i].2
        })
    }

    /// The first instant after `now` at which the pool's term state may change (a line
    /// starts, starts expiring, ends, or its grace ends), when seats may have to be
    /// revoked and the change is an event.
    pub fn term_boundary_after(&self, now: TimeMs) -> Option<TimeMs> {
        self.lines
            .iter()
            .flat_map(|l| {
                let end = l.end_ms;
                [
                    Some(l.start_ms),
                    end.map(|e| e.saturating_sub(EXPIRING_WITHIN_MS)),
                    end,
                    end.map(|e| e.saturating_add(l.grace_ms)),
                ]
            })
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// The pool's term state at `now`; see [`TermState`].
    pub fn term_state(&self, now: TimeMs) -> TermState {
        let states: Vec<(LineState, &PoolLine)> =
            self.lines.iter().map(|l| (l.state(now), l)).collect();
        let active: Vec<&PoolLine> = states
            .iter()
            .filter(|(s, _)| *s == LineState::Active)
            .map(|(_, l)| *l)
            .collect();
        if !active.is_empty() {
            // The term ends when the last active line ends; never, if one is permanent.
            let ends_ms = if active.iter().any(|l| l.end_ms.is_none()) {
                None
            } else {
                active.iter().filter_map(|l| l.end_ms).max()
            };
            return match ends_ms {
                Some(e) if e.saturating_sub(now) <= EXPIRING_WITHIN_MS => {
                    TermState::Expiring { ends_ms: e }
                }
                ends_ms => TermState::Active { ends_ms },
            };
        }
        let grace = states
            .iter()
            .filter(|(s, _)| *s == LineState::Grace)
            .filter_map(|(_, l)| l.end_ms.map(|e| e.saturating_add(l.grace_ms)))
            .max();
        if let Some(until_ms) = grace {
            return TermState::Grace { until_ms };
        }
        if states.iter().all(|(s, _)| *s == LineState::NotStarted) {
            let starts_ms = self.lines.iter().map(|l| l.start_ms).min().unwrap_or(0);
            return TermState::NotStarted { starts_ms };
        }
        match self
            .lines
            .iter()
            .filter(|l| l.state(now) == LineState::Expired)
            .map(|l| l.demo_seats)
            .max()
        {
            Some(seats) if seats > 0 => TermState::Demo { seats },
            _ => TermState::Expired,
        }
    }

    /// Seats that the counting lines grant now (licensed, overdraft limit), at the lowest
    /// version. For status displays.
    pub fn issued(&self, now: TimeMs) -> (u64, u64) {
        let cap = self.capacity(now, true);
        cap.thresholds.first().map_or((0, 0), |t| (t.1, t.2 - t.1))
    }
}

/// A feature's term state over its pools: the best any of them is in (a feature is usable
/// while one of its pools is), in the order Active, Expiring, Grace, Demo, NotStarted,
/// Expired; `None` without pools.
pub(crate) fn term_of(pools: &[Pool], now: TimeMs) -> Option<TermState> {
    let rank = |t: &TermState| match t {
        TermState::Active { .. } => 0,
        TermState::Expiring { .. } => 1,
        TermState::Grace { .. } => 2,
        TermState::Demo { .. } => 3,
        TermState::NotStarted { .. } => 4,
        TermState::Expired => 5,
    };
    pools
        .iter()
        .map(|p| p.term_state(now))
        .min_by_key(|t| rank(t))
}
