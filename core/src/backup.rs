//! The backup file (`tallyctl snapshot save`, `tallyd restore`): a small readable header
//! naming what the backup is, then the payload the server wrote, checked by SHA-256.
//!
//! Layout:
//!
//! ```text
//! "TALLYBK\0"  8 bytes   magic: anything else is not a Tally backup
//! format       1 byte    FORMAT; a file of another format is refused by number
//! header_len   4 bytes   little-endian length of the header
//! header       JSON      a [`Header`]: cluster, log index and term, counts, payload size
//!                        and SHA-256 (readable with `head -c 1000 FILE`)
//! payload      bytes     opaque here: the server's snapshot (ledger, usage history,
//!                        membership), exactly `payload_bytes` long
//! ```
//!
//! This module only frames and checks: a file that is cut short, has bytes flipped or
//! appended, or is something else altogether is refused with an error that says which.
//! What the payload holds, and that it agrees with the header, is the server's business
//! (`tally_server::backup`). Pure: bytes in, bytes out, no I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"TALLYBK\0";
/// 1: the first format (payload: the server's snapshot envelope with its meta).
pub const FORMAT: u8 = 1;
/// A header longer than this is not one we wrote: refused before it is read.
const MAX_HEADER: usize = 1 << 20;
/// Magic, format byte and header length.
const PREFIX: usize = MAGIC.len() + 1 + 4;

/// What a backup is, in its header. Everything but the payload's size and digest is
/// informative: the server checks it against the payload before using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The `cluster_name` of the cluster it was taken from.
    pub cluster_name: String,
    /// The ledger's cluster id (what `CLUSTER=` license lines lock to), if it has one.
    pub cluster_id: String,
    /// The log index and term of the last entry the copy includes.
    pub index: u64,
    pub term: u64,
    /// Ledger time of that entry (ms since the epoch).
    pub ledger_time_ms: u64,
    /// The cluster's members then.
    pub members: Vec<Member>,
    pub sessions: u64,
    pub leases: u64,
    /// Usage-history records carried.
    pub history_records: u64,
    /// The release of `tallyd` that wrote it.
    pub tallyd_version: String,
    /// The payload's length and SHA-256 (lowercase hex).
    pub payload_bytes: u64,
    pub payload_sha256: String,
}

