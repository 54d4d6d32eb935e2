//! The one error type of this crate, and the node identity a data directory is bound to.

use std::fmt;
use std::path::PathBuf;

use flotilla_raft::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Which cluster and node a data directory belongs to. Recorded when a directory is first
/// opened; every later open must present the same identity, so a node never starts on
/// another node's (or another cluster's) log by a typo in a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?} node {}", self.cluster_id, self.node_id)
    }
}

/// Everything that can go wrong in a [`crate::LogStore`].
///
/// Three families, told apart by [`LogError::is_fatal`]:
/// - *Refusals* (`Invalid`, `Compacted`, `OutOfRange`): the request was wrong; nothing was
///   changed and the store remains usable.
/// - *Damage* (`Corrupt`, `CorruptMeta`): bytes on disk are not what was written. The node
///   must not go on as if the log were intact; an operator decides (restore, or wipe and
///   rejoin as a new node).
/// - *Failure* (`Poisoned`, `Storage`, `Engine`, `Io`): the disk or the engine failed. After a failed
///   write the store refuses everything (`Poisoned`): an fsync that failed once may have
///   dropped pages that the kernel will never report again, so the only safe way on is to
///   stop the process and let recovery decide what survived ("fsyncgate";
///   Rebello et al., ATC '20).
/// - *Setup* (`IdentityMismatch`, `NotALogDir`, `Locked`): `open` refused the directory.
///   `LostWrites` and `EnginePanic` are damage found by `open`.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("invalid {op}: {reason}")]
    Invalid { op: &'static str, reason: String },

    #[error("entries before {first} are compacted (requested index {requested})")]
    Compacted { requested: LogIndex, first: LogIndex },

    #[error("entries [{lo}, {hi}) are not all in the log, which holds [{first}, {last}]")]
    OutOfRange { lo: LogIndex, hi: LogIndex, first: LogIndex, last: LogIndex },

    #[error("log entry {index} is corrupt: {reason}")]
    Corrupt { index: LogIndex, reason: String },

    #[error("log metadata {key:?} is corrupt: {reason}")]
    CorruptMeta { key: String, reason: String },

    #[error(
        "refusing to open {dir}: it holds the data of {found}, but this node is {expected}. \
         Check the data directory path; never reuse one node's directory for another"
    )]
    IdentityMismatch { dir: PathBuf, expected: Identity, found: Identity },

    #[error("refusing to open {dir}: {reason}")]
    NotALogDir { dir: PathBuf, reason: String },

    #[error(
        "refusing to open {dir}: it has lost acknowledged writes (the database holds durable \
         write #{found}, but #{acknowledged} was acknowledged; see {}). The storage engine's \
         journal is probably damaged. Replace this node, or restore its directory; delete \
         the mark file only to accept the loss",
        mark.display()
    )]
    LostWrites { dir: PathBuf, found: u64, acknowledged: u64, mark: PathBuf },

    #[error("the storage engine panicked while opening {dir} (damaged files?): {message}")]
    EnginePanic { dir: PathBuf, message: String },

    #[error("{dir} is already open in another process (or another store in this one)")]
    Locked { dir: PathBuf },

    #[error(
        "the log store is poisoned by an earlier write failure; the process must stop and \
         restart so that recovery decides what is durable"
    )]
    Poisoned,

    #[error("storage engine failure: {0}")]
    Storage(fjall::Error),

    #[error("storage engine failure while {during}: {source}")]
    Engine { during: String, source: fjall::Error },

    #[error("I/O failure: {0}")]
    Io(#[from] std::io::Error),
}

impl LogError {
    /// True when the node must stop: the disk failed, the store is poisoned, or the log is
    /// damaged. False for refusals and setup errors (nothing was changed).
    pub fn is_fatal(&self) -> bool {
        match self {
            LogError::Invalid { .. }
            | LogError::Compacted { .. }
            | LogError::OutOfRange { .. }
            | LogError::IdentityMismatch { .. }
            | LogError::NotALogDir { .. }
            | LogError::Locked { .. } => false,
            LogError::Corrupt { .. }
            | LogError::CorruptMeta { .. }
            | LogError::LostWrites { .. }
            | LogError::EnginePanic { .. }
            | LogError::Poisoned
            | LogError::Storage(_)
            | LogError::Engine { .. }
            | LogError::Io(_) => true,
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> LogError {
        LogError::Invalid { op, reason: reason.into() }
    }
}

impl From<fjall::Error> for LogError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Poisoned => LogError::Poisoned,
            other => LogError::Storage(other),
        }
    }
}
