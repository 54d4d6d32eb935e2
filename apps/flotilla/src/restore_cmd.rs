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
use flotilla_node::restore::RESTORING_DIR;
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
    let membership = NodeConfig::membership_of(&cluster);
    if let Some(other) = other_entry(&a.data_dir)? {
        return Err(anyhow!(
            "{} is not empty ({other:?}): a restore only fills a new data dir (a running \
             cluster's nodes catch up by themselves; see docs/operations.md)",
            a.data_dir.display()
        ));
    }
    let index = File::open(&a.snapshot)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(flotilla_kv::snapshot_stream_index(BufReader::new(f))?))
        .with_context(|| format!("reading {:?}", a.snapshot))?;

    // Built in a work dir inside the data dir (which may be a volume's mount point, so not
    // beside it), then moved into place. A node refuses to start while the work dir exists,
    // so an interrupted restore never leaves a data dir a node would start from.
    let created = !a.data_dir.exists();
    let work = a.data_dir.join(RESTORING_DIR);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {work:?}"))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {work:?}"))?;
    let file = match seed(&a, membership, &work, index) {
        Ok(file) => file,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            if created {
                let _ = std::fs::remove_dir(&a.data_dir);
            }
            return Err(e);
        }
    };
    let sync = |dir: &Path| File::open(dir).and_then(|d| d.sync_all());
    for name in ["snapshots", "db"] {
        let (from, to) = (work.join(name), a.data_dir.join(name));
        std::fs::rename(&from, &to).with_context(|| format!("moving {from:?} to {to:?}"))?;
    }
    sync(&a.data_dir).with_context(|| format!("syncing {:?}", a.data_dir))?;
    std::fs::remove_dir(&work).with_context(|| format!("removing {work:?}"))?;
    sync(&a.data_dir).with_context(|| format!("syncing {:?}", a.data_dir))?;
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

/// An entry of `dir` other than `lost+found` (a fresh ext4 volume's) and the work dir of an
/// interrupted restore, if any.
fn other_entry(dir: &Path) -> Result<Option<std::ffi::OsString>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("reading {dir:?}: {e}")),
    };
    for entry in rd {
        let name = entry.map_err(|e| anyhow!("reading {dir:?}: {e}"))?.file_name();
        if name != "lost+found" && name != RESTORING_DIR {
            return Ok(Some(name));
        }
    }
    Ok(None)
}
