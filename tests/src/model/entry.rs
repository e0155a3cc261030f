//! One entry at a time: what its operation changes before any event (license pools,
//! checkpoints, the end of an outage), what it must do (computed before its events),
//! its events (see `events.rs`), and the checks that hold once it is applied.

use std::collections::BTreeSet;

use tally_core::ledger::{Event, Op, RequestId, SessionAuth};

use super::Model;
use crate::archive::Step;

/// What one entry did so far, and what it must have done by its end.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub index: u64,
    pub grants: u32,
    /// Seats that lost their last holder in this entry.
    pub emptied: BTreeSet<u64>,
    /// Of those, seats that must be freed at once (admin removal, revocation).
    pub must_free: BTreeSet<u64>,
    pub lingered: BTreeSet<u64>,
    pub freed: BTreeSet<u64>,
    pub released: BTreeSet<u64>,
    /// Sessions that ended in this entry.
    pub ended: BTreeSet<u64>,
    /// Sessions this entry's events say are ending (releases and waits ended for it).
    pub ending: BTreeSet<u64>,
    /// Seats whose revocation was judged already (their other holders follow).
    pub revoking: BTreeSet<u64>,
    /// Promised by the operation, checked at the end.
    pub must_release: Option<u64>,
    pub must_remove: Option<u64>,
    pub must_end: BTreeSet<u64>,
    pub must_free_listed: BTreeSet<u64>,
}

/// The operation's name, for messages.
pub(super) fn op_name(op: &Op) -> String {
    let s = format!("{op:?}");
    s.split([' ', '{', '(']).next().unwrap_or("?").to_owned()
}

impl Model {
    /// Judges one entry.
    pub fn step(&mut self, st: &Step) {
        self.cur = Scratch {
            index: st.index,
            ..Scratch::default()
        };
        // Ledger time is the entry's, and never runs backwards.
        self.now = self.now.max(st.at_ms);
        self.before(st);
        for ev in &st.events {
            self.event(st, ev);
        }
        self.after(st);
        if let Some(req) = client_req(&st.op) {
            let max = self.max_seq.entry(req.client).or_default();
            *max = (*max).max(req.seq);
        }
    }

    /// A request's credentials are good and the cluster has never seen it: it must be
    /// executed (not answered from the kept replies).
    fn fresh_and_valid(&self, req: &RequestId, auth: &SessionAuth) -> bool {
        let new = self.max_seq.get(&req.client).is_none_or(|m| req.seq > *m);
        new && self
            .sessions
            .get(&auth.session)
            .is_some_and(|s| s.secret == auth.secret && s.client == req.client)
    }

