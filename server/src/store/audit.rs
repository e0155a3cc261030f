//! The lmgrd-style audit log: one line per seat event, in a stable shape that sites grep
//! the way they grep FlexNet's debug log. Every node writes it as it applies entries
//! (so any node's log tells the whole story, and a line is written once per node per
//! entry), at INFO with the target `tally::audit`:
//!
//! ```text
//! OUT: "feature" user@host (lease L, N license(s))
//! IN: "feature" user@host (lease L)
//! IN: "feature" user@host (lease L, session closed)
//! EXPIRED: "feature" user@host (lease L, no heartbeat within the session's TTL)
//! REMOVED by admin: "feature" user@host (lease L)
//! REVOKED: "feature" user@host (lease L, why)
//! DENIED: "feature" user@host (why)
//! QUEUED: "feature" user@host (place P)
//! DEQUEUED: "feature" user@host (place P, why)
//! ```
//!
//! A restarted node re-applies the entries after its last snapshot and writes their
//! lines again; lease and place numbers (each the log index that made it) tell a replay
//! from a new event.
//!
//! Events name sessions and leases by id, and a released lease is gone from the ledger
//! by the time its event is read, so [`Audit`] keeps who holds what, built from the
//! ledger on start and kept up from the events: pure, so it is tested on made-up events.

use std::collections::HashMap;

use tally_core::ledger::{Event, LeaseId, Ledger, ReleaseCause, RevokeReason, SessionId};
use tally_core::license::Zone;

/// The kinds of line, as `/metrics` counts them (`tally_seat_events_total{event}`), in
/// [`Kind`] order.
pub const KINDS: [&str; 8] = [
    "out", "in", "expired", "removed", "revoked", "denied", "queued", "dequeued",
];

/// A line's kind: its position in [`KINDS`].
#[derive(Debug, Clone, Copy)]
enum Kind {
    Out,
    In,
    Expired,
    Removed,
    Revoked,
    Denied,
    Queued,
    Dequeued,
}

/// Who each live session, lease and queue place belongs to, and how many lines of each
/// kind (and denials of each reason) this node wrote since it started.
#[derive(Debug, Default)]
pub struct Audit {
    sessions: HashMap<SessionId, String>,
    leases: HashMap<LeaseId, SessionId>,
    places: HashMap<u64, SessionId>,
    counts: [u64; KINDS.len()],
    denials: std::collections::BTreeMap<&'static str, u64>,
    /// The cluster's time zone for license dates, for the dates denials name.
    zone: Zone,
}

impl Audit {
    /// Everything live in `ledger`.
    pub fn of(ledger: &Ledger) -> Audit {
        Audit {
            sessions: ledger
                .sessions()
                .map(|(id, s)| (id, format!("{}@{}", s.holder.user, s.holder.host)))
                .collect(),
            leases: ledger.leases().map(|(id, l)| (id, l.session)).collect(),
            places: ledger.waiters().map(|(p, w)| (p, w.session)).collect(),
            zone: ledger.time_zone(),
            ..Audit::default()
        }
    }

    /// Lines written per kind, in [`KINDS`] order.
    pub fn counts(&self) -> [u64; KINDS.len()] {
        self.counts
    }

    /// Denials per reason, as metric labels (`no_seats`, `expired`, ...).
    pub fn denials(&self) -> Vec<(String, u64)> {
        self.denials
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect()
    }

    fn who(&self, session: SessionId) -> &str {
        self.sessions.get(&session).map_or("?@?", String::as_str)
    }

    fn holder_of(&self, lease: LeaseId) -> &str {
        self.leases.get(&lease).map_or("?@?", |s| self.who(*s))
    }

