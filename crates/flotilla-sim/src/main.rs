//! `flotilla-sim`: run many seeds, or replay one with its full trace.
//!
//! ```text
//! flotilla-sim --seeds 100000 [--start 0] [--nodes 3|5|7] [--profile NAME] [--threads N] [--no-validate]
//!     [--closed-loop] [--no-linearizability]
//! flotilla-sim --seed 1234 --trace [--nodes 5] [--profile churn]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use flotilla_sim::{SimOptions, run_seed, run_seeds};

const USAGE: &str = "usage: flotilla-sim [--seeds N] [--start S] [--seed S] [--trace] [--nodes 3|5|7]
                    [--profile NAME] [--clients N] [--chaos-ticks N] [--threads N] [--no-validate]
                    [--closed-loop] [--no-linearizability]
                    [--broken figure8|vote_restriction|persist_order]  (needs --features broken-variants)";

struct Args {
    seeds: u64,
    start: u64,
    one: Option<u64>,
    threads: usize,
    opts: SimOptions,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1000,
        start: 0,
        one: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        opts: SimOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<u64, String> {
        v.ok_or(format!("{name} needs a value"))?.parse().map_err(|e| format!("{name}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => a.seeds = num(it.next(), "--seeds")?,
            "--start" => a.start = num(it.next(), "--start")?,
            "--seed" => a.one = Some(num(it.next(), "--seed")?),
            "--threads" => a.threads = num(it.next(), "--threads")? as usize,
            "--trace" => a.opts.trace = true,
            "--no-validate" => a.opts.validate = false,
            "--closed-loop" => a.opts.think_us = (0, 0),
            "--no-linearizability" => a.opts.linearizability = false,
            "--nodes" => {
                let n = num(it.next(), "--nodes")? as usize;
                if ![3, 5, 7].contains(&n) {
                    return Err("--nodes must be 3, 5 or 7".into());
                }
                a.opts.nodes = Some(n);
            }
            "--clients" => a.opts.clients = Some(num(it.next(), "--clients")? as usize),
            "--chaos-ticks" => a.opts.chaos_ticks = num(it.next(), "--chaos-ticks")?,
            "--profile" => {
                a.opts.profile = Some(it.next().ok_or("--profile needs a value")?.parse()?)
            }
            "--broken" => {
                let which = it.next().ok_or("--broken needs a value")?;
                broken(&mut a.opts, &which)?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

#[cfg(feature = "broken-variants")]
fn broken(opts: &mut SimOptions, which: &str) -> Result<(), String> {
    let mut b = flotilla_raft::Broken::default();
    match which {
        "figure8" => b.figure8 = true,
        "vote_restriction" => b.vote_restriction = true,
        "persist_order" => b.persist_order = true,
        _ => return Err(format!("unknown broken variant {which}")),
    }
    opts.core_tweak = Some(std::sync::Arc::new(move |c: &mut flotilla_raft::Config| c.broken = b));
    opts.tweak_flag = Some(format!("--broken {which}"));
    Ok(())
}

#[cfg(not(feature = "broken-variants"))]
fn broken(_: &mut SimOptions, _: &str) -> Result<(), String> {
    Err("--broken needs a build with --features broken-variants".into())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Release builds abort on panic: name the seed before the process dies.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(seed) = flotilla_sim::current_seed() {
            eprintln!(
                "panic while running seed {seed}; replay: cargo run -p flotilla-sim --release -- --seed {seed} --trace"
            );
        }
        default_hook(info);
    }));
    if let Some(seed) = args.one {
        let began = Instant::now();
        return match run_seed(seed, &args.opts) {
            Ok(s) => {
                println!(
                    "seed {seed} ok: {} nodes, profile {}, {} events, {} ms simulated, {} entries committed, {} leaders, ops ok {} unknown {} failed {}, {} crashes ({} restarted from their own state machine), {} snapshots installed, {} refused, {} offered again early, {} config changes, converged {} ms after healing, trace hash {:016x} ({:.2?})",
                    s.nodes,
                    s.profile,
                    s.events,
                    s.sim_ms,
                    s.committed,
                    s.leaders,
                    s.ops_ok,
                    s.ops_unknown,
                    s.ops_failed,
                    s.crashes,
                    s.kept_sm_restarts,
                    s.snapshots_installed,
                    s.snapshots_refused,
                    s.snapshots_offered_again,
                    s.config_changes,
                    s.heal_ms,
                    s.trace_hash,
                    began.elapsed()
                );
                ExitCode::SUCCESS
            }
            Err(f) => {
                println!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    let rep = run_seeds(args.start, args.seeds, &args.opts, args.threads, 0);
    for f in rep.failures.iter().take(5) {
        println!("{f}\n");
    }
    println!(
        "{} seeds ({}..{}) in {:.1} s on {} threads: {:.1} seeds/s; {} failed",
        rep.seeds_run,
        args.start,
        args.start + args.seeds,
        rep.elapsed.as_secs_f64(),
        args.threads,
        rep.seeds_per_second(),
        rep.failures.len()
    );
    println!(
        "clean seeds: {} events, {} entries committed, {} client ops acknowledged, {} unknown, {} crashes ({} restarted from their own state machine), {} snapshots installed, {} refused, {} offered again early, {} config changes, {} inconclusive linearizability checks, slowest convergence {} ms",
        rep.events,
        rep.committed,
        rep.ops_ok,
        rep.ops_unknown,
        rep.crashes,
        rep.kept_sm_restarts,
        rep.snapshots_installed,
        rep.snapshots_refused,
        rep.snapshots_offered_again,
        rep.config_changes,
        rep.lin_inconclusive,
        rep.heal_ms_max
    );
    if !rep.failures.is_empty() {
        let seeds: Vec<String> =
            rep.failures.iter().take(50).map(|f| format!("{}({})", f.seed, f.property)).collect();
        println!("failing seeds: {}", seeds.join(" "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
