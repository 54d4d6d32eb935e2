//! The proofs of the cluster secret.
//!
//! A proof is HMAC-SHA256, keyed by the secret, over this transcript:
//!
//! ```text
//! "flotilla-wire handshake\0" | role: "client\0" or "server\0" | protocol_version: u16 BE
//! | len(cluster_id): u64 BE | cluster_id | client id: u64 BE | server id: u64 BE
//! | client nonce: 32 bytes | server nonce: 32 bytes
//! ```
//!
//! Both nonces make every proof fresh for both sides, so a recorded proof is useless on
//! another connection. The role label keeps a proof one side produced from being reflected
//! back as the other side's. The node ids bind the proof to who is talking to whom, and the
//! length prefix keeps the cluster id from running into the ids.

use flotilla_raft::types::NodeId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Nonce, PROTOCOL_VERSION, Proof};

const DOMAIN: &[u8] = b"flotilla-wire handshake\0";

/// Which side a proof speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The dialling side, the one that sent `Hello`.
    Client,
    /// The listening side, the one that sent `Challenge`.
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"client\0",
            Role::Server => b"server\0",
        }
    }
}

/// What a proof covers: everything that identifies one handshake.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    pub cluster_id: &'a str,
    pub client: NodeId,
    pub server: NodeId,
    pub client_nonce: &'a Nonce,
    pub server_nonce: &'a Nonce,
}

fn keyed_mac(secret: &[u8], role: Role, t: &Transcript<'_>) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 accepts a key of any length");
    mac.update(DOMAIN);
    mac.update(role.label());
    mac.update(&PROTOCOL_VERSION.to_be_bytes());
    mac.update(&(t.cluster_id.len() as u64).to_be_bytes());
    mac.update(t.cluster_id.as_bytes());
    mac.update(&t.client.0.to_be_bytes());
    mac.update(&t.server.0.to_be_bytes());
    mac.update(&t.client_nonce.0);
    mac.update(&t.server_nonce.0);
    mac
}

/// The proof that `role` knows `secret`, for this transcript.
pub fn prove(secret: &[u8], role: Role, t: &Transcript<'_>) -> Proof {
    Proof(keyed_mac(secret, role, t).finalize().into_bytes().into())
}

/// True when `proof` is `role`'s proof of `secret` for this transcript. The comparison takes
/// the same time wherever the first differing byte is (hmac's `verify_slice`).
pub fn verify(secret: &[u8], role: Role, t: &Transcript<'_>, proof: &Proof) -> bool {
    keyed_mac(secret, role, t).verify_slice(&proof.0).is_ok()
}
