//! `flotilla sim`: the deterministic simulator (crates/flotilla-sim) from the binary.

use anyhow::{Result, bail};
use clap::Args;
use flotilla_sim::{SimOptions, run_seeds};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 2000)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Cluster size (3, 5 or 7); drawn from each seed when omitted.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: SimArgs) -> Result<()> {
    if let Some(n) = a.nodes
        && ![3, 5, 7].contains(&n)
    {
        bail!("--nodes must be 3, 5 or 7");
    }
    let opts = SimOptions { nodes: a.nodes, ..SimOptions::default() };
    let threads =
        a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "simulating seeds {}..{} on {threads} threads: crashes, partitions, drops, reorderings, \
         membership changes and snapshots; Raft safety checked after every step",
        a.start,
        a.start + a.seeds
    );
    let rep = run_seeds(a.start, a.seeds, &opts, threads, 1);
    println!(
        "{} seeds in {:.1}s ({:.0} seeds/s): {} entries committed, {} client ops, {} crashes \
         ({} restarted from their own state machine), {} snapshots installed, {} membership changes, {} failures",
        rep.seeds_run,
        rep.elapsed.as_secs_f64(),
        rep.seeds_per_second(),
        rep.committed,
        rep.ops_ok,
        rep.crashes,
        rep.kept_sm_restarts,
        rep.snapshots_installed,
        rep.config_changes,
        rep.failures.len()
    );
    if let Some(f) = rep.failures.first() {
        eprintln!("{f}");
        bail!("the simulator found a safety violation (seed {})", f.seed);
    }
    Ok(())
}
