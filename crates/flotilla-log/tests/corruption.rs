//! Damage in the data files: flip bits in fjall's files and check that opening or reading
//! the store reports it, and never returns different data as if nothing had happened.
//!
//! Each trial opens the damaged copy in a child process (this binary, re-executed with
//! `--exact flip_child --ignored`), because some damage makes fjall abort the process
//! rather than return an error (see `ENGINE_ABORT_ALLOWED`): the parent then sees the
//! abort and its message instead of dying with the child.
//!
//! Which layer notices does not matter here: fjall checksums its table blocks and journal
//! batches, this crate checksums every entry and record, and the durable-write mark catches
//! a journal that fjall silently cut short (see `src/mark.rs`). What matters is that each
//! trial ends in an error or in exactly the state that was written (a flip in bytes that no
//! read depends on, such as padding, is harmless).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use flotilla_log::{FjallLogStore, Identity, LOG_KEYSPACE, LogError, LogStore, StoredState};
use flotilla_raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term,
};

const ENTRIES: u64 = 600;
/// Entries up to here are flushed into table files; the rest live only in the journal.
const FLUSHED: u64 = 400;
const BATCH: u64 = 50;
/// fjall's version files (`keyspaces/<id>/v<n>`): lsm-tree asserts on some damage there,
/// or sizes an allocation from a damaged count and aborts. Loud, never silent, but not an
/// error value either: a known limitation of fjall 3.1 (see docs/log.md).
const ENGINE_ABORT_ALLOWED: fn(&str) -> bool = is_version_file;
const CHILD_DIR_ENV: &str = "FLOTILLA_LOG_FLIP_CHILD_DIR";
const MARK: &str = "@@OUTCOME ";

fn identity() -> Identity {
    Identity { cluster_id: "corruption".into(), node_id: NodeId(1) }
}

fn entry(i: u64) -> Entry {
    let payload = (0..100).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>();
    Entry {
        term: Term(1 + i / 200),
        index: LogIndex(i),
        payload: EntryPayload::Command(Bytes::from(payload)),
    }
}

fn hard_state(batch_first: u64) -> HardState {
    HardState {
        term: entry(batch_first).term,
        voted_for: Some(NodeId(1)),
        commit: LogIndex(batch_first - 1),
    }
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_index: LogIndex(300),
        last_term: Term(2),
        membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
    }
}

/// What the pristine store holds, computed rather than read, so a child process can check
/// a damaged copy without being told.
fn expected_state() -> StoredState {
    StoredState {
        hard_state: hard_state(ENTRIES - BATCH + 1),
        snapshot: Some(snapshot_meta()),
        log_start: (LogIndex(0), Term(0)),
        entries: (1..=ENTRIES).map(entry).collect(),
    }
}

/// Builds the store every trial starts from.
fn build_pristine(dir: &Path) {
    let mut s = FjallLogStore::open(dir, identity()).expect("open");
    let mut next = 1;
    while next <= ENTRIES {
        let batch: Vec<Entry> = (next..next + BATCH).map(entry).collect();
        s.write(Some(&hard_state(next)), &batch).expect("write");
        next += BATCH;
        if next == FLUSHED + 1 {
            s.save_snapshot_meta(&snapshot_meta()).expect("snapshot meta");
            s.put_meta("bootstrap", b"1,2,3").expect("put_meta");
            for name in [LOG_KEYSPACE, flotilla_log::META_KEYSPACE] {
                let ks = s
                    .database()
                    .keyspace(name, fjall::KeyspaceCreateOptions::default)
                    .expect("keyspace");
                ks.rotate_memtable_and_wait().expect("flush");
            }
        }
    }
    assert_eq!(s.load().expect("load"), expected_state());
}

/// The pristine directory's files, read once: (relative path, used bytes, full length).
/// fjall preallocates journals with zeros; keeping only the bytes up to the last non-zero
/// one and restoring the length makes each copy small and identical in content.
struct Snapshot(Vec<(PathBuf, Vec<u8>, u64)>);

impl Snapshot {
    fn take(root: &Path) -> Snapshot {
        let mut files = Vec::new();
        files_under(root, &mut files);
        Snapshot(
            files
                .into_iter()
                .map(|path| {
                    let mut data = std::fs::read(&path).expect("read");
                    let full = data.len() as u64;
                    data.truncate(used_len(&data));
                    (path.strip_prefix(root).expect("prefix").to_path_buf(), data, full)
                })
                .collect(),
        )
    }

