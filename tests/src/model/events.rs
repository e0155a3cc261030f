//! Each event judged by the entry that carried it and the model's state (see the rules
//! in `mod.rs`).

use tally_core::ledger::{DenyReason, Event, Grant, Op};
use tally_core::license::DupGroup;

use super::entry::op_name;
use super::{owner_matches, LeaseM, Model, SeatM, Sess};
use crate::archive::Step;

impl Model {
    pub(super) fn event(&mut self, st: &Step, ev: &Event) {
        match ev {
            Event::SessionOpened {
                session,
                user,
                host,
            } => self.opened(st, *session, user, host),
            Event::Granted {
                feature,
                session,
                grant,
            } => self.granted(st, feature, *session, grant),
            Event::Denied {
                feature,
                session: _,
                reason: DenyReason::NoSeats { requested, .. },
            } => {
                if let Some(free) = self.certainly_free(feature, *requested) {
                    self.bad(format!(
                        "a checkout of {requested} {feature} was refused while {free} seats were free and nobody waited"
                    ));
                }
            }
            Event::Denied {
                feature,
                session: _,
                reason: DenyReason::QueuedAhead { requested, .. },
            } => {
                // "Queued requests go first" must be true: with the pool judged, some
                // earlier waiter fits the free seats (else the checkout jumped nobody).
                let judged = self
                    .pool(feature)
                    .is_some_and(|p| p.judged && p.single_version);
                if judged && self.waiter_that_fits(feature).is_none() {
                    self.bad(format!(
                        "a checkout of {requested} {feature} was refused as queued behind others, but no waiter could take the free seats"
                    ));
                }
            }
            Event::Released {
                feature,
                lease,
                seat,
                cause,
            } => self.released(st, feature, *lease, *seat, *cause),
            Event::Lingering { seat, until, .. } => self.lingers(*seat, *until),
            Event::Reclaimed { seat, count, .. } => self.reclaimed(st, *seat, *count),
            Event::Removed { lease, .. } => self.removed(st, *lease),
            Event::Revoked {
                feature,
                lease,
                seat,
                session,
                reason,
            } => self.revoked(st, feature, *lease, *seat, *session, reason),
            Event::SessionClosed { session } => {
                let ok = match &st.op {
                    Op::CloseSession { auth, .. } => auth.session == *session,
                    Op::CloseSessionByAdmin { session: s } => s == session,
                    _ => false,
                };
                if !ok {
                    self.bad(format!(
                        "session {session} closed by {}, which closes no session",
                        op_name(&st.op)
                    ));
                }
                self.end_session(*session);
                self.closed_at.insert(*session, st.at_ms);
                if matches!(st.op, Op::CloseSessionByAdmin { .. }) {
                    self.closed_by_admin.insert(*session);
                }
            }
            Event::SessionExpired { session } => {
                let listed =
                    matches!(&st.op, Op::ExpireSessions { sessions } if sessions.contains(session));
                if !listed {
                    self.bad(format!(
                        "session {session} expired by {}, which does not name it",
                        op_name(&st.op)
                    ));
                }
                if let Some(false) = self.expiry_due(*session) {
                    let s = &self.sessions[session];
                    let from = s.beat_ms.max(self.resumed);
                    self.bad(format!(
                        "session {session} expired at {} though its TTL ({} ms) from its last checkpointed heartbeat or outage end ({from}) runs to {}",
                        self.now,
                        s.ttl_ms,
                        from + s.ttl_ms
                    ));
                }
                self.end_session(*session);
                self.expired_at.insert(*session, st.at_ms);
                self.count("expiries");
            }
            Event::Queued {
                feature,
                session,
                place,
            } => self.queued(st, feature, *session, *place),
            Event::Dequeued { place, reason, .. } => self.dequeued(st, *place, reason),
            Event::LicenseLoaded { source, .. } if !matches!(&st.op, Op::LoadLicense { source: s, .. } if s == source) =>
            {
                self.bad(format!("license {source} loaded by {}", op_name(&st.op)));
            }
            Event::LicenseUnloaded { source } if !matches!(&st.op, Op::UnloadLicense { source: s } if s == source) =>
            {
                self.bad(format!("license {source} unloaded by {}", op_name(&st.op)));
            }
            _ => {}
        }
    }

