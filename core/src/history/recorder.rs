//! Turns one entry's events into history records. Events name sessions, leases and
//! queue places by id, and a released lease (or an ended session) is gone from the
//! ledger by the time its event is read, so the recorder keeps who each live one belongs
//! to: built from the ledger on start ([`Recorder::of`]) and kept up from the events.

use std::collections::{BTreeMap, BTreeSet};

use super::{Record, What};
use crate::ledger::{Event, LeaseId, Ledger, SessionId, TimeMs};

/// Who an unknown id belonged to (a record made from made-up events, in tests, or an
/// id from before the recorder's start that the ledger no longer knows).
const UNKNOWN: &str = "?";

/// Who holds what, for naming people in records, and which features are short now.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    sessions: BTreeMap<SessionId, (String, String)>,
    leases: BTreeMap<LeaseId, SessionId>,
    places: BTreeMap<u64, SessionId>,
    /// Features whose use is beyond their licensed count: a [`What::Short`] was said for
    /// them and is not said again until use comes back within the count.
    short: BTreeSet<String>,
}

impl Recorder {
    /// Everything live in `ledger`.
    pub fn of(ledger: &Ledger) -> Recorder {
        let mut r = Recorder {
            sessions: ledger
                .sessions()
                .map(|(id, s)| (id, (s.holder.user.clone(), s.holder.host.clone())))
                .collect(),
            leases: ledger.leases().map(|(id, l)| (id, l.session)).collect(),
            places: ledger.waiters().map(|(p, w)| (p, w.session)).collect(),
            short: BTreeSet::new(),
        };
        let features: Vec<String> = ledger.licensed().keys().cloned().collect();
        for f in features {
            if shortfall(ledger, &f).is_some() {
                r.short.insert(f);
            }
        }
        r
    }

    fn who(&self, session: SessionId) -> (String, String) {
        self.sessions
            .get(&session)
            .cloned()
            .unwrap_or_else(|| (UNKNOWN.into(), UNKNOWN.into()))
    }

    fn holder_of(&self, lease: LeaseId) -> (String, String) {
        self.leases
            .get(&lease)
            .map_or_else(|| (UNKNOWN.into(), UNKNOWN.into()), |s| self.who(*s))
    }

