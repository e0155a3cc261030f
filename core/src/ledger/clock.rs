//! Ledger time: how the time carried by each entry moves the ledger's clock, and what
//! the ledger does when that time jumps.
//!
//! The ledger has no clock of its own; the leader stamps each entry (the server bounds
//! that stamp: the leader must agree with its peers' clocks to lead at all, and within
//! its term the stamp advances with its monotonic clock). The ledger's own rules:
//!
//! 1. **Time never runs backwards.** An entry stamped earlier than ledger time (a new
//!    leader whose clock is a little behind its predecessor's) is applied at ledger time.
//! 2. **A forward jump of more than [`OUTAGE_GAP_MS`] is an outage.** A leader writes an
//!    entry at least every second (`Op::Tick` when idle), so such a silence means no
//!    leader was up to answer heartbeats: the whole cluster was down, or had no quorum.
//!    Nobody could renew a session then, so no session's TTL counts that time: every
//!    session's TTL restarts at the entry that ends the silence (`resumed_ms`). A live
//!    client that heartbeats within its TTL of the return keeps its seats; a dead one
//!    is expired TTL after the return (and its seats come back a linger later). Normal
//!    elections end well inside the gap, so elections alone never extend a session: for
//!    them, the leader's keeper grants only a fixed allowance from the checkpoint.
//! 3. **Term boundaries act when crossed.** When ledger time passes the end of a line's
//!    term (expiry plus grace), held seats beyond what the pool still grants are revoked
//!    in that same entry (see `revoke.rs`).
//! 4. **A bad time can be repaired.** If a wrong time did get in (every clock of a site
//!    wrong at once), `Op::RepairClock` sets ledger time back; times beyond the new one
//!    move back with it (a lingering seat keeps its remaining linger, a queued wait its
//!    remaining wait), and every session's TTL restarts at the repair. Seats revoked
//!    meanwhile stay revoked: their holders check out again.

use super::{Event, Ledger, Reply, TimeMs};

/// A silence between two entries longer than this is an outage (rule 2 above). Leaders
/// write an entry at least every second, and an election ends within a few election
/// timeouts (the server refuses an `election_max_ms` that would come near this).
pub const OUTAGE_GAP_MS: u64 = 5_000;

impl Ledger {
    /// Moves ledger time to an entry's time, by the rules in the module docs.
    pub(super) fn advance_clock(&mut self, at_ms: TimeMs, ev: &mut Vec<Event>) {
        let before = self.st.now_ms;
        if at_ms <= before {
            return;
        }
        self.st.now_ms = at_ms;
        // The very first entry ends no outage: there was nothing before it.
        if before > 0 && at_ms - before > OUTAGE_GAP_MS {
            self.st.resumed_ms = at_ms;
            ev.push(Event::Resumed {
                silent_ms: at_ms - before,
            });
        }
        if self.ix.next_boundary.is_some_and(|b| b <= at_ms) {
            self.enforce_terms(before, ev);
        }
    }

    /// Sets ledger time back to `to_ms` (rule 4 above). A repair to a time that is not
    /// earlier changes nothing.
    pub(super) fn repair_clock(&mut self, to_ms: TimeMs, ev: &mut Vec<Event>) -> Reply {
        let from_ms = self.st.now_ms;
        if to_ms >= from_ms {
            return Reply::Done { affected: 0 };
        }
        let back = from_ms - to_ms;
        let pull = |t: &mut TimeMs| *t = (*t).min(to_ms);
        self.st.now_ms = to_ms;
        self.st.resumed_ms = to_ms;
        self.st.clock_epoch += 1;
        for s in self.st.sessions.values_mut() {
            pull(&mut s.opened_ms);
            pull(&mut s.last_heartbeat_ms);
        }
        for l in self.st.leases.values_mut() {
            pull(&mut l.granted_ms);
        }
        for s in self.st.seats.values_mut() {
            pull(&mut s.charged_ms);
            if let Some(u) = &mut s.lingering_until {
                *u = u.saturating_sub(back);
            }
        }
        for w in self.st.queue.values_mut() {
            pull(&mut w.queued_ms);
            if let Some(d) = &mut w.deadline_ms {
                *d = d.saturating_sub(back);
            }
        }
        for c in self.st.clients.values_mut() {
            pull(&mut c.last_seen_ms);
        }
        for r in self.st.revocations.values_mut().flatten() {
            pull(&mut r.at_ms);
        }
        self.reindex();
        ev.push(Event::ClockRepaired { from_ms, to_ms });
        Reply::Done { affected: 1 }
    }
}
