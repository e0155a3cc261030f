//! Conversions between the ledger's vocabulary and the protocol's, in one place: what a
//! denial or a revocation says to people, and which protocol code it maps to.

use tally_core::ledger::{
    ClientId, DenyReason, LoadError, Reply, RequestId, Revocation, RevokeReason, SessionAuth,
    TermState,
};
use tally_core::license::{Date, DupGroup, Zone};
use tally_core::options::DenialCode;
use tally_proto::v1 as pb;
use tonic::Status;

use crate::licensing::digest;

/// A term state's name, as `tallyctl features --json` and the metrics spell it.
pub fn term_name(t: &TermState) -> &'static str {
    match t {
        TermState::NotStarted { .. } => "not_started",
        TermState::Active { .. } => "active",
        TermState::Expiring { .. } => "expiring",
        TermState::Grace { .. } => "grace",
        TermState::Demo { .. } => "demo",
        TermState::Expired => "expired",
    }
}

/// The instant a term state is about: its start, end, or grace's end (0: none).
pub fn term_until(t: &TermState) -> u64 {
    match *t {
        TermState::NotStarted { starts_ms } => starts_ms,
        TermState::Active { ends_ms } => ends_ms.unwrap_or(0),
        TermState::Expiring { ends_ms } => ends_ms,
        TermState::Grace { until_ms } => until_ms,
        TermState::Demo { .. } | TermState::Expired => 0,
    }
}

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
        RevokeReason::UserUnassigned => format!(
            "seat of \"{}\" revoked: an administrator unassigned you from this named-user feature",
            r.feature
        ),
        RevokeReason::FairUseEnded { window_ended_ms } => format!(
            "seat of \"{}\" revoked: you are assigned beyond the licensed count, and the fair-use window ended on {}; more seats must be loaded or users unassigned",
            r.feature,
            Date::of_ms(*window_ended_ms)
        ),
        RevokeReason::RemovedByAdmin => format!(
            "seat of \"{}\" removed by an administrator (tallyctl remove)",
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
            RevokeReason::UserUnassigned => pb::RevocationCause::UserUnassigned,
            RevokeReason::FairUseEnded { .. } => pb::RevocationCause::FairUseEnded,
            RevokeReason::RemovedByAdmin => pb::RevocationCause::RemovedByAdmin,
        } as i32,
        message: revocation_message(r),
        at_ms: r.at_ms,
    }
}

pub fn request_id(r: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let r = r.ok_or_else(|| {
        Status::invalid_argument("missing `request` (client id and sequence number)")
    })?;
    let client: ClientId = r.client_id.as_slice().try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "request.client_id must be 16 bytes, got {}",
            r.client_id.len()
        ))
    })?;
    Ok(RequestId { client, seq: r.seq })
}

pub fn auth(a: Option<pb::SessionAuth>) -> Result<SessionAuth, Status> {
    let a = a.ok_or_else(|| Status::invalid_argument("missing `auth` (session id and secret)"))?;
    if a.secret.len() != 32 {
        return Err(Status::unauthenticated(format!(
            "the session secret must be 32 bytes, got {}",
            a.secret.len()
        )));
    }
    Ok(SessionAuth {
        session: a.session_id,
        secret: digest(&a.secret),
    })
}

