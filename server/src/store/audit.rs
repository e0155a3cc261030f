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
//! The lines are rendered from the usage history's records (`tally_core::history`),
//! whose [`Recorder`] keeps who holds what: one table of holders per node, shared by the
//! audit log and the history, so the two never disagree about who did something. Pure,
//! so it is tested on made-up events.

use tally_core::history::{Record, Recorder, What};
use tally_core::ledger::{Event, Ledger, ReleaseCause, RevokeReason, TimeMs};
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

/// The recorder of who holds what, and how many lines of each kind (and denials of each
/// reason) this node wrote since it started.
#[derive(Debug, Default)]
pub struct Audit {
    recorder: Recorder,
    counts: [u64; KINDS.len()],
    denials: std::collections::BTreeMap<&'static str, u64>,
    /// The cluster's time zone for license dates, for the dates denials name.
    zone: Zone,
}

impl Audit {
    /// Everything live in `ledger`.
    pub fn of(ledger: &Ledger) -> Audit {
        Audit {
            recorder: Recorder::of(ledger),
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

    /// The history records of one entry's events (see `Recorder::record`), completed by
    /// the ledger after it (`Recorder::after`), and the audit lines they give, in order.
    pub fn entry(
        &mut self,
        ledger: &Ledger,
        (index, at_ms, by): (u64, TimeMs, Option<&str>),
        events: &[Event],
    ) -> (Vec<Record>, Vec<String>) {
        let mut records = self.recorder.record(index, at_ms, by, events);
        let lines = self.lines_of(&records);
        self.recorder.after(ledger, &mut records);
        (records, lines)
    }

    /// The lines for one entry's records, counting them.
    fn lines_of(&mut self, records: &[Record]) -> Vec<String> {
        let mut out = Vec::new();
        for r in records {
            let (f, who) = (&r.feature, format!("{}@{}", r.user, r.host));
            let line = match &r.what {
                What::Granted { lease, count, .. } => Some((
                    Kind::Out,
                    format!(
                        "OUT: \"{f}\" {who} (lease {lease}, {count} license{})",
                        if *count == 1 { "" } else { "s" }
                    ),
                )),
                What::Released { lease, cause } => Some(match cause {
                    ReleaseCause::Checkin => (Kind::In, format!("IN: \"{f}\" {who} (lease {lease})")),
                    ReleaseCause::SessionClosed => (
                        Kind::In,
                        format!("IN: \"{f}\" {who} (lease {lease}, session closed)"),
                    ),
                    ReleaseCause::SessionExpired => (
                        Kind::Expired,
                        format!(
                            "EXPIRED: \"{f}\" {who} (lease {lease}, no heartbeat within the session's TTL)"
                        ),
                    ),
                }),
                What::Removed { lease } => Some((
                    Kind::Removed,
                    format!("REMOVED by admin: \"{f}\" {who} (lease {lease})"),
                )),
                What::Revoked { lease, reason } => Some((
                    Kind::Revoked,
                    format!("REVOKED: \"{f}\" {who} (lease {lease}, {})", revoked_why(reason)),
                )),
                What::Denied { reason } => {
                    *self.denials.entry(reason_name(reason)).or_default() += 1;
                    Some((
                        Kind::Denied,
                        format!(
                            "DENIED: \"{f}\" {who} ({})",
                            crate::convert::deny_message(reason, f, self.zone)
                        ),
                    ))
                }
                What::Queued { place } => Some((
                    Kind::Queued,
                    format!("QUEUED: \"{f}\" {who} (place {place})"),
                )),
                What::Dequeued { place, reason } => Some((
                    Kind::Dequeued,
                    format!(
                        "DEQUEUED: \"{f}\" {who} (place {place}, {})",
                        crate::convert::deny_message(reason, f, self.zone)
                    ),
                )),
                What::TimeZoneSet { zone } => {
                    // Only names the ledger accepted get here; this build knows them.
                    self.zone = Zone::parse(zone).unwrap_or_default();
                    None
                }
                _ => None,
            };
            if let Some((kind, line)) = line {
                self.counts[kind as usize] += 1;
                out.push(line);
            }
        }
        out
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

    /// The lines of one entry's events, from its records (as `Audit::entry` makes them,
    /// without a ledger to complete them with).
    fn lines(a: &mut Audit, events: &[Event]) -> Vec<String> {
        let records = a.recorder.record(1, 0, None, events);
        a.lines_of(&records)
    }

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
            assert_eq!(lines(&mut a, &events), want, "{events:?}");
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
            assert_eq!(lines(&mut a, &events), want, "{events:?}");
        }
        // Counted per kind: 4 OUT, 1 IN, 1 EXPIRED, 1 REMOVED, 1 REVOKED, 1 DENIED, 1 QUEUED,
        // 1 DEQUEUED; the denial by its reason.
        assert_eq!(a.counts(), [4, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(a.denials(), vec![("unknown_feature".to_owned(), 1)]);
    }
}
