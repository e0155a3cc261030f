//! The usage history: what happened to every seat, in the log's order, as records a site
//! can read, export and bill from (issue 16).
//!
//! A [`Record`] is derived from the events one log entry produced, by a [`Recorder`] that
//! every node runs beside the ledger. The events and the ledger are the same on every
//! node, so the records are too: the history is replicated without a byte of it going
//! through Raft, and a node rebuilt from a snapshot gets the history carried with it.
//! Records name people (user and host), where the events name sessions and leases by id,
//! so the recorder keeps who holds what, as the audit log does.
//!
//! [`report`] turns records into the reports of `tallyctl report`: use per interval,
//! metered overuse, the monthly true-up and denials, each pure and table-tested.
//!
//! Kept apart from the ledger, not in its state: a month of a busy site is a million
//! records, which belong on disk (the server keeps them in redb, by time), not in the
//! memory and the snapshot of every apply.

mod recorder;
pub mod report;

#[cfg(test)]
mod tests;

pub use recorder::Recorder;

use serde::{Deserialize, Serialize};

use crate::ledger::{DenyReason, LeaseId, ReleaseCause, RevokeReason, SeatId, TermState, TimeMs};

/// One thing that happened, at one log index and ledger time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The index of the log entry that did it (several records may share one).
    pub index: u64,
    /// Ledger time of that entry.
    pub at_ms: TimeMs,
    /// The feature it concerns; empty for records of no feature (a license load).
    pub feature: String,
    /// Whose seat or request it was; empty where none (a load, a term change).
    pub user: String,
    pub host: String,
    /// The administrator's certificate name, where an administrator acted.
    pub by: Option<String>,
    pub what: What,
}

/// What a [`Record`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    /// A checkout was granted. `fresh`: it took a seat from the pool (not one shared or
    /// lingering for the same owner); `overdraft`: seats of it beyond the licensed count.
    Granted {
        lease: LeaseId,
        count: u32,
        overdraft: u32,
        fresh: bool,
    },
    /// A lease ended by its holder (checkin, session closed) or by expiry.
    Released {
        lease: LeaseId,
        cause: ReleaseCause,
    },
    /// A seat went back to its pool: with `charged_ms`, its whole span of use.
    Reclaimed {
        seat: SeatId,
        count: u32,
        charged_ms: TimeMs,
    },
    /// An administrator removed a lease.
    Removed {
        lease: LeaseId,
    },
    /// The cluster took a lease back.
    Revoked {
        lease: LeaseId,
        reason: RevokeReason,
    },
    /// A checkout was refused.
    Denied {
        reason: DenyReason,
    },
    /// A checkout waits in the queue.
    Queued {
        place: u64,
    },
    /// A wait ended without a grant.
    Dequeued {
        place: u64,
        reason: DenyReason,
    },
    LicenseLoaded {
        source: String,
        lines: u32,
    },
    LicenseUnloaded {
        source: String,
    },
    /// A site options file took effect (0 directives: the policy was cleared).
    OptionsLoaded {
        directives: u32,
    },
    /// Named users were assigned; `assigned`: the feature's assignments after.
    Assigned {
        users: Vec<String>,
        assigned: u64,
    },
    Unassigned {
        users: Vec<String>,
        assigned: u64,
    },
    /// The licensed count changed: what use is measured against from here on.
    Licensed {
        issued: u64,
        overdraft_limit: u64,
    },
    /// Use (seats counted, or named users assigned) went beyond the licensed count: the
    /// under-licensing alert. Said once as it happens; again only after use came back
    /// within the count.
    Short {
        in_use: u64,
        licensed: u64,
    },
    FairUseOpened {
        until_ms: TimeMs,
    },
    FairUseClosed,
    TermChanged {
        state: TermState,
    },
    TimeZoneSet {
        zone: String,
    },
    ClockRepaired {
        from_ms: TimeMs,
        to_ms: TimeMs,
    },
}

impl What {
    /// The record's kind as exports and `--kind` filters name it.
    pub fn kind(&self) -> &'static str {
        match self {
            What::Granted { .. } => "grant",
            What::Released {
                cause: ReleaseCause::SessionExpired,
                ..
            } => "expiry",
            What::Released { .. } => "checkin",
            What::Reclaimed { .. } => "reclaim",
            What::Removed { .. } => "removal",
            What::Revoked { .. } => "revocation",
            What::Denied { .. } => "denial",
            What::Queued { .. } => "queued",
            What::Dequeued { .. } => "dequeued",
            What::LicenseLoaded { .. } => "license_loaded",
            What::LicenseUnloaded { .. } => "license_unloaded",
            What::OptionsLoaded { .. } => "options_loaded",
            What::Assigned { .. } => "assigned",
            What::Unassigned { .. } => "unassigned",
            What::Licensed { .. } => "licensed",
            What::Short { .. } => "short",
            What::FairUseOpened { .. } => "fair_use_opened",
            What::FairUseClosed => "fair_use_closed",
            What::TermChanged { .. } => "term_changed",
            What::TimeZoneSet { .. } => "time_zone_set",
            What::ClockRepaired { .. } => "clock_repaired",
        }
    }
}

/// How far back the history reaches by default: 400 days, so a year's true-up and the
/// quarter before it can always be reported.
pub const DEFAULT_RETENTION_MS: u64 = 400 * 86_400_000;
