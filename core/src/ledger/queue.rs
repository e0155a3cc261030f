//! The checkout queue: waits replicated in the log and served first come, first served.
//!
//! A checkout that finds no free seat and asked to wait gets a place, named by its
//! entry's index, unless it could never be granted (more seats than the feature grants
//! at its version) or its session or the feature has too many waiters already.
//!
//! The fairness rule is **first come, first served among servable requests**: of the
//! waiters that free seats could serve now, the earliest is served first, and while one
//! of them waits, no new checkout takes a fresh seat of the feature (it queues behind,
//! or is denied). A waiter that does not fit now (it wants 5 seats and 2 are free) never
//! holds back a request that does fit: seats go to whoever can use them, in arrival
//! order. A large request can therefore be overtaken while smaller ones keep using the
//! seats it needs; it is served as soon as enough are free at once, ahead of anyone who
//! came later. Taking back one's own lingering seat or sharing one under `DUP_GROUP`
//! charges nothing new and is always allowed.
//! The leader proposes [`Op::ServeQueue`](super::Op::ServeQueue) when a waiter can be
//! answered or a wait has ended; each such entry grants to at most one waiter, whose
//! lease id is that entry's index. A waiter's answer replaces the `Queued` reply kept for
//! its request, so the client's retry of the same request learns the outcome from any
//! leader, after any failover.

use serde::{Deserialize, Serialize};

use super::{DenyReason, Event, Ledger, Reply, RequestId, SessionId, TimeMs};
use crate::license::{DupGroup, Version};
use crate::options::DenialCode;

/// Most ended waits answered per entry, so one entry never does unbounded work.
const TIMEOUTS_PER_ENTRY: usize = 1_000;

/// Most waits one session may have at once: an application waits for a few features,
/// not hundreds; a client in a loop must not fill the queue.
pub const WAITERS_PER_SESSION: usize = 16;

/// Most waiters per feature: a long queue is a site that needs more seats, and a bound
/// keeps every scan of a feature's queue short.
pub const WAITERS_PER_FEATURE: usize = 1_000;

/// One queued checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub req: RequestId,
    pub session: SessionId,
    pub feature: String,
    pub version: Version,
    pub count: u32,
    pub queued_ms: TimeMs,
    /// When the wait ends unanswered; `None`: it lasts as long as the session.
    pub deadline_ms: Option<TimeMs>,
}

