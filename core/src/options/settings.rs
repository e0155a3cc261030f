//! What the options file changes about a feature's vendor terms (linger, overdraft,
//! timeout, borrowing), each bounded the way FlexNet bounds it, and the load-time check
//! that reservations fit in the pools.

use std::collections::BTreeMap;

use super::{Directive, FeatureRef, Line, Options, OptionsError, Qualifier};
use crate::license::{DupGroup, Version};

/// The license lines a request is served from, as a directive's `feature:VERSION=` or
/// `feature:DUP_GROUP=` qualifier selects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureKey<'a> {
    pub name: &'a str,
    /// The version of the license line serving the request; `None` matches no
    /// `:VERSION=` qualifier.
    pub version: Option<&'a Version>,
    pub dup_group: DupGroup,
}

impl<'a> FeatureKey<'a> {
    /// A feature by name alone (no version, no duplicate grouping).
    pub fn named(name: &'a str) -> FeatureKey<'a> {
        FeatureKey {
            name,
            version: None,
            dup_group: DupGroup::None,
        }
    }
}

impl FeatureRef {
    /// Whether this reference selects the lines `key` describes.
    pub fn applies_to(&self, key: &FeatureKey<'_>) -> bool {
        self.name == key.name
            && match &self.qualifier {
                None => true,
                Some(Qualifier::Version(v)) => key.version == Some(v),
                Some(Qualifier::DupGroup(g)) => *g == key.dup_group,
            }
    }
}

impl Options {
    /// The directives that name `feature` (under any qualifier), in file order: what
    /// `tallyctl features` shows beside a pool.
    pub fn about<'s>(&'s self, feature: &'s str) -> impl Iterator<Item = &'s Line> + 's {
        self.lines()
            .iter()
            .filter(move |l| feature_of(&l.directive).is_some_and(|f| f.name == feature))
    }

    /// A single-valued per-feature setting for `key`, and its line: a qualified line that
    /// applies beats an unqualified one, since it says more about these license lines.
    fn setting(
        &self,
        key: &FeatureKey<'_>,
        pick: impl Fn(&Directive) -> Option<(&FeatureRef, u32)>,
    ) -> Option<(u32, u32)> {
        let mut plain = None;
        for l in self.lines() {
            let Some((f, value)) = pick(&l.directive) else {
                continue;
            };
            if !f.applies_to(key) {
                continue;
            }
            if f.qualifier.is_some() {
                return Some((value, l.line));
            }
            plain = plain.or(Some((value, l.line)));
        }
        plain
    }

    /// The linger in seconds: the vendor's, or the options file's `LINGER` when longer
    /// (FlexNet: an options file may lengthen the linger, never shorten it).
    pub fn linger_secs(&self, key: &FeatureKey<'_>, vendor_secs: u32) -> u32 {
        let given = self.setting(key, |d| match d {
            Directive::Linger { feature, secs } => Some((feature, *secs)),
            _ => None,
        });
        given.map_or(vendor_secs, |(s, _)| s.max(vendor_secs))
    }

    /// The overdraft in seats: the vendor's, or `MAX_OVERDRAFT` when lower (a site may
    /// use less overdraft than it bought, never more).
    pub fn overdraft(&self, key: &FeatureKey<'_>, vendor_seats: u32) -> u32 {
        let given = self.setting(key, |d| match d {
            Directive::MaxOverdraft { feature, seats } => Some((feature, *seats)),
            _ => None,
        });
        given.map_or(vendor_seats, |(s, _)| s.min(vendor_seats))
    }

    /// The idle timeout in seconds: the feature's `TIMEOUT`, else `TIMEOUTALL`, else none
    /// (seats are then never taken back for idleness). Never below
    /// [`TIMEOUT_FLOOR_SECS`](super::TIMEOUT_FLOOR_SECS): the parser refuses less.
    pub fn timeout_secs(&self, key: &FeatureKey<'_>) -> Option<u32> {
        let own = self.setting(key, |d| match d {
            Directive::Timeout { feature, secs } => Some((feature, *secs)),
            _ => None,
        });
        own.map(|(s, _)| s).or_else(|| {
            self.lines().iter().find_map(|l| match l.directive {
                Directive::TimeoutAll { secs } => Some(secs),
                _ => None,
            })
        })
    }

    /// The longest borrow in hours: the vendor's `BORROW=hours`, or `MAX_BORROW_HOURS`
    /// when lower. `None` when borrowing is not allowed: the vendor gave no hours (an
    /// options file cannot allow what the license does not), or the cap is 0.
    pub fn borrow_hours(&self, key: &FeatureKey<'_>, vendor_hours: Option<u32>) -> Option<u32> {
        let given = self.setting(key, |d| match d {
            Directive::MaxBorrowHours { feature, hours } => Some((feature, *hours)),
            _ => None,
        });
        let hours = vendor_hours?;
        let hours = given.map_or(hours, |(h, _)| h.min(hours));
        (hours > 0).then_some(hours)
    }

    /// `BORROW_LOWWATER`: seats of the feature that can never be borrowed, and its line.
    pub fn borrow_lowwater(&self, key: &FeatureKey<'_>) -> Option<(u32, u32)> {
        self.setting(key, |d| match d {
            Directive::BorrowLowwater { feature, seats } => Some((feature, *seats)),
            _ => None,
        })
    }

    /// Checks that each feature's reservations (all its RESERVE lines, whatever their
    /// qualifier, since they share one pool) fit in its licensed seats. `seats` maps a
    /// feature to its pool's count; features it lacks (uncounted or unknown) are not
    /// checked. The error is for the first overbooked feature by name, and lists its
    /// RESERVE lines from the first that does not fit.
    pub fn check_reservations(&self, seats: &BTreeMap<String, u32>) -> Result<(), OptionsError> {
        let mut per_feature: BTreeMap<&str, Vec<(u32, u32)>> = BTreeMap::new();
        for l in self.lines() {
            if let Directive::Reserve {
                seats: n, feature, ..
            } = &l.directive
            {
                per_feature
                    .entry(&feature.name)
                    .or_default()
                    .push((l.line, *n));
            }
        }
        for (feature, reserves) in per_feature {
            let Some(&pool) = seats.get(feature) else {
                continue;
            };
            let mut total = 0u64;
            let mut over = Vec::new();
            for (line, n) in reserves {
                total += u64::from(n);
                if total > u64::from(pool) {
                    over.push(line);
                }
            }
            if !over.is_empty() {
                return Err(OptionsError::Overbooked {
                    feature: feature.to_owned(),
                    reserved: total,
                    seats: pool,
                    lines: over,
                });
            }
        }
        Ok(())
    }
}

/// The feature a directive is about, if it names one.
pub(super) fn feature_of(d: &Directive) -> Option<&FeatureRef> {
    match d {
        Directive::Include { feature, .. }
        | Directive::Exclude { feature, .. }
        | Directive::Reserve { feature, .. }
        | Directive::Max { feature, .. }
        | Directive::Linger { feature, .. }
        | Directive::MaxOverdraft { feature, .. }
        | Directive::Timeout { feature, .. }
        | Directive::MaxBorrowHours { feature, .. }
        | Directive::BorrowLowwater { feature, .. }
        | Directive::IncludeBorrow { feature, .. }
        | Directive::ExcludeBorrow { feature, .. } => Some(feature),
        Directive::IncludeAll { .. }
        | Directive::ExcludeAll { .. }
        | Directive::Group { .. }
        | Directive::HostGroup { .. }
        | Directive::GroupCaseInsensitive { .. }
        | Directive::TimeoutAll { .. } => None,
    }
}
