//! The storage contract the runtime codes against, and the checks every store shares.

use flotilla_raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};

use crate::error::LogError;

/// Everything persisted, for restarting a node's core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// `HardState::default()` when none was saved.
    pub hard_state: HardState,
    /// The latest saved snapshot metadata.
    pub snapshot: Option<SnapshotMeta>,
    /// Index and term just before the first stored entry: (0, 0) for a fresh log; after
    /// `purge(p)`: (p, term of p); after `reset_to_snapshot(meta)`:
    /// (meta.last_index, meta.last_term).
    pub log_start: (LogIndex, Term),
    /// Every stored entry.
    /// Invariant: consecutive, `entries[0].index == log_start.0 + 1`, terms never decrease
    /// and never fall below `log_start.1`.
    pub entries: Vec<Entry>,
}

impl StoredState {
    /// The index of the last stored entry (`log_start.0` when there is none).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.log_start.0.0 + self.entries.len() as u64)
    }
}

/// A durable Raft log plus the node's hard state, snapshot metadata and small named blobs.
///
/// Every method that changes state returns only once the change is durable, except
/// [`LogStore::purge`] (see there). Implementations: [`crate::FjallLogStore`] (disk) and
/// [`crate::MemLogStore`] (simulator). Both pass the `conformance` suite.
pub trait LogStore: Send {
    /// Everything persisted, checksum-verified.
    fn load(&self) -> Result<StoredState, LogError>;

    /// Group commit: optionally save the hard state, and (if `entries` is non-empty) delete
    /// every stored entry with index >= `entries[0].index`, then append `entries`. One atomic
    /// batch, one durable persist; returns only when durable.
    ///
    /// Refused with [`LogError::Invalid`] (nothing written) unless: indexes are consecutive;
    /// `log_start.0 < entries[0].index <= last_index + 1`; terms never decrease, starting
    /// from the term of `entries[0].index - 1`.
    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), LogError>;

    /// Deletes entries with index <= `upto` and records `(upto, term(upto))` as log_start,
    /// atomically. Durability is lazy: the purge becomes durable with the next durable write
    /// or when the store is dropped; a crash before either may leave the purged entries in
    /// place (extra entries that a snapshot already covers, never a gap).
    ///
    /// `upto <= log_start.0` is a no-op (the prefix is already gone); `upto > last_index` is
    /// refused with [`LogError::Invalid`] (a snapshot beyond the log is installed with
    /// [`LogStore::reset_to_snapshot`]).
    fn purge(&mut self, upto: LogIndex) -> Result<(), LogError>;

    /// Durably records snapshot metadata (replacing the previous one).
    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), LogError>;

    /// Snapshot install on a follower: drops every entry, sets
    /// `log_start = (meta.last_index, meta.last_term)` and saves `meta`; atomic and durable.
    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), LogError>;

    /// Entries with `lo <= index < hi`, each checksum-verified. `lo >= hi` gives an empty
    /// list. [`LogError::Compacted`] if `lo < first_index()`, [`LogError::OutOfRange`] if
    /// `hi > last_index() + 1`.
    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError>;

    /// The term at `index`: log_start's term for `log_start.0`; `None` if compacted away or
    /// beyond the last entry. Answered from memory.
    fn term(&self, index: LogIndex) -> Result<Option<Term>, LogError>;

    /// `log_start.0 + 1`.
    fn first_index(&self) -> LogIndex;

    /// The last stored index; `log_start.0` when the log is empty.
    fn last_index(&self) -> LogIndex;

    /// Durably stores a small named blob (bootstrap membership, cluster identity, ...).
    /// Keys are non-empty, at most [`MAX_META_KEY_BYTES`] bytes.
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), LogError>;

    /// Reads a blob stored by [`LogStore::put_meta`].
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, LogError>;
}

/// The longest key [`LogStore::put_meta`] accepts.
pub const MAX_META_KEY_BYTES: usize = 128;

