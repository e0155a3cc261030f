//! The checkout decision an options file implies, FlexNet's rules of precedence: EXCLUDE
//! before INCLUDE, then MAX, then RESERVE (and, for a borrow, the borrow lists and
//! `BORROW_LOWWATER`). Pure: the caller says who asks and who holds what; every denial
//! names the directive and its line.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Directive, FeatureKey, FeatureRef, GroupKind, Options, Target};

/// A client as the server knows it: what it asserted, and the address it came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Who<'a> {
    pub user: &'a str,
    pub host: &'a str,
    pub display: &'a str,
    /// The peer address the server saw; `None` matches no `INTERNET` target.
    pub ip: Option<IpAddr>,
    /// The client's project tag; `None` matches no `PROJECT` target.
    pub project: Option<&'a str>,
}

/// A checkout (or borrow) to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub feature: FeatureKey<'a>,
    pub who: Who<'a>,
    /// Seats the grant adds to the pool's use: 0 when it reuses a seat the requester
    /// already holds (duplicate grouping, a lingering seat), which only INCLUDE/EXCLUDE
    /// can refuse, since MAX and RESERVE are about taking seats.
    pub seats: u32,
    /// A borrow: the borrow lists and `BORROW_LOWWATER` apply too.
    pub borrow: bool,
}

/// The pool's current use, as the policy needs to see it.
pub trait FeatureUse {
    /// Seats the pool can grant in all (count plus the overdraft in force);
    /// `u32::MAX` for an uncounted pool.
    fn capacity(&self) -> u32;
    /// Calls `f` once per holder of the pool's seats (lingering and borrowed seats
    /// included) with the seats it holds. The order decides nothing but which
    /// reservation an overlapping holder is counted against, so keep it deterministic.
    fn for_each_holder(&self, f: &mut dyn FnMut(&Who<'_>, u32));
    /// Seats of the pool out on borrow now.
    fn borrowed(&self) -> u32;
}

/// One holder and its seats, for [`UseTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding<'a> {
    pub who: Who<'a>,
    pub seats: u32,
}

/// A [`FeatureUse`] given as a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseTable<'a> {
    pub capacity: u32,
    pub borrowed: u32,
    pub holders: &'a [Holding<'a>],
}

impl FeatureUse for UseTable<'_> {
    fn capacity(&self) -> u32 {
        self.capacity
    }
    fn for_each_holder(&self, f: &mut dyn FnMut(&Who<'_>, u32)) {
        for h in self.holders {
            f(&h.who, h.seats);
        }
    }
    fn borrowed(&self) -> u32 {
        self.borrowed
    }
}

/// What the policy says about a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// Why the policy refuses, citing the directive and its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub code: DenialCode,
    pub line: u32,
    pub directive: Directive,
    /// The particulars, in a sentence: who holds how many, what is left.
    pub detail: String,
}

/// The kind of refusal, as clients and listings show it. (New variants go at the end.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DenialCode {
    /// An EXCLUDE names the requester, or an INCLUDE list does not.
    ExcludedByPolicy,
    /// A MAX for the requester (or a group of theirs) is reached.
    MaxReachedByPolicy,
    /// The free seats are kept by others' RESERVE lines.
    ReservedForOthers,
    /// A borrow would leave fewer unborrowed seats than `BORROW_LOWWATER`.
    BorrowLowwater,
}

impl DenialCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialCode::ExcludedByPolicy => "EXCLUDED_BY_POLICY",
            DenialCode::MaxReachedByPolicy => "MAX_REACHED_BY_POLICY",
            DenialCode::ReservedForOthers => "RESERVED_FOR_OTHERS",
            DenialCode::BorrowLowwater => "BORROW_LOWWATER_BY_POLICY",
        }
    }
}

impl fmt::Display for Denial {
    /// `EXCLUDED_BY_POLICY (options line 4: EXCLUDE cad USER bob): bob is excluded`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (options line {}: {}): {}",
            self.code.as_str(),
            self.line,
            self.directive,
            self.detail
        )
    }
}

impl Options {
    /// Whether `target` names `who`. Groups hold users, host groups hosts; only group
    /// membership follows `GROUPCASEINSENSITIVE` (FlexNet's rule).
    pub fn matches(&self, target: &Target, who: &Who<'_>) -> bool {
        match target {
            Target::User(n) => who.user == n,
            Target::Host(n) => who.host == n,
            Target::Display(n) => who.display == n,
            Target::Project(n) => who.project == Some(n.as_str()),
            Target::Group(g) => self.index.contains(GroupKind::Group, g, who.user),
            Target::HostGroup(g) => self.index.contains(GroupKind::HostGroup, g, who.host),
            Target::Internet(p) => who.ip.is_some_and(|ip| p.matches(ip)),
        }
    }

    /// Decides a request against the policy and the pool's use. `Allow` is the policy's
    /// consent only: whether the pool has a seat is the ledger's own check (so a full
    /// pool is never reported as a reservation).
    pub fn evaluate(&self, req: &Request<'_>, pool: &dyn FeatureUse) -> Decision {
        let denial = self
            .access(req, false)
            .or_else(|| {
                if req.borrow {
                    self.access(req, true)
                } else {
                    None
                }
            })
            .or_else(|| {
                if req.seats == 0 {
                    None
                } else {
                    self.over_max(req, pool)
                }
            })
            .or_else(|| {
                if req.seats == 0 {
                    None
                } else {
                    self.reserved(req, pool)
                }
            })
            .or_else(|| {
                if req.borrow {
                    self.lowwater(req, pool)
                } else {
                    None
                }
            });
        denial.map_or(Decision::Allow, Decision::Deny)
    }

