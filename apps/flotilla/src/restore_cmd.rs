//! `flotilla restore`: seeds a new node's data dir from a snapshot file, so that a new
//! cluster starts from a backup (docs/operations.md, "Back up and restore").

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use flotilla_kv::KvStateMachine;
use flotilla_log::{FjallLogStore, Identity};
use flotilla_node::NodeConfig;
use flotilla_raft::{Membership, NodeId};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot file: a `snap-<index>-<term>.snap` copied from a node's
    /// `DATA_DIR/snapshots/` (the `.meta` beside it is not needed).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The new node's data dir. It must not exist yet (or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new node's id, one of --initial-cluster's.
    #[arg(long)]
    pub id: u64,
    /// The new cluster, ID=RAFT_HOST:PORT@API_HOST:PORT,... exactly as its nodes will be
    /// started with; give every node the same.
    #[arg(long)]
    pub initial_cluster: String,
    /// The new cluster's name (as `flotilla node --cluster-id`). Give it a new one if the
    /// old cluster may still run where the new one can reach it.
    #[arg(long, default_value = "flotilla")]
    pub cluster_id: String,
}

pub fn run(a: RestoreArgs) -> Result<()> {
    if a.id == 0 {
        return Err(anyhow!("--id must be a positive integer"));
    }
    let cluster = NodeConfig::parse_initial_cluster(&a.initial_cluster)
        .map_err(|e| anyhow!("--initial-cluster: {e}"))?;
    if !cluster.iter().any(|(id, _)| id.0 == a.id) {
        return Err(anyhow!("--initial-cluster does not name this node's id {}", a.id));
    }
    // The membership a node started with this --initial-cluster would bootstrap with.
    let mut membership = Membership::default();
    for (id, addr) in cluster {
        membership.voters.insert(id);
        membership.addrs.insert(id, addr);
    }
    if dir_has_entries(&a.data_dir)? {
        return Err(anyhow!(
            "{:?} is not empty: a restore only creates a new data dir (a running cluster's \
             nodes catch up by themselves; see docs/operations.md)",
            a.data_dir
        ));
    }
    let index = File::open(&a.snapshot)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(flotilla_kv::snapshot_stream_index(BufReader::new(f))?))
        .with_context(|| format!("reading {:?}", a.snapshot))?;

    // Built under a temporary name and renamed into place once complete, so that a failed
    // or interrupted restore never leaves a data dir a node would start from.
    let tmp = temporary_path(&a.data_dir)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {tmp:?}"))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {tmp:?}"))?;
    let seeded = seed(&a, membership, &tmp, index);
    let file = match seeded {
        Ok(file) => file,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if a.data_dir.exists() {
        std::fs::remove_dir(&a.data_dir).with_context(|| format!("replacing {:?}", a.data_dir))?;
    }
    std::fs::rename(&tmp, &a.data_dir)
        .with_context(|| format!("moving {tmp:?} to {:?}", a.data_dir))?;
    if let Some(parent) = a.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|d| d.sync_all()).ok();
    }
    let dir = a.data_dir.display();
    println!(
        "restored node {} of cluster {:?} at index {} ({} bytes of snapshot) into {dir}; start \
         it with: flotilla node --id {} --data-dir {dir} --initial-cluster {} --cluster-id {}",
        a.id, a.cluster_id, index.0, file.len, a.id, a.initial_cluster, a.cluster_id
    );
    Ok(())
}

fn seed(
    a: &RestoreArgs,
    membership: Membership,
    dir: &Path,
    index: flotilla_raft::LogIndex,
) -> Result<flotilla_node::snapshot::SnapshotFile> {
    let identity = Identity { cluster_id: a.cluster_id.clone(), node_id: NodeId(a.id) };
    let mut store = FjallLogStore::open(dir.join("db"), identity)
        .map_err(|e| anyhow!("creating the data dir: {e}"))?;
    let mut sm = KvStateMachine::open(store.database().clone())
        .map_err(|e| anyhow!("opening the state machine: {e}"))?;
    flotilla_node::restore::seed_from_snapshot(
        dir,
        &mut store,
        &mut sm,
        &a.snapshot,
        index,
        membership,
    )
    .map_err(|e| anyhow!("restoring {:?}: {e}", a.snapshot))
}

fn dir_has_entries(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("reading {dir:?}: {e}")),
    }
}

/// `DIR` → `.DIR.restoring` beside it.
fn temporary_path(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("--data-dir {dir:?} has no final component"))?
        .to_string_lossy();
    Ok(dir.with_file_name(format!(".{name}.restoring")))
}
