//! Seats and leases: checkout (sharing, linger reuse, fresh seats), release and linger,
//! reclaim, admin removal, and license loads that reshape the pools.

use std::collections::BTreeSet;

use super::pool::Pool;
use super::{
    DenyReason, DupKey, Event, Grant, Lease, LeaseId, Ledger, ReleaseCause, Reply, RequestId,
    RevokeReason, Seat, SeatId, SessionId,
};
use crate::license::{DupGroup, LicenseModel, Version};

/// Why no pool of a feature grants a checkout, from each pool's answer: short of seats if
/// any pool is (with every pool's seats in use, and the most one pool could grant, since
/// a checkout is granted from one pool), else the first of expired, not started, and a
/// version above every line (naming the highest version of any pool).
pub(super) fn telling(
    answers: impl Iterator<Item = Result<u32, DenyReason>>,
    pools: &[Pool],
    count: u32,
) -> DenyReason {
    let reasons: Vec<DenyReason> = answers.filter_map(Result::err).collect();
    let short = reasons.iter().filter_map(|r| match r {
        DenyReason::NoSeats { available, .. } => Some(*available),
        _ => None,
    });
    if let Some(available) = short.max() {
        return DenyReason::NoSeats {
            requested: count,
            in_use: pools.iter().map(Pool::charged).sum(),
            available,
        };
    }
    let rank = |r: &DenyReason| match r {
        DenyReason::Expired { .. } => 0,
        DenyReason::NotYetStarted { .. } => 1,
        _ => 2,
    };
    let mut best = reasons
        .iter()
        .min_by_key(|r| rank(r))
        .cloned()
        .unwrap_or(DenyReason::UnknownFeature);
    if let DenyReason::VersionTooNew { highest, .. } = &mut best {
        for r in &reasons {
            if let DenyReason::VersionTooNew { highest: h, .. } = r {
                if h > highest {
                    *highest = h.clone();
                }
            }
        }
    }
    best
}

/// No single checkout may ask for more seats than this; larger counts are certainly
/// garbled input, and refusing them keeps every sum far from overflow.
pub const MAX_CHECKOUT_COUNT: u32 = 1_000_000;

