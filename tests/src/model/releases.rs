//! Releases, lingering, reclaims, admin removals and revocations, each judged by the
//! entry that caused it.

use tally_core::ledger::{Op, ReleaseCause, RevokeReason};

use super::entry::op_name;
use super::{Model, SeatM};
use crate::archive::Step;

impl Model {
    pub(super) fn released(
        &mut self,
        st: &Step,
        feature: &str,
        lease: u64,
        seat: u64,
        cause: ReleaseCause,
    ) {
        let Some(l) = self.leases.get(&lease).cloned() else {
            return self.bad(format!(
                "lease {lease} released ({cause:?}), but it is not held"
            ));
        };
        if l.seat != seat || l.feature != feature {
            self.bad(format!(
                "lease {lease} released from seat {seat} of {feature}, but it holds seat {} of {}",
                l.seat, l.feature
            ));
        }
        let ok = match (cause, &st.op) {
            (ReleaseCause::Checkin, Op::Checkin { auth, lease: x, .. }) => {
                *x == lease && auth.session == l.session
            }
            (ReleaseCause::SessionClosed, Op::CloseSession { auth, .. }) => {
                auth.session == l.session
            }
            (ReleaseCause::SessionClosed, Op::CloseSessionByAdmin { session }) => {
                *session == l.session
            }
            (ReleaseCause::SessionExpired, Op::ExpireSessions { sessions }) => {
                sessions.contains(&l.session)
            }
            _ => false,
        };
        if !ok {
            self.bad(format!(
                "lease {lease} of session {} dropped as {cause:?} by {}: nothing in this entry is such a cause",
                l.session,
                op_name(&st.op)
            ));
        }
        if cause != ReleaseCause::Checkin {
            self.cur.ending.insert(l.session);
        }
        self.drop_lease(lease);
    }

    pub(super) fn lingers(&mut self, seat: u64, until: u64) {
        let Some(s) = self.seats.get(&seat).cloned() else {
            return self.bad(format!("unknown seat {seat} lingers"));
        };
        let linger = self.pool(&s.feature).map_or(0, |p| p.linger_ms);
        let ends = self.now + linger;
        if !self.cur.emptied.contains(&seat) || !s.holders.is_empty() {
            self.bad(format!(
                "seat {seat} lingers, but it did not just lose its last holder"
            ));
        }
        if linger == 0 || until < ends {
            self.bad(format!(
                "seat {seat} of {} lingers until {until}, but its LINGER ({linger} ms) ends at {ends}",
                s.feature
            ));
        }
        if let Some(s) = self.seats.get_mut(&seat) {
            s.linger_until = Some(until.max(ends));
        }
        self.cur.lingered.insert(seat);
    }

    pub(super) fn reclaimed(&mut self, st: &Step, seat: u64, count: u32) {
        let Some(s) = self.seats.get(&seat).cloned() else {
            return self.bad(format!("unknown seat {seat} reclaimed"));
        };
        if !s.holders.is_empty() {
            self.bad(format!(
                "seat {seat} reclaimed while held by leases {:?}",
                s.holders
            ));
        }
        if s.count != count {
            self.bad(format!("seat {seat} of {} seats freed as {count}", s.count));
        }
        let linger = self.pool(&s.feature).map_or(0, |p| p.linger_ms);
        let over = self
            .judged_cap(&s.feature)
            .is_some_and(|cap| self.charged(&s.feature) > cap);
        let license_op = matches!(st.op, Op::LoadLicense { .. } | Op::UnloadLicense { .. });
        let ok = if self.cur.emptied.contains(&seat) && !self.cur.lingered.contains(&seat) {
            // Freed as its last holder left: after a removal or revocation, or with no linger.
            self.cur.must_free.contains(&seat) || linger == 0
        } else if let Some(until) = s.linger_until {
            match &st.op {
                Op::ReclaimSeats { seats } if seats.contains(&seat) => {
                    if self.now < until {
                        self.bad(format!(
                            "seat {seat} reclaimed at {} before its linger ended at {until}",
                            self.now
                        ));
                    }
                    true
                }
                // A license change revokes lingering seats first, while the pool is over.
                _ => license_op && over,
            }
        } else {
            false
        };
        if !ok {
            self.bad(format!(
                "seat {seat} of {} freed by {}: nothing in this entry frees it",
                s.feature,
                op_name(&st.op)
            ));
        }
        self.seats.remove(&seat);
        self.cur.freed.insert(seat);
    }

    pub(super) fn removed(&mut self, st: &Step, lease: u64) {
        let Some(l) = self.leases.get(&lease).cloned() else {
            return self.bad(format!("lease {lease} removed, but it is not held"));
        };
        let ok = match &st.op {
            Op::RemoveLease { lease: x } => *x == lease,
            Op::CloseSessionByAdmin { session } => *session == l.session,
            _ => false,
        };
        if !ok {
            self.bad(format!(
                "lease {lease} removed by {}: only an administrator's removal may",
                op_name(&st.op)
            ));
        }
        self.drop_lease(lease);
        if self.cur.emptied.contains(&l.seat) {
            self.cur.must_free.insert(l.seat);
        }
        self.count("admin removals");
    }

    pub(super) fn revoked(
        &mut self,
        st: &Step,
        feature: &str,
        lease: u64,
        seat: u64,
        session: u64,
        reason: &RevokeReason,
    ) {
        let Some(l) = self.leases.get(&lease).cloned() else {
            return self.bad(format!("lease {lease} revoked, but it is not held"));
        };
        if l.session != session || l.seat != seat || l.feature != feature {
            self.bad(format!(
                "lease {lease} revoked as session {session}'s seat {seat}, but it is {l:?}"
            ));
        }
        let ok = match (&st.op, reason) {
            (
                Op::LoadLicense { source, .. } | Op::UnloadLicense { source },
                RevokeReason::LicenseChanged { source: s },
            ) => s == source,
            _ => false,
        };
        if !ok {
            self.bad(format!(
                "lease {lease} revoked ({reason:?}) by {}: only a license change revokes seats of a permanent floating feature",
                op_name(&st.op)
            ));
        }
        if self.cur.revoking.insert(seat) {
            self.judge_revocation(feature, seat);
        }
        self.drop_lease(lease);
        if self.cur.emptied.contains(&seat) {
            self.cur.must_free.insert(seat);
        }
        self.count("revocations");
    }

    /// A held seat is revoked only while its pool is over the count, after every
    /// lingering seat of the feature, and newest grant first.
    fn judge_revocation(&mut self, feature: &str, seat: u64) {
        if let Some(cap) = self.judged_cap(feature) {
            let used = self.charged(feature);
            if used <= cap {
                self.bad(format!("seat {seat} of {feature} revoked though {used} seats in use fit the {cap} licensed"));
            }
        }
        let token = self.seats.get(&seat).map_or(0, |s| s.token);
        let others: Vec<(u64, &SeatM)> = self
            .seats
            .iter()
            .filter(|(id, s)| s.feature == feature && **id != seat)
            .map(|(id, s)| (*id, s))
            .collect();
        if let Some((id, _)) = others.iter().find(|(_, s)| s.holders.is_empty()) {
            self.bad(format!("held seat {seat} of {feature} revoked while seat {id} only lingered (lingering seats go first)"));
        } else if let Some((id, s)) = others.iter().find(|(_, s)| s.token > token) {
            self.bad(format!(
                "seat {seat} of {feature} (granted at {token}) revoked before the newer seat {id} (granted at {})",
                s.token
            ));
        }
    }
}
