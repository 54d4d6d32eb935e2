//! The raft transport: one outbound connection per peer (`PeerLink`), and a `Listener` that
//! accepts peers' connections. Each direction of a pair of nodes has its own connection, so
//! a node's messages to a peer always leave in order on one stream.
//!
//! With TLS on (`NodeConfig::tls`) every connection is mutual TLS first; the HMAC handshake
//! and the frames then run inside it, on the same code as over plain TCP ([`PeerStream`]).

pub mod listener;
pub mod peer_link;

pub use listener::Listener;
pub use peer_link::{Outbound, PeerLink};

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a peer connection runs on: TCP, or TLS over TCP.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// A peer connection's stream, whichever it is.
pub type PeerStream = Box<dyn PeerIo>;
