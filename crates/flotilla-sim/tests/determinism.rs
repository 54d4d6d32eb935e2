//! One seed, one run: the trace hash covers every traced event with its time.

use flotilla_sim::{Profile, SimOptions, run_seed};

#[test]
fn the_same_seed_gives_the_same_run() {
    for (seed, profile) in [(7, Profile::Mixed), (11, Profile::Crashes), (12, Profile::Reconfig)] {
        let opts = SimOptions { profile: Some(profile), ..SimOptions::default() };
        let a = run_seed(seed, &opts).expect("clean");
        let b = run_seed(seed, &opts).expect("clean");
        assert_eq!(a, b, "seed {seed} ran twice differently");
        assert!(a.events > 1000);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let opts = SimOptions::default();
    let a = run_seed(1, &opts).expect("clean").trace_hash;
    let b = run_seed(2, &opts).expect("clean").trace_hash;
    assert_ne!(a, b);
}

#[test]
fn runs_on_other_threads_match() {
    let opts = SimOptions { profile: Some(Profile::Network), ..SimOptions::default() };
    let here = run_seed(5, &opts).expect("clean");
    let o = opts.clone();
    let there = std::thread::spawn(move || run_seed(5, &o).expect("clean")).join().expect("joins");
    assert_eq!(here, there);
}