    fn deny(code: DenialCode, line: u32, d: &Directive, detail: String) -> Denial {
        Denial {
            code,
            line,
            directive: d.clone(),
            detail,
        }
    }

    /// FlexNet's precedence: the EXCLUDE list is checked first (on both, you are out);
    /// then, if the feature has an INCLUDE list, only those on it may use it.
    fn access(&self, req: &Request<'_>, borrow: bool) -> Option<Denial> {
        let key = &req.feature;
        let about = |f: &FeatureRef| f.applies_to(key);
        for l in self.lines() {
            let who = match &l.directive {
                Directive::Exclude { feature, who } if !borrow && about(feature) => who,
                Directive::ExcludeAll { who } if !borrow => who,
                Directive::ExcludeBorrow { feature, who } if borrow && about(feature) => who,
                _ => continue,
            };
            if self.matches(who, &req.who) {
                let detail = format!("{} may not use {}", req.who.user, key.name);
                return Some(Self::deny(
                    DenialCode::ExcludedByPolicy,
                    l.line,
                    &l.directive,
                    detail,
                ));
            }
        }
        let mut first = None;
        for l in self.lines() {
            let who = match &l.directive {
                Directive::Include { feature, who } if !borrow && about(feature) => who,
                Directive::IncludeAll { who } if !borrow => who,
                Directive::IncludeBorrow { feature, who } if borrow && about(feature) => who,
                _ => continue,
            };
            if self.matches(who, &req.who) {
                return None;
            }
            first = first.or(Some(l));
        }
        first.map(|l| {
            let list = if borrow { "INCLUDE_BORROW" } else { "INCLUDE" };
            let detail = format!("{} is not on the {list} list of {}", req.who.user, key.name);
            Self::deny(DenialCode::ExcludedByPolicy, l.line, &l.directive, detail)
        })
    }

    /// Every MAX that covers the requester caps what its target holds together.
    fn over_max(&self, req: &Request<'_>, pool: &dyn FeatureUse) -> Option<Denial> {
        for l in self.lines() {
            let Directive::Max {
                seats: max,
                feature,
                who,
            } = &l.directive
            else {
                continue;
            };
            if !feature.applies_to(&req.feature) || !self.matches(who, &req.who) {
                continue;
            }
            let mut held = 0u64;
            pool.for_each_holder(&mut |h, n| {
                if self.matches(who, h) {
                    held += u64::from(n);
                }
            });
            if held + u64::from(req.seats) > u64::from(*max) {
                let detail = format!(
                    "{who} holds {held} seat(s) of {}, at most {max}; {} more asked",
                    req.feature.name, req.seats
                );
                return Some(Self::deny(
                    DenialCode::MaxReachedByPolicy,
                    l.line,
                    &l.directive,
                    detail,
                ));
            }
        }
        None
    }

    /// Seats reserved for others stay free for them: refused when, after the grant,
    /// fewer seats would be free than the reservations of others not yet in use. Each
    /// holder's seats fill the reservations it belongs to in file order (first come in
    /// `for_each_holder` order), so no seat counts for two reservations; the
    /// requester's own reservations never hold a seat back from the requester.
    fn reserved(&self, req: &Request<'_>, pool: &dyn FeatureUse) -> Option<Denial> {
        let mut rooms: Vec<(&super::Line, &Target, u64)> = self
            .lines()
            .iter()
            .filter_map(|l| match &l.directive {
                Directive::Reserve {
                    seats,
                    feature,
                    who,
                } if feature.applies_to(&req.feature) => Some((l, who, u64::from(*seats))),
                _ => None,
            })
            .collect();
        if rooms.is_empty() {
            return None;
        }
        let mut in_use = 0u64;
        pool.for_each_holder(&mut |h, n| {
            in_use += u64::from(n);
            let mut left = u64::from(n);
            for (_, who, room) in rooms.iter_mut() {
                if left == 0 {
                    break;
                }
                if *room > 0 && self.matches(who, h) {
                    let take = left.min(*room);
                    *room -= take;
                    left -= take;
                }
            }
        });
        let free = u64::from(pool.capacity()).saturating_sub(in_use);
        let asked = u64::from(req.seats);
        let others: Vec<_> = rooms
            .iter()
            .filter(|(_, who, room)| *room > 0 && !self.matches(who, &req.who))
            .collect();
        let kept: u64 = others.iter().map(|(_, _, room)| room).sum();
        if asked > free || free - asked >= kept {
            return None;
        }
        let (l, _, _) = others.first()?;
        let detail = format!(
            "{kept} of the {free} free seat(s) of {} are reserved for others",
            req.feature.name
        );
        Some(Self::deny(
            DenialCode::ReservedForOthers,
            l.line,
            &l.directive,
            detail,
        ))
    }

    fn lowwater(&self, req: &Request<'_>, pool: &dyn FeatureUse) -> Option<Denial> {
        let (keep, line) = self.borrow_lowwater(&req.feature)?;
        let l = self.lines().iter().find(|l| l.line == line)?;
        let may = u64::from(pool.capacity()).saturating_sub(u64::from(keep));
        let after = u64::from(pool.borrowed()) + u64::from(req.seats);
        (after > may).then(|| {
            let detail = format!(
                "{keep} seat(s) of {} may not be borrowed; {} are out on borrow",
                req.feature.name,
                pool.borrowed()
            );
            Self::deny(DenialCode::BorrowLowwater, l.line, &l.directive, detail)
        })
    }
}
