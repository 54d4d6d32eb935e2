//! The crate's two error types: [`WireError`] for framing and encoding, and
//! [`HandshakeError`] for the connection handshake (which wraps a `WireError` when a frame
//! itself is bad).

use flotilla_raft::types::NodeId;
use thiserror::Error;

/// Why a frame could not be encoded or decoded. Every variant is a clean refusal: decoding
/// never panics and never allocates more than the frame limit allows.
#[derive(Debug, Error)]
pub enum WireError {
    /// The length header (or the encoded message) exceeds the frame limit. Checked before any
    /// buffer for the frame is allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: u64, max: u32 },
    /// A length header of zero: every frame holds at least its version byte.
    #[error("empty frame: a frame holds at least its version byte")]
    EmptyFrame,
    /// The frame's version byte is not the one this build speaks.
    #[error("unsupported wire version {got} (this node speaks {expected})")]
    UnsupportedVersion { got: u8, expected: u8 },
    /// The body is not a valid MessagePack encoding of the expected type.
    #[error("malformed frame body: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The body decoded, but bytes were left over inside the frame.
    #[error("{extra} trailing bytes after the message inside the frame")]
    TrailingBytes { extra: usize },
    /// The input ended inside a frame.
    #[error("truncated frame: {have} of {needed} bytes present")]
    Truncated { needed: u64, have: usize },
    /// The message could not be encoded (a bug, not a peer fault).
    #[error("could not encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a connection handshake failed. The side that detects the failure sends the peer a
/// `Refused { reason }` frame (best effort) and closes the connection.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The peer speaks another protocol version (in its `Hello`, or in its frames' version
    /// byte).
    #[error("protocol version mismatch: we speak {ours}, the peer {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },
    /// The peer belongs to another cluster.
    #[error("cluster id mismatch: we are {ours:?}, the peer says {theirs:?}")]
    ClusterMismatch { ours: String, theirs: String },
    /// The peer dialled a node id that is not ours (stale address book, reused address).
    #[error("the peer wants node {wanted}, but this is node {ours}")]
    WrongTarget { ours: NodeId, wanted: NodeId },
    /// The peer claims our own node id (a node dialled itself, or an id is duplicated).
    #[error("the peer claims our own node id {0}")]
    PeerIsSelf(NodeId),
    /// The peer's node id is not one we accept.
    #[error("unknown peer node id {0}")]
    UnknownPeer(NodeId),
    /// The peer's proof of the cluster secret is wrong: it has another secret, or none.
    #[error("the peer failed to prove the cluster secret")]
    BadProof,
    /// We have a cluster secret and the peer did not even try to prove it.
    #[error("the peer sent no proof of the cluster secret, and this node requires one")]
    ProofMissing,
    /// The peer proves a cluster secret, but this node has none configured.
    #[error("the peer uses a cluster secret, but this node has none configured")]
    SecretNotConfigured,
    /// The peer refused us; `reason` is its explanation (untrusted, shortened).
    #[error("refused by the peer: {reason:?}")]
    RefusedByPeer { reason: String },
    /// The peer sent a frame that does not fit the handshake's current step.
    #[error("unexpected handshake frame: expected {expected}, got {got}")]
    UnexpectedFrame { expected: &'static str, got: &'static str },
    /// The handshake did not finish within the configured time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the connection before the handshake finished.
    #[error("the peer closed the connection during the handshake")]
    ConnectionClosed,
    /// A handshake frame was malformed or too large.
    #[error("bad handshake frame: {0}")]
    Wire(#[from] WireError),
}

impl HandshakeError {
    /// The text sent to the peer in a `Refused` frame. It says what was wrong with the peer's
    /// request, never anything about our secret.
    pub fn refusal_reason(&self) -> String {
        match self {
            HandshakeError::Wire(e) => format!("bad handshake frame: {e}"),
            other => other.to_string(),
        }
    }
}
