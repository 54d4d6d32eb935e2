//! `flotilla bench`: the load generator and the failover benchmark (docs/benchmarks.md).
//!
//! - `flotilla bench put|get|mixed`: closed-loop clients against a Flotilla cluster (its
//!   HTTP API, one keep-alive HTTP/1.1 connection per client to the leader) or against etcd
//!   (`--target etcd`: etcd's native gRPC API, HTTP/2, through `tonic`). With `--local` the
//!   bench starts a fresh 3-node cluster of the target on 127.0.0.1 itself and measures the
//!   nodes' RSS too. A progress line on stderr, a table (or `--json`) at the end.
//! - `flotilla bench suite`: several workloads on one local cluster, JSON lines (what
//!   `scripts/compare-etcd.sh` runs).
//! - `flotilla bench failover --runs N`: kill -9 the leader of a local cluster under a
//!   write load, N times; time to a new leader and client-observed unavailability.
//!
//! The in-process ceiling (3 nodes, in-memory log, no network) is the criterion-free bench
//! `crates/flotilla-node/benches/inproc.rs`.

mod cluster;
mod etcd;
mod failover;
mod hist;
mod http;
mod load;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Writes: each client PUTs a random key of the key space, one request at a time.
    Put(LoadArgs),
    /// Linearizable reads of random keys of the (preloaded) key space.
    Get(LoadArgs),
    /// Reads and writes of random keys, `--read-percent` of them reads.
    Mixed(LoadArgs),
    /// Several workloads on one local cluster (`--local` implied), one JSON line each.
    Suite(SuiteArgs),
    /// Kill -9 the leader of a local cluster under load, `--runs` times.
    Failover(failover::FailoverArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Flotilla,
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Put,
    Get,
    Mixed,
}

impl Workload {
    fn parse(s: &str) -> Result<Workload> {
        Ok(match s {
            "put" => Workload::Put,
            "get" => Workload::Get,
            "mixed" => Workload::Mixed,
            _ => bail!("unknown workload {s:?} (put, get, mixed)"),
        })
    }
}

/// Where and how to run: shared by the load workloads and the suite.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// What to load: Flotilla's HTTP API or etcd's gRPC API.
    #[arg(long, value_enum, default_value_t = Target::Flotilla)]
    pub target: Target,
    /// The cluster's client endpoints (host:port, comma separated). Flotilla: any node's
    /// API (the bench finds the leader); etcd: the members' client URLs.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Start a fresh 3-node cluster of the target on 127.0.0.1 (fsync on), run, stop it.
    #[arg(long)]
    pub local: bool,
    /// Data dir of a `--local` cluster (default: a fresh temp dir, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First port of a `--local` cluster (Flotilla: raft P+id, api P+1000+id; etcd: client
    /// P+id, peer P+100+id).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// The etcd binary for `--target etcd --local`.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// Extra node arguments for a local cluster (Flotilla: `flotilla node` flags; etcd:
    /// etcd flags), whitespace separated.
    #[arg(long, default_value = "")]
    pub node_args: String,
    /// Sample these PIDs' RSS during the run (a local cluster's and Flotilla nodes found on
    /// this machine through /v1/status are sampled anyway).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// gRPC (HTTP/2) connections the etcd clients share.
    #[arg(long, default_value_t = 1)]
    pub etcd_conns: usize,
    /// Flotilla: HTTP/2 (h2c) connections the clients share; 0: HTTP/1.1, a connection each.
    #[arg(long, default_value_t = 0)]
    pub h2_conns: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One workload's shape.