    fn write_to(&self, dir: &Path, damage: Option<(&Path, usize, u8)>) {
        for (rel, data, full) in &self.0 {
            let target = dir.join(rel);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            let mut data = data.clone();
            if let Some((_, offset, mask)) = damage.filter(|d| d.0 == rel) {
                data[offset] ^= mask;
            }
            std::fs::write(&target, &data).expect("write");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .expect("open")
                .set_len(*full)
                .expect("set_len");
        }
    }
}

/// The length up to the last non-zero byte (compares whole pages: fast in debug builds).
fn used_len(data: &[u8]) -> usize {
    const PAGE: usize = 4096;
    let zero = [0u8; PAGE];
    let full_pages = data.len() / PAGE;
    let mut end = data.len();
    while end > full_pages * PAGE && data[end - 1] == 0 {
        end -= 1;
    }
    if end > full_pages * PAGE {
        return end;
    }
    let mut page = full_pages;
    while page > 0 && data[(page - 1) * PAGE..page * PAGE] == zero {
        page -= 1;
    }
    let mut end = page * PAGE;
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    end
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for dirent in std::fs::read_dir(dir).expect("read_dir") {
        let path = dirent.expect("dirent").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Debug)]
enum Outcome {
    Reported(LogError),
    Unchanged,
}

/// Opens and fully reads a damaged copy. Panics (failing the test) if it returns data that
/// differs from what was written.
fn open_and_read(dir: &Path, what: &str) -> Outcome {
    let store = match FjallLogStore::open(dir, identity()) {
        Ok(s) => s,
        Err(e) => return Outcome::Reported(e),
    };
    let state = match store.load() {
        Ok(s) => s,
        Err(e) => return Outcome::Reported(e),
    };
    let blob = match store.get_meta("bootstrap") {
        Ok(b) => b,
        Err(e) => return Outcome::Reported(e),
    };
    let want = expected_state();
    if state != want || blob.as_deref() != Some(&b"1,2,3"[..]) {
        let first_diff = state.entries.iter().zip(&want.entries).position(|(a, b)| a != b);
        panic!(
            "{what}: damage went unreported: last index {} (want {}), hard state {:?} (want {:?}), \
             first differing entry at offset {first_diff:?}",
            state.last_index(),
            want.last_index(),
            state.hard_state,
            want.hard_state
        );
    }
    Outcome::Unchanged
}

/// Runs only as a child of `flip_trials`: opens the damaged copy and prints the outcome.
#[test]
#[ignore = "child process of the flip tests, which re-execute this binary"]
fn flip_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        eprintln!("flip_child only runs as a child of the flip tests");
        return;
    };
    let line = match open_and_read(Path::new(&dir), "child") {
        Outcome::Reported(e) => format!("reported {e}"),
        Outcome::Unchanged => "unchanged".to_string(),
    };
    // One line, so that the parent can read it whole.
    println!("{MARK}{}", line.replace('\n', " "));
}

#[derive(Default, Debug)]
struct Tally {
    reported: usize,
    unchanged: usize,
    engine_aborts: usize,
}

/// Opens `dir` in a child process and classifies what happened.
fn trial_in_child(dir: &Path, rel: &str, what: &str, tally: &mut Tally) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["flip_child", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_DIR_ENV, dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stdout.lines().find_map(|l| l.find(MARK).map(|at| &l[at + MARK.len()..])) {
        Some("unchanged") => tally.unchanged += 1,
        Some(reported) if reported.starts_with("reported ") => {
            // Visible with --nocapture: the messages an operator would read.
            println!("{what}: {}", &reported["reported ".len()..]);
            tally.reported += 1;
        }
        _ if ENGINE_ABORT_ALLOWED(rel) && !out.status.success() && !stderr.trim().is_empty() => {
            tally.engine_aborts += 1;
        }
        _ => panic!("{what}: the child failed ({}):\n{stdout}\n{stderr}", out.status),
    }
}

