//! `flotilla check`: a Jepsen-style test of a real local cluster.
//!
//! It starts 3 or 5 node processes, runs concurrent clients doing put / get / cas on a few
//! keys (and write-once puts on keys of their own), records every operation with its
//! invocation and completion times and its outcome (definite, refused, or unknown), and
//! meanwhile injects faults from a seeded schedule ([`schedule`]): kill -9, SIGSTOP/SIGCONT,
//! isolation, partitions, one-way drops, restarts, membership changes, snapshots and
//! leadership transfers. At the end of each round it heals everything, waits for the
//! cluster to converge, reads every key back, and checks:
//!
//! - the register history is linearizable (per key, by the simulator's Wing–Gong–Lowe
//!   checker; on failure the smallest failing window is printed and drawn);
//! - every acknowledged write-once key is on every member, and no refused one anywhere;
//! - every member holds the same value for every key;
//! - no node exited on its own.
//!
//! A run is split into rounds with fresh keys, so a long soak is checked in pieces of
//! bounded size. The schedule and the clients' choices are a function of the seed; the
//! processes' timing is not, so a seed replays the same faults, not the same interleaving.
//! See `docs/check.md`.

mod client;
mod cluster;
mod history;
/// Also the benchmarks' key picker.
pub(crate) mod rng;
mod schedule;
mod timeline;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use serde_json::json;

use client::{ClientCtx, DurableWrite, Member, Members};
use cluster::ClusterCtl;
use history::{Op, Req, Res, Seen, Verdict};
use rng::Rng;
use schedule::{FaultKind, ScheduleOpts};
use timeline::{FaultSpan, Timeline};

/// The client id of the final reads in the history.
const FINAL_CLIENT: u32 = u32::MAX;
/// The marker file that says a directory is ours to wipe.
const MARKER: &str = ".flotilla-check";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadMode {
    Linearizable,
    Lease,
    /// Not linearizable: stale reads from any node. Use it to watch the checker fail.
    Stale,
}

impl ReadMode {
    fn param(self) -> &'static str {
        match self {
            ReadMode::Linearizable => "linearizable",
            ReadMode::Lease => "lease",
            ReadMode::Stale => "stale",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Number of nodes: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// How long to run in total, e.g. 20s, 10m, 30m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Length of one round; each round has fresh keys and ends with heal and checks.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub round: Duration,
    /// Seed of the fault schedule and the clients' choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Register keys per round.
    #[arg(long, default_value_t = 5)]
    pub keys: u8,
    /// Where node data, logs, histories, timelines and summary.json go
    /// (default ./.flotilla-check/seed-SEED; emptied first if it is ours).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Fault kinds to draw from (comma-separated; `none` for no faults).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,kill-leader,pause,pause-leader,isolate,isolate-leader,partition,one-way,restart,membership,snapshot,transfer"
    )]
    pub faults: Vec<FaultArg>,
    /// Mean quiet time between faults, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub fault_gap_ms: u64,
    /// Mean length of a fault, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub fault_ms: u64,
    /// Read consistency of the clients' GETs.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub reads: ReadMode,
    /// Search steps per key before the linearizability verdict is "inconclusive".
    #[arg(long, default_value_t = 50_000_000)]
    pub budget: u64,
    /// Print each round's fault schedule as JSON and exit without starting anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep running the remaining rounds after a failing one.
    #[arg(long)]
    pub keep_going: bool,
    /// Extra arguments for every `flotilla node`, after `--`.
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

/// A fault kind on the command line, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultArg(Option<FaultKind>);

impl std::str::FromStr for FaultArg {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultArg, String> {
        if s == "none" {
            return Ok(FaultArg(None));
        }
        FaultKind::from_str(s, true).map(|k| FaultArg(Some(k))).map_err(|_| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault {s:?}; one of none, {}", names.join(", "))
        })
    }
}

/// `500ms`, `20s`, `10m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("bad duration unit in {s:?}; use ms, s, m or h")),
    };
    if ms == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_millis(ms))
}

/// What one round found.
#[derive(Default)]
struct RoundReport {
    ops: usize,
    puts: usize,
    gets: usize,
    cas: usize,
    unknown: usize,
    refused: usize,
    max_ops_per_key: usize,
    durable_acked: usize,
    durable_refused: usize,
    durable_unknown: usize,
    /// Linearizable snapshots taken (and checked against the write-once keys).
    backups: usize,
    faults: Vec<FaultSpan>,
    /// "yes", "NO", or "inconclusive (...)".
    linearizable: String,
    window_lines: Vec<String>,
    window: Option<serde_json::Value>,
    anomalies: Vec<String>,
    notes: Vec<String>,
    inconclusive: bool,
    timeline: Option<PathBuf>,
}

