//! The core's view of the log: every entry since the last purge, in memory.
//!
//! The runtime's store holds the same entries durably; the core keeps them in memory so it
//! never performs I/O. Entries are cheap to clone (`Bytes` payloads). The log is bounded by
//! compaction: once a snapshot covers a prefix the runtime purges it here and on disk.

use std::collections::VecDeque;

use crate::membership::Membership;
use crate::types::{Entry, EntryPayload, LogIndex, SnapshotMeta, Term};

#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    /// The index and term just before `entries[0]`.
    /// Invariant: `start.0 <= snapshot.last_index` unless no snapshot exists (then start is
    /// (0, 0) or what a purge left).
    pub(crate) start: (LogIndex, Term),
    /// Invariant: `entries[i].index == start.0 + 1 + i`, terms never decrease.
    pub(crate) entries: VecDeque<Entry>,
    /// The latest snapshot this node holds (installed or built).
    pub(crate) snapshot: SnapshotMeta,
    /// Invariant: `committed <= last_index()` and never decreases.
    pub(crate) committed: LogIndex,
    /// Entries up to here have been handed out in `Apply` (or are covered by the snapshot).
    /// Invariant: `applied <= committed` and `applied <= stable`.
    pub(crate) applied: LogIndex,
    /// Entries up to here are durable on this node (reported by the runtime).
    /// Invariant: `stable <= last_index()`.
    pub(crate) stable: LogIndex,
    /// Entries from here on have not yet been handed out in an `AppendLog` command.
    pub(crate) unpersisted_from: LogIndex,
    /// Indexes of the configuration entries in `entries`, ascending, so that finding the
    /// configuration in force at an index (at every snapshot) does not scan the whole log.
    /// Invariant: exactly the indexes of the `EntryPayload::Config` entries in `entries`.
    pub(crate) config_indexes: VecDeque<LogIndex>,
}

fn is_config(e: &Entry) -> bool {
    matches!(e.payload, EntryPayload::Config(_))
}

