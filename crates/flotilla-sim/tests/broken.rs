//! Proof that the checks can fail: with each deliberate protocol bug switched on
//! (`flotilla-raft/broken-variants`, enabled for this crate's tests), the simulator finds
//! a violating seed within a bounded number of seeds; the real core runs the same seeds
//! clean. Runs are deterministic, so "within N seeds" is a fixed fact, re-proved by every
//! run of this test.

use std::sync::Arc;

use flotilla_raft::{Broken, Config};
use flotilla_sim::{Profile, SimOptions, run_seeds};

fn opts(profile: Profile, broken: Option<Broken>) -> SimOptions {
    let mut o = SimOptions { profile: Some(profile), ..SimOptions::default() };
    if let Some(b) = broken {
        o.core_tweak = Some(Arc::new(move |c: &mut Config| c.broken = b));
    }
    o
}

/// Runs seeds 0.. until the first failure; returns it (seed, property).
fn first_failure(o: &SimOptions, max_seeds: u64) -> Option<(u64, String)> {
    let rep = run_seeds(0, max_seeds, o, 2, 1);
    rep.failures.first().map(|f| (f.seed, f.property.clone()))
}

fn caught(profile: Profile, broken: Broken, max_seeds: u64) -> (u64, String) {
    let found = first_failure(&opts(profile, Some(broken)), max_seeds);
    let (seed, property) =
        found.unwrap_or_else(|| panic!("{broken:?} not caught in {max_seeds} seeds"));
    // The same seeds are clean with the real core: the violation is the variant's doing.
    let rep = run_seeds(0, seed + 1, &opts(profile, None), 2, 1);
    assert!(rep.failures.is_empty(), "the real core fails too: {}", rep.failures[0]);
    (seed, property)
}

#[test]
fn broken_figure8_commit_rule_is_caught() {
    let (seed, property) =
        caught(Profile::Churn, Broken { figure8: true, ..Broken::default() }, 5_000);
    eprintln!("figure8: seed {seed} violates {property}");
}

#[test]
fn broken_vote_restriction_is_caught() {
    let b = Broken { vote_restriction: true, ..Broken::default() };
    let (seed, property) = caught(Profile::Mixed, b, 200);
    eprintln!("vote_restriction: seed {seed} violates {property}");
}

#[test]
fn broken_persist_order_is_caught() {
    let b = Broken { persist_order: true, ..Broken::default() };
    let (seed, property) = caught(Profile::Churn, b, 500);
    eprintln!("persist_order: seed {seed} violates {property}");
}