    /// The lines for one entry's events, in order; keeps up with who holds what.
    pub fn lines(&mut self, events: &[Event]) -> Vec<String> {
        let mut out = Vec::new();
        for e in events {
            match e {
                Event::SessionOpened {
                    session,
                    user,
                    host,
                } => {
                    self.sessions.insert(*session, format!("{user}@{host}"));
                }
                Event::Granted {
                    feature,
                    session,
                    grant,
                } => {
                    self.leases.insert(grant.lease, *session);
                    let n = grant.count;
                    out.push((
                        Kind::Out,
                        format!(
                            "OUT: \"{feature}\" {} (lease {}, {n} license{})",
                            self.who(*session),
                            grant.lease,
                            if n == 1 { "" } else { "s" }
                        ),
                    ));
                }
                Event::Released {
                    feature,
                    lease,
                    cause,
                    ..
                } => {
                    let who = self.holder_of(*lease).to_owned();
                    out.push(match cause {
                        ReleaseCause::Checkin => {
                            (Kind::In, format!("IN: \"{feature}\" {who} (lease {lease})"))
                        }
                        ReleaseCause::SessionClosed => (
                            Kind::In,
                            format!("IN: \"{feature}\" {who} (lease {lease}, session closed)"),
                        ),
                        ReleaseCause::SessionExpired => (
                            Kind::Expired,
                            format!(
                                "EXPIRED: \"{feature}\" {who} (lease {lease}, no heartbeat within the session's TTL)"
                            ),
                        ),
                    });
                    self.leases.remove(lease);
                }
                Event::Removed { feature, lease } => {
                    out.push((
                        Kind::Removed,
                        format!(
                            "REMOVED by admin: \"{feature}\" {} (lease {lease})",
                            self.holder_of(*lease)
                        ),
                    ));
                    self.leases.remove(lease);
                }
                Event::Revoked {
                    feature,
                    lease,
                    session,
                    reason,
                    ..
                } => {
                    out.push((
                        Kind::Revoked,
                        format!(
                            "REVOKED: \"{feature}\" {} (lease {lease}, {})",
                            self.who(*session),
                            revoked_why(reason)
                        ),
                    ));
                    self.leases.remove(lease);
                }
                Event::Denied {
                    feature,
                    session,
                    reason,
                } => {
                    *self.denials.entry(reason_name(reason)).or_default() += 1;
                    out.push((
                        Kind::Denied,
                        format!(
                            "DENIED: \"{feature}\" {} ({})",
                            self.who(*session),
                            crate::convert::deny_message(reason, feature, self.zone)
                        ),
                    ));
                }
                Event::Queued {
                    feature,
                    session,
                    place,
                } => {
                    self.places.insert(*place, *session);
                    out.push((
                        Kind::Queued,
                        format!(
                            "QUEUED: \"{feature}\" {} (place {place})",
                            self.who(*session)
                        ),
                    ));
                }
                Event::Dequeued {
                    feature,
                    place,
                    reason,
                } => {
                    let who = self
                        .places
                        .remove(place)
                        .map_or("?@?".to_owned(), |s| self.who(s).to_owned());
                    out.push((
                        Kind::Dequeued,
                        format!(
                            "DEQUEUED: \"{feature}\" {who} (place {place}, {})",
                            crate::convert::deny_message(reason, feature, self.zone)
                        ),
                    ));
                }
                Event::TimeZoneSet { zone, .. } => {
                    // Only names the ledger accepted get here; this build knows them.
                    self.zone = Zone::parse(zone).unwrap_or_default();
                }
                Event::SessionExpired { session } | Event::SessionClosed { session } => {
                    self.sessions.remove(session);
                    self.places.retain(|_, s| s != session);
                }
                _ => {}
            }
        }
        for (kind, _) in &out {
            self.counts[*kind as usize] += 1;
        }
        // A grant from the queue ends its wait without a Dequeued event.
        for e in events {
            if let Event::Granted { session, .. } = e {
                self.places.retain(|_, s| s != session);
            }
        }
        out.into_iter().map(|(_, line)| line).collect()
    }
}

/// A denial's reason as the protocol names it, unprefixed (`NO_SEATS`).
fn reason_name(r: &tally_core::ledger::DenyReason) -> &'static str {
    let n = crate::convert::denial_code(r).as_str_name();
    n.strip_prefix("DENIAL_REASON_").unwrap_or(n)
}

