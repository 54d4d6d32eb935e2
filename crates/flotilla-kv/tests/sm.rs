//! The KV state machine against a real fjall database in a temp dir.

use std::io::{self, Read};

use bytes::Bytes;
use fjall::Database;
use flotilla_kv::{ClientSeq, KvCommand, KvOp, KvResponse, KvStateMachine, SessionLimits};
use flotilla_node::StateMachine;
use flotilla_raft::{Entry, EntryPayload, LogIndex, SnapshotMeta, Term};
use tempfile::TempDir;

fn open_db(dir: &TempDir) -> Database {
    Database::builder(dir.path()).open().unwrap()
}

fn fresh() -> (TempDir, KvStateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let sm = KvStateMachine::open(open_db(&dir)).unwrap();
    (dir, sm)
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()) }
}

fn del(key: &str) -> KvOp {
    KvOp::Delete { key: key.into() }
}

fn cas(key: &str, expected: Option<&str>, value: &str) -> KvOp {
    KvOp::Cas {
        key: key.into(),
        expected: expected.map(|e| Bytes::copy_from_slice(e.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn entry(index: u64, payload: EntryPayload) -> Entry {
    Entry { term: Term(1), index: LogIndex(index), payload }
}

fn command(index: u64, op: KvOp, session: Option<(u64, u64)>, ts_ms: u64) -> Entry {
    let session = session.map(|(client, seq)| ClientSeq { client, seq });
    entry(index, EntryPayload::Command(KvCommand { session, ts_ms, op }.encode()))
}

/// Applies one command as the next entry and decodes the answer.
fn step(sm: &mut KvStateMachine, op: KvOp, session: Option<(u64, u64)>, ts_ms: u64) -> KvResponse {
    let index = sm.applied_index().0 + 1;
    let answers = sm.apply(&[command(index, op, session, ts_ms)]).unwrap();
    KvResponse::decode(answers[0].as_ref().unwrap()).unwrap()
}

fn get(sm: &KvStateMachine, key: &str) -> Option<String> {
    sm.reader().get(key.as_bytes()).unwrap().map(|v| String::from_utf8(v.to_vec()).unwrap())
}

fn snapshot_bytes(sm: &mut KvStateMachine) -> Vec<u8> {
    let mut source = sm.snapshot().unwrap();
    let mut out = Vec::new();
    source.write_to(&mut out).unwrap();
    out
}

fn meta(index: LogIndex) -> SnapshotMeta {
    SnapshotMeta { last_index: index, last_term: Term(1), ..Default::default() }
}

#[test]
fn put_get_delete() {
    let (_dir, mut sm) = fresh();
    assert_eq!(
        step(&mut sm, put("k", "v"), None, 1),
        KvResponse::Put { index: LogIndex(1), term: Term(1) }
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("v"));
    assert_eq!(
        step(&mut sm, del("k"), None, 1),
        KvResponse::Delete { index: LogIndex(2), term: Term(1), deleted: true }
    );
    assert_eq!(get(&sm, "k"), None);
    assert_eq!(
        step(&mut sm, del("k"), None, 1),
        KvResponse::Delete { index: LogIndex(3), term: Term(1), deleted: false }
    );
    assert_eq!(sm.applied_index(), LogIndex(3));
    assert_eq!(sm.reader().read(b"k").unwrap(), (None, LogIndex(3)));
}

#[test]
fn values_are_binary_safe() {
    let (_dir, mut sm) = fresh();
    let value = Bytes::from((0..=255u8).collect::<Vec<_>>());
    step(&mut sm, KvOp::Put { key: "bin".into(), value: value.clone() }, None, 1);
    assert_eq!(sm.reader().get(b"bin").unwrap(), Some(value));
}

#[test]
fn cas_on_absent_key_succeeds_once_then_reports_current() {
    let (_dir, mut sm) = fresh();
    let r = step(&mut sm, cas("k", None, "a"), None, 1);
    assert_eq!(
        r,
        KvResponse::Cas {
            index: LogIndex(1),
            term: Term(1),
            succeeded: true,
            current: Some("a".into())
        }
    );
    let r = step(&mut sm, cas("k", None, "b"), None, 1);
    assert_eq!(
        r,
        KvResponse::Cas {
            index: LogIndex(2),
            term: Term(1),
            succeeded: false,
            current: Some("a".into())
        }
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("a"));
}

#[test]
fn cas_with_expected_value_both_ways() {
    let (_dir, mut sm) = fresh();
    step(&mut sm, put("k", "a"), None, 1);
    let r = step(&mut sm, cas("k", Some("x"), "b"), None, 1);
    assert!(
        matches!(r, KvResponse::Cas { succeeded: false, current: Some(ref c), .. } if c == "a"),
        "{r:?}"
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("a"));
    let r = step(&mut sm, cas("k", Some("a"), "b"), None, 1);
    assert!(
        matches!(r, KvResponse::Cas { succeeded: true, current: Some(ref c), .. } if c == "b"),
        "{r:?}"
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("b"));
    // Expected a value but the key is absent.
    let r = step(&mut sm, cas("gone", Some("a"), "b"), None, 1);
    assert!(matches!(r, KvResponse::Cas { succeeded: false, current: None, .. }), "{r:?}");
    assert_eq!(get(&sm, "gone"), None);
}

#[test]
fn commands_in_one_batch_see_each_other() {
    let (_dir, mut sm) = fresh();
    let entries = [
        command(1, put("k", "a"), None, 1),
        command(2, cas("k", Some("a"), "b"), None, 1),
        command(3, del("k"), None, 1),
        command(4, cas("k", None, "c"), None, 1),
    ];
    let answers: Vec<_> = sm
        .apply(&entries)
        .unwrap()
        .into_iter()
        .map(|a| KvResponse::decode(&a.unwrap()).unwrap())
        .collect();
    assert!(matches!(answers[1], KvResponse::Cas { succeeded: true, .. }), "{answers:?}");
    assert!(matches!(answers[2], KvResponse::Delete { deleted: true, .. }), "{answers:?}");
    assert!(matches!(answers[3], KvResponse::Cas { succeeded: true, .. }), "{answers:?}");
    assert_eq!(get(&sm, "k").as_deref(), Some("c"));
}

#[test]
fn noop_and_config_entries_advance_the_index_without_an_answer() {
    let (_dir, mut sm) = fresh();
    let answers = sm
        .apply(&[
            entry(1, EntryPayload::Noop),
            entry(2, EntryPayload::Config(Default::default())),
            command(3, put("k", "v"), None, 1),
        ])
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers[0].is_none() && answers[1].is_none() && answers[2].is_some());
    assert_eq!(sm.applied_index(), LogIndex(3));
}

#[test]
fn apply_skips_entries_at_or_below_the_applied_index() {
    let (_dir, mut sm) = fresh();
    sm.apply(&[command(1, put("k", "1"), None, 1), command(2, put("k", "2"), None, 1)]).unwrap();
    // A replay of 1..=2 with different content must not be applied; 3 is new.
    let answers = sm
        .apply(&[
            command(1, put("k", "replayed"), None, 1),
            command(2, put("other", "replayed"), None, 1),
            command(3, put("new", "3"), None, 1),
        ])
        .unwrap();
    assert!(answers[0].is_none() && answers[1].is_none() && answers[2].is_some());
    assert_eq!(get(&sm, "k").as_deref(), Some("2"));
    assert_eq!(get(&sm, "other"), None);
    assert_eq!(get(&sm, "new").as_deref(), Some("3"));
    assert_eq!(sm.applied_index(), LogIndex(3));
}

#[test]
fn apply_refuses_a_gap_and_changes_nothing() {
    let (_dir, mut sm) = fresh();
    step(&mut sm, put("k", "1"), None, 1);
    assert!(sm.apply(&[command(3, put("k", "3"), None, 1)]).is_err());
    assert_eq!(sm.applied_index(), LogIndex(1));
    assert_eq!(get(&sm, "k").as_deref(), Some("1"));
    // Still usable: the refusal happened before any change.
    step(&mut sm, put("k", "2"), None, 1);
    assert_eq!(get(&sm, "k").as_deref(), Some("2"));
}

#[test]
fn malformed_and_oversized_commands_are_rejected_deterministically() {
    let (_dir, mut sm) = fresh();
    let answers =
        sm.apply(&[entry(1, EntryPayload::Command(Bytes::from_static(b"\x01garbage")))]).unwrap();
    assert!(matches!(
        KvResponse::decode(answers[0].as_ref().unwrap()).unwrap(),
        KvResponse::Rejected { .. }
    ));
    let r = step(&mut sm, put(&"k".repeat(1025), "v"), Some((1, 1)), 1);
    assert!(matches!(r, KvResponse::Rejected { .. }), "{r:?}");
    assert_eq!(sm.applied_index(), LogIndex(2));
    assert_eq!(sm.session_count(), 0, "a rejected command records no session");
}

#[test]
fn session_retry_returns_the_original_answer_and_applies_once() {
    let (_dir, mut sm) = fresh();
    let first = step(&mut sm, put("k", "v1"), Some((7, 1)), 1);
    assert_eq!(first, KvResponse::Put { index: LogIndex(1), term: Term(1) });
    step(&mut sm, put("k", "other"), Some((8, 1)), 2);
    // The retry (same client and seq) arrives as a new entry: same answer, no effect.
    let retry = step(&mut sm, put("k", "v1"), Some((7, 1)), 3);
    assert_eq!(retry, first);
    assert_eq!(get(&sm, "k").as_deref(), Some("other"));
    // A DELETE retried: the second answer still says deleted=true, and it deleted once.
    step(&mut sm, put("d", "x"), None, 4);
    let first = step(&mut sm, del("d"), Some((7, 2)), 5);
    step(&mut sm, put("d", "y"), None, 6);
    assert_eq!(step(&mut sm, del("d"), Some((7, 2)), 7), first);
    assert_eq!(get(&sm, "d").as_deref(), Some("y"));
    // A higher seq applies again.
    assert!(matches!(
        step(&mut sm, del("d"), Some((7, 5)), 8),
        KvResponse::Delete { deleted: true, .. }
    ));
}

#[test]
fn cas_retry_returns_the_original_success() {
    let (_dir, mut sm) = fresh();
    let first = step(&mut sm, cas("k", None, "a"), Some((1, 10)), 1);
    assert!(matches!(first, KvResponse::Cas { succeeded: true, .. }));
    // Without the session this retry would fail (the key exists now).
    assert_eq!(step(&mut sm, cas("k", None, "a"), Some((1, 10)), 2), first);
}

#[test]
fn lower_sequence_is_stale_and_applies_nothing() {
    let (_dir, mut sm) = fresh();
    step(&mut sm, put("k", "v5"), Some((3, 5)), 1);
    assert_eq!(
        step(&mut sm, put("k", "v4"), Some((3, 4)), 2),
        KvResponse::StaleSequence { last_seq: 5 }
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("v5"));
    assert_eq!(sm.session(3), Some((5, LogIndex(1))), "a stale request does not touch the session");
}

#[test]
fn sessions_expire_after_ten_idle_minutes_of_log_time() {
    let (_dir, mut sm) = fresh();
    let ttl = flotilla_kv::SESSION_IDLE_TTL_MS;
    let t0 = 1_000_000;
    step(&mut sm, put("k", "a"), Some((1, 1)), t0);
    step(&mut sm, put("k", "b"), None, t0 + ttl - 1);
    assert_eq!(sm.session(1), Some((1, LogIndex(1))), "idle for less than the ttl");
    assert_eq!(
        step(&mut sm, put("k", "a"), Some((1, 1)), t0 + ttl - 1),
        KvResponse::Put { index: LogIndex(1), term: Term(1) }
    );
    // The retry refreshed it at t0+ttl-1; expire it from there.
    let later = t0 + 2 * ttl - 1;
    step(&mut sm, put("other", "x"), None, later);
    assert_eq!(sm.session(1), None);
    // Expired: the same seq is treated as new and applied again.
    let r = step(&mut sm, put("k", "again"), Some((1, 1)), later);
    assert_eq!(r, KvResponse::Put { index: LogIndex(5), term: Term(1) });
    assert_eq!(get(&sm, "k").as_deref(), Some("again"));
}

#[test]
fn the_session_clock_never_runs_backwards() {
    let (_dir, mut sm) = fresh();
    let ttl = flotilla_kv::SESSION_IDLE_TTL_MS;
    step(&mut sm, put("k", "a"), Some((1, 1)), 5 * ttl);
    // A new leader with a slow clock stamps an older time: the clock stays.
    step(&mut sm, put("k", "b"), None, 10);
    assert_eq!(sm.clock_ms(), 5 * ttl);
    assert!(sm.session(1).is_some());
}

fn small_limits(max_sessions: usize) -> SessionLimits {
    SessionLimits { max_sessions, ..SessionLimits::default() }
}

#[test]
fn the_number_of_sessions_is_bounded_by_evicting_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = KvStateMachine::open_with_limits(open_db(&dir), small_limits(3)).unwrap();
    for client in 1..=3 {
        step(&mut sm, put("k", "v"), Some((client, 1)), 1);
    }
    step(&mut sm, put("k", "v"), Some((1, 2)), 1); // 1 is now the most recent
    step(&mut sm, put("k", "v"), Some((4, 1)), 1); // evicts 2, the least recent
    assert_eq!(sm.session_count(), 3);
    assert!(sm.session(2).is_none());
    for client in [1, 3, 4] {
        assert!(sm.session(client).is_some(), "client {client}");
    }
}

#[test]
fn the_default_session_bound_is_one_hundred_thousand() {
    let (_dir, mut sm) = fresh();
    assert_eq!(sm.session_limits().max_sessions, 100_000);
    let n = 100_001u64;
    let entries: Vec<_> = (1..=n).map(|i| command(i, put("k", "v"), Some((i, 1)), 1)).collect();
    for chunk in entries.chunks(10_000) {
        sm.apply(chunk).unwrap();
    }
    assert_eq!(sm.session_count(), 100_000);
    assert!(sm.session(1).is_none(), "the first client was the least recently used");
    assert!(sm.session(n).is_some());
}

#[test]
fn two_replicas_fed_the_same_log_end_identical() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = KvStateMachine::open_with_limits(open_db(&dir_a), small_limits(4)).unwrap();
    let mut b = KvStateMachine::open_with_limits(open_db(&dir_b), small_limits(4)).unwrap();
    let log: Vec<_> = (1..=200u64)
        .map(|i| {
            let key = format!("k{}", i % 7);
            let op = match i % 3 {
                0 => put(&key, &i.to_string()),
                1 => del(&key),
                _ => cas(&key, None, "c"),
            };
            command(i, op, Some((i % 9, i / 9)), i * 60_000)
        })
        .collect();
    // Different batch boundaries must not matter.
    for chunk in log.chunks(7) {
        a.apply(chunk).unwrap();
    }
    for chunk in log.chunks(50) {
        b.apply(chunk).unwrap();
    }
    assert_eq!(snapshot_bytes(&mut a), snapshot_bytes(&mut b));
}

#[test]
fn reopen_recovers_data_sessions_and_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = KvStateMachine::open(open_db(&dir)).unwrap();
        step(&mut sm, put("k", "v"), Some((5, 9)), 1);
        sm.sync().unwrap();
    }
    let mut sm = KvStateMachine::open(open_db(&dir)).unwrap();
    assert_eq!(sm.applied_index(), LogIndex(1));
    assert_eq!(sm.clock_ms(), 1);
    assert_eq!(get(&sm, "k").as_deref(), Some("v"));
    assert_eq!(
        step(&mut sm, put("k", "w"), Some((5, 9)), 2),
        KvResponse::Put { index: LogIndex(1), term: Term(1) }
    );
    assert_eq!(get(&sm, "k").as_deref(), Some("v"));
}

