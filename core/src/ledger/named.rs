//! Named users (FlexLM `USER_BASED`; estos ProCall's "Nachlizenzierung"): seats belong to
//! users an administrator assigns, per feature.
//!
//! - A named user is one seat however many hosts and processes they use (the pool groups
//!   by user, as `DUP_GROUP=U` does). Users nobody assigned are refused.
//! - More users than the feature's count may be assigned. The first over-assignment opens
//!   a **fair-use window** (`USER_BASED=days`, default 30) so a newcomer is not blocked
//!   before more seats are bought. During it, users log in first come, first served, and
//!   never more at once than the count (the pool's own limit).
//! - When the window ends with the feature still over-assigned, the users assigned last,
//!   beyond the count, are **blocked**: refused, and their held seats revoked, until seats
//!   are loaded or users unassigned (either closes the window: the count covers everyone).
//! - **Unassigning** a user revokes the seats they hold of the feature at once: an admin
//!   who takes a named seat away means the next person to have it.
//!
//! The order of assignment decides who is "beyond the count": the earliest assigned users
//! are licensed, in order. A user unassigned and assigned again goes to the back.

use serde::{Deserialize, Serialize};

use super::{DenyReason, Event, Ledger, Reply, RevokeReason, SeatId, SessionId, TimeMs};
use crate::license::LicenseModel;

const DAY_MS: u64 = 86_400_000;

/// Most users named in one assignment entry: bigger lists are sent in several.
pub const USERS_PER_ENTRY: usize = 10_000;

/// One user's assignment to a feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    pub at_ms: TimeMs,
    /// The index of the entry that assigned them: the order among the feature's users.
    pub order: u64,
}

/// Where an assigned user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamedState {
    /// Within the feature's count.
    Licensed,
    /// Beyond the count, inside the fair-use window, which ends at `until_ms`.
    FairUse { until_ms: TimeMs },
    /// Beyond the count after the window ended at `since_ms`.
    Blocked { since_ms: TimeMs },
}

impl Ledger {
    fn fair_use_ms(&self, feature: &str) -> Option<u64> {
        // A named-user feature has one pool (its lines group by user), so the first is it.
        match self.ix.pools_of(feature).first()?.model {
            LicenseModel::NamedUser { fair_use_days } => {
                Some(u64::from(fair_use_days).saturating_mul(DAY_MS))
            }
            LicenseModel::Floating => None,
        }
    }

    /// Seats a named pool grants now (its count, or its demo count once it ended).
    fn named_count(&self, feature: &str) -> u64 {
        self.ix
            .pools_of(feature)
            .first()
            .map_or(0, |p| p.issued(self.st.now_ms).0)
    }

    pub(super) fn assign_users(
        &mut self,
        index: u64,
        feature: &str,
        users: &[String],
        ev: &mut Vec<Event>,
    ) -> Reply {
        if self.fair_use_ms(feature).is_none() {
            return Reply::Denied(DenyReason::NotNamedUser);
        }
        let now = self.st.now_ms;
        let assigned = self.st.named.entry(feature.to_owned()).or_default();
        let mut added = Vec::new();
        for u in users.iter().take(USERS_PER_ENTRY) {
            if !assigned.contains_key(u) {
                assigned.insert(
                    u.clone(),
                    Assigned {
                        at_ms: now,
                        order: index,
                    },
                );
                added.push(u.clone());
            }
        }
        let affected = u32::try_from(added.len()).unwrap_or(u32::MAX);
        if !added.is_empty() {
            ev.push(Event::UsersAssigned {
                feature: feature.to_owned(),
                users: added,
            });
        }
        self.refresh_window(feature, ev);
        Reply::Done { affected }
    }

    pub(super) fn unassign_users(
        &mut self,
        feature: &str,
        users: &[String],
        ev: &mut Vec<Event>,
    ) -> Reply {
        let mut removed = Vec::new();
        if let Some(assigned) = self.st.named.get_mut(feature) {
            for u in users.iter().take(USERS_PER_ENTRY) {
                if assigned.remove(u).is_some() {
                    removed.push(u.clone());
                }
            }
            if assigned.is_empty() {
                self.st.named.remove(feature);
            }
        }
        let affected = u32::try_from(removed.len()).unwrap_or(u32::MAX);
        if !removed.is_empty() {
            ev.push(Event::UsersUnassigned {
                feature: feature.to_owned(),
                users: removed,
            });
        }
        self.enforce_named(feature, ev);
        self.refresh_window(feature, ev);
        Reply::Done { affected }
    }

