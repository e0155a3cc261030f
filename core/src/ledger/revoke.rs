//! Revocation: when a pool shrinks below the seats charged to it (a license unloaded or
//! reloaded with fewer seats, or lines reaching the end of their term), the seats beyond
//! what it still grants are taken back, in the entry that shrank it.
//!
//! Which seats go: lingering seats first (nobody holds them), then held seats, newest
//! grant first (the seat whose latest grant has the highest fencing token), and only
//! seats that count against a part of the pool that is over (by the pool's own test, see
//! `pool.rs`): a pool that still grants what is charged is never touched. A revoked
//! lease's seat is freed at once, without linger, and its session keeps a note of it
//! (a few per session) that the holder's next heartbeat answer carries.

use std::collections::BTreeSet;

use super::pool::term_of;
use super::{Event, LeaseId, Ledger, Revocation, RevokeReason, SeatId, SessionId, TimeMs};

/// Revocation notes kept per session: a holder learns of them on its next heartbeat, a
/// few seconds later, so only a burst needs more than one; older notes give way.
const NOTES_PER_SESSION: usize = 16;

impl Ledger {
    /// Revokes what the pools no longer grant after `source` was loaded or unloaded.
    pub(super) fn enforce_after_load(&mut self, source: &str, ev: &mut Vec<Event>) {
        self.enforce(
            &RevokeReason::LicenseChanged {
                source: source.to_owned(),
            },
            ev,
        );
        self.refresh_windows(ev);
    }

    /// Revokes what the pools no longer grant after a change of the time zone moved the
    /// boundaries of their terms: a term that has ended in the new zone ends now, as it
    /// would have when ledger time crossed its end.
    pub(super) fn enforce_after_zone_change(&mut self, ev: &mut Vec<Event>) {
        self.enforce(&RevokeReason::TermEnded { remaining: 0 }, ev);
        self.refresh_windows(ev);
    }

    /// Ledger time crossed a boundary (from `before`): announces the pools whose term
    /// state changed, revokes what they no longer grant, ends the fair-use windows that
    /// are over, and finds the next boundary.
    pub(super) fn enforce_terms(&mut self, before: TimeMs, ev: &mut Vec<Event>) {
        let now = self.st.now_ms;
        for (feature, pools) in &self.ix.pools {
            let (was, is) = (term_of(pools, before), term_of(pools, now));
            if let (Some(was), Some(is)) = (was, is) {
                if was != is {
                    ev.push(Event::TermChanged {
                        feature: feature.clone(),
                        state: is,
                    });
                }
            }
        }
        self.enforce(&RevokeReason::TermEnded { remaining: 0 }, ev);
        self.refresh_windows(ev);
        self.ix.next_boundary = self.next_boundary();
    }

    fn enforce(&mut self, reason: &RevokeReason, ev: &mut Vec<Event>) {
        let features: BTreeSet<String> =
            self.st.seats.values().map(|s| s.feature.clone()).collect();
        for feature in features {
            self.enforce_named(&feature, ev);
            self.enforce_feature(&feature, reason, ev);
        }
    }

    fn enforce_feature(&mut self, feature: &str, reason: &RevokeReason, ev: &mut Vec<Event>) {
        let now = self.st.now_ms;
        let pools = self.ix.pools_of(feature);
        if !pools.is_empty() && pools.iter().all(|p| p.fits(now)) {
            return;
        }
        // Lingering seats first, oldest first; then held seats, newest grant first.
        let mut order: Vec<(bool, u64, SeatId)> = self
            .st
            .seats
            .iter()
            .filter(|(_, s)| s.feature == feature)
            .map(|(id, s)| {
                let held = s.lingering_until.is_none();
                let rank = if held {
                    u64::MAX - s.fencing_token
                } else {
                    *id
                };
                (held, rank, *id)
            })
            .collect();
        order.sort_unstable();
        for (_, _, seat) in order {
            let Some((version, group)) = self
                .st
                .seats
                .get(&seat)
                .map(|s| (s.version.clone(), s.group))
            else {
                continue;
            };
            let pool = self.ix.pool(feature, group);
            let over = match pool {
                // No line of the seat's pool is loaded at all: nothing grants it.
                None => true,
                Some(pool) if pool.fits(now) => continue,
                Some(pool) => pool.over_for(now, &version),
            };
            if over {
                let remaining = pool.map_or(0, |p| p.issued(now).0);
                let reason = match reason {
                    RevokeReason::TermEnded { .. } => RevokeReason::TermEnded { remaining },
                    other => other.clone(),
                };
                self.revoke_seat(seat, &reason, ev);
            }
        }
    }

    /// Takes a seat away from all its holders and frees it.
    /// Keeps a note for `session`'s heartbeat answers that `lease` was taken away (the
    /// latest [`NOTES_PER_SESSION`]).
    pub(super) fn note_revocation(
        &mut self,
        session: SessionId,
        lease: LeaseId,
        feature: &str,
        reason: RevokeReason,
    ) {
        let at_ms = self.st.now_ms;
        let notes = self.st.revocations.entry(session).or_default();
        if notes.len() >= NOTES_PER_SESSION {
            notes.remove(0);
        }
        notes.push(Revocation {
            lease,
            feature: feature.to_owned(),
            reason,
            at_ms,
        });
    }

    pub(super) fn revoke_seat(&mut self, seat: SeatId, reason: &RevokeReason, ev: &mut Vec<Event>) {
        let holders: Vec<LeaseId> = self
            .st
            .seats
            .get(&seat)
            .map(|s| s.holders.iter().copied().collect())
            .unwrap_or_default();
        for lease in holders {
            let Some(l) = self.st.leases.remove(&lease) else {
                continue;
            };
            if let Some(s) = self.st.sessions.get_mut(&l.session) {
                s.leases.remove(&lease);
                self.note_revocation(l.session, lease, &l.feature, reason.clone());
            }
            if let Some(s) = self.st.seats.get_mut(&seat) {
                s.holders.remove(&lease);
            }
            // The lease's other seat (its suite's, or for a suite seat the component's)
            // goes with it: a component is granted only with its suite seat.
            for other in [Some(l.seat), l.suite_seat].into_iter().flatten() {
                if other != seat {
                    self.let_go(other, lease, false, ev);
                }
            }
            ev.push(Event::Revoked {
                feature: l.feature,
                lease,
                seat,
                session: l.session,
                reason: reason.clone(),
            });
        }
        self.free_seat(seat, ev);
    }
}