    /// The records of one entry's events, in order, from the events alone: what the
    /// audit log prints. [`Recorder::after`] completes them with what only the ledger
    /// after the entry knows.
    pub fn record(
        &mut self,
        index: u64,
        at_ms: TimeMs,
        by: Option<&str>,
        events: &[Event],
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let mut push = |feature: &str, (user, host): (String, String), what: What| {
            out.push(Record {
                index,
                at_ms,
                feature: feature.to_owned(),
                user,
                host,
                by: by.map(str::to_owned),
                what,
            });
        };
        let nobody = || (String::new(), String::new());
        let mut ended = Vec::new();
        for e in events {
            match e {
                Event::SessionOpened {
                    session,
                    user,
                    host,
                } => {
                    self.sessions.insert(*session, (user.clone(), host.clone()));
                }
                Event::Granted {
                    feature,
                    session,
                    grant,
                } => {
                    self.leases.insert(grant.lease, *session);
                    // A grant from the queue ends its wait without a Dequeued event.
                    self.places.retain(|_, s| s != session);
                    let what = What::Granted {
                        lease: grant.lease,
                        count: grant.count,
                        overdraft: grant.overdraft,
                        fresh: !grant.reused && !grant.shared,
                    };
                    push(feature, self.who(*session), what);
                }
                Event::Released {
                    feature,
                    lease,
                    cause,
                    ..
                } => {
                    let who = self.holder_of(*lease);
                    self.leases.remove(lease);
                    let what = What::Released {
                        lease: *lease,
                        cause: *cause,
                    };
                    push(feature, who, what);
                }
                Event::Reclaimed {
                    feature,
                    seat,
                    count,
                    charged_ms,
                } => {
                    let what = What::Reclaimed {
                        seat: *seat,
                        count: *count,
                        charged_ms: *charged_ms,
                    };
                    push(feature, nobody(), what);
                }
                Event::Removed { feature, lease } => {
                    let who = self.holder_of(*lease);
                    self.leases.remove(lease);
                    push(feature, who, What::Removed { lease: *lease });
                }
                Event::Revoked {
                    feature,
                    lease,
                    session,
                    reason,
                    ..
                } => {
                    self.leases.remove(lease);
                    let what = What::Revoked {
                        lease: *lease,
                        reason: reason.clone(),
                    };
                    push(feature, self.who(*session), what);
                }
                Event::Denied {
                    feature,
                    session,
                    reason,
                } => {
                    let what = What::Denied {
                        reason: reason.clone(),
                    };
                    push(feature, self.who(*session), what);
                }
                Event::Queued {
                    feature,
                    session,
                    place,
                } => {
                    self.places.insert(*place, *session);
                    push(feature, self.who(*session), What::Queued { place: *place });
                }
                Event::Dequeued {
                    feature,
                    place,
                    reason,
                } => {
                    let who = self
                        .places
                        .remove(place)
                        .map_or_else(|| (UNKNOWN.into(), UNKNOWN.into()), |s| self.who(s));
                    let what = What::Dequeued {
                        place: *place,
                        reason: reason.clone(),
                    };
                    push(feature, who, what);
                }
                Event::LicenseLoaded { source, lines } => {
                    let what = What::LicenseLoaded {
                        source: source.clone(),
                        lines: *lines,
                    };
                    push("", nobody(), what);
                }
                Event::LicenseUnloaded { source } => {
                    let what = What::LicenseUnloaded {
                        source: source.clone(),
                    };
                    push("", nobody(), what);
                }
                Event::OptionsLoaded { directives } => {
                    let what = What::OptionsLoaded {
                        directives: *directives,
                    };
                    push("", nobody(), what);
                }
                Event::UsersAssigned { feature, users } => {
                    let what = What::Assigned {
                        users: users.clone(),
                        assigned: 0,
                    };
                    push(feature, nobody(), what);
                }
                Event::UsersUnassigned { feature, users } => {
                    let what = What::Unassigned {
                        users: users.clone(),
                        assigned: 0,
                    };
                    push(feature, nobody(), what);
                }
                Event::Licensed {
                    feature,
                    issued,
                    overdraft_limit,
                } => {
                    let what = What::Licensed {
                        issued: *issued,
                        overdraft_limit: *overdraft_limit,
                    };
                    push(feature, nobody(), what);
                }
                Event::FairUseOpened { feature, until_ms } => {
                    let what = What::FairUseOpened {
                        until_ms: *until_ms,
                    };
                    push(feature, nobody(), what);
                }
                Event::FairUseClosed { feature } => push(feature, nobody(), What::FairUseClosed),
                Event::TermChanged { feature, state } => {
                    push(feature, nobody(), What::TermChanged { state: *state });
                }
                Event::TimeZoneSet { zone, .. } => {
                    let what = What::TimeZoneSet { zone: zone.clone() };
                    push("", nobody(), what);
                }
                Event::ClockRepaired { from_ms, to_ms } => {
                    let what = What::ClockRepaired {
                        from_ms: *from_ms,
                        to_ms: *to_ms,
                    };
                    push("", nobody(), what);
                }
                // Forgotten after the entry: its releases, later in the same entry's
                // events, still name the session's holder.
                Event::SessionExpired { session } | Event::SessionClosed { session } => {
                    ended.push(*session);
                }
                Event::Lingering { .. } | Event::Resumed { .. } | Event::ClusterIdSet { .. } => {}
            }
        }
        for session in ended {
            self.sessions.remove(&session);
            self.places.retain(|_, s| *s != session);
        }
        out
    }

    /// Completes one entry's records with what the ledger after it says: the named
    /// users assigned after an assignment, and the under-licensing alert
    /// ([`What::Short`]) for each feature whose use went beyond its count in this entry.
    pub fn after(&mut self, ledger: &Ledger, records: &mut Vec<Record>) {
        let Some(first) = records.first() else {
            return;
        };
        let (index, at_ms) = (first.index, first.at_ms);
        let mut touched = BTreeSet::new();
        for r in records.iter_mut() {
            match &mut r.what {
                What::Assigned { assigned, .. } | What::Unassigned { assigned, .. } => {
                    *assigned = ledger.assigned_count(&r.feature);
                }
                What::Granted { .. }
                | What::Reclaimed { .. }
                | What::Licensed { .. }
                | What::FairUseOpened { .. }
                | What::FairUseClosed => {}
                _ => continue,
            }
            touched.insert(r.feature.clone());
        }
        for feature in touched {
            match shortfall(ledger, &feature) {
                Some((in_use, licensed)) if !self.short.contains(&feature) => {
                    records.push(Record {
                        index,
                        at_ms,
                        feature: feature.clone(),
                        user: String::new(),
                        host: String::new(),
                        by: None,
                        what: What::Short { in_use, licensed },
                    });
                    self.short.insert(feature);
                }
                Some(_) => {}
                None => {
                    self.short.remove(&feature);
                }
            }
        }
    }

    /// Features whose use is beyond their licensed count now.
    pub fn short_features(&self) -> impl Iterator<Item = &str> {
        self.short.iter().map(String::as_str)
    }
}

/// `(use, licensed)` of a feature whose use is beyond its licensed count: seats counted
/// in its pools (held or lingering), or, for named users, users assigned.
fn shortfall(ledger: &Ledger, feature: &str) -> Option<(u64, u64)> {
    let licensed = ledger.licensed().get(feature).map_or(0, |l| l.0);
    let in_use = ledger.in_use(feature).max(ledger.assigned_count(feature));
    (in_use > licensed).then_some((in_use, licensed))
}
