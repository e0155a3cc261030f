//! The history checker. Its input is the committed history as the nodes applied it
//! (their archives merged, see [`crate::archive`]: every entry with the events the
//! servers' ledgers produced), and what the clients saw. It judges with:
//!
//! - the independent seat model ([`crate::model`]), written from the design brief:
//!   counts, grants, the cause of every release, revocations, the queue, `DUP_GROUP`;
//! - the clients' view: every grant a client saw is in the history with the same
//!   session and token; no session expired before the deadline its last acknowledged
//!   heartbeat promised; every crashed session expired, and its seats came back, within
//!   a stated bound after the crash or the heal;
//! - no seat still lingering long after its linger ended.
//!
//! The checker never runs the ledger: a bug in `Ledger::apply` would otherwise be
//! replayed into the very history that is judged. Nodes' agreement with each other
//! (same entries, same events, same ledger digest at the same index) is checked while
//! merging and collecting.
//!
//! [`check`] takes the steps directly, so a test can forge a bad history and see it
//! caught.

use std::collections::BTreeMap;

pub use crate::archive::Step;
use crate::model::Model;
use crate::workload::{History, Outcome};

/// What the checker needs besides the history.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How late, beyond TTL (+ linger for seats), a crashed session may be cleaned up,
    /// counted from its crash or from when the faults healed, whichever is later.
    pub cleanup_bound_ms: u64,
    /// When the last fault healed.
    pub healed_ms: u64,
    /// When the history was collected: seats still lingering long past their end by
    /// then were never reclaimed.
    pub end_ms: u64,
}

/// What the check found, and what the history held (for the soak's summary).
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub seen: BTreeMap<&'static str, u64>,
}

/// Judges `steps` (in index order) and the clients' `history`.
pub fn check(steps: &[Step], history: &History, rules: &Rules) -> Verdict {
    let mut m = Model::default();
    for st in steps {
        m.step(st);
    }
    let mut bad = std::mem::take(&mut m.violations);

    for (session, at) in &m.expired_at {
        if let Some(rec) = history.sessions.get(session) {
            if *at < rec.acked_deadline_ms {
                bad.push(format!(
                    "session {session} expired at {at}, before the deadline {} a heartbeat was acknowledged with",
                    rec.acked_deadline_ms
                ));
            }
        }
    }
    for op in &history.ops {
        if let Outcome::Granted { lease, token } = op.outcome {
            match m.grants.get(&lease) {
                Some((s, t)) if *s == op.session && *t == token => {}
                other => bad.push(format!(
                    "client {} was granted lease {lease} (token {token}, session {}) but the log has {other:?}",
                    op.client, op.session
                )),
            }
        }
    }
    let held = m.held();
    for (session, rec) in &history.sessions {
        let Some(crashed) = rec.crashed_ms else {
            continue;
        };
        let from = crashed.max(rules.healed_ms);
        // An administrator may close it first; the client itself must not (it crashed).
        let admin_closed = m
            .closed_by_admin
            .contains(session)
            .then(|| m.closed_at[session]);
        match m.expired_at.get(session).or(admin_closed.as_ref()) {
            None => bad.push(format!(
                "crashed session {session} never expired (crashed at {crashed}, healed at {}, closed at {:?}, last acknowledged deadline {})",
                rules.healed_ms,
                m.closed_at.get(session),
                rec.acked_deadline_ms
            )),
            Some(at) if *at > from + rec.ttl_ms + rules.cleanup_bound_ms => bad.push(format!(
                "crashed session {session} expired {} ms after crash/heal, bound {}",
                at - from,
                rec.ttl_ms + rules.cleanup_bound_ms
            )),
            Some(_) => {}
        }
        for (lease, s) in &held {
            if s == session {
                bad.push(format!(
                    "crashed session {session} still holds lease {lease} at the end"
                ));
            }
        }
    }
    for (id, feature, until) in m.lingering() {
        if until + rules.cleanup_bound_ms < rules.end_ms {
            bad.push(format!(
                "seat {id} of {feature} still lingers {} ms after its linger ended",
                rules.end_ms - until
            ));
        }
    }
    Verdict {
        violations: bad,
        seen: m.seen,
    }
}
