//! `tallyd`, the Tally license server: openraft over tonic, redb storage, the gRPC
//! services and the leader's lease keeper.
//!
//! The cluster is built by the next issue; today this crate only ties the workspace
//! together so that the layout of the design brief exists from the first commit.

pub use tally_core as core;
pub use tally_proto as proto;