/// Fills a state machine with data, a deletion and sessions.
fn populated() -> (TempDir, KvStateMachine) {
    let (dir, mut sm) = fresh();
    for i in 0..50 {
        step(
            &mut sm,
            put(&format!("key/{i}"), &"x".repeat(i)),
            Some((i as u64 % 5, i as u64)),
            1000 + i as u64,
        );
    }
    step(&mut sm, del("key/3"), None, 2000);
    step(&mut sm, cas("key/4", Some("xxxx"), "four"), Some((99, 1)), 2001);
    (dir, sm)
}

#[test]
fn snapshot_then_restore_into_a_fresh_database_equals_the_original() {
    let (_a, mut original) = populated();
    let bytes = snapshot_bytes(&mut original);
    let (_b, mut copy) = fresh();
    step(&mut copy, put("stale", "only in the copy"), None, 1);
    copy.restore(&meta(original.applied_index()), &mut &bytes[..]).unwrap();
    assert_eq!(copy.applied_index(), original.applied_index());
    assert_eq!(copy.clock_ms(), original.clock_ms());
    assert_eq!(snapshot_bytes(&mut copy), bytes);
    assert_eq!(get(&copy, "stale"), None, "restore replaces, it does not merge");
    assert_eq!(get(&copy, "key/4").as_deref(), Some("four"));
    assert_eq!(get(&copy, "key/3"), None);
    // Sessions came along: a retry is still recognised on the copy.
    let r = step(&mut copy, cas("key/4", Some("xxxx"), "four"), Some((99, 1)), 3000);
    assert!(matches!(r, KvResponse::Cas { succeeded: true, index: LogIndex(52), .. }), "{r:?}");
    // And it keeps working and survives a reopen.
    step(&mut copy, put("after", "restore"), None, 3001);
    copy.sync().unwrap();
}