    /// Opens the feature's fair-use window when it is over-assigned and none is open, and
    /// closes it when the count covers every assigned user again.
    pub(super) fn refresh_window(&mut self, feature: &str, ev: &mut Vec<Event>) {
        let Some(span) = self.fair_use_ms(feature) else {
            // No longer a named pool (unloaded): its window, if any, is moot.
            if self.st.windows.remove(feature).is_some() {
                ev.push(Event::FairUseClosed {
                    feature: feature.to_owned(),
                });
            }
            return;
        };
        let users = self.st.named.get(feature).map_or(0, |a| a.len() as u64);
        let over = users > self.named_count(feature);
        let now = self.st.now_ms;
        match (over, self.st.windows.contains_key(feature)) {
            (true, false) => {
                self.st.windows.insert(feature.to_owned(), now);
                ev.push(Event::FairUseOpened {
                    feature: feature.to_owned(),
                    until_ms: now.saturating_add(span),
                });
            }
            (false, true) => {
                self.st.windows.remove(feature);
                ev.push(Event::FairUseClosed {
                    feature: feature.to_owned(),
                });
            }
            _ => {}
        }
        self.ix.next_boundary = self.next_boundary();
    }

    /// [`Ledger::refresh_window`] for every feature with users or a window.
    pub(super) fn refresh_windows(&mut self, ev: &mut Vec<Event>) {
        let features: Vec<String> = self
            .st
            .named
            .keys()
            .chain(self.st.windows.keys())
            .cloned()
            .collect();
        for f in features {
            self.refresh_window(&f, ev);
        }
    }

    /// The next instant the ledger must act at by itself: a term boundary, or the end of
    /// a fair-use window.
    pub(super) fn next_boundary(&self) -> Option<TimeMs> {
        let now = self.st.now_ms;
        let windows = self.st.windows.iter().filter_map(|(f, start)| {
            self.fair_use_ms(f)
                .map(|span| start.saturating_add(span))
                .filter(|end| *end > now)
        });
        self.ix.boundary_after(now).into_iter().chain(windows).min()
    }

    /// An assigned user's standing on a named feature; `None` if not assigned.
    pub fn named_state(&self, feature: &str, user: &str) -> Option<NamedState> {
        let assigned = self.st.named.get(feature)?;
        let me = assigned.get(user)?;
        let ahead = assigned
            .iter()
            .filter(|(u, a)| (a.order, u.as_str()) < (me.order, user))
            .count() as u64;
        if ahead < self.named_count(feature) {
            return Some(NamedState::Licensed);
        }
        let span = self.fair_use_ms(feature).unwrap_or(0);
        let end = self
            .st
            .windows
            .get(feature)
            .map_or(self.st.now_ms, |s| s.saturating_add(span));
        Some(if self.st.now_ms < end {
            NamedState::FairUse { until_ms: end }
        } else {
            NamedState::Blocked { since_ms: end }
        })
    }

    /// Whether `session`'s user may take a seat of named feature `feature` now.
    pub(super) fn named_admission(
        &self,
        feature: &str,
        session: SessionId,
    ) -> Result<(), DenyReason> {
        if self.fair_use_ms(feature).is_none() {
            return Ok(());
        }
        let user = self
            .st
            .sessions
            .get(&session)
            .map(|s| s.holder.user.as_str())
            .unwrap_or_default();
        match self.named_state(feature, user) {
            None => Err(DenyReason::NamedUserNotAssigned),
            Some(NamedState::Blocked { since_ms }) => Err(DenyReason::NamedUserBlocked {
                window_ended_ms: since_ms,
                count: self.named_count(feature),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Revokes the seats of users of a named feature who may no longer hold them: not
    /// assigned any more, or blocked since their fair-use window ended.
    pub(super) fn enforce_named(&mut self, feature: &str, ev: &mut Vec<Event>) {
        if self.fair_use_ms(feature).is_none() {
            return;
        }
        let mut victims: Vec<(SeatId, RevokeReason)> = Vec::new();
        for (id, seat) in self.st.seats.iter().filter(|(_, s)| s.feature == feature) {
            let reason = match self.named_state(feature, &seat.key.user) {
                None => RevokeReason::UserUnassigned,
                Some(NamedState::Blocked { since_ms }) => RevokeReason::FairUseEnded {
                    window_ended_ms: since_ms,
                },
                Some(_) => continue,
            };
            victims.push((*id, reason));
        }
        for (seat, reason) in victims {
            self.revoke_seat(seat, &reason, ev);
        }
    }

    /// Users assigned to `feature`, in assignment order, with their standing.
    pub fn assigned_users(&self, feature: &str) -> Vec<(&str, &Assigned, NamedState)> {
        let Some(assigned) = self.st.named.get(feature) else {
            return Vec::new();
        };
        let mut users: Vec<(&str, &Assigned)> =
            assigned.iter().map(|(u, a)| (u.as_str(), a)).collect();
        users.sort_by_key(|(u, a)| (a.order, *u));
        users
            .into_iter()
            .filter_map(|(u, a)| Some((u, a, self.named_state(feature, u)?)))
            .collect()
    }

    /// Features with assigned users.
    pub fn named_features(&self) -> impl Iterator<Item = &str> {
        self.st.named.keys().map(String::as_str)
    }

    /// The open fair-use window of `feature`: (opened, ends).
    pub fn fair_use_window(&self, feature: &str) -> Option<(TimeMs, TimeMs)> {
        let start = *self.st.windows.get(feature)?;
        Some((start, start.saturating_add(self.fair_use_ms(feature)?)))
    }
}
