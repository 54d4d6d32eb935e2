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
use crate::apply_actor::ApplyActor;
use crate::config::NodeConfig;
use crate::election_actor::ElectionActor;
use crate::handle::NodeHandle;
use crate::inproc::LocalNet;
use crate::log_actor::LogActor;
use crate::raft_actor::RaftActor;
use crate::shared::Shared;
use crate::snapshot::{SnapshotActor, latest_snapshot};
use crate::transport::Listener;

const BOOTSTRAP_KEY: &str = "bootstrap_membership";

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
    start(cfg, store, sm, None).await
}

/// Starts a node whose raft messages travel through `net` to the other nodes started on it
/// in this process, instead of TCP (`cfg.listen` is not bound). For the in-process
/// benchmark.
pub async fn start_node_in_process(
    cfg: NodeConfig,
    store: Box<dyn LogStore>,
    sm: Box<dyn StateMachine>,
    net: LocalNet,
) -> Result<NodeHandle, StartError> {
    start(cfg, store, sm, Some(net)).await
}

async fn start(
    cfg: NodeConfig,
    mut store: Box<dyn LogStore>,
    sm: Box<dyn StateMachine>,
    net: Option<LocalNet>,
) -> Result<NodeHandle, StartError> {
    let state = store.load()?;
    let bootstrap = recover_bootstrap(&cfg, store.as_mut())?;
    let snapshot_dir = cfg.data_dir.join("snapshots");
    std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| StartError::Config(format!("creating {snapshot_dir:?}: {e}")))?;
    let latest = latest_snapshot(&snapshot_dir);

    // The state machine must cover everything the log no longer holds.
    let mut sm = sm;
    let snap_index = state.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.last_index);
    if sm.applied_index() < snap_index {
        let file = latest.clone().filter(|f| f.meta.last_index >= snap_index).ok_or_else(|| {
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
    let init = InitialState {
        hard_state: state.hard_state,
        snapshot: state.snapshot.clone(),
        log_start: state.log_start,
        entries: state.entries,
        bootstrap,
    };
    let core = RaftCore::new(rc, init);
    let shared = Shared::new(cfg.id, applied);
    shared.set_term(core.term());

    let store = Arc::new(Mutex::new(store));
    let log = SyncArbiter::start(1, move || LogActor { store: store.clone() });
    let sm = Arc::new(Mutex::new(sm));
    let apply_shared = shared.clone();
    let apply =
        SyncArbiter::start(1, move || ApplyActor { sm: sm.clone(), shared: apply_shared.clone() });
    let writer = SyncArbiter::start(1, || SnapshotActor);

    let known: Arc<RwLock<BTreeSet<flotilla_raft::NodeId>>> =
        Arc::new(RwLock::new(BTreeSet::new()));
    let filter = known.clone();
    let mut hs = HandshakeConfig::new(cfg.cluster_id.clone(), cfg.id)
        .accept_if(move |id| filter.read().map(|k| k.contains(&id)).unwrap_or(false));
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
        actor.snapshots.current = latest;
        actor.snapshots.writer = Some(writer);
        actor.local_net = net2;
        actor
    });
    if let Some(net) = &net
        && let Ok(mut n) = net.write()
    {
        n.insert(cfg.id, raft.clone());
    }
    let clock_raft = raft.clone();
    Supervisor::start(move |_| ElectionActor { raft: clock_raft, tick });
    if listener.is_some() {
        Listener { listener, handshake: hs, raft: raft.clone(), shared: shared.clone() }.start();
    }

    Ok(NodeHandle::new(raft, shared, cfg.id, request_timeout, election_max_ms))
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
