//! The history checker. It replays the committed log through a fresh ledger to learn
//! what the cluster did (every reply and event, at its index and leader time), then
//! judges those events by rules of its own, independent of the ledger's code:
//!
//! - at every index, seats in use per feature ≤ what the license grants;
//! - no seat held by two sessions at once; fencing tokens only grow per seat;
//! - no lingering seat reclaimed before its linger ends;
//! - every checkout a client saw granted is in the log, same session and token, and no
//!   request id was granted twice;
//! - no session expired before TTL after its last acknowledged heartbeat;
//! - every crashed session expired, and its seats came back, within a stated bound;
//! - every node's ledger equals the replay's at that node's applied index.
//!
//! [`check_events`] takes the events directly, so a test can forge a bad history and
//! see it caught.

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest as _;
use tally_core::ledger::{Entry, Event, Ledger, Op, RequestId};

use crate::workload::{History, Outcome};

/// One applied entry and what it did.
#[derive(Debug, Clone)]
pub struct Step {
    pub index: u64,
    pub at_ms: u64,
    /// The request behind a grant, when the entry was a client's checkout.
    pub req: Option<RequestId>,
    pub events: Vec<Event>,
}

/// Replays `log` and returns the steps, plus the SHA-256 of the ledger's snapshot after
/// each index in `digest_at`.
pub fn replay(log: &[Entry], digest_at: &BTreeSet<u64>) -> (Vec<Step>, BTreeMap<u64, Vec<u8>>) {
    let mut ledger = Ledger::new();
    let mut steps = Vec::with_capacity(log.len());
    let mut digests = BTreeMap::new();
    if digest_at.contains(&0) {
        digests.insert(0, sha2::Sha256::digest(ledger.snapshot()).to_vec());
    }
    for e in log {
        let out = ledger.apply(e);
        let req = match &e.op {
            Op::Checkout { req, .. } => Some(*req),
            _ => None,
        };
        steps.push(Step {
            index: e.index,
            at_ms: e.at_ms,
            req,
            events: out.events,
        });
        if digest_at.contains(&e.index) {
            digests.insert(e.index, sha2::Sha256::digest(ledger.snapshot()).to_vec());
        }
    }
    (steps, digests)
}

/// What the checker needs besides the events.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Licensed seats per feature (overdraft included).
    pub seats: BTreeMap<String, u64>,
    /// How late, beyond TTL (+ linger for seats), a crashed session may be cleaned up,
    /// counted from its crash or from when the faults healed, whichever is later.
    pub cleanup_bound_ms: u64,
    /// When the last fault healed.
    pub healed_ms: u64,
    /// When the log was exported: seats still lingering long past their end by then
    /// were never reclaimed.
    pub end_ms: u64,
}

#[derive(Debug, Default)]
struct SeatModel {
    feature: String,
    count: u64,
    holders: BTreeSet<(u64, u64)>, // (lease, session)
    lingering_until: Option<u64>,
    token: u64,
}