/// The shape of a log that the shared checks need: where it starts and how to find a term.
pub(crate) struct LogShape<'a> {
    pub(crate) log_start: (LogIndex, Term),
    pub(crate) last_index: LogIndex,
    pub(crate) term_of: &'a dyn Fn(LogIndex) -> Option<Term>,
}

/// Checks a `write` request against the log's shape. Both stores call this first, so they
/// refuse exactly the same requests.
pub(crate) fn check_append(shape: &LogShape<'_>, entries: &[Entry]) -> Result<(), LogError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index <= shape.log_start.0 {
        return Err(LogError::invalid(
            "write",
            format!(
                "entry {} is at or before the log start {} (compacted)",
                first.index, shape.log_start.0
            ),
        ));
    }
    if first.index > shape.last_index.next() {
        return Err(LogError::invalid(
            "write",
            format!(
                "entry {} would leave a gap after the last index {}",
                first.index, shape.last_index
            ),
        ));
    }
    if first.index.0.checked_add(entries.len() as u64).is_none() {
        return Err(LogError::invalid("write", format!("indexes from {} overflow", first.index)));
    }
    // `first.index - 1` lies in [log_start.0, last_index], so its term is known.
    let mut prev_term = (shape.term_of)(first.index.prev()).unwrap_or(shape.log_start.1);
    for (i, e) in entries.iter().enumerate() {
        let want = LogIndex(first.index.0 + i as u64);
        if e.index != want {
            return Err(LogError::invalid(
                "write",
                format!("indexes are not consecutive: expected {want}, got {}", e.index),
            ));
        }
        if e.term < prev_term {
            return Err(LogError::invalid(
                "write",
                format!(
                    "entry {} has term {} below the previous term {prev_term}",
                    e.index, e.term
                ),
            ));
        }
        prev_term = e.term;
    }
    Ok(())
}

/// What a `purge(upto)` request means for a log of this shape.
pub(crate) enum PurgePlan {
    /// Nothing to delete: `upto` is at or before the log start.
    Nothing,
    /// Delete `(log_start.0, upto]` and make `(upto, term)` the new log start.
    Delete { upto: LogIndex, term: Term },
}

pub(crate) fn plan_purge(shape: &LogShape<'_>, upto: LogIndex) -> Result<PurgePlan, LogError> {
    if upto <= shape.log_start.0 {
        return Ok(PurgePlan::Nothing);
    }
    if upto > shape.last_index {
        return Err(LogError::invalid(
            "purge",
            format!("index {upto} is beyond the last index {}", shape.last_index),
        ));
    }
    match (shape.term_of)(upto) {
        Some(term) => Ok(PurgePlan::Delete { upto, term }),
        // Unreachable for a consistent shape; refuse rather than guess a term.
        None => Err(LogError::invalid("purge", format!("no term known for index {upto}"))),
    }
}

/// Checks an `entries(lo, hi)` request; `Ok(false)` means "empty answer".
pub(crate) fn check_range(
    shape: &LogShape<'_>,
    lo: LogIndex,
    hi: LogIndex,
) -> Result<bool, LogError> {
    if lo >= hi {
        return Ok(false);
    }
    let first = shape.log_start.0.next();
    if lo < first {
        return Err(LogError::Compacted { requested: lo, first });
    }
    if hi > shape.last_index.next() {
        return Err(LogError::OutOfRange { lo, hi, first, last: shape.last_index });
    }
    Ok(true)
}

/// The shared answer to `term(index)`, given the term of stored entries.
pub(crate) fn term_at(
    log_start: (LogIndex, Term),
    last_index: LogIndex,
    index: LogIndex,
    stored: impl FnOnce(LogIndex) -> Option<Term>,
) -> Option<Term> {
    if index == log_start.0 {
        Some(log_start.1)
    } else if index < log_start.0 || index > last_index {
        None
    } else {
        stored(index)
    }
}

pub(crate) fn check_meta_key(key: &str) -> Result<(), LogError> {
    if key.is_empty() || key.len() > MAX_META_KEY_BYTES {
        return Err(LogError::invalid(
            "meta key",
            format!("{key:?} must be 1..={MAX_META_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}
