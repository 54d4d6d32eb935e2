//! The in-process ceiling: 3 nodes in one process, each with the real runtime (raft actor,
//! log and apply threads, group commit, persist barriers), an in-memory log
//! (`MemLogStore`, no fsync), a trivial state machine, and no network: messages go straight
//! into the peers' mailboxes (`start_node_in_process`). `--clients` concurrent proposers
//! on the leader, each with one proposal outstanding; writes/s and latency at the end.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p flotilla-node --bench inproc -- \
//!     --clients 256 --secs 10 [--one-thread] [--nodes 3] [--value-size 128]
//! ```
//!
//! Like openraft's own benchmark, this is not a real-world number: it shows how much the
//! core and the runtime can carry before disks, sockets and HTTP are added.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_log::MemLogStore;
use flotilla_node::inproc::local_net;
use flotilla_node::{
    ClientApi, NodeConfig, NodeHandle, SmError, SnapshotSource, StateMachine, start_node_in_process,
};
use flotilla_raft::{Entry, EntryPayload, LogIndex, NodeAddr, NodeId, SnapshotMeta};

/// Counts applied commands; its snapshot is the count.
struct Counter {
    applied: LogIndex,
    commands: u64,
}

struct CounterView(LogIndex, u64);

impl SnapshotSource for CounterView {
    fn index(&self) -> LogIndex {
        self.0
    }
    fn write_to(&mut self, out: &mut dyn Write) -> Result<(), SmError> {
        out.write_all(&self.1.to_be_bytes()).map_err(|e| SmError(e.to_string()))
    }
}

impl StateMachine for Counter {
    fn applied_index(&self) -> LogIndex {
        self.applied
    }
    fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Option<Bytes>>, SmError> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= self.applied {
                out.push(None);
                continue;
            }
            self.applied = e.index;
            match e.payload {
                EntryPayload::Command(_) => {
                    self.commands += 1;
                    out.push(Some(Bytes::new()));
                }
                _ => out.push(None),
            }
        }
        Ok(out)
    }
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError> {
        Ok(Box::new(CounterView(self.applied, self.commands)))
    }
    fn restore(&mut self, meta: &SnapshotMeta, r: &mut dyn Read) -> Result<(), SmError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(|e| SmError(e.to_string()))?;
        self.commands = u64::from_be_bytes(b);
        self.applied = meta.last_index;
        Ok(())
    }
}

struct Opts {
    nodes: u64,
    clients: usize,
    secs: f64,
    warmup: f64,
    value_size: usize,
    /// Each node's actors on their own thread (an actix `Arbiter`), as each node has its own
    /// process in a real cluster; `--one-thread` puts all of them on the proposers' thread.
    thread_per_node: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        nodes: 3,
        clients: 256,
        secs: 10.0,
        warmup: 2.0,
        value_size: 128,
        thread_per_node: true,
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
    let net = local_net();
    let cluster: Vec<(NodeId, NodeAddr)> = (1..=o.nodes)
        .map(|i| {
            let a = format!("inproc:{i}");
            (NodeId(i), NodeAddr { raft_addr: a.clone(), api_addr: a })
        })
        .collect();
    let mut handles: Vec<NodeHandle> = Vec::new();
    for i in 1..=o.nodes {
        let cfg = NodeConfig {
            id: NodeId(i),
            data_dir: dir.join(format!("node-{i}")),
            listen: format!("inproc:{i}"),
            api: format!("inproc:{i}"),
            advertise_peer: format!("inproc:{i}"),
            advertise_api: format!("inproc:{i}"),
            forward: flotilla_node::ForwardMode::Never,
            initial_cluster: cluster.clone(),
            join: None,
            cluster_id: "inproc".into(),
            cluster_secret: None,
            election_timeout_ms: (150, 300),
            heartbeat_ms: 50,
            tick_ms: 10,
            enable_fault_injection: false,
            admin_token: None,
            snapshot_entries: 200_000,
            request_timeout: Duration::from_secs(10),
            tls: None,
        };
        let net = net.clone();
        let start = async move {
            let sm = Counter { applied: LogIndex::ZERO, commands: 0 };
            start_node_in_process(cfg, Box::new(MemLogStore::new()), Box::new(sm), net)
                .await
                .expect("start node")
        };
        let h = if o.thread_per_node {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let arbiter = actix::Arbiter::new();
            arbiter.spawn(async move {
                let _ = tx.send(start.await);
            });
            std::mem::forget(arbiter); // runs until the process exits
            rx.await.expect("node started")
        } else {
            start.await
        };
        handles.push(h);
    }
    let leader = loop {
        let mut found = None;
        for h in &handles {
            if h.status().await["role"] == "leader" {
                found = Some(h.clone());
            }
        }
        if let Some(l) = found {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
