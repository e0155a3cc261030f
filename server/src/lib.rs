//! `tallyd`, the Tally license server: openraft over tonic, redb storage, the gRPC
//! services, the leader's lease keeper and the HTTP port.

pub mod admin;
pub mod admission;
pub mod backup;
pub mod bench_history;
pub mod clock;
pub mod config;
pub mod conns;
pub mod convert;
pub mod dev;
pub mod health;
pub mod http;
pub mod keeper;
pub mod lag;
pub mod lease;
pub mod licensing;
pub mod loadcheck;
pub mod network;
pub mod node;
pub mod probe;
pub mod raft_runtime;
pub mod reports;
pub mod sdnotify;
pub mod security;
pub mod shared;
pub mod stats;
pub mod store;
pub mod tarpit;
pub mod types;
pub mod users;

pub use tally_core as core;
pub use tally_proto as proto;
