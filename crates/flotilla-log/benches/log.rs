//! Benchmarks of the durable log: group commit against the disk's own fsync rate, and the
//! time to reopen a large log.
//!
//! `cargo bench -p flotilla-log` (add `-- commit` or `-- reopen` to run one group).
//!
//! - `commit/raw_fdatasync/N`: append N * 142 bytes (the size of N framed 128-byte entries)
//!   to a preallocated file and `fdatasync` it, in the same directory: the physical limit.
//! - `commit/store_write/N`: `FjallLogStore::write` of N entries of 128 bytes, one sync each.
//! - `reopen/open`: open a store holding 1,000,000 entries (ready to answer `last_index`
//!   and `term`); `reopen/open_and_load`: the same plus `load`, which returns every entry.
//!
//! Throughput is in entries per second; compare `store_write/N` with `raw_fdatasync/N`.
//!
//! fsync latency on a shared VM drifts by several times within minutes, so criterion's
//! one-after-the-other groups can compare the store with a different disk than the raw
//! loop's. The `paired` run at the end alternates one raw sync and one store write, round
//! after round (swapping which goes first), and prints medians and their ratio: that ratio
//! is the figure to read. Run it alone with `cargo bench -p flotilla-log -- paired`.
//!
//! `reopen_cpu` (also printed at the end) repeats open and load of a 10^6-entry store and
//! reports wall time beside the process's CPU time (getrusage): on a busy machine the wall
//! time mostly measures the other tenants.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use flotilla_log::{FjallLogStore, Identity, LogStore};
use flotilla_raft::{Entry, EntryPayload, LogIndex, NodeId, Term};

const PAYLOAD_BYTES: usize = 128;
/// Frame header (14 bytes) plus the payload: what one entry costs in the log keyspace.
const FRAMED_BYTES: usize = PAYLOAD_BYTES + 14;
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const REOPEN_ENTRIES: u64 = 1_000_000;

fn identity() -> Identity {
    Identity { cluster_id: "bench".into(), node_id: NodeId(1) }
}

/// Incompressible payloads, so that no layer wins by compressing them.
fn payload(index: u64) -> Bytes {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(bytes)
}

fn batch(first: u64, n: usize) -> Vec<Entry> {
    (first..first + n as u64)
        .map(|i| Entry {
            term: Term(1),
            index: LogIndex(i),
            payload: EntryPayload::Command(payload(i)),
        })
        .collect()
}

/// The physical limit: append `bytes` and `fdatasync`, on a preallocated file (as fjall's
/// journal is), so that the sync does not also have to persist a growing file size.
struct RawSync {
    file: File,
    written: u64,
    chunk: Vec<u8>,
}

impl RawSync {
    const PREALLOCATED_BYTES: u64 = 256 * 1024 * 1024;

    fn new(dir: &Path, bytes: usize) -> RawSync {
        let file = File::create(dir.join(format!("raw-{bytes}"))).expect("create raw file");
        file.set_len(Self::PREALLOCATED_BYTES).expect("preallocate");
        file.sync_all().expect("sync");
        RawSync { file, written: 0, chunk: vec![0xa5; bytes] }
    }