impl RoundReport {
    fn failed(&self) -> bool {
        !self.anomalies.is_empty()
    }
}

/// Runs `flotilla check`; exits the process with 0 (pass), 1 (anomaly or inconclusive) or
/// 2 (bad arguments).
pub fn run(args: CheckArgs) -> Result<()> {
    if !matches!(args.nodes, 3 | 5) {
        eprintln!("flotilla check: --nodes must be 3 or 5");
        std::process::exit(2);
    }
    if args.clients == 0 || args.keys == 0 || args.keys > 200 {
        eprintln!("flotilla check: --clients must be positive and --keys between 1 and 200");
        std::process::exit(2);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let round = args.round.min(args.duration);
    let rounds = args.duration.as_millis().div_ceil(round.as_millis().max(1)) as u32;
    let kinds: Vec<FaultKind> = args.faults.iter().filter_map(|f| f.0).collect();
    let sched_opts = ScheduleOpts {
        round_ms: round.as_millis() as u64,
        kinds: kinds.clone(),
        gap_ms: args.fault_gap_ms.max(1),
        hold_ms: args.fault_ms.max(1),
        tail_ms: 1000,
    };
    if args.dry_run {
        for r in 1..=rounds {
            let s = schedule::generate(round_seed(seed, r), &sched_opts);
            println!("{}", json!({"seed": seed, "round": r, "faults": s}));
        }
        return Ok(());
    }
    let dir =
        args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("./.flotilla-check/seed-{seed}")));
    if let Err(e) = prepare_dir(&dir) {
        eprintln!("flotilla check: {e:#}");
        std::process::exit(2);
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    println!(
        "flotilla check: seed {seed}, {} nodes, {} clients, {} keys, {rounds} round(s) of {:?}, reads {}",
        args.nodes,
        args.clients,
        args.keys,
        round,
        args.reads.param()
    );
    println!("  faults: {}", if names.is_empty() { "none".into() } else { names.join(", ") });
    println!("  dir: {}", dir.display());

    let token = format!("{:032x}", rand::random::<u128>());
    let mut node_args = args.node_args.clone();
    let has = |a: &[String], flag: &str| {
        a.iter().any(|x| x == flag || x.starts_with(&format!("{flag}=")))
    };
    node_args.push("--enable-fault-injection".into());
    node_args.extend(["--admin-token".into(), token.clone()]);
    for (flag, value) in [("--request-timeout-ms", "2000"), ("--snapshot-entries", "400")] {
        if !has(&args.node_args, flag) {
            node_args.extend([flag.to_string(), value.to_string()]);
        }
    }
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    let mut ctl = ClusterCtl::start(exe, args.nodes, &dir, &token, node_args)?;
    let started = Instant::now();
    let outcome = (|| -> Result<Vec<RoundReport>> {
        ctl.wait_leader(Duration::from_secs(30)).context("the cluster did not elect a leader")?;
        let values = Arc::new(AtomicU64::new(1));
        let mut reports = Vec::new();
        let mut all_durable: Vec<DurableWrite> = Vec::new();
        for r in 1..=rounds {
            let (mut rep, durable) =
                run_round(&mut ctl, &args, seed, r, round, &sched_opts, &values, &dir)?;
            all_durable.extend(durable);
            // The last round also re-checks every round's acknowledged write-once keys.
            if r == rounds && rounds > 1 {
                verify_durable(&ctl, &all_durable, &mut rep.anomalies, &mut rep.notes, true);
            }
            print_round(r, &rep, args.nodes);
            let stop = rep.failed() && !args.keep_going;
            reports.push(rep);
            if stop {
                break;
            }
        }
        Ok(reports)
    })();
    ctl.stop();
    let reports = outcome?;
    let failed = reports.iter().any(RoundReport::failed);
    let inconclusive = reports.iter().any(|r| r.inconclusive);
    let verdict = if failed {
        "FAIL"
    } else if inconclusive {
        "INCONCLUSIVE"
    } else {
        "PASS"
    };
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let faults: usize = reports.iter().map(|r| r.faults.iter().filter(|f| f.ok).count()).sum();
    println!(
        "verdict: {verdict}  seed {seed}  ({} round(s), {ops} operations, {faults} faults, {:.0} s)",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    if failed {
        println!(
            "replay the schedule: flotilla check --seed {seed} --nodes {} --duration {:?} --round {:?}",
            args.nodes, args.duration, round
        );
    }
    for r in &reports {
        if let Some(t) = &r.timeline {
            println!("timeline: {}", t.display());
        }
    }
    write_summary(&dir, seed, &args, verdict, &reports)?;
    std::io::stdout().flush().ok();
    if verdict != "PASS" {
        std::process::exit(1);
    }
    Ok(())
}

fn round_seed(seed: u64, round: u32) -> u64 {
    Rng::derive(seed, u64::from(round)).next_u64()
}

/// Creates `dir`, or empties it if an earlier check left it; refuses anything else.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(anyhow!(
                "{} exists and was not made by flotilla check; give an empty or new --dir",
                dir.display()
            ));
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by flotilla check; safe to delete\n")?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    ctl: &mut ClusterCtl,
    args: &CheckArgs,
    seed: u64,
    r: u32,
    round: Duration,
    sched_opts: &ScheduleOpts,
    values: &Arc<AtomicU64>,
    dir: &Path,
) -> Result<(RoundReport, Vec<DurableWrite>)> {
    let rseed = round_seed(seed, r);
    let sched = schedule::generate(rseed, sched_opts);
    let keys: Vec<String> = (0..args.keys).map(|k| format!("r{r}-k{k}")).collect();
    let mut rep = RoundReport::default();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let op_timeout = Duration::from_secs(5);
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let ctx = ClientCtx {
                id: c,
                seed: rseed,
                keys: keys.clone(),
                durable_prefix: format!("r{r}-d"),
                reads: args.reads.param(),
                t0,
                stop: stop.clone(),
                members: ctl.shared.clone(),
                values: values.clone(),
                op_timeout,
            };
            std::thread::spawn(move || client::run(ctx))
        })
        .collect();
    let us = |t: Instant| t.duration_since(t0).as_micros() as u64;
    // The fault loop: waits for each fault's time, reaping nodes that exit meanwhile.
    let wait_until = |ctl: &mut ClusterCtl, at: Instant, rep: &mut RoundReport| {
        loop {
            rep.anomalies.extend(ctl.reap());
            let now = Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(50)));
        }
    };
    // Backups taken: (requested at µs, node, snapshot index).
    let mut backups: Vec<(u64, u64, u64)> = Vec::new();
    for f in &sched {
        wait_until(ctl, t0 + Duration::from_millis(f.at_ms), &mut rep);
        let start = Instant::now();
        match ctl.apply(f) {
            Ok(applied) => {
                if let Some((asked, node, index)) = applied.backup {
                    backups.push((us(asked), node, index));
                }
                println!(
                    "  [{:>7.2}s] {} ({} ms)",
                    us(start) as f64 / 1e6,
                    applied.desc,
                    f.hold_ms
                );
                wait_until(ctl, start + Duration::from_millis(f.hold_ms), &mut rep);
                let desc = applied.desc.clone();
                if let Err(e) = ctl.undo(applied.undo) {
                    rep.notes.push(format!("undoing {desc}: {e:#}"));
                }
                rep.faults.push(FaultSpan {
                    start_us: us(start),
                    end_us: us(Instant::now()),
                    desc,
                    ok: true,
                });
            }
            Err(e) => {
                let desc = format!("{} not applied: {e:#}", f.kind.name());
                println!("  [{:>7.2}s] {desc}", us(start) as f64 / 1e6);
                rep.notes.push(desc.clone());
                rep.faults.push(FaultSpan {
                    start_us: us(start),
                    end_us: us(start),
                    desc,
                    ok: false,
                });
            }
        }
    }
    wait_until(ctl, t0 + round, &mut rep);
    stop.store(true, Ordering::SeqCst);
    let mut ops: Vec<Op> = Vec::new();
    let mut durable: Vec<DurableWrite> = Vec::new();
    for h in handles {
        let log = h.join().map_err(|_| anyhow!("a client thread panicked"))?;
        ops.extend(log.ops);
        durable.extend(log.durable);
    }
    ops.sort_by_key(|o| (o.call_us, o.client));

    // Heal, converge, read everything back.
    for e in ctl.heal_all() {
        rep.notes.push(e);
    }
    rep.anomalies.extend(ctl.reap());
    match ctl.converge(Duration::from_secs(60)) {
        Ok(_) => {}
        Err(e) => rep.anomalies.push(format!("after healing every fault: {e:#}")),
    }
    final_reads(ctl, &keys, t0, &mut ops, &mut rep);
    verify_durable(ctl, &durable, &mut rep.anomalies, &mut rep.notes, false);
    rep.backups = backups.len();
    rep.anomalies.extend(verify_backups(&backups, &durable));
    rep.anomalies.extend(ctl.reap());

    // Count and check.
    rep.ops = ops.len();
    for o in &ops {
        match o.req {
            Req::Put { .. } => rep.puts += 1,
            Req::Get => rep.gets += 1,
            Req::Cas { .. } => rep.cas += 1,
        }
        rep.unknown += usize::from(o.is_unknown());
        rep.refused += usize::from(o.is_refused());
    }
    for d in &durable {
        match d.res {
            Res::Written => rep.durable_acked += 1,
            Res::Refused { .. } => rep.durable_refused += 1,
            _ => rep.durable_unknown += 1,
        }
    }
    rep.max_ops_per_key = history::ops_per_key(&ops).values().copied().max().unwrap_or(0);
    let (verdict, inconsistent) = history::check(&ops, args.budget);
    for i in inconsistent {
        let o = &ops[i.op];
        rep.anomalies.push(format!(
            "{} at {:.3}s (c{}, {}): {}",
            keys[o.key as usize],
            o.call_us as f64 / 1e6,
            o.client,
            o.describe(),
            i.why
        ));
    }
    let window = match verdict {
        Verdict::Linearizable => {
            rep.linearizable = "yes".into();
            None
        }
        Verdict::Inconclusive { key, ops } => {
            rep.linearizable = format!(
                "inconclusive (key {} with {ops} operations exceeded the search budget)",
                keys[key as usize]
            );
            rep.inconclusive = true;
            None
        }
        Verdict::Violation(w) => {
            rep.linearizable = "NO".into();
            rep.anomalies.push(format!("key {} is not linearizable", keys[w.key as usize]));
            rep.window_lines.push(format!(
                "smallest failing window: key {}, {:.3}s – {:.3}s, {} operations (no order explains them, whatever the key held before):",
                keys[w.key as usize],
                w.from_us as f64 / 1e6,
                w.to_us as f64 / 1e6,
                w.ops.len()
            ));
            for &i in &w.ops {
                let o = &ops[i];
                rep.window_lines.push(format!(
                    "    {:>9.3}s – {:>9.3}s  {:<6} {}{}",
                    o.call_us as f64 / 1e6,
                    o.ret_us as f64 / 1e6,
                    if o.client == FINAL_CLIENT {
                        "final".to_string()
                    } else {
                        format!("c{}", o.client)
                    },
                    o.describe(),
                    o.node.map_or(String::new(), |n| format!("  (node {n})"))
                ));
            }
            rep.window = Some(json!({
                "key": keys[w.key as usize], "from_us": w.from_us, "to_us": w.to_us,
                "ops": w.ops.iter().map(|i| serde_json::to_value(&ops[*i]).unwrap_or_default()).collect::<Vec<_>>(),
            }));
            Some(w)
        }
    };
    // The record: the history as JSON lines, and the timeline.
    let base = dir.join(format!("round-{r:03}"));
    let mut jsonl = String::new();
    for o in &ops {
        jsonl.push_str(&serde_json::to_string(o)?);
        jsonl.push('\n');
    }
    std::fs::write(base.with_extension("history.jsonl"), jsonl)?;
    let rounds_total = args.duration.as_millis().div_ceil(round.as_millis().max(1)) as u32;
    if rep.failed() || rep.inconclusive || r == 1 || r == rounds_total {
        let path = base.with_extension("html");
        let mut summary = vec![format!("seed {seed}, round {r}, {} nodes", args.nodes)];
        summary.push(format!("linearizable: {}", rep.linearizable));
        summary.extend(rep.anomalies.iter().cloned());
        timeline::write(
            &path,
            &Timeline {
                title: format!("flotilla check — seed {seed}, round {r}"),
                summary,
                keys: &keys,
                ops: &ops,
                faults: &rep.faults,
                window: window.as_ref(),
            },
        )?;
        rep.timeline = Some(path);
    }
    Ok((rep, durable))
}

