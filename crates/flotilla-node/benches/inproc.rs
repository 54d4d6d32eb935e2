//! The in-process ceiling: 3 nodes in one process, each with the real runtime (raft actor,
//! log and apply threads, group commit, persist barriers), an in-memory log
//! (`MemLogStore`, no fsync), a trivial state machine, and no network: messages go straight
//! into the peers' mailboxes (`start_node_in_process`). `--clients` concurrent proposers
//! on the leader, each with one proposal outstanding; writes/s and latency at the end.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p flotilla-node --bench inproc -- \
//!     --clients 256 --secs 10 [--one-thread] [--node-thread-io] [--nodes 3] [--value-size 128]
//! ```
//!
//! `--node-thread-io` runs each node's log and apply actors on the node's own thread
//! (`Placement::NodeThread`) instead of a thread each: with a log that never blocks there
//! is nothing to keep off the raft actor's thread, and three threads per node become one.
//!
//! Like openraft's own benchmark, this is not a real-world number: it shows how much the
//! core and the runtime can carry before disks, sockets and HTTP are added.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_node::inproc::start_local_cluster;
use flotilla_node::{ClientApi, Placement};

struct Opts {
    nodes: u64,
    clients: usize,
    secs: f64,
    warmup: f64,
    value_size: usize,
    /// Each node's actors on their own thread (an actix `Arbiter`), as each node has its own
    /// process in a real cluster; `--one-thread` puts all of them on the proposers' thread.
    thread_per_node: bool,
    /// Where each node's log and apply actors run (`--node-thread-io`: beside its raft
    /// actor; default: a thread each, as in a real node).
    placement: Placement,
}

fn opts() -> Opts {
    let mut o = Opts {
        nodes: 3,
        clients: 256,
        secs: 10.0,
        warmup: 2.0,
        value_size: 128,
        thread_per_node: true,
        placement: Placement::OwnThreads,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--nodes" => o.nodes = v.parse().expect("--nodes N"),
            "--clients" => o.clients = v.parse().expect("--clients N"),
            "--secs" => o.secs = v.parse().expect("--secs S"),
            "--warmup" => o.warmup = v.parse().expect("--warmup S"),
            "--value-size" => o.value_size = v.parse().expect("--value-size B"),
            "--one-thread" => {
                o.thread_per_node = false;
                i += 1;
                continue;
            }
            "--node-thread-io" => {
                o.placement = Placement::NodeThread;
                i += 1;
                continue;
            }
            // `cargo bench` passes `--bench`; libtest-style filters are ignored.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn main() {
    let o = opts();
    let dir = std::env::temp_dir().join(format!("flotilla-inproc-{}", std::process::id()));
    let sys = actix::System::new();
    sys.block_on(run(&o, &dir));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn run(o: &Opts, dir: &std::path::Path) {
    let cluster = start_local_cluster(o.nodes, dir, o.thread_per_node, o.placement).await;
    let leader = cluster.leader(Duration::from_secs(30)).await.expect("a leader within 30 s");
    // Let the leader commit its no-op.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let payload = Bytes::from(vec![b'v'; o.value_size]);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (leader, payload, measuring, stop, done, errors) = (
            leader.clone(),
            payload.clone(),
            measuring.clone(),
            stop.clone(),
            done.clone(),
            errors.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            let mut lat_us: Vec<u32> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A buffer of its own per proposal, as an HTTP request body would be.
                let data = Bytes::copy_from_slice(&payload);
                let s = Instant::now();
                let r = leader.propose(data).await;
                if measuring.load(Ordering::Relaxed) {
                    match r {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            lat_us.push(s.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            lat_us
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((p * lat.len() as f64) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    let st = leader.status().await;
    let line = serde_json::json!({
        "bench": "inproc", "nodes": o.nodes, "clients": o.clients, "secs": elapsed,
        "value_size": o.value_size, "writes": n, "thread_per_node": o.thread_per_node,
        "io_on_node_thread": o.placement == Placement::NodeThread,
        "writes_per_s": (n as f64 / elapsed).round(),
        "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": lat.last().map_or(0.0, |v| *v as f64 / 1000.0),
        "errors": errors.load(Ordering::Relaxed),
        "commit_index": st["commit_index"],
    });
    println!(
        "in-process, {} nodes, {} clients, {}-byte values: {:.0} writes/s, p50 {:.3} ms, p99 {:.3} ms ({} errors)",
        o.nodes,
        o.clients,
        o.value_size,
        n as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
    println!("{line}");
    actix::System::current().stop();
}
