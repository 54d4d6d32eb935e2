//! In-process delivery: several nodes in one process hand their raft messages straight to
//! each other's raft actor mailboxes instead of TCP (no sockets, no framing, no
//! serialization). For the in-process benchmark (`benches/inproc.rs`), which measures the
//! ceiling of the core and this runtime without the network, and for the tests that run
//! the same cluster (`tests/inproc.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::Addr;
use bytes::Bytes;
use flotilla_log::MemLogStore;
use flotilla_raft::{Entry, EntryPayload, LogIndex, NodeAddr, NodeId, SnapshotMeta};

use crate::api::{SmError, SnapshotSource, StateMachine};
use crate::config::NodeConfig;
use crate::handle::NodeHandle;
use crate::placement::Placement;
use crate::raft_actor::RaftActor;

/// The raft actors of the nodes started with [`crate::supervisor::start_node_in_process`]
/// on one net, by id.
pub type LocalNet = Arc<RwLock<BTreeMap<NodeId, Addr<RaftActor>>>>;

/// An empty net.
pub fn local_net() -> LocalNet {
    Arc::new(RwLock::new(BTreeMap::new()))
}

/// A state machine that counts the commands it applies (and answers each with an empty
/// value): as cheap as a state machine gets. The count is shared, so that whoever started
/// the node can read it.
pub struct CountingMachine {
    applied: LogIndex,
    commands: Arc<AtomicU64>,
}

impl CountingMachine {
    pub fn new(commands: Arc<AtomicU64>) -> CountingMachine {
        CountingMachine { applied: LogIndex::ZERO, commands }
    }
}

struct CountView(LogIndex, u64);

impl SnapshotSource for CountView {
    fn index(&self) -> LogIndex {
        self.0
    }
    fn write_to(&mut self, out: &mut dyn Write) -> Result<(), SmError> {
        out.write_all(&self.1.to_be_bytes()).map_err(|e| SmError(e.to_string()))
    }
}

impl StateMachine for CountingMachine {
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
                    self.commands.fetch_add(1, Ordering::Relaxed);
                    out.push(Some(Bytes::new()));
                }
                _ => out.push(None),
            }
        }
        Ok(out)
    }
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError> {
        Ok(Box::new(CountView(self.applied, self.commands.load(Ordering::Relaxed))))
    }
    fn restore(&mut self, meta: &SnapshotMeta, r: &mut dyn Read) -> Result<(), SmError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(|e| SmError(e.to_string()))?;
        self.commands.store(u64::from_be_bytes(b), Ordering::Relaxed);
        self.applied = meta.last_index;
        Ok(())
    }
}

/// An in-process cluster of `CountingMachine`s over `MemLogStore`s.
pub struct LocalCluster {
    pub nodes: Vec<NodeHandle>,
    /// Each node's command count, in the order of `nodes`.
    pub counts: Vec<Arc<AtomicU64>>,
}

/// Starts `n` nodes (ids 1..=n) on one [`LocalNet`], their snapshots under `dir`.
/// `thread_per_node`: each node's actors on an actix `Arbiter` of its own, as each node
/// has its own process in a real cluster; else all on the caller's thread. `placement`:
/// where each node's log and apply actors run. Call inside an actix `System`.
pub async fn start_local_cluster(
    n: u64,
    dir: &Path,
    thread_per_node: bool,
    placement: Placement,
) -> LocalCluster {
    let net = local_net();
    let members: Vec<(NodeId, NodeAddr)> = (1..=n)
        .map(|i| {
            let a = format!("inproc:{i}");
            (NodeId(i), NodeAddr { raft_addr: a.clone(), api_addr: a })
        })
        .collect();
    let mut cluster = LocalCluster { nodes: Vec::new(), counts: Vec::new() };
    for i in 1..=n {
        let addr = format!("inproc:{i}");
        let cfg = NodeConfig {
            id: NodeId(i),
            data_dir: dir.join(format!("node-{i}")),
            listen: addr.clone(),
            api: addr.clone(),
            advertise_peer: addr.clone(),
            advertise_api: addr,
            forward: crate::ForwardMode::Never,
            initial_cluster: members.clone(),
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
        let count = Arc::new(AtomicU64::new(0));
        let (net, sm) = (net.clone(), CountingMachine::new(count.clone()));
        let start = async move {
            crate::start_node_in_process(
                cfg,
                Box::new(MemLogStore::new()),
                Box::new(sm),
                net,
                placement,
            )
            .await
            .expect("start an in-process node")
        };
        let handle = if thread_per_node {
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
        cluster.nodes.push(handle);
        cluster.counts.push(count);
    }
    cluster
}

impl LocalCluster {
    /// The node that reports itself leader, once one does within `timeout`.
    pub async fn leader(&self, timeout: Duration) -> Option<NodeHandle> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for h in &self.nodes {
                if h.status().await["role"] == "leader" {
                    return Some(h.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}
