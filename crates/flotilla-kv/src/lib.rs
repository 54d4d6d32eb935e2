//! # flotilla-kv: the replicated key-value store
//!
//! Three parts, each usable alone:
//! - [`KvStateMachine`]: a [`flotilla_node::StateMachine`] that keeps keys, values and
//!   client sessions in fjall keyspaces of the database the node's log lives in, applying
//!   each batch of committed entries and its `applied_index` in one atomic fjall batch.
//!   [`KvReader`] serves local reads from it.
//! - [`http::configure`]: the `/v1/kv/...` routes of INTERFACE.md, generic over the node's
//!   [`flotilla_node::ClientApi`].
//! - [`KvClient`]: a blocking client that follows redirects to the leader and retries
//!   through elections.
//!
//! A write travels as a [`KvCommand`] (proposed by the HTTP layer, stamped with the
//! leader's clock) and comes back as a [`KvResponse`]. `docs/kv.md` documents the formats.
//!
//! ```
//! use bytes::Bytes;
//! use flotilla_kv::{KvCommand, KvOp, KvResponse, KvStateMachine};
//! use flotilla_node::StateMachine;
//! use flotilla_raft::{Entry, EntryPayload, LogIndex, Term};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = fjall::Database::builder(dir.path()).open().unwrap();
//! let mut sm = KvStateMachine::open(db).unwrap();
//! let reader = sm.reader();
//!
//! let put = KvCommand {
//!     session: None,
//!     ts_ms: 1_000,
//!     op: KvOp::Put { key: "greeting".into(), value: Bytes::from_static(b"hello") },
//! };
//! let entry = Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Command(put.encode()) };
//! let answers = sm.apply(&[entry]).unwrap();
//! let answer = KvResponse::decode(answers[0].as_ref().unwrap()).unwrap();
//! assert_eq!(answer, KvResponse::Put { index: LogIndex(1), term: Term(1) });
//! assert_eq!(reader.get(b"greeting").unwrap().as_deref(), Some(&b"hello"[..]));
//! assert_eq!(sm.applied_index(), LogIndex(1));
//! ```

pub mod client;
mod command;
mod error;
pub mod http;
mod machine;
mod sessions;
mod snapshot;

pub use client::{CasOutcome, KvClient, KvClientError, ReadOutcome, WriteOutcome};
pub use command::{COMMAND_VERSION, ClientSeq, KvCommand, KvOp, KvResponse, RESPONSE_VERSION};
pub use error::KvError;
pub use machine::{KvReader, KvStateMachine, META_KEYSPACE};
pub use sessions::{MAX_SESSION_RESPONSE_BYTES, MAX_SESSIONS, SESSION_IDLE_TTL_MS, SessionLimits};
pub use snapshot::{KvSnapshot, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, snapshot_stream_index};

/// Keys are 1..=1024 bytes of UTF-8 (INTERFACE.md).
pub const MAX_KEY_BYTES: usize = 1024;
/// Values are at most 1 MiB (INTERFACE.md).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