/// A linearizable read of every key through the cluster, recorded in the history (they
/// come after everything, so they check that every acknowledged write survived), then a
/// stale read of every key on every member: all members must agree with it.
fn final_reads(
    ctl: &ClusterCtl,
    keys: &[String],
    t0: Instant,
    ops: &mut Vec<Op>,
    rep: &mut RoundReport,
) {
    let agent = client::agent(Duration::from_secs(4));
    let mut rng = Rng::new(0);
    let mut finals: Vec<Option<Option<Seen>>> = vec![None; keys.len()];
    for (k, key) in keys.iter().enumerate() {
        for _ in 0..5 {
            let call_us = t0.elapsed().as_micros() as u64;
            let (res, node) = client::read(
                &agent,
                &ctl.shared,
                &mut rng,
                key,
                "linearizable",
                Duration::from_secs(5),
            );
            let ret_us = t0.elapsed().as_micros() as u64;
            let definite = match &res {
                Res::Read { value } => {
                    finals[k] = Some(value.clone());
                    true
                }
                _ => false,
            };
            ops.push(Op {
                client: FINAL_CLIENT,
                key: k as u8,
                call_us,
                ret_us,
                req: Req::Get,
                res,
                node,
            });
            if definite {
                break;
            }
        }
        if finals[k].is_none() {
            rep.anomalies.push(format!("the final read of {key} never got a definite answer"));
        }
    }
    for id in ctl.members() {
        let one: Members = Arc::new(std::sync::RwLock::new(vec![Member {
            id,
            api: ctl.url(id).trim_start_matches("http://").to_string(),
        }]));
        for (k, key) in keys.iter().enumerate() {
            let (res, _) =
                client::read(&agent, &one, &mut rng, key, "stale", Duration::from_secs(3));
            match (res, &finals[k]) {
                (Res::Read { value }, Some(f)) if value == *f => {}
                (Res::Read { value }, Some(f)) => rep.anomalies.push(format!(
                    "node {id} holds {key} = {} after converging, but the final read says {}",
                    value.map_or("absent".into(), |v| v.to_string()),
                    f.as_ref().map_or("absent".into(), |v| v.to_string())
                )),
                (Res::Read { .. }, None) => {}
                (other, _) => {
                    rep.notes.push(format!("stale read of {key} on node {id}: {other:?}"))
                }
            }
        }
    }
}