impl Ledger {
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one Op::Checkout, passed from its one call site"
    )]
    pub(super) fn checkout(
        &mut self,
        index: u64,
        req: RequestId,
        session: SessionId,
        feature: &str,
        version: &Version,
        count: u32,
        wait_ms: Option<u64>,
        ev: &mut Vec<Event>,
    ) -> Reply {
        // Waiters that could take fresh seats now go first: nobody takes one past them
        // (first come, first served among servable requests; see queue.rs).
        let fresh_allowed = !self.waiter_could_take_fresh_seats(feature, self.st.now_ms);
        match self.try_checkout(index, session, feature, version, count, fresh_allowed) {
            Ok(grant) => {
                ev.push(Event::Granted {
                    feature: feature.to_owned(),
                    session,
                    grant: grant.clone(),
                });
                Reply::Granted(grant)
            }
            // A request for more than the feature grants at all could never be served:
            // it is denied, not queued forever.
            Err(
                DenyReason::NoSeats {
                    requested,
                    available,
                    ..
                }
                | DenyReason::QueuedAhead {
                    requested,
                    available,
                    ..
                },
            ) if wait_ms.is_some() && u64::from(requested) <= available => self.enqueue(
                index,
                req,
                session,
                feature,
                version,
                count,
                wait_ms.unwrap_or(0),
                ev,
            ),
            Err(reason) => {
                ev.push(Event::Denied {
                    feature: feature.to_owned(),
                    session,
                    reason: reason.clone(),
                });
                Reply::Denied(reason)
            }
        }
    }

    /// A grant, or why not. `fresh_allowed` is false while others wait for the feature:
    /// then only a seat this owner already has (lingering, or shared) may be taken.
    pub(super) fn try_checkout(
        &mut self,
        index: u64,
        session: SessionId,
        feature: &str,
        version: &Version,
        count: u32,
        fresh_allowed: bool,
    ) -> Result<Grant, DenyReason> {
        let now = self.st.now_ms;
        self.named_admission(feature, session)?;
        let pools = self.ix.pools_of(feature);
        if pools.is_empty() {
            return Err(DenyReason::UnknownFeature);
        }
        let named = pools
            .iter()
            .any(|p| matches!(p.model, LicenseModel::NamedUser { .. }));
        // A named user is one seat: asking for more is a garbled request.
        if count == 0 || count > MAX_CHECKOUT_COUNT || (named && count != 1) {
            return Err(DenyReason::InvalidCount { requested: count });
        }
        // Each pool's answer for fresh seats, in the order the pools are tried (FlexNet
        // tries a feature's pools in license order). Even a shared or reused seat needs
        // its pool to be grantable now: an expired license must not keep handing out
        // seats through linger reuse.
        let answers: Vec<(DupGroup, Result<u32, DenyReason>)> = pools
            .iter()
            .map(|p| (p.dup_group, p.admit(now, version, count)))
            .collect();
        let grantable = |a: &Result<u32, DenyReason>| {
            !matches!(
                a,
                Err(DenyReason::VersionTooNew { .. }
                    | DenyReason::NotYetStarted { .. }
                    | DenyReason::Expired { .. })
            )
        };
        // Reuse before charging anything new: under DUP_GROUP any seat of the same owner
        // (held or lingering); without grouping only a lingering one of the same size.
        let mut reuse = None;
        for (group, _) in answers.iter().filter(|(_, a)| grantable(a)) {
            let key = self.dup_key(*group, session);
            let shared = *group != DupGroup::None;
            if let Some(id) = self.reusable_seat(feature, *group, &key, version, count, shared) {
                reuse = Some((id, *group));
                break;
            }
        }
        // The site's policy, before anything is charged: for the pool the grant would
        // come from (the reused seat's, else the first that has seats, else the first
        // usable one, so a full pool still refuses an excluded user as excluded and
        // never queues them). Reusing a seat takes no seat, which MAX and RESERVE are
        // about.
        let policy_group = reuse
            .map(|r| r.1)
            .or_else(|| answers.iter().find(|(_, a)| a.is_ok()).map(|(g, _)| *g))
            .or_else(|| answers.iter().find(|(_, a)| grantable(a)).map(|(g, _)| *g));
        if let Some(group) = policy_group {
            let seats = if reuse.is_some() { 0 } else { count };
            self.policy_consent(session, feature, version, group, seats)?;
        }
        let pools = self.ix.pools_of(feature);
        let fresh = match reuse {
            Some(_) => None,
            None => {
                let Some((group, overdraft)) = answers
                    .iter()
                    .find_map(|(g, a)| a.as_ref().ok().map(|o| (*g, *o)))
                else {
                    return Err(telling(answers.into_iter().map(|(_, a)| a), pools, count));
                };
                if !fresh_allowed {
                    let (issued, overdraft_limit) = pools.iter().fold((0, 0), |(i, o), p| {
                        let (pi, po) = p.issued(now);
                        (i + pi, o + po)
                    });
                    let waiting = self.ix.queues.get(feature).map_or(0, |q| q.len());
                    return Err(DenyReason::QueuedAhead {
                        requested: count,
                        in_use: pools.iter().map(Pool::charged).sum(),
                        available: issued + overdraft_limit,
                        waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
                    });
                }
                Some((group, overdraft))
            }
        };
        // A suite's component needs the suite's seat as well, all or nothing: decided
        // before anything changes.
        let group = reuse.map_or_else(|| fresh.map_or(DupGroup::None, |f| f.0), |r| r.1);
        let suite = self.ix.pool(feature, group).and_then(|p| p.suite.clone());
        let suite_plan =
            match &suite {
                Some(name) => Some(self.suite_plan(name, session).map_err(|reason| {
                    DenyReason::SuiteDenied {
                        suite: name.clone(),
                        reason: Box::new(reason),
                    }
                })?),
                None => None,
            };
        let grant = match (reuse, fresh) {
            (Some((seat_id, _)), _) => self.reuse_seat(index, seat_id, feature)?,
            (None, Some((group, overdraft))) => {
                self.fresh_seat(index, session, feature, version, count, group);
                Grant {
                    lease: index,
                    seat: index,
                    fencing_token: index,
                    count,
                    overdraft,
                    reused: false,
                    shared: false,
                    granted_ms: now,
                }
            }
            (None, None) => return Err(DenyReason::UnknownFeature),
        };
        let grant = Grant { count, ..grant };
        self.add_lease(index, grant.seat, session, feature, version, count);
        if let (Some(name), Some(plan)) = (suite, suite_plan) {
            let seat = self.take_suite_seat(index, session, &name, plan);
            if let Some(l) = self.st.leases.get_mut(&index) {
                l.suite_seat = Some(seat);
            }
        }
        Ok(grant)
    }

    /// Takes over `seat_id` (lingering, or shared under `DUP_GROUP`) for the lease
    /// `index`.
    fn reuse_seat(
        &mut self,
        index: u64,
        seat_id: SeatId,
        feature: &str,
    ) -> Result<Grant, DenyReason> {
        let now = self.st.now_ms;
        let seat = self
            .st
            .seats
            .get_mut(&seat_id)
            .ok_or(DenyReason::UnknownFeature)?;
        let reused = seat.lingering_until.is_some();
        if let Some(until) = seat.lingering_until.take() {
            self.ix.lingering.remove(&(until, seat_id));
            self.ix.set_lingering(feature, &seat.key, seat_id, false);
        }
        seat.holders.insert(index);
        seat.fencing_token = index;
        Ok(Grant {
            lease: index,
            seat: seat_id,
            fencing_token: index,
            count: seat.count,
            overdraft: 0,
            reused,
            shared: !reused,
            granted_ms: now,
        })
    }

    /// Charges a fresh seat, whose id is `index`, to the pool of `group`.
    fn fresh_seat(
        &mut self,
        index: u64,
        session: SessionId,
        feature: &str,
        version: &Version,
        count: u32,
        group: DupGroup,
    ) {
        let key = self.dup_key(group, session);
        self.st.seats.insert(
            index,
            Seat {
                feature: feature.to_owned(),
                version: version.clone(),
                count,
                key: key.clone(),
                holders: BTreeSet::from([index]),
                lingering_until: None,
                fencing_token: index,
                group,
                charged_ms: self.st.now_ms,
            },
        );
        if let Some(pool) = self.ix.pool_mut(feature, group) {
            pool.charge(version, count);
        }
        self.ix
            .by_key
            .entry((feature.to_owned(), key))
            .or_default()
            .insert(index);
    }

    /// Who owns a seat of a pool grouped by `group`: the holder's parts that the
    /// grouping names (all of them without grouping, for linger reuse; none under
    /// `SITE`, where everyone shares).
    pub(super) fn dup_key(&self, group: DupGroup, session: SessionId) -> DupKey {
        let holder = self.st.sessions.get(&session).map(|s| &s.holder);
        let (u, h, d) = group.parts().unwrap_or((true, true, true));
        DupKey {
            user: holder
                .filter(|_| u)
                .map(|x| x.user.clone())
                .unwrap_or_default(),
            host: holder.filter(|_| h).map(|x| x.host.clone()),
            display: holder.filter(|_| d).map(|x| x.display.clone()),
        }
    }

    /// A seat this owner may take over: one charged at a version that covers the request
    /// (so the pool's demand stays exact) and large enough. Held seats qualify only under
    /// `DUP_GROUP`; without grouping only a lingering seat of exactly this size does.
    pub(super) fn reusable_seat(
        &self,
        feature: &str,
        group: DupGroup,
        key: &DupKey,
        version: &Version,
        count: u32,
        shared: bool,
    ) -> Option<SeatId> {
        let by_key = if shared {
            &self.ix.by_key
        } else {
            &self.ix.lingering_by_key
        };
        let seats = by_key.get(&(feature.to_owned(), key.clone()))?;
        seats.iter().copied().find(|id| {
            self.st.seats.get(id).is_some_and(|s| {
                s.group == group
                    && s.version >= *version
                    && if shared {
                        s.count >= count
                    } else {
                        s.count == count && s.lingering_until.is_some()
                    }
            })
        })
    }

    fn add_lease(
        &mut self,
        id: LeaseId,
        seat: SeatId,
        session: SessionId,
        feature: &str,
        version: &Version,
        count: u32,
    ) {
        let now = self.st.now_ms;
        self.st.leases.insert(
            id,
            Lease {
                seat,
                session,
                feature: feature.to_owned(),
                version: version.clone(),
                count,
                granted_ms: now,
                fencing_token: id,
                suite_seat: None,
            },
        );
        if let Some(s) = self.st.sessions.get_mut(&session) {
            s.leases.insert(id);
        }
    }

    pub(super) fn checkin(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        ev: &mut Vec<Event>,
    ) -> Reply {
        let owned = self
            .st
            .leases
            .get(&lease)
            .is_some_and(|l| l.session == session);
        if !owned {
            return Reply::Denied(DenyReason::UnknownLease);
        }
        if let Some(s) = self.st.sessions.get_mut(&session) {
            s.leases.remove(&lease);
        }
        let seat = self.st.leases.get(&lease).map(|l| l.seat);
        self.release(lease, ReleaseCause::Checkin, ev);
        let lingering_until = seat
            .and_then(|id| self.st.seats.get(&id))
            .and_then(|s| s.lingering_until);
        Reply::Released {
            lease,
            lingering_until,
        }
    }

    /// Drops a lease (the caller has detached it from its session). When it was the seat's
    /// last holder, the seat lingers for the pool's linger time, or is freed at once.
    pub(super) fn release(
        &mut self,
        lease: LeaseId,
        cause: ReleaseCause,
        ev: &mut Vec<Event>,
    ) -> bool {
        let Some(l) = self.st.leases.remove(&lease) else {
            return false;
        };
        ev.push(Event::Released {
            feature: l.feature.clone(),
            lease,
            seat: l.seat,
            cause,
        });
        self.let_go(l.seat, lease, true, ev);
        if let Some(suite) = l.suite_seat {
            self.let_go(suite, lease, true, ev);
        }
        true
    }

    /// Returns a seat to its pool.
    pub(super) fn free_seat(&mut self, id: SeatId, ev: &mut Vec<Event>) {
        let Some(seat) = self.st.seats.remove(&id) else {
            return;
        };
        if let Some(until) = seat.lingering_until {
            self.ix.lingering.remove(&(until, id));
            self.ix.set_lingering(&seat.feature, &seat.key, id, false);
        }
        if let Some(pool) = self.ix.pool_mut(&seat.feature, seat.group) {
            pool.uncharge(&seat.version, seat.count);
        }
        let key = (seat.feature.clone(), seat.key);
        if let Some(set) = self.ix.by_key.get_mut(&key) {
            set.remove(&id);
            if set.is_empty() {
                self.ix.by_key.remove(&key);
            }
        }
        ev.push(Event::Reclaimed {
            feature: seat.feature,
            seat: id,
            count: seat.count,
            charged_ms: seat.charged_ms,
        });
    }

    /// Frees the named seats whose linger is over; others (held again, or not yet due
    /// because the leader's clock ran ahead of the log's) are left alone.
    pub(super) fn reclaim(&mut self, seats: &[SeatId], ev: &mut Vec<Event>) -> u32 {
        let now = self.st.now_ms;
        let mut affected = 0;
        for id in seats {
            let due = self
                .st
                .seats
                .get(id)
                .and_then(|s| s.lingering_until)
                .is_some_and(|u| u <= now);
            if due {
                self.free_seat(*id, ev);
                affected += 1;
            }
        }
        affected
    }

    /// An administrator's removal: the lease goes, and if it was the seat's last holder
    /// the seat is freed at once, without linger (the point is to free it).
    pub(super) fn remove_lease(&mut self, lease: LeaseId, ev: &mut Vec<Event>) -> bool {
        let Some(l) = self.st.leases.remove(&lease) else {
            return false;
        };
        if let Some(s) = self.st.sessions.get_mut(&l.session) {
            s.leases.remove(&lease);
            // The holder is told on its next heartbeat, as for every seat taken away: an
            // application that keeps working on a removed seat would be over the count.
            self.note_revocation(l.session, lease, &l.feature, RevokeReason::RemovedByAdmin);
        }
        ev.push(Event::Removed {
            feature: l.feature.clone(),
            lease,
        });
        self.let_go(l.seat, lease, false, ev);
        if let Some(suite) = l.suite_seat {
            self.let_go(suite, lease, false, ev);
        }
        true
    }
}
