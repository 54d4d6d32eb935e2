//! flotilla-log: the durable Raft log, hard state and snapshot metadata of one node.
//!
//! The runtime's log actor owns one [`LogStore`]. It executes the core's persistence
//! commands with it and reports completion only after the call returns, because every
//! mutating call returns only once its change is durable:
//!
//! 1. On start: [`LogStore::load`] gives the [`StoredState`] the core restarts from.
//! 2. `SaveHardState` / `AppendLog`: gather every such command ready at once into one
//!    [`LogStore::write`] (group commit: one fsync for many entries), then send the replies
//!    that depended on them.
//! 3. `InstallSnapshot`: [`LogStore::reset_to_snapshot`]. `PurgeLog`: after the snapshot's
//!    metadata is saved with [`LogStore::save_snapshot_meta`], [`LogStore::purge`].
//! 4. Any error with [`LogError::is_fatal`] stops the node: the disk failed or the log is
//!    damaged, and going on could break Raft's promises.
//!
//! [`FjallLogStore`] keeps the log on disk with fjall; [`MemLogStore`] keeps it in memory for
//! the deterministic simulator. Both pass the same conformance suite (`conformance`, with
//! the `conformance` feature). `docs/log.md` describes the on-disk layout and the
//! durability rules.
//!
//! ```
//! use bytes::Bytes;
//! use flotilla_log::{FjallLogStore, Identity, LogStore};
//! use flotilla_raft::{Entry, EntryPayload, HardState, LogIndex, NodeId, Term};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let me = Identity { cluster_id: "demo".into(), node_id: NodeId(1) };
//! let mut store = FjallLogStore::open(dir.path(), me.clone())?;
//!
//! // One durable batch: the vote and two entries.
//! let hs = HardState { term: Term(2), voted_for: Some(NodeId(1)), commit: LogIndex(0) };
//! let put = |i: u64| Entry {
//!     term: Term(2),
//!     index: LogIndex(i),
//!     payload: EntryPayload::Command(Bytes::from(format!("put k{i}"))),
//! };
//! store.write(Some(&hs), &[put(1), put(2)])?;
//!
//! // The state machine keeps its data in the same database, so an apply and its
//! // `applied_index` commit together in one batch.
//! let kv = store.state_machine_keyspace("kv")?;
//! let mut batch = store.durable_batch();
//! batch.insert(&kv, "k1", "v1");
//! batch.insert(&kv, "applied_index", 1u64.to_be_bytes());
//! batch.commit()?;
//!
//! // A restart finds everything again; another node's identity is refused. (Keyspace
//! // handles keep the database open: drop them with the store.)
//! drop((kv, store));
//! let other = Identity { cluster_id: "demo".into(), node_id: NodeId(2) };
//! assert!(FjallLogStore::open(dir.path(), other).is_err());
//! let store = FjallLogStore::open(dir.path(), me)?;
//! let state = store.load()?;
//! assert_eq!((state.hard_state, state.entries.len()), (hs, 2));
//! assert_eq!(store.last_index(), LogIndex(2));
//! # Ok(())
//! # }
//! ```

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod disk;
mod error;
pub mod frame;
mod mark;
mod mem;
mod store;
mod terms;

pub use disk::{FjallLogStore, FjallOptions, LOG_KEYSPACE, META_KEYSPACE};
pub use error::{Identity, LogError};
pub use mark::MARK_FILE;
pub use mem::MemLogStore;
pub use store::{LogStore, MAX_META_KEY_BYTES, StoredState};