/// A cluster member as a backup's header lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// Why a file is not a usable backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Tally backup: it does not start with the backup magic (TALLYBK); is it the right file?")]
    Foreign,
    #[error("a Tally backup of format {found}, which this release does not read (it reads format {FORMAT}): restore with the release that wrote it")]
    Format { found: u8 },
    #[error("truncated: the file has {have} bytes, its header says {want}; the copy was cut short (disk full, interrupted transfer)")]
    Truncated { have: u64, want: u64 },
    #[error(
        "{extra} bytes follow the end of the backup: the file was appended to or is not one backup"
    )]
    Trailing { extra: u64 },
    #[error("the header does not decode ({0}): the file is damaged")]
    Header(String),
    #[error("checksum mismatch: the payload's SHA-256 is {found}, the header says {want}; the file is damaged")]
    Checksum { found: String, want: String },
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes a backup file's bytes: `header` with its payload size and digest filled in
/// from `payload`, then `payload`.
pub fn encode(mut header: Header, payload: &[u8]) -> Vec<u8> {
    header.payload_bytes = payload.len() as u64;
    header.payload_sha256 = sha256_hex(payload);
    // A struct of strings and numbers always serializes.
    let json = match serde_json::to_vec_pretty(&header) {
        Ok(j) => j,
        Err(e) => unreachable!("a backup header always encodes: {e}"),
    };
    let mut out = Vec::with_capacity(PREFIX + json.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    out
}

/// Checks a backup file's bytes: magic, format, whole length, header, payload digest.
/// Returns the header and the payload.
pub fn decode(file: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let have = file.len() as u64;
    // A prefix of the magic is a backup cut short; anything else is another file.
    if file.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(file) && !file.is_empty() {
            BackupError::Truncated {
                have,
                want: PREFIX as u64,
            }
        } else {
            BackupError::Foreign
        });
    }
    if &file[..MAGIC.len()] != MAGIC {
        return Err(BackupError::Foreign);
    }
    if file.len() < PREFIX {
        return Err(BackupError::Truncated {
            have,
            want: PREFIX as u64,
        });
    }
    let format = file[MAGIC.len()];
    if format != FORMAT {
        return Err(BackupError::Format { found: format });
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&file[MAGIC.len() + 1..PREFIX]);
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_HEADER {
        return Err(BackupError::Header(format!(
            "a header of {header_len} bytes is longer than any backup's"
        )));
    }
    let body = &file[PREFIX..];
    if body.len() < header_len {
        return Err(BackupError::Truncated {
            have,
            want: (PREFIX + header_len) as u64,
        });
    }
    let (json, payload) = body.split_at(header_len);
    let header: Header =
        serde_json::from_slice(json).map_err(|e| BackupError::Header(e.to_string()))?;
    let want = (PREFIX + header_len) as u64 + header.payload_bytes;
    if have < want {
        return Err(BackupError::Truncated { have, want });
    }
    if have > want {
        return Err(BackupError::Trailing { extra: have - want });
    }
    let found = sha256_hex(payload);
    if found != header.payload_sha256 {
        return Err(BackupError::Checksum {
            found,
            want: header.payload_sha256,
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "tests: a failed unwrap is a failed test"
    )]
    use super::*;

    fn header() -> Header {
        Header {
            cluster_name: "site \"a\"".into(),
            cluster_id: "c0ffee".into(),
            index: 42,
            term: 3,
            ledger_time_ms: 1_700_000_000_000,
            members: vec![Member {
                id: 1,
                addr: "h1:27000".into(),
                voter: true,
            }],
            sessions: 2,
            leases: 3,
            history_records: 9,
            tallyd_version: "0.1.0".into(),
            payload_bytes: 0,
            payload_sha256: String::new(),
        }
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let payload = b"the payload".repeat(100);
        let file = encode(header(), &payload);
        let (h, p) = decode(&file).unwrap();
        assert_eq!(p, payload.as_slice());
        assert_eq!(h.payload_bytes, payload.len() as u64);
        assert_eq!(h.cluster_name, "site \"a\"");
        assert_eq!((h.index, h.term), (42, 3));
    }

    #[test]
    fn every_damage_is_refused_by_name() {
        let payload = b"0123456789".repeat(50);
        let file = encode(header(), &payload);
        // Cut anywhere: always "truncated" (or, cut inside the magic, still truncated;
        // cut to nothing, not a backup at all).
        for cut in [1, 5, 8, 10, 13, 40, file.len() - 1] {
            let e = decode(&file[..cut]).unwrap_err();
            assert!(
                matches!(e, BackupError::Truncated { .. } | BackupError::Header(_)),
                "cut at {cut}: {e}"
            );
        }
        assert_eq!(decode(&[]).unwrap_err(), BackupError::Foreign);
        // A flipped payload byte: the checksum.
        let mut bad = file.clone();
        let last = bad.len() - 7;
        bad[last] ^= 0x20;
        assert!(matches!(
            decode(&bad).unwrap_err(),
            BackupError::Checksum { .. }
        ));
        // Appended bytes.
        let mut long = file.clone();
        long.extend_from_slice(b"more");
        assert_eq!(
            decode(&long).unwrap_err(),
            BackupError::Trailing { extra: 4 }
        );
        // Another file, another format.
        assert_eq!(
            decode(b"FEATURE f v 1.0 permanent 1\n").unwrap_err(),
            BackupError::Foreign
        );
        let mut other = file.clone();
        other[8] = 9;
        assert_eq!(
            decode(&other).unwrap_err(),
            BackupError::Format { found: 9 }
        );
        // A garbled header.
        let mut garbled = file;
        garbled[PREFIX + 2] = b'\x01';
        assert!(matches!(
            decode(&garbled).unwrap_err(),
            BackupError::Header(_)
        ));
    }

    #[test]
    fn the_messages_say_what_is_wrong() {
        let t = BackupError::Truncated { have: 10, want: 20 }.to_string();
        assert!(t.starts_with("truncated"), "{t}");
        assert!(BackupError::Foreign
            .to_string()
            .starts_with("not a Tally backup"));
        let c = BackupError::Checksum {
            found: "a".into(),
            want: "b".into(),
        }
        .to_string();
        assert!(c.starts_with("checksum mismatch"), "{c}");
    }
}
