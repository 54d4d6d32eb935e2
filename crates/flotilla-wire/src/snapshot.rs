//! The receiving side's bookkeeping for snapshot streams: which bytes to keep, where the
//! sender should continue, and whether the finished snapshot is intact.
//!
//! The receiver holds no snapshot bytes itself; the caller stores them (in a file, say) as
//! told. It keeps the transfer's identity, the first missing offset and a running CRC32C, so
//! a transfer survives any number of reconnects as long as the receiver lives:
//!
//! - a chunk at exactly the next offset is stored, and acknowledged with the new offset;
//! - any other chunk of the same transfer (a duplicate, or a gap after a reconnect) is
//!   dropped and answered with the offset the sender should continue from. A sender that
//!   has just reconnected can send an empty chunk at offset 0 to learn that offset;
//! - a chunk of another snapshot starts a new transfer if it is at offset 0, and is otherwise
//!   answered with "start over" (offset 0);
//! - the last chunk completes the transfer only if the CRC32C of all the bytes matches the
//!   chunk's `checksum`; otherwise the partial copy must be dropped and the sender restarts.

use flotilla_raft::types::SnapshotMeta;

use crate::message::{SnapshotAck, SnapshotChunk, SnapshotId};

/// What to do with a chunk, and what to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Write `chunk.data` at `chunk.offset`, then send `ack`. When `fresh` is true this chunk
    /// begins a new transfer: discard any partial copy of another snapshot first.
    Store { ack: SnapshotAck, fresh: bool },
    /// Write `chunk.data` at `chunk.offset` (discarding any other partial copy first when
    /// `fresh`); the snapshot is now whole and its checksum matches: hand `meta` and the bytes
    /// to the core, then send `ack`.
    Complete { ack: SnapshotAck, meta: SnapshotMeta, fresh: bool },
    /// Not the bytes needed next: drop them and send `ack`, which tells the sender where to
    /// continue.
    Skip { ack: SnapshotAck },
    /// The transfer is broken (checksum mismatch, or a chunk inconsistent with itself or with
    /// the earlier ones): discard the partial copy and send `ack`, which carries the error and
    /// offset 0.
    Reject { ack: SnapshotAck },
}

impl ChunkVerdict {
    /// The answer to send to the sender.
    pub fn ack(&self) -> &SnapshotAck {
        match self {
            ChunkVerdict::Store { ack, .. }
            | ChunkVerdict::Complete { ack, .. }
            | ChunkVerdict::Skip { ack }
            | ChunkVerdict::Reject { ack } => ack,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Transfer {
    snapshot_id: SnapshotId,
    total_len: u64,
    checksum: u32,
    /// The first byte not yet received. Invariant: `next_offset <= total_len`.
    next_offset: u64,
    /// CRC32C of bytes `0..next_offset`.
    crc: u32,
}

/// Tracks at most one incoming snapshot transfer. See the module docs for the rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotReceiver {
    current: Option<Transfer>,
}

impl SnapshotReceiver {
    pub fn new() -> SnapshotReceiver {
        SnapshotReceiver::default()
    }

    /// The transfer in progress and its first missing byte, if any.
    pub fn progress(&self) -> Option<(SnapshotId, u64)> {
        self.current.as_ref().map(|t| (t.snapshot_id, t.next_offset))
    }

    /// Forgets the transfer in progress (say, after a higher term made it moot).
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Decides what to do with one chunk.
    pub fn on_chunk(&mut self, chunk: &SnapshotChunk) -> ChunkVerdict {
        if let Err(reason) = check_self_consistent(chunk) {
            return self.reject(chunk.snapshot_id, reason);
        }
        let same_transfer =
            self.current.as_ref().is_some_and(|t| t.snapshot_id == chunk.snapshot_id);
        let fresh = !same_transfer;
        if fresh {
            if chunk.offset != 0 {
                // Another snapshot's middle: we hold none of its earlier bytes.
                return ChunkVerdict::Skip { ack: ack(chunk.snapshot_id, 0, None) };
            }
            self.current = None; // replaced by the new transfer just below
        } else if self
            .current
            .as_ref()
            .is_some_and(|t| t.total_len != chunk.total_len || t.checksum != chunk.checksum)
        {
            let reason = "chunk disagrees with earlier chunks on length or checksum";
            return self.reject(chunk.snapshot_id, reason.to_string());
        }
        let t = self.current.get_or_insert(Transfer {
            snapshot_id: chunk.snapshot_id,
            total_len: chunk.total_len,
            checksum: chunk.checksum,
            next_offset: 0,
            crc: 0,
        });
        if chunk.offset != t.next_offset {
            return ChunkVerdict::Skip { ack: ack(t.snapshot_id, t.next_offset, None) };
        }
        t.crc = crc32c::crc32c_append(t.crc, &chunk.data);
        t.next_offset += chunk.data.len() as u64;
        debug_assert!(t.next_offset <= t.total_len, "checked by check_self_consistent");
        if !chunk.last {
            return ChunkVerdict::Store { ack: ack(t.snapshot_id, t.next_offset, None), fresh };
        }
        if t.crc != t.checksum {
            let reason = format!(
                "snapshot checksum mismatch: computed {:08x}, expected {:08x}",
                t.crc, t.checksum
            );
            return self.reject(chunk.snapshot_id, reason);
        }
        let done = ack(t.snapshot_id, t.next_offset, None);
        self.current = None;
        ChunkVerdict::Complete { ack: done, meta: chunk.meta.clone(), fresh }
    }

    fn reject(&mut self, snapshot_id: SnapshotId, reason: String) -> ChunkVerdict {
        if self.current.as_ref().is_some_and(|t| t.snapshot_id == snapshot_id) {
            self.current = None;
        }
        ChunkVerdict::Reject { ack: ack(snapshot_id, 0, Some(reason)) }
    }
}

/// A chunk must lie within its snapshot, and be `last` exactly when it reaches the end.
fn check_self_consistent(chunk: &SnapshotChunk) -> Result<(), String> {
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    match end {
        Some(end) if end <= chunk.total_len => {
            if chunk.last != (end == chunk.total_len) {
                return Err(format!(
                    "chunk ending at {end} of {} has last = {}",
                    chunk.total_len, chunk.last
                ));
            }
            Ok(())
        }
        _ => Err(format!(
            "chunk at {} with {} bytes overruns the snapshot's {} bytes",
            chunk.offset,
            chunk.data.len(),
            chunk.total_len
        )),
    }
}

fn ack(snapshot_id: SnapshotId, next_offset: u64, error: Option<String>) -> SnapshotAck {
    SnapshotAck { snapshot_id, next_offset, error }
}