/// One sentence naming what a denial means. Dates are days of `zone`, the cluster's time
/// zone for license dates (`Ledger::time_zone`): a line that ends at 08:00 UTC in Los
/// Angeles ended "at the end of 31-dec-2027", as its file says, not on 1-jan-2028.
pub fn deny_message(reason: &DenyReason, feature: &str, zone: Zone) -> String {
    match reason {
        DenyReason::UnknownFeature => format!("no license for feature \"{feature}\" is loaded"),
        DenyReason::VersionTooNew { requested, highest } => {
            format!("version {requested} of \"{feature}\" is not licensed (highest licensed: {highest})")
        }
        // Dates as the license file writes them (31-dec-2027), not milliseconds.
        DenyReason::NotYetStarted { start_ms } => format!(
            "the license for \"{feature}\" starts on {}",
            zone.date_of_ms(*start_ms)
        ),
        DenyReason::Expired { expired_ms } => format!(
            "the license for \"{feature}\" expired at the end of {}",
            zone.date_of_ms(expired_ms.saturating_sub(1))
        ),
        DenyReason::NoSeats {
            requested,
            available,
            ..
        } if u64::from(*requested) > *available => format!(
            "{requested} seat(s) of \"{feature}\" requested, but only {available} are licensed (overdraft included)"
        ),
        DenyReason::NoSeats {
            requested,
            in_use,
            available,
        } => format!(
            "{requested} seat(s) of \"{feature}\" requested, but {in_use} of {available} are in use"
        ),
        DenyReason::QueuedAhead {
            requested,
            in_use,
            available,
            waiting,
        } => format!(
            "{requested} seat(s) of \"{feature}\" requested and {} of {available} are free, but {waiting} queued request(s) came first and are served first; ask with a wait to queue behind them",
            available.saturating_sub(*in_use)
        ),
        DenyReason::InvalidCount { requested } => format!("{requested} is not a valid seat count"),
        DenyReason::UnknownSession => {
            "unknown session: it expired or was closed; open a new one".into()
        }
        DenyReason::BadSecret => "the session secret does not match".into(),
        DenyReason::UnknownLease => "this session holds no such lease".into(),
        DenyReason::StaleRequest { last_seq } => {
            format!("request superseded: this client already sent request {last_seq}")
        }
        DenyReason::QueueFull {
            limit,
            per_session: true,
        } => format!(
            "this session already waits for {limit} checkouts, the most one session may; wait for one to end"
        ),
        DenyReason::QueueFull {
            limit,
            per_session: false,
        } => format!(
            "{limit} checkouts already wait for \"{feature}\", the most the queue holds; try again later"
        ),
        DenyReason::NamedUserNotAssigned => format!(
            "\"{feature}\" is licensed to named users, and you are not one of them: ask an administrator (tallyctl users assign {feature} USER)"
        ),
        DenyReason::NamedUserBlocked {
            window_ended_ms,
            count,
        } => format!(
            "you are assigned to \"{feature}\" beyond its {count} licensed users, and the fair-use window ended on {}: load more seats, or unassign users (tallyctl users unassign)",
            zone.date_of_ms(*window_ended_ms)
        ),
        DenyReason::NotNamedUser => {
            format!("\"{feature}\" is not licensed to named users (no USER_BASED line is loaded)")
        }
        DenyReason::WaitCancelled => {
            format!("an administrator cancelled this wait for \"{feature}\"")
        }
        DenyReason::WrongClient => "another client id opened this session: a session's requests must carry the client id it was opened with".into(),
        DenyReason::QueueTimeout { waited_ms } => {
            format!(
                "waited {waited_ms} ms in the queue for \"{feature}\" without a seat coming free"
            )
        }
        DenyReason::SuiteDenied { suite, reason } => format!(
            "\"{feature}\" is a component of the suite \"{suite}\", whose seat every checkout of a component takes too: {}",
            deny_message(reason, suite, zone)
        ),
        // `RESERVED_FOR_OTHERS (options line 4: RESERVE 2 cad USER ann): 2 of the 2
        // free seat(s) of cad are reserved for others`: the admin's file, by line.
        DenyReason::Policy {
            code,
            line,
            directive,
            detail,
        } => format!(
            "{} (options line {line}: {directive}): {detail}",
            code.as_str()
        ),
    }
}

pub fn denial_code(reason: &DenyReason) -> pb::DenialReason {
    use pb::DenialReason as D;
    match reason {
        DenyReason::UnknownFeature => D::UnknownFeature,
        DenyReason::VersionTooNew { .. } => D::VersionTooNew,
        DenyReason::NotYetStarted { .. } => D::NotYetStarted,
        DenyReason::Expired { .. } => D::Expired,
        DenyReason::NoSeats { .. } | DenyReason::QueuedAhead { .. } => D::NoSeats,
        // The suite's reason is the checkout's: its seats, or its term.
        DenyReason::SuiteDenied { reason, .. } => denial_code(reason),
        DenyReason::InvalidCount { .. } => D::InvalidCount,
        DenyReason::UnknownSession => D::UnknownSession,
        DenyReason::BadSecret => D::BadSecret,
        DenyReason::UnknownLease => D::UnknownLease,
        DenyReason::StaleRequest { .. } => D::StaleRequest,
        DenyReason::QueueTimeout { .. } => D::QueueTimeout,
        DenyReason::QueueFull { .. } => D::QueueFull,
        DenyReason::WaitCancelled => D::WaitCancelled,
        DenyReason::NamedUserNotAssigned => D::NamedUserNotAssigned,
        DenyReason::NamedUserBlocked { .. } => D::NamedUserBlocked,
        DenyReason::NotNamedUser => D::NotNamedUser,
        DenyReason::WrongClient => D::WrongClient,
        DenyReason::Policy { code, .. } => match code {
            DenialCode::ExcludedByPolicy => D::ExcludedByPolicy,
            DenialCode::MaxReachedByPolicy => D::MaxReachedByPolicy,
            DenialCode::ReservedForOthers => D::ReservedForOthers,
            // Only a borrow is refused for BORROW_LOWWATER, and borrowing is not built
            // yet; its work appends a code of its own.
            DenialCode::BorrowLowwater => D::Unspecified,
        },
    }
}

