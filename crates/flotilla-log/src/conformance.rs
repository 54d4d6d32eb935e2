//! The storage conformance suite: every [`LogStore`] must pass all of it.
//!
//! A store plugs in through a [`Harness`] (how to make a fresh store, how to restart one, how
//! to damage an entry), then [`crate::conformance_tests!`] expands to one `#[test]` per case:
//!
//! ```ignore
//! mod conformance {
//!     flotilla_log::conformance_tests!(MyHarness::new());
//! }
//! ```
//!
//! Each case panics with a message naming what differed. Cases are public so that a store
//! can also run one on its own while debugging.

use bytes::Bytes;
use flotilla_raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term,
};

use crate::error::LogError;
use crate::store::{LogStore, StoredState};

/// How the suite drives one kind of store.
pub trait Harness {
    type Store: LogStore;
    /// A new, empty store.
    fn fresh(&mut self) -> Self::Store;
    /// A restart: drop `store` and open it again from what it made durable.
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, LogError>;
    /// Damages the stored bytes of entry `index` (which is stored) so that verifying it must
    /// fail.
    fn corrupt_entry(&mut self, store: &mut Self::Store, index: LogIndex);
}

/// Expands to one `#[test]` per conformance case, each with a fresh harness from `$harness`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            fresh_store_is_empty,
            append_and_read_back,
            hard_state_alone_is_durable,
            overwrite_truncates_the_suffix,
            invalid_writes_are_refused_and_change_nothing,
            range_reads_check_their_bounds,
            purge_deletes_a_prefix,
            purge_of_everything_leaves_an_empty_log_that_continues,
            reset_to_snapshot_drops_every_entry,
            snapshot_meta_is_durable_and_replaced,
            meta_blobs_are_durable_and_separate,
            payload_kinds_and_sizes_round_trip,
            random_operations_match_a_model_across_reopens,
            corrupt_entry_is_reported_naming_its_index,
            overwriting_a_corrupt_entry_heals_it,
        );
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let mut harness = $harness;
                $crate::conformance::$case(&mut harness);
            }
        )+
    };
}

/// The entry the suite stores at `index` in `term`: its bytes depend on both, so a stale
/// entry is never mistaken for a new one.
pub fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 7 {
        0 => EntryPayload::Noop,
        3 => EntryPayload::Config(Membership::with_voters([NodeId(1), NodeId(term % 5 + 2)])),
        _ => EntryPayload::Command(Bytes::from(format!("cmd {index} @ {term}").into_bytes())),
    };
    Entry { term: Term(term), index: LogIndex(index), payload }
}

/// Entries `from..=to`, all in `term`.
pub fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term: Term(term), voted_for: vote.map(NodeId), commit: LogIndex(commit) }
}

fn snap(last_index: u64, last_term: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index: LogIndex(last_index),
        last_term: Term(last_term),
        membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
    }
}

fn reopen<H: Harness>(h: &mut H, store: H::Store) -> H::Store {
    match h.reopen(store) {
        Ok(s) => s,
        Err(e) => panic!("reopen failed: {e}"),
    }
}

