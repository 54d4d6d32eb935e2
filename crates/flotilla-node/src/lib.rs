//! # flotilla-node: the node runtime
//!
//! One process per node. Inside it, actix actors each own one concern (DESIGN.md):
//!
//! | actor | owns |
//! |---|---|
//! | [`raft_actor::RaftActor`] | the pure core; turns inputs into core calls and the core's commands into work for the others; keeps the persistence contract |
//! | [`election_actor::ElectionActor`] | the clock: one tick every `tick_ms` drives the core's randomized election timer, heartbeats and CheckQuorum |
//! | [`transport::PeerLink`] (one per peer) | the outbound stream to that peer: bounded queue, reconnect with back-off (the `ReplicationActor` of DESIGN.md; pipelining and the in-flight window are the core's) |
//! | [`log_actor::LogActor`] | the durable log on its own thread: group commit, one fsync per batch |
//! | [`apply_actor::ApplyActor`] | applies committed entries to the [`StateMachine`] on its own thread and answers the waiting clients |
//! | [`snapshot::SnapshotActor`] | writes snapshots from the state machine's copy-on-write view on its own thread |
//! | [`transport::Listener`] | accepts peers, runs the handshake, feeds frames to the raft actor |
//!
//! [`supervisor::start_node`] recovers a node from its data dir and starts them; it returns
//! a [`NodeHandle`], which implements [`ClientApi`] for an app's routes. [`http::configure`]
//! mounts the node's own routes (status, events, metrics, admin).
//!
//! One client write costs one message to the raft actor; its answer comes back on a
//! oneshot completed by the apply thread.

pub mod api;
pub mod apply_actor;
pub mod config;
pub mod election_actor;
pub mod faults;
pub mod forward;
pub mod handle;
pub mod http;
pub mod inproc;
pub mod join;
pub mod log_actor;
pub mod metrics;
pub mod placement;
pub mod raft_actor;
pub mod restore;
pub mod shared;
pub mod snapshot;
pub mod supervisor;
pub mod threads;
pub mod tls;
pub mod transport;

pub use api::{
    Applied, ClientApi, ClientError, EventLine, ReadConsistency, SmError, SnapshotSource,
    StateMachine,
};
pub use config::NodeConfig;
pub use faults::FaultSpec;
pub use forward::{ForwardMode, Forwarder};
pub use handle::{AdminError, NodeHandle};
pub use placement::Placement;
pub use supervisor::{StartError, start_node, start_node_in_process};
pub use tls::TlsSettings;
