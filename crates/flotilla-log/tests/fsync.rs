//! Group commit, observed from below: this test binary interposes libc's `fdatasync` and
//! counts the calls each store operation makes.
//!
//! The SIGKILL test (`crash.rs`) cannot see a missing fsync (the page cache survives a
//! killed process), so this is where "returns only when durable" is checked: every
//! acknowledged operation must issue exactly one `fdatasync` before it returns, however many
//! entries it carries, and a lazy purge none. fjall calls `fdatasync` only for
//! `PersistMode::SyncData` journal persists, so the count is exact.
//!
//! Keep this binary to one `#[test]`: the counter is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flotilla_log::{FjallLogStore, Identity, LogStore};
use flotilla_raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term,
};

static FDATASYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Replaces libc's `fdatasync` for this binary (the executable's definition wins at link
/// time): counts the call, then makes the real system call.
#[unsafe(no_mangle)]
pub extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    FDATASYNC_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the same system call libc would make, with the caller's descriptor.
    unsafe { libc::syscall(libc::SYS_fdatasync, fd) as libc::c_int }
}

fn calls_during(f: impl FnOnce()) -> usize {
    let before = FDATASYNC_CALLS.load(Ordering::SeqCst);
    f();
    FDATASYNC_CALLS.load(Ordering::SeqCst) - before
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            term: Term(term),
            index: LogIndex(i),
            payload: EntryPayload::Command(Bytes::from(vec![i as u8; 128])),
        })
        .collect()
}

#[test]
fn each_acknowledged_operation_issues_exactly_one_fdatasync() {
    // The interposition works: std's `sync_data` goes through it.
    let probe = tempfile::tempfile().unwrap();
    assert_eq!(calls_during(|| probe.sync_data().unwrap()), 1, "fdatasync is not interposed");

    let dir = tempfile::tempdir().unwrap();
    let id = Identity { cluster_id: "fsync".into(), node_id: NodeId(1) };
    let mut s = None;
    // A fresh store is built in a staging directory, closed (fjall syncs its journal), and
    // renamed into place: a one-time cost of one more sync, outside any client's path.
    let n = calls_during(|| s = Some(FjallLogStore::open(dir.path(), id.clone()).unwrap()));
    assert!((1..=2).contains(&n), "a fresh open records the identity durably: {n} fdatasyncs");
    let mut s = s.unwrap();
    let hs = HardState { term: Term(2), voted_for: Some(NodeId(1)), commit: LogIndex(0) };
    let meta = SnapshotMeta {
        last_index: LogIndex(300),
        last_term: Term(2),
        membership: Membership::with_voters([NodeId(1)]),
    };

    type Op<'a> = Box<dyn FnOnce(&mut FjallLogStore) + 'a>;
    let cases: Vec<(&str, usize, Op)> = vec![
        (
            "write of 256 entries + hard state",
            1,
            Box::new(|s| s.write(Some(&hs), &entries(1, 256, 2)).unwrap()),
        ),
        ("write of 1 entry", 1, Box::new(|s| s.write(None, &entries(257, 257, 2)).unwrap())),
        ("overwrite of a suffix", 1, Box::new(|s| s.write(None, &entries(200, 210, 3)).unwrap())),
        ("hard state alone", 1, Box::new(|s| s.write(Some(&hs), &[]).unwrap())),
        ("empty write", 0, Box::new(|s| s.write(None, &[]).unwrap())),
        ("refused write", 0, Box::new(|s| assert!(s.write(None, &entries(500, 501, 3)).is_err()))),
        ("purge (lazy)", 0, Box::new(|s| s.purge(LogIndex(100)).unwrap())),
        ("save_snapshot_meta", 1, Box::new(|s| s.save_snapshot_meta(&meta).unwrap())),
        ("reset_to_snapshot", 1, Box::new(|s| s.reset_to_snapshot(&meta).unwrap())),
        ("put_meta", 1, Box::new(|s| s.put_meta("bootstrap", b"1,2,3").unwrap())),
        (
            "reads",
            0,
            Box::new(|s| {
                s.load().unwrap();
                s.get_meta("bootstrap").unwrap();
                s.term(LogIndex(300)).unwrap();
            }),
        ),
    ];
    for (what, want, op) in cases {
        assert_eq!(calls_during(|| op(&mut s)), want, "{what}");
    }
    assert_eq!(s.load().unwrap().log_start, (LogIndex(300), Term(2)));
}
