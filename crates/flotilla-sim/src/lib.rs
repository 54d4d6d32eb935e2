//! # flotilla-sim: the deterministic simulator of Flotilla's Raft core
//!
//! One seed gives one exact run: 3, 5 or 7 [`flotilla_raft::RaftCore`]s, each with a
//! durable store, a volatile key-value state machine and a runtime that executes the core's
//! commands exactly per the persistence contract; a network that drops, duplicates,
//! reorders and delays; partitions (symmetric, one-way, isolated leader, minority/majority);
//! crashes that lose everything not yet durable; tick rates that drift within ±10%; clients
//! doing put / get / compare-and-set; membership changes, snapshots and leadership
//! transfers inside the fault schedule.
//!
//! After **every** step the simulator checks election safety, log matching, leader
//! completeness, state machine safety and commit monotonicity (`check`). At the end it
//! heals every fault, requires a leader and every acknowledged write applied on every live
//! member within a bounded number of ticks, and checks the client history is linearizable
//! (`linearizable`). A failing seed comes back as a [`Failure`] with the last events and a
//! command line that replays it.
//!
//! ```
//! use flotilla_sim::{run_seed, SimOptions};
//!
//! let opts = SimOptions { chaos_ticks: 200, ..SimOptions::default() };
//! let stats = run_seed(42, &opts).expect("seed 42 is clean");
//! assert!(stats.committed > 0);
//! // One seed, one run: the same seed traces the same events.
//! assert_eq!(run_seed(42, &opts).unwrap().trace_hash, stats.trace_hash);
//! ```
//!
//! See `docs/simulator.md` for the model, the fault profiles and what is not covered.

pub mod check;
pub mod kv;
pub mod linearizable;
mod node;
pub mod plan;
pub mod rng;
mod sim;
pub mod storage;
pub mod trace;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use plan::{Profile, SimOptions};
pub use sim::{Failure, RunStats, profile_names};

std::thread_local! {
    static CURRENT_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The seed this thread is running, if any (for panic hooks: a release build aborts on
/// panic, so the hook is the only place that can still name the seed).
pub fn current_seed() -> Option<u64> {
    CURRENT_SEED.with(|c| c.get())
}

/// Runs one seed. A panic inside the core (a failed `validate()` or assertion) is turned
/// into a `Failure` when the build unwinds (tests); release builds abort instead.
pub fn run_seed(seed: u64, opts: &SimOptions) -> Result<RunStats, Failure> {
    CURRENT_SEED.with(|c| c.set(Some(seed)));
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim::Sim::new(seed, opts).run()));
    CURRENT_SEED.with(|c| c.set(None));
    match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Failure {
                seed,
                property: "panic".into(),
                detail: msg,
                at_ms: 0,
                tail: Vec::new(),
                rerun: format!("cargo run -p flotilla-sim --release -- --seed {seed} --trace"),
            })
        }
    }
}

/// The outcome of many seeds.
#[derive(Debug, Default)]
pub struct Report {
    pub seeds_run: u64,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
    /// Sums over the clean seeds.
    pub events: u64,
    pub committed: u64,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub crashes: u64,
    pub kept_sm_restarts: u64,
    pub snapshots_installed: u64,
    pub snapshots_refused: u64,
    pub snapshots_offered_again: u64,
    pub config_changes: u64,
    pub lin_inconclusive: u64,
    /// The longest time from healing to convergence, in ms.
    pub heal_ms_max: u64,
}

impl Report {
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds_run as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, s: &RunStats) {
        self.events += s.events;
        self.committed += s.committed;
        self.ops_ok += s.ops_ok;
        self.ops_unknown += s.ops_unknown;
        self.crashes += s.crashes;
        self.kept_sm_restarts += s.kept_sm_restarts;
        self.snapshots_installed += s.snapshots_installed;
        self.snapshots_refused += s.snapshots_refused;
        self.snapshots_offered_again += s.snapshots_offered_again;
        self.config_changes += s.config_changes;
        self.lin_inconclusive += u64::from(s.lin_inconclusive);
        self.heal_ms_max = self.heal_ms_max.max(s.heal_ms);
    }
}

/// Runs seeds `start..start + count` on `threads` threads. Stops early once
/// `stop_after_failures` seeds failed (0: never stop). Failures are sorted by seed.
pub fn run_seeds(
    start: u64,
    count: u64,
    opts: &SimOptions,
    threads: usize,
    stop_after_failures: usize,
) -> Report {
    let began = Instant::now();
    let next = AtomicU64::new(start);
    let end = start.saturating_add(count);
    let report = Mutex::new(Report::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r = run_seed(seed, opts);
                    let mut rep = report.lock().unwrap_or_else(|p| p.into_inner());
                    rep.seeds_run += 1;
                    match r {
                        Ok(stats) => rep.add(&stats),
                        Err(f) => {
                            rep.failures.push(f);
                            if stop_after_failures > 0 && rep.failures.len() >= stop_after_failures
                            {
                                next.store(end, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    let mut rep = report.into_inner().unwrap_or_else(|p| p.into_inner());
    rep.failures.sort_by_key(|f| f.seed);
    rep.elapsed = began.elapsed();
    rep
}
