//! The runtime Raft runs on, apart from the one that serves clients.
//!
//! A follower campaigns when it hears nothing from the leader for an election timeout
//! (300-600 ms). When openraft's core, its replication tasks and the peer connections
//! shared the runtime with the client service, any long stretch of client work (an
//! O(n²) apply, found under overload; a burst of TLS handshakes; a checkpoint of 100,000
//! beats) delayed the leader's heartbeats by as much: measured at 100,000 sessions, the
//! runtime woke 300-600 ms late seven times in one sitting (BENCHMARKS.md, "Overload"),
//! which is an election timeout. Raft's traffic is small and must be prompt; client
//! work is large and may wait. So Raft gets threads of its own, which the OS schedules
//! beside the client runtime's, and client work can only slow itself.
//!
//! What runs here: everything openraft spawns (created by [`Raft::new`] on this runtime),
//! the transport's append tasks and peer channels (created from those tasks), and the
//! clock pinger. What does not: the gRPC server, so inbound Raft calls are decoded on the
//! main runtime before they reach the core (on a follower that runtime is idle: clients
//! talk to the leader), and the keeper, whose proposals are client work.
//!
//! [`Raft::new`]: openraft::Raft::new

use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// Two workers: openraft's core and its state-machine task run apart, so an apply that
/// waits for the state lock (a reader on the client side) cannot hold the heartbeats.
const WORKERS: usize = 2;
/// How long [`RaftRuntime::shut_down`] waits for tasks still running after Raft stopped
/// (a blocking log write finishing) before it leaves them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Owns the runtime; dropped without [`RaftRuntime::shut_down`] (a failed start, a test
/// that panicked), it leaves its tasks without blocking, which is allowed anywhere.
#[derive(Debug)]
pub struct RaftRuntime {
    rt: Option<Runtime>,
    handle: Handle,
}

impl RaftRuntime {
    pub fn new(node: u64) -> std::io::Result<RaftRuntime> {
        let rt = Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name(format!("raft-{node}"))
            .enable_all()
            .build()?;
        Ok(RaftRuntime {
            handle: rt.handle().clone(),
            rt: Some(rt),
        })
    }

    /// Where to spawn Raft's tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime, waiting (off the async workers) for what still runs on it, so
    /// the data directory's files are closed when this returns. Call after Raft stopped.
    pub async fn shut_down(mut self) {
        if let Some(rt) = self.rt.take() {
            let _ = tokio::task::spawn_blocking(move || rt.shutdown_timeout(SHUTDOWN_WAIT)).await;
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
