//! The one error type of `tally-core`. Ledger refusals are not errors (they are answers,
//! recorded in the log like any other); these are failures to understand input.

use thiserror::Error;

/// Everything that can go wrong reading license files, options files, keys or snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A license file could not be parsed. `line` and `column` are 1-based.
    #[error("line {line}, column {column}: {message}")]
    Parse {
        line: u32,
        column: u32,
        message: String,
    },

    /// A line's signature is missing, malformed or does not verify.
    #[error("line {line} (FEATURE/INCREMENT {feature}): {reason}")]
    Signature {
        line: u32,
        feature: String,
        reason: String,
    },

    /// A key file or key text is not a valid Ed25519 key.
    #[error("invalid key: {0}")]
    Key(String),

    /// An options file could not be parsed, or does not fit the licenses.
    #[error("options file: {0}")]
    Options(#[from] crate::options::OptionsError),

    /// A ledger snapshot could not be decoded.
    #[error("ledger snapshot: {0}")]
    Snapshot(String),
}