/// A backup (`POST /v1/admin/snapshot?consistency=linearizable`) must hold every write
/// acknowledged before it was requested: its index is at or past each such write's index.
/// `backups`: (requested at µs, node, snapshot index).
fn verify_backups(backups: &[(u64, u64, u64)], durable: &[DurableWrite]) -> Vec<String> {
    let mut anomalies = Vec::new();
    for &(at_us, node, index) in backups {
        let missed = durable
            .iter()
            .filter(|d| matches!(d.res, Res::Written) && d.ret_us < at_us)
            .filter_map(|d| Some((d, d.index?)))
            .filter(|(_, written)| *written > index)
            .max_by_key(|(_, written)| *written);
        if let Some((d, written)) = missed {
            anomalies.push(format!(
                "backup on node {node} at index {index} misses write-once key {} (written at \
                 index {written}, acknowledged {} µs before the backup was asked for)",
                d.key,
                at_us - d.ret_us
            ));
        }
    }
    anomalies
}

/// Every acknowledged write-once key must be on every member with its value; refused ones
/// on none; unknown ones either absent or with their value.
fn verify_durable(
    ctl: &ClusterCtl,
    durable: &[DurableWrite],
    anomalies: &mut Vec<String>,
    notes: &mut Vec<String>,
    acked_only: bool,
) {
    let agent = client::agent(Duration::from_secs(4));
    let mut rng = Rng::new(1);
    let mut missing = 0usize;
    for id in ctl.members() {
        let one: Members = Arc::new(std::sync::RwLock::new(vec![Member {
            id,
            api: ctl.url(id).trim_start_matches("http://").to_string(),
        }]));
        for d in durable.iter().filter(|d| !acked_only || d.res == Res::Written) {
            let (res, _) =
                client::read(&agent, &one, &mut rng, &d.key, "stale", Duration::from_secs(3));
            let Res::Read { value } = res else {
                notes.push(format!("could not read {} on node {id}: {res:?}", d.key));
                continue;
            };
            let ours = value == Some(Seen::Ours(d.value));
            let problem = match (&d.res, &value) {
                (Res::Written, _) if !ours => Some("acknowledged write is missing"),
                (Res::Refused { .. }, Some(_)) => Some("refused write was applied"),
                (Res::Unknown { .. }, Some(_)) if !ours => Some("holds a value nobody wrote"),
                _ => None,
            };
            if let Some(p) = problem {
                missing += 1;
                if missing <= 20 {
                    anomalies.push(format!(
                        "{}: {p} on node {id} (wrote {}, {:?} by node {:?}; found {})",
                        d.key,
                        d.value,
                        d.res,
                        d.node,
                        value.map_or("nothing".into(), |v| v.to_string())
                    ));
                }
            }
        }
    }
    if missing > 20 {
        anomalies.push(format!("... {} more write-once key problems", missing - 20));
    }
}