impl Ledger {
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; a struct for it would only rename the fields"
    )]
    pub(super) fn enqueue(
        &mut self,
        place: u64,
        req: RequestId,
        session: SessionId,
        feature: &str,
        version: &super::Version,
        count: u32,
        wait_ms: u64,
        ev: &mut Vec<Event>,
    ) -> Reply {
        let now = self.st.now_ms;
        let per_feature = self.ix.queues.get(feature).map_or(0, |p| p.len());
        let per_session = self
            .st
            .queue
            .values()
            .filter(|w| w.session == session)
            .count();
        let full = if per_session >= WAITERS_PER_SESSION {
            Some((WAITERS_PER_SESSION, true))
        } else if per_feature >= WAITERS_PER_FEATURE {
            Some((WAITERS_PER_FEATURE, false))
        } else {
            None
        };
        if let Some((limit, per_session)) = full {
            let reason = DenyReason::QueueFull {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                per_session,
            };
            ev.push(Event::Denied {
                feature: feature.to_owned(),
                session,
                reason: reason.clone(),
            });
            return Reply::Denied(reason);
        }
        let deadline_ms = (wait_ms > 0).then(|| now.saturating_add(wait_ms));
        self.st.queue.insert(
            place,
            Waiter {
                req,
                session,
                feature: feature.to_owned(),
                version: version.clone(),
                count,
                queued_ms: now,
                deadline_ms,
            },
        );
        self.ix
            .queues
            .entry(feature.to_owned())
            .or_default()
            .insert(place);
        if let Some(d) = deadline_ms {
            self.ix.queue_deadlines.insert((d, place));
        }
        ev.push(Event::Queued {
            feature: feature.to_owned(),
            session,
            place,
        });
        Reply::Queued {
            place,
            position: self.queue_position(place).unwrap_or(1),
        }
    }

    /// Answers ended waits, then serves the earliest waiter that can be answered now.
    pub(super) fn serve_queue(&mut self, index: u64, ev: &mut Vec<Event>) -> Reply {
        let now = self.st.now_ms;
        let mut affected = 0;
        while let Some(&(deadline, place)) = self.ix.queue_deadlines.first() {
            if deadline > now || affected as usize >= TIMEOUTS_PER_ENTRY {
                break;
            }
            let waited_ms = self
                .st
                .queue
                .get(&place)
                .map_or(0, |w| now.saturating_sub(w.queued_ms));
            self.settle(
                place,
                Reply::Denied(DenyReason::QueueTimeout { waited_ms }),
                ev,
            );
            affected += 1;
        }
        if let Some(place) = self.first_answerable(now) {
            if let Some(w) = self.st.queue.get(&place).cloned() {
                let reply = match self
                    .try_checkout(index, w.session, &w.feature, &w.version, w.count, true)
                {
                    Ok(grant) => {
                        ev.push(Event::Granted {
                            feature: w.feature.clone(),
                            session: w.session,
                            grant: grant.clone(),
                        });
                        Reply::Granted(grant)
                    }
                    Err(reason) => Reply::Denied(reason),
                };
                self.settle(place, reply, ev);
                affected += 1;
            }
        }
        Reply::Done { affected }
    }

    /// Ends a wait with its answer: the waiter leaves the queue, and the answer replaces
    /// the `Queued` reply kept for its request (if the client's reply window still holds it).
    fn settle(&mut self, place: u64, reply: Reply, ev: &mut Vec<Event>) {
        let Some(w) = self.st.queue.remove(&place) else {
            return;
        };
        if let Some(places) = self.ix.queues.get_mut(&w.feature) {
            places.remove(&place);
            if places.is_empty() {
                self.ix.queues.remove(&w.feature);
            }
        }
        if let Some(d) = w.deadline_ms {
            self.ix.queue_deadlines.remove(&(d, place));
        }
        if let Reply::Denied(reason) = &reply {
            ev.push(Event::Dequeued {
                feature: w.feature.clone(),
                place,
                reason: reason.clone(),
            });
        }
        if let Some(kept) = self
            .st
            .clients
            .get_mut(&w.req.client)
            .and_then(|rec| rec.replies.get_mut(w.req.seq))
        {
            *kept = reply;
        }
    }

    /// An administrator's cancellation: the wait ends with `WaitCancelled`.
    pub(super) fn cancel_wait(&mut self, place: u64, ev: &mut Vec<Event>) -> bool {
        if !self.st.queue.contains_key(&place) {
            return false;
        }
        self.settle(place, Reply::Denied(DenyReason::WaitCancelled), ev);
        true
    }

    /// A session ended: its waits end too. O(queue length), which is short in practice:
    /// people wait for seats, not by the thousand.
    pub(super) fn drop_waiters_of(&mut self, session: SessionId, ev: &mut Vec<Event>) {
        let places: Vec<u64> = self
            .st
            .queue
            .iter()
            .filter(|(_, w)| w.session == session)
            .map(|(p, _)| *p)
            .collect();
        for place in places {
            self.settle(place, Reply::Denied(DenyReason::UnknownSession), ev);
        }
    }

    /// The earliest-queued waiter of any feature that can be answered at `now`: seats
    /// are free for it, its own seat lingers, or it can never be served any more (the
    /// license was unloaded, expired or shrank below its count), which is an answer too.
    fn first_answerable(&self, now: TimeMs) -> Option<u64> {
        self.ix
            .queues
            .values()
            .filter_map(|places| {
                places
                    .iter()
                    .copied()
                    .find(|place| self.answerable(*place, now))
            })
            .min()
    }

    fn answerable(&self, place: u64, now: TimeMs) -> bool {
        let Some(w) = self.st.queue.get(&place) else {
            return true;
        };
        let pools = self.ix.pools_of(&w.feature);
        if pools.is_empty() {
            return true;
        }
        let mut short = false;
        for pool in pools {
            match pool.admit(now, &w.version, w.count) {
                Ok(_) => match self.policy_consent(
                    w.session,
                    &w.feature,
                    &w.version,
                    pool.dup_group,
                    w.count,
                ) {
                    Ok(()) => return true,
                    // Excluded (a new options file, say): answered with the denial.
                    Err(DenyReason::Policy {
                        code: DenialCode::ExcludedByPolicy,
                        ..
                    }) => return true,
                    // A MAX or others' reservations: waits on, as for seats, until its
                    // own or others' seats come back.
                    Err(_) => short = true,
                },
                // More than this pool grants at all now: another pool may still.
                Err(DenyReason::NoSeats {
                    requested,
                    available,
                    ..
                }) if u64::from(requested) > available => {}
                Err(DenyReason::NoSeats { .. }) => {
                    short = true;
                    let key = self.dup_key(pool.dup_group, w.session);
                    let shared = pool.dup_group != DupGroup::None;
                    let own = self.reusable_seat(
                        &w.feature,
                        pool.dup_group,
                        &key,
                        &w.version,
                        w.count,
                        shared,
                    );
                    if own.is_some() {
                        return true;
                    }
                }
                Err(_) => {}
            }
        }
        // Waits on while some pool could grant it once seats come back; otherwise (more
        // than any pool grants, or none grants at all now) it is answered with a denial.
        !short
    }

    /// Whether a waiter of `feature` could take fresh seats now: then a new checkout
    /// must not take them first. Waiters that do not fit, or that only wait for their
    /// own lingering seat, hold nobody back.
    pub(super) fn waiter_could_take_fresh_seats(&self, feature: &str, now: TimeMs) -> bool {
        let Some(places) = self.ix.queues.get(feature) else {
            return false;
        };
        let pools = self.ix.pools_of(feature);
        places.iter().any(|place| {
            self.st.queue.get(place).is_some_and(|w| {
                pools.iter().any(|p| {
                    p.admit(now, &w.version, w.count).is_ok()
                        && self
                            .policy_consent(w.session, feature, &w.version, p.dup_group, w.count)
                            .is_ok()
                })
            })
        })
    }

    // ---- Queries ----

    /// Whether [`Op::ServeQueue`](super::Op::ServeQueue) would do anything at `now`: a
    /// wait has ended, or a waiter can be answered. What the leader polls.
    pub fn queue_due(&self, now: TimeMs) -> bool {
        self.ix
            .queue_deadlines
            .first()
            .is_some_and(|(d, _)| *d <= now)
            || self.first_answerable(now).is_some()
    }

    /// 1-based position of a place in its feature's queue; `None` once answered.
    pub fn queue_position(&self, place: u64) -> Option<u32> {
        let w = self.st.queue.get(&place)?;
        let places = self.ix.queues.get(&w.feature)?;
        u32::try_from(places.range(..=place).count()).ok()
    }

    /// Whether anyone waits for `feature`.
    pub fn has_waiters(&self, feature: &str) -> bool {
        self.ix.queues.contains_key(feature)
    }

    /// Every waiter, earliest first.
    pub fn waiters(&self) -> impl Iterator<Item = (u64, &Waiter)> {
        self.st.queue.iter().map(|(p, w)| (*p, w))
    }

    /// The answer kept for a client request, if it is still in the client's window: how a
    /// queued checkout learns it was served.
    pub fn reply_for(&self, req: RequestId) -> Option<&Reply> {
        self.st.clients.get(&req.client)?.replies.get(req.seq)
    }

    /// Live sessions opened by one client id: the server's per-client limit reads it
    /// before proposing an open.
    pub fn live_sessions_of(&self, client: &super::ClientId) -> u32 {
        self.st.clients.get(client).map_or(0, |c| c.live_sessions)
    }
}
