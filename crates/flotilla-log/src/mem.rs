//! The in-memory store for the deterministic simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};

use crate::error::LogError;
use crate::store::{
    LogShape, LogStore, PurgePlan, StoredState, check_append, check_meta_key, check_range,
    plan_purge, term_at,
};

/// A [`LogStore`] that keeps everything in memory; "durable" means "stored in the shared
/// state". Passes the same `conformance` suite as [`crate::FjallLogStore`].
///
/// Clones share one state, like handles on one disk: the simulator keeps a clone, hands
/// another to a node, and "restarts" the node by dropping it and loading from its own
/// clone. Use [`MemLogStore::fork`] for an independent copy. Cloning is an `Arc` bump;
/// entries hold `Bytes` payloads, so reads copy no payload bytes.
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<MemState>>,
}

#[derive(Clone, Debug, Default)]
struct MemState {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    log_start: (LogIndex, Term),
    /// Invariant: `entries[i].index == log_start.0 + 1 + i`.
    entries: Vec<Entry>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Indexes whose reads fail as corrupt (fault injection); cleared when rewritten.
    corrupt: BTreeSet<LogIndex>,
}

impl MemLogStore {
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    /// An independent deep copy of the current state (a disk image).
    pub fn fork(&self) -> MemLogStore {
        MemLogStore { inner: Arc::new(Mutex::new(self.lock().clone())) }
    }

    /// Fault injection: from now on reading entry `index` reports [`LogError::Corrupt`],
    /// until the entry is overwritten, purged or reset away. Returns false (and injects
    /// nothing) if no entry `index` is stored.
    pub fn inject_corruption(&self, index: LogIndex) -> bool {
        let mut s = self.lock();
        let stored = index > s.log_start.0 && index <= s.last_index();
        if stored {
            s.corrupt.insert(index);
        }
        stored
    }

    /// The lock cannot be poisoned in a way that matters: every mutation is completed
    /// before any call that could panic, so a poisoned guard still holds consistent state.
    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemState {
    fn last_index(&self) -> LogIndex {
        LogIndex(self.log_start.0.0 + self.entries.len() as u64)
    }

    fn stored_term(&self, index: LogIndex) -> Option<Term> {
        let offset = index.0.checked_sub(self.log_start.0.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?).map(|e| e.term)
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        term_at(self.log_start, self.last_index(), index, |i| self.stored_term(i))
    }

    fn check_corrupt(&self, lo: LogIndex, hi: LogIndex) -> Result<(), LogError> {
        match self.corrupt.range(lo..hi).next() {
            Some(&index) => Err(LogError::Corrupt {
                index,
                reason: "checksum mismatch (injected by MemLogStore::inject_corruption)".into(),
            }),
            None => Ok(()),
        }
    }

    fn with_shape<R>(&self, f: impl FnOnce(&LogShape<'_>) -> R) -> R {
        let term_of = |i: LogIndex| self.term(i);
        f(&LogShape { log_start: self.log_start, last_index: self.last_index(), term_of: &term_of })
    }
}

impl LogStore for MemLogStore {
    fn load(&self) -> Result<StoredState, LogError> {
        let s = self.lock();
        s.check_corrupt(LogIndex::ZERO, LogIndex(u64::MAX))?;
        Ok(StoredState {
            hard_state: s.hard_state,
            snapshot: s.snapshot.clone(),
            log_start: s.log_start,
            entries: s.entries.clone(),
        })
    }

    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), LogError> {
        let mut s = self.lock();
        s.with_shape(|shape| check_append(shape, entries))?;
        if let Some(hs) = hard_state {
            s.hard_state = *hs;
        }
        if let Some(first) = entries.first() {
            let keep = (first.index.0 - s.log_start.0.0 - 1) as usize;
            s.entries.truncate(keep);
            s.entries.extend_from_slice(entries);
            s.corrupt.retain(|&i| i < first.index);
        }
        Ok(())
    }

    fn purge(&mut self, upto: LogIndex) -> Result<(), LogError> {
        let mut s = self.lock();
        match s.with_shape(|shape| plan_purge(shape, upto))? {
            PurgePlan::Nothing => {}
            PurgePlan::Delete { upto, term } => {
                let n = (upto.0 - s.log_start.0.0) as usize;
                s.entries.drain(..n);
                s.log_start = (upto, term);
                s.corrupt = s.corrupt.split_off(&upto.next());
            }
        }
        Ok(())
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), LogError> {
        self.lock().snapshot = Some(meta.clone());
        Ok(())
    }

    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), LogError> {
        let mut s = self.lock();
        s.entries.clear();
        s.corrupt.clear();
        s.log_start = (meta.last_index, meta.last_term);
        s.snapshot = Some(meta.clone());
        Ok(())
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError> {
        let s = self.lock();
        if !s.with_shape(|shape| check_range(shape, lo, hi))? {
            return Ok(Vec::new());
        }
        s.check_corrupt(lo, hi)?;
        let from = (lo.0 - s.log_start.0.0 - 1) as usize;
        let to = (hi.0 - s.log_start.0.0 - 1) as usize;
        Ok(s.entries[from..to].to_vec())
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, LogError> {
        Ok(self.lock().term(index))
    }

    fn first_index(&self) -> LogIndex {
        self.lock().log_start.0.next()
    }

    fn last_index(&self) -> LogIndex {
        self.lock().last_index()
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), LogError> {
        check_meta_key(key)?;
        self.lock().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        check_meta_key(key)?;
        Ok(self.lock().meta.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{Harness, entries};

    struct MemHarness;

    impl Harness for MemHarness {
        type Store = MemLogStore;
        fn fresh(&mut self) -> MemLogStore {
            MemLogStore::new()
        }
        fn reopen(&mut self, store: MemLogStore) -> Result<MemLogStore, LogError> {
            // A restart keeps only the shared "disk": drop the node's handle, load anew.
            let disk = store.clone();
            drop(store);
            Ok(disk)
        }
        fn corrupt_entry(&mut self, store: &mut MemLogStore, index: LogIndex) {
            assert!(store.inject_corruption(index), "entry {index} is not stored");
        }
    }

    mod conformance {
        use super::MemHarness;
        crate::conformance_tests!(MemHarness);
    }

    #[test]
    fn clones_share_state_and_forks_do_not() {
        let mut a = MemLogStore::new();
        let b = a.clone();
        let fork = a.fork();
        a.write(None, &entries(1, 3, 1)).unwrap();
        assert_eq!(b.last_index(), LogIndex(3));
        assert_eq!(fork.last_index(), LogIndex(0));
    }

    #[test]
    fn injecting_corruption_needs_a_stored_entry() {
        let mut s = MemLogStore::new();
        s.write(None, &entries(1, 3, 1)).unwrap();
        assert!(!s.inject_corruption(LogIndex(4)));
        assert!(!s.inject_corruption(LogIndex(0)));
        assert!(s.inject_corruption(LogIndex(2)));
    }
}
