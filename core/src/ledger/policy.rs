//! The site's options file in the ledger: loading it, its consent at checkout, and what
//! it changes about pools (a longer linger, less overdraft) and tells the leader's keeper
//! (idle timeouts).
//!
//! The policy is asked only when seats are taken (a checkout, or a queued checkout being
//! served). A new file replaces the old one as a whole in one entry and never takes a
//! held seat back: someone excluded from today on keeps the seat they hold until they
//! check it in (FlexNet's behaviour on `lmreread`, and the design's rule that options
//! changes never revoke).
//!
//! Who a directive names is read from the session: USER, HOST and DISPLAY from its
//! [`Holder`](super::Holder), INTERNET from the address the server saw it open from
//! ([`Origin::addr`](super::Origin)). Sessions carry no project tag yet, so a `PROJECT`
//! target matches nobody (an INCLUDE by project alone then admits no one, which is the
//! safe reading). Seats lingering for a user whose session is gone are counted for the
//! parts of the owner their pool's grouping keeps (the user, and host and display
//! without grouping); a lingering seat has no address.
//!
//! TIMEOUT and TIMEOUTALL are kept and answered ([`Ledger::idle_timeout_secs`]) but not
//! enforced: that needs the client's idea of idle on heartbeats, which the protocol does
//! not carry yet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::index::licensed_counts;
use super::{DenyReason, DupKey, Event, Ledger, Reply, SessionId};
use crate::license::{DupGroup, Version};
use crate::options::{Decision, FeatureKey, FeatureUse, Options, OptionsError, Request, Who};

/// The address a session opened from, as the server wrote it (an address, or an
/// address and port). IPv4 addresses mapped into IPv6 read as IPv4, so `INTERNET
/// 10.0.0.*` matches a caller on a dual-stack socket. Empty or garbled: none.
pub(crate) fn origin_ip(addr: &str) -> Option<IpAddr> {
    let ip = addr
        .parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

impl Ledger {
    /// Replaces the options file in force, unless its reservations overbook a pool.
    /// Pools are rebuilt, so a new `MAX_OVERDRAFT` counts from this entry on.
    pub(super) fn load_options(&mut self, options: &Options, ev: &mut Vec<Event>) -> Reply {
        // Counts at this entry's time (not those last reported, which trail a term
        // boundary this very entry may have passed). Uncounted pools do not fit in a
        // u32 and are left out: any reservation fits in them.
        let seats: BTreeMap<String, u32> = licensed_counts(&self.ix.pools, self.st.now_ms)
            .into_iter()
            .filter_map(|(f, (issued, _))| u32::try_from(issued).ok().map(|n| (f, n)))
            .collect();
        match options.check_reservations(&seats) {
            Ok(()) => {}
            Err(OptionsError::Overbooked {
                feature,
                reserved,
                seats,
                lines,
            }) => {
                return Reply::OptionsRefused {
                    feature,
                    reserved,
                    seats,
                    lines,
                }
            }
            // check_reservations reports nothing else; should it one day, refusing is
            // the safe answer, still naming the line.
            Err(e) => {
                return Reply::OptionsRefused {
                    feature: e.to_string(),
                    reserved: 0,
                    seats: 0,
                    lines: vec![e.line()],
                }
            }
        }
        self.st.options = options.clone();
        self.reindex();
        let lines = u32::try_from(options.lines().len()).unwrap_or(u32::MAX);
        ev.push(Event::OptionsLoaded { directives: lines });
        Reply::OptionsLoaded { lines }
    }

    /// The options file in force (empty when none is loaded).
    pub fn options(&self) -> &Options {
        &self.st.options
    }

    /// The idle timeout the options file sets for `feature` (its `TIMEOUT`, else
    /// `TIMEOUTALL`), for the leader's keeper; `None`: seats are never taken back for
    /// idleness. Not enforced yet (see the module docs).
    pub fn idle_timeout_secs(&self, feature: &str) -> Option<u32> {
        self.st.options.timeout_secs(&FeatureKey::named(feature))
    }

    /// Whether the policy lets `session` take `seats` more seats of `feature` (0: it
    /// reuses a seat it holds or that lingers for it, which only INCLUDE and EXCLUDE can
    /// refuse), from the pool of grouping `group`.
    pub(super) fn policy_consent(
        &self,
        session: SessionId,
        feature: &str,
        version: &Version,
        group: DupGroup,
        seats: u32,
    ) -> Result<(), DenyReason> {
        let options = &self.st.options;
        if options.lines().is_empty() {
            return Ok(());
        }
        let Some(s) = self.st.sessions.get(&session) else {
            return Ok(());
        };
        let who = Who {
            user: &s.holder.user,
            host: &s.holder.host,
            display: &s.holder.display,
            ip: origin_ip(&s.origin.addr),
            project: None,
        };
        // The version asked for stands for the line's: a `:VERSION=` qualifier applies
        // to a checkout of exactly that version.
        let req = Request {
            feature: FeatureKey {
                name: feature,
                version: Some(version),
                dup_group: group,
            },
            who,
            seats,
            borrow: false,
        };
        let pool = LedgerUse {
            ledger: self,
            feature,
        };
        match options.evaluate(&req, &pool) {
            Decision::Allow => Ok(()),
            Decision::Deny(d) => Err(DenyReason::Policy {
                code: d.code,
                line: d.line,
                directive: d.directive.to_string(),
                detail: d.detail,
            }),
        }
    }

    /// The options file's linger for a seat being let go, in ms (0: none given). The
    /// caller takes the longer of it and the pool's.
    pub(super) fn site_linger_ms(
        options: &Options,
        feature: &str,
        version: &Version,
        group: DupGroup,
    ) -> u64 {
        let key = FeatureKey {
            name: feature,
            version: Some(version),
            dup_group: group,
        };
        u64::from(options.linger_secs(&key, 0)).saturating_mul(1000)
    }
}

/// The MAX_OVERDRAFT in force for a pool, if any: the smallest that applies to any
/// version of its lines (a pool spans versions and its overdraft is one sum, so a cap
/// for one version caps the pool; using less overdraft is the safe side).
pub(super) fn overdraft_cap(
    options: &Options,
    feature: &str,
    group: DupGroup,
    versions: impl Iterator<Item = Version>,
) -> Option<u64> {
    let plain = FeatureKey {
        name: feature,
        version: None,
        dup_group: group,
    };
    let mut cap = options.overdraft(&plain, u32::MAX);
    for v in versions {
        let key = FeatureKey {
            name: feature,
            version: Some(&v),
            dup_group: group,
        };
        cap = cap.min(options.overdraft(&key, u32::MAX));
    }
    (cap != u32::MAX).then_some(u64::from(cap))
}

/// A feature's seats as the policy sees them: every charged seat (held or lingering)
/// of its pools, in the index's order (owner, then seat id), so every node counts the
/// same holder against the same reservation.
struct LedgerUse<'a> {
    ledger: &'a Ledger,
    feature: &'a str,
}