/// Why a lease was taken back, in a few words.
fn revoked_why(r: &RevokeReason) -> String {
    match r {
        RevokeReason::LicenseChanged { source } => format!("license {source} changed"),
        RevokeReason::TermEnded { remaining } => {
            format!("license term ended, {remaining} seat(s) remain")
        }
        RevokeReason::UserUnassigned => "user unassigned".into(),
        RevokeReason::FairUseEnded { .. } => "fair-use window ended".into(),
        RevokeReason::RemovedByAdmin => "removed by admin".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::Audit;
    use tally_core::ledger::{DenyReason, Event, Grant, ReleaseCause, RevokeReason};

    fn grant(lease: u64, count: u32) -> Grant {
        Grant {
            lease,
            seat: lease,
            fencing_token: lease,
            count,
            overdraft: 0,
            reused: false,
            shared: false,
            granted_ms: 0,
        }
    }

    #[test]
    fn denials_name_days_of_the_clusters_zone_as_it_changes() {
        use tally_core::license::{Date, Zone};
        let mut a = Audit::default();
        let la = Zone::parse("America/Los_Angeles").unwrap();
        // The instant a 31-dec-2027 line ends in Los Angeles: 08:00 UTC on 1 Jan 2028.
        let end = la.day_end_ms(Date::parse_flexlm("31-dec-2027").unwrap());
        let denied = Event::Denied {
            feature: "cad".into(),
            session: 1,
            reason: DenyReason::Expired { expired_ms: end },
        };
        // (events of one entry, the lines they give)
        let steps: Vec<(Vec<Event>, Vec<&str>)> = vec![
            (
                vec![denied.clone()],
                vec!["DENIED: \"cad\" ?@? (the license for \"cad\" expired at the end of 1-jan-2028)"],
            ),
            (
                vec![
                    Event::TimeZoneSet {
                        zone: "America/Los_Angeles".into(),
                        previous: None,
                    },
                    denied,
                ],
                vec!["DENIED: \"cad\" ?@? (the license for \"cad\" expired at the end of 31-dec-2027)"],
            ),
        ];
        for (events, want) in steps {
            assert_eq!(a.lines(&events), want, "{events:?}");
        }
    }

    #[test]
    fn every_seat_event_is_one_line_in_its_documented_shape() {
        let mut a = Audit::default();
        let open = |s: u64, user: &str| Event::SessionOpened {
            session: s,
            user: user.into(),
            host: "ws1".into(),
        };
        let f = || "cad".to_owned();
        // (events of one entry, the lines they give)
        let steps: Vec<(Vec<Event>, Vec<&str>)> = vec![
            (vec![open(1, "ann"), open(2, "bob")], vec![]),
            (
                vec![Event::Granted {
                    feature: f(),
                    session: 1,
                    grant: grant(10, 1),
                }],
                vec!["OUT: \"cad\" ann@ws1 (lease 10, 1 license)"],
            ),
            (
                vec![Event::Granted {
                    feature: f(),
                    session: 2,
                    grant: grant(11, 2),
                }],
                vec!["OUT: \"cad\" bob@ws1 (lease 11, 2 licenses)"],
            ),
            (
                vec![Event::Denied {
                    feature: f(),
                    session: 2,
                    reason: DenyReason::UnknownFeature,
                }],
                vec!["DENIED: \"cad\" bob@ws1 (no license for feature \"cad\" is loaded)"],
            ),
            (
                vec![Event::Queued {
                    feature: f(),
                    session: 2,
                    place: 7,
                }],
                vec!["QUEUED: \"cad\" bob@ws1 (place 7)"],
            ),
            (
                vec![Event::Dequeued {
                    feature: f(),
                    place: 7,
                    reason: DenyReason::UnknownFeature,
                }],
                vec![
                    "DEQUEUED: \"cad\" bob@ws1 (place 7, no license for feature \"cad\" is loaded)",
                ],
            ),
            (
                vec![Event::Released {
                    feature: f(),
                    lease: 10,
                    seat: 10,
                    cause: ReleaseCause::Checkin,
                }],
                vec!["IN: \"cad\" ann@ws1 (lease 10)"],
            ),
            (
                vec![Event::Removed {
                    feature: f(),
                    lease: 11,
                }],
                vec!["REMOVED by admin: \"cad\" bob@ws1 (lease 11)"],
            ),
            (
                vec![Event::Granted {
                    feature: f(),
                    session: 1,
                    grant: grant(12, 1),
                }],
                vec!["OUT: \"cad\" ann@ws1 (lease 12, 1 license)"],
            ),
            (
                vec![
                    Event::Released {
                        feature: f(),
                        lease: 12,
                        seat: 12,
                        cause: ReleaseCause::SessionExpired,
                    },
                    Event::SessionExpired { session: 1 },
                ],
                vec!["EXPIRED: \"cad\" ann@ws1 (lease 12, no heartbeat within the session's TTL)"],
            ),
            (
                vec![Event::Granted {
                    feature: f(),
                    session: 2,
                    grant: grant(13, 1),
                }],
                vec!["OUT: \"cad\" bob@ws1 (lease 13, 1 license)"],
            ),
            (
                vec![Event::Revoked {
                    feature: f(),
                    lease: 13,
                    seat: 13,
                    session: 2,
                    reason: RevokeReason::LicenseChanged {
                        source: "site.lic".into(),
                    },
                }],
                vec!["REVOKED: \"cad\" bob@ws1 (lease 13, license site.lic changed)"],
            ),
        ];
        for (events, want) in steps {
            assert_eq!(a.lines(&events), want, "{events:?}");
        }
        // Counted per kind: 4 OUT, 1 IN, 1 EXPIRED, 1 REMOVED, 1 REVOKED, 1 DENIED, 1 QUEUED,
        // 1 DEQUEUED; the denial by its reason.
        assert_eq!(a.counts(), [4, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(a.denials(), vec![("unknown_feature".to_owned(), 1)]);
        // Nothing of ann's is kept once her session ended.
        assert!(!a.sessions.contains_key(&1));
        assert!(a.leases.is_empty());
    }
}