fn print_round(r: u32, rep: &RoundReport, nodes: u64) {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in rep.faults.iter().filter(|f| f.ok) {
        let kind: String = f.desc.split_whitespace().take(1).collect();
        *kinds.entry(kind).or_insert(0) += 1;
    }
    println!(
        "round {r}: {} operations ({} put, {} get, {} cas; {} unknown, {} refused), {} write-once keys, {} faults {:?}",
        rep.ops,
        rep.puts,
        rep.gets,
        rep.cas,
        rep.unknown,
        rep.refused,
        rep.durable_acked + rep.durable_refused + rep.durable_unknown,
        rep.faults.iter().filter(|f| f.ok).count(),
        kinds
    );
    println!(
        "  linearizable: {} (up to {} operations per key)",
        rep.linearizable, rep.max_ops_per_key
    );
    println!(
        "  write-once keys: {} acknowledged, {} refused, {} unknown; checked on every member",
        rep.durable_acked, rep.durable_refused, rep.durable_unknown
    );
    if rep.backups > 0 {
        println!(
            "  backups: {} linearizable snapshots, checked against every write-once key acknowledged before each",
            rep.backups
        );
    }
    let _ = nodes;
    for l in &rep.window_lines {
        println!("  {l}");
    }
    for a in &rep.anomalies {
        println!("  ANOMALY: {a}");
    }
    for n in rep.notes.iter().take(10) {
        println!("  note: {n}");
    }
    if rep.notes.len() > 10 {
        println!("  note: ... {} more", rep.notes.len() - 10);
    }
}