    fn opened(&mut self, st: &Step, session: u64, user: &str, host: &str) {
        let Op::OpenSession {
            req,
            holder,
            ttl_ms,
            secret,
            ..
        } = &st.op
        else {
            return self.bad(format!("session {session} opened by {}", op_name(&st.op)));
        };
        if session != st.index || holder.user != user || holder.host != host {
            self.bad(format!(
                "session {session} opened with the wrong id or holder"
            ));
        }
        self.sessions.insert(
            session,
            Sess {
                client: req.client,
                secret: *secret,
                owner: (
                    holder.user.clone(),
                    holder.host.clone(),
                    holder.display.clone(),
                ),
                ttl_ms: *ttl_ms,
                beat_ms: self.now,
            },
        );
    }

    fn end_session(&mut self, session: u64) {
        if self.sessions.remove(&session).is_none() {
            self.bad(format!("session {session} ended, but it was not open"));
        }
        self.cur.ended.insert(session);
    }

    fn granted(&mut self, st: &Step, feature: &str, session: u64, g: &Grant) {
        let i = st.index;
        self.cur.grants += 1;
        if self.cur.grants > 1 {
            self.bad("a second grant in one entry".into());
        }
        if g.lease != i || g.fencing_token != i {
            self.bad(format!(
                "lease {} with token {} granted by entry {i}: both must be the granting entry's index",
                g.lease, g.fencing_token
            ));
        }
        self.grants.insert(g.lease, (session, g.fencing_token));
        let Some(owner) = self.sessions.get(&session).map(|s| s.owner.clone()) else {
            return self.bad(format!(
                "{feature} granted to session {session}, which is not open"
            ));
        };
        let pool = self.pool(feature);
        let fresh = !self.seats.contains_key(&g.seat);
        let req = match &st.op {
            Op::Checkout {
                req,
                auth,
                feature: f,
                count,
                ..
            } if auth.session == session && f == feature && *count == g.count => Some(*req),
            Op::ServeQueue => self.serve_waiter(feature, session, g.count, fresh),
            op => {
                self.bad(format!(
                    "{feature} granted to session {session} by {}: only its checkout or the queue grants",
                    op_name(op)
                ));
                None
            }
        };
        if let Some(r) = req {
            if let Some(first) = self.granted_reqs.insert(r, i) {
                self.bad(format!(
                    "request {} of session {session} granted a second time (first at index {first})",
                    r.seq
                ));
            }
        }
        let dup = pool.as_ref().map_or(DupGroup::None, |p| p.dup);
        if let Some(seat) = self.seats.get(&g.seat).cloned() {
            if seat.feature != feature || !owner_matches(dup, &seat.owner, &owner) {
                self.bad(format!(
                    "seat {} of {} ({:?}) taken over by session {session} of {feature} ({owner:?}), not its owner per DUP_GROUP {dup:?}",
                    g.seat, seat.feature, seat.owner
                ));
            }
            if seat.holders.is_empty() {
                // Reuse of a lingering seat by its owner.
                if g.count > seat.count || (dup == DupGroup::None && g.count != seat.count) {
                    self.bad(format!(
                        "seat {} of {} reused for {} seats",
                        g.seat, seat.count, g.count
                    ));
                }
                if !g.reused {
                    self.bad(format!(
                        "seat {} reused, but the grant does not say so",
                        g.seat
                    ));
                }
                self.count("lingering seats reused");
            } else {
                if dup == DupGroup::None {
                    self.bad(format!(
                        "seat {} of {feature} shared by session {session}, but {feature} has no DUP_GROUP",
                        g.seat
                    ));
                }
                if g.count > seat.count || !g.shared {
                    self.bad(format!(
                        "seat {} of {} shared for {} seats (shared flag {})",
                        g.seat, seat.count, g.count, g.shared
                    ));
                }
                self.count("seats shared under DUP_GROUP");
            }
            if let Some(s) = self.seats.get_mut(&g.seat) {
                s.holders.insert(g.lease);
                s.linger_until = None;
                s.token = i;
            }
        } else {
            if g.seat != i || g.reused || g.shared {
                self.bad(format!(
                    "grant of a seat {} the model does not know (reused {}, shared {})",
                    g.seat, g.reused, g.shared
                ));
            }
            if matches!(st.op, Op::Checkout { .. }) {
                if let Some(place) = self.waiter_that_fits(feature) {
                    self.bad(format!(
                        "a new checkout took a fresh seat of {feature} while waiter {place} (queued earlier) fit"
                    ));
                }
            }
            self.seats.insert(
                g.seat,
                SeatM {
                    feature: feature.to_owned(),
                    count: g.count,
                    owner,
                    holders: [g.lease].into(),
                    linger_until: None,
                    token: i,
                },
            );
        }
        self.leases.insert(
            g.lease,
            LeaseM {
                seat: g.seat,
                session,
                feature: feature.to_owned(),
            },
        );
        self.count("grants");
    }
}
