//! The durable half of a simulated node: what survives a crash.
//!
//! `flotilla-log` was not ready when the simulator was written, so this is a small
//! in-memory store with the same contract as its `LogStore` (`load`, `write` = truncate
//! from `entries[0].index` then append, `purge`, `reset_to_snapshot`, plus the snapshot's
//! bytes). Every operation checks its request the way a real store would (pair assertions):
//! a refused request means the core asked for something impossible, and the simulator
//! reports it as a violation of the persistence contract.

use std::collections::VecDeque;

use bytes::Bytes;
use flotilla_raft::{Entry, HardState, InitialState, LogIndex, Membership, SnapshotMeta, Term};

/// What a store offers the node runtime. `MemDisk` is the only implementation; the trait
/// keeps the door open for running the simulator against `flotilla_log::MemLogStore`.
pub trait Storage {
    /// Everything needed to rebuild the core after a crash, and the snapshot bytes.
    fn load(&self) -> (InitialState, Option<Bytes>);
    /// Optionally saves the hard state; if `entries` is non-empty, deletes every entry with
    /// index >= `entries[0].index` and appends `entries`. Atomic and durable.
    fn write(&mut self, hs: Option<&HardState>, entries: &[Entry]) -> Result<(), String>;
    /// Deletes entries <= `upto` (a durable snapshot covers them).
    fn purge(&mut self, upto: LogIndex) -> Result<(), String>;
    /// Saves a snapshot built locally (meta and bytes, atomically).
    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: Bytes) -> Result<(), String>;
    /// Replaces the log with an installed snapshot: no entries, log start at the snapshot.
    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta, data: Bytes) -> Result<(), String>;
    /// The durable term at `index` (log start or a stored entry).
    fn term(&self, index: LogIndex) -> Option<Term>;
    fn last_index(&self) -> LogIndex;
    fn hard_state(&self) -> HardState;
    fn snapshot(&self) -> Option<(&SnapshotMeta, &Bytes)>;
}

#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, Bytes)>,
    log_start: (LogIndex, Term),
    /// Invariant: `entries[i].index == log_start.0 + 1 + i`, terms never decrease.
    entries: VecDeque<Entry>,
    /// The initial configuration (empty for a node that joined later). Written once.
    bootstrap: Membership,
}

impl MemDisk {
    pub fn new(bootstrap: Membership) -> MemDisk {
        MemDisk { bootstrap, ..MemDisk::default() }
    }

    fn stored(&self, index: LogIndex) -> Option<&Entry> {
        let off = index.0.checked_sub(self.log_start.0.0 + 1)?;
        self.entries.get(off as usize)
    }
}

impl Storage for MemDisk {
    fn load(&self) -> (InitialState, Option<Bytes>) {
        let init = InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|s| s.0.clone()),
            log_start: self.log_start,
            entries: self.entries.iter().cloned().collect(),
            bootstrap: self.bootstrap.clone(),
            // The runtime sets it when its state machine kept its state (`start_node`).
            applied: LogIndex::ZERO,
        };
        (init, self.snapshot.as_ref().map(|s| s.1.clone()))
    }

    fn write(&mut self, hs: Option<&HardState>, entries: &[Entry]) -> Result<(), String> {
        if let Some(hs) = hs {
            if hs.term < self.hard_state.term {
                return Err(format!(
                    "hard state term goes back {} -> {}",
                    self.hard_state.term, hs.term
                ));
            }
            if hs.term == self.hard_state.term
                && self.hard_state.voted_for.is_some()
                && hs.voted_for != self.hard_state.voted_for
            {
                return Err(format!(
                    "vote changed within term {}: {:?} -> {:?}",
                    hs.term, self.hard_state.voted_for, hs.voted_for
                ));
            }
        }
        if let Some(first) = entries.first() {
            if first.index <= self.log_start.0 || first.index > self.last_index().next() {
                return Err(format!(
                    "append at {} outside ({}, {}]",
                    first.index,
                    self.log_start.0,
                    self.last_index().next()
                ));
            }
            let mut prev = self.term(first.index.prev()).unwrap_or(self.log_start.1);
            for (i, e) in entries.iter().enumerate() {
                if e.index.0 != first.index.0 + i as u64 || e.term < prev {
                    return Err(format!(
                        "append batch not consecutive or term falls at {}",
                        e.index
                    ));
                }
                prev = e.term;
            }
        }
        if let Some(hs) = hs {
            self.hard_state = *hs;
        }
        if let Some(first) = entries.first() {
            let keep = (first.index.0 - self.log_start.0.0 - 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend(entries.iter().cloned());
        }
        Ok(())
    }

    fn purge(&mut self, upto: LogIndex) -> Result<(), String> {
        if upto <= self.log_start.0 {
            return Ok(());
        }
        let covered = self.snapshot.as_ref().is_some_and(|s| s.0.last_index >= upto);
        if !covered {
            return Err(format!("purge to {upto} not covered by a durable snapshot"));
        }
        let Some(term) = self.term(upto) else {
            return Err(format!("purge to {upto} beyond the durable log ({})", self.last_index()));
        };
        let n = (upto.0 - self.log_start.0.0) as usize;
        self.entries.drain(..n);
        self.log_start = (upto, term);
        Ok(())
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: Bytes) -> Result<(), String> {
        if let Some((old, _)) = &self.snapshot
            && old.last_index > meta.last_index
        {
            return Err(format!("snapshot goes back {} -> {}", old.last_index, meta.last_index));
        }
        if self.term(meta.last_index) != Some(meta.last_term) {
            return Err(format!(
                "snapshot at {} term {} does not match the durable log",
                meta.last_index, meta.last_term
            ));
        }
        self.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta, data: Bytes) -> Result<(), String> {
        self.entries.clear();
        self.log_start = (meta.last_index, meta.last_term);
        self.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.log_start.0 {
            return Some(self.log_start.1);
        }
        if let Some((m, _)) = &self.snapshot
            && m.last_index == index
        {
            return Some(m.last_term);
        }
        self.stored(index).map(|e| e.term)
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.log_start.0.0 + self.entries.len() as u64)
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot(&self) -> Option<(&SnapshotMeta, &Bytes)> {
        self.snapshot.as_ref().map(|(m, b)| (m, b))
    }
}
