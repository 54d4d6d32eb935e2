//! # flotilla-wire: how Flotilla nodes talk to each other
//!
//! This crate is the peer-to-peer wire format, and nothing else: it does no dialling, no
//! retrying and no scheduling. It gives the node runtime three things:
//!
//! 1. **Frames.** Every unit on a peer connection is a frame: a 4-byte big-endian length,
//!    a version byte ([`WIRE_VERSION`]), then one MessagePack body (rmp-serde, compact
//!    encoding). Frames over a limit ([`DEFAULT_MAX_FRAME_BYTES`] by default) are refused
//!    before anything is allocated for them. [`WireCodec`] plugs into tokio-util's
//!    `FramedRead`/`FramedWrite`; [`decode_frame`] decodes one frame from a byte slice.
//! 2. **Messages.** After the handshake every frame holds a [`WireMessage`]: a Raft message
//!    for the core, or a piece of a snapshot stream ([`SnapshotChunk`], [`SnapshotAck`])
//!    that can resume after a reconnect; [`SnapshotReceiver`] does the receiving side's
//!    bookkeeping.
//! 3. **The handshake.** The first frames on a connection ([`handshake`]) carry the cluster
//!    id, both node ids and, when the cluster has a secret, a mutual HMAC challenge-response
//!    that proves both sides know it without sending it. A peer that fails is sent
//!    `Refused { reason }`, logged, and gets a specific [`HandshakeError`].
//!
//! Nothing a peer sends can panic this crate: garbage, truncated frames, foreign versions and
//! oversized headers all come back as errors. There is no encryption: see `docs/wire.md`
//! for what is and is not authenticated.
//!
//! ## Driving a connection
//!
//! Handshake on the raw stream, then frame it with [`WireCodec`]:
//!
//! ```
//! use flotilla_raft::message::{Message, MessageBody};
//! use flotilla_raft::types::{NodeId, Term};
//! use flotilla_wire::handshake::{client_handshake, server_handshake, HandshakeConfig};
//! use flotilla_wire::{WireCodec, WireMessage};
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut dialled, mut accepted) = tokio::io::duplex(64 * 1024);
//! let node1 = HandshakeConfig::new("cluster-a", NodeId(1)).with_secret("s3cret");
//! let node2 = HandshakeConfig::new("cluster-a", NodeId(2))
//!     .with_secret("s3cret")
//!     .accept_only([NodeId(1), NodeId(3)]);
//!
//! // Node 1 dials node 2; node 2 accepts.
//! let (client, server) = tokio::join!(
//!     client_handshake(&mut dialled, &node1, NodeId(2)),
//!     server_handshake(&mut accepted, &node2),
//! );
//! assert_eq!(server?.peer, NodeId(1));
//! assert!(client?.authenticated);
//!
//! // From here on, frames of WireMessages both ways.
//! let mut tx = Framed::new(dialled, WireCodec::new());
//! let mut rx = Framed::new(accepted, WireCodec::new());
//! let msg = WireMessage::Raft(Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(7),
//!     body: MessageBody::TimeoutNow,
//! });
//! tx.send(msg.clone()).await?;
//! assert_eq!(rx.next().await.transpose()?, Some(msg));
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod snapshot;

pub use error::{HandshakeError, WireError};
pub use frame::{
    DEFAULT_MAX_FRAME_BYTES, LEN_PREFIX_BYTES, WIRE_VERSION, WireCodec, decode_frame, encode_frame,
};
pub use handshake::{HandshakeConfig, HandshakeFrame};
pub use message::{SnapshotAck, SnapshotChunk, SnapshotId, WireMessage};
pub use snapshot::{ChunkVerdict, SnapshotReceiver};
