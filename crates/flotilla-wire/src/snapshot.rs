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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use flotilla_raft::types::{LogIndex, NodeId, Term};
    use proptest::prelude::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { last_index: LogIndex(40), last_term: Term(2), ..SnapshotMeta::default() }
    }

    fn chunk(id: u64, data: &[u8], offset: usize, len: usize) -> SnapshotChunk {
        let end = (offset + len).min(data.len());
        SnapshotChunk {
            term: Term(2),
            from: NodeId(1),
            snapshot_id: SnapshotId(id),
            meta: meta(),
            offset: offset as u64,
            total_len: data.len() as u64,
            checksum: crc32c::crc32c(data),
            data: Bytes::copy_from_slice(&data[offset..end]),
            last: end == data.len(),
        }
    }

    fn next_offset(v: &ChunkVerdict) -> u64 {
        v.ack().next_offset
    }

    const DATA: &[u8] = b"the quick brown fox jumps over the lazy dog";

    #[test]
    fn in_order_chunks_complete_when_the_checksum_matches() {
        let mut rx = SnapshotReceiver::new();
        let v = rx.on_chunk(&chunk(7, DATA, 0, 20));
        assert!(matches!(v, ChunkVerdict::Store { fresh: true, .. }), "{v:?}");
        assert_eq!(next_offset(&v), 20);
        let v = rx.on_chunk(&chunk(7, DATA, 20, 20));
        assert!(matches!(v, ChunkVerdict::Store { fresh: false, .. }), "{v:?}");
        let v = rx.on_chunk(&chunk(7, DATA, 40, 20));
        let ChunkVerdict::Complete { ack, meta: m, fresh: false } = v else { panic!("{v:?}") };
        assert_eq!(ack, SnapshotAck { snapshot_id: SnapshotId(7), next_offset: 43, error: None });
        assert_eq!(m, meta());
        assert_eq!(rx.progress(), None, "a completed transfer is forgotten");
    }

    #[test]
    fn after_a_reconnect_the_sender_learns_where_to_resume() {
        let mut rx = SnapshotReceiver::new();
        rx.on_chunk(&chunk(7, DATA, 0, 10));
        rx.on_chunk(&chunk(7, DATA, 10, 10));
        // New connection: the sender probes with an empty chunk at offset 0.
        let v = rx.on_chunk(&chunk(7, DATA, 0, 0));
        assert!(matches!(v, ChunkVerdict::Skip { .. }), "{v:?}");
        assert_eq!(next_offset(&v), 20);
        // A duplicate and a chunk past a gap are both answered with the same resume point.
        assert_eq!(next_offset(&rx.on_chunk(&chunk(7, DATA, 10, 10))), 20);
        assert!(matches!(rx.on_chunk(&chunk(7, DATA, 30, 13)), ChunkVerdict::Skip { .. }));
        assert!(matches!(rx.on_chunk(&chunk(7, DATA, 20, 23)), ChunkVerdict::Complete { .. }));
    }

    #[test]
    fn a_corrupted_snapshot_is_rejected_at_the_end_and_forgotten() {
        let mut rx = SnapshotReceiver::new();
        rx.on_chunk(&chunk(7, DATA, 0, 20));
        let mut bad = chunk(7, DATA, 20, 30);
        let mut flipped = bad.data.to_vec();
        flipped[3] ^= 0x01;
        bad.data = flipped.into();
        let v = rx.on_chunk(&bad);
        let ChunkVerdict::Reject { ack } = v else { panic!("{v:?}") };
        assert_eq!(ack.next_offset, 0);
        assert!(ack.error.as_deref().is_some_and(|e| e.contains("checksum")), "{ack:?}");
        assert_eq!(rx.progress(), None);
    }

    #[test]
    fn another_snapshot_replaces_the_partial_one_only_from_its_start() {
        let mut rx = SnapshotReceiver::new();
        rx.on_chunk(&chunk(7, DATA, 0, 20));
        let other = b"a different snapshot";
        // Its middle is useless to us: start over.
        let v = rx.on_chunk(&chunk(8, other, 5, 5));
        assert_eq!(v, ChunkVerdict::Skip { ack: ack(SnapshotId(8), 0, None) });
        assert_eq!(rx.progress(), Some((SnapshotId(7), 20)), "the old transfer is kept");
        // Its start replaces the old transfer.
        let v = rx.on_chunk(&chunk(8, other, 0, 5));
        assert!(matches!(v, ChunkVerdict::Store { fresh: true, .. }), "{v:?}");
        assert_eq!(rx.progress(), Some((SnapshotId(8), 5)));
    }

    #[test]
    fn inconsistent_chunks_are_rejected() {
        let mut rx = SnapshotReceiver::new();
        let mut overrun = chunk(7, DATA, 40, 3);
        overrun.total_len = 41;
        assert!(matches!(rx.on_chunk(&overrun), ChunkVerdict::Reject { .. }));
        let mut huge = chunk(7, DATA, 0, 3);
        huge.offset = u64::MAX;
        assert!(matches!(rx.on_chunk(&huge), ChunkVerdict::Reject { .. }));
        let mut early_last = chunk(7, DATA, 0, 10);
        early_last.last = true;
        assert!(matches!(rx.on_chunk(&early_last), ChunkVerdict::Reject { .. }));

        rx.on_chunk(&chunk(7, DATA, 0, 10));
        let mut changed = chunk(7, DATA, 10, 10);
        changed.checksum ^= 1;
        assert!(matches!(rx.on_chunk(&changed), ChunkVerdict::Reject { .. }));
        assert_eq!(rx.progress(), None, "the inconsistent transfer is dropped");
    }

    #[test]
    fn an_empty_snapshot_completes_in_one_chunk() {
        let mut rx = SnapshotReceiver::new();
        let v = rx.on_chunk(&chunk(1, b"", 0, 0));
        assert!(matches!(v, ChunkVerdict::Complete { fresh: true, .. }), "{v:?}");
    }

    #[derive(Clone, Copy, Debug)]
    enum Fault {
        None,
        DropChunk,
        DropAck,
        CorruptChunk,
        RestartReceiver,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            6 => Just(Fault::None),
            2 => Just(Fault::DropChunk),
            2 => Just(Fault::DropAck),
            1 => Just(Fault::CorruptChunk),
            1 => Just(Fault::RestartReceiver),
        ]
    }

    proptest! {
        /// A stop-and-wait sender over a link that drops chunks and acks, corrupts chunks and
        /// restarts the receiver: after each loss it reconnects and probes with an empty chunk
        /// at offset 0, then follows the acks. The receiver ends up with exactly the sender's
        /// bytes, and never stores a byte out of place.
        #[test]
        fn transfers_survive_loss_reconnects_and_corruption(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk_len in 1usize..700,
            faults in proptest::collection::vec(fault(), 0..40),
        ) {
            let mut rx = SnapshotReceiver::new();
            let mut file: Vec<u8> = Vec::new();
            let mut pos = 0usize;
            let mut probe = false;
            let mut faults = faults.into_iter();
            let mut completed = false;
            // Each fault costs at most a restart of the whole transfer.
            let step_limit = (faults.len() + 1) * (data.len() / chunk_len + 3) + 10;
            for _ in 0..step_limit {
                let mut c = if probe { chunk(5, &data, 0, 0) } else { chunk(5, &data, pos, chunk_len) };
                let fault = faults.next().unwrap_or(Fault::None);
                match fault {
                    Fault::DropChunk => { probe = true; continue; }
                    Fault::CorruptChunk if !c.data.is_empty() => {
                        let mut d = c.data.to_vec();
                        d[0] ^= 0x80;
                        c.data = d.into();
                    }
                    Fault::RestartReceiver => { rx = SnapshotReceiver::new(); file.clear(); }
                    _ => {}
                }
                let verdict = rx.on_chunk(&c);
                match &verdict {
                    ChunkVerdict::Store { fresh, .. } | ChunkVerdict::Complete { fresh, .. } => {
                        if *fresh { file.clear(); }
                        prop_assert_eq!(file.len() as u64, c.offset, "stored in order");
                        file.extend_from_slice(&c.data);
                    }
                    ChunkVerdict::Reject { .. } => file.clear(),
                    ChunkVerdict::Skip { .. } => {}
                }
                if let ChunkVerdict::Complete { .. } = verdict {
                    completed = true;
                    break;
                }
                if matches!(fault, Fault::DropAck) {
                    probe = true;
                    continue;
                }
                probe = false;
                pos = verdict.ack().next_offset as usize;
            }
            prop_assert!(completed, "no completion within {} steps", step_limit);
            prop_assert_eq!(file, data);
        }
    }
}