    fn append_and_sync(&mut self) {
        if self.written + self.chunk.len() as u64 > Self::PREALLOCATED_BYTES {
            self.file.set_len(0).expect("truncate");
            self.file.set_len(Self::PREALLOCATED_BYTES).expect("preallocate");
            self.written = 0;
            use std::io::{Seek, SeekFrom};
            self.file.seek(SeekFrom::Start(0)).expect("seek");
        }
        self.file.write_all(&self.chunk).expect("write");
        self.file.sync_data().expect("fdatasync");
        self.written += self.chunk.len() as u64;
    }
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let mut group = c.benchmark_group("commit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for n in BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));
        let mut raw = RawSync::new(dir.path(), n * FRAMED_BYTES);
        group.bench_function(BenchmarkId::new("raw_fdatasync", n), |b| {
            b.iter(|| raw.append_and_sync())
        });

        let store_dir = dir.path().join(format!("store-{n}"));
        let mut store = FjallLogStore::open(&store_dir, identity()).expect("open");
        // Pre-build the batches outside the timed loop: the benchmark measures the store.
        let mut next = store.last_index().0 + 1;
        group.bench_function(BenchmarkId::new("store_write", n), |b| {
            b.iter_batched(
                || {
                    let entries = batch(next, n);
                    next += n as u64;
                    entries
                },
                |entries| store.write(None, &entries).expect("write"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    build_store(dir.path(), REOPEN_ENTRIES);
    let mut group = c.benchmark_group("reopen");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    group.bench_function("open", |b| {
        b.iter(|| {
            let store = FjallLogStore::open(dir.path(), identity()).expect("open");
            assert_eq!(store.last_index(), LogIndex(REOPEN_ENTRIES));
        })
    });
    group.bench_function("open_and_load", |b| {
        b.iter(|| {
            let store = FjallLogStore::open(dir.path(), identity()).expect("open");
            let state = store.load().expect("load");
            assert_eq!(state.entries.len() as u64, REOPEN_ENTRIES);
        })
    });
    group.finish();
}

/// Benchmarks write where `FLOTILLA_BENCH_DIR` says (default: the system temp dir), so that
/// the disk under test can be chosen.
fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("FLOTILLA_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

/// Alternates raw syncs and store writes and prints the medians, per batch size.
fn paired(quick: bool) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    println!("\npaired: raw append+fdatasync vs FjallLogStore::write, alternating");
    println!(
        "batch   rounds   raw p50     store p50   store/raw   store entries/s   raw p90     store p90"
    );
    for n in BATCH_SIZES {
        let rounds: usize = if quick {
            5
        } else {
            [600, 500, 400][BATCH_SIZES.iter().position(|&b| b == n).unwrap_or(0)]
        };
        let mut raw = RawSync::new(dir.path(), n * FRAMED_BYTES);
        let mut store =
            FjallLogStore::open(dir.path().join(format!("paired-{n}")), identity()).expect("open");
        let mut next = 1;
        let (mut raw_times, mut store_times) =
            (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for round in 0..rounds + 20 {
            let entries = batch(next, n);
            next += n as u64;
            let mut time_raw = || {
                let t = std::time::Instant::now();
                raw.append_and_sync();
                t.elapsed()
            };
            let mut time_store = || {
                let t = std::time::Instant::now();
                store.write(None, &entries).expect("write");
                t.elapsed()
            };
            let (r, s) = if round % 2 == 0 {
                let r = time_raw();
                (r, time_store())
            } else {
                let s = time_store();
                (time_raw(), s)
            };
            if round >= 20 {
                raw_times.push(r);
                store_times.push(s);
            }
        }
        raw_times.sort();
        store_times.sort();
        let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
        let (raw50, store50) = (pct(&raw_times, 50), pct(&store_times, 50));
        println!(
            "{n:<7} {rounds:<8} {:<11} {:<11} {:<11.2} {:<17.0} {:<11} {:<11}",
            format!("{raw50:.2?}"),
            format!("{store50:.2?}"),
            store50.as_secs_f64() / raw50.as_secs_f64(),
            n as f64 / store50.as_secs_f64(),
            format!("{:.2?}", pct(&raw_times, 90)),
            format!("{:.2?}", pct(&store_times, 90)),
        );
    }
}

/// The process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Opens and loads a 10^6-entry store several times; prints wall and CPU time.
fn reopen_cpu(quick: bool) {
    let entries = if quick { 10_000 } else { REOPEN_ENTRIES };
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    build_store(dir.path(), entries);
    println!("\nreopen_cpu: {entries} entries; wall / process CPU (user+sys), load average");
    for _ in 0..if quick { 1 } else { 6 } {
        let (wall, cpu) = (std::time::Instant::now(), cpu_time());
        let store = FjallLogStore::open(dir.path(), identity()).expect("open");
        let (open_wall, open_cpu) = (wall.elapsed(), cpu_time() - cpu);
        let (wall, cpu) = (std::time::Instant::now(), cpu_time());
        let state = store.load().expect("load");
        let (load_wall, load_cpu) = (wall.elapsed(), cpu_time() - cpu);
        assert_eq!(state.entries.len() as u64, entries);
        let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "open {:>9} / {:>9}   load {:>9} / {:>9}   ({})",
            format!("{open_wall:.0?}"),
            format!("{open_cpu:.0?}"),
            format!("{load_wall:.0?}"),
            format!("{load_cpu:.0?}"),
            load_avg.split(' ').next().unwrap_or("?")
        );
    }
}

fn build_store(dir: &Path, entries: u64) {
    let mut store = FjallLogStore::open(dir, identity()).expect("open");
    let mut next = 1;
    while next <= entries {
        let n = 1_000.min(entries - next + 1) as usize;
        store.write(None, &batch(next, n)).expect("write");
        next += n as u64;
    }
}

criterion_group!(benches, commit, reopen);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--test");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let extra = ["paired", "reopen_cpu"];
    let wants =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if filters.is_empty() || filters.iter().any(|f| !extra.iter().any(|e| e.contains(f.as_str()))) {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if wants("paired") {
        paired(quick);
    }
    if wants("reopen_cpu") {
        reopen_cpu(quick);
    }
}
