//! `NodeSupervisor`: recovers a node from its data dir and starts its actors. Actors that
//! can recover by restarting (the raft actor, the clock, the peer links) run under actix's
//! `Supervisor`; the disk threads run on `SyncArbiter`s, which replace a stopped actor. A
//! panic is not recoverable inside actix, so release builds abort (`panic = "abort"`) and
//! the launcher restarts the whole process.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use flotilla_log::LogStore;
use flotilla_raft::{Config, InitialState, LogIndex, Membership, RaftCore};
use flotilla_wire::handshake::HandshakeConfig;
use thiserror::Error;

use crate::api::StateMachine;
use crate::apply_actor::ApplyPort;
use crate::config::NodeConfig;
use crate::election_actor::ElectionActor;
use crate::forward::Forwarder;
use crate::handle::NodeHandle;
use crate::inproc::LocalNet;
use crate::log_actor::LogPort;
use crate::placement::Placement;
use crate::raft_actor::RaftActor;
use crate::shared::Shared;
use crate::snapshot::{
    SnapshotActor, SnapshotFile, TRANSFER_GIVE_UP_AFTER, delete_snapshot, list_snapshots,
};
use crate::transport::Listener;

pub(crate) const BOOTSTRAP_KEY: &str = "bootstrap_membership";

#[derive(Debug, Error)]
pub enum StartError {
    #[error("{0}")]
    Log(#[from] flotilla_log::LogError),
    #[error("state machine: {0}")]
    StateMachine(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

/// Starts a node inside the current actix `System`. `store` and `sm` are the node's durable
/// log and state machine (usually sharing one fjall database).
pub async fn start_node(
    cfg: NodeConfig,
    store: Box<dyn LogStore>,
    sm: Box<dyn StateMachine>,
) -> Result<NodeHandle, StartError> {
    start(cfg, store, sm, None, Placement::OwnThreads).await
}

/// Starts a node whose raft messages travel through `net` to the other nodes started on it
/// in this process, instead of TCP (`cfg.listen` is not bound). For the in-process
/// benchmark. `placement` says where its log and apply actors run: on threads of their
/// own as in a real node, or (for a log and state machine that never block) on the thread
/// that calls this, beside the raft actor.
pub async fn start_node_in_process(
    cfg: NodeConfig,
    store: Box<dyn LogStore>,
    sm: Box<dyn StateMachine>,
    net: LocalNet,
    placement: Placement,
) -> Result<NodeHandle, StartError> {
    start(cfg, store, sm, Some(net), placement).await
}

async fn start(
    cfg: NodeConfig,
    mut store: Box<dyn LogStore>,
    sm: Box<dyn StateMachine>,
    net: Option<LocalNet>,
    placement: Placement,
) -> Result<NodeHandle, StartError> {
    if let Some(why) = crate::restore::interrupted_restore(&cfg.data_dir) {
        return Err(StartError::Config(why));
    }
    let bootstrap = recover_bootstrap(&cfg, store.as_mut())?;
    let snapshot_dir = cfg.data_dir.join("snapshots");
    std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| StartError::Config(format!("creating {snapshot_dir:?}: {e}")))?;
    let mut state = store.load()?;
    let snap_index = state.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.last_index);
    if reconcile_snapshots(store.as_mut(), sm.as_ref(), &snapshot_dir, snap_index)? {
        state = store.load()?;
    }
    let snap_index = state.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.last_index);
    let current =
        list_snapshots(&snapshot_dir).into_iter().find(|f| f.meta.last_index == snap_index);
    if current.is_none() && snap_index > LogIndex::ZERO {
        tracing::warn!(%snap_index, dir = ?snapshot_dir, "the recorded snapshot's file is missing; \
                       followers that need it wait for the next one");
    }

    // The state machine must cover everything the log no longer holds.
    let mut sm = sm;
    if sm.applied_index() < snap_index {
        let file = current.clone().ok_or_else(|| {
            StartError::Config(format!(
                "the log is compacted up to {snap_index} but no snapshot file covers it in {snapshot_dir:?}; \
                 the data dir is damaged"
            ))
        })?;
        let mut reader = std::io::BufReader::new(
            std::fs::File::open(&file.path).map_err(|e| StartError::StateMachine(e.to_string()))?,
        );
        sm.restore(&file.meta, &mut reader).map_err(|e| StartError::StateMachine(e.0))?;
    }
    let applied = sm.applied_index();

