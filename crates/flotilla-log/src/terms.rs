//! An in-memory map from index to term, run-length encoded.
//!
//! Terms change rarely (once per election), so a million entries usually take a handful of
//! runs: `term(index)` is a binary search over runs and the cache costs almost no memory.

use flotilla_raft::{LogIndex, Term};

/// The terms of entries `(start, last]`.
///
/// Invariant: `runs` is sorted by first index with strictly increasing terms; every run's
/// first index is in `(start, last]`; `runs` is empty iff `last == start`; and if not empty,
/// `runs[0].0 == start + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TermRuns {
    start: LogIndex,
    last: LogIndex,
    /// `(first index of the run, term)`.
    runs: Vec<(LogIndex, Term)>,
}

impl TermRuns {
    /// An empty map whose next entry will be `start + 1`.
    pub(crate) fn new(start: LogIndex) -> TermRuns {
        TermRuns { start, last: start, runs: Vec::new() }
    }

    /// A map from runs already found, `(first index, term)` in index order, covering
    /// `(start, last]`. Returns `None` if they break the invariant.
    pub(crate) fn from_runs(
        start: LogIndex,
        last: LogIndex,
        runs: Vec<(LogIndex, Term)>,
    ) -> Option<TermRuns> {
        let ordered = runs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let first_ok = match runs.first() {
            Some(&(first, _)) => first == start.next() && last > start,
            None => last == start,
        };
        let inside = runs.iter().all(|&(f, _)| f > start && f <= last);
        (ordered && first_ok && inside).then_some(TermRuns { start, last, runs })
    }

    pub(crate) fn last(&self) -> LogIndex {
        self.last
    }

    /// Records `term` for the entry `last + 1`. The caller has checked that terms do not
    /// decrease.
    pub(crate) fn push(&mut self, term: Term) {
        self.last = self.last.next();
        match self.runs.last() {
            Some(&(_, t)) if t == term => {}
            _ => self.runs.push((self.last, term)),
        }
    }

    /// The term of stored entry `index`, if `start < index <= last`.
    pub(crate) fn get(&self, index: LogIndex) -> Option<Term> {
        if index <= self.start || index > self.last {
            return None;
        }
        // The run holding `index` is the last one starting at or before it.
        let after = self.runs.partition_point(|&(first, _)| first <= index);
        after.checked_sub(1).and_then(|i| self.runs.get(i)).map(|&(_, t)| t)
    }

    /// Forgets every entry with index >= `from` (suffix truncation).
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        if from > self.last {
            return;
        }
        let keep_last = from.prev().max(self.start);
        self.runs.retain(|&(first, _)| first <= keep_last);
        self.last = keep_last;
    }

    /// Forgets every entry with index <= `upto` (prefix purge); `upto <= last`.
    pub(crate) fn purge_to(&mut self, upto: LogIndex) {
        if upto <= self.start {
            return;
        }
        let upto = upto.min(self.last);
        let next = upto.next();
        if upto < self.last {
            // The run that holds `next` now starts there.
            if let Some(term) = self.get(next) {
                let after = self.runs.partition_point(|&(first, _)| first <= next);
                self.runs.drain(..after);
                self.runs.insert(0, (next, term));
            }
        } else {
            self.runs.clear();
        }
        self.start = upto;
    }

    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.runs.is_empty(), self.last == self.start, "{self:?}");
        if let Some(&(first, _)) = self.runs.first() {
            assert_eq!(first, self.start.next(), "{self:?}");
        }
        for w in self.runs.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{self:?}");
        }
        assert!(self.runs.iter().all(|&(f, _)| f > self.start && f <= self.last), "{self:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `TermRuns` against a plain vector model under a fixed pseudo-random workload.
    #[test]
    fn term_runs_match_a_vector_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut runs = TermRuns::new(LogIndex(0));
        // model[i] = term of index start + 1 + i
        let (mut start, mut model) = (0u64, Vec::<u64>::new());
        for step in 0..5_000 {
            match rnd(10) {
                0..=5 => {
                    let base = model.last().copied().unwrap_or(1);
                    let t = base + rnd(2);
                    runs.push(Term(t));
                    model.push(t);
                }
                6..=7 => {
                    let from = start + 1 + rnd(model.len() as u64 + 1);
                    runs.truncate_from(LogIndex(from));
                    model.truncate((from - start - 1) as usize);
                }
                _ => {
                    let upto = start + rnd(model.len() as u64 + 1);
                    runs.purge_to(LogIndex(upto));
                    model.drain(..(upto - start) as usize);
                    start = upto;
                }
            }
            runs.check();
            assert_eq!(runs.last().0, start + model.len() as u64, "step {step}");
            for probe in start.saturating_sub(1)..=start + model.len() as u64 + 1 {
                let want = probe
                    .checked_sub(start + 1)
                    .and_then(|i| model.get(i as usize))
                    .map(|&t| Term(t));
                assert_eq!(runs.get(LogIndex(probe)), want, "step {step} probe {probe}");
            }
        }
    }
}