#[test]
fn restored_state_survives_a_reopen_and_readers_follow_the_switch() {
    let (_a, mut original) = populated();
    let bytes = snapshot_bytes(&mut original);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = KvStateMachine::open(open_db(&dir)).unwrap();
        let reader = sm.reader();
        step(&mut sm, put("old", "1"), None, 1);
        sm.restore(&meta(original.applied_index()), &mut &bytes[..]).unwrap();
        assert_eq!(reader.get(b"old").unwrap(), None);
        assert_eq!(
            reader.read(b"key/4").unwrap(),
            (Some(Bytes::from_static(b"four")), LogIndex(52))
        );
        assert_eq!(reader.applied_index(), LogIndex(52));
    }
    let db = open_db(&dir);
    let names: Vec<String> = db.list_keyspace_names().iter().map(|n| n.to_string()).collect();
    let mut sm = KvStateMachine::open(db.clone()).unwrap();
    assert_eq!(sm.applied_index(), LogIndex(52));
    assert_eq!(snapshot_bytes(&mut sm), bytes);
    let generations = names.iter().filter(|n| n.starts_with("kv_data_")).count();
    assert_eq!(generations, 1, "the old generation was dropped: {names:?}");
}

/// A reader that fails after `ok` bytes, like a connection dropping mid-transfer.
struct FailAfter<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for FailAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn an_interrupted_or_corrupt_restore_leaves_the_old_state_intact() {
    let (_a, mut source) = populated();
    let bytes = snapshot_bytes(&mut source);
    let m = meta(source.applied_index());
    let (dir, mut sm) = fresh();
    step(&mut sm, put("mine", "1"), Some((1, 1)), 1);
    let before = snapshot_bytes(&mut sm);