impl FeatureUse for LedgerUse<'_> {
    fn capacity(&self) -> u32 {
        let now = self.ledger.st.now_ms;
        let total = self
            .ledger
            .ix
            .pools_of(self.feature)
            .iter()
            .fold(0u64, |sum, p| {
                let (issued, overdraft) = p.issued(now);
                sum.saturating_add(issued).saturating_add(overdraft)
            });
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    fn for_each_holder(&self, f: &mut dyn FnMut(&Who<'_>, u32)) {
        let st = &self.ledger.st;
        let from = (
            self.feature.to_owned(),
            DupKey {
                user: String::new(),
                host: None,
                display: None,
            },
        );
        for ((feature, key), ids) in self.ledger.ix.by_key.range(from..) {
            if feature != self.feature {
                break;
            }
            for id in ids {
                let Some(seat) = st.seats.get(id) else {
                    continue;
                };
                // A held seat is its first holder's (under DUP_GROUP the others share
                // its owner's parts anyway); a lingering one is its owner key's.
                let session = seat
                    .holders
                    .first()
                    .and_then(|lease| st.leases.get(lease))
                    .and_then(|l| st.sessions.get(&l.session));
                let who = match session {
                    Some(s) => Who {
                        user: &s.holder.user,
                        host: &s.holder.host,
                        display: &s.holder.display,
                        ip: origin_ip(&s.origin.addr),
                        project: None,
                    },
                    None => Who {
                        user: &key.user,
                        host: key.host.as_deref().unwrap_or(""),
                        display: key.display.as_deref().unwrap_or(""),
                        ip: None,
                        project: None,
                    },
                };
                f(&who, seat.count);
            }
        }
    }

    /// Borrowing is not built yet: nothing is out on borrow.
    fn borrowed(&self) -> u32 {
        0
    }
}
