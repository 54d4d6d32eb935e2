//! Scenario tests of the pure core in the datadriven style of etcd-io/raft: each file in
//! `testdata/` is one scenario, narrated with `#` lines, and the exact output of every
//! directive is checked. `REWRITE=1 cargo test -p flotilla-raft --test scenarios` rewrites
//! the expected outputs; read the diff before committing it. See `docs/protocol.md`.

mod datadriven;
mod interaction;

use std::path::PathBuf;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

fn run(name: &str) {
    let mut env = interaction::Env::default();
    datadriven::run_file(&testdata(name), |d| env.handle(d));
    assert!(
        env.violations().is_empty(),
        "{name}: safety violations:\n{}",
        env.violations().join("\n")
    );
}

/// One test per scenario file, so `cargo test figure7` runs just that one.
macro_rules! scenarios {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run($file);
            }
        )*

        /// Every file in `testdata/` has a test above (a new file cannot be forgotten).
        #[test]
        fn every_testdata_file_is_run() {
            let listed = [$($file),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
            for entry in std::fs::read_dir(&dir).expect("testdata exists") {
                let name = entry.expect("readable").file_name().to_string_lossy().into_owned();
                if name.ends_with(".txt") {
                    assert!(listed.contains(&name.as_str()), "testdata/{name} has no test");
                }
            }
        }
    };
}

scenarios! {
    figure7_divergent_logs => "figure7_divergent_logs.txt",
    figure8_commit_rule => "figure8_commit_rule.txt",
    figure8_uncommitted_overwrite => "figure8_uncommitted_overwrite.txt",
    split_vote => "split_vote.txt",
    prevote_partitioned_rejoin => "prevote_partitioned_rejoin.txt",
    prevote_disabled_disruption => "prevote_disabled_disruption.txt",
    prevote_late_response => "prevote_late_response.txt",
    checkquorum_step_down => "checkquorum_step_down.txt",
    leadership_transfer => "leadership_transfer.txt",
    membership_add_remove_voters => "membership_add_remove_voters.txt",
    remove_leader => "remove_leader.txt",
    learner_catchup_promotion => "learner_catchup_promotion.txt",
    snapshot_install => "snapshot_install.txt",
    snapshot_redelivery => "snapshot_redelivery.txt",
    read_index => "read_index.txt",
    persist_order => "persist_order.txt",
    restored_cluster => "restored_cluster.txt",
}