    fn before(&mut self, st: &Step) {
        // An outage ended with this entry: no TTL runs from before it (the brief's
        // full-cluster outage rule). It applies before the entry's own operation.
        if st.events.iter().any(|e| matches!(e, Event::Resumed { .. })) {
            self.resumed = self.now;
        }
        match &st.op {
            Op::LoadLicense { source, license } => {
                let loaded = st
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::LicenseLoaded { source: s, .. } if s == source));
                if loaded {
                    self.licenses
                        .insert(source.clone(), (st.index, license.lines.clone()));
                    self.count("license loads");
                    self.check_one_grouping(license.lines.iter().map(|l| l.name.as_str()));
                }
            }
            Op::UnloadLicense { source } => {
                let unloaded = st
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::LicenseUnloaded { source: s } if s == source));
                if unloaded {
                    self.licenses.remove(source);
                    self.count("license unloads");
                }
            }
            Op::CheckpointHeartbeats { beats } => {
                for (id, at) in beats {
                    let now = self.now;
                    if let Some(s) = self.sessions.get_mut(id) {
                        // A checkpoint is a lower bound on the last heartbeat: never
                        // later than the entry that records it.
                        s.beat_ms = s.beat_ms.max((*at).min(now));
                    }
                }
            }
            Op::Checkin { req, auth, lease } => {
                let owned = self
                    .leases
                    .get(lease)
                    .is_some_and(|l| l.session == auth.session);
                if owned && self.fresh_and_valid(req, auth) {
                    self.cur.must_release = Some(*lease);
                }
            }
            Op::CloseSession { req, auth } if self.fresh_and_valid(req, auth) => {
                self.cur.must_end.insert(auth.session);
            }
            Op::RemoveLease { lease } if self.leases.contains_key(lease) => {
                self.cur.must_remove = Some(*lease);
            }
            Op::ExpireSessions { sessions } => {
                for id in sessions {
                    if self.expiry_due(*id).unwrap_or(false) {
                        self.cur.must_end.insert(*id);
                    }
                }
            }
            Op::ReclaimSeats { seats } => {
                for id in seats {
                    let due = self.seats.get(id).is_some_and(|s| {
                        s.holders.is_empty() && s.linger_until.is_some_and(|u| u <= self.now)
                    });
                    if due {
                        self.cur.must_free_listed.insert(*id);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether a live session's TTL has run out since its last checkpointed heartbeat
    /// (or the end of the latest outage); `None` if it is not live.
    pub(super) fn expiry_due(&self, id: u64) -> Option<bool> {
        let s = self.sessions.get(&id)?;
        Some(s.beat_ms.max(self.resumed) + s.ttl_ms <= self.now)
    }

    /// The lines of one feature must agree on `DUP_GROUP`: a load that mixes them was to
    /// be refused (a pool has one grouping).
    fn check_one_grouping<'a>(&mut self, features: impl Iterator<Item = &'a str>) {
        let features: BTreeSet<&str> = features.collect();
        for f in features {
            let groups: BTreeSet<String> = self
                .licenses
                .values()
                .flat_map(|(_, ls)| ls)
                .filter(|l| l.name == f)
                .map(|l| format!("{:?}", l.dup_group))
                .collect();
            if groups.len() > 1 {
                self.bad(format!(
                    "a load was accepted whose lines of {f} disagree on DUP_GROUP: {groups:?}"
                ));
            }
        }
    }

    fn after(&mut self, st: &Step) {
        let cur = std::mem::take(&mut self.cur);
        self.cur.index = cur.index;
        for seat in &cur.emptied {
            let Some(s) = self.seats.get(seat) else {
                continue; // freed
            };
            if cur.must_free.contains(seat) {
                self.bad(format!(
                    "seat {seat} lost its last holder to an admin removal or a revocation, but was not freed at once"
                ));
            } else if s.linger_until.is_none() && s.holders.is_empty() {
                self.bad(format!(
                    "seat {seat} of {} lost its last holder but neither lingers nor was freed",
                    s.feature
                ));
            }
        }
        for s in cur.ending.difference(&cur.ended) {
            self.violations.push(format!(
                "index {}: leases or waits of session {s} ended as if it closed or expired, but it did not",
                cur.index
            ));
        }
        if let Some(lease) = cur.must_release.filter(|l| !cur.released.contains(l)) {
            self.bad(format!(
                "a checkin of lease {lease} by its own session, with its secret, released nothing"
            ));
        }
        if let Some(lease) = cur.must_remove.filter(|l| !cur.released.contains(l)) {
            self.bad(format!(
                "an admin removal of held lease {lease} removed nothing"
            ));
        }
        for s in cur.must_end.difference(&cur.ended) {
            self.violations.push(format!(
                "index {}: session {s} was due to end ({}) but did not",
                cur.index,
                op_name(&st.op)
            ));
        }
        for seat in cur.must_free_listed.difference(&cur.freed) {
            self.violations.push(format!(
                "index {}: seat {seat}'s linger was over and it was named for reclaim, but it was not freed",
                cur.index
            ));
        }
        // The count, after every entry: grants, and loads that lowered it.
        let features: BTreeSet<String> = self.seats.values().map(|s| s.feature.clone()).collect();
        for f in features {
            if let Some(cap) = self.judged_cap(&f) {
                let used = self.charged(&f);
                if used > cap {
                    self.bad(format!("{used} seats of {f} in use, {cap} licensed"));
                }
            }
        }
        // Sessions that ended hold nothing and wait for nothing.
        for s in &cur.ended {
            let held: Vec<u64> = self
                .leases
                .iter()
                .filter(|(_, l)| l.session == *s)
                .map(|(id, _)| *id)
                .collect();
            let waits: Vec<u64> = self
                .waiters
                .iter()
                .filter(|(_, w)| w.session == *s)
                .map(|(p, _)| *p)
                .collect();
            if !held.is_empty() || !waits.is_empty() {
                self.bad(format!(
                    "session {s} ended still holding leases {held:?} and waiting at places {waits:?}"
                ));
            }
        }
    }
}

/// The request id of a client's request (the ones the ledger keeps answers for).
fn client_req(op: &Op) -> Option<RequestId> {
    match op {
        Op::OpenSession { req, .. }
        | Op::Checkout { req, .. }
        | Op::Checkin { req, .. }
        | Op::CloseSession { req, .. } => Some(*req),
        _ => None,
    }
}