    let mut cut = FailAfter { data: &bytes, ok: bytes.len() / 2 };
    assert!(sm.restore(&m, &mut cut).is_err());
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 1;
    assert!(sm.restore(&m, &mut &corrupt[..]).is_err());
    let mut truncated = &bytes[..bytes.len() - 1];
    assert!(sm.restore(&m, &mut truncated).is_err());
    assert!(
        sm.restore(&meta(LogIndex(7)), &mut &bytes[..]).is_err(),
        "index differs from the metadata"
    );

    assert_eq!(sm.applied_index(), LogIndex(1));
    assert_eq!(snapshot_bytes(&mut sm), before);
    step(&mut sm, put("mine", "2"), None, 2);
    assert_eq!(get(&sm, "mine").as_deref(), Some("2"));
    assert_eq!(get(&sm, "key/4"), None);
    drop(sm);
    let db = open_db(&dir);
    let generations = db.list_keyspace_names().iter().filter(|n| n.starts_with("kv_data_")).count();
    assert_eq!(generations, 1, "failed restores left no keyspaces behind");
}

#[test]
fn a_snapshot_is_a_point_in_time_view_while_apply_goes_on() {
    let (_dir, mut sm) = fresh();
    step(&mut sm, put("k", "before"), None, 1);
    let mut source = sm.snapshot().unwrap();
    assert_eq!(source.index(), LogIndex(1));
    step(&mut sm, put("k", "after"), None, 2);
    step(&mut sm, put("new", "after"), None, 3);
    let mut frozen = Vec::new();
    source.write_to(&mut frozen).unwrap();

    let (_d2, mut copy) = fresh();
    copy.restore(&meta(LogIndex(1)), &mut &frozen[..]).unwrap();
    assert_eq!(get(&copy, "k").as_deref(), Some("before"));
    assert_eq!(get(&copy, "new"), None);
    assert_eq!(get(&sm, "k").as_deref(), Some("after"));
}

