//! The one error type of `tally-client`, with what can be retried kept apart from what
//! cannot.

use thiserror::Error;

/// Everything a call to the cluster can end in, other than success.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// No endpoint was given, or one could not be understood.
    #[error("bad endpoint {endpoint:?}: {problem}")]
    Endpoint { endpoint: String, problem: String },

    /// No node answered as leader before the retry budget ran out: the cluster may be
    /// electing, partitioned, or down. Retrying later may succeed.
    #[error("{what}: no leader answered after {attempts} attempt(s) over {elapsed_ms} ms; last from {endpoint}: {last}")]
    Unavailable {
        what: String,
        attempts: u32,
        elapsed_ms: u64,
        endpoint: String,
        last: String,
    },

    /// The cluster understood the request and refused it (bad argument, unknown lease,
    /// permission, ...). Retrying the same request gives the same answer.
    #[error("{what}: {endpoint} refused it ({code:?}): {message}")]
    Refused {
        what: String,
        endpoint: String,
        code: tonic::Code,
        message: String,
    },
}

impl Error {
    /// True when the same call may succeed later (no leader yet, nodes unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}