impl RaftLog {
    pub(crate) fn new(
        start: (LogIndex, Term),
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
    ) -> Self {
        let last = LogIndex(start.0.0 + entries.len() as u64);
        let applied = snapshot.last_index.max(start.0);
        let config_indexes = entries.iter().filter(|e| is_config(e)).map(|e| e.index).collect();
        RaftLog {
            start,
            entries: entries.into(),
            snapshot,
            committed: applied,
            applied,
            stable: last,
            unpersisted_from: last.next(),
            config_indexes,
        }
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.start.0.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.start.0.0 + self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.start.1, |e| e.term)
    }

    /// The term of the entry at `index`, if this node still knows it.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.start.0 {
            return Some(self.start.1);
        }
        if index == self.snapshot.last_index {
            return Some(self.snapshot.last_term);
        }
        if index < self.start.0 || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index.0 - self.start.0.0 - 1) as usize].term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.start.0 || index > self.last_index() {
            return None;
        }
        self.entries.get((index.0 - self.start.0.0 - 1) as usize)
    }

    /// True if our log contains an entry at `index` with `term`.
    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: is a log ending at (last_term, last_index) at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in `lo..=hi`, stopping once `max_bytes` is reached (always at least one).
    pub(crate) fn slice(&self, lo: LogIndex, hi: LogIndex, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = lo;
        while i <= hi {
            let Some(e) = self.entry(i) else { break };
            bytes += e.approx_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i = i.next();
        }
        out
    }

    /// Leader path: append fresh entries at the tail.
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        if is_config(&entry) {
            self.config_indexes.push_back(entry.index);
        }
        self.entries.push_back(entry);
    }

    /// Follower path: drop every entry with index >= `from` (a conflicting suffix).
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.committed,
            "truncating committed entry {} (commit {})",
            from,
            self.committed
        );
        let keep = (from.0 - self.start.0.0 - 1) as usize;
        self.entries.truncate(keep);
        while self.config_indexes.back().is_some_and(|i| *i >= from) {
            self.config_indexes.pop_back();
        }
        if self.stable >= from {
            self.stable = from.prev();
        }
        if self.unpersisted_from > from {
            self.unpersisted_from = from;
        }
    }

    /// Entries not yet handed to the runtime for persistence.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.unpersisted_from;
        if from > self.last_index() {
            return Vec::new();
        }
        self.unpersisted_from = self.last_index().next();
        self.slice(from, self.last_index(), usize::MAX)
    }

    /// Takes entries up to `upto` (inclusive) out of the log and returns them, so the
    /// caller decides where they are freed (see [`crate::Command::Release`]).
    pub(crate) fn purge(&mut self, upto: LogIndex) -> VecDeque<Entry> {
        if upto <= self.start.0 {
            return VecDeque::new();
        }
        let upto = upto.min(self.applied);
        let Some(term) = self.term(upto) else { return VecDeque::new() };
        let n = ((upto.0 - self.start.0.0) as usize).min(self.entries.len());
        // Moves only the kept tail; the purged prefix leaves in its own allocation.
        let kept = self.entries.split_off(n);
        self.start = (upto, term);
        while self.config_indexes.front().is_some_and(|i| *i <= upto) {
            self.config_indexes.pop_front();
        }
        std::mem::replace(&mut self.entries, kept)
    }

    /// Replaces everything with an installed snapshot; returns the entries that were held.
    pub(crate) fn reset_to_snapshot(&mut self, meta: SnapshotMeta) -> VecDeque<Entry> {
        let released = std::mem::take(&mut self.entries);
        self.config_indexes.clear();
        self.start = (meta.last_index, meta.last_term);
        self.committed = self.committed.max(meta.last_index);
        self.applied = meta.last_index;
        self.stable = meta.last_index;
        self.unpersisted_from = meta.last_index.next();
        self.snapshot = meta;
        released
    }

    /// The latest configuration in the log at or below `upto`, else the snapshot's.
    pub(crate) fn membership_at(&self, upto: LogIndex) -> Option<(LogIndex, Membership)> {
        let hi = upto.min(self.last_index());
        let i = *self.config_indexes.iter().rev().find(|i| **i <= hi)?;
        match self.entry(i) {
            Some(Entry { payload: EntryPayload::Config(m), .. }) => Some((i, m.clone())),
            _ => None,
        }
    }

    /// First index of the term of the entry at `index`, within memory (for the follower's
    /// rejection hint). Terms never decrease along the log, so a binary search finds it: a
    /// conflict in a million-entry single-term log costs 20 steps, not a million.
    pub(crate) fn first_index_of_term(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else { return index };
        if index < self.first_index() {
            return index;
        }
        let below = self.entries.partition_point(|e| e.term < term);
        LogIndex(self.start.0.0 + 1 + below as u64).min(index)
    }

    /// The last index whose term is <= `term` (for the leader side of fast back-off), by
    /// binary search as above.
    pub(crate) fn last_index_of_term_at_most(&self, term: Term) -> Option<LogIndex> {
        match self.entries.partition_point(|e| e.term <= term) {
            0 if self.start.1 <= term => Some(self.start.0),
            0 => None,
            n => Some(LogIndex(self.start.0.0 + n as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;
    use bytes::Bytes;

    fn config(n: u64) -> EntryPayload {
        EntryPayload::Config(Membership::with_voters((1..=n).map(NodeId)))
    }

    fn entry(index: u64, payload: EntryPayload) -> Entry {
        Entry { term: Term(1), index: LogIndex(index), payload }
    }

    /// The scans the binary searches replaced, as references.
    fn first_index_of_term_by_scan(log: &RaftLog, index: LogIndex) -> LogIndex {
        let Some(term) = log.term(index) else { return index };
        let mut i = index;
        while i > log.first_index() && log.term(i.prev()) == Some(term) {
            i = i.prev();
        }
        i
    }

    fn last_index_of_term_at_most_by_scan(log: &RaftLog, term: Term) -> Option<LogIndex> {
        let mut i = log.last_index();
        while i > log.start.0 {
            let t = log.term(i)?;
            if t <= term {
                return Some(i);
            }
            i = i.prev();
        }
        if log.start.1 <= term { Some(log.start.0) } else { None }
    }

    /// The binary searches agree with a scan on logs of random term runs, with and without
    /// a purged prefix, at every index and term around them.
    #[test]
    fn term_searches_agree_with_a_scan() {
        let mut rng = crate::rng::Rng::new(7);
        // A number in lo..hi.
        let mut range = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo);
        for case in 0..300 {
            let start = range(0, 5);
            let start_term = range(0, 3);
            let mut term = start_term.max(1);
            let mut entries = Vec::new();
            for i in 0..range(0, 40) {
                if range(0, 4) == 0 {
                    term += range(1, 3);
                }
                let payload = EntryPayload::Command(Bytes::from_static(b"x"));
                entries.push(Entry { term: Term(term), index: LogIndex(start + 1 + i), payload });
            }
            // The snapshot is at the start or, as after a purge that kept a tail of covered
            // entries, inside the log.
            let at = range(0, entries.len() as u64 + 1);
            let snapshot = SnapshotMeta {
                last_index: LogIndex(start + at),
                last_term: if at == 0 { Term(start_term) } else { entries[at as usize - 1].term },
                membership: Membership::with_voters([NodeId(1)]),
            };
            let log = RaftLog::new((LogIndex(start), Term(start_term)), snapshot, entries);
            for i in 0..=log.last_index().0 + 2 {
                let i = LogIndex(i);
                let want = first_index_of_term_by_scan(&log, i);
                assert_eq!(log.first_index_of_term(i), want, "case {case}, index {i}");
            }
            for t in 0..=term + 2 {
                let want = last_index_of_term_at_most_by_scan(&log, Term(t));
                assert_eq!(log.last_index_of_term_at_most(Term(t)), want, "case {case}, term {t}");
            }
        }
    }

    fn voters_at(log: &RaftLog, upto: u64) -> Option<(u64, usize)> {
        log.membership_at(LogIndex(upto)).map(|(i, m)| (i.0, m.len()))
    }

    /// The configuration in force at an index comes from the config index, and the index
    /// follows appends, truncations, purges and snapshot installs.
    #[test]
    fn the_configuration_at_an_index_follows_every_change_to_the_log() {
        // 1: config of 3 voters, 2..=4 commands, 5: config of 4, 6: command.
        let payload = |i: u64| match i {
            1 => config(3),
            5 => config(4),
            _ => EntryPayload::Command(Bytes::from_static(b"x")),
        };
        let mut log = RaftLog::new(
            (LogIndex(0), Term(0)),
            SnapshotMeta::default(),
            (1..=4).map(|i| entry(i, payload(i))).collect(),
        );
        log.append(entry(5, payload(5)));
        log.append(entry(6, payload(6)));
        assert_eq!(voters_at(&log, 4), Some((1, 3)));
        assert_eq!(voters_at(&log, 5), Some((5, 4)));
        assert_eq!(voters_at(&log, 99), Some((5, 4)), "capped at the last index");

        log.truncate_from(LogIndex(5));
        assert_eq!(voters_at(&log, 99), Some((1, 3)), "a truncated config no longer counts");
        log.append(entry(5, payload(6)));
        log.append(entry(6, config(5)));
        assert_eq!(voters_at(&log, 6), Some((6, 5)));
        assert_eq!(voters_at(&log, 5), Some((1, 3)), "5 is a command now, not a config");

        log.committed = LogIndex(6);
        log.applied = LogIndex(6);
        log.stable = LogIndex(6);
        let released = log.purge(LogIndex(2));
        assert_eq!(released.len(), 2);
        assert_eq!(voters_at(&log, 5), None, "the first config left with the purge");
        assert_eq!(voters_at(&log, 6), Some((6, 5)));

        log.reset_to_snapshot(SnapshotMeta {
            last_index: LogIndex(10),
            last_term: Term(2),
            membership: Membership::with_voters([NodeId(1)]),
        });
        assert_eq!(voters_at(&log, 10), None, "after an install the snapshot's config rules");
        assert!(log.config_indexes.is_empty());
    }
}