fn load<S: LogStore>(s: &S) -> StoredState {
    match s.load() {
        Ok(state) => state,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn ok<T>(r: Result<T, LogError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Checks every read path of `s` against the expected state.
fn assert_state<S: LogStore>(s: &S, want: &StoredState, ctx: &str) {
    let got = load(s);
    assert_eq!(got, *want, "{ctx}: load()");
    let (start, start_term) = want.log_start;
    let last = want.last_index();
    assert_eq!(s.first_index(), start.next(), "{ctx}: first_index()");
    assert_eq!(s.last_index(), last, "{ctx}: last_index()");
    assert_eq!(ok(s.term(start), "term"), Some(start_term), "{ctx}: term(log_start)");
    if start.0 > 0 {
        assert_eq!(ok(s.term(start.prev()), "term"), None, "{ctx}: term(log_start - 1)");
    }
    assert_eq!(ok(s.term(last.next()), "term"), None, "{ctx}: term(last + 1)");
    for e in &want.entries {
        assert_eq!(ok(s.term(e.index), "term"), Some(e.term), "{ctx}: term({})", e.index);
    }
    let all = ok(s.entries(start.next(), last.next()), "entries(first, last + 1)");
    assert_eq!(all, want.entries, "{ctx}: entries(first, last + 1)");
}

/// The expected state after writing `entries` onto `state` (the contract of `write`).
fn apply_write(state: &mut StoredState, hard: Option<&HardState>, new: &[Entry]) {
    if let Some(h) = hard {
        state.hard_state = *h;
    }
    if let Some(first) = new.first() {
        let keep = (first.index.0 - state.log_start.0.0 - 1) as usize;
        state.entries.truncate(keep);
        state.entries.extend_from_slice(new);
    }
}

fn write<S: LogStore>(s: &mut S, hard: Option<&HardState>, new: &[Entry]) {
    ok(s.write(hard, new), "write");
}

pub fn fresh_store_is_empty<H: Harness>(h: &mut H) {
    let s = h.fresh();
    assert_state(&s, &StoredState::default(), "fresh");
    assert_eq!(s.first_index(), LogIndex(1));
    assert_eq!(s.last_index(), LogIndex(0));
    assert_eq!(ok(s.term(LogIndex(0)), "term"), Some(Term(0)));
    assert_eq!(ok(s.term(LogIndex(1)), "term"), None);
    assert_eq!(ok(s.get_meta("anything"), "get_meta"), None);
    let s = reopen(h, s);
    assert_state(&s, &StoredState::default(), "fresh, reopened");
}

pub fn append_and_read_back<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let hard = hs(1, Some(1), 0);
    let batch = entries(1, 5, 1);
    write(&mut s, Some(&hard), &batch);
    apply_write(&mut want, Some(&hard), &batch);
    assert_state(&s, &want, "after 1..=5");

    // A later append without a hard state keeps the saved one.
    let batch = entries(6, 8, 2);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    assert_state(&s, &want, "after 6..=8");
    assert_eq!(ok(s.entries(LogIndex(3), LogIndex(7)), "entries"), want.entries[2..6].to_vec());
    assert_eq!(ok(s.entries(LogIndex(8), LogIndex(9)), "entries"), vec![entry(8, 2)]);

    let s = reopen(h, s);
    assert_state(&s, &want, "reopened");
}

pub fn hard_state_alone_is_durable<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let batch = entries(1, 3, 1);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    for (i, hard) in [hs(2, None, 0), hs(2, Some(3), 1), hs(5, Some(1), 3)].iter().enumerate() {
        write(&mut s, Some(hard), &[]);
        apply_write(&mut want, Some(hard), &[]);
        s = reopen(h, s);
        assert_state(&s, &want, &format!("hard state #{i}, reopened"));
    }
    // An empty write changes nothing.
    write(&mut s, None, &[]);
    assert_state(&s, &want, "empty write");
}

pub fn overwrite_truncates_the_suffix<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let steps: &[(u64, u64, u64)] = &[
        (1, 10, 1), // append 1..=10 in term 1
        (6, 7, 2),  // conflict at 6: 8..=10 must go
        (8, 8, 2),  // append right after; the old 8 must not come back
        (3, 3, 3),  // a one-entry overwrite deep in the log
        (4, 12, 3), // append past every earlier last index
        (13, 13, 3),
        (13, 14, 4), // overwrite the last entry
    ];
    for (i, &(from, to, term)) in steps.iter().enumerate() {
        let batch = entries(from, to, term);
        write(&mut s, None, &batch);
        apply_write(&mut want, None, &batch);
        assert_state(&s, &want, &format!("step #{i} ({from}..={to} @ {term})"));
        if i % 2 == 1 {
            s = reopen(h, s);
            assert_state(&s, &want, &format!("step #{i}, reopened"));
        }
    }
}

pub fn invalid_writes_are_refused_and_change_nothing<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let batch: Vec<Entry> = [entries(1, 4, 1), entries(5, 8, 3)].concat();
    write(&mut s, Some(&hs(3, None, 0)), &batch);
    apply_write(&mut want, Some(&hs(3, None, 0)), &batch);
    ok(s.purge(LogIndex(2)), "purge");
    want.entries.drain(..2);
    want.log_start = (LogIndex(2), Term(1));

    let mut skip = entries(3, 4, 1);
    skip[1].index = LogIndex(5);
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("a gap after the last index", entries(10, 11, 3)),
        ("an index at the log start", entries(2, 3, 1)),
        ("an index before the log start", entries(1, 3, 1)),
        ("an index of zero", vec![entry(0, 1)]),
        ("non-consecutive indexes", skip),
        ("a decreasing term in the batch", [entries(9, 9, 3), entries(10, 10, 2)].concat()),
        ("a term below the previous entry's", entries(9, 9, 2)),
        ("a term below the one it follows (overwrite)", entries(6, 6, 2)),
    ];
    for (what, batch) in cases {
        match s.write(Some(&hs(9, Some(9), 9)), &batch) {
            Err(e @ LogError::Invalid { .. }) => assert!(!e.is_fatal(), "{what}: {e}"),
            other => panic!("{what}: expected LogError::Invalid, got {other:?}"),
        }
        assert_state(&s, &want, what);
    }
    s = reopen(h, s);
    assert_state(&s, &want, "refusals, reopened");
}

