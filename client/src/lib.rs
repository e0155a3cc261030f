//! The Tally client library: connect to a cluster, open a session, check out seats,
//! heartbeat and check in, following the leader across failovers.
//!
//! [`Cluster`] is the connection: every node of a cluster, each call sent to the leader,
//! redirects followed and elections waited out within a time budget.

mod cluster;
mod error;

pub use cluster::{normalise, Cluster, ConnectOptions};
pub use error::Error;
pub use tally_proto as proto;
