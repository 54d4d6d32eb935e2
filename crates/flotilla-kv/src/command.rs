//! What a write proposes (`KvCommand`) and what the state machine answers (`KvResponse`).
//!
//! Both travel as one version byte followed by a compact rmp-serde body (structs as
//! arrays, values as msgpack `bin`). The version byte lets a later release change the body;
//! a node refuses a version it does not know rather than guessing.

use bytes::Bytes;
use flotilla_raft::{LogIndex, Term};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::KvError;
use crate::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The version byte in front of every encoded [`KvCommand`].
pub const COMMAND_VERSION: u8 = 1;
/// The version byte in front of every encoded [`KvResponse`].
pub const RESPONSE_VERSION: u8 = 1;

/// A client session's identity for one request (INTERFACE.md `X-Flotilla-Client` and
/// `X-Flotilla-Seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientSeq {
    /// Picked at random by the client.
    pub client: u64,
    /// Strictly increasing per client; gaps allowed.
    pub seq: u64,
}

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// Present when the client sent session headers: the state machine then applies the
    /// command at most once per `(client, seq)`.
    pub session: Option<ClientSeq>,
    /// Wall-clock milliseconds stamped by the proposing leader. The state machine keeps the
    /// maximum seen as its clock, which drives session expiry identically on every replica.
    pub ts_ms: u64,
    pub op: KvOp,
}

/// The operation of a [`KvCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        key: String,
        value: Bytes,
    },
    Delete {
        key: String,
    },
    /// Sets `value` if the current value equals `expected` (`None`: the key must be absent).
    Cas {
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
        }
    }

    /// Checks the INTERFACE.md limits. The HTTP layer checks them first (to answer the right
    /// status); the state machine checks again so that a command from any other proposer
    /// cannot store what the API could never read back.
    pub fn validate(&self) -> Result<(), String> {
        let key = self.key();
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!("key must be 1..={MAX_KEY_BYTES} bytes, got {}", key.len()));
        }
        let too_big = |v: &Bytes| v.len() > MAX_VALUE_BYTES;
        match self {
            KvOp::Put { value, .. } if too_big(value) => {
                Err(format!("value over {MAX_VALUE_BYTES} bytes"))
            }
            KvOp::Cas { expected, value, .. }
                if too_big(value) || expected.as_ref().is_some_and(too_big) =>
            {
                Err(format!("value over {MAX_VALUE_BYTES} bytes"))
            }
            _ => Ok(()),
        }
    }
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// `index`/`term` are those of the entry that applied the write: a session replay
    /// returns the original ones.
    Put {
        index: LogIndex,
        term: Term,
    },
    Delete {
        index: LogIndex,
        term: Term,
        deleted: bool,
    },
    /// `current` is the value after the operation: the new one on success, the unchanged
    /// one (or `None`, absent) on failure.
    Cas {
        index: LogIndex,
        term: Term,
        succeeded: bool,
        current: Option<Bytes>,
    },
    /// The session already applied a higher sequence number; nothing was applied.
    StaleSequence {
        last_seq: u64,
    },
    /// The command did not decode or broke a limit; nothing was applied. Deterministic, so
    /// a bad entry in the log cannot wedge the replicas.
    Rejected {
        reason: String,
    },
}

impl KvCommand {
    pub fn encode(&self) -> Bytes {
        encode(COMMAND_VERSION, self)
    }

    pub fn decode(buf: &[u8]) -> Result<KvCommand, KvError> {
        decode(COMMAND_VERSION, "command", buf)
    }
}

impl KvResponse {
    pub fn encode(&self) -> Bytes {
        encode(RESPONSE_VERSION, self)
    }

    pub fn decode(buf: &[u8]) -> Result<KvResponse, KvError> {
        decode(RESPONSE_VERSION, "response", buf)
    }
}