pub fn range_reads_check_their_bounds<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    write(&mut s, None, &entries(1, 10, 1));
    ok(s.purge(LogIndex(3)), "purge");
    let e = |lo, hi| s.entries(LogIndex(lo), LogIndex(hi));
    assert_eq!(ok(e(4, 4), "entries"), vec![], "empty range at first");
    assert_eq!(ok(e(11, 11), "entries"), vec![], "empty range after last");
    assert_eq!(ok(e(7, 5), "entries"), vec![], "reversed range");
    assert_eq!(ok(e(4, 11), "entries"), entries(4, 10, 1));
    assert_eq!(ok(e(10, 11), "entries"), entries(10, 10, 1));
    match e(3, 5) {
        Err(LogError::Compacted { requested, first }) => {
            assert_eq!((requested, first), (LogIndex(3), LogIndex(4)));
        }
        other => panic!("entries(3, 5) after purge(3): expected Compacted, got {other:?}"),
    }
    match e(9, 12) {
        Err(LogError::OutOfRange { .. }) => {}
        other => panic!("entries(9, 12) with last 10: expected OutOfRange, got {other:?}"),
    }
}

pub fn purge_deletes_a_prefix<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let batch: Vec<Entry> = [entries(1, 3, 1), entries(4, 6, 2), entries(7, 10, 3)].concat();
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);

    ok(s.purge(LogIndex(4)), "purge(4)");
    want.entries.drain(..4);
    want.log_start = (LogIndex(4), Term(2));
    assert_state(&s, &want, "after purge(4)");

    // At or before the start: a no-op.
    ok(s.purge(LogIndex(4)), "purge(4) again");
    ok(s.purge(LogIndex(1)), "purge(1)");
    assert_state(&s, &want, "after stale purges");

    // Beyond the last index: refused.
    match s.purge(LogIndex(11)) {
        Err(LogError::Invalid { .. }) => {}
        other => panic!("purge(11) with last 10: expected Invalid, got {other:?}"),
    }
    assert_state(&s, &want, "after refused purge");

    // A purge is durable once a later write is.
    write(&mut s, Some(&hs(3, None, 6)), &[]);
    want.hard_state = hs(3, None, 6);
    s = reopen(h, s);
    assert_state(&s, &want, "purge(4), reopened");

    ok(s.purge(LogIndex(7)), "purge(7)");
    want.entries.drain(..3);
    want.log_start = (LogIndex(7), Term(3));
    let batch = entries(11, 12, 3);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    s = reopen(h, s);
    assert_state(&s, &want, "purge(7) + append, reopened");
}

pub fn purge_of_everything_leaves_an_empty_log_that_continues<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    write(&mut s, None, &entries(1, 5, 2));
    ok(s.purge(LogIndex(5)), "purge(5)");
    want.log_start = (LogIndex(5), Term(2));
    assert_state(&s, &want, "after purging everything");
    // The next entry may not go below the start's term.
    assert!(matches!(s.write(None, &entries(6, 6, 1)), Err(LogError::Invalid { .. })));
    let batch = entries(6, 7, 2);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    s = reopen(h, s);
    assert_state(&s, &want, "appended after an empty log, reopened");
}

pub fn reset_to_snapshot_drops_every_entry<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let hard = hs(4, Some(2), 5);
    write(&mut s, Some(&hard), &entries(1, 5, 1));

    // A snapshot far ahead of the log.
    let meta = snap(20, 4);
    ok(s.reset_to_snapshot(&meta), "reset_to_snapshot(20)");
    let mut want = StoredState {
        hard_state: hard,
        snapshot: Some(meta.clone()),
        log_start: (LogIndex(20), Term(4)),
        entries: vec![],
    };
    assert_state(&s, &want, "after reset to 20");
    assert_eq!(ok(s.term(LogIndex(5)), "term"), None);
    s = reopen(h, s);
    assert_state(&s, &want, "reset to 20, reopened");
    assert!(matches!(s.write(None, &entries(21, 21, 3)), Err(LogError::Invalid { .. })));
    let batch = entries(21, 23, 4);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    assert_state(&s, &want, "append after reset");

    // A snapshot inside the stored log still drops every entry (the contract).
    let meta = snap(22, 4);
    ok(s.reset_to_snapshot(&meta), "reset_to_snapshot(22)");
    want.snapshot = Some(meta);
    want.log_start = (LogIndex(22), Term(4));
    want.entries.clear();
    s = reopen(h, s);
    assert_state(&s, &want, "reset to 22 inside the log, reopened");
}

