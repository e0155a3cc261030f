//! Conversions between the ledger's vocabulary and the protocol's, in one place: what a
//! denial or a revocation says to people, and which protocol code it maps to.

use tally_core::ledger::{Revocation, RevokeReason};
use tally_proto::v1 as pb;

/// One sentence naming why a lease was taken away.
pub fn revocation_message(r: &Revocation) -> String {
    match &r.reason {
        RevokeReason::LicenseChanged { source } => format!(
            "seat of \"{}\" revoked: the license file \"{source}\" was unloaded or replaced, and what is loaded now grants fewer seats than were held",
            r.feature
        ),
        RevokeReason::TermEnded { remaining } => format!(
            "seat of \"{}\" revoked: the license term ended (expiry plus grace); {remaining} seat(s) remain until a renewed license is loaded",
            r.feature
        ),
    }
}

pub fn revocation(r: &Revocation) -> pb::Revocation {
    pb::Revocation {
        lease_id: r.lease,
        feature: r.feature.clone(),
        cause: match r.reason {
            RevokeReason::LicenseChanged { .. } => pb::RevocationCause::LicenseChanged,
            RevokeReason::TermEnded { .. } => pb::RevocationCause::TermEnded,
        } as i32,
        message: revocation_message(r),
        at_ms: r.at_ms,
    }
}
