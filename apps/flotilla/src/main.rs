//! `flotilla`: one binary for everything — the TUI, a node, the local launcher, the client,
//! and simulator runs. Exit codes: 0 clean stop, 2 bad arguments, 1 any other failure.

mod admin_cmd;
mod bench;
mod check;
mod client_cmd;
mod cluster_cmd;
mod join;
mod launcher;
mod node_cmd;
mod node_ident;
mod restore_cmd;
mod sim_cmd;
mod tui;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "flotilla", version, about = "Raft you can prove, measure and watch")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The TUI: start a local cluster and watch it live (the default with no arguments).
    Up(tui::UpArgs),
    /// Run one node process (restarting with the same data dir recovers its state).
    Node(node_cmd::NodeArgs),
    /// Local clusters without the TUI.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCmd),
    /// Key-value client: follows redirects to the leader, retries through elections.
    #[command(subcommand)]
    Kv(client_cmd::KvCmd),
    /// One table of every node's role, term, leader and indexes.
    Status(client_cmd::StatusArgs),
    /// Cluster membership: add, remove, list.
    #[command(subcommand)]
    Member(admin_cmd::MemberCmd),
    /// Hand leadership to another voter.
    TransferLeader(admin_cmd::TransferArgs),
    /// Take a snapshot on one node now (and compact its log).
    Snapshot(admin_cmd::SnapshotArgs),
    /// Seed a new node's data dir from a snapshot file: a new cluster from a backup.
    Restore(restore_cmd::RestoreArgs),
    /// Run the deterministic simulator over many seeds.
    Sim(sim_cmd::SimArgs),
    /// Load generator and failover benchmark (Flotilla or etcd); see docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Jepsen-style check of a local cluster under faults; see docs/check.md.
    Check(check::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.cmd {
        Some(Cmd::Node(args)) => match node_cmd::build_config(&args) {
            Ok(cfg) => node_cmd::run(cfg, args.http_threads()),
            Err(e) => {
                eprintln!("flotilla node: {e}");
                std::process::exit(2);
            }
        },
        Some(Cmd::Cluster(c)) => cluster_cmd::run(c),
        Some(Cmd::Kv(c)) => client_cmd::run_kv(c),
        Some(Cmd::Status(a)) => client_cmd::run_status(a),
        Some(Cmd::Member(c)) => admin_cmd::run_member(c),
        Some(Cmd::TransferLeader(a)) => admin_cmd::run_transfer(a),
        Some(Cmd::Snapshot(a)) => admin_cmd::run_snapshot(a),
        Some(Cmd::Restore(a)) => restore_cmd::run(a),
        Some(Cmd::Sim(a)) => sim_cmd::run(a),
        Some(Cmd::Bench(a)) => bench::run(a),
        Some(Cmd::Check(a)) => check::run(a),
        Some(Cmd::Up(a)) => tui::run(a),
        // A bare `flotilla` opens the TUI on a local 3-node cluster.
        None => tui::run(tui::UpArgs::default()),
    };
    if let Err(e) = result {
        eprintln!("flotilla: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