/// Checks the events against the rules and the clients' history. Returns violations,
/// each one sentence naming the index and what broke.
pub fn check_events(steps: &[Step], history: &History, rules: &Rules) -> Vec<String> {
    let mut bad = Vec::new();
    let mut seats: BTreeMap<u64, SeatModel> = BTreeMap::new();
    let mut in_use: BTreeMap<String, u64> = BTreeMap::new();
    let mut lease_seat: BTreeMap<u64, u64> = BTreeMap::new();
    let mut grants: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // lease -> (session, token)
    let mut grants_per_req: BTreeMap<RequestId, u32> = BTreeMap::new();
    let mut expired_at: BTreeMap<u64, u64> = BTreeMap::new();
    let mut closed_at: BTreeMap<u64, u64> = BTreeMap::new();
    let mut live: BTreeMap<u64, u64> = BTreeMap::new(); // lease -> session, while held

    for st in steps {
        for ev in &st.events {
            match ev {
                Event::Granted {
                    feature,
                    session,
                    grant,
                } => {
                    if let Some(req) = st.req {
                        let n = grants_per_req.entry(req).or_default();
                        *n += 1;
                        if *n > 1 {
                            bad.push(format!(
                                "index {}: request {:?} granted a second time",
                                st.index, req.seq
                            ));
                        }
                    }
                    grants.insert(grant.lease, (*session, grant.fencing_token));
                    lease_seat.insert(grant.lease, grant.seat);
                    live.insert(grant.lease, *session);
                    let seat = seats.entry(grant.seat).or_insert_with(|| {
                        *in_use.entry(feature.clone()).or_default() += u64::from(grant.count);
                        SeatModel {
                            feature: feature.clone(),
                            count: u64::from(grant.count),
                            ..SeatModel::default()
                        }
                    });
                    if grant.fencing_token <= seat.token {
                        bad.push(format!(
                            "index {}: seat {} token went from {} to {}",
                            st.index, grant.seat, seat.token, grant.fencing_token
                        ));
                    }
                    seat.token = grant.fencing_token;
                    seat.lingering_until = None;
                    if seat.holders.iter().any(|(_, s)| s != session) {
                        bad.push(format!(
                            "index {}: seat {} held by sessions {:?} and {}",
                            st.index, grant.seat, seat.holders, session
                        ));
                    }
                    seat.holders.insert((grant.lease, *session));
                    let used = in_use.get(feature).copied().unwrap_or(0);
                    let cap = rules.seats.get(feature).copied().unwrap_or(0);
                    if used > cap {
                        bad.push(format!(
                            "index {}: {used} seats of {feature} in use, {cap} licensed",
                            st.index
                        ));
                    }
                }
                Event::Released { lease, seat, .. } => {
                    live.remove(lease);
                    if let Some(s) = seats.get_mut(seat) {
                        s.holders.retain(|(l, _)| l != lease);
                    }
                }
                Event::Removed { lease, .. } => {
                    live.remove(lease);
                    if let Some(s) = lease_seat.get(lease).and_then(|id| seats.get_mut(id)) {
                        s.holders.retain(|(l, _)| l != lease);
                    }
                }
                Event::Lingering { seat, until, .. } => {
                    if let Some(s) = seats.get_mut(seat) {
                        s.lingering_until = Some(*until);
                    }
                }
                Event::Reclaimed { seat, .. } => {
                    let Some(s) = seats.remove(seat) else {
                        bad.push(format!("index {}: unknown seat {seat} reclaimed", st.index));
                        continue;
                    };
                    if let Some(until) = s.lingering_until {
                        if st.at_ms < until {
                            bad.push(format!(
                                "index {}: seat {seat} reclaimed at {} before its linger ended at {until}",
                                st.index, st.at_ms
                            ));
                        }
                    }
                    if !s.holders.is_empty() {
                        bad.push(format!(
                            "index {}: seat {seat} reclaimed while held by {:?}",
                            st.index, s.holders
                        ));
                    }
                    if let Some(u) = in_use.get_mut(&s.feature) {
                        *u = u.saturating_sub(s.count);
                    }
                }
                Event::SessionClosed { session } => {
                    closed_at.insert(*session, st.at_ms);
                }
                Event::SessionExpired { session } => {
                    expired_at.insert(*session, st.at_ms);
                    if let Some(rec) = history.sessions.get(session) {
                        if st.at_ms < rec.acked_deadline_ms {
                            bad.push(format!(
                                "index {}: session {session} expired at {}, before the deadline {} a heartbeat was acknowledged with",
                                st.index, st.at_ms, rec.acked_deadline_ms
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    for op in &history.ops {
        if let Outcome::Granted { lease, token } = op.outcome {
            match grants.get(&lease) {
                Some((s, t)) if *s == op.session && *t == token => {}
                other => bad.push(format!(
                    "client {} was granted lease {lease} (token {token}, session {}) but the log has {other:?}",
                    op.client, op.session
                )),
            }
        }
    }

    for (session, rec) in &history.sessions {
        let Some(crashed) = rec.crashed_ms else {
            continue;
        };
        let from = crashed.max(rules.healed_ms);
        match expired_at.get(session) {
            None => bad.push(format!(
                "crashed session {session} never expired (crashed at {crashed}, healed at {}, closed at {:?}, last acknowledged deadline {})",
                rules.healed_ms,
                closed_at.get(session),
                rec.acked_deadline_ms
            )),
            Some(at) if *at > from + rec.ttl_ms + rules.cleanup_bound_ms => bad.push(format!(
                "crashed session {session} expired {} ms after crash/heal, bound {}",
                at - from,
                rec.ttl_ms + rules.cleanup_bound_ms
            )),
            Some(_) => {}
        }
        for (lease, s) in &live {
            if s == session {
                bad.push(format!(
                    "crashed session {session} still holds lease {lease} at the end"
                ));
            }
        }
    }
    for (id, s) in &seats {
        if let Some(until) = s.lingering_until {
            if until + rules.cleanup_bound_ms < rules.end_ms {
                bad.push(format!(
                    "seat {id} of {} still lingers {} ms after its linger ended",
                    s.feature,
                    rules.end_ms - until
                ));
            }
        }
    }
    bad
}
