//! `tally-core`: Tally's domain, free of tokio, clocks and I/O.
//!
//! - [`backup`]: the backup file's framing: header, payload, checksum.
//! - [`license`]: the FlexLM-style license file, its canonical form and Ed25519 signatures.
//! - [`ledger`]: the pure seat state machine that every node applies to the same log.
//! - [`history`]: the usage history, records derived from the ledger's events, and its
//!   reports.
//! - [`options`]: the site's FlexNet-style options file and the checkout policy it implies.
//! - [`usage`]: metered overuse and monthly true-up, computed from a feature's history.
//!
//! Determinism is the point: every node must compute byte-identical state from the same
//! entries, so the crate uses ordered maps only and takes time from its inputs.

pub mod backup;
pub mod error;
pub mod history;
pub mod ledger;
pub mod license;
pub mod options;
pub mod usage;

pub use error::Error;