fn write_summary(
    dir: &Path,
    seed: u64,
    args: &CheckArgs,
    verdict: &str,
    reports: &[RoundReport],
) -> Result<()> {
    let rounds: Vec<serde_json::Value> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "round": i + 1,
                "ops": r.ops, "puts": r.puts, "gets": r.gets, "cas": r.cas,
                "unknown": r.unknown, "refused": r.refused,
                "max_ops_per_key": r.max_ops_per_key,
                "durable_acked": r.durable_acked, "durable_refused": r.durable_refused,
                "durable_unknown": r.durable_unknown,
                "faults": r.faults,
                "linearizable": r.linearizable,
                "window": r.window,
                "anomalies": r.anomalies,
                "notes": r.notes,
                "timeline": r.timeline,
            })
        })
        .collect();
    let summary = json!({
        "seed": seed, "nodes": args.nodes, "clients": args.clients, "keys": args.keys,
        "reads": args.reads.param(), "verdict": verdict, "rounds": rounds,
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_must_hold_every_write_acknowledged_before_it_was_asked_for() {
        let w = |key: &str, ret_us, index, res| DurableWrite {
            key: key.into(),
            value: 1,
            res,
            node: Some(1),
            ret_us,
            index: Some(index),
        };
        let unknown = || Res::Unknown { why: "timeout".into() };
        let durable = [
            w("before-low", 60, 9, Res::Written),
            w("before-high", 50, 12, Res::Written),
            w("after", 150, 20, Res::Written),
            w("unknown", 40, 30, unknown()),
        ];
        // Asked for at 100 µs: the write acknowledged at 50 µs, at index 12, must be in it.
        let got = verify_backups(&[(100, 2, 10)], &durable);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("node 2 at index 10 misses write-once key before-high"), "{got:?}");
        // At index 12 it holds both; a write acknowledged later, or not at all, is no concern.
        assert_eq!(verify_backups(&[(100, 2, 12)], &durable), Vec::<String>::new());
        assert_eq!(verify_backups(&[(30, 3, 0)], &durable), Vec::<String>::new());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn fault_names_parse() {
        assert_eq!("kill-leader".parse::<FaultArg>(), Ok(FaultArg(Some(FaultKind::KillLeader))));
        assert_eq!("none".parse::<FaultArg>(), Ok(FaultArg(None)));
        assert!("explode".parse::<FaultArg>().is_err());
    }
}