pub fn snapshot_meta_is_durable_and_replaced<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let batch = entries(1, 9, 1);
    write(&mut s, None, &batch);
    apply_write(&mut want, None, &batch);
    for (i, meta) in [snap(4, 1), snap(8, 1)].into_iter().enumerate() {
        ok(s.save_snapshot_meta(&meta), "save_snapshot_meta");
        want.snapshot = Some(meta);
        s = reopen(h, s);
        assert_state(&s, &want, &format!("snapshot #{i}, reopened"));
    }
}

pub fn meta_blobs_are_durable_and_separate<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let hard = hs(7, Some(1), 0);
    write(&mut s, Some(&hard), &entries(1, 2, 7));
    ok(s.put_meta("bootstrap_membership", b"voters 1 2 3"), "put_meta");
    ok(s.put_meta("empty", b""), "put_meta");
    // User keys that look like the store's own record names must not clobber them.
    for key in ["hard_state", "log_start", "snapshot", "identity"] {
        ok(s.put_meta(key, b"\xff garbage"), "put_meta");
    }
    ok(s.put_meta("bootstrap_membership", b"voters 1 2 3 4"), "put_meta overwrite");
    for bad in ["", &"k".repeat(crate::MAX_META_KEY_BYTES + 1)] {
        assert!(matches!(s.put_meta(bad, b"x"), Err(LogError::Invalid { .. })), "key {bad:?}");
    }
    let s = reopen(h, s);
    let got = |k: &str| ok(s.get_meta(k), "get_meta");
    assert_eq!(got("bootstrap_membership").as_deref(), Some(&b"voters 1 2 3 4"[..]));
    assert_eq!(got("empty").as_deref(), Some(&b""[..]));
    assert_eq!(got("hard_state").as_deref(), Some(&b"\xff garbage"[..]));
    assert_eq!(got("missing"), None);
    let state = load(&s);
    assert_eq!(state.hard_state, hard, "put_meta must not touch the hard state");
    assert_eq!(state.log_start, (LogIndex(0), Term(0)));
    assert_eq!(state.entries, entries(1, 2, 7));
}

pub fn payload_kinds_and_sizes_round_trip<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let big: Vec<u8> =
        (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut joint = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    joint.outgoing = Some([NodeId(1), NodeId(4)].into_iter().collect());
    joint.learners.insert(NodeId(9));
    let batch = vec![
        Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Noop },
        Entry { term: Term(1), index: LogIndex(2), payload: EntryPayload::Command(Bytes::new()) },
        Entry {
            term: Term(1),
            index: LogIndex(3),
            payload: EntryPayload::Command(Bytes::from(big)),
        },
        Entry { term: Term(1), index: LogIndex(4), payload: EntryPayload::Config(joint) },
        Entry { term: Term(u64::MAX), index: LogIndex(5), payload: EntryPayload::Noop },
    ];
    write(&mut s, None, &batch);
    let want = StoredState { entries: batch, ..StoredState::default() };
    assert_state(&s, &want, "payload kinds");
    let s = reopen(h, s);
    assert_state(&s, &want, "payload kinds, reopened");
}