/// Flips one random bit at a time in files chosen by `select`, `trials` times, and checks
/// every outcome.
fn flip_trials(select: impl Fn(&str) -> bool, trials: usize, seed: u64) -> Tally {
    let root = tempfile::tempdir().expect("tempdir");
    let pristine = root.path().join("pristine");
    build_pristine(&pristine);
    let snapshot = Snapshot::take(&pristine);
    let candidates: Vec<(&Path, usize)> = snapshot
        .0
        .iter()
        .filter(|(rel, data, _)| select(&rel.to_string_lossy()) && !data.is_empty())
        .map(|(rel, data, _)| (rel.as_path(), data.len()))
        .collect();
    assert!(!candidates.is_empty(), "no files selected");
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for trial in 0..trials {
        let (rel, used) = candidates[rng.below(candidates.len() as u64) as usize];
        let offset = rng.below(used as u64) as usize;
        let mask = 1u8 << rng.below(8);
        let copy = root.path().join(format!("trial-{trial}"));
        snapshot.write_to(&copy, Some((rel, offset, mask)));
        let rel = rel.to_string_lossy();
        let what =
            format!("seed {seed:#x} trial {trial}: mask {mask:#04x} at byte {offset} of {rel}");
        trial_in_child(&copy, &rel, &what, &mut tally);
        std::fs::remove_dir_all(&copy).expect("cleanup");
    }
    println!("{trials} trials: {tally:?}");
    tally
}

fn is_journal(rel: &str) -> bool {
    rel.ends_with(".jnl")
}

fn is_table(rel: &str) -> bool {
    rel.contains("/tables/")
}

fn is_version_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel.starts_with("keyspaces/")
        && name.len() > 1
        && name.starts_with('v')
        && name[1..].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn flipped_bits_in_table_files_are_reported() {
    let tally = flip_trials(is_table, 24, 0x7ab1e);
    // Nearly every byte of a table is checksummed; a few flips may land in unused bytes.
    assert!(tally.reported >= 18, "{tally:?}");
}

#[test]
fn flipped_bits_in_the_journal_are_reported() {
    let tally = flip_trials(is_journal, 24, 0x10_da7a);
    assert!(tally.reported >= 18, "{tally:?}");
}

#[test]
fn flipped_bits_in_engine_metadata_are_reported_or_harmless() {
    // Version files (manifests), `current`, `version`, and this crate's mark file.
    let tally = flip_trials(|rel| !is_journal(rel) && !is_table(rel), 24, 0x3e7a);
    assert!(tally.reported > 0, "no flip in metadata was noticed: {tally:?}");
}

/// fjall stops replaying a journal at the first record it cannot decode and cuts the
/// journal there, as if it were a torn tail. Damage to the first record therefore drops
/// every batch after it; the durable-write mark turns that into a refusal to open.
#[test]
fn a_journal_cut_short_by_fjall_is_refused_as_lost_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    let pristine = root.path().join("pristine");
    build_pristine(&pristine);
    let snapshot = Snapshot::take(&pristine);
    let oldest = snapshot
        .0
        .iter()
        .filter(|(rel, _, _)| is_journal(&rel.to_string_lossy()))
        .min_by_key(|(rel, _, _)| rel.clone())
        .expect("a journal");
    // The first byte is the tag of the first batch's start record (1): make it invalid.
    assert_eq!(oldest.1.first(), Some(&1), "fjall's journal format changed: update this test");
    let copy = root.path().join("copy");
    snapshot.write_to(&copy, Some((&oldest.0, 0, 0x40)));
    match open_and_read(&copy, "first journal record damaged") {
        Outcome::Reported(LogError::LostWrites { found, acknowledged, .. }) => {
            assert!(found < acknowledged, "{found} < {acknowledged}");
        }
        other => panic!("expected LostWrites, got {other:?}"),
    }
}

/// A value rewritten through fjall (so fjall's own checksums are fine) with one bit flipped
/// is caught by the entry checksum, naming the index.
#[test]
fn a_damaged_entry_value_is_reported_with_its_index() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("store");
    build_pristine(&dir);
    let s = FjallLogStore::open(&dir, identity()).expect("open");
    let log =
        s.database().keyspace(LOG_KEYSPACE, fjall::KeyspaceCreateOptions::default).expect("log");
    for index in [1u64, 345, ENTRIES] {
        let key = index.to_be_bytes();
        let good = log.get(key).expect("get").expect("stored").to_vec();
        let mut bad = good.clone();
        bad[20] ^= 0x01;
        log.insert(key, bad).expect("insert");
        match s.entries(LogIndex(index), LogIndex(index + 1)) {
            Err(LogError::Corrupt { index: at, reason }) => {
                assert_eq!(at, LogIndex(index));
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("entry {index}: expected Corrupt, got {other:?}"),
        }
        log.insert(key, good).expect("restore");
    }
}