#[derive(Args, Debug, Clone)]
pub struct Shape {
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seconds of load before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// Size of the key space the workloads draw keys from.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// `mixed`: percentage of operations that are reads.
    #[arg(long, default_value_t = 90)]
    pub read_percent: u8,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub shape: Shape,
}

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub shape: Shape,
    /// Workloads as WORKLOAD:CLIENTS, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "put:1,put:64,get:64,mixed:64")]
    pub runs: Vec<String>,
    /// Seconds the fresh cluster idles before its idle RSS is read.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Shape {
    fn check(&self) -> Result<()> {
        if self.clients == 0 || self.clients > 4096 {
            bail!("--clients must be between 1 and 4096");
        }
        if self.key_size < 4 || self.key_size > 1024 {
            bail!("--key-size must be between 4 and 1024 bytes");
        }
        if self.value_size > 1 << 20 {
            bail!("--value-size must be at most 1 MiB");
        }
        if self.keys == 0 {
            bail!("--keys must be positive");
        }
        if self.read_percent > 100 {
            bail!("--read-percent must be at most 100");
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        Ok(())
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.cmd {
        BenchCmd::Put(l) => load_once(Workload::Put, l),
        BenchCmd::Get(l) => load_once(Workload::Get, l),
        BenchCmd::Mixed(l) => load_once(Workload::Mixed, l),
        BenchCmd::Suite(s) => suite(s),
        BenchCmd::Failover(f) => failover::run(f),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn load_once(w: Workload, l: LoadArgs) -> Result<()> {
    l.shape.check()?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut local = cluster::LocalCluster::maybe_start(&l.target).await?;
        let endpoints = match &local {
            Some(c) => c.client_endpoints(),
            None => l.target.endpoints.clone(),
        };
        if endpoints.is_empty() {
            bail!("give --endpoints or --local");
        }
        let mut pids = l.target.pids.clone();
        if let Some(c) = &local {
            pids.extend(c.pids());
        }
        let res = load::run(w, &l.target, &l.shape, &endpoints, &pids, true).await;
        if let Some(c) = local.as_mut() {
            c.stop();
        }
        let res = res?;
        if l.target.json {
            println!("{}", serde_json::to_string(&res)?);
        } else {
            report::print_table(&[res]);
        }
        Ok(())
    })
}

fn suite(s: SuiteArgs) -> Result<()> {
    s.shape.check()?;
    let runs: Vec<(Workload, usize)> = s
        .runs
        .iter()
        .map(|r| {
            let (w, c) = r.split_once(':').unwrap_or((r.as_str(), "1"));
            Ok((Workload::parse(w)?, c.parse()?))
        })
        .collect::<Result<_>>()?;
    let mut targs = s.target.clone();
    targs.local = true;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut local = cluster::LocalCluster::maybe_start(&targs).await?.expect("local");
        tokio::time::sleep(s.settle).await;
        let idle = cluster::rss_line(&local.pids());
        println!(
            "{}",
            serde_json::json!({"target": targs.target, "kind": "idle_rss", "rss_kib": idle})
        );
        let endpoints = local.client_endpoints();
        let pids = local.pids();
        let mut all = Vec::new();
        for (w, c) in runs {
            let mut shape = s.shape.clone();
            shape.clients = c;
            match load::run(w, &targs, &shape, &endpoints, &pids, !targs.json).await {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r)?);
                    all.push(r);
                }
                Err(e) => eprintln!("{w:?} with {c} clients failed: {e:#}"),
            }
        }
        local.stop();
        if !targs.json {
            report::print_table_stderr(&all);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCmd,
    }

    fn parse(args: &[&str]) -> Result<BenchCmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn workloads_parse_with_their_defaults() {
        let BenchCmd::Put(l) = parse(&["put"]).unwrap() else { panic!("put") };
        assert_eq!((l.shape.clients, l.shape.key_size, l.shape.value_size), (1, 16, 128));
        assert_eq!(l.shape.duration, Duration::from_secs(10));
        assert_eq!(l.target.target, Target::Flotilla);
        let BenchCmd::Get(l) = parse(&[
            "get",
            "--target",
            "etcd",
            "--clients",
            "64",
            "--duration",
            "500ms",
            "--local",
        ])
        .unwrap() else {
            panic!("get")
        };
        assert_eq!((l.target.target, l.shape.clients, l.target.local), (Target::Etcd, 64, true));
        assert_eq!(l.shape.duration, Duration::from_millis(500));
        let BenchCmd::Mixed(l) = parse(&["mixed", "--endpoints", "a:1,b:2"]).unwrap() else {
            panic!("mixed")
        };
        assert_eq!(l.target.endpoints, ["a:1", "b:2"]);
        assert_eq!(l.shape.read_percent, 90);
        let BenchCmd::Failover(f) = parse(&["failover", "--runs", "3"]).unwrap() else {
            panic!("failover")
        };
        assert_eq!(f.runs, 3);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["put", "--target", "zookeeper"]).is_err());
        assert!(parse(&["put", "--duration", "ten"]).is_err());
        let BenchCmd::Put(l) = parse(&["put", "--clients", "0"]).unwrap() else { panic!("put") };
        assert!(l.shape.check().is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(Workload::parse("scan").is_err());
    }
}