    let (lo, hi) = cfg.election_ticks();
    let mut rc = Config::new(cfg.id, rand::random());
    rc.election_ticks_min = lo;
    rc.election_ticks_max = hi;
    rc.heartbeat_ticks = cfg.heartbeat_ticks();
    rc.max_msg_bytes = 256 * 1024;
    rc.max_inflight_msgs = 32;
    // After a snapshot keep at most one snapshot interval of entries below it (and at most
    // the core's default): a follower that lags a little catches up by log, one that lags
    // more than an interval needs the snapshot anyway.
    if cfg.snapshot_entries > 0 {
        rc.compaction_keep_entries = rc.compaction_keep_entries.min(cfg.snapshot_entries);
    }
    // The runtime has its own transfer timeout (no progress for TRANSFER_GIVE_UP_AFTER);
    // the core's only has to catch a transfer the runtime lost track of.
    let give_up_ms = TRANSFER_GIVE_UP_AFTER.as_millis() as u64 * 2;
    rc.snapshot_timeout_ticks = (give_up_ms / cfg.tick_ms.max(1)).min(u64::from(u32::MAX)) as u32;
    let init = InitialState {
        hard_state: state.hard_state,
        snapshot: state.snapshot.clone(),
        log_start: state.log_start,
        entries: state.entries,
        bootstrap,
        // The state machine kept what it applied before the restart: the core goes on from
        // there instead of handing those entries over again.
        applied,
    };
    let core = RaftCore::new(rc, init);
    let shared = Shared::new(cfg.id, applied);
    shared.set_term(core.term());

    let store = Arc::new(Mutex::new(store));
    let log = LogPort::start(store, placement);
    let apply = ApplyPort::start(Arc::new(Mutex::new(sm)), shared.clone(), placement);
    let writer = SyncArbiter::start(1, || SnapshotActor);
    let snapshot_io = SyncArbiter::start(1, || SnapshotActor);

    // The peers we accept (the raft actor keeps this up to date); set now, so that no
    // connection slips in before the actor starts. Empty only on a node that is not a
    // member yet.
    let m = core.membership();
    let members = if m.contains(cfg.id) { m.members() } else { BTreeSet::new() };
    let known: Arc<RwLock<BTreeSet<flotilla_raft::NodeId>>> = Arc::new(RwLock::new(members));
    let filter = known.clone();
    let mut hs = HandshakeConfig::new(cfg.cluster_id.clone(), cfg.id)
        // An empty set (a node that is not a member yet) accepts any peer of the cluster.
        .accept_if(move |id| {
            filter.read().map(|k| k.is_empty() || k.contains(&id)).unwrap_or(false)
        });
    if let Some(secret) = &cfg.cluster_secret {
        hs = hs.with_secret(secret.clone());
    }
    let hs = Arc::new(hs);

    let listener = match net {
        Some(_) => None,
        None => Some(
            tokio::net::TcpListener::bind(&cfg.listen)
                .await
                .map_err(|e| StartError::Bind { addr: cfg.listen.clone(), source: e })?,
        ),
    };

    let tick = Duration::from_millis(cfg.tick_ms.max(1));
    let request_timeout = cfg.request_timeout;
    let election_max_ms = cfg.election_timeout_ms.1;
    let (cfg2, shared2, hs2, known2) = (cfg.clone(), shared.clone(), hs.clone(), known.clone());
    let net2 = net.clone();
    let raft = Supervisor::start(move |_| {
        let mut actor = RaftActor::new(core, cfg2, shared2, log, apply, hs2, known2, snapshot_dir);
        actor.snapshots.current = current;
        actor.snapshots.writer = Some(writer);
        actor.local_net = net2;
        actor.snapshots.io = Some(snapshot_io);
        actor
    });
    if let Some(net) = &net
        && let Ok(mut n) = net.write()
    {
        n.insert(cfg.id, raft.clone());
    }
    if let Some(url) = cfg.join.clone() {
        crate::join::spawn_seed_fetch(url, raft.clone(), known.clone(), cfg.tls.clone());
    }
    let clock_raft = raft.clone();
    Supervisor::start(move |_| ElectionActor { raft: clock_raft, tick });
    if listener.is_some() {
        let tls = cfg.tls.clone();
        Listener { listener, handshake: hs, raft: raft.clone(), shared: shared.clone(), tls }
            .start();
    }

