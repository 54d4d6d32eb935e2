//! In-process delivery: several nodes in one process hand their raft messages straight to
//! each other's raft actor mailboxes instead of TCP (no sockets, no framing, no
//! serialization). For the in-process benchmark (`benches/inproc.rs`), which measures the
//! ceiling of the core and this runtime without the network.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use actix::Addr;
use flotilla_raft::NodeId;

use crate::raft_actor::RaftActor;

/// The raft actors of the nodes started with [`crate::supervisor::start_node_in_process`]
/// on one net, by id.
pub type LocalNet = Arc<RwLock<BTreeMap<NodeId, Addr<RaftActor>>>>;

/// An empty net.
pub fn local_net() -> LocalNet {
    Arc::new(RwLock::new(BTreeMap::new()))
}
