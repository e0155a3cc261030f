//! The queue, judged: waits join only when no seat is free, are granted at most once
//! and first come first served among those that fit, and end only for a cause.

use tally_core::ledger::{DenyReason, Op};

use super::entry::op_name;
use super::{Model, WaiterM};
use crate::archive::Step;

impl Model {
    /// The queue grants to `session`: its earliest waiter for `feature` and `count` is
    /// served (once), and no earlier waiter that fits the same fresh seats was passed.
    pub(super) fn serve_waiter(
        &mut self,
        feature: &str,
        session: u64,
        count: u32,
        fresh: bool,
    ) -> Option<tally_core::ledger::RequestId> {
        let place = self
            .waiters
            .iter()
            .find(|(_, w)| w.session == session && w.feature == feature && w.count == count)
            .map(|(p, _)| *p);
        let Some(place) = place else {
            let answered: Vec<(&u64, &u64)> = self.served.iter().collect();
            self.bad(format!(
                "the queue granted {feature} to session {session}, which does not wait for it (places answered so far, place → index: {answered:?})"
            ));
            return None;
        };
        let single = self.pool(feature).is_some_and(|p| p.single_version);
        if fresh && single {
            let passed = self
                .waiters
                .range(..place)
                .find(|(_, w)| w.feature == feature && w.count <= count)
                .map(|(p, _)| *p);
            if let Some(p) = passed {
                self.bad(format!(
                    "the queue served place {place} before place {p}, which came first and fits the same seats"
                ));
            }
        }
        self.served.insert(place, self.cur.index);
        self.count("grants from the queue");
        self.waiters.remove(&place).map(|w| w.req)
    }

    pub(super) fn queued(&mut self, st: &Step, feature: &str, session: u64, place: u64) {
        let Op::Checkout {
            req,
            auth,
            feature: f,
            count,
            wait_ms: Some(wait),
            ..
        } = &st.op
        else {
            return self.bad(format!(
                "place {place} queued by {}, not a waiting checkout",
                op_name(&st.op)
            ));
        };
        if auth.session != session || f != feature || place != st.index {
            self.bad(format!(
                "place {place} queued for session {session} of {feature} by another's checkout"
            ));
        }
        if let Some(free) = self.certainly_free(feature, *count) {
            self.bad(format!(
                "a checkout of {count} {feature} was queued while {free} seats were free and nobody waited"
            ));
        }
        self.waiters.insert(
            place,
            WaiterM {
                session,
                feature: feature.to_owned(),
                count: *count,
                deadline: (*wait > 0).then(|| self.now + wait),
                req: *req,
            },
        );
        self.count("checkouts queued");
    }

    pub(super) fn dequeued(&mut self, st: &Step, place: u64, reason: &DenyReason) {
        let Some(w) = self.waiters.remove(&place) else {
            let at = self.served.get(&place).copied();
            return self.bad(format!(
                "place {place} answered ({reason:?}), but it does not wait (answered at {at:?})"
            ));
        };
        let ok = match reason {
            DenyReason::QueueTimeout { .. } => {
                matches!(st.op, Op::ServeQueue) && w.deadline.is_some_and(|d| d <= self.now)
            }
            DenyReason::UnknownSession => {
                self.cur.ending.insert(w.session);
                true
            }
            DenyReason::WaitCancelled => matches!(st.op, Op::CancelWait { place: p } if p == place),
            // The queue's answer that the wait can never be served.
            _ => matches!(st.op, Op::ServeQueue),
        };
        if !ok {
            self.bad(format!(
                "the wait at place {place} (session {}, {}) ended ({reason:?}) by {}: no such cause",
                w.session,
                w.feature,
                op_name(&st.op)
            ));
        }
        self.served.insert(place, st.index);
    }
}
