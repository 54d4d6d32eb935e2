//! Newtypes and the log entry: the vocabulary every other module speaks.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::membership::Membership;

/// A node's identity. Positive, never reused (INTERFACE.md). `NodeId(0)` is never a member.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

/// A Raft term (Raft §5.1). Terms only grow on every node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

/// A position in the replicated log. The first real entry has index 1; index 0 is the empty
/// prefix whose term is 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The previous index, saturating at zero.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl Term {
    pub const ZERO: Term = Term(0);
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader at once (Raft §8): commits the previous terms' entries.
    Noop,
    /// An opaque state-machine command. `Bytes` so the same buffer flows from the client to
    /// the log, the wire and the state machine without copies.
    Command(Bytes),
    /// A membership configuration (joint or simple). Takes effect on every node as soon as it
    /// is appended to that node's log, committed or not (Raft thesis §4.1).
    Config(Membership),
}

/// The kind of an entry, without its payload (for `/v1/log` and events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Noop,
    Command,
    Config,
}

/// One replicated log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    pub fn kind(&self) -> EntryKind {
        match self.payload {
            EntryPayload::Noop => EntryKind::Noop,
            EntryPayload::Command(_) => EntryKind::Command,
            EntryPayload::Config(_) => EntryKind::Config,
        }
    }

    /// An estimate of the entry's size on the wire, used for byte caps on messages and on
    /// uncommitted data. Payload length plus a fixed header.
    pub fn approx_bytes(&self) -> usize {
        const HEADER_BYTES: usize = 24;
        HEADER_BYTES
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(b) => b.len(),
                EntryPayload::Config(m) => 32 * m.len(),
            }
    }
}

/// The state that must be durable before a node answers any message that depends on it
/// (Raft Figure 2, "persistent state on all servers"). `commit` is kept too: it is not
/// required for safety, but saves re-applying after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    pub commit: LogIndex,
}

/// Describes a snapshot: the state machine after applying every entry up to and including
/// `last_index`, and the configuration in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub membership: Membership,
}
