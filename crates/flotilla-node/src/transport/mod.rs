//! The raft transport: one outbound connection per peer (`PeerLink`), and a `Listener` that
//! accepts peers' connections. Each direction of a pair of nodes has its own connection, so
//! a node's messages to a peer always leave in order on one stream.

pub mod listener;
pub mod peer_link;

pub use listener::Listener;
pub use peer_link::{Outbound, PeerLink};
