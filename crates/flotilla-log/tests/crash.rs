//! Crash durability: a child process appends to a `FjallLogStore` and reports every write
//! the store acknowledged; the parent SIGKILLs it at random moments, reopens the store and
//! checks that every acknowledged write is there byte for byte, that an unacknowledged
//! write is either wholly there or wholly absent, and that nothing follows a gap.
//!
//! The child is this test binary, re-executed with `--exact crash_child --ignored`.
//! Set `FLOTILLA_CRASH_SEED` to replay a run; `FLOTILLA_CRASH_ROUNDS` to change its length.
//! It runs up to 25 rounds, stopping early after a 45 s budget but never before 8 rounds.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_log::{FjallLogStore, FjallOptions, Identity, LogStore, StoredState};
use flotilla_raft::{Entry, EntryPayload, HardState, LogIndex, NodeId, Term};

const CHILD_DIR_ENV: &str = "FLOTILLA_LOG_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "FLOTILLA_LOG_CRASH_CHILD_SEED";
/// Every protocol line starts with this, so libtest's own output is never mistaken for it.
const MARK: &str = "@@";
const ROUNDS_DEFAULT: usize = 25;
const ROUNDS_MIN: usize = 8;
const TIME_BUDGET: Duration = Duration::from_secs(45);
const CHILD_SILENCE_MAX: Duration = Duration::from_secs(20);

fn identity() -> Identity {
    Identity { cluster_id: "crash-test".into(), node_id: NodeId(1) }
}

/// Small memtables, so that flushes to tables (and journal deletions) happen while the
/// child is being killed, not only journal appends.
fn options() -> FjallOptions {
    FjallOptions { log_memtable_bytes: 256 * 1024, ..FjallOptions::default() }
}

/// The entry both processes expect at `index` in `term`: its bytes are a pure function of
/// the two, so the parent can check every stored byte without being told the payloads.
fn expected_entry(index: u64, term: u64) -> Entry {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ term.rotate_left(40);
    let len = 16 + (index.wrapping_mul(7) + term) % 200;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(bytes)),
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

// ---------------------------------------------------------------------------------------
// The child.

/// Runs only as the child of `crash_durability`; started any other way it does nothing.
#[test]
#[ignore = "child process of crash_durability, which re-executes this binary"]
fn crash_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_SEED_ENV)) else {
        eprintln!("crash_child only runs as the child of crash_durability");
        return;
    };
    let seed: u64 = seed.parse().expect("seed is a number");
    if let Err(e) = run_child(&dir, seed) {
        // The parent sees the exit without a kill and fails the test with this message.
        eprintln!("crash child failed: {e}");
        std::process::exit(3);
    }
}

