//! Tally's gRPC protocol, package `tally.v1`: the `Licensing`, `Admin` and internal `Raft`
//! services. The `.proto` files and their generated code are being written; this crate
//! exists so the workspace layout is complete.
