//! The Raft type configuration: what a log entry carries (a [`Command`]: a ledger op and
//! the leader's time), what applying one answers (the ledger's [`Outcome`]), and what a
//! node is (its client and HTTP addresses).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use tally_core::ledger::{Op, Outcome, TimeMs};

/// The application data of a log entry. The leader stamps its clock when it proposes, so
/// every node applies the same time; the log index is added by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub at_ms: TimeMs,
    pub op: Op,
    /// The administrator's certificate name, where an administrator's request made the
    /// entry: the usage history names who acted. Not read by the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", std::mem::discriminant(&self.op), self.at_ms)
    }
}

/// A cluster member as the membership config records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyNode {
    /// The gRPC address clients and peers dial (`host:port`).
    pub addr: String,
    /// The HTTP address (dashboard, metrics, health).
    pub http: String,
}

impl fmt::Display for TallyNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

openraft::declare_raft_types!(
    /// Tally's Raft types.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = TallyNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, TallyNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, TallyNode>;