/// Session-level refusals of non-checkout calls become gRPC statuses. They name no
/// date (those are a checkout's denials), so the zone they are read in does not matter.
pub fn refusal(reason: &DenyReason) -> Status {
    let msg = deny_message(reason, "", Zone::UTC);
    match reason {
        DenyReason::BadSecret | DenyReason::WrongClient => Status::permission_denied(msg),
        DenyReason::UnknownSession | DenyReason::UnknownLease => Status::not_found(msg),
        _ => Status::failed_precondition(msg),
    }
}

pub fn unexpected(reply: &Reply) -> Status {
    Status::internal(format!("unexpected ledger reply: {reply:?}"))
}

pub fn dup_name(g: DupGroup) -> &'static str {
    g.name()
}

pub fn load_error(e: &LoadError) -> Status {
    Status::failed_precondition(match e {
        LoadError::Conflict {
            feature,
            line,
            what,
        } => {
            format!("line {line} ({feature}): {what}")
        }
        LoadError::NoSuchSource { source } => format!("no license is loaded from \"{source}\""),
        LoadError::WrongCluster {
            feature,
            line,
            locked_to,
            this: Some(this),
        } => format!(
            "line {line} ({feature}): the line is locked to cluster {locked_to} (CLUSTER={locked_to}), but this is cluster {this}"
        ),
        LoadError::WrongCluster {
            feature,
            line,
            locked_to,
            this: None,
        } => format!(
            "line {line} ({feature}): the line is locked to cluster {locked_to}, and this cluster has no identity yet (its first leader makes one): retry in a moment"
        ),
    })
}

pub fn lease_info(
    sm: &crate::store::Applied,
    id: u64,
    l: &tally_core::ledger::Lease,
) -> pb::LeaseInfo {
    let holder = sm.ledger.session(l.session).map(|s| &s.holder);
    pb::LeaseInfo {
        lease_id: id,
        seat_id: l.seat,
        feature: l.feature.clone(),
        version: l.version.to_string(),
        count: l.count,
        session_id: l.session,
        user: holder.map(|h| h.user.clone()).unwrap_or_default(),
        host: holder.map(|h| h.host.clone()).unwrap_or_default(),
        display: holder.map(|h| h.display.clone()).unwrap_or_default(),
        pid: holder.map_or(0, |h| h.pid),
        granted_at_ms: l.granted_ms,
        fencing_token: l.fencing_token,
        state: pb::LeaseState::Active as i32,
        lingering_until_ms: 0,
        overdraft_seats: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::license::Date;

    #[test]
    fn denials_read_like_a_sentence_with_dates_not_milliseconds() {
        let day = |y, m, d| Date::from_ymd(y, m, d).unwrap();
        let cases = [
            (
                DenyReason::NotYetStarted {
                    start_ms: day(2026, 1, 1).start_ms(),
                },
                "the license for \"cad\" starts on 1-jan-2026",
            ),
            (
                DenyReason::Expired {
                    expired_ms: day(2027, 12, 31).end_ms(),
                },
                "the license for \"cad\" expired at the end of 31-dec-2027",
            ),
            (
                DenyReason::NoSeats {
                    requested: 3,
                    in_use: 0,
                    available: 2,
                },
                "3 seat(s) of \"cad\" requested, but only 2 are licensed (overdraft included)",
            ),
            (
                DenyReason::NoSeats {
                    requested: 2,
                    in_use: 1,
                    available: 2,
                },
                "2 seat(s) of \"cad\" requested, but 1 of 2 are in use",
            ),
            (
                DenyReason::QueuedAhead {
                    requested: 1,
                    in_use: 3,
                    available: 11,
                    waiting: 1,
                },
                "1 seat(s) of \"cad\" requested and 8 of 11 are free, but 1 queued request(s) came first and are served first; ask with a wait to queue behind them",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(deny_message(&reason, "cad", Zone::UTC), want);
        }
    }

    #[test]
    fn denials_name_the_day_of_the_clusters_zone() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let day = |s| Date::parse_flexlm(s).unwrap();
        // (zone, denial, what it says)
        let cases = [
            (
                la,
                DenyReason::Expired {
                    expired_ms: la.day_end_ms(day("31-dec-2027")),
                },
                "expired at the end of 31-dec-2027",
            ),
            (
                berlin,
                DenyReason::Expired {
                    expired_ms: berlin.day_end_ms(day("31-dec-2027")),
                },
                "expired at the end of 31-dec-2027",
            ),
            (
                berlin,
                DenyReason::NotYetStarted {
                    start_ms: berlin.day_start_ms(day("1-jan-2026")),
                },
                "starts on 1-jan-2026",
            ),
            (
                la,
                DenyReason::NotYetStarted {
                    start_ms: la.day_start_ms(day("1-jan-2026")),
                },
                "starts on 1-jan-2026",
            ),
        ];
        for (zone, reason, want) in cases {
            let got = deny_message(&reason, "cad", zone);
            assert!(got.ends_with(want), "{}: {got}", zone.name());
        }
    }
}
