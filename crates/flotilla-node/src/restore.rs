//! Seeding a new node's data dir from a snapshot file: how a new cluster starts from a
//! backup (`flotilla restore`, docs/operations.md "Back up and restore").
//!
//! Every node of the new cluster is seeded from the same file with the same membership, so
//! they all start from one state: a log that begins at the snapshot's index in term 1, the
//! state machine restored to that index, and the file itself as the node's current
//! snapshot (what it sends a follower that needs one). The new cluster's first leader is
//! elected in term 2 and goes on from the next index. Nothing of the old cluster's terms,
//! votes or membership is kept: it is a new cluster that holds the old one's state.

use std::path::Path;

use flotilla_log::LogStore;
use flotilla_raft::{HardState, LogIndex, Membership, SnapshotMeta, Term};

use crate::api::StateMachine;
use crate::snapshot::{SnapshotFile, copy_snapshot_file};
use crate::supervisor::{BOOTSTRAP_KEY, StartError};

/// The work dir of a restore inside the data dir. A node refuses to start while it exists:
/// the restore that made it was interrupted (see [`interrupted_restore`]).
pub const RESTORING_DIR: &str = ".restoring";

/// Why a node must not start from `data_dir`: a restore into it did not finish, so it
/// may hold part of a seeded state (or none, beside nodes that hold one).
pub fn interrupted_restore(data_dir: &Path) -> Option<String> {
    let work = data_dir.join(RESTORING_DIR);
    work.exists().then(|| {
        format!(
            "{} exists: a restore into this data dir was interrupted; empty the data dir and \
             run flotilla restore again",
            work.display()
        )
    })
}

/// The term a restored log starts in.
pub const RESTORED_TERM: Term = Term(1);

/// Seeds a fresh node's `data_dir` (whose `store` and `sm` are open and empty) from the
/// snapshot stream in `snapshot`, which describes the state at `index`, for a new cluster
/// of `membership`. The state machine checks the whole stream before anything is recorded
/// in the log store; on an error the data dir must be thrown away (`flotilla restore`
/// builds it in a work dir, [`RESTORING_DIR`]).
pub fn seed_from_snapshot(
    data_dir: &Path,
    store: &mut dyn LogStore,
    sm: &mut dyn StateMachine,
    snapshot: &Path,
    index: LogIndex,
    membership: Membership,
) -> Result<SnapshotFile, StartError> {
    let state = store.load()?;
    if store.last_index() > LogIndex::ZERO
        || state.snapshot.is_some()
        || sm.applied_index() > LogIndex::ZERO
    {
        return Err(StartError::Config("a restore needs an empty data dir".into()));
    }
    if index == LogIndex::ZERO {
        return Err(StartError::Config(
            "the snapshot describes index 0: nothing to restore".into(),
        ));
    }
    let meta = SnapshotMeta { last_index: index, last_term: RESTORED_TERM, membership };
    // Copy first, then restore from the copy: what the state machine checked is what the
    // node keeps and sends.
    let file = copy_snapshot_file(snapshot, &data_dir.join("snapshots"), meta.clone())
        .map_err(|e| StartError::Config(format!("copying {snapshot:?}: {e}")))?;
    let copy = std::fs::File::open(&file.path)
        .map_err(|e| StartError::Config(format!("opening {:?}: {e}", file.path)))?;
    let mut reader = std::io::BufReader::new(copy);
    sm.restore(&meta, &mut reader).map_err(|e| StartError::StateMachine(e.0))?;
    let bootstrap = serde_json::to_vec(&meta.membership)
        .map_err(|e| StartError::Config(format!("encoding the membership: {e}")))?;
    store.put_meta(BOOTSTRAP_KEY, &bootstrap)?;
    let hs = HardState { term: RESTORED_TERM, voted_for: None, commit: index };
    store.write(Some(&hs), &[])?;
    store.reset_to_snapshot(&meta)?;
    Ok(file)
}
