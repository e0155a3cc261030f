//! The one error type of `tally-client`, with what can be retried kept apart from what
//! cannot.

use thiserror::Error;

/// Everything a call to the cluster can end in, other than success.
///
/// ```no_run
/// # async fn demo(client: tally_client::Client) {
/// use tally_client::{proto::v1::DenialReason, Error};
/// match client.checkout("solid_modeler", Default::default()).await {
///     Ok(_seat) => {}
///     Err(Error::Denied { reason: DenialReason::NoSeats, in_use, available, .. }) => {
///         eprintln!("all {available} seats are taken ({in_use} in use); try --wait")
///     }
///     Err(e) if e.is_retryable() => eprintln!("license servers unreachable, retrying: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// No endpoint was given, or one could not be understood.
    #[error("bad endpoint {endpoint:?}: {problem}")]
    Endpoint { endpoint: String, problem: String },

    /// The TLS settings are incomplete, or a certificate or key file is unusable.
    #[error("TLS settings: {problem}")]
    Tls { problem: String },

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

    /// The cluster answered a checkout with a denial: no seat is held. `reason` says why
    /// in a form programs can match on; `message` says it for people.
    #[error("checkout of {feature} denied: {message}")]
    Denied {
        feature: String,
        reason: tally_proto::v1::DenialReason,
        message: String,
        /// For `NoSeats`: seats in use and seats the license provides.
        in_use: u64,
        available: u64,
    },

    /// A checkin found the lease no longer held: an administrator removed it, the
    /// cluster revoked it (before a heartbeat could say so), or the session expired and
    /// its seats were reclaimed.
    #[error(
        "lease {lease_id} is no longer held (removed by an administrator, revoked, or its session expired)"
    )]
    LeaseGone { lease_id: u64 },

    /// The cluster took the lease back (a license file was unloaded or reloaded with
    /// fewer seats, or the license's term ended): the seat is no longer held. `message`
    /// says why, for people. See [`Seat::revoked`](crate::Seat::revoked).
    #[error("lease {lease_id} of {feature} is no longer held: {message}")]
    Revoked {
        lease_id: u64,
        feature: String,
        message: String,
    },

    /// The session is gone (expired, closed, or refused by the cluster); open a new
    /// [`Client`](crate::Client) to go on.
    #[error("session lost: {reason}")]
    SessionLost { reason: String },
}

impl Error {
    /// True when the same call may succeed later (no leader yet, nodes unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}
