//! The connection handshake: the first frames on every peer connection, before any
//! [`WireMessage`](crate::WireMessage).
//!
//! ```text
//! client (dialler)                                   server (listener)
//!   Hello { protocol_version, cluster_id,
//!           from: client, to: server, nonce: Nc }  ->
//!                                                    checks version, cluster id, `to`,
//!                                                    that `from` is an accepted peer
//!                                <-  Challenge { nonce: Ns, proof: server proof or None }
//!   checks the server's proof
//!   Proof { proof: client proof or None }          ->
//!                                                    checks the client's proof
//!                                <-  Welcome
//! ```
//!
//! Either side answers a failed check with `Refused { reason }` and closes the connection.
//! With a cluster secret, each proof is HMAC-SHA256 keyed by the secret over a transcript
//! that binds the protocol version, the cluster id, both node ids, both nonces and the
//! direction (see [`proof`]); the secret itself never crosses the wire. Without a secret the
//! same four frames flow with `proof: None`, and only the cluster id and node ids are checked
//! (which guards against misconfiguration, not against an attacker).
//!
//! [`ClientHandshake`] and [`ServerHandshake`] are the sans-I/O state machines: frames in,
//! [`HandshakeStep`]s out, nonces supplied by the caller. [`client_handshake`] and
//! [`server_handshake`] drive them over any `AsyncRead + AsyncWrite` with a timeout.

mod io;
mod machine;
pub mod proof;

pub use io::{client_handshake, server_handshake};
pub use machine::{ClientHandshake, Established, HandshakeStep, ServerHandshake};

use bytes::{Bytes, BytesMut};
use flotilla_raft::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::WireError;

/// The handshake and message protocol this build speaks, sent in `Hello` and required to be
/// equal on both sides. It changes when the meaning of a message or of the handshake changes;
/// the per-frame [`WIRE_VERSION`](crate::WIRE_VERSION) changes when the encoding does.
pub const PROTOCOL_VERSION: u16 = 1;

/// Handshake frames are small; this much smaller limit means a peer that has not yet proven
/// anything can make us buffer at most 4 KiB.
pub const HANDSHAKE_MAX_FRAME_BYTES: u32 = 4 * 1024;

/// How long a whole handshake may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Length of nonces and proofs.
pub const NONCE_BYTES: usize = 32;

/// Longest `Refused` reason we keep from a peer; the rest is cut off.
pub(crate) const MAX_REASON_CHARS: usize = 256;

/// One handshake frame. Framed like every other frame (length, version byte, body) but with
/// the [`HANDSHAKE_MAX_FRAME_BYTES`] limit, and decoded as this type, so a handshake frame
/// after the handshake, or a message before it, is a decoding error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeFrame {
    /// The dialler introduces itself and names the node it meant to reach.
    Hello { protocol_version: u16, cluster_id: String, from: NodeId, to: NodeId, nonce: Nonce },
    /// The listener's nonce, and its proof of the secret when it has one.
    Challenge { nonce: Nonce, proof: Option<Proof> },
    /// The dialler's proof of the secret, when it has one.
    Proof { proof: Option<Proof> },
    /// The handshake succeeded: `WireMessage` frames follow, both ways.
    Welcome,
    /// The sender refuses the connection and closes it.
    Refused { reason: String },
}

impl HandshakeFrame {
    /// The variant's name, for errors and traces.
    pub fn name(&self) -> &'static str {
        match self {
            HandshakeFrame::Hello { .. } => "Hello",
            HandshakeFrame::Challenge { .. } => "Challenge",
            HandshakeFrame::Proof { .. } => "Proof",
            HandshakeFrame::Welcome => "Welcome",
            HandshakeFrame::Refused { .. } => "Refused",
        }
    }
}

/// Encodes one handshake frame (header included), with the handshake frame limit.
pub fn encode_handshake_frame(frame: &HandshakeFrame) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::new();
    crate::frame::encode_into(frame, HANDSHAKE_MAX_FRAME_BYTES, &mut buf)?;
    Ok(buf.freeze())
}

/// Decodes exactly one complete handshake frame (header included), with the handshake frame
/// limit. Like [`decode_frame`](crate::decode_frame), an entry point for fuzzing.
pub fn decode_handshake_frame(bytes: &[u8]) -> Result<HandshakeFrame, WireError> {
    crate::frame::decode_exact(bytes, HANDSHAKE_MAX_FRAME_BYTES)
}

/// A fresh random value per connection and side, so that no proof can be replayed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nonce(#[serde(with = "serde_bytes")] pub [u8; NONCE_BYTES]);

impl Nonce {
    /// A nonce from the thread-local CSPRNG (seeded by the operating system).
    pub fn random() -> Nonce {
        Nonce(rand::random())
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex_prefix(&self.0))
    }
}

/// HMAC-SHA256 of the handshake transcript, keyed by the cluster secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Proof(#[serde(with = "serde_bytes")] pub [u8; NONCE_BYTES]);

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proof({})", hex_prefix(&self.0))
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().take(6).map(|b| format!("{b:02x}")).collect();
    s.push('…');
    s
}

/// Decides which peer node ids may connect.
pub type PeerFilter = Arc<dyn Fn(NodeId) -> bool + Send + Sync>;

/// Everything one node needs to run handshakes, as client or server.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// Must be equal on both sides.
    pub cluster_id: String,
    /// This node's id: `from` when we dial, the required `to` when we listen.
    pub node_id: NodeId,
    /// The shared cluster secret. When set, both sides must prove it; a peer without it, or
    /// with another, is refused. Never sent, never logged.
    pub secret: Option<Vec<u8>>,
    /// Which peer ids a listener accepts (a dialler only talks to the id it chose).
    pub accept_peer: PeerFilter,
    /// The limit on a whole handshake, from the first byte to `Welcome`.
    pub timeout: Duration,
}

impl HandshakeConfig {
    /// No secret, accepts every non-zero peer id (`NodeId(0)` is never a member), default
    /// timeout.
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId) -> HandshakeConfig {
        HandshakeConfig {
            cluster_id: cluster_id.into(),
            node_id,
            secret: None,
            accept_peer: Arc::new(|id: NodeId| id.0 != 0),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Requires both sides to prove this secret.
    pub fn with_secret(mut self, secret: impl Into<Vec<u8>>) -> HandshakeConfig {
        self.secret = Some(secret.into());
        self
    }

    /// Accepts exactly these peer ids.
    pub fn accept_only(mut self, peers: impl IntoIterator<Item = NodeId>) -> HandshakeConfig {
        let peers: BTreeSet<NodeId> = peers.into_iter().collect();
        self.accept_peer = Arc::new(move |id| peers.contains(&id));
        self
    }

    /// Accepts the peer ids for which `accept` returns true, asked at every handshake (so it
    /// can follow membership changes).
    pub fn accept_if(
        mut self,
        accept: impl Fn(NodeId) -> bool + Send + Sync + 'static,
    ) -> HandshakeConfig {
        self.accept_peer = Arc::new(accept);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> HandshakeConfig {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is deliberately left out: configs end up in logs.
        f.debug_struct("HandshakeConfig")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
