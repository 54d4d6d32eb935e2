//! Thousands of seeds against the real core: every safety property after every step,
//! linearizability and convergence at the end. A failure prints the seed, the property,
//! the last events and the command that replays it.

use flotilla_sim::{Profile, Report, SimOptions, run_seeds};

fn assert_clean(start: u64, count: u64, opts: SimOptions) -> Report {
    let rep = run_seeds(start, count, &opts, 1, 3);
    if let Some(f) = rep.failures.first() {
        panic!("{} of {} seeds failed; first:\n{f}", rep.failures.len(), rep.seeds_run);
    }
    assert_eq!(rep.seeds_run, count);
    assert!(rep.committed > 0 && rep.ops_ok > 0, "runs did real work: {rep:?}");
    rep
}

#[test]
fn seeds_of_every_profile_and_size_are_clean() {
    assert_clean(0, 700, SimOptions::default());
}

#[test]
fn more_seeds_of_every_profile_and_size_are_clean() {
    assert_clean(700, 700, SimOptions::default());
}

/// Crashes with both kinds of restart: from the snapshot (a volatile state machine), and
/// from a state machine that survived, whole or without its last writes, which tells the
/// core what it applied (`InitialState::applied`).
#[test]
fn three_node_crash_and_churn_seeds_are_clean() {
    for profile in [Profile::Crashes, Profile::Churn] {
        let rep = assert_clean(
            0,
            250,
            SimOptions { nodes: Some(3), profile: Some(profile), ..SimOptions::default() },
        );
        assert!(
            rep.kept_sm_restarts > 0 && rep.kept_sm_restarts < rep.crashes,
            "both kinds of restart ran: {rep:?}"
        );
    }
}

#[test]
fn seven_node_partition_and_reconfig_seeds_are_clean() {
    for profile in [Profile::Partitions, Profile::Reconfig] {
        assert_clean(
            0,
            100,
            SimOptions { nodes: Some(7), profile: Some(profile), ..SimOptions::default() },
        );
    }
}

/// Seeds that once found a core bug (see docs/simulator.md), replayed with the options
/// that found them.
#[test]
fn regression_seeds_stay_clean() {
    let crashes = SimOptions { profile: Some(Profile::Crashes), ..SimOptions::default() };
    // 118: a late snapshot made a follower drop entries it had acknowledged.
    assert_clean(118, 1, crashes);
    let mixed = SimOptions { profile: Some(Profile::Mixed), ..SimOptions::default() };
    // 301: a node that joined later snapshotted under an empty configuration.
    assert_clean(301, 1, mixed);
    // 66115 (profile drawn from the seed: network): probes of the last entry sent begot
    // probes without end; with duplicated messages, a storm of 3 million events.
    assert_clean(66115, 1, SimOptions::default());
}
