//! The Tally client library: connect to a cluster, open a session, check out seats,
//! heartbeat and check in, following the leader across failovers.
//!
//! Built by a later issue; the protocol it will speak is in [`tally_proto`].

pub use tally_proto as proto;
