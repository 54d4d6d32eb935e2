//! What travels in a frame once the handshake is done: [`WireMessage`].

use bytes::Bytes;
use flotilla_raft::message::Message;
use flotilla_raft::types::{NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One frame's payload after the handshake. Raft messages go through unchanged; snapshot
/// bytes travel beside them as chunks, because the core only ever sees a whole, verified
/// snapshot (`MessageBody::InstallSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMessage {
    /// A message for the peer's Raft core.
    Raft(Message),
    /// One piece of a snapshot, leader to follower.
    SnapshotChunk(SnapshotChunk),
    /// The follower's answer to a chunk: where the leader should continue.
    SnapshotAck(SnapshotAck),
}

impl WireMessage {
    /// A short name for traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            WireMessage::Raft(m) => m.body.name(),
            WireMessage::SnapshotChunk(_) => "SnapshotChunk",
            WireMessage::SnapshotAck(_) => "SnapshotAck",
        }
    }
}

/// Names one snapshot transfer. The sender picks a fresh id for every snapshot it builds, so a
/// receiver never splices bytes of two different snapshots together: two snapshots at the
/// same index may still differ byte for byte (another leader, another encoder).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SnapshotId(pub u64);

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A piece of a snapshot: the bytes `offset .. offset + data.len()` of a snapshot that is
/// `total_len` bytes long.
///
/// Every chunk repeats the transfer's identity (`snapshot_id`, `meta`, `total_len`,
/// `checksum`), so a receiver that lost its state, or a connection that was re-established,
/// can tell at any chunk whether it continues the transfer it holds. That is what makes
/// resume after reconnect possible: the receiver answers any chunk with a [`SnapshotAck`]
/// whose `next_offset` is the first byte it lacks, and the sender continues from there.
///
/// Invariant: `offset + data.len() <= total_len`, and `last` exactly when they are equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sender's current term; a receiver in a higher term ignores the chunk.
    pub term: Term,
    /// The sending node (the leader).
    pub from: NodeId,
    /// Which snapshot these bytes belong to.
    pub snapshot_id: SnapshotId,
    /// What the snapshot covers; handed to the core once the snapshot is complete.
    pub meta: SnapshotMeta,
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    /// The snapshot's whole length in bytes.
    pub total_len: u64,
    /// CRC32C (Castagnoli) of the whole snapshot, checked by the receiver after the last
    /// chunk, so corruption anywhere, resumed transfers included, is caught before install.
    pub checksum: u32,
    /// The bytes themselves.
    pub data: Bytes,
    /// True on the chunk that ends the snapshot.
    pub last: bool,
}

/// The receiver's answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAck {
    /// The transfer this answers.
    pub snapshot_id: SnapshotId,
    /// The first byte the receiver does not hold: the sender continues from here. Zero means
    /// "start over".
    pub next_offset: u64,
    /// Set when the receiver rejected the transfer (bad checksum, inconsistent chunk); the
    /// receiver has dropped its partial copy and `next_offset` is 0.
    pub error: Option<String>,
}
