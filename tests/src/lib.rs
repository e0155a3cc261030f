//! Cluster harness, fault injection and history checker for Tally's end-to-end tests.
//! Built by the fault-tolerance issue; this crate exists so the layout is in place.
