//! Suites (`PACKAGE ... OPTIONS=SUITE`): "the corresponding feature of the same name as
//! the package is checked out in addition to the component feature being checked out"
//! (FLEXnet End User Guide, "PACKAGE Lines"). So a checkout of a suite's component takes
//! two seats at once, all or nothing: one of the component, and one of the suite, which
//! bounds how many use the suite at all.
//!
//! The suite's seat is shared the way its `SUITE_DUP_GROUP` says ("allows the package to
//! be shared among the users that have the SUITE checked out"); without one, by the
//! enabling line's `DUP_GROUP`; with no grouping at all, one process (a session) using
//! several components takes one suite seat, as one FlexNet job does. The component's
//! lease is a holder of both seats (`Lease::suite_seat`): releasing, removing or revoking
//! it lets go of both, and revoking a suite seat revokes the components' leases that hold
//! it, since they were granted only with it.

use std::collections::BTreeSet;

use super::pool::Pool;
use super::{DenyReason, Event, LeaseId, Ledger, Seat, SeatId, SessionId};
use crate::license::{DupGroup, Version};

/// Added to the index of the entry that charges a fresh suite seat, to make the seat's id:
/// that entry charges the component's seat too, whose id is the index itself. Log indexes
/// never come near 2^63, so the two ranges never meet, and the id still says which entry
/// charged the seat.
pub const SUITE_SEAT: SeatId = 1 << 63;

/// How a component's checkout gets its suite seat.
pub(super) enum SuitePlan {
    /// A seat of the suite this owner (or, ungrouped, this session) has already.
    Reuse(SeatId),
    /// A fresh seat in the suite's pool of this grouping.
    Fresh(DupGroup),
}

impl Ledger {
    /// Where the suite seat of a component checkout by `session` comes from, or why
    /// there is none (the checkout is then denied, naming the suite). Changes nothing.
    pub(super) fn suite_plan(
        &self,
        suite: &str,
        session: SessionId,
    ) -> Result<SuitePlan, DenyReason> {
        let now = self.st.now_ms;
        let pools = self.ix.pools_of(suite);
        // Any version of the suite's own line will do: the component's version was
        // checked against the component's lines.
        let any = Version::whole(0);
        let answers: Vec<(DupGroup, Result<u32, DenyReason>)> = pools
            .iter()
            .map(|p| (p.dup_group, p.admit(now, &any, 1)))
            .collect();
        for (group, a) in &answers {
            if matches!(
                a,
                Err(DenyReason::VersionTooNew { .. }
                    | DenyReason::NotYetStarted { .. }
                    | DenyReason::Expired { .. })
            ) {
                continue;
            }
            let key = self.dup_key(*group, session);
            let Some(seats) = self.ix.by_key.get(&(suite.to_owned(), key)) else {
                continue;
            };
            let own = seats.iter().copied().find(|id| {
                self.st.seats.get(id).is_some_and(|s| {
                    s.group == *group
                        && (s.lingering_until.is_some()
                            || *group != DupGroup::None
                            || s.holders.iter().any(|l| {
                                self.st.leases.get(l).is_some_and(|l| l.session == session)
                            }))
                })
            });
            if let Some(id) = own {
                return Ok(SuitePlan::Reuse(id));
            }
        }
        if let Some((group, _)) = answers.iter().find(|(_, a)| a.is_ok()) {
            return Ok(SuitePlan::Fresh(*group));
        }
        if pools.is_empty() {
            return Err(DenyReason::UnknownFeature);
        }
        Err(super::seats::telling(
            answers.into_iter().map(|(_, a)| a),
            pools,
            1,
        ))
    }

    /// Carries out a [`SuitePlan`] for `lease`, returning the suite seat it now holds.
    pub(super) fn take_suite_seat(
        &mut self,
        lease: LeaseId,
        session: SessionId,
        suite: &str,
        plan: SuitePlan,
    ) -> SeatId {
        match plan {
            SuitePlan::Reuse(id) => {
                if let Some(seat) = self.st.seats.get_mut(&id) {
                    if let Some(until) = seat.lingering_until.take() {
                        self.ix.lingering.remove(&(until, id));
                        self.ix.set_lingering(suite, &seat.key, id, false);
                    }
                    seat.holders.insert(lease);
                    seat.fencing_token = lease;
                }
                id
            }
            SuitePlan::Fresh(group) => {
                let id = lease | SUITE_SEAT;
                let key = self.dup_key(group, session);
                let version = Version::whole(0);
                self.st.seats.insert(
                    id,
                    Seat {
                        feature: suite.to_owned(),
                        version: version.clone(),
                        count: 1,
                        key: key.clone(),
                        holders: BTreeSet::from([lease]),
                        lingering_until: None,
                        fencing_token: lease,
                        group,
                        charged_ms: self.st.now_ms,
                    },
                );
                if let Some(pool) = self.ix.pool_mut(suite, group) {
                    pool.charge(&version, 1);
                }
                self.ix
                    .by_key
                    .entry((suite.to_owned(), key))
                    .or_default()
                    .insert(id);
                id
            }
        }
    }

    /// `lease` lets go of `seat`. When it was the last holder, the seat lingers for its
    /// pool's linger time (`linger`: a release by the holder), or goes back to its pool
    /// at once (a removal or revocation).
    pub(super) fn let_go(
        &mut self,
        seat_id: SeatId,
        lease: LeaseId,
        linger: bool,
        ev: &mut Vec<Event>,
    ) {
        let now = self.st.now_ms;
        let Some(seat) = self.st.seats.get_mut(&seat_id) else {
            return;
        };
        seat.holders.remove(&lease);
        if !seat.holders.is_empty() {
            return;
        }
        let linger_ms = if linger {
            let vendor = self
                .ix
                .pool(&seat.feature, seat.group)
                .map_or(0, |p: &Pool| p.linger_ms);
            // An options file's LINGER may lengthen the vendor's, never shorten it.
            let site =
                Ledger::site_linger_ms(&self.st.options, &seat.feature, &seat.version, seat.group);
            vendor.max(site)
        } else {
            0
        };
        if linger_ms > 0 {
            let until = now.saturating_add(linger_ms);
            seat.lingering_until = Some(until);
            self.ix.lingering.insert((until, seat_id));
            let feature = seat.feature.clone();
            let key = seat.key.clone();
            self.ix.set_lingering(&feature, &key, seat_id, true);
            ev.push(Event::Lingering {
                feature,
                seat: seat_id,
                until,
            });
        } else {
            self.free_seat(seat_id, ev);
        }
    }
}