    let forwarder = Forwarder::new(
        cfg.forward,
        cfg.advertise_api.clone(),
        request_timeout,
        election_max_ms,
        shared.clone(),
        cfg.tls.clone(),
    );
    Ok(NodeHandle::new(raft, shared, cfg.id, request_timeout, election_max_ms, forwarder))
}

/// Brings the log store in line with the snapshot files after a crash between writing a
/// snapshot file and recording it in the store: a build (file renamed, metadata not saved)
/// or an install (file received; state machine restored or not; log not reset). For the
/// newest file newer than the store's snapshot:
/// - the log holds its last entry: the file describes a prefix of our log; record it;
/// - the state machine already reflects it (the restore finished): finish the install by
///   resetting the log to it;
/// - neither: the install never began; delete the file (the leader sends it again) and
///   look at the next one.
///
/// Returns true if the store changed.
fn reconcile_snapshots(
    store: &mut dyn LogStore,
    sm: &dyn StateMachine,
    dir: &std::path::Path,
    stored: LogIndex,
) -> Result<bool, StartError> {
    let mut files: Vec<SnapshotFile> = list_snapshots(dir);
    while let Some(f) = files.pop().filter(|f| f.meta.last_index > stored) {
        let m = &f.meta;
        if store.term(m.last_index)? == Some(m.last_term) {
            tracing::warn!(index = %m.last_index, "recording a snapshot a crash left unrecorded");
            store.save_snapshot_meta(m)?;
            return Ok(true);
        }
        if sm.applied_index() >= m.last_index {
            tracing::warn!(index = %m.last_index, "finishing a snapshot install a crash interrupted");
            store.reset_to_snapshot(m)?;
            return Ok(true);
        }
        tracing::warn!(index = %m.last_index, "dropping a received snapshot that was never installed");
        delete_snapshot(&f);
    }
    Ok(false)
}

