//! The cluster's time zone: which zone license dates are read in (see
//! [`Zone`](crate::license::Zone) for why the ledger, not a node, decides it).
//!
//! Changing it moves every line's start, end and grace end (a `31-dec-2027` line ends at
//! 08:00 UTC in Los Angeles, at 23:00 UTC the evening before in Berlin), so it is applied
//! like a license load: the pools are rebuilt from the loaded lines, term states that
//! changed are announced, and held seats a pool no longer grants (a term that has ended
//! in the new zone) are revoked in the same entry, through the usual path.

use std::collections::BTreeMap;

use super::pool::term_of;

use super::{Event, Ledger, Reply, TermState};
use crate::license::Zone;

impl Ledger {
    pub(super) fn set_time_zone(
        &mut self,
        name: &str,
        only_if_unset: bool,
        ev: &mut Vec<Event>,
    ) -> Reply {
        let zone = match Zone::parse(name) {
            Ok(z) => z,
            Err(e) => return Reply::UnknownTimeZone { zone: e.name },
        };
        if only_if_unset && self.st.time_zone.is_some() {
            return Reply::Done { affected: 0 };
        }
        // Stored as the database spells it, so every node holds the same bytes whatever
        // case the administrator typed.
        let zone = zone.name();
        if self.st.time_zone.as_deref() == Some(zone) {
            return Reply::Done { affected: 0 };
        }
        let now = self.st.now_ms;
        let before: BTreeMap<String, TermState> = self
            .ix
            .pools
            .iter()
            .filter_map(|(f, p)| Some((f.clone(), term_of(p, now)?)))
            .collect();
        let previous = self.st.time_zone.replace(zone.to_owned());
        ev.push(Event::TimeZoneSet {
            zone: zone.to_owned(),
            previous,
        });
        self.reindex();
        for (feature, pools) in &self.ix.pools {
            let Some(state) = term_of(pools, now) else {
                continue;
            };
            if before.get(feature) != Some(&state) {
                ev.push(Event::TermChanged {
                    feature: feature.clone(),
                    state,
                });
            }
        }
        self.enforce_after_zone_change(ev);
        Reply::Done { affected: 1 }
    }
}