#[test]
fn a_snapshot_written_on_another_thread_while_applying() {
    let (_dir, mut sm) = fresh();
    for i in 0..200 {
        step(&mut sm, put(&format!("k{i:03}"), "v"), None, 1);
    }
    let mut source = sm.snapshot().unwrap();
    let writer = std::thread::spawn(move || {
        let mut out = Vec::new();
        source.write_to(&mut out).unwrap();
        out
    });
    for i in 0..200 {
        step(&mut sm, del(&format!("k{i:03}")), None, 2);
    }
    let frozen = writer.join().unwrap();
    let (_d2, mut copy) = fresh();
    copy.restore(&meta(LogIndex(200)), &mut &frozen[..]).unwrap();
    assert_eq!(get(&copy, "k199").as_deref(), Some("v"));
    assert_eq!(get(&sm, "k199"), None);
}

#[test]
fn a_snapshot_taken_before_a_restore_can_still_be_written_after_it() {
    let (_a, mut other) = populated();
    let other_bytes = snapshot_bytes(&mut other);
    let (_dir, mut sm) = fresh();
    for i in 0..100 {
        step(&mut sm, put(&format!("mine{i}"), "v"), None, 1);
    }
    let expected = snapshot_bytes(&mut sm);
    let mut source = sm.snapshot().unwrap();
    sm.restore(&meta(other.applied_index()), &mut &other_bytes[..]).unwrap();
    let mut out = Vec::new();
    source.write_to(&mut out).unwrap();
    assert_eq!(out, expected, "the old generation is still readable through the snapshot");
}