pub(crate) fn encode<T: Serialize>(version: u8, value: &T) -> Bytes {
    let mut out = vec![version];
    // Writing these plain structs into a Vec cannot fail: rmp-serde only errors on writer
    // failures and on maps with unsupported keys, and none are used here.
    rmp_serde::encode::write(&mut out, value).expect("rmp-serde encodes a plain struct");
    Bytes::from(out)
}

/// Decodes `version ‖ rmp body`, refusing an unknown version and trailing bytes (rmp-serde
/// alone would ignore them).
pub(crate) fn decode<T: DeserializeOwned>(
    version: u8,
    what: &'static str,
    buf: &[u8],
) -> Result<T, KvError> {
    let (&v, body) = buf.split_first().ok_or_else(|| KvError::malformed(what, "empty"))?;
    if v != version {
        return Err(KvError::malformed(what, format!("unknown version {v}")));
    }
    let mut cursor = std::io::Cursor::new(body);
    let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut cursor))
        .map_err(|e| KvError::malformed(what, e))?;
    if cursor.position() != body.len() as u64 {
        return Err(KvError::malformed(what, "trailing bytes"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: KvOp) -> KvCommand {
        KvCommand { session: Some(ClientSeq { client: 7, seq: 9 }), ts_ms: 123, op }
    }

    #[test]
    fn commands_round_trip_with_binary_values() {
        let ops = [
            KvOp::Put { key: "a/b".into(), value: Bytes::from_static(&[0, 255, 10, 13]) },
            KvOp::Delete { key: "k".into() },
            KvOp::Cas { key: "k".into(), expected: None, value: Bytes::new() },
            KvOp::Cas {
                key: "k".into(),
                expected: Some(Bytes::from_static(b"x")),
                value: "y".into(),
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let c = cmd(op);
            let buf = c.encode();
            assert_eq!(buf[0], COMMAND_VERSION, "#{i}");
            assert_eq!(KvCommand::decode(&buf).unwrap(), c, "#{i}");
        }
    }

    #[test]
    fn values_are_msgpack_bin_not_integer_arrays() {
        let value = Bytes::from(vec![200u8; 1000]);
        let buf = cmd(KvOp::Put { key: "k".into(), value }).encode();
        assert!(buf.len() < 1100, "{} bytes", buf.len());
    }

    #[test]
    fn decode_refuses_unknown_version_trailing_bytes_and_garbage() {
        let mut buf = cmd(KvOp::Delete { key: "k".into() }).encode().to_vec();
        buf.push(0);
        assert!(KvCommand::decode(&buf).is_err());
        buf.pop();
        buf[0] = 2;
        assert!(KvCommand::decode(&buf).is_err());
        assert!(KvCommand::decode(&[]).is_err());
        assert!(KvCommand::decode(&[COMMAND_VERSION, 0xc1]).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let r = KvResponse::Cas {
            index: LogIndex(4),
            term: Term(2),
            succeeded: false,
            current: Some(Bytes::from_static(b"v")),
        };
        assert_eq!(KvResponse::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn validate_enforces_key_and_value_limits() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let big = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
        let max = Bytes::from(vec![0u8; MAX_VALUE_BYTES]);
        assert!(KvOp::Delete { key: String::new() }.validate().is_err());
        assert!(KvOp::Delete { key: long }.validate().is_err());
        assert!(KvOp::Delete { key: "k".repeat(MAX_KEY_BYTES) }.validate().is_ok());
        assert!(KvOp::Put { key: "k".into(), value: big.clone() }.validate().is_err());
        assert!(KvOp::Put { key: "k".into(), value: max.clone() }.validate().is_ok());
        let cas = |e: Option<Bytes>, v: Bytes| KvOp::Cas { key: "k".into(), expected: e, value: v };
        assert!(cas(Some(big.clone()), max.clone()).validate().is_err());
        assert!(cas(None, big).validate().is_err());
        assert!(cas(Some(max.clone()), max).validate().is_ok());
    }
}
