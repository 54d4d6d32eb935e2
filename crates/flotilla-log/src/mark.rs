//! The durable-write mark: a guard against a storage engine that loses acknowledged writes
//! without saying so.
//!
//! Why it exists: fjall 3.1 replays its journal on open and stops at the first record it
//! cannot decode, treating it as the torn tail of a crash, and truncates the journal there.
//! A flipped bit in the middle of a journal therefore silently drops every later batch,
//! including writes this store acknowledged as durable. Raft cannot survive a node that
//! forgets what it promised, so the loss must at least be detected.
//!
//! How: every durable batch the store commits carries a counter (`durable_seq` in the meta
//! keyspace, in the same atomic batch). After the batch is synced, the counter is also
//! written to this small file beside the database, without a sync. On open, the counter in
//! the database must be at least the one in the file:
//! - after a clean stop or a killed process, the file holds the latest counter (the page
//!   cache survives) and the database has it too;
//! - after a power loss the file may hold an older value, never a newer one, because each
//!   value is written only after its batch was synced;
//! - if the database has a smaller counter, synced batches were lost: open refuses.
//!
//! The file costs one `pwrite` of 13 bytes per durable write and no extra sync.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// The mark file's name inside the data directory.
pub const MARK_FILE: &str = "flotilla-log.mark";

const MARK_VERSION: u8 = 1;
/// Version, counter (u64 LE), CRC32C (u32 LE) of the first 9 bytes.
const MARK_BYTES: usize = 13;

pub(crate) struct Mark {
    file: File,
    path: PathBuf,
}

impl Mark {
    /// Opens (creating if needed) the mark in `dir`, and returns the counter it holds, if
    /// any. A damaged mark is an error: the disk under the store is flipping bits.
    pub(crate) fn open(dir: &Path) -> Result<(Mark, Option<u64>), LogError> {
        let path = dir.join(MARK_FILE);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let len = file.metadata()?.len();
        let mark = Mark { file, path };
        if len == 0 {
            // Never written: a fresh store, or a crash before the first durable write.
            return Ok((mark, None));
        }
        let mut buf = [0u8; MARK_BYTES];
        // The reason names the file's full path: an operator reading the refusal in a
        // node's log must know which data directory is damaged.
        let damaged = |reason: String| LogError::CorruptMeta {
            key: MARK_FILE.into(),
            reason: format!("{reason} ({})", mark.path.display()),
        };
        if len != MARK_BYTES as u64 {
            return Err(damaged(format!("{len} bytes instead of {MARK_BYTES}")));
        }
        mark.file.read_exact_at(&mut buf, 0)?;
        let (body, crc) = buf.split_at(9);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(damaged("checksum mismatch".into()));
        }
        if body[0] != MARK_VERSION {
            return Err(damaged(format!("unknown version {}", body[0])));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&body[1..9]);
        Ok((mark, Some(u64::from_le_bytes(seq))))
    }

    /// Records `seq`, the counter of a batch that is already durable. No sync: see the
    /// module documentation.
    pub(crate) fn record(&mut self, seq: u64) -> Result<(), LogError> {
        let mut buf = [0u8; MARK_BYTES];
        buf[0] = MARK_VERSION;
        buf[1..9].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32c::crc32c(&buf[..9]);
        buf[9..].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&buf, 0)?;
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