/// The initial cluster is recorded on first start; later starts use the recorded one, so a
/// node cannot silently change clusters.
fn recover_bootstrap(cfg: &NodeConfig, store: &mut dyn LogStore) -> Result<Membership, StartError> {
    let given = cfg.bootstrap_membership();
    match store.get_meta(BOOTSTRAP_KEY)? {
        Some(bytes) => {
            let stored: Membership = serde_json::from_slice(&bytes).map_err(|e| {
                StartError::Config(format!("stored bootstrap membership is unreadable: {e}"))
            })?;
            if !given.voters.is_empty() && given.voters != stored.voters {
                return Err(StartError::Config(format!(
                    "--initial-cluster names voters {:?} but this data dir was bootstrapped with {:?}",
                    given.voters.iter().map(|i| i.0).collect::<Vec<_>>(),
                    stored.voters.iter().map(|i| i.0).collect::<Vec<_>>()
                )));
            }
            Ok(stored)
        }
        None => {
            let bytes =
                serde_json::to_vec(&given).map_err(|e| StartError::Config(e.to_string()))?;
            store.put_meta(BOOTSTRAP_KEY, &bytes)?;
            Ok(given)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use bytes::Bytes;
    use flotilla_log::MemLogStore;
    use flotilla_raft::{Entry, EntryPayload, NodeId, SnapshotMeta, Term};
    use flotilla_wire::SnapshotId;

    use super::*;
    use crate::api::{SmError, SnapshotSource};
    use crate::snapshot::{SnapshotFile, write_meta_sidecar};

    /// A state machine that only says how far it applied.
    struct Applied(u64);

    impl StateMachine for Applied {
        fn applied_index(&self) -> LogIndex {
            LogIndex(self.0)
        }
        fn apply(&mut self, _: &[Entry]) -> Result<Vec<Option<Bytes>>, SmError> {
            Err(SmError("not in this test".into()))
        }
        fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError> {
            Err(SmError("not in this test".into()))
        }
        fn restore(&mut self, _: &SnapshotMeta, _: &mut dyn Read) -> Result<(), SmError> {
            Err(SmError("not in this test".into()))
        }
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_index: LogIndex(index),
            last_term: Term(term),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        }
    }

    /// A complete snapshot file (data and sidecar) as a build or a received transfer leaves.
    fn snapshot_file(dir: &std::path::Path, m: SnapshotMeta) -> SnapshotFile {
        let path = dir.join(format!("snap-{:020}-{:020}.snap", m.last_index.0, m.last_term.0));
        std::fs::write(&path, b"state").unwrap();
        let file = SnapshotFile { meta: m, path, len: 5, checksum: 0, id: SnapshotId(7) };
        write_meta_sidecar(&file).unwrap();
        file
    }

    /// Entries 1..=last, each of `term_of(index)`.
    fn store_with(last: u64, term_of: impl Fn(u64) -> u64) -> MemLogStore {
        let mut store = MemLogStore::new();
        let entries: Vec<Entry> = (1..=last)
            .map(|i| Entry {
                term: Term(term_of(i)),
                index: LogIndex(i),
                payload: EntryPayload::Noop,
            })
            .collect();
        store.write(None, &entries).unwrap();
        store
    }

    fn stored_snapshot(store: &MemLogStore) -> Option<LogIndex> {
        store.load().unwrap().snapshot.map(|m| m.last_index)
    }

    /// A build wrote its file and crashed before the store recorded it: the log holds the
    /// file's last entry, so the file describes a prefix of it and is recorded, log kept.
    #[test]
    fn a_built_snapshot_the_crash_left_unrecorded_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(10, |_| 1);
        snapshot_file(dir.path(), meta(6, 1));
        let changed = reconcile_snapshots(&mut store, &Applied(8), dir.path(), LogIndex::ZERO);
        assert!(changed.unwrap());
        assert_eq!(stored_snapshot(&store), Some(LogIndex(6)));
        assert_eq!(store.last_index(), LogIndex(10), "the log is kept");
        assert_eq!(list_snapshots(dir.path()).len(), 1);
    }

    /// An install restored the state machine and crashed before the log was reset: the log
    /// does not hold the snapshot's last entry (it ends earlier, or in another term), the
    /// state machine is at or past it, so the install is finished: the log is reset to it.
    #[test]
    fn an_install_the_crash_interrupted_after_the_restore_is_finished() {
        // A log that ends before the snapshot, and one that goes past it in an older term.
        for last in [4, 12] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = store_with(last, |_| 1);
            snapshot_file(dir.path(), meta(9, 2));
            let changed = reconcile_snapshots(&mut store, &Applied(9), dir.path(), LogIndex::ZERO);
            assert!(changed.unwrap(), "log of {last}");
            let state = store.load().unwrap();
            assert_eq!(state.snapshot.map(|m| m.last_index), Some(LogIndex(9)), "log of {last}");
            assert!(state.entries.is_empty(), "the old log is gone: {:?}", state.entries);
            assert_eq!(list_snapshots(dir.path()).len(), 1);
        }
    }

    /// A received snapshot whose install never began (the state machine is behind it, the
    /// log does not hold it) is deleted; the next older file is then looked at, and one
    /// at or below the store's own snapshot is left alone.
    #[test]
    fn a_snapshot_never_installed_is_dropped_and_the_next_one_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(10, |_| 1);
        store.save_snapshot_meta(&meta(3, 1)).unwrap();
        let recorded = snapshot_file(dir.path(), meta(3, 1));
        let built = snapshot_file(dir.path(), meta(7, 1));
        let received = snapshot_file(dir.path(), meta(20, 2));
        let changed = reconcile_snapshots(&mut store, &Applied(8), dir.path(), LogIndex(3));
        assert!(changed.unwrap());
        assert!(!received.path.exists(), "the never-installed snapshot is deleted");
        assert_eq!(stored_snapshot(&store), Some(LogIndex(7)), "the build under it is recorded");
        assert!(built.path.exists() && recorded.path.exists());
        assert_eq!(store.last_index(), LogIndex(10));
    }

    /// Nothing newer than the store's snapshot: nothing changes.
    #[test]
    fn files_at_or_below_the_stored_snapshot_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with(10, |_| 1);
        store.save_snapshot_meta(&meta(7, 1)).unwrap();
        snapshot_file(dir.path(), meta(5, 1));
        snapshot_file(dir.path(), meta(7, 1));
        let changed = reconcile_snapshots(&mut store, &Applied(1), dir.path(), LogIndex(7));
        assert!(!changed.unwrap());
        assert_eq!(stored_snapshot(&store), Some(LogIndex(7)));
        assert_eq!(list_snapshots(dir.path()).len(), 2);
    }
}
