//! Snapshot and restore. The encoding is postcard over the replicated state: ordered maps
//! only, so the same state is the same bytes on every node. A magic and format number come
//! first, so a foreign or future file is refused with a clear error instead of misread.

use super::index::Index;
use super::{Ledger, State};
use crate::Error;

const MAGIC: &[u8; 8] = b"TALLYLG\0";
/// 2: the checkout queue joined the state. 3: outage, cluster identity, revocation
/// notes, clock repairs, and `CLUSTER=` on license lines. 4: the cluster's time zone;
/// seats name the grouping of their pool (a feature has a pool per `DUP_GROUP`), leases
/// their suite seat, license lines their `UPGRADE`, `SUPERSEDE`, `SUITE_DUP_GROUP` and
/// `PACKAGE` fields and metering terms (`METER_INTERVAL`, `METER_MIN`, `OVERUSE_DAYS`).
/// 5: seats keep when they were charged (the usage history's spans).
/// 6: the site's options file (`State::options`, appended last), and the replies and
/// denials it brings (`Reply::OptionsLoaded`/`OptionsRefused`, `DenyReason::Policy`,
/// appended to their enums) in the kept answers.
/// Fields joined inside nested records, not only at the end, so a
/// format-3 state cannot be read as a format-4 one: an older snapshot is refused by
/// number (the data directory must be made anew; no site runs a released format yet).
const FORMAT: u8 = 6;

impl Ledger {
    /// The whole ledger as bytes. Equal ledgers give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.st.sessions.len() * 128);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        // Serializing plain data into a Vec cannot fail: postcard fails only on a full
        // buffer or on types it cannot encode, and ours are all encodable.
        match postcard::to_extend(&self.st, out) {
            Ok(out) => out,
            Err(e) => unreachable!("ledger state always encodes: {e}"),
        }
    }

    /// Rebuilds a ledger from [`Ledger::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Ledger, Error> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| Error::Snapshot("not a Tally ledger snapshot (bad magic)".into()))?;
        let (&format, body) = rest
            .split_first()
            .ok_or_else(|| Error::Snapshot("truncated header".into()))?;
        if format != FORMAT {
            return Err(Error::Snapshot(format!(
                "format {format} is not supported (this build reads format {FORMAT}): make the data directory anew"
            )));
        }
        let (st, tail): (State, &[u8]) = postcard::take_from_bytes(body)
            .map_err(|e| Error::Snapshot(format!("corrupt: {e}")))?;
        // A zone this build's database lacks (a snapshot from a newer release) would
        // read as UTC here and as the zone on the nodes that sent it: refuse it loudly.
        if let Some(name) = &st.time_zone {
            crate::license::Zone::parse(name).map_err(|e| {
                Error::Snapshot(format!(
                    "the cluster's time zone: {e}; every node must run the same tallyd release"
                ))
            })?;
        }
        if !tail.is_empty() {
            return Err(Error::Snapshot(format!(
                "{} unexpected bytes after the state",
                tail.len()
            )));
        }
        let mut l = Ledger {
            st,
            ix: Index::default(),
        };
        l.reindex();
        l.ix.licensed = super::index::licensed_counts(&l.ix.pools, l.st.now_ms);
        Ok(l)
    }

    /// Whether two ledgers hold the same replicated state (derived indexes aside).
    pub fn same_state(&self, other: &Ledger) -> bool {
        self.st == other.st
    }
}