/// A seeded random walk over every operation, checked against a plain model after each
/// step and across reopens.
pub fn random_operations_match_a_model_across_reopens<H: Harness>(h: &mut H) {
    const STEPS: usize = 300;
    let mut rng = XorShift(0x5eed_f107_111a_0001);
    let mut s = h.fresh();
    let mut want = StoredState::default();
    let mut term = 1u64;
    for step in 0..STEPS {
        let ctx = format!("step {step}");
        let last = want.last_index().0;
        let start = want.log_start.0.0;
        match rng.below(100) {
            0..=44 => {
                // Append or overwrite: start anywhere in (log_start, last + 1].
                let from = start + 1 + rng.below(last - start + 1);
                let to = from + rng.below(8);
                if rng.below(4) == 0 {
                    term += 1;
                }
                let batch = entries(from, to, term);
                let hard = (rng.below(3) == 0).then(|| hs(term, Some(rng.below(5)), from - 1));
                write(&mut s, hard.as_ref(), &batch);
                apply_write(&mut want, hard.as_ref(), &batch);
            }
            45..=59 => {
                let upto = rng.below(last + 2);
                let r = s.purge(LogIndex(upto));
                if upto > last {
                    assert!(matches!(r, Err(LogError::Invalid { .. })), "{ctx}: purge({upto})");
                } else {
                    ok(r, "purge");
                    if upto > start {
                        let cut = (upto - start) as usize;
                        let t = want.entries[cut - 1].term;
                        want.entries.drain(..cut);
                        want.log_start = (LogIndex(upto), t);
                    }
                }
            }
            60..=64 => {
                let meta = snap(last + rng.below(5), term);
                ok(s.reset_to_snapshot(&meta), "reset_to_snapshot");
                want.log_start = (meta.last_index, meta.last_term);
                want.entries.clear();
                want.snapshot = Some(meta);
            }
            65..=72 => {
                let meta = snap(rng.below(last + 1), term);
                ok(s.save_snapshot_meta(&meta), "save_snapshot_meta");
                want.snapshot = Some(meta);
            }
            73..=84 => {
                // A durable write makes earlier lazy purges durable, then restart.
                let hard = hs(term, None, start);
                write(&mut s, Some(&hard), &[]);
                want.hard_state = hard;
                s = reopen(h, s);
            }
            _ => {
                let lo = start + 1 + rng.below(last - start + 1);
                let hi = lo + rng.below(last + 2 - lo);
                let got = ok(s.entries(LogIndex(lo), LogIndex(hi)), "entries");
                let from = (lo - start - 1) as usize;
                let to = (hi - start - 1) as usize;
                assert_eq!(got, want.entries[from..to], "{ctx}: entries({lo}, {hi})");
            }
        }
        assert_state(&s, &want, &ctx);
    }
}

pub fn corrupt_entry_is_reported_naming_its_index<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    write(&mut s, None, &entries(1, 10, 1));
    h.corrupt_entry(&mut s, LogIndex(6));
    let expect_corrupt_6 = |r: Result<Vec<Entry>, LogError>, what: &str| match r {
        Err(LogError::Corrupt { index, ref reason }) => {
            assert_eq!(index, LogIndex(6), "{what}: wrong index ({reason})");
        }
        other => panic!("{what}: expected Corrupt at 6, got {other:?}"),
    };
    expect_corrupt_6(s.entries(LogIndex(5), LogIndex(8)), "entries(5, 8)");
    expect_corrupt_6(s.entries(LogIndex(6), LogIndex(7)), "entries(6, 7)");
    expect_corrupt_6(s.load().map(|st| st.entries), "load()");
    // Reads that do not touch the damage still work.
    assert_eq!(ok(s.entries(LogIndex(1), LogIndex(6)), "entries"), entries(1, 5, 1));
    assert_eq!(ok(s.entries(LogIndex(7), LogIndex(11)), "entries"), entries(7, 10, 1));
    // After a restart the damage is reported by open or by load, never hidden.
    match h.reopen(s) {
        Err(LogError::Corrupt { index, .. }) => assert_eq!(index, LogIndex(6), "reopen"),
        Err(other) => panic!("reopen: expected Corrupt at 6, got {other}"),
        Ok(s) => expect_corrupt_6(s.load().map(|st| st.entries), "load() after reopen"),
    }
}

pub fn overwriting_a_corrupt_entry_heals_it<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    write(&mut s, None, &entries(1, 10, 1));
    h.corrupt_entry(&mut s, LogIndex(8));
    write(&mut s, None, &entries(7, 8, 2));
    let mut want = StoredState::default();
    apply_write(&mut want, None, &entries(1, 10, 1));
    apply_write(&mut want, None, &entries(7, 8, 2));
    assert_state(&s, &want, "after overwriting 7..=8");
    h.corrupt_entry(&mut s, LogIndex(3));
    ok(s.purge(LogIndex(3)), "purge(3)");
    want.entries.drain(..3);
    want.log_start = (LogIndex(3), Term(1));
    let s = reopen(h, s);
    assert_state(&s, &want, "after purging a corrupt entry, reopened");
}

/// A small deterministic generator (xorshift64), so the suite needs no RNG crate.
struct XorShift(u64);

impl XorShift {
    /// A value in `0..n` (`n >= 1`).
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