fn run_child(dir: &str, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(seed | 1);
    let mut out = std::io::stdout();
    let mut store = FjallLogStore::open_with(dir, identity(), options())?;
    let state = store.load()?;
    let mut term = state
        .hard_state
        .term
        .0
        .max(state.entries.last().map_or(state.log_start.1.0, |e| e.term.0))
        .max(1);
    writeln!(out, "{MARK}READY {}", store.last_index())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let last = store.last_index().0;
        let start = store.first_index().0 - 1;
        if rng.below(20) == 0 && last > start + 10 {
            let upto = start + 1 + rng.below(last - start - 10);
            // Announced first: a purge reaches the OS before `purge` returns, so a kill
            // right after it may find it on disk.
            writeln!(out, "{MARK}PURGE {upto}")?;
            store.purge(LogIndex(upto))?;
            continue;
        }
        // Mostly appends; sometimes a new term overwrites a suffix, as after an election.
        let overwrite = rng.below(8) == 0 && last > start;
        let from = if overwrite { last - rng.below((last - start).min(20)) } else { last + 1 };
        if overwrite {
            term += 1;
        }
        let len = if rng.below(10) == 0 { 1 + rng.below(200) } else { 1 + rng.below(32) };
        let entries: Vec<Entry> = (from..from + len).map(|i| expected_entry(i, term)).collect();
        let hs = (overwrite || rng.below(3) == 0).then(|| HardState {
            term: Term(term),
            voted_for: Some(NodeId(1)),
            commit: LogIndex(from - 1),
        });
        let hs_text = hs.map_or("-".to_string(), |h| format!("{}/{}", h.term, h.commit));
        writeln!(out, "{MARK}BEGIN {from} {} {term} {hs_text}", from + len - 1)?;
        store.write(hs.as_ref(), &entries)?;
        writeln!(out, "{MARK}ACK {from}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The parent.

/// What the parent knows the disk must hold.
#[derive(Clone, Debug, Default)]
struct Model {
    /// The term of every index ever written and not overwritten, from 1 (purges ignored:
    /// a purge only moves the start).
    terms: Vec<u64>,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.terms.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        index.checked_sub(1).and_then(|i| self.terms.get(i as usize)).copied()
    }

    fn apply(&mut self, w: &Write_) {
        self.terms.truncate((w.first - 1) as usize);
        self.terms.extend((w.first..=w.last).map(|_| w.term));
        if let Some(hs) = w.hard_state {
            self.hard_state = hs;
        }
    }
}

/// A write announced by the child.
#[derive(Clone, Debug)]
struct Write_ {
    first: u64,
    last: u64,
    term: u64,
    hard_state: Option<HardState>,
}

/// The parent's view of one round.
#[derive(Default)]
struct Round {
    acked: Model,
    pending: Option<Write_>,
    /// Every purge announced before the last ACK is durable (the journal is sequential).
    purge_durable: u64,
    /// The latest purge announced; it may or may not have reached the disk.
    purge_latest: u64,
    acks: usize,
}

impl Round {
    fn feed(&mut self, line: &str) {
        let Some(at) = line.find(MARK) else { return };
        let words: Vec<&str> = line[at + MARK.len()..].split_whitespace().collect();
        let num =
            |i: usize| -> u64 { words[i].parse().unwrap_or_else(|_| panic!("bad line {line:?}")) };
        match words.first().copied() {
            Some("READY") => assert_eq!(num(1), self.acked.last(), "child loaded a different log"),
            Some("BEGIN") => {
                let hard_state = (words[4] != "-").then(|| {
                    let (t, c) = words[4].split_once('/').expect("term/commit");
                    HardState {
                        term: Term(t.parse().expect("term")),
                        voted_for: Some(NodeId(1)),
                        commit: LogIndex(c.parse().expect("commit")),
                    }
                });
                assert!(self.pending.is_none(), "two writes in flight");
                self.pending =
                    Some(Write_ { first: num(1), last: num(2), term: num(3), hard_state });
            }
            Some("ACK") => {
                let w = self.pending.take().expect("ACK without BEGIN");
                assert_eq!(w.first, num(1));
                self.acked.apply(&w);
                self.purge_durable = self.purge_latest;
                self.acks += 1;
            }
            Some("PURGE") => self.purge_latest = num(1),
            _ => panic!("unknown line {line:?}"),
        }
    }
}

/// Checks the reopened store against the acknowledged model, or against the model plus the
/// one write that was in flight (atomic: all of it or none of it). Returns the model the
/// disk matched.
fn verify(disk: &StoredState, round: &Round, ctx: &str) -> Model {
    let mut with_pending = round.acked.clone();
    if let Some(w) = &round.pending {
        with_pending.apply(w);
    }
    let candidates = [("acknowledged", &round.acked), ("acknowledged + in-flight", &with_pending)];
    let mut failures = Vec::new();
    for (name, model) in candidates {
        match matches(disk, model, round) {
            Ok(()) => return model.clone(),
            Err(why) => failures.push(format!("  vs {name}: {why}")),
        }
    }
    panic!(
        "{ctx}: the reopened store matches neither the acknowledged writes nor those plus \
         the in-flight write {:?}:\n{}",
        round.pending,
        failures.join("\n")
    );
}

fn matches(disk: &StoredState, model: &Model, round: &Round) -> Result<(), String> {
    let (start, start_term) = (disk.log_start.0.0, disk.log_start.1.0);
    if disk.last_index().0 != model.last() {
        return Err(format!("last index {} != {}", disk.last_index(), model.last()));
    }
    if start < round.purge_durable || start > round.purge_latest {
        return Err(format!(
            "log start {start} outside the purges [{}, {}]",
            round.purge_durable, round.purge_latest
        ));
    }
    if start > 0 && model.term(start) != Some(start_term) {
        return Err(format!("log start term {start_term} != {:?}", model.term(start)));
    }
    for (offset, e) in disk.entries.iter().enumerate() {
        let index = start + 1 + offset as u64;
        let term = model.term(index).ok_or(format!("index {index} beyond the model"))?;
        if *e != expected_entry(index, term) {
            return Err(format!("entry {index} differs: got term {}, want {term}", e.term));
        }
    }
    if disk.hard_state != model.hard_state {
        return Err(format!("hard state {:?} != {:?}", disk.hard_state, model.hard_state));
    }
    Ok(())
}

fn spawn_child(dir: &std::path::Path, seed: u64) -> (Child, Receiver<String>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn crash_durability() {
    let seed = std::env::var("FLOTILLA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let rounds: usize = std::env::var("FLOTILLA_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    println!("crash_durability: FLOTILLA_CRASH_SEED={seed} rounds={rounds}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut model = Model::default();
    let mut log_start = 0u64;
    let (mut total_acks, mut in_flight_landed, mut done) = (0usize, 0usize, 0usize);
    let (mut child_time, mut verify_time) = (Duration::ZERO, Duration::ZERO);

    for round_no in 0..rounds {
        // The budget is soft: a slow (or busy) machine still runs ROUNDS_MIN rounds.
        if round_no >= ROUNDS_MIN && started.elapsed() > TIME_BUDGET {
            break;
        }
        let ctx = format!("seed {seed} round {round_no}");
        let mut round = Round {
            acked: model.clone(),
            purge_durable: log_start,
            purge_latest: log_start,
            ..Round::default()
        };
        let kill_after_acks = 1 + rng.below(60) as usize;
        let kill_delay = Duration::from_micros(rng.below(3_000));
        let round_started = Instant::now();
        let (mut child, lines) = spawn_child(dir.path(), rng.below(u64::MAX));

        // Wait for enough acknowledgements, with a deadline on silence.
        let mut exited_early = None;
        while round.acks < kill_after_acks {
            match lines.recv_timeout(CHILD_SILENCE_MAX) {
                Ok(line) => round.feed(&line),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("{ctx}: child silent for {CHILD_SILENCE_MAX:?}");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    exited_early = Some(child.wait().expect("wait"));
                    break;
                }
            }
        }
        if let Some(status) = exited_early {
            panic!("{ctx}: child exited on its own ({status}) after {} acks", round.acks);
        }
        std::thread::sleep(kill_delay);
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        // Lines already in the pipe were written after durable writes: they count.
        for line in lines.iter() {
            round.feed(&line);
        }

        let verify_started = Instant::now();
        child_time += verify_started - round_started;
        let store = FjallLogStore::open_with(dir.path(), identity(), options())
            .unwrap_or_else(|e| panic!("{ctx}: reopen after SIGKILL failed: {e}"));
        let disk = store.load().unwrap_or_else(|e| panic!("{ctx}: load after SIGKILL failed: {e}"));
        drop(store);
        let matched = verify(&disk, &round, &ctx);
        if matched.last() != round.acked.last() || matched.terms != round.acked.terms {
            in_flight_landed += 1;
        }
        model = matched;
        verify_time += verify_started.elapsed();
        log_start = disk.log_start.0.0;
        total_acks += round.acks;
        done += 1;
    }
    println!(
        "crash_durability: {done} rounds, {total_acks} acknowledged writes, {in_flight_landed} \
         in-flight writes found durable, final last index {} in {:?} ({child_time:?} in \
         children, {verify_time:?} reopening and checking)",
        model.last(),
        started.elapsed()
    );
    assert!(done >= ROUNDS_MIN.min(rounds), "only {done} rounds ran (seed {seed})");
}