/// Readers racing the apply thread never go back in time: every value is at least as new
/// as the index answered with it, and no reader sees a value older than one it saw before.
/// Every batch of 101 entries writes its last index into `x` and 100 other keys (so that
/// batches take long enough to be caught half-way, and memtables rotate).
#[test]
fn concurrent_reads_are_at_least_as_new_as_their_index_and_never_go_back() {
    let (_dir, mut sm) = fresh();
    let reader = sm.reader();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (reader, done) = (reader.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut reads, mut seen) = (0u64, 0u64);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let (value, index) = reader.read(b"x").unwrap();
                    let value: u64 =
                        value.map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap());
                    assert!(
                        value >= index.0,
                        "read {reads}: value of {value} answered with index {index}"
                    );
                    assert!(value >= seen, "read {reads}: value of {value} after one of {seen}");
                    (reads, seen) = (reads + 1, value);
                }
                reads
            })
        })
        .collect();
    let mut next = 1;
    for _ in 0..1500 {
        let last = (next + 100).to_string();
        let ops = (0..100).map(|k| put(&format!("filler/{k}"), &last));
        let entries: Vec<Entry> = ops
            .chain(std::iter::once(put("x", &last)))
            .enumerate()
            .map(|(n, op)| command(next + n as u64, op, None, 1))
            .collect();
        next += entries.len() as u64;
        sm.apply(&entries).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(
        reader.read(b"x").unwrap(),
        (Some(Bytes::from((next - 1).to_string())), LogIndex(next - 1))
    );
}
